//! Conditional GETs answered from the store (RFC 9110 §13): `If-None-Match` first, then
//! `If-Modified-Since`.

use http::{HeaderMap, header};

/// Whether a stored response with `stored` headers satisfies the request's validators, so the
/// answer is `304 Not Modified`.
pub(super) fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(inm) = request.get(header::IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else { return false };
        // `*` matches any current representation, with or without an entity tag (RFC 9110
        // §13.1.2): the stored one is current.
        if inm.trim() == "*" {
            return true;
        }
        let Some(etag) = stored.get(header::ETAG).and_then(|e| e.to_str().ok()) else {
            return false;
        };
        // Weak comparison: W/"x" matches "x".
        let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
        let etag = strip(etag);
        return inm.split(',').any(|t| strip(t) == etag);
    }
    let since = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let modified = stored
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

/// Headers a `304` repeats from the stored response (RFC 9110 §15.4.5).
pub(super) const KEPT_ON_304: [header::HeaderName; 6] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn h(list: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in list {
            m.insert(*n, v.parse().expect("value"));
        }
        m
    }

    #[test]
    fn table() {
        let stored = h(&[
            ("etag", "\"v1\""),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        let cases = [
            (h(&[("if-none-match", "\"v1\"")]), true),
            (h(&[("if-none-match", "W/\"v1\"")]), true),
            (h(&[("if-none-match", "\"v0\", \"v1\"")]), true),
            (h(&[("if-none-match", "*")]), true),
            (h(&[("if-none-match", "\"v2\"")]), false),
            // If-None-Match wins over If-Modified-Since.
            (
                h(&[
                    ("if-none-match", "\"v2\""),
                    ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ]),
                false,
            ),
            (
                h(&[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")]),
                true,
            ),
            (
                h(&[("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT")]),
                false,
            ),
            (h(&[("if-modified-since", "garbage")]), false),
            (h(&[]), false),
        ];
        for (request, want) in cases {
            assert_eq!(not_modified(&request, &stored), want, "{request:?}");
        }
        assert!(!not_modified(&h(&[("if-none-match", "\"v1\"")]), &h(&[])));
        // `*` needs a current representation, not an entity tag.
        assert!(not_modified(&h(&[("if-none-match", "*")]), &h(&[])));
    }
}
