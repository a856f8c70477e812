//! HTTP/1.1 request framing read off the client's bytes as hyper reads them, for the one check
//! hyper cannot offer: hyper resolves `Transfer-Encoding` with `Content-Length` by dropping
//! the length (as RFC 9112 section 6.3 allows) and merges repeated equal lengths, so by the
//! time a request reaches the proxy the ambiguity that request smuggling exploits is gone from
//! view. [`Framed`] watches the bytes go by (it never holds or changes them) and follows each
//! request's head and body; for each head it notes, in order, whether the framing was
//! ambiguous (`Content-Length` twice, or with `Transfer-Encoding`) in the connection's
//! [`Verdicts`], which the proxy reads for each HTTP/1.1 request it gets: an ambiguous one is
//! answered 400 and the connection closed. h2 and upgraded connections are not looked at.
//!
//! It also bounds the wait for a request head (`header_timeout`), as hyper's own timer would,
//! more cheaply: a head is due once every request read so far has been answered (its body
//! gone, see [`Answered`]), and its wait runs from the last write of the answer, or from a
//! read that finds nothing on a new connection, until the head is whole. So a slow answer or
//! a long body is never cut by it, and an idle kept-alive connection closes. One timer per
//! connection, moved only when it fires early (a new wait began after it was set): a request
//! costs a clock read, not a timer of its own.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::{self, HeaderValue};
use http::{Request, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Per connection, for each request head read in order: whether its framing was ambiguous;
/// and how many of its requests have been answered (their response bodies gone).
#[derive(Debug, Default)]
pub struct Verdicts {
    ambiguous: std::sync::Mutex<std::collections::VecDeque<bool>>,
    answered: std::sync::atomic::AtomicU64,
}

impl Verdicts {
    fn push(&self, ambiguous: bool) {
        self.ambiguous
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(ambiguous);
    }

    /// The next request's verdict (`false` when none was noted).
    pub fn next(&self) -> bool {
        self.ambiguous
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
            .unwrap_or(false)
    }

    fn answered(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// A response body that counts its request answered once it is dropped (written to its end,
/// or given up): only then is the connection waiting for its next head.
pub struct Answered<B> {
    body: B,
    verdicts: std::sync::Arc<Verdicts>,
}

impl<B> Answered<B> {
    pub fn new(body: B, verdicts: std::sync::Arc<Verdicts>) -> Answered<B> {
        Answered { body, verdicts }
    }
}

impl<B> Drop for Answered<B> {
    fn drop(&mut self) {
        self.verdicts
            .answered
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Answered<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Heads longer than this are left to hyper (which refuses them).
const HEAD_LIMIT: usize = 64 * 1024;

/// A client stream whose request framing is followed.
pub struct Framed<S> {
    inner: S,
    state: State,
    verdicts: std::sync::Arc<Verdicts>,
    /// Request heads seen whole so far.
    heads: u64,
    /// How long a head may take, when bounded; since when the current one has been awaited.
    head_timeout: Option<std::time::Duration>,
    awaited_since: Option<std::time::Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

#[derive(Debug)]
enum State {
    /// The start of the connection: h2's preface or a first head.
    Start,
    /// A request head, collected until its blank line.
    Head(Vec<u8>),
    /// This many body bytes left.
    Body(u64),
    Chunked(Chunk),
    /// Not followed any further (h2, an upgrade, or framing hyper will refuse).
    Through,
}

#[derive(Debug)]
enum Chunk {
    /// The chunk-size line, collected until its LF.
    Size(Vec<u8>),
    Data(u64),
    /// The CRLF after a chunk's data: bytes still to skip.
    DataEnd(u8),
    /// Trailer lines until an empty one.
    Trailer(Vec<u8>),
}

/// How a head says its body is framed.
enum Body {
    None,
    Length(u64),
    Chunked,
}

impl<S> Framed<S> {
    /// Follows `inner`'s requests, noting verdicts in `verdicts`; a head not whole within
    /// `head_timeout` of being awaited ends the connection.
    pub fn new(
        inner: S,
        verdicts: std::sync::Arc<Verdicts>,
        head_timeout: Option<std::time::Duration>,
    ) -> Framed<S> {
        Framed {
            inner,
            state: State::Start,
            verdicts,
            heads: 0,
            head_timeout,
            awaited_since: None,
            timer: None,
        }
    }

    /// Whether a request head is due: every request read has been answered, and the next
    /// head has not started or not ended.
    fn head_due(&self) -> bool {
        matches!(self.state, State::Start | State::Head(_))
            && self.verdicts.answered() >= self.heads
    }

    /// While a head is due: its wait is timed (from now, unless it already is), the task to
    /// be woken at its deadline; whether the deadline has passed.
    fn head_overdue(&mut self, cx: &mut Context<'_>) -> bool {
        use std::future::Future;
        let Some(limit) = self.head_timeout.filter(|_| self.head_due()) else {
            return false;
        };
        let since = *self
            .awaited_since
            .get_or_insert_with(std::time::Instant::now);
        let deadline = tokio::time::Instant::from_std(since + limit);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        // A timer set for an earlier wait fires early: it is moved to this one's deadline.
        while timer.as_mut().poll(cx).is_ready() {
            if tokio::time::Instant::now() >= deadline {
                return true;
            }
            timer.as_mut().reset(deadline);
        }
        false
    }

    /// A read found nothing: past the head's deadline, the read fails.
    fn head_waits(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.head_overdue(cx) {
            true => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request head was not whole within header_timeout",
            ))),
            false => Poll::Pending,
        }
    }

    /// After a write: the last of a response starts the wait for the next head (hyper reads
    /// again only when the client sends, so the wait is timed from here).
    fn wrote<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if matches!(polled, Poll::Ready(Ok(_)))
            && self.awaited_since.is_none()
            && self.head_overdue(cx)
        {
            // Already past it: the read side is to find out.
            cx.waker().wake_by_ref();
        }
        polled
    }

    /// Notes the verdict on a whole request head and moves on to what follows it.
    fn head_read(&mut self, head: &[u8]) {
        self.heads += 1;
        let (ambiguous, body, upgrade) = look(head);
        self.verdicts.push(ambiguous);
        self.state = match (ambiguous, upgrade, body) {
            // Nothing after an ambiguous request is followed: the connection closes after
            // the 400.
            (true, _, _) | (false, true, _) => State::Through,
            (false, false, Body::None | Body::Length(0)) => State::Head(Vec::new()),
            (false, false, Body::Length(n)) => State::Body(n),
            (false, false, Body::Chunked) => State::Chunked(Chunk::Size(Vec::new())),
        };
    }

    /// Follows `data` (bytes hyper is about to read) through the state machine.
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Through => return,
                State::Start => self.state = State::Head(Vec::new()),
                // A whole head in one read, as most are: looked at where it lies.
                State::Head(head) if head.is_empty() && !data.starts_with(b"PRI ") => {
                    let Some(end) = find(data, b"\r\n\r\n").map(|i| i + 4) else {
                        head.extend_from_slice(data);
                        return;
                    };
                    self.head_read(&data[..end]);
                    data = &data[end..];
                }
                State::Head(head) => {
                    let from = head.len().saturating_sub(3);
                    head.extend_from_slice(data);
                    data = &[];
                    // h2 with prior knowledge: its preface, then frames, not heads.
                    if head.starts_with(b"PRI * HTTP/2.0") {
                        self.state = State::Through;
                        continue;
                    }
                    let Some(end) = find(&head[from..], b"\r\n\r\n").map(|i| from + i + 4) else {
                        if head.len() > HEAD_LIMIT {
                            self.state = State::Through;
                        }
                        continue;
                    };
                    let mut head = std::mem::take(head);
                    let rest = head.split_off(end);
                    self.head_read(&head);
                    // What followed the head is fed again, in the new state.
                    self.feed(&rest);
                    return;
                }
                State::Body(left) => {
                    let n = (*left).min(data.len() as u64) as usize;
                    data = &data[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::Chunked(chunk) => {
                    let byte = data[0];
                    data = &data[1..];
                    let next = match chunk {
                        Chunk::Size(line) => {
                            line.push(byte);
                            if byte != b'\n' {
                                (line.len() > 1024).then_some(State::Through)
                            } else {
                                Some(match chunk_size(line) {
                                    Some(0) => State::Chunked(Chunk::Trailer(Vec::new())),
                                    Some(n) => State::Chunked(Chunk::Data(n)),
                                    None => State::Through,
                                })
                            }
                        }
                        Chunk::Data(left) => {
                            *left -= 1;
                            // Skip the rest of the chunk's data in one go.
                            let n = (*left).min(data.len() as u64) as usize;
                            data = &data[n..];
                            *left -= n as u64;
                            (*left == 0).then_some(State::Chunked(Chunk::DataEnd(2)))
                        }
                        Chunk::DataEnd(left) => {
                            *left -= 1;
                            (*left == 0).then_some(State::Chunked(Chunk::Size(Vec::new())))
                        }
                        Chunk::Trailer(line) => {
                            line.push(byte);
                            if byte != b'\n' {
                                (line.len() > HEAD_LIMIT).then_some(State::Through)
                            } else if line.as_slice() == b"\r\n" || line.as_slice() == b"\n" {
                                Some(State::Head(Vec::new()))
                            } else {
                                line.clear();
                                None
                            }
                        }
                    };
                    if let Some(next) = next {
                        self.state = next;
                    }
                }
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// The size on a chunk-size line (hex, before any extension).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let size = text.trim_end().split(';').next()?.trim();
    u64::from_str_radix(size, 16).ok()
}

/// Reads a request head: whether its framing is ambiguous, how its body is framed, and
/// whether it asks for an upgrade.
fn look(head: &[u8]) -> (bool, Body, bool) {
    let (mut lengths, mut length, mut chunked, mut te, mut upgrade) =
        (0, None, false, false, false);
    // Lines end in LF (CRLF, or LF alone as parsers accept); the request line is skipped.
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (name, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te = true;
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        }
    }
    let ambiguous = lengths > 1 || (te && lengths > 0);
    let body = match (te, chunked, length) {
        (true, true, _) => Body::Chunked,
        // A coding other than chunked last: hyper refuses the request.
        (true, false, _) => Body::None,
        (false, _, Some(n)) => Body::Length(n),
        (false, _, None) => Body::None,
    };
    (ambiguous, body, upgrade)
}

impl<S: AsyncRead + Unpin> AsyncRead for Framed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if matches!(this.state, State::Through) {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => return this.head_waits(cx),
            polled => ready!(polled)?,
        }
        let heads = this.heads;
        this.feed(&buf.filled()[before..]);
        if this.heads != heads {
            this.awaited_since = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Framed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, b);
        this.wrote(cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.wrote(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Request framing that could let a request be read two ways by two parsers (request
/// smuggling), refused before anything goes upstream: several or malformed `Content-Length`
/// values, `Transfer-Encoding` together with `Content-Length`, and over h2 the
/// connection-specific headers RFC 9113 section 8.2.2 forbids.
pub fn bad_framing<B>(req: &Request<B>, ambiguous: bool) -> Option<&'static str> {
    let h = req.headers();
    if ambiguous {
        return Some("ambiguous framing: Content-Length twice, or with Transfer-Encoding");
    }
    let lengths: Vec<&HeaderValue> = h.get_all(header::CONTENT_LENGTH).iter().collect();
    if lengths.len() > 1 {
        return Some("several Content-Length headers");
    }
    if let Some(v) = lengths.first() {
        if v.is_empty() || !v.as_bytes().iter().all(u8::is_ascii_digit) {
            return Some("a malformed Content-Length");
        }
    }
    if h.contains_key(header::TRANSFER_ENCODING) && !lengths.is_empty() {
        return Some("Transfer-Encoding with Content-Length");
    }
    if req.version() == Version::HTTP_2 {
        let forbidden = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
        ];
        if forbidden.iter().any(|n| h.contains_key(*n))
            || h.get(header::TE).is_some_and(|v| v != "trailers")
        {
            return Some("a connection-specific header in an h2 request");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    fn bad_framing_plain<B>(req: &Request<B>) -> Option<&'static str> {
        bad_framing(req, false)
    }

    #[test]
    fn smuggling_forms_are_refused() {
        let req = |f: &dyn Fn(http::request::Builder) -> http::request::Builder| {
            f(Request::builder().uri("/")).body(()).unwrap()
        };
        assert!(bad_framing_plain(&req(&|b| b.header("content-length", "5"))).is_none());
        assert!(bad_framing_plain(&req(&|b| b
            .header("content-length", "5")
            .header("content-length", "6")))
        .is_some());
        assert!(bad_framing_plain(&req(&|b| b.header("content-length", "5, 5"))).is_some());
        assert!(bad_framing_plain(&req(&|b| b
            .header("content-length", "5")
            .header("transfer-encoding", "chunked")))
        .is_some());
        assert!(bad_framing_plain(&req(&|b| b
            .version(Version::HTTP_2)
            .header("connection", "close")))
        .is_some());
        assert!(bad_framing_plain(&req(&|b| b
            .version(Version::HTTP_2)
            .header("te", "trailers")))
        .is_none());
        assert!(
            bad_framing_plain(&req(&|b| b.version(Version::HTTP_2).header("te", "gzip"))).is_some()
        );
    }

    use super::*;

    /// The verdicts for the whole input, fed in pieces of `step` bytes.
    fn verdicts(input: &[u8], step: usize) -> Vec<bool> {
        let v = std::sync::Arc::new(Verdicts::default());
        let mut f = Framed::new((), v.clone(), None);
        for piece in input.chunks(step) {
            f.feed(piece);
        }
        let out = v.ambiguous.lock().unwrap().iter().copied().collect();
        out
    }

    #[test]
    fn ambiguous_heads_are_found_wherever_the_reads_split() {
        let pipelined = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nT: 1\r\n\r\nGET /c HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /d HTTP/1.1\r\n\r\n";
        for step in [1, 2, 7, 64, 4096] {
            // The fourth request is not followed: the connection closes after the third.
            assert_eq!(
                verdicts(pipelined, step),
                [false, false, true],
                "step {step}"
            );
        }
        let twice = b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(verdicts(twice, 3), [true]);
        // A body that looks like a head is a body.
        let body = b"POST / HTTP/1.1\r\nContent-Length: 60\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n";
        assert_eq!(verdicts(body, 5), [false]);
        // h2 is not looked at.
        let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(verdicts(h2, 4).is_empty());
    }
}
