//! Connections to one pool's servers: TCP (then TLS for HTTPS pools), HTTP/1.1 or HTTP/2, and
//! the idle keep-alive connections kept per server for the next request.
//!
//! A pool keeps its own lists rather than hyper-util's generic client: the servers are known
//! by index, so a checkout is a lock and a pop with no URI to format, parse or hash, and the
//! caller learns whether a connection was reused, which decides the one retry a reused
//! connection's failure earns (the server may have closed it while it sat idle).
//!
//! HTTP/1.1 connections ([`super::h1`]) go back to their server's list when a response has
//! been read to its end; one that ended early (the client went away) closes. They have no task
//! of their own: the request using one writes and reads it. HTTP/2 (hyper's client) keeps one
//! shared connection per server, run by a task, and opens a new one when it closes.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http2;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::tcp::Tcp;

use super::body::UpstreamBody;
use super::h1;
use crate::clock;
use crate::config::{PoolSettings, UpstreamProtocol};

/// Why a connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS unavailable for this pool (see the log at load)")]
    NoTls,
    #[error("HTTP handshake: {0}")]
    Handshake(#[from] hyper::Error),
}

/// A lent connection: an HTTP/1.1 one itself (`None` while its response body has it), or
/// an HTTP/2 one's sending half.
enum Sender {
    H1(Option<h1::Conn>),
    H2(http2::SendRequest<UpstreamBody>),
}

struct Idle {
    conn: h1::Conn,
    /// When it was given back, on the coarse clock.
    since_ms: u64,
}

/// One server's connections.
#[derive(Default)]
struct Server {
    idle: Mutex<Vec<Idle>>,
    shared: Mutex<Option<http2::SendRequest<UpstreamBody>>>,
}

/// A pool's connections to its servers.
pub struct Connections {
    servers: Vec<Server>,
    protocol: UpstreamProtocol,
    idle_per_server: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    /// For HTTPS pools: the connector and the name sent as SNI (else the server's address);
    /// `Err` when the pool's TLS could not be set up (every request then fails with 502).
    tls: Option<Result<(tokio_rustls::TlsConnector, Option<ServerName<'static>>), ()>>,
    /// Connections opened, and requests sent on a connection used before.
    pub opened: AtomicU64,
    pub reused: AtomicU64,
}

/// A connection lent to one request.
pub struct Lease {
    sender: Sender,
    server: usize,
    /// It had carried a request before this one.
    pub reused: bool,
}

impl Connections {
    /// The connections of a pool of `servers` servers; an idle sweeper runs while it lives.
    pub fn new(servers: usize, settings: &PoolSettings) -> Arc<Connections> {
        let tls = settings.tls.as_ref().map(|t| {
            let mut config = crate::tls::client_config(t.verify, t.ca_file.as_deref())
                .inspect_err(|e| tracing::error!(error = %e, "upstream TLS unavailable"))
                .map_err(|_| ())?;
            config.alpn_protocols = match settings.protocol {
                UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
                UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
            };
            // The name sent as SNI and verified: the pool's `server_name`, else its `host`.
            let name = t
                .server_name
                .clone()
                .or_else(|| settings.host.clone())
                .and_then(|n| ServerName::try_from(n).ok());
            Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        });
        let conns = Arc::new(Connections {
            servers: (0..servers).map(|_| Server::default()).collect(),
            protocol: settings.protocol,
            idle_per_server: settings.idle_per_server,
            idle_timeout: settings.idle_timeout,
            connect_timeout: settings.connect_timeout,
            tls,
            opened: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        });
        tokio::spawn(sweep(Arc::downgrade(&conns)));
        conns
    }

    /// A connection to server `server` at `addr`: an idle one when there is one (unless
    /// `fresh`), else a new one.
    pub async fn checkout(
        &self,
        server: usize,
        addr: SocketAddr,
        fresh: bool,
    ) -> Result<Lease, ConnectError> {
        let slot = &self.servers[server];
        if !fresh {
            match self.protocol {
                UpstreamProtocol::Http1 => {
                    let mut idle = lock(&slot.idle);
                    let now = clock::coarse_ms();
                    while let Some(mut i) = idle.pop() {
                        if self.fresh(&i, now) && i.conn.alive() {
                            self.reused.fetch_add(1, Ordering::Relaxed);
                            return Ok(Lease {
                                sender: Sender::H1(Some(i.conn)),
                                server,
                                reused: true,
                            });
                        }
                    }
                }
                UpstreamProtocol::Http2 => {
                    if let Some(s) = lock(&slot.shared).as_ref().filter(|s| !s.is_closed()) {
                        self.reused.fetch_add(1, Ordering::Relaxed);
                        return Ok(Lease {
                            sender: Sender::H2(s.clone()),
                            server,
                            reused: true,
                        });
                    }
                }
            }
        }
        // Boxed: connecting (TCP, TLS, the HTTP handshake) is a large future, and a request
        // that reuses a connection should not carry its room.
        let connect = Box::pin(self.connect(addr));
        let sender = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| ConnectError::Timeout(self.connect_timeout))??;
        self.opened.fetch_add(1, Ordering::Relaxed);
        if let Sender::H2(s) = &sender {
            *lock(&slot.shared) = Some(s.clone());
        }
        Ok(Lease {
            sender,
            server,
            reused: false,
        })
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Sender, ConnectError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let tcp = Tcp::new(tcp);
        let io = match &self.tls {
            None => h1::Io::Plain(tcp),
            Some(Err(())) => return Err(ConnectError::NoTls),
            Some(Ok((connector, name))) => {
                let name = name
                    .clone()
                    .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
                h1::Io::Tls(Box::new(connector.connect(name, tcp).await?))
            }
        };
        Ok(match self.protocol {
            UpstreamProtocol::Http1 => Sender::H1(Some(h1::Conn::new(io))),
            UpstreamProtocol::Http2 => {
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(hyper_util::rt::TokioTimer::new())
                    .handshake(TokioIo::new(io))
                    .await?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "upstream connection ended");
                    }
                });
                Sender::H2(sender)
            }
        })
    }

    /// Puts an HTTP/1.1 connection whose response was read to its end back for the next
    /// request (HTTP/2 connections stay shared and need nothing).
    pub fn give_back(&self, lease: Lease) {
        let Sender::H1(Some(conn)) = lease.sender else {
            return;
        };
        let mut idle = lock(&self.servers[lease.server].idle);
        if idle.len() < self.idle_per_server {
            idle.push(Idle {
                conn,
                since_ms: clock::coarse_ms(),
            });
        }
    }

    /// Idle connections now, over all servers.
    pub fn idle(&self) -> usize {
        self.servers.iter().map(|s| lock(&s.idle).len()).sum()
    }

    /// Drops idle connections past the idle timeout or closed by their server.
    fn sweep(&self) {
        let now = clock::coarse_ms();
        for s in &self.servers {
            lock(&s.idle).retain_mut(|i| self.fresh(i, now) && i.conn.alive());
        }
    }

    /// Whether an idle connection is still within the idle timeout at `now` (coarse clock).
    fn fresh(&self, idle: &Idle, now: u64) -> bool {
        Duration::from_millis(now.saturating_sub(idle.since_ms)) < self.idle_timeout
    }
}

/// Sweeps a pool's idle connections once a second while the pool lives.
async fn sweep(conns: Weak<Connections>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match conns.upgrade() {
            Some(c) => c.sweep(),
            None => return,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why an exchange with a server failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    H1(#[from] h1::Error),
    #[error(transparent)]
    H2(#[from] hyper::Error),
}

impl UpstreamError {
    /// Whether the connection closed before any answer came (a kept-alive connection the
    /// server closed while it sat idle).
    pub fn closed_before_answer(&self) -> bool {
        let e = match self {
            UpstreamError::H1(e) => return e.closed_before_answer(),
            UpstreamError::H2(e) => e,
        };
        if e.is_incomplete_message() || e.is_canceled() {
            return true;
        }
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                return matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::UnexpectedEof
                );
            }
            source = s.source();
        }
        false
    }
}

/// A server's response body.
pub enum Inbound {
    H1(h1::Body),
    H2(Incoming),
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        match self.get_mut() {
            Inbound::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Inbound::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Inbound::H1(b) => b.is_end_stream(),
            Inbound::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Inbound::H1(b) => b.size_hint(),
            Inbound::H2(b) => b.size_hint(),
        }
    }
}

/// How sending a request failed.
pub struct SendError {
    pub error: UpstreamError,
    /// The request's body, when the request never left (it may go again as it is).
    pub unsent: Option<UpstreamBody>,
}

/// A request's head as it goes to a server: borrowed, so that a request that goes again (to
/// another server, or on a new connection) is not copied for each try. HTTP/1.1 writes it
/// out; HTTP/2 takes its own copy.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    pub method: &'a Method,
    /// Origin-form for HTTP/1.1 servers; with scheme and authority for HTTP/2 ones.
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// Where an HTTP/1.1 server's interim responses go, when the client can take them.
    pub interim: Option<&'a h1::InterimSink>,
}

impl Lease {
    /// Sends a request once the connection can take it.
    pub async fn send(
        &mut self,
        head: Outbound<'_>,
        body: UpstreamBody,
    ) -> Result<Response<Inbound>, SendError> {
        match &mut self.sender {
            Sender::H1(conn) => {
                let Some(conn) = conn.take() else {
                    return Err(SendError {
                        error: h1::Error::ClosedBeforeAnswer.into(),
                        unsent: Some(body),
                    });
                };
                let head = h1::RequestHead {
                    method: head.method,
                    target: head.uri.path_and_query().map_or("/", |p| p.as_str()),
                    headers: head.headers,
                    interim: head.interim,
                };
                match conn.send(head, body).await {
                    Ok(resp) => Ok(resp.map(Inbound::H1)),
                    Err(e) => Err(SendError {
                        error: e.into(),
                        unsent: None,
                    }),
                }
            }
            Sender::H2(s) => {
                if let Err(error) = s.ready().await {
                    return Err(SendError {
                        error: error.into(),
                        unsent: Some(body),
                    });
                }
                let mut req = Request::new(body);
                *req.method_mut() = head.method.clone();
                *req.uri_mut() = head.uri.clone();
                *req.headers_mut() = head.headers.clone();
                *req.version_mut() = Version::HTTP_2;
                match s.try_send_request(req).await {
                    Ok(resp) => Ok(resp.map(Inbound::H2)),
                    Err(mut e) => Err(SendError {
                        unsent: e.take_message().map(Request::into_body),
                        error: e.into_error().into(),
                    }),
                }
            }
        }
    }

    /// Gives the lease back its HTTP/1.1 connection, taken from a response body read to its
    /// end.
    pub fn restore(&mut self, conn: h1::Conn) {
        if let Sender::H1(slot) = &mut self.sender {
            *slot = Some(conn);
        }
    }
}
