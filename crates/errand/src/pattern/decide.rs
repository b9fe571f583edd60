//! The front's decision: given what the store holds for a signature and the time, what to do.
//!
//! This is the seed's "HTTP Server" algorithm with the states it lacks (expiry of pending
//! markers, stale windows, failures, hit-for-pass). It is pure: the Layer calls it after a
//! lookup, and again after a claim lost a race or a wait ended, so every path through the
//! front answers from this one table.

use super::entry::{Entry, Status, Timestamp};

/// What the front does with a request whose signature's entry it has looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Serve the fresh content.
    Hit,
    /// Serve the stale content at once; when `refresh`, also claim one refresh job.
    Stale {
        /// No refresh is pending yet: claim one (conditional on the entry's version).
        refresh: bool,
    },
    /// Serve the stale copy instead of the error while the origin fails; when `refresh`, also
    /// claim a new job (the error TTL has passed).
    StaleIfError {
        /// Claim a new job as well.
        refresh: bool,
    },
    /// Nothing usable: claim a job (conditional on `expect`: `None` = only if absent,
    /// `Some(v)` = only if the entry is still at version `v`), then answer `202`.
    Miss {
        /// The version the claim is conditional on.
        expect: Option<u64>,
    },
    /// A job is pending and there is nothing to serve meanwhile: `202` (or wait).
    Pending,
    /// The last job failed and its error TTL has not passed: answer its error.
    Failed,
    /// Hit-for-pass: forward the request synchronously; when `once`, a response kept for
    /// the next try is delivered instead.
    Pass {
        /// A one-time response is waiting to be taken.
        once: bool,
    },
}

impl Decision {
    /// The decision's name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Stale { .. } => "stale",
            Self::StaleIfError { .. } => "stale-if-error",
            Self::Miss { .. } => "miss",
            Self::Pending => "pending",
            Self::Failed => "failed",
            Self::Pass { .. } => "pass",
        }
    }
}

/// Decides what to do with `entry` (as looked up; `None` when the store has nothing) at `now`.
pub fn decide(entry: Option<&Entry>, now: Timestamp) -> Decision {
    let Some(entry) = entry else {
        return Decision::Miss { expect: None };
    };
    // A copy kept beside a result delivered once (`Completion::Deliver`) is revalidated as
    // soon as that result has gone.
    if let Status::Pass(pass) = &entry.status
        && now < pass.until
        && (pass.once.is_some() || entry.result_for_waiters().is_none())
    {
        return Decision::Pass {
            once: pass.once.is_some(),
        };
    }
    let content = entry.content.as_ref();
    let within = |until: fn(&super::Content) -> Timestamp| content.is_some_and(|c| now < until(c));
    if within(|c| c.fresh_until) {
        return Decision::Hit;
    }
    // A copy the origin forbade serving stale is kept only for its validators.
    let stale = within(|c| c.stale_until) && !content.is_some_and(super::Content::revalidate_only);
    let stale_if_error = within(|c| c.stale_if_error_until);
    match &entry.status {
        Status::Pending(job) => {
            let origin_failing = job.after_failure || job.last_error.is_some();
            if stale {
                Decision::Stale { refresh: false }
            } else if stale_if_error && origin_failing {
                Decision::StaleIfError { refresh: false }
            } else {
                Decision::Pending
            }
        }
        Status::Failed(failure) if now < failure.until => {
            if stale_if_error {
                Decision::StaleIfError { refresh: false }
            } else {
                Decision::Failed
            }
        }
        Status::Failed(_) if stale_if_error && !stale => Decision::StaleIfError { refresh: true },
        Status::Idle | Status::Failed(_) | Status::Pass(_) => {
            if stale {
                Decision::Stale { refresh: true }
            } else {
                Decision::Miss {
                    expect: Some(entry.version),
                }
            }
        }
    }
}

/// [`decide`] for a request that waited for a job and was woken with the settled entry:
/// the job's result reaches it whatever its timing. A failure is answered even when its
/// error TTL is already over (`error_ttl = 0s`), where [`decide`] would start a new job and
/// the waiter would never see an answer.
///
/// Likewise a result delivered once and kept ([`Entry::result_for_waiters`]): every waiter
/// gets it, also after one of them took the one-time delivery.
pub fn decide_waited(entry: Option<&Entry>, now: Timestamp) -> Decision {
    let decision = decide(entry, now);
    match entry.map(|e| &e.status) {
        Some(Status::Failed(_)) if matches!(decision, Decision::Miss { .. }) => Decision::Failed,
        Some(Status::Pass(pass))
            if now < pass.until && entry.and_then(Entry::result_for_waiters).is_some() =>
        {
            Decision::Pass {
                once: pass.once.is_some(),
            }
        }
        _ => decision,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::{HeaderMap, StatusCode};

    use super::*;
    use crate::pattern::{
        Content, Failure, JobId, JobInfo, Key, PassInfo, Priority, StoredResponse,
    };

    const T0: u64 = 1_000_000;

    fn response() -> Arc<StoredResponse> {
        Arc::new(StoredResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: "x".into(),
            selecting: HeaderMap::new(),
        })
    }

    /// Content generated at T0: fresh 10 s, stale 10 s more, stale-if-error until +100 s.
    fn content() -> Content {
        Content {
            response: response(),
            generated_at: Timestamp(T0),
            fresh_until: Timestamp(T0 + 10_000),
            stale_until: Timestamp(T0 + 20_000),
            stale_if_error_until: Timestamp(T0 + 100_000),
            tags: vec![],
            job_millis: 5,
        }
    }

    fn job(failing: bool) -> Status {
        Status::Pending(JobInfo {
            id: JobId(1),
            priority: Priority::Miss,
            created_at: Timestamp(T0),
            run_at: Timestamp(T0),
            attempts: u32::from(failing),
            lease_until: None,
            last_error: failing.then(|| "boom".into()),
            after_failure: false,
        })
    }

    fn failed(until: u64) -> Status {
        Status::Failed(Failure {
            until: Timestamp(T0 + until * 1000),
            response: response(),
            error: "boom".into(),
            attempts: 3,
            at: Timestamp(T0),
            request: None,
        })
    }

    fn pass(until: u64, once: bool) -> Status {
        Status::Pass(PassInfo {
            until: Timestamp(T0 + until * 1000),
            once: once.then(response),
            reason: "private".into(),
        })
    }

    fn entry(content: Option<Content>, status: Status) -> Entry {
        Entry {
            key: Key::parse("0123456789abcdef0123456789abcdef").expect("key"),
            uri: "http://a.test/".into(),
            version: 7,
            content,
            status,
        }
    }

    #[test]
    fn every_state_and_window() {
        use Decision::*;
        let c = || Some(content());
        // (content?, status, seconds after T0, expected)
        let cases: Vec<(Option<Content>, Status, u64, Decision)> = vec![
            // missing
            (None, Status::Idle, 0, Miss { expect: Some(7) }),
            // fresh / stale / expired, idle
            (c(), Status::Idle, 5, Hit),
            (c(), Status::Idle, 15, Stale { refresh: true }),
            (c(), Status::Idle, 50, Miss { expect: Some(7) }),
            (c(), Status::Idle, 500, Miss { expect: Some(7) }),
            // pending: nothing to serve, a stale copy, a stale-if-error copy while failing
            (None, job(false), 0, Pending),
            (c(), job(false), 5, Hit),
            (c(), job(false), 15, Stale { refresh: false }),
            (c(), job(false), 50, Pending),
            (c(), job(true), 50, StaleIfError { refresh: false }),
            (c(), job(true), 500, Pending),
            // failed: inside the error TTL, with and without a stale-if-error copy; after it
            (None, failed(30), 25, Failed),
            (c(), failed(30), 25, StaleIfError { refresh: false }),
            (c(), failed(30), 15, StaleIfError { refresh: false }),
            (c(), failed(30), 50, StaleIfError { refresh: true }),
            (c(), failed(30), 500, Miss { expect: Some(7) }),
            (None, failed(30), 31, Miss { expect: Some(7) }),
            // pass: inside the pass TTL (with and without a once response), then expired
            (None, pass(30, false), 10, Pass { once: false }),
            (None, pass(30, true), 10, Pass { once: true }),
            (c(), pass(30, false), 5, Pass { once: false }),
            (None, pass(30, false), 31, Miss { expect: Some(7) }),
        ];
        for (i, (content, status, secs, want)) in cases.into_iter().enumerate() {
            let e = entry(content, status);
            let got = decide(Some(&e), Timestamp(T0 + secs * 1000));
            assert_eq!(got, want, "case {i}: {:?} at +{secs}s", e.status.as_str());
        }
    }

    #[test]
    fn a_copy_the_origin_forbade_serving_stale_is_only_revalidated() {
        use Decision::*;
        let strict = |cache_control: &'static str| {
            let mut c = content();
            let mut headers = HeaderMap::new();
            headers.insert("cache-control", cache_control.parse().expect("value"));
            headers.insert("etag", "\"v1\"".parse().expect("value"));
            c.response = Arc::new(StoredResponse {
                headers,
                ..(*c.response).clone()
            });
            Some(c)
        };
        let cases = [
            ("max-age=10, must-revalidate", Status::Idle, 5, Hit),
            (
                "max-age=10, must-revalidate",
                Status::Idle,
                15,
                Miss { expect: Some(7) },
            ),
            (
                "max-age=10, proxy-revalidate",
                Status::Idle,
                15,
                Miss { expect: Some(7) },
            ),
            ("s-maxage=10", Status::Idle, 15, Miss { expect: Some(7) }),
            // While its revalidation runs, nothing may be served.
            ("max-age=10, must-revalidate", job(false), 15, Pending),
            // The origin's explicit grant still counts.
            (
                "s-maxage=10, stale-while-revalidate=10",
                Status::Idle,
                15,
                Stale { refresh: true },
            ),
            ("max-age=10", Status::Idle, 15, Stale { refresh: true }),
            // no-cache: never served without a revalidation, whatever else it grants.
            ("no-cache", Status::Idle, 5, Hit),
            ("no-cache", Status::Idle, 15, Miss { expect: Some(7) }),
            (
                "no-cache, stale-while-revalidate=60",
                Status::Idle,
                15,
                Miss { expect: Some(7) },
            ),
        ];
        for (cache_control, status, secs, want) in cases {
            let e = entry(strict(cache_control), status);
            let got = decide(Some(&e), Timestamp(T0 + secs * 1000));
            assert_eq!(got, want, "{cache_control} at +{secs}s");
        }
    }

    #[test]
    fn a_result_delivered_once_is_revalidated_once_it_has_gone() {
        use Decision::*;
        // A stale-on-arrival result kept beside its one-time delivery, as settle leaves it.
        let delivered = |once: bool| {
            let mut c = content();
            c.fresh_until = Timestamp(T0);
            c.stale_until = Timestamp(T0);
            let mut e = entry(Some(c), pass(30, once));
            if let Status::Pass(p) = &mut e.status {
                p.reason = "stale-on-arrival".into();
            }
            e
        };
        // (one-time delivery still there, waited, seconds after T0, expected)
        let cases = [
            (true, false, 10, Pass { once: true }),
            (false, false, 10, Miss { expect: Some(7) }),
            // A waiter of the job gets the result even after another took the delivery.
            (true, true, 10, Pass { once: true }),
            (false, true, 10, Pass { once: false }),
            // After the pass TTL, and after the kept copy's stale-if-error window.
            (false, true, 31, Miss { expect: Some(7) }),
            (false, false, 101, Miss { expect: Some(7) }),
        ];
        for (once, waited, secs, want) in cases {
            let e = delivered(once);
            let now = Timestamp(T0 + secs * 1000);
            let got = if waited {
                decide_waited(Some(&e), now)
            } else {
                decide(Some(&e), now)
            };
            assert_eq!(got, want, "once {once}, waited {waited}, +{secs}s");
        }
        // A pass without a kept copy still passes once its delivery has gone.
        let e = entry(None, pass(30, false));
        assert_eq!(
            decide(Some(&e), Timestamp(T0 + 10_000)),
            Pass { once: false }
        );
    }

    #[test]
    fn absent_entry_is_a_miss_claimed_only_if_still_absent() {
        assert_eq!(decide(None, Timestamp(T0)), Decision::Miss { expect: None });
    }

    #[test]
    fn after_failure_flag_keeps_serving_stale_if_error() {
        let mut e = entry(Some(content()), job(false));
        if let Status::Pending(j) = &mut e.status {
            j.after_failure = true;
        }
        assert_eq!(
            decide(Some(&e), Timestamp(T0 + 50_000)),
            Decision::StaleIfError { refresh: false }
        );
    }

    #[test]
    fn a_waiter_gets_the_failure_it_waited_for_even_past_its_error_ttl() {
        use Decision::*;
        let c = || Some(content());
        // (content?, status, seconds after T0, decide_waited)
        let cases: Vec<(Option<Content>, Status, u64, Decision)> = vec![
            // An error TTL of 0: the failure is over as it is stored, but not for its waiters.
            (None, failed(0), 0, Failed),
            (c(), failed(0), 500, Failed),
            // Everything else as decide says.
            (None, failed(30), 25, Failed),
            (c(), failed(30), 25, StaleIfError { refresh: false }),
            (c(), Status::Idle, 5, Hit),
            (c(), Status::Idle, 500, Miss { expect: Some(7) }),
            (None, pass(30, true), 10, Pass { once: true }),
        ];
        for (i, (content, status, secs, want)) in cases.into_iter().enumerate() {
            let e = entry(content, status);
            let got = decide_waited(Some(&e), Timestamp(T0 + secs * 1000));
            assert_eq!(got, want, "case {i}: {:?} at +{secs}s", e.status.as_str());
        }
    }
}
