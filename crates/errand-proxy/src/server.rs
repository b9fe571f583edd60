//! The listener and its connections, the in-process workers, and shutdown: SIGTERM or
//! Ctrl-C cancels one token; the accept loop stops, open connections finish their request,
//! workers finish or hand back their jobs, and the process exits 0.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use errand::Errand;
use errand::body::{self, Body};
use errand::store::{Inspect, redact};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::backend;
use crate::cli::{Migrate, Serve, Work};
use crate::framing::FramingGuard;
use crate::settings::{self, Backend, File};
use crate::stall::SendTimeout;
use crate::upstream::{BodyLimits, ClientAddr, ClientError, Upstream};

/// `errand serve`.
pub(crate) async fn serve(args: Serve) -> anyhow::Result<()> {
    let upstream_uri = settings::upstream(&args.upstream)?;
    let backend = settings::backend(&args.backend)?;
    let metrics = admin_recorder(&args.admin)?;
    let file = match &args.config {
        Some(path) => File::load(path)?,
        None => File::default(),
    };
    settings::check_listener(&file)?;
    settings::check_cache(args.jobs.max_body, args.cache_size)?;
    let mut config = settings::config(&args.route, &args.jobs, args.workers, &file)?;
    config.front.max_wait = args.max_wait;
    config.front.retry_after_max = args.retry_after_max.max(Duration::from_secs(1));
    let store = backend::front_store(&backend, &file, args.cache_size).await?;
    let backend_name = backend.name();
    let errand = Errand::new(store.clone(), config);
    let upstream = Upstream::new(&upstream_uri, args.jobs.job_timeout, body_limits(&file));

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen: cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("--listen: no local address")?;
    tracing::info!(
        "errand listening on http://{addr} (upstream {upstream_uri}, backend {backend_name}, {} workers)",
        args.workers
    );

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    start_admin(&args.admin, metrics, &store, &shutdown).await?;
    let worker = (args.workers > 0).then(|| {
        let workers = errand
            .worker(upstream.clone())
            .concurrency(args.workers)
            .spawn(shutdown.clone());
        // Workers that stop on their own (a panicked job) take the front down with them.
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let ended = workers_ended(workers.await);
            if ended.is_err() {
                shutdown.cancel();
            }
            ended
        })
    });
    let front = errand.layer();
    let service = tower_layer::Layer::layer(&front, upstream);
    accept_loop(listener, service, &file, shutdown.clone()).await;
    if let Some(worker) = worker {
        worker
            .await
            .map_err(|e| anyhow::anyhow!("the workers' task failed: {e}"))??;
    }
    tracing::info!("errand stopped");
    Ok(())
}

/// What the worker runtime's task ended with, as the process's result: a panicked job
/// makes `errand serve` and `errand work` exit non-zero, the panic named in the error.
fn workers_ended(
    ended: Result<Result<(), errand::WorkerError>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the workers stopped; shutting down");
            Err(anyhow::anyhow!("the workers stopped: {e}"))
        }
        Err(e) => Err(anyhow::anyhow!("the workers' task failed: {e}")),
    }
}

/// What the upstream client takes of a request body, from `[server]`.
fn body_limits(file: &File) -> BodyLimits {
    BodyLimits {
        max_bytes: usize::try_from(file.server.max_request_body).unwrap_or(usize::MAX),
        read_timeout: file.server.body_read_timeout,
    }
}

/// `errand work`.
pub(crate) async fn work(args: Work) -> anyhow::Result<()> {
    let upstream_uri = settings::upstream(&args.upstream)?;
    let metrics = admin_recorder(&args.admin)?;
    let file = match &args.config {
        Some(path) => File::load(path)?,
        None => File::default(),
    };
    let store = match settings::backend(&args.backend)? {
        Backend::Memory => bail!(
            "--backend: memory lives inside one process, so a separate `errand work` cannot share it; \
             use `errand serve` (front and workers in one process) or a shared backend"
        ),
        shared => backend::connect(&shared, &file).await?,
    };
    if args.workers == 0 {
        bail!("--workers: `errand work` needs at least 1");
    }
    let config = settings::config(&args.route, &args.jobs, args.workers, &file)?;
    let errand = Errand::new(store.clone(), config);
    let upstream = Upstream::new(&upstream_uri, args.jobs.job_timeout, body_limits(&file));
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    start_admin(&args.admin, metrics, &store, &shutdown).await?;
    tracing::info!(
        "errand working (upstream {upstream_uri}, backend {}, {} workers)",
        redact(&args.backend),
        args.workers
    );
    let worker = errand
        .worker(upstream)
        .concurrency(args.workers)
        .spawn(shutdown);
    workers_ended(worker.await)?;
    tracing::info!("errand stopped");
    Ok(())
}

/// `errand migrate`.
pub(crate) async fn migrate(args: Migrate) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => File::load(path)?,
        None => File::default(),
    };
    match settings::backend(&args.backend)? {
        Backend::Memory => bail!("--backend: memory has no schema to migrate"),
        Backend::Postgres(url) => {
            // Connecting applies the migrations.
            backend::connect(&Backend::Postgres(url.clone()), &file).await?;
            tracing::info!(
                "schema {:?} at {} is up to date",
                file.backend.schema,
                redact(&url)
            );
        }
        Backend::Redis(url) => {
            // Redis has no schema: connecting checks the server and loads the scripts.
            backend::connect(&Backend::Redis(url.clone()), &file).await?;
            tracing::info!(
                "Redis at {} is usable (prefix {:?}); it has no schema to migrate",
                redact(&url),
                file.backend.prefix
            );
        }
    }
    Ok(())
}

/// Checks the admin flags and, when the listener is on, installs the metrics recorder
/// (before anything counts; without the listener nothing is recorded at all).
fn admin_recorder(
    flags: &crate::cli::AdminFlags,
) -> anyhow::Result<Option<metrics_exporter_prometheus::PrometheusHandle>> {
    let Some(addr) = flags.admin_listen else {
        return Ok(None);
    };
    settings::check_admin(addr, flags.admin_token.as_deref())?;
    crate::admin::install_recorder().map(Some)
}

/// Starts the admin listener, if asked for.
async fn start_admin(
    flags: &crate::cli::AdminFlags,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    store: &Arc<dyn Inspect>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let (Some(addr), Some(metrics)) = (flags.admin_listen, metrics) else {
        return Ok(());
    };
    let bound = crate::admin::spawn(
        addr,
        flags.admin_token.clone(),
        Arc::clone(store),
        metrics,
        shutdown.clone(),
    )
    .await?;
    tracing::info!(
        "errand admin on http://{bound} ({})",
        if flags.admin_token.is_some() {
            "token required"
        } else {
            "loopback, no token"
        }
    );
    Ok(())
}

async fn accept_loop<S>(listener: TcpListener, service: S, file: &File, shutdown: CancellationToken)
where
    S: Service<Request<Incoming>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<errand::body::BoxError> + Send,
{
    let graceful = GracefulShutdown::new();
    let max_buf = usize::try_from(file.server.max_header_bytes).unwrap_or(usize::MAX);
    let header_timeout = file.server.header_read_timeout;
    let send_timeout = file.server.send_timeout;
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let per_request = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ClientAddr(peer));
            let mut service = service.clone();
            async move {
                if let Err(e) = std::future::poll_fn(|cx| service.poll_ready(cx)).await {
                    return Ok::<_, Infallible>(bad_gateway(&e.into()));
                }
                Ok(match service.call(request).await {
                    Ok(response) => response,
                    Err(e) => bad_gateway(&e.into()),
                })
            }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(max_buf)
            .serve_connection(
                TokioIo::new(FramingGuard::new(SendTimeout::new(stream, send_timeout))),
                per_request,
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("connections still open after 10s; closing them");
        }
    }
}

/// A request that passed through failed: at the client (its body), or at the upstream.
fn bad_gateway(error: &errand::body::BoxError) -> Response<Body> {
    let (status, text) = if let Some(client) = error.downcast_ref::<ClientError>() {
        tracing::debug!(%error, "request refused");
        (client.status(), format!("{client}\n"))
    } else {
        tracing::warn!(%error, "pass-through request failed");
        let timed_out = error.is::<tokio::time::error::Elapsed>();
        let text = if timed_out {
            format!("upstream timed out: {error}\n")
        } else {
            format!("{error}\n")
        };
        (errand::pattern::gateway_status(timed_out), text)
    };
    let client_error = error.is::<ClientError>();
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    if client_error {
        // What is left of the body is not read: the connection cannot carry another request.
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: no new connections or jobs; finishing what runs");
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicked_job_makes_the_process_fail_with_the_panic() {
        assert!(workers_ended(Ok(Ok(()))).is_ok(), "a clean stop exits 0");
        let panicked = Err(errand::WorkerError::Panicked("boom in the upstream".into()));
        let error = workers_ended(Ok(panicked)).expect_err("a panic is the process's error");
        assert!(
            error.to_string().contains("boom in the upstream"),
            "{error}"
        );
    }
}
