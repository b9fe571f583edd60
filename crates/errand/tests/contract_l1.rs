//! The store contract through an L1 copy in front of the memory store: the copy must not
//! change any answer the store gives to this process.

use std::sync::Arc;

use errand::store::{L1, L1Config, MemoryConfig, MemoryStore};

errand::store_contract!(|clock| async move {
    let inner = Arc::new(MemoryStore::with_clock(MemoryConfig::default(), clock));
    Some(L1::new(inner, L1Config::default()))
});
