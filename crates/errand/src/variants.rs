//! The cap on stored variants per signature (RFC 9111 §4.1 allows any number; a header with
//! unbounded values, such as `User-Agent`, would otherwise fill the store with copies of one
//! URI).
//!
//! Each front remembers the variant keys it has sent to the store for each signature, up to
//! the route's `max_variants`; a request that would need one more passes through to the
//! upstream without a job. The memory is this process's own and bounded (least recently used
//! signatures are forgotten first), so across `n` fronts a signature has at most
//! `n × max_variants` variants made while it is remembered.

use std::sync::{Arc, Mutex};

use crate::pattern::Key;

/// Signatures remembered at once.
const SIGNATURES: u64 = 65_536;

/// The variant keys each signature has, as far as this front knows.
pub(crate) struct Variants {
    seen: moka::sync::Cache<Key, Arc<Mutex<Vec<Key>>>>,
}

impl Variants {
    pub(crate) fn new() -> Self {
        Self {
            seen: moka::sync::Cache::new(SIGNATURES),
        }
    }

    /// Whether `variant` of `base` may be used: it is known already, or `base` has fewer than
    /// `max` variants (then it is remembered).
    pub(crate) fn admit(&self, base: Key, variant: Key, max: usize) -> bool {
        let known = self.seen.get_with(base, Arc::default);
        let mut known = known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.contains(&variant) {
            return true;
        }
        if known.len() >= max {
            return false;
        }
        known.push(variant);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_gets_at_most_max_variants() {
        let variants = Variants::new();
        let key = |n: u8| Key::parse(&format!("{n:032x}")).unwrap();
        let (base, other) = (key(0), key(1));
        assert!(variants.admit(base, key(10), 2));
        assert!(variants.admit(base, key(11), 2));
        assert!(!variants.admit(base, key(12), 2), "a third variant");
        assert!(variants.admit(base, key(10), 2), "a known one still is");
        assert!(
            variants.admit(other, key(12), 2),
            "the cap is per signature"
        );
        assert!(!variants.admit(key(2), key(13), 0), "0 stores no variant");
    }
}
