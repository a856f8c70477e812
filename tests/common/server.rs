//! The real `meridian` binary: config directories, `serve` on port 0 with its bound ports read
//! back, `check`, and stopping it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

use super::dns::{answers, build_query, query_udp, Opts};

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
        let line = first_line(&mut child, &log);
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

    /// Runs `meridian explain` against this server with `args`; returns what it printed
    /// (standard output, then standard error), after checking that it succeeded.
    pub fn explain(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(["explain", "--control", &self.control.to_string()])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        text
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
        stop_child(&mut self.child);
    }
}

/// Stops a child still running: SIGTERM, up to 5 s for it to exit, then SIGKILL.
fn stop_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
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

/// The first line a started `meridian` prints (its bound addresses); the rest of its output
/// is read and dropped so it never blocks. Kills it and fails, with its log, if none comes.
fn first_line(child: &mut Child, log: &Path) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            panic!(
                "meridian did not report its addresses; stderr:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

/// A running `meridian proxy` on a site config written into its own directory; stopped
/// (SIGTERM, then SIGKILL) when dropped.
pub struct SiteProxy {
    pub child: Child,
    /// The first listener's bound address.
    pub addr: SocketAddr,
    /// The control endpoint's, when the config has one.
    pub control: Option<SocketAddr>,
    /// The load report listener's, when the config has one.
    pub report: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub stderr_log: PathBuf,
}

impl SiteProxy {
    /// Writes `site` as `site.toml` and starts the proxy on it; its listeners should use port
    /// 0, and the bound addresses are read from the proxy's first line of output.
    pub fn start(site: &str) -> SiteProxy {
        Self::start_in(tempfile::tempdir().expect("tempdir"), site)
    }

    /// [`SiteProxy::start`] in a directory that already holds the files the config names.
    pub fn start_in(dir: tempfile::TempDir, site: &str) -> SiteProxy {
        let config = dir.path().join("site.toml");
        std::fs::write(&config, site).unwrap();
        let log = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(BIN)
            .arg("proxy")
            .arg("--config")
            .arg(&config)
            .env("MERIDIAN_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn meridian proxy");
        let line = first_line(&mut child, &log);
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("proxy="))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no proxy= in {line:?}"));
        let control = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("control="))
            .and_then(|v| v.parse().ok());
        let report = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("report="))
            .and_then(|v| v.parse().ok());
        SiteProxy {
            child,
            addr,
            control,
            report,
            dir,
            stderr_log: log,
        }
    }

    /// Sends a signal to the proxy.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

impl Drop for SiteProxy {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}
