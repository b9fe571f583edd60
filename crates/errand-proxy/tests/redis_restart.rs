//! Tests that change the Redis server itself, in a binary of their own so no other Redis test
//! runs meanwhile (and one at a time here): Redis restarted under load (errand answers 503,
//! quickly, while it is down and resumes by itself, without a restart of errand), and a server
//! whose eviction policy would lose jobs is refused at start. It stops the server on 127.0.0.1:6379 with `SHUTDOWN NOSAVE`
//! and starts it again as CI does (no persistence); skipped with a message when Redis there
//! cannot be controlled, except under `CI=true`.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use common::{Errand, Http, fleet, origin, refused_serve};

const URL: &str = "redis://127.0.0.1:6379";

fn redis_cli(args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379"])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn start_redis() -> bool {
    Command::new("redis-server")
        .args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            "6379",
        ])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
        ])
        .args(["--logfile", "/var/log/redis/ci.log"])
        .status()
        .is_ok_and(|s| s.success())
}

/// One server-changing test at a time.
static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn answers() -> bool {
    redis_cli(&["ping"]).is_some_and(|pong| pong == "PONG")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarts_under_load() {
    let _one = SERVER.lock().await;
    let controllable = answers()
        && Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
        && std::fs::metadata("/var/lib/redis").is_ok();
    if !controllable {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "CI needs a Redis on 127.0.0.1:6379 that this test can restart"
        );
        eprintln!("SKIPPED: cannot control the Redis server on 127.0.0.1:6379 here");
        return;
    }
    let prefix = format!("errand_restart_{}", std::process::id());
    let config = std::env::temp_dir().join(format!("{prefix}.toml"));
    std::fs::write(&config, format!("[backend]\nprefix = \"{prefix}\"\n")).unwrap();
    let up = origin(Router::new().fallback(get(|| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        "fresh"
    })))
    .await;
    let errand = Errand::serve(
        up,
        &["--backend", URL, "--config", config.to_str().unwrap()],
    );
    let http = Http::new();
    let first = http
        .get(&errand.url("/before"), &[("prefer", "wait=10")])
        .await;
    assert_eq!(first.status, StatusCode::OK);

    let resumed = fleet::through_an_outage(
        &errand,
        || {
            // SHUTDOWN closes the connection without a reply: redis-cli reports an error.
            let _ = redis_cli(&["shutdown", "nosave"]);
            let since = Instant::now();
            while answers() {
                assert!(since.elapsed() < Duration::from_secs(5), "Redis stopped");
                std::thread::sleep(Duration::from_millis(50));
            }
        },
        || assert!(start_redis(), "start Redis again"),
        "redis://",
    )
    .await;
    assert_eq!(resumed.body, "fresh");
    drop(errand);
    let keys = redis_cli(&["--scan", "--pattern", &format!("{{{prefix}}}:*")]).unwrap_or_default();
    for key in keys.lines() {
        let _ = redis_cli(&["del", key]);
    }
    let _ = std::fs::remove_file(config);
}

/// Puts the eviction policy back however the test ends.
struct Policy(String);

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = redis_cli(&["config", "set", "maxmemory-policy", &self.0]);
    }
}

#[test]
fn a_redis_that_evicts_jobs_is_refused_at_start() {
    let _one = SERVER.blocking_lock();
    let Some(before) = redis_cli(&["config", "get", "maxmemory-policy"])
        .and_then(|out| out.lines().nth(1).map(str::to_owned))
    else {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "CI needs a Redis on 127.0.0.1:6379 whose CONFIG this test can change"
        );
        eprintln!("SKIPPED: cannot read the Redis eviction policy on 127.0.0.1:6379");
        return;
    };
    let _restore = Policy(before);
    assert!(redis_cli(&["config", "set", "maxmemory-policy", "allkeys-lru"]).is_some());
    let (stderr, took) = refused_serve(&["--backend", URL]);
    assert!(
        stderr.contains("--backend") && stderr.contains("maxmemory-policy allkeys-lru"),
        "{stderr}"
    );
    assert!(
        took < Duration::from_secs(5),
        "refused at once, not retried: {took:?}"
    );
}
