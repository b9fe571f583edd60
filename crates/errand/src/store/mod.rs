//! The store contract: one small async trait that every backend implements.
//!
//! In the seed the cache holds `key=request_signature value=NULL` while a queue holds the job;
//! here they are one record, **the pending entry is the job**, so the seed's two racy steps
//! become single atomic operations:
//!
//! - [`Store::claim`] = enqueue-if-absent: create the pending entry unless a live one exists;
//! - [`Store::complete`] = store the result and acknowledge the job, fenced by the lease token,
//!   then publish the wake-up for that key.
//!
//! Around them: [`Store::lookup`] (the hit path), [`Store::take`] (ready jobs by priority then
//! run time, each with a lease), [`Store::heartbeat`], [`Store::wait`] (wake-up for a key),
//! [`Store::wait_for_jobs`], [`Store::take_once`], [`Store::purge`]; the operator's path,
//! [`Inspect::stats`] and [`Inspect::list`], is a trait of its own; and, built on them,
//! [`retry`] (a failed entry's job again, now).
//!
//! A store can compose another: [`L1`] keeps in-process copies of fresh entries in front of a
//! shared store, [`Coalesced`] turns concurrent reads of one key into one.
//!
//! Every implementation must pass the conformance suite in `contract` (feature
//! `contract-tests`), unchanged.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::pattern::Completion;
use crate::pattern::{
    Entry, JobId, Key, Priority, RequestRecord, State, Status, StoredResponse, Timestamp,
};

pub(crate) mod coalesce;
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) mod codec;
#[cfg(feature = "contract-tests")]
pub mod contract;
pub(crate) mod l1;
pub(crate) mod memory;
#[cfg(any(feature = "postgres", feature = "redis"))]
mod pem;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
mod wakeup;

pub use coalesce::Coalesced;
pub use l1::{L1, L1Config};
pub use memory::{MemoryConfig, MemoryStore};
#[cfg(feature = "postgres")]
pub use postgres::{PgConfig, PgStore};
#[cfg(feature = "redis")]
pub use redis::{RedisConfig, RedisStore};
pub(crate) use wakeup::Wakeups;

/// Where a store reads the time. Fronts and workers read it through [`Store::now`], so a test
/// can drive a whole store, front and worker with a [`ManualClock`].
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock standing at the current wall-clock time.
    pub fn new() -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(Timestamp::now().0)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// The wall clock plus an offset that only grows: time flows as usual (retries come due,
/// leases expire) and a test can jump ahead past a TTL without sleeping.
#[derive(Debug, Default)]
pub struct OffsetClock(AtomicU64);

impl OffsetClock {
    /// A clock at the wall-clock time.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Jumps forward.
    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        Timestamp(
            Timestamp::now()
                .0
                .saturating_add(self.0.load(Ordering::SeqCst)),
        )
    }
}

/// A request to create the pending entry (the job) for a signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The signature's key.
    pub key: Key,
    /// The canonical request the worker will replay.
    pub request: RequestRecord,
    /// Canonical URI without key headers (for purge by URI/prefix).
    pub uri: String,
    /// A client's miss, or a background refresh.
    pub priority: Priority,
    /// `None`: claim only if no entry exists (or it has expired). `Some(v)`: claim only if
    /// the entry is still at version `v` (a refresh of what the caller saw).
    pub expect: Option<u64>,
}

/// What [`Store::claim`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The job was enqueued; this is the new pending entry.
    Enqueued(Entry),
    /// Someone else's entry was there (a live job, or a newer version): decide again on it.
    Exists(Entry),
}

/// Proof that a worker holds a job: presented to [`Store::complete`] and
/// [`Store::heartbeat`], which refuse it once another worker has taken the job over.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LeaseToken {
    /// The signature's key.
    pub key: Key,
    /// The job.
    pub job: JobId,
    /// Unique per take: a redelivered job gets a new one.
    pub token: u64,
}

/// A job taken by a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// The lease that fences this worker's writes.
    pub lease: LeaseToken,
    /// When the lease ends unless renewed.
    pub lease_until: Timestamp,
    /// The request to replay.
    pub request: RequestRecord,
    /// Its priority.
    pub priority: Priority,
    /// Which attempt this is (1 for the first take; a redelivery or retry counts).
    pub attempt: u32,
    /// When the job was claimed.
    pub created_at: Timestamp,
    /// Taken again because the worker that held it let its lease run out (it died, hung or
    /// lost the store); a retry scheduled by a failed attempt is not a redelivery.
    pub redelivered: bool,
}

/// What to purge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PurgeTarget {
    /// One signature.
    Key(Key),
    /// Every variant of one canonical URI (e.g. after a successful POST to it).
    Uri(String),
    /// Every canonical URI starting with this (`http://host/path/`).
    Prefix(String),
    /// Every entry whose content carries this tag.
    Tag(String),
    /// Everything.
    All,
}

/// A purge request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purge {
    /// What to purge.
    pub target: PurgeTarget,
    /// Soft: mark the content stale (served while one refresh runs) instead of removing it.
    pub soft: bool,
}

/// One page of [`Inspect::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    /// Only entries in this state (at the store's `now`); `None` lists every entry.
    pub state: Option<State>,
    /// Where to go on: the [`ListPage::next`] of the previous page (an opaque cursor).
    pub after: Option<String>,
    /// At most this many entries (at least one is asked for).
    pub limit: usize,
}

/// Entries listed by [`Inspect::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    /// The entries, in the backend's stable order (by key in memory and PostgreSQL, by URI
    /// then key in Redis).
    pub entries: Vec<Entry>,
    /// The cursor of the next page, or `None` when the listing is complete. A page may hold
    /// fewer than `limit` entries (even none) while more follow: a backend bounds the work of
    /// one call, and skips what does not match.
    pub next: Option<String>,
}

/// What [`retry`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retried {
    /// A job was enqueued; here is the pending entry.
    Enqueued(Box<Entry>),
    /// The entry is not failed (any more): nothing was done. Its state now.
    NotFailed(State),
    /// No such entry (never stored, expired or purged).
    Missing,
    /// The failure was recorded without its request (by an older version), so it cannot be
    /// replayed; the next request for it will claim a new job.
    NoRequest,
}

/// Retries a failed entry now: enqueues a new job with the request the failed job ran,
/// conditional on the entry being the failure that was read (a concurrent retry or
/// request that already claimed it wins, and this call reports what it found).
///
/// # Errors
///
/// The store's own errors, from the lookup or the claim.
pub async fn retry(store: &dyn Store, key: &Key) -> Result<Retried, StoreError> {
    let Some(entry) = store.lookup(key).await? else {
        return Ok(Retried::Missing);
    };
    let now = store.now();
    let request = match (&entry.status, entry.state(now)) {
        (Status::Failed(failure), State::Failed) => match &failure.request {
            Some(request) => request.clone(),
            None => return Ok(Retried::NoRequest),
        },
        (_, state) => return Ok(Retried::NotFailed(state)),
    };
    let claimed = store
        .claim(Claim {
            key: *key,
            uri: entry.uri.to_string(),
            request,
            priority: Priority::Miss,
            expect: Some(entry.version),
        })
        .await?;
    Ok(match claimed {
        ClaimOutcome::Enqueued(entry) => Retried::Enqueued(Box::new(entry)),
        ClaimOutcome::Exists(entry) => Retried::NotFailed(entry.state(store.now())),
    })
}

/// Counts for operators (`errand stats`, metrics, dashboard).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Entries serving fresh content.
    pub fresh: u64,
    /// Entries past freshness but still servable (stale or stale-if-error windows).
    pub stale: u64,
    /// Entries with a queued or running job.
    pub pending: u64,
    /// Entries answering with a failure.
    pub failed: u64,
    /// Hit-for-pass entries.
    pub pass: u64,
    /// Bytes held by non-pending entries (as weighed by the store).
    pub bytes: u64,
    /// Jobs ready to run now.
    pub ready: u64,
    /// Jobs waiting for a retry's backoff to pass.
    pub scheduled: u64,
    /// Jobs held by workers.
    pub running: u64,
    /// Age of the oldest ready job, in milliseconds.
    pub oldest_ready_ms: u64,
}

/// The cause of a [`StoreError`]: the driver's or the system's own error, kept so a caller
/// can inspect it ([`std::error::Error::source`]). Shared, because one failed round trip can
/// answer many callers at once (a batch of claims, a batch of completions).
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store call failed. The front maps every variant to an answer (`503` +
/// `Retry-After` for an unreachable store); none of them is a panic.
///
/// The message says what went wrong in full, for logs; the cause, when there is one, is the
/// error it came from.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or answered with an error.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What failed, for people.
        message: String,
        /// The error it came from.
        #[source]
        cause: Option<Cause>,
    },
    /// The backend did not answer in time.
    #[error("store call timed out after {0:?}")]
    Timeout(Duration),
    /// The lease was lost: another worker has taken the job over (or it was completed).
    #[error("lease lost: the job was taken over or completed elsewhere")]
    LeaseLost,
    /// Too many distinct pending signatures: the flood cap refuses new jobs.
    #[error("queue full: {0} pending signatures")]
    Full(u64),
    /// Stored data could not be read back.
    #[error("corrupt store record: {0}")]
    Corrupt(String),
    /// The backend was reached but cannot be used as configured (retrying will not help), or
    /// its settings (a URL, a certificate file) are wrong.
    #[error("unsuitable backend: {message}")]
    Unsuitable {
        /// What is wrong, naming the setting or file.
        message: String,
        /// The error it came from.
        #[source]
        cause: Option<Cause>,
    },
    /// The caller's input cannot be used (e.g. a cursor that no listing gave).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl StoreError {
    /// [`Unavailable`](Self::Unavailable), with no cause beyond the message.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            cause: None,
        }
    }

    /// [`Unavailable`](Self::Unavailable) because of `cause`.
    pub fn unavailable_because(
        message: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            message: message.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// [`Unsuitable`](Self::Unsuitable), with no cause beyond the message.
    pub fn unsuitable(message: impl Into<String>) -> Self {
        Self::Unsuitable {
            message: message.into(),
            cause: None,
        }
    }

    /// [`Unsuitable`](Self::Unsuitable) because of `cause`.
    pub fn unsuitable_because(
        message: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unsuitable {
            message: message.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// Whether the store could not be reached or did not answer in time: a call that may
    /// succeed if made again.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Timeout(_))
    }
}

/// The store contract. Every method is one atomic step with respect to every other call on
/// the same store, from any process; every call is bounded in time (an implementation that
/// talks to a server puts a timeout on it and returns [`StoreError::Timeout`]).
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// The store's time: fronts and workers use it so every decision agrees on "now".
    fn now(&self) -> Timestamp;

    /// The entry of `key`, or `None`. Never returns an entry past its
    /// [`expires_at`](Entry::expires_at): such an entry is absent (pruned or about to be).
    async fn lookup(&self, key: &Key) -> Result<Option<Entry>, StoreError>;

    /// Enqueue-if-absent. Creates the pending entry (the job, ready now, attempts 0) unless a
    /// live job exists for the key, or the entry does not match [`Claim::expect`]; then
    /// returns the entry found instead. However many callers race, one wins. The stale content
    /// of a refreshed entry is kept, so it can still be served while the job runs. Returns
    /// [`StoreError::Full`] when the store's cap on pending entries is reached.
    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError>;

    /// Takes up to `max` ready jobs, by priority then run time, each leased to the caller
    /// until `now + lease`. Jobs whose lease expired are ready again (at-least-once). Never
    /// removes a job: only [`complete`](Self::complete) does.
    ///
    /// A shared store may spare the database a take that cannot find anything: once a take
    /// of this process has found the queue empty, it may answer with nothing until a job is
    /// announced to this process, or for at most its recheck interval (PostgreSQL does; it also
    /// looks for lapsed leases once per recheck). A caller that finds nothing waits in
    /// [`wait_for_jobs`](Self::wait_for_jobs), which returns as soon as a job is announced,
    /// and takes again, as the worker runtime does.
    async fn take(&self, max: usize, lease: Duration) -> Result<Vec<Job>, StoreError>;

    /// Extends a held lease to `now + lease`; [`StoreError::LeaseLost`] if it is no longer
    /// held by this token.
    async fn heartbeat(
        &self,
        lease: &LeaseToken,
        extend: Duration,
    ) -> Result<Timestamp, StoreError>;

    /// Stores each job's result and acknowledges it, in one step per job, fenced by its
    /// lease: a token that no longer holds its job gets [`StoreError::LeaseLost`] and changes
    /// nothing. Publishes the wake-up for each key (except for a [`Completion::Retry`], which
    /// only reschedules). Returns one result per job, in order; a backend sends them in as
    /// few round trips as it can. [`StoreExt::complete_one`] completes a single job.
    async fn complete(&self, jobs: Vec<(LeaseToken, Completion)>) -> Vec<Result<(), StoreError>>;

    /// Waits until `key` is no longer pending (woken by a notification, not by polling in a
    /// loop) and returns its entry.
    ///
    /// - `Ok(None)` if it is still pending after `timeout`, or absent.
    /// - At once if the entry is already settled.
    /// - `seen`: an instant taken before the caller's own read that found `key` pending (a
    ///   lookup or a claim), if it made one. A store that hears of every settlement may then
    ///   skip reading the entry again before it waits (a remote store saves a round trip on
    ///   every waited miss); the answer is the same.
    async fn wait(
        &self,
        key: &Key,
        seen: Option<std::time::Instant>,
        timeout: Duration,
    ) -> Result<Option<Entry>, StoreError>;

    /// Returns when a job may have become ready (a claim, a retry coming due, a lease
    /// expiring) or after `timeout`, whichever is first. Idle workers call it between takes.
    async fn wait_for_jobs(&self, timeout: Duration) -> Result<(), StoreError>;

    /// This process's workers have stopped taking jobs (shutdown): gives back to the queue,
    /// ready at once for any worker, the jobs this store leased ahead to them that none has
    /// taken yet, and returns how many. Only a store that leases ahead (PostgreSQL's
    /// hand-off to an idle worker) has any; the default has none.
    async fn hand_back_unstarted(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// Takes the response a hit-for-pass entry keeps for the next try of its signature: the
    /// first caller gets it, every later caller gets `None`.
    async fn take_once(&self, key: &Key) -> Result<Option<Arc<StoredResponse>>, StoreError>;

    /// Purges entries; returns how many were affected. A hard purge removes content and
    /// verdicts but never a live job; a soft purge makes content stale, keeping its stale
    /// windows. Either way, in the same step, a job that is running is **fenced**: it may have
    /// read what the write being invalidated replaced, so its lease is revoked (its
    /// [`complete`](Self::complete) gets [`StoreError::LeaseLost`] and stores nothing) and
    /// it is ready again at once; its next take is another attempt, and its waiters get
    /// that attempt's result.
    async fn purge(&self, purge: Purge) -> Result<u64, StoreError>;
}

/// The operator's path: what a store holds, counted and listed. Never on the request path
/// (a listing may scan); the admin API and `errand stats` use it. Every backend implements
/// it; a store that composes another ([`L1`], [`Coalesced`]) passes it through.
#[async_trait]
pub trait Inspect: Store {
    /// Counts by state and queue figures.
    async fn stats(&self) -> Result<Stats, StoreError>;

    /// Lists entries, one page at a time, optionally only those in one state. Expired
    /// entries are never listed.
    async fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError>;
}

/// Conveniences over [`Store`] for one job at a time.
#[async_trait]
pub trait StoreExt: Store {
    /// [`complete`](Store::complete) of one job.
    async fn complete_one(
        &self,
        lease: &LeaseToken,
        completion: Completion,
    ) -> Result<(), StoreError> {
        self.complete(vec![(lease.clone(), completion)])
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::Corrupt("no result for a completion".into())))
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// A backend URL with its password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// A store shared by fronts and workers.
pub type SharedStore = Arc<dyn Store>;

/// A store with entries to remove once their windows end (a remote store, where nothing
/// else frees them).
#[cfg(any(feature = "postgres", feature = "redis"))]
#[async_trait]
pub(crate) trait Prune: Send + Sync + 'static {
    /// Removes up to `batch` expired entries; returns how many it looked at.
    async fn prune_batch(&self, batch: u64) -> Result<u64, StoreError>;
}

/// Prunes `store` in batches of 1,000 every `every`, until the store is dropped.
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) fn spawn_pruner<S: Prune>(
    store: &Arc<S>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    const BATCH: u64 = 1000;
    let store = Arc::downgrade(store);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(store) = store.upgrade() else { break };
            loop {
                match store.prune_batch(BATCH).await {
                    Ok(BATCH) => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "pruning failed; will try again");
                        break;
                    }
                }
            }
        }
    })
}

/// Runs one store call under `limit`: callers bound every call, whatever the backend.
pub(crate) async fn timed<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or(Err(StoreError::Timeout(limit)))
}
