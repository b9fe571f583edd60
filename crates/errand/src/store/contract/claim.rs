//! Claims: enqueue-if-absent under contention, conditional claims, the flood cap.

#![allow(clippy::unwrap_used, missing_docs)]

use super::*;

pub async fn claim_is_atomic_under_contention(store: Arc<dyn Inspect>, _clock: Arc<ManualClock>) {
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

pub async fn claim_respects_the_expected_version(store: Arc<dyn Inspect>, clock: Arc<ManualClock>) {
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

/// A claim returns the pending entry exactly as a lookup reads it right after: a new one, one
/// that keeps a stale copy while it is refreshed, and one that follows a failure.
pub async fn a_claim_returns_what_a_lookup_returns(
    store: Arc<dyn Inspect>,
    clock: Arc<ManualClock>,
) {
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
            store.complete_one(&job.lease, completion).await.unwrap();
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

/// `n` concurrent claims of one signature, alternating between two stores on the same
/// backend (two pools or connections, as two processes would have). Returns how many
/// enqueued and how many jobs the queue then holds; both must be 1.
pub async fn claims_from_two_stores(
    first: Arc<dyn Inspect>,
    second: Arc<dyn Inspect>,
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

/// The flood cap across two stores on one backend (two processes), both made with
/// `max_pending = cap`: of `4 * cap` distinct claims, alternating between them, at most `cap`
/// enqueue and the rest are refused with [`StoreError::Full`]; a lookup still answers; once
/// a job completes, a claim is taken again.
pub async fn the_flood_cap_holds_across_two_stores(
    first: Arc<dyn Inspect>,
    second: Arc<dyn Inspect>,
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
        .complete_one(
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
