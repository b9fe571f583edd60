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
//! With `--admin-tls-cert` and `--admin-tls-key` it speaks HTTPS only, with the public
//! listener's TLS (reloaded the same way).
//!
//! With `--admin-token`, every request but the dashboard's page needs
//! `Authorization: Bearer <token>` (compared in constant time); without it the listener must be
//! on a loopback address and answers only requests addressed to a loopback host (DNS
//! rebinding). A change sent from another site's page (`Origin`, `Sec-Fetch-Site`) is refused
//! either way (CSRF).
//!
//! # Layout
//!
//! - `mod.rs`: the listener: its router and the recorder it reads;
//! - `guard.rs`: who may call it (token, loopback `Host`, cross-site requests);
//! - `overview.rs`: the metrics, read back by `errand::metrics::names` for the dashboard;
//! - `api.rs`: entries, retry and purge, as JSON;
//! - `dashboard.html`: the dashboard's one page.

mod api;
mod guard;
mod overview;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::header;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use errand::body::Body;
use errand::store::Inspect;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
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

/// What every admin connection is held to (the API's requests and answers are small).
const LIMITS: crate::connection::Limits = crate::connection::Limits {
    max_header_bytes: 64 * 1024,
    header_read_timeout: Duration::from_secs(10),
    send_timeout: Duration::from_secs(30),
    h2_max_concurrent_streams: 32,
};

/// Binds the admin listener and serves it until `shutdown`: HTTPS when `tls` is given, on
/// the same connection handling as the public listener (HTTP/1.1 and HTTP/2, its timeouts
/// and HTTP/2 limits).
pub(crate) async fn spawn(
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
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
        .route("/metrics", get(overview::metrics_text))
        .route("/api/stats", get(overview::stats))
        .route("/api/overview", get(overview::overview))
        .route("/api/entries", get(api::entries))
        .route("/api/entries/{key}", get(api::entry))
        .route("/api/entries/{key}/retry", post(api::retry))
        .route("/api/purge", post(api::purge))
        .route_layer(middleware::from_fn_with_state(
            admin.clone(),
            guard::authorize,
        ))
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
    tokio::spawn(crate::connection::accept_loop(
        listener,
        tls,
        Served(app),
        LIMITS,
        shutdown,
    ));
    Ok(bound)
}

/// The admin router with the body type the listener's connections answer with.
#[derive(Clone)]
struct Served(Router);

impl tower_service::Service<Request<Incoming>> for Served {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let mut router = self.0.clone();
        Box::pin(async move {
            let response = router.call(request).await?;
            Ok(response.map(|body| body.map_err(Into::into).boxed_unsync()))
        })
    }
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
