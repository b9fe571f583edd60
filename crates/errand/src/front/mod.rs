//! The front: a `tower` Layer that answers every GET of a deferred route from the store and
//! hands misses to workers.
//!
//! - [`Errand`] is the handle a program builds once (store + config) and clones freely; it
//!   makes the [`ErrandLayer`] for the front and a [`Worker`] for the jobs.
//! - [`ErrandService`] is the Layer's service; its request flow lives in `flow.rs` (plan the
//!   request synchronously, then lookup → decide → claim / wait / serve), the answers it
//!   builds in `respond.rs`.

mod conditional;
mod estimate;
pub(crate) mod flow;
mod prefer;
mod respond;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tokio::sync::Semaphore;
use tower_layer::Layer;
use tower_service::Service;

pub use estimate::JobEstimates;
pub use prefer::Prefer;

use crate::body::{Body, BoxError};
use crate::config::Config;
use crate::store::{MemoryConfig, MemoryStore, SharedStore};
use crate::worker::Worker;

/// The handle to one errand deployment: its store and configuration. Cheap to clone.
#[derive(Clone)]
pub struct Errand {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) store: SharedStore,
    pub(crate) config: Config,
    pub(crate) estimates: JobEstimates,
    pub(crate) waiters: Arc<Semaphore>,
}

impl fmt::Debug for Errand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Errand")
            .field("store", &self.shared.store)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Errand {
    /// errand over `store` with `config`.
    pub fn new(store: SharedStore, config: Config) -> Self {
        let estimates = JobEstimates::new(config.routes.len());
        let waiters = Arc::new(Semaphore::new(config.front.max_waiters));
        Self {
            shared: Arc::new(Shared {
                store,
                config,
                estimates,
                waiters,
            }),
        }
    }

    /// errand over the embedded memory store (default byte budget and flood cap).
    pub fn in_memory(config: Config) -> Self {
        Self::new(Arc::new(MemoryStore::new(MemoryConfig::default())), config)
    }

    /// The Layer to put in front of an app (`Router::layer(errand.layer())`).
    pub fn layer(&self) -> ErrandLayer {
        ErrandLayer {
            errand: self.clone(),
        }
    }

    /// A worker runtime that runs `service` for this deployment's jobs. `service` may be the
    /// same app with the Layer on: a job's request is marked, so the Layer lets it through.
    pub fn worker<S, ResBody>(&self, service: S) -> Worker<S>
    where
        S: Service<Request<crate::worker::JobBody>, Response = Response<ResBody>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        ResBody: http_body::Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        Worker::new(self.clone(), service)
    }

    /// The store.
    pub fn store(&self) -> &SharedStore {
        &self.shared.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Per-route job duration estimates (feeding `Retry-After`).
    pub fn estimates(&self) -> &JobEstimates {
        &self.shared.estimates
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

/// Applies errand's front to a service. Made by [`Errand::layer`].
#[derive(Clone, Debug)]
pub struct ErrandLayer {
    errand: Errand,
}

impl<S> Layer<S> for ErrandLayer {
    type Service = ErrandService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrandService {
            inner,
            errand: self.errand.clone(),
        }
    }
}

/// The front as a service over `S`, the app (or upstream client) that requests pass through
/// to. What it does with each request is described in the [crate docs](crate) and `flow.rs`.
#[derive(Clone, Debug)]
pub struct ErrandService<S> {
    inner: S,
    errand: Errand,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ErrandService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: http_body::Body + Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone that was driven to readiness is the one to call (tower's usual swap).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(self.errand.shared());
        // Request logs are off unless the `errand::request` target is enabled at DEBUG; the
        // check is one cached callsite lookup.
        let logged = tracing::enabled!(target: "errand::request", tracing::Level::DEBUG)
            .then(|| RequestLog::of(&request));
        // Plan synchronously, then box only the chosen path's future: one state machine for
        // every path would be several times larger, and it is moved on every request.
        let future: Self::Future = match flow::plan(&shared, &request) {
            flow::Plan::Respond(response) => Box::pin(std::future::ready(Ok(response))),
            flow::Plan::Forward(status) => Box::pin(flow::forward(inner, request, status)),
            flow::Plan::PassUnsafe => Box::pin(flow::pass_unsafe(shared, inner, request)),
            flow::Plan::Defer(deferred) => Box::pin(flow::defer(shared, inner, request, deferred)),
        };
        match logged {
            None => future,
            Some(log) => Box::pin(async move {
                let result = future.await;
                if let Ok(response) = &result {
                    log.write(response);
                }
                result
            }),
        }
    }
}

/// What one request log line says, taken before the request moves on.
struct RequestLog {
    method: http::Method,
    uri: http::Uri,
    trace: Option<crate::pattern::TraceParent>,
    started: std::time::Instant,
}

impl RequestLog {
    fn of<B>(request: &Request<B>) -> Self {
        Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            trace: request
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .and_then(crate::pattern::TraceParent::parse),
            started: std::time::Instant::now(),
        }
    }

    fn write<B>(&self, response: &Response<B>) {
        let cache_status = response
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        tracing::debug!(
            target: "errand::request",
            method = %self.method,
            uri = %self.uri,
            status = response.status().as_u16(),
            cache_status,
            micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            trace_id = self.trace.as_ref().map(|t| tracing::field::display(t.trace_hex())),
            "request"
        );
    }
}
