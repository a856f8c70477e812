//! A listener's accept loop, and one client connection served in its own task: the PROXY
//! header when the listener takes one, the client network's connection limit, then bytes
//! forwarded (TCP listeners) or the TLS handshake and HTTP/1.1 or h2.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::body::ClientBody;
use super::drain::Drain;
use super::h1::server::{self, ClientIo};
use super::streams::{Streams, WithStreams};
use super::{forward, guard, l4, proxy_header, report, resets, rtt, tcp, Running, Shared};
use crate::config::ListenerMode;

/// Streams an h2 client may reset before they are taken up (hyper's default, stated here as
/// a limit of ours); those reset after are counted by [`resets::Cancels`].
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

/// The h2 server settings every connection of a listener shares.
#[derive(Clone, Copy)]
struct H2Settings {
    max_header_list: u32,
    max_streams: u32,
    send_timeout: Duration,
}

impl H2Settings {
    /// One connection's h2 server, its streams run by `streams`.
    fn builder(self, streams: Streams) -> hyper::server::conn::http2::Builder<Streams> {
        let mut builder = hyper::server::conn::http2::Builder::new(streams);
        builder
            .max_header_list_size(self.max_header_list)
            .max_concurrent_streams(self.max_streams)
            // Streams the client resets before they are served, and streams reset for
            // errors of its making: past these the connection is closed (rapid reset).
            .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
            .max_local_error_reset_streams(H2_MAX_ERROR_RESETS);
        builder
    }
}

/// Accepts connections on one listener until told to stop; each is served in its own task
/// ([`Accepted::serve`]).
pub(super) async fn accept(
    (index, listener): (usize, TcpListener),
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    drain: Arc<Drain>,
) {
    let (send_timeout, limits, h2) = {
        let site = &shared.current.load().site;
        let h2 = H2Settings {
            max_header_list: u32::try_from(site.max_header_bytes).unwrap_or(u32::MAX),
            max_streams: site.h2_max_streams,
            send_timeout: site.send_timeout,
        };
        let limits = server::Limits {
            max_headers: site.max_headers,
            max_head: site.max_header_bytes,
            head_timeout: site.header_timeout,
        };
        (site.send_timeout, limits, h2)
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
            limits,
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let _room = room;
            accepted.serve(h2, tls).await;
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
    limits: server::Limits,
}

impl Accepted {
    /// Serves the connection until it ends: the PROXY header when the listener takes one,
    /// the client's connection limit, then bytes forwarded (TCP listeners) or HTTP (after the
    /// TLS handshake on TLS listeners). Everything runs in the connection's own task, so a
    /// slow client holds up nobody else.
    async fn serve(self, h2: H2Settings, tls: Option<tokio_rustls::TlsAcceptor>) {
        let Accepted {
            shared,
            drain,
            listener,
            mut stream,
            peer,
            send_timeout,
            limits,
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
            let header =
                tokio::time::timeout(PROXY_HEADER_TIMEOUT, proxy_header::read(&mut stream));
            match Box::pin(header).await {
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
            return Box::pin(l4::forward(&shared, &running, forward, stream, client)).await;
        }
        drop(running);
        let stream = guard::SendTimeout::new(tcp::Tcp::new(stream), send_timeout);
        let conn = forward::Conn::new(client, listener, tls.is_some(), born);
        let Some(acceptor) = tls else {
            let plain = (ClientIo::Left(stream), limits, false);
            return serve_http(h2, plain, conn, shared, drain, born).await;
        };
        // Boxed, like the h2 service and the HTTP/1.x loop: the task every connection spawns
        // stays small (a TCP listener's connections never take these states), and a
        // spawned task's future is copied as it starts and as it ends.
        let rtt = (client != peer).then_some(&shared.rtt);
        let Some((io, alpn_h2)) = Box::pin(handshake(acceptor, stream, client, rtt)).await else {
            return;
        };
        serve_http(h2, (io, limits, alpn_h2), conn, shared, drain, born).await
    }
}

/// A client's TLS handshake: its stream, and whether ALPN chose h2; `None` when it failed or
/// took too long. Behind a relay (`rtt` given), the handshake is the round trip this site
/// can measure.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: guard::SendTimeout<tcp::Tcp>,
    client: SocketAddr,
    rtt: Option<&rtt::RttTable>,
) -> Option<(ClientIo, bool)> {
    let began = std::time::Instant::now();
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => {
            if let Some(rtt) = rtt.filter(|r| r.wants(client.ip())) {
                rtt.observe(client.ip(), began.elapsed());
            }
            let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
            Some((ClientIo::Right(Box::new(s)), h2))
        }
        Ok(Err(e)) => {
            tracing::debug!(%client, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%client, "TLS handshake timed out");
            None
        }
    }
}

/// Serves HTTP on a client's connection (plain, or after its TLS handshake; `h2` when ALPN
/// chose it) until it ends or is retired: HTTP/1.x by the proxy's own server, h2 (by ALPN, or
/// in the clear by prior knowledge) by hyper's.
async fn serve_http(
    settings: H2Settings,
    (io, limits, h2): (ClientIo, server::Limits, bool),
    mut conn: forward::Conn,
    shared: Arc<Shared>,
    drain: Arc<Drain>,
    born: u64,
) {
    if h2 {
        return serve_h2(settings, io, Arc::new(conn), shared, drain, born).await;
    }
    let (sink, interim) = tokio::sync::mpsc::channel(super::h1::INTERIM_HELD);
    conn.interim = Some(sink);
    let conn = Arc::new(conn);
    let peer = conn.peer;
    let served = server::Connection::new(io, limits, shared.clone(), (conn.clone(), interim));
    if let Some(Some(h2c)) = Box::pin(drain.clone().serve(served, peer, born)).await {
        serve_h2(settings, h2c, conn, shared, drain, born).await;
    }
}

/// Serves h2 with hyper's server, its streams run in this task ([`super::streams`]).
async fn serve_h2<S>(
    settings: H2Settings,
    io: S,
    conn: Arc<forward::Conn>,
    shared: Arc<Shared>,
    drain: Arc<Drain>,
    born: u64,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let counted = shared.clone();
    let cancels =
        resets::Cancels::new(move || counted.refusals.refuse(guard::Refusal::Resets, peer.ip()));
    let io = resets::CutWhenOver::new(io, cancels.clone());
    // hyper moves each stream's future several times: boxed, a pointer moves instead of the
    // request's state (1.05x on h2).
    let watching = cancels.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let req = req.map(ClientBody::H2);
        let answer = boxed_in_place(|| forward::handle(shared.clone(), req, conn.clone()));
        futures_util::FutureExt::map(watching.watch(answer), |answered| {
            super::streams::note_answered();
            answered.map(|resp| resp.map(super::streams::Noted))
        })
    });
    let streams = Streams::new(settings.send_timeout);
    let served = settings
        .builder(streams.clone())
        .serve_connection(TokioIo::new(io), service);
    let served = resets::MarksEnd::new(WithStreams::new(served, &streams), cancels);
    Box::pin(drain.serve(served, peer, born)).await;
}

/// `make()`'s future on the heap, the box taken before the future is made, which lets the
/// compiler make the future in it. `Box::pin(make())` makes the future on the stack, then
/// copies all of it (the size of its largest state, kilobytes for a request) into the box: on
/// h2, 0.7% of the CPU (made in place, 1.01x). Where a box is taken once per connection (the
/// TLS handshake, a TCP listener's forwarding), making it in place measured level.
fn boxed_in_place<F: std::future::Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
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
