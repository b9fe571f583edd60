//! The `errand` binary against an adversarial client and a hostile upstream: requests that
//! try to bypass a route or a host check, to smuggle a second request, or to pass framing
//! errors off as the upstream's; upstream answers that must not be relayed or stored.
//! Each test asserts what the client gets and what the upstream received.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use common::{Counter, Errand, Http, origin, raw};

const WAIT: (&str, &str) = ("prefer", "wait=10");

/// An origin that counts every request, whatever its method or path.
async fn counting_origin(counter: Counter) -> SocketAddr {
    let router = Router::new().fallback(move || {
        let counter = counter.clone();
        async move { format!("request #{}", counter.bump()) }
    });
    origin(router).await
}

/// A config file in the temporary directory, removed on drop.
struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("errand-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }
    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An upstream that answers every request with `answer` as raw bytes, then closes; records
/// the request heads it received.
fn raw_origin(answer: &'static [u8]) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let _ = stream.write_all(answer);
                let _ = stream.flush();
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_lines_are_refused() {
    let counter = Counter::default();
    let up = counting_origin(counter.clone()).await;
    let errand = Errand::serve(up, &[]);
    for method in ["GET", "POST"] {
        let request = format!(
            "{method} /x HTTP/1.1\r\nHost: good.test\r\nHost: evil.example\r\ncontent-length: 0\r\n\r\n"
        );
        let answer = raw(errand.addr, request.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400"), "{method}: {answer}");
        assert!(answer.contains("Host header lines"), "{answer}");
    }
    assert_eq!(counter.get(), 0, "nothing reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_hosts_guard_every_method_and_route() {
    let counter = Counter::default();
    let up = counting_origin(counter.clone()).await;
    let config = ConfigFile::new(
        "hosts",
        "[server]\nallowed_hosts = [\"good.test\"]\n\n[[route]]\npath = \"/live/*\"\nmode = \"pass\"\n",
    );
    let errand = Errand::serve(up, &["--config", config.arg()]);
    let http = Http::new();
    let evil = ("host", "evil.example");
    for (method, path, extra) in [
        ("GET", "/x", None),
        ("POST", "/x", None),
        ("DELETE", "/x", None),
        ("PUT", "/x", None),
        ("GET", "/x", Some(("authorization", "Bearer t"))),
        ("GET", "/live/x", None),
        ("POST", "/live/x", None),
    ] {
        let mut headers = vec![evil];
        headers.extend(extra);
        let reply = http.send(method, &errand.url(path), &headers).await;
        assert_eq!(
            reply.status,
            StatusCode::MISDIRECTED_REQUEST,
            "{method} {path} {extra:?}"
        );
    }
    assert_eq!(
        counter.get(),
        0,
        "no request for another host reached the upstream"
    );
    let good = http
        .send("POST", &errand.url("/x"), &[("host", "good.test")])
        .await;
    assert_eq!(good.status, StatusCode::OK);
    assert_eq!(counter.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_route_holds_for_every_spelling_of_its_path() {
    let counter = Counter::default();
    let up = counting_origin(counter.clone()).await;
    let config = ConfigFile::new(
        "pass-spelling",
        "[[route]]\npath = \"/live/*\"\nmode = \"pass\"\n",
    );
    let errand = Errand::serve(up, &["--config", config.arg()]);
    let http = Http::new();
    for path in [
        "/live/x",
        "/%6cive/x",
        "/x/../live/x",
        "/live/./x",
        "/%6C%69ve/x",
    ] {
        for _ in 0..2 {
            let reply = http.get(&errand.url(path), &[]).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}");
            assert_eq!(
                reply.cache_status(),
                "errand; fwd=bypass; detail=pass",
                "{path} is on the pass route"
            );
        }
    }
    assert_eq!(
        counter.get(),
        10,
        "every request went through, none was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_request_transfer_codings_are_501() {
    let counter = Counter::default();
    let up = counting_origin(counter.clone()).await;
    let errand = Errand::serve(up, &[]);
    for coding in ["gzip, chunked", "x-custom, chunked"] {
        let request = format!(
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {coding}\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        );
        let answer = raw(errand.addr, request.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 501"), "{coding}: {answer}");
        assert!(answer.contains("not implemented"), "{answer}");
    }
    assert_eq!(counter.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_body_in_an_unknown_coding_is_never_stored() {
    let (up, seen) = raw_origin(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nCache-Control: max-age=600\r\nconnection: close\r\n\r\n3\r\n\x1f\x8b\x08\r\n0\r\n\r\n",
    );
    let errand = Errand::serve(up, &["--max-attempts", "1"]);
    let http = Http::new();
    let deferred = http.get(&errand.url("/gz"), &[WAIT]).await;
    assert_eq!(deferred.status, StatusCode::BAD_GATEWAY, "{deferred:?}");
    assert!(
        deferred.body.contains("Transfer-Encoding"),
        "{}",
        deferred.body
    );
    let passed = http.send("POST", &errand.url("/gz"), &[]).await;
    assert_eq!(passed.status, StatusCode::BAD_GATEWAY);
    assert!(
        passed.body.contains("unknown Transfer-Encoding"),
        "{}",
        passed.body
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsolicited_101_is_a_bad_gateway_and_never_passed_on() {
    let (up, seen) = raw_origin(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\n",
    );
    let errand = Errand::serve(up, &["--max-attempts", "2", "--error-ttl", "1s"]);
    let http = Http::new();
    let deferred = http.get(&errand.url("/up"), &[WAIT]).await;
    assert_eq!(deferred.status, StatusCode::BAD_GATEWAY, "{deferred:?}");
    assert!(deferred.body.contains("101"), "{}", deferred.body);
    assert_eq!(seen.lock().unwrap().len(), 2, "retried once, then failed");
    // The failure is errand's own 502, served again until the error TTL ends; never a 101.
    let again = http.get(&errand.url("/up"), &[]).await;
    assert_eq!(again.status, StatusCode::BAD_GATEWAY);
    let passed = http.send("POST", &errand.url("/up"), &[]).await;
    assert_eq!(passed.status, StatusCode::BAD_GATEWAY);
    assert!(passed.body.contains("101"), "{}", passed.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_beyond_599_is_a_server_error() {
    let (up, seen) = raw_origin(
        b"HTTP/1.1 600 Strange\r\nContent-Length: 5\r\nCache-Control: max-age=600\r\nconnection: close\r\n\r\nweird",
    );
    let errand = Errand::serve(up, &["--max-attempts", "2"]);
    let http = Http::new();
    let deferred = http.get(&errand.url("/s"), &[WAIT]).await;
    assert_eq!(deferred.status, StatusCode::BAD_GATEWAY, "{deferred:?}");
    assert!(!deferred.body.contains("weird"));
    assert_eq!(seen.lock().unwrap().len(), 2, "retried, then failed");
    let passed = http.send("POST", &errand.url("/s"), &[]).await;
    assert_eq!(passed.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_bodies_are_the_clients_400() {
    let counter = Counter::default();
    let up = counting_origin(counter.clone()).await;
    let errand = Errand::serve(up, &[]);
    for body in [
        "-1\r\nabc\r\n0\r\n\r\n",
        "0x3\r\nabc\r\n0\r\n\r\n",
        "3x\r\nabc\r\n0\r\n\r\n",
        "fffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        "3\r\nabcdef\r\n0\r\n\r\n",
    ] {
        let request =
            format!("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let answer = raw(errand.addr, request.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400"), "{body:?}: {answer}");
    }
    assert_eq!(counter.get(), 0, "the upstream received no part of them");
    // A body over the limit is refused too, before the upstream sees it.
    let config = ConfigFile::new("body", "[server]\nmax_request_body = \"1KiB\"\n");
    let small = Errand::serve(up, &["--config", config.arg()]);
    let big = "x".repeat(2048);
    let request = format!(
        "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{big}",
        big.len()
    );
    let answer = raw(small.addr, request.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(counter.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_with_chunked_is_400_on_every_request_of_a_connection() {
    let counter = Counter::default();
    let up = counting_origin(counter.clone()).await;
    let errand = Errand::serve(up, &[]);
    // Bare line feeds.
    let bare =
        "POST /x HTTP/1.1\nHost: a\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\r\n\r\n";
    let answer = raw(errand.addr, bare.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // The second request of a connection, after a chunked one.
    let pipelined = "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
                     POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let answer = raw(errand.addr, pipelined.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("HTTP/1.1 400"),
        "the second is refused: {answer}"
    );
    assert_eq!(
        counter.get(),
        1,
        "only the first request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_after_the_send_timeout() {
    let router = Router::new().route(
        "/big",
        get(|| async { ([("cache-control", "max-age=600")], vec![b'x'; 16 << 20]) }),
    );
    let up = origin(router).await;
    let config = ConfigFile::new("send", "[server]\nsend_timeout = \"1s\"\n");
    let errand = Errand::serve(up, &["--config", config.arg(), "--max-body", "32MiB"]);
    let http = Http::new();
    assert_eq!(
        http.get(&errand.url("/big"), &[WAIT]).await.status,
        StatusCode::OK
    );
    let mut stalled = std::net::TcpStream::connect(errand.addr).unwrap();
    // The same signature as the request above (its Host), so this one is a hit.
    let request = format!("GET /big HTTP/1.1\r\nHost: {}\r\n\r\n", errand.addr);
    stalled.write_all(request.as_bytes()).unwrap();
    // Read nothing for longer than the timeout; then the connection must be gone.
    std::thread::sleep(Duration::from_secs(3));
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut received = Vec::new();
    let ended = stalled.read_to_end(&mut received);
    // Without the timeout the whole body would arrive and the read would then time out on
    // an idle, open connection.
    assert!(
        received.len() < 16 << 20,
        "the connection was closed before the whole body was sent ({} bytes)",
        received.len()
    );
    if let Err(e) = ended {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "closed by errand, not left open: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_fences_the_job_running_for_its_url() {
    let up = common::fleet::slow_document().await;
    let errand = Errand::serve(up, &[]);
    common::fleet::a_write_fences_the_job_running_for_its_url(&errand, &errand).await;
}

/// A header with unbounded values (`User-Agent`) named in `Vary` cannot fill the store: a
/// URI gets the route's `max_variants` besides its first copy, later values pass through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_on_an_unbounded_header_stores_at_most_max_variants() {
    let counter = Counter::default();
    let c = counter.clone();
    let up = origin(Router::new().fallback(move || {
        let c = c.clone();
        async move { ([("vary", "User-Agent")], format!("#{}", c.bump())) }
    }))
    .await;
    let config = ConfigFile::new("variants", "[[route]]\npath = \"*\"\nmax_variants = 3\n");
    let errand = Errand::serve(up, &["--config", config.arg()]);
    let http = Http::new();
    for round in 0..2 {
        for n in 0..10 {
            let agent = format!("agent-{n}");
            let reply = http
                .get(&errand.url("/page"), &[WAIT, ("user-agent", &agent)])
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{agent}");
            let limited = reply.cache_status().contains("detail=variant-limit");
            assert_eq!(limited, n > 3, "{agent} round {round}: {reply:?}");
        }
    }
    assert_eq!(
        counter.get(),
        4 + 6 * 2,
        "4 copies stored, the other 6 fetched each time"
    );
    let refused = common::refused_serve(&[
        "--config",
        ConfigFile::new(
            "variants-bad",
            "[[route]]\npath = \"*\"\nmax_variants = 5000\n",
        )
        .arg(),
    ]);
    assert!(refused.0.contains("max_variants 5000"), "{}", refused.0);
}
