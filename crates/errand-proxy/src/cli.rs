//! The command line: `errand serve` and `errand work`. Every flag can also be given as an
//! `ERRAND_<FLAG>` environment variable (e.g. `ERRAND_UPSTREAM`, `ERRAND_CACHE_SIZE`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand};

/// errand: the Worker Pattern in front of any slow HTTP upstream.
///
/// The first GET of a URL answers `202 Accepted` at once while a worker fetches it from the
/// upstream; the next GET is served from the cache.
#[derive(Debug, Parser)]
#[command(name = "errand", version, about, long_about = None)]
pub(crate) struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The front (cache + queue) plus in-process workers.
    Serve(Serve),
    /// Workers only, sharing a backend with fronts elsewhere.
    Work(Work),
    /// Creates or upgrades the backend's schema, then exits (serve and work also do it on start).
    Migrate(Migrate),
    /// Shows a running errand's entry and queue counts (through its admin listener).
    Stats(StatsArgs),
    /// Purges entries of a running errand (through its admin listener).
    Purge(PurgeArgs),
    /// Runs a failed entry's job again now (through its admin listener).
    Retry(RetryArgs),
}

/// The admin listener of `serve` and `work`.
#[derive(Debug, Args)]
pub(crate) struct AdminFlags {
    /// Address of the admin listener (metrics, JSON API); off unless given. Off loopback it
    /// needs --admin-token.
    #[arg(long, env = "ERRAND_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Bearer token every admin request must carry.
    #[arg(long, env = "ERRAND_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Certificate chain (PEM) of the admin listener, with --admin-tls-key: it then speaks
    /// HTTPS only (TLS 1.2 and 1.3, HTTP/1.1 and HTTP/2), and reads the files again when they
    /// change or on SIGHUP.
    #[arg(long, env = "ERRAND_ADMIN_TLS_CERT", requires = "admin_tls_key")]
    pub admin_tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --admin-tls-cert.
    #[arg(long, env = "ERRAND_ADMIN_TLS_KEY", requires = "admin_tls_cert")]
    pub admin_tls_key: Option<PathBuf>,
}

/// How the admin verbs reach a running errand.
#[derive(Debug, Args)]
pub(crate) struct AdminClient {
    /// The admin listener's URL, e.g. http://127.0.0.1:9090 (https:// when it has a
    /// certificate).
    #[arg(long, env = "ERRAND_ADMIN", default_value = "http://127.0.0.1:9090")]
    pub admin: String,

    /// The CA certificate (PEM) an https:// admin listener's certificate is checked against,
    /// instead of the system's roots.
    #[arg(long, env = "ERRAND_ADMIN_CA_FILE")]
    pub admin_ca_file: Option<PathBuf>,

    /// The admin token, if the listener has one.
    #[arg(long, env = "ERRAND_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Print the JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// `errand stats`.
#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    #[command(flatten)]
    pub client: AdminClient,
}

/// `errand purge`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["key", "prefix", "tag", "uri"])))]
pub(crate) struct PurgeArgs {
    /// One entry, by its key (32 hex digits, as in the job log lines).
    #[arg(long)]
    pub key: Option<String>,
    /// Every entry whose canonical URI starts with this (e.g. http://example.com/reports/).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Every entry whose content carries this tag (from Surrogate-Key or Cache-Tag).
    #[arg(long)]
    pub tag: Option<String>,
    /// Every variant of one canonical URI.
    #[arg(long)]
    pub uri: Option<String>,
    /// Mark stale (served while one refresh runs) instead of removing.
    #[arg(long)]
    pub soft: bool,

    #[command(flatten)]
    pub client: AdminClient,
}

/// `errand retry`.
#[derive(Debug, Args)]
pub(crate) struct RetryArgs {
    /// The failed entry's key (32 hex digits, as in the job log lines and the dashboard).
    #[arg(long)]
    pub key: String,

    #[command(flatten)]
    pub client: AdminClient,
}

/// `errand migrate`.
#[derive(Debug, Args)]
pub(crate) struct Migrate {
    /// The shared backend (a postgres:// URL; a redis:// URL is checked and its scripts loaded).
    #[arg(long, env = "ERRAND_BACKEND")]
    pub backend: String,

    /// TOML file whose [backend] section names the schema or key prefix.
    #[arg(long, env = "ERRAND_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `errand serve`.
#[derive(Debug, Args)]
pub(crate) struct Serve {
    /// The slow HTTP service to put errand in front of: http://host:port, optionally with a base path.
    #[arg(long, env = "ERRAND_UPSTREAM")]
    pub upstream: String,

    /// Address to listen on.
    #[arg(long, env = "ERRAND_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with this certificate chain (PEM), reloaded
    /// when the file changes or on SIGHUP. Needs --tls-key.
    #[arg(long, env = "ERRAND_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "ERRAND_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Log one line per request (method, URI, status, Cache-Status, microseconds, trace id);
    /// off by default. The same as `ERRAND_LOG=info,errand::request=debug`.
    #[arg(long, env = "ERRAND_LOG_REQUESTS")]
    pub log_requests: bool,

    /// Where cache entries and jobs live: `memory` (this process only), or a postgres://,
    /// redis:// or rediss:// URL shared by fronts and workers on many machines.
    #[arg(long, env = "ERRAND_BACKEND", default_value = "memory")]
    pub backend: String,

    /// Jobs run at once by this process's workers; 0 runs the front only.
    #[arg(long, env = "ERRAND_WORKERS", default_value_t = 16)]
    pub workers: usize,

    /// Largest amount of memory the cache may hold (e.g. 256MiB, 2GiB).
    #[arg(long, env = "ERRAND_CACHE_SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub cache_size: u64,

    #[command(flatten)]
    pub route: RouteFlags,

    #[command(flatten)]
    pub jobs: JobFlags,

    /// Longest a client may wait with `Prefer: wait=N`.
    #[arg(long, env = "ERRAND_MAX_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub max_wait: Duration,

    /// Largest `Retry-After` given to clients (it adapts to observed job times below this).
    #[arg(long, env = "ERRAND_RETRY_AFTER_MAX", default_value = "30s", value_parser = parse_duration)]
    pub retry_after_max: Duration,

    /// TOML file of per-route rules and server limits (see docs/operator.md, "Configuration file").
    #[arg(long, env = "ERRAND_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub admin: AdminFlags,
}

/// `errand work`.
#[derive(Debug, Args)]
pub(crate) struct Work {
    /// The slow HTTP service the jobs call.
    #[arg(long, env = "ERRAND_UPSTREAM")]
    pub upstream: String,

    /// The backend shared with the fronts (a postgres:// or redis:// URL).
    #[arg(long, env = "ERRAND_BACKEND")]
    pub backend: String,

    /// Jobs run at once.
    #[arg(long, env = "ERRAND_WORKERS", default_value_t = 16)]
    pub workers: usize,

    #[command(flatten)]
    pub route: RouteFlags,

    #[command(flatten)]
    pub jobs: JobFlags,

    /// TOML file of per-route rules (the same file as the fronts').
    #[arg(long, env = "ERRAND_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub admin: AdminFlags,
}

/// Defaults of every route (a route in `--config` may override them).
#[derive(Debug, Args)]
pub(crate) struct RouteFlags {
    /// How long a response is fresh when the upstream's Cache-Control does not say.
    #[arg(long, env = "ERRAND_TTL", default_value = "60s", value_parser = parse_duration)]
    pub ttl: Duration,

    /// After freshness, how long the stale copy is served while one refresh runs.
    #[arg(long, env = "ERRAND_STALE", default_value = "60s", value_parser = parse_duration)]
    pub stale: Duration,

    /// After freshness, how long the stale copy is served while refreshes fail.
    #[arg(long, env = "ERRAND_STALE_IF_ERROR", default_value = "10m", value_parser = parse_duration)]
    pub stale_if_error: Duration,

    /// How long a URL whose job failed answers its error before a new job runs.
    #[arg(long, env = "ERRAND_ERROR_TTL", default_value = "10s", value_parser = parse_duration)]
    pub error_ttl: Duration,

    /// Requests that send no `Prefer` wait up to this long for their job, as if they had sent
    /// `Prefer: wait` (browsers and plain clients get the answer in one round trip);
    /// `Prefer: respond-async` still gets its 202 at once. Off by default.
    #[arg(long, env = "ERRAND_WAIT", value_parser = parse_duration)]
    pub wait: Option<Duration>,
}

/// How jobs run.
#[derive(Debug, Args)]
pub(crate) struct JobFlags {
    /// Attempts per job before its URL turns failed (5xx, timeouts and connection errors retry).
    #[arg(long, env = "ERRAND_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    /// Longest one upstream request may take, body included.
    #[arg(long, env = "ERRAND_JOB_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub job_timeout: Duration,

    /// Lease of a running job; renewed while it runs, so a dead worker's job runs elsewhere
    /// after at most this long.
    #[arg(long, env = "ERRAND_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub lease: Duration,

    /// Largest response body stored; larger responses are passed through.
    #[arg(long, env = "ERRAND_MAX_BODY", default_value = "8MiB", value_parser = parse_size)]
    pub max_body: u64,
}

/// Parses `500ms`, `10s`, `5m`, `1h 30m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{e} (expected a duration such as 500ms, 10s, 5m)"))
}

/// Parses `32MiB`, `1GB`, `4096`.
fn parse_size(text: &str) -> Result<u64, String> {
    text.parse::<ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{e} (expected a size such as 32MiB, 1GiB, 65536)"))
}
