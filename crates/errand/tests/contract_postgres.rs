//! The store contract against PostgreSQL (feature `postgres`).
//!
//! Uses `ERRAND_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`); every
//! case gets a schema of its own, dropped afterwards. Without a database the cases are
//! skipped with a message, except under `CI=true`, where they fail.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use errand::store::{ManualClock, PgConfig, PgStore};

static SCHEMAS: AtomicUsize = AtomicUsize::new(0);

async fn make(clock: Arc<ManualClock>) -> Option<PgStore> {
    let url = std::env::var("ERRAND_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut config = PgConfig::new(&url);
    config.schema = format!(
        "errand_test_{}_{}",
        std::process::id(),
        SCHEMAS.fetch_add(1, Ordering::SeqCst)
    );
    config.pool_size = 8;
    match PgStore::connect_with_clock(config, clock).await {
        Ok(store) => Some(store),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI needs PostgreSQL at {url}: {e}")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: PostgreSQL is not reachable at {url} ({e}); set ERRAND_TEST_POSTGRES"
            );
            None
        }
    }
}

errand::store_contract!(make, |store: Arc<PgStore>| async move {
    store.drop_schema().await.unwrap();
});
