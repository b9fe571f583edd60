//! The Redis store: many fronts and many workers share one Redis, in which **the pending
//! entry is the job**, as in every errand store.
//!
//! Every operation that changes more than one key is one server-side Lua script, so it is
//! atomic with respect to every other client:
//!
//! - `claim` creates the pending entry unless a live one exists (or refreshes the version the
//!   caller saw) and puts it in the ready set, in one step: however many fronts race, one
//!   wins and the others read its entry.
//! - `take` leases ready jobs (and jobs whose lease ran out) with a deadline and a fresh
//!   token, moving each job's place in the job set to its lease end. Nothing is popped: a
//!   worker that dies holds only a lease that runs out, and the job is taken again
//!   (at-least-once).
//! - `complete` checks the lease token (fencing), stores the result with its expiry and
//!   acknowledges the job in the same step; a batch of completions is one script call.
//! - `heartbeat` extends a held lease; `take_once`, `purge`, `stats`, `list` and the pruner are
//!   scripts too.
//!
//! # Key layout
//!
//! All keys start with the configured prefix inside a hash tag, `{errand}:` by default, so
//! tenants and tests sharing one Redis never collide:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{p}:e:<key hex>` | hash | one entry: its URI, version, job fields while pending, content, verdict |
//! | `{p}:i:<key hex>` | hash | the entry's URI and tags, to clean the indexes once it is gone |
//! | `{p}:jobs` | sorted set | every job, scored `priority × 10¹³ +` the time it is next available (ms): its run time while queued, its lease end while held, so a lapsed lease is ready again where it stands |
//! | `{p}:expiry` | sorted set | settled entries, scored by the end of their last window |
//! | `{p}:uris` | sorted set | `"<uri>\n<key hex>"` at score 0: purge by URI and prefix (lexical ranges) |
//! | `{p}:tag:<tag>` | set | keys whose content carries the tag (`Surrogate-Key`, `Cache-Tag`) |
//! | `{p}:ids` | string | counter for versions, job ids and lease tokens |
//! | `{p}:ch:done`, `{p}:ch:jobs` | channels | wake-ups: keys that settled; "a job may be ready" |
//!
//! A settled entry carries a Redis TTL (its last window plus a minute), so memory stays
//! bounded even when no errand process runs; a pruner in every process removes entries as
//! their windows end, with their index records, in bounded batches. Pending entries (jobs)
//! never expire: acknowledged work is not lost to a TTL. For the same reason the store
//! refuses a Redis whose `maxmemory-policy` evicts keys without a TTL (`allkeys-*`): use
//! `noeviction` (the default) or a `volatile-*` policy.
//!
//! **Redis Cluster is refused at start.** The scripts reach entries by keys computed from
//! their data, which a cluster cannot route; the shared hash tag keeps one deployment in one
//! slot, but errand does not speak the cluster protocol. Use one primary at one address.
//!
//! Wake-ups: scripts publish on `{p}:ch:done` (a batch of settled keys in one message) and
//! `{p}:ch:jobs`; one subscriber connection per process fans them out to its waiters
//! ([`Wakeups`]) and idle workers. Waiters and idle workers also look again every
//! [`RedisConfig::recheck`], so a missed message (a dropped subscriber connection) costs at
//! most that much delay, never a lost answer. A result stored by this process reaches its
//! own waiters with the settled entry, so they answer without reading it back.
//!
//! Every call runs under [`RedisConfig::call_timeout`]; a Redis that is down gives
//! [`StoreError::Unavailable`] or [`StoreError::Timeout`] at once, and the connection comes
//! back by itself. Times are the store clock's milliseconds: keep the machines' clocks in sync
//! (NTP), as any lease-based queue requires.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ClientTlsConfig, Script, TlsCertificates, Value};
use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::Notify;

use super::Inspect;
use super::codec::{decode_headers, encode_headers};
use super::{
    Claim, ClaimOutcome, Clock, Completion, Job, LeaseToken, ListPage, ListQuery, Purge,
    PurgeTarget, Stats, Store, StoreError, SystemClock, Wakeups, timed,
};
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
}

impl RedisConfig {
    /// Defaults for `url`: prefix `errand`, 5 s per call, recheck every 1 s, 10,000 pending.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
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
        let named = |e: ::redis::RedisError| unavailable(format!("{shown}: {e}"));
        if self.ca_file.is_none() && self.client_cert.is_none() {
            return Client::open(self.url.as_str()).map_err(named);
        }
        if !self.url.starts_with("rediss://") {
            return Err(StoreError::Unsuitable(format!(
                "{shown}: a CA file or a client certificate needs TLS: use a rediss:// URL"
            )));
        }
        let unsuitable = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
            StoreError::Unsuitable(format!("{what} {}: {e}", path.display()))
        };
        let read =
            |what: &str, path: &Path| std::fs::read(path).map_err(|e| unsuitable(what, path, &e));
        // The redis crate takes a file without a certificate as no roots at all: check here.
        let certs = |what: &str, path: &Path| {
            let pem = read(what, path)?;
            let found = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| unsuitable(what, path, &e))?;
            if found.is_empty() {
                return Err(unsuitable(what, path, &"holds no PEM certificate"));
            }
            Ok(pem)
        };
        let root_cert = self
            .ca_file
            .as_deref()
            .map(|path| certs("Redis CA file", path))
            .transpose()?;
        let client_tls = match &self.client_cert {
            Some((cert, key)) => {
                let client_key = read("Redis client key", key)?;
                PrivateKeyDer::from_pem_slice(&client_key)
                    .map_err(|e| unsuitable("Redis client key", key, &e))?;
                Some(ClientTlsConfig {
                    client_cert: certs("Redis client certificate", cert)?,
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
        .map_err(|e| StoreError::Unsuitable(format!("{shown}: Redis TLS files: {e}")))
    }
}

/// The scripts, each with the shared prelude.
#[derive(Debug)]
struct Scripts {
    claim: Script,
    take: Script,
    heartbeat: Script,
    complete: Script,
    take_once: Script,
    purge: Script,
    prune: Script,
    stats: Script,
    list: Script,
}

impl Scripts {
    fn new() -> Self {
        let with = |body: &str| Script::new(&format!("{}\n{body}", include_str!("prelude.lua")));
        Self {
            claim: with(include_str!("claim.lua")),
            take: with(include_str!("take.lua")),
            heartbeat: with(include_str!("heartbeat.lua")),
            complete: with(include_str!("complete.lua")),
            take_once: with(include_str!("take_once.lua")),
            purge: with(include_str!("purge.lua")),
            prune: with(include_str!("prune.lua")),
            stats: with(include_str!("stats.lua")),
            list: with(include_str!("list.lua")),
        }
    }
}

/// The Redis store. See the [module docs](self).
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

pub use super::redact;

/// Checks that `url` is a Redis URL this build can use, without connecting; the error says
/// why not (and never shows the password).
pub fn check_url(url: &str) -> Result<(), String> {
    Client::open(url)
        .map(|_| ())
        .map_err(|e| format!("{} is not a valid Redis URL: {e}", redact(url)))
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
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
    pub async fn connect(config: RedisConfig) -> Result<Self, StoreError> {
        Self::connect_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`connect`](Self::connect) with a clock of the caller's (tests).
    pub async fn connect_with_clock(
        config: RedisConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        if !valid_prefix(&config.prefix) {
            return Err(StoreError::Unsuitable(format!(
                "Redis key prefix {:?} must be 1-64 letters, digits, '_', '-', '.' or ':'",
                config.prefix
            )));
        }
        let named = |e: ::redis::RedisError| unavailable(format!("{}: {e}", redact(&config.url)));
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
            return Err(StoreError::Unsuitable(format!(
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
            return Err(StoreError::Unsuitable(format!(
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

    /// Runs one command under the call timeout.
    async fn call(&self, cmd: ::redis::Cmd) -> Result<Value, StoreError> {
        let mut conn = self.conn.clone();
        timed(self.config.call_timeout, async move {
            cmd.query_async(&mut conn).await.map_err(redis_error)
        })
        .await
    }

    /// Runs a pipeline of commands in one round trip, under the call timeout.
    async fn pipeline(&self, pipe: ::redis::Pipeline) -> Result<Vec<Value>, StoreError> {
        let mut conn = self.conn.clone();
        timed(self.config.call_timeout, async move {
            pipe.query_async(&mut conn).await.map_err(redis_error)
        })
        .await
    }

    /// Runs one script with `args` after the prefix, under the call timeout.
    async fn script(&self, script: &Script, args: Vec<Arg<'_>>) -> Result<Value, StoreError> {
        let mut invocation = script.prepare_invoke();
        invocation.arg(&self.tag);
        for arg in &args {
            match arg {
                Arg::Text(s) => invocation.arg(s.as_bytes()),
                Arg::Owned(b) => invocation.arg(b.as_slice()),
                Arg::Bytes(b) => invocation.arg(*b),
                Arg::Num(n) => invocation.arg(*n),
            };
        }
        let mut conn = self.conn.clone();
        timed(self.config.call_timeout, async move {
            invocation
                .invoke_async::<Value>(&mut conn)
                .await
                .map_err(redis_error)
        })
        .await
    }

    /// Removes up to `batch` entries whose every window has ended, with their index records;
    /// returns how many expiry records it looked at. Bounded, so it never blocks Redis for
    /// long; [`RedisStore::spawn_pruner`] calls it periodically.
    pub async fn prune(&self, batch: u64) -> Result<u64, StoreError> {
        let now = self.clock.now().0;
        let v = self
            .script(&self.scripts.prune, vec![Arg::Num(now), Arg::Num(batch)])
            .await?;
        Ok(int(&v).unwrap_or(0))
    }

    /// Prunes in batches of 1,000 every `every`, until the store is dropped.
    pub fn spawn_pruner(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        super::spawn_pruner(self, every)
    }
}

#[async_trait]
impl super::Prune for RedisStore {
    async fn prune_batch(&self, batch: u64) -> Result<u64, StoreError> {
        self.prune(batch).await
    }
}

/// One script argument.
enum Arg<'a> {
    Text(&'a str),
    Owned(Vec<u8>),
    Bytes(&'a [u8]),
    Num(u64),
}

/// The latest time (ms since the epoch, in the year 5138) given to a script. Lua keeps numbers
/// as doubles and writes them back with `%.14g`, so a larger integer would come back as
/// `1e+14`: `PEXPIRE` would refuse it part-way through a script, and a field holding it could
/// not be read again. Lifetimes are clamped long before this (2^31 s, RFC 9111 §1.2.2); the
/// bound keeps any [`Completion`] a caller builds within what the scripts can apply whole.
const LATEST_FOR_LUA: u64 = 99_999_999_999_999;

/// A time as a script argument, bounded by [`LATEST_FOR_LUA`].
fn time_arg<'a>(t: Timestamp) -> Arg<'a> {
    Arg::Num(t.0.min(LATEST_FOR_LUA))
}

fn redis_error(e: ::redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '{' | '}') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Keeps one subscriber connection, reconnecting with backoff; fans messages out.
async fn subscribe(
    client: Client,
    url: String,
    tag: String,
    wakeups: Arc<Wakeups>,
    work: Arc<Notify>,
) {
    let (done, jobs) = (format!("{tag}ch:done"), format!("{tag}ch:jobs"));
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&done).await?;
            pubsub.subscribe(&jobs).await?;
            Ok::<_, ::redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(5), connected).await {
            Ok(Ok(pubsub)) => {
                backoff = Duration::from_millis(100);
                // Anything may have happened while no one listened.
                wakeups.listening(true);
                work.notify_waiters();
                let mut stream = pubsub.into_on_message();
                while let Some(msg) = next(&mut stream).await {
                    if msg.get_channel_name() == jobs {
                        work.notify_waiters();
                    } else {
                        let payload = msg.get_payload_bytes();
                        for hex in payload.split(|b| *b == b',') {
                            if let Some(key) = std::str::from_utf8(hex).ok().and_then(Key::parse) {
                                wakeups.wake(&key);
                            }
                        }
                    }
                }
                wakeups.listening(false);
                tracing::warn!(url = %redact(&url), "Redis subscriber connection lost; reconnecting");
            }
            Ok(Err(e)) => {
                tracing::warn!(url = %redact(&url), error = %e, "cannot open the Redis subscriber connection");
            }
            Err(_) => {
                tracing::warn!(url = %redact(&url), "opening the Redis subscriber connection timed out");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn next<S: futures_core::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

// ---- reading replies ----

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => bytes(other)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse().ok()),
    }
}

fn signed(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => bytes(other)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse().ok()),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::VerbatimString { text, .. } => text.clone(),
        other => bytes(other)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default(),
    }
}

fn array(v: &Value) -> Result<&[Value], StoreError> {
    match v {
        Value::Array(items) => Ok(items),
        _ => Err(corrupt("expected an array reply")),
    }
}

/// An entry hash as field/value pairs (`HGETALL`).
struct Fields<'a>(Vec<(&'a [u8], &'a [u8])>);

impl<'a> Fields<'a> {
    fn of(v: &'a Value) -> Result<Self, StoreError> {
        let mut pairs = Vec::with_capacity(32);
        match v {
            Value::Array(items) => {
                for pair in items.chunks(2) {
                    if let [k, v] = pair {
                        pairs.push((
                            bytes(k).ok_or_else(|| corrupt("field name"))?,
                            bytes(v).ok_or_else(|| corrupt("field value"))?,
                        ));
                    }
                }
            }
            Value::Map(items) => {
                for (k, v) in items {
                    pairs.push((
                        bytes(k).ok_or_else(|| corrupt("field name"))?,
                        bytes(v).ok_or_else(|| corrupt("field value"))?,
                    ));
                }
            }
            _ => return Err(corrupt("entry reply")),
        }
        Ok(Self(pairs))
    }

    fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.0
            .iter()
            .find(|(k, _)| *k == name.as_bytes())
            .map(|(_, v)| *v)
    }

    fn str(&self, name: &str) -> Option<&'a str> {
        self.get(name).and_then(|b| std::str::from_utf8(b).ok())
    }

    fn num(&self, name: &str) -> Option<u64> {
        self.str(name).and_then(parse_number)
    }

    fn ts(&self, name: &str) -> Timestamp {
        Timestamp(self.num(name).unwrap_or(0))
    }

    fn response(
        &self,
        status: &str,
        headers: &str,
        body: &str,
    ) -> Result<Option<Arc<StoredResponse>>, StoreError> {
        let Some(status) = self.num(status) else {
            return Ok(None);
        };
        response(
            status,
            self.get(headers).unwrap_or_default(),
            self.get(body).unwrap_or_default(),
        )
        .map(Some)
    }

    fn entry(&self) -> Result<Entry, StoreError> {
        let key = self.key()?;
        let content = self.response("cs", "ch", "cb")?.map(|response| Content {
            response,
            generated_at: self.ts("cg"),
            fresh_until: self.ts("cf"),
            stale_until: self.ts("cst"),
            stale_if_error_until: self.ts("csi"),
            tags: self
                .str("tg")
                .filter(|t| !t.is_empty())
                .map(|t| t.split('\u{1f}').map(str::to_owned).collect())
                .unwrap_or_default(),
            job_millis: self.num("cj").unwrap_or(0),
        });
        let status = if self.get("p") == Some(b"1") {
            Status::Pending(JobInfo {
                id: JobId(self.num("j").unwrap_or(0)),
                priority: priority(self.num("pr").unwrap_or(0)),
                created_at: self.ts("ca"),
                run_at: self.ts("ra"),
                attempts: u32::try_from(self.num("at").unwrap_or(0)).unwrap_or(u32::MAX),
                lease_until: self.num("lu").map(Timestamp),
                last_error: self.str("le").map(str::to_owned),
                after_failure: self.get("af") == Some(b"1"),
            })
        } else {
            let until = self.ts("vu");
            let verdict = self.response("vs", "vh", "vb")?;
            let reason = self.str("vt").unwrap_or_default().to_owned();
            match self.get("vk") {
                Some(b"1") => Status::Failed(Failure {
                    until,
                    response: verdict.ok_or_else(|| corrupt("failure without a response"))?,
                    error: reason,
                    attempts: u32::try_from(self.num("va").unwrap_or(0)).unwrap_or(u32::MAX),
                    at: self.ts("vat"),
                    request: self
                        .get("rq")
                        .filter(|r| !r.is_empty())
                        .map(serde_json::from_slice)
                        .transpose()
                        .map_err(|e| corrupt(&format!("failed request: {e}")))?,
                }),
                Some(b"2") => Status::Pass(PassInfo {
                    until,
                    once: verdict,
                    reason,
                }),
                _ => Status::Idle,
            }
        };
        Ok(Entry {
            key,
            uri: self.str("u").unwrap_or_default().into(),
            version: self.num("v").unwrap_or(0),
            content,
            status,
        })
    }

    /// The key is not a field; it is put in by [`RedisStore::read_entry`].
    fn key(&self) -> Result<Key, StoreError> {
        self.str("key")
            .and_then(Key::parse)
            .ok_or_else(|| corrupt("key"))
    }
}

/// Numbers written by Lua come back as integers, or (for large ones) in `%.17g` form.
fn parse_number(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().or_else(|| {
        s.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

fn response(status: u64, headers: &[u8], body: &[u8]) -> Result<Arc<StoredResponse>, StoreError> {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| corrupt("status"))?;
    Ok(Arc::new(StoredResponse {
        status,
        headers: decode_headers(headers).ok_or_else(|| corrupt("headers"))?,
        body: Bytes::copy_from_slice(body),
    }))
}

fn priority(v: u64) -> Priority {
    if v == Priority::Refresh as u64 {
        Priority::Refresh
    } else {
        Priority::Miss
    }
}

impl RedisStore {
    /// Reads an entry from an `HGETALL` reply.
    fn read_entry(key: &Key, reply: &Value) -> Result<Option<Entry>, StoreError> {
        let hex = key.to_hex();
        let mut fields = Fields::of(reply)?;
        if fields.0.is_empty() {
            return Ok(None);
        }
        fields.0.push((b"key", hex.as_bytes()));
        fields.entry().map(Some)
    }

    /// One completion as the 13 arguments `complete.lua` reads.
    fn completion_args<'a>(
        lease: &LeaseToken,
        completion: &'a Completion,
        args: &mut Vec<Arg<'a>>,
    ) {
        args.push(Arg::Owned(lease.key.to_hex().into_bytes()));
        args.push(Arg::Num(lease.job.0));
        args.push(Arg::Num(lease.token));
        let blank = |args: &mut Vec<Arg<'a>>, n: usize| {
            for _ in 0..n {
                args.push(Arg::Text(""));
            }
        };
        match completion {
            Completion::Store(c) => {
                let r = &c.response;
                args.push(Arg::Text("s"));
                args.push(Arg::Num(u64::from(r.status.as_u16())));
                args.push(Arg::Owned(encode_headers(&r.headers)));
                args.push(Arg::Bytes(&r.body));
                args.push(time_arg(c.generated_at));
                args.push(time_arg(c.fresh_until));
                args.push(time_arg(c.stale_until));
                args.push(time_arg(c.stale_if_error_until));
                args.push(Arg::Num(c.job_millis));
                args.push(Arg::Owned(c.tags.join("\u{1f}").into_bytes()));
            }
            Completion::Fail(f) => {
                let r = &f.response;
                args.push(Arg::Text("f"));
                args.push(Arg::Num(u64::from(r.status.as_u16())));
                args.push(Arg::Owned(encode_headers(&r.headers)));
                args.push(Arg::Bytes(&r.body));
                args.push(time_arg(f.until));
                args.push(Arg::Num(u64::from(f.attempts)));
                args.push(time_arg(f.at));
                blank(args, 2);
                args.push(Arg::Text(&f.error));
            }
            Completion::Pass(p) => {
                args.push(Arg::Text("p"));
                match &p.once {
                    Some(r) => {
                        args.push(Arg::Num(u64::from(r.status.as_u16())));
                        args.push(Arg::Owned(encode_headers(&r.headers)));
                        args.push(Arg::Bytes(&r.body));
                    }
                    None => blank(args, 3),
                }
                args.push(time_arg(p.until));
                blank(args, 4);
                args.push(Arg::Text(&p.reason));
            }
            Completion::Retry { run_at, error } => {
                args.push(Arg::Text("r"));
                blank(args, 3);
                args.push(time_arg(*run_at));
                blank(args, 4);
                args.push(Arg::Text(error));
            }
        }
    }
}

#[async_trait]
impl Inspect for RedisStore {
    async fn stats(&self) -> Result<Stats, StoreError> {
        let now = self.now().0;
        let mut stats = Stats::default();
        let mut cursor = String::new();
        let mut first = true;
        loop {
            let reply = self
                .script(
                    &self.scripts.stats,
                    vec![Arg::Num(now), Arg::Text(&cursor), Arg::Num(1000)],
                )
                .await?;
            let parts = array(&reply)?;
            let n = |i: usize| parts.get(i).and_then(int).unwrap_or(0);
            stats.fresh += n(1);
            stats.stale += n(2);
            stats.pending += n(3);
            stats.failed += n(4);
            stats.pass += n(5);
            stats.bytes += n(6);
            if first {
                first = false;
                stats.ready = n(7);
                stats.scheduled = n(8);
                stats.running = n(9);
                stats.oldest_ready_ms = parts
                    .get(10)
                    .and_then(signed)
                    .filter(|t| *t >= 0)
                    .map_or(0, |t| now.saturating_sub(u64::try_from(t).unwrap_or(now)));
            }
            cursor = parts.first().map(text).unwrap_or_default();
            if cursor.is_empty() {
                return Ok(stats);
            }
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        let cursor = query.after.clone().unwrap_or_default();
        if !cursor.is_empty()
            && cursor
                .rsplit_once('\n')
                .is_none_or(|(_, hex)| Key::parse(hex).is_none())
        {
            return Err(StoreError::Invalid(format!(
                "{cursor:?} is not a cursor of this store"
            )));
        }
        let limit = query.limit.max(1) as u64;
        let state = query.state.map_or("", State::as_str);
        // One script call walks at most this many index records, so a listing of a rare
        // state never holds Redis for long; the caller follows `next`.
        let budget = (limit * 20).clamp(1_000, 10_000);
        let reply = self
            .script(
                &self.scripts.list,
                vec![
                    Arg::Num(self.now().0),
                    Arg::Text(&cursor),
                    Arg::Num(limit),
                    Arg::Text(state),
                    Arg::Num(budget),
                ],
            )
            .await?;
        let parts = array(&reply)?;
        let keys = parts.first().map(array).transpose()?.unwrap_or_default();
        let next = parts.get(1).map(text).filter(|c| !c.is_empty());
        let keys = keys
            .iter()
            .map(|k| Key::parse(&text(k)).ok_or_else(|| corrupt("listed key")))
            .collect::<Result<Vec<_>, _>>()?;
        // The entries themselves, in one round trip.
        let mut pipe = ::redis::pipe();
        for key in &keys {
            pipe.cmd("HGETALL")
                .arg(format!("{}e:{}", self.tag, key.to_hex()));
        }
        let replies: Vec<Value> = if keys.is_empty() {
            Vec::new()
        } else {
            self.pipeline(pipe).await?
        };
        let mut entries = Vec::with_capacity(keys.len());
        for (key, reply) in keys.iter().zip(&replies) {
            // An entry that settled, expired or was purged since the walk is skipped.
            if let Some(entry) = Self::read_entry(key, reply)?
                && query.state.is_none_or(|s| entry.state(self.now()) == s)
            {
                entries.push(entry);
            }
        }
        Ok(ListPage { entries, next })
    }
}

#[async_trait]
impl Store for RedisStore {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    async fn lookup(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        let mut cmd = ::redis::cmd("HGETALL");
        cmd.arg(format!("{}e:{}", self.tag, key.to_hex()));
        let reply = self.call(cmd).await?;
        let now = self.now();
        Ok(Self::read_entry(key, &reply)?.filter(|e| e.expires_at().is_none_or(|x| x > now)))
    }

    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
        let request = serde_json::to_string(&claim.request).map_err(|e| corrupt(&e.to_string()))?;
        let expect = claim.expect.map(|v| v.to_string()).unwrap_or_default();
        let now = self.now();
        let reply = self
            .script(
                &self.scripts.claim,
                vec![
                    Arg::Owned(claim.key.to_hex().into_bytes()),
                    Arg::Text(&claim.uri),
                    Arg::Num(claim.priority as u64),
                    Arg::Num(now.0),
                    Arg::Text(&request),
                    Arg::Text(&expect),
                    Arg::Num(u64::try_from(self.config.max_pending).unwrap_or(u64::MAX)),
                ],
            )
            .await?;
        let parts = array(&reply)?;
        if let [refused, pending] = parts
            && int(refused) == Some(2)
        {
            return Err(StoreError::Full(int(pending).unwrap_or(0)));
        }
        let won = parts.first().and_then(int) == Some(1);
        let entry = match parts {
            // A new entry: the script returns its version and job id only.
            [_, version, job] => Entry {
                key: claim.key,
                uri: claim.uri.as_str().into(),
                version: int(version).ok_or_else(|| corrupt("claim version"))?,
                content: None,
                status: Status::Pending(JobInfo::claimed(
                    JobId(int(job).ok_or_else(|| corrupt("claim job"))?),
                    claim.priority,
                    now,
                    false,
                )),
            },
            [_, fields] => {
                Self::read_entry(&claim.key, fields)?.ok_or_else(|| corrupt("claim entry"))?
            }
            _ => return Err(corrupt("claim reply")),
        };
        if won {
            // Workers of this process at once; those elsewhere through pub/sub.
            self.work.notify_waiters();
            Ok(ClaimOutcome::Enqueued(entry))
        } else {
            Ok(ClaimOutcome::Exists(entry))
        }
    }

    async fn take(&self, max: usize, lease: Duration) -> Result<Vec<Job>, StoreError> {
        let now = self.now();
        let until = now.plus(lease);
        let reply = self
            .script(
                &self.scripts.take,
                vec![
                    Arg::Num(now.0),
                    Arg::Num(u64::try_from(max).unwrap_or(u64::MAX)),
                    Arg::Num(until.0),
                ],
            )
            .await?;
        let mut jobs = Vec::new();
        for job in array(&reply)? {
            let f = array(job)?;
            let field = |i: usize| f.get(i).ok_or_else(|| corrupt("take reply"));
            let key = Key::parse(&text(field(0)?)).ok_or_else(|| corrupt("key"))?;
            let request: RequestRecord = serde_json::from_slice(
                bytes(field(3)?).ok_or_else(|| corrupt("job without a request"))?,
            )
            .map_err(|e| corrupt(&e.to_string()))?;
            let run_at = int(field(7)?).unwrap_or(0);
            jobs.push((
                run_at,
                Job {
                    lease: LeaseToken {
                        key,
                        job: JobId(int(field(1)?).unwrap_or(0)),
                        token: int(field(2)?).ok_or_else(|| corrupt("lease token"))?,
                    },
                    lease_until: until,
                    request,
                    priority: priority(int(field(4)?).unwrap_or(0)),
                    attempt: u32::try_from(int(field(5)?).unwrap_or(1)).unwrap_or(u32::MAX),
                    created_at: Timestamp(int(field(6)?).unwrap_or(0)),
                    redelivered: int(field(8)?) == Some(1),
                },
            ));
        }
        jobs.sort_by_key(|(run_at, job)| (job.priority, *run_at));
        Ok(jobs.into_iter().map(|(_, job)| job).collect())
    }

    async fn heartbeat(
        &self,
        lease: &LeaseToken,
        extend: Duration,
    ) -> Result<Timestamp, StoreError> {
        let until = self.now().plus(extend);
        let reply = self
            .script(
                &self.scripts.heartbeat,
                vec![
                    Arg::Owned(lease.key.to_hex().into_bytes()),
                    Arg::Num(lease.job.0),
                    Arg::Num(lease.token),
                    Arg::Num(until.0),
                ],
            )
            .await?;
        if int(&reply) == Some(1) {
            Ok(until)
        } else {
            Err(StoreError::LeaseLost)
        }
    }

    async fn complete(&self, jobs: Vec<(LeaseToken, Completion)>) -> Vec<Result<(), StoreError>> {
        if jobs.is_empty() {
            return Vec::new();
        }
        let mut args = Vec::with_capacity(1 + jobs.len() * 13);
        args.push(Arg::Num(self.now().0));
        for (lease, completion) in &jobs {
            Self::completion_args(lease, completion, &mut args);
        }
        let reply = self.script(&self.scripts.complete, args).await;
        // Per job: 0, lease lost; 1, done; a string, a stored result done, and its URI.
        let done: Result<Vec<Option<Option<String>>>, StoreError> = reply.and_then(|v| {
            let flags: Vec<_> = array(&v)?
                .iter()
                .map(|f| match f {
                    Value::Int(1) => Some(None),
                    Value::Int(_) => None,
                    uri => Some(Some(text(uri)).filter(|u| !u.is_empty())),
                })
                .collect();
            if flags.len() == jobs.len() {
                Ok(flags)
            } else {
                Err(corrupt("complete reply"))
            }
        });
        let now = self.now();
        match done {
            Ok(flags) => jobs
                .into_iter()
                .zip(flags)
                .map(|((lease, completion), done)| {
                    let Some(uri) = done else {
                        return Err(StoreError::LeaseLost);
                    };
                    // Waiters of this process at once, with the entry when it is known, so
                    // they need no read; those elsewhere through pub/sub.
                    match (completion, uri) {
                        (Completion::Retry { .. }, _) => {}
                        (Completion::Store(content), Some(uri)) if content.expires_at() > now => {
                            self.wakeups.wake_settled(Entry {
                                key: lease.key,
                                uri: uri.into(),
                                // The lease token becomes the entry's version.
                                version: lease.token,
                                content: Some(content),
                                status: Status::Idle,
                            });
                        }
                        _ => self.wakeups.wake(&lease.key),
                    }
                    Ok(())
                })
                .collect(),
            Err(e) => {
                let text = e.to_string();
                jobs.iter()
                    .map(|_| Err(StoreError::Unavailable(text.clone())))
                    .collect()
            }
        }
    }

    async fn wait(
        &self,
        key: &Key,
        seen: Option<std::time::Instant>,
        timeout: Duration,
    ) -> Result<Option<Entry>, StoreError> {
        self.wakeups
            .wait_settled_since(key, seen, timeout, Some(self.config.recheck), || {
                self.lookup(key)
            })
            .await
    }

    async fn wait_for_jobs(&self, timeout: Duration) -> Result<(), StoreError> {
        let notified = self.work.notified();
        let _ = tokio::time::timeout(timeout.min(self.config.recheck), notified).await;
        Ok(())
    }

    async fn take_once(&self, key: &Key) -> Result<Option<Arc<StoredResponse>>, StoreError> {
        let reply = self
            .script(
                &self.scripts.take_once,
                vec![
                    Arg::Owned(key.to_hex().into_bytes()),
                    Arg::Num(self.now().0),
                ],
            )
            .await?;
        if matches!(reply, Value::Nil) {
            return Ok(None);
        }
        let parts = array(&reply)?;
        let (Some(status), Some(headers), Some(body)) = (
            parts.first().and_then(int),
            parts.get(1).and_then(bytes),
            parts.get(2).and_then(bytes),
        ) else {
            return Err(corrupt("take_once reply"));
        };
        response(status, headers, body).map(Some)
    }

    async fn purge(&self, purge: Purge) -> Result<u64, StoreError> {
        let (mode, target, mut cursor) = match &purge.target {
            PurgeTarget::Key(key) => ("k", key.to_hex(), String::new()),
            PurgeTarget::Uri(uri) => ("l", format!("{uri}\n"), String::new()),
            PurgeTarget::Prefix(prefix) => ("l", prefix.clone(), String::new()),
            PurgeTarget::Tag(tag) => ("t", tag.clone(), "0".to_owned()),
            PurgeTarget::All => ("l", String::new(), String::new()),
        };
        let soft = if purge.soft { "1" } else { "0" };
        let mut total = 0;
        loop {
            let reply = self
                .script(
                    &self.scripts.purge,
                    vec![
                        Arg::Num(self.now().0),
                        Arg::Text(soft),
                        Arg::Text(mode),
                        Arg::Text(&target),
                        Arg::Text(&cursor),
                        Arg::Num(500),
                    ],
                )
                .await?;
            let parts = array(&reply)?;
            total += parts.first().and_then(int).unwrap_or(0);
            cursor = parts.get(1).map(text).unwrap_or_default();
            if cursor.is_empty() {
                return Ok(total);
            }
        }
    }
}
