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

use self::names::*;

/// The metric names, for exporters and dashboards that read them back.
pub mod names {
    /// Requests by outcome (label `outcome`, a [`Phase`](crate::pattern::Phase)).
    pub const REQUESTS: &str = "errand_requests_total";
    /// `Prefer: wait` requests (label `outcome`: `ready` or `timeout`).
    pub const WAITS: &str = "errand_waits_total";
    /// Jobs enqueued by a request's claim.
    pub const JOBS_CLAIMED: &str = "errand_jobs_claimed_total";
    /// Claims that found a live job.
    pub const JOBS_DEDUPLICATED: &str = "errand_jobs_deduplicated_total";
    /// Jobs ended (label `outcome`, a [`JobOutcome`](crate::pattern::JobOutcome) that ends a job).
    pub const JOBS_COMPLETED: &str = "errand_jobs_completed_total";
    /// Attempts that failed and were scheduled again.
    pub const JOBS_RETRIED: &str = "errand_jobs_retried_total";
    /// Jobs taken again after a lease ran out.
    pub const JOBS_REDELIVERED: &str = "errand_jobs_redelivered_total";
    /// Results dropped because the lease was taken over.
    pub const JOBS_LEASE_LOST: &str = "errand_jobs_lease_lost_total";
    /// How long each attempt took (histogram, label `route`).
    pub const JOB_DURATION: &str = "errand_job_duration_seconds";
    /// Jobs by queue state (gauge, label `state`).
    pub const QUEUE_JOBS: &str = "errand_queue_jobs";
    /// Age of the oldest ready job (gauge).
    pub const QUEUE_OLDEST_READY: &str = "errand_queue_oldest_ready_seconds";
    /// Entries by state (gauge, label `state`).
    pub const ENTRIES: &str = "errand_entries";
    /// Bytes held by settled entries (gauge).
    pub const ENTRY_BYTES: &str = "errand_entry_bytes";
    /// Entries the memory backend dropped to stay within its budget.
    pub const EVICTIONS: &str = "errand_evictions_total";
}

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
        requests: Phase::ALL.map(|phase| counter!(REQUESTS, "outcome" => phase.as_str())),
        wait_ready: counter!(WAITS, "outcome" => "ready"),
        wait_timeout: counter!(WAITS, "outcome" => "timeout"),
        claimed: counter!(JOBS_CLAIMED),
        deduplicated: counter!(JOBS_DEDUPLICATED),
        completed: JobOutcome::ENDED
            .map(|outcome| counter!(JOBS_COMPLETED, "outcome" => outcome.as_str())),
        retried: counter!(JOBS_RETRIED),
        redelivered: counter!(JOBS_REDELIVERED),
        lease_lost: counter!(JOBS_LEASE_LOST),
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
    counter!(EVICTIONS).increment(1);
}

/// Records one attempt's duration on `route`.
pub(crate) fn job_duration(route: &str, seconds: f64) {
    histogram!(JOB_DURATION, "route" => route.to_owned()).record(seconds);
}

/// Sets the queue and entry gauges from a store's [`Stats`].
pub fn record_stats(stats: &Stats) {
    let count = |n: u64| n as f64;
    gauge!(QUEUE_JOBS, "state" => "ready").set(count(stats.ready));
    gauge!(QUEUE_JOBS, "state" => "scheduled").set(count(stats.scheduled));
    gauge!(QUEUE_JOBS, "state" => "running").set(count(stats.running));
    gauge!(QUEUE_OLDEST_READY).set(stats.oldest_ready_ms as f64 / 1000.0);
    for (state, n) in [
        ("fresh", stats.fresh),
        ("stale", stats.stale),
        ("pending", stats.pending),
        ("failed", stats.failed),
        ("pass", stats.pass),
    ] {
        gauge!(ENTRIES, "state" => state).set(count(n));
    }
    gauge!(ENTRY_BYTES).set(count(stats.bytes));
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
