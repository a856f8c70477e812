//! A listener's accept loop, and one client connection served in its own task: the PROXY
//! header when the listener takes one, the client network's connection limit, then bytes
//! forwarded (TCP listeners) or the TLS handshake and HTTP/1.1 or h2.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::drain::Drain;
use super::{forward, framing, guard, l4, proxy_header, report, rtt, Running, Shared};
use crate::config::ListenerMode;

/// Streams an h2 client may reset before they are served (hyper's default, stated here as a
/// limit of ours).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams reset on one connection for the client's protocol errors before it is closed.
const H2_MAX_ERROR_RESETS: usize = 1024;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a trusted proxy in front may take to send a connection's PROXY header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Counts a new connection from `client` against its client network's limit: its slot, or
/// `None` (counted and logged) when the network has all the connections it may have.
fn admit(shared: &Shared, running: &Running, client: IpAddr) -> Option<guard::ConnectionSlot> {
    let limits = &running.site.limits;
    let key = guard::client_key(client, limits);
    let slot = shared.open.admit(key, limits.connections);
    if slot.is_none() {
        shared.refusals.refuse(guard::Refusal::Connections, client);
    }
    slot
}

/// Binds a listener. Its connections do without Nagle's delay: on Linux they inherit
/// TCP_NODELAY from the listening socket, one system call here instead of one per connection.
pub(super) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    #[cfg(target_os = "linux")]
    socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
    Ok(listener)
}

/// The HTTP server settings every connection of a listener shares.
type HttpBuilder = hyper_util::server::conn::auto::Builder<TokioExecutor>;

/// Accepts connections on one listener until told to stop; each is served in its own task
/// ([`Accepted::serve`]).
pub(super) async fn accept(
    (index, listener): (usize, TcpListener),
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    drain: Arc<Drain>,
) {
    let mut builder = HttpBuilder::new(TokioExecutor::new());
    let (send_timeout, head_timeout) = {
        let site = &shared.current.load().site;
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            // The framing watcher times request heads (one timer per connection, not one
            // per request).
            .header_read_timeout(None)
            .max_headers(site.max_headers)
            .max_buf_size(site.max_header_bytes);
        builder
            .http2()
            .max_header_list_size(u32::try_from(site.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(site.h2_max_streams)
            // Streams the client resets before they are served, and streams reset for
            // errors of its making: past these the connection is closed (rapid reset).
            .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
            .max_local_error_reset_streams(H2_MAX_ERROR_RESETS);
        (site.send_timeout, site.header_timeout)
    };
    loop {
        // At the global cap, connections wait in the listen queue.
        let room = match &shared.capacity {
            None => None,
            Some(cap) => tokio::select! {
                permit = cap.clone().acquire_owned() => permit.ok(),
                _ = stopping.changed() => return,
            },
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopping.changed() => return,
        };
        #[cfg(not(target_os = "linux"))]
        let _ = stream.set_nodelay(true);
        let accepted = Accepted {
            shared: shared.clone(),
            drain: drain.clone(),
            listener: index,
            stream,
            peer,
            send_timeout,
            head_timeout,
        };
        let (builder, tls) = (builder.clone(), tls.clone());
        tokio::spawn(async move {
            let _room = room;
            accepted.serve(&builder, tls).await;
        });
    }
}

/// A connection just accepted on listener `listener`.
struct Accepted {
    shared: Arc<Shared>,
    drain: Arc<Drain>,
    listener: usize,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    send_timeout: Duration,
    head_timeout: Duration,
}

impl Accepted {
    /// Serves the connection until it ends: the PROXY header when the listener takes one,
    /// the client's connection limit, then bytes forwarded (TCP listeners) or HTTP (after the
    /// TLS handshake on TLS listeners). Everything runs in the connection's own task, so a
    /// slow client holds up nobody else.
    async fn serve(self, builder: &HttpBuilder, tls: Option<tokio_rustls::TlsAcceptor>) {
        let Accepted {
            shared,
            drain,
            listener,
            mut stream,
            peer,
            send_timeout,
            head_timeout,
        } = self;
        let running = shared.current.load_full();
        let Some(config) = running.site.listeners.get(listener) else {
            return;
        };
        let mut client = peer;
        if config.proxy_protocol {
            let refused = |why: &dyn std::fmt::Display| {
                tracing::debug!(%peer, why = %why, "PROXY header refused");
                shared
                    .refusals
                    .refuse(guard::Refusal::ProxyHeader, peer.ip());
            };
            if !running.trusts(peer.ip()) {
                return refused(&"the peer is not a trusted proxy");
            }
            match tokio::time::timeout(PROXY_HEADER_TIMEOUT, proxy_header::read(&mut stream)).await
            {
                Ok(Ok(Some(named))) => client = named,
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return refused(&e),
                Err(_) => return refused(&"no header in time"),
            }
        }
        let Some(_slot) = admit(&shared, &running, client.ip()) else {
            return;
        };
        // The client is the TCP peer: the kernel measured the round trip in the handshake.
        if client == peer && shared.rtt.wants(client.ip()) {
            if let Some(rtt) = rtt::tcp_min_rtt(&stream) {
                shared.rtt.observe(client.ip(), rtt);
            }
        }
        let born = drain.generation();
        if let ListenerMode::Tcp(forward) = &config.mode {
            if !config.access.permits(client.ip()) {
                return shared.deny(report::RuleScope::Listener, client.ip());
            }
            // On a TCP listener the request rate counts connections.
            if shared.over_rate(&running, client.ip()).is_some() {
                return;
            }
            let _live = drain.hold();
            return l4::forward(&shared, &running, forward, stream, client).await;
        }
        drop(running);
        let stream = guard::SendTimeout::new(stream, send_timeout);
        let tls_on = tls.is_some();
        let conn = move |verdicts| forward::Conn::new(client, listener, tls_on, born, verdicts);
        let Some(acceptor) = tls else {
            let plain = (stream, head_timeout, false);
            return serve_http(builder, plain, conn, shared, drain, born).await;
        };
        // Boxed, like the service below: the task every connection spawns stays small (a
        // TCP listener's connections never take these states).
        let began = std::time::Instant::now();
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
        match Box::pin(handshake).await {
            Ok(Ok(s)) => {
                // Behind a relay, the handshake is the round trip this site can measure.
                if client != peer && shared.rtt.wants(client.ip()) {
                    shared.rtt.observe(client.ip(), began.elapsed());
                }
                let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
                serve_http(builder, (s, head_timeout, h2), conn, shared, drain, born).await
            }
            Ok(Err(e)) => tracing::debug!(%client, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
        }
    }
}

/// Serves HTTP/1.1 and h2 on `stream` (plain or after its TLS handshake; `h2` when ALPN
/// chose it) until the connection ends or is retired; `conn` describes it to the request path,
/// given the framing watcher's verdicts.
async fn serve_http<S>(
    builder: &HttpBuilder,
    (stream, head_timeout, h2): (S, Duration, bool),
    conn: impl FnOnce(Arc<framing::Verdicts>) -> forward::Conn,
    shared: Arc<Shared>,
    drain: Arc<Drain>,
    born: u64,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let verdicts = Arc::new(framing::Verdicts::default());
    let conn = Arc::new(conn(verdicts.clone()));
    let peer = conn.peer;
    let io = TokioIo::new(framing::Framed::new(stream, verdicts, Some(head_timeout)));
    if h2 {
        // hyper moves each stream's future several times and spawns a task of it: boxed, a
        // pointer moves instead of the request's state (1.05x on h2). HTTP/1.1 keeps it in
        // place, in one slot per connection, where the box measured 0.97-0.98x.
        let service = hyper::service::service_fn(move |req| {
            Box::pin(forward::handle(shared.clone(), req, conn.clone()))
        });
        let served = builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        return Box::pin(drain.serve(served, peer, born)).await;
    }
    let service =
        hyper::service::service_fn(move |req| forward::handle(shared.clone(), req, conn.clone()));
    let served = builder
        .serve_connection_with_upgrades(io, service)
        .into_owned();
    Box::pin(drain.serve(served, peer, born)).await;
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn accepted_connections_come_without_nagles_delay() {
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        assert!(stream.nodelay().unwrap());
    }
}
