//! Rapid reset on h2: a client that opens streams and cancels them before they are answered
//! makes the proxy start work (a route, a server connection, a request sent) it never
//! finishes. hyper closes a connection whose client resets streams it has not yet taken up;
//! a stream reset just after it was taken up (its reset came in a later read, as happens
//! under load) escapes that count and is counted here instead, so the flood is stopped
//! whichever way its frames arrive. HAProxy counts such streams as "glitches" to the same
//! end.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Streams a client may cancel before their answers, beyond those it let be answered,
/// before its connection is closed. A browser cancels a few (a page left, a video sought);
/// a hundred more cancelled than answered is a flood.
pub const MAX_CANCELLED: u32 = 100;

/// One h2 connection's streams cancelled before their answers, less those answered (never
/// below zero), and whether that ever passed [`MAX_CANCELLED`].
pub struct Cancels {
    owed: AtomicU32,
    /// Past the limit, or the connection has ended: nothing counts any more.
    over: AtomicBool,
    /// Called once, when the count first passes the limit.
    on_over: Box<dyn Fn() + Send + Sync>,
}

impl Cancels {
    pub fn new(on_over: impl Fn() + Send + Sync + 'static) -> Arc<Cancels> {
        Arc::new(Cancels {
            owed: AtomicU32::new(0),
            over: AtomicBool::new(false),
            on_over: Box::new(on_over),
        })
    }

    /// Watches one stream: dropped before [`Stream::answered`], it counts as cancelled.
    pub fn stream(self: &Arc<Self>) -> Stream {
        Stream(Some(self.clone()))
    }

    /// A stream's answer, watched: dropped before it is ready, it counts as cancelled. The
    /// answer comes boxed, so that what the h2 server moves about stays two pointers wide.
    pub fn watch<F: Future + Unpin>(self: &Arc<Self>, answer: F) -> Watched<F> {
        Watched {
            answer,
            stream: Some(self.stream()),
        }
    }

    /// Whether the client has cancelled too many streams: its connection is to close.
    pub fn over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// The connection has ended: the streams it leaves unanswered are dropped for that, not
    /// cancelled by the client, and no longer count against it.
    pub fn ended(&self) {
        self.over.store(true, Ordering::Relaxed);
    }

    fn cancelled(&self) {
        let owed = self.owed.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if owed > MAX_CANCELLED && !self.over.swap(true, Ordering::Relaxed) {
            (self.on_over)();
        }
    }

    fn answered(&self) {
        let _ = self
            .owed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// One stream being served; see [`Cancels::stream`].
pub struct Stream(Option<Arc<Cancels>>);

impl Stream {
    /// The stream's answer is ready: it no longer counts as cancelled when dropped.
    pub fn answered(mut self) {
        if let Some(cancels) = self.0.take() {
            cancels.answered();
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(cancels) = self.0.take() {
            cancels.cancelled();
        }
    }
}

/// A stream's answer being made; see [`Cancels::watch`].
pub struct Watched<F> {
    answer: F,
    stream: Option<Stream>,
}

impl<F: Future + Unpin> Future for Watched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let ready = std::task::ready!(Pin::new(&mut self.answer).poll(cx));
        if let Some(stream) = self.stream.take() {
            stream.answered();
        }
        Poll::Ready(ready)
    }
}

/// An h2 connection's future that marks its [`Cancels`] ended as it is dropped, before the
/// streams it still holds are dropped with it: those a drain's cut leaves go for that, not
/// because the client cancelled them.
pub struct MarksEnd<C> {
    conn: C,
    cancels: Arc<Cancels>,
}

impl<C> MarksEnd<C> {
    pub fn new(conn: C, cancels: Arc<Cancels>) -> MarksEnd<C> {
        MarksEnd { conn, cancels }
    }
}

impl<C> Drop for MarksEnd<C> {
    // Runs before the fields are dropped.
    fn drop(&mut self) {
        self.cancels.ended();
    }
}

impl<C: Future + Unpin> Future for MarksEnd<C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        Pin::new(&mut self.conn).poll(cx)
    }
}

impl<C: super::drain::GracefulClose + Unpin> super::drain::GracefulClose for MarksEnd<C> {
    fn close_gracefully(mut self: Pin<&mut Self>) {
        Pin::new(&mut self.conn).close_gracefully();
    }
}

/// An h2 client's connection whose reads fail once its client has cancelled too many
/// streams ([`Cancels::over`]): the h2 server then ends the connection. The check is one
/// load per read, where a second future raced beside the connection would cost a lock on
/// every wake-up.
pub struct CutWhenOver<S> {
    inner: S,
    cancels: Arc<Cancels>,
}

impl<S> CutWhenOver<S> {
    pub fn new(inner: S, cancels: Arc<Cancels>) -> CutWhenOver<S> {
        CutWhenOver { inner, cancels }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CutWhenOver<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.cancels.over() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the client cancelled too many streams before their answers",
            )));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CutWhenOver<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counted() -> (Arc<Cancels>, Arc<AtomicUsize>) {
        let told = Arc::new(AtomicUsize::new(0));
        let t = told.clone();
        let cancels = Cancels::new(move || {
            t.fetch_add(1, Ordering::Relaxed);
        });
        (cancels, told)
    }

    #[test]
    fn a_connection_is_over_once_cancels_pass_the_limit_and_told_once() {
        let (cancels, told) = counted();
        for _ in 0..MAX_CANCELLED {
            drop(cancels.stream());
        }
        assert!(!cancels.over());
        drop(cancels.stream());
        assert!(cancels.over());
        drop(cancels.stream());
        assert_eq!(told.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn answered_streams_pay_back_cancels_but_never_build_credit() {
        let (cancels, _) = counted();
        // Answers first: no credit for cancels to come.
        for _ in 0..1000 {
            cancels.stream().answered();
        }
        for _ in 0..MAX_CANCELLED {
            drop(cancels.stream());
        }
        // Each answer pays back one cancel.
        for _ in 0..10 {
            cancels.stream().answered();
            drop(cancels.stream());
        }
        assert!(!cancels.over());
        drop(cancels.stream());
        assert!(cancels.over());
    }

    #[test]
    fn streams_left_when_the_connection_ends_are_not_a_flood() {
        let (cancels, told) = counted();
        drop(cancels.stream());
        cancels.ended();
        for _ in 0..MAX_CANCELLED {
            drop(cancels.stream());
        }
        assert_eq!(told.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn reads_fail_once_over_and_writes_go_on() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (cancels, _) = counted();
        let (near, mut far) = tokio::io::duplex(64);
        let mut cut = CutWhenOver::new(near, cancels.clone());
        far.write_all(b"ab").await.unwrap();
        let mut buf = [0u8; 2];
        cut.read_exact(&mut buf).await.unwrap();
        for _ in 0..=MAX_CANCELLED {
            drop(cancels.stream());
        }
        far.write_all(b"cd").await.unwrap();
        let err = cut.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        cut.write_all(b"ef").await.unwrap();
        far.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ef");
    }
}
