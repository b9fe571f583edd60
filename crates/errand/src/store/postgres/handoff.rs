//! The hand-off: jobs a claim leased to an idle worker of this process in its own statement.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::store::Job;

/// Jobs this process claimed while one of its workers was idle, leased to it in the claim's
/// own statement (saving that worker a `take` and its commit) and waiting for its next
/// [`take`](crate::store::Store::take). The lease is in the table like any other: if this process dies
/// first, the job is taken over when the lease runs out.
#[derive(Default)]
pub(super) struct HandOff {
    /// Callers inside [`Store::wait_for_jobs`](crate::store::Store::wait_for_jobs) now.
    pub(super) idle: AtomicUsize,
    pub(super) state: std::sync::Mutex<HandOffState>,
}

#[derive(Default)]
pub(super) struct HandOffState {
    /// The lease this process's workers take jobs for (none before their first take).
    pub(super) lease: Option<Duration>,
    pub(super) jobs: Vec<Job>,
    /// Claims on their way that will hand their job over.
    pub(super) reserved: usize,
}

/// A claim's right to hand its job over; given back when dropped unfilled.
pub(super) struct Reservation<'a> {
    pub(super) handoff: &'a HandOff,
    pub(super) lease: Duration,
}

/// Counts an idle worker while it waits.
pub(super) struct Idle<'a>(&'a AtomicUsize);

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HandOff {
    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, HandOffState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn idle(&self) -> Idle<'_> {
        self.idle.fetch_add(1, Ordering::AcqRel);
        Idle(&self.idle)
    }

    /// A hand-off, if more workers wait idle than jobs are already on their way to them.
    pub(super) fn reserve(&self) -> Option<Reservation<'_>> {
        let idle = self.idle.load(Ordering::Acquire);
        let mut state = self.state();
        let lease = state.lease?;
        if idle <= state.jobs.len() + state.reserved {
            return None;
        }
        state.reserved += 1;
        Some(Reservation {
            handoff: self,
            lease,
        })
    }

    pub(super) fn has_jobs(&self) -> bool {
        !self.state().jobs.is_empty()
    }

    /// Every handed-over job not yet taken, once no claim is on its way to hand one over
    /// (waiting at most `limit` for those).
    pub(super) async fn drain(&self, limit: Duration) -> Vec<Job> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.state().reserved > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        std::mem::take(&mut self.state().jobs)
    }

    /// Up to `max` handed-over jobs; remembers `lease` for the hand-offs to come.
    pub(super) fn take(&self, max: usize, lease: Duration) -> Vec<Job> {
        let mut state = self.state();
        state.lease = Some(lease);
        let n = max.min(state.jobs.len());
        state.jobs.drain(..n).collect()
    }
}

impl Reservation<'_> {
    pub(super) fn fill(self, job: Job) {
        self.handoff.state().jobs.push(job);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut state = self.handoff.state();
        state.reserved = state.reserved.saturating_sub(1);
    }
}
