//! What this process knows of the queue, so idle workers wait and empty takes are spared.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::pattern::Timestamp;

/// What this process knows of the queue: idle workers wait on it, and a worker that found
/// the queue empty does not ask the database again until a job may have come.
///
/// Every sign that a job may be ready bumps a count: a claim of this process, a `NOTIFY` on
/// the jobs channel, the listener (re)connecting, a job handed back or retried at once. A take
/// that finds fewer ready jobs than it asked for remembers the count it began with; until
/// that count moves, or [`PgConfig::recheck`](super::PgConfig::recheck) passes on the store clock, the next take answers
/// "nothing" without a query. (A retry coming due announces nothing; it waits at most that
/// long.) On the hand-off path this spares a worker an empty take after every job. Without a
/// working listener every take asks.
///
/// A lease running out announces nothing either: takes look for lapsed leases once per
/// recheck, in a statement of their own, so the take of every job reads one index, not two.
#[derive(Debug, Default)]
pub(super) struct JobSignal {
    pub(super) wake: Notify,
    pub(super) announced: AtomicU64,
    pub(super) listening: AtomicBool,
    /// The count and the store time of the last take that emptied the queue.
    pub(super) drained: std::sync::Mutex<Option<(u64, Timestamp)>>,
    /// When a take last looked for lapsed leases.
    pub(super) rescued: std::sync::Mutex<Option<Timestamp>>,
}

impl JobSignal {
    /// Jobs may be ready: counts it and wakes the idle workers.
    pub(super) fn announce(&self) {
        self.announced.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_waiters();
    }

    /// One job is ready: counts it and wakes one idle worker (or the next to wait).
    pub(super) fn announce_one(&self) {
        self.announced.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// The listener is up (`true`: anything may have happened while it was down) or down.
    pub(super) fn listening(&self, on: bool) {
        self.listening.store(on, Ordering::Release);
        self.announce();
    }

    /// The count to pass to [`drained`](Self::drained) after a take begun now.
    pub(super) fn seen(&self) -> u64 {
        self.announced.load(Ordering::Acquire)
    }

    /// Whether the queue is known to hold nothing ready for a take begun at `now`.
    pub(super) fn known_empty(&self, now: Timestamp, recheck: Duration) -> bool {
        if !self.listening.load(Ordering::Acquire) {
            return false;
        }
        let drained = *self.drained.lock().unwrap_or_else(|e| e.into_inner());
        drained.is_some_and(|(count, at)| count == self.seen() && now < at.plus(recheck))
    }

    /// Whether a job was announced since a take last found the queue empty.
    pub(super) fn announced_since_drained(&self) -> bool {
        let drained = *self.drained.lock().unwrap_or_else(|e| e.into_inner());
        drained.is_some_and(|(count, _)| count != self.seen())
    }

    /// A take begun at the count and time given found the queue empty (or `None`: it found
    /// as many jobs as it asked for, so more may wait).
    pub(super) fn drained(&self, seen: Option<(u64, Timestamp)>) {
        *self.drained.lock().unwrap_or_else(|e| e.into_inner()) = seen;
    }

    /// Whether a take at `now` should look for lapsed leases (and, if so, notes that it does).
    pub(super) fn rescue_due(&self, now: Timestamp, recheck: Duration) -> bool {
        let mut rescued = self.rescued.lock().unwrap_or_else(|e| e.into_inner());
        if rescued.is_some_and(|at| now < at.plus(recheck)) {
            return false;
        }
        *rescued = Some(now);
        true
    }
}
