//! The flood cap on PostgreSQL: at most [`PgConfig::max_pending`](super::PgConfig) jobs at once,
//! across every process sharing the schema, without a count on every claim.
//!
//! Counting pending rows inside each claim would make every miss scan up to the cap's worth
//! of index entries, and a counter row updated by every claim and completion would be one
//! more write on the hottest path and a row every front contends for. Instead each process
//! keeps what it last counted (exactly, up to the cap, on the two partial indexes of pending
//! jobs) and the jobs it has enqueued since, and counts again
//!
//! - after an eighth of the room left at the last count has been claimed by this process
//!   (at least one claim): so up to eight fronts racing for the last places cannot, between
//!   them, claim more than the room there was;
//! - and when the count is older than [`FAR`] (below half the cap) or [`NEAR`] (above it),
//!   to see other fronts' claims and the jobs workers finished.
//!
//! At the cap every claim is refused from the count, with no query, until it is [`NEAR`] old.
//! On a short queue (the usual state) a front counts once per [`FAR`] at most, or once per an
//! eighth of the cap's claims: nothing a miss would notice.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an estimate below an eighth of the cap is trusted.
pub(super) const FAR: Duration = Duration::from_millis(100);
/// How long an estimate near the cap is trusted.
pub(super) const NEAR: Duration = Duration::from_millis(10);

/// What this process knows of the queue's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Seen {
    /// The last exact count (at most the cap).
    count: u64,
    /// When it was taken; `None` before the first count.
    at: Option<Instant>,
    /// Places this process's claims took since (a claim takes its place before it is sent).
    since: u64,
    /// This process's claims let through and not yet answered: a count taken meanwhile may
    /// not include them, so they keep their places past it.
    in_flight: u64,
}

/// What a claim does before it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Gate {
    /// Go on: the queue is below the cap.
    Claim,
    /// Count the queue first (the estimate is too old to trust).
    Count,
    /// Refuse: the queue holds about this many jobs, at or over the cap.
    Refuse(u64),
}

impl Seen {
    fn gate(&self, max: u64, now: Instant) -> Gate {
        let Some(at) = self.at else {
            return Gate::Count;
        };
        let trusted_for = if self.count >= max / 2 { NEAR } else { FAR };
        if now.saturating_duration_since(at) >= trusted_for {
            return Gate::Count;
        }
        if self.count >= max {
            return Gate::Refuse(self.count);
        }
        let allowance = ((max - self.count) / 8).max(1);
        if self.since >= allowance {
            return Gate::Count;
        }
        Gate::Claim
    }
}

/// The cap and this process's estimate.
#[derive(Debug)]
pub(super) struct PendingCap {
    max: u64,
    // A std mutex: held for a few instructions, never across an await.
    seen: Mutex<Seen>,
}

impl PendingCap {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max: u64::try_from(max).unwrap_or(u64::MAX),
            seen: Mutex::default(),
        }
    }

    /// The cap (the count's limit: counting further would not change the answer).
    pub(super) fn max(&self) -> u64 {
        self.max
    }

    /// What a claim does now. A claim let through takes its place at once (before it is
    /// sent), so claims in flight together cannot all pass on one count; a place taken by a
    /// claim that then enqueues nothing (the entry existed) errs on the safe side until the
    /// next count. A cap of `usize::MAX` is no cap: nothing is counted.
    pub(super) fn gate(&self, now: Instant) -> Gate {
        if self.max == u64::MAX {
            return Gate::Claim;
        }
        let mut seen = self.lock();
        let gate = seen.gate(self.max, now);
        if gate == Gate::Claim {
            seen.since += 1;
            seen.in_flight += 1;
        }
        gate
    }

    /// Records an exact count taken at `at`; the answer for the claim that counted (which
    /// takes its place, as in [`gate`](Self::gate)).
    pub(super) fn counted(&self, count: u64, at: Instant) -> Gate {
        let mut seen = self.lock();
        let in_flight = seen.in_flight;
        *seen = Seen {
            count,
            at: Some(at),
            since: in_flight,
            in_flight,
        };
        if count.saturating_add(in_flight) >= self.max {
            Gate::Refuse(count.saturating_add(in_flight))
        } else {
            seen.since += 1;
            seen.in_flight += 1;
            Gate::Claim
        }
    }

    /// A claim let through has been answered (whatever it did).
    pub(super) fn answered(&self) {
        let mut seen = self.lock();
        seen.in_flight = seen.in_flight.saturating_sub(1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        // The guarded data is plain numbers: a panic elsewhere cannot leave it torn.
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_table() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let seen = |count, at: Option<Duration>, since| Seen {
            count,
            at: at.map(|d| t0 + d),
            since,
            in_flight: 0,
        };
        let now = t0 + ms(1000);
        // (seen, expected) with a cap of 800
        let cases = [
            (Seen::default(), Gate::Count),
            (seen(0, Some(ms(950)), 0), Gate::Claim),
            (seen(0, Some(ms(900)), 0), Gate::Count),
            // An eighth of the room left (100 of 800) claimed since the count: count again.
            (seen(0, Some(ms(950)), 99), Gate::Claim),
            (seen(0, Some(ms(950)), 100), Gate::Count),
            (seen(720, Some(ms(995)), 9), Gate::Claim),
            (seen(720, Some(ms(995)), 10), Gate::Count),
            (seen(799, Some(ms(995)), 0), Gate::Claim),
            (seen(799, Some(ms(995)), 1), Gate::Count),
            // Half the cap or more: trusted for 10 ms only.
            (seen(400, Some(ms(990)), 0), Gate::Count),
            (seen(800, Some(ms(995)), 0), Gate::Refuse(800)),
            (seen(800, Some(ms(990)), 0), Gate::Count),
        ];
        for (seen, want) in cases {
            assert_eq!(seen.gate(800, now), want, "{seen:?}");
        }
    }

    #[test]
    fn claims_since_a_count_lead_to_the_next_count() {
        let cap = PendingCap::new(16);
        let t0 = Instant::now();
        assert_eq!(cap.gate(t0), Gate::Count);
        assert_eq!(cap.counted(0, t0), Gate::Claim);
        assert_eq!(cap.gate(t0), Gate::Claim);
        assert_eq!(cap.gate(t0), Gate::Count, "two of the 16 places taken");
        // Both claims still on their way when the queue is counted: they keep their places.
        assert_eq!(cap.counted(14, t0), Gate::Refuse(16));
        cap.answered();
        cap.answered();
        assert_eq!(cap.counted(14, t0), Gate::Claim);
        cap.answered();
        assert_eq!(cap.counted(16, t0), Gate::Refuse(16));
        assert_eq!(cap.gate(t0), Gate::Refuse(16));
        assert_eq!(cap.gate(t0 + NEAR), Gate::Count);
    }
}
