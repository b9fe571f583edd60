//! The worker runtime: the seed's "Worker" loop, with leases.
//!
//! take jobs (as many as free slots) → rebuild each job's request → run it through the app's
//! handler (or, in the proxy, the upstream call) under the job timeout, renewing the lease
//! meanwhile → classify the outcome ([`classify`]) → [`complete`](crate::store::Store::complete)
//! (store + acknowledge + wake-up, fenced by the lease).
//!
//! A completion the store cannot take (it is down, restarting or too slow) is sent again,
//! with growing pauses, for as long as the lease leaves time: when a shared database comes
//! back within the lease, the result is stored and the job does not run a second time.
//! Otherwise the job is redelivered once its lease ends, as after a crash.
//!
//! On shutdown it stops taking jobs, lets running ones finish within
//! [`JobConfig::shutdown_timeout`](crate::config::JobConfig::shutdown_timeout), and hands the
//! rest back to the queue so another worker runs them at once.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_service::Service;
use tracing::Instrument;

use crate::body::BoxError;
use crate::config::{JobConfig, RoutePolicy};
use crate::front::Errand;
use crate::pattern::freshness::{NoStore, clamp_lifetime, strip_hop_by_hop, tags};
use crate::pattern::{
    Classification, Content, Failure, JobOutcome, Key, PassInfo, StoredResponse, Timestamp,
    TraceParent, classify,
};
use crate::store::{Completion, Job, LeaseToken, StoreError, timed};

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

/// How long an idle worker sleeps when no notification comes (a fallback, not the wake-up
/// mechanism).
const IDLE_POLL: Duration = Duration::from_secs(5);

/// Runs jobs of an [`Errand`] deployment with a service. Made by [`Errand::worker`].
pub struct Worker<S> {
    errand: Errand,
    service: S,
    concurrency: usize,
}

impl<S> fmt::Debug for Worker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl<S, ResBody> Worker<S>
where
    S: Service<Request<JobBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    pub(crate) fn new(errand: Errand, service: S) -> Self {
        let concurrency = errand.config().jobs.concurrency.max(1);
        Self {
            errand,
            service,
            concurrency,
        }
    }

    /// How many jobs run at once (default: [`JobConfig::concurrency`]).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Runs on a task of its own until `shutdown` is cancelled and running jobs are done
    /// (see [`run`](Self::run)).
    pub fn spawn(
        self,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<Result<(), WorkerError>> {
        tokio::spawn(self.run(shutdown))
    }

    /// Runs until `shutdown` is cancelled; then stops taking jobs, lets running ones finish
    /// within the shutdown timeout and hands the others back.
    ///
    /// # Errors
    ///
    /// [`WorkerError::Panicked`] when a job's task panicked (a bug in the service, or in
    /// errand): the runtime then stops as if shut down, handing back the jobs it holds, the
    /// panicked one included, so that a process can exit and be restarted instead of
    /// running on with a worker in an unknown state.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let config = self.errand.config().jobs.clone();
        let store = Arc::clone(self.errand.store());
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let held: Arc<Mutex<HashSet<LeaseToken>>> = Arc::default();
        let (completer, completing) = Completer::spawn(self.errand.clone());
        let mut running = JoinSet::new();
        let mut panicked = None;
        loop {
            while let Some(ended) = running.try_join_next() {
                note_panic(ended, &mut panicked);
            }
            if panicked.is_some() {
                break;
            }
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let free = slots.available_permits() + 1;
            let jobs = match timed(config.store_timeout, store.take(free, config.lease)).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, "could not take jobs; retrying in 1s");
                    drop(permit);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if jobs.is_empty() {
                drop(permit);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = store.wait_for_jobs(IDLE_POLL) => continue,
                    // A job ending while the queue is idle: a panic is seen at once.
                    Some(ended) = running.join_next(), if !running.is_empty() => {
                        note_panic(ended, &mut panicked);
                        continue;
                    }
                }
            }
            let mut first = Some(permit);
            for job in jobs {
                let permit = match first.take() {
                    Some(permit) => permit,
                    // `free` slots were available and only this loop takes them.
                    None => match Arc::clone(&slots).acquire_owned().await {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                };
                lock(&held).insert(job.lease.clone());
                let run = JobRun {
                    errand: self.errand.clone(),
                    service: self.service.clone(),
                    held: Arc::clone(&held),
                    completer: completer.clone(),
                };
                running.spawn(run.run(job, permit));
            }
        }
        // No more takes: jobs the store leased ahead to this process go back to the queue.
        match timed(config.store_timeout, store.hand_back_unstarted()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "handed back jobs no worker had started"),
            Err(e) => {
                tracing::warn!(error = %e, "could not hand back unstarted jobs; their leases will expire")
            }
        }
        drain(&self.errand, running, held, &config, &mut panicked).await;
        // Every job has finished or been handed back: nothing more to send.
        drop(completer);
        let _ = completing.await;
        panicked.map_or(Ok(()), |message| Err(WorkerError::Panicked(message)))
    }
}

/// Why a worker runtime stopped on its own.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A job's task panicked, with this message.
    #[error("a job's task panicked: {0}")]
    Panicked(String),
}

/// Records the panic of an ended job task, if it panicked (the first one is kept), and logs
/// it.
fn note_panic(ended: Result<(), tokio::task::JoinError>, panicked: &mut Option<String>) {
    let Err(error) = ended else { return };
    if !error.is_panic() {
        return;
    }
    let payload = error.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    tracing::error!(panic = %message, "a job's task panicked; the worker stops taking jobs");
    panicked.get_or_insert(message);
}

/// Waits for running jobs up to the shutdown timeout, then hands back what is still held.
async fn drain(
    errand: &Errand,
    mut running: JoinSet<()>,
    held: Arc<Mutex<HashSet<LeaseToken>>>,
    config: &JobConfig,
    panicked: &mut Option<String>,
) {
    let deadline = tokio::time::sleep(config.shutdown_timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = running.join_next() => match next {
                Some(ended) => note_panic(ended, panicked),
                None => break,
            },
            _ = &mut deadline => {
                running.abort_all();
                while let Some(ended) = running.join_next().await {
                    note_panic(ended, panicked);
                }
                break;
            }
        }
    }
    let leftover: Vec<LeaseToken> = lock(&held).drain().collect();
    let store = errand.store();
    for lease in leftover {
        // Hand the job back: ready again now, for any worker.
        let back = Completion::Retry {
            run_at: store.now(),
            error: "worker shut down before the job finished".into(),
        };
        match timed(config.store_timeout, store.complete(&lease, back)).await {
            Ok(()) => tracing::info!(key = %lease.key, "handed back a running job at shutdown"),
            Err(e) => {
                tracing::warn!(key = %lease.key, error = %e, "could not hand back a job; its lease will expire")
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One job being run.
struct JobRun<S> {
    errand: Errand,
    service: S,
    held: Arc<Mutex<HashSet<LeaseToken>>>,
    completer: Completer,
}

/// One completion on its way to the store, with where to send its result.
type Pending = (
    LeaseToken,
    Completion,
    tokio::sync::oneshot::Sender<Result<(), StoreError>>,
);

/// Sends finished jobs' completions to the store: at once when they come one at a time, and
/// everything that finished meanwhile in one [`complete_many`](crate::store::Store::complete_many)
/// when they pile up, so a busy worker pays one round trip for many jobs.
#[derive(Clone, Debug)]
struct Completer {
    queue: tokio::sync::mpsc::UnboundedSender<Pending>,
}

/// Most completions sent in one call.
const COMPLETE_BATCH: usize = 64;

impl Completer {
    fn spawn(errand: Errand) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, mut incoming) = tokio::sync::mpsc::unbounded_channel::<Pending>();
        let task = tokio::spawn(async move {
            let store = Arc::clone(errand.store());
            let limit = errand.config().jobs.store_timeout;
            while let Some(first) = incoming.recv().await {
                let mut batch = vec![first];
                while batch.len() < COMPLETE_BATCH {
                    match incoming.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (jobs, replies): (Vec<_>, Vec<_>) = batch
                    .into_iter()
                    .map(|(lease, c, reply)| ((lease, c), reply))
                    .unzip();
                let count = jobs.len();
                let results = match tokio::time::timeout(limit, store.complete_many(jobs)).await {
                    Ok(results) => results,
                    Err(_) => (0..count)
                        .map(|_| Err(StoreError::Timeout(limit)))
                        .collect(),
                };
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
        });
        (Self { queue }, task)
    }

    async fn complete(&self, lease: LeaseToken, completion: Completion) -> Result<(), StoreError> {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.queue
            .send((lease, completion, reply))
            .map_err(|_| StoreError::Unavailable("the worker is shutting down".into()))?;
        result
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the completer stopped".into())))
    }

    /// Sends a job's completion. While the store cannot be reached (unavailable, or too
    /// slow), sends it again, pausing longer each time (100 ms doubling to 2 s), as long as
    /// the lease leaves time for the try: a database that restarts within the lease gets
    /// the result, and the job does not run again. Returns the last result and the number
    /// of tries.
    async fn complete_while_leased(
        &self,
        errand: &Errand,
        job: &Job,
        completion: Completion,
        leased_until: &AtomicU64,
    ) -> (Result<(), StoreError>, u32) {
        let store = errand.store();
        let limit = errand.config().jobs.store_timeout;
        let mut pause = Duration::from_millis(100);
        let mut tries = 1;
        loop {
            let result = self.complete(job.lease.clone(), completion.clone()).await;
            let unreachable = matches!(
                result,
                Err(StoreError::Unavailable(_) | StoreError::Timeout(_))
            );
            let until = Timestamp(leased_until.load(Ordering::Acquire));
            if !unreachable || self.queue.is_closed() || store.now().plus(pause + limit) >= until {
                return (result, tries);
            }
            if let Err(e) = &result {
                tracing::warn!(
                    key = %job.lease.key, attempt = job.attempt, error = %e,
                    retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                    "could not complete the job; trying again while its lease lasts"
                );
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
            tries += 1;
        }
    }
}

/// What one attempt produced, before classification.
enum Attempt {
    /// A whole response.
    Response(http::response::Parts, Bytes),
    /// A response whose body exceeded the maximum.
    TooLarge,
    /// No response: connection error, handler error, timeout.
    Error(StatusCode, String),
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
    async fn run(self, job: Job, permit: OwnedSemaphorePermit) {
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
        let attempt = tokio::select! {
            attempt = run_attempt(self.service.clone(), &job, trace, config) => attempt,
            _ = lost.cancelled() => {
                heartbeat.abort();
                lock(&self.held).remove(&job.lease);
                crate::metrics::counters().lease_lost.increment(1);
                tracing::warn!(key = %job.lease.key, attempt = job.attempt, "lease lost mid-job; abandoned");
                return;
            }
        };
        heartbeat.abort();
        let took = started.elapsed();
        let now = store.now();
        let (completion, outcome) = self.completion(&job, attempt, policy, now, took);
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

    /// Classifies an attempt into what to store, and names the outcome for the job log line.
    fn completion(
        &self,
        job: &Job,
        attempt: Attempt,
        policy: &RoutePolicy,
        now: Timestamp,
        took: Duration,
    ) -> (Completion, JobOutcome) {
        let config = &self.errand.config().jobs;
        let jitter: f64 = rand::random();
        let (status, error, upstream) = match attempt {
            Attempt::Response(parts, body) => {
                let verdict = classify(
                    parts.status,
                    &parts.headers,
                    &policy.windows,
                    &policy.key_headers,
                    jitter,
                );
                let tags = tags(&parts.headers);
                let response = stored_response(parts, body);
                match verdict {
                    Classification::Store {
                        fresh_for,
                        stale_for,
                        stale_if_error_for,
                        age,
                    } => {
                        let generated_at = Timestamp(
                            now.0
                                .saturating_sub(u64::try_from(age.as_millis()).unwrap_or(0)),
                        );
                        let fresh_until = generated_at.plus(fresh_for);
                        let content = Content {
                            response: Arc::new(response),
                            generated_at,
                            fresh_until,
                            stale_until: fresh_until.plus(stale_for),
                            stale_if_error_until: fresh_until.plus(stale_if_error_for),
                            tags,
                            job_millis: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                        };
                        return (Completion::Store(content), JobOutcome::Stored);
                    }
                    Classification::Pass(reason) => {
                        // The response may go to the one client whose request made it, unless
                        // it varies on a header that client's request did not carry here.
                        let once =
                            (!matches!(reason, NoStore::Vary(_))).then(|| Arc::new(response));
                        let pass = PassInfo {
                            until: now.plus(clamp_lifetime(policy.pass_ttl)),
                            once,
                            reason: reason.as_str().into(),
                        };
                        return (Completion::Pass(pass), JobOutcome::Pass);
                    }
                    Classification::Once => {
                        let reason = format!("status-{}", response.status.as_u16());
                        let pass = PassInfo {
                            until: now.plus(clamp_lifetime(policy.pass_ttl)),
                            once: Some(Arc::new(response)),
                            reason,
                        };
                        return (Completion::Pass(pass), JobOutcome::Once);
                    }
                    Classification::Retry => {
                        let error = format!("upstream answered {}", response.status);
                        // Only a real 5xx is relayed once every attempt failed; an invalid
                        // status (1xx as final, 600 and above) becomes errand's own 502.
                        if response.status.is_server_error() {
                            (response.status, error, Some(response))
                        } else {
                            (http::StatusCode::BAD_GATEWAY, error, None)
                        }
                    }
                }
            }
            Attempt::TooLarge => {
                let pass = PassInfo {
                    until: now.plus(clamp_lifetime(policy.pass_ttl)),
                    once: None,
                    reason: NoStore::TooLarge.as_str().into(),
                };
                return (Completion::Pass(pass), JobOutcome::Pass);
            }
            Attempt::Error(status, error) => (status, error, None),
        };
        if job.attempt < config.max_attempts {
            let delay = backoff(job.attempt, config.backoff_base, config.backoff_max, jitter);
            return (
                Completion::Retry {
                    run_at: now.plus(delay),
                    error,
                },
                JobOutcome::Retry,
            );
        }
        let response = upstream.unwrap_or_else(|| {
            let body =
                serde_json::json!({ "state": "failed", "error": error, "attempts": job.attempt });
            let mut headers = http::HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            StoredResponse {
                status,
                headers,
                body: format!("{body}\n").into(),
            }
        });
        let failure = Failure {
            until: now.plus(clamp_lifetime(policy.error_ttl)),
            response: Arc::new(response),
            error,
            attempts: job.attempt,
            at: now,
            // The store keeps the job's own request with the failure.
            request: None,
        };
        (Completion::Fail(failure), JobOutcome::Failed)
    }
}

/// Rebuilds the job's request and runs it under the job timeout, body included.
async fn run_attempt<S, ResBody>(
    mut service: S,
    job: &Job,
    trace: Option<TraceParent>,
    config: &JobConfig,
) -> Attempt
where
    S: Service<Request<JobBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let request = match build_request(job, trace) {
        Ok(request) => request,
        Err(e) => return Attempt::Error(StatusCode::BAD_GATEWAY, e),
    };
    let max_body = config.max_body;
    let call = async move {
        if let Err(e) = std::future::poll_fn(|cx| service.poll_ready(cx)).await {
            return Attempt::Error(StatusCode::BAD_GATEWAY, e.into().to_string());
        }
        let response = match service.call(request).await {
            Ok(response) => response,
            Err(e) => {
                let e = e.into();
                // A service that gave up waiting (a client timeout) means a gateway timeout.
                if e.is::<tokio::time::error::Elapsed>() {
                    return Attempt::Error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream timed out".into(),
                    );
                }
                return Attempt::Error(StatusCode::BAD_GATEWAY, e.to_string());
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
            Ok(bytes) => Attempt::Response(parts, bytes),
            Err(e) if e.is::<LengthLimitError>() => Attempt::TooLarge,
            Err(e) => Attempt::Error(StatusCode::BAD_GATEWAY, format!("reading the body: {e}")),
        }
    };
    match tokio::time::timeout(config.timeout, call).await {
        Ok(attempt) => attempt,
        Err(_) => Attempt::Error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("timed out after {:?}", config.timeout),
        ),
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

/// The job's request: `GET` of its path with `Host` and exactly its key headers.
fn build_request(job: &Job, trace: Option<TraceParent>) -> Result<Request<JobBody>, String> {
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
    for (name, value) in &record.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("stored header name {name:?}: {e}"))?;
        let value =
            HeaderValue::from_str(value).map_err(|e| format!("stored value of {name}: {e}"))?;
        headers.append(name, value);
    }
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

/// The response as it is kept: hop-by-hop headers and the framing length removed (the front
/// sets `Content-Length` from the stored body).
fn stored_response(mut parts: http::response::Parts, body: Bytes) -> StoredResponse {
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    StoredResponse {
        status: parts.status,
        headers: detach(&parts.headers),
        body,
    }
}

/// Copies header names and values into allocations of their own. A client parses headers as
/// zero-copy slices of its read buffer, so a stored header would otherwise keep that whole
/// buffer (often larger than the response) alive for as long as the entry lives, unseen by
/// the byte budget.
fn detach(headers: &http::HeaderMap) -> http::HeaderMap {
    let mut copy = http::HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name =
            HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        let mut fresh = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        fresh.set_sensitive(value.is_sensitive());
        copy.append(name, fresh);
    }
    copy
}

/// Delay before attempt `attempt + 1`: `base · 2^(attempt-1)`, capped at `max`, with "equal
/// jitter" (half fixed, half random) so retries of many jobs spread out.
pub fn backoff(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << exponent).min(max);
    full / 2 + full.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(30);
        assert_eq!(backoff(1, base, max, 0.0), Duration::from_millis(250));
        assert_eq!(backoff(1, base, max, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(3, base, max, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(20, base, max, 1.0), max);
        assert_eq!(backoff(20, base, max, 0.0), max / 2);
    }
}
