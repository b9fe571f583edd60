//! The store a process runs on: the embedded memory store, or a shared backend reached with
//! retries (a database may still be starting), with its pruner, its reads coalesced and, for
//! a front, an in-process copy of fresh entries.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use errand::store::{
    Coalesced, Inspect, L1, L1Config, MemoryConfig, MemoryStore, PgConfig, PgStore, RedisConfig,
    RedisStore, StoreError,
};

use crate::settings::{self, Backend, File};

/// The store of a front (`errand serve`): memory within `cache_size` bytes, or the shared
/// backend behind an in-process copy of its fresh entries (`[backend] l1_ttl`, within
/// `cache_size`).
pub(crate) async fn front_store(
    backend: &Backend,
    file: &File,
    cache_size: u64,
) -> anyhow::Result<Arc<dyn Inspect>> {
    Ok(match backend {
        Backend::Memory => Arc::new(MemoryStore::new(MemoryConfig {
            capacity: cache_size,
            max_pending: file.server.max_pending,
        })),
        shared if file.backend.l1_ttl.is_zero() => connect(shared, file).await?,
        shared => Arc::new(L1::new(
            connect(shared, file).await?,
            L1Config {
                capacity: cache_size,
                ttl: file.backend.l1_ttl,
            },
        )),
    })
}

/// How long start-up keeps trying to reach the database before giving up.
const CONNECT_FOR: Duration = Duration::from_secs(20);

/// Connects to a shared backend, retrying for a while (a database may still be starting),
/// and starts its pruner. PostgreSQL's migrations are applied on connecting.
pub(crate) async fn connect(backend: &Backend, file: &File) -> anyhow::Result<Arc<dyn Inspect>> {
    let b = &file.backend;
    let recheck = b.recheck.max(Duration::from_millis(10));
    let client_cert = settings::redis_client_cert(backend, b)?;
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        let attempt: Result<Arc<dyn Inspect>, StoreError> = match backend {
            Backend::Memory => bail!("--backend: memory is not a shared backend"),
            Backend::Postgres(url) => {
                let mut config = PgConfig::new(url);
                config.schema = b.schema.clone();
                config.pool_size = b.pool_size;
                config.idle_timeout = b.pool_idle;
                config.call_timeout = b.call_timeout;
                config.listen = b.listen;
                config.recheck = recheck;
                config.max_pending = file.server.max_pending;
                PgStore::connect(config).await.map(|store| {
                    let store = Arc::new(store);
                    store.spawn_pruner();
                    store as Arc<dyn Inspect>
                })
            }
            Backend::Redis(url) => {
                let mut config = RedisConfig::new(url);
                config.prefix = b.prefix.clone();
                config.call_timeout = b.call_timeout;
                config.recheck = recheck;
                config.max_pending = file.server.max_pending;
                config.ca_file.clone_from(&b.redis_ca_file);
                config.client_cert.clone_from(&client_cert);
                RedisStore::connect(config).await.map(|store| {
                    let store = Arc::new(store);
                    store.spawn_pruner();
                    store as Arc<dyn Inspect>
                })
            }
        };
        match attempt {
            // Reads coalesced and large bodies shared: many clients of one body hold one copy.
            Ok(store) => return Ok(Arc::new(Coalesced::new(store))),
            Err(e @ StoreError::Unsuitable { .. }) => bail!("--backend: {e}"),
            Err(e) if started.elapsed() + pause < CONNECT_FOR => {
                tracing::warn!(error = %e, "cannot reach {}; retrying", backend.name());
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            Err(e) => {
                let waited = format!("{:.0} s", started.elapsed().as_secs_f64());
                let (name, text) = (backend.name(), e.to_string());
                // The store's own error may name the database already.
                if text.contains(&name) {
                    bail!("--backend: gave up after {waited}: {text}")
                }
                bail!("--backend: cannot reach {name} after {waited}: {text}")
            }
        }
    }
}
