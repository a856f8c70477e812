//! Test harness: the real `meridian` binary on port 0, a DNS client over UDP and TCP built on
//! hickory-proto, in-test HTTP backends, and helpers to wait on conditions with a deadline.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};

pub const BIN: &str = env!("CARGO_BIN_EXE_meridian");

/// A config directory with `meridian.toml`, a zone file and a gslb file.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    /// Writes the server file for one zone `example.test` plus the given zone and gslb text.
    pub fn new(zone: &str, gslb: &str) -> ConfigDir {
        Self::new_with(zone, gslb, "", "")
    }

    /// Like [`ConfigDir::new`], with extra lines for the `[server]` and `[[zone]]` tables.
    pub fn new_with(zone: &str, gslb: &str, server_extra: &str, zone_extra: &str) -> ConfigDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("meridian.toml"),
            format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\ncontrol = \"127.0.0.1:0\"\nstate_dir = \"state\"\nudp_workers = 2\n{server_extra}\n\n[[zone]]\norigin = \"example.test\"\nfile = \"example.test.zone\"\ngslb = \"example.test.gslb.toml\"\n{zone_extra}\n"
            ),
        )
        .unwrap();
        let c = ConfigDir { dir };
        c.write("example.test.zone", zone);
        c.write("example.test.gslb.toml", gslb);
        c
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config(&self) -> PathBuf {
        self.path("meridian.toml")
    }

    /// Replaces a file atomically (write + rename), as deployment tools do.
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path(name)).unwrap();
    }
}

/// A running `meridian serve`; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    /// The first DNS address bound.
    pub dns: SocketAddr,
    /// Every DNS address bound, in --listen order.
    pub dns_all: Vec<SocketAddr>,
    pub control: SocketAddr,
    pub stderr_log: PathBuf,
}

impl Server {
    pub fn start(cfg: &ConfigDir) -> Server {
        Self::start_with(cfg, &[])
    }

    /// Starts with extra arguments; `--listen 127.0.0.1:0` and `--admin 127.0.0.1:0` unless
    /// `extra` gives them.
    pub fn start_with(cfg: &ConfigDir, extra: &[&str]) -> Server {
        let mut args: Vec<&str> = Vec::new();
        if !extra.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        if !extra.contains(&"--admin") {
            args.extend(["--admin", "127.0.0.1:0"]);
        }
        args.extend(extra);
        Self::launch(cfg, &args)
    }

    /// Starts `meridian serve --config FILE` with exactly `args` after it (the config's own
    /// listen and control addresses serve unless `args` override them).
    pub fn launch(cfg: &ConfigDir, args: &[&str]) -> Server {
        let log = cfg.path(&format!("stderr-{}.log", std::process::id()));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(cfg.config())
            .args(args)
            .env("MERIDIAN_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn meridian");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not report its addresses; stderr:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let field = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        };
        let dns_all = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("dns="))
            .map(|v| v.split(',').filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default();
        Server {
            dns_all,
            dns: field("dns="),
            control: field("control="),
            child,
            stderr_log: log,
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    pub fn query(&self, name: &str, rtype: RecordType) -> Message {
        query_udp(self.dns, &build_query(name, rtype, None))
    }

    /// Queries with an ECS option; returns (sorted answers, ECS scope in the reply).
    pub fn query_ecs(&self, name: &str, rtype: RecordType, net: &str) -> (Vec<String>, Option<u8>) {
        let m = query_udp(self.dns, &build_query(name, rtype, Some(&Opts::ecs(net))));
        (
            answers(&m),
            meridian::dns::reply_scope(&m).map(|(_, scope)| scope),
        )
    }

    /// Runs `meridian ctl` against this server; returns (success, stdout).
    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(BIN)
            .args(["ctl", "--control", &self.control.to_string()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    pub fn status(&self) -> serde_json::Value {
        let (ok, out) = self.ctl(&["status", "--json"]);
        assert!(ok, "status failed: {out}");
        serde_json::from_str(&out).unwrap()
    }

    /// The health of a member as `status` reports it.
    pub fn member_health(&self, id: &str) -> String {
        let st = self.status();
        for p in st["pools"].as_array().unwrap() {
            for m in p["members"].as_array().unwrap() {
                if m["id"] == id {
                    return m["health"].as_str().unwrap().to_string();
                }
            }
        }
        panic!("member {id} not in status");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

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

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

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

/// A zone with the usual apex records; `extra` is appended.
pub fn zone_with(extra: &str) -> String {
    format!(
        "$TTL 300\n@ IN SOA ns1.example.test. hostmaster.example.test. 1 7200 900 1209600 60\n  IN NS ns1\nns1 IN A 192.0.2.53\n{extra}"
    )
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Runs `meridian serve` on a config that must not start (control endpoint at `admin`);
/// returns its stderr.
pub fn serve_fails(cfg: &ConfigDir, admin: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            admin,
            "--config",
        ])
        .arg(cfg.config())
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `meridian check` on a config; returns its whole output.
pub fn check_output(cfg: &ConfigDir) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(cfg.config())
        .output()
        .unwrap()
}

/// Runs `meridian check` on a config; returns (success, stderr).
pub fn check_config(cfg: &ConfigDir) -> (bool, String) {
    let out = check_output(cfg);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
