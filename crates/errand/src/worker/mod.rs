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

mod completer;
mod job;

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use self::completer::Completer;
use self::job::JobRun;
use crate::Errand;
use crate::body::BoxError;
use crate::config::JobConfig;
use crate::pattern::Completion;
use crate::replay::JobBody;
use crate::store::{LeaseToken, StoreExt, timed};

/// How long an idle worker sleeps when no notification comes (a fallback, not the wake-up
/// mechanism).
const IDLE_POLL: Duration = Duration::from_secs(5);

impl Errand {
    /// A worker runtime that runs `service` for this deployment's jobs. `service` may be the
    /// same app with the Layer on: a job's request is marked, so the Layer lets it through.
    pub fn worker<S, ResBody>(&self, service: S) -> Worker<S>
    where
        S: Service<Request<JobBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        ResBody: http_body::Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        Worker::new(self.clone(), service)
    }
}

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
        match timed(config.store_timeout, store.complete_one(&lease, back)).await {
            Ok(()) => tracing::info!(key = %lease.key, "handed back a running job at shutdown"),
            Err(e) => {
                tracing::warn!(key = %lease.key, error = %e, "could not hand back a job; its lease will expire")
            }
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
