//! Waiting: waiters woken by completions, idle workers woken by claims, across processes.

#![allow(clippy::unwrap_used, missing_docs)]

use super::*;

pub async fn wait_is_woken_by_complete(store: Arc<dyn Inspect>, _clock: Arc<ManualClock>) {
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
        .complete_one(
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
    let settled = store
        .wait(&key, None, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(settled.is_some());
}

/// Whatever way a store wakes its waiters (a fresh lookup, or the entry the completion
/// hands them), each gets exactly what a lookup returns: headers with repeated names, tags,
/// every time, the version. One job alone and several in one call.
pub async fn waiters_get_what_a_lookup_returns(store: Arc<dyn Inspect>, _clock: Arc<ManualClock>) {
    let rich = |body: &'static str| {
        let mut c = content(&*store, body, 60, 30, 600, &["team-a", "page"]);
        let mut headers = HeaderMap::new();
        headers.append("content-type", "text/plain".parse().unwrap());
        headers.append("x-part", "one".parse().unwrap());
        headers.append("x-part", "two; q=\"3\"".parse().unwrap());
        headers.append("vary", "Accept-Language".parse().unwrap());
        let mut selecting = HeaderMap::new();
        selecting.append("accept-language", "en".parse().unwrap());
        c.response = Arc::new(StoredResponse {
            status: StatusCode::NON_AUTHORITATIVE_INFORMATION,
            headers,
            body: body.into(),
            selecting,
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
        .complete_one(&single.lease, Completion::Store(rich("single")))
        .await
        .unwrap();
    let batch = jobs
        .iter()
        .map(|job| (job.lease.clone(), Completion::Store(rich("batched"))))
        .collect();
    assert!(store.complete(batch).await.iter().all(Result::is_ok));
    for (path, waiter) in paths.iter().zip(waiters) {
        let (got, _) = waiter.await.unwrap();
        let got = got.unwrap_or_else(|| panic!("{path}: woken with its entry"));
        let looked_up = store.lookup(&signature(path).key).await.unwrap();
        assert_eq!(Some(got), looked_up, "{path}");
    }
}

/// A caller read the entry as pending, then the job completed before its wait began: the
/// wait still returns the settled entry at once, whatever the store skips.
pub async fn a_wait_after_a_read_sees_a_completion_made_before_it_began(
    store: Arc<dyn Inspect>,
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
        .wait(&key, Some(seen), Duration::from_secs(20))
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
        tokio::spawn(async move { store.wait(&key, Some(seen), Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let job = store.take(1, LEASE).await.unwrap().remove(0);
    store.complete_one(&job.lease, done("later")).await.unwrap();
    let settled = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken by the completion")
        .unwrap()
        .unwrap();
    assert_eq!(settled, store.lookup(&key).await.unwrap());
}

pub async fn wait_times_out_while_pending(store: Arc<dyn Inspect>, _clock: Arc<ManualClock>) {
    enqueued(
        store
            .claim(claim("/slow", Priority::Miss, None))
            .await
            .unwrap(),
    );
    let started = tokio::time::Instant::now();
    let waited = store
        .wait(&signature("/slow").key, None, Duration::from_millis(200))
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
            .wait(&signature("/absent").key, None, Duration::from_secs(5))
            .await
            .unwrap(),
        None
    );
}

pub async fn wait_for_jobs_is_woken_by_claim(store: Arc<dyn Inspect>, _clock: Arc<ManualClock>) {
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

/// Wake-ups between processes: `front` and `worker` share one backend through connections
/// of their own, and `front` rechecks so rarely (give it a recheck of a minute) that only a
/// notification from `worker` can wake it in time. A claim made by `worker` wakes an idle
/// worker of `front`; a completion made by `worker` (after a retry, which wakes no one) wakes
/// a waiter of `front` with the settled entry. Returns how long each took to wake, both of
/// which should be far below the recheck.
pub async fn wakeups_reach_another_store(
    worker: Arc<dyn Inspect>,
    front: Arc<dyn Inspect>,
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
                .wait(&key, Some(seen), Duration::from_secs(30))
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
    worker.complete_one(&job.lease, retry).await.unwrap();
    let job = worker.take(1, LEASE).await.unwrap().remove(0);
    let pass = PassInfo {
        until: worker.now().plus(Duration::from_secs(60)),
        once: None,
        reason: "private".into(),
    };
    worker
        .complete_one(&job.lease, Completion::Pass(pass))
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
    worker.complete_one(&job.lease, done).await.unwrap();
    // Long enough for its notification to have reached the front before the wait begins.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = tokio::time::Instant::now();
    let settled = front
        .wait(&raced, Some(seen), Duration::from_secs(30))
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

/// A result already past every window when it is stored (a failure with an error TTL of 0)
/// still reaches the waiters of this process: a lookup no longer finds it, but they are
/// woken with it.
pub async fn waiters_get_a_result_that_is_over_as_it_is_stored(
    store: Arc<dyn Inspect>,
    _clock: Arc<ManualClock>,
) {
    enqueued(
        store
            .claim(claim("/over", Priority::Miss, None))
            .await
            .unwrap(),
    );
    let key = signature("/over").key;
    let waiting = waiter(&store, key, Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let job = store.take(1, LEASE).await.unwrap().remove(0);
    store
        .complete_one(&job.lease, Completion::Fail(failure(&*store, 0)))
        .await
        .unwrap();
    let (settled, _) = waiting.await.unwrap();
    let settled = settled.expect("the waiter is woken with the failure");
    assert!(
        matches!(settled.status, crate::pattern::Status::Failed(_)),
        "{:?}",
        settled.status
    );
}
