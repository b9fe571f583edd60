//! Revalidation (RFC 9111 §4.3): a job for a signature whose stored response has validators
//! asks the origin whether it changed (`If-None-Match`, `If-Modified-Since`); a `304 Not
//! Modified` then freshens the stored response instead of sending it again.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::entry::StoredResponse;

/// The conditional headers that ask whether `stored` is still current: `If-None-Match` with
/// its entity tag, `If-Modified-Since` with its `Last-Modified` (RFC 9110 §13.1). Empty when
/// it has neither, or carries several of one.
pub(crate) fn validators(stored: &StoredResponse) -> Vec<(String, String)> {
    let single = |name: HeaderName| {
        let mut values = stored.headers.get_all(name).iter();
        let first = values.next()?.to_str().ok()?.to_owned();
        values.next().is_none().then_some(first)
    };
    let mut conditions = Vec::new();
    if let Some(etag) = single(header::ETAG) {
        conditions.push(("if-none-match".to_owned(), etag));
    }
    if let Some(modified) = single(header::LAST_MODIFIED) {
        conditions.push(("if-modified-since".to_owned(), modified));
    }
    conditions
}

/// Fields a `304` does not update in the stored response: those that describe the stored
/// body itself (its framing, encoding, digest and identity), which the `304` does not carry
/// (RFC 9111 §3.2: the stored response depends on them).
const KEPT_FROM_STORED: [&str; 6] = [
    "content-length",
    "transfer-encoding",
    "content-range",
    "content-encoding",
    "content-md5",
    "etag",
];

/// The stored response freshened by a `304 Not Modified` with `headers` (RFC 9111 §4.3.4):
/// every field the `304` carries replaces the stored field of that name; the status and the
/// body stay as stored.
pub(crate) fn freshen(stored: &StoredResponse, headers: &HeaderMap) -> StoredResponse {
    let mut merged = stored.headers.clone();
    for name in headers.keys() {
        if KEPT_FROM_STORED.contains(&name.as_str()) {
            continue;
        }
        merged.remove(name);
        for value in headers.get_all(name) {
            merged.append(name.clone(), HeaderValue::clone(value));
        }
    }
    StoredResponse {
        status: stored.status,
        headers: merged,
        body: stored.body.clone(),
        selecting: stored.selecting.clone(),
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    fn stored(pairs: &[(&'static str, &'static str)]) -> StoredResponse {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        StoredResponse {
            status: StatusCode::OK,
            headers,
            body: "body".into(),
            selecting: HeaderMap::new(),
        }
    }

    #[test]
    fn a_stored_response_is_asked_about_by_its_validators() {
        let both = stored(&[
            ("etag", "\"v1\""),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        assert_eq!(
            validators(&both),
            [
                ("if-none-match".to_owned(), "\"v1\"".to_owned()),
                (
                    "if-modified-since".to_owned(),
                    "Sun, 06 Nov 1994 08:49:37 GMT".to_owned()
                ),
            ]
        );
        assert!(validators(&stored(&[("content-type", "text/plain")])).is_empty());
        assert!(validators(&stored(&[("etag", "\"a\""), ("etag", "\"b\"")])).is_empty());
    }

    #[test]
    fn a_304_replaces_the_fields_it_carries_and_keeps_the_body() {
        let old = stored(&[
            ("etag", "\"v1\""),
            ("cache-control", "max-age=1"),
            ("x-kept", "yes"),
            ("x-test", "old"),
            ("x-test", "older"),
            ("content-length", "4"),
        ]);
        let mut not_modified = HeaderMap::new();
        for (name, value) in [
            ("cache-control", "max-age=3600"),
            ("x-test", "new"),
            ("content-length", "0"),
        ] {
            not_modified.append(name, HeaderValue::from_static(value));
        }
        let fresh = freshen(&old, &not_modified);
        assert_eq!(fresh.status, StatusCode::OK);
        assert_eq!(fresh.body, "body");
        assert_eq!(fresh.headers["cache-control"], "max-age=3600");
        let tests: Vec<_> = fresh.headers.get_all("x-test").iter().collect();
        assert_eq!(tests, ["new"]);
        assert_eq!(fresh.headers["x-kept"], "yes");
        assert_eq!(fresh.headers["etag"], "\"v1\"");
        assert_eq!(
            fresh.headers["content-length"], "4",
            "the body's own length stays"
        );
        let mut other_tag = HeaderMap::new();
        other_tag.insert("etag", HeaderValue::from_static("\"v2\""));
        other_tag.insert("content-encoding", HeaderValue::from_static("gzip"));
        let kept = freshen(&old, &other_tag);
        assert_eq!(
            kept.headers["etag"], "\"v1\"",
            "the stored body's identity stays"
        );
        assert!(kept.headers.get("content-encoding").is_none());
    }
}
