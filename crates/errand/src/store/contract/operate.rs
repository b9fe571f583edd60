//! The operator's path and invalidation: purges (and the running jobs they fence), counts,
//! listings, retrying a failed entry.

#![allow(clippy::unwrap_used, missing_docs)]

use super::*;

pub async fn purge_hard_soft_uri_prefix_tag(store: Arc<dyn Inspect>, clock: Arc<ManualClock>) {
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

/// A purge (hard or soft, by key, URI, prefix or tag) that meets a running job fences it:
/// the job's completion is refused and stores nothing, the job is ready again at once, and
/// the next attempt's result is what is stored and what its waiter gets. A job that is only
/// queued is left as it is.
pub async fn an_invalidation_fences_a_running_job(
    store: Arc<dyn Inspect>,
    _clock: Arc<ManualClock>,
) {
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
            .complete_one(
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
            .complete_one(
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

pub async fn stats_count_entries_and_queue(store: Arc<dyn Inspect>, clock: Arc<ManualClock>) {
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

/// Every page of a listing, followed through its cursors.
async fn list_all(store: &dyn Inspect, state: Option<State>, limit: usize) -> Vec<Key> {
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

pub async fn list_pages_through_entries_by_state(store: Arc<dyn Inspect>, clock: Arc<ManualClock>) {
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
    store: Arc<dyn Inspect>,
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
        .complete_one(
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
