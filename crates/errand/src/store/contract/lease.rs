//! The queue: take order, leases and their expiry, heartbeats, retries after backoff.

#![allow(clippy::unwrap_used, missing_docs)]

use super::*;

pub async fn take_orders_by_priority_then_run_time(
    store: Arc<dyn Inspect>,
    clock: Arc<ManualClock>,
) {
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
    store: Arc<dyn Inspect>,
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
        .complete_one(
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
        .complete_one(
            &second.lease,
            Completion::Store(content(&*store, "new", 60, 0, 0, &[])),
        )
        .await
        .unwrap();
    let entry = store.lookup(&second.lease.key).await.unwrap().unwrap();
    assert_eq!(entry.content.unwrap().response.body, "new");
    // Completing twice is refused too: the job is acknowledged.
    let twice = store
        .complete_one(
            &second.lease,
            Completion::Store(content(&*store, "again", 60, 0, 0, &[])),
        )
        .await;
    assert!(matches!(twice, Err(StoreError::LeaseLost)));
}

pub async fn heartbeat_extends_a_lease(store: Arc<dyn Inspect>, clock: Arc<ManualClock>) {
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

pub async fn retry_is_scheduled_after_its_backoff(
    store: Arc<dyn Inspect>,
    clock: Arc<ManualClock>,
) {
    enqueued(
        store
            .claim(claim("/retry", Priority::Miss, None))
            .await
            .unwrap(),
    );
    let job = store.take(1, LEASE).await.unwrap().remove(0);
    let run_at = store.now().plus(Duration::from_secs(5));
    store
        .complete_one(
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
        .complete_one(
            &job.lease,
            Completion::Retry {
                run_at,
                error: "x".into(),
            },
        )
        .await;
    assert!(matches!(stale, Err(StoreError::LeaseLost)));
}

/// A job carries the claiming request's forwarded headers and the stored response's
/// validators to the worker that takes it, in order and with repeated names kept: a retry or a redelivery on
/// another process replays exactly them.
pub async fn a_job_carries_the_claiming_requests_headers(
    store: Arc<dyn Inspect>,
    _clock: Arc<ManualClock>,
) {
    let mut claimed = claim("/negotiated", Priority::Miss, None);
    claimed.request.forwarded = vec![
        ("accept-language".into(), "de, en;q=0.5".into()),
        ("x-custom".into(), "one".into()),
        ("x-custom".into(), "two".into()),
        ("user-agent".into(), "contract/1 (\"quoted\")".into()),
    ];
    claimed.request.validators = vec![
        ("if-none-match".into(), "\"v1\"".into()),
        (
            "if-modified-since".into(),
            "Sun, 06 Nov 1994 08:49:37 GMT".into(),
        ),
    ];
    let want = claimed.request.clone();
    enqueued(store.claim(claimed).await.unwrap());
    let jobs = store.take(10, LEASE).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].request.forwarded, want.forwarded);
    assert_eq!(jobs[0].request.validators, want.validators);
    assert_eq!(jobs[0].request.uri, want.uri);
}
