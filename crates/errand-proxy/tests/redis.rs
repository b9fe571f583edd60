//! errand on Redis as an operator runs it: several processes sharing one Redis. Each test
//! uses a key prefix of its own and deletes its keys. Without a Redis these tests are skipped
//! with a message, except under `CI=true`, where they fail.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::process::Command;

use common::fleet::{self, Namespace};
use errand::store::{RedisConfig, RedisStore};

fn url() -> String {
    std::env::var("ERRAND_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn store(url: &str, prefix: &str) -> Result<RedisStore, errand::store::StoreError> {
    let mut config = RedisConfig::new(url);
    config.prefix = prefix.to_owned();
    RedisStore::connect(config).await
}

/// A key prefix of this test's own, whose keys go when the guard goes; `None` (skip) without
/// a Redis.
async fn prefix() -> Option<Namespace> {
    let probe = |url: String, name: String| async move {
        store(&url, &name)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    };
    Namespace::new("Redis", url(), "prefix", probe, |url, name| async move {
        if let Ok(store) = store(&url, &name).await {
            let _ = store.delete_all().await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fronts_and_a_worker_make_one_upstream_request() {
    if let Some(prefix) = prefix().await {
        fleet::two_fronts_and_a_worker_make_one_upstream_request(&prefix.shared).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_is_finished_by_another_after_its_lease() {
    if let Some(prefix) = prefix().await {
        fleet::a_killed_workers_job_is_finished_by_another_after_its_lease(&prefix.shared).await;
    }
}

#[test]
fn an_unreachable_redis_at_start_is_named_without_its_password() {
    fleet::an_unreachable_backend_at_start_is_named_without_its_password(
        "redis://:s3cret@127.0.0.1:9/0",
        "redis://:***@127.0.0.1:9/0",
    );
}

#[test]
fn a_malformed_redis_url_is_refused_by_name() {
    let (stderr, _) = common::refused_serve(&["--backend", "redis://:s3cret@127.0.0.1:notaport"]);
    assert!(
        stderr.contains("--backend") && stderr.contains("not a valid Redis URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_checks_the_server_and_loads_the_scripts() {
    let Some(prefix) = prefix().await else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_errand"))
        .args(["migrate", "--backend", &url()])
        .args(["--config", prefix.shared.config()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no schema to migrate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flood_cap_holds_across_fronts() {
    if let Some(prefix) = prefix().await {
        fleet::the_flood_cap_holds_across_fronts(&prefix.shared).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_future_lifetimes_are_clamped() {
    if let Some(prefix) = prefix().await {
        fleet::far_future_lifetimes_are_clamped(&prefix.shared).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_fences_the_job_running_for_its_url() {
    if let Some(prefix) = prefix().await {
        fleet::a_write_fences_the_job_running_for_its_url_across_processes(&prefix.shared).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_share_one_body() {
    if let Some(prefix) = prefix().await {
        let growth = fleet::stalled_readers_share_one_body(&prefix.shared).await;
        // One copy per client would be 800 MiB.
        assert!(
            growth < 160 << 20,
            "{} MiB for 100 stalled readers",
            growth >> 20
        );
        eprintln!("stalled readers: +{} MiB", growth >> 20);
    }
}
