//! The one `LISTEN` connection of a process, fanning notifications out to its waiters and workers.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::AsyncMessage;

use super::signal::JobSignal;
use super::tls::Target;
use super::with_causes;
use crate::pattern::Key;
use crate::store::{Wakeups, redact};

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
