//! The PostgreSQL store: many fronts and many workers on many machines share one durable
//! table, in which **the pending entry is the job**.
//!
//! Every operation is one statement (one round trip, one implicit transaction):
//!
//! - `claim` is `INSERT … ON CONFLICT (key) DO UPDATE … WHERE <not pending, and expired or at
//!   the expected version>`: the primary key makes it atomic however many fronts race; the
//!   loser's statement changes nothing and it reads the winner's row. (It does lock that row
//!   for a moment, and a worker's `take` skips locked rows, so a loser that finds the job
//!   still waiting for a worker announces it again.)
//!   It returns only what the caller does not know already (the version, the job id, and a
//!   copy the row keeps); the rest of the pending entry is what the claim wrote.
//!   Claims made while two claim statements are on their way wait for one of them, then go
//!   together: one statement and one commit for many claims, each row the same insert or
//!   update as alone, keys in order so that two statements never wait on each other. Under
//!   light load every claim goes at once, alone ([`PgConfig::group_claims`] turns grouping
//!   off).
//! - `take` picks ready rows by priority then run time with `FOR UPDATE SKIP LOCKED` and
//!   leases them in the same statement, so two workers never take one job and a worker that
//!   dies holds nothing but a lease that runs out (at-least-once). Lapsed leases announce
//!   nothing, so takes look for them in a statement of their own once per
//!   [`PgConfig::recheck`]. A take that has found the queue empty does not ask again until a
//!   job is announced (or the recheck passes).
//! - `complete` updates the row only `WHERE job_id = … AND lease_token = …` (fencing).
//!
//! Hand-off: a claim made while a worker of the same process waits idle leases the new job
//! to that worker in the claim's own statement, and the worker's next `take` gets it without
//! asking the database. On the miss path of a front that also works, that saves a statement
//! and a durable commit: the job costs two (claim and lease; acknowledge and store), not
//! three. The lease is in the table like any other, so no other process takes
//! the job meanwhile, and if this process dies first the job is taken over when the lease
//! runs out. When its workers stop (shutdown), jobs handed over but not yet started are given
//! back to the queue at once ([`Store::hand_back_unstarted`]). Fronts without workers never
//! hand off.
//!
//! Wake-ups: after a claim or a completion commits, this process announces it with
//! `NOTIFY`, coalesced: a lone event goes out at once, and during a burst one statement per
//! 2 ms window carries every key completed in it and whether jobs were claimed (`NOTIFY`
//! serializes commits cluster-wide, so one per write would cap throughput). A jobs
//! notification carries the id of the process that sent it, and that process's own listener
//! leaves it out: its workers were told directly. One
//! `LISTEN` connection per process fans notifications out to the waiters of this process
//! ([`Wakeups`]) and to its idle workers; waiters and idle workers also look again every
//! [`PgConfig::recheck`], so a missed notification (a dropped listener connection, a pooler
//! that breaks `LISTEN`) costs at most that much delay, never a lost answer. A result stored
//! by this process reaches its own waiters with the settled entry, so they answer without
//! reading it back.
//!
//! Every call runs under [`PgConfig::call_timeout`]; the pool waits at most that long for a
//! connection, so a database that is down gives [`StoreError::Unavailable`] or
//! [`StoreError::Timeout`] quickly, and the pool reconnects by itself when it is back.
//! The pool hands out the connection given back last, so a steady load runs on as few
//! server processes as it needs, and closes those left unused for
//! [`PgConfig::idle_timeout`].
//! Writes use the server's `synchronous_commit` (durable by default).
//!
//! The schema lives in its own PostgreSQL schema (`PgConfig::schema`), created and upgraded
//! by idempotent migrations on start or by `errand migrate`. Its indexes are partial, so each
//! write touches only those it needs: ready jobs by priority and run time, held jobs by lease
//! end, settled rows by expiry, and by URI only the rows a purge can act on.
//!
//! Times are the store clock's milliseconds (the fronts' and workers' own clocks): keep the
//! machines' clocks in sync (NTP), as any lease-based queue requires.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, QueueMode, RecyclingMethod, Runtime};
use http::StatusCode;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::codec::{decode_headers, encode_headers};
use super::{
    Claim, ClaimOutcome, Clock, Completion, Job, LeaseToken, ListPage, ListQuery, Purge,
    PurgeTarget, Stats, Store, StoreError, SystemClock, Wakeups,
};
use crate::pattern::{
    Content, Entry, Failure, JobId, JobInfo, Key, PassInfo, Priority, RequestRecord, State, Status,
    StoredResponse, Timestamp,
};

/// Settings of a [`PgStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// The schema holding errand's table (created if missing): one per deployment or tenant.
    pub schema: String,
    /// Most connections in the pool. They are opened as calls need them, and the one given
    /// back last serves the next call.
    pub pool_size: usize,
    /// A pooled connection left unused this long is closed, so a pool sized for a burst
    /// shrinks back to what the load needs, and no connection sits idle long enough for a
    /// firewall, NAT or server idle timeout to drop it unseen.
    pub idle_timeout: Duration,
    /// Upper bound of every call, pool wait included.
    pub call_timeout: Duration,
    /// How often waiters and idle workers look again without a notification; also how
    /// often takes look for lapsed leases, and the longest a retry that came due waits for a
    /// worker that keeps finding the queue empty.
    pub recheck: Duration,
    /// Use `LISTEN/NOTIFY` for wake-ups. Off ("poll-only mode") for a connection pooler in
    /// transaction mode, which breaks `LISTEN`: waiters and workers then rely on
    /// [`recheck`](Self::recheck) alone, so set it short (e.g. 50 ms).
    pub listen: bool,
    /// Send claims made while others are on their way together, in one statement (and one
    /// commit). Off: every claim is a statement of its own (one job a transaction, for
    /// measuring that).
    pub group_claims: bool,
}

impl PgConfig {
    /// Defaults for `url`: schema `errand`, up to 16 connections closed after 60 s unused,
    /// 5 s per call, recheck every 1 s.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: "errand".into(),
            pool_size: 16,
            idle_timeout: Duration::from_secs(60),
            call_timeout: Duration::from_secs(5),
            recheck: Duration::from_secs(1),
            listen: true,
            group_claims: true,
        }
    }
}

/// Wake-ups waiting to be announced: sent together, one `NOTIFY` per short window.
///
/// `NOTIFY` takes a cluster-wide lock when its transaction commits, so a notification per
/// claim and per completion would serialize every write of every process. The state change
/// commits without one; this process announces it right after, coalesced.
#[derive(Debug, Default)]
struct Announcer {
    keys: std::sync::Mutex<Vec<Key>>,
    jobs: AtomicBool,
    ready: Notify,
}

/// How long announcements gather before one `NOTIFY` carries them.
const ANNOUNCE_WINDOW: Duration = Duration::from_millis(2);

/// Keys per notification (a payload holds under 8,000 bytes).
const KEYS_PER_NOTIFY: usize = 200;

/// A window's notifications, `$1` channels and `$2` payloads, in one statement and so one
/// commit.
const ANNOUNCE: &str = "SELECT pg_notify(n.channel, n.payload)
     FROM unnest($1::text[], $2::text[]) AS n(channel, payload)";

impl Announcer {
    fn job(&self) {
        self.jobs.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    fn done(&self, key: Key) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key);
        self.ready.notify_one();
    }

    /// Sends at once what there is, then gathers for a window before sending again: a lone
    /// event is announced without delay, a burst costs one notification per window.
    ///
    /// A jobs notification carries `origin`, this process's own mark, so that its listener
    /// can leave it out: this process's workers heard of its claims directly.
    async fn run(self: Arc<Self>, pool: Pool, (done, jobs): (String, String), origin: String) {
        let mut window = tokio::time::Instant::now();
        loop {
            self.ready.notified().await;
            tokio::time::sleep_until(window).await;
            window = tokio::time::Instant::now() + ANNOUNCE_WINDOW;
            let keys = std::mem::take(&mut *self.keys.lock().unwrap_or_else(|e| e.into_inner()));
            let new_jobs = self.jobs.swap(false, Ordering::AcqRel);
            let (mut channels, mut payloads): (Vec<&str>, Vec<String>) = keys
                .chunks(KEYS_PER_NOTIFY)
                .map(|chunk| {
                    let text: Vec<String> = chunk.iter().map(Key::to_hex).collect();
                    (done.as_str(), text.join(","))
                })
                .unzip();
            if new_jobs {
                channels.push(jobs.as_str());
                payloads.push(origin.clone());
            }
            if payloads.is_empty() {
                continue;
            }
            let sent = async {
                let client = pool.get().await.map_err(unavailable)?;
                let statement = client.prepare_cached(ANNOUNCE).await.map_err(db)?;
                client
                    .execute(&statement, &[&channels, &payloads])
                    .await
                    .map_err(db)?;
                Ok::<_, StoreError>(())
            };
            if let Err(e) = tokio::time::timeout(Duration::from_secs(5), sent)
                .await
                .unwrap_or(Err(StoreError::Timeout(Duration::from_secs(5))))
            {
                // Waiters and idle workers recheck on their own; nothing is lost.
                tracing::warn!(error = %e, "could not send wake-ups");
            }
        }
    }
}

/// What this process knows of the queue: idle workers wait on it, and a worker that found
/// the queue empty does not ask the database again until a job may have come.
///
/// Every sign that a job may be ready bumps a count: a claim of this process, a `NOTIFY` on
/// the jobs channel, the listener (re)connecting, a job handed back or retried at once. A take
/// that finds fewer ready jobs than it asked for remembers the count it began with; until
/// that count moves, or [`PgConfig::recheck`] passes on the store clock, the next take answers
/// "nothing" without a query. (A retry coming due announces nothing; it waits at most that
/// long.) On the hand-off path this spares a worker an empty take after every job. Without a
/// working listener every take asks.
///
/// A lease running out announces nothing either: takes look for lapsed leases once per
/// recheck, in a statement of their own, so the take of every job reads one index, not two.
#[derive(Debug, Default)]
struct JobSignal {
    wake: Notify,
    announced: AtomicU64,
    listening: AtomicBool,
    /// The count and the store time of the last take that emptied the queue.
    drained: std::sync::Mutex<Option<(u64, Timestamp)>>,
    /// When a take last looked for lapsed leases.
    rescued: std::sync::Mutex<Option<Timestamp>>,
}

impl JobSignal {
    /// Jobs may be ready: counts it and wakes the idle workers.
    fn announce(&self) {
        self.announced.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_waiters();
    }

    /// One job is ready: counts it and wakes one idle worker (or the next to wait).
    fn announce_one(&self) {
        self.announced.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// The listener is up (`true`: anything may have happened while it was down) or down.
    fn listening(&self, on: bool) {
        self.listening.store(on, Ordering::Release);
        self.announce();
    }

    /// The count to pass to [`drained`](Self::drained) after a take begun now.
    fn seen(&self) -> u64 {
        self.announced.load(Ordering::Acquire)
    }

    /// Whether the queue is known to hold nothing ready for a take begun at `now`.
    fn known_empty(&self, now: Timestamp, recheck: Duration) -> bool {
        if !self.listening.load(Ordering::Acquire) {
            return false;
        }
        let drained = *self.drained.lock().unwrap_or_else(|e| e.into_inner());
        drained.is_some_and(|(count, at)| count == self.seen() && now < at.plus(recheck))
    }

    /// Whether a job was announced since a take last found the queue empty.
    fn announced_since_drained(&self) -> bool {
        let drained = *self.drained.lock().unwrap_or_else(|e| e.into_inner());
        drained.is_some_and(|(count, _)| count != self.seen())
    }

    /// A take begun at the count and time given found the queue empty (or `None`: it found
    /// as many jobs as it asked for, so more may wait).
    fn drained(&self, seen: Option<(u64, Timestamp)>) {
        *self.drained.lock().unwrap_or_else(|e| e.into_inner()) = seen;
    }

    /// Whether a take at `now` should look for lapsed leases (and, if so, notes that it does).
    fn rescue_due(&self, now: Timestamp, recheck: Duration) -> bool {
        let mut rescued = self.rescued.lock().unwrap_or_else(|e| e.into_inner());
        if rescued.is_some_and(|at| now < at.plus(recheck)) {
            return false;
        }
        *rescued = Some(now);
        true
    }
}

/// Jobs this process claimed while one of its workers was idle, leased to it in the claim's
/// own statement (saving that worker a `take` and its commit) and waiting for its next
/// [`take`](Store::take). The lease is in the table like any other: if this process dies
/// first, the job is taken over when the lease runs out.
#[derive(Default)]
struct HandOff {
    /// Callers inside [`Store::wait_for_jobs`] now.
    idle: AtomicUsize,
    state: std::sync::Mutex<HandOffState>,
}

#[derive(Default)]
struct HandOffState {
    /// The lease this process's workers take jobs for (none before their first take).
    lease: Option<Duration>,
    jobs: Vec<Job>,
    /// Claims on their way that will hand their job over.
    reserved: usize,
}

/// A claim's right to hand its job over; given back when dropped unfilled.
struct Reservation<'a> {
    handoff: &'a HandOff,
    lease: Duration,
}

/// Counts an idle worker while it waits.
struct Idle<'a>(&'a AtomicUsize);

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HandOff {
    fn state(&self) -> std::sync::MutexGuard<'_, HandOffState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn idle(&self) -> Idle<'_> {
        self.idle.fetch_add(1, Ordering::AcqRel);
        Idle(&self.idle)
    }

    /// A hand-off, if more workers wait idle than jobs are already on their way to them.
    fn reserve(&self) -> Option<Reservation<'_>> {
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

    fn has_jobs(&self) -> bool {
        !self.state().jobs.is_empty()
    }

    /// Every handed-over job not yet taken, once no claim is on its way to hand one over
    /// (waiting at most `limit` for those).
    async fn drain(&self, limit: Duration) -> Vec<Job> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.state().reserved > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        std::mem::take(&mut self.state().jobs)
    }

    /// Up to `max` handed-over jobs; remembers `lease` for the hand-offs to come.
    fn take(&self, max: usize, lease: Duration) -> Vec<Job> {
        let mut state = self.state();
        state.lease = Some(lease);
        let n = max.min(state.jobs.len());
        state.jobs.drain(..n).collect()
    }
}

impl Reservation<'_> {
    fn fill(self, job: Job) {
        self.handoff.state().jobs.push(job);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut state = self.handoff.state();
        state.reserved = state.reserved.saturating_sub(1);
    }
}

/// Claims made while [`CLAIM_SENDERS`] claim statements are in flight wait for one of them to
/// end, then go together in one statement.
///
/// A claim is a statement and a durable commit, and on a busy front the cost of a statement
/// (round trip, commit, the server's work per statement) outweighs that of a row: pgbench ran
/// these statements at 53-57k claims/s with eight claims a statement, against 10-11k with
/// one (`scripts/bench-postgres-sql 6 3 8 claim claim8`, BENCHMARKS.md). A claim made while
/// fewer statements are in flight and none waits goes at once, alone, from its caller's own
/// task: under light load a claim costs what it did before. A statement carries up to
/// [`CLAIMS_PER_STATEMENT`] distinct keys in key order, so two statements never wait on each
/// other's rows (a deadlock); a second claim of a key already in it waits for the next.
/// Groups are sent by a task of their own, so a caller that gives up (its client went away)
/// never takes the others' claims with it.
struct ClaimQueue {
    state: std::sync::Mutex<ClaimQueueState>,
    pool: Pool,
    url: String,
    /// The single-row claim and the grouped one.
    single: String,
    grouped: String,
    limit: Duration,
    /// [`CLAIM_SENDERS`], or no limit when claims are not grouped.
    max_senders: usize,
    /// Claim statements sent, and grouped ones the server refused.
    statements: AtomicU64,
    refused: AtomicU64,
}

#[derive(Default)]
struct ClaimQueueState {
    waiting: Vec<QueuedClaim>,
    /// Claim statements in flight.
    senders: usize,
}

/// A claim's parameters, as the claim statements take them.
struct ClaimParams {
    key: Key,
    uri: String,
    priority: i16,
    now: i64,
    request: String,
    expect: Option<i64>,
}

/// A claim waiting for a statement, and where its row goes (`None`: the entry was there).
struct QueuedClaim {
    params: ClaimParams,
    reply: tokio::sync::oneshot::Sender<Result<Option<Row>, StoreError>>,
}

/// Claim statements in flight at once; claims made meanwhile wait and go together.
const CLAIM_SENDERS: usize = 2;

/// Most claims in one statement.
const CLAIMS_PER_STATEMENT: usize = 64;

/// Why a claim statement failed: the server refused it (a group is then claimed row by row,
/// so one claim cannot fail the others), or the database was not reached in time.
enum SendError {
    Refused(StoreError),
    Down(StoreError),
}

impl SendError {
    fn into_inner(self) -> StoreError {
        match self {
            Self::Refused(e) | Self::Down(e) => e,
        }
    }
}

impl ClaimQueueState {
    /// The next statement's claims: up to [`CLAIMS_PER_STATEMENT`] distinct keys, in key
    /// order. Claims whose caller gave up are left out.
    fn next_group(&mut self) -> Vec<QueuedClaim> {
        let mut group: Vec<QueuedClaim> = Vec::new();
        let mut rest = Vec::new();
        for claim in self.waiting.drain(..) {
            if claim.reply.is_closed() {
                continue;
            }
            if group.len() < CLAIMS_PER_STATEMENT
                && group.iter().all(|c| c.params.key != claim.params.key)
            {
                group.push(claim);
            } else {
                rest.push(claim);
            }
        }
        self.waiting = rest;
        group.sort_by_key(|c| c.params.key);
        group
    }
}

/// A caller's own claim statement in flight; when it ends (or the caller gives up), the
/// claims that waited meanwhile go on in a task of their own.
struct Slot<'a>(&'a Arc<ClaimQueue>);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        let runtime = tokio::runtime::Handle::try_current();
        match runtime {
            Ok(runtime) if !state.waiting.is_empty() => {
                let group = state.next_group();
                runtime.spawn(Arc::clone(self.0).send(group));
            }
            _ => state.senders -= 1,
        }
    }
}

impl ClaimQueue {
    fn state(&self) -> std::sync::MutexGuard<'_, ClaimQueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the claim, alone or with others; the row it won, or `None` when the entry was
    /// there.
    async fn claim(self: &Arc<Self>, params: ClaimParams) -> Result<Option<Row>, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        enum Route {
            Alone(ClaimParams),
            Wait,
            Send(Vec<QueuedClaim>),
        }
        let route = {
            let mut state = self.state();
            if state.senders >= self.max_senders {
                state.waiting.push(QueuedClaim { params, reply });
                Route::Wait
            } else if state.waiting.is_empty() {
                state.senders += 1;
                Route::Alone(params)
            } else {
                state.waiting.push(QueuedClaim { params, reply });
                state.senders += 1;
                Route::Send(state.next_group())
            }
        };
        match route {
            // Sent from here, at once.
            Route::Alone(params) => {
                let _slot = Slot(self);
                let rows = self
                    .send_one(&params)
                    .await
                    .map_err(SendError::into_inner)?;
                return Ok(rows.into_iter().next());
            }
            Route::Send(group) => {
                tokio::spawn(Arc::clone(self).send(group));
            }
            Route::Wait => {}
        }
        // The wait for a statement in flight and this claim's own, bounded as any call is: a
        // database that hangs costs a waiting claim no more than one that goes alone.
        let limit = self.limit;
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(StoreError::Unavailable(
                "the claim was dropped before it was sent".into(),
            )),
            Err(_) => Err(StoreError::Timeout(limit)),
        }
    }

    /// Sends `group`, then whatever waited meanwhile, until nothing waits.
    async fn send(self: Arc<Self>, mut group: Vec<QueuedClaim>) {
        loop {
            self.send_group(group).await;
            let mut state = self.state();
            if state.waiting.is_empty() {
                state.senders -= 1;
                return;
            }
            group = state.next_group();
        }
    }

    async fn send_group(&self, group: Vec<QueuedClaim>) {
        if group.len() > 1 {
            match self.send_grouped(&group).await {
                Ok(rows) => {
                    let mut rows: Vec<Option<Row>> = rows.into_iter().map(Some).collect();
                    for claim in group {
                        let key = claim.params.key;
                        let won = rows.iter_mut().find(|row| {
                            row.as_ref().is_some_and(|row| {
                                row.try_get::<_, &[u8]>("key")
                                    .is_ok_and(|k| k == key.as_bytes().as_slice())
                            })
                        });
                        let _ = claim.reply.send(Ok(won.and_then(Option::take)));
                    }
                    return;
                }
                Err(SendError::Down(e)) => {
                    for claim in group {
                        let _ = claim.reply.send(Err(e.clone()));
                    }
                    return;
                }
                Err(SendError::Refused(e)) => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        error = %e,
                        claims = group.len(),
                        "a grouped claim was refused; claiming one by one"
                    );
                }
            }
        }
        for claim in group {
            let outcome = self
                .send_one(&claim.params)
                .await
                .map(|rows| rows.into_iter().next())
                .map_err(SendError::into_inner);
            let _ = claim.reply.send(outcome);
        }
    }

    async fn send_one(&self, c: &ClaimParams) -> Result<Vec<Row>, SendError> {
        let key = c.key.as_bytes().as_slice();
        self.query(
            &self.single,
            &[&key, &c.uri, &c.priority, &c.now, &c.request, &c.expect],
        )
        .await
    }

    async fn send_grouped(&self, group: &[QueuedClaim]) -> Result<Vec<Row>, SendError> {
        let claims = || group.iter().map(|c| &c.params);
        let keys: Vec<&[u8]> = claims().map(|c| c.key.as_bytes().as_slice()).collect();
        let uris: Vec<&str> = claims().map(|c| c.uri.as_str()).collect();
        let priorities: Vec<i16> = claims().map(|c| c.priority).collect();
        let nows: Vec<i64> = claims().map(|c| c.now).collect();
        let requests: Vec<&str> = claims().map(|c| c.request.as_str()).collect();
        let expects: Vec<Option<i64>> = claims().map(|c| c.expect).collect();
        self.query(
            &self.grouped,
            &[&keys, &uris, &priorities, &nows, &requests, &expects],
        )
        .await
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, SendError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        pooled_query(&self.pool, &self.url, self.limit, sql, params).await
    }
}

/// Runs `f` with a connection from `pool`, under `limit`, pool wait included.
async fn pooled<T, F, Fut>(pool: &Pool, url: &str, limit: Duration, f: F) -> Result<T, SendError>
where
    F: FnOnce(deadpool_postgres::Object) -> Fut,
    Fut: std::future::Future<Output = Result<T, SendError>>,
{
    let call = async {
        let client = pool
            .get()
            .await
            .map_err(|e| SendError::Down(unavailable(format!("{}: {e}", redact(url)))))?;
        f(client).await
    };
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or(Err(SendError::Down(StoreError::Timeout(limit))))
}

/// One prepared (and cached) statement on a pooled connection, under `limit`, pool wait
/// included. A server's refusal and an unreachable database are told apart.
async fn pooled_query(
    pool: &Pool,
    url: &str,
    limit: Duration,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Row>, SendError> {
    pooled(pool, url, limit, |client| async move {
        let failed = |e: tokio_postgres::Error| {
            if e.as_db_error().is_some() {
                SendError::Refused(db(e))
            } else {
                SendError::Down(db(e))
            }
        };
        let statement = client.prepare_cached(sql).await.map_err(failed)?;
        client.query(&statement, params).await.map_err(failed)
    })
    .await
}

/// The PostgreSQL store. See the [module docs](self).
pub struct PgStore {
    pool: Pool,
    clock: Arc<dyn Clock>,
    config: PgConfig,
    sql: Sql,
    wakeups: Arc<Wakeups>,
    work: Arc<JobSignal>,
    handoff: HandOff,
    claims: Arc<ClaimQueue>,
    listener: tokio::task::JoinHandle<()>,
    announcer: Arc<Announcer>,
    announcing: tokio::task::JoinHandle<()>,
    reaping: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &redact(&self.config.url))
            .field("schema", &self.config.schema)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.announcing.abort();
        self.reaping.abort();
    }
}

pub use super::redact;

/// Checks that `url` is a PostgreSQL connection URL, without connecting; the error says why
/// not (and never shows the password).
pub fn check_url(url: &str) -> Result<(), String> {
    url.parse::<tokio_postgres::Config>()
        .map(|_| ())
        .map_err(|e| format!("{} is not a valid PostgreSQL URL: {e}", redact(url)))
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A database error with the server's own message (`db error` alone says nothing).
fn db(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(server) => StoreError::Unavailable(format!("postgres: {}", server.message())),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            StoreError::Unavailable(text)
        }
    }
}

impl PgStore {
    /// Wakes this process's waiters of a stored result, handing them the entry exactly as a
    /// lookup would read it right after (`row` holds the `uri` and `version` the completion
    /// wrote), unless it has already expired: then they look, as a lookup returns nothing.
    fn wake_stored(&self, key: Key, row: &Row, content: &Content) {
        let uri = row.try_get::<_, String>("uri").ok();
        let version = row.try_get::<_, i64>("version").ok();
        match (uri, version.and_then(|v| u64::try_from(v).ok())) {
            (Some(uri), Some(version)) if content.expires_at() > self.now() => {
                self.wakeups.wake_settled(Entry {
                    key,
                    uri: uri.into(),
                    version,
                    content: Some(content.clone()),
                    status: Status::Idle,
                });
            }
            _ => self.wakeups.wake(&key),
        }
    }

    /// Connects, applies the schema migrations (safe when several processes start at once)
    /// and starts the notification listener.
    pub async fn connect(config: PgConfig) -> Result<Self, StoreError> {
        Self::connect_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`connect`](Self::connect) with a clock of the caller's (tests).
    pub async fn connect_with_clock(
        config: PgConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        if !valid_schema(&config.schema) {
            return Err(unavailable(format!(
                "schema name {:?} must be lower-case letters, digits and '_'",
                config.schema
            )));
        }
        let pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| unavailable(format!("{}: {e}", redact(&config.url))))?;
        let manager = Manager::from_config(
            pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // Last in, first out: the connection just given back serves the next call, so a
        // steady load keeps few server processes busy and the rest idle (PgBouncer's default
        // for the same reason). Round-robin over a pool larger than the load spread each
        // job's statements over all its processes, and measured 5-28% slower on the miss
        // path of a front that also works (BENCHMARKS.md).
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .queue_mode(QueueMode::Lifo)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.call_timeout))
            .create_timeout(Some(config.call_timeout))
            .recycle_timeout(Some(config.call_timeout))
            .build()
            .map_err(unavailable)?;
        let sql = Sql::new(&config.schema);
        let store_wakeups = Arc::new(Wakeups::default());
        let work = Arc::new(JobSignal::default());
        // This process's mark on its jobs notifications, so its listener leaves them out.
        let origin = format!("{:016x}", rand::random::<u64>());
        let listener = if config.listen {
            tokio::spawn(listen(
                pg,
                config.url.clone(),
                sql.channels(),
                Arc::clone(&store_wakeups),
                Arc::clone(&work),
                origin.clone(),
            ))
        } else {
            tokio::spawn(async {})
        };
        let announcer = Arc::new(Announcer::default());
        let announcing = if config.listen {
            tokio::spawn(Arc::clone(&announcer).run(pool.clone(), sql.channels(), origin.clone()))
        } else {
            tokio::spawn(async {})
        };
        let reaping = tokio::spawn(close_idle(pool.clone(), config.idle_timeout));
        let claims = Arc::new(ClaimQueue {
            state: std::sync::Mutex::default(),
            pool: pool.clone(),
            url: config.url.clone(),
            single: sql.claim.clone(),
            grouped: sql.claim_group.clone(),
            limit: config.call_timeout,
            max_senders: if config.group_claims {
                CLAIM_SENDERS
            } else {
                usize::MAX
            },
            statements: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let store = Self {
            pool,
            clock,
            config,
            sql,
            wakeups: store_wakeups,
            work,
            handoff: HandOff::default(),
            claims,
            listener,
            announcer,
            announcing,
            reaping,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The settings this store was made with.
    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    /// Creates or upgrades the schema. Serialized across processes by a transaction-scoped
    /// advisory lock (only here: claims rely on the primary key, never on advisory locks).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let sql = self.sql.migration();
        let schema = self.config.schema.clone();
        self.run(|mut client| async move {
            let tx = client.transaction().await.map_err(db)?;
            // Every start re-runs the idempotent migrations: their "already exists, skipping"
            // notices are not news for the operator's log.
            tx.batch_execute("SET LOCAL client_min_messages = warning")
                .await
                .map_err(db)?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                &[&format!("errand:{schema}")],
            )
            .await
            .map_err(db)?;
            tx.batch_execute(&sql).await.map_err(db)?;
            tx.commit().await.map_err(db)
        })
        .await
    }

    /// Drops this store's schema and everything in it (tests, retired tenants).
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.config.schema);
        self.run(|client| async move { client.batch_execute(&sql).await.map_err(db) })
            .await
    }

    /// Runs `f` with a pooled connection under the call timeout.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let limit = self.config.call_timeout;
        pooled(&self.pool, &self.config.url, limit, |client| async move {
            f(client).await.map_err(SendError::Down)
        })
        .await
        .map_err(SendError::into_inner)
    }

    /// One prepared (and cached) statement returning rows.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let limit = self.config.call_timeout;
        pooled_query(&self.pool, &self.config.url, limit, sql, params)
            .await
            .map_err(SendError::into_inner)
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// Closes the pool's connections left unused for `idle`, looking every half of it.
async fn close_idle(pool: Pool, idle: Duration) {
    let every = (idle / 2).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        let closed = pool.retain(|_, use_| use_.last_used() < idle).removed.len();
        if closed > 0 {
            tracing::debug!(closed, "closed idle PostgreSQL connections");
        }
    }
}

fn valid_schema(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Keeps one `LISTEN` connection, reconnecting with backoff; fans notifications out.
async fn listen(
    pg: tokio_postgres::Config,
    url: String,
    (done, jobs): (String, String),
    wakeups: Arc<Wakeups>,
    work: Arc<JobSignal>,
    origin: String,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match pg.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(n))) => {
                                if tx
                                    .send((n.channel().to_owned(), n.payload().to_owned()))
                                    .is_err()
                                {
                                    break;
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => break,
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {done}; LISTEN {jobs}"))
                    .await
                    .is_ok()
                {
                    backoff = Duration::from_millis(100);
                    // Anything may have happened while no one listened.
                    wakeups.listening(true);
                    work.listening(true);
                    while let Some((channel, payload)) = rx.recv().await {
                        if channel == jobs {
                            // This process's own claims reached its workers directly.
                            if payload != origin {
                                work.announce();
                            }
                        } else {
                            for key in payload.split(',').filter_map(Key::parse) {
                                wakeups.wake(&key);
                            }
                        }
                    }
                    wakeups.listening(false);
                    work.listening(false);
                }
                driver.abort();
                tracing::warn!(url = %redact(&url), "notification connection lost; reconnecting");
            }
            Err(e) => {
                tracing::warn!(url = %redact(&url), error = %e, "cannot open the notification connection");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Every statement, with the schema spliced in once.
struct Sql {
    channels: (String, String),
    schema: String,
    lookup: String,
    claim: String,
    claim_leased: String,
    claim_group: String,
    find: String,
    take: String,
    take_lapsed: String,
    heartbeat: String,
    hand_back: String,
    complete_store: String,
    complete_fail: String,
    complete_pass: String,
    complete_retry: String,
    complete_store_many: String,
    take_once: String,
    stats: String,
}

/// The columns an [`Entry`] is read from, in [`entry_from_row`]'s order.
const ENTRY_COLUMNS: &str = "key, uri, version, pending, job_id, priority, created_at, run_at, \
     attempts, lease_until, last_error, after_failure, \
     c_status, c_headers, c_body, c_generated_at, c_fresh_until, c_stale_until, c_sie_until, \
     c_job_millis, tags, v_kind, v_until, v_status, v_headers, v_body, v_text, v_attempts, v_at, \
     CASE WHEN v_kind = 1 THEN request END AS request";

/// What a claim returns: the row's new version and job id, whether the entry was `failed`
/// before, and the copy it keeps (a stale copy the claim revalidates); the rest of the pending
/// entry is what the claim wrote ([`claimed_entry`]).
const CLAIM_COLUMNS: &str = "version, job_id, after_failure, c_status, c_headers, c_body, \
     c_generated_at, c_fresh_until, c_stale_until, c_sie_until, c_job_millis, tags";

/// What a claim that meets a row it may take over sets: the row becomes the pending entry the
/// insert would have made (its copy kept).
const CLAIM_UPDATE: &str = "uri = EXCLUDED.uri, version = EXCLUDED.version, pending = true,
     job_id = EXCLUDED.job_id, priority = EXCLUDED.priority,
     created_at = EXCLUDED.created_at, run_at = EXCLUDED.run_at,
     attempts = EXCLUDED.attempts, lease_token = EXCLUDED.lease_token,
     lease_until = EXCLUDED.lease_until, last_error = NULL,
     request = EXCLUDED.request, after_failure = (e.v_kind = 1), expires_at = NULL";

/// The claim: `$1` key, `$2` uri, `$3` priority, `$4` now, `$5` request, `$6` expected
/// version. `leased` (a hand-off to an idle worker of this process) also leases the new job
/// in the same statement, its first attempt, until `$7`, and returns the lease token.
fn claim_sql(t: &str, ids: &str, leased: bool) -> String {
    let (token, until, attempts, returning) = if leased {
        (format!("nextval('{ids}')"), "$7", 1, ", lease_token")
    } else {
        ("NULL".to_owned(), "NULL", 0, "")
    };
    format!(
        "INSERT INTO {t} AS e (key, uri, version, pending, job_id, priority, created_at, run_at,
                               attempts, lease_token, lease_until, request, after_failure,
                               expires_at)
         VALUES ($1, $2, nextval('{ids}'), true, nextval('{ids}'), $3, $4, $4, {attempts},
                 {token}, {until}::bigint, $5, false, NULL)
         ON CONFLICT (key) DO UPDATE SET {CLAIM_UPDATE}
         WHERE NOT e.pending AND (e.expires_at <= $4 OR e.version = $6)
         RETURNING {CLAIM_COLUMNS}{returning}"
    )
}

/// Claims of distinct keys in one statement, from arrays: `$1` keys, `$2` uris, `$3`
/// priorities, `$4` nows, `$5` requests, `$6` expected versions. The same insert or update,
/// row by row, as [`claim_sql`]'s unleased claim; each returned row carries its key. Rows
/// are inserted in key order (see [`ClaimQueue`]).
fn claim_group_sql(t: &str, ids: &str) -> String {
    format!(
        "WITH input AS (
           SELECT * FROM unnest($1::bytea[], $2::text[], $3::smallint[], $4::bigint[],
                                $5::text[], $6::bigint[])
             AS i(key, uri, priority, now, request, expect))
         INSERT INTO {t} AS e (key, uri, version, pending, job_id, priority, created_at, run_at,
                               attempts, lease_token, lease_until, request, after_failure,
                               expires_at)
         SELECT i.key, i.uri, nextval('{ids}'), true, nextval('{ids}'), i.priority, i.now, i.now,
                0, NULL, NULL, i.request, false, NULL
           FROM input i ORDER BY i.key
         ON CONFLICT (key) DO UPDATE SET {CLAIM_UPDATE}
         WHERE NOT e.pending
           AND (e.expires_at <= EXCLUDED.created_at
                OR e.version = (SELECT x.expect FROM input x WHERE x.key = e.key))
         RETURNING key, {CLAIM_COLUMNS}"
    )
}

/// The take: `$1` now, `$2` max, `$3` lease until. `lapsed` picks jobs whose lease ran out,
/// oldest lease first (redeliveries); otherwise ready jobs by priority then run time. Each is
/// served by its own partial index.
fn take_sql(t: &str, ids: &str, lapsed: bool) -> String {
    let (filter, order) = if lapsed {
        (
            "lease_token IS NOT NULL AND lease_until <= $1",
            "lease_until",
        )
    } else {
        ("lease_token IS NULL AND run_at <= $1", "priority, run_at")
    };
    format!(
        "WITH picked AS (
           SELECT key FROM {t} WHERE pending AND {filter}
           ORDER BY {order} LIMIT $2 FOR UPDATE SKIP LOCKED)
         UPDATE {t} e SET lease_token = nextval('{ids}'), lease_until = $3,
                          attempts = e.attempts + 1
         FROM picked WHERE e.key = picked.key
         RETURNING e.key, e.job_id, e.lease_token, e.lease_until, e.request, e.priority,
                   e.attempts, e.created_at, e.run_at"
    )
}

impl Sql {
    fn new(schema: &str) -> Self {
        let t = format!("{schema}.entries");
        let ids = format!("{schema}.ids");
        let done = format!("{schema}_done");
        let jobs = format!("{schema}_jobs");
        Self {
            lookup: format!(
                "SELECT {ENTRY_COLUMNS} FROM {t} WHERE key = $1 AND (pending OR expires_at > $2)"
            ),
            claim: claim_sql(&t, &ids, false),
            claim_leased: claim_sql(&t, &ids, true),
            claim_group: claim_group_sql(&t, &ids),
            find: format!("SELECT {ENTRY_COLUMNS} FROM {t} WHERE key = $1"),
            take: take_sql(&t, &ids, false),
            take_lapsed: take_sql(&t, &ids, true),
            heartbeat: format!(
                "UPDATE {t} SET lease_until = $4
                 WHERE key = $1 AND pending AND job_id = $2 AND lease_token = $3
                 RETURNING lease_until"
            ),
            // A handed-over job no worker started: ready again, as if never taken.
            hand_back: format!(
                "UPDATE {t} SET lease_token = NULL, lease_until = NULL,
                   attempts = GREATEST(attempts - 1, 0)
                 WHERE key = $1 AND pending AND job_id = $2 AND lease_token = $3
                 RETURNING key"
            ),
            // $1 key, $2 job, $3 token, $4.. content
            complete_store: format!(
                "UPDATE {t} SET pending = false, job_id = NULL, priority = NULL,
                     lease_token = NULL, lease_until = NULL, request = NULL, last_error = NULL,
                     attempts = 0, after_failure = false, version = nextval('{ids}'),
                     c_status = $4, c_headers = $5, c_body = $6, c_generated_at = $7,
                     c_fresh_until = $8, c_stale_until = $9, c_sie_until = $10,
                     c_job_millis = $11, tags = $12,
                     v_kind = 0, v_until = NULL, v_status = NULL, v_headers = NULL, v_body = NULL,
                     v_text = NULL, v_attempts = NULL, v_at = NULL,
                     expires_at = GREATEST($8::bigint, $9::bigint, $10::bigint)
                   WHERE key = $1 AND pending AND job_id = $2 AND lease_token = $3
                   RETURNING uri, version"
            ),
            // The request stays with the failure, so an operator can retry it.
            complete_fail: format!(
                "UPDATE {t} SET pending = false, job_id = NULL, priority = NULL,
                     lease_token = NULL, lease_until = NULL, last_error = NULL,
                     attempts = 0, after_failure = false, version = nextval('{ids}'),
                     v_kind = 1, v_until = $4, v_status = $5, v_headers = $6, v_body = $7,
                     v_text = $8, v_attempts = $9, v_at = $10,
                     expires_at = GREATEST(COALESCE(c_fresh_until, 0), COALESCE(c_stale_until, 0),
                                           COALESCE(c_sie_until, 0), $4::bigint)
                   WHERE key = $1 AND pending AND job_id = $2 AND lease_token = $3
                   RETURNING key"
            ),
            complete_pass: format!(
                "UPDATE {t} SET pending = false, job_id = NULL, priority = NULL,
                     lease_token = NULL, lease_until = NULL, request = NULL, last_error = NULL,
                     attempts = 0, after_failure = false, version = nextval('{ids}'),
                     c_status = NULL, c_headers = NULL, c_body = NULL, c_generated_at = NULL,
                     c_fresh_until = NULL, c_stale_until = NULL, c_sie_until = NULL,
                     c_job_millis = NULL, tags = '{{}}',
                     v_kind = 2, v_until = $4, v_status = $5, v_headers = $6, v_body = $7,
                     v_text = $8, v_attempts = NULL, v_at = NULL, expires_at = $4
                   WHERE key = $1 AND pending AND job_id = $2 AND lease_token = $3
                   RETURNING key"
            ),
            // Many stored results in one statement: the same fenced update as complete_store,
            // row by row from arrays. Tags travel joined by U+001F, which no header can hold.
            // Each row is found by its own probe of the primary key (the LIMIT keeps the
            // planner from merging the probes into one scan of the table, a plan it would
            // keep for the connection's life if it first planned while the table was small),
            // then updated by its row id. A row updated meanwhile (a last heartbeat) is left
            // out, and the caller completes it again by key.
            complete_store_many: format!(
                "WITH input AS (
                   SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bigint[], $4::smallint[],
                                        $5::bytea[], $6::bytea[], $7::bigint[], $8::bigint[],
                                        $9::bigint[], $10::bigint[], $11::bigint[], $12::text[])
                     AS i(key, job_id, token, status, headers, body, generated_at, fresh_until,
                          stale_until, sie_until, job_millis, tags)),
                 target AS (
                   SELECT i.*, found.row_id FROM input i
                   CROSS JOIN LATERAL (
                     SELECT ctid AS row_id FROM {t} x
                     WHERE x.key = i.key AND x.pending AND x.job_id = i.job_id
                       AND x.lease_token = i.token
                     LIMIT 1) found)
                 UPDATE {t} e SET pending = false, job_id = NULL, priority = NULL,
                     lease_token = NULL, lease_until = NULL, request = NULL, last_error = NULL,
                     attempts = 0, after_failure = false, version = nextval('{ids}'),
                     c_status = i.status, c_headers = i.headers, c_body = i.body,
                     c_generated_at = i.generated_at, c_fresh_until = i.fresh_until,
                     c_stale_until = i.stale_until, c_sie_until = i.sie_until,
                     c_job_millis = i.job_millis,
                     tags = CASE WHEN i.tags = '' THEN '{{}}'::text[]
                                 ELSE string_to_array(i.tags, E'\\x1f') END,
                     v_kind = 0, v_until = NULL, v_status = NULL, v_headers = NULL, v_body = NULL,
                     v_text = NULL, v_attempts = NULL, v_at = NULL,
                     expires_at = GREATEST(i.fresh_until, i.stale_until, i.sie_until)
                   FROM target i
                   WHERE e.ctid = i.row_id
                 RETURNING e.key, e.uri, e.version"
            ),
            complete_retry: format!(
                "UPDATE {t} SET lease_token = NULL, lease_until = NULL, run_at = $4,
                   last_error = $5, version = nextval('{ids}')
                 WHERE key = $1 AND pending AND job_id = $2 AND lease_token = $3
                 RETURNING key"
            ),
            take_once: format!(
                "WITH old AS (
                   SELECT key, v_status, v_headers, v_body FROM {t}
                   WHERE key = $1 AND NOT pending AND v_kind = 2 AND v_status IS NOT NULL
                     AND v_until > $2
                   FOR UPDATE)
                 UPDATE {t} e SET v_status = NULL, v_headers = NULL, v_body = NULL,
                                  version = nextval('{ids}')
                 FROM old WHERE e.key = old.key
                 RETURNING old.v_status, old.v_headers, old.v_body"
            ),
            stats: format!(
                "SELECT
                   count(*) FILTER (WHERE NOT pending AND v_kind = 2 AND v_until > $1) AS pass,
                   count(*) FILTER (WHERE NOT pending AND v_kind = 1 AND v_until > $1) AS failed,
                   count(*) FILTER (WHERE NOT pending AND NOT (v_kind IN (1, 2) AND v_until > $1)
                                    AND c_fresh_until > $1) AS fresh,
                   count(*) FILTER (WHERE NOT pending AND NOT (v_kind IN (1, 2) AND v_until > $1)
                                    AND NOT COALESCE(c_fresh_until > $1, false)) AS stale,
                   count(*) FILTER (WHERE pending) AS pending,
                   count(*) FILTER (WHERE pending AND ((lease_token IS NULL AND run_at <= $1)
                                    OR lease_until <= $1)) AS ready,
                   count(*) FILTER (WHERE pending AND lease_token IS NULL AND run_at > $1)
                     AS scheduled,
                   count(*) FILTER (WHERE pending AND lease_until > $1) AS running,
                   COALESCE(sum(COALESCE(octet_length(c_body), 0) + COALESCE(octet_length(c_headers), 0)
                                + COALESCE(octet_length(v_body), 0) + length(uri) + 160)
                            FILTER (WHERE NOT pending), 0)::bigint AS bytes,
                   COALESCE(max($1 - run_at) FILTER (WHERE pending AND lease_token IS NULL
                                                     AND run_at <= $1), 0)::bigint AS oldest
                 FROM {t} WHERE pending OR expires_at > $1"
            ),
            channels: (done, jobs),
            schema: schema.to_owned(),
        }
    }

    fn channels(&self) -> (String, String) {
        self.channels.clone()
    }

    fn migration(&self) -> String {
        let s = &self.schema;
        format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.migrations (version integer PRIMARY KEY);
             CREATE SEQUENCE IF NOT EXISTS {s}.ids;
             CREATE TABLE IF NOT EXISTS {s}.entries (
               key            bytea PRIMARY KEY,
               uri            text NOT NULL,
               version        bigint NOT NULL,
               pending        boolean NOT NULL,
               job_id         bigint,
               priority       smallint,
               created_at     bigint,
               run_at         bigint,
               attempts       integer NOT NULL DEFAULT 0,
               lease_token    bigint,
               lease_until    bigint,
               last_error     text,
               after_failure  boolean NOT NULL DEFAULT false,
               request        text,
               c_status       smallint,
               c_headers      bytea,
               c_body         bytea,
               c_generated_at bigint,
               c_fresh_until  bigint,
               c_stale_until  bigint,
               c_sie_until    bigint,
               c_job_millis   bigint,
               tags           text[] NOT NULL DEFAULT '{{}}',
               v_kind         smallint NOT NULL DEFAULT 0,
               v_until        bigint,
               v_status       smallint,
               v_headers      bytea,
               v_body         bytea,
               v_text         text,
               v_attempts     integer,
               v_at           bigint,
               expires_at     bigint
             );
             CREATE INDEX IF NOT EXISTS entries_ready ON {s}.entries (priority, run_at)
               WHERE pending AND lease_token IS NULL;
             CREATE INDEX IF NOT EXISTS entries_leased ON {s}.entries (lease_until)
               WHERE pending AND lease_token IS NOT NULL;
             CREATE INDEX IF NOT EXISTS entries_expiry ON {s}.entries (expires_at)
               WHERE NOT pending;
             INSERT INTO {s}.migrations (version) VALUES (1) ON CONFLICT DO NOTHING;
             -- 2: purges by URI look only at rows with something to purge (settled, or
             -- pending with a stale copy), so a new job's claim and take skip this index.
             DROP INDEX IF EXISTS {s}.entries_uri;
             CREATE INDEX IF NOT EXISTS entries_uri_kept ON {s}.entries (uri text_pattern_ops)
               WHERE NOT pending OR c_status IS NOT NULL;
             INSERT INTO {s}.migrations (version) VALUES (2) ON CONFLICT DO NOTHING;"
        )
    }
}

fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

fn ts(v: i64) -> Timestamp {
    Timestamp(u64::try_from(v).unwrap_or(0))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn response(
    status: Option<i16>,
    headers: Option<Vec<u8>>,
    body: Option<Vec<u8>>,
) -> Result<Option<Arc<StoredResponse>>, StoreError> {
    let Some(status) = status else {
        return Ok(None);
    };
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| corrupt("status"))?;
    let headers = decode_headers(&headers.unwrap_or_default()).ok_or_else(|| corrupt("headers"))?;
    Ok(Some(Arc::new(StoredResponse {
        status,
        headers,
        body: Bytes::from(body.unwrap_or_default()),
    })))
}

fn priority(v: i16) -> Priority {
    if v == Priority::Refresh as i16 {
        Priority::Refresh
    } else {
        Priority::Miss
    }
}

fn key_of(bytes: &[u8]) -> Result<Key, StoreError> {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Key::parse(&hex).ok_or_else(|| corrupt("key"))
}

/// Jobs from the rows of a take, each with its run time (to order them by).
fn jobs_of(rows: &[Row], redelivered: bool) -> Result<Vec<(i64, Job)>, StoreError> {
    let get = |e: tokio_postgres::Error| StoreError::Corrupt(e.to_string());
    let mut jobs = Vec::with_capacity(rows.len());
    for row in rows {
        let request: String = row.try_get("request").map_err(get)?;
        let request: RequestRecord =
            serde_json::from_str(&request).map_err(|e| corrupt(&e.to_string()))?;
        let run_at: i64 = row.try_get("run_at").map_err(get)?;
        jobs.push((
            run_at,
            Job {
                lease: LeaseToken {
                    key: key_of(row.try_get::<_, &[u8]>("key").map_err(get)?)?,
                    job: JobId(
                        u64::try_from(row.try_get::<_, i64>("job_id").map_err(get)?).unwrap_or(0),
                    ),
                    token: u64::try_from(row.try_get::<_, i64>("lease_token").map_err(get)?)
                        .unwrap_or(0),
                },
                lease_until: ts(row.try_get("lease_until").map_err(get)?),
                request,
                priority: priority(row.try_get("priority").map_err(get)?),
                attempt: u32::try_from(row.try_get::<_, i32>("attempts").map_err(get)?)
                    .unwrap_or(0),
                created_at: ts(row.try_get("created_at").map_err(get)?),
                redelivered,
            },
        ));
    }
    Ok(jobs)
}

/// The pending entry a claim made: what it wrote, with what it returned (the row's version,
/// job id and kept copy). `leased_until`: handed over to a worker of this process.
fn claimed_entry(
    claim: &Claim,
    now: Timestamp,
    leased_until: Option<Timestamp>,
    row: &Row,
) -> Result<Entry, StoreError> {
    let get = |e: tokio_postgres::Error| StoreError::Corrupt(e.to_string());
    let version: i64 = row.try_get("version").map_err(get)?;
    let job: i64 = row.try_get("job_id").map_err(get)?;
    let mut info = JobInfo::claimed(
        JobId(u64::try_from(job).unwrap_or(0)),
        claim.priority,
        now,
        row.try_get("after_failure").map_err(get)?,
    );
    if let Some(until) = leased_until {
        // Handed over: its first attempt is leased already.
        info.attempts = 1;
        info.lease_until = Some(until);
    }
    Ok(Entry {
        key: claim.key,
        uri: claim.uri.as_str().into(),
        version: u64::try_from(version).unwrap_or(0),
        content: content_from_row(row)?,
        status: Status::Pending(info),
    })
}

/// The stored copy in a row (`c_*` columns and tags), if it has one.
fn content_from_row(row: &Row) -> Result<Option<Content>, StoreError> {
    let get = |e: tokio_postgres::Error| StoreError::Corrupt(e.to_string());
    Ok(
        match response(
            row.try_get("c_status").map_err(get)?,
            row.try_get("c_headers").map_err(get)?,
            row.try_get("c_body").map_err(get)?,
        )? {
            Some(response) => Some(Content {
                response,
                generated_at: ts(row
                    .try_get::<_, Option<i64>>("c_generated_at")
                    .map_err(get)?
                    .unwrap_or(0)),
                fresh_until: ts(row
                    .try_get::<_, Option<i64>>("c_fresh_until")
                    .map_err(get)?
                    .unwrap_or(0)),
                stale_until: ts(row
                    .try_get::<_, Option<i64>>("c_stale_until")
                    .map_err(get)?
                    .unwrap_or(0)),
                stale_if_error_until: ts(row
                    .try_get::<_, Option<i64>>("c_sie_until")
                    .map_err(get)?
                    .unwrap_or(0)),
                tags: row.try_get("tags").map_err(get)?,
                job_millis: u64::try_from(
                    row.try_get::<_, Option<i64>>("c_job_millis")
                        .map_err(get)?
                        .unwrap_or(0),
                )
                .unwrap_or(0),
            }),
            None => None,
        },
    )
}

fn entry_from_row(row: &Row) -> Result<Entry, StoreError> {
    let get = |e: tokio_postgres::Error| StoreError::Corrupt(e.to_string());
    let key = key_of(row.try_get::<_, &[u8]>("key").map_err(get)?)?;
    let content = content_from_row(row)?;
    let status = if row.try_get::<_, bool>("pending").map_err(get)? {
        Status::Pending(JobInfo {
            id: JobId(
                u64::try_from(
                    row.try_get::<_, Option<i64>>("job_id")
                        .map_err(get)?
                        .unwrap_or(0),
                )
                .unwrap_or(0),
            ),
            priority: priority(
                row.try_get::<_, Option<i16>>("priority")
                    .map_err(get)?
                    .unwrap_or(0),
            ),
            created_at: ts(row
                .try_get::<_, Option<i64>>("created_at")
                .map_err(get)?
                .unwrap_or(0)),
            run_at: ts(row
                .try_get::<_, Option<i64>>("run_at")
                .map_err(get)?
                .unwrap_or(0)),
            attempts: u32::try_from(row.try_get::<_, i32>("attempts").map_err(get)?).unwrap_or(0),
            lease_until: row
                .try_get::<_, Option<i64>>("lease_until")
                .map_err(get)?
                .map(ts),
            last_error: row.try_get("last_error").map_err(get)?,
            after_failure: row.try_get("after_failure").map_err(get)?,
        })
    } else {
        let until = ts(row
            .try_get::<_, Option<i64>>("v_until")
            .map_err(get)?
            .unwrap_or(0));
        let verdict = response(
            row.try_get("v_status").map_err(get)?,
            row.try_get("v_headers").map_err(get)?,
            row.try_get("v_body").map_err(get)?,
        )?;
        let text: Option<String> = row.try_get("v_text").map_err(get)?;
        match row.try_get::<_, i16>("v_kind").map_err(get)? {
            1 => Status::Failed(Failure {
                until,
                response: verdict.ok_or_else(|| corrupt("failure without a response"))?,
                error: text.unwrap_or_default(),
                attempts: u32::try_from(
                    row.try_get::<_, Option<i32>>("v_attempts")
                        .map_err(get)?
                        .unwrap_or(0),
                )
                .unwrap_or(0),
                at: ts(row
                    .try_get::<_, Option<i64>>("v_at")
                    .map_err(get)?
                    .unwrap_or(0)),
                request: row
                    .try_get::<_, Option<String>>("request")
                    .map_err(get)?
                    .map(|r| serde_json::from_str(&r))
                    .transpose()
                    .map_err(|e| corrupt(&format!("failed request: {e}")))?,
            }),
            2 => Status::Pass(PassInfo {
                until,
                once: verdict,
                reason: text.unwrap_or_default(),
            }),
            _ => Status::Idle,
        }
    };
    Ok(Entry {
        key,
        uri: row.try_get::<_, String>("uri").map_err(get)?.into(),
        version: u64::try_from(row.try_get::<_, i64>("version").map_err(get)?).unwrap_or(0),
        content,
        status,
    })
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for PgStore {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    async fn lookup(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        let now = ms(self.now());
        let rows = self
            .query(&self.sql.lookup, &[&key.as_bytes().as_slice(), &now])
            .await?;
        rows.first().map(entry_from_row).transpose()
    }

    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
        let now = self.now();
        let now_ms = ms(now);
        let request = serde_json::to_string(&claim.request).map_err(|e| corrupt(&e.to_string()))?;
        let expect = claim.expect.map(i64_of);
        let key = claim.key.as_bytes().as_slice();
        let priority = claim.priority as i16;
        // A worker of this process is idle: lease it the job in this very statement.
        let mut handoff = self.handoff.reserve().map(|r| (ms(now.plus(r.lease)), r));
        // Twice at most: if the row the conflict found is pruned before we read it, the
        // second claim meets no conflict.
        for _ in 0..2 {
            let won = match &handoff {
                Some((until, _)) => self
                    .query(
                        &self.sql.claim_leased,
                        &[
                            &key, &claim.uri, &priority, &now_ms, &request, &expect, until,
                        ],
                    )
                    .await?
                    .into_iter()
                    .next(),
                // Alone, or with the claims made while others were on their way.
                None => {
                    self.claims
                        .claim(ClaimParams {
                            key: claim.key,
                            uri: claim.uri.clone(),
                            priority,
                            now: now_ms,
                            request: request.clone(),
                            expect,
                        })
                        .await?
                }
            };
            if let Some(row) = &won {
                let leased_until = handoff.as_ref().map(|(until, _)| ts(*until));
                let entry = claimed_entry(&claim, now, leased_until, row)?;
                if let Some((until, reservation)) = handoff.take() {
                    let get = |e: tokio_postgres::Error| StoreError::Corrupt(e.to_string());
                    let id: i64 = row.try_get("job_id").map_err(get)?;
                    let token: i64 = row.try_get("lease_token").map_err(get)?;
                    reservation.fill(Job {
                        lease: LeaseToken {
                            key: claim.key,
                            job: JobId(u64::try_from(id).unwrap_or(0)),
                            token: u64::try_from(token).unwrap_or(0),
                        },
                        lease_until: ts(until),
                        request: claim.request,
                        priority: claim.priority,
                        attempt: 1,
                        created_at: now,
                        redelivered: false,
                    });
                    // Only a worker of this process can run it: no one else to tell, and
                    // nothing new in the queue. One idle worker was counted for it.
                    self.work.wake.notify_one();
                } else {
                    // A worker of this process at once; those elsewhere through NOTIFY.
                    self.work.announce_one();
                    self.announcer.job();
                }
                return Ok(ClaimOutcome::Enqueued(entry));
            }
            let rows = self.query(&self.sql.find, &[&key]).await?;
            if let Some(row) = rows.first() {
                let entry = entry_from_row(row)?;
                // A lost claim's statement locked the row for a moment (ON CONFLICT DO
                // UPDATE locks the row it finds even when its WHERE changes nothing), and a
                // worker woken by the winning claim skips locked rows. Now that the lock is
                // gone, tell the workers again while the job waits for one.
                if entry
                    .job()
                    .is_some_and(|job| job.lease_until.is_none_or(|until| until <= now))
                {
                    self.work.announce();
                    self.announcer.job();
                }
                return Ok(ClaimOutcome::Exists(entry));
            }
        }
        Err(StoreError::Unavailable(
            "the entry kept changing during claim".into(),
        ))
    }

    async fn take(&self, max: usize, lease: Duration) -> Result<Vec<Job>, StoreError> {
        let handed = self.handoff.take(max, lease);
        if !handed.is_empty() {
            return Ok(handed);
        }
        let now = self.now();
        let until = ms(now.plus(lease));
        let mut jobs = Vec::new();
        // A lease running out announces nothing: look for lapsed ones once per recheck.
        if self.work.rescue_due(now, self.config.recheck) {
            let limit = i64::try_from(max).unwrap_or(i64::MAX);
            let rows = self
                .query(&self.sql.take_lapsed, &[&ms(now), &limit, &until])
                .await?;
            jobs = jobs_of(&rows, true)?;
        }
        let wanted = max - jobs.len();
        if wanted > 0 && !self.work.known_empty(now, self.config.recheck) {
            let seen = self.work.seen();
            let limit = i64::try_from(wanted).unwrap_or(i64::MAX);
            let rows = self
                .query(&self.sql.take, &[&ms(now), &limit, &until])
                .await?;
            self.work
                .drained((rows.len() < wanted).then_some((seen, now)));
            jobs.extend(jobs_of(&rows, false)?);
        }
        // UPDATE … RETURNING has no order; hand them out as picked.
        jobs.sort_by_key(|(run_at, job)| (job.priority, *run_at));
        Ok(jobs.into_iter().map(|(_, job)| job).collect())
    }

    async fn heartbeat(
        &self,
        lease: &LeaseToken,
        extend: Duration,
    ) -> Result<Timestamp, StoreError> {
        let until = ms(self.now().plus(extend));
        let rows = self
            .query(
                &self.sql.heartbeat,
                &[
                    &lease.key.as_bytes().as_slice(),
                    &i64_of(lease.job.0),
                    &i64_of(lease.token),
                    &until,
                ],
            )
            .await?;
        if rows.is_empty() {
            return Err(StoreError::LeaseLost);
        }
        Ok(ts(until))
    }

    async fn complete(&self, lease: &LeaseToken, completion: Completion) -> Result<(), StoreError> {
        let key = lease.key.as_bytes().as_slice();
        let (job, token) = (i64_of(lease.job.0), i64_of(lease.token));
        let rows = match &completion {
            Completion::Store(c) => {
                let r = &c.response;
                let status = i16::try_from(r.status.as_u16()).unwrap_or(0);
                let headers = encode_headers(&r.headers);
                let body: &[u8] = &r.body;
                let job_millis = i64_of(c.job_millis);
                self.query(
                    &self.sql.complete_store,
                    &[
                        &key,
                        &job,
                        &token,
                        &status,
                        &headers,
                        &body,
                        &ms(c.generated_at),
                        &ms(c.fresh_until),
                        &ms(c.stale_until),
                        &ms(c.stale_if_error_until),
                        &job_millis,
                        &c.tags,
                    ],
                )
                .await?
            }
            Completion::Fail(f) => {
                let r = &f.response;
                let status = i16::try_from(r.status.as_u16()).unwrap_or(0);
                let headers = encode_headers(&r.headers);
                let body: &[u8] = &r.body;
                let attempts = i32::try_from(f.attempts).unwrap_or(i32::MAX);
                self.query(
                    &self.sql.complete_fail,
                    &[
                        &key,
                        &job,
                        &token,
                        &ms(f.until),
                        &status,
                        &headers,
                        &body,
                        &f.error,
                        &attempts,
                        &ms(f.at),
                    ],
                )
                .await?
            }
            Completion::Pass(p) => {
                let status = p
                    .once
                    .as_ref()
                    .map(|r| i16::try_from(r.status.as_u16()).unwrap_or(0));
                let headers = p.once.as_ref().map(|r| encode_headers(&r.headers));
                let body = p.once.as_ref().map(|r| r.body.to_vec());
                self.query(
                    &self.sql.complete_pass,
                    &[
                        &key,
                        &job,
                        &token,
                        &ms(p.until),
                        &status,
                        &headers,
                        &body,
                        &p.reason,
                    ],
                )
                .await?
            }
            Completion::Retry { run_at, error } => {
                self.query(
                    &self.sql.complete_retry,
                    &[&key, &job, &token, &ms(*run_at), error],
                )
                .await?
            }
        };
        let Some(row) = rows.first() else {
            return Err(StoreError::LeaseLost);
        };
        match &completion {
            Completion::Retry { run_at, .. } => {
                // Ready now: this process's workers look at once. A later retry is found
                // when they look again (within the recheck).
                if *run_at <= self.now() {
                    self.work.announce();
                }
                return Ok(());
            }
            // Waiters of this process at once, with the entry so they need no read.
            Completion::Store(content) => self.wake_stored(lease.key, row, content),
            _ => self.wakeups.wake(&lease.key),
        }
        // Those elsewhere through NOTIFY.
        self.announcer.done(lease.key);
        Ok(())
    }

    async fn complete_many(
        &self,
        mut jobs: Vec<(LeaseToken, Completion)>,
    ) -> Vec<Result<(), StoreError>> {
        // One alone takes the single-row statement, which finds its row by key directly.
        if jobs.len() == 1
            && let Some((lease, completion)) = jobs.pop()
        {
            return vec![self.complete(&lease, completion).await];
        }
        // Stored results go in one statement; anything else (rare) one by one.
        let (stored, other): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .enumerate()
            .partition(|(_, (_, c))| matches!(c, Completion::Store(_)));
        let mut results: Vec<Option<Result<(), StoreError>>> =
            (0..stored.len() + other.len()).map(|_| None).collect();
        for (i, (lease, completion)) in other {
            results[i] = Some(self.complete(&lease, completion).await);
        }
        if !stored.is_empty() {
            // In key order, as grouped claims lock rows: two statements never wait on each
            // other's rows.
            let mut stored = stored;
            stored.sort_by_key(|(_, (lease, _))| lease.key);
            let mut keys = Vec::new();
            let (mut job_ids, mut tokens, mut statuses) = (Vec::new(), Vec::new(), Vec::new());
            let (mut headers, mut bodies) = (Vec::new(), Vec::new());
            let (mut generated, mut fresh, mut stale, mut sie) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let (mut millis, mut tags) = (Vec::new(), Vec::new());
            for (_, (lease, completion)) in &stored {
                let Completion::Store(c) = completion else {
                    continue;
                };
                keys.push(lease.key.as_bytes().to_vec());
                job_ids.push(i64_of(lease.job.0));
                tokens.push(i64_of(lease.token));
                statuses.push(i16::try_from(c.response.status.as_u16()).unwrap_or(0));
                headers.push(encode_headers(&c.response.headers));
                bodies.push(c.response.body.to_vec());
                generated.push(ms(c.generated_at));
                fresh.push(ms(c.fresh_until));
                stale.push(ms(c.stale_until));
                sie.push(ms(c.stale_if_error_until));
                millis.push(i64_of(c.job_millis));
                tags.push(c.tags.join("\u{1f}"));
            }
            let outcome = self
                .query(
                    &self.sql.complete_store_many,
                    &[
                        &keys, &job_ids, &tokens, &statuses, &headers, &bodies, &generated, &fresh,
                        &stale, &sie, &millis, &tags,
                    ],
                )
                .await;
            match outcome {
                Ok(rows) => {
                    let done: std::collections::HashMap<Vec<u8>, &Row> = rows
                        .iter()
                        .filter_map(|r| Some((r.try_get::<_, Vec<u8>>("key").ok()?, r)))
                        .collect();
                    let mut again = Vec::new();
                    for (i, (lease, completion)) in &stored {
                        match (done.get(lease.key.as_bytes().as_slice()), completion) {
                            (Some(row), Completion::Store(content)) => {
                                self.wake_stored(lease.key, row, content);
                                self.announcer.done(lease.key);
                                results[*i] = Some(Ok(()));
                            }
                            _ => again.push((*i, lease, completion)),
                        }
                    }
                    // Left out: its lease is lost, or its row changed after it was found (a
                    // heartbeat that was on its way). The single statement tells which.
                    for (i, lease, completion) in again {
                        results[i] = Some(self.complete(lease, completion.clone()).await);
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    for (i, _) in &stored {
                        results[*i] = Some(Err(StoreError::Unavailable(text.clone())));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(StoreError::Unavailable("not completed".into()))))
            .collect()
    }

    async fn wait(&self, key: &Key, timeout: Duration) -> Result<Option<Entry>, StoreError> {
        self.wakeups
            .wait_settled(key, timeout, Some(self.config.recheck), || self.lookup(key))
            .await
    }

    async fn wait_pending(
        &self,
        key: &Key,
        seen: std::time::Instant,
        timeout: Duration,
    ) -> Result<Option<Entry>, StoreError> {
        // Without LISTEN the wake-ups never say they hear everything, so waiters look first.
        self.wakeups
            .wait_settled_since(key, Some(seen), timeout, Some(self.config.recheck), || {
                self.lookup(key)
            })
            .await
    }

    async fn wait_for_jobs(&self, timeout: Duration) -> Result<(), StoreError> {
        let _idle = self.handoff.idle();
        let notified = self.work.wake.notified();
        // A job handed over, or announced since the last take found nothing.
        if self.handoff.has_jobs() || self.work.announced_since_drained() {
            return Ok(());
        }
        let _ = tokio::time::timeout(timeout.min(self.config.recheck), notified).await;
        Ok(())
    }

    async fn hand_back_unstarted(&self) -> Result<usize, StoreError> {
        // With no worker idle no claim reserves a hand-off, so only those on their way
        // remain, each within one call.
        let jobs = self.handoff.drain(self.config.call_timeout).await;
        let mut handed_back = 0;
        let mut failed = None;
        for job in jobs {
            let lease = &job.lease;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [
                &lease.key.as_bytes().as_slice(),
                &i64_of(lease.job.0),
                &i64_of(lease.token),
            ];
            match self.query(&self.sql.hand_back, &params).await {
                Ok(rows) => handed_back += rows.len(),
                // Its lease runs out in time and another worker takes it then.
                Err(e) => failed = Some(e),
            }
        }
        if handed_back > 0 {
            self.work.announce();
            self.announcer.job();
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(handed_back),
        }
    }

    async fn take_once(&self, key: &Key) -> Result<Option<Arc<StoredResponse>>, StoreError> {
        let now = ms(self.now());
        let rows = self
            .query(&self.sql.take_once, &[&key.as_bytes().as_slice(), &now])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let get = |e: tokio_postgres::Error| StoreError::Corrupt(e.to_string());
        response(
            row.try_get("v_status").map_err(get)?,
            row.try_get("v_headers").map_err(get)?,
            row.try_get("v_body").map_err(get)?,
        )
    }

    async fn purge(&self, purge: Purge) -> Result<u64, StoreError> {
        let t = format!("{}.entries", self.config.schema);
        let ids = format!("{}.ids", self.config.schema);
        let now = ms(self.now());
        // The target's value is the last parameter: $2 in the soft purge, $1 in the hard one.
        let (slot, mut params): (usize, Vec<&(dyn tokio_postgres::types::ToSql + Sync)>) =
            if purge.soft {
                (2, vec![&now])
            } else {
                (1, Vec::new())
            };
        let key_bytes;
        let condition = match &purge.target {
            PurgeTarget::Key(key) => {
                key_bytes = key.as_bytes().to_vec();
                params.push(&key_bytes);
                format!("key = ${slot}")
            }
            PurgeTarget::Uri(uri) => {
                params.push(uri);
                format!("uri = ${slot}")
            }
            PurgeTarget::Prefix(prefix) => {
                params.push(prefix);
                format!("starts_with(uri, ${slot})")
            }
            PurgeTarget::Tag(tag) => {
                params.push(tag);
                format!("${slot} = ANY(tags)")
            }
            PurgeTarget::All => "true".to_owned(),
        };
        if purge.soft {
            // Stale from now on, keeping the lengths of its stale windows.
            let sql = format!(
                "UPDATE {t} SET
                   c_stale_until = $1 + (c_stale_until - c_fresh_until),
                   c_sie_until = $1 + (c_sie_until - c_fresh_until),
                   c_fresh_until = $1,
                   version = nextval('{ids}'),
                   expires_at = CASE WHEN pending THEN NULL ELSE GREATEST(
                     $1 + (c_stale_until - c_fresh_until), $1 + (c_sie_until - c_fresh_until),
                     COALESCE(v_until, 0)) END
                 WHERE ({condition}) AND c_status IS NOT NULL AND c_fresh_until > $1
                 RETURNING 1"
            );
            let rows = self.query(&sql, &params).await?;
            return Ok(u64::try_from(rows.len()).unwrap_or(0));
        }
        // Settled rows go; a live job stays (its result will land), losing its stale copy.
        let sql = format!(
            "WITH gone AS (DELETE FROM {t} WHERE ({condition}) AND NOT pending RETURNING 1),
                  kept AS (UPDATE {t} SET c_status = NULL, c_headers = NULL, c_body = NULL,
                             version = nextval('{ids}')
                           WHERE ({condition}) AND pending AND c_status IS NOT NULL
                           RETURNING 1)
             SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM kept)"
        );
        let rows = self.query(&sql, &params).await?;
        let count: i64 = rows
            .first()
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?
            .unwrap_or(0);
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        let now = ms(self.now());
        let rows = self.query(&self.sql.stats, &[&now]).await?;
        let row = rows.first().ok_or_else(|| corrupt("stats"))?;
        let n = |name: &str| -> Result<u64, StoreError> {
            let v: i64 = row
                .try_get(name)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok(u64::try_from(v).unwrap_or(0))
        };
        Ok(Stats {
            fresh: n("fresh")?,
            stale: n("stale")?,
            pending: n("pending")?,
            failed: n("failed")?,
            pass: n("pass")?,
            bytes: n("bytes")?,
            ready: n("ready")?,
            scheduled: n("scheduled")?,
            running: n("running")?,
            oldest_ready_ms: n("oldest")?,
        })
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        let after: Vec<u8> = match &query.after {
            Some(cursor) => Key::parse(cursor)
                .ok_or_else(|| {
                    StoreError::Invalid(format!("{cursor:?} is not a cursor of this store"))
                })?
                .as_bytes()
                .to_vec(),
            None => Vec::new(),
        };
        // The same state rules as `stats`; $1 is now. Keyset paging on the primary key.
        let verdict = "(v_kind IN (1, 2) AND v_until > $1)";
        let state = match query.state {
            None => "true".to_owned(),
            Some(State::Pending) => "pending".to_owned(),
            Some(State::Failed) => "NOT pending AND v_kind = 1 AND v_until > $1".to_owned(),
            Some(State::Pass) => "NOT pending AND v_kind = 2 AND v_until > $1".to_owned(),
            Some(State::Fresh) => {
                format!("NOT pending AND NOT {verdict} AND c_fresh_until > $1")
            }
            Some(State::Stale) => {
                format!("NOT pending AND NOT {verdict} AND NOT COALESCE(c_fresh_until > $1, false)")
            }
        };
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM {}.entries
             WHERE (pending OR expires_at > $1) AND key > $2 AND {state}
             ORDER BY key LIMIT $3",
            self.config.schema
        );
        let now = ms(self.now());
        let limit = i64::try_from(query.limit.max(1)).unwrap_or(i64::MAX);
        let rows = self.query(&sql, &[&now, &after.as_slice(), &limit]).await?;
        let entries = rows
            .iter()
            .map(entry_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if rows.len() as i64 == limit {
            entries.last().map(|e| e.key.to_hex())
        } else {
            None
        };
        Ok(ListPage { entries, next })
    }
}

impl PgStore {
    /// Deletes up to `batch` rows whose every window has ended; returns how many. Bounded, so
    /// it never holds long locks; call it periodically ([`PgStore::spawn_pruner`] does).
    pub async fn prune(&self, batch: i64) -> Result<u64, StoreError> {
        let t = format!("{}.entries", self.config.schema);
        let sql = format!(
            "WITH doomed AS (SELECT key FROM {t} WHERE NOT pending AND expires_at <= $1
                             ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
             DELETE FROM {t} e USING doomed WHERE e.key = doomed.key"
        );
        let now = ms(self.now());
        self.run(|client| async move {
            let statement = client.prepare_cached(&sql).await.map_err(db)?;
            client
                .execute(&statement, &[&now, &batch])
                .await
                .map_err(db)
        })
        .await
    }

    /// Prunes expired rows in batches of 1,000 every `every`, until the store is dropped.
    pub fn spawn_pruner(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        super::spawn_pruner(self, every)
    }
}

#[async_trait]
impl super::Prune for PgStore {
    async fn prune_batch(&self, batch: u64) -> Result<u64, StoreError> {
        self.prune(i64::try_from(batch).unwrap_or(i64::MAX)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on the test database in a schema of its own (`errand_unit_{tag}_{pid}`),
    /// without the listener; `None` (and a loud line) when PostgreSQL is not there, except
    /// under `CI=true`, where that fails the test.
    #[allow(clippy::print_stderr)]
    async fn unit_store(tag: &str, tweak: impl FnOnce(&mut PgConfig)) -> Option<PgStore> {
        let url = std::env::var("ERRAND_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let mut config = PgConfig::new(&url);
        config.schema = format!("errand_unit_{tag}_{}", std::process::id());
        config.listen = false;
        tweak(&mut config);
        match PgStore::connect(config).await {
            Ok(store) => Some(store),
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI needs PostgreSQL at {url}: {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED: PostgreSQL is not reachable at {url} ({e})");
                None
            }
        }
    }

    /// `count()` once it reaches 0, or as it is after `within` (looking every 10 ms).
    async fn settled(count: impl Fn() -> usize, within: Duration) -> usize {
        let deadline = std::time::Instant::now() + within;
        let mut n = count();
        while n != 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            n = count();
        }
        n
    }

    /// A batch of completions finds each row through the primary key even when its plan is
    /// made while the table is new and empty, as on a fresh deployment: a connection keeps
    /// that plan, and a scan of the table would grow with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batched_completions_probe_the_key_on_a_new_table() {
        let Some(store) = unit_store("plan", |_| {}).await else {
            return;
        };
        let url = store.config.url.clone();
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "SET plan_cache_mode = force_generic_plan; PREPARE many AS {}",
                store.sql.complete_store_many
            ))
            .await
            .unwrap();
        let empty = ["'{}'"; 12].join(", ");
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN EXECUTE many({empty})"), &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        drop(client);
        store.drop_schema().await.unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains("entries_pkey"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
    }

    /// The pool hands out the connection given back last: after a burst opened several,
    /// calls one after another all run on one server process.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_reuses_the_connection_given_back_last() {
        let Some(store) = unit_store("lifo", |_| {}).await else {
            return;
        };
        async fn pid(client: &deadpool_postgres::Object) -> i32 {
            client
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .unwrap()
                .get(0)
        }
        // A burst: four connections at once, given back in order.
        let mut burst = Vec::new();
        for _ in 0..4 {
            burst.push(store.pool.get().await.unwrap());
        }
        let mut opened = Vec::new();
        for client in &burst {
            opened.push(pid(client).await);
        }
        drop(burst);
        let mut used = Vec::new();
        for _ in 0..4 {
            let client = store.pool.get().await.unwrap();
            used.push(pid(&client).await);
        }
        store.drop_schema().await.unwrap();
        assert_eq!(opened.len(), 4);
        assert!(used.iter().all(|p| *p == used[0]), "{used:?} of {opened:?}");
        assert!(opened.contains(&used[0]), "{used:?} of {opened:?}");
    }

    /// Connections left unused for the idle timeout are closed; the pool opens new ones
    /// when calls need them again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_are_closed() {
        let Some(store) = unit_store("idle", |c| c.idle_timeout = Duration::from_millis(300)).await
        else {
            return;
        };
        let mut burst = Vec::new();
        for _ in 0..3 {
            burst.push(store.pool.get().await.unwrap());
        }
        drop(burst);
        let opened = store.pool.status().size;
        // One connection stays in use, every 100 ms; the other two idle out.
        let key = Key::parse(&"7".repeat(32)).unwrap();
        for _ in 0..10 {
            assert!(store.lookup(&key).await.unwrap().is_none());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left = store.pool.status().size;
        // Then nothing for a while: the last one goes too, and a call opens a new one.
        let idle = settled(|| store.pool.status().size, Duration::from_secs(3)).await;
        assert!(store.lookup(&key).await.unwrap().is_none());
        let after = store.pool.status().size;
        store.drop_schema().await.unwrap();
        assert_eq!(opened, 3);
        assert_eq!(
            left, 1,
            "the connection in use stays, the idle ones are closed"
        );
        assert_eq!(idle, 0);
        assert_eq!(after, 1);
    }

    /// A claim of `GET http://unit.test{path}`.
    fn unit_claim(path: &str) -> Claim {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, "unit.test".parse().unwrap());
        let sig = crate::pattern::Signature::of(
            &http::Method::GET,
            &path.parse().unwrap(),
            &headers,
            "http",
            &[],
        )
        .unwrap();
        Claim {
            uri: sig.request.uri.clone(),
            key: sig.key,
            request: sig.request,
            priority: Priority::Miss,
            expect: None,
        }
    }

    /// A claim as the claim statements take it.
    fn params(store: &PgStore, claim: &Claim, uri: Option<&str>) -> ClaimParams {
        ClaimParams {
            key: claim.key,
            uri: uri.unwrap_or(&claim.uri).to_owned(),
            priority: claim.priority as i16,
            now: ms(store.now()),
            request: serde_json::to_string(&claim.request).unwrap(),
            expect: claim.expect.map(i64_of),
        }
    }

    /// Sends `claims` as one group; what each caller is told.
    async fn send_as_group(
        store: &PgStore,
        claims: Vec<ClaimParams>,
    ) -> Vec<Result<Option<Row>, StoreError>> {
        let (group, answers): (Vec<_>, Vec<_>) = claims
            .into_iter()
            .map(|params| {
                let (reply, answer) = tokio::sync::oneshot::channel();
                (QueuedClaim { params, reply }, answer)
            })
            .unzip();
        store.claims.send_group(group).await;
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(answer.await.unwrap());
        }
        outcomes
    }

    /// Claims sent together each get what a claim of their own would: a new key and an
    /// expired entry are claimed, a pending one is not, and a conditional claim wins only at
    /// the version it expects.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claims_sent_together_each_get_their_own_row() {
        let Some(store) = unit_store("group", |_| {}).await else {
            return;
        };
        let [fresh, pending, expired, current, outdated] =
            ["/fresh", "/pending", "/expired", "/current", "/outdated"].map(unit_claim);
        let ClaimOutcome::Enqueued(_) = store.claim(unit_claim("/pending")).await.unwrap() else {
            panic!("the first claim of /pending enqueues");
        };
        // Settled entries: one expired, two live at version 42.
        let now = ms(store.now());
        for (claim, expires) in [
            (&expired, now - 1),
            (&current, now + 60_000),
            (&outdated, now + 60_000),
        ] {
            let sql = format!(
                "INSERT INTO {}.entries (key, uri, version, pending, expires_at)
                 VALUES ($1, $2, 42, false, $3)",
                store.config.schema
            );
            let key = claim.key.as_bytes().as_slice();
            store
                .query(&sql, &[&key, &claim.uri, &expires])
                .await
                .unwrap();
        }
        let current = Claim {
            expect: Some(42),
            ..current
        };
        let outdated = Claim {
            expect: Some(41),
            ..outdated
        };
        let claims = [&fresh, &pending, &expired, &current, &outdated];
        let sent = store.claims.statements.load(Ordering::Relaxed);
        let outcomes = send_as_group(
            &store,
            claims.iter().map(|c| params(&store, c, None)).collect(),
        )
        .await;
        let statements = store.claims.statements.load(Ordering::Relaxed) - sent;
        let mut won = Vec::new();
        for (claim, outcome) in claims.iter().zip(outcomes) {
            let row = outcome.unwrap();
            if let Some(row) = row {
                // The row is this claim's: the entry a lookup reads is the one it made.
                let entry = claimed_entry(claim, store.now(), None, &row).unwrap();
                let stored = store.lookup(&claim.key).await.unwrap().unwrap();
                assert_eq!(stored.version, entry.version, "{}", claim.uri);
                assert_eq!(stored.job().map(|j| j.id), entry.job().map(|j| j.id));
                won.push(claim.uri.rsplit('/').next().unwrap().to_owned());
            }
        }
        store.drop_schema().await.unwrap();
        assert_eq!(statements, 1, "one statement for the group");
        assert_eq!(won, ["fresh", "expired", "current"]);
    }

    /// A group the server refuses is claimed one by one, so a claim it cannot store fails
    /// alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_group_is_claimed_one_by_one() {
        let Some(store) = unit_store("refused", |_| {}).await else {
            return;
        };
        let good = [unit_claim("/a"), unit_claim("/b")];
        let bad = unit_claim("/c");
        let mut claims: Vec<ClaimParams> = good.iter().map(|c| params(&store, c, None)).collect();
        // PostgreSQL's text holds no NUL character.
        claims.push(params(&store, &bad, Some("http://unit.test/c\0")));
        let outcomes = send_as_group(&store, claims).await;
        let refused = store.claims.refused.load(Ordering::Relaxed);
        let found = [
            store.lookup(&good[0].key).await.unwrap(),
            store.lookup(&good[1].key).await.unwrap(),
            store.lookup(&bad.key).await.unwrap(),
        ];
        store.drop_schema().await.unwrap();
        assert_eq!(refused, 1);
        assert!(
            matches!(outcomes[0], Ok(Some(_))),
            "{:?}",
            outcomes[0].as_ref().err()
        );
        assert!(
            matches!(outcomes[1], Ok(Some(_))),
            "{:?}",
            outcomes[1].as_ref().err()
        );
        assert!(outcomes[2].is_err());
        assert!(found[0].is_some() && found[1].is_some() && found[2].is_none());
    }

    /// A burst of claims goes in fewer statements than claims, each claimed exactly once,
    /// and two processes claiming the same keys in different orders never deadlock (a
    /// refused group would show one).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_claims_shares_statements() {
        let Some(store) = unit_store("burst", |_| {}).await else {
            return;
        };
        let other = PgStore::connect(store.config.clone()).await.unwrap();
        let (store, other) = (Arc::new(store), Arc::new(other));
        let mut calls = tokio::task::JoinSet::new();
        for round in 0..2 {
            for i in 0..100 {
                // The second process claims the keys in the reverse order.
                let (s, n) = if round == 0 {
                    (&store, i)
                } else {
                    (&other, 99 - i)
                };
                let (s, claim) = (Arc::clone(s), unit_claim(&format!("/burst/{n}")));
                calls.spawn(async move { (claim.key, s.claim(claim).await) });
            }
        }
        let mut enqueued = std::collections::HashMap::new();
        while let Some(call) = calls.join_next().await {
            let (key, outcome) = call.unwrap();
            if let ClaimOutcome::Enqueued(entry) = outcome.unwrap() {
                *enqueued.entry(key).or_insert(0) += 1;
                let stored = store.lookup(&key).await.unwrap().unwrap();
                assert_eq!(stored.version, entry.version);
            }
        }
        let statements = store.claims.statements.load(Ordering::Relaxed)
            + other.claims.statements.load(Ordering::Relaxed);
        let refused = store.claims.refused.load(Ordering::Relaxed)
            + other.claims.refused.load(Ordering::Relaxed);
        store.drop_schema().await.unwrap();
        assert_eq!(enqueued.len(), 100, "every key claimed");
        assert!(enqueued.values().all(|n| *n == 1), "once each");
        assert!(statements < 200, "{statements} statements for 200 claims");
        assert_eq!(refused, 0);
    }

    /// A caller that gives up while its own claim statement waits hands the claims queued
    /// behind it to a task of their own: they are still made, and it is not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_given_up_hands_on_the_claims_waiting_behind_it() {
        let Some(store) = unit_store("giveup", |c| c.pool_size = 1).await else {
            return;
        };
        let store = Arc::new(store);
        // The only connection is busy: the next two claims take both sending slots and wait
        // for it; the third waits in the queue behind them.
        let busy = store.pool.get().await.unwrap();
        let claims = ["/gives-up", "/alone", "/queued"].map(unit_claim);
        let mut calls = Vec::new();
        for claim in &claims {
            let (store, claim) = (Arc::clone(&store), claim.clone());
            calls.push(tokio::spawn(async move { store.claim(claim).await }));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let queued = store.claims.state().waiting.len();
        calls[0].abort();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(busy);
        let alone = calls.remove(1).await.unwrap();
        let behind = calls.remove(1).await.unwrap();
        let made = [
            store.lookup(&claims[0].key).await.unwrap().is_some(),
            store.lookup(&claims[2].key).await.unwrap().is_some(),
        ];
        // The last sender gives its slot back right after it answers.
        let senders = settled(|| store.claims.state().senders, Duration::from_secs(1)).await;
        store.drop_schema().await.unwrap();
        assert_eq!(queued, 1, "the third claim waited");
        assert!(matches!(alone, Ok(ClaimOutcome::Enqueued(_))), "{alone:?}");
        assert!(
            matches!(behind, Ok(ClaimOutcome::Enqueued(_))),
            "{behind:?}"
        );
        assert_eq!(made, [false, true]);
        assert_eq!(senders, 0, "every sending slot given back");
    }

    /// While the database hangs (here: its only connection never comes back), a claim that
    /// waits behind others fails within the call timeout, as one that goes alone does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claims_waiting_on_a_hung_database_fail_within_the_call_timeout() {
        let limit = Duration::from_secs(1);
        let Some(store) = unit_store("hung", |c| {
            c.pool_size = 1;
            c.call_timeout = limit;
        })
        .await
        else {
            return;
        };
        let store = Arc::new(store);
        let busy = store.pool.get().await.unwrap();
        let started = std::time::Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..6 {
            let (store, claim) = (Arc::clone(&store), unit_claim(&format!("/hung/{i}")));
            calls.spawn(async move { (store.claim(claim).await, started.elapsed()) });
        }
        let mut slowest = Duration::ZERO;
        let mut failed = 0;
        while let Some(call) = calls.join_next().await {
            let (outcome, took) = call.unwrap();
            failed += usize::from(outcome.is_err());
            slowest = slowest.max(took);
        }
        drop(busy);
        store.drop_schema().await.unwrap();
        assert_eq!(failed, 6);
        // Twice the limit would mean a waiting claim paid for the statement ahead of it too.
        assert!(
            slowest < limit * 8 / 5,
            "the slowest claim took {slowest:?}"
        );
    }

    const RECHECK: Duration = Duration::from_secs(1);

    fn listening() -> JobSignal {
        let signal = JobSignal::default();
        signal.listening(true);
        signal
    }

    #[test]
    fn a_drained_queue_is_known_empty_until_a_job_is_announced() {
        let signal = listening();
        let now = Timestamp(10_000);
        assert!(!signal.known_empty(now, RECHECK), "never looked");
        signal.drained(Some((signal.seen(), now)));
        assert!(signal.known_empty(now, RECHECK));
        assert!(!signal.announced_since_drained());
        signal.announce_one();
        assert!(!signal.known_empty(now, RECHECK), "a claim of this process");
        assert!(signal.announced_since_drained());
        signal.drained(Some((signal.seen(), now)));
        signal.announce();
        assert!(!signal.known_empty(now, RECHECK), "a notification");
    }

    #[test]
    fn known_empty_lasts_one_recheck_and_needs_the_listener() {
        let signal = listening();
        let now = Timestamp(10_000);
        signal.drained(Some((signal.seen(), now)));
        assert!(signal.known_empty(now.plus(Duration::from_millis(999)), RECHECK));
        assert!(
            !signal.known_empty(now.plus(RECHECK), RECHECK),
            "retries come due and leases run out unannounced"
        );
        signal.listening(false);
        signal.drained(Some((signal.seen(), now)));
        assert!(
            !signal.known_empty(now, RECHECK),
            "a notification may be lost"
        );
    }

    #[test]
    fn a_full_take_says_nothing_of_what_is_left() {
        let signal = listening();
        let now = Timestamp(10_000);
        signal.drained(Some((signal.seen(), now)));
        signal.drained(None);
        assert!(!signal.known_empty(now, RECHECK));
        assert!(!signal.announced_since_drained());
    }

    #[test]
    fn lapsed_leases_are_looked_for_once_per_recheck() {
        let signal = JobSignal::default();
        let now = Timestamp(10_000);
        assert!(signal.rescue_due(now, RECHECK));
        assert!(!signal.rescue_due(now.plus(Duration::from_millis(999)), RECHECK));
        assert!(signal.rescue_due(now.plus(RECHECK), RECHECK));
    }
}
