//! HTTP/2's known resource attacks against errand's listener (h2c here; TLS adds nothing to
//! them): rapid reset (CVE-2023-44487) and a CONTINUATION flood. Each must end at the
//! attacker's connection while other clients are served as before.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use axum::Router;
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
