//! A send timeout on each client connection: a client that stops reading its answer is cut
//! off once nothing has been written to it for [`SendTimeout`]'s limit (nginx's
//! `send_timeout`, 60 s by default, is the same rule).
//!
//! Without it a stalled reader keeps its connection, and with it a reference to the body it
//! asked for, for as long as it likes: many of them hold memory and file descriptors that
//! honest clients need. hyper has a timeout for reading a request head but none for writing,
//! so the rule is kept here, on the connection's bytes: while a write cannot make progress
//! a timer runs, any progress disarms it, and when it fires the write fails with
//! `TimedOut`, which ends the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// An IO wrapper that fails a write stalled for longer than its limit.
#[derive(Debug)]
pub(crate) struct SendTimeout<IO> {
    io: IO,
    limit: Duration,
    /// The timer, kept between stalls so that one connection allocates it at most once.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs for the current stall.
    armed: bool,
}

impl<IO> SendTimeout<IO> {
    /// Guards `io`: a write that makes no progress for `limit` fails.
    pub(crate) fn new(io: IO, limit: Duration) -> Self {
        Self {
            io,
            limit,
            timer: None,
            armed: false,
        }
    }

    /// Called with the inner write's result: disarms the timer on progress, arms it when the
    /// write stalls, and turns a stall that outlived the limit into an error.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.armed = false;
            return result;
        }
        let deadline = Instant::now() + self.limit;
        let timer = match &mut self.timer {
            Some(timer) => {
                if !self.armed {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.armed = true;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.armed = false;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client read nothing for {:?}", self.limit),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for SendTimeout<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SendTimeout<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, data);
        this.watch(cx, result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.watch(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_shutdown(cx);
        this.watch(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.watch(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_fails_after_the_limit_and_progress_resets_it() {
        // A pipe with room for 4 bytes that nobody reads after the first read.
        let (near, mut far) = tokio::io::duplex(4);
        let mut guarded = SendTimeout::new(near, Duration::from_secs(60));
        guarded.write_all(b"abcd").await.expect("fits");
        let mut got = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut far, &mut got)
            .await
            .expect("read");
        // Progress after a read: the next 4 bytes fit again.
        guarded
            .write_all(b"efgh")
            .await
            .expect("fits after progress");
        let started = Instant::now();
        let error = guarded.write_all(b"ijkl").await.expect_err("stalls");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }
}
