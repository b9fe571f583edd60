//! Configuration: per-route policies ([`Routes`]), the front's limits ([`FrontConfig`]) and the
//! workers' job settings ([`JobConfig`]). Plain data with sensible defaults; the `errand`
//! binary fills it from flags and a TOML file, a library user from code.

use std::time::Duration;

use http::HeaderName;

use crate::pattern::Windows;

/// Whether a route's GETs are deferred to workers or go straight through. Written `defer`
/// or `pass` in a configuration file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The Worker Pattern: answer from the store, defer misses to workers.
    #[default]
    Defer,
    /// A plain proxy/handler: every request goes straight through.
    Pass,
}

/// How one route's responses are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePolicy {
    /// Defer or pass.
    pub mode: Mode,
    /// Freshness, stale-while-revalidate and stale-if-error windows.
    pub windows: Windows,
    /// How long a failed signature answers its error before a new job runs.
    pub error_ttl: Duration,
    /// How long an unshareable response makes its signature pass straight through.
    pub pass_ttl: Duration,
    /// Request headers that are part of the signature (a credential header is keyed by hash).
    pub key_headers: Vec<HeaderName>,
    /// A request that does not say (no `Prefer: wait`, no `Prefer: respond-async`) waits this
    /// long for its job, as if it had sent `Prefer: wait`: browsers and plain clients are
    /// answered in one round trip. `None`: such a request gets its `202` at once.
    pub wait: Option<Duration>,
    /// Attempts of this route's jobs before they fail, instead of
    /// [`JobConfig::max_attempts`]: `Some(1)` relays an upstream `5xx` as it came, as
    /// RFC 9111 caches do, instead of retrying it.
    pub max_attempts: Option<u32>,
    /// Store responses that set a cookie, as RFC 9111 allows. Off by default: one client's
    /// session cookie must not reach another through the cache.
    pub store_set_cookie: bool,
    /// How many variants of one signature (responses whose `Vary` names request headers
    /// the route does not key on) each front stores; a request needing one more passes
    /// through without a job. `0` stores no such response.
    pub max_variants: usize,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        Self {
            mode: Mode::Defer,
            windows: Windows {
                ttl: Duration::from_secs(60),
                stale: Duration::from_secs(60),
                stale_if_error: Duration::from_secs(600),
            },
            error_ttl: Duration::from_secs(10),
            pass_ttl: Duration::from_secs(60),
            key_headers: Vec::new(),
            wait: None,
            max_attempts: None,
            store_set_cookie: false,
            max_variants: 32,
        }
    }
}

/// A path pattern: `/exact`, `/prefix/*` (any path under it, and `/prefix` itself) or `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern(String);

/// Why a route path pattern was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// It starts with neither `/` nor is it `*`.
    #[error("route path {0:?} must start with '/' (or be \"*\")")]
    NotAbsolute(String),
    /// It has a `*` before its end.
    #[error("route path {0:?} may only have '*' at its end")]
    InnerStar(String),
}

impl PathPattern {
    /// Parses a pattern; it must start with `/` (or be `*`) and may only end with `*`.
    ///
    /// # Errors
    ///
    /// [`PatternError`] saying which of those rules `pattern` breaks.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let star = pattern.find('*');
        if pattern != "*" && !pattern.starts_with('/') {
            return Err(PatternError::NotAbsolute(pattern.to_owned()));
        }
        if star.is_some_and(|i| i != pattern.len() - 1) {
            return Err(PatternError::InnerStar(pattern.to_owned()));
        }
        Ok(Self(pattern.to_owned()))
    }

    /// The pattern as written (used as the route's name in logs and metrics).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `path` falls under this pattern.
    pub fn matches(&self, path: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => {
                path.starts_with(prefix) || prefix.strip_suffix('/').is_some_and(|p| path == p)
            }
            None => path == self.0,
        }
    }
}

/// One route: a pattern and its policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Which paths.
    pub path: PathPattern,
    /// How they are kept.
    pub policy: RoutePolicy,
}

/// The route table: the first matching route wins; unmatched paths use the default policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    /// Routes in order of precedence.
    pub routes: Vec<Route>,
    /// The policy of paths no route matches.
    pub default: RoutePolicy,
}

/// Which route a path fell under: its index (`routes.len()` for the default) and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteId(pub usize);

impl Routes {
    /// The route of `path` and its policy.
    pub fn policy_for(&self, path: &str) -> (RouteId, &RoutePolicy) {
        self.routes
            .iter()
            .position(|r| r.path.matches(path))
            .map_or((RouteId(self.routes.len()), &self.default), |i| {
                (RouteId(i), &self.routes[i].policy)
            })
    }

    /// The policy of route `id` (the default's for an id beyond the routes).
    pub fn policy(&self, id: RouteId) -> &RoutePolicy {
        self.routes.get(id.0).map_or(&self.default, |r| &r.policy)
    }

    /// The route's name (its pattern, or `default`).
    pub fn name(&self, id: RouteId) -> &str {
        self.routes.get(id.0).map_or("default", |r| r.path.as_str())
    }

    /// Number of routes including the default.
    pub fn len(&self) -> usize {
        self.routes.len() + 1
    }

    /// Never true: there is always the default route.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Limits and behaviour of the front (the Layer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontConfig {
    /// Scheme of requests whose URI is not absolute (what the listener speaks).
    pub scheme: String,
    /// Hosts accepted (lower-case, with `:port` if not default); empty = any. A request for
    /// another host is answered `421 Misdirected Request`, whatever its method or route, and
    /// never reaches the inner service.
    pub allowed_hosts: Vec<String>,
    /// Upper bound of `Prefer: wait`.
    pub max_wait: Duration,
    /// How many requests may wait at once; beyond it `Prefer: wait` is answered `202` at once.
    pub max_waiters: usize,
    /// Lower bound of `Retry-After`.
    pub retry_after_min: Duration,
    /// Upper bound of `Retry-After`.
    pub retry_after_max: Duration,
    /// Timeout of every store call made by the front.
    pub store_timeout: Duration,
    /// Longest request target accepted (`414` beyond it).
    pub max_uri_len: usize,
}

impl Default for FrontConfig {
    fn default() -> Self {
        Self {
            scheme: "http".into(),
            allowed_hosts: Vec::new(),
            max_wait: Duration::from_secs(30),
            max_waiters: 10_000,
            retry_after_min: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(30),
            store_timeout: Duration::from_secs(2),
            max_uri_len: 8 * 1024,
        }
    }
}

/// How workers run jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobConfig {
    /// Jobs run at once by one worker runtime.
    pub concurrency: usize,
    /// A job (the handler or upstream call, body included) is abandoned after this long.
    pub timeout: Duration,
    /// Lease of a taken job; renewed every third of it while the job runs.
    pub lease: Duration,
    /// Attempts before the signature turns failed.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Largest body stored; a larger response passes (hit-for-pass).
    pub max_body: usize,
    /// On shutdown, how long running jobs may take to finish before they are handed back.
    pub shutdown_timeout: Duration,
    /// Timeout of every store call made by a worker.
    pub store_timeout: Duration,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            timeout: Duration::from_secs(30),
            lease: Duration::from_secs(30),
            max_attempts: 3,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_body: 8 * 1024 * 1024,
            shutdown_timeout: Duration::from_secs(10),
            store_timeout: Duration::from_secs(5),
        }
    }
}

/// Everything the front and the workers need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Per-route policies.
    pub routes: Routes,
    /// The front's limits.
    pub front: FrontConfig,
    /// The workers' job settings.
    pub jobs: JobConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = |s: &str| PathPattern::parse(s).expect("pattern");
        assert!(p("/a").matches("/a"));
        assert!(!p("/a").matches("/a/b"));
        assert!(p("/a/*").matches("/a/b/c"));
        assert!(p("/a/*").matches("/a"));
        assert!(!p("/a/*").matches("/ab"));
        assert!(p("/a*").matches("/ab"));
        assert!(p("*").matches("/anything"));
        assert!(PathPattern::parse("a").is_err());
        assert!(PathPattern::parse("/a/*/b").is_err());
    }

    #[test]
    fn first_match_wins_then_default() {
        let pass = RoutePolicy {
            mode: Mode::Pass,
            ..RoutePolicy::default()
        };
        let routes = Routes {
            routes: vec![
                Route {
                    path: PathPattern::parse("/admin/*").expect("p"),
                    policy: pass,
                },
                Route {
                    path: PathPattern::parse("*").expect("p"),
                    policy: RoutePolicy::default(),
                },
            ],
            default: RoutePolicy::default(),
        };
        assert_eq!(routes.policy_for("/admin/x").1.mode, Mode::Pass);
        assert_eq!(routes.policy_for("/x").0, RouteId(1));
        assert_eq!(routes.name(RouteId(0)), "/admin/*");
        assert_eq!(routes.name(RouteId(2)), "default");
    }
}
