//! The store contract against the embedded memory store.

use errand::store::{MemoryConfig, MemoryStore};

errand::store_contract!(|clock| async move {
    Some(MemoryStore::with_clock(MemoryConfig::default(), clock))
});
