//! The one subscriber connection per process: wake-ups for waiters (`ch:done`) and idle
//! workers (`ch:jobs`), reconnected with backoff.

use super::*;

/// Keeps one subscriber connection, reconnecting with backoff; fans messages out.
pub(super) async fn subscribe(
    client: Client,
    url: String,
    tag: String,
    wakeups: Arc<Wakeups>,
    work: Arc<Notify>,
) {
    let (done, jobs) = (format!("{tag}ch:done"), format!("{tag}ch:jobs"));
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&done).await?;
            pubsub.subscribe(&jobs).await?;
            Ok::<_, ::redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(5), connected).await {
            Ok(Ok(pubsub)) => {
                backoff = Duration::from_millis(100);
                // Anything may have happened while no one listened.
                wakeups.listening(true);
                work.notify_waiters();
                let mut stream = pubsub.into_on_message();
                while let Some(msg) = next(&mut stream).await {
                    if msg.get_channel_name() == jobs {
                        work.notify_waiters();
                    } else {
                        let payload = msg.get_payload_bytes();
                        for hex in payload.split(|b| *b == b',') {
                            if let Some(key) = std::str::from_utf8(hex).ok().and_then(Key::parse) {
                                wakeups.wake(&key);
                            }
                        }
                    }
                }
                wakeups.listening(false);
                tracing::warn!(url = %redact(&url), "Redis subscriber connection lost; reconnecting");
            }
            Ok(Err(e)) => {
                tracing::warn!(url = %redact(&url), error = %e, "cannot open the Redis subscriber connection");
            }
            Err(_) => {
                tracing::warn!(url = %redact(&url), "opening the Redis subscriber connection timed out");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

pub(super) async fn next<S: futures_core::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

// ---- reading replies ----
