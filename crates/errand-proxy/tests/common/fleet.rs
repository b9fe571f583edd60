//! Scenarios every shared backend must pass, as an operator runs errand: several processes
//! sharing one backend. `postgres.rs` and `redis.rs` run them against their backend.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use super::{Counter, Errand, Http, origin};

/// A shared backend with a namespace (schema, key prefix) of one test's own.
pub(crate) struct Shared {
    /// The `--backend` URL.
    pub url: String,
    /// A TOML file whose `[backend]` section names the namespace.
    pub config_file: PathBuf,
}

impl Shared {
    pub(crate) fn config(&self) -> &str {
        self.config_file.to_str().unwrap()
    }
}

/// Namespaces made by this test binary.
static NAMESPACES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A namespace of one test's own on a shared backend (a PostgreSQL schema, a Redis key
/// prefix), with the config file that names it; emptied and removed when dropped.
pub(crate) struct Namespace {
    pub shared: Shared,
    cleanup: Option<Box<dyn FnOnce() + Send>>,
}

impl Namespace {
    /// Makes the namespace `errand_bin_<pid>_<n>`, written as `setting = "<name>"` in the
    /// `[backend]` section. `probe` connects to the backend with that name (and may create the
    /// namespace, which `cleanup` then removes): when it fails the test is skipped
    /// with a message (`None`), except under `CI=true`, where it fails. `cleanup` empties the
    /// namespace; it runs on a runtime of its own when the guard drops (Drop cannot await).
    pub(crate) async fn new<P, PF, C, F>(
        backend: &str,
        url: String,
        setting: &str,
        probe: P,
        cleanup: C,
    ) -> Option<Self>
    where
        P: FnOnce(String, String) -> PF,
        PF: std::future::Future<Output = Result<(), String>>,
        C: FnOnce(String, String) -> F + Send + 'static,
        F: std::future::Future<Output = ()>,
    {
        let name = format!(
            "errand_bin_{}_{}",
            std::process::id(),
            NAMESPACES.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        if let Err(e) = probe(url.clone(), name.clone()).await {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI needs {backend} at {url}: {e}");
            }
            eprintln!("SKIPPED: {backend} is not reachable at {url} ({e})");
            return None;
        }
        let config_file = std::env::temp_dir().join(format!("{name}.toml"));
        std::fs::write(&config_file, format!("[backend]\n{setting} = \"{name}\"\n")).unwrap();
        let cleanup_url = url.clone();
        Some(Self {
            shared: Shared { url, config_file },
            cleanup: Some(Box::new(move || {
                let _ = std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(cleanup(cleanup_url, name));
                })
                .join();
            })),
        })
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.shared.config_file);
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
    }
}

/// `errand work` on `shared`, with `extra` flags.
pub(crate) fn worker(upstream: std::net::SocketAddr, shared: &Shared, extra: &[&str]) -> Errand {
    let mut command = Command::new(env!("CARGO_BIN_EXE_errand"));
    command
        .args([
            "work",
            "--upstream",
            &format!("http://{upstream}"),
            "--backend",
            &shared.url,
        ])
        .args(["--config", shared.config()])
        .args(extra);
    Errand::start_matching(command, "errand working")
}

/// Two `serve --workers 0` fronts on `shared`, with the config file at `config`.
pub(crate) fn two_fronts(
    upstream: std::net::SocketAddr,
    shared: &Shared,
    config: &str,
) -> (Errand, Errand) {
    let args = [
        "--backend",
        &shared.url,
        "--workers",
        "0",
        "--config",
        config,
    ];
    (
        Errand::serve(upstream, &args),
        Errand::serve(upstream, &args),
    )
}

/// Two `serve --workers 0` fronts and a `work` process: 100 concurrent first GETs over both
/// fronts make exactly one upstream request, and both fronts then serve it.
pub(crate) async fn two_fronts_and_a_worker_make_one_upstream_request(shared: &Shared) {
    let counter = Counter::default();
    let c = counter.clone();
    let up = origin(Router::new().route(
        "/report",
        get(move || {
            let c = c.clone();
            async move {
                let n = c.bump();
                tokio::time::sleep(Duration::from_millis(300)).await;
                format!("report #{n}")
            }
        }),
    ))
    .await;
    let (front_a, front_b) = two_fronts(up, shared, shared.config());
    let _worker = worker(up, shared, &[]);
    let http = Http::new();
    let host = ("host", "site.example");
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let http = http.clone();
            let url = if i % 2 == 0 {
                front_a.url("/report")
            } else {
                front_b.url("/report")
            };
            tokio::spawn(async move { http.get(&url, &[host]).await })
        })
        .collect();
    let mut misses = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        assert!(
            matches!(reply.status, StatusCode::ACCEPTED | StatusCode::OK),
            "{reply:?}"
        );
        misses += usize::from(reply.cache_status().ends_with("detail=miss"));
    }
    assert_eq!(misses, 1, "one claim won across both fronts");
    let waited = http
        .get(&front_b.url("/report"), &[host, ("prefer", "wait=10")])
        .await;
    assert_eq!(waited.status, StatusCode::OK);
    assert_eq!(waited.body, "report #1");
    let hit_a = http.get(&front_a.url("/report"), &[host]).await;
    let hit_b = http.get(&front_b.url("/report"), &[host]).await;
    for hit in [&hit_a, &hit_b] {
        assert_eq!(hit.body, "report #1");
        assert!(
            hit.cache_status().starts_with("errand; hit"),
            "{}",
            hit.cache_status()
        );
    }
    assert_eq!(
        counter.get(),
        1,
        "100 first GETs over two fronts, one upstream request"
    );
}

/// `kill -9` of the only worker while it runs a job: the fronts stay pending with no second
/// job, and a worker started afterwards finishes it once the lease ends.
pub(crate) async fn a_killed_workers_job_is_finished_by_another_after_its_lease(shared: &Shared) {
    let counter = Counter::default();
    let c = counter.clone();
    let up = origin(Router::new().route(
        "/slow",
        get(move || {
            let c = c.clone();
            async move {
                let n = c.bump();
                // The first run hangs long enough for its worker to be killed.
                let nap = if n == 1 { 30_000 } else { 50 };
                tokio::time::sleep(Duration::from_millis(nap)).await;
                format!("run #{n}")
            }
        }),
    ))
    .await;
    let front = Errand::serve(
        up,
        &[
            "--backend",
            &shared.url,
            "--workers",
            "0",
            "--config",
            shared.config(),
        ],
    );
    let mut first = worker(up, shared, &["--lease", "2s"]);
    let http = Http::new();
    assert_eq!(
        http.get(&front.url("/slow"), &[]).await.status,
        StatusCode::ACCEPTED
    );
    let started = Instant::now();
    while counter.get() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the worker took the job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.child.kill().unwrap(); // SIGKILL: no hand-back, the lease must run out
    first.child.wait().unwrap();
    let killed_at = Instant::now();
    let pending = http.get(&front.url("/slow"), &[]).await;
    assert_eq!(pending.status, StatusCode::ACCEPTED);
    assert_eq!(
        pending.cache_status(),
        "errand; fwd=uri-miss; detail=pending",
        "no second job"
    );
    let _second = worker(up, shared, &["--lease", "2s"]);
    let done = http
        .get(&front.url("/slow"), &[("prefer", "wait=20")])
        .await;
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(done.body, "run #2");
    assert!(killed_at.elapsed() < Duration::from_secs(15));
    assert_eq!(
        counter.get(),
        2,
        "the lost run and the one that finished it"
    );
}

/// `errand serve` with an unreachable backend exits non-zero within 30 s, naming `url` with
/// its password hidden (`shown`).
pub(crate) fn an_unreachable_backend_at_start_is_named_without_its_password(
    url: &str,
    shown: &str,
) {
    let (stderr, took) = super::refused_serve(&["--backend", url]);
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(
        stderr.contains("--backend") && stderr.contains(shown),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

/// Load from four clients while `stop` takes the backend down and `start` brings it back:
/// every answer comes within 3 s, a request while it is down gets `503` + `Retry-After`
/// without internals (no `internals` in the body), and service resumes by itself. Returns
/// the first `200` after the outage.
pub(crate) async fn through_an_outage(
    errand: &Errand,
    stop: impl FnOnce(),
    start: impl FnOnce(),
    internals: &str,
) -> super::Reply {
    let http = Http::new();
    let stop_at = Instant::now() + Duration::from_secs(6);
    let load: Vec<_> = (0..4)
        .map(|c| {
            let (http, base) = (http.clone(), errand.url(""));
            tokio::spawn(async move {
                let (mut slowest, mut statuses, mut n) = (Duration::ZERO, Vec::new(), 0);
                while Instant::now() < stop_at {
                    n += 1;
                    let started = Instant::now();
                    let reply = http.get(&format!("{base}/load/{c}/{n}"), &[]).await;
                    slowest = slowest.max(started.elapsed());
                    statuses.push(reply.status);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (slowest, statuses)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let down = http.get(&errand.url("/while-down"), &[]).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    start();
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE, "{down:?}");
    assert!(down.header("retry-after").parse::<u64>().is_ok());
    assert!(
        !down.body.contains(internals),
        "no internals in a public answer: {}",
        down.body
    );
    let mut saw_unavailable = false;
    for task in load {
        let (slowest, statuses) = task.await.unwrap();
        assert!(
            slowest < Duration::from_secs(3),
            "every answer came quickly, down or not: {slowest:?}"
        );
        for status in &statuses {
            assert!(
                matches!(
                    *status,
                    StatusCode::ACCEPTED | StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE
                ),
                "{status}"
            );
        }
        saw_unavailable |= statuses.contains(&StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(saw_unavailable, "the load saw the outage");
    // Resumed without a restart of errand: a new URL goes through the queue again.
    for _ in 0..100 {
        let reply = http
            .get(&errand.url("/after"), &[("prefer", "wait=5")])
            .await;
        if reply.status == StatusCode::OK {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("service did not resume by itself");
}

/// A copy of `shared`'s config file with `backend` lines added to its `[backend]` section and
/// `rest` (more sections) after it; removed on drop.
pub(crate) struct ConfigCopy(PathBuf);

impl ConfigCopy {
    pub(crate) fn new(shared: &Shared, backend: &str, rest: &str) -> Self {
        let original = std::fs::read_to_string(&shared.config_file).unwrap();
        let n = NAMESPACES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = shared
            .config_file
            .with_file_name(format!("errand_copy_{}_{n}.toml", std::process::id()));
        std::fs::write(&path, format!("{original}{backend}\n{rest}")).unwrap();
        Self(path)
    }

    pub(crate) fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `[server] max_pending` holds across two fronts: a flood of distinct URLs gets `202` up to
/// the cap and `503` + `Retry-After` beyond it, while a cached URL stays a hit; the upstream
/// sees no more jobs than the cap let in.
pub(crate) async fn the_flood_cap_holds_across_fronts(shared: &Shared) {
    const CAP: usize = 20;
    let counter = Counter::default();
    let c = counter.clone();
    let up = origin(
        Router::new()
            .route("/hit", get(|| async { "cached" }))
            .route(
                "/flood/{n}",
                get(move || {
                    let c = c.clone();
                    async move {
                        c.bump();
                        // Long enough that every flood job is still pending at the end.
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        "late"
                    }
                }),
            ),
    )
    .await;
    let config = ConfigCopy::new(shared, "", &format!("[server]\nmax_pending = {CAP}\n"));
    let (front_a, front_b) = two_fronts(up, shared, config.path());
    let _worker = {
        let mut command = Command::new(env!("CARGO_BIN_EXE_errand"));
        command
            .args(["work", "--upstream", &format!("http://{up}")])
            .args(["--backend", &shared.url, "--config", config.path()])
            .args(["--workers", "2"]);
        Errand::start_matching(command, "errand working")
    };
    let http = Http::new();
    // One site across both fronts (each would otherwise be named by its own address).
    let host = ("host", "site.example");
    let hit = http
        .get(&front_a.url("/hit"), &[host, ("prefer", "wait=10")])
        .await;
    assert_eq!(hit.status, StatusCode::OK, "{hit:?}");
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..10 {
        let batch: Vec<_> = (0..20)
            .map(|i| {
                let http = http.clone();
                let front = if i % 2 == 0 { &front_a } else { &front_b };
                let url = front.url(&format!("/flood/{round}-{i}"));
                tokio::spawn(async move { http.get(&url, &[host]).await })
            })
            .collect();
        for task in batch {
            let reply = task.await.unwrap();
            match reply.status {
                StatusCode::ACCEPTED => accepted += 1,
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(reply.header("retry-after").parse::<u64>().is_ok());
                    assert!(
                        reply.cache_status().contains("queue-full"),
                        "{}",
                        reply.cache_status()
                    );
                    refused += 1;
                }
                other => panic!("unexpected {other}: {reply:?}"),
            }
        }
        let during = http.get(&front_b.url("/hit"), &[host]).await;
        assert_eq!(during.status, StatusCode::OK);
        assert!(
            during.cache_status().starts_with("errand; hit"),
            "{during:?}"
        );
    }
    // Claims in flight together may pass the gate at once (on PostgreSQL); never by more
    // than one batch.
    assert!(
        (CAP..=CAP + 20).contains(&accepted),
        "{accepted} accepted, cap {CAP}"
    );
    assert_eq!(accepted + refused, 200);
    assert!(
        counter.get() <= accepted,
        "no refused URL reached the upstream"
    );
}

/// Lifetimes of 10^14 s (beyond what a store's timer takes) are clamped to 2^31 s: the job's
/// result is stored, the front waiting for it is woken by the store's notification (its
/// recheck is 30 s), and another front serves it as a hit with that lifetime.
pub(crate) async fn far_future_lifetimes_are_clamped(shared: &Shared) {
    let up = origin(Router::new().route(
        "/forever",
        get(|| async {
            (
                [(
                    "cache-control",
                    "max-age=100000000000000, stale-while-revalidate=100000000000000, \
                     stale-if-error=100000000000000",
                )],
                "forever",
            )
        }),
    ))
    .await;
    let config = ConfigCopy::new(shared, "recheck = \"30s\"\n", "");
    let (front_a, front_b) = two_fronts(up, shared, config.path());
    let _worker = worker(up, shared, &[]);
    let http = Http::new();
    let host = ("host", "site.example");
    let started = Instant::now();
    let waited = http
        .get(&front_a.url("/forever"), &[host, ("prefer", "wait=20")])
        .await;
    assert_eq!(waited.status, StatusCode::OK, "{waited:?}");
    assert_eq!(waited.body, "forever");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by the store, not by the 30 s recheck: {:?}",
        started.elapsed()
    );
    let hit = http.get(&front_b.url("/forever"), &[host]).await;
    let ttl: i64 = hit
        .cache_status()
        .split("ttl=")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}", hit.cache_status()));
    assert!(
        (2_147_000_000..=2_147_483_648).contains(&ttl),
        "a lifetime of 2^31 s, less the jitter: {ttl}"
    );
}

/// An origin whose `GET /doc` reads the document, then takes 600 ms to answer with what it
/// read; `POST /doc` replaces it at once. Returns its address.
pub(crate) async fn slow_document() -> std::net::SocketAddr {
    use std::sync::{Arc, Mutex};
    let doc = Arc::new(Mutex::new(String::from("v1")));
    let (read, write) = (Arc::clone(&doc), doc);
    origin(
        Router::new().route(
            "/doc",
            get(move || {
                let read = Arc::clone(&read);
                async move {
                    let seen = read.lock().unwrap().clone();
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    seen
                }
            })
            .post(move || {
                let write = Arc::clone(&write);
                async move {
                    *write.lock().unwrap() = "v2".into();
                    "updated"
                }
            }),
        ),
    )
    .await
}

/// A write's invalidation is not undone by a job that read the old value before it: a GET's
/// job reads `v1`, a POST to the same URL succeeds while the job runs (through `post_via`),
/// and a client waiting on `front` then gets `v2`, as does every later request.
pub(crate) async fn a_write_fences_the_job_running_for_its_url(front: &Errand, post_via: &Errand) {
    let http = Http::new();
    let host = ("host", "site.example");
    let first = http.get(&front.url("/doc"), &[host]).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    // The job has read v1 and is sleeping on it.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let write = http.send("POST", &post_via.url("/doc"), &[host]).await;
    assert_eq!(write.status, StatusCode::OK, "{write:?}");
    let waited = http
        .get(&front.url("/doc"), &[host, ("prefer", "wait=10")])
        .await;
    assert_eq!(waited.status, StatusCode::OK, "{waited:?}");
    assert_eq!(waited.body, "v2", "the pre-write value was not stored");
    let later = http.get(&post_via.url("/doc"), &[host]).await;
    assert_eq!(later.body, "v2");
    assert!(
        later.cache_status().starts_with("errand; hit"),
        "{}",
        later.cache_status()
    );
}

/// [`a_write_fences_the_job_running_for_its_url`] with two fronts and a worker on `shared`.
pub(crate) async fn a_write_fences_the_job_running_for_its_url_across_processes(shared: &Shared) {
    let up = slow_document().await;
    let (front_a, front_b) = two_fronts(up, shared, shared.config());
    let _worker = worker(up, shared, &[]);
    a_write_fences_the_job_running_for_its_url(&front_a, &front_b).await;
}

/// 100 clients ask for one cached 8 MiB body and never read it, with no in-process copy of
/// fresh entries (`l1_ttl = "0s"`, so every request reads the shared store): the front holds
/// one copy of the body, not one per client. Returns the growth of its resident memory.
pub(crate) async fn stalled_readers_share_one_body(shared: &Shared) -> u64 {
    use std::io::Write;
    const BODY: usize = 8 << 20;
    let up = origin(Router::new().route(
        "/big",
        get(|| async { ([("cache-control", "max-age=600")], vec![b'x'; BODY]) }),
    ))
    .await;
    let config = ConfigCopy::new(shared, "l1_ttl = \"0s\"\n", "");
    let front = Errand::serve(
        up,
        &[
            "--backend",
            &shared.url,
            "--workers",
            "1",
            "--max-body",
            "16MiB",
            "--config",
            config.path(),
        ],
    );
    let http = Http::new();
    let host = ("host", "site.example");
    let warm = http
        .get(&front.url("/big"), &[host, ("prefer", "wait=10")])
        .await;
    assert_eq!(warm.status, StatusCode::OK);
    assert_eq!(warm.body.len(), BODY);
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = super::rss(front.pid());
    let request = "GET /big HTTP/1.1\r\nHost: site.example\r\n\r\n";
    let stalled: Vec<std::net::TcpStream> = (0..100)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(front.addr).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            stream
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = super::rss(front.pid());
    drop(stalled);
    after.saturating_sub(before)
}
