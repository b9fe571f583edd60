//! HTTP/2's known resource attacks against errand's listener (h2c here; TLS adds nothing to
//! them): rapid reset (CVE-2023-44487) and a CONTINUATION flood. Each must end at the
//! attacker's connection while other clients are served as before.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use bytes::Bytes;
use common::{Errand, Http, origin};
use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn errand() -> Errand {
    let up = origin(Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        "page"
    }))
    .await;
    Errand::serve(up, &[])
}

/// A well-behaved client still gets its page.
async fn still_served(errand: &Errand) {
    let reply = Http::new()
        .get(&errand.url("/after"), &[("prefer", "wait=10")])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_ends_the_attackers_connection_only() {
    let errand = errand().await;
    let tcp = TcpStream::connect(errand.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let started = Instant::now();
    let mut refused = false;
    for n in 0..10_000 {
        let request = Request::get(format!("http://{}/r/{n}", errand.addr))
            .body(())
            .unwrap();
        let ready = match client.ready().await {
            Ok(ready) => ready,
            Err(_) => {
                refused = true;
                break;
            }
        };
        client = ready;
        match client.send_request(request, true) {
            Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), driver).await;
    assert!(
        refused || matches!(ended, Ok(Ok(Err(_)))),
        "the connection was closed on the attacker: {ended:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    still_served(&errand).await;
}

/// One frame: length, type, flags, stream 1, payload.
fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 1];
    out.extend_from_slice(payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off_at_the_header_limit() {
    let errand = errand().await;
    let mut tcp = TcpStream::connect(errand.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tcp.write_all(&frame(0x4, 0, &[])).await.unwrap(); // SETTINGS
    // HEADERS without END_HEADERS: `:method GET` (indexed), then literal fields without
    // indexing, 16 KiB of them per CONTINUATION, never ending.
    tcp.write_all(&frame(0x1, 0x0, &[0x82])).await.unwrap();
    let mut field = vec![0x00, 0x05];
    field.extend_from_slice(b"x-pad");
    field.push(0x7f);
    field.push(0x81);
    field.push(0x7f); // value length 127 + 129 + 127 = 383 (HPACK integer)
    field.extend(std::iter::repeat_n(b'a', 383));
    let block: Vec<u8> = field.iter().copied().cycle().take(16_000).collect();
    let continuation = frame(0x9, 0x0, &block);
    let mut sent = 0usize;
    let mut cut_off = false;
    for _ in 0..4_000 {
        // 64 MB in all if nothing stopped it.
        if tcp.write_all(&continuation).await.is_err() {
            cut_off = true;
            break;
        }
        sent += continuation.len();
    }
    if !cut_off {
        // The server may have sent GOAWAY and closed its side while the writes were buffered.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
        cut_off = matches!(read, Ok(Ok(_)) | Ok(Err(_)));
    }
    assert!(cut_off, "the connection was closed after {sent} bytes");
    // Loopback socket buffers take a few MB before a write blocks; the server itself keeps
    // no more than the header limit of it.
    assert!(
        sent < 8 * 1024 * 1024,
        "cut off early, not after {sent} bytes"
    );
    still_served(&errand).await;
}

/// One request over an HTTP/2 connection: status, headers and body.
async fn exchange(
    client: &mut h2::client::SendRequest<Bytes>,
    request: Request<()>,
    body: Option<&'static [u8]>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let ready = client.clone().ready().await.unwrap();
    *client = ready;
    let (response, mut stream) = client.send_request(request, body.is_none()).unwrap();
    if let Some(body) = body {
        stream.send_data(Bytes::from_static(body), true).unwrap();
    }
    let (head, mut received) = response.await.unwrap().into_parts();
    let mut bytes = Vec::new();
    while let Some(chunk) = received.data().await {
        let chunk = chunk.unwrap();
        received
            .flow_control()
            .release_capacity(chunk.len())
            .unwrap();
        bytes.extend_from_slice(&chunk);
    }
    (head.status, head.headers, Bytes::from(bytes))
}

/// The pattern over HTTP/2 as over HTTP/1.1, on one h2c connection: a hit, a `304` for a
/// matching `If-None-Match`, a request with credentials straight through, a `POST` through
/// with its body, and the stored copy invalidated by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_pass_through_and_unsafe_requests_over_http2() {
    let counter = common::Counter::default();
    let c = counter.clone();
    let up = origin(Router::new().fallback(
        move |method: http::Method, headers: http::HeaderMap, body: Bytes| {
            let c = c.clone();
            async move {
                let n = c.bump();
                let credentials = headers.contains_key("authorization");
                let text = format!(
                    "{method} #{n} credentials={credentials} body={}",
                    String::from_utf8_lossy(&body)
                );
                (
                    [
                        ("cache-control", "max-age=60".to_owned()),
                        ("etag", format!("\"v{n}\"")),
                    ],
                    text,
                )
            }
        },
    ))
    .await;
    let errand = Errand::serve(up, &[]);
    let tcp = TcpStream::connect(errand.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let url = format!("http://{}/page", errand.addr);
    let get = |headers: &[(&'static str, &'static str)]| {
        let mut request = Request::get(&url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap()
    };

    // The first request waits for its job; the second is a hit.
    let (status, headers, body) = exchange(&mut client, get(&[("prefer", "wait=10")]), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "GET #1 credentials=false body=");
    assert_eq!(headers["etag"], "\"v1\"");
    let (status, headers, _) = exchange(&mut client, get(&[]), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["cache-status"].to_str().unwrap().contains("hit"));

    // A matching validator gets `304` from the stored copy, with no body.
    let (status, headers, body) =
        exchange(&mut client, get(&[("if-none-match", "\"v1\"")]), None).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(headers["etag"], "\"v1\"");
    let (status, _, _) = exchange(&mut client, get(&[("if-none-match", "\"v0\"")]), None).await;
    assert_eq!(status, StatusCode::OK, "a validator that does not match");

    // Credentials the route does not key on: straight through, answered by the origin.
    let (status, headers, body) =
        exchange(&mut client, get(&[("authorization", "Bearer a")]), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "GET #2 credentials=true body=");
    assert!(!headers["cache-status"].to_str().unwrap().contains("hit"));

    // A POST goes through with its body, and invalidates the stored copy of its URI.
    let post = Request::post(&url).body(()).unwrap();
    let (status, _, body) = exchange(&mut client, post, Some(b"hello")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "POST #3 credentials=false body=hello");
    let (status, _, body) = exchange(&mut client, get(&[("prefer", "wait=10")]), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "GET #4 credentials=false body=", "fetched again");
    assert_eq!(counter.get(), 4);
}
