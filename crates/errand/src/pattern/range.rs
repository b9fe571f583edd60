//! Byte ranges served from a stored full response (RFC 9110 §14): one range per request,
//! `If-Range` honoured; several ranges, another unit or a malformed header get the whole
//! representation, as the RFC allows.

use http::header::{self, HeaderMap};

/// What to send for a request's `Range`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ranged {
    /// The whole representation (`200`).
    Whole,
    /// `206 Partial Content` with bytes `start..=end` of it.
    Part {
        /// First byte.
        start: u64,
        /// Last byte, included.
        end: u64,
    },
    /// `416 Range Not Satisfiable`: the range starts past the end.
    Unsatisfiable,
}

/// What to send of a stored representation of `len` bytes with `stored` headers, for a
/// request with `request` headers.
pub(crate) fn ranged(request: &HeaderMap, stored: &HeaderMap, len: u64) -> Ranged {
    let Some(range) = request.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ranged::Whole;
    };
    if let Some(condition) = request.get(header::IF_RANGE)
        && !if_range_holds(condition.to_str().unwrap_or(""), stored)
    {
        return Ranged::Whole;
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let number = |text: &str| {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // bytes=-N: the last N bytes.
        return match number(last) {
            Some(0) | None => Ranged::Whole,
            Some(_) if len == 0 => Ranged::Unsatisfiable,
            Some(suffix) => Ranged::Part {
                start: len.saturating_sub(suffix),
                end: len - 1,
            },
        };
    }
    let Some(start) = number(first) else {
        return Ranged::Whole;
    };
    let end = if last.is_empty() {
        None
    } else {
        match number(last) {
            Some(end) => Some(end),
            None => return Ranged::Whole,
        }
    };
    if start >= len {
        return Ranged::Unsatisfiable;
    }
    let end = end.map_or(len - 1, |end| end.min(len - 1));
    if end < start {
        return Ranged::Whole;
    }
    Ranged::Part { start, end }
}

/// `If-Range`: an entity tag must match the stored one strongly; a date must equal the
/// stored `Last-Modified` (RFC 9110 §13.1.5).
fn if_range_holds(condition: &str, stored: &HeaderMap) -> bool {
    let condition = condition.trim();
    if condition.starts_with('"') {
        return stored
            .get(header::ETAG)
            .and_then(|e| e.to_str().ok())
            .is_some_and(|etag| etag.trim() == condition);
    }
    if condition.starts_with("W/") {
        return false;
    }
    stored
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .zip(httpdate::parse_http_date(condition).ok())
        .is_some_and(|(modified, date)| httpdate::parse_http_date(modified).ok() == Some(date))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.append(*n, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn single_ranges_from_a_stored_response() {
        let stored = map(&[
            ("etag", "\"v1\""),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        let part = |start, end| Ranged::Part { start, end };
        // (request headers, what is sent of 100 bytes)
        let cases: Vec<(Vec<(&'static str, &'static str)>, Ranged)> = vec![
            (vec![], Ranged::Whole),
            (vec![("range", "bytes=0-9")], part(0, 9)),
            (vec![("range", "bytes=90-")], part(90, 99)),
            (vec![("range", "bytes=-10")], part(90, 99)),
            (vec![("range", "bytes=-500")], part(0, 99)),
            (vec![("range", "bytes=50-500")], part(50, 99)),
            (vec![("range", "bytes=100-")], Ranged::Unsatisfiable),
            (vec![("range", "bytes=9-0")], Ranged::Whole),
            (vec![("range", "bytes=0-1,5-6")], Ranged::Whole),
            (vec![("range", "items=0-1")], Ranged::Whole),
            (vec![("range", "bytes=abc")], Ranged::Whole),
            (
                vec![("range", "bytes=0-9"), ("if-range", "\"v1\"")],
                part(0, 9),
            ),
            (
                vec![("range", "bytes=0-9"), ("if-range", "\"v0\"")],
                Ranged::Whole,
            ),
            (
                vec![("range", "bytes=0-9"), ("if-range", "W/\"v1\"")],
                Ranged::Whole,
            ),
            (
                vec![
                    ("range", "bytes=0-9"),
                    ("if-range", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ],
                part(0, 9),
            ),
            (
                vec![
                    ("range", "bytes=0-9"),
                    ("if-range", "Mon, 07 Nov 1994 08:49:37 GMT"),
                ],
                Ranged::Whole,
            ),
        ];
        for (request, want) in cases {
            assert_eq!(ranged(&map(&request), &stored, 100), want, "{request:?}");
        }
        assert_eq!(
            ranged(&map(&[("range", "bytes=0-0")]), &stored, 0),
            Ranged::Unsatisfiable
        );
    }
}
