//! The Worker Pattern itself, with no I/O and no clock of its own.
//!
//! Everything here is a pure function of its inputs (`now` is always a parameter), so the
//! whole behaviour of a signature's life can be tested as tables:
//!
//! - [`signature`]: what makes two requests "the same request" ([`Signature`], [`Key`]);
//! - [`entry`]: what the store holds for one signature ([`Entry`], [`Status`], [`Content`]);
//! - [`hygiene`]: which requests are refused before anything else (framing, `Host`);
//! - [`freshness`]: how a worker classifies an upstream response (store, pass, retry…);
//! - [`outcome`]: what one attempt of a job comes to ([`outcome::settle`], [`Completion`],
//!   the retry [`backoff`](outcome::backoff));
//! - [`decide`](mod@decide): what the front does with an entry ([`decide()`], [`Decision`]);
//! - [`answer`]: what the front's answer says of itself: its `Cache-Status` and the
//!   `Retry-After` of the answers that send the client away;
//! - [`cache_status`]: the vocabulary reported in `Cache-Status`, logs and metrics ([`Phase`]);
//! - [`trace`]: the W3C trace context a job inherits from the request that created it
//!   ([`TraceParent`]; the one place that draws random numbers, for new trace ids).

pub mod answer;
pub mod cache_status;
pub mod decide;
pub mod entry;
pub mod freshness;
pub mod hygiene;
pub mod outcome;
pub mod signature;
pub mod trace;

pub use cache_status::{CacheStatus, Detail, JobOutcome, Phase};
pub use decide::{Decision, decide};
pub use entry::{
    Content, Entry, Failure, JobId, JobInfo, PassInfo, Priority, State, Status, StoredResponse,
    Timestamp,
};
pub use freshness::{Classification, Windows, classify};
pub use outcome::Completion;
pub use signature::{Key, RequestRecord, Signature, SignatureError};
pub use trace::TraceParent;
