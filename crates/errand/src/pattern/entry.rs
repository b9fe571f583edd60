//! What the store holds for one signature: the [`Entry`], its [`Status`] and its [`Content`].
//!
//! The pending entry *is* the job ([`Status::Pending`] carries a [`JobInfo`]), so the seed's two
//! racy steps (mark pending, enqueue) are one record written in one atomic step.
//! The state a front sees ([`Decision`](super::Decision)) is derived from an entry and `now`:
//! fresh and stale are not stored, they are times in [`Content`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::signature::{Key, RequestRecord};

/// Milliseconds since the Unix epoch: the one time type of stores and decisions.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The time `d` after this one.
    pub fn plus(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub fn since(self, earlier: Self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Signed whole seconds from `now` until this time (negative once it has passed).
    pub fn secs_from(self, now: Self) -> i64 {
        let delta = i128::from(self.0) - i128::from(now.0);
        i64::try_from(delta.div_euclid(1000)).unwrap_or(i64::MAX)
    }

    /// The wall clock now.
    pub fn now() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }
}

impl From<std::time::SystemTime> for Timestamp {
    /// The time as milliseconds since the epoch (0 for a time before it).
    fn from(time: std::time::SystemTime) -> Self {
        let since_epoch = time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A job's identity, unique within a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

/// Which jobs run first. A miss that a client waits for goes before a background refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Priority {
    /// Nobody has the content yet: a client is waiting (or retrying) for it.
    Miss = 0,
    /// Clients are being served a stale copy while this refreshes it.
    Refresh = 1,
}

impl Priority {
    /// The vocabulary used in logs, metrics and stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Miss => "miss",
            Self::Refresh => "refresh",
        }
    }
}

/// A response as stored: status, end-to-end headers and the whole body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    /// The status code.
    pub status: StatusCode,
    /// End-to-end headers only (hop-by-hop headers are removed before storing).
    pub headers: HeaderMap,
    /// The full body.
    pub body: Bytes,
    /// The selecting header fields (RFC 9111 §4.1): the request headers its `Vary` names, as
    /// the request that produced it sent them. Empty when it does not vary.
    pub selecting: HeaderMap,
}

impl StoredResponse {
    /// Bytes this response occupies, for the store's byte budget.
    pub fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .chain(self.selecting.iter())
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        self.body.len() + headers + 64
    }
}

/// A storable response with the times that make it fresh, stale or expired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    /// The response.
    pub response: Arc<StoredResponse>,
    /// When the response was generated (less any `Age` the upstream reported): `Age` counts
    /// from here.
    pub generated_at: Timestamp,
    /// Served as a hit until then.
    pub fresh_until: Timestamp,
    /// Served stale, with one refresh job, until then.
    pub stale_until: Timestamp,
    /// Served instead of an error while refreshes fail, until then.
    pub stale_if_error_until: Timestamp,
    /// Tags for purging (`Surrogate-Key` / `Cache-Tag` of the upstream).
    pub tags: Vec<String>,
    /// How long the job that produced it ran, in milliseconds (feeds `Retry-After`).
    pub job_millis: u64,
}

impl Content {
    /// Whether, once past its freshness, this copy is kept only to be revalidated: the
    /// origin forbade serving it stale (`must-revalidate`, `proxy-revalidate`, `s-maxage`,
    /// with no `stale-while-revalidate`).
    pub fn revalidate_only(&self) -> bool {
        super::freshness::revalidate_only(&self.response.headers)
    }

    /// The last moment at which this content can still be served in any way.
    pub fn expires_at(&self) -> Timestamp {
        self.fresh_until
            .max(self.stale_until)
            .max(self.stale_if_error_until)
    }
}

/// A queued or running job, as seen in its pending entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo {
    /// The job.
    pub id: JobId,
    /// Its priority.
    pub priority: Priority,
    /// When it was claimed.
    pub created_at: Timestamp,
    /// When it may run next (later than `created_at` while a retry backs off).
    pub run_at: Timestamp,
    /// How many times a worker has taken it.
    pub attempts: u32,
    /// While a worker holds it: the end of its lease.
    pub lease_until: Option<Timestamp>,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// Whether the entry was `failed` when this job was claimed (the origin is known to be
    /// failing, so a stale-if-error copy is served meanwhile).
    pub after_failure: bool,
}

impl JobInfo {
    /// A job just claimed: ready at `now`, never attempted, not leased.
    pub fn claimed(id: JobId, priority: Priority, now: Timestamp, after_failure: bool) -> Self {
        Self {
            id,
            priority,
            created_at: now,
            run_at: now,
            attempts: 0,
            lease_until: None,
            last_error: None,
            after_failure,
        }
    }
}

/// Every attempt of a job failed; kept for the error TTL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Until then the signature answers with [`response`](Self::response).
    pub until: Timestamp,
    /// The answer: the last upstream error response, or a `502`/`504` made by errand.
    pub response: Arc<StoredResponse>,
    /// What went wrong, for operators.
    pub error: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// When the job gave up.
    pub at: Timestamp,
    /// The request the job replayed, kept so an operator can retry it at once
    /// ([`store::retry`](crate::store::retry)). Stores fill it in when they record the failure
    /// (whatever the completion carried); it lives as long as the failed entry.
    pub request: Option<RequestRecord>,
}

/// Hit-for-pass: the response must not be shared, so requests go straight through until
/// [`until`](Self::until).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassInfo {
    /// Requests pass through synchronously until then.
    pub until: Timestamp,
    /// The job's response, delivered once to the next try (then removed), when it was safe to
    /// keep it for one client.
    pub once: Option<Arc<StoredResponse>>,
    /// Why the response is not shared (a [`NoStore`](super::NoStore) reason).
    pub reason: String,
}

impl PassInfo {
    /// Whether the kept response may go only to the request that claimed its job: it varies
    /// on request headers the key does not hold, and only that request's were sent.
    pub fn only_for_its_claimer(&self) -> bool {
        self.reason == super::freshness::NoStore::Vary.as_str()
    }

    /// The kept response when it may go to every request that waited for its job (it is
    /// shareable, only too old to keep: [`NoStore::shareable`](super::NoStore::shareable));
    /// `None` when it goes to one request only, or is gone.
    pub fn for_every_waiter(&self) -> Option<&Arc<StoredResponse>> {
        self.once.as_ref().filter(|_| self.shareable())
    }

    /// Whether the job's result was shareable, only too old to keep (`stale-on-arrival`).
    fn shareable(&self) -> bool {
        self.reason == super::freshness::NoStore::StaleOnArrival.as_str()
    }
}

/// What the entry is doing, apart from the content it may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// No job and no verdict: the state follows from the content's times.
    Idle,
    /// A job is queued or running.
    Pending(JobInfo),
    /// The last job failed every attempt.
    Failed(Failure),
    /// The response must not be shared.
    Pass(PassInfo),
}

impl Status {
    /// The stored status word (`idle`, `pending`, `failed`, `pass`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Pending(_) => "pending",
            Self::Failed(_) => "failed",
            Self::Pass(_) => "pass",
        }
    }
}

/// The state an operator sees: what a request for the entry would get now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Content within its freshness lifetime.
    Fresh,
    /// Content past its freshness lifetime (served while its stale windows allow).
    Stale,
    /// A job is queued or running.
    Pending,
    /// The last job failed every attempt; the failure is answered until it ends.
    Failed,
    /// Hit-for-pass: requests go straight to the upstream until it ends.
    Pass,
}

impl State {
    /// Every state, in the order operators read them.
    pub const ALL: [Self; 5] = [
        Self::Fresh,
        Self::Stale,
        Self::Pending,
        Self::Failed,
        Self::Pass,
    ];

    /// The state's name, as in the admin API and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Stale => "stale",
            Self::Pending => "pending",
            Self::Failed => "failed",
            Self::Pass => "pass",
        }
    }

    /// The state named `name` (`fresh`, `stale`, `pending`, `failed` or `pass`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a store holds for one signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The signature's key.
    pub key: Key,
    /// Canonical URI without key headers (for purge by URI or prefix, and for operators).
    pub uri: Arc<str>,
    /// Changes on every write; conditional claims compare it.
    pub version: u64,
    /// The last storable response, if any (kept while a refresh runs or fails).
    pub content: Option<Content>,
    /// What the entry is doing.
    pub status: Status,
}

impl Entry {
    /// The pending job, if any.
    pub fn job(&self) -> Option<&JobInfo> {
        match &self.status {
            Status::Pending(job) => Some(job),
            _ => None,
        }
    }

    /// The moment after which nothing of this entry can be served and a store may drop it
    /// (a pending entry never expires: its job is live).
    pub fn expires_at(&self) -> Option<Timestamp> {
        let content = self
            .content
            .as_ref()
            .map_or(Timestamp(0), Content::expires_at);
        match &self.status {
            Status::Pending(_) => None,
            Status::Idle => Some(content),
            Status::Failed(f) => Some(content.max(f.until)),
            Status::Pass(p) => Some(content.max(p.until)),
        }
    }

    /// A job's result that every request which waited for the job may have: a shareable
    /// result delivered once ([`PassInfo::for_every_waiter`]), or, when one of them has taken
    /// that delivery, the copy kept beside it (a
    /// [`Completion::Deliver`](super::Completion::Deliver)).
    pub fn result_for_waiters(&self) -> Option<&Arc<StoredResponse>> {
        let Status::Pass(pass) = &self.status else {
            return None;
        };
        pass.for_every_waiter().or_else(|| {
            self.content
                .as_ref()
                .filter(|_| pass.shareable())
                .map(|c| &c.response)
        })
    }

    /// Its [`State`] at `now`. A verdict (failed, pass) counts only until it ends; after that
    /// the entry is what its content makes it.
    pub fn state(&self, now: Timestamp) -> State {
        match &self.status {
            Status::Pending(_) => return State::Pending,
            Status::Failed(f) if now < f.until => return State::Failed,
            Status::Pass(p) if now < p.until => return State::Pass,
            _ => {}
        }
        if self.content.as_ref().is_some_and(|c| now < c.fresh_until) {
            State::Fresh
        } else {
            State::Stale
        }
    }

    /// Bytes this entry occupies, for a byte budget.
    pub fn weight(&self) -> usize {
        let content = self.content.as_ref().map_or(0, |c| c.response.weight());
        let status = match &self.status {
            Status::Failed(f) => {
                let request = f.request.as_ref().map_or(0, |r| {
                    r.uri.len()
                        + r.headers
                            .iter()
                            .map(|(n, v)| n.len() + v.len())
                            .sum::<usize>()
                });
                f.response.weight() + f.error.len() + request
            }
            Status::Pass(p) => p.once.as_ref().map_or(0, |r| r.weight()),
            Status::Pending(j) => j.last_error.as_ref().map_or(0, String::len),
            Status::Idle => 0,
        };
        content + status + self.uri.len() + 160
    }
}
