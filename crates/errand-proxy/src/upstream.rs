//! The proxy's "process work": the upstream request. One `tower` service used twice: by the
//! front for requests that pass straight through, and by the workers for jobs.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use errand::body::{Body, BoxError};
use errand::pattern::freshness::remove_hop_headers;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_service::Service;

/// The client's address, put in the request's extensions by the server (for
/// `X-Forwarded-For` on requests that pass through; jobs carry no client).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// An HTTP client bound to one upstream base URL. Cheap to clone (the front clones it per
/// request).
#[derive(Clone, Debug)]
pub struct Upstream {
    target: std::sync::Arc<Target>,
    client: Client<HttpConnector, Body>,
}

#[derive(Debug)]
struct Target {
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    timeout: Duration,
}

impl Upstream {
    /// A client for `base` (`http://host[:port][/prefix]`); `timeout` bounds the wait for the
    /// response head.
    pub fn new(base: &Uri, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let target = Target {
            scheme: base.scheme().cloned().unwrap_or(Scheme::HTTP),
            authority: base
                .authority()
                .cloned()
                .unwrap_or_else(|| Authority::from_static("localhost")),
            base_path: base.path().trim_end_matches('/').to_owned(),
            timeout,
        };
        Self {
            target: std::sync::Arc::new(target),
            client,
        }
    }
}

impl Target {
    fn uri(&self, original: &Uri) -> Result<Uri, BoxError> {
        let path = original.path_and_query().map_or("/", PathAndQuery::as_str);
        let joined: PathAndQuery = format!("{}{}", self.base_path, path).parse()?;
        Ok(Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(joined)
            .build()?)
    }
}

/// Request headers that belong to the client's hop and are not forwarded (RFC 9110 §7.6.1),
/// besides those the client lists in `Connection`.
const REQUEST_HOP_HEADERS: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl<B> Service<Request<B>> for Upstream
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let upstream = &self.target;
        let target = match upstream.uri(&parts.uri) {
            Ok(target) => target,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let original_host = parts.headers.remove(header::HOST);
        remove_hop_headers(&mut parts.headers, &REQUEST_HOP_HEADERS);
        if let Ok(host) = HeaderValue::from_str(upstream.authority.as_str()) {
            parts.headers.insert(header::HOST, host);
        }
        if let Some(host) = original_host {
            parts.headers.insert("x-forwarded-host", host);
        }
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static("http"));
        if let Some(ClientAddr(addr)) = parts.extensions.get::<ClientAddr>()
            && let Ok(ip) = HeaderValue::from_str(&addr.ip().to_string())
        {
            parts.headers.append("x-forwarded-for", ip);
        }
        parts.uri = target;
        parts.version = http::Version::HTTP_11;
        let request = Request::from_parts(parts, errand::body::boxed(body));
        let response = self.client.request(request);
        let timeout = upstream.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, response).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(e)) => Err(describe(e).into()),
                // Kept as its own type so callers answer 504 rather than 502.
                Err(elapsed) => Err(elapsed.into()),
            }
        })
    }
}

/// The client error with its cause chain ("connection refused" is in the source).
fn describe(error: hyper_util::client::legacy::Error) -> String {
    let mut text = format!("upstream request failed: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
