//! How a job becomes a request again: the worker rebuilds the job's request from its stored
//! record ([`build_request`]) and marks it with a [`JobRequest`], which the front reads to
//! let a replay straight through to the handler.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request};

use crate::pattern::{Key, TraceParent};
use crate::store::Job;

/// Marks a request as a job's replay (in its extensions), so a Layer on the same app lets it
/// straight through to the handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRequest {
    /// The signature's key.
    pub key: Key,
    /// Which attempt this is.
    pub attempt: u32,
    /// The job's trace context: the trace of the request that created the job, with the
    /// job's own span id (also sent as the request's `traceparent` header).
    pub trace: Option<TraceParent>,
}

/// The body of a job's request: jobs replay `GET`s, which have none.
pub type JobBody = http_body_util::Empty<Bytes>;

/// The job's request: `GET` of its path with `Host`, its key headers, the headers the
/// claiming request sent on (`RequestRecord::forwarded`), `Via`, and when `conditional`
/// the stored response's validators (`RequestRecord::validators`).
pub(crate) fn build_request(
    job: &Job,
    trace: Option<TraceParent>,
    conditional: bool,
) -> Result<Request<JobBody>, String> {
    let record = &job.request;
    let mut request = Request::new(JobBody::new());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = record.path_and_query().parse().map_err(|e| {
        format!(
            "stored request target {:?} is invalid: {e}",
            record.path_and_query()
        )
    })?;
    let headers = request.headers_mut();
    let host = HeaderValue::from_str(record.authority())
        .map_err(|e| format!("stored host {:?} is invalid: {e}", record.authority()))?;
    headers.insert(header::HOST, host);
    // The signature's own headers, then what the claiming request sent besides.
    for (name, value) in record.headers.iter().chain(&record.forwarded) {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("stored header name {name:?}: {e}"))?;
        let value =
            HeaderValue::from_str(value).map_err(|e| format!("stored value of {name}: {e}"))?;
        headers.append(name, value);
    }
    // Whether the stored response the job would replace is still current (RFC 9111 §4.3.1).
    if conditional {
        for (name, value) in &record.validators {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("stored validator name {name:?}: {e}"))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| format!("stored value of {name}: {e}"))?;
            headers.insert(name, value);
        }
    }
    // This hop (RFC 9110 §7.6.3), after any the client's request passed through.
    headers.append(header::VIA, HeaderValue::from_static("1.1 errand"));
    if let Some(trace) = trace
        && let Ok(value) = HeaderValue::try_from(trace.to_string())
    {
        headers.insert("traceparent", value);
    }
    request.extensions_mut().insert(JobRequest {
        key: job.lease.key,
        attempt: job.attempt,
        trace,
    });
    Ok(request)
}
