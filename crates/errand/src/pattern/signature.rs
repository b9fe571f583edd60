//! The request signature: what makes two requests "the same request".
//!
//! The canonical form is, one field per line:
//!
//! ```text
//! GET                                  (HEAD is folded into GET: they share one job)
//! http://example.com/a/b?x=1&y=2&y=1   (scheme + lower-cased host, normalized path, query sorted by name)
//! accept-language: en                  (each key header the route declares, in declared order)
//! authorization: #sha256:9f86d0…       (a credential header is keyed by its hash, never its value)
//! ```
//!
//! The stored [`Key`] is a fixed-length hash of that text. The canonical request itself
//! ([`RequestRecord`]) travels in the job so a worker can rebuild and replay it; nothing else of
//! the client's request (cookies, `X-Forwarded-*`, …) reaches the worker unless it is keyed.

use std::fmt::{self, Write as _};

use http::{HeaderMap, HeaderName, Method, Uri};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::trace::TraceParent;

/// Headers whose values are secrets: keyed by hash, and their presence makes a request private
/// unless the route keys on them.
pub(crate) const CREDENTIAL_HEADERS: [HeaderName; 3] = [
    http::header::AUTHORIZATION,
    http::header::COOKIE,
    http::header::PROXY_AUTHORIZATION,
];

/// The fixed-length key a signature is stored under: 128 bits of SHA-256 of the canonical
/// form, shown and serialized as 32 lower-case hex digits. `Copy`: the hit path moves it
/// around without allocating.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; 16]);

impl Key {
    /// The key as 32 lower-case hex digits (the form stores and operators see).
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The key's 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Reads a key back from its hex form (from a store, or typed by an operator); `None`
    /// unless it is exactly 32 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(bytes))
    }

    pub(crate) fn of(canonical: &str) -> Self {
        let digest = Sha256::digest(canonical.as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(bytes)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a 32-hex-digit key")))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The canonical request a worker replays: a `GET` of [`uri`](Self::uri) with exactly the
/// route's key headers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Absolute canonical URI: `scheme://host[:port]/normalized/path?sorted=query`.
    pub uri: String,
    /// The keyed headers with their real values (credential values included: the worker must
    /// send them to get the right response; they live only as long as the job).
    pub headers: Vec<(String, String)>,
    /// The claiming request's other end-to-end headers, sent on by the job (not part of the
    /// signature: whichever request claims the job lends it its headers; see
    /// `pattern/forward.rs` for what is left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwarded: Vec<(String, String)>,
    /// The conditional headers that ask whether the stored response the job would replace
    /// is still current (`If-None-Match`, `If-Modified-Since`); empty when there is none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validators: Vec<(String, String)>,
    /// The trace context of the client request that created the job (not part of the
    /// signature: whichever request claims the job lends it its trace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceParent>,
}

impl RequestRecord {
    /// The path and query part of [`uri`](Self::uri).
    pub fn path_and_query(&self) -> &str {
        let after_scheme = self
            .uri
            .split_once("://")
            .map_or(self.uri.as_str(), |(_, r)| r);
        after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
    }

    /// The `host[:port]` part of [`uri`](Self::uri).
    pub fn authority(&self) -> &str {
        let after_scheme = self
            .uri
            .split_once("://")
            .map_or(self.uri.as_str(), |(_, r)| r);
        after_scheme
            .find('/')
            .map_or(after_scheme, |i| &after_scheme[..i])
    }
}

/// A request's signature: its [`Key`] plus the [`RequestRecord`] to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The stored key (hash of the canonical form).
    pub key: Key,
    /// The canonical request.
    pub request: RequestRecord,
}

/// Why a request has no signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// Neither the URI nor a `Host` header names the site.
    #[error("the request names no host (no Host header and no absolute URI)")]
    MissingHost,
    /// The `Host` header is not a valid authority.
    #[error("the Host header is not a valid host name")]
    InvalidHost,
    /// A key header's value is not visible ASCII.
    #[error("the key header {0} has a value that is not visible ASCII")]
    InvalidHeader(String),
}

impl Signature {
    /// Computes the signature of a `GET`/`HEAD` request.
    ///
    /// `scheme` is used when the URI is not absolute (the usual origin-form of HTTP/1.1);
    /// `key_headers` are the headers the route declares, in order.
    ///
    /// # Errors
    ///
    /// [`SignatureError`] when the request cannot name one resource: no host, a target that
    /// is not a path, a key header that is not text.
    pub fn of(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        scheme: &str,
        key_headers: &[HeaderName],
    ) -> Result<Self, SignatureError> {
        let scheme = uri.scheme_str().unwrap_or(scheme);
        let scheme = if scheme.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(scheme.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(scheme)
        };
        let authority = request_authority(uri, headers, &scheme)?;
        let path = route_path(uri.path());
        let query = uri.query().map(normalize_query).unwrap_or_default();
        let mut canonical_uri =
            String::with_capacity(scheme.len() + authority.len() + path.len() + 4);
        canonical_uri.push_str(&scheme);
        canonical_uri.push_str("://");
        canonical_uri.push_str(&authority);
        canonical_uri.push_str(&path);
        if !query.is_empty() {
            canonical_uri.push('?');
            canonical_uri.push_str(&query);
        }

        // GET and HEAD share one entry: a HEAD is answered from the GET's stored response.
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        let mut canonical = String::with_capacity(canonical_uri.len() + 16);
        canonical.push_str(method.as_str());
        canonical.push('\n');
        canonical.push_str(&canonical_uri);
        canonical.push('\n');
        let mut record_headers = Vec::with_capacity(key_headers.len());
        for name in key_headers {
            let values: Vec<&str> = headers
                .get_all(name)
                .iter()
                .map(|v| {
                    v.to_str()
                        .map_err(|_| SignatureError::InvalidHeader(name.to_string()))
                })
                .collect::<Result<_, _>>()?;
            if values.is_empty() {
                continue;
            }
            let value = values.join(", ");
            canonical.push_str(name.as_str());
            canonical.push_str(": ");
            if CREDENTIAL_HEADERS.contains(name) {
                let digest = Sha256::digest(value.as_bytes());
                canonical.push_str("#sha256:");
                canonical.push_str(&hex(&digest));
            } else {
                canonical.push_str(&value);
            }
            canonical.push('\n');
            record_headers.push((name.as_str().to_owned(), value));
        }
        Ok(Self {
            key: Key::of(&canonical),
            request: RequestRecord {
                uri: canonical_uri,
                headers: record_headers,
                forwarded: Vec::new(),
                validators: Vec::new(),
                trace: None,
            },
        })
    }
}

/// The canonical URI of a request without its key headers, as used to find every stored
/// variant of one URI (invalidation after an unsafe method, purge by URI).
///
/// # Errors
///
/// As [`Signature::of`].
pub(crate) fn canonical_uri(
    uri: &Uri,
    headers: &HeaderMap,
    scheme: &str,
) -> Result<String, SignatureError> {
    Signature::of(&Method::GET, uri, headers, scheme, &[]).map(|s| s.request.uri)
}

/// The site a request names, as its signature has it: the URI's authority, else the `Host`
/// header, lower-cased, without a trailing dot or the scheme's default port. The front
/// checks `allowed_hosts` against this, for every method and route.
///
/// # Errors
///
/// [`SignatureError`] when the request names no host, or an invalid one.
pub(crate) fn request_authority(
    uri: &Uri,
    headers: &HeaderMap,
    scheme: &str,
) -> Result<String, SignatureError> {
    let host = match uri.authority() {
        Some(a) => a.as_str(),
        None => headers
            .get(http::header::HOST)
            .ok_or(SignatureError::MissingHost)?
            .to_str()
            .map_err(|_| SignatureError::InvalidHost)?,
    };
    normalize_authority(host, scheme)
}

/// The path as the signature has it (one percent-encoding spelling, no dot segments). The
/// route, and so every route setting, is chosen from this: `/%6cive/x` and `/x/../live/x`
/// fall under the route of `/live/x`, as their signature does.
pub(crate) fn route_path(path: &str) -> std::borrow::Cow<'_, str> {
    if is_plain(path) {
        std::borrow::Cow::Borrowed(path)
    } else {
        std::borrow::Cow::Owned(normalize_path(path))
    }
}

/// Whether a path is canonical already (the usual case): plain characters and no dot
/// segments.
fn is_plain(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_~/!$&'()*+,;=:@".contains(&b) || b == b'.')
        && !path.split('/').any(|s| s == "." || s == "..")
}

fn normalize_authority(host: &str, scheme: &str) -> Result<String, SignatureError> {
    // The usual `Host` (a DNS name or IPv4 address, maybe a port) is read here; anything
    // else (an IPv6 literal, percent-encoding, sub-delimiters, a refusal) by `http`'s parser.
    let (name, port) = match plain_authority(host) {
        Some(parts) => parts,
        None => {
            let authority: http::uri::Authority =
                host.parse().map_err(|_| SignatureError::InvalidHost)?;
            // A port that is no port number (`:65536`) is refused, not taken as the default.
            let bad_port = authority
                .as_str()
                .rsplit_once(':')
                .is_some_and(|(_, port)| {
                    !port.is_empty() && !port.contains(']') && port.parse::<u16>().is_err()
                });
            if authority.as_str().contains('@') || bad_port {
                return Err(SignatureError::InvalidHost);
            }
            let name = authority.host().to_owned();
            return finish_authority(&name, authority.port_u16(), scheme);
        }
    };
    finish_authority(name, port, scheme)
}

/// `host[:port]` when the host is letters, digits, `-` and `.` only and the port is 1–5
/// digits below 65536: a subset of what `http`'s parser accepts, read without allocating.
fn plain_authority(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (name, Some(port.parse::<u16>().ok()?))
        }
        None => (host, None),
    };
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        .then_some((name, port))
}

/// The authority as the signature has it: `name` lower-cased without a trailing dot, and the
/// port unless it is the scheme's default.
fn finish_authority(name: &str, port: Option<u16>, scheme: &str) -> Result<String, SignatureError> {
    let name = name.trim_end_matches('.');
    if name.is_empty() {
        return Err(SignatureError::InvalidHost);
    }
    let default_port = match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    // One allocation, with room for a port.
    let mut out = String::with_capacity(name.len() + 6);
    out.push_str(name);
    out.make_ascii_lowercase();
    if let Some(port) = port
        && Some(port) != default_port
    {
        let _ = write!(out, ":{port}");
    }
    Ok(out)
}

/// Raw characters that may stay as they are: unreserved, sub-delimiters, `:`, `@`, `/`, `?`.
/// Anything else (spaces, non-ASCII, quotes…) is percent-encoded.
const ENCODE_RAW: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@')
    .remove(b'/')
    .remove(b'?');

/// Re-encodes one component so that equivalent spellings become one (RFC 3986 §6.2.2): an
/// escaped unreserved character is decoded (`%7e` → `~`), other escapes get upper-case hex,
/// raw characters outside the allowed set are escaped. An escaped delimiter (`%2F`, `%26`,
/// `%2B`) stays escaped: it does not mean the same as the raw one.
fn normalize_component(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('%') {
        out.extend(utf8_percent_encode(&rest[..i], ENCODE_RAW));
        let escaped = rest
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(byte) if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) => {
                out.push(byte as char);
            }
            Some(byte) => out.push_str(&format!("%{byte:02X}")),
            // A stray '%' is data: escape it so the canonical form is unambiguous.
            None => out.push_str("%25"),
        }
        rest = &rest[i + if escaped.is_some() { 3 } else { 1 }..];
    }
    out.extend(utf8_percent_encode(rest, ENCODE_RAW));
    out
}

/// Normalizes a path: one percent-encoding spelling, dot segments removed (RFC 3986 §5.2.4),
/// empty path as `/`. Repeated slashes are kept: many applications give them meaning.
/// The slow path of [`route_path`], for a path that is not plain.
fn normalize_path(path: &str) -> String {
    let encoded = normalize_component(path);
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = encoded.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

/// Sorts query parameters by name (stable: repeated names keep their order) and normalizes
/// their encoding; empty pieces (`a=1&&b=2`) are dropped.
fn normalize_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, Option<String>)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) => (normalize_component(name), Some(normalize_component(value))),
            None => (normalize_component(pair), None),
        })
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(query.len());
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        if let Some(value) = value {
            out.push('=');
            out.push_str(value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(method: &str, uri: &str, headers: &[(&str, &str)], keys: &[&str]) -> Signature {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        let keys: Vec<HeaderName> = keys.iter().map(|k| k.parse().expect("key")).collect();
        Signature::of(
            &method.parse().expect("method"),
            &uri.parse().expect("uri"),
            &map,
            "http",
            &keys,
        )
        .expect("signature")
    }

    fn host(h: &str) -> [(&str, &str); 1] {
        [("host", h)]
    }

    #[test]
    fn canonical_uri_table() {
        let cases = [
            ("/", "http://a.test/"),
            ("/a/./b/../c", "http://a.test/a/c"),
            ("/a/b/..", "http://a.test/a/"),
            ("/../../x", "http://a.test/x"),
            ("/%7euser/%7E", "http://a.test/~user/~"),
            ("/a%2fb", "http://a.test/a%2Fb"),
            ("/caf%C3%A9", "http://a.test/caf%C3%A9"),
            ("/café", "http://a.test/caf%C3%A9"),
            ("/a//b", "http://a.test/a//b"),
            ("/p?b=2&a=1", "http://a.test/p?a=1&b=2"),
            ("/p?b=2&a=1&b=1", "http://a.test/p?a=1&b=2&b=1"),
            ("/p?x&&y=", "http://a.test/p?x&y="),
            ("/p?q=a%26b&r=%7e", "http://a.test/p?q=a%26b&r=~"),
            ("/p?q=a+b&r=a%2bb", "http://a.test/p?q=a+b&r=a%2Bb"),
            ("/p?", "http://a.test/p"),
            ("/bad%zz", "http://a.test/bad%25zz"),
        ];
        for (path, want) in cases {
            assert_eq!(
                sig("GET", path, &host("a.test"), &[]).request.uri,
                want,
                "path {path}"
            );
        }
    }

    #[test]
    fn routes_are_chosen_on_the_normalized_path() {
        let cases = [
            ("/live/x", "/live/x", true),
            ("/%6cive/x", "/live/x", false),
            ("/%6C%69ve/x", "/live/x", false),
            ("/x/../live/x", "/live/x", false),
            ("/live/./x", "/live/x", false),
            ("/live%2Fx", "/live%2Fx", false),
        ];
        for (path, want, borrowed) in cases {
            let got = route_path(path);
            assert_eq!(got, want, "{path}");
            assert_eq!(
                matches!(got, std::borrow::Cow::Borrowed(_)),
                borrowed,
                "{path}"
            );
        }
    }

    #[test]
    fn host_is_normalized_and_part_of_the_key() {
        let a = sig("GET", "/", &host("Example.COM:80"), &[]);
        let b = sig("GET", "/", &host("example.com"), &[]);
        let c = sig("GET", "/", &host("example.com:8080"), &[]);
        let d = sig("GET", "/", &host("other.example"), &[]);
        assert_eq!(a.key, b.key);
        assert_eq!(c.request.uri, "http://example.com:8080/");
        assert_ne!(a.key, c.key);
        assert_ne!(a.key, d.key);
    }

    #[test]
    fn absolute_uri_wins_over_host_header() {
        let s = sig("GET", "https://x.test:443/a", &host("y.test"), &[]);
        assert_eq!(s.request.uri, "https://x.test/a");
    }

    #[test]
    fn get_and_head_share_a_key_other_methods_do_not() {
        let get = sig("GET", "/a", &host("a.test"), &[]);
        let head = sig("HEAD", "/a", &host("a.test"), &[]);
        let post = sig("POST", "/a", &host("a.test"), &[]);
        assert_eq!(get.key, head.key);
        assert_ne!(get.key, post.key);
    }

    #[test]
    fn only_declared_key_headers_count() {
        let plain = sig("GET", "/", &host("a.test"), &["accept-language"]);
        let en = sig(
            "GET",
            "/",
            &[
                ("host", "a.test"),
                ("accept-language", "en"),
                ("x-forwarded-for", "1.2.3.4"),
            ],
            &["accept-language"],
        );
        let fr = sig(
            "GET",
            "/",
            &[("host", "a.test"), ("accept-language", "fr")],
            &["accept-language"],
        );
        let en_other_ip = sig(
            "GET",
            "/",
            &[
                ("host", "a.test"),
                ("accept-language", "en"),
                ("x-forwarded-for", "9.9.9.9"),
            ],
            &["accept-language"],
        );
        assert_ne!(plain.key, en.key);
        assert_ne!(en.key, fr.key);
        assert_eq!(en.key, en_other_ip.key);
        assert_eq!(
            en.request.headers,
            vec![("accept-language".into(), "en".into())]
        );
    }

    #[test]
    fn credentials_are_keyed_by_hash_not_value() {
        let alice = sig(
            "GET",
            "/me",
            &[("host", "a.test"), ("authorization", "Bearer alice")],
            &["authorization"],
        );
        let bob = sig(
            "GET",
            "/me",
            &[("host", "a.test"), ("authorization", "Bearer bob")],
            &["authorization"],
        );
        assert_ne!(alice.key, bob.key);
        // The key is a hash of a canonical form that itself only holds a hash of the secret.
        assert!(!alice.key.to_hex().contains("alice"));
        assert_eq!(alice.key.to_hex().len(), 32);
        // The job must be able to replay the request, so the record keeps the real value.
        assert_eq!(alice.request.headers[0].1, "Bearer alice");
    }

    #[test]
    fn missing_or_bad_host_is_an_error() {
        let none = Signature::of(
            &Method::GET,
            &"/".parse().expect("uri"),
            &HeaderMap::new(),
            "http",
            &[],
        );
        assert_eq!(none, Err(SignatureError::MissingHost));
        let mut bad = HeaderMap::new();
        bad.insert("host", "user@evil.test".parse().expect("value"));
        let r = Signature::of(&Method::GET, &"/".parse().expect("uri"), &bad, "http", &[]);
        assert_eq!(r, Err(SignatureError::InvalidHost));
    }

    #[test]
    fn authorities_read_without_the_parser_agree_with_it() {
        // (Host, scheme, the signature's authority or None when refused.)
        let cases = [
            ("Example.TEST", "http", Some("example.test")),
            ("example.test.", "http", Some("example.test")),
            ("example.test:80", "http", Some("example.test")),
            ("example.test:443", "http", Some("example.test:443")),
            ("example.test:443", "https", Some("example.test")),
            ("example.test:080", "http", Some("example.test")),
            ("127.0.0.1:8100", "http", Some("127.0.0.1:8100")),
            ("[::1]:8100", "http", Some("[::1]:8100")),
            ("example.test:65536", "http", None),
            ("example.test:", "http", Some("example.test")),
            (":80", "http", None),
            (".", "http", None),
            ("a@b.test", "http", None),
            ("a b.test", "http", None),
        ];
        for (host, scheme, want) in cases {
            let got = normalize_authority(host, scheme).ok();
            assert_eq!(got.as_deref(), want, "{host} over {scheme}");
            // The plain reading is only a shortcut: the parser's answer is the same.
            if plain_authority(host).is_some() {
                let parsed: Option<http::uri::Authority> = host.parse().ok();
                let slow =
                    parsed.and_then(|a| finish_authority(a.host(), a.port_u16(), scheme).ok());
                assert_eq!(slow.as_deref(), want, "{host} through the parser");
            }
        }
    }

    #[test]
    fn record_parts() {
        let s = sig("GET", "/a?b=1", &host("a.test:81"), &[]);
        assert_eq!(s.request.authority(), "a.test:81");
        assert_eq!(s.request.path_and_query(), "/a?b=1");
        assert_eq!(Key::parse(&s.key.to_hex()), Some(s.key));
        assert_eq!(
            Key::parse("0123456789ABCDEF0123456789abcdef")
                .map(|k| k.to_hex())
                .as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert!(Key::parse("nope").is_none());
    }
}
