//! The store contract against PostgreSQL (feature `postgres`).
//!
//! Uses `ERRAND_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`); every
//! case gets a schema of its own, dropped afterwards. Without a database the cases are
//! skipped with a message, except under `CI=true`, where they fail.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use errand::store::{Inspect, ManualClock, PgConfig, PgStore, StoreExt};

static SCHEMAS: AtomicUsize = AtomicUsize::new(0);

async fn make(clock: Arc<ManualClock>) -> Option<PgStore> {
    let url = std::env::var("ERRAND_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut config = PgConfig::new(&url);
    config.schema = format!(
        "errand_test_{}_{}",
        std::process::id(),
        SCHEMAS.fetch_add(1, Ordering::SeqCst)
    );
    config.pool_size = 8;
    match PgStore::connect_with_clock(config, clock).await {
        Ok(store) => Some(store),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI needs PostgreSQL at {url}: {e}")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: PostgreSQL is not reachable at {url} ({e}); set ERRAND_TEST_POSTGRES"
            );
            None
        }
    }
}

errand::store_contract!(make, |store: Arc<PgStore>| async move {
    store.drop_schema().await.unwrap();
});

/// The same suite in poll-only mode (no LISTEN): wake-ups come from rechecks alone.
mod poll_only {
    use super::*;

    async fn make_polling(clock: Arc<ManualClock>) -> Option<PgStore> {
        let store = make(Arc::clone(&clock)).await?;
        let mut config = store.config().clone();
        config.listen = false;
        config.recheck = std::time::Duration::from_millis(50);
        Some(PgStore::connect_with_clock(config, clock).await.unwrap())
    }

    errand::store_contract!(make_polling, |store: Arc<PgStore>| async move {
        store.drop_schema().await.unwrap();
    });
}

/// Issue-level check beyond the shared suite: 1,000 concurrent claims of one signature, from
/// two stores (two pools, as two processes would have), enqueue exactly one job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_claims_from_two_pools_make_one_job() {
    use errand::store::contract::claims_from_two_stores;

    let clock = ManualClock::new();
    let Some(first) = make(Arc::clone(&clock)).await else {
        return;
    };
    let first = Arc::new(first);
    // A second pool on the same schema, as a second process would have.
    let config: PgConfig = first.config().clone();
    let second = Arc::new(PgStore::connect_with_clock(config, clock).await.unwrap());
    let (enqueued, jobs) = claims_from_two_stores(first.clone(), second, 1000).await;
    first.drop_schema().await.unwrap();
    assert_eq!(enqueued, 1, "exactly one of 1,000 claims enqueued");
    assert_eq!(jobs, 1, "and the queue holds one job");
}

/// `[server] max_pending` holds across two processes: each counts the queue again after
/// claiming an eighth of the room it last saw, so two cannot pass the cap between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flood_cap_holds_across_processes() {
    let clock = ManualClock::new();
    let Some(probe) = make(Arc::clone(&clock)).await else {
        return;
    };
    let mut config = probe.config().clone();
    config.max_pending = 40;
    let first = Arc::new(
        PgStore::connect_with_clock(config.clone(), clock.clone())
            .await
            .unwrap(),
    );
    let second = Arc::new(PgStore::connect_with_clock(config, clock).await.unwrap());
    errand::store::contract::the_flood_cap_holds_across_two_stores(first, second, 40).await;
    probe.drop_schema().await.unwrap();
}

/// A claim and a completion made through one pool wake an idle worker and a waiter of another
/// process through LISTEN/NOTIFY (a window's notifications go out in one statement), long
/// before their recheck would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakeups_reach_another_process() {
    let clock = ManualClock::new();
    let Some(worker) = make(Arc::clone(&clock)).await else {
        return;
    };
    let worker = Arc::new(worker);
    let mut config = worker.config().clone();
    config.recheck = std::time::Duration::from_secs(60);
    let front = Arc::new(PgStore::connect_with_clock(config, clock).await.unwrap());
    let (idle, waiter) =
        errand::store::contract::wakeups_reach_another_store(worker.clone(), front).await;
    worker.drop_schema().await.unwrap();
    let soon = std::time::Duration::from_secs(5);
    assert!(idle < soon, "idle worker woken: {idle:?}");
    assert!(waiter < soon, "waiter woken: {waiter:?}");
}

/// A second process on `this` store's schema and clock.
async fn another_process(this: &PgStore, clock: &Arc<ManualClock>) -> PgStore {
    PgStore::connect_with_clock(this.config().clone(), clock.clone())
        .await
        .unwrap()
}

/// Takes on `store` as a worker does: a take that finds nothing waits to be told of a job
/// (a notification, or its recheck) and takes again; fails after five seconds.
async fn take_when_told(store: &PgStore, lease: std::time::Duration) -> Vec<errand::store::Job> {
    use errand::store::Store;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let jobs = store.take(4, lease).await.unwrap();
        if !jobs.is_empty() {
            return jobs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never told of the job"
        );
        store
            .wait_for_jobs(std::time::Duration::from_secs(1))
            .await
            .unwrap();
    }
}

/// Claims `path` on `this` while a worker of its process waits idle (after a take that found
/// nothing), and waits until that worker is woken; returns the claimed entry.
async fn claim_while_a_worker_idles(this: &Arc<PgStore>, path: &str) -> errand::pattern::Entry {
    use errand::pattern::Priority;
    use errand::store::contract::claim;
    use errand::store::{ClaimOutcome, Store};
    use std::time::Duration;

    assert!(
        this.take(4, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    let idle = {
        let this = Arc::clone(this);
        tokio::spawn(async move { this.wait_for_jobs(Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ClaimOutcome::Enqueued(entry) =
        this.claim(claim(path, Priority::Miss, None)).await.unwrap()
    else {
        panic!("claimed");
    };
    tokio::time::timeout(Duration::from_secs(5), idle)
        .await
        .expect("the idle worker is woken")
        .unwrap()
        .unwrap();
    assert_eq!(
        Some(entry.clone()),
        this.lookup(&entry.key).await.unwrap(),
        "the claim returns the entry it leased, as a lookup reads it"
    );
    entry
}

/// A job claimed while a worker of the same process waits idle is leased to it in the claim's
/// own statement: its next take gets it without asking the database, and the lease is in the
/// table, so another process neither takes it meanwhile nor loses it if this process dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_hands_its_job_to_an_idle_worker_of_its_process() {
    use errand::pattern::Completion;
    use errand::pattern::Priority;
    use errand::store::contract::{claim, signature};
    use errand::store::{Store, StoreError};
    use std::time::Duration;

    let lease = Duration::from_secs(30);
    let clock = ManualClock::new();
    let Some(this) = make(Arc::clone(&clock)).await else {
        return;
    };
    let this = Arc::new(this);
    let other = another_process(&this, &clock).await;
    // A worker of this process: nothing to take, so it waits.
    let entry = claim_while_a_worker_idles(&this, "/handed").await;
    // Leased already: the other process finds nothing to take, and sees it running.
    assert!(other.take(4, lease).await.unwrap().is_empty());
    let stats = other.stats().await.unwrap();
    assert_eq!((stats.running, stats.ready), (1, 0));
    let jobs = this.take(4, lease).await.unwrap();
    assert_eq!(jobs.len(), 1, "handed over");
    let handed = &jobs[0];
    assert_eq!(handed.lease.key, signature("/handed").key);
    assert_eq!(Some(handed.lease.job), entry.job().map(|j| j.id));
    assert_eq!((handed.attempt, handed.redelivered), (1, false));
    assert_eq!(
        handed.request.uri,
        claim("/handed", Priority::Miss, None).request.uri
    );
    // This process "dies" with it: when the lease runs out, the other takes it over.
    clock.advance(lease + Duration::from_secs(1));
    let taken = other.take(4, lease).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].attempt, taken[0].redelivered), (2, true));
    let done = || Completion::Retry {
        run_at: other.now(),
        error: "again".into(),
    };
    assert!(matches!(
        this.complete_one(&handed.lease, done()).await,
        Err(StoreError::LeaseLost)
    ));
    other.complete_one(&taken[0].lease, done()).await.unwrap();
    this.drop_schema().await.unwrap();
}

/// Workers that stop (shutdown) before taking a job handed over to them give it back: ready
/// at once for another process, as if never taken, instead of waiting out its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_handed_over_but_not_started_go_back_at_shutdown() {
    use errand::store::Store;
    use errand::store::contract::signature;
    use std::time::Duration;

    let lease = Duration::from_secs(30);
    let clock = ManualClock::new();
    let Some(this) = make(Arc::clone(&clock)).await else {
        return;
    };
    let this = Arc::new(this);
    let other = another_process(&this, &clock).await;
    assert_eq!(this.hand_back_unstarted().await.unwrap(), 0, "nothing yet");
    // The worker is woken, but shuts down instead of taking it.
    let entry = claim_while_a_worker_idles(&this, "/unstarted").await;
    assert!(other.take(4, lease).await.unwrap().is_empty(), "leased");
    assert_eq!(this.hand_back_unstarted().await.unwrap(), 1);
    // No clock moved: the other process, told of it as its workers are, takes it now, as its
    // first attempt.
    let taken = take_when_told(&other, lease).await;
    assert_eq!(taken.len(), 1, "ready again at once");
    assert_eq!(taken[0].lease.key, signature("/unstarted").key);
    assert_eq!(Some(taken[0].lease.job), entry.job().map(|j| j.id));
    assert_eq!((taken[0].attempt, taken[0].redelivered), (1, false));
    assert!(
        this.take(4, lease).await.unwrap().is_empty(),
        "not kept here"
    );
    assert_eq!(this.hand_back_unstarted().await.unwrap(), 0);
    this.drop_schema().await.unwrap();
}

/// A claim that loses the race locks the row for a moment (ON CONFLICT DO UPDATE locks what
/// it finds), and a worker's take skips locked rows: a worker woken by the winning claim can
/// find nothing. The loser, once done, announces the job again, so that worker does not wait
/// for its recheck (a minute here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_claim_wakes_the_workers_again() {
    use errand::pattern::Priority;
    use errand::store::contract::{claim, signature};
    use errand::store::{ClaimOutcome, Store};
    use std::time::Duration;

    let lease = Duration::from_secs(30);
    let clock = ManualClock::new();
    let Some(front) = make(Arc::clone(&clock)).await else {
        return;
    };
    let mut config = front.config().clone();
    config.recheck = Duration::from_secs(60);
    let worker = Arc::new(
        PgStore::connect_with_clock(config.clone(), clock)
            .await
            .unwrap(),
    );
    assert!(matches!(
        front
            .claim(claim("/locked", Priority::Miss, None))
            .await
            .unwrap(),
        ClaimOutcome::Enqueued(_)
    ));
    // A racing claim's lock, held while the worker takes.
    let (client, connection) = tokio_postgres::connect(&config.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let key = signature("/locked").key;
    client.batch_execute("BEGIN").await.unwrap();
    let locked = client
        .query(
            &format!(
                "SELECT key FROM {}.entries WHERE key = $1 FOR NO KEY UPDATE",
                config.schema
            ),
            &[&key.as_bytes().as_slice()],
        )
        .await
        .unwrap();
    assert_eq!(locked.len(), 1);
    assert!(worker.take(1, lease).await.unwrap().is_empty(), "skipped");
    let idle = {
        let worker = Arc::clone(&worker);
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            worker.wait_for_jobs(Duration::from_secs(60)).await.unwrap();
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.batch_execute("COMMIT").await.unwrap();
    // The racing claim finishes: it lost, and finds the job still waiting.
    assert!(matches!(
        front
            .claim(claim("/locked", Priority::Miss, None))
            .await
            .unwrap(),
        ClaimOutcome::Exists(_)
    ));
    let woke = tokio::time::timeout(Duration::from_secs(10), idle)
        .await
        .expect("the idle worker is woken again")
        .unwrap();
    assert!(woke < Duration::from_secs(10), "{woke:?}");
    assert_eq!(worker.take(1, lease).await.unwrap().len(), 1);
    front.drop_schema().await.unwrap();
}

/// A schema made by the first version (URI index on every row) is upgraded in place, and
/// running the migrations again changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_upgrade_a_first_version_schema() {
    let clock = ManualClock::new();
    let Some(store) = make(clock).await else {
        return;
    };
    let schema = store.config().schema.clone();
    let (client, connection) = tokio_postgres::connect(&store.config().url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // Back to version 1's shape.
    client
        .batch_execute(&format!(
            "DROP INDEX {schema}.entries_uri_kept;
             CREATE INDEX entries_uri ON {schema}.entries (uri text_pattern_ops);
             DELETE FROM {schema}.migrations WHERE version = 2;"
        ))
        .await
        .unwrap();
    assert_eq!(uri_indexes(&client, &schema).await, ["entries_uri"]);
    for _ in 0..2 {
        store.migrate().await.unwrap();
        assert_eq!(uri_indexes(&client, &schema).await, ["entries_uri_kept"]);
        let versions: Vec<i32> = client
            .query(
                &format!("SELECT version FROM {schema}.migrations ORDER BY 1"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, [1, 2]);
    }
    store.drop_schema().await.unwrap();
}

async fn uri_indexes(client: &tokio_postgres::Client, schema: &str) -> Vec<String> {
    client
        .query(
            "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND indexname LIKE 'entries_uri%'",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}
