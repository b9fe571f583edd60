//! The public listener's connections: TLS when the listener has a certificate, then HTTP/1.1
//! or HTTP/2, chosen by ALPN over TLS and by the connection preface in the clear (h2c with
//! prior knowledge, as load balancers speak to their targets). Every request then goes to one
//! service, whatever its protocol.
//!
//! Limits against abuse, per protocol:
//! - both: the TLS handshake and the first request head within `header_read_timeout`; a
//!   client that reads nothing of its answer for `send_timeout` is dropped (`stall.rs`);
//! - HTTP/1.1: the head within `max_header_bytes`, ambiguous framing refused (`framing.rs`);
//! - HTTP/2: at most `h2_max_concurrent_streams` streams and `max_header_bytes` of headers
//!   per request (a `CONTINUATION` flood ends there); streams the client opens and resets at
//!   once (rapid reset) are capped, and so are streams errand must reset for a client's
//!   errors: past either, the connection is closed with `GOAWAY`, other clients unaffected.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use errand::body::{Body, BoxError};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::framing::FramingGuard;
use crate::stall::SendTimeout;
use crate::upstream::ClientConnection;

/// What every connection of a listener is held to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Largest request head (HTTP/1.1) or header list (HTTP/2).
    pub max_header_bytes: usize,
    /// The TLS handshake, and the first request head, must arrive within this.
    pub header_read_timeout: Duration,
    /// A client that reads nothing of its answer for this long is dropped.
    pub send_timeout: Duration,
    /// Streams one HTTP/2 connection may have open at once.
    pub h2_max_concurrent_streams: u32,
}

/// Streams a client may open and reset before errand has answered them, at once (rapid
/// reset, CVE-2023-44487); beyond it the connection is closed.
const MAX_PENDING_RESETS: usize = 20;

/// Streams errand may reset for a client's protocol errors before it closes the connection.
const MAX_ERROR_RESETS: usize = 256;

/// The bytes every HTTP/2 connection starts with (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Accepts connections until `shutdown`, then lets open ones finish their requests (at most
/// 10 s).
pub(crate) async fn accept_loop<S>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: S,
    limits: Limits,
    shutdown: CancellationToken,
) where
    S: Service<Request<Incoming>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send,
{
    let graceful = GracefulShutdown::new();
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
        let connection = Connection {
            peer,
            service: service.clone(),
            limits,
            watcher: graceful.watcher(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.run(stream, tls).await {
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

/// One accepted connection, before its protocol is known.
struct Connection<S> {
    peer: SocketAddr,
    service: S,
    limits: Limits,
    watcher: Watcher,
}

impl<S> Connection<S>
where
    S: Service<Request<Incoming>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send,
{
    async fn run(self, stream: TcpStream, tls: Option<TlsAcceptor>) -> Result<(), BoxError> {
        let limit = self.limits.header_read_timeout;
        match tls {
            None => {
                let h2 = tokio::time::timeout(limit, starts_with_preface(&stream))
                    .await
                    .map_err(|_| "no request within the header read timeout")??;
                let io = SendTimeout::new(stream, self.limits.send_timeout);
                self.serve(io, h2, false).await
            }
            Some(acceptor) => {
                let io = SendTimeout::new(stream, self.limits.send_timeout);
                let stream = tokio::time::timeout(limit, acceptor.accept(io))
                    .await
                    .map_err(|_| "no TLS handshake within the header read timeout")??;
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                self.serve(stream, h2, true).await
            }
        }
    }

    /// Serves HTTP/2 (`h2`) or HTTP/1.1 on `io`.
    async fn serve<IO>(self, io: IO, h2: bool, tls: bool) -> Result<(), BoxError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let client = ClientConnection {
            addr: self.peer,
            tls,
        };
        let service = self.service;
        let per_request = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(client);
            let mut service = service.clone();
            async move {
                if let Err(e) = std::future::poll_fn(|cx| service.poll_ready(cx)).await {
                    return Ok::<_, Infallible>(crate::server::bad_gateway(&e.into()));
                }
                Ok(match service.call(request).await {
                    Ok(response) => response,
                    Err(e) => crate::server::bad_gateway(&e.into()),
                })
            }
        });
        let limits = self.limits;
        if h2 {
            let connection = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(limits.h2_max_concurrent_streams)
                .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
                .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
                .max_local_error_reset_streams(MAX_ERROR_RESETS)
                .keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(20))
                .serve_connection(TokioIo::new(io), per_request);
            self.watcher.watch(connection).await?;
        } else {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes)
                .serve_connection(TokioIo::new(FramingGuard::new(io)), per_request);
            self.watcher.watch(connection).await?;
        }
        Ok(())
    }
}

/// Whether the client's first bytes are the HTTP/2 preface (h2c with prior knowledge);
/// looked at without taking them from the stream. Any other first bytes are HTTP/1.1.
async fn starts_with_preface(stream: &TcpStream) -> std::io::Result<bool> {
    let mut seen = [0u8; PREFACE.len()];
    loop {
        let n = stream.peek(&mut seen).await?;
        if n == 0 {
            // Closed before a byte: let HTTP/1.1 see the end.
            return Ok(false);
        }
        if seen[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // Part of the preface so far (it nearly always comes in one segment): look again
        // shortly, since a peek returns at once while any byte is waiting.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
