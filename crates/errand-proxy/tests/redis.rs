//! errand on Redis as an operator runs it: several processes sharing one Redis. Each test
//! uses a key prefix of its own and deletes its keys. Without a Redis these tests are skipped
//! with a message, except under `CI=true`, where they fail.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::fleet::{self, Shared};
use errand::store::{RedisConfig, RedisStore};

static PREFIXES: AtomicUsize = AtomicUsize::new(0);

fn url() -> String {
    std::env::var("ERRAND_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn store(prefix: &str) -> Result<RedisStore, errand::store::StoreError> {
    let mut config = RedisConfig::new(url());
    config.prefix = prefix.to_owned();
    RedisStore::connect(config).await
}

/// A key prefix of this test's own, whose keys go when the guard goes; `None` (skip) without
/// a Redis.
struct Prefix {
    name: String,
    shared: Shared,
}

impl Prefix {
    async fn new() -> Option<Self> {
        let name = format!(
            "errand_bin_{}_{}",
            std::process::id(),
            PREFIXES.fetch_add(1, Ordering::SeqCst)
        );
        if let Err(e) = store(&name).await {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI needs Redis at {}: {e}", url());
            }
            eprintln!("SKIPPED: Redis is not reachable at {} ({e})", url());
            return None;
        }
        let config_file = std::env::temp_dir().join(format!("{name}.toml"));
        std::fs::write(&config_file, format!("[backend]\nprefix = \"{name}\"\n")).unwrap();
        Some(Self {
            name,
            shared: Shared {
                url: url(),
                config_file,
            },
        })
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.shared.config_file);
        let name = self.name.clone();
        // Delete the keys on a runtime of its own: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(store) = store(&name).await {
                    let _ = store.delete_all().await;
                }
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fronts_and_a_worker_make_one_upstream_request() {
    if let Some(prefix) = Prefix::new().await {
        fleet::two_fronts_and_a_worker_make_one_upstream_request(&prefix.shared).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_is_finished_by_another_after_its_lease() {
    if let Some(prefix) = Prefix::new().await {
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
    let out = Command::new(env!("CARGO_BIN_EXE_errand"))
        .args(["serve", "--upstream", "http://127.0.0.1:9"])
        .args(["--backend", "redis://:s3cret@127.0.0.1:notaport"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--backend") && stderr.contains("not a valid Redis URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_checks_the_server_and_loads_the_scripts() {
    let Some(prefix) = Prefix::new().await else {
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
