//! The `errand` binary as a black box: a real process in front of a real origin, asserting
//! what a client sees (status, `Cache-Status`, bodies) and what the origin receives.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use common::{Counter, Errand, Http, origin, raw};

const WAIT: (&str, &str) = ("prefer", "wait=10");

/// An origin whose `/slow` takes 100 ms and counts its calls.
async fn slow_origin(counter: Counter) -> std::net::SocketAddr {
    let c = counter.clone();
    let router = Router::new()
        .route(
            "/slow",
            get(move || {
                let c = c.clone();
                async move {
                    let n = c.bump();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    (
                        [
                            (header::ETAG, "\"e1\""),
                            (header::CONTENT_TYPE, "text/plain"),
                        ],
                        format!("slow #{n}"),
                    )
                }
            })
            .post(|| async { StatusCode::CREATED }),
        )
        .fallback(get(|| async { "other" }).post(|| async { StatusCode::CREATED }));
    origin(router).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_get_is_202_then_200_from_the_cache() {
    let counter = Counter::default();
    let up = slow_origin(counter.clone()).await;
    let errand = Errand::serve(up, &[]);
    let http = Http::new();

    let started = Instant::now();
    let first = http.get(&errand.url("/slow"), &[]).await;
    assert!(
        started.elapsed() < Duration::from_millis(90),
        "the 202 does not wait for the upstream"
    );
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(first.cache_status(), "errand; fwd=uri-miss; detail=miss");
    assert_eq!(first.header("cache-control"), "no-store");
    assert_eq!(first.header("vary"), "Prefer");
    let retry_after: u64 = first.header("retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry_after));
    let json: serde_json::Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(json["state"], "pending");

    let second = http.get(&errand.url("/slow"), &[]).await;
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(
        second.cache_status(),
        "errand; fwd=uri-miss; detail=pending"
    );

    let waited = http.get(&errand.url("/slow"), &[WAIT]).await;
    assert_eq!(waited.status, StatusCode::OK);

    let hit = http.get(&errand.url("/slow"), &[]).await;
    assert_eq!(hit.status, StatusCode::OK);
    assert_eq!(hit.body, "slow #1");
    assert!(
        hit.cache_status().starts_with("errand; hit; ttl="),
        "{}",
        hit.cache_status()
    );
    assert_eq!(hit.header("age"), "0");
    assert_eq!(hit.header("etag"), "\"e1\"");
    assert_eq!(hit.header("content-type"), "text/plain");

    let head = http.send("HEAD", &errand.url("/slow"), &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), "7");

    let not_modified = http
        .get(&errand.url("/slow"), &[("if-none-match", "\"e1\"")])
        .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(counter.get(), 1, "one upstream request for all of it");

    // A HEAD first shares the GET's job.
    let head_first = http.send("HEAD", &errand.url("/slow?h=1"), &[]).await;
    assert_eq!(head_first.status, StatusCode::ACCEPTED);
    assert!(head_first.body.is_empty());
    let get_after = http.get(&errand.url("/slow?h=1"), &[WAIT]).await;
    assert_eq!(get_after.status, StatusCode::OK);
    assert_eq!(counter.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_first_gets_make_one_upstream_request() {
    let counter = Counter::default();
    let up = slow_origin(counter.clone()).await;
    let errand = Errand::serve(up, &[]);
    let http = Http::new();
    let url = errand.url("/slow?stampede=1");
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let http = http.clone();
            let url = url.clone();
            tokio::spawn(async move { http.get(&url, &[]).await })
        })
        .collect();
    let mut misses = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        assert!(matches!(
            reply.status,
            StatusCode::ACCEPTED | StatusCode::OK
        ));
        misses += usize::from(reply.cache_status().ends_with("detail=miss"));
    }
    assert_eq!(misses, 1, "exactly one request claimed the job");
    let done = http.get(&url, &[WAIT]).await;
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(
        counter.get(),
        1,
        "200 concurrent first GETs, one upstream request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_wait_is_answered_in_the_same_round_trip() {
    let counter = Counter::default();
    let up = slow_origin(counter.clone()).await;
    let errand = Errand::serve(up, &["--max-wait", "1s"]);
    let http = Http::new();
    let started = Instant::now();
    let reply = http.get(&errand.url("/slow"), &[WAIT]).await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "slow #1");
    assert_eq!(
        reply.cache_status(),
        "errand; fwd=uri-miss; fwd-status=200; stored; detail=waited"
    );
    assert!(
        took < Duration::from_millis(900),
        "answered when the job ended, not at the wait's end: {took:?}"
    );

    // Longer than --max-wait: 202 after max-wait.
    let slow = Router::new().route(
        "/",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "late"
        }),
    );
    let up = origin(slow).await;
    let errand = Errand::serve(up, &["--max-wait", "1s"]);
    let started = Instant::now();
    let reply = http
        .get(&errand.url("/"), &[("prefer", "wait=20, respond-async")])
        .await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.header("preference-applied"), "respond-async");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_then_answer_the_error_until_the_error_ttl() {
    let counter = Counter::default();
    let c = counter.clone();
    let router = Router::new()
        .route(
            "/fail",
            get(move || {
                let c = c.clone();
                async move {
                    c.bump();
                    (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance")
                }
            }),
        )
        .route(
            "/hang",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "never"
            }),
        );
    let up = origin(router).await;
    let errand = Errand::serve(
        up,
        &[
            "--max-attempts",
            "3",
            "--error-ttl",
            "1s",
            "--job-timeout",
            "300ms",
        ],
    );
    let http = Http::new();

    let reply = http.get(&errand.url("/fail"), &[WAIT]).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the upstream's last error response"
    );
    assert_eq!(reply.body, "down for maintenance");
    assert_eq!(counter.get(), 3, "--max-attempts 3");
    let again = http.get(&errand.url("/fail"), &[]).await;
    assert_eq!(again.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(again.cache_status(), "errand; fwd=uri-miss; detail=failed");
    assert_eq!(again.header("retry-after"), "1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let renewed = http.get(&errand.url("/fail"), &[]).await;
    assert_eq!(
        renewed.status,
        StatusCode::ACCEPTED,
        "after --error-ttl a new job runs"
    );

    let timeout = http.get(&errand.url("/hang"), &[WAIT]).await;
    assert_eq!(timeout.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(timeout.body.contains("timed out"), "{}", timeout.body);

    // Connection refused: nothing listens on the upstream port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let errand = Errand::serve(dead, &["--max-attempts", "2"]);
    let refused = http.get(&errand.url("/x"), &[WAIT]).await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY);
    assert!(refused.body.contains("failed"), "{}", refused.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_and_stale_if_error() {
    let counter = Counter::default();
    let c = counter.clone();
    let broken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let b = broken.clone();
    let router = Router::new().route(
        "/cc",
        get(move || {
            let c = c.clone();
            let b = b.clone();
            async move {
                let n = c.bump();
                if b.load(std::sync::atomic::Ordering::SeqCst) {
                    return (StatusCode::BAD_GATEWAY, "broken").into_response();
                }
                ([(header::CACHE_CONTROL, "max-age=1")], format!("v{n}")).into_response()
            }
        }),
    );
    let up = origin(router).await;
    let errand = Errand::serve(
        up,
        &[
            "--ttl",
            "60s",
            "--stale",
            "1s",
            "--stale-if-error",
            "60s",
            "--max-attempts",
            "1",
        ],
    );
    let http = Http::new();
    assert_eq!(http.get(&errand.url("/cc"), &[WAIT]).await.body, "v1");
    let fresh = http.get(&errand.url("/cc"), &[]).await;
    assert!(
        fresh.cache_status().contains("ttl=0") || fresh.cache_status().contains("ttl=1"),
        "max-age=1 wins over --ttl: {}",
        fresh.cache_status()
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..10 {
        let stale = http.get(&errand.url("/cc"), &[]).await;
        assert_eq!(stale.status, StatusCode::OK);
        assert!(["v1", "v2"].contains(&stale.body.as_str()));
    }
    let mut refreshed = None;
    for _ in 0..100 {
        let r = http.get(&errand.url("/cc"), &[]).await;
        if r.body == "v2" {
            refreshed = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refreshed.is_some(), "the refresh landed");
    assert_eq!(counter.get(), 2, "ten stale hits, one refresh");

    // The origin breaks: after freshness and the stale window, the old copy is served.
    broken.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let first = http.get(&errand.url("/cc"), &[]).await;
    assert_eq!(
        first.status,
        StatusCode::ACCEPTED,
        "past the stale window a refresh is a miss"
    );
    let mut served = None;
    for _ in 0..100 {
        let r = http.get(&errand.url("/cc"), &[]).await;
        if r.cache_status().contains("stale-if-error") {
            served = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let served = served.expect("stale-if-error copy served while the origin fails");
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.body, "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_responses_are_never_shared() {
    let counter = Counter::default();
    let c1 = counter.clone();
    let c2 = counter.clone();
    let c3 = counter.clone();
    let c4 = counter.clone();
    let router =
        Router::new()
            .route(
                "/auth",
                get(move |h: HeaderMap| {
                    let c = c1.clone();
                    async move {
                        c.bump();
                        format!("for {:?}", h.get(header::AUTHORIZATION))
                    }
                }),
            )
            .route(
                "/cookie",
                get(move || {
                    let c = c2.clone();
                    async move {
                        (
                            [(header::SET_COOKIE, "s=1")],
                            format!("cookie #{}", c.bump()),
                        )
                    }
                }),
            )
            .route(
                "/vary",
                get(move || {
                    let c = c3.clone();
                    async move { ([(header::VARY, "*")], format!("vary #{}", c.bump())) }
                }),
            )
            .route(
                "/big",
                get(move || {
                    let c = c4.clone();
                    async move {
                        c.bump();
                        vec![b'x'; 64 * 1024]
                    }
                }),
            )
            .route(
                "/host",
                get(|h: HeaderMap| async move {
                    format!("host {:?}", h.get("x-forwarded-host").unwrap())
                }),
            );
    let up = origin(router).await;
    let errand = Errand::serve(up, &["--max-body", "16KiB"]);
    let http = Http::new();

    let alice = http
        .get(&errand.url("/auth"), &[("authorization", "Bearer alice")])
        .await;
    assert_eq!(
        alice.status,
        StatusCode::OK,
        "credentials pass straight through"
    );
    assert_eq!(alice.cache_status(), "errand; fwd=request; detail=pass");
    assert!(alice.body.contains("alice"));
    let anonymous = http.get(&errand.url("/auth"), &[WAIT]).await;
    assert!(
        anonymous.body.contains("None"),
        "alice's answer never reaches others: {}",
        anonymous.body
    );
    let with_cookie = http
        .get(&errand.url("/auth"), &[("cookie", "session=x")])
        .await;
    assert_eq!(
        with_cookie.cache_status(),
        "errand; fwd=request; detail=pass"
    );

    for (path, first) in [("/cookie", "cookie #"), ("/vary", "vary #")] {
        let once = http.get(&errand.url(path), &[WAIT]).await;
        assert!(once.body.starts_with(first));
        let next = http.get(&errand.url(path), &[]).await;
        assert_ne!(next.body, once.body, "{path}: not shared");
        assert_eq!(
            next.cache_status(),
            "errand; fwd=uri-miss; detail=hit-for-pass",
            "{path}"
        );
    }
    // Too large to keep: a waiting client gets it synchronously, and so does the next try.
    let big = http.get(&errand.url("/big"), &[WAIT]).await;
    assert_eq!(big.status, StatusCode::OK);
    assert_eq!(big.body.len(), 64 * 1024);
    let through = http.get(&errand.url("/big"), &[]).await;
    assert_eq!(through.status, StatusCode::OK);
    assert_eq!(through.body.len(), 64 * 1024);
    assert_eq!(
        through.cache_status(),
        "errand; fwd=uri-miss; detail=hit-for-pass"
    );

    let a = http
        .get(&errand.url("/host"), &[("host", "a.example"), WAIT])
        .await;
    let b = http
        .get(&errand.url("/host"), &[("host", "b.example"), WAIT])
        .await;
    assert!(a.body.contains("a.example"), "{}", a.body);
    assert!(
        b.body.contains("b.example"),
        "different Hosts never share an entry: {}",
        b.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_pass_through_and_invalidate() {
    let counter = Counter::default();
    let up = slow_origin(counter.clone()).await;
    let errand = Errand::serve(up, &[]);
    let http = Http::new();
    assert_eq!(
        http.get(&errand.url("/slow"), &[WAIT]).await.body,
        "slow #1"
    );
    assert_eq!(
        http.get(&errand.url("/slow"), &[]).await.status,
        StatusCode::OK
    );
    let post = http.send("POST", &errand.url("/slow"), &[]).await;
    assert_eq!(
        post.status,
        StatusCode::CREATED,
        "passed through synchronously"
    );
    assert_eq!(post.cache_status(), "errand; fwd=method; detail=pass");
    let after = http.get(&errand.url("/slow"), &[]).await;
    assert_eq!(
        after.status,
        StatusCode::ACCEPTED,
        "the POST invalidated the stored GET"
    );
    assert_eq!(
        http.get(&errand.url("/slow"), &[WAIT]).await.body,
        "slow #2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_the_server_keeps_serving() {
    let up = slow_origin(Counter::default()).await;
    let errand = Errand::serve(up, &[]);
    let http = Http::new();
    let long = errand.url(&format!("/{}", "a".repeat(9000)));
    assert_eq!(http.get(&long, &[]).await.status, StatusCode::URI_TOO_LONG);
    let huge = "h".repeat(20_000);
    let answer = raw(
        errand.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {huge}\r\n\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.60}");
    let answer = raw(
        errand.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:.60}");
    let answer = raw(errand.addr, b"\x16\x03\x01 garbage\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:.60}");
    let answer = raw(errand.addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("Host"),
        "{answer}"
    );
    assert_eq!(
        http.get(&errand.url("/slow"), &[WAIT]).await.status,
        StatusCode::OK
    );
}

#[test]
fn bad_flags_exit_non_zero_naming_the_flag() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_errand"))
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} must fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let up = ["serve", "--upstream", "http://127.0.0.1:9"];
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (vec!["serve"], vec![], "--upstream"),
        (vec!["serve", "--upstream", "ftp://x"], vec![], "--upstream"),
        (
            vec!["serve", "--upstream", "not a url"],
            vec![],
            "--upstream",
        ),
        ([&up[..], &["--ttl", "soon"]].concat(), vec![], "--ttl"),
        (
            [&up[..], &["--cache-size", "12 parsecs"]].concat(),
            vec![],
            "--cache-size",
        ),
        (
            [&up[..], &["--workers", "many"]].concat(),
            vec![],
            "--workers",
        ),
        (
            [&up[..], &["--max-attempts", "0"]].concat(),
            vec![],
            "--max-attempts",
        ),
        (
            [&up[..], &["--backend", "postgres://u:p@db:notaport/errand"]].concat(),
            vec![],
            "--backend",
        ),
        (
            [&up[..], &["--backend", "redis://cache"]].concat(),
            vec![],
            "--backend",
        ),
        (
            [&up[..], &["--backend", "carrier-pigeon"]].concat(),
            vec![],
            "--backend",
        ),
        (
            [&up[..], &["--listen", "nowhere"]].concat(),
            vec![],
            "--listen",
        ),
        (
            [&up[..], &["--config", "/nonexistent/errand.toml"]].concat(),
            vec![],
            "--config",
        ),
        (up.to_vec(), vec![("ERRAND_STALE", "whenever")], "--stale"),
        (
            up.to_vec(),
            vec![("ERRAND_MAX_BODY", "1TiB"), ("ERRAND_CACHE_SIZE", "1MiB")],
            "--max-body",
        ),
        (
            vec![
                "work",
                "--upstream",
                "http://127.0.0.1:9",
                "--backend",
                "memory",
            ],
            vec![],
            "--backend",
        ),
    ];
    for (args, env, flag) in cases {
        let stderr = run(&args, &env);
        assert!(
            stderr.contains(flag),
            "{args:?} {env:?}: message must name {flag}: {stderr}"
        );
    }
}

#[test]
fn config_file_rules_are_checked_and_applied() {
    let dir = std::env::temp_dir().join(format!("errand-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    // Serves with `text` as the config file; start-up must fail. Returns what it printed.
    let refused = |text: &str| {
        std::fs::write(&bad, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_errand"))
            .args(["serve", "--upstream", "http://127.0.0.1:9", "--config"])
            .arg(&bad)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{text}: {stderr}");
        stderr
    };
    let stderr = refused("[[route]]\npath = \"/a\"\nmode = \"sometimes\"\n");
    // The parser names the line, the value and the two words it takes.
    assert!(
        stderr.contains("line 3") && stderr.contains("sometimes") && stderr.contains("`pass`"),
        "{stderr}"
    );
    let stderr = refused("[[route]]\npath = \"/a\"\nttl = \"forever\"\n");
    assert!(stderr.contains("forever"), "{stderr}");
    let stderr = refused("[backend]\npool_idle = \"0s\"\n");
    assert!(stderr.contains("pool_idle must be at least 1s"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_routes_pass_and_key_headers() {
    let router = Router::new()
        .route("/live", get(|| async { "live" }))
        .route(
            "/lang",
            get(|h: HeaderMap| async move {
                format!(
                    "lang {:?}",
                    h.get(header::ACCEPT_LANGUAGE)
                        .map(|v| v.to_str().unwrap().to_owned())
                )
            }),
        );
    let up = origin(router).await;
    let path = std::env::temp_dir().join(format!("errand-routes-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[[route]]\npath = \"/live\"\nmode = \"pass\"\n\n[[route]]\npath = \"/lang\"\nttl = \"5m\"\nkey_headers = [\"Accept-Language\"]\n",
    )
    .unwrap();
    let errand = Errand::serve(up, &["--config", path.to_str().unwrap()]);
    let http = Http::new();
    let live = http.get(&errand.url("/live"), &[]).await;
    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.cache_status(), "errand; fwd=bypass; detail=pass");
    let en = http
        .get(&errand.url("/lang"), &[("accept-language", "en"), WAIT])
        .await;
    let fr = http
        .get(&errand.url("/lang"), &[("accept-language", "fr"), WAIT])
        .await;
    assert!(
        en.body.contains("en") && fr.body.contains("fr"),
        "{} / {}",
        en.body,
        fr.body
    );
    let en_hit = http
        .get(&errand.url("/lang"), &[("accept-language", "en")])
        .await;
    assert!(
        en_hit.cache_status().contains("ttl=2"),
        "route ttl 5m (minus jitter): {}",
        en_hit.cache_status()
    );
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_running_jobs_and_exits_zero() {
    let router = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            "done"
        }),
    );
    let up = origin(router).await;
    let mut errand = Errand::serve(up, &[]);
    let http = Http::new();
    assert_eq!(
        http.get(&errand.url("/slow"), &[]).await.status,
        StatusCode::ACCEPTED
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &errand.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = errand.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "exited within the shutdown timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit 0 on SIGTERM: {status:?}");
    assert!(
        errand.log_contains("job done"),
        "the running job finished before exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_within_the_cache_budget() {
    let router = Router::new().route("/blob/{n}", get(|| async { vec![b'b'; 256 * 1024] }));
    let up = origin(router).await;
    let errand = Errand::serve(up, &["--cache-size", "32MiB"]);
    let http = Http::new();
    let baseline = common::rss(errand.pid());
    // 1,200 distinct 256 KiB responses: 300 MiB through a 32 MiB cache, 8 at a time.
    let mut tasks = tokio::task::JoinSet::new();
    let mut pushed = 0usize;
    for n in 0..1200 {
        if tasks.len() >= 8 {
            pushed += tasks.join_next().await.unwrap().unwrap();
        }
        let http = http.clone();
        let url = errand.url(&format!("/blob/{n}"));
        tasks.spawn(async move {
            let reply = http.get(&url, &[WAIT]).await;
            assert_eq!(reply.status, StatusCode::OK);
            reply.body.len()
        });
    }
    while let Some(done) = tasks.join_next().await {
        pushed += done.unwrap();
    }
    assert_eq!(pushed, 1200 * 256 * 1024);
    let rss = common::rss(errand.pid());
    let budget = 32 * 1024 * 1024;
    let overhead = 40 * 1024 * 1024;
    assert!(
        rss <= baseline + budget + overhead,
        "RSS {} MiB after 300 MiB through a 32 MiB cache (baseline {} MiB)",
        rss >> 20,
        baseline >> 20
    );
    // The most recent responses are still served from the cache.
    let recent = http.get(&errand.url("/blob/1199"), &[]).await;
    assert!(
        recent.cache_status().starts_with("errand; hit"),
        "{}",
        recent.cache_status()
    );
}
