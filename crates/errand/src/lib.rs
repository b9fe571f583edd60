//! errand: the Worker Pattern for HTTP.
pub mod body;
pub mod config;
pub mod front;
pub mod pattern;
pub mod store;
pub mod worker;

pub use front::{Errand, ErrandLayer, ErrandService};
pub use worker::{JobBody, JobRequest, Worker};

/// The shutdown signal shared by a server and its workers: cancel it and every loop stops.
pub use tokio_util::sync::CancellationToken as Shutdown;
