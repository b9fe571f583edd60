//! The PostgreSQL store, [`PgStore`]; its design is documented on the type.
//!
//! # Layout
//!
//! Both shared stores have the same files: `mod.rs` (config and connect), `store.rs` (the
//! [`Store`] implementation), the statements (`sql.rs`; Redis: `scripts.rs`), `decode.rs`
//! and `notify.rs`; PostgreSQL adds the files of its queue machinery.
//!
//! - `mod.rs`: [`PgConfig`], [`PgStore`] (connect, migrate, the pool's settings).
//! - `store.rs`: [`Store`] and [`Inspect`] for it: each operation's statement and what it
//!   returns.
//! - `sql.rs`: every statement, with the schema spliced in, and the migrations.
//! - `decode.rs`: rows read back into entries and jobs.
//! - `claims.rs`: claims that go together when two claim statements are on their way.
//! - `handoff.rs`: jobs a claim leased to an idle worker of this process.
//! - `signal.rs`: what this process knows of the queue (idle workers, empty takes spared).
//! - `notify.rs`: the coalesced `NOTIFY` a process sends, and its one `LISTEN` connection.
//! - `cap.rs`: the flood cap across processes.
//! - `pool.rs`: one statement on a pooled connection under the call timeout; idle
//!   connections closed.
//! - `tls.rs`: TLS to the database, as the URL's `sslmode`, `sslrootcert`, `sslcert` and
//!   `sslkey` ask (libpq's meanings).
//! - `tests.rs`: this store's own tests, beyond the contract suite.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, QueueMode, RecyclingMethod, Runtime};
use tokio_postgres::Row;

use super::codec::encode_headers;
use super::{
    Claim, ClaimOutcome, Clock, Completion, Job, LeaseToken, ListPage, ListQuery, Purge,
    PurgeTarget, Stats, Store, StoreError, SystemClock, Wakeups,
};
use super::{Inspect, redact};
use crate::pattern::{
    Content, Entry, Failure, JobId, Key, State, Status, StoredResponse, Timestamp,
};

mod cap;
mod claims;
mod decode;
mod handoff;
mod notify;
mod pool;
mod signal;
mod sql;
mod store;
#[cfg(test)]
mod tests;
mod tls;

use cap::{Gate, PendingCap};
use claims::{CLAIM_SENDERS, ClaimParams, ClaimQueue};
use decode::{claimed_entry, corrupt, entry_from_row, i64_of, jobs_of, ms, response, ts};
use handoff::HandOff;
use notify::{Announcer, listen};
use pool::{SendError, close_idle, pooled, pooled_query};
use signal::JobSignal;
use sql::{ENTRY_COLUMNS, Sql};

/// A claim's place under the flood cap, from [`PgStore::admit`] until the claim is answered.
struct Place<'a>(&'a PendingCap);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.answered();
    }
}

/// Settings of a [`PgStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/database`, with libpq's TLS parameters if
    /// wanted: `sslmode` (`disable`, `prefer` by default, `require`, `verify-ca`,
    /// `verify-full`), `sslrootcert` (a PEM file, or `system`), `sslcert` and `sslkey`.
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
    /// The flood cap: at most about this many jobs (pending entries) at once across every
    /// process sharing the schema; a claim beyond it is refused with [`StoreError::Full`].
    /// Each process counts the queue now and then instead of at every claim (see
    /// `cap.rs` for how closely that holds). `usize::MAX` turns the cap off.
    pub max_pending: usize,
    /// How often the pruner started by `spawn_pruner` removes entries whose windows have
    /// ended (default 30 s).
    pub prune_every: Duration,
}

impl PgConfig {
    /// Checks that `url` is a PostgreSQL connection URL whose TLS settings hold (a known
    /// `sslmode`, readable certificate files), without connecting; the error says why not (and
    /// never shows the password).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unsuitable`] naming what is wrong with the URL.
    pub fn check_url(url: &str) -> Result<(), StoreError> {
        tls::target(url).map(|_| ())
    }

    /// Defaults for `url`: schema `errand`, up to 16 connections closed after 60 s unused,
    /// 5 s per call, recheck every 1 s, 10,000 pending jobs.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            prune_every: Duration::from_secs(30),
            url: url.into(),
            schema: "errand".into(),
            pool_size: 16,
            idle_timeout: Duration::from_secs(60),
            call_timeout: Duration::from_secs(5),
            recheck: Duration::from_secs(1),
            listen: true,
            group_claims: true,
            max_pending: 10_000,
        }
    }
}

/// The PostgreSQL store: many fronts and many workers on many machines share one durable
/// table, in which **the pending entry is the job**.
///
/// Every operation is one statement (one round trip, one implicit transaction):
///
/// - `claim` is `INSERT … ON CONFLICT (key) DO UPDATE … WHERE <not pending, and expired or at
///   the expected version>`: the primary key makes it atomic however many fronts race; the
///   loser's statement changes nothing and it reads the winner's row. (It does lock that row
///   for a moment, and a worker's `take` skips locked rows, so a loser that finds the job
///   still waiting for a worker announces it again.)
///   It returns only what the caller does not know already (the version, the job id, and a
///   copy the row keeps); the rest of the pending entry is what the claim wrote.
///   Claims made while two claim statements are on their way wait for one of them, then go
///   together: one statement and one commit for many claims, each row the same insert or
///   update as alone, keys in order so that two statements never wait on each other. Under
///   light load every claim goes at once, alone ([`PgConfig::group_claims`] turns grouping
///   off).
/// - `take` picks ready rows by priority then run time with `FOR UPDATE SKIP LOCKED` and
///   leases them in the same statement, so two workers never take one job and a worker that
///   dies holds nothing but a lease that runs out (at-least-once). Lapsed leases announce
///   nothing, so takes look for them in a statement of their own once per
///   [`PgConfig::recheck`]. A take that has found the queue empty does not ask again until a
///   job is announced (or the recheck passes).
/// - `complete` updates the row only `WHERE job_id = … AND lease_token = …` (fencing).
///
/// Hand-off: a claim made while a worker of the same process waits idle leases the new job
/// to that worker in the claim's own statement, and the worker's next `take` gets it without
/// asking the database. On the miss path of a front that also works, that saves a statement
/// and a durable commit: the job costs two (claim and lease; acknowledge and store), not
/// three. The lease is in the table like any other, so no other process takes
/// the job meanwhile, and if this process dies first the job is taken over when the lease
/// runs out. When its workers stop (shutdown), jobs handed over but not yet started are given
/// back to the queue at once ([`Store::hand_back_unstarted`]). Fronts without workers never
/// hand off.
///
/// Wake-ups: after a claim or a completion commits, this process announces it with
/// `NOTIFY`, coalesced: a lone event goes out at once, and during a burst one statement per
/// 2 ms window carries every key completed in it and whether jobs were claimed (`NOTIFY`
/// serializes commits cluster-wide, so one per write would cap throughput). A jobs
/// notification carries the id of the process that sent it, and that process's own listener
/// leaves it out: its workers were told directly. One
/// `LISTEN` connection per process fans notifications out to the waiters of this process
/// (its wake-ups) and to its idle workers; waiters and idle workers also look again every
/// [`PgConfig::recheck`], so a missed notification (a dropped listener connection, a pooler
/// that breaks `LISTEN`) costs at most that much delay, never a lost answer. A result stored
/// by this process reaches its own waiters with the settled entry, so they answer without
/// reading it back.
///
/// Every call runs under [`PgConfig::call_timeout`]; the pool waits at most that long for a
/// connection, so a database that is down gives [`StoreError::Unavailable`] or
/// [`StoreError::Timeout`] quickly, and the pool reconnects by itself when it is back.
/// The pool hands out the connection given back last, so a steady load runs on as few
/// server processes as it needs, and closes those left unused for
/// [`PgConfig::idle_timeout`].
/// Writes use the server's `synchronous_commit` (durable by default).
///
/// TLS follows libpq: the URL's `sslmode` (`prefer` by default: encrypted when the server
/// offers it), `sslrootcert`, `sslcert` and `sslkey`, read when the store is made; a file
/// that cannot be read or a mode that does not exist is an error naming it. See `tls.rs`.
///
/// The schema lives in its own PostgreSQL schema (`PgConfig::schema`), created and upgraded
/// by idempotent migrations on start or by `errand migrate`. Its indexes are partial, so each
/// write touches only those it needs: ready jobs by priority and run time, held jobs by lease
/// end, settled rows by expiry, and by URI only the rows a purge can act on.
///
/// Times are the store clock's milliseconds (the fronts' and workers' own clocks): keep the
/// machines' clocks in sync (NTP), as any lease-based queue requires.
pub struct PgStore {
    pool: Pool,
    clock: Arc<dyn Clock>,
    config: PgConfig,
    sql: Sql,
    wakeups: Arc<Wakeups>,
    work: Arc<JobSignal>,
    handoff: HandOff,
    claims: Arc<ClaimQueue>,
    cap: PendingCap,
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

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(e.to_string())
}

/// A database error with the server's own message (`db error` alone says nothing).
fn db(e: tokio_postgres::Error) -> StoreError {
    let message = match e.as_db_error() {
        Some(server) => format!("postgres: {}", server.message()),
        None => with_causes(&e),
    };
    StoreError::unavailable_because(message, e)
}

/// Why the pool gave no connection: the driver's own error when opening one failed, without
/// the pool's wrapper ("Error occurred while creating a new object"), which says nothing.
fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(driver) => with_causes(driver),
        other => with_causes(other),
    }
}

/// An error's text followed by its causes' (a failed handshake says why only in its cause),
/// each cause once even when the text before already quotes it, and what a refusing TLS
/// alert from the server means ([`tls::explain_alert`]).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    tls::explain_alert(text)
}

impl PgStore {
    /// Wakes this process's waiters of a failure, as [`wake_stored`](Self::wake_stored) does
    /// of a stored result, when the failure is already over as it is stored; else they look.
    fn wake_failed(&self, key: Key, row: &Row, failure: &Failure) {
        let uri = row.try_get::<_, String>("uri").ok();
        let version = row.try_get::<_, i64>("version").ok();
        let expires_at = row.try_get::<_, i64>("expires_at").ok();
        let over = expires_at.is_some_and(|at| at <= ms(self.now()));
        match (uri, version.and_then(|v| u64::try_from(v).ok())) {
            // Over as it is stored (an error TTL of 0, no stale copy): a lookup finds
            // nothing, so the waiters of this process get the failure itself.
            (Some(uri), Some(version)) if over => {
                self.wakeups.wake_settled(Entry {
                    key,
                    uri: uri.into(),
                    version,
                    content: None,
                    status: Status::Failed(failure.clone()),
                });
            }
            _ => self.wakeups.wake(&key),
        }
    }

    /// Wakes this process's waiters of a stored result, handing them the entry exactly as a
    /// lookup would read it right after (`row` holds the `uri` and `version` the completion
    /// wrote), unless it has already expired: then they look, as a lookup returns nothing.
    fn wake_stored(&self, key: Key, row: &Row, content: &Content, status: Status) {
        let uri = row.try_get::<_, String>("uri").ok();
        let version = row.try_get::<_, i64>("version").ok();
        match (uri, version.and_then(|v| u64::try_from(v).ok())) {
            (Some(uri), Some(version)) if content.expires_at() > self.now() => {
                self.wakeups.wake_settled(Entry {
                    key,
                    uri: uri.into(),
                    version,
                    content: Some(content.clone()),
                    status,
                });
            }
            _ => self.wakeups.wake(&key),
        }
    }

    /// Connects, applies the schema migrations (safe when several processes start at once)
    /// and starts the notification listener.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unsuitable`] for a URL or TLS setting that cannot work, or a schema
    /// name that is not a plain identifier; [`StoreError::Unavailable`] or
    /// [`StoreError::Timeout`] when the database cannot be reached or refuses the
    /// migration. Fails at once: callers that want to wait for the database retry.
    pub async fn connect(config: PgConfig) -> Result<Self, StoreError> {
        Self::connect_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`connect`](Self::connect) with a clock of the caller's (tests).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
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
        let target = tls::target(&config.url)?;
        let manager = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
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
                target,
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
        let cap = PendingCap::new(config.max_pending);
        let store = Self {
            cap,
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

    /// The flood cap's check before a claim: [`StoreError::Full`] when the queue is at the
    /// cap, counting it first when this process's last count is too old to go by. The place
    /// it gives is held until the claim is answered (the guard drops).
    async fn admit(&self) -> Result<Place<'_>, StoreError> {
        let mut gate = self.cap.gate(std::time::Instant::now());
        if gate == Gate::Count {
            let at = std::time::Instant::now();
            let limit = i64::try_from(self.cap.max()).unwrap_or(i64::MAX);
            let rows = self.query(&self.sql.count_pending, &[&limit]).await?;
            let count: i64 = rows
                .first()
                .and_then(|row| row.try_get(0).ok())
                .ok_or_else(|| corrupt("count of pending jobs"))?;
            gate = self.cap.counted(u64::try_from(count).unwrap_or(0), at);
        }
        match gate {
            Gate::Refuse(pending) => Err(StoreError::Full(pending)),
            Gate::Claim | Gate::Count => Ok(Place(&self.cap)),
        }
    }

    /// The settings this store was made with.
    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    /// Creates or upgrades the schema. Serialized across processes by a transaction-scoped
    /// advisory lock (only here: claims rely on the primary key, never on advisory locks).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] or [`StoreError::Timeout`] when a statement fails.
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
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] or [`StoreError::Timeout`] when the statement fails.
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

fn valid_schema(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl PgStore {
    /// Deletes up to `batch` rows whose every window has ended; returns how many. Bounded, so
    /// it never holds long locks; call it periodically ([`PgStore::spawn_pruner`] does).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] or [`StoreError::Timeout`] when the statement fails.
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

    /// Prunes expired rows in batches of 1,000 every [`PgConfig::prune_every`], until the
    /// store is dropped.
    pub fn spawn_pruner(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        super::spawn_pruner(self, self.config.prune_every)
    }
}

#[async_trait]
impl super::Prune for PgStore {
    async fn prune_batch(&self, batch: u64) -> Result<u64, StoreError> {
        self.prune(i64::try_from(batch).unwrap_or(i64::MAX)).await
    }
}
