//! The answers the front builds itself: a stored response (with `Age`, `304`), a `202`, a
//! `503`, a plain error. Every answer of a deferred route carries `Cache-Status`; errand's
//! own answers (`202`, `503`) also `Vary: Prefer`, since `Prefer` decides between them and
//! a wait. A stored response keeps the origin's `Vary` as it is: a client's `Prefer` never
//! changes it.

use std::fmt::Write as _;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::conditional::{KEPT_ON_304, not_modified};
use crate::body::{self, Body};
use crate::pattern::range::{self, Ranged};
use crate::pattern::{CacheStatus, StoredResponse};

/// Adds `Cache-Status`. Every answer passes here once, so this is also where it is counted.
pub(super) fn mark(headers: &mut HeaderMap, status: &CacheStatus) {
    crate::metrics::counters().request(status.phase);
    // Written once into room for the longest usual value, then taken as it is (no copy).
    let mut text = String::with_capacity(64);
    let _ = write!(text, "{status}");
    if let Ok(value) = HeaderValue::try_from(text) {
        headers.insert("cache-status", value);
    }
}

/// Adds `Prefer` to `Vary` (RFC 7240 §2: this answer depends on it), unless it is there
/// already or `Vary` is `*`.
fn vary_on_prefer(headers: &mut HeaderMap) {
    let varies_on_prefer = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("prefer") || t.trim() == "*");
    if !varies_on_prefer {
        headers.append(header::VARY, HeaderValue::from_static("Prefer"));
    }
}

/// A stored response as the answer: `Age` counted from when it was generated, `304` when the
/// request's validators match, the one byte range it asks for (`206`, or `416` past the
/// end), no body for `HEAD` (but the GET's `Content-Length`).
pub(super) fn stored(
    response: &StoredResponse,
    age_secs: Option<u64>,
    request: &HeaderMap,
    head: bool,
    status: &CacheStatus,
) -> Response<Body> {
    if response.status == StatusCode::OK && not_modified(request, &response.headers) {
        let mut answer = Response::new(body::empty());
        *answer.status_mut() = StatusCode::NOT_MODIFIED;
        let headers = answer.headers_mut();
        for name in KEPT_ON_304 {
            for value in response.headers.get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(age) = age_secs {
            headers.insert(header::AGE, HeaderValue::from(age));
        }
        mark(headers, status);
        return answer;
    }
    let len = response.body.len() as u64;
    let ranged = if response.status == StatusCode::OK {
        range::ranged(request, &response.headers, len)
    } else {
        Ranged::Whole
    };
    let (code, bytes, content_range) = match ranged {
        Ranged::Whole => (response.status, response.body.clone(), None),
        Ranged::Part { start, end } => {
            let part = usize::try_from(start).unwrap_or(usize::MAX)
                ..usize::try_from(end).map_or(usize::MAX, |e| e.saturating_add(1));
            let range = format!("bytes {start}-{end}/{len}");
            (
                StatusCode::PARTIAL_CONTENT,
                response.body.slice(part),
                Some(range),
            )
        }
        Ranged::Unsatisfiable => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            bytes::Bytes::new(),
            Some(format!("bytes */{len}")),
        ),
    };
    let length = bytes.len();
    let body = if head {
        body::empty()
    } else {
        body::full(bytes)
    };
    let mut answer = Response::new(body);
    *answer.status_mut() = code;
    *answer.headers_mut() = with_room(&response.headers, 4);
    let headers = answer.headers_mut();
    if let Some(age) = age_secs {
        headers.insert(header::AGE, HeaderValue::from(age));
    }
    if let Some(range) = content_range.and_then(|r| HeaderValue::try_from(r).ok()) {
        headers.insert(header::CONTENT_RANGE, range);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    mark(headers, status);
    answer
}

/// A copy of `stored` with room for `more` fields: a plain clone has none, and the fields
/// every hit adds (`Age`, `Cache-Status`) would make it grow, a reallocation and a rehash
/// per hit.
fn with_room(stored: &HeaderMap, more: usize) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(stored.len() + more);
    for (name, value) in stored {
        headers.append(name.clone(), value.clone());
    }
    headers
}

/// A generated answer with a JSON body (`202`, `503`) or a plain-text error (`400`, `414`, …).
pub(super) fn generated(
    code: StatusCode,
    content_type: &'static str,
    text: String,
    head: bool,
    status: Option<&CacheStatus>,
) -> Response<Body> {
    let len = text.len();
    let mut answer = Response::new(if head {
        body::empty()
    } else {
        body::full(text)
    });
    *answer.status_mut() = code;
    let headers = answer.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(status) = status {
        mark(headers, status);
        vary_on_prefer(headers);
    }
    answer
}

/// A plain-text error naming what was wrong with the request.
pub(super) fn bad_request(code: StatusCode, why: &str) -> Response<Body> {
    let mut answer = generated(
        code,
        "text/plain; charset=utf-8",
        format!("{why}\n"),
        false,
        None,
    );
    if code == StatusCode::BAD_REQUEST {
        // Framing errors leave the connection in an unknown state: do not reuse it.
        answer
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    answer
}

/// Sets `Retry-After` in whole seconds.
pub(super) fn retry_after(answer: &mut Response<Body>, secs: u64) {
    answer
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
}
