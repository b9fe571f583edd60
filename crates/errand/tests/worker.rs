//! The worker runtime as an app sees it: long jobs keep their lease, shutdown hands back what
//! it cannot finish, and `Retry-After` follows how long jobs take.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use errand::config::Config;
use errand::store::{Inspect, MemoryConfig, MemoryStore, SharedStore};
use errand::{Errand, Shutdown};
use tower::ServiceExt;

fn sleeper(calls: Arc<AtomicUsize>, nap: Duration) -> Router {
    Router::new().route(
        "/{id}",
        get(move || {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(nap).await;
                "done"
            }
        }),
    )
}

fn errand(config: Config) -> Errand {
    errand_over_memory(config).0
}

/// errand over a memory store, and the store itself for the operator's view of it.
fn errand_over_memory(config: Config) -> (Errand, Arc<MemoryStore>) {
    let memory = Arc::new(MemoryStore::new(MemoryConfig::default()));
    let store: SharedStore = memory.clone();
    (Errand::new(store, config), memory)
}

async fn send(
    app: Router,
    errand: &Errand,
    path: &str,
    prefer: Option<&str>,
) -> (StatusCode, String) {
    let mut request = Request::get(path).header("host", "w.test");
    if let Some(prefer) = prefer {
        request = request.header("prefer", prefer);
    }
    let response = app
        .layer(errand.layer())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_its_lease_keeps_it_by_heartbeat() {
    let mut config = Config::default();
    config.jobs.lease = Duration::from_millis(600);
    let errand = errand(config);
    let calls = Arc::new(AtomicUsize::new(0));
    let app = sleeper(calls.clone(), Duration::from_millis(1500));
    let shutdown = Shutdown::new();
    let worker = errand.worker(app.clone()).spawn(shutdown.clone());
    let (status, _) = send(app.clone(), &errand, "/long", Some("wait=10")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "renewed, never redelivered to a second run"
    );
    shutdown.cancel();
    worker.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_jobs_it_cannot_finish() {
    let mut config = Config::default();
    config.jobs.shutdown_timeout = Duration::from_millis(200);
    let (errand, memory) = errand_over_memory(config);
    let calls = Arc::new(AtomicUsize::new(0));
    let app = sleeper(calls.clone(), Duration::from_secs(30));
    let shutdown = Shutdown::new();
    let worker = errand.worker(app.clone()).spawn(shutdown.clone());
    let (status, _) = send(app.clone(), &errand, "/endless", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    while memory.stats().await.unwrap().running == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = tokio::time::Instant::now();
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the shutdown timeout"
    );
    let stats = memory.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.running, stats.ready),
        (1, 0, 1),
        "{stats:?}"
    );

    // Another worker (here: a new runtime) takes the handed-back job at once.
    let fast = sleeper(calls.clone(), Duration::from_millis(10));
    let shutdown = Shutdown::new();
    let worker = errand.worker(fast.clone()).spawn(shutdown.clone());
    let (status, _) = send(fast, &errand, "/endless", Some("wait=10")).await;
    assert_eq!(status, StatusCode::OK);
    shutdown.cancel();
    worker.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_follows_observed_job_time() {
    let errand = errand(Config::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let app = sleeper(calls, Duration::from_millis(2500));
    let shutdown = Shutdown::new();
    let worker = errand.worker(app.clone()).spawn(shutdown.clone());
    let (status, first) = send(app.clone(), &errand, "/a", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(first, "1", "nothing observed yet: the default of 1 s");
    let (status, _) = send(app.clone(), &errand, "/a", Some("wait=10")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, adapted) = send(app.clone(), &errand, "/b", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // 2.5 s rounded up to whole seconds; 4 when a loaded machine stretched the observed job
    // past 3 s.
    assert!(
        adapted == "3" || adapted == "4",
        "a 2.5 s job: come back in about 3 s, not {adapted}"
    );
    shutdown.cancel();
    worker.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flood_cap_answers_503_with_retry_after() {
    let store: SharedStore = Arc::new(MemoryStore::new(MemoryConfig {
        capacity: 1024 * 1024,
        max_pending: 2,
    }));
    let errand = Errand::new(store, Config::default());
    // No worker: jobs stay pending, as under a flood of unique URLs.
    let app = sleeper(Arc::new(AtomicUsize::new(0)), Duration::from_millis(1));
    assert_eq!(
        send(app.clone(), &errand, "/1", None).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        send(app.clone(), &errand, "/2", None).await.0,
        StatusCode::ACCEPTED
    );
    let response = app
        .clone()
        .layer(errand.layer())
        .oneshot(
            Request::get("/3")
                .header("host", "w.test")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.headers()["cache-status"],
        "errand; fwd=uri-miss; detail=queue-full"
    );
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&body).contains("queue-full"));
    // Already-pending URLs still answer 202.
    assert_eq!(send(app, &errand, "/1", None).await.0, StatusCode::ACCEPTED);
}

/// A store that records how many completions each `complete` carried, and the order
/// of its takes and hand-backs.
#[derive(Debug)]
struct Recording {
    inner: MemoryStore,
    batches: std::sync::Mutex<Vec<usize>>,
    calls: std::sync::Mutex<Vec<&'static str>>,
}

impl Recording {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::new(MemoryConfig::default()),
            batches: std::sync::Mutex::new(Vec::new()),
            calls: std::sync::Mutex::new(Vec::new()),
        })
    }
}

#[async_trait::async_trait]
impl errand::store::Store for Recording {
    fn now(&self) -> errand::pattern::Timestamp {
        self.inner.now()
    }
    async fn lookup(
        &self,
        key: &errand::pattern::Key,
    ) -> Result<Option<errand::pattern::Entry>, errand::store::StoreError> {
        self.inner.lookup(key).await
    }
    async fn claim(
        &self,
        claim: errand::store::Claim,
    ) -> Result<errand::store::ClaimOutcome, errand::store::StoreError> {
        self.inner.claim(claim).await
    }
    async fn take(
        &self,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<errand::store::Job>, errand::store::StoreError> {
        self.calls.lock().unwrap().push("take");
        self.inner.take(max, lease).await
    }
    async fn hand_back_unstarted(&self) -> Result<usize, errand::store::StoreError> {
        self.calls.lock().unwrap().push("hand back");
        self.inner.hand_back_unstarted().await
    }
    async fn heartbeat(
        &self,
        lease: &errand::store::LeaseToken,
        extend: Duration,
    ) -> Result<errand::pattern::Timestamp, errand::store::StoreError> {
        self.inner.heartbeat(lease, extend).await
    }
    async fn complete(
        &self,
        jobs: Vec<(errand::store::LeaseToken, errand::pattern::Completion)>,
    ) -> Vec<Result<(), errand::store::StoreError>> {
        self.batches.lock().unwrap().push(jobs.len());
        // A shared store's round trip: completions that finish meanwhile pile up.
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.inner.complete(jobs).await
    }
    async fn wait(
        &self,
        key: &errand::pattern::Key,
        seen: Option<std::time::Instant>,
        timeout: Duration,
    ) -> Result<Option<errand::pattern::Entry>, errand::store::StoreError> {
        self.inner.wait(key, seen, timeout).await
    }
    async fn wait_for_jobs(&self, timeout: Duration) -> Result<(), errand::store::StoreError> {
        self.inner.wait_for_jobs(timeout).await
    }
    async fn take_once(
        &self,
        key: &errand::pattern::Key,
    ) -> Result<Option<Arc<errand::pattern::StoredResponse>>, errand::store::StoreError> {
        self.inner.take_once(key).await
    }
    async fn purge(&self, purge: errand::store::Purge) -> Result<u64, errand::store::StoreError> {
        self.inner.purge(purge).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_completes_jobs_in_batches() {
    let recording = Recording::new();
    let store: SharedStore = recording.clone();
    let mut config = Config::default();
    config.jobs.concurrency = 32;
    let errand = Errand::new(store, config);
    let calls = Arc::new(AtomicUsize::new(0));
    let app = sleeper(calls.clone(), Duration::from_millis(1));
    for n in 0..64 {
        assert_eq!(
            send(app.clone(), &errand, &format!("/job-{n}"), None)
                .await
                .0,
            StatusCode::ACCEPTED
        );
    }
    let shutdown = Shutdown::new();
    let worker = errand.worker(app.clone()).spawn(shutdown.clone());
    for n in 0..64 {
        let (status, _) = send(app.clone(), &errand, &format!("/job-{n}"), Some("wait=10")).await;
        assert_eq!(status, StatusCode::OK, "job {n}");
    }
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    let batches = recording.batches.lock().unwrap().clone();
    assert_eq!(
        batches.iter().sum::<usize>(),
        64,
        "every job completed once: {batches:?}"
    );
    assert!(
        batches.iter().any(|b| *b > 1),
        "completions that pile up share a call: {batches:?}"
    );
}

/// At shutdown, once it takes no more, the worker gives back what the store leased ahead to
/// it (the PostgreSQL hand-off), so those jobs need not wait out their leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_back_jobs_leased_ahead_after_the_last_take() {
    let recording = Recording::new();
    let store: SharedStore = recording.clone();
    let errand = Errand::new(store, Config::default());
    let app = sleeper(Arc::new(AtomicUsize::new(0)), Duration::from_millis(1));
    let shutdown = Shutdown::new();
    let worker = errand.worker(app.clone()).spawn(shutdown.clone());
    let (status, _) = send(app, &errand, "/one", Some("wait=10")).await;
    assert_eq!(status, StatusCode::OK);
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    let calls = recording.calls.lock().unwrap().clone();
    assert_eq!(calls.last(), Some(&"hand back"), "{calls:?}");
    assert_eq!(calls.iter().filter(|c| **c == "hand back").count(), 1);
    assert!(calls.contains(&"take"), "{calls:?}");
}

/// Records the `traceparent` each job request carries, and the job's own trace context.
fn trace_recorder(seen: Arc<std::sync::Mutex<Vec<(String, String)>>>) -> Router {
    Router::new().route(
        "/{id}",
        get(move |request: Request<Body>| {
            let seen = seen.clone();
            async move {
                let header = request
                    .headers()
                    .get("traceparent")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let job = request
                    .extensions()
                    .get::<errand::JobRequest>()
                    .and_then(|j| j.trace)
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                seen.lock().unwrap().push((header, job));
                "traced"
            }
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_joins_the_trace_of_the_request_that_created_it() {
    let errand = errand(Config::default());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let app = trace_recorder(seen.clone());
    let shutdown = Shutdown::new();
    let worker = errand.worker(app.clone()).spawn(shutdown.clone());

    let client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = Request::get("/traced")
        .header("host", "w.test")
        .header("prefer", "wait=10")
        .header("traceparent", client)
        .body(Body::empty())
        .unwrap();
    let response = app
        .clone()
        .layer(errand.layer())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // A client without a trace: the job starts one of its own.
    let (status, _) = send(app.clone(), &errand, "/untraced", Some("wait=10")).await;
    assert_eq!(status, StatusCode::OK);
    shutdown.cancel();
    worker.await.unwrap().unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let (header, job) = &seen[0];
    assert_eq!(header, job, "the header sent is the job's context");
    let sent = errand::pattern::TraceParent::parse(header).unwrap();
    assert_eq!(sent.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(
        sent.span_hex(),
        "00f067aa0ba902b7",
        "the job is a span of its own"
    );
    assert_eq!(sent.flags, 1, "the client's sampling decision is kept");
    let (header, _) = &seen[1];
    let started = errand::pattern::TraceParent::parse(header).unwrap();
    assert_ne!(started.trace_id, sent.trace_id, "a new trace");
}

/// A job whose handler panics stops the worker runtime: it stops taking jobs, hands the job
/// back, and returns the panic (so `errand serve`/`work` exit non-zero instead of running on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_stops_the_worker_with_the_panic() {
    let (errand, memory) = errand_over_memory(Config::default());
    let app: Router = Router::new().route(
        "/{id}",
        get(|| async {
            panic!("boom in the handler");
            #[allow(unreachable_code)]
            "never"
        }),
    );
    let shutdown = Shutdown::new();
    let worker = errand.worker(app.clone()).spawn(shutdown.clone());
    let (status, _) = send(app.clone(), &errand, "/bomb", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let ended = tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the worker stopped by itself")
        .unwrap();
    match ended {
        Err(errand::WorkerError::Panicked(message)) => {
            assert!(message.contains("boom in the handler"), "{message}")
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    let stats = memory.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.running),
        (1, 0),
        "the job was handed back"
    );
}
