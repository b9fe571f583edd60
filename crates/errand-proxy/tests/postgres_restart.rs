//! PostgreSQL restarted under load: errand answers 503 (quickly) while it is down, resumes by
//! itself, and no acknowledged result is lost (a result stored before the restart is served
//! after it). A test binary of its own, so no other database
//! test runs while the server restarts. Needs `pg_ctlcluster` (Debian) and the right to use it:
//! skipped with a message without them, except under `CI=true`.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use common::{Errand, Http, fleet, origin};

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

    fleet::through_an_outage(
        &errand,
        || assert!(cluster("stop"), "stop PostgreSQL"),
        || assert!(cluster("start"), "start PostgreSQL"),
        "postgres://",
    )
    .await;
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
