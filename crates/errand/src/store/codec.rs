//! Compact encodings for stores that keep responses outside this process.
//!
//! Headers are stored as `name NUL value LF` records: neither byte can occur in a valid
//! header name or value, so no escaping is needed and decoding is a split.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Encodes headers for storage.
pub(crate) fn encode_headers(headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers.len() * 32);
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Decodes headers written by [`encode_headers`]; `None` if the bytes are not such a record
/// list (a corrupt row).
pub(crate) fn decode_headers(bytes: &[u8]) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    for record in bytes.split(|b| *b == b'\n').filter(|r| !r.is_empty()) {
        let split = record.iter().position(|b| *b == 0)?;
        let name = HeaderName::from_bytes(&record[..split]).ok()?;
        let value = HeaderValue::from_bytes(&record[split + 1..]).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut headers = HeaderMap::new();
        headers.append("content-type", HeaderValue::from_static("text/plain"));
        headers.append("set-thing", HeaderValue::from_static("a"));
        headers.append("set-thing", HeaderValue::from_static("b; c=\"d\""));
        headers.append("x-empty", HeaderValue::from_static(""));
        headers.append(
            "x-latin",
            HeaderValue::from_bytes(b"caf\xe9").expect("obs-text"),
        );
        assert_eq!(decode_headers(&encode_headers(&headers)), Some(headers));
        assert_eq!(decode_headers(b""), Some(HeaderMap::new()));
        assert_eq!(decode_headers(b"no separator\n"), None);
    }
}
