//! What one attempt of a job comes to: the worker reports what happened ([`Attempt`]), and
//! [`settle`] decides what the store keeps ([`Completion`]) and how the attempt is counted
//! ([`JobOutcome`]), retrying with [`backoff`] while attempts remain.
//!
//! Pure: the clock (`now`) and the randomness (`jitter`) are parameters, so every row of the
//! decision is a line of the table test below.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

use super::cache_status::JobOutcome;
use super::entry::{Content, Failure, PassInfo, StoredResponse, Timestamp};
use super::freshness::{
    Classification, NoStore, Sharing, Windows, clamp_lifetime, classify, strip_hop_by_hop, tags,
};

/// How a job ended, as given to [`Store::complete`](crate::store::Store::complete).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// A shareable response: the entry turns fresh.
    Store(Content),
    /// Not shareable: hit-for-pass (the stale copy, if any, is dropped).
    Pass(PassInfo),
    /// Shareable, but past its freshness when it arrived (`no-cache`, `max-age=0`, an old
    /// `Age`): it goes once to the requests of its job and the next one (`pass.once`, the
    /// same response), and `content` is kept beside that, never served as a hit, for what
    /// is left of it: validators that make the next job a revalidation, a stale-if-error
    /// window.
    Deliver {
        /// The copy kept.
        content: Content,
        /// The one-time delivery (its reason is `stale-on-arrival`).
        pass: PassInfo,
    },
    /// Every attempt failed: the entry turns failed (a stale copy is kept for stale-if-error).
    Fail(Failure),
    /// This attempt failed: the job stays pending and runs again at `run_at`.
    Retry {
        /// When the next attempt may run.
        run_at: Timestamp,
        /// What went wrong.
        error: String,
    },
}

/// What one attempt of a job produced.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one value per job attempt, moved a few times: boxing would buy nothing"
)]
pub(crate) enum Attempt {
    /// A whole response, with every header it came with (see [`received`]).
    Response(StoredResponse),
    /// A response whose body exceeded the job's maximum.
    TooLarge,
    /// No response at all.
    Failed(AttemptError),
}

/// Why an attempt produced no response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AttemptError {
    /// The job's time ran out (or the service gave up waiting for the upstream).
    TimedOut(Option<Duration>),
    /// The upstream or the handler failed: a connection error, a broken body, a bad request
    /// target. The text says which.
    Upstream(String),
}

impl AttemptError {
    /// The status a gateway answers for this error when no response is left to relay:
    /// `504` for a timeout, `502` for anything else. The one place that choice is made.
    pub(crate) fn status(&self) -> StatusCode {
        gateway_status(matches!(self, Self::TimedOut(_)))
    }
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimedOut(Some(after)) => write!(f, "timed out after {after:?}"),
            Self::TimedOut(None) => f.write_str("upstream timed out"),
            Self::Upstream(error) => f.write_str(error),
        }
    }
}

/// The status errand answers when the upstream gave no response: `504 Gateway Timeout` when
/// it ran out of time, `502 Bad Gateway` otherwise (RFC 9110 §15.6.3, §15.6.5).
pub fn gateway_status(timed_out: bool) -> StatusCode {
    if timed_out {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    }
}

/// What [`settle`] needs to know of the route and the job settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules<'a> {
    /// The route's freshness windows.
    pub windows: &'a Windows,
    /// What the route shares.
    pub sharing: Sharing<'a>,
    /// How long an unshareable response makes its signature pass through.
    pub pass_ttl: Duration,
    /// How long a failed signature answers its error.
    pub error_ttl: Duration,
    /// Attempts before a job fails.
    pub max_attempts: u32,
    /// The first retry's delay (before jitter).
    pub backoff_base: Duration,
    /// The longest retry delay.
    pub backoff_max: Duration,
}

/// Decides what attempt number `attempt` of a job comes to, at `now`, after running for
/// `took`. `jitter` in `[0, 1]` spreads the heuristic freshness and the retry delay.
pub(crate) fn settle(
    result: Attempt,
    attempt: u32,
    rules: &Rules<'_>,
    now: Timestamp,
    took: Duration,
    jitter: f64,
) -> (Completion, JobOutcome) {
    let pass = |once: Option<Arc<StoredResponse>>, reason: String| PassInfo {
        until: now.plus(clamp_lifetime(rules.pass_ttl)),
        once,
        reason,
    };
    // An attempt that failed: the error, and the upstream's own answer if it is to be relayed.
    let (error, status, relayed) = match result {
        Attempt::TooLarge => {
            let info = pass(None, NoStore::TooLarge.as_str().into());
            return (Completion::Pass(info), JobOutcome::Pass);
        }
        Attempt::Failed(failure) => (failure.to_string(), failure.status(), None),
        Attempt::Response(mut response) => {
            let verdict = classify(
                response.status,
                &response.headers,
                rules.windows,
                &rules.sharing,
                jitter,
                now,
                took,
            );
            // Read before the headers that carry them are removed, with the hop-by-hop ones.
            let tags = tags(&response.headers);
            strip_hop_by_hop(&mut response.headers);
            match verdict {
                Classification::Store {
                    fresh_for,
                    stale_for,
                    stale_if_error_for,
                    age,
                } => {
                    let content = stored_content(
                        response,
                        tags,
                        now,
                        age,
                        [fresh_for, stale_for, stale_if_error_for],
                        took,
                    );
                    // Past every window, or a copy that may only be revalidated and is
                    // already past its freshness.
                    let kept_for = if content.revalidate_only() {
                        content.fresh_until
                    } else {
                        content.stale_until
                    };
                    if kept_for <= now {
                        let reason = NoStore::StaleOnArrival.as_str().into();
                        if content.expires_at() > now {
                            // Still of use (validators to revalidate with, a stale-if-error
                            // window): kept, and delivered once all the same.
                            let once = Some(Arc::clone(&content.response));
                            let deliver = Completion::Deliver {
                                pass: pass(once, reason),
                                content,
                            };
                            return (deliver, JobOutcome::Stored);
                        }
                        // Nothing left to keep, but the result still reaches its requests.
                        let info = pass(Some(content.response), reason);
                        return (Completion::Pass(info), JobOutcome::Pass);
                    }
                    return (Completion::Store(content), JobOutcome::Stored);
                }
                Classification::Pass(reason) => {
                    // The response may go to the one client whose request made it (for
                    // `Vary: *`, the job sent that request's headers on, so it matches it).
                    let info = pass(Some(Arc::new(response)), reason.as_str().into());
                    return (Completion::Pass(info), JobOutcome::Pass);
                }
                Classification::Once => {
                    let reason = format!("status-{}", response.status.as_u16());
                    let info = pass(Some(Arc::new(response)), reason);
                    return (Completion::Pass(info), JobOutcome::Once);
                }
                Classification::Retry => {
                    let error = format!("upstream answered {}", response.status);
                    // Only a real 5xx is relayed once every attempt failed; an invalid
                    // status (1xx as final, 600 and above) becomes errand's own 502.
                    if response.status.is_server_error() {
                        (error, response.status, Some(response))
                    } else {
                        (error, gateway_status(false), None)
                    }
                }
            }
        }
    };
    if attempt < rules.max_attempts {
        let delay = backoff(attempt, rules.backoff_base, rules.backoff_max, jitter);
        let retry = Completion::Retry {
            run_at: now.plus(delay),
            error,
        };
        return (retry, JobOutcome::Retry);
    }
    let response = relayed.unwrap_or_else(|| failure_response(status, &error, attempt));
    let failure = Failure {
        until: now.plus(clamp_lifetime(rules.error_ttl)),
        response: Arc::new(response),
        error,
        attempts: attempt,
        at: now,
        // The store keeps the job's own request with the failure.
        request: None,
    };
    (Completion::Fail(failure), JobOutcome::Failed)
}

/// A stored response's content: generated `age` before `now`, fresh, stale and
/// stale-if-error for the three `windows` after that.
fn stored_content(
    response: StoredResponse,
    tags: Vec<String>,
    now: Timestamp,
    age: Duration,
    [fresh_for, stale_for, stale_if_error_for]: [Duration; 3],
    took: Duration,
) -> Content {
    let generated_at = Timestamp(
        now.0
            .saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
    );
    let fresh_until = generated_at.plus(fresh_for);
    Content {
        tags,
        response: Arc::new(response),
        generated_at,
        fresh_until,
        stale_until: fresh_until.plus(stale_for),
        stale_if_error_until: fresh_until.plus(stale_if_error_for),
        job_millis: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
    }
}

/// errand's own answer for a job that failed without an upstream response to relay.
fn failure_response(status: StatusCode, error: &str, attempts: u32) -> StoredResponse {
    let body = serde_json::json!({ "state": "failed", "error": error, "attempts": attempts });
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    StoredResponse {
        status,
        headers,
        body: format!("{body}\n").into(),
        selecting: HeaderMap::new(),
    }
}

/// Delay before attempt `attempt + 1`: `base · 2^(attempt-1)`, capped at `max`, with "equal
/// jitter" (half fixed, half random) so retries of many jobs spread out.
pub fn backoff(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << exponent).min(max);
    full / 2 + full.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

/// A whole response received: its framing length removed (the front sets `Content-Length`
/// from the stored body), every header copied out of the buffer it was parsed from.
/// [`settle`] classifies it on all its headers, then keeps it without the hop-by-hop ones.
pub(crate) fn received(mut parts: http::response::Parts, body: Bytes) -> Attempt {
    parts.headers.remove(header::CONTENT_LENGTH);
    Attempt::Response(StoredResponse {
        status: parts.status,
        headers: detach(&parts.headers),
        body,
        selecting: HeaderMap::new(),
    })
}

/// Copies header names and values into allocations of their own. A client parses headers as
/// zero-copy slices of its read buffer, so a stored header would otherwise keep that whole
/// buffer (often larger than the response) alive for as long as the entry lives, unseen by
/// the byte budget.
fn detach(headers: &HeaderMap) -> HeaderMap {
    let mut copy = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name =
            HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        let mut fresh = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        fresh.set_sensitive(value.is_sensitive());
        copy.append(name, fresh);
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_000_000);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn response(status: u16, headers: &[(&'static str, &'static str)]) -> Attempt {
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = StatusCode::from_u16(status).unwrap();
        for (name, value) in headers {
            parts.headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        received(parts, Bytes::from_static(b"body"))
    }

    const WINDOWS: Windows = Windows {
        ttl: Duration::from_secs(60),
        stale: Duration::from_secs(30),
        stale_if_error: Duration::from_secs(600),
    };

    /// Fresh 60 s, stale 30 s, stale-if-error 600 s; pass 20 s, error 10 s; backoff from 2 s.
    fn rules(max_attempts: u32) -> Rules<'static> {
        Rules {
            windows: &WINDOWS,
            sharing: Sharing::default(),
            pass_ttl: secs(20),
            error_ttl: secs(10),
            max_attempts,
            backoff_base: secs(2),
            backoff_max: secs(30),
        }
    }

    /// The kind of completion and its one deciding time, for the table.
    fn summary(completion: &Completion) -> (&'static str, Timestamp, u16) {
        match completion {
            Completion::Store(c) => ("store", c.fresh_until, c.response.status.as_u16()),
            Completion::Pass(p) => (
                "pass",
                p.until,
                p.once.as_ref().map_or(0, |r| r.status.as_u16()),
            ),
            Completion::Deliver { content, pass } => (
                "deliver",
                pass.until,
                pass.once
                    .as_ref()
                    .filter(|once| Arc::ptr_eq(once, &content.response))
                    .map_or(0, |r| r.status.as_u16()),
            ),
            Completion::Fail(f) => ("fail", f.until, f.response.status.as_u16()),
            Completion::Retry { run_at, .. } => ("retry", *run_at, 0),
        }
    }

    #[test]
    fn every_attempt_settles_as_the_table_says() {
        let rules = rules(3);
        let timed_out = || Attempt::Failed(AttemptError::TimedOut(Some(secs(30))));
        let refused = || Attempt::Failed(AttemptError::Upstream("connection refused".into()));
        let at = |s: u64| NOW.plus(secs(s));
        // (attempt, what it produced, outcome, completion kind, its time, status kept)
        let table: Vec<(u32, Attempt, JobOutcome, &str, Timestamp, u16)> = vec![
            (
                1,
                response(200, &[]),
                JobOutcome::Stored,
                "store",
                at(60),
                200,
            ),
            (
                1,
                response(200, &[("cache-control", "max-age=5")]),
                JobOutcome::Stored,
                "store",
                at(5),
                200,
            ),
            (
                1,
                // Age 40 plus the second the job took (RFC 9111 §4.2.3).
                response(200, &[("cache-control", "max-age=100"), ("age", "40")]),
                JobOutcome::Stored,
                "store",
                at(59),
                200,
            ),
            // Not shareable: the response goes once to the client that asked.
            (
                1,
                response(200, &[("cache-control", "private")]),
                JobOutcome::Pass,
                "pass",
                at(20),
                200,
            ),
            // Varies on a request header: stored, as the variant of its request (vary.rs).
            // On everything: to its claimer only (see PassInfo::only_for_its_claimer).
            (
                1,
                response(200, &[("vary", "accept-language")]),
                JobOutcome::Stored,
                "store",
                at(60),
                200,
            ),
            (
                1,
                response(200, &[("vary", "*")]),
                JobOutcome::Pass,
                "pass",
                at(20),
                200,
            ),
            (1, response(401, &[]), JobOutcome::Once, "pass", at(20), 401),
            // Past every window on arrival: delivered, not kept.
            (
                1,
                response(200, &[("cache-control", "max-age=0, must-revalidate")]),
                JobOutcome::Pass,
                "pass",
                at(20),
                200,
            ),
            // Kept only to be revalidated, and stale already: delivered once (the kept copy
            // itself), and kept for its validators.
            (
                1,
                response(
                    200,
                    &[
                        ("cache-control", "max-age=0, must-revalidate"),
                        ("etag", "\"a\""),
                    ],
                ),
                JobOutcome::Stored,
                "deliver",
                at(20),
                200,
            ),
            (
                1,
                response(200, &[("cache-control", "no-cache"), ("etag", "\"a\"")]),
                JobOutcome::Stored,
                "deliver",
                at(20),
                200,
            ),
            // Without validators, no-cache leaves nothing to keep.
            (
                1,
                response(200, &[("cache-control", "no-cache")]),
                JobOutcome::Pass,
                "pass",
                at(20),
                200,
            ),
            // Past the stale window on arrival, inside the stale-if-error one: kept for it.
            (
                1,
                response(200, &[("cache-control", "max-age=0"), ("age", "100")]),
                JobOutcome::Stored,
                "deliver",
                at(20),
                200,
            ),
            (
                1,
                response(
                    200,
                    &[
                        ("cache-control", "max-age=5, must-revalidate"),
                        ("etag", "\"a\""),
                    ],
                ),
                JobOutcome::Stored,
                "store",
                at(5),
                200,
            ),
            (
                1,
                response(200, &[("cache-control", "max-age=60"), ("age", "7200")]),
                JobOutcome::Pass,
                "pass",
                at(20),
                200,
            ),
            (1, Attempt::TooLarge, JobOutcome::Pass, "pass", at(20), 0),
            // Failures retry with backoff (jitter 0: half the doubled base)…
            (1, response(503, &[]), JobOutcome::Retry, "retry", at(1), 0),
            (2, timed_out(), JobOutcome::Retry, "retry", at(2), 0),
            (1, refused(), JobOutcome::Retry, "retry", at(1), 0),
            // …until the last attempt, which relays a real 5xx or makes errand's own answer.
            (
                3,
                response(503, &[]),
                JobOutcome::Failed,
                "fail",
                at(10),
                503,
            ),
            (
                3,
                response(600, &[]),
                JobOutcome::Failed,
                "fail",
                at(10),
                502,
            ),
            (3, timed_out(), JobOutcome::Failed, "fail", at(10), 504),
            (3, refused(), JobOutcome::Failed, "fail", at(10), 502),
        ];
        for (i, (attempt, result, outcome, kind, time, status)) in table.into_iter().enumerate() {
            let (completion, got) = settle(result, attempt, &rules, NOW, secs(1), 0.0);
            assert_eq!(got, outcome, "row {i}: outcome");
            assert_eq!(summary(&completion), (kind, time, status), "row {i}");
        }
    }

    #[test]
    fn a_failure_keeps_what_went_wrong() {
        let rules = rules(1);
        let result = Attempt::Failed(AttemptError::TimedOut(Some(secs(30))));
        let (Completion::Fail(failure), _) = settle(result, 1, &rules, NOW, secs(30), 0.5) else {
            panic!("one attempt allowed: the first failure is final");
        };
        assert_eq!(failure.error, "timed out after 30s");
        assert_eq!(failure.attempts, 1);
        let body: serde_json::Value = serde_json::from_slice(&failure.response.body).unwrap();
        assert_eq!(body["state"], "failed");
        assert_eq!(body["attempts"], 1);
    }

    #[test]
    fn a_stored_content_starts_at_its_age_and_remembers_the_job_time() {
        let rules = rules(3);
        let result = response(
            200,
            &[
                ("cache-control", "max-age=100"),
                ("age", "40"),
                ("surrogate-key", "all news"),
                ("connection", "close"),
            ],
        );
        let (Completion::Store(content), _) = settle(result, 1, &rules, NOW, secs(3), 0.0) else {
            panic!("a fresh 200 is stored");
        };
        assert_eq!(
            content.tags,
            ["all", "news"],
            "tags are read before they are removed"
        );
        assert!(content.response.headers.get("surrogate-key").is_none());
        assert!(content.response.headers.get("connection").is_none());
        // Age 40, plus the 3 s the job took: the value was in flight that long.
        assert_eq!(content.generated_at, Timestamp(NOW.0 - 43_000));
        assert_eq!(content.stale_until, NOW.plus(secs(87)));
        assert_eq!(content.stale_if_error_until, NOW.plus(secs(657)));
        assert_eq!(content.job_millis, 3000);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let base = Duration::from_millis(500);
        let max = secs(30);
        assert_eq!(backoff(1, base, max, 0.0), Duration::from_millis(250));
        assert_eq!(backoff(1, base, max, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(3, base, max, 1.0), secs(2));
        assert_eq!(backoff(20, base, max, 1.0), max);
        assert_eq!(backoff(20, base, max, 0.0), max / 2);
    }

    #[test]
    fn a_timeout_is_504_and_anything_else_502() {
        assert_eq!(
            AttemptError::TimedOut(None).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            AttemptError::Upstream("reset".into()).status(),
            StatusCode::BAD_GATEWAY
        );
    }
}
