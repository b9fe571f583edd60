//! Client certificates (`sslcert`, `sslkey`) against a PostgreSQL server that asks for them
//! (feature `postgres`).
//!
//! The machine's test database does not ask clients for certificates, and its settings are
//! not the tests' to change, so these tests start a PostgreSQL of their own: `initdb` in a
//! temporary directory (as the `postgres` user when the tests run as root, since PostgreSQL
//! will not run as root), on a free port, with the test certificates of `tests/data` and a
//! `pg_hba.conf` that lets in only TLS connections carrying a client certificate signed by
//! the test CA. The binaries are found with `pg_config --bindir` (or `ERRAND_TEST_PG_BIN`).
//! Without them the tests are skipped with a message, except under `CI=true`, where they fail.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use errand::store::{Inspect, PgConfig, PgStore};

/// A file of `tests/data`.
fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A PostgreSQL server of this test's own, stopped and removed on drop.
struct PrivatePostgres {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // SIGINT to the server itself (the child may be `runuser`, which does not pass it
        // on): a fast shutdown, which ends the server's own processes too, and removes its
        // pid file last.
        let pid_file = self.dir.join("data/postmaster.pid");
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.lines().next().map(str::to_owned))
        {
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while pid_file.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether this process runs as root (PostgreSQL then has to run as another user); asked
/// of `id` once.
fn root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    })
}

/// `program` of PostgreSQL's binaries, run as the `postgres` user when this process is root.
fn pg_command(bin: &Path, program: &str) -> Command {
    if root() {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(bin.join(program));
        command
    } else {
        Command::new(bin.join(program))
    }
}

/// Where PostgreSQL's server binaries are; `None` (loudly; a failure under `CI=true`) when
/// they are not on this machine.
fn pg_bin() -> Option<PathBuf> {
    let found = std::env::var_os("ERRAND_TEST_PG_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            let out = Command::new("pg_config").arg("--bindir").output().ok()?;
            out.status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
        .filter(|bin| bin.join("initdb").is_file() && bin.join("postgres").is_file());
    if found.is_none() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "CI needs PostgreSQL's server binaries (initdb, postgres): set ERRAND_TEST_PG_BIN \
             or put pg_config on PATH"
        );
        eprintln!(
            "SKIPPED: no PostgreSQL server binaries (set ERRAND_TEST_PG_BIN or put pg_config on PATH)"
        );
    }
    found
}

/// Starts a server that takes only TLS connections with a client certificate signed by the
/// test CA, presenting `server.pem` (for `127.0.0.1` and `localhost`).
fn start() -> Option<PrivatePostgres> {
    let bin = pg_bin()?;
    let dir = std::env::temp_dir().join(format!("errand-pg-client-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, mode) in [
        ("server.pem", 0o644),
        ("server.key", 0o600),
        ("test-ca.pem", 0o644),
    ] {
        let to = dir.join(name);
        std::fs::copy(data(name), &to).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    if root() {
        let chown = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(chown.success(), "chown of {} to postgres", dir.display());
    }
    let cluster = dir.join("data");
    let initdb = pg_command(&bin, "initdb")
        .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
        .arg(&cluster)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        initdb.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&initdb.stderr)
    );
    // Only the server's own socket trusts without TLS; over TCP, TLS and a client
    // certificate the test CA signed, or nothing.
    std::fs::write(
        cluster.join("pg_hba.conf"),
        "local all all trust\n\
         hostssl all all 127.0.0.1/32 trust clientcert=verify-ca\n\
         host all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let setting = |name: &str, value: &Path| format!("{name}={}", value.display());
    let child = pg_command(&bin, "postgres")
        .arg("-D")
        .arg(&cluster)
        .args(["-p", &port.to_string(), "-k"])
        .arg(&dir)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "ssl=on"])
        .args(["-c", &setting("ssl_cert_file", &dir.join("server.pem"))])
        .args(["-c", &setting("ssl_key_file", &dir.join("server.key"))])
        .args(["-c", &setting("ssl_ca_file", &dir.join("test-ca.pem"))])
        .args(["-c", "fsync=off", "-c", "shared_buffers=16MB"])
        .args(["-c", "max_connections=20"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = PrivatePostgres { child, dir, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .arg("-q")
            .arg("-h")
            .arg(&server.dir)
            .args(["-p", &port.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Some(server);
        }
        assert!(
            Instant::now() < deadline,
            "the test's PostgreSQL did not start within 30 s (port {port})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server's URL for `params` (TLS parameters).
fn url(server: &PrivatePostgres, params: &str) -> String {
    format!(
        "postgres://postgres@127.0.0.1:{}/postgres?{params}",
        server.port
    )
}

async fn connect(url: String) -> Result<PgStore, errand::store::StoreError> {
    let mut config = PgConfig::new(url);
    config.schema = "errand_client_certs".into();
    config.listen = false;
    config.call_timeout = Duration::from_secs(5);
    PgStore::connect(config).await
}

/// With the certificate and key the test CA signed, errand connects, migrates and works,
/// and the server sees the certificate on its connection; without one, or with one the
/// server's CA did not sign, it is refused at once with the server's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_asks_for_a_client_certificate_gets_one() {
    let Some(server) = start() else {
        return;
    };
    let root = data("test-ca.pem");
    let verify = format!("sslmode=verify-full&sslrootcert={}", root.display());
    let with_cert = |name: &str| {
        format!(
            "{verify}&sslcert={}&sslkey={}",
            data(&format!("{name}.pem")).display(),
            data(&format!("{name}.key")).display()
        )
    };

    let store = connect(url(&server, &with_cert("client")))
        .await
        .expect("a client certificate signed by the server's CA");
    let stats = store.stats().await.expect("a query over the connection");
    assert_eq!(stats.pending, 0);
    // The server's own view of the store's connection: encrypted, with the client's name.
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host={} port={} user=postgres dbname=postgres",
            server.dir.display(),
            server.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let names: Vec<String> = client
        .query(
            "SELECT client_dn FROM pg_stat_ssl WHERE ssl AND client_dn IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        names.iter().any(|dn| dn == "/CN=errand test client"),
        "the server saw the client certificate: {names:?}"
    );
    drop(store);

    let started = Instant::now();
    let e = connect(url(&server, &verify))
        .await
        .expect_err("no client certificate");
    let text = e.to_string();
    assert!(text.contains("certificate"), "the server's reason: {text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", server.port)),
        "names the database: {text}"
    );
    let e = connect(url(&server, &with_cert("unrelated-ca")))
        .await
        .expect_err("a client certificate the server's CA did not sign");
    let text = e.to_string();
    assert!(
        text.contains("the server refused the client certificate (sslcert)"),
        "the reason, in terms of the URL: {text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusals are prompt, not timeouts: {:?}",
        started.elapsed()
    );
}
