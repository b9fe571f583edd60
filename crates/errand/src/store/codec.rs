//! Compact encodings for stores that keep responses outside this process.
//!
//! A response's headers are stored as `name NUL value LF` records: neither byte can occur in
//! a valid header name or value, so no escaping is needed and decoding is a split. Its
//! selecting request fields (`Vary`, RFC 9111 §4.1) follow in the same records with the name
//! prefixed by `>`, a byte no header name holds; rows written before they were kept simply
//! have none.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::pattern::StoredResponse;

/// Marks a record that holds a selecting request field.
const SELECTING: u8 = b'>';

/// Encodes a response's headers and selecting fields for storage.
pub(crate) fn encode_headers(response: &StoredResponse) -> Vec<u8> {
    let mut out = Vec::with_capacity((response.headers.len() + response.selecting.len()) * 32);
    let records = response.headers.iter().map(|field| (None, field)).chain(
        response
            .selecting
            .iter()
            .map(|field| (Some(SELECTING), field)),
    );
    for (prefix, (name, value)) in records {
        out.extend(prefix);
        out.extend_from_slice(name.as_str().as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Decodes what [`encode_headers`] wrote: the headers and the selecting fields; `None` if
/// the bytes are not such a record list (a corrupt row).
pub(crate) fn decode_headers(bytes: &[u8]) -> Option<(HeaderMap, HeaderMap)> {
    let mut headers = HeaderMap::new();
    let mut selecting = HeaderMap::new();
    for record in bytes.split(|b| *b == b'\n').filter(|r| !r.is_empty()) {
        let (fields, record) = match record.split_first() {
            Some((&SELECTING, rest)) => (&mut selecting, rest),
            _ => (&mut headers, record),
        };
        let split = record.iter().position(|b| *b == 0)?;
        let name = HeaderName::from_bytes(&record[..split]).ok()?;
        let value = HeaderValue::from_bytes(&record[split + 1..]).ok()?;
        fields.append(name, value);
    }
    Some((headers, selecting))
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
        let mut selecting = HeaderMap::new();
        selecting.append("accept-language", HeaderValue::from_static("en"));
        selecting.append("accept-language", HeaderValue::from_static("de"));
        let response = StoredResponse {
            status: http::StatusCode::OK,
            headers: headers.clone(),
            body: bytes::Bytes::new(),
            selecting: selecting.clone(),
        };
        assert_eq!(
            decode_headers(&encode_headers(&response)),
            Some((headers, selecting))
        );
        let empty = (HeaderMap::new(), HeaderMap::new());
        assert_eq!(decode_headers(b""), Some(empty));
        assert_eq!(decode_headers(b"no separator\n"), None);
        assert_eq!(decode_headers(b">bad name\0v\n"), None);
    }
}
