//! What an answer of the front says of itself: the `Cache-Status` of an answer from the store,
//! and the `Retry-After` of the answers that send the client away (`202`, a failure, `503`).
//!
//! Pure: the front brings the [`Decision`] it acted on, the entry's parts and `now`.

use std::time::Duration;

use http::StatusCode;

use super::cache_status::{CacheStatus, Detail, Phase};
use super::decide::Decision;
use super::entry::{Content, JobInfo, Timestamp};

/// How a request came to the entry it is answered from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Arrival {
    /// [`Phase::Miss`] if this request claimed the job, [`Phase::Collapsed`] if it found one
    /// claimed by another; `None` if it only looked up.
    pub claimed: Option<Phase>,
    /// It waited (`Prefer: wait`) for a job to end.
    pub waited: bool,
}

impl Arrival {
    /// The status of an answer that is `phase` for a request that only looked up. A request
    /// that waited is answered with the result of its job instead: its claim's phase, the
    /// result's `status` as `fwd-status`, and whether the result was `stored`.
    pub(crate) fn status(self, phase: Phase, status: StatusCode, stored: bool) -> CacheStatus {
        if self.waited {
            CacheStatus::new(self.claimed.unwrap_or(Phase::Pending)).waited(status.as_u16(), stored)
        } else {
            CacheStatus::new(phase)
        }
    }
}

/// The `Cache-Status` of `content` served at `now` as `decision` said: a hit, stale while
/// it is refreshed, or stale in place of an error; `None` for a decision that serves no
/// content.
pub(crate) fn served(
    decision: Decision,
    content: &Content,
    now: Timestamp,
    arrival: Arrival,
) -> Option<CacheStatus> {
    let ttl = content.fresh_until.secs_from(now);
    let status = match decision {
        Decision::Hit => CacheStatus::new(Phase::Hit).ttl(ttl),
        Decision::Stale { .. } => CacheStatus::new(Phase::Stale).ttl(ttl),
        Decision::StaleIfError { .. } => CacheStatus::new(Phase::Stale)
            .ttl(ttl)
            .detail(Detail::StaleIfError),
        _ => return None,
    };
    if arrival.waited {
        return Some(arrival.status(Phase::Hit, content.response.status, true));
    }
    Some(status)
}

/// The bounds of an adaptive `Retry-After`, in whole seconds (at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryBounds {
    /// The shortest.
    pub min: Duration,
    /// The longest.
    pub max: Duration,
}

/// `Retry-After` of a `202`: when the pending `job` should be done, given that the route's
/// jobs take `expected`. A job backing off after a failed attempt runs again at its
/// `run_at`, then takes as long as usual. Whole seconds, rounded up, within `bounds`.
pub(crate) fn pending_retry_after(
    job: Option<&JobInfo>,
    expected: Duration,
    now: Timestamp,
    bounds: RetryBounds,
) -> u64 {
    let elapsed = job.map_or(Duration::ZERO, |j| now.since(j.created_at.max(j.run_at)));
    let backoff = job.map_or(Duration::ZERO, |j| j.run_at.since(now));
    let remaining = (expected + backoff).saturating_sub(elapsed);
    let secs = u64::try_from(remaining.as_millis().div_ceil(1000)).unwrap_or(u64::MAX);
    secs.clamp(bounds.min.as_secs().max(1), bounds.max.as_secs().max(1))
}

/// `Retry-After` of a failure's answer: the rest of its error TTL (`until`), in whole
/// seconds rounded up, so the client does not come back before a new job may run.
pub(crate) fn failed_retry_after(until: Timestamp, now: Timestamp) -> u64 {
    u64::try_from(until.since(now).as_millis().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// `Retry-After` of a `503` (the store is unreachable or full): the shortest wait.
pub(crate) fn unavailable_retry_after(bounds: RetryBounds) -> u64 {
    bounds.min.as_secs().max(1)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pattern::entry::{JobId, Priority, StoredResponse};

    const NOW: Timestamp = Timestamp(1_000_000);

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn content(fresh_for: i64) -> Content {
        let fresh_until = Timestamp(NOW.0.saturating_add_signed(fresh_for * 1000));
        Content {
            response: Arc::new(StoredResponse {
                status: StatusCode::OK,
                headers: http::HeaderMap::new(),
                body: bytes::Bytes::new(),
                selecting: http::HeaderMap::new(),
            }),
            generated_at: Timestamp(0),
            fresh_until,
            stale_until: fresh_until.plus(s(60)),
            stale_if_error_until: fresh_until.plus(s(600)),
            tags: Vec::new(),
            job_millis: 0,
        }
    }

    #[test]
    fn served_content_says_how_fresh_it_is() {
        let looked_up = Arrival::default();
        let waited = Arrival {
            claimed: Some(Phase::Miss),
            waited: true,
        };
        let cases = [
            (Decision::Hit, 41, looked_up, "errand; hit; ttl=41"),
            (
                Decision::Stale { refresh: true },
                -12,
                looked_up,
                "errand; hit; ttl=-12; fwd=stale",
            ),
            (
                Decision::StaleIfError { refresh: false },
                -70,
                looked_up,
                "errand; hit; ttl=-70; fwd=stale; detail=stale-if-error",
            ),
            (
                Decision::Hit,
                60,
                waited,
                "errand; fwd=uri-miss; fwd-status=200; stored; detail=waited",
            ),
        ];
        for (decision, ttl, arrival, want) in cases {
            let status = served(decision, &content(ttl), NOW, arrival).unwrap();
            assert_eq!(status.to_string(), want, "{decision:?} with ttl {ttl}");
        }
        assert_eq!(served(Decision::Pending, &content(1), NOW, looked_up), None);
    }

    #[test]
    fn a_request_that_waited_reports_its_claim_and_the_result() {
        let collapsed = Arrival {
            claimed: Some(Phase::Collapsed),
            waited: true,
        };
        assert_eq!(
            collapsed
                .status(Phase::Failed, StatusCode::BAD_GATEWAY, false)
                .to_string(),
            "errand; fwd=uri-miss; fwd-status=502; collapsed; detail=waited"
        );
        assert_eq!(
            Arrival::default()
                .status(Phase::Failed, StatusCode::BAD_GATEWAY, false)
                .to_string(),
            "errand; fwd=uri-miss; detail=failed"
        );
    }

    #[test]
    fn retry_after_counts_what_is_left_of_the_job() {
        let bounds = RetryBounds {
            min: s(1),
            max: s(30),
        };
        let job = |created: u64, run_at: u64| JobInfo {
            id: JobId(1),
            priority: Priority::Miss,
            created_at: Timestamp(created),
            run_at: Timestamp(run_at),
            attempts: 1,
            lease_until: None,
            last_error: None,
            after_failure: false,
        };
        let started_3s_ago = job(NOW.0 - 3000, NOW.0 - 3000);
        let backing_off_5s = job(NOW.0 - 10_000, NOW.0 + 5000);
        // (job, expected duration, Retry-After)
        let cases = [
            (None, ms(200), 1),
            (None, ms(4200), 5),
            (Some(&started_3s_ago), ms(4200), 2),
            (Some(&started_3s_ago), s(300), 30),
            (Some(&started_3s_ago), s(1), 1),
            (Some(&backing_off_5s), s(2), 7),
        ];
        for (job, expected, want) in cases {
            assert_eq!(
                pending_retry_after(job, expected, NOW, bounds),
                want,
                "{job:?}, {expected:?}"
            );
        }
        assert_eq!(unavailable_retry_after(bounds), 1);
    }

    #[test]
    fn a_failure_sends_the_client_away_for_the_rest_of_its_error_ttl() {
        assert_eq!(failed_retry_after(NOW.plus(ms(9100)), NOW), 10);
        assert_eq!(failed_retry_after(NOW.plus(s(10)), NOW), 10);
        assert_eq!(failed_retry_after(NOW, NOW), 1);
        assert_eq!(failed_retry_after(Timestamp(0), NOW), 1);
    }
}
