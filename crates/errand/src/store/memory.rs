//! The embedded store, [`MemoryStore`]; its design is documented on the type.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use moka::sync::Cache;
use tokio::sync::Notify;

use super::Inspect;
use super::{
    Claim, ClaimOutcome, Clock, Completion, Job, LeaseToken, ListPage, ListQuery, Purge,
    PurgeTarget, Stats, Store, StoreError, SystemClock, Wakeups,
};
use crate::pattern::{
    Entry, Failure, JobId, JobInfo, Key, Priority, RequestRecord, State, Status, StoredResponse,
    Timestamp,
};

/// Limits of a [`MemoryStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Byte budget of settled entries (responses with their headers).
    pub capacity: u64,
    /// Cap on distinct pending signatures (the flood cap): beyond it, claims are refused.
    pub max_pending: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            capacity: 256 * 1024 * 1024,
            max_pending: 10_000,
        }
    }
}

/// The embedded default store: one process, zero set-up, bounded memory.
///
/// Two structures, one lock for every write:
/// - `entries`, a [`moka`] cache of settled entries (fresh, stale, failed, pass) weighed in
///   bytes against [`MemoryConfig::capacity`], evicted least-recently-used first. It is the
///   hit path: a fresh hit is one lock-free `get`. LRU rather than moka's default TinyLFU
///   admission: TinyLFU may refuse a new key outright when the cache is full, and here every
///   new key is a result a client was just told to come back for.
/// - `queue`, the pending entries (the jobs), bounded by [`MemoryConfig::max_pending`]. They
///   are kept out of the cache on purpose: eviction must never drop a live job.
///
/// Every operation that reads and writes both (claim, complete, purge) holds the queue's
/// `std::sync::Mutex` for a few map operations and never across an `.await`, which is what
/// makes claim atomic ("a map entry under a lock").
#[derive(Debug)]
pub struct MemoryStore {
    clock: Arc<dyn Clock>,
    entries: Cache<Key, Arc<Entry>>,
    queue: Mutex<Queue>,
    wakeups: Wakeups,
    work: Notify,
    versions: AtomicU64,
    config: MemoryConfig,
}

#[derive(Debug)]
struct PendingJob {
    info: JobInfo,
    request: RequestRecord,
    uri: Arc<str>,
    version: u64,
    token: Option<u64>,
    /// Its last lease ran out (the next take is a redelivery).
    lapsed: bool,
}

#[derive(Debug, Default)]
struct Queue {
    /// Boxed: buckets stay small, so a table sized for the flood cap stays cheap.
    pending: HashMap<Key, Box<PendingJob>>,
    /// Ready to run: (priority, run_at, id).
    ready: BTreeSet<(Priority, Timestamp, JobId, Key)>,
    /// Backing off until run_at.
    scheduled: BTreeSet<(Timestamp, JobId, Key)>,
    /// Held by workers until lease_until.
    leased: BTreeSet<(Timestamp, JobId, Key)>,
    next_job: u64,
    next_token: u64,
}

impl Queue {
    /// Moves due retries to `ready` and expired leases back to `ready` (at-least-once).
    fn promote(&mut self, now: Timestamp) {
        while let Some((run_at, id, key)) = self.scheduled.first().cloned() {
            if run_at > now {
                break;
            }
            self.scheduled.pop_first();
            if let Some(job) = self.pending.get(&key) {
                self.ready.insert((job.info.priority, run_at, id, key));
            }
        }
        while let Some((until, id, key)) = self.leased.first().cloned() {
            if until > now {
                break;
            }
            self.leased.pop_first();
            if let Some(job) = self.pending.get_mut(&key) {
                job.info.lease_until = None;
                job.token = None;
                job.lapsed = true;
                self.ready
                    .insert((job.info.priority, job.info.run_at, id, key));
            }
        }
    }

    /// The held job of `lease`, if the token still holds it.
    fn held(&mut self, lease: &LeaseToken) -> Result<&mut PendingJob, StoreError> {
        match self.pending.get_mut(&lease.key) {
            Some(job) if job.info.id == lease.job && job.token == Some(lease.token) => Ok(job),
            _ => Err(StoreError::LeaseLost),
        }
    }

    /// When the next job becomes ready without any new claim.
    fn next_due(&self) -> Option<Timestamp> {
        let retry = self.scheduled.first().map(|s| s.0);
        let lease = self.leased.first().map(|l| l.0);
        retry.into_iter().chain(lease).min()
    }
}

impl MemoryStore {
    /// A store on the wall clock.
    pub fn new(config: MemoryConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A store reading time from `clock` (tests use a [`ManualClock`](super::ManualClock)).
    pub fn with_clock(config: MemoryConfig, clock: Arc<dyn Clock>) -> Self {
        let entries = Cache::builder()
            .max_capacity(config.capacity)
            .weigher(|_key: &Key, entry: &Arc<Entry>| {
                u32::try_from(entry.weight()).unwrap_or(u32::MAX)
            })
            .expire_after(ExpireAtEnd)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .eviction_listener(|_key, _entry, cause| {
                // Pushed out by the byte budget (not expired, replaced or purged).
                if cause == moka::notification::RemovalCause::Size {
                    crate::metrics::evicted();
                }
            })
            .build();
        Self {
            clock,
            entries,
            // Sized for the flood cap up front: a HashMap that doubles rehashes every entry
            // under this lock, a pause every front would feel at once. Untouched buckets cost
            // address space, not memory.
            queue: Mutex::new(Queue {
                pending: HashMap::with_capacity(config.max_pending.min(1 << 22)),
                ..Queue::default()
            }),
            wakeups: Wakeups::default(),
            work: Notify::new(),
            versions: AtomicU64::new(1),
            config,
        }
    }

    fn version(&self) -> u64 {
        self.versions.fetch_add(1, Ordering::Relaxed)
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves the maps consistent (each critical section
        // is a handful of inserts/removes), so a poisoned lock is safe to keep using.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The settled entry of `key`, unless it has expired (then it is dropped).
    fn settled(&self, key: &Key, now: Timestamp) -> Option<Arc<Entry>> {
        let entry = self.entries.get(key)?;
        if entry.expires_at().is_some_and(|at| at <= now) {
            self.entries.invalidate(key);
            return None;
        }
        Some(entry)
    }

    /// Inserts and applies eviction at once. moka defers maintenance to batches, which with
    /// large responses would let the cache run tens of megabytes over its budget; writes are
    /// off the hit path (a job completing), so they pay for it here.
    fn insert_settled(&self, key: Key, entry: Entry) {
        self.entries.insert(key, Arc::new(entry));
        self.entries.run_pending_tasks();
    }

    fn pending_entry(&self, key: &Key, job: &PendingJob, now: Timestamp) -> Entry {
        Entry {
            key: *key,
            uri: job.uri.clone(),
            version: job.version,
            content: self.settled(key, now).and_then(|e| e.content.clone()),
            status: Status::Pending(job.info.clone()),
        }
    }

    fn lookup_now(&self, key: &Key) -> Option<Entry> {
        let now = self.clock.now();
        // The hit path: a fresh settled entry needs no lock. A claim can only happen on an
        // entry that is not fresh, so nothing pending can hide behind a fresh entry.
        if let Some(entry) = self.settled(key, now)
            && entry.content.as_ref().is_some_and(|c| now < c.fresh_until)
        {
            return Some(Entry::clone(&entry));
        }
        let queue = self.queue();
        match queue.pending.get(key) {
            Some(job) => Some(self.pending_entry(key, job, now)),
            None => self.settled(key, now).map(|e| Entry::clone(&e)),
        }
    }

    /// Runs `f` on every settled entry matching `target`, replacing or removing it.
    /// Fences the running jobs `target` names: a job that started before an invalidation
    /// may have read what the write replaced, so its lease is revoked (its completion will
    /// be refused) and it is ready again at once; its next take is another attempt, as a
    /// redelivery is. Returns how many.
    fn fence_running(&self, queue: &mut Queue, target: &PurgeTarget) -> u64 {
        let running: Vec<Key> = queue
            .pending
            .iter()
            .filter(|(key, job)| {
                job.token.is_some()
                    && match target {
                        PurgeTarget::Key(k) => *key == k,
                        PurgeTarget::Uri(u) => *job.uri == **u,
                        PurgeTarget::Prefix(p) => job.uri.starts_with(p.as_str()),
                        PurgeTarget::Tag(t) => self.entries.get(*key).is_some_and(|e| {
                            e.content.as_ref().is_some_and(|c| c.tags.contains(t))
                        }),
                        PurgeTarget::All => true,
                    }
            })
            .map(|(key, _)| *key)
            .collect();
        for key in &running {
            let Some(job) = queue.pending.get_mut(key) else {
                continue;
            };
            let until = job.info.lease_until.take();
            job.token = None;
            job.version = self.versions.fetch_add(1, Ordering::Relaxed);
            let (id, priority, run_at) = (job.info.id, job.info.priority, job.info.run_at);
            if let Some(until) = until {
                queue.leased.remove(&(until, id, *key));
            }
            queue.ready.insert((priority, run_at, id, *key));
        }
        running.len() as u64
    }

    fn purge_settled(&self, target: &PurgeTarget, soft: bool, now: Timestamp) -> u64 {
        let matches = |entry: &Entry| match target {
            PurgeTarget::Key(k) => &entry.key == k,
            PurgeTarget::Uri(u) => *entry.uri == **u,
            PurgeTarget::Prefix(p) => entry.uri.starts_with(p.as_str()),
            PurgeTarget::Tag(t) => entry.content.as_ref().is_some_and(|c| c.tags.contains(t)),
            PurgeTarget::All => true,
        };
        let victims: Vec<Arc<Entry>> = match target {
            PurgeTarget::Key(k) => self.entries.get(k).into_iter().collect(),
            _ => self
                .entries
                .iter()
                .filter(|(_, e)| matches(e))
                .map(|(_, e)| e)
                .collect(),
        };
        let mut count = 0;
        for entry in victims {
            if !soft {
                self.entries.invalidate(&entry.key);
                count += 1;
                continue;
            }
            let Some(content) = entry.content.as_ref() else {
                continue;
            };
            if content.fresh_until <= now {
                continue;
            }
            // Soft purge: stale from now on, keeping the lengths of its stale windows.
            let mut content = content.clone();
            let stale_for = content.stale_until.since(content.fresh_until);
            let sie_for = content.stale_if_error_until.since(content.fresh_until);
            content.fresh_until = now;
            content.stale_until = now.plus(stale_for);
            content.stale_if_error_until = now.plus(sie_for);
            let replaced = Entry {
                version: self.version(),
                content: Some(content),
                ..Entry::clone(&entry)
            };
            self.insert_settled(entry.key, replaced);
            count += 1;
        }
        count
    }
}

/// Lets moka drop an entry once nothing of it can be served any more.
struct ExpireAtEnd;

impl moka::Expiry<Key, Arc<Entry>> for ExpireAtEnd {
    fn expire_after_create(
        &self,
        _key: &Key,
        entry: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        entry
            .expires_at()
            .map(|at| at.since(Timestamp::now()).max(Duration::from_secs(1)))
    }

    fn expire_after_update(
        &self,
        key: &Key,
        entry: &Arc<Entry>,
        updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, entry, updated_at)
    }
}

impl MemoryStore {
    fn complete_job(&self, lease: &LeaseToken, completion: Completion) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut queue = self.queue();
        queue.promote(now);
        let job = queue.held(lease)?;
        let held_until = job.info.lease_until.unwrap_or(now);
        let (content, status) = match completion {
            Completion::Retry { run_at, error } => {
                // The job stays pending (its marker keeps a live job); only its schedule moves.
                job.info.lease_until = None;
                job.info.run_at = run_at;
                job.info.last_error = Some(error);
                job.token = None;
                job.version = self.versions.fetch_add(1, Ordering::Relaxed);
                queue.leased.remove(&(held_until, lease.job, lease.key));
                queue.scheduled.insert((run_at, lease.job, lease.key));
                drop(queue);
                self.work.notify_waiters();
                return Ok(());
            }
            Completion::Store(content) => (Some(content), Status::Idle),
            Completion::Pass(pass) => (None, Status::Pass(pass)),
            Completion::Deliver { content, pass } => (Some(content), Status::Pass(pass)),
            Completion::Fail(failure) => (
                self.settled(&lease.key, now)
                    .and_then(|e| e.content.clone()),
                Status::Failed(Failure {
                    request: Some(job.request.clone()),
                    ..failure
                }),
            ),
        };
        queue.leased.remove(&(held_until, lease.job, lease.key));
        let Some(job) = queue.pending.remove(&lease.key) else {
            return Err(StoreError::LeaseLost);
        };
        let entry = Entry {
            key: lease.key,
            uri: job.uri,
            version: self.version(),
            content,
            status,
        };
        self.insert_settled(lease.key, entry.clone());
        drop(queue);
        // Waiters get the result itself, even one already past its windows (an error TTL of
        // 0), which a lookup would no longer find.
        self.wakeups.wake_settled(entry);
        Ok(())
    }
}

#[async_trait]
impl Inspect for MemoryStore {
    async fn stats(&self) -> Result<Stats, StoreError> {
        let now = self.clock.now();
        let mut stats = Stats::default();
        self.entries.run_pending_tasks();
        let mut queue = self.queue();
        queue.promote(now);
        for (key, entry) in self.entries.iter() {
            if entry.expires_at().is_some_and(|at| at <= now) || queue.pending.contains_key(&*key) {
                continue;
            }
            stats.bytes += entry.weight() as u64;
            let fresh = entry.content.as_ref().is_some_and(|c| now < c.fresh_until);
            match &entry.status {
                Status::Pass(p) if now < p.until => stats.pass += 1,
                Status::Failed(f) if now < f.until => stats.failed += 1,
                _ if fresh => stats.fresh += 1,
                _ => stats.stale += 1,
            }
        }
        stats.pending = queue.pending.len() as u64;
        stats.ready = queue.ready.len() as u64;
        stats.scheduled = queue.scheduled.len() as u64;
        stats.running = queue.leased.len() as u64;
        stats.oldest_ready_ms = queue
            .ready
            .iter()
            .map(|(_, run_at, _, _)| now.since(*run_at))
            .max()
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Ok(stats)
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        let after = match &query.after {
            Some(cursor) => Some(Key::parse(cursor).ok_or_else(|| {
                StoreError::Invalid(format!("{cursor:?} is not a cursor of this store"))
            })?),
            None => None,
        };
        let now = self.clock.now();
        let limit = query.limit.max(1);
        let wanted = |state: State| query.state.is_none_or(|s| s == state);
        // The keys after the cursor whose entry is in the state asked for, judged as lookup
        // would (a pending job hides the settled copy it refreshes).
        let mut keys: Vec<Key> = {
            let queue = self.queue();
            let mut keys: Vec<Key> = if wanted(State::Pending) {
                queue.pending.keys().copied().collect()
            } else {
                Vec::new()
            };
            keys.extend(
                self.entries
                    .iter()
                    .filter(|(key, entry)| {
                        !queue.pending.contains_key(&**key)
                            && entry.expires_at().is_none_or(|at| at > now)
                            && wanted(entry.state(now))
                    })
                    .map(|(key, _)| *key),
            );
            keys
        };
        keys.retain(|k| after.is_none_or(|a| *k > a));
        keys.sort_unstable();
        let more = keys.len() > limit;
        keys.truncate(limit);
        // Read each as lookup does; one that changed state meanwhile is left out.
        let entries = keys
            .iter()
            .filter_map(|key| self.lookup_now(key))
            .filter(|entry| wanted(entry.state(now)))
            .collect();
        Ok(ListPage {
            entries,
            next: more.then(|| keys.last().map(Key::to_hex)).flatten(),
        })
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    async fn lookup(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        Ok(self.lookup_now(key))
    }

    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
        let now = self.clock.now();
        let mut queue = self.queue();
        if let Some(job) = queue.pending.get(&claim.key) {
            return Ok(ClaimOutcome::Exists(
                self.pending_entry(&claim.key, job, now),
            ));
        }
        let settled = self.settled(&claim.key, now);
        let current = settled.as_ref().map(|e| e.version);
        if current != claim.expect
            && let Some(entry) = settled
        {
            return Ok(ClaimOutcome::Exists(Entry::clone(&entry)));
        }
        // The entry the caller saw is gone (expired, evicted, purged): nothing newer
        // exists, so claiming is what the caller wants.
        if queue.pending.len() >= self.config.max_pending {
            return Err(StoreError::Full(queue.pending.len() as u64));
        }
        queue.next_job += 1;
        let id = JobId(queue.next_job);
        let after_failure = settled
            .as_ref()
            .is_some_and(|e| matches!(e.status, Status::Failed(_)));
        let info = JobInfo::claimed(id, claim.priority, now, after_failure);
        let job = PendingJob {
            info,
            request: claim.request,
            uri: claim.uri.into(),
            version: self.version(),
            token: None,
            lapsed: false,
        };
        queue.ready.insert((claim.priority, now, id, claim.key));
        let entry = Entry {
            key: claim.key,
            uri: job.uri.clone(),
            version: job.version,
            content: settled.and_then(|e| e.content.clone()),
            status: Status::Pending(job.info.clone()),
        };
        queue.pending.insert(claim.key, Box::new(job));
        drop(queue);
        self.work.notify_waiters();
        Ok(ClaimOutcome::Enqueued(entry))
    }

    async fn take(&self, max: usize, lease: Duration) -> Result<Vec<Job>, StoreError> {
        let now = self.clock.now();
        let until = now.plus(lease);
        let mut queue = self.queue();
        queue.promote(now);
        let mut jobs = Vec::new();
        while jobs.len() < max {
            let Some((priority, _, id, key)) = queue.ready.pop_first() else {
                break;
            };
            queue.next_token += 1;
            let token = queue.next_token;
            let Some(job) = queue.pending.get_mut(&key) else {
                continue;
            };
            let redelivered = std::mem::take(&mut job.lapsed);
            job.info.attempts += 1;
            job.info.lease_until = Some(until);
            job.token = Some(token);
            let taken = Job {
                lease: LeaseToken {
                    key,
                    job: id,
                    token,
                },
                lease_until: until,
                request: job.request.clone(),
                priority,
                attempt: job.info.attempts,
                created_at: job.info.created_at,
                redelivered,
            };
            queue.leased.insert((until, id, key));
            jobs.push(taken);
        }
        Ok(jobs)
    }

    async fn heartbeat(
        &self,
        lease: &LeaseToken,
        extend: Duration,
    ) -> Result<Timestamp, StoreError> {
        let now = self.clock.now();
        let until = now.plus(extend);
        let mut queue = self.queue();
        queue.promote(now);
        let job = queue.held(lease)?;
        let old = job.info.lease_until.replace(until).unwrap_or(until);
        queue.leased.remove(&(old, lease.job, lease.key));
        queue.leased.insert((until, lease.job, lease.key));
        Ok(until)
    }

    async fn complete(&self, jobs: Vec<(LeaseToken, Completion)>) -> Vec<Result<(), StoreError>> {
        jobs.into_iter()
            .map(|(lease, completion)| self.complete_job(&lease, completion))
            .collect()
    }

    async fn wait(
        &self,
        key: &Key,
        _seen: Option<std::time::Instant>,
        timeout: Duration,
    ) -> Result<Option<Entry>, StoreError> {
        self.wakeups
            .wait(key, None, timeout, None, || async {
                Ok(self.lookup_now(key))
            })
            .await
    }

    async fn wait_for_jobs(&self, timeout: Duration) -> Result<(), StoreError> {
        let notified = self.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = self.clock.now();
        let sleep_for = {
            let mut queue = self.queue();
            queue.promote(now);
            if !queue.ready.is_empty() {
                return Ok(());
            }
            queue
                .next_due()
                .map_or(timeout, |due| due.since(now).min(timeout))
        };
        let _ = tokio::time::timeout(sleep_for, notified).await;
        Ok(())
    }

    async fn take_once(&self, key: &Key) -> Result<Option<Arc<StoredResponse>>, StoreError> {
        let now = self.clock.now();
        let _queue = self.queue();
        let Some(entry) = self.settled(key, now) else {
            return Ok(None);
        };
        let Status::Pass(pass) = &entry.status else {
            return Ok(None);
        };
        let Some(once) = pass.once.clone() else {
            return Ok(None);
        };
        let mut pass = pass.clone();
        pass.once = None;
        let replaced = Entry {
            version: self.version(),
            status: Status::Pass(pass),
            ..Entry::clone(&entry)
        };
        self.insert_settled(*key, replaced);
        Ok(Some(once))
    }

    async fn purge(&self, purge: Purge) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let mut queue = self.queue();
        let requeued = self.fence_running(&mut queue, &purge.target);
        let purged = self.purge_settled(&purge.target, purge.soft, now);
        drop(queue);
        if requeued > 0 {
            self.work.notify_waiters();
        }
        Ok(purged + requeued)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{HeaderMap, Method, StatusCode};

    use super::*;
    use crate::pattern::{Content, Signature};
    use crate::store::{Claim, Completion, StoreExt};

    fn signature(n: usize) -> Signature {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, "mem.test".parse().expect("host"));
        let uri = format!("/item/{n}").parse().expect("uri");
        Signature::of(&Method::GET, &uri, &headers, "http", &[]).expect("signature")
    }

    fn claim(n: usize) -> Claim {
        let sig = signature(n);
        Claim {
            key: sig.key,
            uri: sig.request.uri.clone(),
            request: sig.request,
            priority: Priority::Miss,
            expect: None,
        }
    }

    async fn store_one(store: &MemoryStore, n: usize, body: Bytes) {
        store.claim(claim(n)).await.expect("claim");
        let job = store
            .take(1, Duration::from_secs(30))
            .await
            .expect("take")
            .remove(0);
        let now = store.now();
        let content = Content {
            response: Arc::new(StoredResponse {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body,
                selecting: HeaderMap::new(),
            }),
            generated_at: now,
            fresh_until: now.plus(Duration::from_secs(600)),
            stale_until: now.plus(Duration::from_secs(600)),
            stale_if_error_until: now.plus(Duration::from_secs(600)),
            tags: vec![],
            job_millis: 1,
        };
        store
            .complete_one(&job.lease, Completion::Store(content))
            .await
            .expect("complete");
    }

    use bytes::Bytes;

    #[tokio::test]
    async fn settled_entries_stay_within_the_byte_budget() {
        let budget = 32 * 1024 * 1024;
        let store = MemoryStore::new(MemoryConfig {
            capacity: budget,
            max_pending: 10,
        });
        // 512 MiB of distinct 1 MiB responses through a 32 MiB store.
        for n in 0..512 {
            store_one(&store, n, Bytes::from(vec![b'x'; 1024 * 1024])).await;
        }
        store.entries.run_pending_tasks();
        let held = store.entries.weighted_size();
        assert!(held <= budget, "{held} bytes held for a budget of {budget}");
        let stats = store.stats().await.expect("stats");
        assert!(stats.bytes <= budget, "{stats:?}");
        assert!(
            stats.fresh >= 16,
            "the budget is used, not wasted: {stats:?}"
        );
        // The most recent entries are still served.
        assert!(
            store
                .lookup(&signature(511).key)
                .await
                .expect("lookup")
                .is_some()
        );
    }

    #[tokio::test]
    async fn the_flood_cap_refuses_claims_beyond_max_pending() {
        let store = MemoryStore::new(MemoryConfig {
            capacity: 1024 * 1024,
            max_pending: 3,
        });
        for n in 0..3 {
            assert!(matches!(
                store.claim(claim(n)).await,
                Ok(ClaimOutcome::Enqueued(_))
            ));
        }
        assert!(matches!(
            store.claim(claim(99)).await,
            Err(StoreError::Full(3))
        ));
    }
}
