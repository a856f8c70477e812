//! Retiring client connections: the count of those open, and a generation that closes every
//! connection opened before it changes (reload and shutdown), each within the drain timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// How long a retired connection may still take requests (each answered with `Connection:
/// close`) before it is closed when idle: closing an idle kept-alive connection at once races
/// with a request the client is sending on it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The open client connections: how many, and a generation that closes every connection
/// opened before it changes (reload and shutdown). A closing connection finishes the request
/// in hand: HTTP/1.1 answers it with `Connection: close`, h2 sends GOAWAY, an idle one closes
/// at once.
#[derive(Default)]
pub(crate) struct Drain {
    generation: tokio::sync::watch::Sender<u64>,
    /// The generation again, read without the watch's lock: each request and each wake-up
    /// of a connection looks at it.
    current: std::sync::atomic::AtomicU64,
    /// Open connections. A plain counter: a watch channel here would take its lock and
    /// notify on every connection's open and close; the waiter is told only at zero.
    live: std::sync::atomic::AtomicUsize,
    /// Told when `live` drops to zero.
    none_live: tokio::sync::Notify,
    /// How long a retired connection may take to finish, in milliseconds (`drain_timeout`);
    /// then it is cut.
    timeout_ms: std::sync::atomic::AtomicU64,
}

impl Drain {
    pub(crate) fn set_timeout(&self, limit: Duration) {
        self.timeout_ms
            .store(limit.as_millis() as u64, Ordering::Relaxed);
    }

    pub(crate) fn close_open_connections(&self) {
        // Stored before the watch tells its receivers, so a woken connection sees it.
        self.generation.send_modify(|g| {
            *g += 1;
            self.current.store(*g, Ordering::Relaxed);
        });
    }

    /// The current generation: connections opened in an earlier one are closing.
    pub(crate) fn generation(&self) -> u64 {
        self.current.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Counts a connection open until the guard is dropped (forwarded TCP connections,
    /// which a reload leaves alone and shutdown waits for up to the drain timeout).
    pub(crate) fn hold(self: &Arc<Self>) -> LiveGuard {
        self.live.fetch_add(1, Ordering::Relaxed);
        LiveGuard(self.clone())
    }

    /// Waits until no connection is open, for at most `limit`; whether none is.
    pub(crate) async fn all_closed(&self, limit: Duration) -> bool {
        let none = async {
            loop {
                // Registered before the count is read, so a drop to zero in between is seen.
                let told = self.none_live.notified();
                let mut told = std::pin::pin!(told);
                told.as_mut().enable();
                if self.live() == 0 {
                    return;
                }
                told.await;
            }
        };
        tokio::time::timeout(limit, none).await.is_ok()
    }

    /// Serves one connection until it ends (with what it ended with, unless cut or failed),
    /// closing it gracefully when generation `born`, the
    /// one it was opened in, ends. Meanwhile its HTTP/1.1 responses say `Connection: close`
    /// (see [`super::forward::handle`]), so a client busy on it learns before it sends again; after
    /// [`CLOSE_GRACE`] it is closed as soon as it is idle, and h2 gets its GOAWAY.
    pub(crate) async fn serve<C, T, E>(
        self: Arc<Self>,
        conn: C,
        peer: SocketAddr,
        born: u64,
    ) -> Option<T>
    where
        C: Future<Output = Result<T, E>> + GracefulClose,
        E: std::fmt::Display,
    {
        let _live = self.hold();
        let mut generation = self.generation.subscribe();
        let mut conn = std::pin::pin!(conn);
        // The watch's future is polled once, to leave the task's waker with it, and again only
        // when the generation has moved: polled on every wake-up of the connection, it would
        // take the watch's lock each time. (The waker stays the one task's: this runs inside
        // the connection's own task. Unconstrained, so that tokio's task budget cannot make
        // that one poll return before the waker is left.)
        let retired = self.generation() != born;
        let ended = if retired {
            None
        } else {
            let mut changed = std::pin::pin!(tokio::task::unconstrained(generation.changed()));
            let mut waiting = false;
            std::future::poll_fn(|cx| {
                if let Poll::Ready(ended) = conn.as_mut().poll(cx) {
                    return Poll::Ready(Some(ended));
                }
                if waiting && self.generation() == born {
                    return Poll::Pending;
                }
                waiting = true;
                // Ready: a new generation (or no more; either way this one has ended).
                changed.as_mut().poll(cx).map(|_| None)
            })
            .await
        };
        let ended = match ended {
            Some(ended) => ended,
            None => {
                tokio::select! {
                    ended = conn.as_mut() => return Self::ended(ended, peer),
                    _ = tokio::time::sleep(CLOSE_GRACE) => {}
                }
                conn.as_mut().close_gracefully();
                let limit = Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed));
                match tokio::time::timeout(limit, conn.as_mut()).await {
                    Ok(ended) => ended,
                    Err(_) => {
                        tracing::debug!(%peer, "a retired connection was cut at the drain timeout");
                        return None;
                    }
                }
            }
        };
        Self::ended(ended, peer)
    }

    /// What a served connection ended with, its error logged.
    fn ended<T, E: std::fmt::Display>(ended: Result<T, E>, peer: SocketAddr) -> Option<T> {
        ended
            .inspect_err(
                |e| tracing::debug!(%peer, error = %e, "client connection ended with an error"),
            )
            .ok()
    }
}

/// One open connection in [`Drain`]'s count.
pub(crate) struct LiveGuard(Arc<Drain>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.none_live.notify_waiters();
        }
    }
}

/// A served connection that can be asked to finish its request in hand and close.
pub(crate) trait GracefulClose {
    fn close_gracefully(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E> GracefulClose for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: hyper::body::Body + Send + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn close_gracefully(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
