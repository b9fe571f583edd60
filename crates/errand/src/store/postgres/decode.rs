//! Rows to entries and jobs, and the store clock's milliseconds.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use tokio_postgres::Row;

use crate::pattern::{
    Content, Entry, Failure, JobId, JobInfo, Key, PassInfo, Priority, RequestRecord, Status,
    StoredResponse, Timestamp,
};
use crate::store::codec::decode_headers;
use crate::store::{Claim, Job, LeaseToken, StoreError};

pub(super) fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

pub(super) fn ts(v: i64) -> Timestamp {
    Timestamp(u64::try_from(v).unwrap_or(0))
}

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

pub(super) fn response(
    status: Option<i16>,
    headers: Option<Vec<u8>>,
    body: Option<Vec<u8>>,
) -> Result<Option<Arc<StoredResponse>>, StoreError> {
    let Some(status) = status else {
        return Ok(None);
    };
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| corrupt("status"))?;
    let (headers, selecting) =
        decode_headers(&headers.unwrap_or_default()).ok_or_else(|| corrupt("headers"))?;
    Ok(Some(Arc::new(StoredResponse {
        status,
        headers,
        body: Bytes::from(body.unwrap_or_default()),
        selecting,
    })))
}

fn priority(v: i16) -> Priority {
    if v == Priority::Refresh as i16 {
        Priority::Refresh
    } else {
        Priority::Miss
    }
}

fn key_of(bytes: &[u8]) -> Result<Key, StoreError> {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Key::parse(&hex).ok_or_else(|| corrupt("key"))
}

/// Jobs from the rows of a take, each with its run time (to order them by).
pub(super) fn jobs_of(rows: &[Row], redelivered: bool) -> Result<Vec<(i64, Job)>, StoreError> {
    let get = |e: tokio_postgres::Error| StoreError::Corrupt(e.to_string());
    let mut jobs = Vec::with_capacity(rows.len());
    for row in rows {
        let request: String = row.try_get("request").map_err(get)?;
        let request: RequestRecord =
            serde_json::from_str(&request).map_err(|e| corrupt(&e.to_string()))?;
        let run_at: i64 = row.try_get("run_at").map_err(get)?;
        jobs.push((
            run_at,
            Job {
                lease: LeaseToken {
                    key: key_of(row.try_get::<_, &[u8]>("key").map_err(get)?)?,
                    job: JobId(
                        u64::try_from(row.try_get::<_, i64>("job_id").map_err(get)?).unwrap_or(0),
                    ),
                    token: u64::try_from(row.try_get::<_, i64>("lease_token").map_err(get)?)
                        .unwrap_or(0),
                },
                lease_until: ts(row.try_get("lease_until").map_err(get)?),
                request,
                priority: priority(row.try_get("priority").map_err(get)?),
                attempt: u32::try_from(row.try_get::<_, i32>("attempts").map_err(get)?)
                    .unwrap_or(0),
                created_at: ts(row.try_get("created_at").map_err(get)?),
                redelivered,
            },
        ));
    }
    Ok(jobs)
}

/// The pending entry a claim made: what it wrote, with what it returned (the row's version,
/// job id and kept copy). `leased_until`: handed over to a worker of this process.
pub(super) fn claimed_entry(
    claim: &Claim,
    now: Timestamp,
    leased_until: Option<Timestamp>,
    row: &Row,
) -> Result<Entry, StoreError> {
    let get = |e: tokio_postgres::Error| StoreError::Corrupt(e.to_string());
    let version: i64 = row.try_get("version").map_err(get)?;
    let job: i64 = row.try_get("job_id").map_err(get)?;
    let mut info = JobInfo::claimed(
        JobId(u64::try_from(job).unwrap_or(0)),
        claim.priority,
        now,
        row.try_get("after_failure").map_err(get)?,
    );
    if let Some(until) = leased_until {
        // Handed over: its first attempt is leased already.
        info.attempts = 1;
        info.lease_until = Some(until);
    }
    Ok(Entry {
        key: claim.key,
        uri: claim.uri.as_str().into(),
        version: u64::try_from(version).unwrap_or(0),
        content: content_from_row(row)?,
        status: Status::Pending(info),
    })
}

/// A nullable `bigint` column of a row, 0 when NULL.
fn millis(row: &Row, column: &str) -> Result<i64, StoreError> {
    row.try_get::<_, Option<i64>>(column)
        .map(Option::unwrap_or_default)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A nullable time column of a row (store-clock milliseconds), the epoch when NULL.
fn instant(row: &Row, column: &str) -> Result<Timestamp, StoreError> {
    millis(row, column).map(ts)
}

/// The stored copy in a row (`c_*` columns and tags), if it has one.
fn content_from_row(row: &Row) -> Result<Option<Content>, StoreError> {
    let get = |e: tokio_postgres::Error| StoreError::Corrupt(e.to_string());
    Ok(
        match response(
            row.try_get("c_status").map_err(get)?,
            row.try_get("c_headers").map_err(get)?,
            row.try_get("c_body").map_err(get)?,
        )? {
            Some(response) => Some(Content {
                response,
                generated_at: instant(row, "c_generated_at")?,
                fresh_until: instant(row, "c_fresh_until")?,
                stale_until: instant(row, "c_stale_until")?,
                stale_if_error_until: instant(row, "c_sie_until")?,
                tags: row.try_get("tags").map_err(get)?,
                job_millis: u64::try_from(millis(row, "c_job_millis")?).unwrap_or(0),
            }),
            None => None,
        },
    )
}

pub(super) fn entry_from_row(row: &Row) -> Result<Entry, StoreError> {
    let get = |e: tokio_postgres::Error| StoreError::Corrupt(e.to_string());
    let key = key_of(row.try_get::<_, &[u8]>("key").map_err(get)?)?;
    let content = content_from_row(row)?;
    let status = if row.try_get::<_, bool>("pending").map_err(get)? {
        Status::Pending(JobInfo {
            id: JobId(u64::try_from(millis(row, "job_id")?).unwrap_or(0)),
            priority: priority(
                row.try_get::<_, Option<i16>>("priority")
                    .map_err(get)?
                    .unwrap_or(0),
            ),
            created_at: instant(row, "created_at")?,
            run_at: instant(row, "run_at")?,
            attempts: u32::try_from(row.try_get::<_, i32>("attempts").map_err(get)?).unwrap_or(0),
            lease_until: row
                .try_get::<_, Option<i64>>("lease_until")
                .map_err(get)?
                .map(ts),
            last_error: row.try_get("last_error").map_err(get)?,
            after_failure: row.try_get("after_failure").map_err(get)?,
        })
    } else {
        let until = instant(row, "v_until")?;
        let verdict = response(
            row.try_get("v_status").map_err(get)?,
            row.try_get("v_headers").map_err(get)?,
            row.try_get("v_body").map_err(get)?,
        )?;
        let text: Option<String> = row.try_get("v_text").map_err(get)?;
        match row.try_get::<_, i16>("v_kind").map_err(get)? {
            1 => Status::Failed(Failure {
                until,
                response: verdict.ok_or_else(|| corrupt("failure without a response"))?,
                error: text.unwrap_or_default(),
                attempts: u32::try_from(
                    row.try_get::<_, Option<i32>>("v_attempts")
                        .map_err(get)?
                        .unwrap_or(0),
                )
                .unwrap_or(0),
                at: instant(row, "v_at")?,
                request: row
                    .try_get::<_, Option<String>>("request")
                    .map_err(get)?
                    .map(|r| serde_json::from_str(&r))
                    .transpose()
                    .map_err(|e| corrupt(&format!("failed request: {e}")))?,
            }),
            2 => Status::Pass(PassInfo {
                until,
                once: verdict,
                reason: text.unwrap_or_default(),
            }),
            _ => Status::Idle,
        }
    };
    Ok(Entry {
        key,
        uri: row.try_get::<_, String>("uri").map_err(get)?.into(),
        version: u64::try_from(row.try_get::<_, i64>("version").map_err(get)?).unwrap_or(0),
        content,
        status,
    })
}

pub(super) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
