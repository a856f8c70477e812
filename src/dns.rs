//! The DNS side: one synchronous function that turns query bytes into response bytes
//! ([`Responder::answer`]), and the transports that call it.
//!
//! Query path: bytes -> header checks (QR=1 dropped, malformed -> FORMERR) -> EDNS (BADVERS,
//! payload size) -> zone by longest suffix (none: REFUSED) -> [`Zone::find`] -> static RRset,
//! CNAME chain, referral, NXDOMAIN/NODATA with the RFC 2308 SOA, or a load-balanced binding
//! answered by [`policy::select`] over the health snapshot -> encode, truncate for UDP.
//!
//! Transports: each UDP listen address gets several `SO_REUSEPORT` sockets, each served by a
//! plain OS thread doing blocking receive/answer/send (the cheapest path on Linux, see
//! `../shared/BENCHMARKING.md`); a wildcard address replies from the address the query was sent
//! to (IP_PKTINFO / IPV6_PKTINFO). TCP runs on tokio.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use ipnet::IpNet;
use nix::sys::socket::{
    self as nixsock, sockopt, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{Binding, Config};
use crate::health::HealthStore;
use crate::policy::{self, ClientInfo, Family, Reason, Target};
use crate::zone::{Position, Zone};

/// A config as served: the validated config plus per-name round-robin cursors.
pub struct Loaded {
    pub config: Config,
    /// One cursor per binding; advanced once per answered query for that name.
    cursors: Vec<AtomicU64>,
    pub loaded_at: SystemTime,
    /// Counts successful loads since start.
    pub version: u64,
}

impl Loaded {
    pub fn new(config: Config, version: u64) -> Self {
        let cursors = (0..config.bindings.len())
            .map(|_| AtomicU64::new(0))
            .collect();
        Loaded {
            config,
            cursors,
            loaded_at: SystemTime::now(),
            version,
        }
    }
}

/// How the query arrived; decides the size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Answers queries from the current config and health snapshot. Shared by every transport.
pub struct Responder {
    /// Swapped whole on reload; a query in flight keeps the `Arc` it loaded.
    pub current: ArcSwap<Loaded>,
    pub health: Arc<HealthStore>,
}

const MAX_CNAME_HOPS: usize = 8;

impl Responder {
    pub fn new(loaded: Loaded, health: Arc<HealthStore>) -> Self {
        Responder {
            current: ArcSwap::from_pointee(loaded),
            health,
        }
    }

    /// Answers one query. `None` means send nothing (responses, runt packets).
    pub fn answer(&self, query: &[u8], src: SocketAddr, transport: Transport) -> Option<Vec<u8>> {
        if query.len() < 12 || query[2] & 0x80 != 0 {
            return None;
        }
        let request = match Message::from_vec(query) {
            Ok(m) => m,
            Err(_) => return Some(header_only(query, ResponseCode::FormErr)),
        };
        let loaded = self.current.load();
        let ours = loaded.config.server.edns_udp_size;
        let mut resp = Message::response(request.id, request.op_code);
        resp.metadata.recursion_desired = request.recursion_desired;
        resp.metadata.checking_disabled = request.checking_disabled;
        resp.queries = request.queries.clone();
        if let Some(req_edns) = &request.edns {
            let mut e = Edns::new();
            e.set_max_payload(ours);
            e.set_version(0);
            e.set_dnssec_ok(req_edns.flags().dnssec_ok);
            resp.edns = Some(e);
        }
        let cap = match (transport, &request.edns) {
            (Transport::Tcp, _) => u16::MAX as usize,
            (Transport::Udp, None) => 512,
            (Transport::Udp, Some(e)) => e.max_payload().clamp(512, ours.max(512)) as usize,
        };

        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            resp.metadata.response_code = ResponseCode::BADVERS;
            return encode(&mut resp, cap);
        }
        if request.op_code != OpCode::Query {
            resp.metadata.response_code = ResponseCode::NotImp;
            return encode(&mut resp, cap);
        }
        if request.queries.len() != 1
            || !request.answers.is_empty()
            || !request.authorities.is_empty()
        {
            resp.metadata.response_code = ResponseCode::FormErr;
            return encode(&mut resp, cap);
        }
        let q = &request.queries[0];
        let qname = crate::zone::fqdn_lower(&q.name);
        let zone = if q.query_class == DNSClass::IN {
            loaded
                .config
                .zones
                .iter()
                .filter(|z| z.origin.zone_of(&qname))
                .max_by_key(|z| z.origin.num_labels())
        } else {
            None
        };
        let Some(zone) = zone else {
            resp.metadata.response_code = ResponseCode::Refused;
            return encode(&mut resp, cap);
        };
        resp.metadata.authoritative = true;
        let ctx = Ctx {
            loaded: &loaded,
            health: &self.health,
            zone,
            client: ClientInfo {
                network: IpNet::from(src.ip()),
            },
        };
        ctx.resolve(qname, q.query_type, &mut resp);
        encode(&mut resp, cap)
    }
}

struct Ctx<'a> {
    loaded: &'a Loaded,
    health: &'a HealthStore,
    zone: &'a Zone,
    client: ClientInfo,
}

/// What a load-balanced binding answered.
enum LbAnswer {
    Records(Vec<Record>),
    Alias(Name, u32),
    /// Nothing to answer: NODATA with this negative TTL.
    Empty(u32),
}

impl Ctx<'_> {
    fn resolve(&self, qname: Name, qtype: RecordType, resp: &mut Message) {
        let zone = self.zone;
        let mut name = qname;
        for _ in 0..=MAX_CNAME_HOPS {
            let node = match zone.find(&name, qtype) {
                Position::Referral { cut, node } => {
                    if resp.answers.is_empty() {
                        self.referral(&cut, node, resp);
                    }
                    return;
                }
                Position::Missing => {
                    resp.metadata.response_code = ResponseCode::NXDomain;
                    resp.authorities.push(zone.negative_soa());
                    return;
                }
                Position::Exact(node) | Position::Wildcard(node) => node,
            };
            if let Some(lb) = node.lb {
                let wanted = if qtype == RecordType::ANY {
                    Some(if lb.a {
                        RecordType::A
                    } else {
                        RecordType::AAAA
                    })
                } else if lb.covers(qtype) {
                    Some(qtype)
                } else {
                    None
                };
                if let Some(t) = wanted {
                    match self.answer_lb(
                        &self.loaded.config.bindings[lb.binding],
                        lb.binding,
                        &name,
                        t,
                    ) {
                        LbAnswer::Records(rs) => resp.answers.extend(rs),
                        LbAnswer::Alias(target, ttl) => {
                            resp.answers.push(Record::from_rdata(
                                name.clone(),
                                ttl,
                                RData::CNAME(CNAME(target.clone())),
                            ));
                            if zone.origin.zone_of(&target) && qtype != RecordType::ANY {
                                name = target;
                                continue;
                            }
                        }
                        LbAnswer::Empty(neg) => {
                            let mut soa = zone.negative_soa();
                            soa.ttl = soa.ttl.min(neg);
                            resp.authorities.push(soa);
                        }
                    }
                    return;
                }
            }
            if qtype == RecordType::ANY {
                // RFC 8482: answer one RRset rather than everything.
                match node.rrsets.first() {
                    Some(set) => resp.answers.extend(owned(&set.records, &name)),
                    None => resp.authorities.push(zone.negative_soa()),
                }
                return;
            }
            if let Some(set) = node.rrset(qtype) {
                resp.answers.extend(owned(&set.records, &name));
                return;
            }
            if let Some(set) = node.rrset(RecordType::CNAME) {
                resp.answers.extend(owned(&set.records, &name));
                let RData::CNAME(CNAME(target)) = &set.records[0].data else {
                    return;
                };
                let target = crate::zone::fqdn_lower(target);
                let looped = resp.answers.iter().any(|r| r.name == target);
                if !zone.origin.zone_of(&target) || looped {
                    return;
                }
                name = target;
                continue;
            }
            resp.authorities.push(zone.negative_soa());
            return;
        }
    }

    fn referral(&self, cut: &Name, node: &crate::zone::Node, resp: &mut Message) {
        resp.metadata.authoritative = false;
        let Some(ns) = node.rrset(RecordType::NS) else {
            return;
        };
        resp.authorities.extend(ns.records.iter().cloned());
        for r in &ns.records {
            if let RData::NS(target) = &r.data {
                // In-domain glue only: addresses of name servers below the cut.
                if cut.zone_of(&target.0) {
                    resp.additionals
                        .extend(self.zone.addresses(&target.0).cloned());
                }
            }
        }
    }

    fn answer_lb(&self, b: &Binding, index: usize, owner: &Name, qtype: RecordType) -> LbAnswer {
        let family = if qtype == RecordType::A {
            Family::V4
        } else {
            Family::V6
        };
        let cursor = self.loaded.cursors[index].fetch_add(1, Ordering::Relaxed);
        let snapshot = self.health.snapshot();
        let pools = &self.loaded.config.pools;
        let sel = policy::select(
            &policy::Request {
                pools,
                pool: b.pool,
                policy: b.policy,
                answers: b.answers,
                when_all_down: &b.when_all_down,
                family,
            },
            &snapshot,
            &self.client,
            cursor,
        );
        if sel.reason == Reason::AllDown || sel.members.is_empty() {
            return LbAnswer::Empty(b.negative_ttl);
        }
        let members = sel.members.iter().map(|&(p, m)| &pools[p].members[m]);
        if let Some(Target::Alias(target)) = members.clone().next().map(|m| &m.target) {
            if let Ok(n) = Name::from_ascii(target) {
                return LbAnswer::Alias(n, b.ttl);
            }
        }
        let records = members
            .filter_map(|m| match m.target {
                Target::Addr(IpAddr::V4(a)) if family == Family::V4 => Some(RData::A(A(a))),
                Target::Addr(IpAddr::V6(a)) if family == Family::V6 => Some(RData::AAAA(AAAA(a))),
                _ => None,
            })
            .map(|rd| Record::from_rdata(owner.clone(), b.ttl, rd))
            .collect::<Vec<_>>();
        if records.is_empty() {
            LbAnswer::Empty(b.negative_ttl)
        } else {
            LbAnswer::Records(records)
        }
    }
}

/// Copies records with their owner set to `name` (wildcard answers take the query name).
fn owned<'a>(records: &'a [Record], name: &'a Name) -> impl Iterator<Item = Record> + 'a {
    records.iter().map(move |r| {
        let mut r = r.clone();
        r.name = name.clone();
        r
    })
}

/// Encodes a response; a UDP answer over `cap` goes out empty with TC set.
fn encode(resp: &mut Message, cap: usize) -> Option<Vec<u8>> {
    resp.metadata.message_type = MessageType::Response;
    let bytes = resp.to_vec().ok()?;
    if bytes.len() <= cap {
        return Some(bytes);
    }
    resp.answers.clear();
    resp.authorities.clear();
    resp.additionals.clear();
    resp.metadata.truncation = true;
    resp.to_vec().ok()
}

/// A bare header answer for packets too broken to parse: ID, opcode and RD copied.
fn header_only(query: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let mut out = vec![0u8; 12];
    out[0] = query[0];
    out[1] = query[1];
    out[2] = 0x80 | (query[2] & 0x79); // QR, opcode, RD
    out[3] = rcode.low();
    out
}

/// The running DNS listeners. Dropping without [`DnsServer::shutdown`] leaves threads running.
pub struct DnsServer {
    pub addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    tcp_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DnsServer {
    /// Binds every listen address (TCP first, then `workers` UDP sockets on the same port) and
    /// starts serving. Port 0 picks one free port per address, shared by TCP and UDP.
    pub fn bind(
        listen: &[SocketAddr],
        workers: usize,
        responder: Arc<Responder>,
    ) -> io::Result<DnsServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut server = DnsServer {
            addrs: Vec::new(),
            stop: stop.clone(),
            threads: Vec::new(),
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
                    .spawn(move || udp_loop(sock, responder, stop, wildcard))?;
                server.threads.push(t);
            }
            let listener = tokio::net::TcpListener::from_std(tcp)?;
            server
                .tcp_tasks
                .push(tokio::spawn(tcp_accept(listener, responder.clone())));
        }
        Ok(server)
    }

    /// Stops every listener and waits for the UDP threads to finish.
    pub async fn shutdown(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in &self.tcp_tasks {
            t.abort();
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

const TCP_IDLE: Duration = Duration::from_secs(10);
const TCP_MAX_CONNECTIONS: usize = 512;

async fn tcp_accept(listener: tokio::net::TcpListener, responder: Arc<Responder>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(TCP_MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            drop(stream); // over the connection limit
            continue;
        };
        let responder = responder.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp_conn(stream, peer, responder).await;
        });
    }
}

async fn tcp_conn(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    responder: Arc<Responder>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 65535];
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(l)) => l as usize,
            _ => return Ok(()),
        };
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf[..len]))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        let Some(reply) = responder.answer(&buf[..len], peer, Transport::Tcp) else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        out.extend_from_slice(&reply);
        stream.write_all(&out).await?;
    }
}
