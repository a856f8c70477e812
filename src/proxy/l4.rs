//! Layer 4: a TCP listener's connection forwarded byte for byte to a pool's server, both
//! ways, with half-closes passed on (one side's end of stream becomes a shutdown of the
//! other's writing side while the other direction goes on), an idle timeout, and a connect
//! that fails over to another server. With server names configured, the ClientHello is read
//! first (rustls' `Acceptor`, which reassembles it across TCP segments and TLS records) and
//! its name picks the pool; the TLS itself passes through untouched. A pool may send its
//! servers a PROXY protocol header first.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use super::guard::Refusal;
use super::upstream::Outcome;
use super::{Running, Shared};
use crate::config::{Sticky, TcpForward};

/// The most ClientHello bytes read to find the server name.
const HELLO_LIMIT: usize = 16 * 1024;
/// Servers one connection may try.
const MAX_TRIES: usize = 3;
/// Each direction's copy buffer.
const BUFFER: usize = 16 * 1024;

/// Why a ClientHello could not route a connection.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("the client closed before its ClientHello was complete")]
    Closed,
    #[error("no ClientHello within {0:?}")]
    Timeout(Duration),
    #[error("the ClientHello is longer than {HELLO_LIMIT} bytes")]
    TooLong,
    #[error("not a TLS ClientHello: {0}")]
    Malformed(rustls::Error),
    #[error("reading the ClientHello: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads a TLS ClientHello off `stream`: the server name it asks for (if any) and every
/// byte read, to be sent on to the server as they came.
pub async fn client_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Result<(Option<String>, Vec<u8>), HelloError> {
    let read = async {
        let mut acceptor = rustls::server::Acceptor::default();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(HelloError::Closed);
            }
            if seen.len() + n > HELLO_LIMIT {
                return Err(HelloError::TooLong);
            }
            seen.extend_from_slice(&buf[..n]);
            let mut fresh = &buf[..n];
            while !fresh.is_empty() {
                if acceptor.read_tls(&mut fresh)? == 0 {
                    return Err(HelloError::TooLong);
                }
            }
            match acceptor.accept() {
                Ok(None) => continue,
                Ok(Some(accepted)) => {
                    let name = accepted.client_hello().server_name().map(str::to_owned);
                    return Ok((name, seen));
                }
                Err((e, _alert)) => return Err(HelloError::Malformed(e)),
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or(Err(HelloError::Timeout(limit)))
}

/// Forwards one accepted connection from `client` until both directions have ended, it has
/// been idle for the listener's `idle_timeout`, or no server can be reached.
pub async fn forward(
    shared: &Shared,
    running: &Running,
    forward: &TcpForward,
    mut stream: TcpStream,
    client: SocketAddr,
) {
    shared.stats.l4_connections.fetch_add(1, Ordering::Relaxed);
    let (name, hello) = if forward.by_server_name.is_empty() {
        (None, Vec::new())
    } else {
        // Boxed: its buffer and rustls' acceptor would otherwise make every connection's task
        // several kilobytes larger, moved on each spawn.
        match Box::pin(client_hello(&mut stream, forward.hello_timeout)).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(%client, error = %e, "connection closed before it could be routed");
                shared.stats.l4_unrouted.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    };
    let pi = forward.pool_for(name.as_deref());
    let Some((mut server, in_flight)) = connect(shared, running, pi, client).await else {
        shared.stats.l4_unrouted.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let settings = &running.site.pool_settings[pi];
    // The PROXY header names the address the client connected to.
    let mut first = Vec::new();
    if let Some(version) = settings.send_proxy {
        let Ok(local) = stream.local_addr() else {
            return;
        };
        first = super::proxy_header::write(version, client, local);
    }
    first.extend_from_slice(&hello);
    if !first.is_empty() && server.write_all(&first).await.is_err() {
        return;
    }
    shared
        .stats
        .l4_bytes_in
        .fetch_add(hello.len() as u64, Ordering::Relaxed);
    let last = Activity::new();
    let ((client_in, client_out), (server_in, server_out)) = (stream.split(), server.split());
    let up = relay(client_in, server_out, &shared.stats.l4_bytes_in, &last);
    let down = relay(server_in, client_out, &shared.stats.l4_bytes_out, &last);
    tokio::select! {
        biased;
        ended = async { tokio::try_join!(up, down) } => {
            if let Err(e) = ended {
                tracing::debug!(%client, error = %e, "forwarded connection ended with an error");
            }
        }
        _ = last.idle_for(forward.idle_timeout) => {
            tracing::debug!(%client, "forwarded connection closed after its idle timeout");
        }
    }
    drop(in_flight);
}

/// Connects to a server of pool `pi` for `client`: the source-address choice when the pool
/// is sticky by it, else the pool's algorithm; a server that does not answer within the
/// pool's `connect_timeout` counts as failing and the next is tried.
async fn connect(
    shared: &Shared,
    running: &Running,
    pi: usize,
    client: SocketAddr,
) -> Option<(TcpStream, super::upstream::InFlight)> {
    let pool = &running.site.pools[pi];
    let settings = &running.site.pool_settings[pi];
    let state = &running.pools[pi];
    let health = shared.health.snapshot();
    let mut tried: smallvec::SmallVec<[usize; MAX_TRIES]> = smallvec::SmallVec::new();
    while tried.len() < MAX_TRIES {
        let sticky = match (&settings.sticky, tried.is_empty()) {
            (Some(Sticky::SourceIp), true) => state.by_hash(
                pool,
                settings,
                &health,
                super::algorithm::hash_ip(client.ip()),
            ),
            _ => None,
        };
        let server = match sticky {
            Some(s) => s,
            // Servers with caps: the first choice waits for room.
            None if tried.is_empty() && settings.max_in_flight.is_some() => {
                let pick = || state.pick(pool, settings, &health, client.ip(), None, &[]);
                match state.queue_for(settings, pick).await {
                    Ok(s) => s?,
                    Err(super::upstream::AllBusy) => {
                        shared.refusals.refuse(Refusal::Queue, client.ip());
                        return None;
                    }
                }
            }
            None => state.choose(pool, settings, &health, client.ip(), None, &tried)?,
        };
        tried.push(server);
        let addr = super::upstream::address(&pool.members[server])?;
        let in_flight = state.start(server);
        match tokio::time::timeout(settings.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                state.record(server, Outcome::Answered, settings);
                return Some((stream, in_flight));
            }
            Ok(Err(e)) => tracing::debug!(server = %addr, error = %e, "connect failed"),
            Err(_) => tracing::debug!(server = %addr, "connect timed out"),
        }
        state.record(server, Outcome::Failed, settings);
    }
    None
}

/// When either direction last moved a byte.
struct Activity {
    started: Instant,
    /// Milliseconds after `started`.
    last_ms: AtomicU64,
    /// Whether one direction has ended already.
    one_ended: std::sync::atomic::AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            one_ended: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A direction's source ended: its end is passed on to `to` by shutting its writing side,
    /// unless the other direction has ended already, when the connection is about to close
    /// (and the close says the same, one system call fewer). Waiting a turn of the event loop
    /// for the other end, which often follows at once, measured slower than the shutdown it
    /// saves.
    fn pass_end(&self, to: &TcpStream) -> std::io::Result<()> {
        if self.one_ended.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write)
    }

    fn touch(&self) {
        self.last_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Completes once no byte has moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// What one splice(2) call moves at most (a pipe's default capacity).
const PIPE_CHUNK: usize = 64 * 1024;

/// Moves `from`'s bytes to `to` until `from` ends, then shuts `to`'s writing side (a
/// half-close passed on while the other direction goes on). Each read counts its bytes and
/// marks the connection active. Small exchanges are copied through a buffer taken
/// uninitialised (a read shorter than the room left marks the socket drained, so the next
/// read waits for readiness instead of failing with `EAGAIN` first); once one read fills the
/// whole buffer the direction is a bulk transfer and the rest moves with splice(2) through a
/// pipe, never entering user space (as HAProxy's `splice-auto`): a pipe per direction costs
/// more than it saves on short connections.
async fn relay(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    bytes: &AtomicU64,
    last: &Activity,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(BUFFER);
    loop {
        buf.clear();
        let n = from.read_buf(&mut buf).await?;
        if n == 0 {
            return last.pass_end(to.as_ref());
        }
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        last.touch();
        to.write_all(&buf).await?;
        if n == BUFFER {
            return splice_rest(from.as_ref(), to.as_ref(), bytes, last).await;
        }
    }
}

/// The rest of [`relay`], through a pipe with splice(2).
async fn splice_rest(
    from: &TcpStream,
    to: &TcpStream,
    bytes: &AtomicU64,
    last: &Activity,
) -> std::io::Result<()> {
    use nix::fcntl::{splice, OFlag, SpliceFFlags};
    use tokio::io::Interest;
    let (pipe_out, pipe_in) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    loop {
        let n = from
            .async_io(Interest::READABLE, || {
                splice(from, None, &pipe_in, None, PIPE_CHUNK, flags).map_err(std::io::Error::from)
            })
            .await?;
        if n == 0 {
            return last.pass_end(to);
        }
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        last.touch();
        let mut left = n;
        while left > 0 {
            left -= to
                .async_io(Interest::WRITABLE, || {
                    splice(&pipe_out, None, to, None, left, flags).map_err(std::io::Error::from)
                })
                .await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn hello_for(name: &str) -> Vec<u8> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let mut conn = rustls::ClientConnection::new(
            Arc::new(config),
            rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
        )
        .unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    #[tokio::test]
    async fn the_server_name_is_read_from_a_hello_in_pieces_and_every_byte_is_kept() {
        let hello = hello_for("b.example");
        // Delivered a few bytes at a time.
        let (mut tx, mut rx) = tokio::io::duplex(64);
        let sent = hello.clone();
        let writer = tokio::spawn(async move {
            for piece in sent.chunks(7) {
                tx.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            tx
        });
        let (name, seen) = client_hello(&mut rx, Duration::from_secs(5)).await.unwrap();
        assert_eq!(name.as_deref(), Some("b.example"));
        assert_eq!(seen, hello);
        drop(writer.await);
    }

    #[tokio::test]
    async fn garbage_silence_and_a_short_hello_are_refused() {
        let mut garbage: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(matches!(
            client_hello(&mut garbage, Duration::from_secs(5)).await,
            Err(HelloError::Malformed(_))
        ));
        let hello = hello_for("a.example");
        let mut short = &hello[..hello.len() / 2];
        assert!(matches!(
            client_hello(&mut short, Duration::from_secs(5)).await,
            Err(HelloError::Closed)
        ));
        let (_tx, mut silent) = tokio::io::duplex(64);
        assert!(matches!(
            client_hello(&mut silent, Duration::from_millis(50)).await,
            Err(HelloError::Timeout(_))
        ));
    }
}
