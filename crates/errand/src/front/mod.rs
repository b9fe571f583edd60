//! The front: a `tower` Layer that answers every GET of a deferred route from the store and
//! hands misses to workers.
//!
//! - [`ErrandLayer`] is made by [`Errand::layer`](crate::Errand::layer).
//! - [`ErrandService`] is the Layer's service; its request flow lives in `flow.rs` (plan the
//!   request synchronously, then lookup → decide → claim / wait / serve), the answers it
//!   builds in `respond.rs`.

mod conditional;
pub(crate) mod flow;
mod prefer;
mod respond;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::Errand;
use crate::body::{Body, BoxError};

impl Errand {
    /// The Layer to put in front of an app (`Router::layer(errand.layer())`).
    pub fn layer(&self) -> ErrandLayer {
        ErrandLayer {
            errand: self.clone(),
        }
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
