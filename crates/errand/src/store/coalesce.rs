//! [`Coalesced`]: one read and one body per key in flight; the design is on the type.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::OnceCell;

use super::Inspect;
use super::{
    Claim, ClaimOutcome, Completion, Job, LeaseToken, ListPage, ListQuery, Purge, Stats, Store,
    StoreError,
};
use crate::pattern::{Entry, Key, StoredResponse, Timestamp};

/// Bodies smaller than this are not worth a table entry: copies of them cost little.
pub(crate) const SHARED_FROM: usize = 64 * 1024;

/// One read of a key on its way, and its result for everyone who joined it.
type Flight = Arc<OnceCell<Result<Option<Entry>, StoreError>>>;

/// The owner of a shared body's bytes, kept alive by every [`Bytes`] made from it.
struct SharedBody(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBody {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// One copy of each stored body in this process, however many clients read it at once, in
/// front of a remote store.
///
/// A remote store decodes a fresh copy of an entry at every read. A client that asks for a
/// large body and then does not read it keeps its copy until its connection ends, so a
/// hundred such clients held a hundred copies of the same 8 MB body. Two things stop that:
///
/// - **single-flight reads**: lookups of one key made while a read of it is on its way share
///   that read (and so its one decoded copy) instead of sending their own;
/// - **shared bodies**: a body of at least 64 KiB is kept, for as long as
///   anything in the process still holds it, under its key and version; a later read of the
///   same version hands out that copy and drops the one it decoded. The table holds weak
///   references only: it never keeps a body alive by itself.
///
/// The memory store needs neither: its entries are shared already.
#[derive(Debug)]
pub struct Coalesced<S: ?Sized = dyn Store> {
    inner: Arc<S>,
    flights: Mutex<HashMap<Key, Flight>>,
    bodies: Mutex<Bodies>,
}

/// The shared bodies: weak references by key and version.
#[derive(Debug, Default)]
struct Bodies {
    by_version: HashMap<(Key, u64), Weak<Vec<u8>>>,
    /// Table size after the last sweep of dead references.
    swept_at: usize,
}

impl<S: Store + ?Sized> Coalesced<S> {
    /// Coalesces the reads of `inner` and shares its large bodies.
    pub fn new(inner: Arc<S>) -> Self {
        Self {
            inner,
            flights: Mutex::default(),
            bodies: Mutex::default(),
        }
    }

    /// The store behind.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// How many bodies are shared now (tests, metrics).
    pub fn shared_bodies(&self) -> usize {
        self.bodies()
            .by_version
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    // Both locks guard plain maps, held for a few operations and never across an await; a
    // panic elsewhere cannot leave them torn.
    fn flights(&self) -> MutexGuard<'_, HashMap<Key, Flight>> {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bodies(&self) -> MutexGuard<'_, Bodies> {
        self.bodies.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry with its content's body replaced by the copy this process already holds
    /// of the same version, or made the copy others will get.
    fn share(&self, mut entry: Entry) -> Entry {
        let Some(content) = entry.content.as_mut() else {
            return entry;
        };
        if content.response.body.len() < SHARED_FROM {
            return entry;
        }
        let id = (entry.key, entry.version);
        let mut bodies = self.bodies();
        if let Some(held) = bodies.by_version.get(&id).and_then(Weak::upgrade)
            && held.len() == content.response.body.len()
        {
            let body = Bytes::from_owner(SharedBody(held));
            content.response = Arc::new(with_body(&content.response, body));
            return entry;
        }
        // The first copy of this version: from now on the one everybody gets. Taking the
        // bytes out of the decoded buffer copies nothing when it is the only reference.
        let body = match Arc::get_mut(&mut content.response) {
            Some(response) => std::mem::take(&mut response.body),
            None => content.response.body.clone(),
        };
        let owned: Vec<u8> = Vec::from(body);
        let held = Arc::new(owned);
        bodies.by_version.insert(id, Arc::downgrade(&held));
        content.response = Arc::new(with_body(
            &content.response,
            Bytes::from_owner(SharedBody(held)),
        ));
        // Dead references go once the table has doubled since the last sweep.
        if bodies.by_version.len() >= 2 * bodies.swept_at.max(32) {
            bodies.by_version.retain(|_, w| w.strong_count() > 0);
            bodies.swept_at = bodies.by_version.len();
        }
        entry
    }

    fn share_found(&self, found: Option<Entry>) -> Option<Entry> {
        found.map(|entry| self.share(entry))
    }
}

fn with_body(response: &StoredResponse, body: Bytes) -> StoredResponse {
    StoredResponse {
        status: response.status,
        headers: response.headers.clone(),
        body,
        selecting: response.selecting.clone(),
    }
}

#[async_trait]
impl<S: Store + ?Sized> Store for Coalesced<S> {
    fn now(&self) -> Timestamp {
        self.inner.now()
    }

    async fn lookup(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        let flight = Arc::clone(self.flights().entry(*key).or_default());
        // One read for everyone on this flight; if the caller running it gives up, the
        // next one in line runs it instead.
        let result = flight
            .get_or_init(|| async {
                self.inner
                    .lookup(key)
                    .await
                    .map(|found| self.share_found(found))
            })
            .await
            .clone();
        // The flight is over: later lookups read again. (Only this flight: a newer one may
        // already have taken its place.)
        let mut flights = self.flights();
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flights.remove(key);
        }
        result
    }

    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
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
        self.inner.complete(jobs).await
    }

    async fn wait(
        &self,
        key: &Key,
        seen: Option<std::time::Instant>,
        timeout: Duration,
    ) -> Result<Option<Entry>, StoreError> {
        let settled = self.inner.wait(key, seen, timeout).await?;
        Ok(self.share_found(settled))
    }

    async fn wait_for_jobs(&self, timeout: Duration) -> Result<(), StoreError> {
        self.inner.wait_for_jobs(timeout).await
    }

    async fn hand_back_unstarted(&self) -> Result<usize, StoreError> {
        self.inner.hand_back_unstarted().await
    }

    async fn take_once(&self, key: &Key) -> Result<Option<Arc<StoredResponse>>, StoreError> {
        self.inner.take_once(key).await
    }

    async fn purge(&self, purge: Purge) -> Result<u64, StoreError> {
        self.inner.purge(purge).await
    }
}

#[async_trait]
impl<S: Inspect + ?Sized> Inspect for Coalesced<S> {
    async fn stats(&self) -> Result<Stats, StoreError> {
        self.inner.stats().await
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        self.inner.list(query).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{HeaderMap, Method, StatusCode};

    use super::*;
    use crate::pattern::{Content, Signature, Status};
    use crate::store::{MemoryConfig, MemoryStore};

    /// A store that answers every lookup with a new copy of one large entry, slowly, and
    /// counts the lookups it was asked for (as a remote store decodes a copy per read).
    #[derive(Debug)]
    struct Copying {
        inner: MemoryStore,
        entry: Entry,
        reads: AtomicUsize,
    }

    fn entry(version: u64) -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, "a.test".parse().expect("host"));
        let key = Signature::of(
            &Method::GET,
            &"/big".parse().expect("uri"),
            &headers,
            "http",
            &[],
        )
        .expect("signature")
        .key;
        let now = Timestamp::now();
        Entry {
            key,
            uri: "http://a.test/big".into(),
            version,
            content: Some(Content {
                response: Arc::new(StoredResponse {
                    status: StatusCode::OK,
                    headers: HeaderMap::new(),
                    body: Bytes::from(vec![b'x'; 1 << 20]),
                    selecting: HeaderMap::new(),
                }),
                generated_at: now,
                fresh_until: now.plus(Duration::from_secs(60)),
                stale_until: now.plus(Duration::from_secs(60)),
                stale_if_error_until: now.plus(Duration::from_secs(60)),
                tags: Vec::new(),
                job_millis: 1,
            }),
            status: Status::Idle,
        }
    }

    fn body_of(entry: &Entry) -> Bytes {
        entry
            .content
            .as_ref()
            .expect("content")
            .response
            .body
            .clone()
    }

    #[async_trait]
    impl Store for Copying {
        fn now(&self) -> Timestamp {
            self.inner.now()
        }
        async fn lookup(&self, _key: &Key) -> Result<Option<Entry>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            // A deep copy, as decoding a row or a hash would make.
            let mut copy = self.entry.clone();
            let content = copy.content.as_mut().expect("content");
            content.response = Arc::new(with_body(
                &content.response,
                Bytes::copy_from_slice(&content.response.body),
            ));
            Ok(Some(copy))
        }
        async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
            self.inner.claim(claim).await
        }
        async fn take(&self, max: usize, lease: Duration) -> Result<Vec<Job>, StoreError> {
            self.inner.take(max, lease).await
        }
        async fn heartbeat(&self, l: &LeaseToken, d: Duration) -> Result<Timestamp, StoreError> {
            self.inner.heartbeat(l, d).await
        }
        async fn complete(
            &self,
            jobs: Vec<(LeaseToken, Completion)>,
        ) -> Vec<Result<(), StoreError>> {
            self.inner.complete(jobs).await
        }
        async fn wait(
            &self,
            k: &Key,
            seen: Option<std::time::Instant>,
            t: Duration,
        ) -> Result<Option<Entry>, StoreError> {
            self.inner.wait(k, seen, t).await
        }
        async fn wait_for_jobs(&self, t: Duration) -> Result<(), StoreError> {
            self.inner.wait_for_jobs(t).await
        }
        async fn take_once(&self, k: &Key) -> Result<Option<Arc<StoredResponse>>, StoreError> {
            self.inner.take_once(k).await
        }
        async fn purge(&self, p: Purge) -> Result<u64, StoreError> {
            self.inner.purge(p).await
        }
    }

    fn copying(version: u64) -> Arc<Copying> {
        Arc::new(Copying {
            inner: MemoryStore::new(MemoryConfig::default()),
            entry: entry(version),
            reads: AtomicUsize::new(0),
        })
    }

    #[tokio::test]
    async fn concurrent_lookups_share_one_read_and_one_body() {
        let inner = copying(7);
        let store = Arc::new(Coalesced::new(inner.clone()));
        let key = entry(7).key;
        let lookups: Vec<_> = (0..20)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.lookup(&key).await })
            })
            .collect();
        let mut bodies = Vec::new();
        for lookup in lookups {
            let found = lookup.await.expect("task").expect("lookup").expect("entry");
            bodies.push(body_of(&found));
        }
        assert_eq!(inner.reads.load(Ordering::SeqCst), 1, "one read for twenty");
        assert!(
            bodies.iter().all(|b| b.as_ptr() == bodies[0].as_ptr()),
            "one copy of the body"
        );
    }

    #[tokio::test]
    async fn later_reads_of_a_held_version_get_the_same_copy() {
        let inner = copying(7);
        let store = Coalesced::new(inner.clone());
        let key = entry(7).key;
        let first = body_of(&store.lookup(&key).await.expect("lookup").expect("entry"));
        let second = body_of(&store.lookup(&key).await.expect("lookup").expect("entry"));
        assert_eq!(
            inner.reads.load(Ordering::SeqCst),
            2,
            "sequential reads both go out"
        );
        assert_eq!(first.as_ptr(), second.as_ptr(), "but share one body");
        assert_eq!(store.shared_bodies(), 1);
        // Nothing holds it any more: the table does not keep it alive.
        drop((first, second));
        assert_eq!(store.shared_bodies(), 0);
    }
}
