//! HTTPS probes against a real TLS backend: SNI and Host, a custom CA, verification on by
//! default, the explicit opt-out, body matching, and shared identical probes.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The (SNI, Host) pairs a backend saw, in order.
type Seen = Arc<Mutex<Vec<(Option<String>, String)>>>;

/// A TLS backend for `backend.test`, signed by a throwaway CA; records SNI and Host it saw.
struct TlsBackend {
    addr: SocketAddr,
    ca_pem: String,
    seen: Seen,
    requests: Arc<AtomicUsize>,
}

fn tls_backend(body: &'static str) -> TlsBackend {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["backend.test".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(AtomicUsize::new(0));
    let (seen2, requests2) = (seen.clone(), requests.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(10_000) {
            let Ok(mut tcp) = stream else { continue };
            tcp.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
            let mut buf = [0u8; 4096];
            let Ok(n) = tls.read(&mut buf) else { continue };
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let host = req
                .lines()
                .find_map(|l| {
                    l.strip_prefix("host: ")
                        .or_else(|| l.strip_prefix("Host: "))
                })
                .unwrap_or_default()
                .to_string();
            let _ = write!(
                tls,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.flush();
            let sni = tls.conn.server_name().map(str::to_string);
            seen2.lock().unwrap().push((sni, host));
            requests2.fetch_add(1, Ordering::Relaxed);
        }
    });
    TlsBackend {
        addr,
        ca_pem: ca.pem(),
        seen,
        requests,
    }
}

#[test]
fn https_probes_verify_with_custom_ca_send_sni_and_host() {
    let backend = tls_backend("status: green");
    let gslb = format!(
        r#"
[[name]]
name = "www"
policy = "all"
pool = "p"
when_all_down = "nodata"

[pool.p]
check = "https-ca"
members = [ {{ site = "ca", address = "192.0.2.1", probe = "{a}" }} ]

[pool.q]
check = "https-default"
members = [ {{ site = "default", address = "192.0.2.2", probe = "{a}" }} ]

[pool.r]
check = "https-insecure"
members = [ {{ site = "insecure", address = "192.0.2.3", probe = "{a}" }} ]

[pool.s]
check = "https-body"
members = [ {{ site = "body", address = "192.0.2.4", probe = "{a}" }} ]

[check.https-ca]
kind = "https"
host = "backend.test"
path = "/healthz"
ca_file = "ca.pem"
body_contains = "green"
interval = "200ms"

[check.https-default]
kind = "https"
host = "backend.test"
interval = "200ms"

[check.https-insecure]
kind = "https"
host = "other.name"
verify_tls = false
interval = "200ms"

[check.https-body]
kind = "https"
host = "backend.test"
ca_file = "ca.pem"
body_contains = "red"
interval = "200ms"
"#,
        a = backend.addr
    );
    let cfg = ConfigDir::new(&zone_with(""), &gslb);
    cfg.write("ca.pem", &backend.ca_pem);
    let srv = Server::start(&cfg);
    let settled = |id: &str| {
        let mut h = String::new();
        assert!(wait_until(Duration::from_secs(10), || {
            h = srv.member_health(id);
            h != "unknown"
        }));
        h
    };
    assert_eq!(
        settled("ca/192.0.2.1"),
        "up",
        "custom CA verifies the backend"
    );
    assert_eq!(
        settled("default/192.0.2.2"),
        "down",
        "verification is on by default"
    );
    assert_eq!(
        settled("insecure/192.0.2.3"),
        "up",
        "explicit opt-out skips verification"
    );
    assert_eq!(
        settled("body/192.0.2.4"),
        "down",
        "body substring is required"
    );
    let seen = backend.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|(sni, host)| sni.as_deref() == Some("backend.test")
                && host.starts_with("backend.test")),
        "SNI and Host carry the configured name: {seen:?}"
    );
}

#[test]
fn identical_probes_run_once() {
    let backend = tls_backend("ok");
    let gslb = format!(
        r#"
[pool.p]
check = "c"
members = [
  {{ site = "a", address = "192.0.2.1", probe = "{a}" }},
  {{ site = "a", address = "2001:db8::1", probe = "{a}" }},
]
[pool.q]
check = "c"
members = [ {{ site = "b", address = "192.0.2.9", probe = "{a}" }} ]

[check.c]
kind = "https"
host = "backend.test"
ca_file = "ca.pem"
interval = "300ms"
jitter = "0%"
"#,
        a = backend.addr
    );
    let cfg = ConfigDir::new(&zone_with(""), &gslb);
    cfg.write("ca.pem", &backend.ca_pem);
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(cfg.config())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 distinct probe(s)"), "{text}");
    let srv = Server::start(&cfg);
    assert!(wait_until(Duration::from_secs(10), || srv
        .member_health("b/192.0.2.9")
        == "up"));
    assert_eq!(srv.member_health("a/192.0.2.1"), "up");
    assert_eq!(srv.member_health("a/2001:db8::1"), "up");
    // Three members, one probe: about one request per interval, not three.
    let before = backend.requests.load(Ordering::Relaxed);
    let t0 = std::time::Instant::now();
    assert!(wait_until(Duration::from_secs(10), || backend
        .requests
        .load(Ordering::Relaxed)
        >= before + 4));
    let per_interval = 4.0 / (t0.elapsed().as_secs_f64() / 0.3);
    assert!(
        per_interval < 2.0,
        "{per_interval:.2} requests per interval"
    );
}

/// A `proxy-load` check reads a site proxy's load report from its report listener (with the
/// token): the site is up while the proxy has a healthy server, and down once its own checks
/// take the last one out, while the proxy itself still answers.
#[test]
fn a_proxy_load_check_takes_a_site_down_when_its_proxy_has_no_healthy_server() {
    let server = Backend::start(200);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "site-report-token-0123456789\n").unwrap();
    let site = format!(
        "[proxy]\naccess_log = \"off\"\nreport = {{ address = \"127.0.0.1:0\", token_file = \"token\" }}\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[pool.p]\ncheck = \"ok\"\nservers = [{{ address = \"{}\" }}]\n\n[check.ok]\nkind = \"http\"\ninterval = \"200ms\"\nrise = 1\nfall = 1\n",
        server.addr
    );
    let proxy = SiteProxy::start_in(dir, &site);
    let report = proxy.report.expect("a report listener");
    let gslb = format!(
        r#"
[[name]]
name = "www"
policy = "all"
pool = "sites"
when_all_down = "nodata"

[pool.sites]
check = "load"
members = [ {{ site = "a", address = "192.0.2.1", probe = "{report}" }} ]

[check.load]
kind = "proxy-load"
token_file = "token"
interval = "200ms"
rise = 1
fall = 1
"#
    );
    let cfg = ConfigDir::new(&zone_with(""), &gslb);
    cfg.write("token", "site-report-token-0123456789\n");
    let srv = Server::start(&cfg);
    let health = |want: &str| {
        wait_until(Duration::from_secs(10), || {
            srv.member_health("a/192.0.2.1") == want
        })
    };
    assert!(health("up"), "{}", srv.member_health("a/192.0.2.1"));
    // The proxy's only server fails its check: the proxy reports no healthy server.
    server.set(500);
    assert!(health("down"), "{}", srv.member_health("a/192.0.2.1"));
    server.set(200);
    assert!(health("up"), "{}", srv.member_health("a/192.0.2.1"));

    // A wrong token is refused by the proxy: down.
    let cfg = ConfigDir::new(&zone_with(""), &gslb);
    cfg.write("token", "not-the-site-report-token\n");
    let srv = Server::start(&cfg);
    assert!(wait_until(Duration::from_secs(10), || {
        srv.member_health("a/192.0.2.1") == "down"
    }));
}
