//! From command line and `--config` file to errand's [`Config`]: validation with messages
//! that name the flag or the file key at fault.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use errand::config::{Config, Mode, PathPattern, Route, RoutePolicy};
use errand::pattern::Windows;
use http::HeaderName;
use serde::Deserialize;

use crate::cli::{JobFlags, RouteFlags};

/// The `--config` TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    /// Server limits.
    #[serde(default)]
    pub server: ServerSection,
    /// Routes, first match wins.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSection>,
    /// The shared backend's settings.
    #[serde(default)]
    pub backend: BackendSection,
    /// How jobs and pass-through requests reach the upstream.
    #[serde(default)]
    pub upstream: UpstreamSection,
}

/// `[upstream]`: the client side of an `https://` upstream, and its connection pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamSection {
    /// Roots (PEM) the upstream's certificate is checked against, instead of the system's
    /// (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for upstreams that ask for one, with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The key (PEM) of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Skips every check of the upstream's certificate. For a test bench only: anyone on the
    /// path can then read and change what errand fetches and stores.
    #[serde(default)]
    pub danger_accept_invalid_certs: bool,
    /// Idle connections kept open to the upstream for reuse.
    #[serde(default = "default_max_idle_connections")]
    pub max_idle_connections: usize,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        Self {
            ca_file: None,
            cert_file: None,
            key_file: None,
            danger_accept_invalid_certs: false,
            max_idle_connections: default_max_idle_connections(),
        }
    }
}

fn default_max_idle_connections() -> usize {
    64
}

/// `[backend]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackendSection {
    /// PostgreSQL schema holding errand's table (one per deployment or tenant).
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Redis key prefix: every key starts with `{prefix}:` (one per deployment or tenant).
    #[serde(default = "default_schema")]
    pub prefix: String,
    /// PostgreSQL connections per process.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// A PostgreSQL connection unused this long is closed (at least 1 s).
    #[serde(default = "default_pool_idle", with = "duration")]
    pub pool_idle: Duration,
    /// Upper bound of every backend call.
    #[serde(default = "default_call_timeout", with = "duration")]
    pub call_timeout: Duration,
    /// How long a front serves its in-process copy of a fresh entry without asking the
    /// backend ("0s" turns the copy off): a purge made elsewhere is seen within it.
    #[serde(default = "default_l1_ttl", with = "duration")]
    pub l1_ttl: Duration,
    /// PostgreSQL wake-ups through LISTEN/NOTIFY; false = poll-only mode (for poolers that
    /// break LISTEN).
    #[serde(default = "default_listen")]
    pub listen: bool,
    /// How often waiters and idle workers look again without a notification.
    #[serde(default = "default_recheck", with = "duration")]
    pub recheck: Duration,
    /// With a `rediss://` backend: the roots (PEM) the server's certificate is checked
    /// against, instead of the Mozilla root store. (PostgreSQL takes `sslrootcert` in its URL.)
    #[serde(default)]
    pub redis_ca_file: Option<PathBuf>,
    /// With a `rediss://` backend: a client certificate (PEM), with `redis_key_file`.
    #[serde(default)]
    pub redis_cert_file: Option<PathBuf>,
    /// The key (PEM) of `redis_cert_file`.
    #[serde(default)]
    pub redis_key_file: Option<PathBuf>,
}

impl Default for BackendSection {
    fn default() -> Self {
        Self {
            schema: default_schema(),
            prefix: default_schema(),
            pool_size: default_pool_size(),
            pool_idle: default_pool_idle(),
            call_timeout: default_call_timeout(),
            l1_ttl: default_l1_ttl(),
            listen: default_listen(),
            recheck: default_recheck(),
            redis_ca_file: None,
            redis_cert_file: None,
            redis_key_file: None,
        }
    }
}

fn default_schema() -> String {
    "errand".into()
}
fn default_pool_size() -> usize {
    16
}
fn default_pool_idle() -> Duration {
    Duration::from_secs(60)
}
fn default_listen() -> bool {
    true
}
fn default_recheck() -> Duration {
    Duration::from_secs(1)
}
fn default_l1_ttl() -> Duration {
    Duration::from_secs(1)
}
fn default_call_timeout() -> Duration {
    Duration::from_secs(2)
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerSection {
    /// Hosts served, for every method and route (others get 421); empty = any.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Cap on distinct pending URLs (beyond it: 503 + Retry-After).
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// Cap on requests waiting under `Prefer: wait`.
    #[serde(default = "default_max_waiters")]
    pub max_waiters: usize,
    /// Longest request target.
    #[serde(default = "default_max_uri")]
    pub max_uri_bytes: usize,
    /// Largest request head (request line + headers); beyond it: 431.
    #[serde(default = "default_max_header", with = "size")]
    pub max_header_bytes: u64,
    /// A client must send its request head within this.
    #[serde(default = "default_header_timeout", with = "duration")]
    pub header_read_timeout: Duration,
    /// How long a URL whose response must not be shared goes straight through.
    #[serde(default = "default_pass_ttl", with = "duration")]
    pub pass_ttl: Duration,
    /// Largest request body taken from a client (413 beyond it).
    #[serde(default = "default_max_request_body", with = "size")]
    pub max_request_body: u64,
    /// A client must send its whole request body within this (408 otherwise).
    #[serde(default = "default_body_timeout", with = "duration")]
    pub body_read_timeout: Duration,
    /// A connection whose client reads nothing of its answer for this long is closed.
    #[serde(default = "default_send_timeout", with = "duration")]
    pub send_timeout: Duration,
    /// The listener's TLS certificate chain (PEM), with `tls_key` (`--tls-cert` wins).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The key (PEM) of `tls_cert` (`--tls-key` wins).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Streams one HTTP/2 connection may have open at once.
    #[serde(default = "default_h2_streams")]
    pub h2_max_concurrent_streams: u32,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            max_pending: default_max_pending(),
            max_waiters: default_max_waiters(),
            max_uri_bytes: default_max_uri(),
            max_header_bytes: default_max_header(),
            header_read_timeout: default_header_timeout(),
            pass_ttl: default_pass_ttl(),
            max_request_body: default_max_request_body(),
            body_read_timeout: default_body_timeout(),
            send_timeout: default_send_timeout(),
            tls_cert: None,
            tls_key: None,
            h2_max_concurrent_streams: default_h2_streams(),
        }
    }
}

fn default_max_pending() -> usize {
    10_000
}
fn default_max_waiters() -> usize {
    10_000
}
fn default_max_uri() -> usize {
    8 * 1024
}
fn default_max_header() -> u64 {
    16 * 1024
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_request_body() -> u64 {
    8 * 1024 * 1024
}
fn default_body_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_send_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_h2_streams() -> u32 {
    128
}
fn default_pass_ttl() -> Duration {
    Duration::from_secs(60)
}

/// `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteSection {
    /// `/exact`, `/prefix/*` or `*`.
    pub path: String,
    /// `defer` (default) or `pass`.
    #[serde(default)]
    pub mode: Mode,
    /// Freshness when the upstream does not say.
    #[serde(default, with = "opt_duration")]
    pub ttl: Option<Duration>,
    /// Stale-while-revalidate window.
    #[serde(default, with = "opt_duration")]
    pub stale: Option<Duration>,
    /// Stale-if-error window.
    #[serde(default, with = "opt_duration")]
    pub stale_if_error: Option<Duration>,
    /// Error TTL.
    #[serde(default, with = "opt_duration")]
    pub error_ttl: Option<Duration>,
    /// Request headers that are part of the cache key.
    #[serde(default)]
    pub key_headers: Vec<String>,
    /// How long a request without `Prefer` waits for its job.
    #[serde(default, with = "opt_duration")]
    pub wait: Option<Duration>,
    /// Attempts before a job fails (1: an upstream 5xx is relayed at once, not retried).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Store responses that set a cookie (RFC 9111 allows it; off by default).
    #[serde(default)]
    pub store_set_cookie: bool,
    /// Variants of one URI each front stores (responses with `Vary`).
    #[serde(default)]
    pub max_variants: Option<usize>,
}

/// Durations written as humantime text (`"10s"`, `"1m 30s"`).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}); use e.g. \"10s\""
            ))
        })
    }
}

/// An optional [`duration`].
mod opt_duration {
    use std::time::Duration;

    use serde::Deserializer;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// Sizes written as text (`"16KiB"`, `"8MiB"`).
mod size {
    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a size ({e}); use e.g. \"16KiB\""
                ))
            })
    }
}

impl File {
    /// Reads and parses `path`.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--config: cannot read {}", path.display()))?;
        let file: Self = toml::from_str(&text).with_context(|| {
            format!("--config: {} is not a valid errand config", path.display())
        })?;
        if file.backend.pool_idle < Duration::from_secs(1) {
            bail!(
                "--config: {}: [backend] pool_idle must be at least 1s, not {}",
                path.display(),
                humantime::format_duration(file.backend.pool_idle)
            );
        }
        Ok(file)
    }
}

/// The upstream URL, checked: `http://host[:port][/base]`.
pub(crate) fn upstream(text: &str) -> anyhow::Result<http::Uri> {
    let uri: http::Uri = text
        .parse()
        .with_context(|| format!("--upstream: {text:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => bail!(
            "--upstream: {text:?} must be an absolute http:// or https:// URL, e.g. \
             http://127.0.0.1:3000"
        ),
    }
    if uri.authority().is_none() {
        bail!("--upstream: {text:?} has no host");
    }
    if uri.query().is_some() {
        bail!("--upstream: {text:?} must not have a query string");
    }
    Ok(uri)
}

/// Which store `--backend` names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// The embedded store.
    Memory,
    /// PostgreSQL at this URL.
    Postgres(String),
    /// Redis at this URL.
    Redis(String),
}

impl Backend {
    /// How logs and messages name it (password hidden).
    pub(crate) fn name(&self) -> String {
        match self {
            Self::Memory => "memory".to_owned(),
            Self::Postgres(url) | Self::Redis(url) => errand::store::redact(url),
        }
    }
}

/// A backend URL's fault, as `--backend`'s error.
fn backend_error(e: errand::store::StoreError) -> anyhow::Error {
    match e {
        errand::store::StoreError::Unsuitable { message, .. } => {
            anyhow::anyhow!("--backend: {message}")
        }
        other => anyhow::anyhow!("--backend: {other}"),
    }
}

/// Checks `[upstream]` against the upstream's URL: a client certificate and its key come
/// together, and the TLS settings belong to an `https://` upstream.
pub(crate) fn check_upstream(
    upstream: &http::Uri,
    section: &UpstreamSection,
) -> anyhow::Result<()> {
    match (&section.cert_file, &section.key_file) {
        (Some(_), None) => bail!("[upstream] cert_file is set without key_file"),
        (None, Some(_)) => bail!("[upstream] key_file is set without cert_file"),
        _ => {}
    }
    let tls_set = section.ca_file.is_some()
        || section.cert_file.is_some()
        || section.danger_accept_invalid_certs;
    if tls_set && upstream.scheme_str() != Some("https") {
        bail!(
            "[upstream] ca_file, cert_file, key_file and danger_accept_invalid_certs are for an \
             https:// upstream; --upstream is {upstream}"
        );
    }
    if section.max_idle_connections == 0 {
        bail!("[upstream] max_idle_connections must be at least 1");
    }
    Ok(())
}

/// The listener's certificate and key files: the flags, else `[server]`; both or neither.
pub(crate) fn listener_tls(
    cert: Option<&Path>,
    key: Option<&Path>,
    file: &File,
) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
    let cert = cert.or(file.server.tls_cert.as_deref());
    let key = key.or(file.server.tls_key.as_deref());
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert.to_owned(), key.to_owned()))),
        (None, None) => Ok(None),
        (Some(_), None) => bail!("--tls-cert is set without --tls-key (or [server] tls_key)"),
        (None, Some(_)) => bail!("--tls-key is set without --tls-cert (or [server] tls_cert)"),
    }
}

/// Checks the public listener's limits in `[server]`.
pub(crate) fn check_listener(file: &File) -> anyhow::Result<()> {
    if !(1..=10_000).contains(&file.server.h2_max_concurrent_streams) {
        bail!("--config: server.h2_max_concurrent_streams must be between 1 and 10000");
    }
    if file.server.max_header_bytes < 8192 {
        bail!("--config: server.max_header_bytes must be at least 8KiB");
    }
    for (name, value) in [
        ("send_timeout", file.server.send_timeout),
        ("body_read_timeout", file.server.body_read_timeout),
        ("header_read_timeout", file.server.header_read_timeout),
    ] {
        if value.is_zero() {
            bail!("--config: server.{name} must be longer than 0s");
        }
    }
    Ok(())
}

/// Checks that a response of `--max-body` bytes fits in `--cache-size`.
pub(crate) fn check_cache(max_body: u64, cache_size: u64) -> anyhow::Result<()> {
    if max_body > cache_size {
        bail!(
            "--max-body ({max_body}) is larger than --cache-size ({cache_size}): no response \
             that large could be kept"
        );
    }
    Ok(())
}

/// Checks the admin flags before anything starts: a listener off loopback needs a token.
pub(crate) fn check_admin(addr: std::net::SocketAddr, token: Option<&str>) -> anyhow::Result<()> {
    if token.is_some_and(str::is_empty) {
        bail!("--admin-token: must not be empty");
    }
    if token.is_none() && !addr.ip().is_loopback() {
        bail!(
            "--admin-listen: {addr} is not a loopback address; give --admin-token \
             (or ERRAND_ADMIN_TOKEN) to protect it"
        );
    }
    Ok(())
}

/// The Redis client certificate and key of `[backend]`: both or neither, and only for a
/// Redis backend (PostgreSQL takes its files in its URL).
pub(crate) fn redis_client_cert(
    backend: &Backend,
    b: &BackendSection,
) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
    let client_cert = match (&b.redis_cert_file, &b.redis_key_file) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        (Some(_), None) => bail!("[backend] redis_cert_file is set without redis_key_file"),
        (None, Some(_)) => bail!("[backend] redis_key_file is set without redis_cert_file"),
    };
    if !matches!(backend, Backend::Redis(_)) && (b.redis_ca_file.is_some() || client_cert.is_some())
    {
        bail!(
            "[backend] redis_ca_file, redis_cert_file and redis_key_file are for a rediss:// \
             backend (PostgreSQL takes sslrootcert, sslcert and sslkey in its URL)"
        );
    }
    Ok(client_cert)
}

/// Parses `--backend`.
pub(crate) fn backend(text: &str) -> anyhow::Result<Backend> {
    let scheme = text.split_once("://").map_or(text, |(s, _)| s);
    match scheme {
        "memory" => Ok(Backend::Memory),
        "postgres" | "postgresql" => {
            errand::store::PgConfig::check_url(text).map_err(backend_error)?;
            Ok(Backend::Postgres(text.to_owned()))
        }
        "redis" | "rediss" => {
            errand::store::RedisConfig::check_url(text).map_err(backend_error)?;
            Ok(Backend::Redis(text.to_owned()))
        }
        _ => bail!(
            "--backend: {:?} is not a backend; use memory, postgres://user@host/db or \
             redis://host:6379",
            errand::store::redact(text)
        ),
    }
}

/// Builds errand's configuration from the flags and the file.
pub(crate) fn config(
    route: &RouteFlags,
    jobs: &JobFlags,
    workers: usize,
    file: &File,
) -> anyhow::Result<Config> {
    let mut config = Config::default();
    let base = RoutePolicy {
        mode: Mode::Defer,
        windows: Windows {
            ttl: route.ttl,
            stale: route.stale,
            stale_if_error: route.stale_if_error,
        },
        error_ttl: route.error_ttl,
        pass_ttl: file.server.pass_ttl,
        key_headers: Vec::new(),
        wait: route.wait,
        max_attempts: None,
        store_set_cookie: false,
        max_variants: RoutePolicy::default().max_variants,
    };
    let mut seen = BTreeMap::new();
    for (i, r) in file.routes.iter().enumerate() {
        let at = format!("--config: route #{} ({:?})", i + 1, r.path);
        let path = PathPattern::parse(&r.path).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
        if let Some(first) = seen.insert(r.path.clone(), i + 1) {
            bail!("{at}: the same path as route #{first}; the later one would never match");
        }
        let mode = r.mode;
        let key_headers = r
            .key_headers
            .iter()
            .map(|h| {
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| anyhow::anyhow!("{at}: key header {h:?} is not a header name"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        config.routes.routes.push(Route {
            path,
            policy: RoutePolicy {
                mode,
                windows: Windows {
                    ttl: r.ttl.unwrap_or(base.windows.ttl),
                    stale: r.stale.unwrap_or(base.windows.stale),
                    stale_if_error: r.stale_if_error.unwrap_or(base.windows.stale_if_error),
                },
                error_ttl: r.error_ttl.unwrap_or(base.error_ttl),
                key_headers,
                wait: r.wait.or(base.wait),
                max_attempts: match r.max_attempts {
                    Some(n @ 1..=100) => Some(n),
                    Some(n) => bail!("{at}: max_attempts {n} is not between 1 and 100"),
                    None => None,
                },
                store_set_cookie: r.store_set_cookie,
                max_variants: match r.max_variants {
                    Some(n @ 0..=1024) => n,
                    Some(n) => bail!("{at}: max_variants {n} is more than 1024"),
                    None => base.max_variants,
                },
                ..base.clone()
            },
        });
    }
    config.routes.default = base;
    if jobs.lease < Duration::from_secs(1) {
        bail!(
            "--lease: {:?} is too short; a lease must be at least 1s",
            jobs.lease
        );
    }
    if jobs.job_timeout.is_zero() {
        bail!("--job-timeout: must be more than 0");
    }
    config.jobs.concurrency = workers.max(1);
    config.jobs.max_attempts = jobs.max_attempts;
    config.jobs.timeout = jobs.job_timeout;
    config.jobs.lease = jobs.lease;
    config.jobs.max_body =
        usize::try_from(jobs.max_body).context("--max-body: too large for this machine")?;
    config.front.allowed_hosts = file
        .server
        .allowed_hosts
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    config.front.max_waiters = file.server.max_waiters;
    config.front.max_uri_len = file.server.max_uri_bytes;
    Ok(config)
}
