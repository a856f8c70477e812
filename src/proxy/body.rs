//! The bodies on their way through the proxy: the client's request body going upstream
//! (streamed, or held whole for a retry) and the server's response body going to the client,
//! each with what must happen at its end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::connections::{Connections, Lease};
use super::upstream::InFlight;

/// What the client receives: an upstream body (counted in flight until it ends) or a short
/// body of the proxy's own.
pub type ProxyBody = Either<Tracked, Full<Bytes>>;
/// What a server receives: the client's body streamed (which says when it has all gone), or
/// a body held whole (empty, or small enough to keep for another try).
pub type UpstreamBody = Either<Sent, Full<Bytes>>;

/// A request body on its way to a server: it notes when its last frame has gone, so the wait
/// for the response starts there (a slow upload is not a slow server).
/// It also ends with an error once it passes the route's size limit, and says so.
pub struct Sent {
    pub(super) inner: Incoming,
    pub(super) done: Option<tokio::sync::oneshot::Sender<()>>,
    /// Bytes still allowed, and the flag raised when more came.
    pub(super) allowed: Option<u64>,
    pub(super) too_large: Arc<std::sync::atomic::AtomicBool>,
}

/// The error a body over its size limit ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the route allows")]
struct TooLarge;

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
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if let Some(left) = &mut this.allowed {
                    match left.checked_sub(len) {
                        Some(rest) => *left = rest,
                        None => {
                            this.too_large
                                .store(true, std::sync::atomic::Ordering::Relaxed);
                            return Poll::Ready(Some(Err(Box::new(TooLarge))));
                        }
                    }
                }
            }
            _ => {}
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
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
    pub(super) inner: Incoming,
    pub(super) _in_flight: InFlight,
    pub(super) lease: Option<(Lease, Arc<Connections>)>,
}

impl Tracked {
    fn give_back(&mut self) {
        if let Some((lease, conns)) = self.lease.take() {
            conns.give_back(lease);
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // A body that did not reach its end leaves its connection mid-response: it closes.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.give_back();
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
