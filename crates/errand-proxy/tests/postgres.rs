//! errand on PostgreSQL as an operator runs it: several processes sharing one database.
//! Each test uses a schema of its own and drops it. Without a database these tests are
//! skipped with a message, except under `CI=true`, where they fail.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::fleet::{self, Shared};
use errand::store::{PgConfig, PgStore};

static SCHEMAS: AtomicUsize = AtomicUsize::new(0);

fn url() -> String {
    std::env::var("ERRAND_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of this test's own, dropped when the guard goes; `None` (skip) without a database.
struct Schema {
    name: String,
    shared: Shared,
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
        Some(Self {
            name,
            shared: Shared {
                url: url(),
                config_file,
            },
        })
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.shared.config_file);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fronts_and_a_worker_make_one_upstream_request() {
    if let Some(schema) = Schema::new().await {
        fleet::two_fronts_and_a_worker_make_one_upstream_request(&schema.shared).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_is_finished_by_another_after_its_lease() {
    if let Some(schema) = Schema::new().await {
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
    let Some(schema) = Schema::new().await else {
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
