//! The handle to one deployment, [`Errand`]: its store, configuration and the state both
//! halves share (job duration estimates, the waiter budget). The front
//! ([`layer`](Errand::layer)) and the worker runtime ([`worker`](Errand::worker)) each depend
//! on this handle, never on each other.

use std::fmt;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::Config;
use crate::estimate::JobEstimates;
use crate::store::{MemoryConfig, MemoryStore, SharedStore};
use crate::variants::Variants;

/// The handle to one errand deployment: its store and configuration. Cheap to clone.
#[derive(Clone)]
pub struct Errand {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) store: SharedStore,
    pub(crate) config: Config,
    pub(crate) estimates: JobEstimates,
    pub(crate) waiters: Arc<Semaphore>,
    pub(crate) variants: Variants,
}

impl fmt::Debug for Errand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Errand")
            .field("store", &self.shared.store)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Errand {
    /// errand over `store` with `config`.
    pub fn new(store: SharedStore, config: Config) -> Self {
        let estimates = JobEstimates::new(config.routes.len());
        let waiters = Arc::new(Semaphore::new(config.front.max_waiters));
        Self {
            shared: Arc::new(Shared {
                store,
                config,
                estimates,
                waiters,
                variants: Variants::new(),
            }),
        }
    }

    /// errand over the embedded memory store (default byte budget and flood cap).
    pub fn in_memory(config: Config) -> Self {
        Self::new(Arc::new(MemoryStore::new(MemoryConfig::default())), config)
    }

    /// The store.
    pub fn store(&self) -> &SharedStore {
        &self.shared.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Per-route job duration estimates (feeding `Retry-After`).
    pub(crate) fn estimates(&self) -> &JobEstimates {
        &self.shared.estimates
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}
