//! errand: the Worker Pattern for HTTP.
pub mod body;
pub mod config;
pub mod front;
pub mod pattern;
pub mod store;
pub mod worker;

pub use front::{Errand, ErrandLayer, ErrandService};
pub use worker::{JobBody, JobRequest, Worker};
