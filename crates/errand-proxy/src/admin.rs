//! The admin listener (`--admin-listen`): Prometheus metrics and a JSON API, on an address of
//! its own. Nothing here is reachable through the public listener: there, these paths are
//! the upstream's like any other.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /` | the dashboard (a self-contained page; it asks for the token, then polls the API) |
//! | `GET /metrics` | Prometheus text exposition (see `errand::metrics` for the names) |
//! | `GET /api/stats` | entry and queue counts, as JSON |
//! | `GET /api/overview` | this process's counters and job-duration histogram, with the store's counts |
//! | `GET /api/entries?state=&after=&limit=` | entries, a page at a time (`next` is the cursor of the following page) |
//! | `GET /api/entries/{key}` | one entry: state, version, job, content and verdict timings |
//! | `POST /api/entries/{key}/retry` | a failed entry's job again, now → `202` and the pending entry |
//! | `POST /api/purge` | `{"key" \| "uri" \| "prefix" \| "tag" \| "all": …, "soft": bool}` → `{"purged": n}` |
//!
//! With `--admin-token`, every request but the dashboard's page needs
//! `Authorization: Bearer <token>` (compared in constant time); without it the listener must be
//! on a loopback address and answers only requests addressed to a loopback host (DNS
//! rebinding). A change sent from another site's page (`Origin`, `Sec-Fetch-Site`) is refused
//! either way (CSRF).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use errand::pattern::{Entry, Key, State as EntryState, Status, Timestamp};
use errand::store::{Inspect, ListQuery, Purge, PurgeTarget, Retried, StoreError};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the admin handlers share.
#[derive(Clone)]
struct Admin {
    store: Arc<dyn Inspect>,
    metrics: PrometheusHandle,
    token: Option<Arc<str>>,
}

/// Buckets of `errand_job_duration_seconds`.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Installs the process's Prometheus recorder. Call before anything counts.
pub(crate) fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets(DURATION_BUCKETS)
        .context("metrics buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")
}

/// Checks the admin flags before anything starts: a listener off loopback needs a token.
pub(crate) fn check(addr: SocketAddr, token: Option<&str>) -> anyhow::Result<()> {
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

/// Binds the admin listener and serves it until `shutdown`.
pub(crate) async fn spawn(
    addr: SocketAddr,
    token: Option<String>,
    store: Arc<dyn Inspect>,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let admin = Admin {
        store,
        metrics,
        token: token.map(Arc::from),
    };
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/api/stats", get(stats))
        .route("/api/overview", get(overview))
        .route("/api/entries", get(entries))
        .route("/api/entries/{key}", get(entry))
        .route("/api/entries/{key}/retry", post(retry))
        .route("/api/purge", post(purge))
        .route_layer(middleware::from_fn_with_state(admin.clone(), authorize))
        // The dashboard's page holds no data: it asks for the token and then calls the API,
        // so it is the one path served without one.
        .route("/", get(dashboard))
        .with_state(admin);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("--admin-listen: cannot listen on {addr}"))?;
    let bound = listener
        .local_addr()
        .context("--admin-listen: no local address")?;
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener stopped");
        }
    });
    Ok(bound)
}

fn refuse(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({"error": error}))).into_response()
}

/// Whether the request's `Host` names this machine's loopback (`localhost`, `127.0.0.1`,
/// `[::1]`, with any port).
fn loopback_host(headers: &http::HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a browser sent this request from another site's page.
fn cross_origin(headers: &http::HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site" || v.as_bytes() == b"same-site")
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
    !authority.eq_ignore_ascii_case(host)
}

/// Guards every API path: `401` unless the bearer token matches (when one is configured);
/// `403` for a change requested from another site's page (CSRF), and, without a token, for a
/// request not addressed to a loopback host (a DNS-rebinding page cannot pass that).
async fn authorize(State(admin): State<Admin>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if admin.token.is_none() && !loopback_host(headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "without --admin-token the admin listener answers only requests addressed to \
             localhost, 127.0.0.1 or [::1]",
        );
    }
    let changes = !matches!(*request.method(), http::Method::GET | http::Method::HEAD);
    if changes && cross_origin(headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "cross-origin admin request refused: use the dashboard or the API directly",
        );
    }
    if let Some(expected) = &admin.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .unwrap_or("");
        // Constant time in the token's content (its length is not a secret worth hiding).
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(json!({"error": "a valid admin token is required"})),
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// The token of an `Authorization: Bearer <token>` value. The scheme name is
/// case-insensitive (RFC 9110 §11.1) and one or more spaces may follow it (§11.4's `1*SP`);
/// `None` for any other scheme.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(rest.trim_start_matches(' ').trim_end())
}

/// The dashboard: one self-contained page (no external scripts, styles or fonts).
const DASHBOARD: &str = include_str!("dashboard.html");

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                 frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        DASHBOARD,
    )
        .into_response()
}

fn store_error(e: &StoreError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"error": e.to_string()})),
    )
        .into_response()
}

async fn metrics_text(State(admin): State<Admin>) -> Response {
    // Gauges come from the store at scrape time; counters are already in the recorder.
    if let Ok(stats) = admin.store.stats().await {
        errand::metrics::record_stats(&stats);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        admin.metrics.render(),
    )
        .into_response()
}

/// `GET /api/overview`: the process's counters (the numbers `/metrics` shows, read back from
/// the same recorder) and the shared store's figures, in one JSON document: what the
/// dashboard polls.
async fn overview(State(admin): State<Admin>) -> Response {
    let store = match admin.store.stats().await {
        Ok(stats) => stats,
        Err(e) => return store_error(&e),
    };
    let text = admin.metrics.render();
    let scrape = match prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))) {
        Ok(scrape) => scrape,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": format!("cannot read the metrics back: {e}")})),
            )
                .into_response();
        }
    };
    axum::Json(overview_json(&scrape, &store, admin.store.now())).into_response()
}

fn overview_json(
    scrape: &prometheus_parse::Scrape,
    store: &errand::store::Stats,
    now: Timestamp,
) -> Value {
    use prometheus_parse::Value as V;
    let number = |v: &V| match v {
        V::Counter(n) | V::Gauge(n) | V::Untyped(n) => *n,
        _ => 0.0,
    };
    let mut requests = serde_json::Map::new();
    for phase in errand::pattern::Phase::ALL {
        requests.insert(phase.as_str().to_owned(), json!(0));
    }
    let mut waits = json!({"ready": 0, "timeout": 0});
    let mut jobs = json!({
        "claimed": 0, "deduplicated": 0, "retried": 0, "redelivered": 0, "lease_lost": 0,
    });
    for outcome in errand::pattern::JobOutcome::ENDED {
        jobs[outcome.as_str()] = json!(0);
    }
    let mut evictions = 0;
    let mut durations = serde_json::Map::new();
    for sample in &scrape.samples {
        let label = |name: &str| sample.labels.get(name).unwrap_or("").to_owned();
        let value = number(&sample.value);
        // Counters are whole numbers (exposed as floats by the text format).
        let n = value.max(0.0).round() as u64;
        match sample.metric.as_str() {
            "errand_requests_total" => {
                requests.insert(label("outcome"), json!(n));
            }
            "errand_waits_total" => waits[label("outcome")] = json!(n),
            "errand_jobs_completed_total" => jobs[label("outcome")] = json!(n),
            "errand_jobs_claimed_total" => jobs["claimed"] = json!(n),
            "errand_jobs_deduplicated_total" => jobs["deduplicated"] = json!(n),
            "errand_jobs_retried_total" => jobs["retried"] = json!(n),
            "errand_jobs_redelivered_total" => jobs["redelivered"] = json!(n),
            "errand_jobs_lease_lost_total" => jobs["lease_lost"] = json!(n),
            "errand_evictions_total" => evictions = n,
            "errand_job_duration_seconds" => {
                if let V::Histogram(buckets) = &sample.value {
                    let route = durations.entry(label("route")).or_insert_with(|| json!({}));
                    route["buckets"] = buckets
                        .iter()
                        .map(|b| json!([b.less_than, b.count.max(0.0).round() as u64]))
                        .collect();
                }
            }
            "errand_job_duration_seconds_count" | "errand_job_duration_seconds_sum" => {
                let route = durations.entry(label("route")).or_insert_with(|| json!({}));
                if sample.metric.ends_with("_sum") {
                    route["sum"] = json!(value);
                } else {
                    route["count"] = json!(n);
                }
            }
            _ => {}
        }
    }
    json!({
        "now_ms": now.0,
        "requests": requests,
        "waits": waits,
        "jobs": jobs,
        "evictions": evictions,
        "durations": durations,
        "store": store,
    })
}

async fn stats(State(admin): State<Admin>) -> Response {
    match admin.store.stats().await {
        Ok(stats) => axum::Json(stats).into_response(),
        Err(e) => store_error(&e),
    }
}

fn bad_request(error: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": error.into()})),
    )
        .into_response()
}

fn no_such_entry() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": "no such entry (never stored, expired or purged)"})),
    )
        .into_response()
}

fn parse_key(key: &str) -> Result<Key, String> {
    Key::parse(key).ok_or_else(|| format!("{key:?} is not an entry key (32 hex digits)"))
}

/// An entry as the API shows it: state, version, job or verdict, content timings (never the
/// body, nor the request's header values, which may be credentials).
fn entry_json(entry: &Entry, now: Timestamp) -> Value {
    let content = entry.content.as_ref().map(|c| {
        json!({
            "status": c.response.status.as_u16(),
            "bytes": c.response.body.len(),
            "generated_at_ms": c.generated_at.0,
            "fresh_until_ms": c.fresh_until.0,
            "stale_until_ms": c.stale_until.0,
            "stale_if_error_until_ms": c.stale_if_error_until.0,
            "tags": c.tags,
            "job_ms": c.job_millis,
        })
    });
    let detail = match &entry.status {
        Status::Pending(job) => json!({
            "job": job.id.0,
            "priority": job.priority.as_str(),
            "created_at_ms": job.created_at.0,
            "run_at_ms": job.run_at.0,
            "attempts": job.attempts,
            "lease_until_ms": job.lease_until.map(|t| t.0),
            "last_error": job.last_error,
        }),
        Status::Failed(f) => json!({
            "until_ms": f.until.0,
            "status": f.response.status.as_u16(),
            "error": f.error,
            "attempts": f.attempts,
            "at_ms": f.at.0,
            "retryable": f.request.is_some(),
            "trace_id": f.request.as_ref().and_then(|r| r.trace).map(|t| t.trace_hex()),
        }),
        Status::Pass(p) => {
            json!({"until_ms": p.until.0, "reason": p.reason, "kept_once": p.once.is_some()})
        }
        Status::Idle => Value::Null,
    };
    json!({
        "key": entry.key.to_hex(),
        "uri": &*entry.uri,
        "version": entry.version,
        "state": entry.state(now).as_str(),
        "detail": detail,
        "content": content,
    })
}

async fn entry(State(admin): State<Admin>, Path(key): Path<String>) -> Response {
    let key = match parse_key(&key) {
        Ok(key) => key,
        Err(e) => return bad_request(e),
    };
    match admin.store.lookup(&key).await {
        Ok(Some(entry)) => {
            let now = admin.store.now();
            let mut value = entry_json(&entry, now);
            value["now_ms"] = json!(now.0);
            axum::Json(value).into_response()
        }
        Ok(None) => no_such_entry(),
        Err(e) => store_error(&e),
    }
}

/// The query of `GET /api/entries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    state: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// Most entries one page of `GET /api/entries` holds.
const MAX_PAGE: usize = 500;

async fn entries(
    State(admin): State<Admin>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(params)) => params,
        Err(e) => return bad_request(e.body_text()),
    };
    let state = match params.state.as_deref() {
        None | Some("" | "all") => None,
        Some(name) => match EntryState::parse(name) {
            Some(state) => Some(state),
            None => {
                return bad_request(format!(
                    "state {name:?} is not one of fresh, stale, pending, failed, pass"
                ));
            }
        },
    };
    let limit = params.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return bad_request(format!("limit {limit} is not between 1 and {MAX_PAGE}"));
    }
    let query = ListQuery {
        state,
        after: params.after.filter(|a| !a.is_empty()),
        limit,
    };
    match admin.store.list(&query).await {
        Ok(page) => {
            let now = admin.store.now();
            let entries: Vec<Value> = page.entries.iter().map(|e| entry_json(e, now)).collect();
            axum::Json(json!({"entries": entries, "next": page.next, "now_ms": now.0}))
                .into_response()
        }
        Err(StoreError::Invalid(e)) => bad_request(format!("after: {e}")),
        Err(e) => store_error(&e),
    }
}

/// `POST /api/entries/{key}/retry`: a failed entry's job again, now.
async fn retry(State(admin): State<Admin>, Path(key): Path<String>) -> Response {
    let key = match parse_key(&key) {
        Ok(key) => key,
        Err(e) => return bad_request(e),
    };
    let conflict =
        |error: String| (StatusCode::CONFLICT, axum::Json(json!({"error": error}))).into_response();
    match errand::store::retry(&*admin.store, &key).await {
        Ok(Retried::Enqueued(entry)) => {
            tracing::info!(key = %key, uri = &*entry.uri, "failed entry retried by an operator");
            let now = admin.store.now();
            (StatusCode::ACCEPTED, axum::Json(entry_json(&entry, now))).into_response()
        }
        Ok(Retried::NotFailed(state)) => conflict(format!("the entry is {state}, not failed")),
        Ok(Retried::NoRequest) => {
            conflict("the failure was recorded without its request; request the URL again".into())
        }
        Ok(Retried::Missing) => no_such_entry(),
        Err(e) => store_error(&e),
    }
}

/// The body of `POST /api/purge`: exactly one target.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeRequest {
    /// One signature (32 hex digits).
    pub key: Option<String>,
    /// Every variant of one canonical URI.
    pub uri: Option<String>,
    /// Every canonical URI starting with this.
    pub prefix: Option<String>,
    /// Every entry whose content carries this tag.
    pub tag: Option<String>,
    /// Everything.
    #[serde(default)]
    pub all: bool,
    /// Mark stale instead of removing.
    #[serde(default)]
    pub soft: bool,
}

impl PurgeRequest {
    fn target(&self) -> Result<PurgeTarget, String> {
        let given = usize::from(self.key.is_some())
            + usize::from(self.uri.is_some())
            + usize::from(self.prefix.is_some())
            + usize::from(self.tag.is_some())
            + usize::from(self.all);
        if given != 1 {
            return Err("give exactly one of key, uri, prefix, tag, all".into());
        }
        if let Some(key) = &self.key {
            return Key::parse(key)
                .map(PurgeTarget::Key)
                .ok_or_else(|| format!("key {key:?} is not an entry key (32 hex digits)"));
        }
        Ok(match (&self.uri, &self.prefix, &self.tag) {
            (Some(uri), _, _) => PurgeTarget::Uri(uri.clone()),
            (_, Some(prefix), _) => PurgeTarget::Prefix(prefix.clone()),
            (_, _, Some(tag)) => PurgeTarget::Tag(tag.clone()),
            _ => PurgeTarget::All,
        })
    }
}

async fn purge(
    State(admin): State<Admin>,
    body: Result<axum::Json<PurgeRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match body {
        Ok(axum::Json(request)) => request,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": e.body_text()})),
            )
                .into_response();
        }
    };
    let target = match request.target() {
        Ok(target) => target,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": e}))).into_response();
        }
    };
    match admin
        .store
        .purge(Purge {
            target,
            soft: request.soft,
        })
        .await
    {
        Ok(n) => axum::Json(json!({"purged": n, "soft": request.soft})).into_response(),
        Err(e) => store_error(&e),
    }
}

// ---- the admin verbs of the command line ----

/// Sends one request to a running errand's admin listener; the JSON answer, or an error that
/// names the URL and what went wrong.
async fn call(
    client: &crate::cli::AdminClient,
    method: http::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let base = client.admin.trim_end_matches('/');
    let url = format!("{base}{path}");
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("--admin: {base:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("--admin: {base:?} must be an http:// URL of the admin listener");
    }
    let mut request = http::Request::builder().method(method).uri(uri);
    if let Some(token) = &client.admin_token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let payload = match body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            bytes::Bytes::from(body.to_string())
        }
        None => bytes::Bytes::new(),
    };
    let request = request
        .body(Full::new(payload))
        .context("cannot build the request")?;
    let http: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = tokio::time::timeout(std::time::Duration::from_secs(30), http.request(request))
        .await
        .with_context(|| format!("--admin: {url} did not answer within 30 s"))?
        .with_context(|| format!("--admin: cannot reach {url}"))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("--admin: {url} broke off its answer"))?
        .to_bytes();
    let value: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"error": String::from_utf8_lossy(&bytes).into_owned()}));
    if status == StatusCode::UNAUTHORIZED {
        bail!("--admin-token: {url} refused it (401)");
    }
    if !status.is_success() {
        let error = value.get("error").and_then(Value::as_str).unwrap_or("");
        bail!("{url} answered {status}: {error}");
    }
    Ok(value)
}

/// Prints for a terminal (the verbs' output is the command's product).
#[allow(clippy::print_stdout)]
fn print(text: &str) {
    println!("{text}");
}

/// `errand stats`.
pub(crate) async fn stats_verb(args: crate::cli::StatsArgs) -> anyhow::Result<()> {
    let value = call(&args.client, http::Method::GET, "/api/stats", None).await?;
    if args.client.json {
        print(&value.to_string());
        return Ok(());
    }
    let n = |name: &str| value.get(name).and_then(Value::as_u64).unwrap_or(0);
    print(&format!(
        "entries   fresh {}  stale {}  pending {}  failed {}  pass {}  ({})",
        n("fresh"),
        n("stale"),
        n("pending"),
        n("failed"),
        n("pass"),
        bytesize::ByteSize(n("bytes"))
    ));
    print(&format!(
        "queue     ready {}  scheduled {}  running {}  oldest ready {:.1}s",
        n("ready"),
        n("scheduled"),
        n("running"),
        n("oldest_ready_ms") as f64 / 1000.0
    ));
    Ok(())
}

/// `errand purge`.
pub(crate) async fn purge_verb(args: crate::cli::PurgeArgs) -> anyhow::Result<()> {
    if let Some(key) = &args.key
        && Key::parse(key).is_none()
    {
        bail!("--key: {key:?} is not an entry key (32 hex digits)");
    }
    let body = json!({
        "key": args.key,
        "prefix": args.prefix,
        "tag": args.tag,
        "uri": args.uri,
        "soft": args.soft,
    });
    let value = call(&args.client, http::Method::POST, "/api/purge", Some(body)).await?;
    if args.client.json {
        print(&value.to_string());
    } else {
        let n = value.get("purged").and_then(Value::as_u64).unwrap_or(0);
        let how = if args.soft { "marked stale" } else { "purged" };
        print(&format!("{n} entries {how}"));
    }
    Ok(())
}

/// `errand retry`.
pub(crate) async fn retry_verb(args: crate::cli::RetryArgs) -> anyhow::Result<()> {
    let key = parse_key(&args.key).map_err(|e| anyhow::anyhow!("--key: {e}"))?;
    let path = format!("/api/entries/{}/retry", key.to_hex());
    let value = call(&args.client, http::Method::POST, &path, None).await?;
    if args.client.json {
        print(&value.to_string());
    } else {
        let uri = value.get("uri").and_then(Value::as_str).unwrap_or("");
        let job = value
            .pointer("/detail/job")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        print(&format!("{uri}: pending again (job {job})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn bearer_scheme_is_case_insensitive_and_takes_any_spaces() {
        let cases = [
            ("Bearer T", Some("T")),
            ("bearer T", Some("T")),
            ("BEARER T", Some("T")),
            ("Bearer  T", Some("T")),
            ("Bearer T ", Some("T")),
            ("Basic T", None),
            ("BearerT", None),
            ("Bearer", None),
        ];
        for (value, want) in cases {
            assert_eq!(super::bearer_token(value), want, "{value:?}");
        }
    }
}
