//! One job being run: its span, the lease kept alive while it runs, the attempt through the
//! service under the job timeout, [`settle`] on what came back, and the completion sent.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::header;
use http::{Request, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tower_service::Service;
use tracing::Instrument;

use super::completer::Completer;
use super::lock;
use crate::Errand;
use crate::body::BoxError;
use crate::config::JobConfig;
use crate::pattern::Sharing;
use crate::pattern::TraceParent;
use crate::pattern::outcome::{Attempt, AttemptError, Rules, received, settle};
use crate::pattern::revalidate::freshen;
use crate::pattern::vary::keep_selecting;
use crate::replay::{JobBody, build_request};
use crate::store::{Job, LeaseToken, StoreError, timed};

/// One job being run.
pub(super) struct JobRun<S> {
    pub(super) errand: Errand,
    pub(super) service: S,
    pub(super) held: Arc<Mutex<HashSet<LeaseToken>>>,
    pub(super) completer: Completer,
}

impl<S, ResBody> JobRun<S>
where
    S: Service<Request<JobBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    /// Runs one job in its span: `job{key attempt trace_id span_id parent_id}`, in the trace
    /// of the request that created it.
    pub(super) async fn run(self, job: Job, permit: OwnedSemaphorePermit) {
        let trace = job.request.trace.as_ref().map(TraceParent::child);
        let span = tracing::info_span!(
            "job",
            key = %job.lease.key,
            attempt = job.attempt,
            trace_id = trace.as_ref().map(|t| tracing::field::display(t.trace_hex())),
            span_id = trace.as_ref().map(|t| tracing::field::display(t.span_hex())),
            parent_id = job
                .request
                .trace
                .as_ref()
                .map(|t| tracing::field::display(t.span_hex())),
        );
        self.run_in_span(job, trace, permit).instrument(span).await;
    }

    async fn run_in_span(
        self,
        job: Job,
        trace: Option<TraceParent>,
        _permit: OwnedSemaphorePermit,
    ) {
        let started = Instant::now();
        let config = &self.errand.config().jobs;
        let store = Arc::clone(self.errand.store());
        let routes = &self.errand.config().routes;
        let path = job
            .request
            .path_and_query()
            .split('?')
            .next()
            .unwrap_or("/")
            .to_owned();
        let (route, policy) = routes.policy_for(&path);

        // Renew the lease while the job runs; if it is lost, another worker has the job and
        // this attempt is abandoned (its result could not be stored anyway).
        let lost = CancellationToken::new();
        // The end of the lease as last extended, so a completion the store could not take
        // is sent again only while the lease is still this worker's.
        let leased_until = Arc::new(AtomicU64::new(job.lease_until.0));
        let heartbeat = {
            let store = Arc::clone(&store);
            let lease = job.lease.clone();
            let lost = lost.clone();
            let leased_until = Arc::clone(&leased_until);
            let every = config.lease / 3;
            let (extend, limit) = (config.lease, config.store_timeout);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match timed(limit, store.heartbeat(&lease, extend)).await {
                        Ok(until) => leased_until.store(until.0, Ordering::Release),
                        Err(StoreError::LeaseLost) => {
                            lost.cancel();
                            break;
                        }
                        Err(e) => tracing::warn!(key = %lease.key, error = %e, "heartbeat failed"),
                    }
                }
            })
        };
        let mut attempt = tokio::select! {
            attempt = revalidate_or_fetch(self.service.clone(), &self.errand, &job, trace) => attempt,
            _ = lost.cancelled() => {
                heartbeat.abort();
                lock(&self.held).remove(&job.lease);
                crate::metrics::counters().lease_lost.increment(1);
                tracing::warn!(key = %job.lease.key, attempt = job.attempt, "lease lost mid-job; abandoned");
                return;
            }
        };
        heartbeat.abort();
        if let Attempt::Response(response) = &mut attempt {
            keep_selecting(response, &job.request, &policy.key_headers);
        }
        let took = started.elapsed();
        let now = store.now();
        let rules = Rules {
            windows: &policy.windows,
            sharing: Sharing {
                key_headers: &policy.key_headers,
                store_set_cookie: policy.store_set_cookie,
            },
            pass_ttl: policy.pass_ttl,
            error_ttl: policy.error_ttl,
            max_attempts: policy.max_attempts.unwrap_or(config.max_attempts),
            backoff_base: config.backoff_base,
            backoff_max: config.backoff_max,
        };
        let (completion, outcome) = settle(attempt, job.attempt, &rules, now, took, rand::random());
        // Before the completion: a client woken by it, or arriving right after, is told to
        // come back after a time that already counts this job.
        self.errand.estimates().observe(route, took);
        let (result, tries) = self
            .completer
            .complete_while_leased(&self.errand, &job, completion, &leased_until)
            .await;
        lock(&self.held).remove(&job.lease);
        let duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        let counters = crate::metrics::counters();
        crate::metrics::job_duration(routes.name(route), took.as_secs_f64());
        if job.redelivered {
            counters.redelivered.increment(1);
        }
        match &result {
            Ok(()) => counters.job(outcome),
            Err(StoreError::LeaseLost) => counters.lease_lost.increment(1),
            Err(_) => {}
        }
        match result {
            // Key, attempt and trace ids are fields of the job's span.
            Ok(()) => tracing::info!(
                route = routes.name(route),
                outcome = outcome.as_str(),
                duration_ms,
                "job done"
            ),
            Err(StoreError::LeaseLost) if tries > 1 => tracing::warn!(
                key = %job.lease.key, attempt = job.attempt, duration_ms, tries,
                "the store came back, but the lease is gone: an earlier try stored the \
                 result after all, or the lease ended and another worker has the job"
            ),
            Err(StoreError::LeaseLost) => tracing::warn!(
                key = %job.lease.key, attempt = job.attempt, duration_ms,
                "job finished after its lease was taken over (it ran out, or a write or purge \
                 invalidated the URL meanwhile); result dropped, the job runs again"
            ),
            Err(e) => tracing::error!(
                key = %job.lease.key, attempt = job.attempt, error = %e, tries,
                "could not complete the job; it will be redelivered when its lease ends"
            ),
        }
    }
}

/// The attempt: conditional when the job carries the stored response's validators, and a
/// `304 Not Modified` then freshens that stored response (RFC 9111 §4.3.4). Should the
/// stored response be gone meanwhile, the representation is fetched whole.
async fn revalidate_or_fetch<S, ResBody>(
    service: S,
    errand: &Errand,
    job: &Job,
    trace: Option<TraceParent>,
) -> Attempt
where
    S: Service<Request<JobBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let config = &errand.config().jobs;
    let conditional = !job.request.validators.is_empty();
    let attempt = run_attempt(service.clone(), job, trace, config, conditional).await;
    let Attempt::Response(not_modified) = &attempt else {
        return attempt;
    };
    if !conditional || not_modified.status != http::StatusCode::NOT_MODIFIED {
        return attempt;
    }
    let stored = timed(config.store_timeout, errand.store().lookup(&job.lease.key))
        .await
        .ok()
        .flatten()
        .and_then(|entry| entry.content);
    match stored {
        Some(content) => Attempt::Response(freshen(&content.response, &not_modified.headers)),
        None => run_attempt(service, job, trace, config, false).await,
    }
}

/// Rebuilds the job's request and runs it under the job timeout, body included.
async fn run_attempt<S, ResBody>(
    mut service: S,
    job: &Job,
    trace: Option<TraceParent>,
    config: &JobConfig,
    conditional: bool,
) -> Attempt
where
    S: Service<Request<JobBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let request = match build_request(job, trace, conditional) {
        Ok(request) => request,
        Err(e) => return Attempt::Failed(AttemptError::Upstream(e)),
    };
    let max_body = config.max_body;
    let call = async move {
        if let Err(e) = std::future::poll_fn(|cx| service.poll_ready(cx)).await {
            return Attempt::Failed(AttemptError::Upstream(e.into().to_string()));
        }
        let response = match service.call(request).await {
            Ok(response) => response,
            Err(e) => {
                let e = e.into();
                // A service that gave up waiting (a client timeout) means a gateway timeout.
                if e.is::<tokio::time::error::Elapsed>() {
                    return Attempt::Failed(AttemptError::TimedOut(None));
                }
                return Attempt::Failed(AttemptError::Upstream(e.to_string()));
            }
        };
        let (parts, body) = response.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > max_body) {
            return Attempt::TooLarge;
        }
        match collect(body, max_body, declared.unwrap_or(0)).await {
            Ok(bytes) => received(parts, bytes),
            Err(e) if e.is::<LengthLimitError>() => Attempt::TooLarge,
            Err(e) => Attempt::Failed(AttemptError::Upstream(format!("reading the body: {e}"))),
        }
    };
    match tokio::time::timeout(config.timeout, call).await {
        Ok(attempt) => attempt,
        Err(_) => Attempt::Failed(AttemptError::TimedOut(Some(config.timeout))),
    }
}

/// Reads a body of at most `max` bytes into one buffer, frame by frame, so the peak is the
/// body plus one frame (collecting the frames first and joining them would hold it twice).
async fn collect<B>(body: B, max: usize, size_hint: usize) -> Result<Bytes, BoxError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(Limited::new(body, max));
    let mut buffer = bytes::BytesMut::with_capacity(size_hint.min(max));
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}
