//! HTTP in tests: a backend on 127.0.0.1:0 whose status can be switched (what probes check),
//! a plain HTTP/1.1 client for the control endpoint, and a raw h2 client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A minimal HTTP backend on 127.0.0.1:0 whose status code can be switched.
pub struct Backend {
    pub addr: SocketAddr,
    pub status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
}

impl Backend {
    pub fn start(status: u16) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(status));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (status.clone(), stop.clone());
        std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false).ok();
                        conn.set_read_timeout(Some(Duration::from_secs(2))).ok();
                        let mut buf = [0u8; 2048];
                        let _ = conn.read(&mut buf);
                        let code = st.load(Ordering::Relaxed);
                        let body = if code < 300 { "ok" } else { "unavailable" };
                        let _ = write!(
                            conn,
                            "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Backend { addr, status, stop }
    }

    pub fn set(&self, code: u16) {
        self.status.store(code, Ordering::Relaxed);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One HTTP/1.1 request to the control endpoint (connection closed after it); returns the
/// status code and the body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the control endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.unwrap_or("");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // hyper answers fixed-size bodies with Content-Length; chunked ones are joined here.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    (status, body)
}

/// An HTTP/1.1 server behind the proxy under test, on 127.0.0.1:0, with keep-alive. Each
/// answer's body is its name on the first line, then the request line, then every request
/// header as `name: value` (lower-case names), so a test sees what the proxy sent.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    /// Requests answered.
    pub hits: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// The accepting thread and each connection's: dropping waits until none is left, so a
    /// dropped server answers nothing more, not even on a kept-alive connection.
    live: Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    pub fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Self::serve(listener, name)
    }

    /// Serves on `addr` (a server coming back where it was).
    pub fn start_at(addr: SocketAddr, name: &str) -> Upstream {
        Self::serve(TcpListener::bind(addr).unwrap(), name)
    }

    fn serve(listener: TcpListener, name: &str) -> Upstream {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(1));
        let (h, sp, lv, who) = (hits.clone(), stop.clone(), live.clone(), name.to_string());
        std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (h, sp, lv, who) = (h.clone(), sp.clone(), lv.clone(), who.clone());
                        lv.fetch_add(1, Ordering::SeqCst);
                        std::thread::spawn(move || {
                            upstream_conn(conn, &who, &h, &sp);
                            lv.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            drop(listener);
            lv.fetch_sub(1, Ordering::SeqCst);
        });
        Upstream {
            addr,
            name: name.to_string(),
            hits,
            stop,
            live,
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        super::wait_until(Duration::from_secs(5), || {
            self.live.load(Ordering::SeqCst) == 0
        });
    }
}

fn upstream_conn(
    mut conn: TcpStream,
    name: &str,
    hits: &std::sync::atomic::AtomicUsize,
    stop: &AtomicBool,
) {
    conn.set_nonblocking(false).ok();
    conn.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // One request head (and its Content-Length body) per turn.
        let head_end = loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !read_more(&mut conn, &mut buf) {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            if !read_more(&mut conn, &mut buf) {
                return;
            }
        }
        buf.drain(..head_end + length);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        hits.fetch_add(1, Ordering::Relaxed);
        let mut body = format!("{name}\n{request_line}\n");
        for (k, v) in &headers {
            body.push_str(&format!("{k}: {v}\n"));
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\nserver: upstream-secret/1.0\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if conn.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads what `conn` has into `buf`; `false` when the connection ended (a read timeout is not
/// an end: the caller looks at its stop flag and reads again).
fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match conn.read(&mut chunk) {
        Ok(0) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// The first value of header `name` (lower case) in headers as [`raw_http`] returns them.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// One HTTP/1.1 exchange on a new connection: `request` is written as given (so a test can
/// send what a client library would refuse to); returns the status, the response headers
/// (lower-case names) and the body.
pub fn raw_http(addr: SocketAddr, request: &str) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// A GET through the proxy with extra header lines; the connection closes after it.
pub fn get(addr: SocketAddr, path: &str, extra: &str) -> (u16, Vec<(String, String)>, String) {
    raw_http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n{extra}\r\n"),
    )
}

/// The `Content-Length` a response or request head gives (0 when none).
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// Reads one HTTP head (through its blank line) byte by byte, so nothing after it is taken
/// from the stream; `None` when the stream ends or fails first.
pub fn read_head(conn: &mut impl Read) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte).ok()?;
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A raw h2 client connected to `addr` (h2 by prior knowledge), its connection driven by a
/// task of its own; aborting the task closes the connection.
pub async fn h2_client(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    (send, tokio::spawn(conn))
}
