//! The Redis store, [`RedisStore`]; its design is documented on the type.
//!
//! # Layout
//!
//! The same files as the PostgreSQL store: `mod.rs` ([`RedisConfig`], [`RedisStore`],
//! connect and server checks), `store.rs` ([`Store`] and [`Inspect`]: one script call per
//! operation), `scripts.rs` (the Lua scripts, `*.lua`, and their arguments), `decode.rs`
//! (replies read back into entries and jobs) and `notify.rs` (the subscriber connection).

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ClientTlsConfig, Script, TlsCertificates, Value};
use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use tokio::sync::Notify;

mod decode;
mod notify;
mod scripts;
mod store;

use self::decode::*;
use self::notify::*;
use self::scripts::*;
use super::codec::{decode_headers, encode_headers};
use super::{
    Claim, ClaimOutcome, Clock, Completion, Job, LeaseToken, ListPage, ListQuery, Purge,
    PurgeTarget, Stats, Store, StoreError, SystemClock, Wakeups, timed,
};
use super::{Inspect, redact};
use crate::pattern::{
    Content, Entry, Failure, JobId, JobInfo, Key, PassInfo, Priority, RequestRecord, State, Status,
    StoredResponse, Timestamp,
};

/// Settings of a [`RedisStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS, which checks the
    /// server's certificate against the Mozilla root store (`rediss://host:port/#insecure`
    /// encrypts without checking it, for a self-signed certificate).
    pub url: String,
    /// Every key starts with `{prefix}:` (one prefix per deployment or tenant).
    pub prefix: String,
    /// Upper bound of every call.
    pub call_timeout: Duration,
    /// How often waiters and idle workers look again without a message.
    pub recheck: Duration,
    /// With `rediss://`: the roots (a PEM file) the server's certificate is checked against
    /// instead of the Mozilla root store, for a server whose certificate a private CA signed.
    pub ca_file: Option<PathBuf>,
    /// With `rediss://`: a client certificate and its key (PEM files), for a server that asks
    /// for one (`tls-auth-clients yes`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The flood cap: at most this many jobs (pending entries) at once across every process
    /// sharing the prefix; a claim beyond it is refused with [`StoreError::Full`]. The claim
    /// script reads the queue's size (`ZCARD`, O(1)) in the same atomic step, so the cap is
    /// exact cluster-wide.
    pub max_pending: usize,
    /// How often the pruner started by `spawn_pruner` removes entries whose windows have
    /// ended (default 10 s).
    pub prune_every: Duration,
}

impl RedisConfig {
    /// Checks that `url` is a Redis URL this build can use, without connecting; the error says
    /// why not (and never shows the password).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unsuitable`] saying why the URL cannot be used.
    pub fn check_url(url: &str) -> Result<(), StoreError> {
        Client::open(url).map(|_| ()).map_err(|e| {
            StoreError::unsuitable_because(
                format!("{} is not a valid Redis URL: {e}", redact(url)),
                e,
            )
        })
    }

    /// Defaults for `url`: prefix `errand`, 5 s per call, recheck every 1 s, 10,000 pending.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            prune_every: Duration::from_secs(10),
            url: url.into(),
            prefix: "errand".into(),
            call_timeout: Duration::from_secs(5),
            recheck: Duration::from_secs(1),
            ca_file: None,
            client_cert: None,
            max_pending: 10_000,
        }
    }

    /// The client for [`url`](Self::url), with [`ca_file`](Self::ca_file) and
    /// [`client_cert`](Self::client_cert) read; the error names the file or setting at fault.
    fn client(&self) -> Result<Client, StoreError> {
        let shown = redact(&self.url);
        let named =
            |e: ::redis::RedisError| StoreError::unavailable_because(format!("{shown}: {e}"), e);
        if self.ca_file.is_none() && self.client_cert.is_none() {
            return Client::open(self.url.as_str()).map_err(named);
        }
        if !self.url.starts_with("rediss://") {
            return Err(StoreError::unsuitable(format!(
                "{shown}: a CA file or a client certificate needs TLS: use a rediss:// URL"
            )));
        }
        fn named_file(what: &'static str) -> impl Fn(String) -> StoreError {
            move |e| StoreError::unsuitable(format!("{what}: {e}"))
        }
        let root_cert = self
            .ca_file
            .as_deref()
            .map(|path| super::pem::certificates(path).map_err(named_file("Redis CA file")))
            .transpose()?
            .map(|(pem, _)| pem);
        let client_tls = match &self.client_cert {
            Some((cert, key)) => {
                let (client_key, _) =
                    super::pem::private_key(key).map_err(named_file("Redis client key"))?;
                let (client_cert, _) = super::pem::certificates(cert)
                    .map_err(named_file("Redis client certificate"))?;
                Some(ClientTlsConfig {
                    client_cert,
                    client_key,
                })
            }
            None => None,
        };
        // What fails here is the files' content (not PEM, a key that does not fit): asking
        // again will not help.
        Client::build_with_tls(
            self.url.as_str(),
            TlsCertificates {
                client_tls,
                root_cert,
            },
        )
        .map_err(|e| StoreError::unsuitable(format!("{shown}: Redis TLS files: {e}")))
    }
}

/// The Redis store: many fronts and many workers share one Redis, in which **the pending
/// entry is the job**, as in every errand store.
///
/// Every operation that changes more than one key is one server-side Lua script, so it is
/// atomic with respect to every other client:
///
/// - `claim` creates the pending entry unless a live one exists (or refreshes the version the
///   caller saw) and puts it in the ready set, in one step: however many fronts race, one
///   wins and the others read its entry.
/// - `take` leases ready jobs (and jobs whose lease ran out) with a deadline and a fresh
///   token, moving each job's place in the job set to its lease end. Nothing is popped: a
///   worker that dies holds only a lease that runs out, and the job is taken again
///   (at-least-once).
/// - `complete` checks the lease token (fencing), stores the result with its expiry and
///   acknowledges the job in the same step; a batch of completions is one script call.
/// - `heartbeat` extends a held lease; `take_once`, `purge`, `stats`, `list` and the pruner are
///   scripts too.
///
/// # Key layout
///
/// All keys start with the configured prefix inside a hash tag, `{errand}:` by default, so
/// tenants and tests sharing one Redis never collide:
///
/// | key | type | holds |
/// |---|---|---|
/// | `{p}:e:<key hex>` | hash | one entry: its URI, version, job fields while pending, content, verdict |
/// | `{p}:i:<key hex>` | hash | the entry's URI and tags, to clean the indexes once it is gone |
/// | `{p}:jobs` | sorted set | every job, scored `priority × 10¹³ +` the time it is next available (ms): its run time while queued, its lease end while held, so a lapsed lease is ready again where it stands |
/// | `{p}:expiry` | sorted set | settled entries, scored by the end of their last window |
/// | `{p}:uris` | sorted set | `"<uri>\n<key hex>"` at score 0: purge by URI and prefix (lexical ranges) |
/// | `{p}:tag:<tag>` | set | keys whose content carries the tag (`Surrogate-Key`, `Cache-Tag`) |
/// | `{p}:ids` | string | counter for versions, job ids and lease tokens |
/// | `{p}:ch:done`, `{p}:ch:jobs` | channels | wake-ups: keys that settled; "a job may be ready" |
///
/// A settled entry carries a Redis TTL (its last window plus a minute), so memory stays
/// bounded even when no errand process runs; a pruner in every process removes entries as
/// their windows end, with their index records, in bounded batches. Pending entries (jobs)
/// never expire: acknowledged work is not lost to a TTL. For the same reason the store
/// refuses a Redis whose `maxmemory-policy` evicts keys without a TTL (`allkeys-*`): use
/// `noeviction` (the default) or a `volatile-*` policy.
///
/// **Redis Cluster is refused at start.** The scripts reach entries by keys computed from
/// their data, which a cluster cannot route; the shared hash tag keeps one deployment in one
/// slot, but errand does not speak the cluster protocol. Use one primary at one address.
///
/// Wake-ups: scripts publish on `{p}:ch:done` (a batch of settled keys in one message) and
/// `{p}:ch:jobs`; one subscriber connection per process fans them out to its waiters
/// (its wake-ups) and idle workers. Waiters and idle workers also look again every
/// [`RedisConfig::recheck`], so a missed message (a dropped subscriber connection) costs at
/// most that much delay, never a lost answer. A result stored by this process reaches its
/// own waiters with the settled entry, so they answer without reading it back.
///
/// Every call runs under [`RedisConfig::call_timeout`]; a Redis that is down gives
/// [`StoreError::Unavailable`] or [`StoreError::Timeout`] at once, and the connection comes
/// back by itself. Times are the store clock's milliseconds: keep the machines' clocks in sync
/// (NTP), as any lease-based queue requires.
pub struct RedisStore {
    conn: ConnectionManager,
    clock: Arc<dyn Clock>,
    config: RedisConfig,
    /// `{prefix}:`, the first argument of every script.
    tag: String,
    scripts: Arc<Scripts>,
    wakeups: Arc<Wakeups>,
    work: Arc<Notify>,
    subscriber: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &redact(&self.config.url))
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

impl RedisStore {
    /// Connects, checks that the server is usable (not a cluster, no eviction of keys without
    /// a TTL) and starts the subscriber. Fails at once if Redis cannot be reached: callers
    /// that want to wait for it retry.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unsuitable`] for a prefix, URL or TLS file that cannot work, a Redis
    /// Cluster, or an eviction policy that could drop jobs; [`StoreError::Unavailable`] or
    /// [`StoreError::Timeout`] when Redis cannot be reached.
    pub async fn connect(config: RedisConfig) -> Result<Self, StoreError> {
        Self::connect_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`connect`](Self::connect) with a clock of the caller's (tests).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with_clock(
        config: RedisConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        if !valid_prefix(&config.prefix) {
            return Err(StoreError::unsuitable(format!(
                "Redis key prefix {:?} must be 1-64 letters, digits, '_', '-', '.' or ':'",
                config.prefix
            )));
        }
        let named = |e: ::redis::RedisError| {
            StoreError::unavailable_because(format!("{}: {e}", redact(&config.url)), e)
        };
        // The redis crate's TLS (rediss://) uses rustls's process-wide provider: this build's
        // own (ring) unless the application installed one first.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Another thread may install one meanwhile; either way one is there after.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = config.client()?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.call_timeout))
            .set_response_timeout(Some(config.call_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = tokio::time::timeout(
            config.call_timeout,
            ConnectionManager::new_with_config(client.clone(), manager),
        )
        .await
        .map_err(|_| StoreError::Timeout(config.call_timeout))?
        .map_err(named)?;
        let tag = format!("{{{}}}:", config.prefix);
        let wakeups = Arc::new(Wakeups::default());
        let work = Arc::new(Notify::new());
        let subscriber = tokio::spawn(subscribe(
            client,
            config.url.clone(),
            tag.clone(),
            Arc::clone(&wakeups),
            Arc::clone(&work),
        ));
        let store = Self {
            conn,
            clock,
            tag,
            scripts: Arc::new(Scripts::new()),
            wakeups,
            work,
            subscriber,
            config,
        };
        store.check_server().await?;
        Ok(store)
    }

    /// The settings this store was made with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Refuses a server errand cannot keep its promises on.
    async fn check_server(&self) -> Result<(), StoreError> {
        let info = |section: &'static str| async move {
            let mut cmd = ::redis::cmd("INFO");
            cmd.arg(section);
            self.call(cmd).await
        };
        let cluster = text(&info("cluster").await?);
        if cluster.contains("cluster_enabled:1") {
            return Err(StoreError::unsuitable(format!(
                "{} is a Redis Cluster node; errand needs one standalone primary",
                redact(&self.config.url)
            )));
        }
        let memory = text(&info("memory").await?);
        if let Some(policy) = memory
            .lines()
            .find_map(|l| l.strip_prefix("maxmemory_policy:"))
            .filter(|p| p.trim().starts_with("allkeys"))
        {
            return Err(StoreError::unsuitable(format!(
                "{} evicts keys without a TTL (maxmemory-policy {}), which would lose queued \
                 jobs; use noeviction or a volatile-* policy",
                redact(&self.config.url),
                policy.trim()
            )));
        }
        // Load every script now, so a broken script fails here and not under load.
        for script in [
            &self.scripts.claim,
            &self.scripts.take,
            &self.scripts.heartbeat,
            &self.scripts.complete,
            &self.scripts.take_once,
            &self.scripts.purge,
            &self.scripts.prune,
            &self.scripts.stats,
        ] {
            let mut conn = self.conn.clone();
            timed(self.config.call_timeout, async move {
                script.load_async(&mut conn).await.map_err(redis_error)
            })
            .await?;
        }
        Ok(())
    }

    /// Deletes every key under this store's prefix (tests, retired tenants).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] or [`StoreError::Timeout`] when a command fails.
    pub async fn delete_all(&self) -> Result<u64, StoreError> {
        let pattern = format!("{}*", escape_glob(&self.tag));
        let mut cursor = 0u64;
        let mut deleted = 0;
        loop {
            let mut scan = ::redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let page = self.call(scan).await?;
            let Value::Array(parts) = page else {
                return Err(corrupt("SCAN reply"));
            };
            cursor = parts.first().and_then(int).unwrap_or(0);
            let keys: Vec<Vec<u8>> = match parts.get(1) {
                Some(Value::Array(keys)) => {
                    keys.iter().filter_map(bytes).map(<[u8]>::to_vec).collect()
                }
                _ => Vec::new(),
            };
            if !keys.is_empty() {
                let mut del = ::redis::cmd("DEL");
                del.arg(keys);
                deleted += self
                    .call(del)
                    .await
                    .ok()
                    .as_ref()
                    .and_then(int)
                    .unwrap_or(0);
            }
            if cursor == 0 {
                return Ok(deleted);
            }
        }
    }

    /// Removes up to `batch` entries whose every window has ended, with their index records;
    /// returns how many expiry records it looked at. Bounded, so it never blocks Redis for
    /// long; [`RedisStore::spawn_pruner`] calls it periodically.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] or [`StoreError::Timeout`] when the script fails.
    pub async fn prune(&self, batch: u64) -> Result<u64, StoreError> {
        let now = self.clock.now().0;
        let v = self
            .script(&self.scripts.prune, vec![Arg::Num(now), Arg::Num(batch)])
            .await?;
        Ok(int(&v).unwrap_or(0))
    }

    /// Prunes in batches of 1,000 every [`RedisConfig::prune_every`], until the store is
    /// dropped.
    pub fn spawn_pruner(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        super::spawn_pruner(self, self.config.prune_every)
    }
}

#[async_trait]
impl super::Prune for RedisStore {
    async fn prune_batch(&self, batch: u64) -> Result<u64, StoreError> {
        self.prune(batch).await
    }
}
