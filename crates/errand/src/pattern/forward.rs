//! Which of a client's request headers a job sends on (RFC 9110 §7.6, RFC 9111 §4): the
//! job's request is the claiming request as the origin should see it, so an app that
//! negotiates content or reads a custom header gets what the client sent.
//!
//! Left out, because the job is shared by every request of its signature and its result is
//! stored whole:
//! - hop-by-hop fields (`Connection` and the fields it names, `Keep-Alive`, `TE`,
//!   `Transfer-Encoding`, `Upgrade`, `Proxy-*`) and `Host` (the job sets its own);
//! - `Prefer`, which is addressed to errand;
//! - credentials (`Authorization`, `Cookie`), unless the route keys on them (then they are
//!   already the signature's own headers);
//! - conditionals and `Range` (`If-*`): the job fetches the whole representation, and errand
//!   answers conditionals and ranges from it;
//! - `Accept-Encoding`: the stored copy is the identity encoding, right for every client;
//! - the trace context (`traceparent`), which the job sets as its own span.

use http::header::{HeaderMap, HeaderName};

use super::freshness::connection_listed;
use super::signature::CREDENTIAL_HEADERS;

/// Fields never forwarded, beyond those `Connection` names.
const NOT_FORWARDED: [&str; 22] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
    "prefer",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
    "range",
    "accept-encoding",
    "traceparent",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// The headers of a claiming request that its job sends on, in the request's order, leaving
/// out `key_headers` (the job sends those from its signature) and every field above.
/// Values that are not text are left out too (a stored job's headers are text).
pub(crate) fn forwarded(headers: &HeaderMap, key_headers: &[HeaderName]) -> Vec<(String, String)> {
    let listed = connection_listed(headers);
    headers
        .iter()
        .filter(|(name, _)| !never_forwarded(name) && !listed.iter().any(|l| l == name.as_str()))
        .filter(|(name, _)| !key_headers.contains(name))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// Whether a job never sends `name` on, whatever the request (the fields above, and
/// credentials, which reach the origin only as key headers).
pub(crate) fn never_forwarded(name: &HeaderName) -> bool {
    let text = name.as_str();
    NOT_FORWARDED.contains(&text) || text.starts_with("proxy-") || CREDENTIAL_HEADERS.contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_static(name), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn a_job_forwards_what_the_origin_should_see() {
        let request = headers(&[
            ("accept", "text/html"),
            ("accept-language", "de, en;q=0.5"),
            ("user-agent", "curl/8"),
            ("x-custom", "one"),
            ("x-custom", "two"),
            ("via", "1.1 edge"),
            ("cache-control", "max-age=0"),
            ("host", "app.test"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "gone"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic xyz"),
            ("authorization", "Bearer secret"),
            ("cookie", "id=1"),
            ("prefer", "wait=10"),
            ("if-none-match", "\"v1\""),
            ("if-modified-since", "Thu, 01 Jan 2026 00:00:00 GMT"),
            ("range", "bytes=0-10"),
            ("if-range", "\"v1\""),
            ("accept-encoding", "gzip"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("x-forwarded-for", "10.0.0.1"),
        ]);
        let got = forwarded(&request, &[]);
        let want: Vec<(String, String)> = [
            ("accept", "text/html"),
            ("accept-language", "de, en;q=0.5"),
            ("user-agent", "curl/8"),
            ("x-custom", "one"),
            ("x-custom", "two"),
            ("via", "1.1 edge"),
            ("cache-control", "max-age=0"),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn keyed_headers_are_the_signatures_own() {
        let request = headers(&[("accept-language", "de"), ("authorization", "Bearer a")]);
        let keyed = [http::header::ACCEPT_LANGUAGE, http::header::AUTHORIZATION];
        assert!(forwarded(&request, &keyed).is_empty());
    }
}
