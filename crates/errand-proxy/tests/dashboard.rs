//! The dashboard in a real browser: headless Chromium, driven through ChromeDriver (the W3C
//! WebDriver protocol), against a running errand with traffic. It logs in with the token,
//! watches the numbers move, retries a failed entry and sees it turn pending, and submits a
//! purge.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the
//! test is skipped with a message, except under `CI=true`, where it fails. With
//! `ERRAND_SCREENSHOT=path.png` it also lets the charts fill for a while and saves a
//! screenshot there (this is how `docs/dashboard.png` is made).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;
use bytes::Bytes;
use common::{Errand, Http, origin};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const TOKEN: &str = "dashboard-test-token";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `false` (after saying so loudly) when the browser is missing, unless CI requires it.
fn browser_available() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !std::path::Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI needs {missing:?}: apt-get install chromium chromium-driver");
    }
    eprintln!(
        "\n*** SKIPPED the dashboard browser test: {missing:?} not installed \
         (apt-get install chromium chromium-driver) ***\n"
    );
    false
}

/// A ChromeDriver process on a free port, and the browser profile directory its sessions
/// use; on drop the process is killed and the directory removed.
struct Driver {
    child: Child,
    url: String,
    profile: std::path::PathBuf,
}

impl Driver {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let profile = std::env::temp_dir().join(format!("errand-dashboard-{}", std::process::id()));
        std::fs::create_dir_all(&profile).unwrap();
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile,
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start on {}", driver.url);
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The browser may still be writing its profile as it exits: try for a moment.
        for _ in 0..20 {
            if std::fs::remove_dir_all(&self.profile).is_ok() || !self.profile.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One WebDriver session: the few commands this test needs.
struct Browser {
    http: Client<HttpConnector, Full<Bytes>>,
    session: String,
}

impl Browser {
    async fn open(driver: &Driver) -> Self {
        let http = Client::builder(TokioExecutor::new()).build_http();
        let mut browser = Self {
            http,
            session: format!("{}/session", driver.url),
        };
        let profile = driver.profile.display();
        let created = browser
            .call(
                "POST",
                "",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                            "--no-first-run", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync",
                            "--window-size=1440,1500",
                            format!("--user-data-dir={profile}"),
                        ],
                    },
                }}})),
            )
            .await;
        let id = created["sessionId"].as_str().unwrap().to_owned();
        browser.session = format!("{}/{id}", browser.session);
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.session))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let response = self.http.request(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            status.is_success(),
            "{method} {path}: {status} {}",
            value["value"]
        );
        value["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url}))).await;
    }

    /// The first element matching `css`, waiting up to 15 s for it.
    async fn find(&self, css: &str) -> String {
        self.find_by("css selector", css).await
    }

    async fn find_by(&self, using: &str, selector: &str) -> String {
        for _ in 0..150 {
            let found = self
                .call(
                    "POST",
                    "/elements",
                    Some(json!({"using": using, "value": selector})),
                )
                .await;
            if let Some(element) = found.get(0) {
                return element[ELEMENT].as_str().unwrap().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no element {selector}");
    }

    async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.call("GET", &format!("/element/{element}/text"), None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn click(&self, element: &str) {
        self.call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Waits (up to `secs`) until the text of `css` satisfies `ok`; returns it.
    async fn wait_text(&self, css: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        for _ in 0..secs * 10 {
            last = self.text(css).await;
            if ok(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} never matched; last text {last:?}");
    }

    async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap())
            .unwrap()
    }

    async fn close(self) {
        self.call("DELETE", "", None).await;
    }
}

/// The first number in `text` ("1,234 answered" → 1234).
fn number(text: &str) -> Option<f64> {
    let digits: String = text
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits.parse().ok()
}

/// An origin with cacheable reports, and `/flaky/{n}` that fails while `broken` is set
/// (then answers after 1.5 s, so a retried job is seen pending).
async fn upstream(broken: Arc<AtomicBool>) -> SocketAddr {
    origin(
        Router::new()
            .route(
                "/report/{n}",
                get(|Path(n): Path<u32>| async move {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    ([("cache-control", "max-age=5")], format!("report {n}"))
                }),
            )
            .route(
                "/flaky/{n}",
                get(move |Path(n): Path<u32>| {
                    let broken = broken.clone();
                    async move {
                        if broken.load(Ordering::SeqCst) {
                            return (StatusCode::SERVICE_UNAVAILABLE, "database is down")
                                .into_response();
                        }
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                        (
                            [("cache-control", "max-age=600")],
                            format!("flaky {n} recovered"),
                        )
                            .into_response()
                    }
                }),
            ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_numbers_retries_and_purges() {
    if !browser_available() {
        return;
    }
    let broken = Arc::new(AtomicBool::new(true));
    let up = upstream(broken.clone()).await;
    let errand = Errand::serve(
        up,
        &[
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-token",
            TOKEN,
            "--max-attempts",
            "1",
            "--error-ttl",
            "10m",
        ],
    );
    let admin = errand.admin_addr();
    let http = Http::new();

    // Two signatures that fail every attempt.
    for n in [1, 2] {
        let reply = http
            .get(
                &errand.url(&format!("/flaky/{n}")),
                &[("prefer", "wait=10")],
            )
            .await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    }

    // Steady traffic: mostly hits on 20 reports, a miss whenever one expires.
    let traffic = {
        let url = errand.url("/report/");
        tokio::spawn(async move {
            let http = Http::new();
            for i in 0u64.. {
                http.get(&format!("{url}{}", i % 20), &[]).await;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };

    let driver = Driver::start().await;
    let browser = Browser::open(&driver).await;
    let page = format!("http://{admin}/?every=500");

    // Without the token the page asks for it, and shows nothing else.
    browser.goto(&page).await;
    browser
        .wait_text("#updated", 10, |t| t == "token needed")
        .await;
    browser.type_into("#auth-token", TOKEN).await;
    let open = browser.find("#auth-form button").await;
    browser.click(&open).await;

    // The numbers move: the request total grows and a hit ratio and rate appear.
    let first = browser
        .wait_text("#req-total", 15, |t| number(t).is_some_and(|n| n > 0.0))
        .await;
    let later = browser
        .wait_text("#req-total", 15, |t| number(t) > number(&first))
        .await;
    assert!(number(&later) > number(&first), "{first} → {later}");
    browser
        .wait_text("#hit-ratio", 15, |t| t.ends_with('%'))
        .await;
    browser
        .wait_text("#req-rate", 15, |t| number(t).is_some_and(|n| n > 0.0))
        .await;
    browser.wait_text("#failed-count", 15, |t| t == "2").await;
    browser
        .wait_text("#dur-summary", 15, |t| t.contains("attempts"))
        .await;

    // Retry a failed entry once the origin has recovered: it turns pending, then fresh.
    let failing = browser
        .wait_text("#failing", 15, |t| t.contains("/flaky/1"))
        .await;
    assert!(failing.contains("upstream answered 503"), "{failing}");
    broken.store(false, Ordering::SeqCst);
    let retry = browser
        .find_by(
            "xpath",
            "//tbody[@id='failing']/tr[contains(., '/flaky/1')]//button[contains(@class,'retry')]",
        )
        .await;
    browser.click(&retry).await;
    browser
        .wait_text("#retried", 5, |t| {
            t.contains("/flaky/1") && t.contains("pending")
        })
        .await;
    browser
        .wait_text("#retried", 20, |t| t.contains("fresh"))
        .await;
    let served = http.get(&errand.url("/flaky/1"), &[]).await;
    assert_eq!(served.body, "flaky 1 recovered", "{served:?}");
    assert!(served.cache_status().contains("hit"), "{served:?}");
    browser
        .wait_text("#failing", 15, |t| {
            !t.contains("/flaky/1") && t.contains("/flaky/2")
        })
        .await;

    // Purge the reports by prefix.
    let prefix = format!("http://{}/report/", errand.addr);
    browser.type_into("#purge-value", &prefix).await;
    let submit = browser.find("#purge-submit").await;
    browser.click(&submit).await;
    let result = browser
        .wait_text("#purge-result", 10, |t| t.contains("purged"))
        .await;
    assert!(
        number(&result).is_some_and(|n| n >= 1.0),
        "purged some reports: {result}"
    );

    if let Ok(path) = std::env::var("ERRAND_SCREENSHOT") {
        // Let the charts fill, with a fresh failure to show.
        broken.store(true, Ordering::SeqCst);
        http.get(&errand.url("/flaky/3"), &[("prefer", "wait=10")])
            .await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        let png = browser.screenshot().await;
        std::fs::write(&path, png).unwrap();
        eprintln!("dashboard screenshot saved to {path}");
    }
    traffic.abort();
    browser.close().await;
}
