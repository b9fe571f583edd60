//! The JSON API over the store: entries one at a time or a page at a time, a failed entry's
//! job again, purges.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use errand::pattern::{Entry, Key, State as EntryState, Status, Timestamp};
use errand::store::{ListQuery, Purge, PurgeTarget, Retried, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Admin;

pub(super) fn store_error(e: &StoreError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"error": e.to_string()})),
    )
        .into_response()
}

fn bad_request(error: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": error.into()})),
    )
        .into_response()
}

fn no_such_entry() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": "no such entry (never stored, expired or purged)"})),
    )
        .into_response()
}

fn parse_key(key: &str) -> Result<Key, String> {
    Key::parse(key).ok_or_else(|| format!("{key:?} is not an entry key (32 hex digits)"))
}

/// An entry as the API shows it: state, version, job or verdict, content timings (never the
/// body, nor the request's header values, which may be credentials).
fn entry_json(entry: &Entry, now: Timestamp) -> Value {
    let content = entry.content.as_ref().map(|c| {
        json!({
            "status": c.response.status.as_u16(),
            "bytes": c.response.body.len(),
            "generated_at_ms": c.generated_at.0,
            "fresh_until_ms": c.fresh_until.0,
            "stale_until_ms": c.stale_until.0,
            "stale_if_error_until_ms": c.stale_if_error_until.0,
            "tags": c.tags,
            "job_ms": c.job_millis,
        })
    });
    let detail = match &entry.status {
        Status::Pending(job) => json!({
            "job": job.id.0,
            "priority": job.priority.as_str(),
            "created_at_ms": job.created_at.0,
            "run_at_ms": job.run_at.0,
            "attempts": job.attempts,
            "lease_until_ms": job.lease_until.map(|t| t.0),
            "last_error": job.last_error,
        }),
        Status::Failed(f) => json!({
            "until_ms": f.until.0,
            "status": f.response.status.as_u16(),
            "error": f.error,
            "attempts": f.attempts,
            "at_ms": f.at.0,
            "retryable": f.request.is_some(),
            "trace_id": f.request.as_ref().and_then(|r| r.trace).map(|t| t.trace_hex()),
        }),
        Status::Pass(p) => {
            json!({"until_ms": p.until.0, "reason": p.reason, "kept_once": p.once.is_some()})
        }
        Status::Idle => Value::Null,
    };
    json!({
        "key": entry.key.to_hex(),
        "uri": &*entry.uri,
        "version": entry.version,
        "state": entry.state(now).as_str(),
        "detail": detail,
        "content": content,
    })
}

pub(super) async fn entry(State(admin): State<Admin>, Path(key): Path<String>) -> Response {
    let key = match parse_key(&key) {
        Ok(key) => key,
        Err(e) => return bad_request(e),
    };
    match admin.store.lookup(&key).await {
        Ok(Some(entry)) => {
            let now = admin.store.now();
            let mut value = entry_json(&entry, now);
            value["now_ms"] = json!(now.0);
            axum::Json(value).into_response()
        }
        Ok(None) => no_such_entry(),
        Err(e) => store_error(&e),
    }
}

/// The query of `GET /api/entries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    state: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// Most entries one page of `GET /api/entries` holds.
const MAX_PAGE: usize = 500;

pub(super) async fn entries(
    State(admin): State<Admin>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(params)) => params,
        Err(e) => return bad_request(e.body_text()),
    };
    let state = match params.state.as_deref() {
        None | Some("" | "all") => None,
        Some(name) => match EntryState::parse(name) {
            Some(state) => Some(state),
            None => {
                return bad_request(format!(
                    "state {name:?} is not one of fresh, stale, pending, failed, pass"
                ));
            }
        },
    };
    let limit = params.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return bad_request(format!("limit {limit} is not between 1 and {MAX_PAGE}"));
    }
    let query = ListQuery {
        state,
        after: params.after.filter(|a| !a.is_empty()),
        limit,
    };
    match admin.store.list(&query).await {
        Ok(page) => {
            let now = admin.store.now();
            let entries: Vec<Value> = page.entries.iter().map(|e| entry_json(e, now)).collect();
            axum::Json(json!({"entries": entries, "next": page.next, "now_ms": now.0}))
                .into_response()
        }
        Err(StoreError::Invalid(e)) => bad_request(format!("after: {e}")),
        Err(e) => store_error(&e),
    }
}

/// `POST /api/entries/{key}/retry`: a failed entry's job again, now.
pub(super) async fn retry(State(admin): State<Admin>, Path(key): Path<String>) -> Response {
    let key = match parse_key(&key) {
        Ok(key) => key,
        Err(e) => return bad_request(e),
    };
    let conflict =
        |error: String| (StatusCode::CONFLICT, axum::Json(json!({"error": error}))).into_response();
    match errand::store::retry(&*admin.store, &key).await {
        Ok(Retried::Enqueued(entry)) => {
            tracing::info!(key = %key, uri = &*entry.uri, "failed entry retried by an operator");
            let now = admin.store.now();
            (StatusCode::ACCEPTED, axum::Json(entry_json(&entry, now))).into_response()
        }
        Ok(Retried::NotFailed(state)) => conflict(format!("the entry is {state}, not failed")),
        Ok(Retried::NoRequest) => {
            conflict("the failure was recorded without its request; request the URL again".into())
        }
        Ok(Retried::Missing) => no_such_entry(),
        Err(e) => store_error(&e),
    }
}

/// The body of `POST /api/purge`: exactly one target.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PurgeRequest {
    /// One signature (32 hex digits).
    pub key: Option<String>,
    /// Every variant of one canonical URI.
    pub uri: Option<String>,
    /// Every canonical URI starting with this.
    pub prefix: Option<String>,
    /// Every entry whose content carries this tag.
    pub tag: Option<String>,
    /// Everything.
    #[serde(default)]
    pub all: bool,
    /// Mark stale instead of removing.
    #[serde(default)]
    pub soft: bool,
}

impl PurgeRequest {
    fn target(&self) -> Result<PurgeTarget, String> {
        let given = usize::from(self.key.is_some())
            + usize::from(self.uri.is_some())
            + usize::from(self.prefix.is_some())
            + usize::from(self.tag.is_some())
            + usize::from(self.all);
        if given != 1 {
            return Err("give exactly one of key, uri, prefix, tag, all".into());
        }
        if let Some(key) = &self.key {
            return Key::parse(key)
                .map(PurgeTarget::Key)
                .ok_or_else(|| format!("key {key:?} is not an entry key (32 hex digits)"));
        }
        Ok(match (&self.uri, &self.prefix, &self.tag) {
            (Some(uri), _, _) => PurgeTarget::Uri(uri.clone()),
            (_, Some(prefix), _) => PurgeTarget::Prefix(prefix.clone()),
            (_, _, Some(tag)) => PurgeTarget::Tag(tag.clone()),
            _ => PurgeTarget::All,
        })
    }
}

pub(super) async fn purge(
    State(admin): State<Admin>,
    body: Result<axum::Json<PurgeRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match body {
        Ok(axum::Json(request)) => request,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": e.body_text()})),
            )
                .into_response();
        }
    };
    let target = match request.target() {
        Ok(target) => target,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": e}))).into_response();
        }
    };
    match admin
        .store
        .purge(Purge {
            target,
            soft: request.soft,
        })
        .await
    {
        Ok(n) => axum::Json(json!({"purged": n, "soft": request.soft})).into_response(),
        Err(e) => store_error(&e),
    }
}
