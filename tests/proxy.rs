//! The site proxy end to end: the real `meridian proxy` on port 0 in front of real HTTP/1.1
//! servers on port 0, driven over real connections.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

/// A site with one listener on port 0, one route to pool `p`, and the pool's servers.
fn site(pool_extra: &str, servers: &[&Upstream], extra: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|u| format!("{{ address = \"{}\" }}", u.addr))
        .collect();
    format!(
        "[proxy]\naccess_log = \"off\"\ndrain_timeout = \"2s\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[pool.p]\n{pool_extra}\nservers = [{}]\n\n{extra}",
        list.join(", ")
    )
}

/// [`site`] with `keys` added to its `[proxy]` table.
fn site_with(keys: &str, servers: &[&Upstream]) -> String {
    site("", servers, "").replace("[proxy]\n", &format!("[proxy]\n{keys}\n"))
}

/// A client asking for `/` all the time on kept-alive connections (reqwest), counting what
/// it sent, what was answered 200 and what failed, until told to stop.
struct BusyClient {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ok: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    failed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl BusyClient {
    fn start(addr: SocketAddr) -> BusyClient {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, ok, failed) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, n, o, f) = (stop.clone(), sent.clone(), ok.clone(), failed.clone());
        let url = format!("http://{addr}/");
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let http = reqwest::Client::new();
                while !s.load(Ordering::Relaxed) {
                    n.fetch_add(1, Ordering::Relaxed);
                    match http.get(&url).send().await {
                        Ok(r) if r.status() == 200 => o.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("failed: {other:?}");
                            f.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
        });
        BusyClient {
            stop,
            sent,
            ok,
            failed,
            thread,
        }
    }

    /// Answers with status 200 so far.
    fn ok(&self) -> usize {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops it; returns (sent, failed).
    fn finish(self) -> (usize, usize) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Which upstream answered (the first line of its body).
fn who(body: &str) -> String {
    body.lines().next().unwrap_or("").to_string()
}

/// The value of header `name` the upstream saw.
fn seen(body: &str, name: &str) -> Option<String> {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::to_string)
}

#[test]
fn round_robin_spreads_requests_evenly_and_hides_the_servers() {
    let ups: Vec<Upstream> = (0..3).map(|i| Upstream::start(&format!("u{i}"))).collect();
    let refs: Vec<&Upstream> = ups.iter().collect();
    let proxy = SiteProxy::start(&site("algorithm = \"round-robin\"", &refs, ""));
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let (status, headers, body) = get(proxy.addr, "/x", "");
        assert_eq!(status, 200, "{body}");
        assert!(
            header(&headers, "server").is_none(),
            "the server's name leaks"
        );
        assert_eq!(header(&headers, "x-request-id").map(str::len), Some(32));
        *counts.entry(who(&body)).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&c| c == 10), "{counts:?}");
}

#[test]
fn forwarding_headers_are_set_and_a_client_cannot_forge_them() {
    let up = Upstream::start("u");
    let proxy = SiteProxy::start(&site("", &[&up], ""));
    let (status, _, body) = get(
        proxy.addr,
        "/path?q=1",
        "X-Forwarded-For: 203.0.113.9\r\nForwarded: for=203.0.113.9\r\nConnection: close, x-drop-me\r\nX-Drop-Me: 1\r\n",
    );
    assert_eq!(status, 200);
    assert!(body.contains("GET /path?q=1 HTTP/1.1"), "{body}");
    assert_eq!(seen(&body, "x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen(&body, "x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        seen(&body, "x-forwarded-host").as_deref(),
        Some("site.test")
    );
    assert_eq!(
        seen(&body, "forwarded").as_deref(),
        Some("for=127.0.0.1;proto=http;host=\"site.test\"")
    );
    assert_eq!(seen(&body, "host").as_deref(), Some("site.test"));
    assert!(
        seen(&body, "x-drop-me").is_none(),
        "a header named by Connection went upstream"
    );
    assert!(seen(&body, "x-request-id").is_some());

    // Behind a trusted proxy the chain is extended instead.
    drop(proxy);
    let proxy = SiteProxy::start(&site_with("trusted_proxies = [\"127.0.0.0/8\"]", &[&up]));
    let (_, _, body) = get(
        proxy.addr,
        "/",
        "X-Forwarded-For: 203.0.113.9\r\nX-Request-Id: abc\r\n",
    );
    assert_eq!(
        seen(&body, "x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen(&body, "x-request-id").as_deref(), Some("abc"));

    // A route's own fields: set on the request sent upstream (replacing the client's), and
    // on the response.
    drop(proxy);
    let route = "[[route]]\npool = \"p\"\nset_request_headers = { \"X-Site\" = \"blue\" }\nset_response_headers = { \"X-Served-By\" = \"edge 1\" }\n";
    let proxy = SiteProxy::start(&site("", &[&up], "").replace("[[route]]\npool = \"p\"\n", route));
    let (status, headers, body) = get(proxy.addr, "/", "X-Site: red\r\n");
    assert_eq!(status, 200);
    assert_eq!(seen(&body, "x-site").as_deref(), Some("blue"));
    assert_eq!(header(&headers, "x-served-by"), Some("edge 1"));
}

#[test]
fn a_sticky_cookie_pins_a_client_and_a_forged_one_is_ignored() {
    let ups: Vec<Upstream> = (0..3).map(|i| Upstream::start(&format!("u{i}"))).collect();
    let refs: Vec<&Upstream> = ups.iter().collect();
    let proxy = SiteProxy::start(&site(
        "algorithm = \"round-robin\"\nsticky = { cookie = \"srv\", max_age = \"1h\", key = \"a key of at least sixteen bytes\" }",
        &refs,
        "",
    ));
    let (_, headers, body) = get(proxy.addr, "/", "");
    let first = who(&body);
    let set = header(&headers, "set-cookie")
        .expect("a sticky cookie")
        .to_string();
    assert!(
        set.contains("Max-Age=3600") && set.contains("HttpOnly"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    for _ in 0..100 {
        let (status, headers, body) = get(proxy.addr, "/", &format!("Cookie: {cookie}\r\n"));
        assert_eq!(status, 200);
        assert_eq!(who(&body), first);
        assert!(
            header(&headers, "set-cookie").is_none(),
            "a pinned client was pinned again"
        );
    }
    // A tampered value names no server: the client is balanced and pinned anew.
    let value = cookie.split_once('=').unwrap().1;
    let mut forged = value.to_string();
    forged.replace_range(0..1, if value.starts_with('0') { "1" } else { "0" });
    let mut servers = std::collections::HashSet::new();
    for _ in 0..6 {
        let (_, headers, body) = get(proxy.addr, "/", &format!("Cookie: srv={forged}\r\n"));
        assert!(header(&headers, "set-cookie").is_some());
        servers.insert(who(&body));
    }
    assert!(servers.len() > 1, "a forged cookie steered every request");
}

#[test]
fn a_dead_server_costs_idempotent_requests_nothing_and_every_server_refusing_is_a_quick_502() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let dead_addr = {
        let c = Upstream::start("c");
        c.addr
    };
    // The dropped server's port refuses connections from here on.
    let dead = format!("{{ address = \"{dead_addr}\" }}");
    let text = site("algorithm = \"round-robin\"", &[&a, &b], "")
        .replace("servers = [", &format!("servers = [{dead}, "));
    let proxy = SiteProxy::start(&text);
    for _ in 0..30 {
        let (status, _, body) = get(proxy.addr, "/", "");
        assert_eq!(status, 200, "{body}");
        assert!(["a", "b"].contains(&who(&body).as_str()));
    }
    drop(a);
    drop(b);
    let started = Instant::now();
    let (status, headers, _) = get(proxy.addr, "/", "");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "all down took {:?}",
        started.elapsed()
    );
    assert_eq!(status, 502);
    assert!(header(&headers, "content-length").is_some());
}

#[test]
fn checks_take_a_failing_server_out_and_an_all_down_pool_answers_503_with_retry_after() {
    let a = Upstream::start("a");
    let backend = Backend::start(200);
    let text = site(
        "check = \"h\"",
        &[&a],
        &format!(
            "[check.h]\nkind = \"http\"\nport = {}\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n",
            backend.addr.port()
        ),
    );
    let proxy = SiteProxy::start(&text);
    assert!(
        wait_until(Duration::from_secs(5), || get(proxy.addr, "/", "").0 == 200),
        "the server never came up"
    );
    backend.set(503);
    assert!(
        wait_until(Duration::from_secs(5), || get(proxy.addr, "/", "").0 == 503),
        "the server stayed in"
    );
    let (_, headers, body) = get(proxy.addr, "/", "");
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    assert!(body.contains("no server available"));
    backend.set(200);
    assert!(wait_until(Duration::from_secs(5), || get(
        proxy.addr, "/", ""
    )
    .0 == 200));
}

/// Reads one response off `conn` (its head, and a body of its `Content-Length`), keeping what
/// follows in `buf`: the head and the body.
fn next_response(conn: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> (String, String) {
    use std::io::Read;
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).expect("a response");
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |n| n.trim().parse().unwrap());
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).expect("a body");
        assert!(n > 0, "closed within a body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    buf.drain(..head_end + length);
    (head, body)
}

#[test]
fn clients_may_pipeline_keep_http10_alive_and_wait_for_100_continue() {
    use std::io::{Read, Write};
    let up = Upstream::start("u");
    let proxy = SiteProxy::start(&site("", &[&up], ""));
    let mut c = std::net::TcpStream::connect(proxy.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    // Three requests in one write: three answers, in order.
    c.write_all(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    for n in 1..=3 {
        let (head, body) = next_response(&mut c, &mut buf);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\ndate: "), "{head}");
        assert!(body.contains(&format!("GET /{n} HTTP/1.1")), "{body}");
    }
    // HTTP/1.0 asking to be kept alive: told it is, in HTTP/1.0.
    c.write_all(b"GET /4 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let (head, _) = next_response(&mut c, &mut buf);
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: keep-alive\r\n"), "{head}");
    // The client waits for `100 Continue` before it sends its body.
    c.write_all(
        b"POST /5 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut interim = [0u8; 25];
    c.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.write_all(b"hello").unwrap();
    let (head, body) = next_response(&mut c, &mut buf);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(body.contains("POST /5 HTTP/1.1"), "{body}");
    // HTTP/1.0 by default: answered, then closed.
    c.write_all(b"GET /6 HTTP/1.0\r\nHost: a\r\n\r\n").unwrap();
    let (head, _) = next_response(&mut c, &mut buf);
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert_eq!(c.read(&mut [0u8; 16]).unwrap(), 0, "the connection closes");
    assert!(buf.is_empty());
}

#[test]
fn request_smuggling_forms_get_400_and_reach_no_server() {
    let up = Upstream::start("u");
    let proxy = SiteProxy::start(&site("", &[&up], ""));
    let forms = [
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello!",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\nConnection: close\r\n\r\n",
        // The host two hops could read two ways (RFC 9112 section 3.2).
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x y\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: evil@x\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
        // User information makes one host read as another (RFC 9110 section 4.2.4).
        "GET http://admin.test@x/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ];
    for form in forms {
        let (status, _, _) = raw_http(proxy.addr, form);
        assert_eq!(status, 400, "{form:?}");
    }
    // A coding besides chunked would reach the server dechunked but still coded: not
    // implemented, as nginx answers. A reverse proxy does not tunnel CONNECT.
    let gzip = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(raw_http(proxy.addr, gzip).0, 501);
    let connect = "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n";
    assert_eq!(raw_http(proxy.addr, connect).0, 405);
    // A TRACE echo would show the client what the proxy adds for its servers.
    let trace = "TRACE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_http(proxy.addr, trace).0, 405);
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn an_absolute_target_names_the_host_and_an_h2c_upgrade_goes_as_a_plain_request() {
    let up = Upstream::start("u");
    let proxy = SiteProxy::start(&site("", &[&up], ""));
    // RFC 9112 section 3.2.2: the target's authority replaces `Host`, as routing reads it.
    let absolute = "GET http://b.test/p HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    let (status, _, body) = raw_http(proxy.addr, absolute);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.lines().nth(1), Some("GET /p HTTP/1.1"), "{body}");
    assert_eq!(seen(&body, "host").as_deref(), Some("b.test"), "{body}");
    // A server that took the upgrade would speak h2 with the client past the proxy's routes
    // and rules: the request goes on without it.
    let h2c = "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
    let (status, _, body) = raw_http(proxy.addr, h2c);
    assert_eq!(status, 200, "{body}");
    for field in ["upgrade", "http2-settings", "connection"] {
        assert_eq!(seen(&body, field), None, "{field}: {body}");
    }
}

#[test]
fn a_malformed_request_body_is_answered_400_and_not_held_against_the_servers() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let proxy = SiteProxy::start(&site(
        "algorithm = \"round-robin\"\neject_after = 2",
        &[&a, &b],
        "",
    ));
    // Two in a row on each server, were they counted as its failures.
    let broken =
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    for _ in 0..4 {
        assert_eq!(raw_http(proxy.addr, broken).0, 400);
    }
    let answered: std::collections::HashSet<String> =
        (0..4).map(|_| who(&get(proxy.addr, "/", "").2)).collect();
    assert_eq!(answered.len(), 2, "{answered:?}");
    let log = proxy.log();
    assert!(
        !log.contains("ejected") && !log.contains("upstream failed"),
        "{log}"
    );
}

/// `meridian check --config PATH`: its exit code and what it printed on stderr.
fn check(path: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_validates_a_site_config_naming_file_line_and_object() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.toml");
    std::fs::write(
        &path,
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"web\"\n\n[pool.web]\nalgorithm = \"fastest\"\nservers = [{ address = \"127.0.0.1:9\" }]\n",
    )
    .unwrap();
    let (code, err) = check(&path);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("site.toml:7: pool \"web\": algorithm \"fastest\""),
        "{err}"
    );
    std::fs::write(
        &path,
        "[[listener]]\naddress = \"127.0.0.1:0\"\nbogus = 1\n",
    )
    .unwrap();
    let (code, err) = check(&path);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("site.toml:3") && err.contains("bogus"),
        "{err}"
    );
    // HTTP/2 over TLS without a tls table, and a worker count of zero.
    for (text, wanted) in [
        (
            "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"web\"\n\n[pool.web]\nprotocol = \"h2\"\nservers = [{ address = \"127.0.0.1:9\" }]\n",
            "site.toml:7: pool \"web\": protocol \"h2\" is HTTP/2 over TLS",
        ),
        (
            "[proxy]\nworkers = 0\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"web\"\n\n[pool.web]\nservers = [{ address = \"127.0.0.1:9\" }]\n",
            "proxy.workers",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:0\"\ndeny = [\"10.0.0.0/33\"]\n\n[[route]]\npool = \"web\"\n\n[pool.web]\nservers = [{ address = \"127.0.0.1:9\" }]\n",
            "site.toml:1: listener \"127.0.0.1:0\": deny: \"10.0.0.0/33\" is not an address or prefix",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let (code, err) = check(&path);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(wanted), "{err}");
    }
}

#[test]
fn the_example_and_demo_site_configs_pass_check_and_reject_an_unknown_key() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/site");
    for name in ["site.toml", "demo.toml"] {
        let (code, err) = check(&root.join(name));
        assert_eq!(code, Some(0), "{name}: {err}");
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(root.join(name)).unwrap();
        let bogus = dir.path().join(name);
        std::fs::write(
            &bogus,
            text.replacen("[[listener]]\n", "[[listener]]\nbogus = 1\n", 1),
        )
        .unwrap();
        let (code, _) = check(&bogus);
        assert_eq!(code, Some(1), "{name} with an unknown key passed");
    }
}

/// A proxy in front of one scripted server: `serve` gets the server's one connection (reads
/// time out after ten seconds) in a thread of its own, joined by the handle.
fn proxy_for_one_connection(
    serve: impl FnOnce(std::net::TcpStream) + Send + 'static,
) -> (SiteProxy, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        serve(conn);
    });
    let text = format!(
        "[proxy]\naccess_log = \"off\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[pool.p]\nservers = [{{ address = \"{addr}\" }}]\n"
    );
    (SiteProxy::start(&text), server)
}

/// A server's `103 Early Hints` reaches an HTTP/1.1 client as it comes, ahead of the final
/// response (RFC 9110 section 15.2), and never an HTTP/1.0 one.
#[test]
fn early_hints_reach_an_http11_client_before_the_response_and_never_http10() {
    use std::io::Write;
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (proxy, server) = proxy_for_one_connection(move |mut conn| {
        for _ in 0..2 {
            let head = read_head(&mut conn).unwrap();
            conn.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n").unwrap();
            // The first response waits until the client has seen its hints.
            if head.starts_with("GET /early ") {
                wait.recv_timeout(Duration::from_secs(10)).unwrap();
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
        }
    });
    let mut c = std::net::TcpStream::connect(proxy.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /early HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let (hints, _) = next_response(&mut c, &mut buf);
    assert_eq!(
        hints,
        "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n"
    );
    go.send(()).unwrap();
    let (head, body) = next_response(&mut c, &mut buf);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, "ok");
    // HTTP/1.0 cannot take an interim response: the final one alone.
    c.write_all(b"GET /old HTTP/1.0\r\nHost: site.test\r\n\r\n")
        .unwrap();
    let (head, body) = next_response(&mut c, &mut buf);
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert_eq!(body, "ok");
    server.join().unwrap();
}

/// A response whose body fails before any of it has reached the client is answered 502,
/// not with a connection closed on nothing.
#[test]
fn a_response_body_broken_before_anything_was_sent_is_a_502() {
    use std::io::Write;
    let (proxy, server) = proxy_for_one_connection(|mut conn| {
        read_head(&mut conn).unwrap();
        // The chunk size is not a number: the body is broken from its first byte.
        conn.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        )
        .unwrap();
    });
    let (status, headers, _) = raw_http(
        proxy.addr,
        "GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 502, "{headers:?}");
    server.join().unwrap();
}

#[test]
fn an_upgraded_connection_is_passed_through_both_ways() {
    use std::io::{Read, Write};
    // A server that accepts a WebSocket upgrade, then echoes what it receives.
    let (proxy, server) = proxy_for_one_connection(|mut conn| {
        let head = read_head(&mut conn).unwrap().to_ascii_lowercase();
        assert!(head.contains("upgrade: websocket"), "{head}");
        assert!(
            head.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq=="),
            "{head}"
        );
        conn.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n").unwrap();
        let mut buf = [0u8; 64];
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => conn.write_all(&buf[..n]).unwrap(),
            }
        }
    });
    let mut c = std::net::TcpStream::connect(proxy.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /ws HTTP/1.1\r\nHost: site.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let head = read_head(&mut c).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    for message in ["ping-1", "a longer message, twice over"] {
        c.write_all(message.as_bytes()).unwrap();
        let mut back = vec![0u8; message.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, message.as_bytes());
    }
    drop(c);
    server.join().unwrap();
}

#[test]
fn twenty_reloads_under_load_fail_no_request_and_a_bad_config_keeps_the_old_one() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let text = |u: &Upstream| site("", &[u], "");
    let proxy = SiteProxy::start(&text(&a));
    let config = proxy.dir.path().join("site.toml");
    let write = |body: &str| {
        let tmp = proxy.dir.path().join(".site.toml.tmp");
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, &config).unwrap();
    };

    // A client on kept-alive connections, asking all the time.
    let client = BusyClient::start(proxy.addr);
    for i in 0..20 {
        let next = if i % 2 == 0 { &b } else { &a };
        write(&text(next));
        proxy.signal(nix::sys::signal::Signal::SIGHUP);
        assert!(
            wait_until(Duration::from_secs(10), || who(&get(proxy.addr, "/", "").2)
                == next.name),
            "reload {i} did not take"
        );
    }
    // A broken config is refused; the running one keeps serving.
    write("[[listener]]\naddress = \"nowhere\"\n");
    proxy.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || proxy
            .log()
            .contains("reload refused")),
        "{}",
        proxy.log()
    );
    assert_eq!(who(&get(proxy.addr, "/", "").2), "a");
    // A change to the file alone reloads it too.
    write(&text(&b));
    assert!(
        wait_until(Duration::from_secs(10), || who(&get(proxy.addr, "/", "").2)
            == "b"),
        "a changed file was not reloaded"
    );
    let (sent, failed) = client.finish();
    assert!(sent > 20);
    assert_eq!(failed, 0, "requests failed across reloads");
}

/// An h2 client's cookies, sent as a field each, reach an HTTP/1.1 server as one `Cookie`
/// (RFC 9113 section 8.2.3): such a server reads one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_clients_cookie_fields_reach_an_http11_server_as_one() {
    let up = Upstream::start("u");
    let proxy = SiteProxy::start(&site("", &[&up], ""));
    let (mut send, driver) = h2_client(proxy.addr).await;
    let req = ::http::Request::builder()
        .uri(format!("http://{}/", proxy.addr))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3")
        .body(())
        .unwrap();
    let (answer, _) = send.send_request(req, true).unwrap();
    let mut body = answer.await.unwrap().into_body();
    let mut seen_by_server = Vec::new();
    while let Some(chunk) = body.data().await {
        seen_by_server.extend_from_slice(&chunk.unwrap());
    }
    let seen_by_server = String::from_utf8(seen_by_server).unwrap();
    let cookies: Vec<&str> = seen_by_server
        .lines()
        .filter_map(|l| l.strip_prefix("cookie: "))
        .collect();
    assert_eq!(cookies, ["a=1; b=2; c=3"], "{seen_by_server}");
    driver.abort();
}

/// h2 requests two hops could read two ways get 400 and reach no server: a field value with
/// whitespace at either end, which an HTTP/1.1 server would trim (RFC 9113 section 8.2.1), and
/// an `:authority` with user information (section 8.3.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_h2_requests_get_400_and_reach_no_server() {
    let up = Upstream::start("u");
    let proxy = SiteProxy::start(&site("", &[&up], ""));
    let (mut send, driver) = h2_client(proxy.addr).await;
    let mut status = |uri: String, value: &str| {
        let req = ::http::Request::builder()
            .uri(uri)
            .header("x-padded", value)
            .body(())
            .unwrap();
        let (answer, _) = send.send_request(req, true).unwrap();
        async move { answer.await.unwrap().status().as_u16() }
    };
    let plain = format!("http://{}/", proxy.addr);
    assert_eq!(status(plain.clone(), " a").await, 400);
    assert_eq!(status(plain.clone(), "a\t").await, 400);
    let userinfo = format!("http://admin.test@{}/", proxy.addr);
    assert_eq!(status(userinfo, "a").await, 400);
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(status(plain, "a b").await, 200);
    driver.abort();
}

/// A kept-alive connection left idle is closed by a reload once the grace second has passed,
/// long before its head timeout: the reload itself wakes it.
#[test]
fn a_reload_closes_an_idle_kept_alive_connection_after_the_grace() {
    use std::io::{Read, Write};
    let a = Upstream::start("a");
    let proxy = SiteProxy::start(&site_with("header_timeout = \"60s\"", &[&a]));
    let mut c = std::net::TcpStream::connect(proxy.addr).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .unwrap();
    let head = read_head(&mut c).expect("a response");
    let mut body = vec![0u8; content_length(&head)];
    c.read_exact(&mut body).unwrap();
    assert_eq!(who(&String::from_utf8_lossy(&body)), "a");

    let since = Instant::now();
    proxy.signal(nix::sys::signal::Signal::SIGHUP);
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let read = c.read_to_end(&mut rest);
    assert!(
        matches!(read, Ok(0)),
        "the idle connection was not closed: {read:?} after {:?}",
        since.elapsed()
    );
    assert!(
        since.elapsed() < Duration::from_secs(10),
        "closed only after {:?}",
        since.elapsed()
    );
}

/// The same for h2 (by prior knowledge in the clear): an idle connection whose client keeps
/// it open is sent GOAWAY and closed by a reload, long before the drain timeout.
#[tokio::test]
async fn a_reload_closes_an_idle_h2_connection_after_the_grace() {
    let a = Upstream::start("a");
    let text = site("", &[&a], "").replace("drain_timeout = \"2s\"", "drain_timeout = \"60s\"");
    let proxy = SiteProxy::start(&text);
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut send, mut conn) = h2::client::handshake(tcp).await.unwrap();
    let request = ::http::Request::builder()
        .uri(format!("http://{}/", proxy.addr))
        .body(())
        .unwrap();
    let (answer, _) = send.send_request(request, true).unwrap();
    let answer = tokio::select! {
        a = answer => a.unwrap(),
        _ = &mut conn => panic!("the connection ended"),
    };
    assert_eq!(answer.status(), 200);

    let since = Instant::now();
    proxy.signal(nix::sys::signal::Signal::SIGHUP);
    let ended = tokio::time::timeout(Duration::from_secs(10), &mut conn).await;
    assert!(
        matches!(ended, Ok(Ok(()))),
        "the idle h2 connection was not closed: {ended:?} after {:?}",
        since.elapsed()
    );
    // Held until now: with no sender left, the client would close the connection itself.
    drop(send);
}

#[test]
fn passive_ejection_takes_a_failing_server_out_and_a_trial_readmits_it() {
    let a = Upstream::start("a");
    let dead = Upstream::start("soon dead").addr;
    let text = site(
        "algorithm = \"round-robin\"\neject_after = 2\neject_for = \"300ms\"",
        &[&a],
        "",
    )
    .replace(
        "servers = [",
        &format!("servers = [{{ address = \"{dead}\" }}, "),
    );
    let proxy = SiteProxy::start(&text);
    for _ in 0..10 {
        let (status, _, body) = get(proxy.addr, "/", "");
        assert_eq!(status, 200, "{body}");
        assert_eq!(who(&body), "a");
    }
    assert!(proxy.log().contains("server ejected"), "{}", proxy.log());
    // Back at its address: once its ejection ends, a trial request finds it and it rejoins.
    let revived = Upstream::start_at(dead, "revived");
    assert!(
        wait_until(Duration::from_secs(10), || who(&get(proxy.addr, "/", "").2)
            == "revived"),
        "the revived server never rejoined"
    );
    drop(revived);
}

#[test]
fn the_control_endpoint_drains_safely_and_reports_status_metrics_and_load() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let text = site("", &[&a, &b], "").replace("[proxy]\n", "[proxy]\ncontrol = \"127.0.0.1:0\"\n");
    let proxy = SiteProxy::start(&text);
    let control = proxy.control.expect("a control address").to_string();
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(["ctl", "--control", &control])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let a_id = format!("p/{}", a.addr);
    let b_id = format!("p/{}", b.addr);
    let (code, out) = ctl(&["status"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("pool p") && out.contains(&a_id) && out.contains(&b_id),
        "{out}"
    );

    // Drained: no more requests; draining the last one is refused by the pool's safety rule.
    let (code, out) = ctl(&["drain", &a_id]);
    assert_eq!(code, Some(0), "{out}");
    for _ in 0..10 {
        assert_eq!(who(&get(proxy.addr, "/", "").2), "b");
    }
    let (code, out) = ctl(&["drain", &b_id, "--dry-run"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("would be refused"), "{out}");
    let (code, out) = ctl(&["drain", &b_id]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("refused"), "{out}");
    assert_eq!(who(&get(proxy.addr, "/", "").2), "b");
    let (code, out) = ctl(&["undrain", &a_id]);
    assert_eq!(code, Some(0), "{out}");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        seen.insert(who(&get(proxy.addr, "/", "").2));
    }
    assert_eq!(seen.len(), 2);

    // Metrics parse as Prometheus text and count what was answered.
    let (code, page) = ctl(&["metrics"]);
    assert_eq!(code, Some(0));
    let lines = page.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a valid page");
    let answered: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "meridian_proxy_requests_total")
        .filter(|s| s.labels.get("class") == Some("2xx"))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    assert!(answered >= 21.0, "{answered}");
    // Upstream connections are kept and reused: every request went on one or the other.
    let total = |name: &str| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    let opened = total("meridian_proxy_upstream_connections_opened_total");
    let reused = total("meridian_proxy_upstream_connection_reuses_total");
    assert!(opened >= 1.0 && reused > opened, "{opened} {reused}");
    assert!(opened + reused >= answered, "{opened} {reused} {answered}");

    // The load report covers the last seconds.
    let addr: SocketAddr = control.parse().unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        let _ = get(proxy.addr, "/", "");
        let (_, body) = http(addr, "GET", "/load", None, None);
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        doc["servers"] == 2
            && doc["healthy_servers"] == 2
            && doc["requests_per_second"].as_f64().unwrap_or(0.0) > 0.0
            && doc["p99_ms"].as_f64().is_some()
            && doc["error_rate"] == 0.0
    }));
}

#[test]
fn a_drained_server_keeps_its_sticky_sessions_for_the_grace_time_then_they_move_once() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let text = site(
        "sticky = { cookie = \"srv\", drain_grace = \"1s\" }",
        &[&a, &b],
        "",
    )
    .replace("[proxy]\n", "[proxy]\ncontrol = \"127.0.0.1:0\"\n");
    let proxy = SiteProxy::start(&text);
    let control = proxy.control.unwrap();
    let (_, headers, body) = get(proxy.addr, "/", "");
    let pinned = who(&body);
    let cookie = header(&headers, "set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let addr = if pinned == "a" { a.addr } else { b.addr };
    let id = format!("p%2F{addr}").replace(':', "%3A");
    let (status, body) = http(control, "POST", &format!("/members/{id}/drain"), None, None);
    assert_eq!(status, 200, "{body}");
    // Within the grace time the session stays; new clients go elsewhere.
    let (_, _, body) = get(proxy.addr, "/", &format!("Cookie: {cookie}\r\n"));
    assert_eq!(who(&body), pinned);
    let (_, _, body) = get(proxy.addr, "/", "");
    assert_ne!(who(&body), pinned);
    // After it, the session moves, once: the client is pinned to its new server.
    assert!(wait_until(Duration::from_secs(5), || {
        who(&get(proxy.addr, "/", &format!("Cookie: {cookie}\r\n")).2) != pinned
    }));
    let (_, headers, body) = get(proxy.addr, "/", &format!("Cookie: {cookie}\r\n"));
    let moved = who(&body);
    let new_cookie = header(&headers, "set-cookie")
        .expect("pinned anew")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    for _ in 0..10 {
        let (_, headers, body) = get(proxy.addr, "/", &format!("Cookie: {new_cookie}\r\n"));
        assert_eq!(who(&body), moved);
        assert!(header(&headers, "set-cookie").is_none());
    }
}

/// The resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn fifty_megabyte_bodies_stream_to_and_from_a_slow_client_without_growing_memory() {
    use std::io::{Read, Write};
    const SIZE: usize = 50 * 1024 * 1024;
    // The slow client's pace: 128 KiB every 125 ms, 1 MiB a second.
    const PER_TICK: usize = 128 * 1024;
    // A server that sends 50 MB for GET and reads (and counts) whatever a POST sends.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(4) {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if conn.read_exact(&mut byte).is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if head.starts_with("get") {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\ncontent-length: {SIZE}\r\nconnection: close\r\n\r\n"
                    );
                    let chunk = vec![7u8; 64 * 1024];
                    for _ in 0..SIZE / chunk.len() {
                        if conn.write_all(&chunk).is_err() {
                            return;
                        }
                    }
                } else {
                    let mut left = SIZE;
                    let mut buf = vec![0u8; 64 * 1024];
                    while left > 0 {
                        match conn.read(&mut buf[..left.min(64 * 1024)]) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => left -= n,
                        }
                    }
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nreceived"
                    );
                }
            });
        }
    });
    let text = format!(
        "[proxy]\naccess_log = \"off\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[pool.p]\nservers = [{{ address = \"{addr}\" }}]\n"
    );
    let proxy = SiteProxy::start(&text);
    let pid = proxy.child.id();
    // Warm up the paths, then take the baseline.
    let _ = get(proxy.addr, "/warm", "");
    let before = rss_kib(pid);

    // Paced by the client: a chunk per tick, so each direction takes about 50 s.
    let tick = Duration::from_millis(125);
    let per_tick = PER_TICK;
    let download = std::thread::spawn({
        let addr = proxy.addr;
        move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            c.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut got = 0usize;
            let mut buf = vec![0u8; per_tick];
            let start = Instant::now();
            // Head and body, read at the client's pace.
            while got < SIZE {
                let n = c.read(&mut buf).unwrap();
                assert!(n > 0, "the download stopped at {got} bytes");
                got += n;
                let due = start + tick * (got / per_tick) as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    pace(wait);
                }
            }
            got
        }
    });
    let upload = std::thread::spawn({
        let addr = proxy.addr;
        move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            write!(
                c,
                "POST /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {SIZE}\r\n\r\n"
            )
            .unwrap();
            let chunk = vec![1u8; per_tick];
            let start = Instant::now();
            for i in 0..SIZE / per_tick {
                c.write_all(&chunk).unwrap();
                let due = start + tick * (i as u32 + 1);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    pace(wait);
                }
            }
            let mut reply = String::new();
            let _ = c.read_to_string(&mut reply);
            reply
        }
    });
    let mut peak = before;
    while !(download.is_finished() && upload.is_finished()) {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(download.join().unwrap() >= SIZE);
    let reply = upload.join().unwrap();
    assert!(reply.contains("received"), "{reply:?} {}", proxy.log());
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "the proxy grew by {} KiB moving 2 x 50 MB",
        grown
    );
}

#[test]
fn a_server_killed_mid_run_costs_idempotent_requests_nothing() {
    use std::sync::atomic::Ordering;
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let victim = Upstream::start("victim");
    let proxy = SiteProxy::start(&site("algorithm = \"round-robin\"", &[&a, &b, &victim], ""));
    // Four clients asking all the time, on kept-alive connections.
    let clients: Vec<BusyClient> = (0..4).map(|_| BusyClient::start(proxy.addr)).collect();
    let ok = || clients.iter().map(BusyClient::ok).sum::<usize>();
    assert!(wait_until(Duration::from_secs(10), || {
        victim.hits.load(Ordering::Relaxed) > 30
    }));
    // Killed: its open connections end without an answer, its port refuses.
    drop(victim);
    let at_kill = ok();
    assert!(wait_until(Duration::from_secs(10), || ok() > at_kill + 200));
    let failed: usize = clients.into_iter().map(|c| c.finish().1).sum();
    assert_eq!(failed, 0, "requests failed when a server died");
}

#[test]
fn a_route_error_page_replaces_the_body_of_5xx_answers() {
    let dead = Upstream::start("soon dead").addr;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sorry.html"),
        "<h1>We'll be right back</h1>\n",
    )
    .unwrap();
    let text = format!(
        "[proxy]\naccess_log = \"off\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\nerror_page = \"sorry.html\"\n\n[pool.p]\nservers = [{{ address = \"{dead}\" }}]\n"
    );
    let proxy = SiteProxy::start_in(dir, &text);
    let (status, headers, body) = get(proxy.addr, "/", "");
    assert_eq!(status, 502);
    assert_eq!(body, "<h1>We'll be right back</h1>\n");
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
}

/// A server that answers the first request on each connection and keeps it open, then
/// closes it, unanswered, when a second request arrives on it: a kept-alive connection that
/// closes just as the proxy reuses it. Counts the requests it dropped so.
fn closing_server() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dropped = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = dropped.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(100) {
            let Ok(mut conn) = conn else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
                // Reads one request head and its Content-Length body; false at the end.
                let mut pending: Vec<u8> = Vec::new();
                let mut read_request = |conn: &mut std::net::TcpStream| loop {
                    if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if pending.len() >= end + 4 + length {
                            pending.drain(..end + 4 + length);
                            return true;
                        }
                    }
                    let mut chunk = [0u8; 4096];
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => pending.extend_from_slice(&chunk[..n]),
                    }
                };
                if !read_request(&mut conn) {
                    return;
                }
                let body = "fresh connection\n";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if conn.write_all(reply.as_bytes()).is_err() {
                    return;
                }
                if read_request(&mut conn) {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, dropped)
}

#[test]
fn a_kept_alive_connection_the_server_closed_costs_a_bodiless_request_nothing() {
    use std::sync::atomic::Ordering;
    let (addr, dropped) = closing_server();
    let text = format!(
        "[proxy]\naccess_log = \"off\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[pool.p]\nstart = \"up\"\nservers = [{{ address = \"{addr}\" }}]\n"
    );
    let proxy = SiteProxy::start(&text);
    // The one server: a failed request could not go to another. Each request after the first
    // finds the kept-alive connection, which the server closes; it goes again on a new one.
    for _ in 0..5 {
        let (status, _, body) = get(proxy.addr, "/", "");
        assert_eq!((status, body.as_str()), (200, "fresh connection\n"));
    }
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        4,
        "the connections were not reused"
    );
    // A request with a body is not sent twice: whether it took effect is the server's to say.
    let (status, _, _) = raw_http(
        proxy.addr,
        "POST /order HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(status, 502);
    assert_eq!(dropped.load(Ordering::SeqCst), 5);
}

/// A server that answers every request with its head and half of its body, then stalls until
/// it is stopped, when it closes every connection and its listener. Counts the requests it
/// holds so.
struct StallingServer {
    addr: SocketAddr,
    stalled: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Raised (and waited on) to stop.
    halt: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl StallingServer {
    fn start() -> StallingServer {
        use std::io::Write;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Condvar, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stalled = Arc::new(AtomicUsize::new(0));
        let halt = Arc::new((Mutex::new(false), Condvar::new()));
        let (count, stop) = (stalled.clone(), halt.clone());
        std::thread::spawn(move || {
            // At most 100 connections; `kill` wakes the accept with one of its own.
            for conn in listener.incoming().take(100) {
                if *stop.0.lock().unwrap() {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let (count, stop) = (count.clone(), stop.clone());
                std::thread::spawn(move || {
                    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
                    if read_head(&mut conn).is_none() {
                        return;
                    }
                    let half = "x".repeat(50);
                    let begun = format!("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{half}");
                    if conn.write_all(begun.as_bytes()).is_err() {
                        return;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let (flag, raised) = &*stop;
                    let _stopped = raised
                        .wait_timeout_while(flag.lock().unwrap(), Duration::from_secs(60), |h| !*h)
                        .unwrap();
                    // Dropping the connection closes it, mid-body.
                });
            }
        });
        StallingServer {
            addr,
            stalled,
            halt,
        }
    }

    /// Kills it: every connection and the listener close.
    fn kill(&self) {
        let (flag, raised) = &*self.halt;
        *flag.lock().unwrap() = true;
        raised.notify_all();
        // Wakes the accepting thread, which then sees the flag and drops the listener.
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

#[test]
fn a_server_killed_while_answering_fails_only_the_responses_it_had_begun() {
    use std::sync::atomic::Ordering;
    let b = Upstream::start("b");
    let stalling = StallingServer::start();
    let text = site("algorithm = \"round-robin\"", &[&b], "").replace(
        "servers = [",
        &format!("servers = [{{ address = \"{}\" }}, ", stalling.addr),
    );
    let proxy = SiteProxy::start(&text);
    // Six clients at once: round-robin sends three to the stalling server, whose responses
    // begin and stop halfway; the other three are answered whole.
    let addr = proxy.addr;
    let clients: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || get(addr, "/", "")))
        .collect();
    assert!(
        wait_until(Duration::from_secs(10), || stalling
            .stalled
            .load(Ordering::SeqCst)
            == 3),
        "{} requests stalled",
        stalling.stalled.load(Ordering::SeqCst)
    );
    let in_flight_at_kill = stalling.stalled.load(Ordering::SeqCst);
    stalling.kill();
    let (mut whole, mut cut) = (0, 0);
    for c in clients {
        let (status, headers, body) = c.join().unwrap();
        assert_eq!(status, 200);
        let promised: usize = header(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if body.len() == promised && who(&body) == "b" {
            whole += 1;
        } else {
            // A response that had begun cannot go elsewhere: the client sees it cut short.
            assert!(body.len() < promised && body.starts_with('x'), "{body:?}");
            cut += 1;
        }
    }
    assert_eq!((whole, cut), (3, in_flight_at_kill));
    // From then on the dead server costs nothing: each request for it goes to the other.
    for _ in 0..20 {
        let (status, _, body) = get(proxy.addr, "/", "");
        assert_eq!((status, who(&body).as_str()), (200, "b"));
    }
}

#[test]
fn the_access_log_file_gets_a_line_per_request_and_sigusr1_reopens_it_after_a_rotation() {
    let up = Upstream::start("u");
    let text = site("", &[&up], "").replace(
        "access_log = \"off\"",
        "access_log = \"json\"\naccess_log_file = \"access.log\"",
    );
    let proxy = SiteProxy::start(&text);
    let log = proxy.dir.path().join("access.log");
    let rotated = proxy.dir.path().join("access.log.1");
    let lines = |path: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    let mut ids = Vec::new();
    for path in ["/one", "/two"] {
        let (status, headers, _) = get(proxy.addr, path, "");
        assert_eq!(status, 200);
        ids.push(header(&headers, "x-request-id").unwrap().to_string());
    }
    // A line is written once the response head has gone: wait for both.
    assert!(wait_until(Duration::from_secs(5), || lines(&log).len() == 2));
    let before = lines(&log);
    assert_eq!(before[0]["target"], "/one");
    assert_eq!(before[1]["request_id"], ids[1].as_str());
    assert_eq!(before[1]["status"], 200);
    // logrotate moves the file away, then signals.
    std::fs::rename(&log, &rotated).unwrap();
    proxy.signal(nix::sys::signal::Signal::SIGUSR1);
    assert!(
        wait_until(Duration::from_secs(5), || log.exists()),
        "not reopened: {}",
        proxy.log()
    );
    let (status, _, _) = get(proxy.addr, "/three", "");
    assert_eq!(status, 200);
    assert!(wait_until(Duration::from_secs(5), || lines(&log).len() == 1));
    assert_eq!(lines(&log)[0]["target"], "/three");
    assert_eq!(lines(&rotated).len(), 2, "a line went to the rotated file");
    assert!(
        !proxy.log().contains("meridian::access"),
        "lines went to stderr too"
    );
}

#[test]
fn an_idempotent_request_with_a_small_body_is_held_and_goes_to_another_server() {
    let live = Upstream::start("live");
    let dead_addr = Upstream::start("dead").addr;
    // The dropped server's port refuses connections; it comes first in round-robin order.
    let text = site("algorithm = \"round-robin\"\neject_after = 0", &[&live], "").replace(
        "servers = [",
        &format!("servers = [{{ address = \"{dead_addr}\" }}, "),
    );
    let proxy = SiteProxy::start(&text);
    let body = "b".repeat(1024);
    for _ in 0..6 {
        let (status, _, answer) = raw_http(
            proxy.addr,
            &format!("PUT /doc HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
        );
        assert_eq!((status, who(&answer).as_str()), (200, "live"), "{answer}");
        assert_eq!(seen(&answer, "content-length").as_deref(), Some("1024"));
    }
    // A body over the limit streams and goes once: half of them meet the dead server.
    let text = text.replace("eject_after = 0", "eject_after = 0\nretry_body_limit = 100");
    drop(proxy);
    let proxy = SiteProxy::start(&text);
    let statuses: Vec<u16> = (0..6)
        .map(|_| {
            raw_http(
                proxy.addr,
                &format!("PUT /doc HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
            )
            .0
        })
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 502).count(),
        3,
        "{statuses:?}"
    );
}

#[test]
fn a_host_route_takes_its_host_however_it_is_spelled() {
    let up = Upstream::start("u");
    let text = site("", &[&up], "").replace(
        "[[route]]\n",
        "[[route]]\nhost = \"admin.test\"\ndeny = [\"127.0.0.0/8\"]\npool = \"p\"\n\n[[route]]\n",
    );
    let proxy = SiteProxy::start(&text);
    let status = |host: &str| {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        raw_http(proxy.addr, &req).0
    };
    for spelled in [
        "admin.test",
        "ADMIN.Test",
        "admin.test.",
        "admin.test.:8080",
    ] {
        assert_eq!(status(spelled), 403, "{spelled}");
    }
    assert_eq!(status("other.test"), 200);
    let absolute =
        "GET http://Admin.test./ HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_http(proxy.addr, absolute).0, 403);
}

#[test]
fn access_rules_refuse_denied_clients_with_403_on_a_listener_and_a_route() {
    let up = Upstream::start("u");
    // The test connects from 127.0.0.1, a trusted proxy here: the client is the nearest
    // untrusted address in X-Forwarded-For.
    let text = format!(
        "[proxy]\naccess_log = \"off\"\ncontrol = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n\n[[listener]]\naddress = \"127.0.0.1:0\"\nallow = [\"10.0.0.0/8\", \"2001:db8::/32\"]\ndeny = [\"10.9.0.0/16\"]\n\n[[route]]\npath_prefix = \"/admin/\"\ndeny = [\"10.1.0.0/16\"]\npool = \"p\"\n\n[[route]]\npool = \"p\"\n\n[pool.p]\nservers = [{{ address = \"{}\" }}]\n",
        up.addr
    );
    let proxy = SiteProxy::start(&text);
    let status = |path: &str, xff: Option<&str>| {
        let extra = xff.map_or(String::new(), |x| format!("X-Forwarded-For: {x}\r\n"));
        get(proxy.addr, path, &extra).0
    };
    assert_eq!(status("/", Some("10.1.2.3")), 200);
    assert_eq!(status("/", Some("2001:db8::7")), 200);
    // Read from the right: the trusted hop is skipped, the one before it decides.
    assert_eq!(status("/", Some("10.1.2.3, 127.0.0.1")), 200);
    // The client could claim anything to the left of the nearest untrusted hop.
    assert_eq!(status("/", Some("10.1.2.3, 192.0.2.1")), 403);
    // Outside every allowed network, inside a denied one (deny wins), or no header at all
    // (the client is the trusted peer itself, which is not allowed).
    assert_eq!(status("/", Some("192.0.2.1")), 403);
    assert_eq!(status("/", Some("10.9.1.1")), 403);
    assert_eq!(status("/", None), 403);
    // The route's own rules on top.
    assert_eq!(status("/admin/x", Some("10.2.0.1")), 200);
    assert_eq!(status("/admin/x", Some("10.1.0.1")), 403);
    // Paths are matched as the server will resolve them, not as spelled.
    for path in [
        "//admin/x",
        "/./admin/x",
        "/x/../admin/x",
        "/%61dmin/x",
        "/x/..%2Fadmin/x",
        "/admin%2Fx",
    ] {
        assert_eq!(status(path, Some("10.1.0.1")), 403, "{path}");
    }
    // The target goes upstream as the client sent it.
    let (code, _, body) = get(
        proxy.addr,
        "/x/%2e%2E/a%2Fb",
        "X-Forwarded-For: 10.1.0.1\r\n",
    );
    assert_eq!(code, 200);
    assert_eq!(
        body.lines().nth(1),
        Some("GET /x/%2e%2E/a%2Fb HTTP/1.1"),
        "{body}"
    );
    let (code, page) = {
        let control = proxy.control.unwrap();
        let (code, body) = http(control, "GET", "/metrics", None, None);
        (code, body)
    };
    assert_eq!(code, 200);
    assert!(
        page.contains("meridian_proxy_denied_total{scope=\"listener\"} 4")
            && page.contains("meridian_proxy_denied_total{scope=\"route\"} 7"),
        "{page}"
    );
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 5);
}

#[test]
fn a_client_sending_its_head_slowly_is_cut_off_while_others_are_served() {
    use std::io::{Read, Write};
    let up = Upstream::start("u");
    let text = site_with("header_timeout = \"1s\"", &[&up]);
    let proxy = SiteProxy::start(&text);
    let mut slow = std::net::TcpStream::connect(proxy.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n")
        .unwrap();
    let started = Instant::now();
    let mut cut = None;
    // One header byte every 200 ms, for at most 8 s: the head never completes.
    for _ in 0..40 {
        pace(Duration::from_millis(200));
        // Others are served meanwhile.
        assert_eq!(get(proxy.addr, "/", "").0, 200);
        let mut buf = [0u8; 256];
        let closed = match slow.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false, // a 408 before the close
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        if closed || slow.write_all(b"X").is_err() {
            cut = Some(started.elapsed());
            break;
        }
    }
    let cut = cut.expect("the slow client was never cut off");
    assert!(cut < Duration::from_secs(4), "cut after {cut:?}");
}

#[test]
fn the_head_timeout_spares_slow_answers_and_long_bodies_and_closes_idle_connections() {
    use std::io::{Read, Write};
    // A server whose `/slow` answers after 2.5 s and whose `/trickle` sends five chunks
    // 600 ms apart: both longer than the proxy's 1 s header_timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(8) {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                while let Some(head) = read_head(&mut conn) {
                    if head.starts_with("GET /slow") {
                        pace(Duration::from_millis(2500));
                        let _ = write!(conn, "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow");
                        continue;
                    }
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                    );
                    for i in 0..5 {
                        pace(Duration::from_millis(600));
                        let _ = write!(conn, "1\r\n{i}\r\n");
                    }
                    let _ = write!(conn, "0\r\n\r\n");
                }
            });
        }
    });
    let proxy = SiteProxy::start(&format!(
        "[proxy]\naccess_log = \"off\"\nheader_timeout = \"1s\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[pool.p]\nservers = [{{ address = \"{origin}\" }}]\n"
    ));
    let mut c = std::net::TcpStream::connect(proxy.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // One kept-alive connection: a slow answer, then a long body, both whole.
    c.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let head = read_head(&mut c).expect("the slow answer was cut off");
    let mut body = vec![0u8; content_length(&head)];
    c.read_exact(&mut body).unwrap();
    assert_eq!(body, b"slow");
    c.write_all(b"GET /trickle HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let head = read_head(&mut c).expect("the long body was cut off");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut rest = Vec::new();
    let mut buf = [0u8; 256];
    while !rest.ends_with(b"0\r\n\r\n") {
        let n = c.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the long body was cut off: {}",
            String::from_utf8_lossy(&rest)
        );
        rest.extend_from_slice(&buf[..n]);
    }
    // Chunked: size line, data line, ..., "0", blank.
    let text = String::from_utf8_lossy(&rest).into_owned();
    let lines: Vec<&str> = text.split("\r\n").collect();
    let data: String = lines.chunks(2).take(5).map(|pair| pair[1]).collect();
    assert_eq!(data, "01234", "{text:?}");
    // Then idle: the connection is closed once no head comes within the timeout.
    let idle = Instant::now();
    let closed = matches!(c.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "an idle connection stayed open");
    assert!(
        idle.elapsed() < Duration::from_secs(9),
        "closed after {:?}",
        idle.elapsed()
    );
}

#[test]
fn bodies_over_the_limit_get_413_heads_over_theirs_431_and_targets_414() {
    let up = Upstream::start("u");
    let text = site_with(
        "max_body = 1000\nmax_headers = 10\nmax_header_bytes = 8192",
        &[&up],
    );
    let proxy = SiteProxy::start(&text);
    let post = |head: &str, body: &str| {
        raw_http(
            proxy.addr,
            &format!(
                "POST /up HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n{head}\r\n{body}"
            ),
        )
        .0
    };
    let small = "s".repeat(500);
    assert_eq!(
        post(&format!("Content-Length: {}\r\n", small.len()), &small),
        200
    );
    // Declared too large: refused before anything goes upstream.
    let big = "b".repeat(2000);
    assert_eq!(
        post(&format!("Content-Length: {}\r\n", big.len()), &big),
        413
    );
    // Chunked, so only counting tells: cut at the limit.
    let chunked: String = (0..3)
        .map(|_| format!("3e8\r\n{}\r\n", "c".repeat(1000)))
        .collect::<String>()
        + "0\r\n\r\n";
    assert_eq!(post("Transfer-Encoding: chunked\r\n", &chunked), 413);
    let hits = up.hits.load(std::sync::atomic::Ordering::SeqCst);
    assert!(hits <= 2, "{hits}");
    // Eleven header fields where ten are allowed.
    let many: String = (0..9).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    let (status, _, _) = raw_http(
        proxy.addr,
        &format!("GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n{many}\r\n"),
    );
    assert_eq!(status, 431);
    let fewer: String = (0..5).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    let (status, _, _) = raw_http(
        proxy.addr,
        &format!("GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n{fewer}\r\n"),
    );
    assert_eq!(status, 200);
    // Over the head's bytes: 414 when the request line alone passes them, else 431; sent
    // whole, or cut before the line ends.
    let get = |target: &str, fields: &str| {
        raw_http(
            proxy.addr,
            &format!(
                "GET {target} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n{fields}\r\n"
            ),
        )
        .0
    };
    let long = format!("/{}", "t".repeat(9000));
    assert_eq!(get(&long, ""), 414);
    assert_eq!(get(&format!("/{}", "t".repeat(7000)), ""), 200);
    assert_eq!(get("/", &format!("X-Big: {}\r\n", "v".repeat(9000))), 431);
    assert_eq!(
        raw_http(proxy.addr, &format!("GET /{}", "t".repeat(9000))).0,
        414
    );
}
