//! What errand counts, through the [`metrics`] facade: nothing is recorded until the
//! application installs a recorder (the `errand` binary installs a Prometheus one and serves
//! it on its admin listener). Counter handles are resolved once, on first use (so install the
//! recorder before serving), and counting on the hit path is an atomic add.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `errand_requests_total` | counter | `outcome` | requests by outcome, in the `Cache-Status` vocabulary: hit, stale, miss, pending, collapsed, pass, failed, error |
//! | `errand_waits_total` | counter | `outcome` | `Prefer: wait` requests: `ready` (answered with the result) or `timeout` (answered `202`) |
//! | `errand_jobs_claimed_total` | counter | | jobs enqueued by a request's claim |
//! | `errand_jobs_deduplicated_total` | counter | | claims that found a live job for the signature |
//! | `errand_jobs_completed_total` | counter | `outcome` | jobs ended: stored, pass, once (a final answer delivered to one client), failed |
//! | `errand_jobs_retried_total` | counter | | attempts that failed and were scheduled again |
//! | `errand_jobs_redelivered_total` | counter | | jobs taken again after a worker's lease ran out |
//! | `errand_jobs_lease_lost_total` | counter | | results dropped because the lease was taken over |
//! | `errand_job_duration_seconds` | histogram | `route` | how long each attempt took |
//! | `errand_queue_jobs` | gauge | `state` | jobs ready, scheduled (backing off), running |
//! | `errand_queue_oldest_ready_seconds` | gauge | | age of the oldest ready job |
//! | `errand_entries` | gauge | `state` | entries fresh, stale, pending, failed, pass |
//! | `errand_entry_bytes` | gauge | | bytes held by settled entries |
//! | `errand_evictions_total` | counter | | entries the memory backend dropped to stay within its byte budget |
//!
//! The gauges are read from [`Inspect::stats`](crate::store::Inspect::stats) by whoever exports
//! them ([`record_stats`]), at scrape time.

use metrics::{Counter, counter, gauge, histogram};

use crate::pattern::{JobOutcome, Phase};
use crate::store::Stats;

/// Counter handles, resolved on first use: install the recorder before serving.
#[derive(Debug)]
pub(crate) struct Counters {
    requests: [Counter; Phase::ALL.len()],
    pub(crate) wait_ready: Counter,
    pub(crate) wait_timeout: Counter,
    pub(crate) claimed: Counter,
    pub(crate) deduplicated: Counter,
    completed: [Counter; JobOutcome::ENDED.len()],
    retried: Counter,
    pub(crate) redelivered: Counter,
    pub(crate) lease_lost: Counter,
}

/// The process's counters.
pub(crate) fn counters() -> &'static Counters {
    static COUNTERS: std::sync::OnceLock<Counters> = std::sync::OnceLock::new();
    COUNTERS.get_or_init(|| Counters {
        requests: Phase::ALL
            .map(|phase| counter!("errand_requests_total", "outcome" => phase.as_str())),
        wait_ready: counter!("errand_waits_total", "outcome" => "ready"),
        wait_timeout: counter!("errand_waits_total", "outcome" => "timeout"),
        claimed: counter!("errand_jobs_claimed_total"),
        deduplicated: counter!("errand_jobs_deduplicated_total"),
        completed: JobOutcome::ENDED
            .map(|outcome| counter!("errand_jobs_completed_total", "outcome" => outcome.as_str())),
        retried: counter!("errand_jobs_retried_total"),
        redelivered: counter!("errand_jobs_redelivered_total"),
        lease_lost: counter!("errand_jobs_lease_lost_total"),
    })
}

impl Counters {
    /// Counts one answered request (the hit path: an index and an atomic add).
    pub(crate) fn request(&self, phase: Phase) {
        // `Phase::ALL` lists the phases in declaration order (checked below).
        self.requests[phase as usize].increment(1);
    }

    /// Counts one attempt's outcome whose completion the store took: a job ended, or an
    /// attempt scheduled again.
    pub(crate) fn job(&self, outcome: JobOutcome) {
        if outcome.ends_the_job() {
            // `JobOutcome::ENDED` lists them in declaration order (checked below).
            self.completed[outcome as usize].increment(1);
        } else {
            self.retried.increment(1);
        }
    }
}

/// Counts one entry evicted by a byte budget.
pub(crate) fn evicted() {
    counter!("errand_evictions_total").increment(1);
}

/// Records one attempt's duration on `route`.
pub(crate) fn job_duration(route: &str, seconds: f64) {
    histogram!("errand_job_duration_seconds", "route" => route.to_owned()).record(seconds);
}

/// Sets the queue and entry gauges from a store's [`Stats`].
pub fn record_stats(stats: &Stats) {
    let count = |n: u64| n as f64;
    gauge!("errand_queue_jobs", "state" => "ready").set(count(stats.ready));
    gauge!("errand_queue_jobs", "state" => "scheduled").set(count(stats.scheduled));
    gauge!("errand_queue_jobs", "state" => "running").set(count(stats.running));
    gauge!("errand_queue_oldest_ready_seconds").set(stats.oldest_ready_ms as f64 / 1000.0);
    for (state, n) in [
        ("fresh", stats.fresh),
        ("stale", stats.stale),
        ("pending", stats.pending),
        ("failed", stats.failed),
        ("pass", stats.pass),
    ] {
        gauge!("errand_entries", "state" => state).set(count(n));
    }
    gauge!("errand_entry_bytes").set(count(stats.bytes));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_outcomes_that_end_a_job_are_listed_in_declaration_order() {
        for (i, outcome) in JobOutcome::ENDED.iter().enumerate() {
            assert_eq!(*outcome as usize, i, "{outcome:?}");
            assert!(outcome.ends_the_job());
        }
        assert!(!JobOutcome::Retry.ends_the_job());
    }

    #[test]
    fn phases_are_listed_in_declaration_order() {
        for (i, phase) in Phase::ALL.iter().enumerate() {
            assert_eq!(*phase as usize, i, "{phase:?}");
        }
    }
}
