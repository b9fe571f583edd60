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

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};

use super::{
    Claim, ClaimOutcome, Completion, ListQuery, ManualClock, Purge, PurgeTarget, Retried, Store,
    StoreError, retry,
};
use crate::pattern::{
    Content, Decision, Failure, Key, PassInfo, Priority, Signature, State, Status, StoredResponse,
    decide,
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
            lease_expiry_redelivers_and_fences_the_old_lease,
            heartbeat_extends_a_lease,
            retry_is_scheduled_after_its_backoff,
            complete_turns_pending_into_fresh_failed_or_pass,
            wait_is_woken_by_complete,
            waiters_get_what_a_lookup_returns,
            wait_pending_sees_a_completion_made_before_it_began,
            wait_times_out_while_pending,
            wait_for_jobs_is_woken_by_claim,
            expired_entries_are_absent,
            purge_hard_soft_uri_prefix_tag,
            take_once_delivers_exactly_once,
            stats_count_entries_and_queue,
            complete_many_fences_each_job,
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
                    ::std::sync::Arc::clone(&store) as ::std::sync::Arc<dyn $crate::store::Store>,
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
    S: Store,
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
        .complete(&job.lease, Completion::Store(c))
        .await
        .unwrap();
}

pub async fn claim_is_atomic_under_contention(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(
                async move { store.claim(claim("/contended", Priority::Miss, None)).await },
            )
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            ClaimOutcome::Enqueued(_) => won += 1,
            ClaimOutcome::Exists(e) => assert!(e.job().is_some(), "a loser sees the live job"),
        }
    }
    assert_eq!(won, 1, "exactly one of 200 concurrent claims enqueues");
    let jobs = store.take(100, LEASE).await.unwrap();
    assert_eq!(jobs.len(), 1, "the queue holds one job for the signature");
    assert_eq!(jobs[0].request, signature("/contended").request);
    assert_eq!(jobs[0].attempt, 1);
}

pub async fn claim_respects_the_expected_version(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    fill(&*store, "/v", 10, 60, 0, &[]).await;
    let entry = store.lookup(&signature("/v").key).await.unwrap().unwrap();
    // A claim "only if absent" and one conditional on an old version both find the entry.
    let found = store
        .claim(claim("/v", Priority::Refresh, None))
        .await
        .unwrap();
    assert!(matches!(found, ClaimOutcome::Exists(ref e) if e.version == entry.version));
    let found = store
        .claim(claim(
            "/v",
            Priority::Refresh,
            Some(entry.version + 1_000_000),
        ))
        .await
        .unwrap();
    assert!(matches!(found, ClaimOutcome::Exists(_)));
    // A refresh conditional on the version seen succeeds once and keeps the stale content.
    clock.advance(Duration::from_secs(15));
    let pending = enqueued(
        store
            .claim(claim("/v", Priority::Refresh, Some(entry.version)))
            .await
            .unwrap(),
    );
    assert!(pending.job().is_some());
    assert_eq!(
        pending.content, entry.content,
        "stale content survives the claim"
    );
    let again = store
        .claim(claim("/v", Priority::Refresh, Some(entry.version)))
        .await
        .unwrap();
    assert!(matches!(again, ClaimOutcome::Exists(ref e) if e.job().is_some()));
    let seen = store.lookup(&signature("/v").key).await.unwrap().unwrap();
    assert_eq!(
        decide(Some(&seen), store.now()),
        Decision::Stale { refresh: false }
    );
}

pub async fn take_orders_by_priority_then_run_time(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    enqueued(
        store
            .claim(claim("/refresh", Priority::Refresh, None))
            .await
            .unwrap(),
    );
    clock.advance(Duration::from_millis(10));
    enqueued(
        store
            .claim(claim("/miss-1", Priority::Miss, None))
            .await
            .unwrap(),
    );
    clock.advance(Duration::from_millis(10));
    enqueued(
        store
            .claim(claim("/miss-2", Priority::Miss, None))
            .await
            .unwrap(),
    );
    let order: Vec<_> = [
        store.take(1, LEASE).await.unwrap(),
        store.take(1, LEASE).await.unwrap(),
        store.take(1, LEASE).await.unwrap(),
    ]
    .into_iter()
    .map(|jobs| {
        assert_eq!(jobs.len(), 1);
        jobs[0].lease.key
    })
    .collect();
    let want = [
        signature("/miss-1").key,
        signature("/miss-2").key,
        signature("/refresh").key,
    ];
    assert_eq!(order, want, "misses first (oldest first), then the refresh");
    assert!(
        store.take(10, LEASE).await.unwrap().is_empty(),
        "leased jobs are not taken twice"
    );
}

pub async fn lease_expiry_redelivers_and_fences_the_old_lease(
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
) {
    enqueued(
        store
            .claim(claim("/lease", Priority::Miss, None))
            .await
            .unwrap(),
    );
    let first = store.take(1, LEASE).await.unwrap().remove(0);
    clock.advance(LEASE - Duration::from_secs(1));
    assert!(
        store.take(1, LEASE).await.unwrap().is_empty(),
        "still leased"
    );
    clock.advance(Duration::from_secs(2));
    let second = store.take(1, LEASE).await.unwrap().remove(0);
    assert_eq!(second.lease.key, first.lease.key);
    assert_eq!(
        second.lease.job, first.lease.job,
        "the same job, redelivered"
    );
    assert_ne!(second.lease.token, first.lease.token);
    assert_eq!(second.attempt, 2);
    assert!(
        !first.redelivered && second.redelivered,
        "a lapsed lease is a redelivery"
    );
    // The worker that lost its lease can neither complete nor renew.
    let late = store
        .complete(
            &first.lease,
            Completion::Store(content(&*store, "late", 60, 0, 0, &[])),
        )
        .await;
    assert!(
        matches!(late, Err(StoreError::LeaseLost)),
        "late complete fenced: {late:?}"
    );
    assert!(matches!(
        store.heartbeat(&first.lease, LEASE).await,
        Err(StoreError::LeaseLost)
    ));
    store
        .complete(
            &second.lease,
            Completion::Store(content(&*store, "new", 60, 0, 0, &[])),
        )
        .await
        .unwrap();
    let entry = store.lookup(&second.lease.key).await.unwrap().unwrap();
    assert_eq!(entry.content.unwrap().response.body, "new");
    // Completing twice is refused too: the job is acknowledged.
    let twice = store
        .complete(
            &second.lease,
            Completion::Store(content(&*store, "again", 60, 0, 0, &[])),
        )
        .await;
    assert!(matches!(twice, Err(StoreError::LeaseLost)));
}

pub async fn heartbeat_extends_a_lease(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    enqueued(
        store
            .claim(claim("/beat", Priority::Miss, None))
            .await
            .unwrap(),
    );
    let job = store.take(1, LEASE).await.unwrap().remove(0);
    clock.advance(Duration::from_secs(20));
    let until = store.heartbeat(&job.lease, LEASE).await.unwrap();
    assert_eq!(until, store.now().plus(LEASE));
    clock.advance(Duration::from_secs(20));
    assert!(
        store.take(1, LEASE).await.unwrap().is_empty(),
        "the renewed lease still holds"
    );
    let entry = store.lookup(&job.lease.key).await.unwrap().unwrap();
    assert_eq!(entry.job().unwrap().lease_until, Some(until));
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        store.take(1, LEASE).await.unwrap().len(),
        1,
        "expired after the renewal"
    );
}

pub async fn retry_is_scheduled_after_its_backoff(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    enqueued(
        store
            .claim(claim("/retry", Priority::Miss, None))
            .await
            .unwrap(),
    );
    let job = store.take(1, LEASE).await.unwrap().remove(0);
    let run_at = store.now().plus(Duration::from_secs(5));
    store
        .complete(
            &job.lease,
            Completion::Retry {
                run_at,
                error: "upstream 503".into(),
            },
        )
        .await
        .unwrap();
    let entry = store.lookup(&job.lease.key).await.unwrap().unwrap();
    let info = entry.job().expect("still pending while retrying");
    assert_eq!(info.last_error.as_deref(), Some("upstream 503"));
    assert_eq!(info.run_at, run_at);
    assert_eq!(info.lease_until, None);
    assert!(
        store.take(1, LEASE).await.unwrap().is_empty(),
        "backing off"
    );
    assert!(
        matches!(
            store
                .claim(claim("/retry", Priority::Miss, None))
                .await
                .unwrap(),
            ClaimOutcome::Exists(_)
        ),
        "a retrying job is still the one live job"
    );
    clock.advance(Duration::from_secs(5));
    let again = store.take(1, LEASE).await.unwrap().remove(0);
    assert_eq!(again.lease.job, job.lease.job);
    assert_eq!(again.attempt, 2);
    assert!(!again.redelivered, "a scheduled retry is not a redelivery");
    let stale = store
        .complete(
            &job.lease,
            Completion::Retry {
                run_at,
                error: "x".into(),
            },
        )
        .await;
    assert!(matches!(stale, Err(StoreError::LeaseLost)));
}

pub async fn complete_turns_pending_into_fresh_failed_or_pass(
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
) {
    // fresh
    fill(&*store, "/c", 10, 0, 100, &[]).await;
    let key = signature("/c").key;
    let fresh = store.lookup(&key).await.unwrap().unwrap();
    assert_eq!(fresh.status, Status::Idle);
    assert_eq!(decide(Some(&fresh), store.now()), Decision::Hit);

    // failed, keeping the old content for stale-if-error
    clock.advance(Duration::from_secs(20));
    enqueued(
        store
            .claim(claim("/c", Priority::Refresh, Some(fresh.version)))
            .await
            .unwrap(),
    );
    let job = store.take(1, LEASE).await.unwrap().remove(0);
    let failure = failure(&*store, 10);
    store
        .complete(&job.lease, Completion::Fail(failure.clone()))
        .await
        .unwrap();
    let failed = store.lookup(&key).await.unwrap().unwrap();
    assert_eq!(
        failed.status,
        Status::Failed(Failure {
            request: Some(job.request.clone()),
            ..failure
        }),
        "a failure keeps the job's request, for a retry"
    );
    assert_eq!(failed.content, fresh.content, "the stale copy is kept");
    assert_eq!(
        decide(Some(&failed), store.now()),
        Decision::StaleIfError { refresh: false }
    );
    assert!(failed.version > fresh.version);

    // pass, dropping the stale copy
    enqueued(
        store
            .claim(claim("/c", Priority::Miss, Some(failed.version)))
            .await
            .unwrap(),
    );
    let pending = store.lookup(&key).await.unwrap().unwrap();
    assert!(
        pending.job().unwrap().after_failure,
        "the job knows the origin was failing"
    );
    let job = store.take(1, LEASE).await.unwrap().remove(0);
    let pass = PassInfo {
        until: store.now().plus(Duration::from_secs(30)),
        once: None,
        reason: "private".into(),
    };
    store
        .complete(&job.lease, Completion::Pass(pass.clone()))
        .await
        .unwrap();
    let passed = store.lookup(&key).await.unwrap().unwrap();
    assert_eq!(passed.status, Status::Pass(pass));
    assert_eq!(passed.content, None);
    assert_eq!(
        decide(Some(&passed), store.now()),
        Decision::Pass { once: false }
    );
}

pub async fn wait_is_woken_by_complete(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    enqueued(
        store
            .claim(claim("/wait", Priority::Miss, None))
            .await
            .unwrap(),
    );
    let key = signature("/wait").key;
    let waiters: Vec<_> = (0..50)
        .map(|_| waiter(&store, key, Duration::from_secs(20)))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let job = store.take(1, LEASE).await.unwrap().remove(0);
    store
        .complete(
            &job.lease,
            Completion::Store(content(&*store, "done", 60, 0, 0, &[])),
        )
        .await
        .unwrap();
    for waiter in waiters {
        let (entry, elapsed) = waiter.await.unwrap();
        let entry = entry.expect("woken with the settled entry");
        assert_eq!(entry.content.unwrap().response.body, "done");
        assert!(
            elapsed < Duration::from_secs(10),
            "woken by the completion, not the timeout"
        );
    }
    // Already settled: returns at once.
    let settled = store.wait(&key, Duration::from_secs(20)).await.unwrap();
    assert!(settled.is_some());
}

/// A claim returns the pending entry exactly as a lookup reads it right after: a new one, one
/// that keeps a stale copy while it is refreshed, and one that follows a failure.
pub async fn a_claim_returns_what_a_lookup_returns(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    let path = "/claimed";
    let key = signature(path).key;
    let new = enqueued(
        store
            .claim(claim(path, Priority::Miss, None))
            .await
            .unwrap(),
    );
    assert_eq!(Some(new), store.lookup(&key).await.unwrap(), "a new entry");
    let finish = |completion: Completion| {
        let store = Arc::clone(&store);
        async move {
            let job = store.take(10, LEASE).await.unwrap().remove(0);
            store.complete(&job.lease, completion).await.unwrap();
            store.lookup(&key).await.unwrap().unwrap().version
        }
    };
    let copy = content(&*store, "copy", 10, 600, 600, &["team-a", "page"]);
    let version = finish(Completion::Store(copy)).await;
    clock.advance(Duration::from_secs(20));
    let refresh = enqueued(
        store
            .claim(claim(path, Priority::Refresh, Some(version)))
            .await
            .unwrap(),
    );
    assert_eq!(
        Some(refresh.clone()),
        store.lookup(&key).await.unwrap(),
        "a refresh"
    );
    assert!(refresh.content.is_some(), "the stale copy is kept");
    let version = finish(Completion::Fail(failure(&*store, 5))).await;
    let after = enqueued(
        store
            .claim(claim(path, Priority::Miss, Some(version)))
            .await
            .unwrap(),
    );
    assert_eq!(
        Some(after.clone()),
        store.lookup(&key).await.unwrap(),
        "after a failure"
    );
    assert!(after.job().unwrap().after_failure);
    assert!(after.content.is_some(), "the copy outlives the failure");
}

/// Whatever way a store wakes its waiters (a fresh lookup, or the entry the completion
/// hands them), each gets exactly what a lookup returns: headers with repeated names, tags,
/// every time, the version. Through `complete` and through `complete_many`.
pub async fn waiters_get_what_a_lookup_returns(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    let rich = |body: &'static str| {
        let mut c = content(&*store, body, 60, 30, 600, &["team-a", "page"]);
        let mut headers = HeaderMap::new();
        headers.append("content-type", "text/plain".parse().unwrap());
        headers.append("x-part", "one".parse().unwrap());
        headers.append("x-part", "two; q=\"3\"".parse().unwrap());
        c.response = Arc::new(StoredResponse {
            status: StatusCode::NON_AUTHORITATIVE_INFORMATION,
            headers,
            body: body.into(),
        });
        c.job_millis = 1234;
        c
    };
    let paths = ["/settled/one", "/settled/two", "/settled/three"];
    for path in paths {
        enqueued(
            store
                .claim(claim(path, Priority::Miss, None))
                .await
                .unwrap(),
        );
    }
    let waiters: Vec<_> = paths
        .iter()
        .map(|path| waiter(&store, signature(path).key, Duration::from_secs(20)))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut jobs = store.take(3, LEASE).await.unwrap();
    assert_eq!(jobs.len(), 3);
    let single = jobs.remove(0);
    store
        .complete(&single.lease, Completion::Store(rich("single")))
        .await
        .unwrap();
    let batch = jobs
        .iter()
        .map(|job| (job.lease.clone(), Completion::Store(rich("batched"))))
        .collect();
    assert!(store.complete_many(batch).await.iter().all(Result::is_ok));
    for (path, waiter) in paths.iter().zip(waiters) {
        let (got, _) = waiter.await.unwrap();
        let got = got.unwrap_or_else(|| panic!("{path}: woken with its entry"));
        let looked_up = store.lookup(&signature(path).key).await.unwrap();
        assert_eq!(Some(got), looked_up, "{path}");
    }
}

/// A caller read the entry as pending, then the job completed before its wait began: the
/// wait still returns the settled entry at once, whatever the store skips.
pub async fn wait_pending_sees_a_completion_made_before_it_began(
    store: Arc<dyn Store>,
    _clock: Arc<ManualClock>,
) {
    let seen = std::time::Instant::now();
    let done = |body| Completion::Store(content(&*store, body, 60, 0, 0, &[]));
    settle(&*store, "/quick", done("quick")).await;
    // Long enough for any notification of it to have come and gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let key = signature("/quick").key;
    let started = tokio::time::Instant::now();
    let settled = store
        .wait_pending(&key, seen, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(settled, store.lookup(&key).await.unwrap());
    assert!(settled.is_some());
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "at once: {:?}",
        started.elapsed()
    );
    // Pending, and waited for: woken by the completion.
    let seen = std::time::Instant::now();
    enqueued(
        store
            .claim(claim("/later", Priority::Miss, None))
            .await
            .unwrap(),
    );
    let key = signature("/later").key;
    let waiting = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .wait_pending(&key, seen, Duration::from_secs(20))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let job = store.take(1, LEASE).await.unwrap().remove(0);
    store.complete(&job.lease, done("later")).await.unwrap();
    let settled = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken by the completion")
        .unwrap()
        .unwrap();
    assert_eq!(settled, store.lookup(&key).await.unwrap());
}

pub async fn wait_times_out_while_pending(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    enqueued(
        store
            .claim(claim("/slow", Priority::Miss, None))
            .await
            .unwrap(),
    );
    let started = tokio::time::Instant::now();
    let waited = store
        .wait(&signature("/slow").key, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(waited, None);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(190),
        "waited the whole timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "and not much longer: {elapsed:?}"
    );
    assert_eq!(
        store
            .wait(&signature("/absent").key, Duration::from_secs(5))
            .await
            .unwrap(),
        None
    );
}

/// A client of `store` waiting for `key` to settle, for up to `timeout`: reports the entry
/// it got and how long it waited.
fn waiter(
    store: &Arc<dyn Store>,
    key: Key,
    timeout: Duration,
) -> tokio::task::JoinHandle<(Option<crate::pattern::Entry>, Duration)> {
    let store = Arc::clone(store);
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let entry = store.wait(&key, timeout).await.unwrap();
        (entry, started.elapsed())
    })
}

/// An idle worker of `store`: waits for jobs for up to `timeout` and reports how long it
/// waited.
fn idle_worker(store: &Arc<dyn Store>, timeout: Duration) -> tokio::task::JoinHandle<Duration> {
    let store = Arc::clone(store);
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        store.wait_for_jobs(timeout).await.unwrap();
        started.elapsed()
    })
}

pub async fn wait_for_jobs_is_woken_by_claim(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    let waiter = idle_worker(&store, Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(100)).await;
    enqueued(
        store
            .claim(claim("/work", Priority::Miss, None))
            .await
            .unwrap(),
    );
    let elapsed = tokio::time::timeout(Duration::from_secs(15), waiter)
        .await
        .expect("woken by the claim")
        .unwrap();
    assert!(elapsed < Duration::from_secs(15));
    assert_eq!(store.take(1, LEASE).await.unwrap().len(), 1);
}

pub async fn expired_entries_are_absent(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    fill(&*store, "/ttl", 5, 5, 10, &[]).await;
    let key = signature("/ttl").key;
    clock.advance(Duration::from_secs(14));
    let entry = store.lookup(&key).await.unwrap().unwrap();
    assert_eq!(
        decide(Some(&entry), store.now()),
        Decision::Miss {
            expect: Some(entry.version)
        }
    );
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        store.lookup(&key).await.unwrap(),
        None,
        "past every window: absent"
    );
    assert_eq!(
        store.stats().await.unwrap().fresh + store.stats().await.unwrap().stale,
        0
    );
    // An expired entry does not block a claim "only if absent".
    enqueued(
        store
            .claim(claim("/ttl", Priority::Miss, None))
            .await
            .unwrap(),
    );
}

pub async fn purge_hard_soft_uri_prefix_tag(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    for path in ["/a/1", "/a/2", "/b/1", "/b/2?x=1"] {
        fill(
            &*store,
            path,
            60,
            30,
            0,
            &[if path.starts_with("/a") {
                "tag-a"
            } else {
                "tag-b"
            }],
        )
        .await;
    }
    let key = |p: &str| signature(p).key;
    let hard = |target| Purge {
        target,
        soft: false,
    };

    assert_eq!(
        store
            .purge(hard(PurgeTarget::Key(key("/a/1"))))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.lookup(&key("/a/1")).await.unwrap(), None);

    let soft = Purge {
        target: PurgeTarget::Tag("tag-a".into()),
        soft: true,
    };
    assert_eq!(store.purge(soft).await.unwrap(), 1);
    let softened = store.lookup(&key("/a/2")).await.unwrap().unwrap();
    assert_eq!(
        decide(Some(&softened), store.now()),
        Decision::Stale { refresh: true }
    );
    clock.advance(Duration::from_secs(31));
    assert_eq!(
        store.lookup(&key("/a/2")).await.unwrap(),
        None,
        "soft purge keeps the stale window's length"
    );

    let uri = signature("/b/2?x=1").request.uri;
    assert_eq!(store.purge(hard(PurgeTarget::Uri(uri))).await.unwrap(), 1);
    assert_eq!(store.lookup(&key("/b/2?x=1")).await.unwrap(), None);
    assert!(store.lookup(&key("/b/1")).await.unwrap().is_some());

    fill(&*store, "/b/3", 60, 0, 0, &[]).await;
    let prefix = "http://contract.test/b/".to_owned();
    assert_eq!(
        store
            .purge(hard(PurgeTarget::Prefix(prefix)))
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.lookup(&key("/b/1")).await.unwrap(), None);

    // A hard purge never drops a live job.
    enqueued(
        store
            .claim(claim("/live", Priority::Miss, None))
            .await
            .unwrap(),
    );
    store.purge(hard(PurgeTarget::All)).await.unwrap();
    let live = store.lookup(&key("/live")).await.unwrap().unwrap();
    assert!(live.job().is_some());
    assert_eq!(store.take(1, LEASE).await.unwrap().len(), 1);
}

pub async fn take_once_delivers_exactly_once(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    enqueued(
        store
            .claim(claim("/once", Priority::Miss, None))
            .await
            .unwrap(),
    );
    let job = store.take(1, LEASE).await.unwrap().remove(0);
    let pass = PassInfo {
        until: store.now().plus(Duration::from_secs(30)),
        once: Some(response("for one client")),
        reason: "status".into(),
    };
    store
        .complete(&job.lease, Completion::Pass(pass))
        .await
        .unwrap();
    let key = signature("/once").key;
    let entry = store.lookup(&key).await.unwrap().unwrap();
    assert_eq!(
        decide(Some(&entry), store.now()),
        Decision::Pass { once: true }
    );
    let takers: Vec<_> = (0..20)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.take_once(&key).await.unwrap() })
        })
        .collect();
    let mut delivered = 0;
    for taker in takers {
        if let Some(r) = taker.await.unwrap() {
            assert_eq!(r.body, "for one client");
            delivered += 1;
        }
    }
    assert_eq!(delivered, 1, "delivered once, never shared beyond it");
    let entry = store.lookup(&key).await.unwrap().unwrap();
    assert_eq!(
        decide(Some(&entry), store.now()),
        Decision::Pass { once: false }
    );
}

pub async fn stats_count_entries_and_queue(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    fill(&*store, "/s/fresh", 60, 0, 0, &[]).await;
    fill(&*store, "/s/stale", 1, 60, 0, &[]).await;
    clock.advance(Duration::from_secs(2));
    enqueued(
        store
            .claim(claim("/s/ready", Priority::Miss, None))
            .await
            .unwrap(),
    );
    enqueued(
        store
            .claim(claim("/s/running", Priority::Refresh, None))
            .await
            .unwrap(),
    );
    store.take(1, LEASE).await.unwrap();
    clock.advance(Duration::from_secs(3));
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.fresh, stats.stale, stats.pending),
        (1, 1, 2),
        "{stats:?}"
    );
    assert_eq!((stats.ready, stats.running), (1, 1), "{stats:?}");
    assert!(stats.oldest_ready_ms >= 3000, "{stats:?}");
    assert!(stats.bytes > 0);
}

pub async fn complete_many_fences_each_job(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    for path in ["/many/1", "/many/2", "/many/3"] {
        enqueued(
            store
                .claim(claim(path, Priority::Miss, None))
                .await
                .unwrap(),
        );
    }
    let first = store.take(10, LEASE).await.unwrap();
    assert_eq!(first.len(), 3);
    // The leases run out and another worker takes the jobs over.
    clock.advance(LEASE + Duration::from_secs(1));
    let retaken = store.take(10, LEASE).await.unwrap();
    assert_eq!(retaken.len(), 3, "all three were redelivered");
    let late = first[0].lease.clone();
    let mut batch: Vec<_> = retaken[1..]
        .iter()
        .map(|job| {
            let c = content(&*store, "batched", 60, 0, 0, &["batch"]);
            (job.lease.clone(), Completion::Store(c))
        })
        .collect();
    batch.push((
        late,
        Completion::Store(content(&*store, "late", 60, 0, 0, &[])),
    ));
    let results = store.complete_many(batch).await;
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
    assert!(
        matches!(results[2], Err(StoreError::LeaseLost)),
        "the superseded lease is fenced"
    );
    for job in &retaken[1..] {
        let entry = store.lookup(&job.lease.key).await.unwrap().unwrap();
        assert_eq!(entry.content.as_ref().unwrap().response.body, "batched");
        assert_eq!(entry.content.unwrap().tags, vec!["batch".to_owned()]);
    }
    let unfinished = store.lookup(&retaken[0].lease.key).await.unwrap().unwrap();
    assert!(
        unfinished.job().is_some(),
        "the job whose late completion was refused stays pending"
    );
}

/// Completions whose windows reach absurdly far (a `max-age` of 10^14 s, or a caller's own
/// `Content` at the end of time) are applied whole, in a batch with ordinary ones: the entry
/// is stored with a finite expiry, its waiters are woken, and the completions after it in
/// the batch are applied too.
pub async fn far_future_lifetimes_apply_whole(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    let paths = ["/far/1", "/far/2", "/far/3"];
    for path in paths {
        enqueued(
            store
                .claim(claim(path, Priority::Miss, None))
                .await
                .unwrap(),
        );
    }
    let far_key = signature(paths[0]).key;
    let waiter = waiter(&store, far_key, Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut jobs = store.take(10, LEASE).await.unwrap();
    jobs.sort_by_key(|job| paths.iter().position(|p| signature(p).key == job.lease.key));
    let now = store.now();
    let mut far = content(&*store, "far", 60, 0, 0, &["far"]);
    far.fresh_until = now.plus(Duration::from_secs(100_000_000_000_000));
    far.stale_until = crate::pattern::Timestamp(u64::MAX);
    far.stale_if_error_until = crate::pattern::Timestamp(u64::MAX - 1);
    let batch = vec![
        (jobs[0].lease.clone(), Completion::Store(far)),
        (
            jobs[1].lease.clone(),
            Completion::Pass(PassInfo {
                until: crate::pattern::Timestamp(u64::MAX),
                once: None,
                reason: "private".into(),
            }),
        ),
        (
            jobs[2].lease.clone(),
            Completion::Store(content(&*store, "near", 60, 0, 0, &[])),
        ),
    ];
    let results = store.complete_many(batch).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let (woken, elapsed) = waiter.await.unwrap();
    assert!(
        woken.is_some() && elapsed < Duration::from_secs(10),
        "the far entry's waiter was woken"
    );
    let far = store.lookup(&far_key).await.unwrap().expect("stored");
    assert_eq!(decide(Some(&far), store.now()), Decision::Hit);
    assert!(
        far.expires_at()
            .is_some_and(|at| at > now.plus(Duration::from_secs(1 << 31)))
    );
    let pass = store
        .lookup(&signature(paths[1]).key)
        .await
        .unwrap()
        .expect("stored");
    assert!(matches!(pass.status, Status::Pass(_)), "{:?}", pass.status);
    let near = store
        .lookup(&signature(paths[2]).key)
        .await
        .unwrap()
        .expect("the completion after the far ones was applied");
    assert_eq!(near.content.unwrap().response.body, "near");
}

/// A purge (hard or soft, by key, URI, prefix or tag) that meets a running job fences it:
/// the job's completion is refused and stores nothing, the job is ready again at once, and
/// the next attempt's result is what is stored and what its waiter gets. A job that is only
/// queued is left as it is.
pub async fn an_invalidation_fences_a_running_job(store: Arc<dyn Store>, _clock: Arc<ManualClock>) {
    let targets = [
        ("/fence/key", false),
        ("/fence/uri", false),
        ("/fence/prefix/a", true),
        ("/fence/tag", false),
    ];
    for (path, soft) in targets {
        let key = signature(path).key;
        // An earlier result with a tag, refreshed by the job (a claim at its version).
        fill(&*store, path, 0, 60, 0, &["fence-tag"]).await;
        let seen = store.lookup(&key).await.unwrap().unwrap();
        enqueued(
            store
                .claim(claim(path, Priority::Refresh, Some(seen.version)))
                .await
                .unwrap(),
        );
        let first = store.take(1, LEASE).await.unwrap().remove(0);
        let waiter = waiter(&store, key, Duration::from_secs(20));
        let target = match path {
            "/fence/key" => PurgeTarget::Key(key),
            "/fence/uri" => PurgeTarget::Uri(signature(path).request.uri),
            "/fence/prefix/a" => PurgeTarget::Prefix("http://contract.test/fence/prefix/".into()),
            _ => PurgeTarget::Tag("fence-tag".into()),
        };
        let affected = store.purge(Purge { target, soft }).await.unwrap();
        assert!(affected >= 1, "{path}: {affected}");
        let late = store
            .complete(
                &first.lease,
                Completion::Store(content(&*store, "before the write", 60, 0, 0, &[])),
            )
            .await;
        assert!(
            matches!(late, Err(StoreError::LeaseLost)),
            "{path}: the fenced attempt stores nothing: {late:?}"
        );
        let entry = store.lookup(&key).await.unwrap().unwrap();
        assert!(entry.job().is_some(), "{path}: still pending");
        let again = store.take(1, LEASE).await.unwrap();
        assert_eq!(again.len(), 1, "{path}: ready again at once");
        assert_eq!(again[0].lease.key, key);
        assert_ne!(again[0].lease, first.lease);
        store
            .complete(
                &again[0].lease,
                Completion::Store(content(&*store, "after the write", 60, 0, 0, &[])),
            )
            .await
            .unwrap();
        let (settled, _) = waiter.await.unwrap();
        let body = |e: Option<crate::pattern::Entry>| {
            e.and_then(|e| e.content).map(|c| c.response.body.clone())
        };
        assert_eq!(
            body(settled),
            Some("after the write".into()),
            "{path}: the waiter gets the attempt after the write"
        );
        assert_eq!(
            body(store.lookup(&key).await.unwrap()),
            Some("after the write".into())
        );
    }
    // A queued job (not started) is not fenced: it will read after the write anyway.
    enqueued(
        store
            .claim(claim("/fence/queued", Priority::Miss, None))
            .await
            .unwrap(),
    );
    store
        .purge(Purge {
            target: PurgeTarget::Key(signature("/fence/queued").key),
            soft: false,
        })
        .await
        .unwrap();
    let job = store.take(1, LEASE).await.unwrap().remove(0);
    assert_eq!(job.attempt, 1);
}

/// The flood cap across two stores on one backend (two processes), both made with
/// `max_pending = cap`: of `4 * cap` distinct claims, alternating between them, at most `cap`
/// enqueue and the rest are refused with [`StoreError::Full`]; a lookup still answers; once
/// a job completes, a claim is taken again.
pub async fn the_flood_cap_holds_across_two_stores(
    first: Arc<dyn Store>,
    second: Arc<dyn Store>,
    cap: usize,
) {
    let mut enqueued = Vec::new();
    let mut refused = 0;
    for i in 0..4 * cap {
        let store = if i % 2 == 0 { &first } else { &second };
        match store
            .claim(claim(&format!("/flood/{i}"), Priority::Miss, None))
            .await
        {
            Ok(ClaimOutcome::Enqueued(entry)) => enqueued.push(entry.key),
            Ok(ClaimOutcome::Exists(entry)) => panic!("distinct paths: {:?}", entry.status),
            Err(StoreError::Full(pending)) => {
                assert!(pending >= cap as u64, "refused at {pending} of {cap}");
                refused += 1;
            }
            Err(e) => panic!("claim failed: {e}"),
        }
    }
    assert_eq!(enqueued.len(), cap, "exactly the cap was enqueued");
    assert_eq!(refused, 3 * cap);
    assert!(first.lookup(&enqueued[0]).await.unwrap().is_some());
    // A worker finishes one job: room for one more, seen by the other store once it looks.
    let job = first.take(1, LEASE).await.unwrap().remove(0);
    first
        .complete(
            &job.lease,
            Completion::Store(content(&*first, "done", 60, 0, 0, &[])),
        )
        .await
        .unwrap();
    let mut taken = None;
    for _ in 0..50 {
        match second
            .claim(claim("/flood/after", Priority::Miss, None))
            .await
        {
            Ok(outcome) => {
                taken = Some(outcome);
                break;
            }
            Err(StoreError::Full(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("claim failed: {e}"),
        }
    }
    assert!(
        matches!(taken, Some(ClaimOutcome::Enqueued(_))),
        "the freed place is taken: {taken:?}"
    );
}

/// `n` concurrent claims of one signature, alternating between two stores on the same
/// backend (two pools or connections, as two processes would have). Returns how many
/// enqueued and how many jobs the queue then holds; both must be 1.
pub async fn claims_from_two_stores(
    first: Arc<dyn Store>,
    second: Arc<dyn Store>,
    n: usize,
) -> (usize, usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = if i % 2 == 0 {
                Arc::clone(&first)
            } else {
                Arc::clone(&second)
            };
            tokio::spawn(
                async move { store.claim(claim("/contended", Priority::Miss, None)).await },
            )
        })
        .collect();
    let mut enqueued = 0;
    for task in tasks {
        if let ClaimOutcome::Enqueued(_) = task.await.unwrap().unwrap() {
            enqueued += 1;
        }
    }
    let jobs = first.take(n, LEASE).await.unwrap().len();
    (enqueued, jobs)
}

/// Wake-ups between processes: `front` and `worker` share one backend through connections
/// of their own, and `front` rechecks so rarely (give it a recheck of a minute) that only a
/// notification from `worker` can wake it in time. A claim made by `worker` wakes an idle
/// worker of `front`; a completion made by `worker` (after a retry, which wakes no one) wakes
/// a waiter of `front` with the settled entry. Returns how long each took to wake, both of
/// which should be far below the recheck.
pub async fn wakeups_reach_another_store(
    worker: Arc<dyn Store>,
    front: Arc<dyn Store>,
) -> (Duration, Duration) {
    let idle = idle_worker(&front, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(200)).await;
    enqueued(
        worker
            .claim(claim("/woken", Priority::Miss, None))
            .await
            .unwrap(),
    );
    let idle_woke = idle.await.unwrap();
    let key = signature("/woken").key;
    // The front has just read the entry as pending: it waits without reading it again.
    let seen = std::time::Instant::now();
    let read = front.lookup(&key).await.unwrap();
    assert!(read.is_some_and(|e| e.job().is_some()), "pending");
    let waiting = {
        let front = Arc::clone(&front);
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let entry = front
                .wait_pending(&key, seen, Duration::from_secs(30))
                .await
                .unwrap();
            (entry, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let job = worker.take(1, LEASE).await.unwrap().remove(0);
    let retry = Completion::Retry {
        run_at: worker.now(),
        error: "again".into(),
    };
    worker.complete(&job.lease, retry).await.unwrap();
    let job = worker.take(1, LEASE).await.unwrap().remove(0);
    let pass = PassInfo {
        until: worker.now().plus(Duration::from_secs(60)),
        once: None,
        reason: "private".into(),
    };
    worker
        .complete(&job.lease, Completion::Pass(pass))
        .await
        .unwrap();
    let (entry, waiter_woke) = waiting.await.unwrap();
    assert!(
        entry.is_some_and(|e| e.job().is_none()),
        "the waiter got the settled entry"
    );
    // A completion that lands between the front's read and its wait is not missed: the front
    // heard of it (or hears of it while it waits), so it looks.
    enqueued(
        worker
            .claim(claim("/raced", Priority::Miss, None))
            .await
            .unwrap(),
    );
    let raced = signature("/raced").key;
    let seen = std::time::Instant::now();
    let read = front.lookup(&raced).await.unwrap();
    assert!(read.is_some_and(|e| e.job().is_some()), "pending");
    let job = worker.take(1, LEASE).await.unwrap().remove(0);
    let done = Completion::Store(content(&*worker, "raced", 60, 0, 0, &[]));
    worker.complete(&job.lease, done).await.unwrap();
    // Long enough for its notification to have reached the front before the wait begins.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = tokio::time::Instant::now();
    let settled = front
        .wait_pending(&raced, seen, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        settled.is_some_and(|e| e.job().is_none()),
        "the raced waiter got the settled entry"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "at once, not at a recheck: {:?}",
        started.elapsed()
    );
    (idle_woke, waiter_woke)
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
    store.complete(&job.lease, completion).await.unwrap();
}

/// A failure answered for `secs`, as a worker reports it (the store adds the request).
fn failure(store: &dyn Store, secs: u64) -> Failure {
    Failure {
        until: store.now().plus(Duration::from_secs(secs)),
        response: Arc::new(StoredResponse {
            status: StatusCode::BAD_GATEWAY,
            headers: HeaderMap::new(),
            body: "bad gateway".into(),
        }),
        error: "connection refused".into(),
        attempts: 3,
        at: store.now(),
        request: None,
    }
}

/// Every page of a listing, followed through its cursors.
async fn list_all(store: &dyn Store, state: Option<State>, limit: usize) -> Vec<Key> {
    let mut keys = Vec::new();
    let mut after = None;
    for _ in 0..1000 {
        let page = store
            .list(&ListQuery {
                state,
                after: after.take(),
                limit,
            })
            .await
            .unwrap();
        assert!(page.entries.len() <= limit, "a page holds at most `limit`");
        for entry in &page.entries {
            if let Some(state) = state {
                assert_eq!(entry.state(store.now()), state, "{entry:?}");
            }
            keys.push(entry.key);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return keys,
        }
    }
    panic!("the listing never ended");
}

pub async fn list_pages_through_entries_by_state(store: Arc<dyn Store>, clock: Arc<ManualClock>) {
    for n in 0..5 {
        fill(&*store, &format!("/l/fresh/{n}"), 600, 0, 0, &[]).await;
    }
    for n in 0..2 {
        fill(&*store, &format!("/l/stale/{n}"), 1, 600, 0, &[]).await;
    }
    fill(&*store, "/l/gone", 1, 0, 0, &[]).await;
    clock.advance(Duration::from_secs(2));
    settle(
        &*store,
        "/l/failed",
        Completion::Fail(failure(&*store, 600)),
    )
    .await;
    settle(
        &*store,
        "/l/pass",
        Completion::Pass(PassInfo {
            until: store.now().plus(Duration::from_secs(600)),
            once: None,
            reason: "private".into(),
        }),
    )
    .await;
    for n in 0..3 {
        enqueued(
            store
                .claim(claim(&format!("/l/pending/{n}"), Priority::Miss, None))
                .await
                .unwrap(),
        );
    }
    let expected = |prefix: &str, n: usize| -> Vec<Key> {
        let mut keys: Vec<Key> = (0..n)
            .map(|i| signature(&format!("/l/{prefix}/{i}")).key)
            .collect();
        keys.sort();
        keys
    };
    let sorted = |mut keys: Vec<Key>| {
        let before = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), before, "no entry is listed twice");
        keys
    };

    let all = sorted(list_all(&*store, None, 3).await);
    assert_eq!(all.len(), 12, "every live entry, the expired one not");
    assert!(!all.contains(&signature("/l/gone").key));
    assert_eq!(
        sorted(list_all(&*store, Some(State::Fresh), 2).await),
        expected("fresh", 5)
    );
    assert_eq!(
        sorted(list_all(&*store, Some(State::Stale), 1).await),
        expected("stale", 2)
    );
    assert_eq!(
        sorted(list_all(&*store, Some(State::Pending), 2).await),
        expected("pending", 3)
    );
    assert_eq!(
        list_all(&*store, Some(State::Failed), 10).await,
        vec![signature("/l/failed").key]
    );
    assert_eq!(
        list_all(&*store, Some(State::Pass), 10).await,
        vec![signature("/l/pass").key]
    );
    // One page of everything, when it fits: no cursor to follow.
    let page = store
        .list(&ListQuery {
            state: None,
            after: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 12);
    assert_eq!(page.next, None);
    let bad = store
        .list(&ListQuery {
            state: None,
            after: Some("not a cursor".into()),
            limit: 10,
        })
        .await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
}

pub async fn retry_enqueues_a_failed_entry_with_its_request(
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
) {
    let key = signature("/retry").key;
    assert_eq!(retry(&*store, &key).await.unwrap(), Retried::Missing);
    settle(&*store, "/retry", Completion::Fail(failure(&*store, 600))).await;
    clock.advance(Duration::from_secs(1));

    let Retried::Enqueued(entry) = retry(&*store, &key).await.unwrap() else {
        panic!("a failed entry is retried");
    };
    assert_eq!(entry.state(store.now()), State::Pending);
    assert!(entry.job().is_some_and(|j| j.after_failure));
    assert_eq!(
        retry(&*store, &key).await.unwrap(),
        Retried::NotFailed(State::Pending),
        "a second retry finds the job running"
    );
    let job = store.take(10, LEASE).await.unwrap().remove(0);
    assert_eq!(job.lease.key, key);
    assert_eq!(job.request, signature("/retry").request, "the same request");
    assert_eq!(job.attempt, 1, "a retry starts its attempts afresh");
    store
        .complete(
            &job.lease,
            Completion::Store(content(&*store, "fixed", 60, 0, 0, &[])),
        )
        .await
        .unwrap();
    assert_eq!(
        retry(&*store, &key).await.unwrap(),
        Retried::NotFailed(State::Fresh)
    );
}
