//! PostgreSQL restarted under load: errand answers 503 (quickly) while it is down, resumes by
//! itself, and no acknowledged result is lost. A test binary of its own, so no other database
//! test runs while the server restarts. Needs `pg_ctlcluster` (Debian) and the right to use it:
//! skipped with a message without them, except under `CI=true`.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use common::{Errand, Http, origin};

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
    let up = origin(Router::new().fallback(get(|| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        "fresh"
    })))
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

    // Load throughout: four clients, new and old URLs.
    let stop = Instant::now() + Duration::from_secs(8);
    let load: Vec<_> = (0..4)
        .map(|c| {
            let (http, base) = (http.clone(), errand.url(""));
            tokio::spawn(async move {
                let (mut slowest, mut statuses, mut n) = (Duration::ZERO, Vec::new(), 0);
                while Instant::now() < stop {
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
    assert!(cluster("stop"), "stop PostgreSQL");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let down = http.get(&errand.url("/while-down"), &[]).await;
    assert!(cluster("start"), "start PostgreSQL");
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(down.header("retry-after").parse::<u64>().is_ok());
    assert!(
        !down.body.contains("postgres://"),
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
    // Resumed without a restart of errand; the result stored before is still there.
    let mut resumed = None;
    for _ in 0..100 {
        let reply = http
            .get(&errand.url("/after"), &[("prefer", "wait=5")])
            .await;
        if reply.status == StatusCode::OK {
            resumed = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed.is_some(), "service resumed by itself");
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
