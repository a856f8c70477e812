//! Transports: a wildcard listen address replies from the address the query was sent to,
//! IPv6 over UDP and TCP, and garbage never stops the server.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

#[test]
fn wildcard_listener_replies_from_the_queried_address() {
    let cfg = ConfigDir::new(&zone_with("www IN A 192.0.2.80\n"), "");
    let srv = Server::start_with(&cfg, &["--listen", "0.0.0.0:0", "--listen", "[::]:0"]);
    let port = srv.dns_all[0].port();
    // A connected socket accepts only replies whose source is the address it sent to.
    for dst in ["127.0.0.1", "127.0.0.2", "127.0.0.53"] {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        sock.connect(SocketAddr::new(dst.parse().unwrap(), port))
            .unwrap();
        sock.send(&build_query("www.example.test.", RecordType::A, None))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no reply from {dst}: {e}"));
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(answers(&m), vec!["192.0.2.80"]);
    }
    // The IPv6 wildcard answers on ::1.
    let v6 = SocketAddr::new("::1".parse().unwrap(), srv.dns_all[1].port());
    let sock = UdpSocket::bind("[::1]:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.connect(v6).unwrap();
    sock.send(&build_query("www.example.test.", RecordType::A, None))
        .unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(
        answers(&Message::from_vec(&buf[..n]).unwrap()),
        vec!["192.0.2.80"]
    );
}

#[test]
fn ipv6_udp_and_tcp() {
    let cfg = ConfigDir::new(&zone_with("www IN AAAA 2001:db8::80\n"), "");
    let srv = Server::start_with(&cfg, &["--listen", "[::1]:0"]);
    assert!(srv.dns.is_ipv6());
    let q = build_query("www.example.test.", RecordType::AAAA, None);
    assert_eq!(answers(&query_udp(srv.dns, &q)), vec!["2001:db8::80"]);
    assert_eq!(answers(&query_tcp(srv.dns, &q)), vec!["2001:db8::80"]);
}

#[test]
fn random_garbage_never_stops_the_server() {
    let cfg = ConfigDir::new(&zone_with("www IN A 192.0.2.80\n"), "");
    let srv = Server::start(&cfg);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let valid = build_query("www.example.test.", RecordType::A, None);
    // A deterministic generator: random bytes, and valid queries with bytes flipped.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..3000 {
        let pkt: Vec<u8> = if i % 2 == 0 {
            (0..(next() % 600) as usize).map(|_| next() as u8).collect()
        } else {
            let mut p = valid.clone();
            for _ in 0..(1 + next() % 4) {
                let at = (next() as usize) % p.len();
                p[at] = next() as u8;
            }
            p
        };
        sock.send_to(&pkt, srv.dns).unwrap();
    }
    // TCP: a length prefix with a short body, then a close.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(srv.dns).unwrap();
        s.write_all(&[0x01, 0x00, 1, 2, 3]).unwrap();
    }
    let r = srv.query("www.example.test.", RecordType::A);
    assert_eq!(answers(&r), vec!["192.0.2.80"]);
    assert_eq!(answers(&query_tcp(srv.dns, &valid)), vec!["192.0.2.80"]);
}

#[test]
fn tcp_connections_are_limited_per_client_and_idle_ones_closed() {
    let cfg = ConfigDir::new_with(
        &zone_with("www IN A 192.0.2.80\n"),
        "",
        "[server.tcp]\nmax_per_client = 2\nidle_timeout = \"1s\"",
        "",
    );
    let srv = Server::start(&cfg);
    let q = build_query("www.example.test.", RecordType::A, None);
    let connect = || {
        let s = std::net::TcpStream::connect(srv.dns).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    let mut first = connect();
    let mut second = connect();
    assert!(tcp_exchange(&mut first, &q).is_some());
    assert!(tcp_exchange(&mut second, &q).is_some());
    // A third connection from the same client is closed without an answer.
    let mut third = connect();
    assert!(tcp_exchange(&mut third, &q).is_none());
    assert!(srv.status()["tcp_refused"].as_u64().unwrap() >= 1);
    // Closing one frees its slot.
    drop(first);
    assert!(wait_until(Duration::from_secs(5), || tcp_exchange(
        &mut connect(),
        &q
    )
    .is_some()));
    // An idle connection is closed by the server (idle_timeout 1 s): a read sees the end of
    // the stream rather than its own 5 s timeout.
    let mut byte = [0u8; 1];
    let read = std::io::Read::read(&mut second, &mut byte);
    assert!(
        matches!(read, Ok(0)),
        "idle connection still open: {read:?}"
    );
}

#[test]
fn sigterm_drains_connections_and_exits_cleanly() {
    use std::io::Read;
    let cfg = ConfigDir::new(&zone_with("www IN A 192.0.2.80\n"), "");
    let mut srv = Server::start(&cfg);
    // An open DNS-over-TCP connection between queries, and an idle control connection.
    let mut dns = std::net::TcpStream::connect(srv.dns).unwrap();
    dns.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let q = build_query("www.example.test.", RecordType::A, None);
    assert_eq!(
        answers(&tcp_exchange(&mut dns, &q).expect("an answer")),
        ["192.0.2.80"]
    );
    let mut control = std::net::TcpStream::connect(srv.control).unwrap();
    control
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // One request answered on it first, so the server has accepted it (a connection still in
    // the listen queue when the listener closes is reset, not drained).
    {
        use std::io::Write;
        write!(
            control,
            "GET /status HTTP/1.1\r\nHost: {}\r\n\r\n",
            srv.control
        )
        .unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let complete = |got: &[u8]| {
            let text = String::from_utf8_lossy(got);
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                return false;
            };
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            body.len() >= length
        };
        while !complete(&got) {
            let n = control.read(&mut chunk).expect("the status answer");
            assert!(n > 0, "the control endpoint closed before answering");
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"));
    }

    srv.signal(nix::sys::signal::Signal::SIGTERM);
    // Both are closed by the server (end of stream, not a read timeout)...
    let mut byte = [0u8; 1];
    assert_eq!(dns.read(&mut byte).expect("closed, not timed out"), 0);
    assert_eq!(control.read(&mut byte).expect("closed, not timed out"), 0);
    // ...and the process exits on its own, successfully.
    assert!(wait_until(Duration::from_secs(10), || srv
        .child
        .try_wait()
        .unwrap()
        .is_some()));
    let status = srv.child.try_wait().unwrap().unwrap();
    assert!(status.success(), "{status}: {}", srv.stderr());
    assert!(srv.stderr().contains("shutting down"));
}
