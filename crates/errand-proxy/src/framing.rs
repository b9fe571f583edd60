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
//! The guard follows every request of a connection: after a `Content-Length` body it skips
//! exactly that many bytes; through a chunked body it follows the chunk sizes to the last
//! chunk and its trailers. A head ends at its first empty line, whether its lines end in
//! CRLF or in a bare LF (hyper accepts both, so the guard must too). Where the bytes stop
//! making sense (a chunk size hyper will refuse anyway, a head beyond [`MAX_HEAD`]) the guard
//! stops inspecting and hyper's own checks decide. It never changes body bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest head the guard buffers; a longer one is left to hyper's own limit.
const MAX_HEAD: usize = 64 * 1024;

/// Longest chunk-size or trailer line the guard follows.
const MAX_LINE: usize = 4096;

/// Where the guard is in the byte stream.
#[derive(Debug)]
enum State {
    /// Collecting a request head (bytes since its start).
    Head(Vec<u8>),
    /// Skipping this many body bytes.
    Body(u64),
    /// In a chunked body, collecting a chunk-size line, or a trailer line after the last
    /// chunk (an empty trailer line ends the body).
    ChunkLine { line: Vec<u8>, trailer: bool },
    /// Skipping this many bytes of chunk data.
    ChunkData(u64),
    /// Skipping the line end after chunk data.
    ChunkEnd,
    /// No longer inspecting.
    Off,
}

/// An IO wrapper that rejects requests with both `Content-Length` and `Transfer-Encoding`.
#[derive(Debug)]
pub(crate) struct FramingGuard<IO> {
    io: IO,
    state: State,
}

impl<IO> FramingGuard<IO> {
    /// Guards `io`.
    pub(crate) fn new(io: IO) -> Self {
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
                State::Body(left) | State::ChunkData(left) => {
                    let n = (bytes.len() - at).min(usize::try_from(*left).unwrap_or(usize::MAX));
                    at += n;
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = match self.state {
                            State::Body(_) => State::Head(Vec::new()),
                            _ => State::ChunkEnd,
                        };
                    }
                }
                State::ChunkEnd => match bytes[at..].iter().position(|b| *b == b'\n') {
                    None => return,
                    Some(lf) => {
                        at += lf + 1;
                        self.state = State::ChunkLine {
                            line: Vec::new(),
                            trailer: false,
                        };
                    }
                },
                State::ChunkLine { line, trailer } => {
                    let Some(lf) = bytes[at..].iter().position(|b| *b == b'\n') else {
                        line.extend_from_slice(&bytes[at..]);
                        if line.len() > MAX_LINE {
                            self.state = State::Off;
                        }
                        return;
                    };
                    line.extend_from_slice(&bytes[at..at + lf]);
                    at += lf + 1;
                    let text = line.strip_suffix(b"\r").unwrap_or(line);
                    self.state = match (*trailer, text.is_empty()) {
                        (true, true) => State::Head(Vec::new()),
                        (true, false) => State::ChunkLine {
                            line: Vec::new(),
                            trailer: true,
                        },
                        (false, _) => match chunk_size(text) {
                            Some(0) => State::ChunkLine {
                                line: Vec::new(),
                                trailer: true,
                            },
                            Some(size) => State::ChunkData(size),
                            None => State::Off,
                        },
                    };
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
                        Verdict::Chunked => {
                            self.state = State::ChunkLine {
                                line: Vec::new(),
                                trailer: false,
                            };
                        }
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
    /// A chunked body follows.
    Chunked,
    /// Unparseable or otherwise not followed further.
    Unknown,
}

/// Where a head ends: just past its first empty line, with CRLF or bare-LF line ends.
fn find_end(head: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(lf) = head[from..].iter().position(|b| *b == b'\n') {
        let next = from + lf + 1;
        match head.get(next..) {
            Some([b'\n', ..]) => return Some(next + 1),
            Some([b'\r', b'\n', ..]) => return Some(next + 2),
            _ => from = next,
        }
    }
    None
}

/// The size of a chunk-size line (`1a`, `1a;ext=x`), or `None` where hyper would refuse it.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let end = line.iter().position(|b| *b == b';').unwrap_or(line.len());
    let digits = line[..end].trim_ascii();
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// Reads the two framing headers of a complete head (hyper does the real parsing; this only
/// needs their presence and the length).
fn judge(head: &[u8]) -> Verdict {
    let mut length = None;
    let mut transfer: Option<bool> = None;
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
            // The body is chunked when the last coding of the last line is.
            let last = value.rsplit(|b| *b == b',').next().unwrap_or(value);
            transfer = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    match (length, transfer) {
        (Some(_), Some(_)) => Verdict::Ambiguous,
        (None, Some(true)) => Verdict::Chunked,
        (None, Some(false)) => Verdict::Unknown,
        (Some(n), None) => Verdict::Next(n),
        (None, None) => Verdict::Next(0),
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
    fn follows_chunked_bodies_to_the_next_head() {
        let chunked = b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let bad = b"GET /b HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream = chunked.to_vec();
        stream.extend_from_slice(bad);
        for step in [1, 2, 5, 4096] {
            let seen = run(&stream, step);
            assert_eq!(&seen[..chunked.len()], chunked, "step {step}");
            assert_eq!(
                seen.iter().filter(|b| **b == 0).count(),
                1,
                "step {step}: the head after a chunked body is judged"
            );
        }
    }

    #[test]
    fn bare_lf_heads_are_judged_too() {
        let bad =
            b"GET /c HTTP/1.1\nHost: a\nContent-Length: 3\nTransfer-Encoding: chunked\n\n0\r\n\r\n";
        let ok = b"GET /a HTTP/1.1\nHost: a\n\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n";
        for step in [1, 3, 4096] {
            assert_eq!(run(ok, step), ok.to_vec(), "step {step}");
            let seen = run(bad, step);
            assert_eq!(seen.iter().filter(|b| **b == 0).count(), 1, "step {step}");
        }
    }

    #[test]
    fn chunk_sizes_hyper_refuses_are_not_followed() {
        for size in ["-1", "0x3", "3x", "", "11111111111111111"] {
            assert_eq!(chunk_size(size.as_bytes()), None, "{size:?}");
        }
        assert_eq!(chunk_size(b"1A ; ext"), Some(26));
    }
}
