//! The store conformance suite: every [`Store`] implementation runs it, unchanged.
//!
//! Use [`store_contract!`](crate::store_contract) in an integration test of the backend with
//! an async constructor that takes the suite's [`ManualClock`] and returns `Some(store)` (or
//! `None` to skip, e.g. a local run without the database; a CI run must not skip), and
//! optionally an async cleanup that gets the store back after each case, pass or fail:
//!
//! ```ignore
//! errand::store_contract!(|clock| async move {
//!     Some(errand::store::MemoryStore::with_clock(Default::default(), clock))
//! });
//! errand::store_contract!(make_pg_store, |store: Arc<PgStore>| async move { store.drop_schema().await });
//! ```
//!
//! Each case gets a fresh store and a clock it moves by hand, so lease expiry, backoff and
//! TTLs are tested without sleeping. Wake-ups are real notifications and are awaited with a
//! generous bound.

#![allow(clippy::unwrap_used, missing_docs)]

mod claim;
mod lease;
mod operate;
mod settle;
mod wait;

pub use claim::*;
pub use lease::*;
pub use operate::*;
pub use settle::*;
pub use wait::*;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};

use super::{
    Claim, ClaimOutcome, Completion, Inspect, ListQuery, ManualClock, Purge, PurgeTarget, Retried,
    Store, StoreError, StoreExt, retry,
};
use crate::pattern::{
    Content, Decision, Failure, Key, PassInfo, Priority, Signature, State, Status, StoredResponse,
    decide, decide_waited,
};

/// Generates one `#[tokio::test]` per contract case for the store made by `$make`.
#[macro_export]
macro_rules! store_contract {
    ($make:expr) => {
        $crate::store_contract!($make, |_store| async {});
    };
    ($make:expr, $cleanup:expr) => {
        $crate::store_contract!(@cases $make, $cleanup;
            claim_is_atomic_under_contention,
            claim_respects_the_expected_version,
            a_claim_returns_what_a_lookup_returns,
            take_orders_by_priority_then_run_time,
            a_job_carries_the_claiming_requests_headers,
            lease_expiry_redelivers_and_fences_the_old_lease,
            heartbeat_extends_a_lease,
            retry_is_scheduled_after_its_backoff,
            complete_turns_pending_into_fresh_failed_or_pass,
            a_variant_keeps_the_values_that_chose_it,
            wait_is_woken_by_complete,
            waiters_get_what_a_lookup_returns,
            a_wait_after_a_read_sees_a_completion_made_before_it_began,
            wait_times_out_while_pending,
            waiters_get_a_result_that_is_over_as_it_is_stored,
            wait_for_jobs_is_woken_by_claim,
            expired_entries_are_absent,
            purge_hard_soft_uri_prefix_tag,
            take_once_delivers_exactly_once,
            a_delivered_result_keeps_its_copy_to_revalidate,
            stats_count_entries_and_queue,
            a_batch_completion_fences_each_job,
            far_future_lifetimes_apply_whole,
            an_invalidation_fences_a_running_job,
            list_pages_through_entries_by_state,
            retry_enqueues_a_failed_entry_with_its_request
        );
    };
    (@cases $make:expr, $cleanup:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let clock = $crate::store::ManualClock::new();
                let make = $crate::store::contract::maker($make);
                let Some(store) = make(::std::sync::Arc::clone(&clock)).await else {
                    return;
                };
                let store = ::std::sync::Arc::new(store);
                // Run the case in a task of its own, so a failing case still cleans up.
                let outcome = ::tokio::spawn($crate::store::contract::$case(
                    ::std::sync::Arc::clone(&store) as ::std::sync::Arc<dyn $crate::store::Inspect>,
                    clock,
                ))
                .await;
                ($cleanup)(store).await;
                if let Err(failure) = outcome {
                    if failure.is_panic() {
                        ::std::panic::resume_unwind(failure.into_panic());
                    }
                    panic!("contract case did not finish: {failure}");
                }
            }
        )*
    };
}

/// Pins the constructor's argument to the suite's clock type (closure parameters are
/// otherwise inferred from their use, e.g. as `Arc<dyn Clock>`).
pub fn maker<F, Fut, S>(make: F) -> F
where
    F: FnOnce(Arc<ManualClock>) -> Fut,
    Fut: std::future::Future<Output = Option<S>>,
    S: Inspect,
{
    make
}

/// The signature of `GET http://contract.test{path}`.
pub fn signature(path: &str) -> Signature {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, "contract.test".parse().unwrap());
    Signature::of(&Method::GET, &path.parse().unwrap(), &headers, "http", &[]).unwrap()
}

/// A claim of `GET http://contract.test{path}`.
pub fn claim(path: &str, priority: Priority, expect: Option<u64>) -> Claim {
    let sig = signature(path);
    Claim {
        uri: sig.request.uri.clone(),
        key: sig.key,
        request: sig.request,
        priority,
        expect,
    }
}

fn response(body: &'static str) -> Arc<StoredResponse> {
    Arc::new(StoredResponse {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: body.into(),
        selecting: HeaderMap::new(),
    })
}

/// Content generated now: fresh for `fresh` s, then stale for `stale` s, stale-if-error for
/// `sie` s after freshness.
fn content(
    store: &dyn Store,
    body: &'static str,
    fresh: u64,
    stale: u64,
    sie: u64,
    tags: &[&str],
) -> Content {
    let now = store.now();
    let fresh_until = now.plus(Duration::from_secs(fresh));
    Content {
        response: response(body),
        generated_at: now,
        fresh_until,
        stale_until: fresh_until.plus(Duration::from_secs(stale)),
        stale_if_error_until: fresh_until.plus(Duration::from_secs(sie)),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        job_millis: 3,
    }
}

fn enqueued(outcome: ClaimOutcome) -> crate::pattern::Entry {
    match outcome {
        ClaimOutcome::Enqueued(e) => e,
        ClaimOutcome::Exists(e) => panic!("expected Enqueued, found existing {:?}", e.status),
    }
}

const LEASE: Duration = Duration::from_secs(30);

/// Claims, takes and completes `path` with fresh content.
pub async fn fill(store: &dyn Store, path: &str, fresh: u64, stale: u64, sie: u64, tags: &[&str]) {
    enqueued(
        store
            .claim(claim(path, Priority::Miss, None))
            .await
            .unwrap(),
    );
    let key = signature(path).key;
    let jobs = store.take(100, LEASE).await.unwrap();
    let job = jobs.into_iter().find(|j| j.lease.key == key).unwrap();
    let c = content(store, "body", fresh, stale, sie, tags);
    store
        .complete_one(&job.lease, Completion::Store(c))
        .await
        .unwrap();
}

/// Claims and takes `path`, then ends its job with `completion(store)`.
async fn settle(store: &dyn Store, path: &str, completion: Completion) {
    enqueued(
        store
            .claim(claim(path, Priority::Miss, None))
            .await
            .unwrap(),
    );
    let key = signature(path).key;
    let job = store
        .take(100, LEASE)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.lease.key == key)
        .unwrap();
    store.complete_one(&job.lease, completion).await.unwrap();
}

/// A failure answered for `secs`, as a worker reports it (the store adds the request).
fn failure(store: &dyn Store, secs: u64) -> Failure {
    Failure {
        until: store.now().plus(Duration::from_secs(secs)),
        response: Arc::new(StoredResponse {
            status: StatusCode::BAD_GATEWAY,
            headers: HeaderMap::new(),
            body: "bad gateway".into(),
            selecting: HeaderMap::new(),
        }),
        error: "connection refused".into(),
        attempts: 3,
        at: store.now(),
        request: None,
    }
}

/// A client of `store` waiting for `key` to settle, for up to `timeout`: reports the entry
/// it got and how long it waited.
fn waiter(
    store: &Arc<dyn Inspect>,
    key: Key,
    timeout: Duration,
) -> tokio::task::JoinHandle<(Option<crate::pattern::Entry>, Duration)> {
    let store = Arc::clone(store);
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let entry = store.wait(&key, None, timeout).await.unwrap();
        (entry, started.elapsed())
    })
}

/// An idle worker of `store`: waits for jobs for up to `timeout` and reports how long it
/// waited.
fn idle_worker(store: &Arc<dyn Inspect>, timeout: Duration) -> tokio::task::JoinHandle<Duration> {
    let store = Arc::clone(store);
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        store.wait_for_jobs(timeout).await.unwrap();
        started.elapsed()
    })
}
