//! The admin listener as an operator uses it: token checks, metrics that match the traffic,
//! the JSON API and the `stats` / `purge` verbs; and nothing admin on the public listener.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use common::{Counter, Errand, Http, origin, raw, refused_serve, verb};

const TOKEN: &str = "t0ken-for-tests";

/// An origin answering every path with its path (cacheable), counting requests.
async fn upstream(counter: &Counter) -> std::net::SocketAddr {
    let c = counter.clone();
    origin(Router::new().fallback(get(move |uri: axum::http::Uri| {
        let c = c.clone();
        async move {
            c.bump();
            (
                [
                    ("cache-control", "max-age=600"),
                    ("surrogate-key", "news all"),
                ],
                format!("origin {}", uri.path()),
            )
        }
    })))
    .await
}

/// A final answer that is not storable (here `403`) ends its job as "once": delivered to the
/// client waiting for it and counted as a completed job, never as a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_once_outcome_is_counted_as_a_completed_job() {
    let up =
        origin(Router::new().fallback(get(|| async { (StatusCode::FORBIDDEN, "not for you") })))
            .await;
    let errand = Errand::serve(up, &["--admin-listen", "127.0.0.1:0"]);
    let admin = errand.admin_addr();
    let http = Http::new();
    let reply = http
        .get(&errand.url("/secret"), &[("prefer", "wait=10")])
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    // The worker counts a job once the store took its completion, which is also what woke
    // the client: the count may land a moment after the answer.
    let mut m = String::new();
    for _ in 0..50 {
        m = http.get(&format!("http://{admin}/metrics"), &[]).await.body;
        if sample(&m, "errand_jobs_completed_total", &[("outcome", "once")]) > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let completed = |outcome| sample(&m, "errand_jobs_completed_total", &[("outcome", outcome)]);
    assert_eq!(completed("once"), 1.0, "{m}");
    assert_eq!(
        completed("stored") + completed("pass") + completed("failed"),
        0.0
    );
    assert_eq!(sample(&m, "errand_jobs_retried_total", &[]), 0.0);
}

/// Parses the exposition and returns the value of `name` with exactly `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text exposition");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?} in\n{text}"))
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    let (stderr, _) = refused_serve(&["--admin-listen", "0.0.0.0:0"]);
    assert!(
        stderr.contains("--admin-listen") && stderr.contains("--admin-token"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_refuse_a_missing_or_wrong_token() {
    let counter = Counter::default();
    let up = upstream(&counter).await;
    let errand = Errand::serve(
        up,
        &["--admin-listen", "127.0.0.1:0", "--admin-token", TOKEN],
    );
    let admin = errand.admin_addr();
    let http = Http::new();
    for path in [
        "/metrics",
        "/api/stats",
        "/api/overview",
        "/api/entries",
        "/api/entries?state=failed",
        "/api/entries/00000000000000000000000000000000",
    ] {
        let url = format!("http://{admin}{path}");
        assert_eq!(
            http.get(&url, &[]).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        let wrong = http.get(&url, &[("authorization", "Bearer nope")]).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(wrong.header("www-authenticate"), "Bearer");
        // The scheme is case-insensitive and may be followed by more than one space.
        for spelling in [
            format!("Bearer {TOKEN}"),
            format!("bearer {TOKEN}"),
            format!("BEARER  {TOKEN}"),
        ] {
            let right = http.get(&url, &[("authorization", &spelling)]).await;
            assert_ne!(right.status, StatusCode::UNAUTHORIZED, "{path} {spelling}");
        }
        let other_scheme = http
            .get(&url, &[("authorization", &format!("Basic {TOKEN}"))])
            .await;
        assert_eq!(other_scheme.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let addr: std::net::SocketAddr = admin.parse().unwrap();
    let body = r#"{"all":true}"#;
    let post = format!(
        "POST /api/purge HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    assert!(raw(addr, post.as_bytes()).starts_with("HTTP/1.1 401"));
    let retry = "POST /api/entries/00000000000000000000000000000000/retry HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    assert!(raw(addr, retry.as_bytes()).starts_with("HTTP/1.1 401"));
    // The dashboard's page is served without the token, and holds no data of its own.
    let page = http.get(&format!("http://{admin}/"), &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(
        page.header("content-security-policy")
            .contains("default-src 'none'")
    );
    assert!(page.body.contains("<title>errand dashboard</title>"));
    assert!(
        !page.body.contains("src=\"http") && !page.body.contains("href=\"http"),
        "self-contained: nothing loaded from elsewhere"
    );
    let (ok, _, stderr) = verb(&["stats", "--admin", &format!("http://{admin}")]);
    assert!(!ok && stderr.contains("--admin-token"), "{stderr}");
    assert_eq!(counter.get(), 0, "nothing reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_public_listener_admin_paths_are_the_upstreams() {
    let counter = Counter::default();
    let up = upstream(&counter).await;
    let errand = Errand::serve(up, &["--admin-listen", "127.0.0.1:0"]);
    let http = Http::new();
    for path in [
        "/metrics",
        "/api/stats",
        "/api/overview",
        "/api/entries",
        "/api/purge",
        "/",
    ] {
        let reply = http.get(&errand.url(path), &[("prefer", "wait=10")]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(
            reply.body,
            format!("origin {path}"),
            "proxied like any path"
        );
    }
    assert_eq!(counter.get(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_traffic_and_the_api_and_verbs_work() {
    let counter = Counter::default();
    let up = upstream(&counter).await;
    let errand = Errand::serve(
        up,
        &["--admin-listen", "127.0.0.1:0", "--admin-token", TOKEN],
    );
    let admin = errand.admin_addr();
    let auth = format!("Bearer {TOKEN}");
    let http = Http::new();
    // 3 misses that wait for their result, then 5 hits, 1 pending (202) and 2 pass (POST).
    for n in 0..3 {
        let reply = http
            .get(&errand.url(&format!("/news/{n}")), &[("prefer", "wait=10")])
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    for _ in 0..5 {
        assert_eq!(
            http.get(&errand.url("/news/0"), &[]).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        http.get(&errand.url("/other"), &[]).await.status,
        StatusCode::ACCEPTED
    );
    for _ in 0..2 {
        http.send("POST", &errand.url("/form"), &[]).await;
    }
    // Let the /other job finish.
    for _ in 0..100 {
        let stats = http
            .get(
                &format!("http://{admin}/api/stats"),
                &[("authorization", &auth)],
            )
            .await;
        let stats: serde_json::Value = serde_json::from_str(&stats.body).unwrap();
        if stats["pending"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let metrics = http
        .get(
            &format!("http://{admin}/metrics"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics
            .header("content-type")
            .starts_with("text/plain; version=0.0.4")
    );
    let m = &metrics.body;
    let requests = |outcome| sample(m, "errand_requests_total", &[("outcome", outcome)]);
    assert_eq!(requests("miss"), 4.0, "{m}");
    assert_eq!(requests("hit"), 5.0);
    assert_eq!(requests("pending"), 0.0, "the claim of /other was its miss");
    assert_eq!(requests("pass"), 2.0);
    assert_eq!(
        sample(m, "errand_waits_total", &[("outcome", "ready")]),
        3.0
    );
    assert_eq!(sample(m, "errand_jobs_claimed_total", &[]), 4.0);
    assert_eq!(
        sample(m, "errand_jobs_completed_total", &[("outcome", "stored")]),
        4.0
    );
    assert_eq!(sample(m, "errand_entries", &[("state", "fresh")]), 4.0);
    assert_eq!(sample(m, "errand_queue_jobs", &[("state", "ready")]), 0.0);
    assert!(
        m.contains("errand_job_duration_seconds_bucket{route=\"default\""),
        "{m}"
    );

    // The JSON API and the verbs.
    let stats = http
        .get(
            &format!("http://{admin}/api/stats"),
            &[("authorization", &auth)],
        )
        .await;
    let stats: serde_json::Value = serde_json::from_str(&stats.body).unwrap();
    assert_eq!(stats["fresh"], 4);
    let key = errand
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("job done"))
        .and_then(|l| l.split("key=").nth(1))
        .map(|k| k[..32].to_owned())
        .unwrap();
    let detail = http
        .get(
            &format!("http://{admin}/api/entries/{key}"),
            &[("authorization", &auth)],
        )
        .await;
    let detail: serde_json::Value = serde_json::from_str(&detail.body).unwrap();
    assert_eq!(detail["state"], "fresh", "{detail}");
    assert_eq!(
        detail["content"]["tags"],
        serde_json::json!(["all", "news"])
    );
    let base = format!("http://{admin}");
    let client = ["--admin", base.as_str(), "--admin-token", TOKEN];
    let (ok, out, err) = verb(&[&["stats"][..], &client].concat());
    assert!(ok, "{err}");
    assert!(out.contains("fresh 4"), "{out}");
    let (ok, out, err) = verb(&[&["stats", "--json"][..], &client].concat());
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["fresh"],
        4
    );
    let prefix = errand.url("/news/");
    let (ok, out, err) = verb(&[&["purge", "--prefix", &prefix, "--soft"][..], &client].concat());
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "3 entries marked stale");
    let (ok, out, err) = verb(&[&["purge", "--tag", "all"][..], &client].concat());
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "4 entries purged");
    let (ok, _, err) = verb(&[&["purge", "--key", "not-hex"][..], &client].concat());
    assert!(!ok && err.contains("--key"), "{err}");
    let gone = http.get(&errand.url("/news/0"), &[]).await;
    assert_eq!(gone.status, StatusCode::ACCEPTED, "purged: a miss again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evictions_are_counted() {
    let counter = Counter::default();
    let up = upstream(&counter).await;
    let errand = Errand::serve(
        up,
        &[
            "--admin-listen",
            "127.0.0.1:0",
            "--cache-size",
            "32KiB",
            "--max-body",
            "8KiB",
        ],
    );
    let admin = errand.admin_addr();
    let http = Http::new();
    for n in 0..300 {
        let reply = http
            .get(&errand.url(&format!("/many/{n}")), &[("prefer", "wait=10")])
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let metrics = http.get(&format!("http://{admin}/metrics"), &[]).await;
    let evicted = sample(&metrics.body, "errand_evictions_total", &[]);
    let fresh = sample(&metrics.body, "errand_entries", &[("state", "fresh")]);
    assert!(evicted > 0.0, "{}", metrics.body);
    assert_eq!(
        evicted + fresh,
        300.0,
        "every entry is either kept or counted as evicted"
    );
}

/// An origin whose `/broken/{n}` always fails and whose other paths are cacheable.
async fn failing_upstream() -> std::net::SocketAddr {
    origin(
        Router::new()
            .route(
                "/broken/{n}",
                get(|| async { (StatusCode::BAD_GATEWAY, "backend down") }),
            )
            .fallback(get(|uri: axum::http::Uri| async move {
                (
                    [("cache-control", "max-age=600")],
                    format!("origin {}", uri.path()),
                )
            })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_listed_by_state_and_a_failed_one_is_retried() {
    let up = failing_upstream().await;
    let errand = Errand::serve(
        up,
        &[
            "--admin-listen",
            "127.0.0.1:0",
            "--max-attempts",
            "1",
            "--error-ttl",
            "10m",
        ],
    );
    let admin = errand.admin_addr();
    let http = Http::new();
    let api = |path: &str| format!("http://{admin}{path}");
    let json = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap();
    let client_trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    for n in 0..2 {
        let reply = http
            .get(
                &errand.url(&format!("/broken/{n}")),
                &[("prefer", "wait=10"), ("traceparent", client_trace)],
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    }
    for n in 0..3 {
        let reply = http
            .get(&errand.url(&format!("/fine/{n}")), &[("prefer", "wait=10")])
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }

    // By state, and paged.
    let failed = json(&http.get(&api("/api/entries?state=failed"), &[]).await.body);
    let entries = failed["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{failed}");
    assert_eq!(failed["next"], serde_json::Value::Null);
    for entry in entries {
        assert_eq!(entry["state"], "failed");
        assert!(entry["uri"].as_str().unwrap().contains("/broken/"));
        assert_eq!(entry["detail"]["status"], 502);
        assert_eq!(entry["detail"]["attempts"], 1);
        assert_eq!(entry["detail"]["retryable"], true);
        assert!(
            entry["detail"]["error"].as_str().unwrap().contains("502"),
            "{entry}"
        );
        assert_eq!(
            entry["detail"]["trace_id"], "0af7651916cd43dd8448eb211c80319c",
            "the job kept the trace of the request that made it"
        );
    }
    let fresh = json(&http.get(&api("/api/entries?state=fresh"), &[]).await.body);
    assert_eq!(fresh["entries"].as_array().unwrap().len(), 3);
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = json(
            &http
                .get(&api(&format!("/api/entries?limit=2&after={after}")), &[])
                .await
                .body,
        );
        for entry in page["entries"].as_array().unwrap() {
            seen.push(entry["key"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5, "every entry once, over three pages");
    for (query, names) in [
        ("state=rotten", "state"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("after=zz", "after"),
        ("colour=red", "colour"),
    ] {
        let reply = http.get(&api(&format!("/api/entries?{query}")), &[]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(reply.body.contains(names), "{query}: {}", reply.body);
    }

    // Retry one failed entry: pending at once, failed again when the origin still fails.
    let key = entries[0]["key"].as_str().unwrap();
    let retried = http
        .send("POST", &api(&format!("/api/entries/{key}/retry")), &[])
        .await;
    assert_eq!(retried.status, StatusCode::ACCEPTED, "{}", retried.body);
    let retried = json(&retried.body);
    assert_eq!(retried["state"], "pending");
    assert_eq!(retried["key"], key);
    let mut state = String::new();
    for _ in 0..100 {
        let entry = json(
            &http
                .get(&api(&format!("/api/entries/{key}")), &[])
                .await
                .body,
        );
        state = entry["state"].as_str().unwrap().to_owned();
        if state == "failed" {
            assert_eq!(entry["detail"]["attempts"], 1, "{entry}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "failed", "the retried job ran and failed again");
    let fresh_key = fresh["entries"][0]["key"].as_str().unwrap();
    let not_failed = http
        .send(
            "POST",
            &api(&format!("/api/entries/{fresh_key}/retry")),
            &[],
        )
        .await;
    assert_eq!(not_failed.status, StatusCode::CONFLICT);
    assert!(not_failed.body.contains("fresh"), "{}", not_failed.body);
    let missing = http
        .send(
            "POST",
            &api("/api/entries/00000000000000000000000000000000/retry"),
            &[],
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = http.send("POST", &api("/api/entries/xyz/retry"), &[]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // Without a token, only requests addressed to loopback are answered (a page on a
    // rebound DNS name reaches the port but names its own host), and no page of another
    // site may change anything.
    let addr: std::net::SocketAddr = admin.parse().unwrap();
    let rebound = raw(
        addr,
        b"GET /api/stats HTTP/1.1\r\nhost: evil.example:9090\r\nconnection: close\r\n\r\n",
    );
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    for host in ["localhost", "127.0.0.1:1", "[::1]:9090"] {
        let ok = raw(
            addr,
            format!("GET /api/stats HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert!(ok.starts_with("HTTP/1.1 200"), "{host}: {ok}");
    }
    let key1 = entries[1]["key"].as_str().unwrap();
    for evil in ["origin: http://evil.example", "sec-fetch-site: cross-site"] {
        let forged = raw(
            addr,
            format!(
                "POST /api/entries/{key1}/retry HTTP/1.1\r\nhost: {admin}\r\n{evil}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        assert!(forged.starts_with("HTTP/1.1 403"), "{evil}: {forged}");
    }
    let same = http
        .send(
            "POST",
            &api("/api/entries/00000000000000000000000000000000/retry"),
            &[("origin", &format!("http://{admin}"))],
        )
        .await;
    assert_eq!(same.status, StatusCode::NOT_FOUND, "same origin passes");

    // The same from the command line.
    let base = format!("http://{admin}");
    let other = entries[1]["key"].as_str().unwrap();
    let (ok, out, err) = verb(&["retry", "--key", other, "--admin", &base]);
    assert!(ok, "{err}");
    assert!(
        out.contains("/broken/") && out.contains("pending again"),
        "{out}"
    );
    let (ok, _, err) = verb(&["retry", "--key", fresh_key, "--admin", &base]);
    assert!(
        !ok && err.contains("409") && err.contains("not failed"),
        "{err}"
    );
    let (ok, _, err) = verb(&["retry", "--key", "nope", "--admin", &base]);
    assert!(!ok && err.contains("--key"), "{err}");
    for _ in 0..100 {
        let entry = json(
            &http
                .get(&api(&format!("/api/entries/{other}")), &[])
                .await
                .body,
        );
        if entry["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The overview the dashboard polls: the same counters as /metrics.
    let overview = json(&http.get(&api("/api/overview"), &[]).await.body);
    assert_eq!(overview["requests"]["miss"], 5, "{overview}");
    assert_eq!(overview["waits"]["ready"], 5, "failures too end a wait");
    assert_eq!(
        overview["jobs"]["claimed"], 5,
        "retries are not claims by requests"
    );
    assert_eq!(
        overview["jobs"]["failed"], 4,
        "two failures and two retries'"
    );
    assert_eq!(overview["jobs"]["stored"], 3);
    assert_eq!(overview["store"]["failed"], 2);
    assert_eq!(overview["store"]["fresh"], 3);
    assert_eq!(overview["durations"]["default"]["count"], 7);
}
