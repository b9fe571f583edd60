//! Completions: what each kind of result makes of the entry, batches, lifetimes, expiry,
//! the one-time response of hit-for-pass.

#![allow(clippy::unwrap_used, missing_docs)]

use super::*;

pub async fn complete_turns_pending_into_fresh_failed_or_pass(
    store: Arc<dyn Inspect>,
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
        .complete_one(&job.lease, Completion::Fail(failure.clone()))
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
        .complete_one(&job.lease, Completion::Pass(pass.clone()))
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

pub async fn a_batch_completion_fences_each_job(store: Arc<dyn Inspect>, clock: Arc<ManualClock>) {
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
    let results = store.complete(batch).await;
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
pub async fn far_future_lifetimes_apply_whole(store: Arc<dyn Inspect>, _clock: Arc<ManualClock>) {
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
    let results = store.complete(batch).await;
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

pub async fn take_once_delivers_exactly_once(store: Arc<dyn Inspect>, _clock: Arc<ManualClock>) {
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
        .complete_one(&job.lease, Completion::Pass(pass))
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

/// A result stale on arrival (`no-cache`, `max-age=0` with a validator) goes once to its
/// requests and stays, kept only to be revalidated: its waiters get it, the next request
/// takes it once, the one after claims a revalidation with the same copy kept.
pub async fn a_delivered_result_keeps_its_copy_to_revalidate(
    store: Arc<dyn Inspect>,
    clock: Arc<ManualClock>,
) {
    let key = signature("/deliver").key;
    enqueued(
        store
            .claim(claim("/deliver", Priority::Miss, None))
            .await
            .unwrap(),
    );
    let waiter = waiter(&store, key, Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let job = store.take(1, LEASE).await.unwrap().remove(0);
    // Fresh for nothing, kept 600 s for its validators.
    let revalidate_only = |body| {
        let mut kept = content(&*store, body, 0, 600, 0, &["t"]);
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", "no-cache".parse().unwrap());
        headers.insert("etag", "\"v1\"".parse().unwrap());
        kept.response = Arc::new(StoredResponse {
            headers,
            ..(*kept.response).clone()
        });
        kept
    };
    let kept = revalidate_only("validated");
    let pass = PassInfo {
        until: store.now().plus(Duration::from_secs(30)),
        once: Some(Arc::clone(&kept.response)),
        reason: "stale-on-arrival".into(),
    };
    let deliver = Completion::Deliver {
        content: kept.clone(),
        pass: pass.clone(),
    };
    store.complete_one(&job.lease, deliver).await.unwrap();

    // The waiter is woken with the result, whoever takes the delivery first.
    let (woken, _) = waiter.await.unwrap();
    let woken = woken.expect("the waiter was woken");
    assert_eq!(woken.content.as_ref(), Some(&kept));
    assert_eq!(
        woken.result_for_waiters().map(|r| &r.body[..]),
        Some(&b"validated"[..])
    );
    let entry = store.lookup(&key).await.unwrap().unwrap();
    assert_eq!(entry.content.as_ref(), Some(&kept), "the copy is kept");
    assert_eq!(entry.status, Status::Pass(pass));
    assert_eq!(
        decide(Some(&entry), store.now()),
        Decision::Pass { once: true }
    );
    assert_eq!(entry.state(store.now()), State::Pass);

    // The next request takes the delivery; the copy stays.
    let taken = store
        .take_once(&key)
        .await
        .unwrap()
        .expect("delivered once");
    assert_eq!(taken.body, "validated");
    assert_eq!(store.take_once(&key).await.unwrap(), None);
    let entry = store.lookup(&key).await.unwrap().unwrap();
    assert_eq!(entry.content.as_ref(), Some(&kept));
    assert_eq!(
        decide_waited(Some(&entry), store.now()),
        Decision::Pass { once: false },
        "a late waiter still gets the kept copy"
    );
    let Decision::Miss { expect } = decide(Some(&entry), store.now()) else {
        panic!("the request after the delivery revalidates");
    };
    assert_eq!(expect, Some(entry.version));

    // Its revalidation keeps the copy while it runs, and knows nothing failed.
    let pending = match store
        .claim(claim("/deliver", Priority::Miss, expect))
        .await
        .unwrap()
    {
        ClaimOutcome::Enqueued(pending) => pending,
        other => panic!("the revalidation was not claimed: {other:?}"),
    };
    assert_eq!(pending.content.as_ref(), Some(&kept));
    assert!(!pending.job().unwrap().after_failure);
    assert_eq!(decide(Some(&pending), store.now()), Decision::Pending);

    // Settled again and left alone: it lasts as long as the longer of its pass and its copy.
    let job = store.take(1, LEASE).await.unwrap().remove(0);
    let again = Completion::Deliver {
        content: revalidate_only("validated"),
        pass: PassInfo {
            until: store.now().plus(Duration::from_secs(30)),
            once: Some(response("validated")),
            reason: "stale-on-arrival".into(),
        },
    };
    store.complete_one(&job.lease, again).await.unwrap();
    clock.advance(Duration::from_secs(300));
    let entry = store
        .lookup(&key)
        .await
        .unwrap()
        .expect("kept past its pass");
    assert!(entry.content.is_some());
    clock.advance(Duration::from_secs(301));
    assert_eq!(
        store.lookup(&key).await.unwrap(),
        None,
        "gone after its copy"
    );
}

pub async fn expired_entries_are_absent(store: Arc<dyn Inspect>, clock: Arc<ManualClock>) {
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

/// A variant keeps the request values that chose it (RFC 9111 §4.1), as stored content and
/// as a one-time response, apart from its headers.
pub async fn a_variant_keeps_the_values_that_chose_it(
    store: Arc<dyn Inspect>,
    _clock: Arc<ManualClock>,
) {
    let varying = |body: &'static str| {
        let mut headers = HeaderMap::new();
        headers.append("vary", "Accept-Language, Accept".parse().unwrap());
        let mut selecting = HeaderMap::new();
        selecting.append("accept-language", "de".parse().unwrap());
        selecting.append("accept", "text/html".parse().unwrap());
        selecting.append("accept", "*/*;q=0.1".parse().unwrap());
        Arc::new(StoredResponse {
            status: StatusCode::OK,
            headers,
            body: body.into(),
            selecting,
        })
    };
    // Stored content.
    enqueued(
        store
            .claim(claim("/variant", Priority::Miss, None))
            .await
            .unwrap(),
    );
    let job = store.take(1, LEASE).await.unwrap().remove(0);
    let mut stored = content(&*store, "de", 60, 0, 0, &[]);
    stored.response = varying("de");
    store
        .complete_one(&job.lease, Completion::Store(stored))
        .await
        .unwrap();
    let entry = store
        .lookup(&signature("/variant").key)
        .await
        .unwrap()
        .unwrap();
    let response = &entry.content.unwrap().response;
    assert_eq!(response, &varying("de"));
    assert!(
        !response.headers.contains_key("accept-language"),
        "kept apart from its headers"
    );

    // A one-time response (hit-for-pass).
    enqueued(
        store
            .claim(claim("/variant/once", Priority::Miss, None))
            .await
            .unwrap(),
    );
    let job = store.take(1, LEASE).await.unwrap().remove(0);
    let pass = PassInfo {
        until: store.now().plus(Duration::from_secs(60)),
        once: Some(varying("once")),
        reason: "vary".into(),
    };
    store
        .complete_one(&job.lease, Completion::Pass(pass))
        .await
        .unwrap();
    let once = store
        .take_once(&signature("/variant/once").key)
        .await
        .unwrap();
    assert_eq!(once, Some(varying("once")));
}
