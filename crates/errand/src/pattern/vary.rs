//! Stored variants (RFC 9111 §4.1): a response whose `Vary` nominates request headers answers
//! only requests that send the same values of those headers as the request that produced it.
//!
//! A stored response keeps the values its request sent ([`StoredResponse::selecting`], filled in
//! by the worker from the job's request). A request that sends other values has its own
//! variant: its own key ([`variant_key`]: the signature's key and those values), so its own
//! entry, its own single job and its own freshness, on every store. The signature's key holds
//! the variant of whichever request stored first, and its `Vary` tells the front which
//! headers choose the variant.
//!
//! Nominated headers that a job never sends on (see `forward.rs`: `Accept-Encoding`,
//! `Prefer`, conditionals, credentials the route does not key on) and headers the route keys
//! on already cannot tell two requests of one key apart: they are left out. `Vary: *` (or a
//! `Vary` that is not text) matches no request; such a response is never reused.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::entry::StoredResponse;
use super::forward::never_forwarded;
use super::signature::{Key, RequestRecord};

/// What a response's `Vary` asks of the requests it may answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Nominated {
    /// Nothing that can differ between the requests of one key.
    Nothing,
    /// The request headers that choose the variant, lower-case, sorted, each once.
    Fields(Vec<HeaderName>),
    /// `*` or an unreadable `Vary`: no request is known to match.
    Any,
}

/// The request headers that `response`'s `Vary` nominates, on a route keyed on `key_headers`.
pub(crate) fn nominated(response: &HeaderMap, key_headers: &[HeaderName]) -> Nominated {
    let mut names = Vec::new();
    for value in response.get_all(header::VARY) {
        let Ok(value) = value.to_str() else {
            return Nominated::Any;
        };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return Nominated::Any;
            }
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                return Nominated::Any;
            };
            if !never_forwarded(&name) && !key_headers.contains(&name) {
                names.push(name);
            }
        }
    }
    if names.is_empty() {
        return Nominated::Nothing;
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Nominated::Fields(names)
}

/// Keeps with `response` the values of the headers its `Vary` nominates, as `request` (the
/// job's request) sent them on.
pub(crate) fn keep_selecting(
    response: &mut StoredResponse,
    request: &RequestRecord,
    key_headers: &[HeaderName],
) {
    let Nominated::Fields(names) = nominated(&response.headers, key_headers) else {
        return;
    };
    let mut fields = HeaderMap::new();
    for (name, value) in &request.forwarded {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            continue;
        };
        if names.contains(&name) {
            fields.append(name, value);
        }
    }
    response.selecting = fields;
}

/// Whether a stored response may answer a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Selection {
    /// It may: it does not vary, or the request sends what its request sent.
    Reuse,
    /// The request needs another variant, chosen by these headers.
    Other(Vec<HeaderName>),
    /// It answers no other request (`Vary: *`).
    Never,
}

/// Whether `stored` may answer a request with `request`'s headers (RFC 9111 §4.1): every
/// nominated header the same, after joining its field lines and the spaces around commas,
/// or absent from both.
pub(crate) fn select(
    stored: &StoredResponse,
    request: &HeaderMap,
    key_headers: &[HeaderName],
) -> Selection {
    // The common case, a response without `Vary`, costs one lookup.
    if !stored.headers.contains_key(header::VARY) {
        return Selection::Reuse;
    }
    match nominated(&stored.headers, key_headers) {
        Nominated::Nothing => Selection::Reuse,
        Nominated::Any => Selection::Never,
        Nominated::Fields(names) => {
            let same = names
                .iter()
                .all(|name| normalized(request, name) == normalized(&stored.selecting, name));
            if same {
                Selection::Reuse
            } else {
                Selection::Other(names)
            }
        }
    }
}

/// The key of the variant of `base` chosen by `request`'s values of `names`.
pub(crate) fn variant_key(base: &Key, names: &[HeaderName], request: &HeaderMap) -> Key {
    let mut canonical = format!("variant\n{}\n", base.to_hex());
    for name in names {
        canonical.push_str(name.as_str());
        match normalized(request, name) {
            Some(value) => {
                canonical.push_str(": ");
                canonical.push_str(&String::from_utf8_lossy(&value));
            }
            None => canonical.push_str(" absent"),
        }
        canonical.push('\n');
    }
    Key::of(&canonical)
}

/// A header's field lines joined with commas, without the spaces around each element;
/// `None` when the header is absent.
fn normalized(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let mut out = Vec::new();
    for line in lines {
        for element in line.as_bytes().split(|b| *b == b',') {
            if !out.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(element.trim_ascii());
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    fn stored(vary: &[&'static str], sent: &[(&'static str, &'static str)]) -> StoredResponse {
        let mut response_headers = HeaderMap::new();
        for value in vary {
            response_headers.append(header::VARY, HeaderValue::from_static(value));
        }
        StoredResponse {
            status: StatusCode::OK,
            headers: response_headers,
            body: Bytes::new(),
            selecting: headers(sent),
        }
    }

    fn names(list: &[&'static str]) -> Vec<HeaderName> {
        list.iter().map(|n| HeaderName::from_static(n)).collect()
    }

    #[test]
    fn nominated_table() {
        let keyed = names(&["x-tenant"]);
        let rows: [(&[&'static str], Nominated); 9] = [
            (&[], Nominated::Nothing),
            (&["Accept-Encoding"], Nominated::Nothing),
            (
                &["Prefer, Cookie, Authorization, Range"],
                Nominated::Nothing,
            ),
            (&["X-Tenant"], Nominated::Nothing),
            (
                &["Accept-Language, accept"],
                Nominated::Fields(names(&["accept", "accept-language"])),
            ),
            (
                &["Accept", "User-Agent, Accept"],
                Nominated::Fields(names(&["accept", "user-agent"])),
            ),
            (&["Accept, *"], Nominated::Any),
            (&["*"], Nominated::Any),
            (&["bad header"], Nominated::Any),
        ];
        for (vary, want) in rows {
            let mut response = HeaderMap::new();
            for value in vary {
                response.append(header::VARY, HeaderValue::from_static(value));
            }
            assert_eq!(nominated(&response, &keyed), want, "Vary: {vary:?}");
        }
    }

    #[test]
    fn selection_table() {
        const EN: &[(&str, &str)] = &[("accept-language", "en")];
        type Row = (
            StoredResponse,
            &'static [(&'static str, &'static str)],
            Selection,
        );
        let rows: [Row; 9] = [
            // No Vary: every request.
            (
                stored(&[], &[]),
                &[("accept-language", "fr")],
                Selection::Reuse,
            ),
            (stored(&["Accept-Language"], EN), EN, Selection::Reuse),
            (
                stored(&["Accept-Language"], EN),
                &[("accept-language", "fr")],
                Selection::Other(names(&["accept-language"])),
            ),
            // Absent in both matches; present in one only does not.
            (stored(&["Accept-Language"], &[]), &[], Selection::Reuse),
            (
                stored(&["Accept-Language"], &[]),
                EN,
                Selection::Other(names(&["accept-language"])),
            ),
            // Field lines are joined, spaces around commas do not count.
            (
                stored(&["Accept"], &[("accept", "text/html, */*")]),
                &[("accept", "text/html"), ("accept", "*/*")],
                Selection::Reuse,
            ),
            // Values are compared as sent (no reordering).
            (
                stored(&["Accept"], &[("accept", "text/html,*/*")]),
                &[("accept", "*/*,text/html")],
                Selection::Other(names(&["accept"])),
            ),
            (stored(&["*"], &[]), &[], Selection::Never),
            // A header a job never sends on cannot choose a variant.
            (
                stored(&["Accept-Encoding"], &[]),
                &[("accept-encoding", "gzip")],
                Selection::Reuse,
            ),
        ];
        for (i, (stored, request, want)) in rows.into_iter().enumerate() {
            assert_eq!(select(&stored, &headers(request), &[]), want, "row {i}");
        }
    }

    #[test]
    fn a_variant_key_depends_on_the_base_and_the_values() {
        let base = Key::of("GET\nhttp://a.test/\n");
        let other = Key::of("GET\nhttp://a.test/other\n");
        let lang = names(&["accept-language"]);
        let en = headers(&[("accept-language", "en")]);
        let en_split = headers(&[("accept-language", " en ")]);
        let fr = headers(&[("accept-language", "fr")]);
        let none = HeaderMap::new();
        let key = |base: &Key, request: &HeaderMap| variant_key(base, &lang, request);
        assert_eq!(key(&base, &en), key(&base, &en_split));
        assert_ne!(key(&base, &en), key(&base, &fr));
        assert_ne!(key(&base, &en), key(&other, &en));
        assert_ne!(
            key(&base, &none),
            key(&base, &headers(&[("accept-language", "")]))
        );
        assert_ne!(key(&base, &en), base);
    }

    #[test]
    fn a_stored_response_keeps_what_its_job_sent_of_the_nominated_headers() {
        let mut response = stored(&["Accept, Accept-Language"], &[]);
        let request = RequestRecord {
            uri: "http://a.test/".into(),
            headers: Vec::new(),
            forwarded: [
                ("accept", "text/html"),
                ("accept", "*/*"),
                ("user-agent", "curl"),
            ]
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
            validators: Vec::new(),
            trace: None,
        };
        keep_selecting(&mut response, &request, &[]);
        assert_eq!(
            response.selecting,
            headers(&[("accept", "text/html"), ("accept", "*/*")])
        );
        // Without a Vary there is nothing to keep.
        let mut plain = stored(&[], &[]);
        keep_selecting(&mut plain, &request, &[]);
        assert!(plain.selecting.is_empty());
    }
}
