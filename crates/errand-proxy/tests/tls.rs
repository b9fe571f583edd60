//! errand at the edge, against real TLS servers and clients made here: a CA and certificates
//! generated at test time (rcgen). HTTPS upstreams (trusted, untrusted, with a client
//! certificate, HTTP/2 by ALPN), the TLS listener with HTTP/2 and HTTP/1.1 (curl), h2c with
//! prior knowledge, and a certificate reload that drops no connection.

#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Counter, Errand, Http, verb};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const WAIT: (&str, &str) = ("prefer", "wait=10");

/// A test CA, and certificates it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, as PEM.
struct Issued {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for localhost and 127.0.0.1, named `name`.
    fn server(&self, name: &str) -> Issued {
        self.issue(
            name,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate named `name`.
    fn client(&self, name: &str) -> Issued {
        self.issue(name, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, name: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Issued {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        roots
    }
}

impl Issued {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }
    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key.as_bytes()).unwrap()
    }
}

/// Files in the temporary directory, removed on drop.
struct Files(PathBuf);

impl Files {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("errand-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An HTTPS origin with `certificate`, offering HTTP/2 and HTTP/1.1 by ALPN, asking for a
/// client certificate from `client_ca` when given. It answers every GET with the HTTP
/// version it was asked in (cacheable), counting requests.
async fn https_origin(
    certificate: &Issued,
    client_ca: Option<&Ca>,
    counter: Counter,
) -> SocketAddr {
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder(Arc::new(ca.roots()))
                .build()
                .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certificate.chain(), certificate.private_key())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, counter) = (acceptor.clone(), counter.clone());
            tokio::spawn(async move {
                // A refused handshake (untrusted client) just ends the connection.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let n = counter.bump();
                    let body = format!("{:?} #{n}", request.version());
                    // As nginx does: over HTTP/2 the host is `:authority`, and a `Host` as
                    // well is refused as a duplicate.
                    let duplicate = request.version() == http::Version::HTTP_2
                        && request.headers().contains_key("host");
                    let status = if duplicate { 400 } else { 200 };
                    let response = Response::builder()
                        .status(status)
                        .header("cache-control", "max-age=60")
                        .body(Full::new(Bytes::from(body)))
                        .unwrap();
                    async move { Ok::<_, Infallible>(response) }
                });
                let io = TokioIo::new(stream);
                let _ = if h2 {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await
                } else {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await
                };
            });
        }
    });
    addr
}

/// `errand serve --upstream https://localhost:{port}` with `[upstream]` settings `config`.
fn errand_before(origin: SocketAddr, files: &Files, config: &str) -> Errand {
    let config = files.write("errand.toml", config);
    let mut command = Command::new(env!("CARGO_BIN_EXE_errand"));
    command.args([
        "serve",
        "--upstream",
        &format!("https://localhost:{}", origin.port()),
        "--listen",
        "127.0.0.1:0",
        "--config",
        &config,
        "--max-attempts",
        "1",
    ]);
    Errand::start(command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_with_a_trusted_certificate_is_reached_over_http2() {
    let ca = Ca::new("private CA");
    let counter = Counter::default();
    let origin = https_origin(&ca.server("origin"), None, counter.clone()).await;
    let files = Files::new("trusted");
    let ca_file = files.write("ca.pem", &ca.pem());
    let errand = errand_before(
        origin,
        &files,
        &format!("[upstream]\nca_file = {ca_file:?}\n"),
    );
    let http = Http::new();
    let reply = http.get(&errand.url("/report"), &[WAIT]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body, "HTTP/2.0 #1", "HTTP/2 by ALPN");
    let hit = http.get(&errand.url("/report"), &[]).await;
    assert!(hit.cache_status().starts_with("errand; hit"), "{hit:?}");
    // Jobs share the pooled connection: more jobs, no new handshake needed for each.
    for n in 0..5 {
        let reply = http.get(&errand.url(&format!("/other/{n}")), &[WAIT]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.body.starts_with("HTTP/2.0"), "{reply:?}");
    }
    assert_eq!(counter.get(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_with_an_untrusted_certificate_is_refused_with_the_reason() {
    let counter = Counter::default();
    let origin = https_origin(
        &Ca::new("unknown CA").server("origin"),
        None,
        counter.clone(),
    )
    .await;
    let files = Files::new("untrusted");
    // A CA file that does not hold the origin's issuer.
    let other = files.write("ca.pem", &Ca::new("other CA").pem());
    let errand = errand_before(
        origin,
        &files,
        &format!("[upstream]\nca_file = {other:?}\n"),
    );
    let http = Http::new();
    let reply = http.get(&errand.url("/report"), &[WAIT]).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    let upstream = format!("https://localhost:{}", origin.port());
    assert!(
        reply.body.contains(&upstream),
        "names the upstream: {}",
        reply.body
    );
    assert!(
        reply.body.contains("invalid peer certificate") && reply.body.contains("UnknownIssuer"),
        "says why: {}",
        reply.body
    );
    assert_eq!(counter.get(), 0, "no request was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_that_asks_for_a_client_certificate_gets_it() {
    let ca = Ca::new("private CA");
    let counter = Counter::default();
    let origin = https_origin(&ca.server("origin"), Some(&ca), counter.clone()).await;
    let files = Files::new("client-cert");
    let ca_file = files.write("ca.pem", &ca.pem());
    let client = ca.client("errand");
    let cert_file = files.write("client.pem", &client.cert);
    let key_file = files.write("client.key", &client.key);
    let with = errand_before(
        origin,
        &files,
        &format!(
            "[upstream]\nca_file = {ca_file:?}\ncert_file = {cert_file:?}\nkey_file = {key_file:?}\n"
        ),
    );
    let http = Http::new();
    let reply = http.get(&with.url("/report"), &[WAIT]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(counter.get(), 1);
    // Without one, the handshake is refused and nothing reaches the origin.
    let without = errand_before(
        origin,
        &files,
        &format!("[upstream]\nca_file = {ca_file:?}\n"),
    );
    let reply = http.get(&without.url("/report"), &[WAIT]).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    assert_eq!(counter.get(), 1);
    // A key file without its certificate is refused at start, by name.
    let half = files.write(
        "half.toml",
        &format!("[upstream]\nkey_file = {key_file:?}\n"),
    );
    let (stderr, _) = common::refused_serve(&["--config", &half]);
    assert!(
        stderr.contains("key_file is set without cert_file"),
        "{stderr}"
    );
    // TLS settings with an http:// upstream are a mistake, named as such.
    let plain = files.write(
        "plain.toml",
        &format!("[upstream]\nca_file = {ca_file:?}\n"),
    );
    let (stderr, _) = common::refused_serve(&["--config", &plain]);
    assert!(stderr.contains("are for an https:// upstream"), "{stderr}");
}

/// `curl` through errand's listener with `args`: status, `Cache-Status` and HTTP version.
fn curl(args: &[&str], url: &str) -> (String, String, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-w",
            "version=%{http_version}\n",
        ])
        .args(args)
        .args(["-H", "Prefer: wait=0", url])
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let cache_status = text
        .lines()
        .find_map(|l| l.strip_prefix("cache-status: "))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("version="))
        .unwrap_or_default()
        .to_owned();
    (status, cache_status, version)
}

/// `202` then, once the job has run, a hit; every answer in `version`.
fn accepted_then_hit(args: &[&str], url: &str, version: &str) {
    let (status, _, got) = curl(args, url);
    assert_eq!((status.as_str(), got.as_str()), ("202", version), "{url}");
    for _ in 0..100 {
        let (status, cache_status, got) = curl(args, url);
        assert_eq!(got, version);
        if status == "200" {
            assert!(cache_status.starts_with("errand; hit"), "{cache_status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{url}: never a hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_http2_with_tls_and_in_the_clear_sees_202_then_a_hit() {
    let counter = Counter::default();
    let c = counter.clone();
    let up = common::origin(axum::Router::new().fallback(move || {
        let c = c.clone();
        async move { format!("page #{}", c.bump()) }
    }))
    .await;
    let ca = Ca::new("edge CA");
    let files = Files::new("curl");
    let server = ca.server("errand");
    let cert = files.write("cert.pem", &server.cert);
    let key = files.write("key.pem", &server.key);
    let ca_file = files.write("ca.pem", &ca.pem());
    let tls = Errand::serve(up, &["--tls-cert", &cert, "--tls-key", &key]);
    let port = tls.addr.port();
    let https = |path: &str| format!("https://localhost:{port}{path}");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let base = ["--cacert", ca_file.as_str(), "--resolve", resolve.as_str()];
    accepted_then_hit(&[&base[..], &["--http2"]].concat(), &https("/h2"), "2");
    accepted_then_hit(&[&base[..], &["--http1.1"]].concat(), &https("/h1"), "1.1");

    let clear = Errand::serve(up, &[]);
    let plain = |path: &str| format!("http://{}{path}", clear.addr);
    accepted_then_hit(&["--http2-prior-knowledge"], &plain("/h2c"), "2");
    accepted_then_hit(&[], &plain("/h1"), "1.1");
    assert_eq!(counter.get(), 4, "one job per URL and listener");
}

/// A TLS connection to errand at `addr` trusting `ca`: the certificate errand showed, and a
/// sender of HTTP/1.1 requests on that connection.
async fn connect(
    addr: SocketAddr,
    ca: &Ca,
) -> (
    CertificateDer<'static>,
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
) {
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let shown = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    (shown, sender)
}

async fn send(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> String {
    let request = Request::get("/page")
        .header("host", "localhost")
        .header("prefer", "wait=10")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// Sends `SIGHUP` to errand and waits for its log to show `line` `times` times.
fn hang_up_until(errand: &Errand, line: &str, times: usize) {
    let status = Command::new("kill")
        .args(["-HUP", &errand.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..200 {
        let seen = errand
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(line))
            .count();
        if seen >= times {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("no {line:?} in {:?}", errand.log.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_is_taken_without_dropping_a_connection() {
    let up = common::origin(axum::Router::new().fallback(|| async { "page" })).await;
    let ca = Ca::new("edge CA");
    let (first, second) = (ca.server("first"), ca.server("second"));
    let files = Files::new("reload");
    let cert = files.write("cert.pem", &first.cert);
    let key = files.write("key.pem", &first.key);
    let errand = Errand::serve(up, &["--tls-cert", &cert, "--tls-key", &key]);
    let (shown, mut open) = connect(errand.addr, &ca).await;
    assert_eq!(shown, first.chain()[0]);
    assert_eq!(send(&mut open).await, "page");

    // A broken file is reported, and the certificate in use stays.
    files.write("cert.pem", "not a certificate");
    hang_up_until(&errand, "TLS certificate not reloaded", 1);
    let (shown, _) = connect(errand.addr, &ca).await;
    assert_eq!(shown, first.chain()[0], "the old certificate stays");

    // A good pair is taken by new connections; the open one goes on with its own.
    files.write("key.pem", &second.key);
    files.write("cert.pem", &second.cert);
    hang_up_until(&errand, "TLS certificate reloaded", 1);
    let (shown, mut fresh) = connect(errand.addr, &ca).await;
    assert_eq!(
        shown,
        second.chain()[0],
        "new connections get the new certificate"
    );
    assert_eq!(send(&mut fresh).await, "page");
    assert_eq!(
        send(&mut open).await,
        "page",
        "the open connection was not dropped"
    );
}

#[test]
fn a_listener_certificate_that_does_not_match_its_key_is_refused_at_start() {
    let ca = Ca::new("edge CA");
    let files = Files::new("mismatch");
    let cert = files.write("cert.pem", &ca.server("one").cert);
    let key = files.write("key.pem", &ca.server("two").key);
    let (stderr, _) = common::refused_serve(&["--tls-cert", &cert, "--tls-key", &key]);
    assert!(
        stderr.contains("--tls-key") && stderr.contains("is not the key of the certificate"),
        "{stderr}"
    );
    let (stderr, _) = common::refused_serve(&["--tls-cert", &cert]);
    assert!(
        stderr.contains("--tls-cert is set without --tls-key"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_speaks_https_to_the_admin_verbs() {
    let up = common::origin(axum::Router::new().fallback(|| async { "page" })).await;
    let ca = Ca::new("admin CA");
    let files = Files::new("admin");
    let server = ca.server("errand admin");
    let cert = files.write("cert.pem", &server.cert);
    let key = files.write("key.pem", &server.key);
    let ca_file = files.write("ca.pem", &ca.pem());
    let token = "admin-over-tls";
    let errand = Errand::serve(
        up,
        &[
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-token",
            token,
            "--admin-tls-cert",
            &cert,
            "--admin-tls-key",
            &key,
        ],
    );
    // The admin listener announces itself after the public one: wait for its line first.
    let port = errand.admin_addr().rsplit(':').next().unwrap().to_owned();
    assert!(errand.log_contains("errand admin on https://"));
    let https = format!("https://localhost:{port}");
    let client = ["--admin", https.as_str(), "--admin-token", token];

    // The verbs trust the listener through --admin-ca-file.
    let trusted = [&client[..], &["--admin-ca-file", ca_file.as_str()]].concat();
    let (ok, out, err) = verb(&[&["stats"][..], &trusted].concat());
    assert!(ok, "{err}");
    assert!(out.contains("fresh 0"), "{out}");
    // Without it the certificate is not trusted, and the error says so.
    let (ok, _, err) = verb(&[&["stats"][..], &client].concat());
    assert!(!ok, "an unknown CA must be refused");
    assert!(
        err.contains(&https) && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    // Plain HTTP is not answered as HTTP.
    let plain = format!("http://localhost:{port}");
    let (ok, _, err) = verb(&["stats", "--admin", &plain, "--admin-token", token]);
    assert!(!ok, "{err}");
    // curl sees the JSON API over HTTP/2.
    let out = Command::new("curl")
        .args([
            "-s",
            "--http2",
            "-w",
            "\n%{http_version}",
            "--cacert",
            &ca_file,
        ])
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-H", &format!("authorization: Bearer {token}")])
        .arg(format!("{https}/api/stats"))
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("\"fresh\"") && text.ends_with("\n2"),
        "{text}"
    );
}

#[test]
fn an_admin_certificate_without_its_key_is_refused() {
    let (stderr, _) = common::refused_serve(&[
        "--admin-listen",
        "127.0.0.1:0",
        "--admin-tls-cert",
        "/nonexistent/cert.pem",
    ]);
    assert!(stderr.contains("--admin-tls-key"), "{stderr}");
    let files = Files::new("admin-missing");
    let key = files.write("key.pem", "not a key");
    let (stderr, _) = common::refused_serve(&[
        "--admin-listen",
        "127.0.0.1:0",
        "--admin-tls-cert",
        "/nonexistent/cert.pem",
        "--admin-tls-key",
        &key,
    ]);
    assert!(
        stderr.contains("--admin-tls-cert") && stderr.contains("/nonexistent/cert.pem"),
        "{stderr}"
    );
}
