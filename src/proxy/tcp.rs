//! A TCP stream that writes with `send(2)` and `sendmsg(2)`, the socket calls, where tokio's
//! stream writes with `write(2)` and `writev(2)`: those pass through the file layer first (a
//! position lock and checks made for files). In a kernel profile of small keep-alive
//! requests that layer took about 0.2 us per request (two writes), nearly 2% of the
//! request's cost; HAProxy sends with `send(2)` too. Reads are tokio's (`recv(2)` already).
//!
//! Also when a short write waits for the other connections' (`write_in_turn`), so that
//! one wake-up of the reader serves several.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Waits, when other connections are `open` and this write is short (a `body` of known
/// length up to [`GROUPED_BODY_MAX`]), until the worker has run its other ready tasks and
/// polled for new events, so that the write goes out with theirs.
///
/// Each write to a sleeping reader wakes it, and a wake-up on another core costs the
/// writer's core a few microseconds in the kernel. Written the moment each is ready, one
/// worker's writes spread over its whole turn through the ready connections: the reader
/// takes each one, sleeps again, and is woken by the next. Written together at the end of
/// the turn, they wake it once for several, as HAProxy's writes after its event loop has run
/// do. On small keep-alive requests this took the load generator's wake-ups from one in six
/// responses to one in fifteen, and the requests per proxy core up 3-4% (TLS 2%).
///
/// Not done with one connection open: there is nothing to group, and the extra poll costs
/// (5% at one connection). Nor for longer bodies: 16 KiB responses measured 3-5% slower
/// grouped (the bytes just read wait out the turn, likely leaving the cache, before they
/// are copied again). Requests to servers are not grouped either: that measured 2% slower
/// on 16 KiB responses and 4% on h2, for fewer wake-ups of the servers.
pub(crate) async fn write_in_turn(open: usize, body: Option<u64>) {
    if open > 1 && body.is_some_and(|n| n <= GROUPED_BODY_MAX) {
        tokio::task::yield_now().await;
    }
}

/// The longest body [`write_in_turn`] groups.
const GROUPED_BODY_MAX: u64 = 4096;

/// A client's or a server's connection, as the HTTP side reads and writes it.
pub struct Tcp(TcpStream);

impl Tcp {
    pub fn new(stream: TcpStream) -> Tcp {
        Tcp(stream)
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.0
    }

    /// Tries `send` until the socket takes bytes or says why not.
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        send: impl Fn(SockRef<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            // A full socket buffer clears the readiness, and the loop waits for it again.
            match self
                .0
                .try_io(Interest::WRITABLE, || send(SockRef::from(&self.0)))
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
    }
}

impl AsyncRead for Tcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, |s| s.send(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut pieces = bufs.iter().filter(|b| !b.is_empty());
        match (pieces.next(), pieces.next()) {
            (None, _) => Poll::Ready(Ok(0)),
            (Some(one), None) => self.poll_send(cx, |s| s.send(one)),
            _ => self.poll_send(cx, |s| s.send_vectored(bufs)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (Tcp, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap());
        let (near, far) = tokio::join!(near, listener.accept());
        (Tcp::new(near.unwrap()), far.unwrap().0)
    }

    #[tokio::test]
    async fn writes_single_and_gathered_arrive_whole_and_in_order() {
        let (mut near, mut far) = pair().await;
        near.write_all(b"one ").await.unwrap();
        let parts = [IoSlice::new(b""), IoSlice::new(b"two "), IoSlice::new(b"")];
        let n = near.write_vectored(&parts).await.unwrap();
        assert_eq!(n, 4);
        let parts = [IoSlice::new(b"three "), IoSlice::new(b"four")];
        let n = near.write_vectored(&parts).await.unwrap();
        assert_eq!(n, 10);
        let big = vec![b'x'; 4096];
        let parts = [IoSlice::new(b" five "), IoSlice::new(&big)];
        let n = near.write_vectored(&parts).await.unwrap();
        assert_eq!(n, big.len() + 6);
        near.shutdown().await.unwrap();
        let mut got = String::new();
        far.read_to_string(&mut got).await.unwrap();
        let big = String::from_utf8(big).unwrap();
        assert_eq!(got, format!("one two three four five {big}"));
    }

    /// Writes that fill the socket wait for the reader and lose nothing.
    #[tokio::test]
    async fn a_full_socket_waits_for_its_reader() {
        let (mut near, mut far) = pair().await;
        let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            near.write_all(&sent).await.unwrap();
            near.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        far.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got == data, "the bytes differ");
    }

    #[tokio::test]
    async fn a_write_to_a_reset_peer_fails_without_a_signal() {
        let (mut near, far) = pair().await;
        // A close with unread data resets; the writes after it fail (no SIGPIPE: MSG_NOSIGNAL).
        SockRef::from(&far)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(far);
        let mut failed = false;
        for _ in 0..100 {
            if near.write_all(b"x").await.is_err() {
                failed = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(failed);
    }

    #[test]
    fn only_a_short_write_among_other_connections_waits_its_turn() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut waits = |open, body| {
            let turn = std::pin::pin!(write_in_turn(open, body));
            std::future::Future::poll(turn, &mut cx).is_pending()
        };
        assert!(waits(2, Some(0)));
        assert!(waits(50, Some(GROUPED_BODY_MAX)));
        // Alone, long, or of a length not known: written at once.
        assert!(!waits(1, Some(13)));
        assert!(!waits(50, Some(GROUPED_BODY_MAX + 1)));
        assert!(!waits(50, None));
    }
}
