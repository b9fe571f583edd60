//! [`L1`]: in-process copies of fresh entries; the design is documented on the type.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::sync::Cache;

use super::Inspect;
use super::{
    Claim, ClaimOutcome, Completion, Job, LeaseToken, ListPage, ListQuery, Purge, PurgeTarget,
    Stats, Store, StoreError,
};
use crate::pattern::{Entry, Key, Status, StoredResponse, Timestamp};

/// Limits of an [`L1`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L1Config {
    /// Byte budget of the copies.
    pub capacity: u64,
    /// Longest a copy is served without asking the shared store.
    pub ttl: Duration,
}

impl Default for L1Config {
    fn default() -> Self {
        Self {
            capacity: 64 * 1024 * 1024,
            ttl: Duration::from_secs(1),
        }
    }
}

/// A copy and the moment it stops being used.
#[derive(Clone, Debug)]
struct Copy {
    entry: Arc<Entry>,
    until: Timestamp,
}

/// An in-process copy of fresh entries in front of a remote store, so a hit costs no round
/// trip.
///
/// Only entries that [`decide`](fn@crate::pattern::decide) would serve as a plain hit are kept
/// (settled, fresh, no verdict), each for at most [`L1Config::ttl`] and never past its
/// freshness. Everything else (stale entries, pending jobs, failures) is read from the
/// shared store, so the pattern's decisions (one refresh, waits, fencing) stay with it.
///
/// What this process writes (claim, complete, purge, take-once) drops the copies it may
/// affect at once. A purge or a refresh made through *another* process is seen here within
/// the TTL: that bound is the price of hits without a round trip.
#[derive(Debug)]
pub struct L1<S: ?Sized = dyn Store> {
    inner: Arc<S>,
    copies: Cache<Key, Copy>,
    config: L1Config,
}

impl<S: Store + ?Sized> L1<S> {
    /// Puts an L1 in front of `inner`.
    pub fn new(inner: Arc<S>, config: L1Config) -> Self {
        let copies = Cache::builder()
            .max_capacity(config.capacity)
            .weigher(|_: &Key, copy: &Copy| u32::try_from(copy.entry.weight()).unwrap_or(u32::MAX))
            .time_to_live(config.ttl)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        Self {
            inner,
            copies,
            config,
        }
    }

    /// The shared store behind the copies.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    fn keep(&self, entry: &Entry, now: Timestamp) {
        let Some(content) = entry.content.as_ref() else {
            return;
        };
        if entry.status != Status::Idle || now >= content.fresh_until {
            return;
        }
        let until = content.fresh_until.min(now.plus(self.config.ttl));
        let copy = Copy {
            entry: Arc::new(entry.clone()),
            until,
        };
        self.copies.insert(entry.key, copy);
    }
}

#[async_trait]
impl<S: Store + ?Sized> Store for L1<S> {
    fn now(&self) -> Timestamp {
        self.inner.now()
    }

    async fn lookup(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        let now = self.inner.now();
        if let Some(copy) = self.copies.get(key) {
            if now < copy.until {
                return Ok(Some(Entry::clone(&copy.entry)));
            }
            self.copies.invalidate(key);
        }
        let found = self.inner.lookup(key).await?;
        if let Some(entry) = &found {
            self.keep(entry, now);
        }
        Ok(found)
    }

    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
        self.copies.invalidate(&claim.key);
        self.inner.claim(claim).await
    }

    async fn take(&self, max: usize, lease: Duration) -> Result<Vec<Job>, StoreError> {
        self.inner.take(max, lease).await
    }

    async fn heartbeat(
        &self,
        lease: &LeaseToken,
        extend: Duration,
    ) -> Result<Timestamp, StoreError> {
        self.inner.heartbeat(lease, extend).await
    }

    async fn complete(&self, jobs: Vec<(LeaseToken, Completion)>) -> Vec<Result<(), StoreError>> {
        for (lease, _) in &jobs {
            self.copies.invalidate(&lease.key);
        }
        self.inner.complete(jobs).await
    }

    async fn wait(
        &self,
        key: &Key,
        seen: Option<std::time::Instant>,
        timeout: Duration,
    ) -> Result<Option<Entry>, StoreError> {
        let settled = self.inner.wait(key, seen, timeout).await?;
        if let Some(entry) = &settled {
            self.keep(entry, self.inner.now());
        }
        Ok(settled)
    }

    async fn wait_for_jobs(&self, timeout: Duration) -> Result<(), StoreError> {
        self.inner.wait_for_jobs(timeout).await
    }

    async fn hand_back_unstarted(&self) -> Result<usize, StoreError> {
        self.inner.hand_back_unstarted().await
    }

    async fn take_once(&self, key: &Key) -> Result<Option<Arc<StoredResponse>>, StoreError> {
        self.copies.invalidate(key);
        self.inner.take_once(key).await
    }

    async fn purge(&self, purge: Purge) -> Result<u64, StoreError> {
        match &purge.target {
            PurgeTarget::Key(key) => self.copies.invalidate(key),
            _ => self.copies.invalidate_all(),
        }
        self.inner.purge(purge).await
    }
}

/// The operator path goes straight to the shared store: it sees every front's entries.
#[async_trait]
impl<S: Inspect + ?Sized> Inspect for L1<S> {
    async fn stats(&self) -> Result<Stats, StoreError> {
        self.inner.stats().await
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        self.inner.list(query).await
    }
}
