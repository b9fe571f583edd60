//! A deliberately slow HTTP service to put errand in front of.
//!
//! Run with
//!
//! ```sh
//! cargo run -p example-slow-upstream -- --listen 127.0.0.1:3000 --delay 2s
//! ```
//!
//! Routes:
//! - `GET /anything/else`: waits `--delay` (or `?delay=500ms`), then answers a small JSON
//!   document saying when it was made and which request number it was;
//! - `GET /kb`: 1 KiB at once (for benchmarks);
//! - `GET /fail`: `500` after the delay; `GET /private`: `Cache-Control: private`;
//! - `GET /cookie`: sets a cookie; `GET /big?mib=N` (or `?kib=N`): that much body;
//! - `GET /cc?max-age=N`: `Cache-Control: max-age=N`;
//! - `POST /anything`: `201` at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::get;
use clap::Parser;

/// A slow HTTP service for trying errand.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// How long each slow request takes (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    delay: Duration,
}

#[derive(Clone)]
struct App {
    delay: Duration,
    served: Arc<AtomicU64>,
}

#[derive(serde::Deserialize)]
struct Params {
    delay: Option<String>,
    mib: Option<usize>,
    kib: Option<usize>,
    #[serde(rename = "max-age")]
    max_age: Option<u64>,
}

impl App {
    async fn pause(&self, params: &Params) -> Result<(), (StatusCode, String)> {
        let delay = match &params.delay {
            Some(text) => humantime::parse_duration(text)
                .map_err(|e| (StatusCode::BAD_REQUEST, format!("delay: {e}\n")))?,
            None => self.delay,
        };
        tokio::time::sleep(delay).await;
        Ok(())
    }

    fn count(&self) -> u64 {
        self.served.fetch_add(1, Ordering::Relaxed) + 1
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

async fn slow(State(app): State<App>, uri: Uri, Query(params): Query<Params>) -> impl IntoResponse {
    if let Err(e) = app.pause(&params).await {
        return e.into_response();
    }
    let n = app.count();
    let body = format!(
        "{{\"path\":\"{}\",\"request\":{n},\"generated_at_ms\":{}}}\n",
        uri.path().replace('"', ""),
        now_ms()
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn kb() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain")], "x".repeat(1024))
}

async fn fail(State(app): State<App>, Query(params): Query<Params>) -> impl IntoResponse {
    let _ = app.pause(&params).await;
    app.count();
    (StatusCode::INTERNAL_SERVER_ERROR, "the upstream failed\n")
}

async fn private(State(app): State<App>) -> impl IntoResponse {
    let n = app.count();
    (
        [(header::CACHE_CONTROL, "private")],
        format!("private response #{n}\n"),
    )
}

async fn cookie(State(app): State<App>) -> impl IntoResponse {
    let n = app.count();
    (
        [(header::SET_COOKIE, format!("visit={n}"))],
        format!("cookie response #{n}\n"),
    )
}

async fn big(Query(params): Query<Params>) -> impl IntoResponse {
    let kib = params
        .kib
        .unwrap_or(params.mib.unwrap_or(1) * 1024)
        .min(1024 * 1024);
    vec![b'b'; kib * 1024]
}

async fn cc(State(app): State<App>, Query(params): Query<Params>) -> impl IntoResponse {
    let n = app.count();
    let max_age = params.max_age.unwrap_or(5);
    (
        [(header::CACHE_CONTROL, format!("max-age={max_age}"))],
        format!("cc response #{n}\n"),
    )
}

async fn create() -> impl IntoResponse {
    (StatusCode::CREATED, "created\n")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let app = App {
        delay: args.delay,
        served: Arc::default(),
    };
    let router = Router::new()
        .route("/kb", get(kb))
        .route("/fail", get(fail))
        .route("/private", get(private))
        .route("/cookie", get(cookie))
        .route("/big", get(big))
        .route("/cc", get(cc))
        .fallback(get(slow).post(create).put(create).delete(create))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!(
        "slow upstream on http://{} (delay {:?})",
        listener.local_addr()?,
        args.delay
    );
    axum::serve(listener, router).await?;
    Ok(())
}
