//! Which requests the front refuses before anything else looks at them: ambiguous framing,
//! codings it cannot decode, a doubled `Host`. Pure: a function of the request's headers.
//!
//! Each refusal is a client error with its own status, never something blamed on the
//! upstream:
//!
//! | request | answer | why |
//! |---|---|---|
//! | two `Host` lines | `400` | RFC 9112 §3.2; a front-end that reads the other one could be made to cache one site's response under another's name |
//! | `Content-Length` and `Transfer-Encoding` | `400` | RFC 9112 §6.3; the classic request-smuggling probe |
//! | a transfer coding other than `chunked` | `501` | RFC 9112 §6.1: errand cannot decode it, and forwarding the body with the coding stripped would change it |

use http::StatusCode;
use http::header::{self, HeaderMap};

/// Why a request is refused before it is planned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Refusal {
    /// More than one `Host` header line.
    #[error("the request has {0} Host header lines; exactly one is allowed")]
    DuplicateHost(usize),
    /// Both framing headers.
    #[error("Content-Length together with Transfer-Encoding is not allowed")]
    LengthAndChunked,
    /// A transfer coding errand does not implement.
    #[error("Transfer-Encoding {0:?} is not implemented; only chunked is")]
    UnknownCoding(String),
}

impl Refusal {
    /// The status the front answers with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::UnknownCoding(_) => StatusCode::NOT_IMPLEMENTED,
            Self::DuplicateHost(_) | Self::LengthAndChunked => StatusCode::BAD_REQUEST,
        }
    }
}

/// Checks a request's framing headers and `Host`; `Ok` when the request may go on.
///
/// # Errors
///
/// The [`Refusal`] of the first rule the request breaks, with the status to answer.
pub(crate) fn check_request(headers: &HeaderMap) -> Result<(), Refusal> {
    let hosts = headers.get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(Refusal::DuplicateHost(hosts));
    }
    if !headers.contains_key(header::TRANSFER_ENCODING) {
        return Ok(());
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        return Err(Refusal::LengthAndChunked);
    }
    match unknown_coding(headers) {
        Some(coding) => Err(Refusal::UnknownCoding(coding)),
        None => Ok(()),
    }
}

/// The first transfer coding in `Transfer-Encoding` other than `chunked`, if any (a value
/// that is not text counts as unknown). The same test applies to a response from upstream.
pub fn unknown_coding(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let Ok(text) = value.to_str() else {
            return Some(String::from_utf8_lossy(value.as_bytes()).into_owned());
        };
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            // A coding may carry parameters (`chunked;x=1` is not chunked).
            if !coding.eq_ignore_ascii_case("chunked") {
                return Some(coding.to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        map
    }

    /// Request headers, and what the check says of them.
    type Case<'a> = (&'a [(&'a str, &'a str)], Result<(), Refusal>);

    #[test]
    fn table() {
        use Refusal::*;
        let cases: &[Case<'_>] = &[
            (&[("host", "a")], Ok(())),
            (&[], Ok(())),
            (&[("host", "a"), ("host", "b")], Err(DuplicateHost(2))),
            (&[("host", "a"), ("host", "a")], Err(DuplicateHost(2))),
            (&[("transfer-encoding", "chunked")], Ok(())),
            (&[("transfer-encoding", "Chunked")], Ok(())),
            (
                &[("transfer-encoding", "chunked"), ("content-length", "3")],
                Err(LengthAndChunked),
            ),
            (
                &[("transfer-encoding", "gzip, chunked")],
                Err(UnknownCoding("gzip".into())),
            ),
            (
                &[
                    ("transfer-encoding", "x-custom"),
                    ("transfer-encoding", "chunked"),
                ],
                Err(UnknownCoding("x-custom".into())),
            ),
            (
                &[("transfer-encoding", "chunked;x=1")],
                Err(UnknownCoding("chunked;x=1".into())),
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(&check_request(&headers(pairs)), want, "{pairs:?}");
        }
        assert_eq!(
            UnknownCoding("gzip".into()).status(),
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(DuplicateHost(2).status(), StatusCode::BAD_REQUEST);
    }
}
