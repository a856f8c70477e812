//! The site proxy's TCP listeners and the PROXY protocol, end to end: the real
//! `meridian proxy` on port 0 forwarding real connections to servers written here (echo,
//! PROXY header readers, TLS servers with their own certificates).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// A TCP server on port 0 that runs `each` on every connection in a thread of its own, until
/// killed (its listener closed, so connections are refused).
struct TcpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpServer {
    fn start(each: impl Fn(TcpStream) + Send + Sync + Clone + 'static) -> TcpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let each = each.clone();
                std::thread::spawn(move || each(conn));
            }
        });
        TcpServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the listener: new connections are refused.
    fn kill(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Echoes what it reads until the client's end of stream, then says `bye from NAME` and
/// closes: the client sees both only if its half-close reached the server and the way back
/// stayed open.
fn echo(name: &'static str) -> TcpServer {
    TcpServer::start(move |mut conn| {
        let mut all = Vec::new();
        let _ = conn.read_to_end(&mut all);
        let _ = conn.write_all(&all);
        let _ = conn.write_all(format!("bye from {name}").as_bytes());
    })
}

/// A site whose TCP listener forwards to pool `p` of `servers`; `listener_extra` and
/// `pool_extra` are added to those tables, `top` before them.
fn tcp_site(servers: &[SocketAddr], listener_extra: &str, pool_extra: &str, top: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        "[proxy]\naccess_log = \"off\"\ndrain_timeout = \"2s\"\ncontrol = \"127.0.0.1:0\"\n{top}\n\n[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"p\"\n{listener_extra}\n\n[pool.p]\nservers = [{}]\n{pool_extra}\n",
        list.join(", ")
    )
}

fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: IpAddr = from.parse().unwrap();
    socket.bind(&SocketAddr::new(source, 0).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Sends `message`, half-closes, and reads everything until the proxy closes.
fn echo_through(addr: SocketAddr, message: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(message).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    let _ = c.read_to_end(&mut back);
    String::from_utf8_lossy(&back).into_owned()
}

/// Whether the proxy closes `conn` without a byte.
fn closed_without_a_word(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match conn.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn bytes_echo_through_a_tcp_listener_both_ways_with_a_half_close() {
    let server = echo("one");
    let proxy = SiteProxy::start(&tcp_site(&[server.addr], "", "", ""));
    // Larger than the copy buffers, so both directions loop.
    let message: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let back = echo_through(proxy.addr, &message);
    let expected = String::from_utf8_lossy(&message).into_owned() + "bye from one";
    assert_eq!(back.len(), expected.len());
    assert!(back == expected, "the bytes came back changed");
    let page = http(proxy.control.unwrap(), "GET", "/metrics", None, None).1;
    assert!(
        page.contains("meridian_proxy_l4_connections_total 1\n")
            && page.contains("meridian_proxy_l4_bytes_total{direction=\"in\"} 200000\n")
            && page.contains("meridian_proxy_l4_bytes_total{direction=\"out\"} 200012\n"),
        "{page}"
    );
}

#[test]
fn a_killed_server_sends_new_connections_to_the_others() {
    let mut one = echo("one");
    let two = echo("two");
    let proxy = SiteProxy::start(&tcp_site(&[one.addr, two.addr], "", "", ""));
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(echo_through(proxy.addr, b"x"));
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    one.kill();
    for _ in 0..10 {
        assert_eq!(echo_through(proxy.addr, b"x"), "xbye from two");
    }
}

/// Reads a PROXY v2 header by the protocol's layout: the source and destination it names.
fn read_v2(conn: &mut TcpStream) -> (SocketAddr, SocketAddr) {
    let mut head = [0u8; 16];
    conn.read_exact(&mut head).unwrap();
    assert_eq!(&head[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(head[12], 0x21, "version 2, PROXY command");
    assert_eq!(head[13], 0x11, "TCP over IPv4");
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    assert_eq!(len, 12);
    let mut a = [0u8; 12];
    conn.read_exact(&mut a).unwrap();
    let ip = |b: &[u8]| IpAddr::from([b[0], b[1], b[2], b[3]]);
    (
        SocketAddr::new(ip(&a[0..4]), u16::from_be_bytes([a[8], a[9]])),
        SocketAddr::new(ip(&a[4..8]), u16::from_be_bytes([a[10], a[11]])),
    )
}

#[test]
fn the_server_sees_a_correct_proxy_v2_header_before_the_bytes() {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Arc::new(std::sync::Mutex::new(tx));
    let server = TcpServer::start(move |mut conn| {
        let (source, destination) = read_v2(&mut conn);
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
        let _ = tx.lock().unwrap().send((source, destination, rest));
        let _ = conn.write_all(b"ok");
    });
    let proxy = SiteProxy::start(&tcp_site(&[server.addr], "", "proxy_protocol = \"v2\"", ""));
    let mut c = connect_from("127.0.0.5", proxy.addr);
    let me = c.local_addr().unwrap();
    c.write_all(b"payload").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = String::new();
    let _ = c.read_to_string(&mut back);
    assert_eq!(back, "ok");
    let (source, destination, rest) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(source, me);
    assert_eq!(destination, proxy.addr);
    assert_eq!(rest, b"payload");
}

#[test]
fn a_denied_tcp_client_is_closed_at_accept() {
    let server = echo("one");
    let proxy = SiteProxy::start(&tcp_site(&[server.addr], "deny = [\"127.0.0.3\"]", "", ""));
    let mut denied = connect_from("127.0.0.3", proxy.addr);
    assert!(closed_without_a_word(&mut denied));
    assert_eq!(echo_through(proxy.addr, b"x"), "xbye from one");
    let page = http(proxy.control.unwrap(), "GET", "/metrics", None, None).1;
    assert!(
        page.contains("meridian_proxy_denied_total{scope=\"listener\"} 1\n"),
        "{page}"
    );
}

/// An HTTP listener behind a load balancer that speaks the PROXY protocol: the client it
/// names is the one the servers hear of, and rate limits key on; anyone else, or a trusted
/// peer without a header, is closed.
#[test]
fn a_proxy_header_from_a_trusted_peer_names_the_client_and_anything_else_is_closed() {
    let up = Upstream::start("u");
    let site = format!(
        "[proxy]\naccess_log = \"off\"\ncontrol = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n\n[limits]\nrate = \"1/h\"\nmax_clients = 100\n\n[[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n\n[[route]]\npool = \"p\"\n\n[pool.p]\nservers = [{{ address = \"{}\" }}]\n",
        up.addr
    );
    let proxy = SiteProxy::start(&site);
    let request = "GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n";
    let through = |from: &str, header: &str| {
        let mut c = connect_from(from, proxy.addr);
        c.write_all(header.as_bytes()).unwrap();
        c.write_all(request.as_bytes()).unwrap();
        let mut back = Vec::new();
        let _ = c.read_to_end(&mut back);
        String::from_utf8_lossy(&back).into_owned()
    };
    let answer = through("127.0.0.1", "PROXY TCP4 10.1.2.3 127.0.0.1 5555 80\r\n");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\nx-forwarded-for: 10.1.2.3\n"), "{answer}");
    // The named client's second request within the hour is over its rate; another's is not.
    let again = through("127.0.0.1", "PROXY TCP4 10.1.2.3 127.0.0.1 5556 80\r\n");
    assert!(again.starts_with("HTTP/1.1 429"), "{again}");
    // Distinct clients, each named by a header, never make the limiter remember more than
    // its cap.
    for i in 0..300u32 {
        let ip = std::net::Ipv4Addr::from(0x0b00_0000 + i);
        let answer = through(
            "127.0.0.1",
            &format!("PROXY TCP4 {ip} 127.0.0.1 5555 80\r\n"),
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let page = http(proxy.control.unwrap(), "GET", "/metrics", None, None).1;
    assert!(
        page.contains("meridian_proxy_rate_limiter_clients 100\n")
            && page.contains("meridian_proxy_rate_limiter_evictions_total 201\n"),
        "{page}"
    );
    // No header from the trusted peer, or a header from a peer that is not trusted: closed.
    assert_eq!(through("127.0.0.1", ""), "");
    assert_eq!(
        through("127.0.0.2", "PROXY TCP4 10.9.9.9 127.0.0.1 5555 80\r\n"),
        ""
    );
    assert_eq!(up.hits.load(Ordering::SeqCst), 301);
    assert!(
        page.contains("meridian_proxy_limited_total{reason=\"rate\"} 1\n"),
        "{page}"
    );
}

/// A certificate for `name` made here, as PEM-free DER.
struct Pair {
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn pair(name: &str) -> Pair {
    let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    Pair {
        cert: made.cert.der().clone(),
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into()),
    }
}

/// A TLS server presenting `pair`'s certificate that answers a line with `hello from NAME`.
fn tls_server(name: &'static str, pair: &Pair) -> TcpServer {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pair.cert.clone()], pair.key.clone_key())
            .unwrap(),
    );
    TcpServer::start(move |conn| {
        let session = rustls::ServerConnection::new(config.clone()).unwrap();
        let mut tls = rustls::StreamOwned::new(session, conn);
        let mut line = [0u8; 5];
        if tls.read_exact(&mut line).is_ok() {
            let _ = tls.write_all(format!("hello from {name}").as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    })
}

/// A TLS client trusting `roots` (TLS 1.3 first, X25519MLKEM768 first)
/// that connects through `addr` asking for `name`, writing its ClientHello in two parts
/// (`split` bytes, then the rest after a pause, so the proxy reads them separately); the
/// certificate presented and the line answered.
fn tls_through(
    addr: SocketAddr,
    roots: &[&Pair],
    name: &str,
    split: usize,
) -> (rustls::pki_types::CertificateDer<'static>, String) {
    let mut store = rustls::RootCertStore::empty();
    for p in roots {
        store.add(p.cert.clone()).unwrap();
    }
    // The hybrid post-quantum group first, as rustls' default build offers it.
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![
        rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768,
        rustls::crypto::aws_lc_rs::kx_group::X25519,
    ];
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut session = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
    let mut hello = Vec::new();
    while session.wants_write() {
        session.write_tls(&mut hello).unwrap();
    }
    // A post-quantum key share makes the hello larger than one 1,200-byte datagram.
    assert!(hello.len() > 1200, "hello of {} bytes", hello.len());
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(&hello[..split]).unwrap();
    // Not a synchronisation: only so the two parts arrive as two reads.
    pace(Duration::from_millis(30));
    tcp.write_all(&hello[split..]).unwrap();
    let mut tls = rustls::StreamOwned::new(session, tcp);
    tls.write_all(b"ping\n").unwrap();
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer);
    let presented = tls.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    (presented, answer)
}

#[test]
fn tls_passthrough_routes_two_server_names_to_their_own_servers() {
    let a = pair("a.site.test");
    let b = pair("b.site.test");
    let server_a = tls_server("a", &a);
    let server_b = tls_server("b", &b);
    let site = format!(
        "[proxy]\naccess_log = \"off\"\ncontrol = \"127.0.0.1:0\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"a\"\nhello_timeout = \"1s\"\nserver_names = [{{ name = \"b.site.test\", pool = \"b\" }}]\n\n[pool.a]\nservers = [{{ address = \"{}\" }}]\n\n[pool.b]\nservers = [{{ address = \"{}\" }}]\n",
        server_a.addr, server_b.addr
    );
    let proxy = SiteProxy::start(&site);
    // The split falls inside the record header for one, inside the key share for the other.
    let (cert, answer) = tls_through(proxy.addr, &[&a, &b], "b.site.test", 3);
    assert_eq!(cert, b.cert);
    assert_eq!(answer, "hello from b");
    let (cert, answer) = tls_through(proxy.addr, &[&a, &b], "a.site.test", 700);
    assert_eq!(cert, a.cert);
    assert_eq!(answer, "hello from a");
    // A garbage first packet is closed at once; a silent client after hello_timeout.
    let mut garbage = TcpStream::connect(proxy.addr).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: a.site.test\r\n\r\n")
        .unwrap();
    assert!(closed_without_a_word(&mut garbage));
    let mut silent = TcpStream::connect(proxy.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    assert!(closed_without_a_word(&mut silent));
    assert!(started.elapsed() < Duration::from_secs(5));
    let page = http(proxy.control.unwrap(), "GET", "/metrics", None, None).1;
    assert!(
        page.contains("meridian_proxy_l4_unrouted_total 2\n"),
        "{page}"
    );
}

#[test]
fn check_refuses_tcp_listeners_it_cannot_serve_naming_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let pool = "[pool.p]\nservers = [{ address = \"127.0.0.1:9\" }]\n";
    for (text, says) in [
        (
            format!("[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"tcp\"\n\n{pool}"),
            "needs a pool",
        ),
        (
            format!("[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"q\"\n\n{pool}"),
            "unknown pool \"q\"",
        ),
        (
            format!("[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"p\"\n\n{pool}algorithm = \"hash\"\nhash_on = \"path\"\n"),
            "has no requests",
        ),
        (
            format!("[[listener]]\naddress = \"127.0.0.1:0\"\npool = \"p\"\n\n{pool}"),
            "apply to mode = \"tcp\"",
        ),
        (
            format!("[[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n\n[[route]]\npool = \"p\"\n\n{pool}"),
            "trusted_proxies",
        ),
        (
            format!("[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n{pool}proxy_protocol = \"v2\"\n"),
            "only tcp listeners send",
        ),
        (
            format!("[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"p\"\nserver_names = [{{ name = \"not a name\", pool = \"p\" }}]\n\n{pool}"),
            "not a DNS name",
        ),
    ] {
        let file = dir.path().join("site.toml");
        std::fs::write(&file, &text).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{text}: {said}");
        assert!(
            said.contains("site.toml:") && said.contains(says),
            "{text}: {said}"
        );
    }
}

/// On a TCP listener the per-client rate counts connections: over it a connection is closed
/// at once, and another client network still gets through.
#[test]
fn a_tcp_client_over_its_connection_rate_is_closed() {
    let server = echo("one");
    let proxy = SiteProxy::start(&tcp_site(
        &[server.addr],
        "",
        "",
        "\n[limits]\nrate = \"1/h\"\nburst = 2",
    ));
    for _ in 0..2 {
        assert_eq!(echo_through(proxy.addr, b"x"), "xbye from one");
    }
    let mut third = connect_from("127.0.0.1", proxy.addr);
    assert!(closed_without_a_word(&mut third));
    let mut other = connect_from("127.0.0.2", proxy.addr);
    other.write_all(b"y").unwrap();
    other.shutdown(Shutdown::Write).unwrap();
    let mut back = String::new();
    let _ = other.read_to_string(&mut back);
    assert_eq!(back, "ybye from one");
}

/// A forwarded connection with no bytes either way for `idle_timeout` is closed; one that
/// keeps talking is not.
#[test]
fn an_idle_forwarded_connection_is_closed_after_the_idle_timeout() {
    // Answers each byte it reads with the same byte.
    let server = TcpServer::start(|mut conn| {
        let mut b = [0u8; 1];
        while conn.read_exact(&mut b).is_ok() {
            if conn.write_all(&b).is_err() {
                return;
            }
        }
    });
    let proxy = SiteProxy::start(&tcp_site(&[server.addr], "idle_timeout = \"1s\"", "", ""));
    // Talking every 300 ms for 2 s: kept open throughout.
    let mut talker = connect_from("127.0.0.1", proxy.addr);
    for _ in 0..7 {
        talker.write_all(b"k").unwrap();
        let mut b = [0u8; 1];
        talker.read_exact(&mut b).unwrap();
        pace(Duration::from_millis(300));
    }
    // Silent: closed about a second later.
    let mut silent = connect_from("127.0.0.1", proxy.addr);
    silent.write_all(b"s").unwrap();
    let mut b = [0u8; 1];
    silent.read_exact(&mut b).unwrap();
    let started = std::time::Instant::now();
    assert!(closed_without_a_word(&mut silent));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
}
