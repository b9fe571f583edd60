//! Load generator and reference origin for errand's benchmarks (see `BENCHMARKS.md`).
//!
//! Latency percentiles come from every raw sample (sorted), not from a histogram with
//! coordinated-omission correction: each connection sends its next request when the previous
//! answer has arrived, and every round trip is recorded as measured.
//!
//! - `origin`: a bare hyper server answering N bytes after an optional delay, counting
//!   requests (`/__stats`); it is both the upstream and the "bare hyper" baseline.
//! - `load`: N keep-alive connections for a duration, one URL or a new URL per request.
//! - `queue`: no-op jobs straight through a store (claim → take → complete): in lockstep as a
//!   pgbench client runs its script, handed to idle workers, batched (a batch's claims one
//!   after another or all at once), or with the claimers apart from errand's own worker
//!   runtime, as fronts and `errand work` processes run.
//! - `stampede`: N clients send the same first request at once with `Prefer: wait`, and the
//!   tool reports upstream calls and how long after the origin's answer each client got its own.

// A report printed to stdout is this tool's output.
#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Parser)]
#[command(
    name = "errand-bench",
    about = "Benchmarks for errand: origin, load and stampede"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A bare hyper origin.
    Origin {
        #[arg(long, default_value = "127.0.0.1:3100")]
        listen: SocketAddr,
        /// Delay before each answer.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        delay: Duration,
        /// Body size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Cache-Control max-age sent with each answer.
        #[arg(long, default_value_t = 3600)]
        max_age: u64,
    },
    /// Keep-alive load for a duration.
    Load {
        /// Target URL (http://host:port/path).
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Append `?u=N` with a new N per request: every request is a first request.
        #[arg(long)]
        unique: bool,
        /// Open loop: offer this many requests per second in all (spread over the
        /// connections, each request timed from when it was due, so a slow answer delays
        /// and is charged to the ones behind it). Without it: closed loop, as fast as answered.
        #[arg(long)]
        rate: Option<u64>,
        /// Send `Prefer: VALUE` with every request (e.g. `wait=10`).
        #[arg(long)]
        prefer: Option<String>,
        /// Subtract this from every latency (a known upstream time), to report overhead.
        #[arg(long, value_parser = humantime::parse_duration)]
        minus: Option<Duration>,
        /// A label for the report line.
        #[arg(long, default_value = "load")]
        label: String,
    },
    /// No-op jobs through a store: claim → take → complete, as fast as it goes.
    Queue {
        /// `postgres://…` (uses schema `errand_bench`, recreated) or `redis://…` (key prefix
        /// `errand_bench`, emptied before and after).
        #[arg(long)]
        backend: String,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Concurrent claimers.
        #[arg(long, default_value_t = 8)]
        producers: usize,
        /// Concurrent workers.
        #[arg(long, default_value_t = 8)]
        consumers: usize,
        /// Jobs per take (and, above 1, per `complete`).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Each claimer also works: claim, then take and complete, in turn (as a pgbench
        /// client runs its insert, update and delete); `--consumers` adds workers besides.
        #[arg(long)]
        lockstep: bool,
        /// Each claimer waits for its job's result before claiming again (as `Prefer: wait`
        /// clients do), and workers with nothing to take wait idle for jobs (as errand's
        /// workers do), so a claim made while one waits hands its job over.
        #[arg(long, conflicts_with = "lockstep")]
        wait: bool,
        /// Claimers and workers apart, as `errand serve --workers 0` fronts and `errand work`
        /// processes are: two stores, each with its own pool and listener, so no claim hands
        /// its job over; the workers are errand's worker runtime (`--consumers` jobs at once)
        /// running a no-op job, woken across stores by the backend's notifications.
        #[arg(long, conflicts_with_all = ["lockstep", "wait"])]
        apart: bool,
        /// PostgreSQL: every claim is a statement of its own (by default, claims made while
        /// others are on their way go together).
        #[arg(long)]
        one_claim_per_statement: bool,
        /// With `--lockstep` and `--batch` above 1: each claimer sends its batch's claims all
        /// at once, as a front does with that many misses at the same moment, instead of one
        /// after another.
        #[arg(long, requires = "lockstep")]
        claims_at_once: bool,
        #[arg(long, default_value = "queue")]
        label: String,
    },
    /// N simultaneous first requests for one URL, with `Prefer: wait`.
    Stampede {
        /// Target URL (through errand or another cache).
        #[arg(long)]
        url: String,
        /// The origin behind it (its `/__stats` is read).
        #[arg(long)]
        origin: String,
        #[arg(long, default_value_t = 200)]
        clients: usize,
        #[arg(long, default_value = "wait=30")]
        prefer: String,
        #[arg(long, default_value = "stampede")]
        label: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Origin {
            listen,
            delay,
            size,
            max_age,
        } => origin(listen, delay, size, max_age).await,
        Command::Load {
            url,
            connections,
            duration,
            unique,
            rate,
            prefer,
            minus,
            label,
        } => {
            let shape = Shape {
                unique,
                rate,
                prefer,
                minus,
            };
            load(&url, connections, duration, shape, &label).await
        }
        Command::Queue {
            backend,
            duration,
            producers,
            consumers,
            batch,
            lockstep,
            wait,
            apart,
            one_claim_per_statement,
            claims_at_once,
            label,
        } => {
            if apart && consumers == 0 {
                anyhow::bail!(
                    "--apart needs --consumers above 0: the worker runtime's jobs at once"
                );
            }
            if wait && consumers == 0 {
                anyhow::bail!(
                    "--wait needs --consumers above 0: nobody would complete the jobs waited for"
                );
            }
            let shape = QueueShape {
                producers,
                consumers,
                batch,
                lockstep,
                wait,
                apart,
                group_claims: !one_claim_per_statement,
                claims_at_once,
            };
            queue(&backend, duration, shape, &label).await
        }
        Command::Stampede {
            url,
            origin,
            clients,
            prefer,
            label,
        } => stampede(&url, &origin, clients, &prefer, &label).await,
    }
}

fn epoch_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

async fn origin(
    listen: SocketAddr,
    delay: Duration,
    size: usize,
    max_age: u64,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("--listen {listen}"))?;
    let body = Bytes::from(vec![b'x'; size]);
    let count = Arc::new(AtomicU64::new(0));
    let last_done = Arc::new(AtomicU64::new(0));
    let cache_control = format!("max-age={max_age}");
    eprintln!(
        "origin on http://{} (delay {delay:?}, {size} bytes)",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (body, count, last_done, cache_control) = (
            body.clone(),
            count.clone(),
            last_done.clone(),
            cache_control.clone(),
        );
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let (body, count, last_done, cache_control) = (
                body.clone(),
                count.clone(),
                last_done.clone(),
                cache_control.clone(),
            );
            async move {
                if request.uri().path() == "/__stats" {
                    let stats = format!(
                        "{{\"requests\":{},\"last_done_us\":{}}}",
                        count.load(Ordering::SeqCst),
                        last_done.load(Ordering::SeqCst)
                    );
                    return Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(stats))));
                }
                count.fetch_add(1, Ordering::SeqCst);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                last_done.store(epoch_micros(), Ordering::SeqCst);
                let mut response = Response::new(Full::new(body));
                if let Ok(value) = cache_control.parse() {
                    response
                        .headers_mut()
                        .insert(http::header::CACHE_CONTROL, value);
                }
                Ok(response)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(uri: &Uri) -> anyhow::Result<Sender> {
    let authority = uri
        .authority()
        .context("URL without host")?
        .as_str()
        .to_owned();
    let stream = TcpStream::connect(&authority)
        .await
        .with_context(|| format!("connect {authority}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One request on a connection; returns the status once the whole body has arrived.
async fn round_trip(
    sender: &mut Sender,
    uri: &Uri,
    path: &str,
    prefer: Option<&str>,
) -> anyhow::Result<StatusCode> {
    sender.ready().await?;
    let mut request = Request::get(path).header(
        http::header::HOST,
        uri.authority().map_or("", |a| a.as_str()),
    );
    if let Some(prefer) = prefer {
        request = request.header("prefer", prefer);
    }
    let response = sender.send_request(request.body(Empty::new())?).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

#[derive(Default)]
struct Samples {
    micros: Vec<u32>,
    statuses: std::collections::BTreeMap<u16, u64>,
    errors: u64,
}

/// What each request of a load looks like.
struct Shape {
    unique: bool,
    rate: Option<u64>,
    prefer: Option<String>,
    minus: Option<Duration>,
}

async fn load(
    url: &str,
    connections: usize,
    duration: Duration,
    shape: Shape,
    label: &str,
) -> anyhow::Result<()> {
    let Shape {
        unique,
        rate,
        prefer,
        minus,
    } = shape;
    let minus = u32::try_from(minus.unwrap_or_default().as_micros()).unwrap_or(0);
    // Per connection, the time between two due requests (open loop only).
    let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r.max(1) as f64));
    let uri: Uri = url.parse().with_context(|| format!("--url {url}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let next = Arc::new(AtomicU64::new(0));
    let run_id = epoch_micros();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..connections {
        let (uri, path, next, prefer) = (uri.clone(), path.clone(), next.clone(), prefer.clone());
        // Stagger the connections' schedules across one interval.
        let offset = interval.map(|d| d.mul_f64(i as f64 / connections as f64));
        tasks.spawn(async move {
            let mut samples = Samples::default();
            let mut sender = match connect(&uri).await {
                Ok(s) => s,
                Err(_) => {
                    samples.errors += 1;
                    return samples;
                }
            };
            let mut due = started + offset.unwrap_or_default();
            let mut last_end = started;
            while Instant::now() < deadline {
                if interval.is_some() {
                    tokio::time::sleep_until(due.into()).await;
                    if due >= deadline {
                        break;
                    }
                }
                let target = if unique {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let sep = if path.contains('?') { '&' } else { '?' };
                    format!("{path}{sep}u={run_id}-{n}")
                } else {
                    path.clone()
                };
                // Charge the wait from when the request was due only if the previous answer
                // made it late (the server's doing); a late wake-up of this tool's own
                // millisecond timer is not the server's to pay for.
                let now = Instant::now();
                let sent = if interval.is_some() && last_end > due {
                    due
                } else {
                    now
                };
                if let Some(interval) = interval {
                    due += interval;
                }
                let result = round_trip(&mut sender, &uri, &target, prefer.as_deref()).await;
                last_end = Instant::now();
                match result {
                    Ok(status) => {
                        let micros = u32::try_from(sent.elapsed().as_micros())
                            .unwrap_or(u32::MAX)
                            .saturating_sub(minus);
                        samples.micros.push(micros);
                        *samples.statuses.entry(status.as_u16()).or_default() += 1;
                    }
                    Err(_) => {
                        samples.errors += 1;
                        match connect(&uri).await {
                            Ok(s) => sender = s,
                            Err(_) => break,
                        }
                    }
                }
            }
            samples
        });
    }
    let mut all = Samples::default();
    while let Some(done) = tasks.join_next().await {
        let s = done?;
        all.micros.extend(s.micros);
        for (k, v) in s.statuses {
            *all.statuses.entry(k).or_default() += v;
        }
        all.errors += s.errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    report(label, &mut all, elapsed);
    Ok(())
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64)).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

fn report(label: &str, samples: &mut Samples, elapsed: f64) {
    samples.micros.sort_unstable();
    let n = samples.micros.len();
    let statuses: Vec<String> = samples
        .statuses
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    println!(
        "{label}: {n} requests in {elapsed:.1}s = {:.0} req/s | latency ms p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} | status {} | errors {}",
        n as f64 / elapsed,
        percentile(&samples.micros, 50.0),
        percentile(&samples.micros, 90.0),
        percentile(&samples.micros, 99.0),
        percentile(&samples.micros, 99.9),
        percentile(&samples.micros, 100.0),
        statuses.join(" "),
        samples.errors,
    );
}

async fn origin_stats(origin: &str) -> anyhow::Result<(u64, u64)> {
    let base: Uri = origin
        .parse()
        .with_context(|| format!("--origin {origin}"))?;
    let mut sender = connect(&base).await?;
    sender.ready().await?;
    let request = Request::get("/__stats")
        .header(
            http::header::HOST,
            base.authority().map_or("", |a| a.as_str()),
        )
        .body(Empty::new())?;
    let body = sender
        .send_request(request)
        .await?
        .into_body()
        .collect()
        .await?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    let field = |name: &str| -> anyhow::Result<u64> {
        let start = text.find(name).context("origin stats")? + name.len() + 2;
        let digits: String = text[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Ok(digits.parse()?)
    };
    Ok((field("\"requests")?, field("\"last_done_us")?))
}

async fn stampede(
    url: &str,
    origin: &str,
    clients: usize,
    prefer: &str,
    label: &str,
) -> anyhow::Result<()> {
    let uri: Uri = url.parse().with_context(|| format!("--url {url}"))?;
    let path = format!(
        "{}{}stampede={}",
        uri.path(),
        if uri.query().is_some() { "&" } else { "?" },
        epoch_micros()
    );
    let (before, _) = origin_stats(origin).await?;
    // Connect every client first, so the requests leave together.
    let mut senders = Vec::with_capacity(clients);
    for _ in 0..clients {
        senders.push(connect(&uri).await?);
    }
    let gate = Arc::new(tokio::sync::Barrier::new(clients));
    let mut tasks = tokio::task::JoinSet::new();
    for mut sender in senders {
        let (uri, path, gate, prefer) =
            (uri.clone(), path.clone(), gate.clone(), prefer.to_owned());
        tasks.spawn(async move {
            gate.wait().await;
            let status = round_trip(&mut sender, &uri, &path, Some(&prefer)).await;
            (status, epoch_micros())
        });
    }
    let mut arrivals = Vec::with_capacity(clients);
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    while let Some(done) = tasks.join_next().await {
        let (status, at) = done?;
        let status = status?;
        *statuses.entry(status.as_u16()).or_default() += 1;
        arrivals.push(at);
    }
    let (after, job_done) = origin_stats(origin).await?;
    let calls = after - before;
    if calls == 0 {
        bail!("the origin saw no request");
    }
    // How long after the origin finished its answer each client had its own.
    let mut lag: Vec<u32> = arrivals
        .iter()
        .map(|at| u32::try_from(at.saturating_sub(job_done)).unwrap_or(u32::MAX))
        .collect();
    lag.sort_unstable();
    let statuses: Vec<String> = statuses.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    println!(
        "{label}: {clients} clients, upstream calls {calls} | answer after the origin's, ms: min {:.3} p50 {:.3} p99 {:.3} max {:.3} | status {}",
        percentile(&lag, 0.0),
        percentile(&lag, 50.0),
        percentile(&lag, 99.0),
        percentile(&lag, 100.0),
        statuses.join(" ")
    );
    Ok(())
}

/// Who claims and who works in `errand-bench queue`.
struct QueueShape {
    producers: usize,
    consumers: usize,
    batch: usize,
    lockstep: bool,
    wait: bool,
    /// Claimers on one store, errand's worker runtime on another.
    apart: bool,
    /// PostgreSQL: claims made while others are on their way go together.
    group_claims: bool,
    /// Lockstep: a claimer's batch of claims is sent at once, not one after another.
    claims_at_once: bool,
}

/// Takes up to `batch` jobs and completes them (one by one, or in one `complete`);
/// returns how many were completed, or `None` when nothing was ready.
async fn work_once(
    store: &errand::store::SharedStore,
    batch: usize,
    body: &Arc<errand::pattern::StoredResponse>,
) -> Option<u64> {
    use errand::pattern::Completion;
    use errand::pattern::Content;
    use errand::store::StoreExt;

    let jobs = store.take(batch, Duration::from_secs(30)).await.ok()?;
    if jobs.is_empty() {
        return None;
    }
    let now = store.now();
    let content = Content {
        response: body.clone(),
        generated_at: now,
        fresh_until: now.plus(Duration::from_secs(60)),
        stale_until: now.plus(Duration::from_secs(60)),
        stale_if_error_until: now.plus(Duration::from_secs(60)),
        tags: Vec::new(),
        job_millis: 0,
    };
    if batch == 1 {
        let mut done = 0;
        for job in jobs {
            let completion = Completion::Store(content.clone());
            if store.complete_one(&job.lease, completion).await.is_ok() {
                done += 1;
            }
        }
        Some(done)
    } else {
        // Batched: the whole take completes in one call.
        let batch = jobs
            .into_iter()
            .map(|job| (job.lease, Completion::Store(content.clone())))
            .collect();
        let results = store.complete(batch).await;
        Some(results.iter().filter(|r| r.is_ok()).count() as u64)
    }
}

async fn queue(
    backend: &str,
    duration: Duration,
    shape: QueueShape,
    label: &str,
) -> anyhow::Result<()> {
    use errand::pattern::{Priority, Signature, StoredResponse};
    use errand::store::{Claim, PgConfig, PgStore, RedisConfig, RedisStore, SharedStore};

    let QueueShape {
        producers,
        consumers,
        batch,
        lockstep,
        wait,
        apart,
        group_claims,
        claims_at_once,
    } = shape;
    /// The claimers' store, the workers' own (`--apart`), and the store to clean up.
    type Opened = (
        SharedStore,
        Option<SharedStore>,
        Option<Arc<PgStore>>,
        Option<Arc<RedisStore>>,
    );
    // A namespace of the benchmark's own, emptied before and after. With `--apart`, a second
    // store on it serves the workers, as another process's would.
    let (store, workers_store, pg, redis): Opened = if backend.starts_with("redis") {
        let mut config = RedisConfig::new(backend);
        config.prefix = "errand_bench".into();
        let store = Arc::new(RedisStore::connect(config.clone()).await?);
        store.delete_all().await?;
        let workers: Option<SharedStore> = if apart {
            Some(Arc::new(RedisStore::connect(config).await?))
        } else {
            None
        };
        (store.clone(), workers, None, Some(store))
    } else {
        let mut config = PgConfig::new(backend);
        config.schema = "errand_bench".into();
        config.pool_size = (producers + consumers + 2).min(64);
        config.group_claims = group_claims;
        let store = PgStore::connect(config.clone()).await?;
        store.drop_schema().await?;
        drop(store);
        let store = Arc::new(PgStore::connect(config.clone()).await?);
        let workers: Option<SharedStore> = if apart {
            config.pool_size = (consumers + 2).min(64);
            Some(Arc::new(PgStore::connect(config).await?))
        } else {
            None
        };
        (store.clone(), workers, Some(store), None)
    };
    let deadline = Instant::now() + duration;
    let claimed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let body = Arc::new(StoredResponse {
        status: StatusCode::OK,
        headers: http::HeaderMap::new(),
        body: Bytes::from_static(b"ok"),
        selecting: http::HeaderMap::new(),
    });
    // Apart, claimers keep at most this many jobs waiting, as a pgbench client's insert waits
    // for its take and delete: the run measures the fleet's pace, not a backlog growing.
    let backlog = 4 * consumers as u64;
    let room = Arc::new(tokio::sync::Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..producers {
        let (store, claimed, done, body, room) = (
            store.clone(),
            claimed.clone(),
            done.clone(),
            body.clone(),
            room.clone(),
        );
        tasks.spawn(async move {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::HOST,
                http::HeaderValue::from_static("bench.test"),
            );
            let mut n = 0u64;
            while Instant::now() < deadline {
                while apart
                    && claimed.load(Ordering::Relaxed) >= done.load(Ordering::Relaxed) + backlog
                    && Instant::now() < deadline
                {
                    let _ = tokio::time::timeout(Duration::from_millis(5), room.notified()).await;
                }
                // One claim, or (`--claims-at-once`) a whole batch of them sent together.
                let at_once = if claims_at_once { batch } else { 1 };
                let mut claims = Vec::with_capacity(at_once);
                for _ in 0..at_once {
                    n += 1;
                    let uri: Uri = format!("/job/{p}/{n}").parse().expect("uri");
                    let sig = Signature::of(&http::Method::GET, &uri, &headers, "http", &[])
                        .expect("signature");
                    claims.push(Claim {
                        key: sig.key,
                        uri: sig.request.uri.clone(),
                        request: sig.request,
                        priority: Priority::Miss,
                        expect: None,
                    });
                }
                if at_once > 1 {
                    let mut sent = tokio::task::JoinSet::new();
                    for claim in claims {
                        let store = store.clone();
                        sent.spawn(async move { store.claim(claim).await.is_ok() });
                    }
                    while let Some(made) = sent.join_next().await {
                        if made.unwrap_or(false) {
                            claimed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                } else if let Some(claim) = claims.pop() {
                    let key = claim.key;
                    let seen = std::time::Instant::now();
                    if store.claim(claim).await.is_ok() {
                        claimed.fetch_add(1, Ordering::Relaxed);
                        if wait {
                            let _ = store.wait(&key, Some(seen), Duration::from_secs(10)).await;
                        }
                    }
                }
                if lockstep && (n as usize).is_multiple_of(batch) {
                    let worked = work_once(&store, batch, &body).await.unwrap_or(0);
                    done.fetch_add(worked, Ordering::Relaxed);
                }
            }
        });
    }
    let shutdown = errand::Shutdown::new();
    let runtime = workers_store.map(|workers| {
        // errand's own worker runtime, running a no-op job: its takes, its batching of the
        // completions that pile up, its idle waits for a notification.
        let errand = errand::Errand::new(workers, errand::config::Config::default());
        let (ran, room) = (done.clone(), room.clone());
        let job = tower::service_fn(move |_: Request<errand::JobBody>| {
            ran.fetch_add(1, Ordering::Relaxed);
            room.notify_one();
            async {
                Response::builder()
                    .header(http::header::CACHE_CONTROL, "max-age=60")
                    .body(Full::new(Bytes::from_static(b"ok")))
            }
        });
        errand
            .worker(job)
            .concurrency(consumers)
            .spawn(shutdown.clone())
    });
    let consumers_here = if runtime.is_some() { 0 } else { consumers };
    for _ in 0..consumers_here {
        let (store, done, body) = (store.clone(), done.clone(), body.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                match work_once(&store, batch, &body).await {
                    Some(n) => {
                        done.fetch_add(n, Ordering::Relaxed);
                    }
                    None if wait => {
                        let limit = deadline.saturating_duration_since(Instant::now());
                        let _ = store.wait_for_jobs(limit).await;
                    }
                    None => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    // Jobs run by the worker runtime until the deadline count; it then stops and drains.
    let ran = done.load(Ordering::Relaxed);
    shutdown.cancel();
    if let Some(runtime) = runtime {
        runtime.await??;
        done.store(ran, Ordering::Relaxed);
    }
    let secs = duration.as_secs_f64();
    if consumers == 0 && !lockstep {
        // Nobody works: the run measures claims alone, the bound of the batched runs
        // (every job still costs one claim, and its commit).
        println!(
            "{label}: {:.0} claims/s ({} claimed in {secs:.0}s; {producers} claimers, no workers)",
            claimed.load(Ordering::Relaxed) as f64 / secs,
            claimed.load(Ordering::Relaxed),
        );
    } else {
        println!(
            "{label}: {:.0} jobs/s completed ({} claimed, {} completed in {secs:.0}s; {producers} claimers{}, {consumers} workers, take batch {batch})",
            done.load(Ordering::Relaxed) as f64 / secs,
            claimed.load(Ordering::Relaxed),
            done.load(Ordering::Relaxed),
            if lockstep {
                " that also work"
            } else if apart {
                " apart from the workers (errand's worker runtime, on a store of its own)"
            } else if wait {
                " that wait for their results"
            } else {
                ""
            },
        );
    }
    if let Some(pg) = pg {
        pg.drop_schema().await?;
    }
    if let Some(redis) = redis {
        redis.delete_all().await?;
    }
    Ok(())
}
