//! errand: the Worker Pattern for HTTP.
//!
//! A front answers every `GET` from a store in microseconds; work that is not stored yet
//! becomes a job that workers run in the background, and the client is told to come back
//! (`202 Accepted` + `Retry-After`), or, under `Prefer: wait=N`, is answered the moment the
//! job ends, without a thread held meanwhile.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::get};
//! use errand::{Errand, Shutdown, config::Config};
//!
//! fn app() -> Router {
//!     Router::new().route("/report", get(|| async { "slow to make" }))
//! }
//!
//! let errand = Errand::in_memory(Config::default());
//! let shutdown = Shutdown::new();
//! errand.worker(app()).spawn(shutdown.clone()); // workers run the same handlers
//! let router = app().layer(errand.layer()); // the front, in one line
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
//! axum::serve(listener, router).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! The crate follows the life of a request's signature; each module is one concept.
//!
//! - [`pattern`]: the pattern itself, pure (no I/O, `now` is a parameter):
//!   [`Signature`](pattern::Signature) (what "the same request" means), the entry states
//!   ([`Entry`](pattern::Entry), [`Status`](pattern::Status)), RFC 9111 classification of a
//!   response ([`classify`](pattern::classify)), the front's [`decide`](fn@pattern::decide) and
//!   the [`Phase`](pattern::Phase) vocabulary shared by `Cache-Status`, logs and metrics.
//! - [`store`]: the [`Store`](store::Store) trait, one small contract in which *the pending
//!   entry is the job* (`claim` = enqueue-if-absent, `complete` = store + acknowledge, fenced
//!   by a lease); the embedded [`MemoryStore`](store::MemoryStore); the shared stores
//!   `store::postgres` (feature `postgres`) and `store::redis` (feature `redis`); the
//!   in-process [`L1`](store::L1) in front of a shared store; the conformance suite every
//!   backend runs ([`store_contract!`], feature `contract-tests`).
//! - `front`: the tower [`ErrandLayer`] and its service; the request flow (hygiene,
//!   pass-through cases, lookup → decide → claim/wait/serve), the answers it builds.
//! - `worker`: the [`Worker`] runtime: take jobs with leases, replay them through the app
//!   or upstream, renew leases, classify, retry with backoff, complete; graceful shutdown.
//! - [`config`]: routes and their policies, the front's limits, the job settings.
//! - [`body`]: the one response body type.
//!
//! To add a backend: implement [`store::Store`] in a module of its own and run
//! [`store_contract!`] against it. To change what a header does: the pure side is in
//! [`pattern`] (signature, freshness, cache status), the HTTP side in `front`.

pub mod body;
pub mod config;
mod errand;
mod estimate;
mod front;
pub mod metrics;
pub mod pattern;
mod replay;
pub mod store;
mod variants;
mod worker;

pub use errand::Errand;
pub use front::{ErrandLayer, ErrandService};
pub use replay::{JobBody, JobRequest};
pub use worker::{Worker, WorkerError};

/// The shutdown signal shared by a server and its workers: cancel it and every loop stops.
pub use tokio_util::sync::CancellationToken as Shutdown;
