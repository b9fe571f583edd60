//! The connection pool's calls: one statement under the call timeout, and idle connections closed.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::Row;

use super::{db, pool_error};
use crate::store::{StoreError, redact};

/// Why a claim statement failed: the server refused it (a group is then claimed row by row,
/// so one claim cannot fail the others), or the database was not reached in time.
pub(super) enum SendError {
    Refused(StoreError),
    Down(StoreError),
}

impl SendError {
    pub(super) fn into_inner(self) -> StoreError {
        match self {
            Self::Refused(e) | Self::Down(e) => e,
        }
    }
}

/// Runs `f` with a connection from `pool`, under `limit`, pool wait included.
pub(super) async fn pooled<T, F, Fut>(
    pool: &Pool,
    url: &str,
    limit: Duration,
    f: F,
) -> Result<T, SendError>
where
    F: FnOnce(deadpool_postgres::Object) -> Fut,
    Fut: std::future::Future<Output = Result<T, SendError>>,
{
    let call = async {
        let client = pool.get().await.map_err(|e| {
            SendError::Down(StoreError::unavailable_because(
                format!("{}: {}", redact(url), pool_error(&e)),
                e,
            ))
        })?;
        f(client).await
    };
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or(Err(SendError::Down(StoreError::Timeout(limit))))
}

/// One prepared (and cached) statement on a pooled connection, under `limit`, pool wait
/// included. A server's refusal and an unreachable database are told apart.
pub(super) async fn pooled_query(
    pool: &Pool,
    url: &str,
    limit: Duration,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Row>, SendError> {
    pooled(pool, url, limit, |client| async move {
        let failed = |e: tokio_postgres::Error| {
            if e.as_db_error().is_some() {
                SendError::Refused(db(e))
            } else {
                SendError::Down(db(e))
            }
        };
        let statement = client.prepare_cached(sql).await.map_err(failed)?;
        client.query(&statement, params).await.map_err(failed)
    })
    .await
}

/// Closes the pool's connections left unused for `idle`, looking every half of it.
pub(super) async fn close_idle(pool: Pool, idle: Duration) {
    let every = (idle / 2).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        let closed = pool.retain(|_, use_| use_.last_used() < idle).removed.len();
        if closed > 0 {
            tracing::debug!(closed, "closed idle PostgreSQL connections");
        }
    }
}
