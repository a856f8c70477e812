//! Latency steering against real processes: two `meridian proxy` sites behind one `meridian
//! serve` with the `latency` policy. Clients of one network reach each site through a relay
//! of this test that names them with a PROXY v2 header; the relay to one site holds every
//! chunk a while (this kernel has no netem). Their network's answers converge on the faster
//! site as the sites measure the TLS handshakes, with the ECS scope of that network; a
//! network nobody measured gets the geo answer, with the geo scope.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::rr::RecordType;

/// A relay in front of `to`: each connection is announced as coming from `client` (PROXY
/// v2), and every chunk is held `delay` before it is passed on, both ways.
struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(to: SocketAddr, client: SocketAddr, delay: Duration) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inbound, _)) => {
                        inbound.set_nonblocking(false).unwrap();
                        let mut outbound = TcpStream::connect(to).unwrap();
                        outbound.write_all(&proxy_v2(client, to)).unwrap();
                        for (mut from, mut into) in [
                            (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                            (outbound, inbound),
                        ] {
                            std::thread::spawn(move || {
                                from.set_read_timeout(Some(Duration::from_secs(10))).ok();
                                let mut buf = [0u8; 16 * 1024];
                                while let Ok(n @ 1..) = from.read(&mut buf) {
                                    // The slow path itself, not a synchronisation.
                                    pace(delay);
                                    if into.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                let _ = into.shutdown(std::net::Shutdown::Write);
                            });
                        }
                    }
                    Err(_) => pace(Duration::from_millis(5)),
                }
            }
        });
        Relay { addr, stop }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A PROXY protocol v2 header for a TCP over IPv4 connection from `client` to `to`.
fn proxy_v2(client: SocketAddr, to: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(c), SocketAddr::V4(t)) = (client, to) else {
        panic!("IPv4 only here");
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&c.ip().octets());
    h.extend_from_slice(&t.ip().octets());
    h.extend_from_slice(&c.port().to_be_bytes());
    h.extend_from_slice(&t.port().to_be_bytes());
    h
}

/// A site proxy with a TLS listener that takes PROXY headers from loopback, in front of
/// `server`, and a report listener.
fn tls_site(server: &Backend, cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> SiteProxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("www.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("www.key"), cert.signing_key.serialize_pem()).unwrap();
    SiteProxy::start_in(
        dir,
        &format!(
            "[proxy]\naccess_log = \"off\"\ntrusted_proxies = [\"127.0.0.1\"]\nreport = {{ address = \"127.0.0.1:0\" }}\n\n[[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\ntls = {{ certificates = [{{ cert = \"www.pem\", key = \"www.key\" }}] }}\n\n[[route]]\npool = \"p\"\n\n[pool.p]\nservers = [{{ address = \"{}\" }}]\n",
            server.addr
        ),
    )
}

/// One visit of a client: a TLS handshake through `relay` and a request.
fn visit(relay: &Relay, config: &Arc<rustls::ClientConfig>) {
    let name = rustls::pki_types::ServerName::try_from("www.example.test").unwrap();
    let session = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let tcp = TcpStream::connect(relay.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(session, tcp);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: www.example.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn a_client_network_converges_on_the_site_with_the_shorter_round_trip() {
    let cert = rcgen::generate_simple_self_signed(vec!["www.example.test".to_string()]).unwrap();
    let (server_slow, server_fast) = (Backend::start(200), Backend::start(200));
    let (slow, fast) = (tls_site(&server_slow, &cert), tls_site(&server_fast, &cert));
    let client: SocketAddr = "10.1.2.3:40000".parse().unwrap();
    let to_slow = Relay::start(slow.addr, client, Duration::from_millis(30));
    let to_fast = Relay::start(fast.addr, client, Duration::ZERO);

    let gslb = format!(
        r#"
[[name]]
name = "www"
policy = "latency"
pool = "sites"

[pool.sites]
check = "load"
members = [
  {{ site = "slow", address = "192.0.2.1", probe = "{}" }},
  {{ site = "fast", address = "192.0.2.2", probe = "{}" }},
]

[check.load]
kind = "proxy-load"
interval = "200ms"
rise = 1
fall = 1

# The demo database places 10.1.0.0/17 in Frankfurt, 10.2.0.0/16 in Ashburn.
[site.slow]
location = [50.11, 8.68]
[site.fast]
location = [39.04, -77.49]
"#,
        slow.report.unwrap(),
        fast.report.unwrap()
    );
    let cfg = ConfigDir::new_with(&zone_with(""), &gslb, "geo_database = \"geo.mmdb\"", "");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/geo/demo-city.mmdb"),
        cfg.path("geo.mmdb"),
    )
    .unwrap();
    let srv = Server::start(&cfg);
    assert!(wait_until(Duration::from_secs(10), || {
        let st = srv.status();
        st["pools"][0]["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["health"] == "up")
    }));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );

    // Clients of 10.1.2.0/24 (Frankfurt) ask, then go where they are sent. Nobody has
    // measured them yet: geography sends them to the slow site, and once it has measured
    // them a share of answers tries the other one, so both sites come to measure them.
    let ask = |net: &str| {
        let (answers, scope) = srv.query_ecs("www.example.test.", RecordType::A, net);
        assert_eq!(answers.len(), 1, "{answers:?}");
        (answers[0].clone(), scope)
    };
    assert_eq!(ask("10.1.2.0/24"), ("192.0.2.1".to_string(), Some(17)));
    let mut fast_in_a_row = 0;
    let mut queries = 0;
    while fast_in_a_row < 30 && queries < 600 {
        queries += 1;
        let (answer, _) = ask("10.1.2.0/24");
        if answer == "192.0.2.2" {
            fast_in_a_row += 1;
            visit(&to_fast, &config);
        } else {
            fast_in_a_row = 0;
            visit(&to_slow, &config);
        }
    }
    assert_eq!(fast_in_a_row, 30, "no convergence in {queries} queries");
    eprintln!("converged on the fast site after {queries} queries");
    assert!(queries <= 200, "{queries} queries to converge");

    // Both sites' proxies published the network, as status shows.
    let st = srv.status();
    for m in st["pools"][0]["members"].as_array().unwrap() {
        assert!(m["rtt_networks"].as_u64() >= Some(1), "{m}");
    }

    // Measured: scoped to the network the measurements are about.
    assert_eq!(ask("10.1.2.0/24"), ("192.0.2.2".to_string(), Some(24)));
    assert_eq!(ask("10.1.2.128/25").0, "192.0.2.2");
    // Networks nobody measured, and one too wide to say anything about a /24: geography,
    // with its scope.
    assert_eq!(ask("10.1.9.0/24"), ("192.0.2.1".to_string(), Some(17)));
    assert_eq!(ask("10.2.9.0/24"), ("192.0.2.2".to_string(), Some(16)));
    assert_eq!(ask("10.1.0.0/16").0, "192.0.2.1");

    let why = srv.explain(&[
        "www.example.test",
        "--client",
        "192.0.2.9",
        "--ecs",
        "10.1.2.0/24",
    ]);
    assert!(
        why.contains("round trips measured from 10.1.2.0/24"),
        "{why}"
    );
    assert!(why.contains("fast "), "{why}");
}
