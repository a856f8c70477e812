//! HTTP/1.1 to servers, run by the task of the request that uses the connection; and from
//! clients ([`server`]), where a connection's own loop reads heads and writes responses and a
//! request body is read with the same [`Body`] reader that reads server responses.
//!
//! hyper's client runs each connection as a task of its own: a request crosses a channel to
//! that task and wakes it, and its response crosses back and wakes the request's task.
//! Polling hyper's connection from the request's task instead measured slower still (each of
//! its internal channels then wakes the whole client connection once more). Here the
//! request's task writes the request and reads the response itself, and wakes only when a
//! socket is ready, as nginx's one event handler per connection pair does.
//!
//! [`Conn::send`] writes a request's head, streams its body while it watches for a response
//! that starts early, and reads the response's head. Of the `1xx` heads before it, `101` is
//! final, `100 Continue` is the server's own business, and the rest (`103 Early Hints` above
//! all) are passed to the request's [`InterimSink`] for the client.
//! [`Body`] reads the response body as its framing says (`Content-Length`, chunked, or to the
//! connection's close, RFC 9112 section 6.3) and hands the connection back at its end when it
//! can carry another request.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use crate::proxy::tcp::Tcp;
use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

mod body;
pub mod server;
#[cfg(test)]
mod tests;

pub use body::Body;

/// The most header fields a response head may carry (hyper's client default).
const MAX_HEADERS: usize = 100;
/// The largest response head, and the longest chunk-size or trailer line, read.
const MAX_HEAD: usize = 64 * 1024;
/// The room a read is made into: what is left after the last read when that is at least the
/// room asked for (`ROOM_MIN` at the least), else fresh room of `READ_MIN` or more; at most
/// `READ_MAX`. Heads are cut from the buffer and shared, so fresh room is a new allocation:
/// a connection reads several small messages into one.
const ROOM_MIN: usize = 1024;
const READ_MIN: usize = 8 * 1024;
const READ_MAX: usize = 64 * 1024;
/// The most pieces one write gathers.
const WRITE_SLICES: usize = 8;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request's head as it is written: borrowed, as nothing of it is needed once it has gone
/// (a request sent again, to another server or on a new connection, is written anew).
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// In origin form (`/path?query`).
    pub target: &'a str,
    pub headers: &'a HeaderMap,
    /// Where the server's interim responses go, when the client can take them.
    pub interim: Option<&'a InterimSink>,
}

/// A server's interim response (`1xx`, but neither `100` nor `101`), its hop-by-hop fields
/// taken out, on its way to the client before the final response.
#[derive(Debug)]
pub struct Interim {
    pub status: StatusCode,
    pub headers: HeaderMap,
}

/// Where a client connection takes the interim responses for the request it has in hand:
/// bounded, and never waited on, so a server that sends a flood of them loses the excess
/// instead of holding the request.
pub type InterimSink = tokio::sync::mpsc::Sender<Interim>;

/// How many interim responses a client connection holds before it has written them.
pub const INTERIM_HELD: usize = 8;

/// How an exchange with a server failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing of a response came before the server closed the connection (or reset it):
    /// a kept-alive connection the server had let go while it sat idle looks like this.
    #[error("connection closed before the response")]
    ClosedBeforeAnswer,
    #[error("connection closed in the middle of the response")]
    ClosedEarly,
    #[error("upstream I/O: {0}")]
    Io(#[from] io::Error),
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("request body: {0}")]
    RequestBody(BoxError),
}

impl Error {
    /// Whether the connection went away before any of the response arrived (the request may
    /// go again on a new connection).
    pub fn closed_before_answer(&self) -> bool {
        match self {
            Error::ClosedBeforeAnswer => true,
            Error::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// A connection's byte stream to a server: plain TCP or TLS (HTTP/2 connections run on it
/// too).
pub enum Io {
    Plain(Tcp),
    Tls(Box<tokio_rustls::client::TlsStream<Tcp>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// An HTTP/1.1 connection to a server, between requests; or the reading side of a client's
/// connection ([`server`]), which reads request bodies the same way.
pub struct Conn<I = Io> {
    io: I,
    /// Bytes read and not yet taken.
    buf: BytesMut,
    /// The room a response's first read asks for: as much as the last response of a stated
    /// length took (within bounds), so that one that has arrived whole is read in one call
    /// and its body goes on in one piece.
    first_read: usize,
}

/// A response head, as read.
struct Head {
    status: StatusCode,
    version: http::Version,
    headers: HeaderMap,
    /// Its length on the wire.
    len: usize,
}

impl<I> Conn<I> {
    pub fn new(io: I) -> Conn<I> {
        Conn {
            io,
            buf: BytesMut::new(),
            first_read: READ_MIN,
        }
    }

    /// The connection's bytes and what was read past the last head or body: an upgraded
    /// connection's start.
    pub fn into_parts(self) -> (I, BytesMut) {
        (self.io, self.buf)
    }
}

impl<I: AsyncRead + Unpin> Conn<I> {
    /// Reads more into the buffer, with room for at least `want` bytes (within bounds, see
    /// [`READ_MIN`]); `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let want = want.clamp(ROOM_MIN, READ_MAX);
        if self.buf.capacity() - self.buf.len() < want {
            self.buf.reserve(want.max(READ_MIN));
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

impl Conn {
    /// Whether an idle connection is still open and quiet, looked at without waiting: a
    /// close (or anything else) the server sent while it sat idle ends it.
    pub fn alive(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        self.buf.is_empty()
            && Pin::new(&mut self.io)
                .poll_read(&mut cx, &mut probe)
                .is_pending()
    }

    /// Sends a request (`target` in origin form) and reads its response's head; the
    /// response's body reads from this connection. The head is borrowed: written out, it is
    /// not needed again. The request body goes as it comes, while the server's answer is
    /// watched for: an answer that starts before the body has all gone ends the sending (and
    /// the connection is not used again).
    pub async fn send<B>(
        mut self,
        head: RequestHead<'_>,
        mut body: B,
    ) -> Result<Response<Body>, Error>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let head_only = *head.method == Method::HEAD;
        let interim = head.interim;
        let ended = body.is_end_stream();
        let length = body.size_hint().exact();
        let chunked = !ended && length.is_none();
        let mut out = Vec::with_capacity(256 + 32 * head.headers.len());
        encode_head(head, length, chunked, &mut out);
        let mut sending = Sending {
            queue: VecDeque::new(),
            chunked,
            ended,
            trailers: None,
        };
        sending.queue.push_back(Bytes::from(out));
        // What of the body is at hand (all of a held one) goes out with the head, in one
        // write.
        if !ended {
            poll_fn(|cx| {
                while !sending.ended && sending.queue.len() < WRITE_SLICES {
                    match Pin::new(&mut body).poll_frame(cx) {
                        Poll::Ready(frame) => sending.take(frame)?,
                        Poll::Pending => break,
                    }
                }
                Poll::Ready(Ok::<_, Error>(()))
            })
            .await?;
        }
        let mut early = None;
        poll_fn(|cx| self.poll_send(cx, &mut body, (&mut sending, interim), &mut early)).await?;
        let reusable = sending.ended && sending.queue.is_empty();
        let head = match early {
            Some(head) => head,
            None => poll_fn(|cx| self.poll_head(cx, interim)).await?,
        };
        let body = Body::new(self, &head, head_only, reusable)?;
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        // A chunked body's length, if a server also stated one, is not passed on as true.
        if resp.headers().contains_key(header::TRANSFER_ENCODING) {
            resp.headers_mut().remove(header::CONTENT_LENGTH);
        }
        Ok(resp)
    }

    /// Writes what is queued and the body's frames as they come, until all has gone or a
    /// final response has begun (`early`).
    fn poll_send<B>(
        &mut self,
        cx: &mut Context<'_>,
        body: &mut B,
        (sending, interim): (&mut Sending, Option<&InterimSink>),
        early: &mut Option<Head>,
    ) -> Poll<Result<(), Error>>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        loop {
            if !sending.ended {
                // An answer before the end: `100 Continue` is passed over, a final one ends
                // the sending. Read until nothing more is there, so that the rest of an
                // answer wakes this task even while the body is waited on.
                while let Poll::Ready(read) = self.poll_fill(cx, READ_MIN) {
                    if read? == 0 {
                        return Poll::Ready(Err(Error::ClosedBeforeAnswer));
                    }
                    while let Some(head) = self.parse_head()? {
                        if !informational(head.status) {
                            *early = Some(head);
                            return Poll::Ready(Ok(()));
                        }
                        pass_on(head, interim);
                    }
                    if self.buf.len() > MAX_HEAD {
                        return Poll::Ready(Err(Error::HeadTooLarge));
                    }
                }
            }
            if !sending.queue.is_empty() {
                ready!(sending.poll_write(&mut self.io, cx))?;
                continue;
            }
            if sending.ended {
                return Pin::new(&mut self.io).poll_flush(cx).map_err(Error::Io);
            }
            // Nothing queued: what has been written goes out before the body is waited on.
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
            sending.take(frame)?;
        }
    }

    /// Reads until a final response head is complete.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        interim: Option<&InterimSink>,
    ) -> Poll<Result<Head, Error>> {
        let mut answered = false;
        loop {
            while let Some(head) = self.parse_head()? {
                answered = true;
                if !informational(head.status) {
                    return Poll::Ready(Ok(head));
                }
                pass_on(head, interim);
            }
            if self.buf.len() > MAX_HEAD {
                return Poll::Ready(Err(Error::HeadTooLarge));
            }
            answered |= !self.buf.is_empty();
            if ready!(self.poll_fill(cx, self.first_read))? == 0 {
                return Poll::Ready(Err(match answered {
                    false => Error::ClosedBeforeAnswer,
                    true => Error::ClosedEarly,
                }));
            }
        }
    }

    /// Takes one complete response head from the buffer, if it holds one.
    fn parse_head(&mut self) -> Result<Option<Head>, Error> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        // Left uninitialised: the parser writes only the fields it finds.
        let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len =
            match config.parse_response_with_uninit_headers(&mut parsed, &self.buf, &mut fields) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(Error::Malformed("too many header fields"))
                }
                Err(_) => return Err(Error::Malformed("not an HTTP/1.x response head")),
            };
        let status = parsed
            .code
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or(Error::Malformed("bad status code"))?;
        let version = match parsed.version {
            Some(0) => http::Version::HTTP_10,
            _ => http::Version::HTTP_11,
        };
        let fields = locate(self.buf.as_ptr(), parsed.headers)?;
        let head = self.buf.split_to(len).freeze();
        Ok(Some(Head {
            status,
            version,
            len,
            headers: cut(&head, fields)?,
        }))
    }
}

/// Parsed fields' names, made now, and where their values lie from `start`: the values are
/// cut from the bytes once they leave the read buffer, not copied.
type Located = smallvec::SmallVec<[(HeaderName, Range<usize>); 16]>;

fn locate(start: *const u8, parsed: &[httparse::Header<'_>]) -> Result<Located, Error> {
    let mut fields = Located::new();
    for f in parsed {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| Error::Malformed("bad header name"))?;
        let at = f.value.as_ptr() as usize - start as usize;
        fields.push((name, at..at + f.value.len()));
    }
    Ok(fields)
}

/// The header map of `fields`, their values cut from `from`, with room for the few a proxy
/// adds (a request ID, a sticky cookie) without growing.
fn cut(from: &Bytes, fields: Located) -> Result<HeaderMap, Error> {
    let mut headers = HeaderMap::with_capacity(fields.len() + 4);
    for (name, range) in fields {
        let value = HeaderValue::from_maybe_shared(from.slice(range))
            .map_err(|_| Error::Malformed("bad header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Whether a connection may carry another exchange after this message (RFC 9112 section
/// 9.3): by default on HTTP/1.1, when asked on HTTP/1.0, never once `close` is said.
fn keeps_alive(version: http::Version, headers: &HeaderMap) -> bool {
    let mut keep = version == http::Version::HTTP_11;
    for token in tokens(headers, header::CONNECTION) {
        if token.eq_ignore_ascii_case(b"close") {
            return false;
        }
        if token.eq_ignore_ascii_case(b"keep-alive") {
            keep = true;
        }
    }
    keep
}

/// Whether `Connection` says `close`.
fn says_close(headers: &HeaderMap) -> bool {
    tokens(headers, header::CONNECTION).any(|t| t.eq_ignore_ascii_case(b"close"))
}

/// The elements a list field (`Connection`, `Transfer-Encoding`, `Upgrade`; RFC 9110
/// section 5.6.1) names over all its lines, trimmed (empty ones included).
pub(crate) fn tokens(headers: &HeaderMap, name: header::HeaderName) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
}

/// What a message's `Transfer-Encoding` names (RFC 9112 section 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codings {
    /// `chunked` alone: the one coding this proxy reads and writes.
    Chunked,
    /// `chunked` last, after others (`gzip, chunked`): framed, but the bytes within are
    /// still coded, and would go on as if they were not.
    ChunkedAfterOthers,
    /// Not `chunked` last: no framing a recipient can rely on.
    NotChunkedLast,
}

/// The codings `Transfer-Encoding` names, across all its lines.
pub fn codings(headers: &HeaderMap) -> Codings {
    let mut named = tokens(headers, header::TRANSFER_ENCODING).filter(|t| !t.is_empty());
    let Some(mut last) = named.next() else {
        return Codings::NotChunkedLast;
    };
    let mut alone = true;
    for t in named {
        (last, alone) = (t, false);
    }
    match (last.eq_ignore_ascii_case(b"chunked"), alone) {
        (true, true) => Codings::Chunked,
        (true, false) => Codings::ChunkedAfterOthers,
        (false, _) => Codings::NotChunkedLast,
    }
}

fn informational(status: StatusCode) -> bool {
    status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS
}

/// Passes an interim head on to the client (RFC 9110 section 15.2: a proxy forwards the
/// `1xx` responses it did not ask for itself), unless it is a `100 Continue`, which answers
/// the proxy's own sending, or the client cannot take it, or already holds as many as it may.
fn pass_on(head: Head, interim: Option<&InterimSink>) {
    let Some(sink) = interim.filter(|_| head.status != StatusCode::CONTINUE) else {
        return;
    };
    let mut headers = head.headers;
    crate::proxy::headers::strip_hop_by_hop(&mut headers);
    let _ = sink.try_send(Interim {
        status: head.status,
        headers,
    });
}

/// The request body still to write, framed.
struct Sending {
    queue: VecDeque<Bytes>,
    chunked: bool,
    /// The body's last frame has been taken.
    ended: bool,
    /// Trailer fields the body gave, for the last chunk.
    trailers: Option<HeaderMap>,
}

impl Sending {
    /// Writes out what is queued (gathered, [`WRITE_SLICES`] pieces at a time).
    fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.queue.is_empty() {
            let slices: smallvec::SmallVec<[io::IoSlice<'_>; WRITE_SLICES]> = self
                .queue
                .iter()
                .take(WRITE_SLICES)
                .map(|b| io::IoSlice::new(b))
                .collect();
            let wrote = Pin::new(&mut *io).poll_write_vectored(cx, &slices);
            drop(slices);
            let mut wrote = ready!(wrote)?;
            if wrote == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            while let Some(front) = self.queue.front_mut().filter(|_| wrote > 0) {
                let n = wrote.min(front.len());
                front.advance(n);
                wrote -= n;
                if front.is_empty() {
                    self.queue.pop_front();
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Queues one of the body's frames (`None`: its end). Trailers go in the last chunk; a
    /// body sent with a `Content-Length` has nowhere to carry them.
    fn take<E: Into<BoxError>>(
        &mut self,
        frame: Option<Result<Frame<Bytes>, E>>,
    ) -> Result<(), Error> {
        match frame {
            Some(Ok(frame)) => {
                let data = match frame.into_data() {
                    Ok(data) => data,
                    Err(frame) => {
                        if let Ok(fields) = frame.into_trailers() {
                            self.trailers.get_or_insert_default().extend(fields);
                        }
                        return Ok(());
                    }
                };
                if data.is_empty() {
                    return Ok(());
                }
                if self.chunked {
                    self.queue
                        .push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                    self.queue.push_back(data);
                    self.queue.push_back(Bytes::from_static(b"\r\n"));
                } else {
                    self.queue.push_back(data);
                }
            }
            None => {
                self.ended = true;
                if !self.chunked {
                    return Ok(());
                }
                match self.trailers.take() {
                    Some(fields) => {
                        let mut last = b"0\r\n".to_vec();
                        encode_fields(&fields, &mut last);
                        last.extend_from_slice(b"\r\n");
                        self.queue.push_back(Bytes::from(last));
                    }
                    None => self.queue.push_back(Bytes::from_static(b"0\r\n\r\n")),
                }
            }
            Some(Err(e)) => return Err(Error::RequestBody(e.into())),
        }
        Ok(())
    }
}

/// Writes header fields, but those that frame a message (its `Content-Length` and
/// `Transfer-Encoding` are the sender's to state).
fn encode_fields(fields: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in fields {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes a request head: its framing is the body's (`Content-Length` when its length is
/// known, else chunked), whatever framing fields the request came with.
fn encode_head(head: RequestHead<'_>, length: Option<u64>, chunked: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    encode_fields(head.headers, out);
    // An empty body is stated where the method usually has one, or the client stated it.
    let says_length = matches!(*head.method, Method::POST | Method::PUT | Method::PATCH)
        || head.headers.contains_key(header::CONTENT_LENGTH);
    match length {
        _ if chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Some(0) if !says_length => {}
        Some(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None => {}
    }
    out.extend_from_slice(b"\r\n");
}
