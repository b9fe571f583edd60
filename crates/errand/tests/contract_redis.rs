//! The store contract against Redis (feature `redis`).
//!
//! Uses `ERRAND_TEST_REDIS` (default `redis://127.0.0.1:6379`); every case gets a key prefix
//! of its own, whose keys are deleted afterwards. Without a Redis the cases are skipped with a
//! message, except under `CI=true`, where they fail.

#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use errand::store::{ManualClock, RedisConfig, RedisStore, StoreExt};

static PREFIXES: AtomicUsize = AtomicUsize::new(0);

async fn make(clock: Arc<ManualClock>) -> Option<RedisStore> {
    let url =
        std::env::var("ERRAND_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut config = RedisConfig::new(&url);
    config.prefix = format!(
        "errand_test_{}_{}",
        std::process::id(),
        PREFIXES.fetch_add(1, Ordering::SeqCst)
    );
    match RedisStore::connect_with_clock(config, clock).await {
        Ok(store) => Some(store),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI needs Redis at {url}: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: Redis is not reachable at {url} ({e}); set ERRAND_TEST_REDIS");
            None
        }
    }
}

errand::store_contract!(make, |store: Arc<RedisStore>| async move {
    store.delete_all().await.unwrap();
});

/// Issue-level checks beyond the shared suite.
mod redis_specific {
    use std::time::Duration;

    use errand::pattern::Completion;
    use errand::pattern::Priority;
    use errand::store::contract::{claim, claims_from_two_stores, fill, signature};
    use errand::store::{ClaimOutcome, Store, StoreError};

    use super::*;

    async fn raw(store: &RedisStore) -> redis::aio::MultiplexedConnection {
        redis::Client::open(store.config().url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    async fn keys(store: &RedisStore) -> Vec<String> {
        let mut conn = raw(store).await;
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}}}:*", store.config().prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.sort();
        keys
    }

    /// `[server] max_pending` holds across two processes, exactly (the claim script reads
    /// the queue's size in the same step).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_flood_cap_holds_across_processes() {
        let clock = ManualClock::new();
        let Some(probe) = make(Arc::clone(&clock)).await else {
            return;
        };
        let mut config = probe.config().clone();
        config.max_pending = 12;
        let first = Arc::new(
            RedisStore::connect_with_clock(config.clone(), clock.clone())
                .await
                .unwrap(),
        );
        let second = Arc::new(RedisStore::connect_with_clock(config, clock).await.unwrap());
        errand::store::contract::the_flood_cap_holds_across_two_stores(first.clone(), second, 12)
            .await;
        first.delete_all().await.unwrap();
    }

    /// 1,000 concurrent claims of one signature from two connections make one job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_concurrent_claims_from_two_connections_make_one_job() {
        let clock = ManualClock::new();
        let Some(first) = make(Arc::clone(&clock)).await else {
            return;
        };
        let first = Arc::new(first);
        let second = Arc::new(
            RedisStore::connect_with_clock(first.config().clone(), clock)
                .await
                .unwrap(),
        );
        let (enqueued, jobs) = claims_from_two_stores(first.clone(), second, 1000).await;
        first.delete_all().await.unwrap();
        assert_eq!(enqueued, 1, "exactly one of 1,000 claims enqueued");
        assert_eq!(jobs, 1, "and the queue holds one job");
    }

    /// A claim and a completion made through one connection wake an idle worker and a
    /// waiter of another process through pub/sub, long before their recheck would.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wakeups_reach_another_process() {
        let clock = ManualClock::new();
        let Some(worker) = make(Arc::clone(&clock)).await else {
            return;
        };
        let worker = Arc::new(worker);
        let mut config = worker.config().clone();
        config.recheck = Duration::from_secs(60);
        let front = Arc::new(RedisStore::connect_with_clock(config, clock).await.unwrap());
        let (idle, waiter) =
            errand::store::contract::wakeups_reach_another_store(worker.clone(), front).await;
        worker.delete_all().await.unwrap();
        assert!(idle < Duration::from_secs(5), "idle worker woken: {idle:?}");
        assert!(waiter < Duration::from_secs(5), "waiter woken: {waiter:?}");
    }

    /// Settled entries carry a TTL, jobs never do, and the pruner removes an entry with
    /// every index record once its windows end, leaving only the id counter.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pruning_leaves_nothing_behind() {
        let clock = ManualClock::new();
        let Some(store) = make(Arc::clone(&clock)).await else {
            return;
        };
        let prefix = store.config().prefix.clone();
        fill(&store, "/pruned", 5, 5, 10, &["news", "front"]).await;
        let ClaimOutcome::Enqueued(_) = store
            .claim(claim("/queued", Priority::Miss, None))
            .await
            .unwrap()
        else {
            panic!("claimed");
        };
        let mut conn = raw(&store).await;
        let ttl = |path: &str| {
            redis::cmd("PTTL")
                .arg(format!("{{{prefix}}}:e:{}", signature(path).key))
                .clone()
        };
        let settled: i64 = ttl("/pruned").query_async(&mut conn).await.unwrap();
        let pending: i64 = ttl("/queued").query_async(&mut conn).await.unwrap();
        assert!(settled > 15_000 && settled <= 15_000 + 60_000, "{settled}");
        assert_eq!(pending, -1, "a job never expires");
        assert!(
            keys(&store).await.iter().any(|k| k.ends_with(":tag:news")),
            "{:?}",
            keys(&store).await
        );
        clock.advance(Duration::from_secs(16));
        store.prune(1000).await.unwrap();
        let left = keys(&store).await;
        let job = store
            .take(1, Duration::from_secs(30))
            .await
            .unwrap()
            .remove(0);
        store
            .complete_one(
                &job.lease,
                Completion::Pass(errand::pattern::PassInfo {
                    until: store.now().plus(Duration::from_secs(1)),
                    once: None,
                    reason: "done".into(),
                }),
            )
            .await
            .unwrap();
        clock.advance(Duration::from_secs(2));
        store.prune(1000).await.unwrap();
        let last = keys(&store).await;
        store.delete_all().await.unwrap();
        let queued = signature("/queued").key;
        assert_eq!(
            left,
            vec![
                format!("{{{prefix}}}:e:{queued}"),
                format!("{{{prefix}}}:ids"),
                format!("{{{prefix}}}:jobs"),
                format!("{{{prefix}}}:uris"),
            ],
            "the expired entry went with its tags and index records"
        );
        assert_eq!(last, vec![format!("{{{prefix}}}:ids")], "nothing else left");
    }

    /// A `redis-server` of this test's own, speaking only TLS; ended when dropped.
    struct TlsRedis {
        child: std::process::Child,
        port: u16,
    }

    impl Drop for TlsRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// This crate's test certificates and keys (`tests/data`).
    fn data(file: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(file)
    }

    /// Starts one with the certificate `name.pem` and its key `name.key`, asking clients for a
    /// certificate signed by the test CA when `client_auth`; `None` (loudly; a failure under
    /// `CI=true`) when `redis-server` is not on `PATH`.
    fn tls_redis(name: &str, client_auth: bool) -> Option<TlsRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (cert, key) = (data(&format!("{name}.pem")), data(&format!("{name}.key")));
        let mut command = std::process::Command::new("redis-server");
        command
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(std::process::Stdio::null());
        if client_auth {
            command
                .args(["--tls-auth-clients", "yes", "--tls-ca-cert-file"])
                .arg(data("test-ca.pem"));
        } else {
            command.args(["--tls-auth-clients", "no"]);
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI needs redis-server on PATH: {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot start redis-server ({e})");
                return None;
            }
        };
        let server = TlsRedis { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server never opened its TLS port {port}");
    }

    /// A store on `config` works: a result stored through it is read back.
    async fn works(config: RedisConfig) {
        let store = RedisStore::connect(config).await.unwrap();
        fill(&store, "/over-tls", 60, 0, 0, &[]).await;
        let entry = store.lookup(&signature("/over-tls").key).await.unwrap();
        assert!(
            entry.and_then(|e| e.content).is_some(),
            "the result was stored"
        );
        store.delete_all().await.unwrap();
    }

    /// `rediss://` checks the certificate against the Mozilla roots: a self-signed one is
    /// refused with the reason (not a panic), unless the URL says `#insecure`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_checks_the_certificate_unless_told_not_to() {
        let Some(server) = tls_redis("unrelated-ca", false) else {
            return;
        };
        let url = format!("rediss://127.0.0.1:{}", server.port);
        let mut config = RedisConfig::new(&url);
        config.call_timeout = Duration::from_secs(2);
        let err = RedisStore::connect(config.clone())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&url), "{err}");
        assert!(err.contains("certificate"), "{err}");
        config.url = format!("{url}/#insecure");
        works(config).await;
    }

    /// A certificate signed by a private CA is accepted once `ca_file` names that CA.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_private_ca_is_trusted_through_the_ca_file() {
        let Some(server) = tls_redis("server", false) else {
            return;
        };
        let mut config = RedisConfig::new(format!("rediss://127.0.0.1:{}", server.port));
        config.call_timeout = Duration::from_secs(2);
        let err = RedisStore::connect(config.clone())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("certificate"), "{err}");
        config.ca_file = Some(data("test-ca.pem"));
        works(config).await;
    }

    /// A server that asks for a client certificate refuses a client without one, and
    /// serves one that presents a certificate its CA signed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_certificate_is_presented_when_given() {
        let Some(server) = tls_redis("server", true) else {
            return;
        };
        let mut config = RedisConfig::new(format!("rediss://127.0.0.1:{}", server.port));
        config.call_timeout = Duration::from_secs(2);
        config.ca_file = Some(data("test-ca.pem"));
        assert!(RedisStore::connect(config.clone()).await.is_err());
        config.client_cert = Some((data("client.pem"), data("client.key")));
        works(config).await;
    }

    /// TLS files with a URL without TLS, a file that is not there, a CA file without a
    /// certificate and a key file without a key are refused by name, as settings errors (not
    /// retried).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_tls_settings_are_refused_by_name() {
        let mut config = RedisConfig::new("redis://127.0.0.1:6379");
        config.ca_file = Some(data("test-ca.pem"));
        let err = RedisStore::connect(config.clone()).await.unwrap_err();
        assert!(matches!(err, StoreError::Unsuitable { .. }), "{err}");
        assert!(err.to_string().contains("use a rediss:// URL"), "{err}");
        config.url = "rediss://127.0.0.1:6379".into();
        config.ca_file = Some(data("missing.pem"));
        let err = RedisStore::connect(config.clone()).await.unwrap_err();
        assert!(err.to_string().contains("Redis CA file"), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");
        config.ca_file = Some(data("README.md"));
        let err = RedisStore::connect(config.clone()).await.unwrap_err();
        assert!(matches!(err, StoreError::Unsuitable { .. }), "{err}");
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );
        config.ca_file = None;
        config.client_cert = Some((data("client.pem"), data("client.pem")));
        let err = RedisStore::connect(config).await.unwrap_err();
        assert!(matches!(err, StoreError::Unsuitable { .. }), "{err}");
        assert!(err.to_string().contains("Redis client key"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_prefix_is_refused_by_name() {
        let mut config = RedisConfig::new("redis://127.0.0.1:6379");
        config.prefix = "has space".into();
        let err = RedisStore::connect(config).await.unwrap_err().to_string();
        assert!(err.contains("prefix \"has space\""), "{err}");
    }
}
