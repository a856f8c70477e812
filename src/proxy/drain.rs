//! Retiring client connections: the count of those open, and a generation that closes every
//! connection opened before it changes (reload and shutdown), each within the drain timeout.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
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
        self.generation.send_modify(|g| *g += 1);
    }

    /// The current generation: connections opened in an earlier one are closing.
    pub(crate) fn generation(&self) -> u64 {
        *self.generation.borrow()
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
        C: std::future::Future<Output = Result<T, E>> + GracefulClose,
        E: std::fmt::Display,
    {
        let _live = self.hold();
        let mut generation = self.generation.subscribe();
        let mut conn = std::pin::pin!(conn);
        let ended = loop {
            if *generation.borrow_and_update() != born {
                tokio::select! {
                    ended = conn.as_mut() => break ended,
                    _ = tokio::time::sleep(CLOSE_GRACE) => {}
                }
                conn.as_mut().close_gracefully();
                let limit = Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed));
                match tokio::time::timeout(limit, conn.as_mut()).await {
                    Ok(ended) => break ended,
                    Err(_) => {
                        tracing::debug!(%peer, "a retired connection was cut at the drain timeout");
                        return None;
                    }
                }
            }
            tokio::select! {
                // In order: the connection first, and no random draw per wake-up.
                biased;
                ended = conn.as_mut() => break ended,
                changed = generation.changed() => {
                    if changed.is_err() {
                        conn.as_mut().close_gracefully();
                        break conn.as_mut().await;
                    }
                }
            }
        };
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
