//! Who may call the admin listener: with a token, only requests that carry it; without one,
//! only requests addressed to a loopback host; never a change sent from another site.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::Admin;

pub(super) fn refuse(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({"error": error}))).into_response()
}

/// Whether the request's `Host` names this machine's loopback (`localhost`, `127.0.0.1`,
/// `[::1]`, with any port).
pub(super) fn loopback_host(headers: &http::HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a browser sent this request from another site's page.
pub(super) fn cross_origin(headers: &http::HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site" || v.as_bytes() == b"same-site")
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
    !authority.eq_ignore_ascii_case(host)
}

/// Guards every API path: `401` unless the bearer token matches (when one is configured);
/// `403` for a change requested from another site's page (CSRF), and, without a token, for a
/// request not addressed to a loopback host (a DNS-rebinding page cannot pass that).
pub(super) async fn authorize(
    State(admin): State<Admin>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if admin.token.is_none() && !loopback_host(headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "without --admin-token the admin listener answers only requests addressed to \
             localhost, 127.0.0.1 or [::1]",
        );
    }
    let changes = !matches!(*request.method(), http::Method::GET | http::Method::HEAD);
    if changes && cross_origin(headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "cross-origin admin request refused: use the dashboard or the API directly",
        );
    }
    if let Some(expected) = &admin.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .unwrap_or("");
        // Constant time in the token's content (its length is not a secret worth hiding).
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(json!({"error": "a valid admin token is required"})),
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// The token of an `Authorization: Bearer <token>` value. The scheme name is
/// case-insensitive (RFC 9110 §11.1) and one or more spaces may follow it (§11.4's `1*SP`);
/// `None` for any other scheme.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(rest.trim_start_matches(' ').trim_end())
}

#[cfg(test)]
mod tests {
    #[test]
    fn bearer_scheme_is_case_insensitive_and_takes_any_spaces() {
        let cases = [
            ("Bearer T", Some("T")),
            ("bearer T", Some("T")),
            ("BEARER T", Some("T")),
            ("Bearer  T", Some("T")),
            ("Bearer T ", Some("T")),
            ("Basic T", None),
            ("BearerT", None),
            ("Bearer", None),
        ];
        for (value, want) in cases {
            assert_eq!(super::bearer_token(value), want, "{value:?}");
        }
    }
}
