//! Claims that go together: at most two claim statements in flight, the rest grouped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::Row;

use super::pool::{SendError, pooled_query};
use crate::pattern::Key;
use crate::store::StoreError;

/// Claims made while [`CLAIM_SENDERS`] claim statements are in flight wait for one of them to
/// end, then go together in one statement.
///
/// A claim is a statement and a durable commit, and on a busy front the cost of a statement
/// (round trip, commit, the server's work per statement) outweighs that of a row: pgbench ran
/// these statements at 53-57k claims/s with eight claims a statement, against 10-11k with
/// one (`scripts/bench-postgres-sql 6 3 8 claim claim8`, BENCHMARKS.md). A claim made while
/// fewer statements are in flight and none waits goes at once, alone, from its caller's own
/// task: under light load a claim costs what it did before. A statement carries up to
/// [`CLAIMS_PER_STATEMENT`] distinct keys in key order, so two statements never wait on each
/// other's rows (a deadlock); a second claim of a key already in it waits for the next.
/// Groups are sent by a task of their own, so a caller that gives up (its client went away)
/// never takes the others' claims with it.
pub(super) struct ClaimQueue {
    pub(super) state: std::sync::Mutex<ClaimQueueState>,
    pub(super) pool: Pool,
    pub(super) url: String,
    /// The single-row claim and the grouped one.
    pub(super) single: String,
    pub(super) grouped: String,
    pub(super) limit: Duration,
    /// [`CLAIM_SENDERS`], or no limit when claims are not grouped.
    pub(super) max_senders: usize,
    /// Claim statements sent, and grouped ones the server refused.
    pub(super) statements: AtomicU64,
    pub(super) refused: AtomicU64,
}

#[derive(Default)]
pub(super) struct ClaimQueueState {
    pub(super) waiting: Vec<QueuedClaim>,
    /// Claim statements in flight.
    pub(super) senders: usize,
}

/// A claim's parameters, as the claim statements take them.
pub(super) struct ClaimParams {
    pub(super) key: Key,
    pub(super) uri: String,
    pub(super) priority: i16,
    pub(super) now: i64,
    pub(super) request: String,
    pub(super) expect: Option<i64>,
}

/// A claim waiting for a statement, and where its row goes (`None`: the entry was there).
pub(super) struct QueuedClaim {
    pub(super) params: ClaimParams,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<Option<Row>, StoreError>>,
}

/// Claim statements in flight at once; claims made meanwhile wait and go together.
pub(super) const CLAIM_SENDERS: usize = 2;

/// Most claims in one statement.
pub(super) const CLAIMS_PER_STATEMENT: usize = 64;

impl ClaimQueueState {
    /// The next statement's claims: up to [`CLAIMS_PER_STATEMENT`] distinct keys, in key
    /// order. Claims whose caller gave up are left out.
    pub(super) fn next_group(&mut self) -> Vec<QueuedClaim> {
        let mut group: Vec<QueuedClaim> = Vec::new();
        let mut rest = Vec::new();
        for claim in self.waiting.drain(..) {
            if claim.reply.is_closed() {
                continue;
            }
            if group.len() < CLAIMS_PER_STATEMENT
                && group.iter().all(|c| c.params.key != claim.params.key)
            {
                group.push(claim);
            } else {
                rest.push(claim);
            }
        }
        self.waiting = rest;
        group.sort_by_key(|c| c.params.key);
        group
    }
}

/// A caller's own claim statement in flight; when it ends (or the caller gives up), the
/// claims that waited meanwhile go on in a task of their own.
pub(super) struct Slot<'a>(&'a Arc<ClaimQueue>);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        let runtime = tokio::runtime::Handle::try_current();
        match runtime {
            Ok(runtime) if !state.waiting.is_empty() => {
                let group = state.next_group();
                runtime.spawn(Arc::clone(self.0).send(group));
            }
            _ => state.senders -= 1,
        }
    }
}

impl ClaimQueue {
    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, ClaimQueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the claim, alone or with others; the row it won, or `None` when the entry was
    /// there.
    pub(super) async fn claim(
        self: &Arc<Self>,
        params: ClaimParams,
    ) -> Result<Option<Row>, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        enum Route {
            Alone(ClaimParams),
            Wait,
            Send(Vec<QueuedClaim>),
        }
        let route = {
            let mut state = self.state();
            if state.senders >= self.max_senders {
                state.waiting.push(QueuedClaim { params, reply });
                Route::Wait
            } else if state.waiting.is_empty() {
                state.senders += 1;
                Route::Alone(params)
            } else {
                state.waiting.push(QueuedClaim { params, reply });
                state.senders += 1;
                Route::Send(state.next_group())
            }
        };
        match route {
            // Sent from here, at once.
            Route::Alone(params) => {
                let _slot = Slot(self);
                let rows = self
                    .send_one(&params)
                    .await
                    .map_err(SendError::into_inner)?;
                return Ok(rows.into_iter().next());
            }
            Route::Send(group) => {
                tokio::spawn(Arc::clone(self).send(group));
            }
            Route::Wait => {}
        }
        // The wait for a statement in flight and this claim's own, bounded as any call is: a
        // database that hangs costs a waiting claim no more than one that goes alone.
        let limit = self.limit;
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(StoreError::unavailable(
                "the claim was dropped before it was sent",
            )),
            Err(_) => Err(StoreError::Timeout(limit)),
        }
    }

    /// Sends `group`, then whatever waited meanwhile, until nothing waits.
    pub(super) async fn send(self: Arc<Self>, mut group: Vec<QueuedClaim>) {
        loop {
            self.send_group(group).await;
            let mut state = self.state();
            if state.waiting.is_empty() {
                state.senders -= 1;
                return;
            }
            group = state.next_group();
        }
    }

    pub(super) async fn send_group(&self, group: Vec<QueuedClaim>) {
        if group.len() > 1 {
            match self.send_grouped(&group).await {
                Ok(rows) => {
                    let mut rows: Vec<Option<Row>> = rows.into_iter().map(Some).collect();
                    for claim in group {
                        let key = claim.params.key;
                        let won = rows.iter_mut().find(|row| {
                            row.as_ref().is_some_and(|row| {
                                row.try_get::<_, &[u8]>("key")
                                    .is_ok_and(|k| k == key.as_bytes().as_slice())
                            })
                        });
                        let _ = claim.reply.send(Ok(won.and_then(Option::take)));
                    }
                    return;
                }
                Err(SendError::Down(e)) => {
                    for claim in group {
                        let _ = claim.reply.send(Err(e.clone()));
                    }
                    return;
                }
                Err(SendError::Refused(e)) => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        error = %e,
                        claims = group.len(),
                        "a grouped claim was refused; claiming one by one"
                    );
                }
            }
        }
        for claim in group {
            let outcome = self
                .send_one(&claim.params)
                .await
                .map(|rows| rows.into_iter().next())
                .map_err(SendError::into_inner);
            let _ = claim.reply.send(outcome);
        }
    }

    pub(super) async fn send_one(&self, c: &ClaimParams) -> Result<Vec<Row>, SendError> {
        let key = c.key.as_bytes().as_slice();
        self.query(
            &self.single,
            &[&key, &c.uri, &c.priority, &c.now, &c.request, &c.expect],
        )
        .await
    }

    pub(super) async fn send_grouped(&self, group: &[QueuedClaim]) -> Result<Vec<Row>, SendError> {
        let claims = || group.iter().map(|c| &c.params);
        let keys: Vec<&[u8]> = claims().map(|c| c.key.as_bytes().as_slice()).collect();
        let uris: Vec<&str> = claims().map(|c| c.uri.as_str()).collect();
        let priorities: Vec<i16> = claims().map(|c| c.priority).collect();
        let nows: Vec<i64> = claims().map(|c| c.now).collect();
        let requests: Vec<&str> = claims().map(|c| c.request.as_str()).collect();
        let expects: Vec<Option<i64>> = claims().map(|c| c.expect).collect();
        self.query(
            &self.grouped,
            &[&keys, &uris, &priorities, &nows, &requests, &expects],
        )
        .await
    }

    pub(super) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, SendError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        pooled_query(&self.pool, &self.url, self.limit, sql, params).await
    }
}
