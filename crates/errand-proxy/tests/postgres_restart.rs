//! PostgreSQL restarted under load: errand answers 503 (quickly) while it is down, resumes by
//! itself, and no acknowledged result is lost (a result stored before the restart is served
//! after it, and a job that finished while the database was down is stored once it is back,
//! without running again). A test binary of its own, so no other database
//! test runs while the server restarts. Needs `pg_ctlcluster` (Debian) and the right to use it:
//! skipped with a message without them, except under `CI=true`.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use common::{Errand, Http, fleet, origin};
use tokio::sync::Semaphore;

fn url() -> String {
    std::env::var("ERRAND_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn cluster(action: &str) -> bool {
    let Ok(versions) = std::fs::read_dir("/etc/postgresql") else {
        return false;
    };
    let Some(version) = versions.flatten().next() else {
        return false;
    };
    Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            &version.file_name().to_string_lossy(),
            "main",
            action,
        ])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarts_under_load() {
    if !cluster("status") {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "CI needs pg_ctlcluster to restart PostgreSQL"
        );
        eprintln!("SKIPPED: cannot control the PostgreSQL cluster here");
        return;
    }
    let schema = format!("errand_restart_{}", std::process::id());
    let config = std::env::temp_dir().join(format!("{schema}.toml"));
    std::fs::write(&config, format!("[backend]\nschema = \"{schema}\"\n")).unwrap();
    // `/mid-outage` answers only once the database is down, so its job's completion meets
    // the outage.
    let (calls, release) = (Arc::new(AtomicUsize::new(0)), Arc::new(Semaphore::new(0)));
    let mid_outage = {
        let (calls, release) = (Arc::clone(&calls), Arc::clone(&release));
        get(move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            release.acquire().await.unwrap().forget();
            "made once"
        })
    };
    let up = origin(
        Router::new()
            .route("/mid-outage", mid_outage)
            .fallback(get(|| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                "fresh"
            })),
    )
    .await;
    let errand = Errand::serve(
        up,
        &["--backend", &url(), "--config", config.to_str().unwrap()],
    );
    let http = Http::new();
    let kept = http
        .get(&errand.url("/kept"), &[("prefer", "wait=10")])
        .await;
    assert_eq!(kept.status, StatusCode::OK);

    let mid = http.get(&errand.url("/mid-outage"), &[]).await;
    assert_eq!(mid.status, StatusCode::ACCEPTED);
    let running = Instant::now();
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(
            running.elapsed() < Duration::from_secs(10),
            "the job never reached the origin"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    fleet::through_an_outage(
        &errand,
        || {
            assert!(cluster("stop"), "stop PostgreSQL");
            release.add_permits(1);
        },
        || assert!(cluster("start"), "start PostgreSQL"),
        "postgres://",
    )
    .await;
    // The job that finished while the database was down: its worker kept the result and
    // stored it when the database came back, well within the lease, and it ran once.
    let stored = http
        .get(&errand.url("/mid-outage"), &[("prefer", "wait=10")])
        .await;
    assert_eq!(stored.status, StatusCode::OK, "{stored:?}");
    assert_eq!(stored.body, "made once");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the job ran once");
    let again = http.get(&errand.url("/kept"), &[]).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(
        again.cache_status().starts_with("errand; hit"),
        "{}",
        again.cache_status()
    );
    drop(errand);
    let _ = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
        .arg(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .status();
    let _ = std::fs::remove_file(config);
}
