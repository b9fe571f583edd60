//! Test harness: a real `errand` process in front of a real origin, both on 127.0.0.1:0.

#![allow(dead_code, clippy::unwrap_used)]

pub(crate) mod fleet;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Counts requests the origin received.
#[derive(Clone, Default)]
pub(crate) struct Counter(Arc<AtomicUsize>);

impl Counter {
    pub(crate) fn bump(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Serves `router` on 127.0.0.1:0.
pub(crate) async fn origin(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// A running `errand` process; killed on drop.
pub(crate) struct Errand {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Errand {
    /// Starts `errand serve --upstream http://{upstream} --listen 127.0.0.1:0 {args}` and
    /// waits for its "listening" line.
    pub(crate) fn serve(upstream: SocketAddr, args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_errand"));
        command
            .args([
                "serve",
                "--upstream",
                &format!("http://{upstream}"),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(args);
        Self::start(command)
    }

    pub(crate) fn start(command: Command) -> Self {
        Self::start_matching(command, "errand listening on ")
    }

    /// Starts `command` and waits for a log line containing `ready`.
    pub(crate) fn start_matching(mut command: Command, ready: &str) -> Self {
        let ready = ready.to_owned();
        command
            .env("ERRAND_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let listening = line
                        .split("listening on http://")
                        .nth(1)
                        .or_else(|| line.split("listening on https://").nth(1))
                        .map(|rest| rest.split_whitespace().next().unwrap().to_owned());
                    let is_ready = line.contains(&ready);
                    // The line is in the log before the test hears of it.
                    log.lock().unwrap().push(line);
                    if let Some(addr) = listening {
                        let _ = tx.send(addr);
                    } else if is_ready {
                        let _ = tx.send("0.0.0.0:0".to_owned());
                    }
                }
            });
        }
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("errand did not start: {:?}", log.lock().unwrap()));
        Self {
            child,
            addr: addr.parse().unwrap(),
            log,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address of the admin listener, from its start-up line.
    pub(crate) fn admin_addr(&self) -> String {
        for _ in 0..100 {
            let found = self.log.lock().unwrap().iter().find_map(|line| {
                line.split("errand admin on http://")
                    .nth(1)
                    .or_else(|| line.split("errand admin on https://").nth(1))
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_owned)
            });
            if let Some(addr) = found {
                return addr;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no admin listener: {:?}", self.log.lock().unwrap());
    }

    /// Whether the log has a line containing `needle`, waiting up to five seconds for it:
    /// the lines reach the test through a reader thread, a moment after errand writes them.
    pub(crate) fn log_contains(&self, needle: &str) -> bool {
        for _ in 0..100 {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Errand {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `errand serve --upstream http://127.0.0.1:9 --listen 127.0.0.1:0 {args}`, which must
/// refuse to start; returns its stderr and how long it took to give up.
pub(crate) fn refused_serve(args: &[&str]) -> (String, Duration) {
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_errand"))
        .args([
            "serve",
            "--upstream",
            "http://127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} must not start: {stderr}");
    (stderr, started.elapsed())
}

/// Runs `errand {args}` to its end: whether it succeeded, its stdout and its stderr.
pub(crate) fn verb(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_errand"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A response as a test looks at it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub(crate) fn cache_status(&self) -> &str {
        self.header("cache-status")
    }
}

/// An HTTP client.
#[derive(Clone)]
pub(crate) struct Http(Client<HttpConnector, Empty<Bytes>>);

impl Http {
    pub(crate) fn new() -> Self {
        Self(Client::builder(TokioExecutor::new()).build_http())
    }

    pub(crate) async fn send(&self, method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = Request::builder().method(method).uri(url);
        for (n, v) in headers {
            request = request.header(*n, *v);
        }
        let response = self
            .0
            .request(request.body(Empty::new()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub(crate) async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", url, headers).await
    }
}

/// Sends raw bytes and returns everything the server answered before closing (or 3 s).
pub(crate) fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Resident memory of a process, in bytes (Linux).
pub(crate) fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}
