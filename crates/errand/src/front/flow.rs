//! What the front does with one request, in the order of DESIGN's "The front, request by
//! request": hygiene, pass-through cases, signature, lookup, then [`decide`] until there is
//! an answer. The Layer and the proxy share this one flow.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tower_service::Service;

use super::prefer::Prefer;
use super::respond;
use crate::body::{self, Body, BoxError};
use crate::config::{Mode, RouteId, RoutePolicy};
use crate::errand::Shared;
use crate::pattern::answer::{self, Arrival, RetryBounds};
use crate::pattern::cache_status::{Detail, Fwd};
use crate::pattern::signature::{CREDENTIAL_HEADERS, canonical_uri, request_authority, route_path};
use crate::pattern::vary::{self, Selection};
use crate::pattern::{
    CacheStatus, Decision, Entry, Phase, Priority, Signature, StoredResponse, Timestamp,
    TraceParent, decide, decide_waited,
};
use crate::pattern::{forward, hygiene, revalidate};
use crate::replay::JobRequest;
use crate::store::{Claim, ClaimOutcome, Purge, PurgeTarget, StoreError, timed};

/// What the front will do with a request, decided before any I/O.
pub(crate) enum Plan {
    /// Answer at once (a refusal naming what was wrong).
    Respond(Response<Body>),
    /// Straight through to the inner service, marked with this status (if on a deferred route).
    Forward(Option<CacheStatus>),
    /// An unsafe method: through, then invalidate on success.
    PassUnsafe,
    /// The Worker Pattern: look up the signature and decide.
    Defer(Deferred),
}

/// A deferred request's facts, computed synchronously.
pub(crate) struct Deferred {
    route: RouteId,
    signature: Signature,
    head: bool,
    prefer: Prefer,
}

/// Steps 1–2 of the front (hygiene, the pass-through cases, the signature): synchronous, so
/// only the future of the chosen path is built and boxed.
pub(crate) fn plan<B>(shared: &Shared, request: &Request<B>) -> Plan {
    // A worker replaying a job through the same app: straight to the handler.
    if request.extensions().get::<JobRequest>().is_some() {
        return Plan::Forward(None);
    }
    let front = &shared.config.front;
    let headers = request.headers();
    if let Err(refusal) = hygiene::check_request(headers) {
        return Plan::Respond(respond::bad_request(refusal.status(), &refusal.to_string()));
    }
    let target_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if target_len > front.max_uri_len {
        return Plan::Respond(respond::bad_request(
            StatusCode::URI_TOO_LONG,
            &format!(
                "request target is {target_len} bytes; the limit is {}",
                front.max_uri_len
            ),
        ));
    }
    // The host check comes before the method and the route: no request for a site that is
    // not served here reaches the upstream, whatever its method or route.
    if !front.allowed_hosts.is_empty() {
        let scheme = request.uri().scheme_str().unwrap_or(&front.scheme);
        match request_authority(request.uri(), headers, &scheme.to_ascii_lowercase()) {
            Ok(authority) if front.allowed_hosts.contains(&authority) => {}
            Ok(authority) => {
                return Plan::Respond(respond::bad_request(
                    StatusCode::MISDIRECTED_REQUEST,
                    &format!("host {authority:?} is not served here"),
                ));
            }
            Err(e) => {
                return Plan::Respond(respond::bad_request(
                    StatusCode::BAD_REQUEST,
                    &e.to_string(),
                ));
            }
        }
    }
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        return Plan::PassUnsafe;
    }
    // The route is chosen on the path the signature uses, so no other spelling of a path
    // escapes its route's settings.
    let (route, policy) = shared
        .config
        .routes
        .policy_for(&route_path(request.uri().path()));
    if policy.mode == Mode::Pass {
        return Plan::Forward(Some(CacheStatus::new(Phase::Pass).fwd(Fwd::Bypass)));
    }
    if has_body(headers) || private_request(headers, policy) {
        return Plan::Forward(Some(CacheStatus::new(Phase::Pass)));
    }
    let signature = match Signature::of(
        method,
        request.uri(),
        headers,
        &front.scheme,
        &policy.key_headers,
    ) {
        Ok(signature) => signature,
        Err(e) => {
            return Plan::Respond(respond::bad_request(
                StatusCode::BAD_REQUEST,
                &e.to_string(),
            ));
        }
    };
    Plan::Defer(Deferred {
        route,
        signature,
        head: method == Method::HEAD,
        prefer: Prefer::parse(headers).on_route(policy.wait),
    })
}

/// Steps 3–4 for a deferred request: lookup, decide, claim / wait / serve; through to the
/// inner service only for hit-for-pass.
pub(crate) async fn defer<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    inner: S,
    request: Request<ReqBody>,
    deferred: Deferred,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let answer = FrontRequest {
        shared: &shared,
        route: deferred.route,
        signature: deferred.signature,
        variant: false,
        head: deferred.head,
        headers: request.headers(),
        prefer: deferred.prefer,
    }
    .answer()
    .await;
    match answer {
        Answer::Respond(response) => Ok(response),
        Answer::Forward(status) => Box::pin(forward(inner, request, Some(status))).await,
    }
}

/// A request body on a GET/HEAD: never deferred (a worker could not replay it).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// Credentials the route does not key on make the request private: it passes through.
fn private_request(headers: &HeaderMap, policy: &RoutePolicy) -> bool {
    CREDENTIAL_HEADERS
        .iter()
        .any(|name| headers.contains_key(name) && !policy.key_headers.contains(name))
}

/// Forwards to the inner service, marking the answer when it belongs to a deferred route.
pub(crate) async fn forward<S, ReqBody, ResBody>(
    mut inner: S,
    request: Request<ReqBody>,
    status: Option<CacheStatus>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let response = inner.call(request).await?;
    let mut response = response.map(body::boxed);
    if let Some(status) = status {
        respond::mark(response.headers_mut(), &status);
    }
    Ok(response)
}

/// POST/PUT/PATCH/DELETE (and other methods) pass through; a successful unsafe one
/// invalidates the stored variants of its URI and of its `Location`/`Content-Location` on
/// the same host (RFC 9111 §4.4).
pub(crate) async fn pass_unsafe<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    inner: S,
    request: Request<ReqBody>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let safe = matches!(*request.method(), Method::OPTIONS | Method::TRACE);
    let scheme = shared.config.front.scheme.clone();
    let target = canonical_uri(request.uri(), request.headers(), &scheme).ok();
    let host = request.headers().get(header::HOST).cloned();
    let status = CacheStatus::new(Phase::Pass).fwd(Fwd::Method);
    let response = forward(inner, request, Some(status)).await?;
    let succeeded = response.status().is_success() || response.status().is_redirection();
    if safe || !succeeded {
        return Ok(response);
    }
    let mut uris: Vec<String> = target.into_iter().collect();
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(location) = response.headers().get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Ok(location) = location.parse::<http::Uri>() else {
            continue;
        };
        let mut headers = HeaderMap::new();
        if let Some(host) = &host {
            headers.insert(header::HOST, host.clone());
        }
        if let Ok(uri) = canonical_uri(&location, &headers, &scheme) {
            // Only the same origin may be invalidated (another host's entries are not ours to drop).
            if uris.first().is_some_and(|own| same_origin(own, &uri)) {
                uris.push(uri);
            }
        }
    }
    for uri in uris {
        let purge = Purge {
            target: PurgeTarget::Uri(uri.clone()),
            soft: false,
        };
        if let Err(e) = timed(shared.config.front.store_timeout, shared.store.purge(purge)).await {
            tracing::warn!(%uri, error = %e, "could not invalidate after an unsafe request");
        }
    }
    Ok(response)
}

fn same_origin(a: &str, b: &str) -> bool {
    let origin = |u: &str| {
        let rest = u.split_once("://").map_or(u, |(_, r)| r);
        let end = rest.find('/').unwrap_or(rest.len());
        u[..u.len() - rest.len() + end].to_owned()
    };
    origin(a) == origin(b)
}

/// What the decision loop settled on.
enum Answer {
    Respond(Response<Body>),
    /// Go through to the inner service (hit-for-pass).
    Forward(CacheStatus),
}

/// A GET/HEAD on a deferred route, with its signature.
struct FrontRequest<'a> {
    shared: &'a Shared,
    route: RouteId,
    /// The signature; its key becomes the variant's when a stored `Vary` sends the request
    /// to another variant.
    signature: Signature,
    /// Whether the key is a variant's (chosen once per request).
    variant: bool,
    head: bool,
    /// The client's headers (validators for `304`), borrowed from the request.
    headers: &'a HeaderMap,
    prefer: Prefer,
}

impl FrontRequest<'_> {
    fn store_timeout(&self) -> Duration {
        self.shared.config.front.store_timeout
    }

    /// Looks the signature up, then decides until there is an answer: a claim, a wait or a
    /// move to another variant brings a new entry to decide on; the loop is bounded.
    async fn answer(mut self) -> Answer {
        let store = &self.shared.store;
        // Taken before each read that brings `entry`, when the client may wait: a wait on a
        // pending entry then needs no read of its own unless the store heard of a change
        // since. (Other requests, most hits among them, never wait, so they skip the clock.)
        let waits = self.prefer.wait.is_some();
        let stamp = || waits.then(std::time::Instant::now);
        let mut seen = stamp();
        // No timer around the hit path's one read: the store contract makes every backend bound
        // its own calls, and arming a timer per request is measurable at these rates.
        let mut entry = match store.lookup(&self.signature.key).await {
            Ok(entry) => entry,
            Err(e) => return Answer::Respond(self.unavailable(&e)),
        };
        let mut arrival = Arrival::default();
        for _ in 0..6 {
            // Stored content chosen by other values of the headers its `Vary` names: this
            // request has its own variant (RFC 9111 §4.1).
            let content = entry.as_ref().and_then(|e| e.content.as_ref());
            match content.map(|c| self.selection(&c.response)) {
                None | Some(Selection::Reuse) => {}
                Some(Selection::Other(names)) if !self.variant => {
                    seen = stamp();
                    entry = match self.move_to_variant(&names).await {
                        Ok(entry) => entry,
                        Err(answer) => return answer,
                    };
                    arrival = Arrival::default();
                    continue;
                }
                // `Vary: *`, or the variant's own copy now varies on other headers.
                Some(_) => {
                    return Answer::Forward(CacheStatus::new(Phase::Pass).fwd(Fwd::UriMiss));
                }
            }
            let now = store.now();
            let decision = if arrival.waited {
                decide_waited(entry.as_ref(), now)
            } else {
                decide(entry.as_ref(), now)
            };
            match decision {
                Decision::Hit => {
                    return Answer::Respond(self.serve_content(
                        decision,
                        entry.as_ref(),
                        now,
                        arrival,
                    ));
                }
                Decision::Stale { refresh } | Decision::StaleIfError { refresh } => {
                    let Some(current) = entry.as_ref() else { break };
                    if refresh {
                        self.refresh_in_background(current);
                    }
                    return Answer::Respond(self.serve_content(
                        decision,
                        entry.as_ref(),
                        now,
                        arrival,
                    ));
                }
                Decision::Miss { expect } => {
                    seen = stamp();
                    match timed(
                        self.store_timeout(),
                        store.claim(self.claim(Priority::Miss, expect, entry.as_ref())),
                    )
                    .await
                    {
                        Ok(ClaimOutcome::Enqueued(pending)) => {
                            crate::metrics::counters().claimed.increment(1);
                            arrival.claimed = Some(Phase::Miss);
                            entry = Some(pending);
                        }
                        Ok(ClaimOutcome::Exists(found)) => {
                            if found.job().is_some() {
                                crate::metrics::counters().deduplicated.increment(1);
                            }
                            arrival.claimed = Some(Phase::Collapsed);
                            entry = Some(found);
                        }
                        Err(e) => return Answer::Respond(self.unavailable(&e)),
                    }
                }
                Decision::Pending => {
                    let phase = arrival.claimed.unwrap_or(Phase::Pending);
                    if !arrival.waited
                        && let Some(settled) = self.wait(seen).await
                    {
                        arrival.waited = true;
                        entry = Some(settled);
                        continue;
                    }
                    return Answer::Respond(self.accepted(entry.as_ref(), phase, now));
                }
                Decision::Failed => {
                    return Answer::Respond(self.failed(entry.as_ref(), now, arrival));
                }
                Decision::Pass { once } => {
                    let pass = match entry.as_ref().map(|e| &e.status) {
                        Some(crate::pattern::Status::Pass(pass)) => Some(pass),
                        _ => None,
                    };
                    // A shareable result reaches every request that waited for its job.
                    let shared = entry
                        .as_ref()
                        .filter(|_| arrival.waited)
                        .and_then(Entry::result_for_waiters)
                        .cloned()
                        .filter(|response| self.selects(response));
                    if let Some(response) = shared {
                        // It reached a request that waited: no later request reuses it.
                        let taken = store.take_once(&self.signature.key);
                        if let Err(e) = timed(self.store_timeout(), taken).await {
                            tracing::warn!(error = %e, "could not drop a delivered result");
                        }
                        return Answer::Respond(self.deliver(&response, arrival));
                    }
                    let claimer_only = pass.is_some_and(|pass| pass.only_for_its_claimer());
                    if once && (!claimer_only || arrival.claimed == Some(Phase::Miss)) {
                        match timed(self.store_timeout(), store.take_once(&self.signature.key))
                            .await
                        {
                            // Its claimer sent what the job sent; another request must
                            // match the response's `Vary`.
                            Ok(Some(response)) if claimer_only || self.selects(&response) => {
                                return Answer::Respond(self.deliver(&response, arrival));
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "take_once failed; passing through")
                            }
                        }
                    }
                    return Answer::Forward(
                        CacheStatus::new(Phase::Pass)
                            .fwd(Fwd::UriMiss)
                            .detail(Detail::HitForPass),
                    );
                }
            }
        }
        // Four rounds without an answer: the entry changes faster than we can act on it.
        Answer::Respond(self.unavailable(&StoreError::unavailable("entry kept changing")))
    }

    /// Makes this request's key its variant's, chosen by its values of `names`, and looks
    /// that up; or passes the request through when the signature has all the variants its
    /// route allows.
    async fn move_to_variant(
        &mut self,
        names: &[http::HeaderName],
    ) -> Result<Option<Entry>, Answer> {
        let base = self.signature.key;
        let variant = vary::variant_key(&base, names, self.headers);
        if !self
            .shared
            .variants
            .admit(base, variant, self.policy().max_variants)
        {
            return Err(Answer::Forward(
                CacheStatus::new(Phase::Pass)
                    .fwd(Fwd::UriMiss)
                    .detail(Detail::VariantLimit),
            ));
        }
        self.signature.key = variant;
        self.variant = true;
        self.shared
            .store
            .lookup(&variant)
            .await
            .map_err(|e| Answer::Respond(self.unavailable(&e)))
    }

    fn policy(&self) -> &RoutePolicy {
        self.shared.config.routes.policy(self.route)
    }

    /// Whether a stored response may answer this request, as far as its `Vary` says.
    fn selection(&self, response: &StoredResponse) -> Selection {
        vary::select(response, self.headers, &self.policy().key_headers)
    }

    fn selects(&self, response: &StoredResponse) -> bool {
        self.selection(response) == Selection::Reuse
    }

    /// The claim of this request's job. With `current` (the entry it would replace), the
    /// job asks the origin whether its stored response is still current.
    fn claim(&self, priority: Priority, expect: Option<u64>, current: Option<&Entry>) -> Claim {
        let mut request = self.signature.request.clone();
        if let Some(content) = current.and_then(|e| e.content.as_ref()) {
            request.validators = revalidate::validators(&content.response);
        }
        let key_headers = &self.policy().key_headers;
        request.forwarded = forward::forwarded(self.headers, key_headers);
        // The job joins the client's trace, or starts one the job's logs can be found by.
        request.trace = Some(
            self.headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .and_then(TraceParent::parse)
                .unwrap_or_else(TraceParent::start),
        );
        Claim {
            key: self.signature.key,
            request,
            // The canonical URI without key headers: every variant of one URI shares it.
            uri: self.signature.request.uri.clone(),
            priority,
            expect,
        }
    }

    /// One refresh job for a stale entry, claimed without delaying the stale answer.
    fn refresh_in_background(&self, current: &Entry) {
        let store = Arc::clone(&self.shared.store);
        let claim = self.claim(Priority::Refresh, Some(current.version), Some(current));
        let limit = self.store_timeout();
        tokio::spawn(async move {
            if let Err(e) = timed(limit, store.claim(claim)).await {
                tracing::warn!(error = %e, "could not claim a refresh");
            }
        });
    }

    /// Under `Prefer: wait=N`: the settled entry if the job ends within `min(N, max_wait)`.
    /// Bounded by the cap on concurrent waiters (beyond it: no wait, a plain `202`). `seen`
    /// was taken before the read that found the entry pending (always, under `Prefer: wait`).
    async fn wait(&self, seen: Option<std::time::Instant>) -> Option<Entry> {
        let wait = self.prefer.wait?.min(self.shared.config.front.max_wait);
        let seen = seen?;
        if wait.is_zero() {
            return None;
        }
        let _permit = Arc::clone(&self.shared.waiters).try_acquire_owned().ok()?;
        let store = &self.shared.store;
        // The wait's own limit is the client's; the store's timeout bounds it only on top.
        match timed(
            wait + self.store_timeout(),
            store.wait(&self.signature.key, Some(seen), wait),
        )
        .await
        {
            Ok(settled) => {
                let counters = crate::metrics::counters();
                match settled {
                    Some(_) => counters.wait_ready.increment(1),
                    None => counters.wait_timeout.increment(1),
                }
                settled
            }
            Err(e) => {
                tracing::warn!(error = %e, "wait failed");
                None
            }
        }
    }

    fn retry_bounds(&self) -> RetryBounds {
        let front = &self.shared.config.front;
        RetryBounds {
            min: front.retry_after_min,
            max: front.retry_after_max,
        }
    }

    /// A job's result that is not kept, as the origin sent it (its own `Cache-Control` and
    /// `Age` included).
    fn deliver(&self, response: &StoredResponse, arrival: Arrival) -> Response<Body> {
        let status = arrival.status(Phase::Pass, response.status, false);
        respond::stored(response, None, self.headers, self.head, &status)
    }

    fn serve_content(
        &self,
        decision: Decision,
        entry: Option<&Entry>,
        now: Timestamp,
        arrival: Arrival,
    ) -> Response<Body> {
        let Some(content) = entry.and_then(|e| e.content.as_ref()) else {
            return self.unavailable(&StoreError::Corrupt("entry without content".into()));
        };
        let Some(status) = answer::served(decision, content, now, arrival) else {
            return self.unavailable(&StoreError::Corrupt(
                "content served for a decision that serves none".into(),
            ));
        };
        let age = now.since(content.generated_at).as_secs();
        respond::stored(
            &content.response,
            Some(age),
            self.headers,
            self.head,
            &status,
        )
    }

    fn failed(&self, entry: Option<&Entry>, now: Timestamp, arrival: Arrival) -> Response<Body> {
        let Some(crate::pattern::Status::Failed(failure)) = entry.map(|e| &e.status) else {
            return self.unavailable(&StoreError::Corrupt(
                "failed decision without a failure".into(),
            ));
        };
        let status = arrival.status(Phase::Failed, failure.response.status, false);
        // A relayed upstream error keeps the origin's headers; errand's own says no-store.
        let mut answer = respond::stored(
            &failure.response,
            None,
            &HeaderMap::new(),
            self.head,
            &status,
        );
        respond::retry_after(&mut answer, answer::failed_retry_after(failure.until, now));
        answer
    }

    /// `202 Accepted`: come back in `Retry-After` seconds.
    fn accepted(&self, entry: Option<&Entry>, phase: Phase, now: Timestamp) -> Response<Body> {
        let job = entry.and_then(Entry::job);
        let expected = entry
            .and_then(|e| e.content.as_ref())
            .map(|c| Duration::from_millis(c.job_millis))
            .unwrap_or_else(|| self.shared.estimates.expected(self.route));
        let secs = answer::pending_retry_after(job, expected, now, self.retry_bounds());
        let attempts = job.map_or(0, |j| j.attempts);
        let body = serde_json::json!({
            "state": "pending",
            "key": self.signature.key.to_string(),
            "retry_after": secs,
            "attempts": attempts,
        });
        let status = CacheStatus::new(phase);
        let mut answer = respond::generated(
            StatusCode::ACCEPTED,
            "application/json",
            format!("{body}\n"),
            self.head,
            Some(&status),
        );
        respond::retry_after(&mut answer, secs);
        if self.prefer.respond_async {
            answer.headers_mut().insert(
                "preference-applied",
                HeaderValue::from_static("respond-async"),
            );
        }
        answer
    }

    /// `503` + `Retry-After`: the store could not be reached (or refuses new jobs).
    fn unavailable(&self, error: &StoreError) -> Response<Body> {
        // The details (a database URL, a server message) are for the log, not the public.
        let (detail, state, message) = match error {
            StoreError::Full(_) => (
                Detail::QueueFull,
                "queue-full",
                "too many requests are waiting for work; try again",
            ),
            _ => (
                Detail::StoreUnavailable,
                "unavailable",
                "the cache store is unavailable; try again",
            ),
        };
        tracing::warn!(key = %self.signature.key, %error, "answering 503");
        let body = serde_json::json!({ "state": state, "error": message });
        let status = CacheStatus::new(Phase::Error).detail(detail);
        let mut answer = respond::generated(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            format!("{body}\n"),
            self.head,
            Some(&status),
        );
        respond::retry_after(
            &mut answer,
            answer::unavailable_retry_after(self.retry_bounds()),
        );
        answer
    }
}
