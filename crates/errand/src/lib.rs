//! errand: the Worker Pattern for HTTP.
pub mod pattern;
pub mod store;
