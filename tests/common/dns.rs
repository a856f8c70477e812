//! A DNS client over UDP and TCP built on hickory-proto: queries with EDNS, ECS, NSID and
//! cookie options, and reading the answers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};

/// Query options beyond name and type.
#[derive(Default, Clone)]
pub struct Opts {
    /// Add an OPT with this payload size.
    pub edns: Option<u16>,
    pub edns_version: u8,
    pub dnssec_ok: bool,
    /// An ECS option (implies EDNS 1232 when `edns` is not set).
    pub ecs: Option<ipnet::IpNet>,
    /// Raw ECS option bytes, for malformed options.
    pub raw_ecs: Option<Vec<u8>>,
    /// Ask for the server's NSID.
    pub nsid: bool,
    /// A COOKIE option with these bytes.
    pub cookie: Option<Vec<u8>>,
}

impl Opts {
    /// An OPT with this payload size and nothing else.
    pub fn edns(size: u16) -> Opts {
        Opts {
            edns: Some(size),
            ..Default::default()
        }
    }

    pub fn ecs(net: &str) -> Opts {
        Opts {
            ecs: Some(net.parse().unwrap()),
            ..Default::default()
        }
    }
}

pub fn build_query(name: &str, rtype: RecordType, opts: Option<&Opts>) -> Vec<u8> {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(o) = opts {
        let wants_edns = o.edns.is_some()
            || o.ecs.is_some()
            || o.raw_ecs.is_some()
            || o.nsid
            || o.cookie.is_some();
        if wants_edns {
            let mut e = Edns::new();
            e.set_max_payload(o.edns.unwrap_or(1232));
            e.set_version(o.edns_version);
            e.set_dnssec_ok(o.dnssec_ok);
            if let Some(net) = o.ecs {
                e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                    net.network(),
                    net.prefix_len(),
                    0,
                )));
            }
            if let Some(raw) = &o.raw_ecs {
                e.options_mut().insert(EdnsOption::Unknown(8, raw.clone()));
            }
            if o.nsid {
                e.options_mut().insert(EdnsOption::Unknown(3, Vec::new()));
            }
            if let Some(c) = &o.cookie {
                e.options_mut().insert(EdnsOption::Unknown(10, c.clone()));
            }
            m.set_edns(e);
        }
    }
    m.to_vec().unwrap()
}

fn rand_id() -> u16 {
    use std::sync::atomic::AtomicU32;
    static N: AtomicU32 = AtomicU32::new(1);
    (N.fetch_add(7919, Ordering::Relaxed) & 0xffff) as u16
}

/// Sends raw bytes over UDP and returns the parsed reply (3 tries, 2 s each).
pub fn query_udp(addr: SocketAddr, bytes: &[u8]) -> Message {
    let raw = query_udp_raw(addr, bytes).expect("no UDP reply");
    Message::from_vec(&raw).expect("reply parses")
}

pub fn query_udp_raw(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let local = if addr.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let sock = UdpSocket::bind(local).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = vec![0u8; 65535];
    for _ in 0..3 {
        sock.send_to(bytes, addr).unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

/// Sends one query over TCP and returns the parsed reply.
pub fn query_tcp(addr: SocketAddr, bytes: &[u8]) -> Message {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp_exchange(&mut s, bytes).expect("a TCP reply")
}

/// One query on an open TCP connection; `None` when the server closed it instead.
pub fn tcp_exchange(stream: &mut TcpStream, bytes: &[u8]) -> Option<Message> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    stream.write_all(&out).ok()?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).ok()?;
    Message::from_vec(&buf).ok()
}

/// The answer section's data as sorted strings.
pub fn answers(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}
