//! The site proxy's cache (RFC 9111) end to end: the real `meridian proxy` on port 0 in front
//! of an origin started in the test, whose answers each test scripts by path.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// What the origin answers: status, extra header lines, and the body. It gets the request's
/// path, its headers (lower-case names) and how many requests came before it for that path.
type Script = dyn Fn(&str, &[(String, String)], usize) -> (u16, Vec<String>, String) + Send + Sync;

/// An HTTP/1.1 origin on 127.0.0.1:0 answering as its script says, one request per
/// connection, counting requests by path.
struct Origin {
    addr: SocketAddr,
    counts: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    stop: Arc<AtomicBool>,
    accepting: Option<std::thread::JoinHandle<()>>,
}

impl Origin {
    fn start(
        script: impl Fn(&str, &[(String, String)], usize) -> (u16, Vec<String>, String)
            + Send
            + Sync
            + 'static,
    ) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let counts: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>> =
            Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (c, s) = (counts.clone(), stop.clone());
        let accepting = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let (c, script) = (c.clone(), script.clone());
                std::thread::spawn(move || serve(conn, &c, &*script));
            }
        });
        Origin {
            addr,
            counts,
            stop,
            accepting: Some(accepting),
        }
    }

    /// Stops accepting and closes the listener: connections are refused from then on.
    fn shut(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accepting.take() {
            t.join().unwrap();
        }
    }

    fn count(&self, path: &str) -> usize {
        self.counts.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.shut();
    }
}

fn serve(
    mut conn: TcpStream,
    counts: &std::sync::Mutex<std::collections::HashMap<String, usize>>,
    script: &Script,
) {
    conn.set_nonblocking(false).ok();
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut words = request_line.split(' ');
    let method = words.next().unwrap_or("").to_string();
    let path = words.next().unwrap_or("/").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let before = {
        let mut c = counts.lock().unwrap();
        let n = c.entry(path.clone()).or_default();
        *n += 1;
        *n - 1
    };
    let (status, extra, body) = script(&path, &headers, before);
    let mut reply = format!("HTTP/1.1 {status} X\r\nconnection: close\r\n");
    for line in extra {
        reply.push_str(&line);
        reply.push_str("\r\n");
    }
    // A HEAD is told the length its GET would have, as servers do.
    let length = if status == 304 { 0 } else { body.len() };
    let body = if method == "HEAD" || status == 304 {
        String::new()
    } else {
        body
    };
    reply.push_str(&format!("content-length: {length}\r\n\r\n{body}"));
    let _ = conn.write_all(reply.as_bytes());
}

/// A proxy with one caching route to `origin`.
fn proxy(origin: &Origin, cache: &str) -> SiteProxy {
    SiteProxy::start(&format!(
        "[proxy]\naccess_log = \"off\"\ndrain_timeout = \"1s\"\ncontrol = \"127.0.0.1:0\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\ncache = {cache}\n\n[pool.p]\nservers = [{{ address = \"{}\" }}]\n",
        origin.addr
    ))
}

/// One request through the proxy: status, headers, body.
fn get(
    at: SocketAddr,
    method: &str,
    path: &str,
    extra: &str,
) -> (u16, Vec<(String, String)>, String) {
    raw_http(
        at,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: cache.test\r\nConnection: close\r\n{extra}\r\n"
        ),
    )
}

#[test]
fn fresh_responses_are_served_from_the_cache_with_age_and_cache_status() {
    let origin = Origin::start(|path, _, n| match path {
        "/fresh" => (
            200,
            vec!["cache-control: max-age=60".into()],
            format!("fresh {n}"),
        ),
        "/no-store" => (
            200,
            vec!["cache-control: no-store, max-age=60".into()],
            format!("ns {n}"),
        ),
        "/private" => (
            200,
            vec!["cache-control: private, max-age=60".into()],
            format!("pv {n}"),
        ),
        "/cookie" => (
            200,
            vec!["cache-control: max-age=60".into(), "set-cookie: s=1".into()],
            format!("ck {n}"),
        ),
        "/plain" => (200, vec![], format!("plain {n}")),
        _ => (404, vec![], "no".into()),
    });
    let p = proxy(&origin, "true");

    let (status, headers, body) = get(p.addr, "GET", "/fresh", "");
    assert_eq!((status, body.as_str()), (200, "fresh 0"));
    let first = header(&headers, "cache-status")
        .unwrap_or_default()
        .to_string();
    assert!(
        first.starts_with("Meridian; fwd=uri-miss") && first.ends_with("stored"),
        "{first}"
    );
    let (status, headers, body) = get(p.addr, "GET", "/fresh", "");
    assert_eq!((status, body.as_str()), (200, "fresh 0"), "the stored body");
    assert!(
        header(&headers, "cache-status")
            .unwrap()
            .starts_with("Meridian; hit"),
        "{headers:?}"
    );
    assert!(header(&headers, "age").is_some(), "{headers:?}");
    assert_eq!(origin.count("/fresh"), 1, "a hit asks no server");
    // HEAD is answered from the stored GET, without a body.
    let (status, headers, body) = get(p.addr, "HEAD", "/fresh", "");
    assert_eq!((status, body.as_str()), (200, ""));
    assert!(header(&headers, "cache-status")
        .unwrap()
        .starts_with("Meridian; hit"));
    assert_eq!(origin.count("/fresh"), 1);
    // The client may ask for a fresh copy.
    let (_, _, body) = get(p.addr, "GET", "/fresh", "Cache-Control: no-cache\r\n");
    assert_eq!(body, "fresh 1");
    let metrics = http(p.control.unwrap(), "GET", "/metrics", None, None).1;
    for line in [
        "meridian_proxy_cache_total{result=\"hit\"} 2",
        "meridian_proxy_cache_total{result=\"stored\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // What may not be stored goes to the server every time.
    for (path, why) in [
        ("/no-store", "no-store"),
        ("/private", "private"),
        ("/cookie", "Set-Cookie"),
        ("/plain", "no freshness"),
    ] {
        let (_, headers, _) = get(p.addr, "GET", path, "");
        let status = header(&headers, "cache-status").unwrap();
        assert!(!status.contains("stored"), "{why}: {status}");
        get(p.addr, "GET", path, "");
        assert_eq!(origin.count(path), 2, "{why}");
    }
}

#[test]
fn vary_keeps_variants_and_a_304_refreshes_the_stored_response() {
    let origin = Origin::start(|path, headers, n| {
        let h = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        match path {
            "/vary" => (
                200,
                vec![
                    "cache-control: max-age=60".into(),
                    "vary: accept-language".into(),
                ],
                format!("{} {n}", h("accept-language")),
            ),
            "/etag" if h("if-none-match") == "\"v1\"" => (
                304,
                vec![
                    "etag: \"v1\"".into(),
                    "cache-control: max-age=0".into(),
                    "x-refreshed: yes".into(),
                ],
                String::new(),
            ),
            "/etag" => (
                200,
                vec!["etag: \"v1\"".into(), "cache-control: max-age=0".into()],
                format!("etag {n}"),
            ),
            _ => (404, vec![], "no".into()),
        }
    });
    let p = proxy(&origin, "true");

    let ask = |lang: &str| {
        get(
            p.addr,
            "GET",
            "/vary",
            &format!("Accept-Language: {lang}\r\n"),
        )
        .2
    };
    assert_eq!(ask("en"), "en 0");
    assert_eq!(ask("de"), "de 1");
    assert_eq!(ask("en"), "en 0", "the en variant is kept beside de");
    assert_eq!(ask("de"), "de 1");
    assert_eq!(origin.count("/vary"), 2);

    // Stale at once: the next request revalidates with the ETag, and the 304 serves the
    // stored body with the 304's headers.
    assert_eq!(get(p.addr, "GET", "/etag", "").2, "etag 0");
    let (status, headers, body) = get(p.addr, "GET", "/etag", "");
    assert_eq!((status, body.as_str()), (200, "etag 0"));
    assert_eq!(header(&headers, "x-refreshed"), Some("yes"), "{headers:?}");
    assert_eq!(
        header(&headers, "cache-status"),
        Some("Meridian; fwd=stale; fwd-status=304"),
        "{headers:?}"
    );
    assert_eq!(origin.count("/etag"), 2);
}

#[test]
fn unsafe_methods_invalidate_and_caps_apply() {
    let origin = Origin::start(|path, _, n| match path {
        "/doc" => (
            200,
            vec!["cache-control: max-age=60".into()],
            format!("doc {n}"),
        ),
        "/big" => (
            200,
            vec!["cache-control: max-age=60".into()],
            "x".repeat(4096),
        ),
        "/other" => (
            200,
            vec!["cache-control: max-age=60".into()],
            format!("other {n}"),
        ),
        _ => (200, vec!["location: /other".into()], "done".into()),
    });
    let p = proxy(&origin, "{ max_entry = 1024 }");

    assert_eq!(get(p.addr, "GET", "/doc", "").2, "doc 0");
    assert_eq!(get(p.addr, "GET", "/doc", "").2, "doc 0");
    assert_eq!(get(p.addr, "GET", "/other", "").2, "other 0");
    // A POST to /doc invalidates /doc; one to /form invalidates the /other its Location names.
    let (status, headers, _) = get(p.addr, "POST", "/doc", "Content-Length: 0\r\n");
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "cache-status"),
        Some("Meridian; fwd=method")
    );
    assert_eq!(get(p.addr, "GET", "/doc", "").2, "doc 2");
    get(p.addr, "POST", "/form", "Content-Length: 0\r\n");
    assert_eq!(get(p.addr, "GET", "/other", "").2, "other 1");

    // A body over the route's max_entry streams through uncached.
    for _ in 0..2 {
        let (status, _, body) = get(p.addr, "GET", "/big", "");
        assert_eq!((status, body.len()), (200, 4096));
    }
    assert_eq!(origin.count("/big"), 2);
}

#[test]
fn a_stale_response_answers_while_the_origin_is_down_unless_it_forbids_it() {
    // Stored already stale (its Age is past its max-age), so the next request goes upstream.
    let mut origin = Origin::start(|path, _, n| match path {
        "/sie" => (
            200,
            vec![
                "cache-control: max-age=10, stale-if-error=600".into(),
                "age: 20".into(),
                "etag: \"a\"".into(),
            ],
            format!("sie {n}"),
        ),
        "/plain" => (
            200,
            vec![
                "cache-control: max-age=10".into(),
                "age: 20".into(),
                "etag: \"b\"".into(),
            ],
            format!("plain {n}"),
        ),
        "/strict" => (
            200,
            vec![
                "cache-control: max-age=10, must-revalidate".into(),
                "age: 20".into(),
                "etag: \"c\"".into(),
            ],
            format!("strict {n}"),
        ),
        _ => (404, vec![], "no".into()),
    });
    let p = proxy(&origin, "{ stale_if_down = \"1h\" }");
    for path in ["/sie", "/plain", "/strict"] {
        assert_eq!(get(p.addr, "GET", path, "").0, 200);
    }
    origin.shut();
    let (status, headers, body) = get(p.addr, "GET", "/sie", "");
    assert_eq!((status, body.as_str()), (200, "sie 0"));
    assert!(
        header(&headers, "cache-status")
            .unwrap()
            .ends_with("detail=stale-if-error"),
        "{headers:?}"
    );
    // No stale-if-error, but the route serves stale while no server answers.
    let (status, headers, body) = get(p.addr, "GET", "/plain", "");
    assert_eq!((status, body.as_str()), (200, "plain 0"));
    assert!(header(&headers, "cache-status")
        .unwrap()
        .ends_with("detail=server-down"));
    // must-revalidate forbids it: the failure shows.
    let (status, headers, _) = get(p.addr, "GET", "/strict", "");
    assert_eq!(status, 502, "{headers:?}");
    assert!(header(&headers, "cache-status")
        .unwrap()
        .contains("detail=no-response"));
}

/// An origin whose `/slow` answers wait until the test opens the gate.
fn gated(gate: Arc<AtomicBool>, cache_control: &'static str) -> Origin {
    Origin::start(move |path, _, n| {
        if path == "/slow" {
            wait_until(Duration::from_secs(20), || gate.load(Ordering::SeqCst));
        }
        (
            200,
            vec![format!("cache-control: {cache_control}")],
            format!("slow {n}"),
        )
    })
}

/// Sends `n` concurrent GETs for `/slow`, opens the gate once the proxy shows `waiting`
/// requests waiting for the first, and returns the bodies.
fn concurrent_misses(
    p: &SiteProxy,
    gate: &Arc<AtomicBool>,
    n: usize,
    waiting: usize,
) -> Vec<String> {
    let clients: Vec<_> = (0..n)
        .map(|_| {
            let at = p.addr;
            std::thread::spawn(move || get(at, "GET", "/slow", "").2)
        })
        .collect();
    let control = p.control.unwrap();
    let line = format!("meridian_proxy_cache_total{{result=\"coalesced\"}} {waiting}");
    assert!(
        wait_until(Duration::from_secs(20), || http(
            control, "GET", "/metrics", None, None
        )
        .1
        .contains(&line)),
        "{waiting} requests never waited"
    );
    gate.store(true, Ordering::SeqCst);
    clients.into_iter().map(|c| c.join().unwrap()).collect()
}

#[test]
fn concurrent_misses_make_one_request_unless_the_response_cannot_be_stored() {
    let gate = Arc::new(AtomicBool::new(false));
    let origin = gated(gate.clone(), "max-age=60");
    let p = proxy(&origin, "true");
    let bodies = concurrent_misses(&p, &gate, 50, 49);
    assert!(bodies.iter().all(|b| b == "slow 0"), "{bodies:?}");
    assert_eq!(origin.count("/slow"), 1);

    // A private response cannot be shared: each request that waited goes upstream itself.
    let gate = Arc::new(AtomicBool::new(false));
    let origin = gated(gate.clone(), "private, max-age=60");
    let p = proxy(&origin, "true");
    let bodies = concurrent_misses(&p, &gate, 50, 49);
    assert_eq!(bodies.iter().filter(|b| b.starts_with("slow ")).count(), 50);
    assert_eq!(origin.count("/slow"), 50);
}

/// Reads from `s` into `raw` until it holds `text`, for at most ten seconds.
fn read_until(s: &mut TcpStream, raw: &mut Vec<u8>, text: &str) -> bool {
    let mut chunk = [0u8; 4096];
    wait_until(Duration::from_secs(10), || {
        if let Ok(n) = s.read(&mut chunk) {
            raw.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(raw).contains(text)
    })
}

#[test]
fn requests_waiting_for_a_fetch_stream_it_as_it_arrives_even_after_its_client_leaves() {
    // A server that sends the first part of a cacheable body, then holds it until the test
    // opens the gate; it counts the requests it gets.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = listener.local_addr().unwrap();
    let gate = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (open, count) = (gate.clone(), requests.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().take(4) {
            let Ok(mut conn) = conn else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let open = open.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ntransfer-encoding: chunked\r\n\r\nb\r\nfirst part \r\n"
                );
                wait_until(Duration::from_secs(20), || open.load(Ordering::SeqCst));
                let _ = write!(conn, "b\r\nsecond part\r\n0\r\n\r\n");
            });
        }
    });
    let p = SiteProxy::start(&format!(
        "[proxy]\naccess_log = \"off\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\ncache = true\n\n[pool.p]\nservers = [{{ address = \"{origin}\" }}]\n"
    ));
    let request = "GET /stream HTTP/1.1\r\nHost: cache.test\r\nConnection: close\r\n\r\n";
    let mut first = TcpStream::connect(p.addr).unwrap();
    first
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    first.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    assert!(
        read_until(&mut first, &mut raw, "first part"),
        "no first part"
    );

    // A second request while the first is being fetched gets what has come so far, at once.
    let mut second = TcpStream::connect(p.addr).unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    second.write_all(request.as_bytes()).unwrap();
    let mut followed = Vec::new();
    assert!(
        read_until(&mut second, &mut followed, "first part"),
        "the waiting request did not stream: {}",
        String::from_utf8_lossy(&followed)
    );
    let head = String::from_utf8_lossy(&followed).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let status = head.lines().find(|l| l.starts_with("cache-status:"));
    assert!(
        status
            .is_some_and(|l| l.starts_with("cache-status: meridian; hit; ttl=")
                && l.ends_with("; collapsed")),
        "{head}"
    );

    // The first client leaves; the rest is still fetched for the second, and stored.
    drop(first);
    gate.store(true, Ordering::SeqCst);
    assert!(
        read_until(&mut second, &mut followed, "second part\r\n0\r\n\r\n"),
        "the waiting request did not get the whole body: {}",
        String::from_utf8_lossy(&followed)
    );
    assert!(
        wait_until(Duration::from_secs(10), || get(
            p.addr, "GET", "/stream", ""
        )
        .2 == "first part second part"),
        "the body was not stored whole"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[test]
fn purges_by_key_prefix_and_tag_and_the_purge_method() {
    let origin = Origin::start(|path, _, n| {
        let tag = if path.starts_with("/a/") {
            "team-a all"
        } else {
            "team-b all"
        };
        (
            200,
            vec![
                "cache-control: max-age=600".into(),
                format!("surrogate-key: {tag}"),
            ],
            format!("{path} {n}"),
        )
    });
    let p = proxy(&origin, "true");
    let control = p.control.unwrap();
    let fill_at = |at: SocketAddr| {
        for path in ["/a/1", "/a/2", "/b/1"] {
            get(at, "GET", path, "");
        }
    };
    let first = p.addr;
    let fill = || fill_at(first);
    let fetched = |path: &str| origin.count(path);
    // Fills the cache again and checks how often each path has reached the origin by then.
    let refilled_fetches_are = |want| {
        fill();
        assert_eq!((fetched("/a/1"), fetched("/a/2"), fetched("/b/1")), want);
    };
    fill();
    let (_, headers, _) = get(p.addr, "GET", "/a/1", "");
    assert!(
        header(&headers, "surrogate-key").is_none(),
        "tags stay in the cache"
    );

    let purge = |query: &str| {
        http(
            control,
            "POST",
            &format!("/cache/purge?{query}"),
            None,
            None,
        )
    };
    assert_eq!(
        purge("key=http://cache.test/a/1"),
        (200, "{\"purged\":1}\n".to_string())
    );
    refilled_fetches_are((2, 1, 1));
    assert_eq!(purge("prefix=http://cache.test/a/").1, "{\"purged\":2}\n");
    refilled_fetches_are((3, 2, 1));
    assert_eq!(purge("tag=team-b").1, "{\"purged\":1}\n");
    refilled_fetches_are((3, 2, 2));
    assert_eq!(purge("nothing=1").0, 400);
    // A value left out, or a misspelt name beside a right one, drops nothing.
    for query in [
        "prefix=",
        "key=",
        "tag=",
        "prefix",
        "",
        "prefx=http://cache.test/&tag=x",
        "all=yes",
    ] {
        assert_eq!(purge(query).0, 400, "{query}");
    }
    refilled_fetches_are((3, 2, 2));
    // Everything goes only when asked for by name.
    assert_eq!(purge("all").1, "{\"purged\":3}\n");
    refilled_fetches_are((4, 3, 3));

    // PURGE from a network the config does not allow: refused, nothing dropped.
    let (status, _, _) = get(p.addr, "PURGE", "/a/1", "");
    assert_eq!(status, 403);
    fill();
    assert_eq!(fetched("/a/1"), 4);
    drop(p);

    // Allowed: the request's key, or the tags it names.
    let p = SiteProxy::start(&format!(
        "[proxy]\naccess_log = \"off\"\npurge_allow = [\"127.0.0.0/8\"]\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\ncache = true\n\n[pool.p]\nservers = [{{ address = \"{}\" }}]\n",
        origin.addr
    ));
    let fill = || fill_at(p.addr);
    fill();
    let before = (fetched("/a/1"), fetched("/a/2"), fetched("/b/1"));
    assert_eq!(get(p.addr, "PURGE", "/a/1", "").2, "purged 1\n");
    assert_eq!(
        get(p.addr, "PURGE", "/", "Surrogate-Key: all\r\n").2,
        "purged 2\n"
    );
    fill();
    assert_eq!(
        (fetched("/a/1"), fetched("/a/2"), fetched("/b/1")),
        (before.0 + 1, before.1 + 1, before.2 + 1)
    );
}

/// One GET through the proxy with reqwest (which leaves encoded bodies as they come).
fn fetch(
    at: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = reqwest::Client::new().get(format!("http://{at}{path}"));
        if let Some(a) = accept {
            req = req.header("accept-encoding", a);
        }
        let r = req.send().await.unwrap();
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        (status, headers, r.bytes().await.unwrap().to_vec())
    })
}

fn decode(encoding: &str, body: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::decode_all(body).unwrap(),
        other => panic!("{other}"),
    }
    out
}

#[test]
fn compression_follows_accept_encoding_and_each_encoding_is_cached_apart() {
    let text = "all work and no play makes a dull proxy\n".repeat(100);
    let body = text.clone();
    let origin = Origin::start(move |path, _, _| {
        let cc = "cache-control: max-age=600".to_string();
        match path {
            "/text" => (
                200,
                vec![
                    cc,
                    "content-type: text/plain".into(),
                    "etag: \"t1\"".into(),
                    "accept-ranges: bytes".into(),
                ],
                body.clone(),
            ),
            "/small" => (
                200,
                vec![cc, "content-type: text/plain".into()],
                "short".into(),
            ),
            "/head" => (
                200,
                vec!["content-type: text/plain".into(), "etag: \"h1\"".into()],
                body.clone(),
            ),
            "/image" => (
                200,
                vec![cc, "content-type: image/png".into()],
                body.clone(),
            ),
            "/keep" => (
                200,
                vec![
                    "cache-control: max-age=600, no-transform".into(),
                    "content-type: text/plain".into(),
                ],
                body.clone(),
            ),
            _ => (404, vec![], String::new()),
        }
    });
    let p = SiteProxy::start(&format!(
        "[proxy]\naccess_log = \"off\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\ncache = true\ncompress = true\n\n[pool.p]\nservers = [{{ address = \"{}\" }}]\n",
        origin.addr
    ));
    for round in 0..2 {
        for (accept, want) in [
            ("gzip", "gzip"),
            ("gzip, deflate, br", "br"),
            ("br;q=0.5, zstd", "zstd"),
        ] {
            let (status, headers, raw) = fetch(p.addr, "/text", Some(accept));
            assert_eq!(status, 200);
            let h = |n: &str| headers.get(n).map(|v| v.to_str().unwrap().to_string());
            assert_eq!(h("content-encoding").as_deref(), Some(want), "{accept}");
            assert_eq!(h("vary").as_deref(), Some("accept-encoding"));
            assert_eq!(
                h("etag").as_deref(),
                Some("W/\"t1\""),
                "the transformed body's ETag is weak"
            );
            assert!(h("accept-ranges").is_none(), "{headers:?}");
            // Streamed as it is compressed: no length; from the cache, the stored length.
            let length = h("content-length");
            match round {
                0 => assert!(length.is_none(), "{headers:?}"),
                _ => assert_eq!(length, Some(raw.len().to_string())),
            }
            assert_eq!(
                decode(want, &raw),
                text.as_bytes(),
                "{accept}: decoded once, the original"
            );
            let status = h("cache-status").unwrap();
            assert_eq!(
                status.starts_with("Meridian; hit"),
                round == 1,
                "{accept}: {status}"
            );
        }
    }
    assert_eq!(origin.count("/text"), 3, "one fetch per encoding");
    // No encoding accepted: the body as it is, still marked as varying.
    let (_, headers, raw) = fetch(p.addr, "/text", None);
    assert!(headers.get("content-encoding").is_none());
    assert_eq!(headers.get("vary").unwrap(), "accept-encoding");
    assert_eq!(raw, text.as_bytes());
    // A HEAD gets the fields its GET would, no body.
    let (status, headers, _) = get(p.addr, "HEAD", "/head", "Accept-Encoding: gzip\r\n");
    let h = |n: &str| header(&headers, n);
    assert_eq!(status, 200);
    assert_eq!(
        (
            h("content-encoding"),
            h("vary"),
            h("etag"),
            h("content-length")
        ),
        (
            Some("gzip"),
            Some("accept-encoding"),
            Some("W/\"h1\""),
            None
        ),
        "{headers:?}"
    );
    // Small, not compressible, or no-transform: sent as they are.
    for path in ["/small", "/image", "/keep"] {
        let (_, headers, _) = fetch(p.addr, path, Some("gzip"));
        assert!(headers.get("content-encoding").is_none(), "{path}");
    }
}

#[test]
fn an_event_stream_is_compressed_chunk_by_chunk() {
    // A server that sends one event, then holds the stream open until the test has read it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = listener.local_addr().unwrap();
    let read_first = Arc::new(AtomicBool::new(false));
    let gate = read_first.clone();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
        let event = "data: first event of the stream\n\n";
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
            event.len()
        );
        wait_until(Duration::from_secs(20), || gate.load(Ordering::SeqCst));
        let _ = write!(conn, "0\r\n\r\n");
    });
    let p = SiteProxy::start(&format!(
        "[proxy]\naccess_log = \"off\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\ncompress = true\n\n[pool.p]\nservers = [{{ address = \"{origin}\" }}]\n"
    ));
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /events HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
    )
    .unwrap();
    // Read the head and the chunks that have come, decoding as they arrive, until the first
    // event is readable: the server has not ended its body.
    let mut raw = Vec::new();
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    let mut fed = 0;
    let mut chunk = [0u8; 4096];
    let decoded_first = wait_until(Duration::from_secs(10), || {
        let Ok(n) = s.read(&mut chunk) else {
            return false;
        };
        raw.extend_from_slice(&chunk[..n]);
        let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        // Chunked framing: size line, data, CRLF.
        let mut at = head_end + 4 + fed;
        while let Some(line_end) = raw[at..].windows(2).position(|w| w == b"\r\n") {
            let size =
                usize::from_str_radix(std::str::from_utf8(&raw[at..at + line_end]).unwrap(), 16)
                    .unwrap();
            let start = at + line_end + 2;
            if raw.len() < start + size + 2 {
                break;
            }
            decoder.write_all(&raw[start..start + size]).unwrap();
            decoder.flush().unwrap();
            fed += line_end + 2 + size + 2;
            at = head_end + 4 + fed;
        }
        String::from_utf8_lossy(decoder.get_ref()).contains("first event")
    });
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(
        decoded_first,
        "the first event was not readable before the stream ended"
    );
    read_first.store(true, Ordering::SeqCst);
}

#[test]
fn ranges_are_served_from_a_stored_response() {
    let origin = Origin::start(|_, _, _| {
        (
            200,
            vec![
                "cache-control: max-age=600".into(),
                "etag: \"r1\"".into(),
                "content-type: text/plain".into(),
            ],
            "0123456789".into(),
        )
    });
    let p = proxy(&origin, "true");
    assert_eq!(get(p.addr, "GET", "/r", "").2, "0123456789");
    let (status, headers, body) = get(p.addr, "GET", "/r", "Range: bytes=2-4\r\n");
    assert_eq!((status, body.as_str()), (206, "234"));
    assert_eq!(header(&headers, "content-range"), Some("bytes 2-4/10"));
    let (status, _, body) = get(p.addr, "GET", "/r", "Range: bytes=-3\r\n");
    assert_eq!((status, body.as_str()), (206, "789"));
    let (status, headers, body) = get(p.addr, "GET", "/r", "Range: bytes=0-0, 9-\r\n");
    assert_eq!(status, 206);
    assert!(header(&headers, "content-type")
        .unwrap()
        .starts_with("multipart/byteranges; boundary="));
    assert!(
        body.contains("content-range: bytes 0-0/10\r\n\r\n0")
            && body.contains("content-range: bytes 9-9/10\r\n\r\n9"),
        "{body}"
    );
    let (status, headers, _) = get(p.addr, "GET", "/r", "Range: bytes=20-\r\n");
    assert_eq!(status, 416);
    assert_eq!(header(&headers, "content-range"), Some("bytes */10"));
    // If-Range with another validator: the whole response.
    let (status, _, body) = get(
        p.addr,
        "GET",
        "/r",
        "Range: bytes=2-4\r\nIf-Range: \"r0\"\r\n",
    );
    assert_eq!((status, body.as_str()), (200, "0123456789"));
    let (status, _, body) = get(
        p.addr,
        "GET",
        "/r",
        "Range: bytes=2-4\r\nIf-Range: \"r1\"\r\n",
    );
    assert_eq!((status, body.as_str()), (206, "234"));
    assert_eq!(
        origin.count("/r"),
        1,
        "every range came from the stored response"
    );
}

#[test]
fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let origin = Origin::start(|_, _, n| match n {
        // Stored already stale, inside its stale-while-revalidate window.
        0 => (
            200,
            vec![
                "cache-control: max-age=10, stale-while-revalidate=600".into(),
                "age: 20".into(),
            ],
            "v0".into(),
        ),
        _ => (
            200,
            vec!["cache-control: max-age=600".into()],
            format!("v{n}"),
        ),
    });
    let p = proxy(&origin, "true");
    assert_eq!(get(p.addr, "GET", "/swr", "").2, "v0");
    let (status, headers, body) = get(p.addr, "GET", "/swr", "");
    assert_eq!(
        (status, body.as_str()),
        (200, "v0"),
        "the stale response, at once"
    );
    assert_eq!(
        header(&headers, "cache-status"),
        Some("Meridian; hit; detail=stale-while-revalidate")
    );
    assert!(
        wait_until(Duration::from_secs(10), || origin.count("/swr") == 2),
        "no background revalidation"
    );
    // Once the background request has stored its answer, it is what hits get.
    assert!(wait_until(Duration::from_secs(10), || get(
        p.addr, "GET", "/swr", ""
    )
    .2 == "v1"));
    assert_eq!(origin.count("/swr"), 2);
}

/// A proxy caching to `origin` with its disk tier in `disk`.
fn proxy_with_disk(origin: &Origin, disk: &std::path::Path) -> SiteProxy {
    SiteProxy::start(&format!(
        "[proxy]\naccess_log = \"off\"\ncontrol = \"127.0.0.1:0\"\ncache_disk = \"{}\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\ncache = true\n\n[pool.p]\nservers = [{{ address = \"{}\" }}]\n",
        disk.display(),
        origin.addr
    ))
}

/// The body the origin gives `path`: long enough that a write can be cut.
fn big_body(path: &str) -> String {
    format!("{path}\n").repeat(64 * 1024 / (path.len() + 1))
}

#[test]
fn the_disk_tier_survives_a_restart() {
    let origin = Origin::start(|path, _, n| {
        (
            200,
            vec![
                "cache-control: max-age=600".into(),
                "surrogate-key: kept".into(),
            ],
            format!("{path} {n}"),
        )
    });
    let disk = tempfile::tempdir().unwrap();
    let p = proxy_with_disk(&origin, disk.path());
    assert_eq!(get(p.addr, "GET", "/kept", "").2, "/kept 0");
    let control = p.control.unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let m = http(control, "GET", "/metrics", None, None).1;
            m.lines().any(|l| {
                l.starts_with("meridian_proxy_cache_bytes{tier=\"disk\"}") && !l.ends_with(" 0")
            })
        }),
        "nothing reached the disk"
    );
    drop(p);
    let p = proxy_with_disk(&origin, disk.path());
    let (_, headers, body) = get(p.addr, "GET", "/kept", "");
    assert_eq!(body, "/kept 0", "from the disk, after the restart");
    assert!(header(&headers, "cache-status")
        .unwrap()
        .starts_with("Meridian; hit"));
    assert_eq!(origin.count("/kept"), 1);
    // A purge by tag reaches what only the disk holds.
    drop(p);
    let p = proxy_with_disk(&origin, disk.path());
    assert_eq!(
        http(
            p.control.unwrap(),
            "POST",
            "/cache/purge?tag=kept",
            None,
            None
        )
        .1,
        "{\"purged\":1}\n"
    );
    assert_eq!(get(p.addr, "GET", "/kept", "").2, "/kept 1");
}

#[test]
fn a_kill_during_writes_never_leaves_a_corrupt_entry_served() {
    let origin = Origin::start(|path, _, _| {
        (
            200,
            vec!["cache-control: max-age=600".into()],
            big_body(path),
        )
    });
    let disk = tempfile::tempdir().unwrap();
    let files = |dir: &std::path::Path| std::fs::read_dir(dir).map_or(0, |d| d.count());
    for round in 0..20 {
        let p = proxy_with_disk(&origin, disk.path());
        let before = files(disk.path());
        // Many responses being stored, and the proxy killed while they are.
        let writers: Vec<_> = (0..8)
            .map(|t| {
                let at = p.addr;
                std::thread::spawn(move || {
                    for i in 0..6 {
                        let path = format!("/k/{round}-{t}-{i}");
                        let _ = std::panic::catch_unwind(|| get(at, "GET", &path, ""));
                    }
                })
            })
            .collect();
        // Killed at a different point each round: after 0, 1, 2 or 3 more files appeared.
        wait_until(Duration::from_secs(5), || {
            files(disk.path()) >= before + round % 4
        });
        p.signal(nix::sys::signal::Signal::SIGKILL);
        for w in writers {
            let _ = w.join();
        }
        drop(p);
        // Whatever the restarted proxy serves from its disk is whole.
        let p = proxy_with_disk(&origin, disk.path());
        for t in 0..8 {
            for i in 0..6 {
                let path = format!("/k/{round}-{t}-{i}");
                let (status, headers, body) = get(p.addr, "GET", &path, "");
                assert_eq!(status, 200, "{path}");
                assert_eq!(body, big_body(&path), "{path}: {headers:?}");
            }
        }
    }
}

#[test]
fn the_cache_key_keeps_what_the_route_names() {
    let origin = Origin::start(|path, headers, n| {
        let device = headers
            .iter()
            .find(|(k, _)| k == "x-device")
            .map_or("", |(_, v)| v.as_str());
        (
            200,
            vec!["cache-control: max-age=600".into()],
            format!("{path} {device} {n}"),
        )
    });
    let p = SiteProxy::start(&format!(
        "[proxy]\naccess_log = \"off\"\ncontrol = \"127.0.0.1:0\"\npurge_allow = [\"127.0.0.0/8\"]\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\ncache = {{ key = {{ query = [\"v\"], headers = [\"x-device\"] }} }}\n\n[pool.p]\nservers = [{{ address = \"{}\" }}]\n",
        origin.addr
    ));
    let ask = |target: &str, device: &str| {
        get(p.addr, "GET", target, &format!("X-Device: {device}\r\n")).2
    };
    let first = ask("/k?v=1&utm=a", "phone");
    // Other parameters, in another order: the same key.
    assert_eq!(ask("/k?utm=b&v=1", "phone"), first);
    assert_ne!(ask("/k?v=2", "phone"), first);
    assert_ne!(
        ask("/k?v=1", "desk"),
        first,
        "the key header tells them apart"
    );
    assert_eq!(
        origin.count("/k?v=1&utm=a") + origin.count("/k?v=2") + origin.count("/k?v=1"),
        3
    );

    // Purges name the key as the route makes it: the control endpoint's key carries the key
    // header as a line of its own; PURGE takes it from the request's headers.
    let control = p.control.unwrap();
    let purge = |query: &str| {
        http(
            control,
            "POST",
            &format!("/cache/purge?{query}"),
            None,
            None,
        )
        .1
    };
    assert_eq!(
        purge("key=http://cache.test/k?v=1%0Ax-device:%20phone"),
        "{\"purged\":1}\n"
    );
    assert_ne!(ask("/k?v=1", "phone"), first, "purged, so fetched again");
    assert_eq!(
        ask("/k?v=1", "desk"),
        ask("/k?v=1&utm=c", "desk"),
        "still stored"
    );
    let purged = get(p.addr, "PURGE", "/k?v=1&utm=z", "X-Device: desk\r\n").2;
    assert_eq!(purged, "purged 1\n");
    let desk = ask("/k?v=1", "desk");
    assert_eq!(origin.count("/k?v=1"), 3, "{desk}");
}

#[test]
fn the_memory_tier_stays_under_its_bound_and_counts_evictions() {
    let origin = Origin::start(|_, _, _| {
        (
            200,
            vec!["cache-control: max-age=600".into()],
            "x".repeat(4096),
        )
    });
    let p = SiteProxy::start(&format!(
        "[proxy]\naccess_log = \"off\"\ncontrol = \"127.0.0.1:0\"\ncache_memory = 20000\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\ncache = true\n\n[pool.p]\nservers = [{{ address = \"{}\" }}]\n",
        origin.addr
    ));
    for i in 0..30 {
        assert_eq!(get(p.addr, "GET", &format!("/e/{i}"), "").2.len(), 4096);
    }
    let metric = |name: &str| -> u64 {
        let m = http(p.control.unwrap(), "GET", "/metrics", None, None).1;
        m.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{m}"))
    };
    assert!(metric("meridian_proxy_cache_bytes{tier=\"memory\"}") <= 20000);
    assert!(metric("meridian_proxy_cache_total{result=\"evicted\"}") > 0);
}
