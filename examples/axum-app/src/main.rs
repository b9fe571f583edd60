//! An axum app with errand: one line for the Layer, one for the in-process workers.
//!
//! Run with
//!
//! ```sh
//! cargo run -p example-axum-app
//! ```
//!
//! then
//!
//! ```sh
//! curl -i localhost:4000/report/42                      # 202 Accepted, Retry-After
//! curl -i localhost:4000/report/42                      # 200 from the cache, after ~2 s
//! curl -i -H 'Prefer: wait=10' localhost:4000/report/7  # waits for the job, then 200
//! curl -i localhost:4000/health                         # a pass route: always live
//! ```

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use errand::Errand;
use errand::Shutdown;
use errand::config::{Config, Mode, PathPattern, Route, RoutePolicy};

/// A slow handler: the kind of work the Worker Pattern takes off the request path.
async fn report(Path(id): Path<u32>) -> String {
    tokio::time::sleep(Duration::from_secs(2)).await;
    format!("report {id}: {} rows\n", u64::from(id) * 1000 + 7)
}

fn app() -> Router {
    Router::new()
        .route("/report/{id}", get(report))
        .route("/health", get(|| async { "ok\n" }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let mut config = Config::default();
    config.routes.default.windows.ttl = Duration::from_secs(30);
    config.routes.routes.push(Route {
        path: PathPattern::parse("/health")?,
        policy: RoutePolicy {
            mode: Mode::Pass,
            ..RoutePolicy::default()
        },
    });
    let errand = Errand::in_memory(config);

    let shutdown = Shutdown::new();
    // The workers run the same app's handlers for deferred requests.
    let workers = errand.worker(app()).spawn(shutdown.clone());
    // The front: every GET is answered from the cache or deferred.
    let router = app().layer(errand.layer());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
    eprintln!("axum app with errand on http://{}", listener.local_addr()?);
    let stop = shutdown.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        })
        .await?;
    workers.await??;
    Ok(())
}
