//! The `Prefer` request header (RFC 7240): `wait=N` and `respond-async`.

use std::time::Duration;

use http::HeaderMap;

/// The preferences errand honours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Prefer {
    /// `wait=N`: the client would rather wait up to N seconds than get a `202`.
    pub wait: Option<Duration>,
    /// `respond-async`: the client expects a `202` (acknowledged with `Preference-Applied`).
    pub respond_async: bool,
}

impl Prefer {
    /// Reads every `Prefer` header; unknown or malformed preferences are ignored, as the RFC
    /// requires. When a preference repeats, the first one counts.
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut prefer = Self::default();
        for value in headers.get_all("prefer") {
            let Ok(value) = value.to_str() else { continue };
            for preference in value.split(',') {
                // Parameters after ';' do not change these two preferences.
                let token = preference.split(';').next().unwrap_or_default().trim();
                let (name, arg) = match token.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (token, None),
                };
                if name.eq_ignore_ascii_case("wait") && prefer.wait.is_none() {
                    prefer.wait = arg
                        .and_then(|a| a.parse::<u64>().ok())
                        .map(Duration::from_secs);
                } else if name.eq_ignore_ascii_case("respond-async") {
                    prefer.respond_async = true;
                }
            }
        }
        prefer
    }

    /// These preferences on a route that waits `route_wait` by default: a request that
    /// stated neither `wait` nor `respond-async` waits that long.
    pub(crate) fn on_route(mut self, route_wait: Option<Duration>) -> Self {
        if self.wait.is_none() && !self.respond_async {
            self.wait = route_wait;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Prefer {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("prefer", v.parse().expect("value"));
        }
        Prefer::parse(&h)
    }

    #[test]
    fn table() {
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(parse(&[]), Prefer::default());
        assert_eq!(parse(&["wait=10"]).wait, secs(10));
        assert_eq!(parse(&["WAIT = \"5\""]).wait, secs(5));
        assert_eq!(
            parse(&["respond-async, wait=3"]),
            Prefer {
                wait: secs(3),
                respond_async: true
            }
        );
        assert_eq!(parse(&["wait=3; foo=bar"]).wait, secs(3));
        assert_eq!(parse(&["wait=abc"]).wait, None);
        assert_eq!(parse(&["wait=-1"]).wait, None);
        assert_eq!(parse(&["wait=2", "wait=9"]).wait, secs(2));
        assert_eq!(parse(&["return=minimal"]), Prefer::default());
    }

    #[test]
    fn a_route_that_waits_applies_to_requests_that_do_not_say() {
        let secs = |s| Some(Duration::from_secs(s));
        // (request's Prefer, the route's wait, the wait applied)
        let cases: [(&[&str], Option<Duration>, Option<Duration>); 6] = [
            (&[], secs(10), secs(10)),
            (&[], None, None),
            (&["wait=2"], secs(10), secs(2)),
            (&["wait=0"], secs(10), secs(0)),
            (&["respond-async"], secs(10), None),
            (&["handling=lenient"], secs(10), secs(10)),
        ];
        for (values, route, want) in cases {
            assert_eq!(parse(values).on_route(route).wait, want, "{values:?}");
        }
    }
}
