//! Per-key wake-ups for `Prefer: wait`, shared by every store implementation: a remote store
//! receives one notification (LISTEN/NOTIFY, pub/sub) and fans it out here to every waiter in
//! this process, so a stampede of waiters costs one subscription, not one each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::pattern::Key;

/// Waiters by key. A `std::sync::Mutex` is right here: the critical sections are a map
/// lookup or insert, never held across an `.await`.
#[derive(Debug, Default)]
pub struct Wakeups {
    waiters: Mutex<HashMap<Key, Arc<Notify>>>,
}

impl Wakeups {
    /// The notifier for `key`. Create the `notified()` future and `enable()` it *before*
    /// checking the entry's state, so a wake-up between the check and the await is not missed.
    pub fn subscribe(&self, key: &Key) -> Arc<Notify> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(waiters.entry(*key).or_default())
    }

    /// Drops the subscription of a waiter that gave up, if nobody else waits on the key.
    pub fn unsubscribe(&self, key: &Key, notify: &Arc<Notify>) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = waiters.get(key) {
            // Two references: the map's and ours. Anyone else still waits.
            if Arc::ptr_eq(current, notify) && Arc::strong_count(current) == 2 {
                waiters.remove(key);
            }
        }
    }

    /// Wakes every waiter of `key` in this process.
    pub fn wake(&self, key: &Key) {
        let notify = {
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            waiters.remove(key)
        };
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter in this process (after a notification channel was lost, so each
    /// one looks at its entry again).
    pub fn wake_all(&self) {
        let all: Vec<Arc<Notify>> = {
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            waiters.drain().map(|(_, n)| n).collect()
        };
        for notify in all {
            notify.notify_waiters();
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
    /// that often: the fallback of a store whose notifications can be missed.
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
            if !woken && tokio::time::Instant::now() >= deadline {
                self.unsubscribe(key, &notify);
                return Ok(None);
            }
        }
    }
}
