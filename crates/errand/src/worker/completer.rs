//! Sends finished jobs' completions to the store, batched when they pile up, and sends a
//! completion again while the store cannot be reached and the lease leaves time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Errand;
use crate::pattern::{Completion, Timestamp};
use crate::store::{Job, LeaseToken, StoreError};

/// One completion on its way to the store, with where to send its result.
type Pending = (
    LeaseToken,
    Completion,
    tokio::sync::oneshot::Sender<Result<(), StoreError>>,
);

/// Sends finished jobs' completions to the store: at once when they come one at a time, and
/// everything that finished meanwhile in one [`complete`](crate::store::Store::complete)
/// when they pile up, so a busy worker pays one round trip for many jobs.
#[derive(Clone, Debug)]
pub(super) struct Completer {
    queue: tokio::sync::mpsc::UnboundedSender<Pending>,
}

/// Most completions sent in one call.
const COMPLETE_BATCH: usize = 64;

impl Completer {
    pub(super) fn spawn(errand: Errand) -> (Self, tokio::task::JoinHandle<()>) {
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
                let results = match tokio::time::timeout(limit, store.complete(jobs)).await {
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
            .map_err(|_| StoreError::unavailable("the worker is shutting down"))?;
        result
            .await
            .unwrap_or_else(|_| Err(StoreError::unavailable("the completer stopped")))
    }

    /// Sends a job's completion. While the store cannot be reached (unavailable, or too
    /// slow), sends it again, pausing longer each time (100 ms doubling to 2 s), as long as
    /// the lease leaves time for the try: a database that restarts within the lease gets
    /// the result, and the job does not run again. Returns the last result and the number
    /// of tries.
    pub(super) async fn complete_while_leased(
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
                Err(StoreError::Unavailable { .. } | StoreError::Timeout(_))
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
