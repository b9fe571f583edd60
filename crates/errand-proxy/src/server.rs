//! Start-up (settings, store, upstream, TLS), the in-process workers, and shutdown: SIGTERM or
//! Ctrl-C cancels one token; the accept loop stops, open connections finish their request,
//! workers finish or hand back their jobs, and the process exits 0.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use errand::Errand;
use errand::body::{self, Body};
use errand::store::{Inspect, redact};
use http::Response;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::{Migrate, Serve, Work};
use crate::settings::{self, Backend, File};
use crate::upstream::{BodyLimits, ClientError, Upstream};
use crate::{backend, connection, tls};

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
    let certificates =
        match settings::listener_tls(args.tls_cert.as_deref(), args.tls_key.as_deref(), &file)? {
            Some((cert, key)) => Some(Arc::new(tls::Certificates::load(
                cert,
                key,
                tls::LISTENER_FLAGS,
            )?)),
            None => None,
        };
    let mut config = settings::config(&args.route, &args.jobs, args.workers, &file)?;
    if certificates.is_some() {
        // Requests in origin form are keyed as https: what the client asked for.
        config.front.scheme = "https".into();
    }
    config.front.max_wait = args.max_wait;
    config.front.retry_after_max = args.retry_after_max.max(Duration::from_secs(1));
    let store = backend::front_store(&backend, &file, args.cache_size).await?;
    let backend_name = backend.name();
    let errand = Errand::new(store.clone(), config);
    let upstream = upstream_client(&upstream_uri, args.jobs.job_timeout, &file)?;

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen: cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("--listen: no local address")?;
    let scheme = if certificates.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        "errand listening on {scheme}://{addr} (HTTP/1.1 and HTTP/2; upstream {upstream_uri}, backend {backend_name}, {} workers)",
        args.workers
    );

    let shutdown = CancellationToken::new();
    let acceptor = match &certificates {
        Some(certificates) => {
            Arc::clone(certificates).watch(Duration::from_secs(5), shutdown.clone());
            Some(certificates.acceptor()?)
        }
        None => None,
    };
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
    let limits = connection::Limits {
        max_header_bytes: usize::try_from(file.server.max_header_bytes).unwrap_or(usize::MAX),
        header_read_timeout: file.server.header_read_timeout,
        send_timeout: file.server.send_timeout,
        h2_max_concurrent_streams: file.server.h2_max_concurrent_streams,
    };
    connection::accept_loop(listener, acceptor, service, limits, shutdown.clone()).await;
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

/// The upstream client for `uri`, as `[server]` (request bodies) and `[upstream]` (TLS, pool)
/// say.
fn upstream_client(
    uri: &http::Uri,
    job_timeout: Duration,
    file: &File,
) -> anyhow::Result<Upstream> {
    let body = BodyLimits {
        max_bytes: usize::try_from(file.server.max_request_body).unwrap_or(usize::MAX),
        read_timeout: file.server.body_read_timeout,
    };
    Upstream::new(uri, job_timeout, body, &file.upstream)
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
    let upstream = upstream_client(&upstream_uri, args.jobs.job_timeout, &file)?;
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
    let tls = match (&flags.admin_tls_cert, &flags.admin_tls_key) {
        (Some(cert), Some(key)) => {
            let certificates = Arc::new(tls::Certificates::load(
                cert.clone(),
                key.clone(),
                tls::ADMIN_FLAGS,
            )?);
            Arc::clone(&certificates).watch(Duration::from_secs(5), shutdown.clone());
            Some(certificates.acceptor()?)
        }
        // Half a pair is refused by the command line.
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let bound = crate::admin::spawn(
        addr,
        tls,
        flags.admin_token.clone(),
        Arc::clone(store),
        metrics,
        shutdown.clone(),
    )
    .await?;
    tracing::info!(
        "errand admin on {scheme}://{bound} ({})",
        if flags.admin_token.is_some() {
            "token required"
        } else {
            "loopback, no token"
        }
    );
    Ok(())
}

/// A request that passed through failed: at the client (its body), or at the upstream.
pub(crate) fn bad_gateway(error: &errand::body::BoxError) -> Response<Body> {
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
