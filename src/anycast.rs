//! Anycast: announce this node's service prefixes through a real BGP daemon only while the
//! node answers the way clients expect, and withdraw them when it does not.
//!
//! `meridian anycast` runs beside `meridian serve` (and later the site proxy). It checks each
//! prefix the way a client would, through the service address itself: a DNS query for a canary
//! name (expected rcode, AA set, answers only from an expected set) and optionally HTTP URLs.
//! A [`Tracker`] per prefix turns check outcomes into a [`Route`] with rise, fall and a
//! hold-down after a withdrawal (upstream route-flap dampening punishes a flapping prefix for
//! much longer than any outage). A driver hands the decision to the BGP daemon:
//!
//! - [`Driver::ExaBgp`]: the helper is an ExaBGP `process`; it prints one `announce route` or
//!   `withdraw route` line per change on stdout, reads ExaBGP's acknowledgements on stdin and
//!   exits when stdin closes (ExaBGP is gone). On start it withdraws every prefix, since
//!   ExaBGP keeps the routes of a helper that died.
//! - [`Driver::Bird`]: for sites that already run BIRD 2. The helper writes an include file
//!   of prefix sets (temp file, fsync, rename) that the operator's export filter reads, and
//!   runs `birdc configure` (never `configure soft`, which would not re-evaluate filters on
//!   routes already exported) and checks the reply. BIRD rejects an empty prefix set, so each
//!   set always holds a dummy prefix that never matches a real route.
//!
//! A drain file withdraws every prefix until it is removed, across restarts of the helper and
//! of the machine. Degraded mode (`on_failure = "degrade"`) keeps announcing, with extra
//! AS-path prepends, while the service answers but answers wrongly: a bad configuration pushed
//! to every site at once must not withdraw the service everywhere. A node that does not answer
//! at all is always withdrawn.
//!
//! A watchdog thread aborts the process when the check loop stops making progress, so ExaBGP
//! (or systemd) starts a fresh one instead of keeping a stale announcement alive.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::{line_of, parse_duration, parse_toml, ConfigError};

/// What can go wrong outside the checks themselves.
#[derive(Debug, thiserror::Error)]
pub enum AnycastError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("birdc configure: {0}")]
    Bird(String),
    #[error("writing to ExaBGP: {0}")]
    ExaBgp(std::io::Error),
}

// ---------------------------------------------------------------- configuration

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnycastFile {
    anycast: Option<Spanned<Section>>,
    bird: Option<BirdSection>,
    #[serde(default)]
    prefix: Vec<Spanned<FilePrefix>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Section {
    interval: Option<String>,
    timeout: Option<String>,
    rise: Option<u32>,
    fall: Option<u32>,
    hold_down: Option<String>,
    watchdog: Option<String>,
    drain_file: Option<String>,
    status_file: Option<String>,
    local_as: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BirdSection {
    include: Option<String>,
    birdc: Option<String>,
    socket: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePrefix {
    prefix: String,
    med: Option<u32>,
    prepend: Option<u8>,
    communities: Option<Vec<String>>,
    on_failure: Option<String>,
    degraded_prepend: Option<u8>,
    #[serde(default)]
    check: Vec<Spanned<FileCheck>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCheck {
    kind: String,
    server: Option<String>,
    name: Option<String>,
    qtype: Option<String>,
    rcode: Option<String>,
    addresses: Option<Vec<String>>,
    url: Option<String>,
    expect_status: Option<String>,
}

/// The helper's validated configuration.
#[derive(Debug, Clone)]
pub struct AnycastConfig {
    pub file: PathBuf,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub hold_down: Duration,
    pub watchdog: Duration,
    /// While this file exists every prefix is withdrawn.
    pub drain_file: PathBuf,
    /// Where the current routes, transition counts and last results are written (JSON).
    pub status_file: PathBuf,
    /// This node's AS number, for AS-path prepends in ExaBGP announcements.
    pub local_as: Option<u32>,
    pub bird: BirdSettings,
    pub prefixes: Vec<PrefixSpec>,
}

#[derive(Debug, Clone)]
pub struct BirdSettings {
    pub include: PathBuf,
    pub birdc: PathBuf,
    pub socket: Option<PathBuf>,
}

/// One announced prefix and the checks that decide it.
#[derive(Debug, Clone)]
pub struct PrefixSpec {
    pub prefix: IpNet,
    pub med: Option<u32>,
    pub prepend: u8,
    pub communities: Vec<String>,
    pub on_failure: OnFailure,
    pub degraded_prepend: u8,
    pub checks: Vec<Check>,
}

/// What a failing node does with a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Withdraw,
    /// Announce with extra prepends while the service answers wrongly.
    Degrade,
}

#[derive(Debug, Clone)]
pub enum Check {
    Dns {
        server: SocketAddr,
        name: Name,
        qtype: RecordType,
        rcode: ResponseCode,
        /// When not empty, the answer must hold at least one address and only these.
        addresses: Vec<IpAddr>,
    },
    Http {
        url: String,
        status: (u16, u16),
    },
}

impl AnycastConfig {
    pub fn load(path: &Path) -> Result<AnycastConfig, AnycastError> {
        let text = crate::config::read(path)?;
        Ok(AnycastConfig::parse(&text, path)?)
    }

    pub fn parse(text: &str, path: &Path) -> Result<AnycastConfig, ConfigError> {
        let file: AnycastFile = parse_toml(text, path)?;
        let invalid = |offset: usize, object: &str, message: String| ConfigError::Invalid {
            file: path.to_path_buf(),
            line: line_of(text, offset),
            object: object.to_string(),
            message,
        };
        let (section, at) = match &file.anycast {
            Some(s) => (s.get_ref(), s.span().start),
            None => (&Section::default(), 0),
        };
        let dur =
            |v: &Option<String>, default: Duration, what: &str| -> Result<Duration, ConfigError> {
                match v {
                    None => Ok(default),
                    Some(t) => parse_duration(t)
                        .map_err(|m| invalid(at, "[anycast]", format!("{what}: {m}"))),
                }
            };
        let interval = dur(&section.interval, Duration::from_secs(1), "interval")?;
        let timeout = dur(&section.timeout, Duration::from_millis(500), "timeout")?;
        let hold_down = dur(&section.hold_down, Duration::from_secs(10), "hold_down")?;
        let watchdog = dur(&section.watchdog, (interval + timeout) * 10, "watchdog")?;
        if interval.is_zero() || timeout.is_zero() {
            return Err(invalid(
                at,
                "[anycast]",
                "interval and timeout must be above zero".into(),
            ));
        }
        if watchdog <= interval + timeout {
            return Err(invalid(
                at,
                "[anycast]",
                "watchdog must be longer than interval + timeout".into(),
            ));
        }
        let rise = section.rise.unwrap_or(3);
        let fall = section.fall.unwrap_or(2);
        if rise == 0 || fall == 0 {
            return Err(invalid(
                at,
                "[anycast]",
                "rise and fall must be at least 1".into(),
            ));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &str| base.join(p);
        let drain_file = rel(section.drain_file.as_deref().unwrap_or("anycast.drain"));
        let status_file = rel(section
            .status_file
            .as_deref()
            .unwrap_or("anycast.status.json"));
        let bird = file.bird.unwrap_or_default();
        let bird = BirdSettings {
            include: rel(bird.include.as_deref().unwrap_or("meridian-anycast.conf")),
            birdc: PathBuf::from(bird.birdc.as_deref().unwrap_or("birdc")),
            socket: bird.socket.as_deref().map(rel),
        };
        if file.prefix.is_empty() {
            return Err(invalid(at, "[anycast]", "no [[prefix]] to announce".into()));
        }
        let mut prefixes = Vec::new();
        for p in &file.prefix {
            let at = p.span().start;
            let p = p.get_ref();
            let object = format!("prefix {}", p.prefix);
            let prefix: IpNet = p
                .prefix
                .parse()
                .map_err(|_| invalid(at, &object, "not a prefix (e.g. 192.0.2.53/32)".into()))?;
            if prefix != prefix.trunc() {
                return Err(invalid(
                    at,
                    &object,
                    format!("host bits set; did you mean {}?", prefix.trunc()),
                ));
            }
            if prefixes.iter().any(|q: &PrefixSpec| q.prefix == prefix) {
                return Err(invalid(at, &object, "declared twice".into()));
            }
            let on_failure = match p.on_failure.as_deref().unwrap_or("withdraw") {
                "withdraw" => OnFailure::Withdraw,
                "degrade" => OnFailure::Degrade,
                other => {
                    return Err(invalid(
                        at,
                        &object,
                        format!("on_failure {other:?}: withdraw or degrade"),
                    ))
                }
            };
            let prepend = p.prepend.unwrap_or(0);
            let degraded_prepend = p.degraded_prepend.unwrap_or(3);
            if (prepend > 0 || on_failure == OnFailure::Degrade) && section.local_as.is_none() {
                return Err(invalid(
                    at,
                    &object,
                    "AS-path prepends need [anycast] local_as".into(),
                ));
            }
            if p.check.is_empty() {
                return Err(invalid(
                    at,
                    &object,
                    "no [[prefix.check]]: nothing would decide it".into(),
                ));
            }
            let mut checks = Vec::new();
            for (i, c) in p.check.iter().enumerate() {
                let object = format!("{object}, check {}", i + 1);
                checks.push(
                    parse_check(c.get_ref()).map_err(|m| invalid(c.span().start, &object, m))?,
                );
            }
            prefixes.push(PrefixSpec {
                prefix,
                med: p.med,
                prepend,
                communities: p.communities.clone().unwrap_or_default(),
                on_failure,
                degraded_prepend,
                checks,
            });
        }
        Ok(AnycastConfig {
            file: path.to_path_buf(),
            interval,
            timeout,
            rise,
            fall,
            hold_down,
            watchdog,
            drain_file,
            status_file,
            local_as: section.local_as,
            bird,
            prefixes,
        })
    }
}

fn parse_check(c: &FileCheck) -> Result<Check, String> {
    match c.kind.as_str() {
        "dns" => {
            let server = c.server.as_deref().ok_or("a dns check needs server")?;
            let server: SocketAddr = server
                .parse()
                .or_else(|_| server.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| format!("server {server:?}: not an address"))?;
            let name = c
                .name
                .as_deref()
                .ok_or("a dns check needs name (the canary)")?;
            let name = Name::from_ascii(name)
                .map_err(|e| format!("name {name:?}: {e}"))?
                .to_lowercase();
            let mut name = name;
            name.set_fqdn(true);
            let qtype = match c
                .qtype
                .as_deref()
                .unwrap_or("A")
                .to_ascii_uppercase()
                .as_str()
            {
                "A" => RecordType::A,
                "AAAA" => RecordType::AAAA,
                "TXT" => RecordType::TXT,
                "SOA" => RecordType::SOA,
                other => return Err(format!("qtype {other}: A, AAAA, TXT or SOA")),
            };
            let rcode = match c
                .rcode
                .as_deref()
                .unwrap_or("NOERROR")
                .to_ascii_uppercase()
                .as_str()
            {
                "NOERROR" => ResponseCode::NoError,
                "NXDOMAIN" => ResponseCode::NXDomain,
                other => return Err(format!("rcode {other}: NOERROR or NXDOMAIN")),
            };
            let addresses = c
                .addresses
                .iter()
                .flatten()
                .map(|a| {
                    a.parse()
                        .map_err(|_| format!("address {a:?}: not an IP address"))
                })
                .collect::<Result<Vec<IpAddr>, String>>()?;
            if c.url.is_some() || c.expect_status.is_some() {
                return Err("url and expect_status belong to http checks".into());
            }
            Ok(Check::Dns {
                server,
                name,
                qtype,
                rcode,
                addresses,
            })
        }
        "http" => {
            let url = c.url.clone().ok_or("an http check needs url")?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("url {url:?}: http:// or https://"));
            }
            let status = match c
                .expect_status
                .as_deref()
                .unwrap_or("200-299")
                .split_once('-')
            {
                Some((a, b)) => (a.trim().parse(), b.trim().parse()),
                None => {
                    let s = c.expect_status.as_deref().unwrap_or_default().trim();
                    (s.parse(), s.parse())
                }
            };
            let status = match status {
                (Ok(a), Ok(b)) if a <= b => (a, b),
                _ => return Err("expect_status: a code or a range like 200-399".into()),
            };
            if c.server.is_some() || c.name.is_some() || c.addresses.is_some() {
                return Err("server, name and addresses belong to dns checks".into());
            }
            Ok(Check::Http { url, status })
        }
        other => Err(format!("kind {other:?}: dns or http")),
    }
}

// ---------------------------------------------------------------- checks

/// How one check (or a prefix's set of checks) went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "kebab-case")]
pub enum Outcome {
    Good,
    /// The service answered, but not as expected (wrong rcode, flags, addresses or status).
    Wrong(String),
    /// No answer at all: timeout, refused, unreachable.
    NoAnswer(String),
}

impl Outcome {
    /// The worst of several outcomes: no answer over a wrong answer over good.
    fn worst(outcomes: impl IntoIterator<Item = Outcome>) -> Outcome {
        let mut worst = Outcome::Good;
        for o in outcomes {
            worst = match (&worst, &o) {
                (Outcome::NoAnswer(_), _) => worst,
                (_, Outcome::NoAnswer(_)) => o,
                (Outcome::Wrong(_), _) => worst,
                _ => o,
            };
        }
        worst
    }
}

/// Runs every check of a prefix at once; the worst outcome decides.
pub async fn check_prefix(p: &PrefixSpec, timeout: Duration, http: &reqwest::Client) -> Outcome {
    let mut set = tokio::task::JoinSet::new();
    for c in &p.checks {
        let (c, http) = (c.clone(), http.clone());
        set.spawn(async move { run_check(&c, timeout, &http).await });
    }
    let mut outcomes = Vec::new();
    while let Some(r) = set.join_next().await {
        outcomes.push(r.unwrap_or_else(|e| Outcome::NoAnswer(format!("check task failed: {e}"))));
    }
    Outcome::worst(outcomes)
}

pub async fn run_check(c: &Check, timeout: Duration, http: &reqwest::Client) -> Outcome {
    match c {
        Check::Dns {
            server,
            name,
            qtype,
            rcode,
            addresses,
        } => match tokio::time::timeout(timeout, dns_query(*server, name, *qtype)).await {
            Err(_) => Outcome::NoAnswer(format!("no answer from {server} within {timeout:?}")),
            Ok(Err(e)) => Outcome::NoAnswer(format!("{server}: {e}")),
            Ok(Ok(m)) => judge_dns(&m, *rcode, addresses),
        },
        Check::Http { url, status } => {
            match tokio::time::timeout(timeout, http.get(url).send()).await {
                Err(_) => Outcome::NoAnswer(format!("{url}: no response within {timeout:?}")),
                Ok(Err(e)) => Outcome::NoAnswer(format!("{url}: {e}")),
                Ok(Ok(r)) => {
                    let code = r.status().as_u16();
                    if (status.0..=status.1).contains(&code) {
                        Outcome::Good
                    } else {
                        Outcome::Wrong(format!("{url}: status {code}"))
                    }
                }
            }
        }
    }
}

async fn dns_query(server: SocketAddr, name: &Name, qtype: RecordType) -> std::io::Result<Message> {
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("literal"),
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    let id: u16 = rand::random();
    let mut q = Message::new(id, MessageType::Query, OpCode::Query);
    q.add_query(Query::query(name.clone(), qtype));
    let bytes = q.to_vec().map_err(std::io::Error::other)?;
    sock.send(&bytes).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).await?;
        match Message::from_vec(&buf[..n]) {
            Ok(m) if m.metadata.id == id && m.metadata.message_type == MessageType::Response => {
                return Ok(m)
            }
            _ => continue, // stray or spoofed datagram: keep waiting until the timeout
        }
    }
}

/// Judges a canary answer: rcode, AA, and (when configured) addresses only from the set.
pub fn judge_dns(m: &Message, rcode: ResponseCode, addresses: &[IpAddr]) -> Outcome {
    if m.metadata.response_code != rcode {
        return Outcome::Wrong(format!("rcode {} (want {rcode})", m.metadata.response_code));
    }
    if !m.metadata.authoritative {
        return Outcome::Wrong("answer is not authoritative (AA clear)".into());
    }
    if addresses.is_empty() {
        return Outcome::Good;
    }
    let got: Vec<IpAddr> = m.answers.iter().filter_map(|r| r.data.ip_addr()).collect();
    if got.is_empty() {
        return Outcome::Wrong("no address in the answer".into());
    }
    if let Some(bad) = got.iter().find(|a| !addresses.contains(a)) {
        return Outcome::Wrong(format!("answered {bad}, not an expected address"));
    }
    Outcome::Good
}

// ---------------------------------------------------------------- decisions

/// What a prefix should be in BGP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    Withdrawn,
    Announced,
    /// Announced with the degraded prepends: the service answers, wrongly.
    Degraded,
}

/// Rise/fall/hold-down for one prefix. Pure: time comes in as an argument.
#[derive(Debug, Clone)]
pub struct Tracker {
    rise: u32,
    fall: u32,
    hold_down: Duration,
    on_failure: OnFailure,
    route: Route,
    good_run: u32,
    /// Consecutive answers, good or wrong.
    answering_run: u32,
    /// Consecutive failures, wrong or no answer.
    bad_run: u32,
    /// Consecutive checks with no answer at all.
    dead_run: u32,
    withdrawn_at: Option<Instant>,
}

impl Tracker {
    /// A tracker starting withdrawn (the helper withdraws everything when it starts).
    pub fn new(rise: u32, fall: u32, hold_down: Duration, on_failure: OnFailure) -> Tracker {
        Tracker {
            rise,
            fall,
            hold_down,
            on_failure,
            route: Route::Withdrawn,
            good_run: 0,
            answering_run: 0,
            bad_run: 0,
            dead_run: 0,
            withdrawn_at: None,
        }
    }

    pub fn route(&self) -> Route {
        self.route
    }

    /// Takes one outcome (or a drain) and returns the new route when it changes.
    pub fn observe(&mut self, outcome: &Outcome, drained: bool, now: Instant) -> Option<Route> {
        if drained {
            self.good_run = 0;
            self.answering_run = 0;
            return self.go(Route::Withdrawn, now);
        }
        match outcome {
            Outcome::Good => {
                self.good_run += 1;
                self.answering_run += 1;
                self.bad_run = 0;
                self.dead_run = 0;
            }
            Outcome::Wrong(_) => {
                self.good_run = 0;
                self.answering_run += 1;
                self.bad_run += 1;
                self.dead_run = 0;
            }
            Outcome::NoAnswer(_) => {
                self.good_run = 0;
                self.answering_run = 0;
                self.bad_run += 1;
                self.dead_run += 1;
            }
        }
        let degrade = self.on_failure == OnFailure::Degrade;
        let held = self
            .withdrawn_at
            .is_some_and(|t| now.duration_since(t) < self.hold_down);
        let next = match self.route {
            Route::Announced if self.dead_run >= self.fall => Route::Withdrawn,
            Route::Announced if self.bad_run >= self.fall && degrade => Route::Degraded,
            Route::Announced if self.bad_run >= self.fall => Route::Withdrawn,
            Route::Degraded if self.dead_run >= self.fall => Route::Withdrawn,
            Route::Degraded if self.good_run >= self.rise => Route::Announced,
            Route::Withdrawn if held => Route::Withdrawn,
            Route::Withdrawn if self.good_run >= self.rise => Route::Announced,
            Route::Withdrawn if degrade && self.answering_run >= self.rise => Route::Degraded,
            r => r,
        };
        self.go(next, now)
    }

    fn go(&mut self, next: Route, now: Instant) -> Option<Route> {
        if next == self.route {
            return None;
        }
        if next == Route::Withdrawn {
            self.withdrawn_at = Some(now);
        }
        self.route = next;
        Some(next)
    }
}

// ---------------------------------------------------------------- drivers

/// Which BGP daemon carries the routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    ExaBgp,
    Bird,
}

/// Hands route decisions to the BGP daemon.
pub enum Driver {
    ExaBgp { local_as: Option<u32> },
    Bird(BirdSettings),
}

impl Driver {
    pub fn new(kind: DriverKind, cfg: &AnycastConfig) -> Driver {
        match kind {
            DriverKind::ExaBgp => Driver::ExaBgp {
                local_as: cfg.local_as,
            },
            DriverKind::Bird => Driver::Bird(cfg.bird.clone()),
        }
    }

    /// Makes the daemon carry `routes` (one per prefix, same order). ExaBGP gets a line for
    /// each prefix in `changed`; BIRD gets the whole include file and a reconfiguration.
    pub fn apply(
        &mut self,
        prefixes: &[PrefixSpec],
        routes: &[Route],
        changed: &[usize],
    ) -> Result<(), AnycastError> {
        match self {
            Driver::ExaBgp { local_as } => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                for &i in changed {
                    let line = exabgp_line(&prefixes[i], routes[i], *local_as);
                    writeln!(out, "{line}").map_err(AnycastError::ExaBgp)?;
                }
                out.flush().map_err(AnycastError::ExaBgp)
            }
            Driver::Bird(b) => {
                write_atomically(&b.include, bird_include(prefixes, routes).as_bytes())?;
                bird_configure(b)
            }
        }
    }
}

/// The ExaBGP API command for a prefix's route.
pub fn exabgp_line(p: &PrefixSpec, route: Route, local_as: Option<u32>) -> String {
    if route == Route::Withdrawn {
        return format!("withdraw route {} next-hop self", p.prefix);
    }
    let mut line = format!("announce route {} next-hop self", p.prefix);
    if let Some(med) = p.med {
        line.push_str(&format!(" med {med}"));
    }
    let prepends = p.prepend
        + if route == Route::Degraded {
            p.degraded_prepend
        } else {
            0
        };
    if let (Some(asn), true) = (local_as, prepends > 0) {
        let path: Vec<String> = (0..prepends).map(|_| asn.to_string()).collect();
        line.push_str(&format!(" as-path [ {} ]", path.join(" ")));
    }
    if !p.communities.is_empty() {
        line.push_str(&format!(" community [ {} ]", p.communities.join(" ")));
    }
    line
}

/// The BIRD include: four prefix sets the operator's export filter tests, e.g.
/// `if net ~ MERIDIAN_ANNOUNCE_V4 then accept;`. Each holds a dummy prefix (BIRD rejects an
/// empty set) that no real route matches: `0.0.0.0/32` and `::/128`.
pub fn bird_include(prefixes: &[PrefixSpec], routes: &[Route]) -> String {
    let set = |v6: bool, wanted: &[Route]| -> String {
        let mut items = vec![if v6 { "::/128" } else { "0.0.0.0/32" }.to_string()];
        for (p, r) in prefixes.iter().zip(routes) {
            if matches!(p.prefix, IpNet::V6(_)) == v6 && wanted.contains(r) {
                items.push(p.prefix.to_string());
            }
        }
        items.join(", ")
    };
    let announced = [Route::Announced, Route::Degraded];
    format!(
        "# Written by meridian anycast; replaced on every change. Do not edit.\n\
         define MERIDIAN_ANNOUNCE_V4 = [ {} ];\n\
         define MERIDIAN_ANNOUNCE_V6 = [ {} ];\n\
         define MERIDIAN_DEGRADED_V4 = [ {} ];\n\
         define MERIDIAN_DEGRADED_V6 = [ {} ];\n",
        set(false, &announced),
        set(true, &announced),
        set(false, &[Route::Degraded]),
        set(true, &[Route::Degraded]),
    )
}

fn bird_configure(b: &BirdSettings) -> Result<(), AnycastError> {
    let mut cmd = std::process::Command::new(&b.birdc);
    if let Some(s) = &b.socket {
        cmd.arg("-s").arg(s);
    }
    let out = cmd
        .arg("configure")
        .output()
        .map_err(|e| AnycastError::Bird(format!("cannot run {}: {e}", b.birdc.display())))?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // BIRD answers "Reconfigured" (or "Reconfiguration in progress" while it applies it);
    // anything else (a parse error in the include, no socket) is a failure.
    if out.status.success()
        && (text.contains("Reconfigured") || text.contains("Reconfiguration in progress"))
    {
        Ok(())
    } else {
        Err(AnycastError::Bird(text.trim().replace('\n', "; ")))
    }
}

/// Writes a file so readers see the old or the new content, never a part: temp file in the
/// same directory, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AnycastError> {
    use std::io::Write;
    let err = |source| AnycastError::File {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("meridian"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

// ---------------------------------------------------------------- drain and status

/// Withdraws every prefix until [`undrain`]: creates the drain file.
pub fn drain(cfg: &AnycastConfig) -> Result<(), AnycastError> {
    let stamp = crate::clock::unix_now();
    write_atomically(
        &cfg.drain_file,
        format!("drained at unix time {stamp}\n").as_bytes(),
    )
}

pub fn undrain(cfg: &AnycastConfig) -> Result<(), AnycastError> {
    match std::fs::remove_file(&cfg.drain_file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AnycastError::File {
            path: cfg.drain_file.clone(),
            source: e,
        }),
        _ => Ok(()),
    }
}

pub fn is_drained(cfg: &AnycastConfig) -> bool {
    cfg.drain_file.exists()
}

/// One prefix in the status file.
#[derive(Debug, Clone, Serialize)]
pub struct PrefixStatus {
    pub prefix: String,
    pub route: Route,
    pub transitions: u64,
    pub last: Outcome,
    /// Unix time of the last change.
    pub since: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub drained: bool,
    pub prefixes: Vec<PrefixStatus>,
}

// ---------------------------------------------------------------- the helper

/// Runs the helper until SIGTERM/SIGINT (withdraws everything, returns) or, under ExaBGP,
/// until stdin closes (ExaBGP is gone; returns).
pub fn run(cfg: AnycastConfig, kind: DriverKind) -> Result<(), AnycastError> {
    let mut driver = Driver::new(kind, &cfg);
    let all_withdrawn = vec![Route::Withdrawn; cfg.prefixes.len()];
    let every: Vec<usize> = (0..cfg.prefixes.len()).collect();
    let every = &every;
    // ExaBGP keeps the routes of a helper that died: start from a clean slate. A BGP daemon
    // that is not up yet gets the routes again at every check until it takes them.
    let mut retry = match driver.apply(&cfg.prefixes, &all_withdrawn, every) {
        Ok(()) => false,
        Err(e @ AnycastError::ExaBgp(_)) => return Err(e),
        Err(e) => {
            tracing::error!(error = %e, "could not withdraw at start; trying again every check");
            true
        }
    };
    tracing::info!(
        prefixes = cfg.prefixes.len(),
        "anycast helper started; every prefix withdrawn"
    );

    let heartbeat = Arc::new(AtomicU64::new(now_ms()));
    spawn_watchdog(heartbeat.clone(), cfg.watchdog);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    if kind == DriverKind::ExaBgp {
        spawn_ack_reader(stop_tx.clone());
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| AnycastError::File {
            path: PathBuf::from("tokio runtime"),
            source,
        })?;
    rt.block_on(async move {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .unwrap_or_default();
        let mut trackers: Vec<Tracker> = cfg
            .prefixes
            .iter()
            .map(|p| Tracker::new(cfg.rise, cfg.fall, cfg.hold_down, p.on_failure))
            .collect();
        let mut status = Status {
            drained: false,
            prefixes: cfg
                .prefixes
                .iter()
                .map(|p| PrefixStatus {
                    prefix: p.prefix.to_string(),
                    route: Route::Withdrawn,
                    transitions: 0,
                    last: Outcome::NoAnswer("not checked yet".into()),
                    since: now_ms() / 1000,
                })
                .collect(),
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|source| AnycastError::File { path: "SIGTERM".into(), source })?;
        let mut tick = tokio::time::interval(cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reason = loop {
            tokio::select! {
                _ = term.recv() => break "SIGTERM",
                _ = tokio::signal::ctrl_c() => break "SIGINT",
                _ = stop_rx.changed() => break "ExaBGP closed stdin",
                _ = tick.tick() => {}
            }
            heartbeat.store(now_ms(), Ordering::Relaxed);
            let drained = is_drained(&cfg);
            status.drained = drained;
            let mut outcomes = Vec::new();
            for p in &cfg.prefixes {
                outcomes.push(check_prefix(p, cfg.timeout, &http).await);
            }
            let now = Instant::now();
            let mut changed = Vec::new();
            for (i, outcome) in outcomes.into_iter().enumerate() {
                if let Some(route) = trackers[i].observe(&outcome, drained, now) {
                    status.prefixes[i].transitions += 1;
                    status.prefixes[i].since = now_ms() / 1000;
                    tracing::warn!(
                        prefix = %cfg.prefixes[i].prefix,
                        route = ?route,
                        drained,
                        result = ?outcome,
                        transitions = status.prefixes[i].transitions,
                        "anycast route change"
                    );
                    changed.push(i);
                }
                status.prefixes[i].route = trackers[i].route();
                status.prefixes[i].last = outcome;
            }
            // Set when the daemon refused a change: every route is handed over again.
            if retry {
                changed = every.to_vec();
            }
            if !changed.is_empty() {
                let routes: Vec<Route> = trackers.iter().map(|t| t.route()).collect();
                retry = match driver.apply(&cfg.prefixes, &routes, &changed) {
                    Ok(()) => false,
                    Err(e) => {
                        tracing::error!(error = %e, "could not hand the routes to the BGP daemon; trying again next check");
                        true
                    }
                };
            }
            if let Ok(json) = serde_json::to_vec_pretty(&status) {
                if let Err(e) = write_atomically(&cfg.status_file, &json) {
                    tracing::debug!(error = %e, "status file not written");
                }
            }
        };
        tracing::info!(reason, "anycast helper stopping; withdrawing every prefix");
        if reason != "ExaBGP closed stdin" {
            driver.apply(&cfg.prefixes, &all_withdrawn, every)?;
        }
        Ok(())
    })
}

/// Withdraws every prefix once and returns (for a service manager's stop hook).
pub fn withdraw_all(cfg: &AnycastConfig, kind: DriverKind) -> Result<(), AnycastError> {
    let routes = vec![Route::Withdrawn; cfg.prefixes.len()];
    let every: Vec<usize> = (0..cfg.prefixes.len()).collect();
    Driver::new(kind, cfg).apply(&cfg.prefixes, &routes, &every)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Aborts the process when the check loop has not beaten for `limit`: a stuck helper must not
/// keep a route announced. ExaBGP (or systemd) starts a new one, which withdraws first.
fn spawn_watchdog(heartbeat: Arc<AtomicU64>, limit: Duration) {
    std::thread::Builder::new()
        .name("anycast-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(250));
            let last = heartbeat.load(Ordering::Relaxed);
            if now_ms().saturating_sub(last) > limit.as_millis() as u64 {
                eprintln!("meridian anycast: check loop stalled for over {limit:?}; aborting");
                std::process::abort();
            }
        })
        .expect("spawn watchdog thread");
}

/// Reads ExaBGP's acknowledgements ("done", "error", "shutdown") from stdin; stdin closing
/// means ExaBGP went away, which stops the helper.
fn spawn_ack_reader(stop: tokio::sync::watch::Sender<bool>) {
    std::thread::Builder::new()
        .name("exabgp-acks".into())
        .spawn(move || {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines() {
                match line.as_deref().map(str::trim) {
                    Ok("done") | Ok("") => {}
                    Ok(s) if s.starts_with("shutdown") => break,
                    Ok(other) => tracing::warn!(reply = other, "ExaBGP did not accept a command"),
                    Err(_) => break,
                }
            }
            let _ = stop.send(true);
        })
        .expect("spawn ack reader thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrong() -> Outcome {
        Outcome::Wrong("x".into())
    }
    fn dead() -> Outcome {
        Outcome::NoAnswer("x".into())
    }

    #[test]
    fn rises_falls_and_holds_down() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut t = Tracker::new(2, 2, Duration::from_secs(10), OnFailure::Withdraw);
        assert_eq!(t.observe(&Outcome::Good, false, s(0)), None);
        assert_eq!(
            t.observe(&Outcome::Good, false, s(1)),
            Some(Route::Announced)
        );
        assert_eq!(t.observe(&dead(), false, s(2)), None);
        assert_eq!(t.observe(&dead(), false, s(3)), Some(Route::Withdrawn));
        // Healthy again, but inside the hold-down: stays withdrawn.
        for n in 4..13 {
            assert_eq!(t.observe(&Outcome::Good, false, s(n)), None, "second {n}");
        }
        assert_eq!(
            t.observe(&Outcome::Good, false, s(13)),
            Some(Route::Announced)
        );
    }

    #[test]
    fn drain_withdraws_at_once_and_rise_counts_after_it() {
        let t0 = Instant::now();
        let mut t = Tracker::new(2, 3, Duration::ZERO, OnFailure::Withdraw);
        t.observe(&Outcome::Good, false, t0);
        assert_eq!(t.observe(&Outcome::Good, false, t0), Some(Route::Announced));
        assert_eq!(t.observe(&Outcome::Good, true, t0), Some(Route::Withdrawn));
        assert_eq!(t.observe(&Outcome::Good, true, t0), None);
        assert_eq!(t.observe(&Outcome::Good, false, t0), None);
        assert_eq!(t.observe(&Outcome::Good, false, t0), Some(Route::Announced));
    }

    #[test]
    fn degrade_mode_prepends_on_wrong_answers_but_withdraws_on_silence() {
        let t0 = Instant::now();
        let mut t = Tracker::new(1, 2, Duration::ZERO, OnFailure::Degrade);
        assert_eq!(t.observe(&Outcome::Good, false, t0), Some(Route::Announced));
        assert_eq!(t.observe(&wrong(), false, t0), None);
        assert_eq!(t.observe(&wrong(), false, t0), Some(Route::Degraded));
        assert_eq!(t.observe(&dead(), false, t0), None);
        assert_eq!(t.observe(&dead(), false, t0), Some(Route::Withdrawn));
        // A node that comes back answering wrongly is announced degraded, not withdrawn.
        assert_eq!(t.observe(&wrong(), false, t0), Some(Route::Degraded));
        assert_eq!(t.observe(&Outcome::Good, false, t0), Some(Route::Announced));
    }

    #[test]
    fn without_degrade_a_wrong_answer_withdraws() {
        let t0 = Instant::now();
        let mut t = Tracker::new(1, 1, Duration::ZERO, OnFailure::Withdraw);
        t.observe(&Outcome::Good, false, t0);
        assert_eq!(t.observe(&wrong(), false, t0), Some(Route::Withdrawn));
        assert_eq!(t.observe(&wrong(), false, t0), None);
    }

    fn spec(text: &str) -> Result<AnycastConfig, ConfigError> {
        AnycastConfig::parse(text, Path::new("/etc/meridian/anycast.toml"))
    }

    const GOOD: &str = r#"
[anycast]
interval = "1s"
local_as = 65001

[[prefix]]
prefix = "192.0.2.53/32"
med = 50
prepend = 1
communities = ["65001:100"]
on_failure = "degrade"
[[prefix.check]]
kind = "dns"
server = "192.0.2.53"
name = "canary.gslb.example.com"
addresses = ["192.0.2.10"]

[[prefix]]
prefix = "2001:db8::53/128"
[[prefix.check]]
kind = "http"
url = "http://[2001:db8::53]/healthz"
expect_status = "200-399"
"#;

    #[test]
    fn lines_for_exabgp_carry_med_prepends_and_communities() {
        let cfg = spec(GOOD).unwrap();
        let p = &cfg.prefixes[0];
        assert_eq!(
            exabgp_line(p, Route::Announced, cfg.local_as),
            "announce route 192.0.2.53/32 next-hop self med 50 as-path [ 65001 ] community [ 65001:100 ]"
        );
        assert_eq!(
            exabgp_line(p, Route::Degraded, cfg.local_as),
            "announce route 192.0.2.53/32 next-hop self med 50 as-path [ 65001 65001 65001 65001 ] community [ 65001:100 ]"
        );
        assert_eq!(
            exabgp_line(&cfg.prefixes[1], Route::Withdrawn, cfg.local_as),
            "withdraw route 2001:db8::53/128 next-hop self"
        );
        let Check::Dns { server, .. } = &p.checks[0] else {
            panic!()
        };
        assert_eq!(server.port(), 53);
    }

    #[test]
    fn bird_include_keeps_a_dummy_in_every_set() {
        let cfg = spec(GOOD).unwrap();
        let text = bird_include(&cfg.prefixes, &[Route::Withdrawn, Route::Withdrawn]);
        assert!(
            text.contains("define MERIDIAN_ANNOUNCE_V4 = [ 0.0.0.0/32 ];"),
            "{text}"
        );
        assert!(
            text.contains("define MERIDIAN_ANNOUNCE_V6 = [ ::/128 ];"),
            "{text}"
        );
        let text = bird_include(&cfg.prefixes, &[Route::Degraded, Route::Announced]);
        assert!(
            text.contains("MERIDIAN_ANNOUNCE_V4 = [ 0.0.0.0/32, 192.0.2.53/32 ];"),
            "{text}"
        );
        assert!(
            text.contains("MERIDIAN_DEGRADED_V4 = [ 0.0.0.0/32, 192.0.2.53/32 ];"),
            "{text}"
        );
        assert!(
            text.contains("MERIDIAN_ANNOUNCE_V6 = [ ::/128, 2001:db8::53/128 ];"),
            "{text}"
        );
        assert!(
            text.contains("MERIDIAN_DEGRADED_V6 = [ ::/128 ];"),
            "{text}"
        );
    }

    #[test]
    fn bad_configs_name_line_and_object() {
        let cases = [
            (
                GOOD.replace("192.0.2.53/32", "192.0.2.53/24"),
                "host bits set",
            ),
            (
                GOOD.replace("local_as = 65001", ""),
                "need [anycast] local_as",
            ),
            (
                GOOD.replace("kind = \"http\"", "kind = \"ping\""),
                "kind \"ping\"",
            ),
            (
                GOOD.replace("on_failure = \"degrade\"", "on_failure = \"panic\""),
                "on_failure",
            ),
            (GOOD.replace("med = 50", "mde = 50"), "unknown field"),
            (
                GOOD.replace("expect_status = \"200-399\"", "expect_status = \"399-200\""),
                "expect_status",
            ),
        ];
        for (text, want) in cases {
            let e = spec(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
            assert!(e.starts_with("/etc/meridian/anycast.toml:"), "{e}");
        }
        let e = spec(&GOOD.replace("kind = \"http\"", "kind = \"ping\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("prefix 2001:db8::53/128, check 1"), "{e}");
    }

    #[test]
    fn worst_outcome_wins() {
        assert_eq!(Outcome::worst([Outcome::Good, wrong()]), wrong());
        assert_eq!(Outcome::worst([dead(), Outcome::Good, wrong()]), dead());
        assert_eq!(Outcome::worst([]), Outcome::Good);
    }
}
