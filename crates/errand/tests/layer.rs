//! The Layer in front of an axum app, with in-process workers: what a client sees.
//! Freshness is tested by jumping an OffsetClock ahead; waits are `Prefer: wait` wake-ups.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use errand::config::{Config, Mode, PathPattern, Route, RoutePolicy};
use errand::store::{MemoryConfig, MemoryStore, OffsetClock};
use errand::{Errand, store::SharedStore};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

#[derive(Clone, Default)]
struct Calls(Arc<AtomicUsize>);

impl Calls {
    fn bump(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn app(calls: Calls) -> Router {
    let c = calls.clone();
    let slow = get(move || {
        let c = c.clone();
        async move {
            let n = c.bump();
            tokio::time::sleep(Duration::from_millis(50)).await;
            ([(header::ETAG, "\"v1\"")], format!("hello #{n}"))
        }
    });
    let c = calls.clone();
    let fail = get(move || {
        let c = c.clone();
        async move {
            c.bump();
            (StatusCode::INTERNAL_SERVER_ERROR, "boom")
        }
    });
    let c = calls.clone();
    let private = get(move || {
        let c = c.clone();
        async move {
            let n = c.bump();
            ([(header::CACHE_CONTROL, "private")], format!("secret #{n}"))
        }
    });
    let c = calls.clone();
    let me = get(move |headers: HeaderMap| {
        let c = c.clone();
        async move {
            c.bump();
            let who = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("nobody")
                .to_owned();
            format!("you are {who}")
        }
    });
    let c = calls.clone();
    let item = get(move || {
        let c = c.clone();
        async move { format!("item v{}", c.bump()) }
    })
    .post(|| async { (StatusCode::CREATED, "created").into_response() });
    let c = calls.clone();
    let page = get(move || {
        let c = c.clone();
        async move {
            let n = c.bump();
            tokio::time::sleep(Duration::from_millis(50)).await;
            format!("page #{n}")
        }
    });
    let c = calls.clone();
    let echo = get(move |headers: HeaderMap| {
        let c = c.clone();
        async move {
            c.bump();
            let mut seen: Vec<String> = headers
                .iter()
                .filter(|(n, _)| n.as_str() != "traceparent")
                .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
                .collect();
            seen.sort();
            seen.join("\n")
        }
    });
    let c = calls.clone();
    let zero = get(move || {
        let c = c.clone();
        async move {
            let n = c.bump();
            tokio::time::sleep(Duration::from_millis(20)).await;
            (
                [
                    (header::CACHE_CONTROL, "max-age=0, must-revalidate"),
                    (header::AGE, "5"),
                ],
                format!("zero #{n}"),
            )
        }
    });
    let c = calls.clone();
    let tagged = get(move |headers: HeaderMap| {
        let c = c.clone();
        async move {
            let n = c.bump();
            if headers
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v == "\"t1\"")
            {
                return (
                    StatusCode::NOT_MODIFIED,
                    [
                        (header::CACHE_CONTROL, "max-age=60"),
                        (header::ETAG, "\"t1\""),
                    ],
                    [("x-seen", format!("revalidated by #{n}"))],
                )
                    .into_response();
            }
            (
                [
                    (header::CACHE_CONTROL, "max-age=1"),
                    (header::ETAG, "\"t1\""),
                ],
                [("x-seen", format!("fetched by #{n}"))],
                format!("tagged #{n}"),
            )
                .into_response()
        }
    });
    let c = calls.clone();
    let strict = get(move |headers: HeaderMap| {
        let c = c.clone();
        async move {
            let n = c.bump();
            let cache_control = (header::CACHE_CONTROL, "max-age=1, must-revalidate");
            let etag = (header::ETAG, "\"s1\"");
            if headers
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v == "\"s1\"")
            {
                return (StatusCode::NOT_MODIFIED, [cache_control, etag]).into_response();
            }
            ([cache_control, etag], format!("strict #{n}")).into_response()
        }
    });
    let c = calls.clone();
    let no_cache = get(move |headers: HeaderMap| {
        let c = c.clone();
        async move {
            let n = c.bump();
            let cache_control = (header::CACHE_CONTROL, "no-cache");
            let etag = (header::ETAG, "\"n1\"");
            if headers
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v == "\"n1\"")
            {
                let seen = [("x-seen", format!("revalidated by #{n}"))];
                return (StatusCode::NOT_MODIFIED, [cache_control, etag], seen).into_response();
            }
            let seen = [("x-seen", format!("fetched by #{n}"))];
            ([cache_control, etag], seen, format!("no-cache #{n}")).into_response()
        }
    });
    let c = calls.clone();
    let greeting = get(move |headers: HeaderMap| {
        let c = c.clone();
        async move {
            let n = c.bump();
            tokio::time::sleep(Duration::from_millis(30)).await;
            let lang = headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("any")
                .to_owned();
            let vary = if lang == "*" { "*" } else { "Accept-Language" };
            ([(header::VARY, vary)], format!("{lang} #{n}"))
        }
    });
    Router::new()
        .route("/greeting", greeting)
        .route("/strict", strict)
        .route("/no-cache", no_cache)
        .route("/echo", echo)
        .route("/tagged", tagged)
        .route("/zero", zero)
        .route("/slow", slow)
        .route("/browser/{page}", page)
        .route("/fail", fail)
        .route("/private", private)
        .route("/me", me)
        .route("/item", item)
        .route("/bypass", get(|| async { "direct" }))
}

struct Harness {
    errand: Errand,
    clock: Arc<OffsetClock>,
    calls: Calls,
    shutdown: CancellationToken,
}

impl Harness {
    fn new() -> Self {
        let mut config = Config::default();
        config.jobs.backoff_base = Duration::from_millis(20);
        config.jobs.backoff_max = Duration::from_millis(40);
        let bypass = RoutePolicy {
            mode: Mode::Pass,
            ..RoutePolicy::default()
        };
        config.routes.routes.push(Route {
            path: PathPattern::parse("/bypass").unwrap(),
            policy: bypass,
        });
        let keyed = RoutePolicy {
            key_headers: vec![header::AUTHORIZATION],
            ..RoutePolicy::default()
        };
        config.routes.routes.push(Route {
            path: PathPattern::parse("/me").unwrap(),
            policy: keyed,
        });
        let waits = RoutePolicy {
            wait: Some(Duration::from_secs(10)),
            ..RoutePolicy::default()
        };
        config.routes.routes.push(Route {
            path: PathPattern::parse("/browser/*").unwrap(),
            policy: waits,
        });
        let two_variants = RoutePolicy {
            max_variants: 2,
            ..RoutePolicy::default()
        };
        config.routes.routes.push(Route {
            path: PathPattern::parse("/greeting").unwrap(),
            policy: two_variants,
        });
        config.routes.default.windows.ttl = Duration::from_secs(10);
        config.routes.default.windows.stale = Duration::from_secs(10);
        config.routes.default.error_ttl = Duration::from_secs(5);
        let clock = OffsetClock::new();
        let store: SharedStore = Arc::new(MemoryStore::with_clock(
            MemoryConfig::default(),
            clock.clone(),
        ));
        let errand = Errand::new(store, config);
        let calls = Calls::default();
        let shutdown = CancellationToken::new();
        let _worker = errand.worker(app(calls.clone())).spawn(shutdown.clone());
        Self {
            errand,
            clock,
            calls,
            shutdown,
        }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let service = app(self.calls.clone()).layer(self.errand.layer());
        let response = service.oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    async fn get(&self, path: &str, extra: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let mut request = Request::get(path).header("host", "app.test");
        for (n, v) in extra {
            request = request.header(*n, *v);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn cache_status(h: &HeaderMap) -> &str {
    h.get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

const WAIT: (&str, &str) = ("prefer", "wait=10");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_then_pending_then_hit_then_stale() {
    let h = Harness::new();
    let (status, headers, body) = h.get("/slow", &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(cache_status(&headers), "errand; fwd=uri-miss; detail=miss");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["vary"], "Prefer");
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["state"], "pending");

    // Another client while the job runs: pending (or, if it already finished, a hit).
    let (status, headers, _) = h.get("/slow", &[WAIT]).await;
    assert_eq!(status, StatusCode::OK, "{}", cache_status(&headers));
    let (status, headers, body) = h.get("/slow", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello #1");
    assert!(
        cache_status(&headers).starts_with("errand; hit; ttl="),
        "{}",
        cache_status(&headers)
    );
    assert_eq!(headers["age"], "0");
    assert_eq!(headers["etag"], "\"v1\"");

    // Conditional GET: 304 from the store.
    let (status, _, body) = h.get("/slow", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());

    // HEAD shares the entry and gets no body.
    let (status, headers, body) = h.get_head("/slow").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(headers["content-length"], "8");

    // Past the TTL: stale served at once, exactly one refresh runs.
    h.clock.advance(Duration::from_secs(12));
    let (status, headers, body) = h.get("/slow", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello #1");
    assert!(
        cache_status(&headers).contains("fwd=stale"),
        "{}",
        cache_status(&headers)
    );
    assert_eq!(headers["age"], "12");
    for _ in 0..10 {
        let (_, headers, _) = h.get("/slow", &[]).await;
        assert!(cache_status(&headers).contains("hit"));
    }
    // The refresh lands: hits now serve its result.
    let key = errand::pattern::Signature::of(
        &http::Method::GET,
        &"/slow".parse().unwrap(),
        &[(header::HOST, "app.test".parse().unwrap())]
            .into_iter()
            .collect(),
        "http",
        &[],
    )
    .unwrap()
    .key;
    // The refresh claim is made off the request path; follow it until its result lands.
    let store = h.errand.store();
    let mut settled = None;
    for _ in 0..200 {
        match store.lookup(&key).await.unwrap() {
            Some(e) if e.job().is_some() => {
                settled = store
                    .wait(&key, None, Duration::from_secs(10))
                    .await
                    .unwrap()
            }
            Some(e)
                if e.content
                    .as_ref()
                    .is_some_and(|c| c.response.body != "hello #1") =>
            {
                settled = Some(e)
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
        if settled.is_some() {
            break;
        }
    }
    let settled = settled.expect("the refresh landed");
    assert_eq!(settled.content.unwrap().response.body, "hello #2");
    let (_, headers, body) = h.get("/slow", &[]).await;
    assert_eq!(body, "hello #2");
    assert!(cache_status(&headers).starts_with("errand; hit;"));
    assert_eq!(h.calls.get(), 2, "one refresh for eleven stale hits");
}

impl Harness {
    async fn get_head(&self, path: &str) -> (StatusCode, HeaderMap, String) {
        let request = Request::head(path)
            .header("host", "app.test")
            .body(Body::empty())
            .unwrap();
        self.send(request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_gets_cause_one_job() {
    let h = Arc::new(Harness::new());
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let h = Arc::clone(&h);
            tokio::spawn(async move { h.get("/slow", &[]).await })
        })
        .collect();
    let mut phases = std::collections::HashMap::<String, usize>::new();
    for task in tasks {
        let (status, headers, _) = task.await.unwrap();
        assert!(status == StatusCode::ACCEPTED || status == StatusCode::OK);
        let detail = cache_status(&headers).to_owned();
        *phases.entry(detail).or_default() += 1;
    }
    assert_eq!(
        phases.get("errand; fwd=uri-miss; detail=miss"),
        Some(&1),
        "{phases:?}"
    );
    let (status, _, _) = h.get("/slow", &[WAIT]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        h.calls.get(),
        1,
        "exactly one handler call for 200 first GETs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_wait_answers_in_the_same_round_trip() {
    let h = Harness::new();
    let (status, headers, body) = h.get("/slow", &[WAIT]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello #1");
    assert_eq!(
        cache_status(&headers),
        "errand; fwd=uri-miss; fwd-status=200; stored; detail=waited"
    );
    // A wait shorter than the job: 202 after it.
    let (status, _, _) = h.get("/item", &[("prefer", "wait=0")]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, headers, _) = h.get("/private", &[("prefer", "respond-async")]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(headers["preference-applied"], "respond-async");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_waits_answers_plain_requests_in_one_round_trip() {
    let h = Harness::new();
    // No Prefer at all: the route's wait applies, and the job's answer comes back.
    let (status, headers, body) = h.get("/browser/page", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "page #1");
    assert!(
        cache_status(&headers).contains("detail=waited"),
        "{headers:?}"
    );
    // The client's own preferences win: a shorter wait, or a 202 at once.
    let (status, _, _) = h.get("/browser/slow-item", &[("prefer", "wait=0")]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, headers, _) = h
        .get("/browser/other", &[("prefer", "respond-async")])
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(headers["preference-applied"], "respond-async");
    // Elsewhere, a plain request is told to come back.
    let (status, _, _) = h.get("/not-waiting", &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_sends_the_claiming_requests_headers_on() {
    let h = Harness::new();
    let (status, _, seen) = h
        .get(
            "/echo",
            &[
                WAIT,
                ("accept-language", "de"),
                ("x-custom", "1"),
                ("if-none-match", "\"v0\""),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Sorted by name: what the handler saw in the job's replay.
    assert_eq!(
        seen, "accept-language: de\nhost: app.test\nvia: 1.1 errand\nx-custom: 1",
        "no Prefer or conditionals (credentials pass through, Range is answered from the whole: see pattern::forward)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_variant_is_stored_and_served_to_its_own_requests() {
    let h = Harness::new();
    let lang = |l| ("accept-language", l);
    // The first request stores its variant; the same values hit it.
    let (status, _, body) = h.get("/greeting", &[WAIT, lang("en")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "en #1"));
    let (_, headers, body) = h.get("/greeting", &[lang("en")]).await;
    assert_eq!(body, "en #1");
    assert!(cache_status(&headers).contains("hit"), "{headers:?}");
    assert_eq!(headers["vary"], "Accept-Language");
    // Other values get their own variant, one fetch each, then hit it.
    let (_, _, body) = h.get("/greeting", &[WAIT, lang("fr")]).await;
    assert_eq!(body, "fr #2");
    let (_, _, body) = h.get("/greeting", &[lang("fr")]).await;
    assert_eq!(body, "fr #2");
    let (_, _, body) = h.get("/greeting", &[WAIT]).await;
    assert_eq!(body, "any #3", "no Accept-Language is a variant too");
    for (extra, want) in [
        (Some("en"), "en #1"),
        (Some("fr"), "fr #2"),
        (None, "any #3"),
    ] {
        let extra: Vec<_> = extra.map(lang).into_iter().collect();
        let (_, headers, body) = h.get("/greeting", &extra).await;
        assert_eq!(body, want);
        assert!(cache_status(&headers).contains("hit"), "{headers:?}");
    }
    assert_eq!(h.calls.get(), 3);
    // The route allows two variants besides the first: a fourth value passes through.
    for n in [4, 5] {
        let (status, headers, body) = h.get("/greeting", &[lang("de")]).await;
        assert_eq!((status, body), (StatusCode::OK, format!("de #{n}")));
        assert!(
            cache_status(&headers).contains("detail=variant-limit"),
            "{headers:?}"
        );
    }
    // Requests with other values arriving together: each gets its own language.
    let (en, fr) = ([WAIT, lang("en")], [WAIT, lang("fr")]);
    let (a, b, c, d) = tokio::join!(
        h.get("/greeting?together", &en),
        h.get("/greeting?together", &fr),
        h.get("/greeting?together", &en),
        h.get("/greeting?together", &fr)
    );
    for (l, (status, _, body)) in [("en", a), ("fr", b), ("en", c), ("fr", d)] {
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with(&format!("{l} #")), "{l} got {body}");
    }
    assert_eq!(h.calls.get(), 7, "one job per variant");
    // `Vary: *` matches no other request: its claimer gets it, the next request goes through.
    for n in [8, 9] {
        let (status, _, body) = h.get("/greeting?star", &[WAIT, lang("*")]).await;
        assert_eq!((status, body), (StatusCode::OK, format!("* #{n}")));
    }
    assert_eq!(h.calls.get(), 9, "no fetch beyond one per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_stale_on_arrival_still_reaches_its_requests() {
    let h = Harness::new();
    // The request that waits gets the job's answer, with the origin's own headers.
    let (status, headers, body) = h.get("/zero", &[WAIT]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "zero #1");
    assert_eq!(headers["cache-control"], "max-age=0, must-revalidate");
    assert_eq!(headers["age"], "5");
    // It is not reused: the next request goes to the origin.
    let (status, _, body) = h.get("/zero", &[WAIT]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "zero #2");
    assert_eq!(h.calls.get(), 2, "one fetch per request, no 202 loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_told_to_come_back_gets_a_result_that_arrived_stale() {
    let h = Harness::new();
    let (status, _, _) = h.get("/zero?poll", &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut answered = None;
    for _ in 0..100 {
        let (status, _, body) = h.get("/zero?poll", &[]).await;
        if status == StatusCode::OK {
            answered = Some(body);
            break;
        }
        assert_eq!(status, StatusCode::ACCEPTED);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        answered.as_deref(),
        Some("zero #1"),
        "the poll gets the job's result"
    );
    assert_eq!(h.calls.get(), 1, "polling started no second job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_revalidates_and_a_304_freshens_the_stored_response() {
    let h = Harness::new();
    let (status, headers, body) = h.get("/tagged", &[WAIT]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "tagged #1");
    assert_eq!(headers["x-seen"], "fetched by #1");
    // Stale: served, while a refresh asks the origin with the stored ETag.
    h.clock.advance(Duration::from_secs(3));
    let (status, _, body) = h.get("/tagged", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "tagged #1");
    let mut freshened = None;
    for _ in 0..100 {
        let (_, headers, body) = h.get("/tagged", &[]).await;
        if headers["x-seen"] == "revalidated by #2" {
            freshened = Some((headers, body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (headers, body) = freshened.expect("the 304 freshened the entry");
    assert_eq!(body, "tagged #1", "the stored body, not sent again");
    assert_eq!(headers["cache-control"], "max-age=60");
    assert!(
        cache_status(&headers).starts_with("errand; hit"),
        "{headers:?}"
    );
    assert_eq!(h.calls.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_must_revalidate_copy_is_revalidated_never_served_stale() {
    let h = Harness::new();
    let (_, _, body) = h.get("/strict", &[WAIT]).await;
    assert_eq!(body, "strict #1");
    // Past its freshness the copy is not served: the request waits for a revalidation,
    // which asks with the stored ETag and gets the stored body back by a 304.
    h.clock.advance(Duration::from_secs(2));
    let (status, headers, body) = h.get("/strict", &[WAIT]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "strict #1"));
    assert!(
        cache_status(&headers).contains("detail=waited"),
        "{headers:?}"
    );
    // Fresh again after the 304: a hit.
    let (_, headers, body) = h.get("/strict", &[]).await;
    assert_eq!(body, "strict #1");
    assert!(
        cache_status(&headers).starts_with("errand; hit"),
        "{headers:?}"
    );
    assert_eq!(h.calls.get(), 2, "one fetch, one revalidation");
    // A client that does not wait is told to come back, never given the stale copy.
    h.clock.advance(Duration::from_secs(2));
    let (status, _, _) = h.get("/strict", &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_cache_response_is_revalidated_before_every_reuse() {
    let h = Harness::new();
    let (status, headers, body) = h.get("/no-cache", &[WAIT]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "no-cache #1"));
    assert_eq!(headers["x-seen"], "fetched by #1");
    // The next request is not answered from the copy: it waits for a job that asks the
    // origin with the stored ETag, and gets the stored body back by a 304.
    let (status, headers, body) = h.get("/no-cache", &[WAIT]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "no-cache #1"));
    assert_eq!(headers["x-seen"], "revalidated by #2");
    assert_eq!(headers["cache-control"], "no-cache");
    assert!(
        cache_status(&headers).contains("detail=waited"),
        "{headers:?}"
    );
    // A client that does not wait is told to come back, and then gets the revalidated copy.
    let (status, _, _) = h.get("/no-cache", &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut answered = None;
    for _ in 0..100 {
        let (status, headers, body) = h.get("/no-cache", &[]).await;
        if status == StatusCode::OK {
            answered = Some((headers, body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (headers, body) = answered.expect("the poll got the result");
    assert_eq!(body, "no-cache #1");
    assert_eq!(headers["x-seen"], "revalidated by #3");
    assert_eq!(
        h.calls.get(),
        3,
        "one fetch, then one revalidation per reuse"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_are_served_from_the_stored_response() {
    let h = Harness::new();
    // A range on a miss waits for the whole fetch and gets its part.
    let (status, headers, body) = h.get("/slow", &[WAIT, ("range", "bytes=0-4")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, "hello");
    assert_eq!(headers["content-range"], "bytes 0-4/8");
    assert_eq!(headers["content-length"], "5");
    // On a hit: the tail, a stale If-Range (the whole), past the end (416).
    let (status, _, body) = h.get("/slow", &[("range", "bytes=-2")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::PARTIAL_CONTENT, "#1"));
    let (status, _, body) = h
        .get("/slow", &[("range", "bytes=0-4"), ("if-range", "\"v0\"")])
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello #1"));
    let (status, headers, _) = h.get("/slow", &[("range", "bytes=8-")]).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers["content-range"], "bytes */8");
    assert_eq!(h.calls.get(), 1, "one fetch of the whole representation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_then_answer_502_until_the_error_ttl() {
    let h = Harness::new();
    let (status, headers, body) = h.get("/fail", &[WAIT]).await;
    assert_eq!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the upstream's last error response"
    );
    assert_eq!(body, "boom");
    assert!(cache_status(&headers).contains("waited"));
    assert_eq!(h.calls.get(), 3, "max_attempts = 3");
    let (status, headers, _) = h.get("/fail", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        cache_status(&headers),
        "errand; fwd=uri-miss; detail=failed"
    );
    assert_eq!(headers["retry-after"], "5");
    // After the error TTL a new job runs.
    h.clock.advance(Duration::from_secs(6));
    let (status, _, _) = h.get("/fail", &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_responses_are_delivered_once_then_pass() {
    let h = Harness::new();
    let (status, _, body) = h.get("/private", &[WAIT]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "secret #1");
    let (status, headers, body) = h.get("/private", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body, "secret #2",
        "not shared: the next request goes through"
    );
    assert_eq!(
        cache_status(&headers),
        "errand; fwd=uri-miss; detail=hit-for-pass"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_pass_through_unless_keyed() {
    let h = Harness::new();
    let (status, headers, _) = h.get("/slow", &[("cookie", "session=1")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache_status(&headers), "errand; fwd=request; detail=pass");
    // /me keys on Authorization: each credential has its own entry.
    let (_, _, alice) = h.get("/me", &[("authorization", "alice"), WAIT]).await;
    let (_, _, bob) = h.get("/me", &[("authorization", "bob"), WAIT]).await;
    assert_eq!(alice, "you are alice");
    assert_eq!(bob, "you are bob");
    let (_, headers, alice) = h.get("/me", &[("authorization", "alice")]).await;
    assert_eq!(alice, "you are alice");
    assert!(cache_status(&headers).contains("hit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_pass_and_invalidate() {
    let h = Harness::new();
    let (_, _, first) = h.get("/item", &[WAIT]).await;
    assert_eq!(first, "item v1");
    let post = Request::post("/item")
        .header("host", "app.test")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = h.send(post).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(cache_status(&headers), "errand; fwd=method; detail=pass");
    let (status, _, body) = h.get("/item", &[WAIT]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "item v2", "the POST invalidated the stored GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_named() {
    let h = Harness::new();
    let long = format!("/slow?q={}", "x".repeat(9000));
    let (status, _, body) = h.get(&long, &[]).await;
    assert_eq!(status, StatusCode::URI_TOO_LONG);
    assert!(body.contains("limit"));
    let request = Request::get("/slow")
        .header("host", "app.test")
        .header("content-length", "3")
        .header("transfer-encoding", "chunked")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = h.send(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Transfer-Encoding"));
    let no_host = Request::get("/slow").body(Body::empty()).unwrap();
    let (status, _, body) = h.send(no_host).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Host"));
    let (_, headers, body) = h.get("/bypass", &[]).await;
    assert_eq!(body, "direct");
    assert_eq!(cache_status(&headers), "errand; fwd=bypass; detail=pass");
}
