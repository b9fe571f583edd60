//! The PostgreSQL store's own tests against the test database, beyond the contract suite.

use std::sync::atomic::Ordering;

use tokio_postgres::NoTls;

use super::claims::QueuedClaim;
use super::*;
use crate::pattern::Priority;

/// A store on the test database in a schema of its own (`errand_unit_{tag}_{pid}`),
/// without the listener; `None` (and a loud line) when PostgreSQL is not there, except
/// under `CI=true`, where that fails the test.
#[allow(clippy::print_stderr)]
async fn unit_store(tag: &str, tweak: impl FnOnce(&mut PgConfig)) -> Option<PgStore> {
    let url = std::env::var("ERRAND_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut config = PgConfig::new(&url);
    config.schema = format!("errand_unit_{tag}_{}", std::process::id());
    config.listen = false;
    tweak(&mut config);
    match PgStore::connect(config).await {
        Ok(store) => Some(store),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI needs PostgreSQL at {url}: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: PostgreSQL is not reachable at {url} ({e})");
            None
        }
    }
}

/// `url` with `params` added to its query string.
fn with_params(url: &str, params: &str) -> String {
    let joint = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joint}{params}")
}

/// The test database's certificate file when it has TLS on; `None` (and a loud line) when
/// it has not, except under `CI=true`, where that fails the test.
#[allow(clippy::print_stderr)]
async fn server_certificate() -> Option<String> {
    let url = std::env::var("ERRAND_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let (client, connection) = match tokio_postgres::connect(&url, NoTls).await {
        Ok(pair) => pair,
        Err(e) if ci => panic!("CI needs PostgreSQL at {url}: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: PostgreSQL is not reachable at {url} ({e})");
            return None;
        }
    };
    tokio::spawn(connection);
    let setting = |name: &'static str| {
        let client = &client;
        async move {
            let row = client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .unwrap();
            row.get::<_, String>(0)
        }
    };
    if setting("ssl").await != "on" {
        assert!(!ci, "CI needs PostgreSQL with ssl = on at {url}");
        eprintln!("SKIPPED: PostgreSQL at {url} has ssl = off");
        return None;
    }
    let file = setting("ssl_cert_file").await;
    let path = if file.starts_with('/') {
        file
    } else {
        format!("{}/{file}", setting("data_directory").await)
    };
    Some(path)
}

/// Whether the server sees the pooled connection as encrypted.
async fn encrypted(store: &PgStore) -> bool {
    let client = store.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// `sslmode` decides whether the connection is encrypted, as libpq's does; the default
/// (`prefer`) encrypts when the server offers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_decides_whether_the_connection_is_encrypted() {
    if server_certificate().await.is_none() {
        return;
    }
    for (mode, want) in [
        ("", true),
        ("sslmode=disable", false),
        ("sslmode=prefer", true),
        ("sslmode=require", true),
    ] {
        let Some(store) = unit_store("tlsmode", |c| {
            if !mode.is_empty() {
                c.url = with_params(&c.url, mode);
            }
        })
        .await
        else {
            return;
        };
        let got = encrypted(&store).await;
        store.drop_schema().await.unwrap();
        assert_eq!(got, want, "{mode:?}");
    }
}

/// `verify-ca` accepts a certificate signed by the given root whatever name it holds;
/// `verify-full` also needs the host's name on it. A root that did not sign the server's
/// certificate is refused at once, with an error naming the database and the reason. The
/// test database's certificate is self-signed (Debian's default), so it is its own root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_modes_check_the_server_certificate() {
    let Some(cert) = server_certificate().await else {
        return;
    };
    let root = format!("sslrootcert={cert}");
    let url = std::env::var("ERRAND_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    assert!(
        url.contains("@127.0.0.1:"),
        "this test names the host two ways, and needs the test database at 127.0.0.1 ({url})"
    );
    let by_name = url.replace("@127.0.0.1:", "@localhost:");
    let connect = |url: String| async move {
        let mut config = PgConfig::new(url);
        config.schema = format!("errand_unit_tlsverify_{}", std::process::id());
        config.listen = false;
        config.call_timeout = Duration::from_secs(3);
        PgStore::connect(config).await
    };

    let store = connect(with_params(&url, &format!("sslmode=verify-ca&{root}")))
        .await
        .expect("verify-ca with the server's own certificate as root");
    assert!(encrypted(&store).await);
    drop(store);
    let store = connect(with_params(
        &by_name,
        &format!("sslmode=verify-full&{root}"),
    ))
    .await
    .expect("verify-full by the name on the certificate");
    assert!(encrypted(&store).await);
    store.drop_schema().await.unwrap();

    let started = std::time::Instant::now();
    let e = connect(with_params(&url, &format!("sslmode=verify-full&{root}")))
        .await
        .expect_err("verify-full by an address the certificate does not name");
    let text = e.to_string();
    assert!(text.contains("127.0.0.1:5432"), "{text}");
    assert!(text.contains("certificate"), "{text}");
    let unrelated = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/unrelated-ca.pem");
    let e = connect(with_params(
        &url,
        &format!("sslmode=verify-ca&sslrootcert={unrelated}"),
    ))
    .await
    .expect_err("a root that did not sign the server's certificate");
    let text = e.to_string();
    assert!(text.contains("certificate"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusals are prompt, not timeouts: {:?}",
        started.elapsed()
    );
}

/// A client certificate and its key are read and paired when the URL is read.
#[test]
fn a_client_certificate_is_read_with_its_key() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let url = format!(
        "postgres://db.example/app?sslmode=require&sslcert={data}/unrelated-ca.pem\
         &sslkey={data}/unrelated-ca.key"
    );
    tls::target(&url).expect("a matching certificate and key");
    let e = tls::target(&format!(
        "postgres://db.example/app?sslmode=require&sslcert={data}/unrelated-ca.pem\
         &sslkey={data}/unrelated-ca.pem"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("sslkey: cannot read a PEM private key"), "{e}");
}

/// `count()` once it reaches 0, or as it is after `within` (looking every 10 ms).
async fn settled(count: impl Fn() -> usize, within: Duration) -> usize {
    let deadline = std::time::Instant::now() + within;
    let mut n = count();
    while n != 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        n = count();
    }
    n
}

/// A batch of completions finds each row through the primary key even when its plan is
/// made while the table is new and empty, as on a fresh deployment: a connection keeps
/// that plan, and a scan of the table would grow with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_completions_probe_the_key_on_a_new_table() {
    let Some(store) = unit_store("plan", |_| {}).await else {
        return;
    };
    let url = store.config.url.clone();
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "SET plan_cache_mode = force_generic_plan; PREPARE many AS {}",
            store.sql.complete_store_many
        ))
        .await
        .unwrap();
    let empty = ["'{}'"; 12].join(", ");
    let plan: Vec<String> = client
        .query(&format!("EXPLAIN EXECUTE many({empty})"), &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    drop(client);
    store.drop_schema().await.unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("entries_pkey"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
}

/// The pool hands out the connection given back last: after a burst opened several,
/// calls one after another all run on one server process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_reuses_the_connection_given_back_last() {
    let Some(store) = unit_store("lifo", |_| {}).await else {
        return;
    };
    async fn pid(client: &deadpool_postgres::Object) -> i32 {
        client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0)
    }
    // A burst: four connections at once, given back in order.
    let mut burst = Vec::new();
    for _ in 0..4 {
        burst.push(store.pool.get().await.unwrap());
    }
    let mut opened = Vec::new();
    for client in &burst {
        opened.push(pid(client).await);
    }
    drop(burst);
    let mut used = Vec::new();
    for _ in 0..4 {
        let client = store.pool.get().await.unwrap();
        used.push(pid(&client).await);
    }
    store.drop_schema().await.unwrap();
    assert_eq!(opened.len(), 4);
    assert!(used.iter().all(|p| *p == used[0]), "{used:?} of {opened:?}");
    assert!(opened.contains(&used[0]), "{used:?} of {opened:?}");
}

/// Connections left unused for the idle timeout are closed; the pool opens new ones
/// when calls need them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let Some(store) = unit_store("idle", |c| c.idle_timeout = Duration::from_millis(300)).await
    else {
        return;
    };
    let mut burst = Vec::new();
    for _ in 0..3 {
        burst.push(store.pool.get().await.unwrap());
    }
    drop(burst);
    let opened = store.pool.status().size;
    // One connection stays in use, every 100 ms; the other two idle out.
    let key = Key::parse(&"7".repeat(32)).unwrap();
    for _ in 0..10 {
        assert!(store.lookup(&key).await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = store.pool.status().size;
    // Then nothing for a while: the last one goes too, and a call opens a new one.
    let idle = settled(|| store.pool.status().size, Duration::from_secs(3)).await;
    assert!(store.lookup(&key).await.unwrap().is_none());
    let after = store.pool.status().size;
    store.drop_schema().await.unwrap();
    assert_eq!(opened, 3);
    assert_eq!(
        left, 1,
        "the connection in use stays, the idle ones are closed"
    );
    assert_eq!(idle, 0);
    assert_eq!(after, 1);
}

/// A claim of `GET http://unit.test{path}`.
fn unit_claim(path: &str) -> Claim {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::HOST, "unit.test".parse().unwrap());
    let sig = crate::pattern::Signature::of(
        &http::Method::GET,
        &path.parse().unwrap(),
        &headers,
        "http",
        &[],
    )
    .unwrap();
    Claim {
        uri: sig.request.uri.clone(),
        key: sig.key,
        request: sig.request,
        priority: Priority::Miss,
        expect: None,
    }
}

/// A claim as the claim statements take it.
fn params(store: &PgStore, claim: &Claim, uri: Option<&str>) -> ClaimParams {
    ClaimParams {
        key: claim.key,
        uri: uri.unwrap_or(&claim.uri).to_owned(),
        priority: claim.priority as i16,
        now: ms(store.now()),
        request: serde_json::to_string(&claim.request).unwrap(),
        expect: claim.expect.map(i64_of),
    }
}

/// Sends `claims` as one group; what each caller is told.
async fn send_as_group(
    store: &PgStore,
    claims: Vec<ClaimParams>,
) -> Vec<Result<Option<Row>, StoreError>> {
    let (group, answers): (Vec<_>, Vec<_>) = claims
        .into_iter()
        .map(|params| {
            let (reply, answer) = tokio::sync::oneshot::channel();
            (QueuedClaim { params, reply }, answer)
        })
        .unzip();
    store.claims.send_group(group).await;
    let mut outcomes = Vec::new();
    for answer in answers {
        outcomes.push(answer.await.unwrap());
    }
    outcomes
}

/// Claims sent together each get what a claim of their own would: a new key and an
/// expired entry are claimed, a pending one is not, and a conditional claim wins only at
/// the version it expects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_sent_together_each_get_their_own_row() {
    let Some(store) = unit_store("group", |_| {}).await else {
        return;
    };
    let [fresh, pending, expired, current, outdated] =
        ["/fresh", "/pending", "/expired", "/current", "/outdated"].map(unit_claim);
    let ClaimOutcome::Enqueued(_) = store.claim(unit_claim("/pending")).await.unwrap() else {
        panic!("the first claim of /pending enqueues");
    };
    // Settled entries: one expired, two live at version 42.
    let now = ms(store.now());
    for (claim, expires) in [
        (&expired, now - 1),
        (&current, now + 60_000),
        (&outdated, now + 60_000),
    ] {
        let sql = format!(
            "INSERT INTO {}.entries (key, uri, version, pending, expires_at)
             VALUES ($1, $2, 42, false, $3)",
            store.config.schema
        );
        let key = claim.key.as_bytes().as_slice();
        store
            .query(&sql, &[&key, &claim.uri, &expires])
            .await
            .unwrap();
    }
    let current = Claim {
        expect: Some(42),
        ..current
    };
    let outdated = Claim {
        expect: Some(41),
        ..outdated
    };
    let claims = [&fresh, &pending, &expired, &current, &outdated];
    let sent = store.claims.statements.load(Ordering::Relaxed);
    let outcomes = send_as_group(
        &store,
        claims.iter().map(|c| params(&store, c, None)).collect(),
    )
    .await;
    let statements = store.claims.statements.load(Ordering::Relaxed) - sent;
    let mut won = Vec::new();
    for (claim, outcome) in claims.iter().zip(outcomes) {
        let row = outcome.unwrap();
        if let Some(row) = row {
            // The row is this claim's: the entry a lookup reads is the one it made.
            let entry = claimed_entry(claim, store.now(), None, &row).unwrap();
            let stored = store.lookup(&claim.key).await.unwrap().unwrap();
            assert_eq!(stored.version, entry.version, "{}", claim.uri);
            assert_eq!(stored.job().map(|j| j.id), entry.job().map(|j| j.id));
            won.push(claim.uri.rsplit('/').next().unwrap().to_owned());
        }
    }
    store.drop_schema().await.unwrap();
    assert_eq!(statements, 1, "one statement for the group");
    assert_eq!(won, ["fresh", "expired", "current"]);
}

/// A group the server refuses is claimed one by one, so a claim it cannot store fails
/// alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_group_is_claimed_one_by_one() {
    let Some(store) = unit_store("refused", |_| {}).await else {
        return;
    };
    let good = [unit_claim("/a"), unit_claim("/b")];
    let bad = unit_claim("/c");
    let mut claims: Vec<ClaimParams> = good.iter().map(|c| params(&store, c, None)).collect();
    // PostgreSQL's text holds no NUL character.
    claims.push(params(&store, &bad, Some("http://unit.test/c\0")));
    let outcomes = send_as_group(&store, claims).await;
    let refused = store.claims.refused.load(Ordering::Relaxed);
    let found = [
        store.lookup(&good[0].key).await.unwrap(),
        store.lookup(&good[1].key).await.unwrap(),
        store.lookup(&bad.key).await.unwrap(),
    ];
    store.drop_schema().await.unwrap();
    assert_eq!(refused, 1);
    assert!(
        matches!(outcomes[0], Ok(Some(_))),
        "{:?}",
        outcomes[0].as_ref().err()
    );
    assert!(
        matches!(outcomes[1], Ok(Some(_))),
        "{:?}",
        outcomes[1].as_ref().err()
    );
    assert!(outcomes[2].is_err());
    assert!(found[0].is_some() && found[1].is_some() && found[2].is_none());
}

/// A burst of claims goes in fewer statements than claims, each claimed exactly once,
/// and two processes claiming the same keys in different orders never deadlock (a
/// refused group would show one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_claims_shares_statements() {
    let Some(store) = unit_store("burst", |_| {}).await else {
        return;
    };
    let other = PgStore::connect(store.config.clone()).await.unwrap();
    let (store, other) = (Arc::new(store), Arc::new(other));
    let mut calls = tokio::task::JoinSet::new();
    for round in 0..2 {
        for i in 0..100 {
            // The second process claims the keys in the reverse order.
            let (s, n) = if round == 0 {
                (&store, i)
            } else {
                (&other, 99 - i)
            };
            let (s, claim) = (Arc::clone(s), unit_claim(&format!("/burst/{n}")));
            calls.spawn(async move { (claim.key, s.claim(claim).await) });
        }
    }
    let mut enqueued = std::collections::HashMap::new();
    while let Some(call) = calls.join_next().await {
        let (key, outcome) = call.unwrap();
        if let ClaimOutcome::Enqueued(entry) = outcome.unwrap() {
            *enqueued.entry(key).or_insert(0) += 1;
            let stored = store.lookup(&key).await.unwrap().unwrap();
            assert_eq!(stored.version, entry.version);
        }
    }
    let statements = store.claims.statements.load(Ordering::Relaxed)
        + other.claims.statements.load(Ordering::Relaxed);
    let refused =
        store.claims.refused.load(Ordering::Relaxed) + other.claims.refused.load(Ordering::Relaxed);
    store.drop_schema().await.unwrap();
    assert_eq!(enqueued.len(), 100, "every key claimed");
    assert!(enqueued.values().all(|n| *n == 1), "once each");
    assert!(statements < 200, "{statements} statements for 200 claims");
    assert_eq!(refused, 0);
}

/// A caller that gives up while its own claim statement waits hands the claims queued
/// behind it to a task of their own: they are still made, and it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_given_up_hands_on_the_claims_waiting_behind_it() {
    // No flood cap: its count would wait for the busy connection before the claims queue.
    let Some(store) = unit_store("giveup", |c| {
        c.pool_size = 1;
        c.max_pending = usize::MAX;
    })
    .await
    else {
        return;
    };
    let store = Arc::new(store);
    // The only connection is busy: the next two claims take both sending slots and wait
    // for it; the third waits in the queue behind them.
    let busy = store.pool.get().await.unwrap();
    let claims = ["/gives-up", "/alone", "/queued"].map(unit_claim);
    let mut calls = Vec::new();
    for claim in &claims {
        let (store, claim) = (Arc::clone(&store), claim.clone());
        calls.push(tokio::spawn(async move { store.claim(claim).await }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queued = store.claims.state().waiting.len();
    calls[0].abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(busy);
    let alone = calls.remove(1).await.unwrap();
    let behind = calls.remove(1).await.unwrap();
    let made = [
        store.lookup(&claims[0].key).await.unwrap().is_some(),
        store.lookup(&claims[2].key).await.unwrap().is_some(),
    ];
    // The last sender gives its slot back right after it answers.
    let senders = settled(|| store.claims.state().senders, Duration::from_secs(1)).await;
    store.drop_schema().await.unwrap();
    assert_eq!(queued, 1, "the third claim waited");
    assert!(matches!(alone, Ok(ClaimOutcome::Enqueued(_))), "{alone:?}");
    assert!(
        matches!(behind, Ok(ClaimOutcome::Enqueued(_))),
        "{behind:?}"
    );
    assert_eq!(made, [false, true]);
    assert_eq!(senders, 0, "every sending slot given back");
}

/// While the database hangs (here: its only connection never comes back), a claim that
/// waits behind others fails within the call timeout, as one that goes alone does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_waiting_on_a_hung_database_fail_within_the_call_timeout() {
    let limit = Duration::from_secs(1);
    let Some(store) = unit_store("hung", |c| {
        c.pool_size = 1;
        c.call_timeout = limit;
    })
    .await
    else {
        return;
    };
    let store = Arc::new(store);
    let busy = store.pool.get().await.unwrap();
    let started = std::time::Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..6 {
        let (store, claim) = (Arc::clone(&store), unit_claim(&format!("/hung/{i}")));
        calls.spawn(async move { (store.claim(claim).await, started.elapsed()) });
    }
    let mut slowest = Duration::ZERO;
    let mut failed = 0;
    while let Some(call) = calls.join_next().await {
        let (outcome, took) = call.unwrap();
        failed += usize::from(outcome.is_err());
        slowest = slowest.max(took);
    }
    drop(busy);
    store.drop_schema().await.unwrap();
    assert_eq!(failed, 6);
    // Twice the limit would mean a waiting claim paid for the statement ahead of it too.
    assert!(
        slowest < limit * 8 / 5,
        "the slowest claim took {slowest:?}"
    );
}

const RECHECK: Duration = Duration::from_secs(1);

fn listening() -> JobSignal {
    let signal = JobSignal::default();
    signal.listening(true);
    signal
}

#[test]
fn a_drained_queue_is_known_empty_until_a_job_is_announced() {
    let signal = listening();
    let now = Timestamp(10_000);
    assert!(!signal.known_empty(now, RECHECK), "never looked");
    signal.drained(Some((signal.seen(), now)));
    assert!(signal.known_empty(now, RECHECK));
    assert!(!signal.announced_since_drained());
    signal.announce_one();
    assert!(!signal.known_empty(now, RECHECK), "a claim of this process");
    assert!(signal.announced_since_drained());
    signal.drained(Some((signal.seen(), now)));
    signal.announce();
    assert!(!signal.known_empty(now, RECHECK), "a notification");
}

#[test]
fn known_empty_lasts_one_recheck_and_needs_the_listener() {
    let signal = listening();
    let now = Timestamp(10_000);
    signal.drained(Some((signal.seen(), now)));
    assert!(signal.known_empty(now.plus(Duration::from_millis(999)), RECHECK));
    assert!(
        !signal.known_empty(now.plus(RECHECK), RECHECK),
        "retries come due and leases run out unannounced"
    );
    signal.listening(false);
    signal.drained(Some((signal.seen(), now)));
    assert!(
        !signal.known_empty(now, RECHECK),
        "a notification may be lost"
    );
}

#[test]
fn a_full_take_says_nothing_of_what_is_left() {
    let signal = listening();
    let now = Timestamp(10_000);
    signal.drained(Some((signal.seen(), now)));
    signal.drained(None);
    assert!(!signal.known_empty(now, RECHECK));
    assert!(!signal.announced_since_drained());
}

#[test]
fn lapsed_leases_are_looked_for_once_per_recheck() {
    let signal = JobSignal::default();
    let now = Timestamp(10_000);
    assert!(signal.rescue_due(now, RECHECK));
    assert!(!signal.rescue_due(now.plus(Duration::from_millis(999)), RECHECK));
    assert!(signal.rescue_due(now.plus(RECHECK), RECHECK));
}
