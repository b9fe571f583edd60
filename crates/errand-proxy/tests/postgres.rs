//! errand on PostgreSQL as an operator runs it: several processes sharing one database.
//! Each test uses a schema of its own and drops it. Without a database these tests are
//! skipped with a message, except under `CI=true`, where they fail.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use common::{Counter, Errand, Http, origin};
use errand::store::{PgConfig, PgStore};

static SCHEMAS: AtomicUsize = AtomicUsize::new(0);

fn url() -> String {
    std::env::var("ERRAND_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of this test's own, dropped when the guard goes; `None` (skip) without a database.
struct Schema {
    name: String,
    config_file: std::path::PathBuf,
}

impl Schema {
    async fn new() -> Option<Self> {
        let name = format!(
            "errand_bin_{}_{}",
            std::process::id(),
            SCHEMAS.fetch_add(1, Ordering::SeqCst)
        );
        let mut config = PgConfig::new(url());
        config.schema = name.clone();
        if let Err(e) = PgStore::connect(config).await {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI needs PostgreSQL at {}: {e}", url());
            }
            eprintln!("SKIPPED: PostgreSQL is not reachable at {} ({e})", url());
            return None;
        }
        let config_file = std::env::temp_dir().join(format!("{name}.toml"));
        std::fs::write(&config_file, format!("[backend]\nschema = \"{name}\"\n")).unwrap();
        Some(Self { name, config_file })
    }

    fn config(&self) -> &str {
        self.config_file.to_str().unwrap()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config_file);
        let name = self.name.clone();
        // Drop the schema on a runtime of its own: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut config = PgConfig::new(url());
                config.schema = name;
                if let Ok(store) = PgStore::connect(config).await {
                    let _ = store.drop_schema().await;
                }
            });
        })
        .join();
    }
}

fn worker(upstream: std::net::SocketAddr, schema: &Schema, extra: &[&str]) -> Errand {
    let mut command = Command::new(env!("CARGO_BIN_EXE_errand"));
    command
        .args([
            "work",
            "--upstream",
            &format!("http://{upstream}"),
            "--backend",
            &url(),
        ])
        .args(["--config", schema.config()])
        .args(extra);
    Errand::start_matching(command, "errand working")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fronts_and_a_worker_make_one_upstream_request() {
    let Some(schema) = Schema::new().await else {
        return;
    };
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
    let args = [
        "--backend",
        &url(),
        "--workers",
        "0",
        "--config",
        schema.config(),
    ];
    let front_a = Errand::serve(up, &args);
    let front_b = Errand::serve(up, &args);
    let _worker = worker(up, &schema, &[]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_is_finished_by_another_after_its_lease() {
    let Some(schema) = Schema::new().await else {
        return;
    };
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
            &url(),
            "--workers",
            "0",
            "--config",
            schema.config(),
        ],
    );
    let mut first = worker(up, &schema, &["--lease", "2s"]);
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
    let _second = worker(up, &schema, &["--lease", "2s"]);
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

#[test]
fn an_unreachable_database_at_start_is_named_without_its_password() {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_errand"))
        .args([
            "serve",
            "--upstream",
            "http://127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--backend", "postgres://alice:s3cret@127.0.0.1:9/nowhere"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--backend") && stderr.contains("postgres://alice:***@127.0.0.1:9/nowhere"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_schema() {
    let Some(schema) = Schema::new().await else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_errand"))
        .args(["migrate", "--backend", &url(), "--config", schema.config()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("up to date"));
}
