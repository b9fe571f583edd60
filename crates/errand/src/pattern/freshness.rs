//! How a worker classifies an upstream response (RFC 9111): store it and for how long, pass it,
//! deliver it once, or retry.

use std::time::Duration;

use http::{HeaderMap, HeaderName, StatusCode, header};

use super::entry::Timestamp;

/// The freshness windows a route grants when the upstream does not say otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    /// Fresh for this long (`--ttl`), unless the upstream's `Cache-Control` says otherwise.
    pub ttl: Duration,
    /// Then served stale while one refresh runs, for this long (`--stale`).
    pub stale: Duration,
    /// Then, while refreshes fail, served instead of the error for this long (`--stale-if-error`).
    pub stale_if_error: Duration,
}

/// Why a response must not be shared between clients.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoStore {
    /// `Cache-Control: private`.
    Private,
    /// `Cache-Control: no-store`.
    NoStoreDirective,
    /// The response sets a cookie.
    SetCookie,
    /// `Vary: *` (or a `Vary` that is not a list of header names): no other request is known
    /// to match it. Any other `Vary` is stored as a variant.
    Vary,
    /// The body is larger than the configured maximum.
    TooLarge,
    /// Shareable, but already past every window when it arrived (`max-age=0`, an old `Age`,
    /// no freshness and no default TTL): it goes to the requests that waited for its job and
    /// to the next one, and is not reused after without a revalidation (its copy is kept
    /// for that when it has validators: [`Completion::Deliver`](super::Completion::Deliver)).
    StaleOnArrival,
}

impl NoStore {
    /// The reason in the vocabulary of logs, metrics and `Cache-Status` details.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::NoStoreDirective => "no-store",
            Self::SetCookie => "set-cookie",
            Self::Vary => "vary",
            Self::TooLarge => "too-large",
            Self::StaleOnArrival => "stale-on-arrival",
        }
    }

    /// Whether the response itself may go to every request that waited for its job (it is
    /// shareable, only too old to keep), not just to one.
    pub fn shareable(&self) -> bool {
        matches!(self, Self::StaleOnArrival)
    }
}

/// The verdict on one upstream response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classification {
    /// Shareable: store it. Durations count from when the response was generated.
    Store {
        /// Fresh for this long.
        fresh_for: Duration,
        /// Then stale-while-revalidate for this long.
        stale_for: Duration,
        /// Then stale-if-error for this long.
        stale_if_error_for: Duration,
        /// The upstream's `Age`: how old the response already was.
        age: Duration,
    },
    /// Must not be shared: hit-for-pass.
    Pass(NoStore),
    /// A final answer that is not storable (401, 403, 409, 400, …): delivered to the next try
    /// of this signature only.
    Once,
    /// A server error: try again with backoff.
    Retry,
}

/// The longest lifetime errand works with: RFC 9111 §1.2.2 has a cache take any larger
/// delta-seconds (or one that overflows) as 2^31 seconds, about 68 years. Every window is
/// clamped to it, so stores never see a time they cannot represent (a Redis TTL, a
/// PostgreSQL timestamp).
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(1 << 31);

/// `d`, at most [`MAX_LIFETIME`].
pub(crate) fn clamp_lifetime(d: Duration) -> Duration {
    d.min(MAX_LIFETIME)
}

/// Reads delta-seconds (RFC 9111 §1.2.2): digits only; a value too large for the cache is
/// [`MAX_LIFETIME`].
fn delta_seconds(text: &str) -> Option<Duration> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        text.parse::<u64>()
            .map_or(MAX_LIFETIME, |s| clamp_lifetime(Duration::from_secs(s))),
    )
}

/// Status codes a cache may store without explicit freshness (RFC 9110 §15.1).
const HEURISTIC: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// What a route shares besides what RFC 9111 allows by itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sharing<'a> {
    /// The headers the route keys on (a `Vary` on them needs no variants).
    pub key_headers: &'a [HeaderName],
    /// Store responses that set a cookie (RFC 9111 allows it; errand does not by default,
    /// so one client's session cookie never reaches another).
    pub store_set_cookie: bool,
}

/// Classifies `status` + `headers`, received at `now`, on a route that shares as `sharing`
/// says; `jitter` in `[0, 1)` shortens the freshness by up to a tenth (at most a minute) so
/// many entries do not expire together.
///
/// Freshness follows RFC 9111 §4.2: `s-maxage`, then `max-age`, then `Expires` minus
/// `Date`; an invalid value of the directive that decides makes the response stale (never
/// the default TTL). The age follows §4.2.3: the larger of the `Age` header and the
/// apparent age (`now` minus `Date`); an `Age` that is not one delta-seconds value (a
/// list, a parameter, a sign, a fraction, several lines) makes the response stale.
/// `response_delay` (how long the request took to be answered) is added to an `Age` the
/// response carries, since that value was in flight that long; a response without `Age` was
/// made by the origin when it answered, so a slow job does not age it.
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    windows: &Windows,
    sharing: &Sharing<'_>,
    jitter: f64,
    now: Timestamp,
    response_delay: Duration,
) -> Classification {
    // A status outside 200–599 as a final answer is a broken upstream: treated as a 5xx.
    if status.is_server_error() || !(200..600).contains(&status.as_u16()) {
        return Classification::Retry;
    }
    let cc = CacheControl::parse(headers);
    if cc.no_store {
        return Classification::Pass(NoStore::NoStoreDirective);
    }
    if cc.private {
        return Classification::Pass(NoStore::Private);
    }
    if headers.contains_key(header::SET_COOKIE) && !sharing.store_set_cookie {
        return Classification::Pass(NoStore::SetCookie);
    }
    // Any other `Vary` is stored as a variant (see `vary.rs`).
    if super::vary::nominated(headers, sharing.key_headers) == super::vary::Nominated::Any {
        return Classification::Pass(NoStore::Vary);
    }

    let date = headers
        .get(header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .map(Timestamp::from);
    let explicit = match (cc.s_maxage, cc.max_age) {
        // Stored, but never reused without a successful revalidation (RFC 9111 §5.2.2.4).
        _ if cc.no_cache => Some(Some(Duration::ZERO)),
        (Some(s_maxage), _) => Some(s_maxage),
        (None, Some(max_age)) => Some(max_age),
        (None, None) => expires_minus_date(headers, date.unwrap_or(now)).map(Some),
    };
    let storable = HEURISTIC.contains(&status.as_u16())
        || (matches!(status.as_u16(), 302 | 307) && explicit.is_some());
    if !storable {
        return Classification::Once;
    }
    // An invalid freshness directive or `Age` leaves nothing fresh.
    let explicit = explicit.map(|lifetime| lifetime.unwrap_or(Duration::ZERO));
    // HTTP dates have whole seconds: compare at that resolution, or a response sent in the
    // same second would look up to a second old.
    let apparent = date.map_or(Duration::ZERO, |date| {
        Timestamp(now.0 - now.0 % 1000).since(date)
    });
    let age = match age_value(headers) {
        Some(age) if headers.contains_key(header::AGE) => (age + response_delay).max(apparent),
        Some(_) => apparent,
        None => MAX_LIFETIME,
    };
    let lifetime = clamp_lifetime(explicit.unwrap_or(windows.ttl));
    let age = clamp_lifetime(age);
    let jitter = lifetime
        .mul_f64(0.1 * jitter.clamp(0.0, 1.0))
        .min(Duration::from_secs(60));
    // must-revalidate, proxy-revalidate and s-maxage (RFC 9111 §5.2.2.10) forbid serving stale
    // unless the upstream grants it explicitly (RFC 5861 directives). A copy with validators
    // is still kept past its freshness, only to be revalidated (see `revalidate_only`), for
    // as long as the route keeps stale copies at all.
    // `no-cache` allows no stale use at all, whatever else the origin grants.
    let strict = cc.strict();
    let (default_stale, default_sie) = if !strict {
        (windows.stale, windows.stale_if_error)
    } else if has_validators(headers) {
        (windows.stale.max(windows.stale_if_error), Duration::ZERO)
    } else {
        (Duration::ZERO, Duration::ZERO)
    };
    let (stale_for, stale_if_error_for) = if cc.no_cache {
        (default_stale, default_sie)
    } else {
        (
            cc.stale_while_revalidate.unwrap_or(default_stale),
            cc.stale_if_error.unwrap_or(default_sie),
        )
    };
    Classification::Store {
        fresh_for: lifetime.saturating_sub(jitter),
        stale_for: clamp_lifetime(stale_for),
        stale_if_error_for: clamp_lifetime(stale_if_error_for),
        age,
    }
}

/// Whether a stored response, once past its freshness, may only be revalidated, never served
/// stale: `no-cache` (§5.2.2.4), or `must-revalidate`, `proxy-revalidate` or `s-maxage`
/// without a `stale-while-revalidate` grant (RFC 9111 §4.2.4, §5.2.2.2).
pub(crate) fn revalidate_only(headers: &HeaderMap) -> bool {
    let cc = CacheControl::parse(headers);
    cc.no_cache || (cc.strict() && cc.stale_while_revalidate.is_none())
}

fn has_validators(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

/// The parts of `Cache-Control` that matter to a shared cache.
#[derive(Debug, Default, PartialEq, Eq)]
struct CacheControl {
    /// `max-age`: absent, or present with its value (`None` when the value is invalid).
    max_age: Option<Option<Duration>>,
    /// `s-maxage`, likewise.
    s_maxage: Option<Option<Duration>>,
    stale_while_revalidate: Option<Duration>,
    stale_if_error: Option<Duration>,
    no_store: bool,
    no_cache: bool,
    private: bool,
    must_revalidate: bool,
}

impl CacheControl {
    /// Stale copies may not be served without the origin's explicit grant (and with
    /// `no-cache`, not at all).
    fn strict(&self) -> bool {
        self.must_revalidate || self.s_maxage.is_some() || self.no_cache
    }

    fn parse(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for (name, arg) in directives(value) {
                let seconds = || arg.as_deref().and_then(delta_seconds);
                match name.as_str() {
                    // The first occurrence counts.
                    "max-age" => cc.max_age = cc.max_age.or_else(|| Some(seconds())),
                    "s-maxage" => cc.s_maxage = cc.s_maxage.or_else(|| Some(seconds())),
                    "stale-while-revalidate" => cc.stale_while_revalidate = seconds(),
                    "stale-if-error" => cc.stale_if_error = seconds(),
                    "no-store" => cc.no_store = true,
                    // A qualified no-cache="Set-Cookie" names fields not to reuse; any form
                    // means this cache cannot reuse the response without revalidating.
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                    _ => {}
                }
            }
        }
        cc
    }
}

/// The directives of one `Cache-Control` line (RFC 9111 §5.2): lower-cased names, and
/// arguments as tokens or quoted strings (unquoted, escapes resolved). A comma inside a
/// quoted string does not end a directive.
fn directives(value: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return out;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            name.push(c.to_ascii_lowercase());
            chars.next();
        }
        let mut arg = None;
        if chars.peek() == Some(&'=') {
            chars.next();
            let mut text = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => text.extend(chars.next()),
                        c => text.push(c),
                    }
                }
                // Anything after the closing quote up to the comma is not part of it.
                while chars.peek().is_some_and(|c| *c != ',') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    text.push(c);
                    chars.next();
                }
                text = text.trim().to_owned();
            }
            arg = Some(text);
        }
        out.push((name.trim().to_owned(), arg));
    }
}

/// The `Age` of a response: one field line holding one delta-seconds value. `None` for
/// anything else (several lines, a list, a parameter, a sign, a fraction), which leaves the
/// response no freshness to trust.
fn age_value(headers: &HeaderMap) -> Option<Duration> {
    let mut lines = headers.get_all(header::AGE).iter();
    let Some(first) = lines.next() else {
        return Some(Duration::ZERO);
    };
    if lines.next().is_some() {
        return None;
    }
    delta_seconds(first.to_str().ok()?.trim())
}

/// `Expires` minus `date` (the response's `Date`, or when it was received): `None` without
/// `Expires`; an invalid `Expires` (often "0") means "already expired" (RFC 9111 §5.3).
fn expires_minus_date(headers: &HeaderMap, date: Timestamp) -> Option<Duration> {
    let mut lines = headers.get_all(header::EXPIRES).iter();
    let expires = lines.next()?;
    let parsed = expires
        .to_str()
        .ok()
        .and_then(|e| httpdate::parse_http_date(e).ok())
        .filter(|_| lines.next().is_none());
    let Some(expires) = parsed else {
        return Some(Duration::ZERO);
    };
    Some(clamp_lifetime(Timestamp::from(expires).since(date)))
}

/// Headers owned by the hop (RFC 9110 §7.6.1) or consumed by the cache: never stored.
const NOT_STORED: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "surrogate-key",
    "cache-tag",
];

/// Removes hop-by-hop headers (including those listed in `Connection`) and the headers the
/// cache consumes itself.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_hop_headers(headers, &NOT_STORED);
}

/// The field names a message's `Connection` header lists (RFC 9110 §7.6.1), lower-cased.
pub(crate) fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Removes every header named in `Connection` (RFC 9110 §7.6.1), then each of `fixed`.
/// Shared by the stored responses here and the requests a proxy forwards.
pub fn remove_hop_headers(headers: &mut HeaderMap, fixed: &[&str]) {
    for name in connection_listed(headers)
        .iter()
        .map(String::as_str)
        .chain(fixed.iter().copied())
    {
        headers.remove(name);
    }
}

/// Purge tags of a response: `Surrogate-Key` (space-separated) and `Cache-Tag`
/// (comma-separated).
pub(crate) fn tags(headers: &HeaderMap) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for (name, sep) in [("surrogate-key", ' '), ("cache-tag", ',')] {
        for value in headers.get_all(name) {
            if let Ok(v) = value.to_str() {
                tags.extend(
                    v.split(sep)
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned),
                );
            }
        }
    }
    tags.sort();
    tags.dedup();
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Windows = Windows {
        ttl: Duration::from_secs(60),
        stale: Duration::from_secs(30),
        stale_if_error: Duration::from_secs(600),
    };

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in list {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        map
    }

    /// Sun, 06 Nov 1994 08:49:37 GMT: the tests' "now".
    const NOW: Timestamp = Timestamp(784_111_777_000);

    fn store(fresh: u64, stale: u64, sie: u64, age: u64) -> Classification {
        Classification::Store {
            fresh_for: Duration::from_secs(fresh),
            stale_for: Duration::from_secs(stale),
            stale_if_error_for: Duration::from_secs(sie),
            age: Duration::from_secs(age),
        }
    }

    #[test]
    fn classification_table() {
        let lang: [HeaderName; 1] = [header::ACCEPT_LANGUAGE];
        type Case = (u16, Vec<(&'static str, &'static str)>, Classification);
        let cases: Vec<Case> = vec![
            (200, vec![], store(60, 30, 600, 0)),
            (
                200,
                vec![("cache-control", "max-age=10")],
                store(10, 30, 600, 0),
            ),
            (
                200,
                vec![("cache-control", "max-age=10, s-maxage=99")],
                store(99, 0, 0, 0),
            ),
            (
                200,
                vec![("cache-control", "max-age=100"), ("age", "30")],
                store(100, 30, 600, 30),
            ),
            (
                200,
                vec![("cache-control", "max-age=5, must-revalidate")],
                store(5, 0, 0, 0),
            ),
            // With a validator, kept past its freshness for the longer of the route's windows,
            // to be revalidated only (decide.rs).
            (
                200,
                vec![
                    ("cache-control", "max-age=5, must-revalidate"),
                    ("etag", "\"a\""),
                ],
                store(5, 600, 0, 0),
            ),
            (
                200,
                vec![
                    ("cache-control", "s-maxage=5"),
                    ("last-modified", "Thu, 01 Jan 2026 00:00:00 GMT"),
                ],
                store(5, 600, 0, 0),
            ),
            (
                200,
                vec![(
                    "cache-control",
                    "max-age=5, stale-while-revalidate=7, stale-if-error=9",
                )],
                store(5, 7, 9, 0),
            ),
            (200, vec![("expires", "0")], store(0, 30, 600, 0)),
            // Lifetimes beyond 2^31 s, or beyond u64, are 2^31 s (RFC 9111 §1.2.2).
            (
                200,
                vec![("cache-control", "max-age=100000000000000")],
                store(1 << 31, 30, 600, 0),
            ),
            (
                200,
                vec![(
                    "cache-control",
                    "max-age=99999999999999999999999, stale-while-revalidate=100000000000000, \
                     stale-if-error=100000000000000",
                )],
                store(1 << 31, 1 << 31, 1 << 31, 0),
            ),
            (
                200,
                vec![
                    ("cache-control", "max-age=60"),
                    ("age", "99999999999999999999"),
                ],
                store(60, 30, 600, 1 << 31),
            ),
            // An invalid max-age leaves nothing fresh (RFC 9111 §4.2.1), never the default.
            (
                200,
                vec![("cache-control", "max-age=-5")],
                store(0, 30, 600, 0),
            ),
            (
                200,
                vec![("cache-control", "max-age='3600'")],
                store(0, 30, 600, 0),
            ),
            (
                200,
                vec![("cache-control", "max-age=1.5")],
                store(0, 30, 600, 0),
            ),
            // Quoted strings: a recipient takes a quoted value, and a comma inside one does
            // not end the directive.
            (
                200,
                vec![("cache-control", "max-age=\"30\"")],
                store(30, 30, 600, 0),
            ),
            (
                200,
                vec![("cache-control", "extension=\"max-age=3600\", max-age=1")],
                store(1, 30, 600, 0),
            ),
            (
                200,
                vec![("cache-control", "max-age=003600")],
                store(3600, 30, 600, 0),
            ),
            // The age is the Age header or the apparent age (now minus Date), the larger.
            (
                200,
                vec![
                    ("cache-control", "max-age=3600"),
                    ("date", "Sun, 06 Nov 1994 06:49:37 GMT"),
                ],
                store(3600, 30, 600, 7200),
            ),
            // An Age that is not one delta-seconds leaves nothing to trust.
            (
                200,
                vec![("cache-control", "max-age=3600"), ("age", "0,7200")],
                store(3600, 30, 600, 1 << 31),
            ),
            (
                200,
                vec![("cache-control", "max-age=3600"), ("age", "7200;foo=1")],
                store(3600, 30, 600, 1 << 31),
            ),
            (
                200,
                vec![
                    ("cache-control", "max-age=3600"),
                    ("age", "0"),
                    ("age", "0"),
                ],
                store(3600, 30, 600, 1 << 31),
            ),
            // Expires in the two obsolete date formats (RFC 9110 §5.6.7).
            (
                200,
                vec![
                    ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                    ("expires", "Sunday, 06-Nov-94 08:50:37 GMT"),
                ],
                store(60, 30, 600, 0),
            ),
            (
                200,
                vec![
                    ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                    ("expires", "Sun Nov  6 08:50:37 1994"),
                ],
                store(60, 30, 600, 0),
            ),
            (
                200,
                vec![
                    ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                    ("expires", "Sun, 06 Nov 1994 08:50:37 GMT"),
                ],
                store(60, 30, 600, 0),
            ),
            (
                200,
                vec![("cache-control", "private")],
                Classification::Pass(NoStore::Private),
            ),
            (
                200,
                vec![("cache-control", "no-store")],
                Classification::Pass(NoStore::NoStoreDirective),
            ),
            // no-cache: stored to be revalidated before every reuse, never served stale.
            (200, vec![("cache-control", "no-cache")], store(0, 0, 0, 0)),
            (
                200,
                vec![("cache-control", "no-cache"), ("etag", "\"v1\"")],
                store(0, 600, 0, 0),
            ),
            (
                200,
                vec![
                    ("cache-control", "max-age=60, no-cache=\"set-cookie\""),
                    ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ],
                store(0, 600, 0, 0),
            ),
            (
                200,
                vec![
                    (
                        "cache-control",
                        "no-cache, stale-while-revalidate=60, stale-if-error=60",
                    ),
                    ("etag", "\"v1\""),
                ],
                store(0, 600, 0, 0),
            ),
            (
                200,
                vec![("set-cookie", "a=b")],
                Classification::Pass(NoStore::SetCookie),
            ),
            (
                200,
                vec![("vary", "Cookie, Accept-Language")],
                store(60, 30, 600, 0),
            ),
            (
                200,
                vec![("vary", "Accept, *")],
                Classification::Pass(NoStore::Vary),
            ),
            (
                200,
                vec![("vary", "Accept-Encoding, Accept-Language")],
                store(60, 30, 600, 0),
            ),
            (404, vec![], store(60, 30, 600, 0)),
            (301, vec![], store(60, 30, 600, 0)),
            (302, vec![], Classification::Once),
            (
                302,
                vec![("cache-control", "max-age=3")],
                store(3, 30, 600, 0),
            ),
            (401, vec![], Classification::Once),
            (
                403,
                vec![("cache-control", "max-age=60")],
                Classification::Once,
            ),
            (400, vec![], Classification::Once),
            (413, vec![], Classification::Once),
            (206, vec![], Classification::Once),
            (
                500,
                vec![("cache-control", "max-age=60")],
                Classification::Retry,
            ),
            (503, vec![], Classification::Retry),
            (600, vec![], Classification::Retry),
            (
                999,
                vec![("cache-control", "max-age=60")],
                Classification::Retry,
            ),
            (101, vec![], Classification::Retry),
        ];
        for (status, list, want) in cases {
            let got = classify(
                StatusCode::from_u16(status).expect("status"),
                &headers(&list),
                &W,
                &Sharing {
                    key_headers: &lang,
                    store_set_cookie: false,
                },
                0.0,
                NOW,
                Duration::ZERO,
            );
            assert_eq!(got, want, "status {status} headers {list:?}");
        }
    }

    #[test]
    fn a_route_may_store_responses_that_set_cookies() {
        let h = headers(&[("set-cookie", "a=b"), ("cache-control", "max-age=60")]);
        let sharing = Sharing {
            key_headers: &[],
            store_set_cookie: true,
        };
        let got = classify(StatusCode::OK, &h, &W, &sharing, 0.0, NOW, Duration::ZERO);
        assert_eq!(got, store(60, 30, 600, 0));
    }

    #[test]
    fn an_age_the_response_carries_grows_by_the_response_delay() {
        let classify_after = |list: &[(&'static str, &'static str)], delay: u64| {
            let h = headers(list);
            let delay = Duration::from_secs(delay);
            classify(StatusCode::OK, &h, &W, &Sharing::default(), 0.0, NOW, delay)
        };
        let max_age = ("cache-control", "max-age=100");
        // RFC 9111 §4.2.3: corrected_age_value = age_value + response_delay.
        assert_eq!(
            classify_after(&[max_age, ("age", "10")], 5),
            store(100, 30, 600, 15)
        );
        assert_eq!(
            classify_after(&[max_age, ("age", "0")], 5),
            store(100, 30, 600, 5)
        );
        // Without `Age`, the origin made the response as it answered: a slow job ages nothing.
        assert_eq!(classify_after(&[max_age], 5), store(100, 30, 600, 0));
    }

    #[test]
    fn jitter_only_shortens_and_is_bounded() {
        let h = headers(&[("cache-control", "max-age=1000")]);
        let Classification::Store { fresh_for, .. } = classify(
            StatusCode::OK,
            &h,
            &W,
            &Sharing::default(),
            0.99,
            NOW,
            Duration::ZERO,
        ) else {
            panic!("stored");
        };
        assert!(fresh_for < Duration::from_secs(1000));
        assert!(fresh_for >= Duration::from_secs(940));
    }

    #[test]
    fn hop_by_hop_headers_are_not_stored() {
        let mut h = headers(&[
            ("connection", "close, x-private-hop"),
            ("x-private-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-authenticate", "Basic"),
            ("age", "3"),
            ("surrogate-key", "a b"),
            ("content-type", "text/plain"),
        ]);
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        // The origin's Age stays with the response: the front answers a hit with the age it
        // computes, and passes a response it does not keep on as the origin sent it.
        assert_eq!(names, vec!["age", "content-type"]);
    }

    #[test]
    fn tags_from_surrogate_key_and_cache_tag() {
        let h = headers(&[
            ("surrogate-key", "user-1  page"),
            ("cache-tag", "page, blog"),
        ]);
        assert_eq!(tags(&h), vec!["blog", "page", "user-1"]);
    }
}
