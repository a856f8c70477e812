//! The transports: UDP on plain OS threads (one per `SO_REUSEPORT` socket, batched with
//! `recvmmsg`/`sendmmsg`) and TCP on tokio.
//! Both call [`Responder::answer`]; nothing DNS-specific happens here.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{
    self as nixsock, sockopt, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Responder, Transport};

/// The running DNS listeners. Dropping without [`DnsServer::shutdown`] leaves threads running.
pub struct DnsServer {
    pub addrs: Vec<SocketAddr>,
    /// Set once to stop: the UDP threads check it after each batch (their sockets time out
    /// every 200 ms).
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Tells the TCP listeners to stop accepting and their connections to finish the query
    /// in hand.
    tcp_stop: tokio::sync::watch::Sender<bool>,
    tcp_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How long a stopping server lets TCP connections finish the query in hand.
const DRAIN: Duration = Duration::from_secs(2);

impl DnsServer {
    /// Binds every listen address (TCP first, then `workers` UDP sockets on the same port) and
    /// starts serving. Port 0 picks one free port per address, shared by TCP and UDP.
    pub fn bind(
        listen: &[SocketAddr],
        workers: usize,
        responder: Arc<Responder>,
    ) -> io::Result<DnsServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tcp_stop, tcp_stopping) = tokio::sync::watch::channel(false);
        let mut server = DnsServer {
            addrs: Vec::new(),
            stop: stop.clone(),
            threads: Vec::new(),
            tcp_stop,
            tcp_tasks: Vec::new(),
        };
        for &addr in listen {
            let (tcp, udps) = bind_pair(addr, workers)?;
            let bound = tcp.local_addr()?;
            server.addrs.push(bound);
            let wildcard = addr.ip().is_unspecified();
            for (i, sock) in udps.into_iter().enumerate() {
                let responder = responder.clone();
                let stop = stop.clone();
                let t = std::thread::Builder::new()
                    .name(format!("dns-udp-{i}"))
                    .spawn(move || {
                        if wildcard {
                            udp_loop(sock, responder, stop, true)
                        } else {
                            udp_batch_loop(sock, responder, stop)
                        }
                    })?;
                server.threads.push(t);
            }
            let listener = tokio::net::TcpListener::from_std(tcp)?;
            server.tcp_tasks.push(tokio::spawn(tcp_accept(
                listener,
                responder.clone(),
                tcp_stopping.clone(),
            )));
        }
        Ok(server)
    }

    /// Stops every listener: UDP threads finish their batch, TCP connections the query in
    /// hand (for up to `DRAIN`); returns when all have.
    pub async fn shutdown(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.tcp_stop.send(true);
        for t in self.tcp_tasks {
            let _ = t.await;
        }
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

fn bind_pair(
    addr: SocketAddr,
    workers: usize,
) -> io::Result<(std::net::TcpListener, Vec<UdpSocket>)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let mut last_err = None;
    // With port 0 the TCP port may already be taken for UDP: try a few ports.
    for _ in 0..8 {
        let tcp = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        tcp.set_reuse_address(true)?;
        if addr.is_ipv6() {
            tcp.set_only_v6(true)?;
        }
        tcp.bind(&addr.into())?;
        tcp.listen(1024)?;
        tcp.set_nonblocking(true)?;
        let port_addr = tcp.local_addr()?.as_socket().expect("inet socket");
        let mut udps = Vec::new();
        let mut failed = None;
        for _ in 0..workers.max(1) {
            let udp = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
            udp.set_reuse_port(true)?;
            if addr.is_ipv6() {
                udp.set_only_v6(true)?;
            }
            if let Err(e) = udp.bind(&port_addr.into()) {
                failed = Some(e);
                break;
            }
            udp.set_read_timeout(Some(Duration::from_millis(200)))?;
            let udp: UdpSocket = udp.into();
            if addr.ip().is_unspecified() {
                if addr.is_ipv4() {
                    nixsock::setsockopt(&udp, sockopt::Ipv4PacketInfo, &true)?;
                } else {
                    nixsock::setsockopt(&udp, sockopt::Ipv6RecvPacketInfo, &true)?;
                }
            }
            udps.push(udp);
        }
        match failed {
            None => return Ok((tcp.into(), udps)),
            Some(e) if addr.port() == 0 => last_err = Some(e),
            Some(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no free port")))
}

fn udp_loop(sock: UdpSocket, responder: Arc<Responder>, stop: Arc<AtomicBool>, pktinfo: bool) {
    let mut buf = vec![0u8; 65535];
    while !stop.load(Ordering::Relaxed) {
        let result = if pktinfo {
            recv_with_dst(&sock, &mut buf)
        } else {
            sock.recv_from(&mut buf).map(|(n, src)| (n, src, None))
        };
        let (n, src, dst) = match result {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!(error = %e, "udp receive failed");
                continue;
            }
        };
        // A bug in one answer must not take a socket's worker down with it.
        let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            responder.answer(&buf[..n], src, Transport::Udp)
        }));
        let Ok(Some(reply)) = answered else {
            continue;
        };
        let sent = match dst {
            Some(dst) => send_from(&sock, &reply, src, &dst),
            None => sock.send_to(&reply, src).map(|_| ()),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, %src, "udp send failed");
        }
    }
}

/// Datagrams taken from (and answers handed to) the kernel per system call.
const BATCH: usize = 32;
/// Larger queries are cut at this size; no sensible query comes close.
const MAX_QUERY: usize = 4096;

/// The UDP worker for a specific address: `recvmmsg`/`sendmmsg` in batches, one synchronous
/// answer per datagram, no allocation once warm (answer buffers are reused).
fn udp_batch_loop(sock: UdpSocket, responder: Arc<Responder>, stop: Arc<AtomicBool>) {
    use nix::libc;
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; MAX_QUERY]; BATCH];
    // SAFETY: all-zero bytes are valid values of these plain C structs.
    let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut riov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut rmsgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut siov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut smsgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1232)).collect();
    let storage_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..BATCH {
            riov[i] = libc::iovec {
                iov_base: bufs[i].as_mut_ptr().cast(),
                iov_len: MAX_QUERY,
            };
            let h = &mut rmsgs[i].msg_hdr;
            h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = storage_len;
            h.msg_iov = &mut riov[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            rmsgs[i].msg_len = 0;
        }
        // SAFETY: every header points at live buffers owned by this function.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                rmsgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ) {
                tracing::warn!(error = %e, "udp receive failed");
            }
            continue;
        }
        let mut m = 0;
        for i in 0..n as usize {
            let len = rmsgs[i].msg_len as usize;
            let Some(src) = to_std(&addrs[i]) else {
                continue;
            };
            if rmsgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                continue;
            }
            let query = &bufs[i][..len];
            let out = &mut outs[m];
            // A bug in one answer must not take the socket's worker down with it.
            let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                responder.answer_into(query, src, Transport::Udp, out)
            }));
            if !matches!(answered, Ok(true)) {
                continue;
            }
            siov[m] = libc::iovec {
                iov_base: outs[m].as_mut_ptr().cast(),
                iov_len: outs[m].len(),
            };
            let h = &mut smsgs[m].msg_hdr;
            h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = rmsgs[i].msg_hdr.msg_namelen;
            h.msg_iov = &mut siov[m];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            m += 1;
        }
        let mut sent = 0;
        while sent < m {
            // SAFETY: as above; `sent < m <= BATCH`.
            let r =
                unsafe { libc::sendmmsg(fd, smsgs.as_mut_ptr().add(sent), (m - sent) as u32, 0) };
            if r <= 0 {
                let e = io::Error::last_os_error();
                tracing::debug!(error = %e, "udp send failed");
                // Skip the datagram that failed and carry on with the rest.
                sent += 1;
                continue;
            }
            sent += r as usize;
        }
    }
}

/// A kernel socket address as a std one (IPv4 or IPv6 only).
fn to_std(a: &nix::libc::sockaddr_storage) -> Option<SocketAddr> {
    use nix::libc;
    match a.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let v4 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((
                u32::from_be(v4.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let v6 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::from((
                v6.sin6_addr.s6_addr,
                u16::from_be(v6.sin6_port),
            )))
        }
        _ => None,
    }
}

/// The local address a datagram was sent to, for replying from the same address.
enum Dst {
    V4(nix::libc::in_pktinfo),
    V6(nix::libc::in6_pktinfo),
}

fn recv_with_dst(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<Dst>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::libc::in6_pktinfo);
    let msg = nixsock::recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )?;
    let src = msg
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|s| SocketAddr::from((s.ip(), s.port())))
                .or_else(|| {
                    a.as_sockaddr_in6()
                        .map(|s| SocketAddr::from((s.ip(), s.port())))
                })
        })
        .ok_or_else(|| io::Error::other("datagram without a source address"))?;
    let mut dst = None;
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::Ipv4PacketInfo(pi) => dst = Some(Dst::V4(pi)),
            ControlMessageOwned::Ipv6PacketInfo(pi) => dst = Some(Dst::V6(pi)),
            _ => {}
        }
    }
    Ok((msg.bytes, src, dst))
}

fn send_from(sock: &UdpSocket, reply: &[u8], to: SocketAddr, dst: &Dst) -> io::Result<()> {
    let iov = [IoSlice::new(reply)];
    let to = SockaddrStorage::from(to);
    match dst {
        Dst::V4(pi) => {
            let mut out = *pi;
            out.ipi_spec_dst = pi.ipi_addr;
            out.ipi_ifindex = 0;
            nixsock::sendmsg(
                sock.as_raw_fd(),
                &iov,
                &[ControlMessage::Ipv4PacketInfo(&out)],
                MsgFlags::empty(),
                Some(&to),
            )?;
        }
        Dst::V6(pi) => {
            nixsock::sendmsg(
                sock.as_raw_fd(),
                &iov,
                &[ControlMessage::Ipv6PacketInfo(pi)],
                MsgFlags::empty(),
                Some(&to),
            )?;
        }
    }
    Ok(())
}

/// Open connections per client address; the guard gives its slot back when dropped.
struct PerClient {
    open: std::sync::Mutex<crate::hash::FastMap<std::net::IpAddr, usize>>,
    limit: usize,
}

struct ClientSlot {
    table: Arc<PerClient>,
    ip: std::net::IpAddr,
}

impl PerClient {
    fn take(table: &Arc<PerClient>, ip: std::net::IpAddr) -> Option<ClientSlot> {
        let mut open = table.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= table.limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

async fn tcp_accept(
    listener: tokio::net::TcpListener,
    responder: Arc<Responder>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let settings = responder.current.load().config.server.tcp.clone();
    let limit = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let per_client = Arc::new(PerClient {
        open: Default::default(),
        limit: settings.max_per_client,
    });
    let idle = settings.idle_timeout;
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopping.changed() => break,
        };
        // Finished connections leave the set as they go.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = PerClient::take(&per_client, peer.ip());
        let (Ok(permit), Some(slot)) = (limit.clone().try_acquire_owned(), slot) else {
            // Over the connection limit, or this client's share of it.
            responder.tcp_refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let responder = responder.clone();
        let stopping = stopping.clone();
        connections.spawn(async move {
            let _held = (permit, slot);
            let _ = tcp_conn(stream, peer, responder, idle, stopping).await;
        });
    }
    // Stopping: connections finish the query in hand, then close; stragglers are cut.
    let drained = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

async fn tcp_conn(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    responder: Arc<Responder>,
    idle: Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 65535];
    loop {
        if *stopping.borrow() {
            return Ok(());
        }
        // Between queries a stopping server closes the connection; a query begun is answered.
        let len = tokio::select! {
            read = tokio::time::timeout(idle, stream.read_u16()) => match read {
                Ok(Ok(l)) => l as usize,
                _ => return Ok(()),
            },
            _ = stopping.changed() => return Ok(()),
        };
        tokio::time::timeout(idle, stream.read_exact(&mut buf[..len]))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        let query = &buf[..len];
        // Transfers answer with several messages; anything else with one.
        if let Some(messages) = responder.transfer(query, peer) {
            for m in messages {
                let mut framed = Vec::with_capacity(m.len() + 2);
                framed.extend_from_slice(&(m.len() as u16).to_be_bytes());
                framed.extend_from_slice(&m);
                stream.write_all(&framed).await?;
            }
            continue;
        }
        let Some(reply) = responder.answer(query, peer, Transport::Tcp) else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        out.extend_from_slice(&reply);
        stream.write_all(&out).await?;
    }
}
