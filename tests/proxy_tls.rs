//! TLS termination in the site proxy: the real binary on port 0, certificates made by rcgen,
//! a rustls client: SNI picks the certificate, ALPN gives h2 or http/1.1 end to end, and a
//! certificate file that changes is served from the next handshake (a broken one is not).
//! Also what goes past HTTP/1.1 on either side: h2 and h2c to servers, and trailers between
//! every pairing of client and server versions.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use rustls::pki_types::{CertificateDer, ServerName};

struct Pair {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

fn pair(names: &[&str]) -> Pair {
    let made =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    Pair {
        cert: made.cert.pem(),
        key: made.signing_key.serialize_pem(),
        der: made.cert.der().clone(),
    }
}

/// A client trusting `roots`, offering `alpn`.
fn client(roots: &[&Pair], alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    client_of(rustls::DEFAULT_VERSIONS, roots, alpn)
}

/// A client of the TLS `versions` given.
fn client_of(
    versions: &[&'static rustls::SupportedProtocolVersion],
    roots: &[&Pair],
    alpn: &[&[u8]],
) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for p in roots {
        store.add(p.der.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(c: &tokio_rustls::TlsConnector, addr: SocketAddr, name: &str) -> Tls {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .unwrap()
}

/// The certificate the server presented.
fn presented(s: &Tls) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// Sends `req` (its URI absolute) over a new connection on `io`, in h2 or HTTP/1.1 (where the
/// target goes in origin form); the response.
async fn send_over<I, B>(
    io: I,
    h2: bool,
    mut req: ::http::Request<B>,
) -> ::http::Response<hyper::body::Incoming>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = hyper_util::rt::TokioIo::new(io);
    if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        // An HTTP/1.1 request names its host in `Host` (RFC 9112 section 3.2): hyper's
        // connection sends the head as given.
        if let Some(host) = req.uri().authority().map(|a| a.as_str().to_string()) {
            req.headers_mut()
                .entry(::http::header::HOST)
                .or_insert(host.parse().unwrap());
        }
        let target = req
            .uri()
            .path_and_query()
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        *req.uri_mut() = target;
        send.send_request(req).await.unwrap()
    }
}

/// One GET over an established TLS stream, h2 or http/1.1 as negotiated; the body.
async fn get_over(s: Tls, host: &str) -> (::http::Version, String) {
    let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
    let req = ::http::Request::builder()
        .uri(format!("https://{host}/hello"))
        .header("host", host)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send_over(s, h2, req).await;
    let version = resp.version();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (version, String::from_utf8_lossy(&body).into_owned())
}

fn tls_site(up: &Upstream) -> String {
    format!(
        "[proxy]\naccess_log = \"off\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\ntls = {{ certificates = [{{ cert = \"www.pem\", key = \"www.key\" }}, {{ cert = \"api.pem\", key = \"api.key\" }}] }}\n\n[[route]]\npool = \"p\"\n\n[pool.p]\nservers = [{{ address = \"{}\" }}]\n",
        up.addr
    )
}

/// Starts a TLS proxy whose certificate files are written first (the config names them).
fn start(up: &Upstream, www: &Pair, api: &Pair) -> SiteProxy {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("www.pem", &www.cert),
        ("www.key", &www.key),
        ("api.pem", &api.cert),
        ("api.key", &api.key),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    SiteProxy::start_in(dir, &tls_site(up))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_h2_and_http11_work_end_to_end() {
    let up = Upstream::start("u");
    let www = pair(&["www.site.test"]);
    let api = pair(&["api.site.test", "*.api.site.test"]);
    let proxy = start(&up, &www, &api);
    let both = client(&[&www, &api], &[b"h2", b"http/1.1"]);

    let s = connect(&both, proxy.addr, "api.site.test").await;
    assert_eq!(presented(&s), api.der, "SNI api.site.test");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (version, body) = get_over(s, "api.site.test").await;
    assert_eq!(version, ::http::Version::HTTP_2);
    assert!(body.starts_with("u\nGET /hello HTTP/1.1"), "{body}");
    assert!(body.contains("x-forwarded-proto: https"), "{body}");

    let s = connect(&both, proxy.addr, "x.api.site.test").await;
    assert_eq!(presented(&s), api.der, "a wildcard name");
    let s = connect(&both, proxy.addr, "www.site.test").await;
    assert_eq!(presented(&s), www.der);

    let h1 = client(&[&www], &[b"http/1.1"]);
    let s = connect(&h1, proxy.addr, "www.site.test").await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (version, body) = get_over(s, "www.site.test").await;
    assert_eq!(version, ::http::Version::HTTP_11);
    assert!(body.contains("x-forwarded-proto: https"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_listener_serves_h2_by_prior_knowledge_beside_http11() {
    let up = Upstream::start("u");
    let text = format!(
        "[proxy]\naccess_log = \"off\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[pool.p]\nservers = [{{ address = \"{}\" }}]\n",
        up.addr
    );
    let proxy = SiteProxy::start(&text);
    for h2 in [true, false] {
        let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let req = ::http::Request::builder()
            .uri("http://site.test/clear")
            .header("host", "site.test")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send_over(tcp, h2, req).await;
        assert_eq!(resp.status(), 200);
        let version = resp.version();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(version == ::http::Version::HTTP_2, h2, "{version:?}");
        assert!(body.starts_with("u\nGET /clear HTTP/1.1"), "{body}");
        assert!(body.contains("x-forwarded-proto: http\n"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_serves_from_the_next_handshake_and_a_broken_one_does_not() {
    let up = Upstream::start("u");
    let www = pair(&["www.site.test"]);
    let api = pair(&["api.site.test"]);
    let proxy = start(&up, &www, &api);
    let dir = proxy.dir.path().to_path_buf();
    let renewed = pair(&["www.site.test"]);
    let c = client(&[&www, &renewed], &[b"http/1.1"]);

    // A broken key next to the old certificate: refused, the old pair keeps serving.
    std::fs::write(dir.join("www.key"), "not a key").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || proxy.log().contains("refused")),
        "{}",
        proxy.log()
    );
    let s = connect(&c, proxy.addr, "www.site.test").await;
    assert_eq!(presented(&s), www.der);

    // The renewed pair, written as deployment tools do (new files renamed into place).
    for (name, text) in [("www.pem", &renewed.cert), ("www.key", &renewed.key)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    let mut served = None;
    for _ in 0..100 {
        let s = connect(&c, proxy.addr, "www.site.test").await;
        if presented(&s) == renewed.der {
            served = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served.is_some(), "the renewed certificate never served");
}

/// What the test servers answer: `secure upstream`, and ` over h2` when the request came
/// over HTTP/2.
fn answer_by_version<B>(
    req: ::http::Request<B>,
) -> std::future::Ready<
    Result<::http::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible>,
> {
    let text = match req.version() {
        ::http::Version::HTTP_2 => "secure upstream over h2",
        _ => "secure upstream",
    };
    std::future::ready(Ok(::http::Response::new(http_body_util::Full::new(
        bytes::Bytes::from(text),
    ))))
}

/// Serves `answer_by_version` on each connection `accept` yields, HTTP/1.1 or HTTP/2.
fn serve_both<S>(stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(
                hyper_util::rt::TokioIo::new(stream),
                hyper::service::service_fn(answer_by_version),
            )
            .await;
    });
}

/// An HTTP server in the clear on 127.0.0.1:0: HTTP/1.1, or h2c by prior knowledge.
async fn h2c_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            serve_both(tcp);
        }
    });
    addr
}

/// An HTTPS server on 127.0.0.1:0 presenting `p`, offering h2 and http/1.1 by ALPN.
async fn https_upstream(p: &Pair) -> SocketAddr {
    let certs = vec![p.der.clone()];
    let key = rustls::pki_types::PrivateKeyDer::try_from(
        rustls::pki_types::pem::PemObject::from_pem_slice(p.key.as_bytes())
            .map(|k: rustls::pki_types::PrivatePkcs8KeyDer<'static>| k.secret_pkcs8_der().to_vec())
            .unwrap(),
    )
    .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve_both(tls);
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_servers_is_verified_against_the_pool_ca_and_may_be_opted_out_of() {
    let backend = pair(&["backend.internal"]);
    let other = pair(&["backend.internal"]);
    let addr = https_upstream(&backend).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &backend.cert).unwrap();
    std::fs::write(dir.path().join("other.pem"), &other.cert).unwrap();
    let site = format!(
        "[proxy]\naccess_log = \"off\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npath_prefix = \"/good\"\npool = \"good\"\n\n[[route]]\npath_prefix = \"/wrong\"\npool = \"wrong\"\n\n[[route]]\npool = \"unverified\"\n\n[pool.good]\ntls = {{ ca_file = \"ca.pem\", server_name = \"backend.internal\" }}\nservers = [{{ address = \"{addr}\" }}]\n\n[pool.wrong]\ntls = {{ ca_file = \"other.pem\", server_name = \"backend.internal\" }}\nservers = [{{ address = \"{addr}\" }}]\n\n[pool.unverified]\ntls = {{ verify = false }}\nservers = [{{ address = \"{addr}\" }}]\n"
    );
    let proxy = SiteProxy::start_in(dir, &site);
    let proxy_addr = proxy.addr;
    let (good, wrong, unverified) = tokio::task::spawn_blocking(move || {
        (
            get(proxy_addr, "/good", ""),
            get(proxy_addr, "/wrong", ""),
            get(proxy_addr, "/x", ""),
        )
    })
    .await
    .unwrap();
    assert_eq!((good.0, good.2.as_str()), (200, "secure upstream"));
    assert_eq!(wrong.0, 502, "a certificate from another CA was accepted");
    assert_eq!(
        (unverified.0, unverified.2.as_str()),
        (200, "secure upstream")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_with_a_client_ca_serves_only_clients_with_a_certificate_it_signed() {
    let up = Upstream::start("u");
    let www = pair(&["www.site.test"]);
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_cert = rcgen::CertificateParams::new(vec!["client.site.test".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("www.pem", &www.cert),
        ("www.key", &www.key),
        ("clients.pem", &ca.pem()),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let site = format!(
        "[proxy]\naccess_log = \"off\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\ntls = {{ certificates = [{{ cert = \"www.pem\", key = \"www.key\" }}], client_ca = \"clients.pem\" }}\n\n[[route]]\npool = \"p\"\n\n[pool.p]\nservers = [{{ address = \"{}\" }}]\n",
        up.addr
    );
    let proxy = SiteProxy::start_in(dir, &site);

    // Without a certificate nothing is served: the handshake fails, or (TLS 1.3) the first
    // exchange after it does.
    let anonymous = client(&[&www], &[b"http/1.1"]);
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let served = match anonymous
        .connect(ServerName::try_from("www.site.test").unwrap(), tcp)
        .await
    {
        Err(_) => false,
        Ok(s) => {
            let io = hyper_util::rt::TokioIo::new(s);
            match hyper::client::conn::http1::handshake(io).await {
                Err(_) => false,
                Ok((mut send, conn)) => {
                    tokio::spawn(conn);
                    let req = ::http::Request::builder()
                        .uri("/")
                        .header("host", "www.site.test")
                        .body(http_body_util::Empty::<bytes::Bytes>::new())
                        .unwrap();
                    send.send_request(req).await.is_ok()
                }
            }
        }
    };
    assert!(!served, "a client without a certificate was served");

    // With one the CA signed: served.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(www.der.clone()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(client_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![client_cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let with_cert = tokio_rustls::TlsConnector::from(Arc::new(config));
    let s = connect(&with_cert, proxy.addr, "www.site.test").await;
    let (_, body) = get_over(s, "www.site.test").await;
    assert!(body.starts_with("u\n"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_client_resumes_its_session_with_tls_13_and_tls_12() {
    let up = Upstream::start("u");
    let www = pair(&["www.site.test"]);
    let api = pair(&["api.site.test"]);
    let proxy = start(&up, &www, &api);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let c = client_of(&[version], &[&www], &[b"http/1.1"]);
        // A first connection, used once (TLS 1.3 tickets come after the handshake).
        let first = connect(&c, proxy.addr, "www.site.test").await;
        assert_eq!(
            first.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Full)
        );
        let (_, body) = get_over(first, "www.site.test").await;
        assert!(body.starts_with("u\n"));
        let again = connect(&c, proxy.addr, "www.site.test").await;
        assert_eq!(
            again.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "{version:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_speaks_h2_to_its_servers_over_tls_or_h2c_in_the_clear() {
    let backend = pair(&["backend.internal"]);
    let tls_addr = https_upstream(&backend).await;
    let clear_addr = h2c_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &backend.cert).unwrap();
    let site = format!(
        "[proxy]\naccess_log = \"off\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npath_prefix = \"/tls\"\npool = \"tls\"\n\n[[route]]\npath_prefix = \"/clear\"\npool = \"clear\"\n\n[[route]]\npool = \"h1\"\n\n[pool.tls]\nprotocol = \"h2\"\ntls = {{ ca_file = \"ca.pem\", server_name = \"backend.internal\" }}\nservers = [{{ address = \"{tls_addr}\" }}]\n\n[pool.clear]\nprotocol = \"h2c\"\nservers = [{{ address = \"{clear_addr}\" }}]\n\n[pool.h1]\nservers = [{{ address = \"{clear_addr}\" }}]\n"
    );
    let proxy = SiteProxy::start_in(dir, &site);
    let proxy_addr = proxy.addr;
    let answers = tokio::task::spawn_blocking(move || {
        // Several requests each: the h2 connection is shared and reused.
        let mut answers = Vec::new();
        for _ in 0..3 {
            for path in ["/tls", "/clear", "/h1"] {
                let (status, _, body) = get(proxy_addr, path, "");
                answers.push((path, status, body));
            }
        }
        answers
    })
    .await
    .unwrap();
    for (path, status, body) in answers {
        let expected = match path {
            "/h1" => "secure upstream",
            _ => "secure upstream over h2",
        };
        assert_eq!((status, body.as_str()), (200, expected), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_without_resumption_makes_every_handshake_full() {
    let up = Upstream::start("u");
    let www = pair(&["www.site.test"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("www.pem"), &www.cert).unwrap();
    std::fs::write(dir.path().join("www.key"), &www.key).unwrap();
    let site = format!(
        "[proxy]\naccess_log = \"off\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\ntls = {{ certificates = [{{ cert = \"www.pem\", key = \"www.key\" }}], resumption = false }}\n\n[[route]]\npool = \"p\"\n\n[pool.p]\nservers = [{{ address = \"{}\" }}]\n",
        up.addr
    );
    let proxy = SiteProxy::start_in(dir, &site);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let c = client_of(&[version], &[&www], &[b"http/1.1"]);
        for _ in 0..2 {
            let s = connect(&c, proxy.addr, "www.site.test").await;
            assert_eq!(
                s.get_ref().1.handshake_kind(),
                Some(rustls::HandshakeKind::Full),
                "{version:?}"
            );
            let (_, body) = get_over(s, "www.site.test").await;
            assert!(body.starts_with("u\n"));
        }
    }
}

/// The load report's own listener: over TLS, to a caller with the token only, and nothing
/// but `GET /load`; off loopback the config must have TLS and a way to prove the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_listener_serves_the_load_report_over_tls_to_token_holders_only() {
    let up = Upstream::start("u");
    let cert = pair(&["report.site.test"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.pem"), &cert.cert).unwrap();
    std::fs::write(dir.path().join("r.key"), &cert.key).unwrap();
    std::fs::write(
        dir.path().join("token"),
        "a-report-token-of-enough-length\n",
    )
    .unwrap();
    let report = "report = { address = \"127.0.0.1:0\", token_file = \"token\", tls = { certificates = [{ cert = \"r.pem\", key = \"r.key\" }] } }";
    let site = format!(
        "[proxy]\naccess_log = \"off\"\n{report}\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[pool.p]\nservers = [{{ address = \"{}\" }}]\n",
        up.addr
    );
    let proxy = SiteProxy::start_in(dir, &site);
    let at = proxy.report.expect("report= in the first line");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.as_bytes()).unwrap())
        .resolve("report.site.test", at)
        .no_proxy()
        .build()
        .unwrap();
    let url = |path: &str| format!("https://report.site.test:{}{path}", at.port());
    let without = client.get(url("/load")).send().await.unwrap();
    assert_eq!(without.status(), 401);
    let wrong = client
        .get(url("/load"))
        .bearer_auth("a-report-token-of-enough-lengtX")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let with = client
        .get(url("/load"))
        .bearer_auth("a-report-token-of-enough-length")
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
    let doc: serde_json::Value = serde_json::from_str(&with.text().await.unwrap()).unwrap();
    assert_eq!(doc["servers"], 1, "{doc}");
    let other = client
        .get(url("/status"))
        .bearer_auth("a-report-token-of-enough-length")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);

    // A renewed certificate, written as deployment tools do: new handshakes present it.
    let renewed = pair(&["report.site.test"]);
    let dir = proxy.dir.path().to_path_buf();
    for (name, text) in [("r.pem", &renewed.cert), ("r.key", &renewed.key)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    let c = client_of(rustls::DEFAULT_VERSIONS, &[&cert, &renewed], &[b"http/1.1"]);
    let mut served = false;
    for _ in 0..100 {
        if presented(&connect(&c, at, "report.site.test").await) == renewed.der {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served,
        "the report listener never served its renewed certificate"
    );

    // Off loopback without TLS: a config error naming the setting.
    let dir = tempfile::tempdir().unwrap();
    let bad = site.replace(report, "report = { address = \"0.0.0.0:0\" }");
    let file = dir.path().join("site.toml");
    std::fs::write(&file, bad).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("proxy.report") && said.contains("off loopback"),
        "{said}"
    );
}

/// A body of the frames given, its length unknown (so HTTP/1.1 sends it chunked, with room
/// for trailers).
struct Frames(std::collections::VecDeque<hyper::body::Frame<bytes::Bytes>>);

impl Frames {
    fn new(data: &str, trailer: (&'static str, &'static str)) -> Frames {
        let mut fields = ::http::HeaderMap::new();
        fields.insert(trailer.0, ::http::HeaderValue::from_static(trailer.1));
        Frames(
            [
                hyper::body::Frame::data(bytes::Bytes::from(data.to_string())),
                hyper::body::Frame::trailers(fields),
            ]
            .into(),
        )
    }
}

impl hyper::body::Body for Frames {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// Reads a request's body and trailers, and answers how many bytes came, with the trailers
/// `x-checksum` and `x-echo` (the request's `x-req` trailer) announced in `Trailer`, and the
/// request's `te` field in `x-te`.
async fn answer_with_trailers(
    req: ::http::Request<hyper::body::Incoming>,
) -> Result<::http::Response<Frames>, std::convert::Infallible> {
    let te = req.headers().get("te").cloned();
    let got = req.into_body().collect().await.unwrap();
    let echo = got.trailers().and_then(|t| t.get("x-req")).cloned();
    let mut answer = Frames::new(
        &format!("got {} bytes", got.to_bytes().len()),
        ("x-checksum", "1234"),
    );
    if let Some(last) = answer.0.back_mut().and_then(|f| f.trailers_mut()) {
        last.insert(
            "x-echo",
            echo.unwrap_or(::http::HeaderValue::from_static("none")),
        );
    }
    let mut resp = ::http::Response::new(answer);
    resp.headers_mut().insert(
        "trailer",
        ::http::HeaderValue::from_static("x-checksum, x-echo"),
    );
    if let Some(te) = te {
        resp.headers_mut().insert("x-te", te);
    }
    Ok(resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_go_through_both_ways_between_http11_and_h2_clients_and_servers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tcp),
                        hyper::service::service_fn(answer_with_trailers),
                    )
                    .into_owned(),
            );
        }
    });
    let site = format!(
        "[proxy]\naccess_log = \"off\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npath_prefix = \"/h2c\"\npool = \"h2c\"\n\n[[route]]\npool = \"h1\"\n\n[pool.h2c]\nprotocol = \"h2c\"\nservers = [{{ address = \"{up}\" }}]\n\n[pool.h1]\nservers = [{{ address = \"{up}\" }}]\n"
    );
    let proxy = SiteProxy::start(&site);
    for client_h2 in [false, true] {
        for path in ["/h1", "/h2c"] {
            let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
            let req = ::http::Request::post(format!("http://{}{path}", proxy.addr))
                .header("te", "trailers")
                .header("trailer", "x-req")
                .body(Frames::new("hello", ("x-req", "from the client")))
                .unwrap();
            let resp = send_over(tcp, client_h2, req).await;
            let what = format!("client h2 {client_h2}, {path}");
            let te = resp.headers().get("x-te").cloned();
            let got = resp.into_body().collect().await.unwrap();
            let trailers = got.trailers().cloned().unwrap_or_default();
            assert_eq!(got.to_bytes(), "got 5 bytes", "{what}");
            assert_eq!(
                trailers.get("x-checksum").map(|v| v.as_bytes()),
                Some(&b"1234"[..]),
                "{what}"
            );
            assert_eq!(
                trailers.get("x-echo").map(|v| v.as_bytes()),
                Some(&b"from the client"[..]),
                "{what}"
            );
            // The server hears that the client takes trailers.
            assert_eq!(
                te.as_ref().map(|v| v.to_str().unwrap()),
                Some("trailers"),
                "{what}"
            );
        }
    }
}
