//! Per-key wake-ups for `Prefer: wait`, shared by every store implementation: a remote store
//! receives one notification (LISTEN/NOTIFY, pub/sub) and fans it out here to every waiter in
//! this process, so a stampede of waiters costs one subscription, not one each.
//!
//! A completion made in this process can hand its waiters the settled entry itself
//! ([`Wakeups::wake_settled`]), so they answer without reading the store again: a stampede
//! of waiters on one front then costs no read at all when the job finishes there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;

use crate::pattern::{Entry, Key};

/// Waiters by key. A `std::sync::Mutex` is right here: the critical sections are a map
/// lookup or insert, never held across an `.await`.
#[derive(Debug, Default)]
pub struct Wakeups {
    waiters: Mutex<HashMap<Key, Arc<Subscription>>>,
}

/// What the waiters of one key share: the wake-up, and the settled entry when the
/// completion that woke them brought it along.
#[derive(Debug, Default)]
pub struct Subscription {
    notify: Notify,
    settled: OnceLock<Entry>,
}

impl Subscription {
    /// Completes at the next wake-up of this key. Create it and `enable()` it *before*
    /// checking the entry's state, so a wake-up between the check and the await is not
    /// missed.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// The entry as its completion left it, if the wake-up carried it.
    pub fn settled(&self) -> Option<&Entry> {
        self.settled.get()
    }
}

impl Wakeups {
    /// The subscription for `key`, shared with its other waiters in this process.
    pub fn subscribe(&self, key: &Key) -> Arc<Subscription> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(waiters.entry(*key).or_default())
    }

    /// Drops the subscription of a waiter that gave up, if nobody else waits on the key.
    pub fn unsubscribe(&self, key: &Key, notify: &Arc<Subscription>) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = waiters.get(key) {
            // Two references: the map's and ours. Anyone else still waits.
            if Arc::ptr_eq(current, notify) && Arc::strong_count(current) == 2 {
                waiters.remove(key);
            }
        }
    }

    /// Wakes every waiter of `key` in this process; each looks its entry up again.
    pub fn wake(&self, key: &Key) {
        let subscription = {
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            waiters.remove(key)
        };
        if let Some(subscription) = subscription {
            subscription.notify.notify_waiters();
        }
    }

    /// Wakes every waiter of `entry`'s key in this process and hands them `entry`, which
    /// must be exactly what a lookup would return right after the completion that settled
    /// it (so only a completion that has just committed may call this).
    pub fn wake_settled(&self, entry: Entry) {
        let subscription = {
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            waiters.remove(&entry.key)
        };
        if let Some(subscription) = subscription {
            // Each subscription is removed from the map before it is woken, so it is
            // settled at most once.
            let _ = subscription.settled.set(entry);
            subscription.notify.notify_waiters();
        }
    }

    /// Wakes every waiter in this process (after a notification channel was lost, so each
    /// one looks at its entry again).
    pub fn wake_all(&self) {
        let all: Vec<Arc<Subscription>> = {
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            waiters.drain().map(|(_, n)| n).collect()
        };
        for subscription in all {
            subscription.notify.notify_waiters();
        }
    }

    /// How many keys have waiters (for tests and metrics).
    pub fn len(&self) -> usize {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Wakeups {
    /// The generic body of [`Store::wait`](super::Store::wait): subscribe, look the entry up,
    /// and sleep until a wake-up for `key` or the deadline; repeat while it is still pending.
    /// `lookup` is the store's own lookup. With `recheck`, the entry is also looked at again
    /// that often: the fallback of a store whose notifications can be missed. A wake-up that
    /// carries the settled entry ([`wake_settled`](Self::wake_settled)) is answered with it,
    /// without another lookup.
    pub async fn wait_settled<F, Fut>(
        &self,
        key: &Key,
        timeout: std::time::Duration,
        recheck: Option<std::time::Duration>,
        mut lookup: F,
    ) -> Result<Option<crate::pattern::Entry>, super::StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<crate::pattern::Entry>, super::StoreError>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notify = self.subscribe(key);
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match lookup().await {
                Ok(Some(entry)) if entry.job().is_some() => {}
                other => {
                    self.unsubscribe(key, &notify);
                    return other;
                }
            }
            let wake_at = recheck.map_or(deadline, |every| {
                deadline.min(tokio::time::Instant::now() + every)
            });
            let woken = tokio::time::timeout_at(wake_at, notified).await.is_ok();
            if let Some(entry) = notify.settled() {
                let entry = entry.clone();
                self.unsubscribe(key, &notify);
                return Ok(Some(entry));
            }
            if !woken && tokio::time::Instant::now() >= deadline {
                self.unsubscribe(key, &notify);
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

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
                        .wait_settled(&key, Duration::from_secs(20), None, || {
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
