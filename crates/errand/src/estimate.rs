//! How long a route's jobs take, as a moving average: what an adaptive `Retry-After`
//! ([`pattern::answer`](crate::pattern::answer)) expects of a job.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::RouteId;

/// Per-route exponentially weighted moving average of job durations, in milliseconds.
/// Lock-free: fronts read it on every `202`, workers and fronts update it when they see a
/// job's duration.
#[derive(Debug)]
pub(crate) struct JobEstimates {
    millis: Vec<AtomicU64>,
}

/// Before any job of a route has been seen, assume this.
const INITIAL_MS: u64 = 1000;

/// Marks a route with no observation yet (a real job of 0 ms is stored as 1 ms).
const UNSEEN: u64 = 0;

impl JobEstimates {
    /// Estimates for `routes` routes.
    pub(crate) fn new(routes: usize) -> Self {
        Self {
            millis: (0..routes).map(|_| AtomicU64::new(UNSEEN)).collect(),
        }
    }

    /// Folds one observed duration in (weight 1/4: adapts within a few jobs); the first
    /// observation of a route is taken as it is.
    pub(crate) fn observe(&self, route: RouteId, took: Duration) {
        let Some(slot) = self.millis.get(route.0) else {
            return;
        };
        let sample = u64::try_from(took.as_millis()).unwrap_or(u64::MAX).max(1);
        let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
            Some(if old == UNSEEN {
                sample
            } else {
                old - old / 4 + sample / 4
            })
        });
    }

    /// The expected duration of a route's job.
    pub(crate) fn expected(&self, route: RouteId) -> Duration {
        let ms = self
            .millis
            .get(route.0)
            .map_or(UNSEEN, |m| m.load(Ordering::Relaxed));
        Duration::from_millis(if ms == UNSEEN { INITIAL_MS } else { ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_follow_observations() {
        let e = JobEstimates::new(2);
        assert_eq!(e.expected(RouteId(0)), Duration::from_millis(INITIAL_MS));
        e.observe(RouteId(0), Duration::from_secs(8));
        assert_eq!(
            e.expected(RouteId(0)),
            Duration::from_secs(8),
            "the first sample is taken whole"
        );
        e.observe(RouteId(0), Duration::from_secs(4));
        assert_eq!(e.expected(RouteId(0)), Duration::from_secs(7));
        assert_eq!(e.expected(RouteId(1)), Duration::from_millis(INITIAL_MS));
        e.observe(RouteId(9), Duration::from_secs(1));
    }
}
