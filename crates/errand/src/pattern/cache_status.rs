//! One vocabulary for what happened to a request: the [`Phase`] feeds the `Cache-Status`
//! header (RFC 9211), logs and metrics alike.

use std::fmt;

/// How one attempt of a job ended: the word of the job's log line and of the
/// `errand_jobs_completed_total` metric's `outcome` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobOutcome {
    /// A shareable response, stored.
    Stored,
    /// A response that must not be shared: hit-for-pass.
    Pass,
    /// A final answer that is not storable (401, 403, …): delivered to the next try only.
    Once,
    /// Every attempt failed: the entry answers the failure.
    Failed,
    /// This attempt failed; another is scheduled. The job goes on.
    Retry,
}

impl JobOutcome {
    /// The outcomes that end a job, in declaration order (each a label of
    /// `errand_jobs_completed_total`); [`Retry`](Self::Retry) is counted apart.
    pub const ENDED: [JobOutcome; 4] = [Self::Stored, Self::Pass, Self::Once, Self::Failed];

    /// The word used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Pass => "pass",
            Self::Once => "once",
            Self::Failed => "failed",
            Self::Retry => "retry",
        }
    }

    /// Whether the job ended with this attempt (its entry settled).
    pub fn ends_the_job(self) -> bool {
        self != Self::Retry
    }
}

/// What the front did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Served fresh from the store.
    Hit,
    /// Served stale from the store (while one refresh runs, or because refreshes fail).
    Stale,
    /// Not in the store: this request claimed the job.
    Miss,
    /// A job for this signature was already pending.
    Pending,
    /// This request raced another to claim the job and lost: collapsed onto it.
    Collapsed,
    /// Went straight through to the application/upstream.
    Pass,
    /// The signature's last job failed: answered with its error.
    Failed,
    /// The store could not be reached: answered `503`.
    Error,
}

impl Phase {
    /// The word used in `Cache-Status` details, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Stale => "stale",
            Self::Miss => "miss",
            Self::Pending => "pending",
            Self::Collapsed => "collapsed",
            Self::Pass => "pass",
            Self::Failed => "failed",
            Self::Error => "error",
        }
    }

    /// Every phase, for metrics that pre-register their labels.
    pub const ALL: [Phase; 8] = [
        Self::Hit,
        Self::Stale,
        Self::Miss,
        Self::Pending,
        Self::Collapsed,
        Self::Pass,
        Self::Failed,
        Self::Error,
    ];
}

/// Why a request was forwarded rather than served from the store (RFC 9211 `fwd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fwd {
    /// The store had nothing usable for this URI.
    UriMiss,
    /// The stored response was stale.
    Stale,
    /// The request method is not cacheable.
    Method,
    /// Something in the request (credentials, a body) prevents sharing.
    Request,
    /// The route is configured to pass.
    Bypass,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Self::UriMiss => "uri-miss",
            Self::Stale => "stale",
            Self::Method => "method",
            Self::Request => "request",
            Self::Bypass => "bypass",
        }
    }
}

/// The word a `Cache-Status` entry's `detail` parameter says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Detail {
    /// This request claimed the job.
    Miss,
    /// A job is pending (claimed by this request or another).
    Pending,
    /// The signature's last job failed.
    Failed,
    /// Forwarded to the application/upstream.
    Pass,
    /// Forwarded because the signature is in hit-for-pass.
    HitForPass,
    /// Stale content served in place of an error.
    StaleIfError,
    /// The answer is the result of the job this request waited for.
    Waited,
    /// The store could not be reached.
    StoreUnavailable,
    /// The store refuses new jobs: too many are pending.
    QueueFull,
    /// Forwarded because its signature has as many stored variants as its route allows.
    VariantLimit,
}

impl Detail {
    /// The word itself.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Miss => "miss",
            Self::Pending => "pending",
            Self::Failed => "failed",
            Self::Pass => "pass",
            Self::HitForPass => "hit-for-pass",
            Self::StaleIfError => "stale-if-error",
            Self::Waited => "waited",
            Self::StoreUnavailable => "store-unavailable",
            Self::QueueFull => "queue-full",
            Self::VariantLimit => "variant-limit",
        }
    }
}

/// A `Cache-Status` entry for errand, e.g. `errand; hit; ttl=41` or
/// `errand; fwd=uri-miss; collapsed; detail=pending`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheStatus {
    /// What happened.
    pub phase: Phase,
    /// Seconds of freshness left (negative when stale).
    pub ttl: Option<i64>,
    /// Why the request was forwarded, if it was.
    pub fwd: Option<Fwd>,
    /// Status of the forwarded response, when it is the one being served.
    pub fwd_status: Option<u16>,
    /// The request joined a job claimed by another.
    pub collapsed: bool,
    /// The forwarded response was stored.
    pub stored: bool,
    /// A word saying more (`pending`, `stale-if-error`, `hit-for-pass`, `waited`, …).
    pub detail: Option<Detail>,
}

impl CacheStatus {
    /// A report for `phase` with the usual parameters of that phase.
    pub fn new(phase: Phase) -> Self {
        let (fwd, detail) = match phase {
            Phase::Hit => (None, None),
            Phase::Stale => (Some(Fwd::Stale), None),
            Phase::Miss => (Some(Fwd::UriMiss), Some(Detail::Miss)),
            Phase::Pending | Phase::Collapsed => (Some(Fwd::UriMiss), Some(Detail::Pending)),
            Phase::Failed => (Some(Fwd::UriMiss), Some(Detail::Failed)),
            Phase::Pass => (Some(Fwd::Request), Some(Detail::Pass)),
            Phase::Error => (Some(Fwd::UriMiss), Some(Detail::StoreUnavailable)),
        };
        Self {
            phase,
            ttl: None,
            fwd,
            fwd_status: None,
            collapsed: phase == Phase::Collapsed,
            stored: false,
            detail,
        }
    }

    /// Sets the remaining freshness.
    pub fn ttl(mut self, ttl: i64) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the forward reason.
    pub fn fwd(mut self, fwd: Fwd) -> Self {
        self.fwd = Some(fwd);
        self
    }

    /// Sets the detail word.
    pub fn detail(mut self, detail: Detail) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Marks the answer as the stored result of the job this request waited for.
    pub fn waited(mut self, status: u16, stored: bool) -> Self {
        self.fwd_status = Some(status);
        self.stored = stored;
        self.detail = Some(Detail::Waited);
        self
    }
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("errand")?;
        if matches!(self.phase, Phase::Hit | Phase::Stale) {
            f.write_str("; hit")?;
        }
        if let Some(ttl) = self.ttl {
            write!(f, "; ttl={ttl}")?;
        }
        if let Some(fwd) = self.fwd {
            write!(f, "; fwd={}", fwd.as_str())?;
        }
        if let Some(status) = self.fwd_status {
            write!(f, "; fwd-status={status}")?;
        }
        if self.collapsed {
            f.write_str("; collapsed")?;
        }
        if self.stored {
            f.write_str("; stored")?;
        }
        if let Some(detail) = self.detail {
            write!(f, "; detail={}", detail.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc9211_entries() {
        let cases = [
            (CacheStatus::new(Phase::Hit).ttl(41), "errand; hit; ttl=41"),
            (
                CacheStatus::new(Phase::Miss),
                "errand; fwd=uri-miss; detail=miss",
            ),
            (
                CacheStatus::new(Phase::Pending),
                "errand; fwd=uri-miss; detail=pending",
            ),
            (
                CacheStatus::new(Phase::Collapsed),
                "errand; fwd=uri-miss; collapsed; detail=pending",
            ),
            (
                CacheStatus::new(Phase::Stale).ttl(-12),
                "errand; hit; ttl=-12; fwd=stale",
            ),
            (
                CacheStatus::new(Phase::Stale)
                    .ttl(-70)
                    .detail(Detail::StaleIfError),
                "errand; hit; ttl=-70; fwd=stale; detail=stale-if-error",
            ),
            (
                CacheStatus::new(Phase::Miss).waited(200, true),
                "errand; fwd=uri-miss; fwd-status=200; stored; detail=waited",
            ),
            (
                CacheStatus::new(Phase::Pass).fwd(Fwd::Method),
                "errand; fwd=method; detail=pass",
            ),
            (
                CacheStatus::new(Phase::Error),
                "errand; fwd=uri-miss; detail=store-unavailable",
            ),
        ];
        for (status, want) in cases {
            assert_eq!(status.to_string(), want);
        }
    }

    #[test]
    fn phase_words_are_distinct() {
        let mut words: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), Phase::ALL.len());
    }
}
