//! Notifications between processes over `LISTEN`/`NOTIFY`: what this process announces
//! after its claims and completions commit (coalesced), and the one `LISTEN` connection that
//! fans other processes' notifications out to its waiters and workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

use super::signal::JobSignal;
use super::tls::Target;
use super::{db, pool_error, with_causes};
use crate::pattern::Key;
use crate::store::{StoreError, Wakeups, redact};

/// Wake-ups waiting to be announced: sent together, one `NOTIFY` per short window.
///
/// `NOTIFY` takes a cluster-wide lock when its transaction commits, so a notification per
/// claim and per completion would serialize every write of every process. The state change
/// commits without one; this process announces it right after, coalesced.
#[derive(Debug, Default)]
pub(super) struct Announcer {
    pub(super) keys: std::sync::Mutex<Vec<Key>>,
    pub(super) jobs: AtomicBool,
    pub(super) ready: Notify,
}

/// How long announcements gather before one `NOTIFY` carries them.
pub(super) const ANNOUNCE_WINDOW: Duration = Duration::from_millis(2);

/// Keys per notification (a payload holds under 8,000 bytes).
pub(super) const KEYS_PER_NOTIFY: usize = 200;

/// A window's notifications, `$1` channels and `$2` payloads, in one statement and so one
/// commit.
pub(super) const ANNOUNCE: &str = "SELECT pg_notify(n.channel, n.payload)
     FROM unnest($1::text[], $2::text[]) AS n(channel, payload)";

impl Announcer {
    pub(super) fn job(&self) {
        self.jobs.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    pub(super) fn done(&self, key: Key) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key);
        self.ready.notify_one();
    }

    /// Sends at once what there is, then gathers for a window before sending again: a lone
    /// event is announced without delay, a burst costs one notification per window.
    ///
    /// A jobs notification carries `origin`, this process's own mark, so that its listener
    /// can leave it out: this process's workers heard of its claims directly.
    pub(super) async fn run(
        self: Arc<Self>,
        pool: Pool,
        (done, jobs): (String, String),
        origin: String,
    ) {
        let mut window = tokio::time::Instant::now();
        loop {
            self.ready.notified().await;
            tokio::time::sleep_until(window).await;
            window = tokio::time::Instant::now() + ANNOUNCE_WINDOW;
            let keys = std::mem::take(&mut *self.keys.lock().unwrap_or_else(|e| e.into_inner()));
            let new_jobs = self.jobs.swap(false, Ordering::AcqRel);
            let (mut channels, mut payloads): (Vec<&str>, Vec<String>) = keys
                .chunks(KEYS_PER_NOTIFY)
                .map(|chunk| {
                    let text: Vec<String> = chunk.iter().map(Key::to_hex).collect();
                    (done.as_str(), text.join(","))
                })
                .unzip();
            if new_jobs {
                channels.push(jobs.as_str());
                payloads.push(origin.clone());
            }
            if payloads.is_empty() {
                continue;
            }
            let sent = async {
                let client = pool
                    .get()
                    .await
                    .map_err(|e| StoreError::unavailable_because(pool_error(&e), e))?;
                let statement = client.prepare_cached(ANNOUNCE).await.map_err(db)?;
                client
                    .execute(&statement, &[&channels, &payloads])
                    .await
                    .map_err(db)?;
                Ok::<_, StoreError>(())
            };
            if let Err(e) = tokio::time::timeout(Duration::from_secs(5), sent)
                .await
                .unwrap_or(Err(StoreError::Timeout(Duration::from_secs(5))))
            {
                // Waiters and idle workers recheck on their own; nothing is lost.
                tracing::warn!(error = %e, "could not send wake-ups");
            }
        }
    }
}

/// Keeps one `LISTEN` connection, reconnecting with backoff; fans notifications out.
pub(super) async fn listen(
    target: Target,
    url: String,
    (done, jobs): (String, String),
    wakeups: Arc<Wakeups>,
    work: Arc<JobSignal>,
    origin: String,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match target.config.connect(target.tls.clone()).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(n))) => {
                                if tx
                                    .send((n.channel().to_owned(), n.payload().to_owned()))
                                    .is_err()
                                {
                                    break;
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => break,
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {done}; LISTEN {jobs}"))
                    .await
                    .is_ok()
                {
                    backoff = Duration::from_millis(100);
                    // Anything may have happened while no one listened.
                    wakeups.listening(true);
                    work.listening(true);
                    while let Some((channel, payload)) = rx.recv().await {
                        if channel == jobs {
                            // This process's own claims reached its workers directly.
                            if payload != origin {
                                work.announce();
                            }
                        } else {
                            for key in payload.split(',').filter_map(Key::parse) {
                                wakeups.wake(&key);
                            }
                        }
                    }
                    wakeups.listening(false);
                    work.listening(false);
                }
                driver.abort();
                tracing::warn!(url = %redact(&url), "notification connection lost; reconnecting");
            }
            Err(e) => {
                tracing::warn!(
                    url = %redact(&url),
                    error = %with_causes(&e),
                    "cannot open the notification connection"
                );
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
