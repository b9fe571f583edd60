//! A guard on each client connection against ambiguous request framing.
//!
//! RFC 9112 §6.3 lets a server either reject a request carrying both `Content-Length` and
//! `Transfer-Encoding` or follow `Transfer-Encoding` and close the connection. errand rejects
//! it (`400`): such a request is a classic smuggling probe. hyper takes the second option
//! and drops `Content-Length` before any service sees the request, so the check happens here,
//! on the bytes: the guard looks at each request head, and when one carries both headers it
//! spoils the head's terminator (its final line feed becomes a NUL), which makes hyper answer
//! `400` and close the connection.
//!
//! The guard only follows heads it can find without decoding a body: after a request with a
//! `Content-Length` body it skips exactly that many bytes; after a chunked body it stops
//! inspecting the connection (hyper's own rule still applies). It never changes body bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest head the guard buffers; a longer one is left to hyper's own limit.
const MAX_HEAD: usize = 64 * 1024;

/// Where the guard is in the byte stream.
#[derive(Debug)]
enum State {
    /// Collecting a request head (bytes since its start).
    Head(Vec<u8>),
    /// Skipping this many body bytes.
    Body(u64),
    /// No longer inspecting.
    Off,
}

/// An IO wrapper that rejects requests with both `Content-Length` and `Transfer-Encoding`.
#[derive(Debug)]
pub struct FramingGuard<IO> {
    io: IO,
    state: State,
}

impl<IO> FramingGuard<IO> {
    /// Guards `io`.
    pub fn new(io: IO) -> Self {
        Self {
            io,
            state: State::Head(Vec::new()),
        }
    }

    /// Follows `bytes` (just read, and about to be handed to hyper) through heads and bodies,
    /// spoiling an ambiguous head in place. A head that arrives whole (the usual case) is
    /// judged where it lies; only a head split across reads is copied.
    fn inspect(&mut self, bytes: &mut [u8]) {
        let mut at = 0;
        while at < bytes.len() {
            match &mut self.state {
                State::Off => return,
                State::Body(left) => {
                    let n = (bytes.len() - at).min(usize::try_from(*left).unwrap_or(usize::MAX));
                    at += n;
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::Head(partial) => {
                    let before = partial.len();
                    // Where the head ends, counted from `at` in this read.
                    let (verdict, end_here) = if before == 0 {
                        let Some(end) = find_end(&bytes[at..]) else {
                            partial.extend_from_slice(&bytes[at..]);
                            self.check_size();
                            return;
                        };
                        (judge(&bytes[at..at + end]), end)
                    } else {
                        // The terminator may straddle the reads: search from just before them.
                        let from = before.saturating_sub(3);
                        partial.extend_from_slice(&bytes[at..]);
                        let Some(end) = find_end(&partial[from..]).map(|e| e + from) else {
                            self.check_size();
                            return;
                        };
                        (judge(&partial[..end]), end - before)
                    };
                    match verdict {
                        Verdict::Ambiguous => {
                            // The head's last byte arrived in this read, so it can still change.
                            bytes[at + end_here - 1] = 0;
                            self.state = State::Off;
                            return;
                        }
                        Verdict::Next(0) => self.state = State::Head(Vec::new()),
                        Verdict::Next(len) => self.state = State::Body(len),
                        Verdict::Unknown => {
                            self.state = State::Off;
                            return;
                        }
                    }
                    at += end_here;
                }
            }
        }
    }

    fn check_size(&mut self) {
        if matches!(&self.state, State::Head(h) if h.len() > MAX_HEAD) {
            self.state = State::Off;
        }
    }
}

/// What a complete head says about framing.
enum Verdict {
    /// Both `Content-Length` and `Transfer-Encoding`.
    Ambiguous,
    /// The body has this many bytes (0 for none); the next head follows it.
    Next(u64),
    /// Chunked, unparseable or otherwise not followed further.
    Unknown,
}

fn find_end(head: &[u8]) -> Option<usize> {
    head.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

/// Reads the two framing headers of a complete head (hyper does the real parsing; this only
/// needs their presence and the length).
fn judge(head: &[u8]) -> Verdict {
    let mut length = None;
    let mut chunked = false;
    // Skip the request line; stop at the empty line.
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Verdict::Unknown;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            let parsed = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            if parsed.is_none() || (length.is_some() && length != parsed) {
                return Verdict::Unknown;
            }
            length = parsed;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
        }
    }
    match (length, chunked) {
        (Some(_), true) => Verdict::Ambiguous,
        (_, true) => Verdict::Unknown,
        (Some(n), false) => Verdict::Next(n),
        (None, false) => Verdict::Next(0),
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FramingGuard<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let new = &mut buf.filled_mut()[filled..];
            if !new.is_empty() {
                this.inspect(new);
            }
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FramingGuard<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in pieces of `step` bytes; returns it as hyper would read it.
    fn run(stream: &[u8], step: usize) -> Vec<u8> {
        let mut guard = FramingGuard::new(());
        let mut out = stream.to_vec();
        for chunk in out.chunks_mut(step) {
            guard.inspect(chunk);
        }
        out
    }

    #[test]
    fn spoils_only_ambiguous_heads_at_any_split() {
        let ok = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
        let bad = b"GET /c HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let body_lookalike = b"POST /d HTTP/1.1\r\nHost: a\r\nContent-Length: 54\r\n\r\nX\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n12";
        for step in [1, 2, 3, 7, 64, 4096] {
            assert_eq!(run(ok, step), ok.to_vec(), "step {step}");
            assert_eq!(
                run(body_lookalike, step),
                body_lookalike.to_vec(),
                "step {step}"
            );
            let mut pipelined = ok.to_vec();
            pipelined.extend_from_slice(bad);
            let seen = run(&pipelined, step);
            assert_eq!(&seen[..ok.len()], ok, "step {step}");
            assert!(
                seen[ok.len()..].contains(&0),
                "step {step}: the ambiguous head is spoiled"
            );
            assert_eq!(seen.iter().filter(|b| **b == 0).count(), 1);
        }
    }

    #[test]
    fn stops_after_a_chunked_body() {
        let chunked = b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /b HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            run(chunked, 5),
            chunked.to_vec(),
            "not followed past a chunked body"
        );
    }
}
