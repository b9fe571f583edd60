//! The proxy's "process work": the upstream request. One `tower` service used twice: by the
//! front for requests that pass straight through, and by the workers for jobs.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use errand::body::{Body, BoxError};
use errand::pattern::remove_hop_headers;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_service::Service;

use crate::settings::UpstreamSection;
use crate::tls;

/// The client's connection, put in the request's extensions by the server (for
/// `X-Forwarded-For` and `X-Forwarded-Proto` on requests that pass through; jobs carry no
/// client).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientConnection {
    /// The client's address.
    pub addr: SocketAddr,
    /// Whether it came over TLS.
    pub tls: bool,
}

/// An HTTP client bound to one upstream base URL, over `http://` or `https://` (HTTP/2 when
/// the upstream offers it by ALPN, else HTTP/1.1), keeping a bounded pool of idle
/// connections. One reference count to clone (the front clones it per request, hits
/// included, so it must cost no more).
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    target: Target,
    client: Client<HttpsConnector<HttpConnector>, Body>,
}

#[derive(Debug)]
struct Target {
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    timeout: Duration,
    body: BodyLimits,
}

/// How much of a client's request body errand takes, and how long it waits for it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyLimits {
    /// Largest body (`413` beyond it).
    pub max_bytes: usize,
    /// The whole body must arrive within this (`408` otherwise).
    pub read_timeout: Duration,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            max_bytes: 8 * 1024 * 1024,
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// A request that failed on the client's side, before anything reached the upstream: the
/// server answers it with its own status, never as the upstream's failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// The body is larger than [`BodyLimits::max_bytes`].
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The body's framing is broken (a bad chunk size, data longer than its chunk…).
    #[error("the request body is malformed: {0}")]
    Malformed(BoxError),
    /// The body did not arrive within [`BodyLimits::read_timeout`].
    #[error("the request body did not arrive within {0:?}")]
    Slow(Duration),
}

impl ClientError {
    /// The answer's status.
    pub(crate) fn status(&self) -> http::StatusCode {
        match self {
            Self::TooLarge(_) => http::StatusCode::PAYLOAD_TOO_LARGE,
            Self::Malformed(_) => http::StatusCode::BAD_REQUEST,
            Self::Slow(_) => http::StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// Reads a request body whole, within `limits`.
///
/// Bodies are taken whole before the upstream sees the request (as nginx does by default):
/// a body whose framing turns out broken is then the client's `400`, and the upstream never
/// receives a head followed by part of a body.
async fn buffer(mut body: Body, limits: BodyLimits) -> Result<Body, ClientError> {
    let read = async {
        let mut whole = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(ClientError::Malformed)?;
            if let Ok(data) = frame.into_data() {
                if whole.len() + data.len() > limits.max_bytes {
                    return Err(ClientError::TooLarge(limits.max_bytes));
                }
                whole.extend_from_slice(&data);
            }
        }
        Ok(errand::body::full(whole.freeze()))
    };
    tokio::time::timeout(limits.read_timeout, read)
        .await
        .unwrap_or(Err(ClientError::Slow(limits.read_timeout)))
}

impl Upstream {
    /// A client for `base` (`http[s]://host[:port][/prefix]`); `timeout` bounds the wait for
    /// the response head; `section` says how an `https://` upstream is verified and how many
    /// idle connections are kept.
    ///
    /// # Errors
    ///
    /// For an `https://` upstream, what [`tls::upstream_config`] refuses.
    pub(crate) fn new(
        base: &Uri,
        timeout: Duration,
        body: BodyLimits,
        section: &UpstreamSection,
    ) -> anyhow::Result<Self> {
        crate::settings::check_upstream(base, section)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        // The TLS connector passes http:// through as it is.
        connector.enforce_http(false);
        let tls = if base.scheme() == Some(&Scheme::HTTPS) {
            tls::upstream_config(section)?
        } else {
            tls::unused_client_config()?
        };
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(section.max_idle_connections)
            .timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        let target = Target {
            scheme: base.scheme().cloned().unwrap_or(Scheme::HTTP),
            authority: base
                .authority()
                .cloned()
                .unwrap_or_else(|| Authority::from_static("localhost")),
            base_path: base.path().trim_end_matches('/').to_owned(),
            timeout,
            body,
        };
        Ok(Self {
            shared: Arc::new(Shared { target, client }),
        })
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
        let upstream = &self.shared.target;
        let target = match upstream.uri(&parts.uri) {
            Ok(target) => target,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let original_host = parts.headers.remove(header::HOST);
        remove_hop_headers(&mut parts.headers, &REQUEST_HOP_HEADERS);
        // The client names the upstream from the URI: `Host` over HTTP/1.1, `:authority`
        // over HTTP/2 (where a `Host` as well is a duplicate some servers refuse).
        if let Some(host) = original_host {
            parts.headers.insert("x-forwarded-host", host);
        }
        let client = parts.extensions.get::<ClientConnection>().copied();
        let proto = if client.is_some_and(|c| c.tls) {
            "https"
        } else {
            "http"
        };
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static(proto));
        if let Some(client) = client
            && let Ok(ip) = HeaderValue::from_str(&client.addr.ip().to_string())
        {
            parts.headers.append("x-forwarded-for", ip);
        }
        parts.uri = target;
        parts.version = http::Version::HTTP_11;
        let body = errand::body::boxed(body);
        let shared = Arc::clone(&self.shared);
        let (timeout, limits) = (upstream.timeout, upstream.body);
        Box::pin(async move {
            let body = if body.is_end_stream() {
                body
            } else {
                buffer(body, limits).await?
            };
            let response = shared.client.request(Request::from_parts(parts, body));
            match tokio::time::timeout(timeout, response).await {
                Ok(Ok(response)) => match refuse_response(&response) {
                    None => Ok(response),
                    Some(why) => Err(why.into()),
                },
                Ok(Err(e)) => {
                    let named = format!("{}://{}", shared.target.scheme, shared.target.authority);
                    Err(describe(&named, &e).into())
                }
                // Kept as its own type so callers answer 504 rather than 502.
                Err(elapsed) => Err(elapsed.into()),
            }
        })
    }
}

/// Why a response head from upstream cannot be relayed or stored, if it cannot. Such an
/// answer counts as the upstream's failure: `502` to a request passed through, a failed
/// attempt (retried, then `502`) for a job.
///
/// - A `1xx` as the final answer: errand forwards no `Upgrade`, so a `101 Switching
///   Protocols` is unsolicited (RFC 9110 §15.2.2), and no other `1xx` is final.
/// - A status outside 100–599 (RFC 9110 §15).
/// - A transfer coding besides `chunked`: the body would reach clients still encoded, with
///   nothing saying so (RFC 9112 §6.1).
fn refuse_response(response: &Response<Incoming>) -> Option<String> {
    let status = response.status().as_u16();
    if status == 101 {
        return Some("upstream sent an unsolicited 101 Switching Protocols".to_owned());
    }
    if !(200..600).contains(&status) {
        return Some(format!("upstream sent an invalid final status {status}"));
    }
    errand::pattern::unknown_coding(response.headers())
        .map(|coding| format!("upstream sent unknown Transfer-Encoding {coding:?}"))
}

/// The client error with the upstream it names and its cause chain ("connection refused",
/// "invalid peer certificate: UnknownIssuer" are in the source).
fn describe(upstream: &str, error: &hyper_util::client::legacy::Error) -> String {
    let mut text = format!("upstream {upstream} request failed: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
