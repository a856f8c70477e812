//! HTTP/1.1 from clients, served by the connection's own task.
//!
//! One loop per connection reads a request head, hands the request to the request path
//! ([`forward::handle`]) and writes its response, then reads the next head. The request body,
//! when there is one, is read by whoever sends it on: it takes the reading side of the
//! connection ([`Conn`], the same reader that reads server responses) and gives it back at its
//! end, so that bytes go from the client's socket to the server's without a channel between
//! tasks. A response's head and the first pieces of its body leave in one write.
//!
//! What the loop sees that a generic server would hide: a request's framing exactly as sent,
//! so the forms two parsers could read two ways ([`framing`]) are refused from the head itself.
//! It also times the wait for each head (`header_timeout`, from the end of the last response,
//! or the connection's start, until the head is whole: a slow answer or a long body is never
//! cut by it), answers `Expect: 100-continue` when the body is first read, and hands the
//! connection over on `101 Switching Protocols`.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, Notify};

use super::{Body, Conn, Interim, Sending, READ_MIN, ROOM_MIN, WRITE_SLICES};
use crate::clock;
use crate::proxy::body::{ClientBody, ProxyBody};
use crate::proxy::framing::{self, RequestFraming};
use crate::proxy::guard::SendTimeout;
use crate::proxy::tcp::Tcp;
use crate::proxy::{forward, Shared};

/// A client's connection: in the clear, or TLS (boxed: its state is large, and a connection's
/// task is copied when it is spawned).
pub type ClientIo = tokio_util::either::Either<
    SendTimeout<Tcp>,
    Box<tokio_rustls::server::TlsStream<SendTimeout<Tcp>>>,
>;

/// The reading side of a client's connection.
type Reader = Conn<ReadHalf<ClientIo>>;

/// The h2 connection preface: a client speaking h2 in the clear by prior knowledge starts so.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Header fields parsed into room on the stack; a listener allowing more parses into the heap.
const STACK_FIELDS: usize = 128;

/// How long, and for how many bytes, the rest of an unread request body is read and dropped
/// after its response, before the connection closes (closing with unread bytes would reset
/// the connection, and the client could lose the response).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// What a listener allows a request head.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Header fields.
    pub max_headers: usize,
    /// Bytes, request line included.
    pub max_head: usize,
    /// The longest wait for a head.
    pub head_timeout: Duration,
}

/// A connection whose first bytes, already read, are read again: h2 in the clear, told by its
/// preface where a request head was awaited.
pub struct Rewind {
    read: Bytes,
    io: ClientIo,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.read.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A connection taken over by an upgrade: its bytes, and what the client sent past its
/// request head.
pub struct Upgraded {
    pub io: ClientIo,
    pub read: BytesMut,
}

/// Given in an upgrade request's extensions: the client's connection, once the `101` has
/// gone to it. (Extensions are cloned with their request: a clone shares the one connection.)
#[derive(Clone)]
pub struct OnUpgrade(Arc<std::sync::Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    /// The connection, once the `101` has gone (`None`: it never will).
    pub async fn connection(self) -> Option<Upgraded> {
        let rx = self.0.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        rx.await.ok()
    }
}

/// A request body read from the client's connection, which goes back to its server loop
/// when the body is dropped (read to its end or not).
pub struct RequestBody {
    body: Body<ReadHalf<ClientIo>>,
    home: Option<oneshot::Sender<(Reader, bool)>>,
    /// Told when the body is first read, if the client waits for `100 Continue`.
    wants_continue: Option<Arc<Notify>>,
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = super::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, super::Error>>> {
        let this = self.get_mut();
        if let Some(told) = this.wants_continue.take() {
            told.notify_one();
        }
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let (Some(home), Some(back)) = (self.home.take(), self.body.take_conn()) {
            let _ = home.send(back);
        }
    }
}

/// One client connection served: a future that ends with the connection, and can be asked
/// to close once the request in hand has been answered.
pub struct Connection {
    served: Pin<Box<dyn Future<Output = Result<Option<Rewind>, BoxError>> + Send>>,
    closing: Arc<AtomicBool>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Connection {
    /// Serves `io` until it closes; it ends with the connection back when the client turns
    /// out to speak h2 by prior knowledge.
    pub fn new(
        io: ClientIo,
        limits: Limits,
        shared: Arc<Shared>,
        (conn, interim): (Arc<forward::Conn>, mpsc::Receiver<Interim>),
    ) -> Connection {
        let closing = Arc::new(AtomicBool::new(false));
        let (reader, writer) = tokio::io::split(io);
        let server = Server {
            reader: Some(Conn::new(reader)),
            writer,
            limits,
            shared,
            conn,
            interim,
            closing: closing.clone(),
            awaited_since: None,
            timer: None,
            first: true,
        };
        Connection {
            served: Box::pin(server.run()),
            closing,
        }
    }
}

impl Future for Connection {
    type Output = Result<Option<Rewind>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().served.as_mut().poll(cx)
    }
}

impl crate::proxy::drain::GracefulClose for Connection {
    fn close_gracefully(self: Pin<&mut Self>) {
        // Seen by the loop when it is next polled (which the drain does at once): an idle
        // connection closes then, a busy one after its response.
        self.closing.store(true, Ordering::Relaxed);
    }
}

/// Why a request head is refused before it reaches the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Malformed,
    TooLarge,
    /// Over the limit within the request line: the target is what is too long (414, as
    /// RFC 9112 section 3 asks, and as nginx and HAProxy answer).
    TargetTooLong,
}

impl Refusal {
    /// The refusal of a head of `buf` found over `max_head` bytes.
    fn over(buf: &[u8], max_head: usize) -> Refusal {
        match buf[..max_head.min(buf.len())].contains(&b'\n') {
            true => Refusal::TooLarge,
            false => Refusal::TargetTooLong,
        }
    }
}

/// What a wait for a request head found. (Its size is the request's: returned once per
/// request and never stored, it is not boxed, which would cost an allocation each time.)
#[allow(clippy::large_enum_variant)]
enum Arrived {
    Request(Request<()>),
    /// h2's connection preface, where the first head was awaited.
    H2c,
    /// The connection is to close: the client closed it, its head came too slowly, or the
    /// connection is closing and idle.
    Nothing,
}

/// What the loop does after an exchange.
enum Next {
    Serve,
    /// Shut, after reading what the client still sends for a while when it may (see
    /// [`Server::close`]).
    Close {
        lingering: bool,
    },
    /// The connection goes to an upgrade, once the loop lets go of it.
    Upgrade(oneshot::Sender<Upgraded>, Reader),
}

struct Server {
    /// `None` while a request body has it.
    reader: Option<Reader>,
    writer: WriteHalf<ClientIo>,
    limits: Limits,
    shared: Arc<Shared>,
    conn: Arc<forward::Conn>,
    /// The servers' interim responses to the request in hand (`conn.interim` sends them).
    interim: mpsc::Receiver<Interim>,
    closing: Arc<AtomicBool>,
    /// Since when the current head has been awaited (set when a read first finds nothing;
    /// coarse clock), and the connection's one timer for it.
    awaited_since: Option<u64>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// No request has come yet: h2's preface may.
    first: bool,
}

impl Server {
    async fn run(mut self) -> Result<Option<Rewind>, BoxError> {
        loop {
            let req = match poll_fn(|cx| self.poll_head(cx)).await {
                Ok(Arrived::Request(req)) => req,
                Ok(Arrived::Nothing) => break,
                Ok(Arrived::H2c) => {
                    let Some(reader) = self.reader.take() else {
                        break;
                    };
                    let (reader, read) = reader.into_parts();
                    return Ok(Some(Rewind {
                        read: read.freeze(),
                        io: reader.unsplit(self.writer),
                    }));
                }
                Err(refusal) => {
                    self.refuse(refusal).await;
                    self.close(true).await;
                    return Ok(None);
                }
            };
            match self.exchange(req).await? {
                Next::Serve => {}
                Next::Close { lingering } => {
                    self.close(lingering).await;
                    return Ok(None);
                }
                Next::Upgrade(give, reader) => {
                    let (reader, read) = reader.into_parts();
                    let io = reader.unsplit(self.writer);
                    let _ = give.send(Upgraded { io, read });
                    return Ok(None);
                }
            }
        }
        self.close(false).await;
        Ok(None)
    }

    /// Shuts the sending side. When the client may still be sending (`lingering`: the rest
    /// of a body, or requests after one refused), what it sends is read and dropped for a
    /// while first, so that the close does not reset the connection under the answer.
    async fn close(&mut self, lingering: bool) {
        let _ = self.writer.shutdown().await;
        if let Some(reader) = self.reader.take().filter(|_| lingering) {
            linger(reader).await;
        }
    }

    /// Reads until a request head is whole.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Arrived, Refusal>> {
        let Some(reader) = self.reader.as_mut() else {
            return Poll::Ready(Ok(Arrived::Nothing));
        };
        loop {
            if let Some(arrived) = next_head(&mut reader.buf, &self.limits, self.first)? {
                self.awaited_since = None;
                self.first = false;
                return Poll::Ready(Ok(arrived));
            }
            if reader.buf.is_empty() && self.closing.load(Ordering::Relaxed) {
                return Poll::Ready(Ok(Arrived::Nothing));
            }
            match reader.poll_fill(cx, ROOM_MIN) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Ok(Arrived::Nothing)),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => {
                    return match head_overdue(
                        &mut self.awaited_since,
                        &mut self.timer,
                        self.limits.head_timeout,
                        cx,
                    ) {
                        true => Poll::Ready(Ok(Arrived::Nothing)),
                        false => Poll::Pending,
                    };
                }
            }
        }
    }

    /// Answers a head refused before it could be read (the connection closes after).
    async fn refuse(&mut self, refusal: Refusal) {
        let status = match refusal {
            Refusal::Malformed => StatusCode::BAD_REQUEST,
            Refusal::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::TargetTooLong => StatusCode::URI_TOO_LONG,
        };
        let _ = self
            .writer
            .write_all(&closing_answer(Version::HTTP_11, status))
            .await;
    }

    /// One request and its response.
    async fn exchange(&mut self, req: Request<()>) -> Result<Next, BoxError> {
        let version = req.version();
        let head_only = req.method() == Method::HEAD;
        let mut keep_alive = super::keeps_alive(version, req.headers());
        let upgrade = version == Version::HTTP_11 && req.headers().contains_key(header::UPGRADE);
        let expects = version == Version::HTTP_11
            && req
                .headers()
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        // A request the request path refuses for its framing: its body, if any, is never
        // read, and the connection closes after the answer.
        let framing = framing::request_framing(version, req.headers());
        let refused = framing.is_err();
        let length = match framing {
            Ok(RequestFraming::Empty) => None,
            Ok(RequestFraming::Length(n)) => Some(Some(n)),
            Ok(RequestFraming::Chunked) => Some(None),
            Err(_) => {
                keep_alive = false;
                None
            }
        };
        let mut returned = None;
        let mut told_continue = None;
        let mut req = match (length, self.reader.take()) {
            (Some(length), Some(reader)) => {
                let (home, back) = oneshot::channel();
                returned = Some(back);
                let wants_continue = expects.then(|| Arc::new(Notify::new()));
                told_continue.clone_from(&wants_continue);
                let body = RequestBody {
                    body: Body::of_request(reader, length),
                    home: Some(home),
                    wants_continue,
                };
                req.map(|()| ClientBody::H1(Box::new(body)))
            }
            (_, reader) => {
                self.reader = reader;
                req.map(|()| ClientBody::Empty)
            }
        };
        let upgraded = upgrade.then(|| {
            let (give, on) = oneshot::channel();
            let on = OnUpgrade(Arc::new(std::sync::Mutex::new(Some(on))));
            req.extensions_mut().insert(on);
            give
        });
        // Pinned where it is made: the request's future is large, and moving it is a copy.
        // (One future for both arms: made in each, it took two slots side by side in this
        // one's state.)
        let (shared, conn) = (self.shared.clone(), self.conn.clone());
        let mut handling = std::pin::pin!(forward::handle(shared, req, conn));
        let mut continue_wanted = told_continue.is_some();
        let told = async move {
            match told_continue {
                Some(told) => told.notified().await,
                None => std::future::pending().await,
            }
        };
        let mut told = std::pin::pin!(told);
        let resp = loop {
            tokio::select! {
                biased;
                resp = &mut handling => break resp,
                Some(interim) = self.interim.recv() => self.write_interim(interim).await?,
                () = &mut told, if continue_wanted => {
                    continue_wanted = false;
                    self.writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                }
            }
        };
        // Interim responses that came just before the final one go ahead of it.
        while let Ok(interim) = self.interim.try_recv() {
            self.write_interim(interim).await?;
        }
        let Ok(resp) = resp;
        // A body dropped before its end by now: the client hears the connection closes.
        let mut back = None;
        if let Some(rx) = returned.as_mut() {
            match rx.try_recv() {
                Ok((reader, ended)) => {
                    keep_alive &= ended;
                    back = Some((reader, ended));
                    returned = None;
                }
                Err(oneshot::error::TryRecvError::Closed) => keep_alive = false,
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
        let status = resp.status();
        self.respond(resp, (version, head_only), &mut keep_alive)
            .await?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            if let (Some(give), Some(reader)) = (upgraded, self.reader.take()) {
                return Ok(Next::Upgrade(give, reader));
            }
            return Ok(Next::Close { lingering: true });
        }
        // The reading side back from the body, once it has let go of it.
        if let Some(rx) = returned {
            back = rx.await.ok();
        }
        if let Some((reader, ended)) = back {
            self.reader = Some(reader);
            if !ended {
                return Ok(Next::Close { lingering: true });
            }
        }
        // A client that asked for the close and sent nothing after its request is not
        // waited on.
        let unread = refused || self.reader.as_ref().is_some_and(|r| !r.buf.is_empty());
        Ok(match keep_alive && self.reader.is_some() {
            true => Next::Serve,
            false => Next::Close { lingering: unread },
        })
    }

    /// Writes a server's interim response (`103 Early Hints`, say) as it came.
    async fn write_interim(&mut self, interim: Interim) -> Result<(), BoxError> {
        let mut out = Vec::with_capacity(128);
        status_line(Version::HTTP_11, interim.status, &mut out);
        super::encode_fields(&interim.headers, &mut out);
        out.extend_from_slice(b"\r\n");
        self.writer.write_all(&out).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Writes a response: its head, then its body framed as the client can read it (by
    /// length, chunked with any trailers, or to the connection's close for HTTP/1.0), the
    /// head and what the body has at hand in one write.
    async fn respond(
        &mut self,
        resp: Response<ProxyBody>,
        (version, head_only): (Version, bool),
        keep_alive: &mut bool,
    ) -> Result<(), BoxError> {
        let (parts, mut body) = resp.into_parts();
        let status = parts.status;
        let fields: usize = parts
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        // Room for the fields, and the status line and the few written here.
        let mut out = Vec::with_capacity(fields + 160);
        status_line(version, status, &mut out);
        super::encode_fields(&parts.headers, &mut out);
        if !parts.headers.contains_key(header::DATE) {
            date(&mut out);
        }
        let close_said = super::says_close(&parts.headers);
        *keep_alive &= !close_said;
        let bodiless = head_only
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let stated = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut length = None;
        let mut chunked = false;
        if status.is_informational() || status == StatusCode::NO_CONTENT {
        } else if bodiless {
            // A HEAD's or 304's length is the one the full response would have.
            if let Some(v) = parts.headers.get(header::CONTENT_LENGTH) {
                field(&mut out, b"content-length", v.as_bytes());
            }
        } else if let Some(n) = body.size_hint().exact().or(stated) {
            length = Some(n);
            field(&mut out, b"content-length", n.to_string().as_bytes());
        } else if version == Version::HTTP_11 {
            chunked = true;
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        } else {
            // Delimited by the connection's close.
            *keep_alive = false;
        }
        if !*keep_alive && version == Version::HTTP_11 && !close_said {
            out.extend_from_slice(b"connection: close\r\n");
        } else if *keep_alive && version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let mut sending = Sending {
            queue: std::collections::VecDeque::from([Bytes::from(out)]),
            chunked,
            ended: bodiless || body.is_end_stream(),
            trailers: None,
        };
        let mut left = length;
        let mut unsent = true;
        crate::proxy::tcp::write_in_turn(
            self.shared.drain.live(),
            length.or(bodiless.then_some(0)),
        )
        .await;
        let streamed = poll_fn(|cx| {
            let at = (&mut left, &mut unsent);
            poll_stream(&mut self.writer, &mut body, &mut sending, at, cx)
        })
        .await;
        if let (Err(broke), true) = (&streamed, unsent) {
            // Nothing of the response went out: the client can still be told it failed.
            tracing::debug!(peer = %self.conn.peer, error = %broke, "response broke off unsent");
            *keep_alive = false;
            let answer = closing_answer(version, StatusCode::BAD_GATEWAY);
            self.writer.write_all(&answer).await?;
            return Ok(());
        }
        if streamed.is_err() || left.is_some_and(|n| n > 0) {
            // A body cut short, or longer than stated: the client cannot tell where the next
            // response would start.
            *keep_alive = false;
        }
        streamed
    }
}

/// Writes what is queued and the body's frames as they come, until its end; `left` counts
/// down a stated length (a body longer than it is an error), and `unsent` stays true until
/// the first write is tried (a body that fails before it leaves the response unsent).
fn poll_stream(
    writer: &mut WriteHalf<ClientIo>,
    body: &mut ProxyBody,
    sending: &mut Sending,
    (left, unsent): (&mut Option<u64>, &mut bool),
    cx: &mut Context<'_>,
) -> Poll<Result<(), BoxError>> {
    let mut take = |sending: &mut Sending, frame: Option<Result<Frame<Bytes>, BoxError>>| {
        if let (Some(left), Some(Ok(frame))) = (left.as_mut(), &frame) {
            let len = frame.data_ref().map_or(0, |d| d.len() as u64);
            *left = left
                .checked_sub(len)
                .ok_or("a response body longer than its stated length")?;
        }
        sending.take(frame).map_err(BoxError::from)
    };
    loop {
        // What the body has at hand goes in the same write.
        while !sending.ended && sending.queue.len() < WRITE_SLICES {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(frame) => take(sending, frame)?,
                Poll::Pending => break,
            }
        }
        if !sending.queue.is_empty() {
            *unsent = false;
            ready!(sending.poll_write(writer, cx))?;
            continue;
        }
        if sending.ended {
            return Pin::new(writer).poll_flush(cx).map_err(Into::into);
        }
        ready!(Pin::new(&mut *writer).poll_flush(cx))?;
        let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
        take(sending, frame)?;
    }
}

/// What the front of `buf` holds: a whole request head, or h2's preface where the
/// connection's `first` head is awaited; `None` while neither is whole. A head is refused
/// past the limits, however its bytes arrived.
fn next_head(buf: &mut BytesMut, limits: &Limits, first: bool) -> Result<Option<Arrived>, Refusal> {
    let seen = buf.len().min(H2_PREFACE.len());
    if first && buf[..seen] == H2_PREFACE[..seen] {
        return Ok((seen == H2_PREFACE.len()).then_some(Arrived::H2c));
    }
    if buf.is_empty() {
        return Ok(None);
    }
    if let Some(req) = parse_request(buf, limits)? {
        return Ok(Some(Arrived::Request(req)));
    }
    match buf.len() > limits.max_head {
        true => Err(Refusal::over(buf, limits.max_head)),
        false => Ok(None),
    }
}

/// A request head taken from the front of `buf`, once whole.
fn parse_request(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Request<()>>, Refusal> {
    let max_headers = limits.max_headers;
    let mut on_stack = [const { std::mem::MaybeUninit::uninit() }; STACK_FIELDS];
    let mut on_heap = Vec::new();
    let fields = match max_headers <= STACK_FIELDS {
        true => &mut on_stack[..max_headers],
        false => {
            on_heap.resize_with(max_headers, std::mem::MaybeUninit::uninit);
            &mut on_heap[..]
        }
    };
    let mut parsed = httparse::Request::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_request_with_uninit_headers(&mut parsed, buf, fields) {
        Ok(httparse::Status::Complete(len)) if len > limits.max_head => {
            return Err(Refusal::over(buf, limits.max_head))
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::Malformed),
    };
    let method = parsed
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(Refusal::Malformed)?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let target = parsed.path.ok_or(Refusal::Malformed)?;
    let at = target.as_ptr() as usize - buf.as_ptr() as usize;
    let target = at..at + target.len();
    let located = super::locate(buf.as_ptr(), parsed.headers).map_err(|_| Refusal::Malformed)?;
    let head = buf.split_to(len).freeze();
    let headers = super::cut(&head, located).map_err(|_| Refusal::Malformed)?;
    let uri = Uri::from_maybe_shared(head.slice(target)).map_err(|_| Refusal::Malformed)?;
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Ok(Some(req))
}

/// How reading a client's stream of requests ended, in [`read_requests`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// At the end of the stream, between requests.
    Between,
    /// At h2's connection preface, where the first head was awaited.
    H2c,
    /// Within a head, at the stream's end.
    InHead,
    /// A head refused before the request path saw it: 400 (`false`), or 431 or 414 (`true`).
    Refused { too_large: bool },
    /// A head whose framing the request path refuses (400, or 501 for a transfer coding it
    /// does not implement): nothing after it is read.
    BadFraming(&'static str),
    /// A body that broke off or was malformed.
    BadBody,
}

/// A request as [`read_requests`] read it, with its body's bytes.
pub type ReadRequest = (Request<()>, Vec<u8>);

/// Reads `io` as a client's stream of requests, the way a connection's loop does (heads
/// parsed and refused alike by the same code, each body read as its framing says, the next head after it),
/// without the request path: each request with its body's bytes, and how reading ended.
/// `io` must never be pending (an in-memory stream); for tests and fuzzing.
pub fn read_requests<I: AsyncRead + Unpin>(io: I, limits: Limits) -> (Vec<ReadRequest>, Ended) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut reader = Conn::new(io);
    let mut read = Vec::new();
    loop {
        let req = loop {
            match next_head(&mut reader.buf, &limits, read.is_empty()) {
                Ok(Some(Arrived::Request(req))) => break req,
                Ok(Some(_)) => return (read, Ended::H2c),
                Ok(None) => {}
                Err(r) => {
                    let too_large = r != Refusal::Malformed;
                    return (read, Ended::Refused { too_large });
                }
            }
            match reader.poll_fill(&mut cx, ROOM_MIN) {
                Poll::Ready(Ok(n)) if n > 0 => {}
                _ if reader.buf.is_empty() => return (read, Ended::Between),
                _ => return (read, Ended::InHead),
            }
        };
        let length = match framing::request_framing(req.version(), req.headers()) {
            Err(refused) => return (read, Ended::BadFraming(refused.why)),
            Ok(RequestFraming::Empty) => {
                read.push((req, Vec::new()));
                continue;
            }
            Ok(RequestFraming::Length(n)) => Some(n),
            Ok(RequestFraming::Chunked) => None,
        };
        let mut body = Body::of_request(reader, length);
        let mut bytes = Vec::new();
        loop {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        bytes.extend_from_slice(data);
                    }
                }
                Poll::Ready(None) => break,
                _ => return (read, Ended::BadBody),
            }
        }
        read.push((req, bytes));
        match body.take_conn() {
            Some((conn, true)) => reader = conn,
            _ => return (read, Ended::BadBody),
        }
    }
}

/// A bodiless answer of the proxy's own, after which the connection closes.
fn closing_answer(version: Version, status: StatusCode) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    status_line(version, status, &mut out);
    out.extend_from_slice(b"content-length: 0\r\nconnection: close\r\n");
    date(&mut out);
    out.extend_from_slice(b"\r\n");
    out
}

fn status_line(version: Version, status: StatusCode, out: &mut Vec<u8>) {
    out.extend_from_slice(match version {
        Version::HTTP_10 => b"HTTP/1.0 ",
        _ => b"HTTP/1.1 ",
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes a `Date` field: the current second's, formatted once per second per thread.
fn date(out: &mut Vec<u8>) {
    thread_local! {
        static NOW: std::cell::Cell<(u64, [u8; 29])> = const { std::cell::Cell::new((0, [0; 29])) };
    }
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let text = NOW.with(|cached| {
        let (at, mut text) = cached.get();
        if at != second {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
                cached.set((second, text));
            }
        }
        text
    });
    field(out, b"date", &text);
}

/// While a head is awaited: its wait is timed (from now, unless it already is), the task to be
/// woken at its deadline; whether the deadline has passed. A timer left from an earlier wait
/// fires early, and is moved to this one's deadline then: a request costs a read of the coarse
/// clock ([`clock::coarse_ms`]; the timeout is seconds long), not a timer of its own.
fn head_overdue(
    since: &mut Option<u64>,
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
) -> bool {
    let due = *since.get_or_insert_with(clock::coarse_ms) + limit.as_millis() as u64;
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    while timer.as_mut().poll(cx).is_ready() {
        let now = clock::coarse_ms();
        if now >= due {
            return true;
        }
        let left = Duration::from_millis(due - now);
        timer.as_mut().reset(tokio::time::Instant::now() + left);
    }
    false
}

/// Reads and drops what the client still sends (the rest of a body no one read), for a
/// bounded time and amount, after the response has gone and the sending side is shut: then
/// the connection closes without a reset that could cost the client its response.
async fn linger(mut reader: Reader) {
    let drain = async {
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            reader.buf.clear();
            match poll_fn(|cx| reader.poll_fill(cx, READ_MIN)).await {
                Ok(0) | Err(_) => return,
                Ok(n) => dropped += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
