//! errand on PostgreSQL as an operator runs it: several processes sharing one database.
//! Each test uses a schema of its own and drops it. Without a database these tests are
//! skipped with a message, except under `CI=true`, where they fail.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::process::Command;

use common::fleet::{self, Namespace};
use errand::store::{PgConfig, PgStore};

fn url() -> String {
    std::env::var("ERRAND_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn config(url: &str, schema: &str) -> PgConfig {
    let mut config = PgConfig::new(url);
    config.schema = schema.to_owned();
    config
}

/// A schema of this test's own, dropped when the guard goes; `None` (skip) without a database.
async fn schema() -> Option<Namespace> {
    let probe = |url: String, name: String| async move {
        PgStore::connect(config(&url, &name))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    };
    Namespace::new(
        "PostgreSQL",
        url(),
        "schema",
        probe,
        |url, name| async move {
            if let Ok(store) = PgStore::connect(config(&url, &name)).await {
                let _ = store.drop_schema().await;
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fronts_and_a_worker_make_one_upstream_request() {
    if let Some(schema) = schema().await {
        fleet::two_fronts_and_a_worker_make_one_upstream_request(&schema.shared).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_is_finished_by_another_after_its_lease() {
    if let Some(schema) = schema().await {
        fleet::a_killed_workers_job_is_finished_by_another_after_its_lease(&schema.shared).await;
    }
}

#[test]
fn an_unreachable_database_at_start_is_named_without_its_password() {
    fleet::an_unreachable_backend_at_start_is_named_without_its_password(
        "postgres://alice:s3cret@127.0.0.1:9/nowhere",
        "postgres://alice:***@127.0.0.1:9/nowhere",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_schema() {
    let Some(schema) = schema().await else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_errand"))
        .args([
            "migrate",
            "--backend",
            &url(),
            "--config",
            schema.shared.config(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("up to date"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flood_cap_holds_across_fronts() {
    if let Some(schema) = schema().await {
        fleet::the_flood_cap_holds_across_fronts(&schema.shared).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_future_lifetimes_are_clamped() {
    if let Some(schema) = schema().await {
        fleet::far_future_lifetimes_are_clamped(&schema.shared).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_fences_the_job_running_for_its_url() {
    if let Some(schema) = schema().await {
        fleet::a_write_fences_the_job_running_for_its_url_across_processes(&schema.shared).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_share_one_body() {
    if let Some(schema) = schema().await {
        let growth = fleet::stalled_readers_share_one_body(&schema.shared).await;
        // One copy per client would be 800 MiB.
        assert!(
            growth < 160 << 20,
            "{} MiB for 100 stalled readers",
            growth >> 20
        );
        eprintln!("stalled readers: +{} MiB", growth >> 20);
    }
}
