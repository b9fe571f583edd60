//! Per-key wake-ups for `Prefer: wait`, shared by every store implementation: a remote store
//! receives one notification (LISTEN/NOTIFY, pub/sub) and fans it out here to every waiter in
//! this process, so a stampede of waiters costs one subscription, not one each.
//!
//! Two things spare waiters reads of the store:
//! - A completion made in this process can hand its waiters the settled entry itself
//!   ([`Wakeups::wake_settled`]): a stampede of waiters on one front then costs no read when
//!   the job finishes there.
//! - Wake-ups are remembered for five seconds. A caller that has just read the entry as pending
//!   ([`Wakeups::wait_settled_since`]) subscribes without reading it again, unless a wake-up
//!   for its key came after that read: then it looks, as every waiter does otherwise.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::pattern::{Entry, Key};

/// How long a wake-up is remembered. A caller whose read of the pending entry is older than
/// this looks again before it waits.
const RECENT: Duration = Duration::from_secs(5);

/// Waiters by key, and the wake-ups of the last five seconds. A `std::sync::Mutex` is right
/// here: the critical sections are map lookups and inserts, never held across an `.await`.
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    waiters: HashMap<Key, Arc<Subscription>>,
    /// The last wake-up of each key woken within [`RECENT`].
    recent: HashMap<Key, Instant>,
    /// The same wake-ups in the order they came, to forget them.
    order: VecDeque<(Instant, Key)>,
    /// The last time every waiter was woken (a lost notification channel).
    all: Option<Instant>,
    /// Whether this process now hears every settlement ([`Wakeups::listening`]).
    listening: bool,
}

impl State {
    fn woken(&mut self, key: Key, at: Instant) {
        while let Some((then, old)) = self.order.front().copied() {
            if at.duration_since(then) < RECENT {
                break;
            }
            self.order.pop_front();
            if self.recent.get(&old) == Some(&then) {
                self.recent.remove(&old);
            }
        }
        self.recent.insert(key, at);
        self.order.push_back((at, key));
    }

    /// Whether `key` may have settled since `seen` without this process's waiters being
    /// told after that moment.
    fn woken_since(&self, key: &Key, seen: Instant) -> bool {
        !self.listening
            || seen.elapsed() >= RECENT
            || self.all.is_some_and(|all| all >= seen)
            || self.recent.get(key).is_some_and(|at| *at >= seen)
    }
}

/// What the waiters of one key share: the wake-up, and the settled entry when the
/// completion that woke them brought it along.
#[derive(Debug, Default)]
pub(crate) struct Subscription {
    notify: Notify,
    settled: OnceLock<Entry>,
}

impl Subscription {
    /// Completes at the next wake-up of this key. Create it and `enable()` it *before*
    /// checking the entry's state, so a wake-up between the check and the await is not
    /// missed.
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// The entry as its completion left it, if the wake-up carried it.
    pub(crate) fn settled(&self) -> Option<&Entry> {
        self.settled.get()
    }
}

impl Wakeups {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the subscription of a waiter that gave up, if nobody else waits on the key.
    pub(crate) fn unsubscribe(&self, key: &Key, subscription: &Arc<Subscription>) {
        let mut state = self.state();
        if let Some(current) = state.waiters.get(key) {
            // Two references: the map's and ours. Anyone else still waits.
            if Arc::ptr_eq(current, subscription) && Arc::strong_count(current) == 2 {
                state.waiters.remove(key);
            }
        }
    }

    /// Removes and returns `key`'s subscription, remembering the wake-up.
    fn take(&self, key: Key) -> Option<Arc<Subscription>> {
        let mut state = self.state();
        state.woken(key, Instant::now());
        state.waiters.remove(&key)
    }

    /// Wakes every waiter of `key` in this process; each looks its entry up again. Their
    /// subscription stays: the completion's own [`wake_settled`](Self::wake_settled) may
    /// come just after this notification of it (through the store's channel) and still
    /// reach them, with a result a lookup can no longer find.
    #[cfg(any(test, feature = "postgres", feature = "redis"))]
    pub(crate) fn wake(&self, key: &Key) {
        let subscription = {
            let mut state = self.state();
            state.woken(*key, Instant::now());
            state.waiters.get(key).cloned()
        };
        if let Some(subscription) = subscription {
            subscription.notify.notify_waiters();
        }
    }

    /// Wakes every waiter of `entry`'s key in this process and hands them `entry`, which
    /// must be exactly what the completion that settled it wrote (so only a completion that
    /// has just committed may call this). A lookup returns the same, unless the entry is
    /// already past all its windows (an error TTL of 0): then only the waiters see it.
    pub(crate) fn wake_settled(&self, entry: Entry) {
        if let Some(subscription) = self.take(entry.key) {
            // Each subscription is removed from the map before it is woken, so it is
            // settled at most once.
            let _ = subscription.settled.set(entry);
            subscription.notify.notify_waiters();
        }
    }

    /// Wakes every waiter in this process (after a notification channel was lost, so each
    /// one looks at its entry again).
    #[cfg(any(test, feature = "postgres", feature = "redis"))]
    pub(crate) fn wake_all(&self) {
        let all: Vec<Arc<Subscription>> = {
            let mut state = self.state();
            state.all = Some(Instant::now());
            state.waiters.drain().map(|(_, n)| n).collect()
        };
        for subscription in all {
            subscription.notify.notify_waiters();
        }
    }

    /// Whether the store's notification channel is up, so that this process hears of every
    /// settlement, wherever it happens. Turning it on wakes every waiter (anything may have
    /// happened while no one listened). Off, as at first, every waiter looks before it waits.
    #[cfg(any(test, feature = "postgres", feature = "redis"))]
    pub(crate) fn listening(&self, on: bool) {
        self.state().listening = on;
        if on {
            self.wake_all();
        }
    }

    /// How many keys have waiters.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state().waiters.len()
    }

    /// Whether nobody waits.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Wakeups {
    /// The one body of [`Store::wait`](super::Store::wait) for every store: subscribe, look
    /// the entry up, and sleep until a wake-up for `key` or the deadline; repeat while it is
    /// still pending. `lookup` is the store's own lookup. With `recheck`, the entry is also
    /// looked at again that often: the fallback of a store whose notifications can be
    /// missed. A wake-up that carries the settled entry ([`wake_settled`](Self::wake_settled))
    /// is answered with it, without another lookup.
    ///
    /// With `seen` (the caller read the entry as pending after that instant), the first
    /// lookup is skipped unless this process heard of a wake-up for `key` since. Sound only
    /// for a store whose every settlement wakes this process's waiters (a missed
    /// notification costs a `recheck`, as for any waiter).
    ///
    /// # Errors
    ///
    /// What `lookup` returns.
    pub(crate) async fn wait<F, Fut>(
        &self,
        key: &Key,
        seen: Option<Instant>,
        timeout: Duration,
        recheck: Option<Duration>,
        mut lookup: F,
    ) -> Result<Option<Entry>, super::StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<Entry>, super::StoreError>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        // Whether the entry was pending at some point of this wait: if it is then gone, its
        // job ended with a result already over as it was stored, which only a wake-up
        // carries (a lookup cannot tell it from nothing at all).
        let mut was_pending = seen.is_some();
        let mut seen = seen;
        loop {
            let (subscription, look) = {
                let mut state = self.state();
                let look = seen.take().is_none_or(|seen| state.woken_since(key, seen));
                (Arc::clone(state.waiters.entry(*key).or_default()), look)
            };
            let notified = subscription.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if look {
                match lookup().await {
                    Ok(Some(entry)) if entry.job().is_some() => was_pending = true,
                    Ok(None) if was_pending => {
                        // The wake-up that carries it may be a moment behind the lookup.
                        let grace = tokio::time::Instant::now() + Duration::from_millis(200);
                        let _ = tokio::time::timeout_at(grace.min(deadline), notified).await;
                        let settled = subscription.settled().cloned();
                        self.unsubscribe(key, &subscription);
                        return Ok(settled);
                    }
                    other => {
                        self.unsubscribe(key, &subscription);
                        return other;
                    }
                }
            }
            let wake_at = recheck.map_or(deadline, |every| {
                deadline.min(tokio::time::Instant::now() + every)
            });
            let woken = tokio::time::timeout_at(wake_at, notified).await.is_ok();
            if let Some(entry) = subscription.settled() {
                let entry = entry.clone();
                self.unsubscribe(key, &subscription);
                return Ok(Some(entry));
            }
            if !woken && tokio::time::Instant::now() >= deadline {
                self.unsubscribe(key, &subscription);
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::pattern::{JobId, JobInfo, Priority, Status, Timestamp};

    fn entry(key: Key, status: Status) -> Entry {
        Entry {
            key,
            uri: "/k".into(),
            version: 7,
            content: None,
            status,
        }
    }

    fn pending(key: Key) -> Entry {
        entry(
            key,
            Status::Pending(JobInfo {
                id: JobId(1),
                priority: Priority::Miss,
                created_at: Timestamp(0),
                run_at: Timestamp(0),
                attempts: 0,
                lease_until: None,
                last_error: None,
                after_failure: false,
            }),
        )
    }

    /// Waiters of `key` on `wakeups`, counting the lookups they make (each sees a pending
    /// entry).
    fn waiters(
        wakeups: &Arc<Wakeups>,
        key: Key,
        lookups: &Arc<AtomicUsize>,
        n: usize,
    ) -> Vec<tokio::task::JoinHandle<Option<Entry>>> {
        (0..n)
            .map(|_| {
                let (wakeups, lookups) = (Arc::clone(wakeups), Arc::clone(lookups));
                tokio::spawn(async move {
                    wakeups
                        .wait(&key, None, Duration::from_secs(20), None, || {
                            lookups.fetch_add(1, Ordering::SeqCst);
                            async move { Ok(Some(pending(key))) }
                        })
                        .await
                        .unwrap()
                })
            })
            .collect()
    }

    async fn subscribed(wakeups: &Wakeups, lookups: &AtomicUsize, n: usize) {
        while lookups.load(Ordering::SeqCst) < n || wakeups.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn a_settled_wake_up_answers_every_waiter_without_a_lookup() {
        let wakeups = Arc::new(Wakeups::default());
        let key = Key::parse(&"1".repeat(32)).unwrap();
        let lookups = Arc::new(AtomicUsize::new(0));
        let waiting = waiters(&wakeups, key, &lookups, 20);
        subscribed(&wakeups, &lookups, 20).await;
        wakeups.wake_settled(entry(key, Status::Idle));
        for waiter in waiting {
            assert_eq!(waiter.await.unwrap(), Some(entry(key, Status::Idle)));
        }
        assert_eq!(
            lookups.load(Ordering::SeqCst),
            20,
            "only the first look each"
        );
        assert!(wakeups.is_empty(), "nothing left subscribed");
    }

    #[tokio::test]
    async fn a_settled_wake_up_right_after_a_plain_one_still_reaches_the_waiter() {
        let wakeups = Arc::new(Wakeups::default());
        let key = Key::parse(&"2".repeat(32)).unwrap();
        let lookups = Arc::new(AtomicUsize::new(0));
        // Pending at first; then gone, as a result over as it is stored is.
        let waiter = {
            let (wakeups, lookups) = (Arc::clone(&wakeups), Arc::clone(&lookups));
            tokio::spawn(async move {
                wakeups
                    .wait(&key, None, Duration::from_secs(20), None, || {
                        let first = lookups.fetch_add(1, Ordering::SeqCst) == 0;
                        async move { Ok(first.then(|| pending(key))) }
                    })
                    .await
                    .unwrap()
            })
        };
        subscribed(&wakeups, &lookups, 1).await;
        // The store's notification, then at once the completion's own wake-up, before the
        // waiter has run again.
        let settled = entry(
            key,
            Status::Pass(crate::pattern::PassInfo {
                until: Timestamp(0),
                once: None,
                reason: "over".into(),
            }),
        );
        wakeups.wake(&key);
        wakeups.wake_settled(settled.clone());
        assert_eq!(waiter.await.unwrap(), Some(settled));
        assert!(wakeups.is_empty(), "nothing left subscribed");
    }

    /// How many lookups one `wait_settled_since` makes, and what it returns, when the entry
    /// reads as `read` and `after` runs once the waiter is subscribed.
    async fn since(
        wakeups: &Arc<Wakeups>,
        key: Key,
        seen: Instant,
        read: Entry,
        after: impl FnOnce(&Wakeups),
    ) -> (usize, Option<Entry>) {
        let lookups = Arc::new(AtomicUsize::new(0));
        let waiting = {
            let (wakeups, lookups) = (Arc::clone(wakeups), Arc::clone(&lookups));
            tokio::spawn(async move {
                wakeups
                    .wait(&key, Some(seen), Duration::from_secs(20), None, || {
                        lookups.fetch_add(1, Ordering::SeqCst);
                        let read = read.clone();
                        async move { Ok(Some(read)) }
                    })
                    .await
                    .unwrap()
            })
        };
        while wakeups.is_empty() && !waiting.is_finished() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        after(wakeups);
        let got = waiting.await.unwrap();
        (lookups.load(Ordering::SeqCst), got)
    }

    #[tokio::test]
    async fn a_waiter_that_saw_the_entry_pending_does_not_read_it_again() {
        let wakeups = Arc::new(Wakeups::default());
        wakeups.listening(true);
        let key = Key::parse(&"3".repeat(32)).unwrap();
        let seen = Instant::now();
        let (lookups, got) = since(&wakeups, key, seen, pending(key), |w| {
            w.wake_settled(entry(key, Status::Idle));
        })
        .await;
        assert_eq!(got, Some(entry(key, Status::Idle)));
        assert_eq!(lookups, 0);
    }

    #[tokio::test]
    async fn a_wake_up_after_the_read_makes_the_waiter_look() {
        let wakeups = Arc::new(Wakeups::default());
        wakeups.listening(true);
        let key = Key::parse(&"4".repeat(32)).unwrap();
        let seen = Instant::now();
        // Settled elsewhere between the caller's read and its wait.
        wakeups.wake(&key);
        let (lookups, got) = since(&wakeups, key, seen, entry(key, Status::Idle), |_| {}).await;
        assert_eq!((lookups, got), (1, Some(entry(key, Status::Idle))));
        // A wake-up of another key, or one before the read, changes nothing.
        let other = Key::parse(&"5".repeat(32)).unwrap();
        let seen = Instant::now();
        wakeups.wake(&other);
        let (lookups, _) = since(&wakeups, key, seen, pending(key), |w| {
            w.wake_settled(entry(key, Status::Idle));
        })
        .await;
        assert_eq!(lookups, 0);
    }

    #[tokio::test]
    async fn without_a_listener_or_after_a_gap_every_waiter_looks() {
        let idle = || entry(Key::parse(&"6".repeat(32)).unwrap(), Status::Idle);
        let key = idle().key;
        let wakeups = Arc::new(Wakeups::default());
        let (lookups, _) = since(&wakeups, key, Instant::now(), idle(), |_| {}).await;
        assert_eq!(lookups, 1, "not listening yet");
        let seen = Instant::now();
        wakeups.listening(true);
        let (lookups, _) = since(&wakeups, key, seen, idle(), |_| {}).await;
        assert_eq!(lookups, 1, "the listener came up after the read");
        let long_ago = Instant::now().checked_sub(RECENT).unwrap();
        let (lookups, _) = since(&wakeups, key, long_ago, idle(), |_| {}).await;
        assert_eq!(lookups, 1, "a read older than the wake-ups remembered");
        wakeups.listening(false);
        let (lookups, _) = since(&wakeups, key, Instant::now(), idle(), |_| {}).await;
        assert_eq!(lookups, 1, "the listener went down");
    }

    #[tokio::test]
    async fn a_plain_wake_up_makes_each_waiter_look_again() {
        let wakeups = Arc::new(Wakeups::default());
        let key = Key::parse(&"2".repeat(32)).unwrap();
        let lookups = Arc::new(AtomicUsize::new(0));
        let waiting = waiters(&wakeups, key, &lookups, 3);
        subscribed(&wakeups, &lookups, 3).await;
        wakeups.wake(&key);
        // Still pending at the second look: they subscribe again; the settled wake-up
        // then answers them.
        subscribed(&wakeups, &lookups, 6).await;
        wakeups.wake_settled(entry(key, Status::Idle));
        for waiter in waiting {
            assert_eq!(waiter.await.unwrap(), Some(entry(key, Status::Idle)));
        }
        assert_eq!(lookups.load(Ordering::SeqCst), 6);
    }
}
