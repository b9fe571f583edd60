//! The Worker Pattern itself, with no I/O and no clock of its own.
//!
//! Everything here is a pure function of its inputs (`now` is always a parameter), so the
//! whole behaviour of a signature's life can be tested as tables:
//!
//! - `signature.rs`: what makes two requests "the same request" ([`Signature`], [`Key`]);
//! - `entry.rs`: what the store holds for one signature ([`Entry`], [`Status`], [`Content`]);
//! - `forward.rs`: which of a client's request headers its job sends on;
//! - `hygiene.rs`: which requests are refused before anything else (framing, `Host`);
//! - `freshness.rs`: how a worker classifies an upstream response ([`classify`]: store,
//!   pass, retry…);
//! - `outcome.rs`: what one attempt of a job comes to (a [`Completion`], a [`JobOutcome`],
//!   the retry [`backoff`]), table-tested;
//! - `range.rs`: the byte range a request asks of a stored response;
//! - `revalidate.rs`: a stored response's validators, and the same freshened by a `304`;
//! - `vary.rs`: which stored variant answers a request (RFC 9111 §4.1);
//! - `decide.rs`: what the front does with an entry ([`decide()`], [`Decision`]);
//! - `answer.rs`: what the front's answer says of itself: its `Cache-Status` and the
//!   `Retry-After` of the answers that send the client away, table-tested;
//! - `cache_status.rs`: the vocabulary reported in `Cache-Status`, logs and metrics
//!   ([`Phase`], [`CacheStatus`]);
//! - `trace.rs`: the W3C trace context a job inherits from the request that created it
//!   ([`TraceParent`]; the one place that draws random numbers, for new trace ids).
//!
//! Each public item is reachable by one path, `errand::pattern::Name`; the modules are the
//! crate's own.

pub(crate) mod answer;
pub(crate) mod cache_status;
pub(crate) mod decide;
pub(crate) mod entry;
pub(crate) mod forward;
pub(crate) mod freshness;
pub(crate) mod hygiene;
pub(crate) mod outcome;
pub(crate) mod range;
pub(crate) mod revalidate;
pub(crate) mod signature;
pub(crate) mod trace;
pub(crate) mod vary;

pub use cache_status::{CacheStatus, Detail, JobOutcome, Phase};
pub use decide::{Decision, decide, decide_waited};
pub use entry::{
    Content, Entry, Failure, JobId, JobInfo, PassInfo, Priority, State, Status, StoredResponse,
    Timestamp,
};
pub use freshness::{Classification, NoStore, Sharing, Windows, classify, remove_hop_headers};
pub use hygiene::unknown_coding;
pub use outcome::{Completion, backoff, gateway_status};
pub use signature::{Key, RequestRecord, Signature, SignatureError};
pub use trace::TraceParent;
