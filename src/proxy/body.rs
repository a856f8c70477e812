//! The bodies on their way through the proxy: the client's request body going upstream
//! (streamed, or held whole for a retry) and the server's response body going to the client,
//! each with what must happen at its end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::connections::{Connections, Inbound, Lease, UpstreamError};
use super::headers::strip_hop_by_hop;
use super::upstream::InFlight;

/// A client's request body: none, read from an HTTP/1.1 connection by the request's own task,
/// or an h2 stream's (hyper's).
pub enum ClientBody {
    Empty,
    /// Boxed: most requests have no body, and the request is moved several times.
    H1(Box<super::h1::server::RequestBody>),
    H2(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::H1(b) => Pin::new(&mut **b).poll_frame(cx).map_err(Into::into),
            ClientBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::H1(b) => b.is_end_stream(),
            ClientBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::H1(b) => b.size_hint(),
            ClientBody::H2(b) => b.size_hint(),
        }
    }
}

/// What the client receives.
pub enum ProxyBody {
    /// A server's body, counted in flight until it ends. Boxed: a response is moved several
    /// times on its way out, and a stored one (a few words) should not move room for this.
    Upstream(Box<Tracked>),
    /// A body of the proxy's own, held whole.
    Whole(Full<Bytes>),
    /// A stored response's body, from the cache.
    Stored(Full<Bytes>),
    /// The body another request is fetching for the same key, read as it arrives.
    Following(super::cache::Following),
}

impl ProxyBody {
    /// A body of these bytes.
    pub fn whole(bytes: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Whole(Full::new(bytes.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(&mut **b).poll_frame(cx).map_err(Into::into),
            ProxyBody::Whole(b) | ProxyBody::Stored(b) => {
                Pin::new(b).poll_frame(cx).map_err(|never| match never {})
            }
            ProxyBody::Following(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Whole(b) | ProxyBody::Stored(b) => b.is_end_stream(),
            ProxyBody::Following(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Whole(b) | ProxyBody::Stored(b) => b.size_hint(),
            ProxyBody::Following(b) => b.size_hint(),
        }
    }
}
/// What a server receives: the client's body streamed (which says when it has all gone), or
/// a body held whole (empty, or small enough to keep for another try).
pub type UpstreamBody = Either<Sent, Full<Bytes>>;

/// A request body on its way to a server: it notes when its last frame has gone, so the wait
/// for the response starts there (a slow upload is not a slow server).
/// It also ends with an error once it passes the route's size limit, or comes too slowly;
/// `cut` says which, or that the client's side of it failed.
pub struct Sent {
    pub(super) inner: ClientBody,
    pub(super) done: Option<tokio::sync::oneshot::Sender<()>>,
    /// Bytes still allowed.
    pub(super) allowed: Option<u64>,
    pub(super) pace: Pace,
    pub(super) cut: Arc<Cut>,
}

/// Why a request body was cut off, if it was: what the client is answered.
#[derive(Debug, Default)]
pub struct Cut(std::sync::atomic::AtomicU8);

/// The reasons a [`Cut`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CutReason {
    #[error("the request body is larger than the route allows")]
    TooLarge = 1,
    #[error("the request body came too slowly")]
    TooSlow = 2,
    /// The client's side failed: a malformed chunk, or the connection or stream ended
    /// inside the body. The client's doing, so it is not held against the server.
    #[error("the request body was malformed or cut short")]
    Broken = 3,
}

impl Cut {
    fn set(&self, why: CutReason) {
        self.0
            .store(why as u8, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn reason(&self) -> Option<CutReason> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            1 => Some(CutReason::TooLarge),
            2 => Some(CutReason::TooSlow),
            3 => Some(CutReason::Broken),
            _ => None,
        }
    }
}

/// How fast a request body must come: no wait for its next bytes longer than `timeout`, and
/// with a minimum rate, no more waiting in all than `timeout` plus what the bytes so far
/// would take at that rate. Only the time spent waiting on the client counts (not the time
/// the server took to read).
pub struct Pace {
    timeout: Duration,
    /// Bytes per second.
    min_rate: Option<u64>,
    received: u64,
    /// Waiting on the client in all, before the current wait.
    waited: Duration,
    /// The current wait's start, and its timer.
    waiting: Option<(Instant, Pin<Box<tokio::time::Sleep>>)>,
}

impl Pace {
    pub fn new(timeout: Duration, min_rate: Option<u64>) -> Pace {
        Pace {
            timeout,
            min_rate,
            received: 0,
            waited: Duration::ZERO,
            waiting: None,
        }
    }

    /// How long the current wait may last.
    fn allowance(&self) -> Duration {
        match self.min_rate {
            None => self.timeout,
            Some(rate) => {
                let earned = Duration::from_secs_f64(self.received as f64 / rate as f64);
                (self.timeout + earned)
                    .saturating_sub(self.waited)
                    .min(self.timeout)
            }
        }
    }

    /// Bytes came: the wait (if any) is over.
    fn arrived(&mut self, bytes: usize) {
        self.received += bytes as u64;
        if let Some((since, _)) = self.waiting.take() {
            self.waited += since.elapsed();
        }
    }

    /// Nothing came: whether the client has now waited too long.
    fn too_slow(&mut self, cx: &mut Context<'_>) -> bool {
        use std::future::Future;
        if self.waiting.is_none() {
            let allowance = self.allowance();
            self.waiting = Some((Instant::now(), Box::pin(tokio::time::sleep(allowance))));
        }
        let (_, timer) = self.waiting.as_mut().expect("armed above");
        timer.as_mut().poll(cx).is_ready()
    }
}

impl Body for Sent {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(done) = this.done.take() {
                    let _ = done.send(());
                }
            }
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len());
                this.pace.arrived(len);
                if let Some(left) = &mut this.allowed {
                    match left.checked_sub(len as u64) {
                        Some(rest) => *left = rest,
                        None => {
                            this.cut.set(CutReason::TooLarge);
                            return Poll::Ready(Some(Err(Box::new(CutReason::TooLarge))));
                        }
                    }
                }
            }
            Poll::Pending => {
                if this.pace.too_slow(cx) {
                    this.cut.set(CutReason::TooSlow);
                    return Poll::Ready(Some(Err(Box::new(CutReason::TooSlow))));
                }
            }
            Poll::Ready(Some(Err(_))) => this.cut.set(CutReason::Broken),
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An upstream response body that keeps its server's in-flight count until it ends, and
/// gives its connection back for the next request once it has been read to its end.
pub struct Tracked {
    /// The server's body (`None` once it has been handed to a task reading it for the
    /// requests that follow it).
    pub(super) inner: Option<Inbound>,
    pub(super) _in_flight: Option<InFlight>,
    pub(super) lease: Option<(Lease, Arc<Connections>)>,
    /// The cache's copy of the body, when the response is being stored.
    pub(super) tee: Option<super::cache::Tee>,
    /// The body's compression, when the route compresses it (applied before the cache's
    /// copy is taken, so the cache stores what the client gets).
    pub(super) encoder: Option<super::compress::Encoder>,
}

impl Tracked {
    fn give_back(&mut self) {
        let Some((mut lease, conns)) = self.lease.take() else {
            return;
        };
        // An HTTP/1.1 body holds its connection while it is read; it goes back only if it
        // can carry another request (else it closes here).
        if let Some(Inbound::H1(body)) = self.inner.as_mut() {
            match body.take_reusable() {
                Some(conn) => lease.restore(conn),
                None => return,
            }
        }
        conns.give_back(lease);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let Some(inner) = &self.inner else {
            return;
        };
        if inner.is_end_stream() {
            self.give_back();
            // The cache keeps only a body that reached the client whole.
            if self.encoder.as_ref().is_none_or(|e| e.finished()) {
                if let Some(tee) = self.tee.as_mut() {
                    tee.end();
                }
            }
            return;
        }
        // Its client has gone before the end. Requests following the body read on: the rest
        // is fetched for them (and stored) by a task of its own. Otherwise the connection,
        // left mid-response, closes.
        if !self
            .tee
            .as_ref()
            .is_some_and(|t| t.followed() && t.storing())
        {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let rest = Tracked {
                inner: self.inner.take(),
                _in_flight: self._in_flight.take(),
                lease: self.lease.take(),
                tee: self.tee.take(),
                encoder: self.encoder.take(),
            };
            rt.spawn(read_for_followers(rest));
        }
    }
}

/// How long a body read for its followers may go without a chunk.
const FOLLOWED_IDLE: Duration = Duration::from_secs(60);

/// Reads a body whose client has gone to its end for the requests following it, while it is
/// still being stored (past the route's entry limit its readers' pace would not bound what
/// is kept for them).
async fn read_for_followers(mut rest: Tracked) {
    use http_body_util::BodyExt;
    while let Ok(Some(Ok(_))) = tokio::time::timeout(FOLLOWED_IDLE, rest.frame()).await {
        if !rest.tee.as_ref().is_some_and(|t| t.storing()) {
            break;
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.give_back();
                // The server's body ended: the encoder's end goes out as the last chunk.
                match this.encoder.as_mut().filter(|e| !e.finished()) {
                    Some(encoder) => Poll::Ready(Some(Ok(Frame::data(encoder.finish())))),
                    None => Poll::Ready(None),
                }
            }
            Poll::Ready(Some(Ok(frame))) => match (this.encoder.as_mut(), frame.data_ref()) {
                (Some(encoder), Some(data)) => {
                    let mut out = encoder.chunk(data).to_vec();
                    if inner.is_end_stream() {
                        out.extend_from_slice(&encoder.finish());
                    }
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
                }
                // Trailers (never announced, or the body would not be compressed) after a
                // body this proxy compresses: they may speak of bytes the client does not
                // get, and are left out. The encoding's end goes in their place.
                (Some(encoder), None) => Poll::Ready(Some(Ok(Frame::data(encoder.finish())))),
                _ => Poll::Ready(Some(Ok(match frame.into_trailers() {
                    Ok(mut fields) => {
                        strip_hop_by_hop(&mut fields);
                        Frame::trailers(fields)
                    }
                    Err(frame) => frame,
                }))),
            },
            other => other,
        };
        // The cache's copy: what the client gets, kept whole once the body has ended.
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(tee), Some(data)) = (this.tee.as_mut(), frame.data_ref()) {
                    tee.data(data);
                }
                if this.is_end_stream() {
                    if let Some(tee) = this.tee.as_mut() {
                        tee.end();
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(tee) = this.tee.as_mut() {
                    tee.end();
                }
            }
            Poll::Ready(Some(Err(_))) => this.tee = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
            && self.encoder.as_ref().is_none_or(|e| e.finished())
    }

    fn size_hint(&self) -> SizeHint {
        match self.encoder {
            Some(_) => SizeHint::default(),
            None => self
                .inner
                .as_ref()
                .map(|b| b.size_hint())
                .unwrap_or_default(),
        }
    }
}
