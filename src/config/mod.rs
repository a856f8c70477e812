//! Configuration: file structs (serde, unknown keys rejected), then validation into [`Config`].
//!
//! The same [`load`] runs for `meridian check`, at start-up and on every reload. Every error
//! names the file, the line, and the object it is about, e.g.
//! `zones/example.test.gslb.toml:14: pool "web", member 2: weight must be greater than 0`.
//!
//! Files: the server file (`meridian.toml`) lists zones; each zone has an RFC 1035 zone file
//! and optionally a `*.gslb.toml` file declaring its load-balanced names, pools and checks.
//! Relative paths are resolved against the directory of the file that names them.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};
use serde::Deserialize;
use toml::Spanned;

use crate::balance::{
    DrainSafety, GeoMode, GeoPolicy, Member, PolicyKind, Pool, SiteName, Target, WhenAllDown,
};
use crate::geo::{Coords, GeoError, GeoLocator, Mmdb, NoGeo};
use crate::health::{HttpCheck, MemberId, ProbeKind, ProbeSpec};
use crate::zone::{fqdn_lower, LbMark, Zone, ZoneError};

mod settings;
use ipnet::IpNet;
pub use settings::{CookieSecrets, RateLimit, TsigAlgorithm, TsigKey};

/// The demo server file, compiled in so `meridian serve` runs with no flags.
pub const DEMO_CONFIG: &str = include_str!("../../zones/meridian.toml");

/// How many load-balanced names `server.metrics_names` may give series of their own (each
/// costs a fixed block of counters on every query thread).
pub const MAX_METRICS_NAMES: usize = 64;

/// A configuration problem; each variant says where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}:{line}: {object}: {message}")]
    Invalid {
        file: PathBuf,
        line: usize,
        object: String,
        message: String,
    },
    #[error(transparent)]
    Zone(#[from] ZoneError),
    #[error(transparent)]
    Geo(#[from] GeoError),
    /// Several zones (or their load-balancing files) failed: every error, one per line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// Each single error's message (several errors, of several files or of one zone file,
    /// taken apart).
    pub fn messages(&self) -> Vec<String> {
        match self {
            ConfigError::Several(all) => all.iter().flat_map(ConfigError::messages).collect(),
            ConfigError::Zone(ZoneError::Several(all)) => {
                all.iter().map(ToString::to_string).collect()
            }
            one => vec![one.to_string()],
        }
    }
}

// ---------------------------------------------------------------- file structs

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    server: Option<Spanned<ServerSection>>,
    #[serde(default)]
    zone: Vec<Spanned<ZoneEntry>>,
    #[serde(default)]
    key: Vec<Spanned<KeyEntry>>,
}

/// A TSIG key, `[[key]]` in the server file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    algorithm: Option<String>,
    secret: Option<String>,
    secret_file: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<Vec<String>>,
    control: Option<String>,
    state_dir: Option<String>,
    udp_workers: Option<usize>,
    edns_udp_size: Option<u16>,
    minimal_responses: Option<bool>,
    geo_database: Option<String>,
    explain_from: Option<Vec<String>>,
    identity: Option<String>,
    cookies: Option<bool>,
    cookie_secret_file: Option<String>,
    rate_limit: Option<RateLimitSection>,
    tcp: Option<TcpSection>,
    control_token_file: Option<String>,
    metrics_names: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TcpSection {
    max_connections: Option<usize>,
    max_per_client: Option<usize>,
    idle_timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RateLimitSection {
    responses_per_second: Option<u32>,
    slip: Option<u32>,
    ipv4_prefix: Option<u8>,
    ipv6_prefix: Option<u8>,
    exempt: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneEntry {
    origin: String,
    file: String,
    gslb: Option<String>,
    ecs: Option<bool>,
    transfer: Option<TransferSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferSection {
    allow: Vec<String>,
    #[serde(default)]
    notify: Vec<String>,
    load_balanced: Option<String>,
    snapshot_ttl: Option<u32>,
    key: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GslbFile {
    #[serde(default)]
    name: Vec<Spanned<FileName>>,
    #[serde(default)]
    pool: BTreeMap<String, Spanned<FilePool>>,
    #[serde(default)]
    check: BTreeMap<String, Spanned<FileCheck>>,
    #[serde(default)]
    site: BTreeMap<String, Spanned<FileSite>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSite {
    /// `[latitude, longitude]` in degrees.
    location: Option<[f64; 2]>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileName {
    name: String,
    types: Option<Vec<String>>,
    ttl: Option<DurationValue>,
    policy: Option<String>,
    pool: String,
    answers: Option<i64>,
    when_all_down: Option<String>,
    fallback: Option<String>,
    limit: Option<i64>,
    default_order: Option<Vec<String>>,
    map: Option<BTreeMap<String, Vec<String>>>,
    subnets: Option<BTreeMap<String, Vec<String>>>,
    subnet_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePool {
    check: Option<String>,
    members: Vec<Spanned<FileMember>>,
    min_usable: Option<usize>,
    min_weight_percent: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMember {
    site: String,
    address: Option<String>,
    cname: Option<String>,
    probe: Option<String>,
    weight: Option<i64>,
    priority: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCheck {
    kind: String,
    port: Option<u16>,
    method: Option<String>,
    path: Option<String>,
    host: Option<String>,
    expect_status: Option<String>,
    body_contains: Option<String>,
    ca_file: Option<String>,
    verify_tls: Option<bool>,
    interval: Option<DurationValue>,
    timeout: Option<DurationValue>,
    rise: Option<u32>,
    fall: Option<u32>,
    jitter: Option<String>,
}

/// A duration written as seconds (`30`) or with a unit (`"200ms"`, `"2s"`, `"1m"`, `"1h"`).
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
enum DurationValue {
    Seconds(u64),
    Text(String),
}

impl DurationValue {
    fn get(&self) -> Result<Duration, String> {
        match self {
            DurationValue::Seconds(s) => Ok(Duration::from_secs(*s)),
            DurationValue::Text(t) => parse_duration(t),
        }
    }
}

/// Parses a list of networks (`192.0.2.0/24`) or single addresses.
fn networks(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|n| {
            n.parse::<IpNet>()
                .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| format!("{n:?} is not a network"))
        })
        .collect()
}

/// Parses `"250ms"`, `"2s"`, `"5m"`, `"1h"` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration {text:?} (try \"2s\" or \"200ms\")"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("bad duration unit in {text:?} (ms, s, m or h)")),
    };
    Ok(d)
}

// ---------------------------------------------------------------- validated config

/// Server settings after defaults and command-line overrides.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Vec<SocketAddr>,
    pub control: SocketAddr,
    pub state_dir: PathBuf,
    /// UDP sockets (each with its own thread) per listen address.
    pub udp_workers: usize,
    /// Our EDNS UDP payload size: the cap on UDP answers and what our OPT advertises.
    pub edns_udp_size: u16,
    /// Leave out optional additional data (the addresses of MX, SRV and NS targets in
    /// positive answers), as `minimal-responses` does in NSD and BIND. Referral glue stays.
    pub minimal_responses: bool,
    /// Clients allowed to ask for explanations in-band (CHAOS TXT).
    pub explain_from: Vec<IpNet>,
    /// This node's name, answered as NSID (RFC 5001) and to CHAOS TXT `id.server` and
    /// `hostname.bind`, so an operator can tell which anycast node answered. None: neither.
    pub identity: Option<String>,
    /// Whether DNS cookies (RFC 7873/9018) are answered.
    pub cookies: bool,
    /// The server cookie secrets: from `cookie_secret_file` (shared by anycast nodes), or
    /// filled in by `serve` from its state directory.
    pub cookie_secrets: Option<Arc<CookieSecrets>>,
    /// Response rate limiting for UDP.
    pub rate_limit: RateLimit,
    /// TCP connection limits (read when the sockets are bound: a change needs a restart).
    pub tcp: TcpSettings,
    /// The bearer token the control endpoint requires (required off loopback).
    pub control_token: Option<Arc<str>>,
    /// Load-balanced names (lower case, with the final dot) given per-name metric series.
    pub metrics_names: Vec<String>,
}

/// Zone transfer out (AXFR, and IXFR answered in full) for one zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Secondaries allowed to transfer the zone.
    pub allow: Vec<IpNet>,
    /// Where a NOTIFY goes when the zone's data changes (and at start).
    pub notify: Vec<SocketAddr>,
    pub load_balanced: LbInTransfer,
    /// When set, transfers must be signed with this TSIG key, and NOTIFY is signed with it.
    pub key: Option<TsigKey>,
}

/// How load-balanced names appear in a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbInTransfer {
    /// Their current answers, as a client nobody can place would get them, with the TTL
    /// capped (so a public secondary never answers NXDOMAIN for them).
    Snapshot { ttl: u32 },
    /// Left out (hidden secondaries only: they would answer NXDOMAIN for those names).
    Omit,
}

/// Limits on DNS over TCP. A connection serves one query at a time, so these also bound the
/// queries in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSettings {
    pub max_connections: usize,
    pub max_per_client: usize,
    pub idle_timeout: Duration,
}

/// One load-balanced name.
#[derive(Debug, Clone)]
pub struct Binding {
    pub zone: usize,
    pub name: Name,
    pub ttl: u32,
    /// TTL of the SOA in a NODATA answer: min(name TTL, the zone's negative TTL).
    pub negative_ttl: u32,
    pub policy: PolicyKind,
    pub pool: usize,
    pub answers: usize,
    pub when_all_down: WhenAllDown,
    /// Where it was declared, for status and messages.
    pub file: Arc<Path>,
    pub line: usize,
}

impl Binding {
    /// `file:line` of the declaration.
    pub fn declared_at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// The validated, runtime configuration. Immutable; a reload builds a new one.
pub struct Config {
    pub server: ServerSettings,
    pub zones: Vec<Arc<Zone>>,
    /// Per zone (same order): whether EDNS Client Subnet is honoured.
    pub zone_ecs: Vec<bool>,
    /// Per zone (same order): who may transfer it, and whom to notify.
    pub zone_transfer: Vec<Option<Transfer>>,
    /// TSIG keys (`[[key]]`), for signed transfers.
    pub keys: Vec<TsigKey>,
    /// The geo database (or a locator that knows nothing when none is configured).
    pub geo: Arc<dyn GeoLocator>,
    /// Its path, when one is configured.
    pub geo_path: Option<PathBuf>,
    pub bindings: Vec<Binding>,
    pub pools: Vec<Pool>,
    /// Distinct probes and the members each one drives.
    pub probes: Vec<(ProbeSpec, Vec<MemberId>)>,
    /// Every file read, for change detection.
    pub sources: Vec<PathBuf>,
    /// What is served but probably not meant (`file:line: object: message` each): printed by
    /// `check`, logged at start and reload.
    pub warnings: Vec<String>,
}

impl Config {
    /// Resolves an operator's member spec: a member identity `SITE/ADDRESS` (as `status`
    /// lists it), or `POOL/SITE` for every member of that site in the pool.
    pub fn resolve_members(&self, spec: &str) -> Vec<MemberId> {
        let all = || self.pools.iter().flat_map(|p| p.members.iter());
        if let Some(m) = all().find(|m| m.id.0.eq_ignore_ascii_case(spec)) {
            return vec![m.id.clone()];
        }
        let Some((pool, site)) = spec.split_once('/') else {
            return Vec::new();
        };
        self.pools
            .iter()
            .filter(|p| p.name == pool)
            .flat_map(|p| p.members.iter())
            .filter(|m| &*m.site == site)
            .map(|m| m.id.clone())
            .collect()
    }
}

/// Where the server file comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file on disk.
    File(PathBuf),
    /// The compiled-in demo, with relative paths resolved against `base`.
    Demo { base: PathBuf },
}

impl Source {
    /// The demo: `zones/` in the current directory if it is there, else in the source tree.
    pub fn demo() -> Source {
        let here = PathBuf::from("zones");
        let base = if here.join("meridian.toml").is_file() {
            here
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("zones")
        };
        Source::Demo { base }
    }
}

/// The demo geo database: `geo/demo-city.mmdb` beside the demo's `zones/`.
pub fn demo_geo_database() -> PathBuf {
    match Source::demo() {
        Source::Demo { base } => base.join("..").join("geo").join("demo-city.mmdb"),
        Source::File(p) => p,
    }
}

/// Reads and validates everything. Runs the whole load path except binding sockets.
pub fn load(source: &Source) -> Result<Config, ConfigError> {
    let (text, file, base) = match source {
        Source::File(p) => (
            read(p)?,
            p.clone(),
            p.parent().map(Path::to_path_buf).unwrap_or_default(),
        ),
        Source::Demo { base } => (
            DEMO_CONFIG.to_string(),
            base.join("meridian.toml"),
            base.clone(),
        ),
    };
    let parsed: ServerFile = parse_toml(&text, &file)?;
    let invalid =
        |span: std::ops::Range<usize>, object: &str, message: String| ConfigError::Invalid {
            file: file.clone(),
            line: line_of(&text, span.start),
            object: object.to_string(),
            message,
        };

    let default_section = ServerSection::default();
    let section = parsed
        .server
        .as_ref()
        .map(|s| s.get_ref())
        .unwrap_or(&default_section);
    let span = parsed.server.as_ref().map(|s| s.span()).unwrap_or(0..0);
    let listen = match &section.listen {
        None => vec!["127.0.0.1:5353".parse().expect("literal")],
        Some(list) => list
            .iter()
            .map(|s| {
                s.parse::<SocketAddr>()
                    .map_err(|e| invalid(span.clone(), "server.listen", format!("{s:?}: {e}")))
            })
            .collect::<Result<_, _>>()?,
    };
    let control: SocketAddr = match &section.control {
        None => "127.0.0.1:5380".parse().expect("literal"),
        Some(s) => s
            .parse()
            .map_err(|e| invalid(span.clone(), "server.control", format!("{s:?}: {e}")))?,
    };
    let edns_udp_size = section.edns_udp_size.unwrap_or(1232);
    if edns_udp_size < 512 {
        return Err(invalid(
            span.clone(),
            "server.edns_udp_size",
            "must be at least 512".into(),
        ));
    }
    if let Some(id) = &section.identity {
        if id.is_empty() || id.len() > 255 || !id.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return Err(invalid(
                span.clone(),
                "server.identity",
                "1 to 255 printable ASCII characters".into(),
            ));
        }
    }
    let cookie_secrets = match &section.cookie_secret_file {
        None => None,
        Some(f) => {
            let path = base.join(f);
            let text = read(&path)?;
            let secrets = CookieSecrets::parse(&text).map_err(|m| {
                invalid(
                    span.clone(),
                    "server.cookie_secret_file",
                    format!("{}: {m}", path.display()),
                )
            })?;
            Some(Arc::new(secrets))
        }
    };
    let rate_limit = {
        let d = RateLimit::default();
        let r = section.rate_limit.as_ref();
        let s = RateLimit {
            responses_per_second: r
                .and_then(|r| r.responses_per_second)
                .unwrap_or(d.responses_per_second),
            slip: r.and_then(|r| r.slip).unwrap_or(d.slip),
            ipv4_prefix: r.and_then(|r| r.ipv4_prefix).unwrap_or(d.ipv4_prefix),
            ipv6_prefix: r.and_then(|r| r.ipv6_prefix).unwrap_or(d.ipv6_prefix),
            exempt: match r.and_then(|r| r.exempt.as_ref()) {
                None => d.exempt,
                Some(list) => networks(list)
                    .map_err(|m| invalid(span.clone(), "server.rate_limit.exempt", m))?,
            },
        };
        if s.ipv4_prefix > 32 || s.ipv6_prefix > 128 {
            return Err(invalid(
                span.clone(),
                "server.rate_limit",
                "ipv4_prefix is at most 32 and ipv6_prefix at most 128".into(),
            ));
        }
        s
    };
    let tcp = {
        let t = section.tcp.as_ref();
        let idle_timeout = match t.and_then(|t| t.idle_timeout.as_deref()) {
            None => Duration::from_secs(10),
            Some(d) => parse_duration(d)
                .map_err(|m| invalid(span.clone(), "server.tcp.idle_timeout", m))?,
        };
        let s = TcpSettings {
            max_connections: t.and_then(|t| t.max_connections).unwrap_or(512),
            max_per_client: t.and_then(|t| t.max_per_client).unwrap_or(16),
            idle_timeout,
        };
        if s.max_connections == 0 || s.max_per_client == 0 || s.idle_timeout.is_zero() {
            return Err(invalid(
                span.clone(),
                "server.tcp",
                "max_connections, max_per_client and idle_timeout must be above zero".into(),
            ));
        }
        s
    };
    let control_token = match &section.control_token_file {
        None => None,
        Some(f) => {
            let path = base.join(f);
            let token = read(&path)?.trim().to_string();
            if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    span.clone(),
                    "server.control_token_file",
                    format!(
                        "{}: the token must be one line of at least 16 characters without spaces",
                        path.display()
                    ),
                ));
            }
            Some(Arc::from(token))
        }
    };
    // The endpoint can drain members and reload: off loopback only behind a token.
    if !control.ip().is_loopback() && control_token.is_none() {
        return Err(invalid(
            span.clone(),
            "server.control",
            format!(
                "{control} is not on loopback: set server.control_token_file so callers must \
                 authenticate"
            ),
        ));
    }
    let metrics_names = section
        .metrics_names
        .iter()
        .flatten()
        .map(|n| format!("{}.", n.trim_end_matches('.').to_ascii_lowercase()))
        .collect::<Vec<_>>();
    if metrics_names.len() > MAX_METRICS_NAMES {
        return Err(invalid(
            span.clone(),
            "server.metrics_names",
            format!("at most {MAX_METRICS_NAMES} names"),
        ));
    }
    let server = ServerSettings {
        control_token,
        metrics_names,
        tcp,
        rate_limit,
        identity: section.identity.clone(),
        cookies: section.cookies.unwrap_or(true),
        cookie_secrets,
        listen,
        control,
        state_dir: base.join(section.state_dir.as_deref().unwrap_or("state")),
        udp_workers: section
            .udp_workers
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1),
        edns_udp_size,
        minimal_responses: section.minimal_responses.unwrap_or(false),
        explain_from: match &section.explain_from {
            None => vec![
                "127.0.0.0/8".parse().expect("literal"),
                "::1/128".parse().expect("literal"),
            ],
            Some(list) => {
                networks(list).map_err(|m| invalid(span.clone(), "server.explain_from", m))?
            }
        },
    };

    let mut builder = Builder::default();
    builder.sources.push(file.clone());
    if let Some(db) = &section.geo_database {
        let path = base.join(db);
        builder.sources.push(path.clone());
        builder.geo = Some(Arc::new(Mmdb::open(&path)?));
        builder.geo_path = Some(path);
    }
    if parsed.zone.is_empty() {
        return Err(invalid(0..0, "zone", "no [[zone]] configured".into()));
    }
    for entry in &parsed.key {
        let k = entry.get_ref();
        let object = format!("key {:?}", k.name);
        let fail = |m: String| invalid(entry.span(), &object, m);
        let algorithm = k.algorithm.as_deref().unwrap_or("hmac-sha256");
        let algorithm = TsigAlgorithm::from_name(algorithm).ok_or_else(|| {
            fail(format!(
                "algorithm {algorithm:?} is not hmac-sha256, hmac-sha384, hmac-sha512 or hmac-sha1"
            ))
        })?;
        let secret = match (&k.secret, &k.secret_file) {
            (Some(s), None) => s.clone(),
            (None, Some(f)) => {
                let path = base.join(f);
                builder.sources.push(path.clone());
                read(&path)?
            }
            _ => return Err(fail("give exactly one of secret and secret_file".into())),
        };
        let key = TsigKey::new(&k.name, algorithm, &secret).map_err(fail)?;
        if builder.keys.iter().any(|other| other.name == key.name) {
            return Err(fail("key listed twice".into()));
        }
        builder.keys.push(key);
    }
    // Every zone is read even after one fails, so one run reports every broken file.
    let mut errors = Vec::new();
    let mut origins: Vec<Name> = Vec::new();
    for entry in &parsed.zone {
        let z = entry.get_ref();
        let object = format!("zone {:?}", z.origin);
        let origin = match Name::from_ascii(&z.origin).map(|n| fqdn_lower(&n)) {
            Ok(origin) => origin,
            Err(e) => {
                errors.push(invalid(entry.span(), &object, format!("bad origin: {e}")));
                continue;
            }
        };
        if origins.contains(&origin) {
            errors.push(invalid(entry.span(), &object, "zone listed twice".into()));
            continue;
        }
        origins.push(origin.clone());
        let zone_file = base.join(&z.file);
        builder.sources.push(zone_file.clone());
        let gslb_file = z.gslb.as_ref().map(|g| base.join(g));
        builder.sources.extend(gslb_file.clone());
        let transfer = match &z.transfer {
            None => Ok(None),
            Some(t) => transfer(t, &builder.keys)
                .map(Some)
                .map_err(|m| invalid(entry.span(), &object, m)),
        };
        let zone = match (Zone::load(&zone_file, &origin), transfer) {
            (Ok(zone), Ok(transfer)) => {
                builder.zone_transfer.push(transfer);
                zone
            }
            (zone, transfer) => {
                errors.extend(zone.err().map(ConfigError::from));
                errors.extend(transfer.err());
                continue;
            }
        };
        builder.zones.push(zone);
        builder.zone_ecs.push(z.ecs.unwrap_or(true));
        if let Some(gslb_file) = gslb_file {
            let added = read(&gslb_file)
                .and_then(|gtext| builder.add_gslb(builder.zones.len() - 1, &gtext, &gslb_file));
            errors.extend(added.err());
        }
    }
    match errors.len() {
        0 => builder.finish(server),
        1 => Err(errors.remove(0)),
        _ => Err(ConfigError::Several(errors)),
    }
}

fn transfer(t: &TransferSection, keys: &[TsigKey]) -> Result<Transfer, String> {
    let key = match &t.key {
        None => None,
        Some(name) => {
            let wanted = name.trim_end_matches('.').to_ascii_lowercase();
            let key = keys.iter().find(|k| k.name == wanted);
            Some(key.cloned().ok_or_else(|| {
                format!("transfer.key: no [[key]] named {name:?} in the server file")
            })?)
        }
    };
    let allow = networks(&t.allow).map_err(|m| format!("transfer.allow: {m}"))?;
    let notify = t
        .notify
        .iter()
        .map(|n| {
            n.parse::<SocketAddr>()
                .or_else(|_| n.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| format!("transfer.notify: {n:?} is not an address or address:port"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ttl = t.snapshot_ttl.unwrap_or(30);
    let load_balanced = match t.load_balanced.as_deref() {
        None | Some("snapshot") => LbInTransfer::Snapshot { ttl },
        Some("omit") => LbInTransfer::Omit,
        Some(other) => {
            return Err(format!(
                "transfer.load_balanced: {other:?} is not \"snapshot\" or \"omit\""
            ))
        }
    };
    Ok(Transfer {
        allow,
        notify,
        load_balanced,
        key,
    })
}

/// Reads a file named by the config; the error names it.
pub(crate) fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })
}

pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &Path,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|s| (line_of(text, s.start), column_of(text, s.start)))
            .unwrap_or((1, 1));
        ConfigError::Syntax {
            file: file.to_path_buf(),
            line,
            column,
            message: e.message().to_string(),
        }
    })
}

/// Line numbers of byte offsets, for files with many objects (one scan, then binary search).
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Lines {
        Lines(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }

    fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&nl| nl < offset) + 1
    }
}

pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn column_of(text: &str, offset: usize) -> usize {
    let before = &text[..offset.min(text.len())];
    before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1
}

#[derive(Default)]
struct Builder {
    zones: Vec<Zone>,
    zone_ecs: Vec<bool>,
    zone_transfer: Vec<Option<Transfer>>,
    keys: Vec<TsigKey>,
    geo: Option<Arc<Mmdb>>,
    geo_path: Option<PathBuf>,
    bindings: Vec<Binding>,
    pools: Vec<Pool>,
    /// Pool name (per zone's gslb file, qualified as `zone/pool` internally) -> index.
    probes: HashMap<ProbeSpec, Vec<MemberId>>,
    probe_order: Vec<ProbeSpec>,
    sources: Vec<PathBuf>,
    warnings: Vec<String>,
}

impl Builder {
    fn add_gslb(&mut self, zone_idx: usize, text: &str, file: &Path) -> Result<(), ConfigError> {
        let parsed: GslbFile = parse_toml(text, file)?;
        let lines = Lines::new(text);
        let invalid =
            |span: std::ops::Range<usize>, object: String, message: String| ConfigError::Invalid {
                file: file.to_path_buf(),
                line: lines.line(span.start),
                object,
                message,
            };

        // Sites: where members are, for geo policies.
        let mut sites: BTreeMap<String, Option<Coords>> = BTreeMap::new();
        for (name, site) in &parsed.site {
            let location =
                match site.get_ref().location {
                    None => None,
                    Some([lat, lon]) if lat.abs() <= 90.0 && lon.abs() <= 180.0 => {
                        Some(Coords { lat, lon })
                    }
                    Some(_) => return Err(invalid(
                        site.span(),
                        format!("site {name:?}"),
                        "location must be [latitude, longitude] within [-90, 90] and [-180, 180]"
                            .into(),
                    )),
                };
            sites.insert(name.clone(), location);
        }

        // Checks first: pools refer to them.
        let mut checks: HashMap<&str, (Option<ProbeKind>, Timing)> = HashMap::new();
        for (name, c) in &parsed.check {
            let object = format!("check {name:?}");
            let kind =
                check_kind(c.get_ref(), file).map_err(|m| invalid(c.span(), object.clone(), m))?;
            let timing =
                Timing::of(c.get_ref()).map_err(|m| invalid(c.span(), object.clone(), m))?;
            if timing.timeout > timing.interval {
                self.warnings.push(format!(
                    "{}:{}: {object}: timeout {:?} is longer than the interval {:?}: probes overlap",
                    file.display(),
                    lines.line(c.span().start),
                    timing.timeout,
                    timing.interval
                ));
            }
            checks.insert(name.as_str(), (kind, timing));
        }

        // Site names, shared by members and policies of this file.
        let mut interned: HashMap<String, SiteName> = HashMap::new();

        // Pools: local name -> global index.
        let mut pool_index: HashMap<&str, usize> = HashMap::new();
        for (pname, p) in &parsed.pool {
            let pobject = format!("pool {pname:?}");
            let check = match &p.get_ref().check {
                None => None,
                Some(c) => Some(checks.get(c.as_str()).ok_or_else(|| {
                    invalid(p.span(), pobject.clone(), format!("unknown check {c:?}"))
                })?),
            };
            if p.get_ref().members.is_empty() {
                return Err(invalid(
                    p.span(),
                    pobject,
                    "a pool needs at least one member".into(),
                ));
            }
            let mut members: Vec<Member> = Vec::new();
            for (i, m) in p.get_ref().members.iter().enumerate() {
                let object = format!("pool {pname:?}, member {}", i + 1);
                let err = |message: String| invalid(m.span(), object.clone(), message);
                let fm = m.get_ref();
                if fm.site.is_empty() || fm.site.contains('/') {
                    return Err(err("site must be a non-empty name without '/'".into()));
                }
                let target = match (&fm.address, &fm.cname) {
                    (Some(a), None) => Target::Addr(a.parse::<IpAddr>().map_err(|_| {
                        err(format!("address {a:?} is not an IPv4 or IPv6 address"))
                    })?),
                    (None, Some(c)) => {
                        let n =
                            Name::from_ascii(c).map_err(|e| err(format!("cname {c:?}: {e}")))?;
                        if !n.is_fqdn() {
                            return Err(err(format!(
                                "cname {c:?} must be fully qualified (end with '.')"
                            )));
                        }
                        Target::Alias(fqdn_lower(&n).to_string())
                    }
                    _ => return Err(err("give exactly one of address or cname".into())),
                };
                let weight = fm.weight.unwrap_or(1);
                if weight <= 0 {
                    return Err(err("weight must be greater than 0".into()));
                }
                if weight > 1_000_000 {
                    return Err(err("weight must be at most 1000000".into()));
                }
                let target_text = match &target {
                    Target::Addr(a) => a.to_string(),
                    Target::Alias(n) => n.clone(),
                };
                let id = MemberId::new(&fm.site, &target_text);
                if members.iter().any(|o| o.id == id) {
                    return Err(err(format!("duplicate member {id}")));
                }
                if let Some((kind, timing)) = check {
                    if let Some(kind) = kind {
                        let spec = probe_spec(kind.clone(), timing, fm, &target).map_err(&err)?;
                        if !self.probes.contains_key(&spec) {
                            self.probe_order.push(spec.clone());
                        }
                        let list = self.probes.entry(spec).or_default();
                        if !list.contains(&id) {
                            list.push(id.clone());
                        }
                    }
                } else if fm.probe.is_some() {
                    return Err(err("probe given but the pool has no check".into()));
                }
                members.push(Member {
                    id,
                    site: intern(&mut interned, &fm.site),
                    target,
                    weight: weight as u32,
                    priority: fm.priority.unwrap_or(1),
                });
            }
            let safety = DrainSafety {
                min_usable: p.get_ref().min_usable.unwrap_or(1),
                min_weight_percent: p.get_ref().min_weight_percent.unwrap_or(0),
            };
            if safety.min_weight_percent > 100 {
                return Err(invalid(
                    p.span(),
                    pobject,
                    "min_weight_percent is at most 100".into(),
                ));
            }
            pool_index.insert(pname.as_str(), self.pools.len());
            self.pools.push(Pool {
                name: pname.clone(),
                members,
                safety,
            });
        }

        // Names.
        let zone = &mut self.zones[zone_idx];
        let zone_neg_ttl = zone.negative_soa().ttl;
        // One copy of the path for every name of the file (a file may declare 100,000).
        let shared_file: Arc<Path> = Arc::from(file);
        for n in &parsed.name {
            let fname = n.get_ref();
            let object = format!("name {:?}", fname.name);
            let err = |message: String| invalid(n.span(), object.clone(), message);
            let owner = if fname.name == "@" {
                zone.origin.clone()
            } else {
                Name::parse(&fname.name, Some(&zone.origin))
                    .map(|n| fqdn_lower(&n))
                    .map_err(|e| err(format!("bad name: {e}")))?
            };
            if !zone.origin.zone_of(&owner) {
                return Err(err(format!("not inside zone {}", zone.origin)));
            }
            if owner.is_wildcard() {
                return Err(err("a load-balanced name cannot be a wildcard".into()));
            }
            let pool = *pool_index
                .get(fname.pool.as_str())
                .ok_or_else(|| err(format!("unknown pool {:?}", fname.pool)))?;
            let fallback_pool = fname
                .fallback
                .as_ref()
                .and_then(|f| pool_index.get(f.as_str()).copied());
            let member_sites: Vec<&str> = [Some(pool), fallback_pool]
                .into_iter()
                .flatten()
                .flat_map(|p| self.pools[p].members.iter().map(|m| &*m.site))
                .collect();
            let policy = build_policy(
                fname,
                &sites,
                &member_sites,
                file,
                self.geo.is_some(),
                &mut self.sources,
                &mut interned,
            )
            .map_err(&err)?;
            let (mut a, mut aaaa) = (false, false);
            for t in fname
                .types
                .clone()
                .unwrap_or_else(|| vec!["A".into(), "AAAA".into()])
            {
                match t.to_ascii_uppercase().as_str() {
                    "A" => a = true,
                    "AAAA" => aaaa = true,
                    other => {
                        return Err(err(format!(
                            "type {other:?} cannot be load-balanced (A or AAAA)"
                        )))
                    }
                }
            }
            let ttl = match &fname.ttl {
                None => 30,
                Some(v) => v.get().map_err(&err)?.as_secs() as u32,
            };
            let answers = fname.answers.unwrap_or(1);
            if !(1..=64).contains(&answers) {
                return Err(err("answers must be between 1 and 64".into()));
            }
            let when_all_down = match (
                fname.when_all_down.as_deref().unwrap_or("fail-open"),
                &fname.fallback,
            ) {
                ("fail-open", None) => WhenAllDown::FailOpen,
                ("nodata", None) => WhenAllDown::NoData,
                ("fallback", Some(fb)) => {
                    let idx = *pool_index
                        .get(fb.as_str())
                        .ok_or_else(|| err(format!("unknown fallback pool {fb:?}")))?;
                    if idx == pool {
                        return Err(err("fallback pool is the name's own pool".into()));
                    }
                    WhenAllDown::Fallback(idx)
                }
                ("fallback", None) => {
                    return Err(err(
                        "when_all_down = \"fallback\" needs fallback = \"POOL\"".into(),
                    ))
                }
                (_, Some(_)) => {
                    return Err(err(
                        "fallback is only used with when_all_down = \"fallback\"".into(),
                    ))
                }
                (other, None) => {
                    return Err(err(format!(
                        "unknown when_all_down {other:?} (fail-open, fallback or nodata)"
                    )))
                }
            };
            // Zone-node rules: no static A/AAAA/CNAME for the types the binding answers.
            if let Some(node) = zone.node(&owner) {
                if node.lb.is_some() {
                    return Err(err("declared twice".into()));
                }
                for set in &node.rrsets {
                    let clash = set.rtype == RecordType::CNAME
                        || (set.rtype == RecordType::A && a)
                        || (set.rtype == RecordType::AAAA && aaaa);
                    if clash {
                        return Err(err(format!(
                            "clashes with the static {} record at {}:{}",
                            set.rtype,
                            zone.file.display(),
                            set.line()
                        )));
                    }
                }
            }
            // Not at or below a delegation.
            for k in zone.origin.num_labels() + 1..=owner.num_labels() {
                let anc = owner.trim_to(k as usize);
                if zone
                    .node(&anc)
                    .is_some_and(|nd| nd.rrset(RecordType::NS).is_some())
                {
                    return Err(err(format!("at or below the delegation {anc}")));
                }
            }
            let line = lines.line(n.span().start);
            zone.ensure_node(&owner);
            let binding = self.bindings.len();
            zone.node_mut(&owner).expect("ensured").lb = Some(LbMark { binding, a, aaaa });
            self.bindings.push(Binding {
                zone: zone_idx,
                name: owner,
                ttl,
                negative_ttl: ttl.min(zone_neg_ttl),
                policy,
                pool,
                answers: answers as usize,
                when_all_down,
                file: shared_file.clone(),
                line,
            });
        }
        Ok(())
    }
}

/// Builds a name's policy; geo policies are checked against the declared sites. A subnet file
/// it reads is added to `sources`.
fn build_policy(
    fname: &FileName,
    sites: &BTreeMap<String, Option<Coords>>,
    member_sites: &[&str],
    file: &Path,
    has_geo: bool,
    sources: &mut Vec<PathBuf>,
    interned: &mut HashMap<String, SiteName>,
) -> Result<PolicyKind, String> {
    let kind = fname.policy.as_deref().unwrap_or("weighted");
    let geo_keys = fname.limit.is_some()
        || fname.default_order.is_some()
        || fname.map.is_some()
        || fname.subnets.is_some()
        || fname.subnet_file.is_some();
    let simple = match kind {
        "weighted" => Some(PolicyKind::Weighted),
        "failover" => Some(PolicyKind::Failover),
        "all" => Some(PolicyKind::All),
        "geo-nearest" | "geo-map" | "subnet" => None,
        other => {
            return Err(format!(
            "unknown policy {other:?} (weighted, failover, all, geo-nearest, geo-map or subnet)"
        ))
        }
    };
    if let Some(p) = simple {
        if geo_keys {
            return Err(format!(
                    "limit, default_order, map, subnets and subnet_file apply to geo-nearest, geo-map and subnet, not {kind}"
                ));
        }
        return Ok(p);
    }
    let known = |site: &String| -> Result<(), String> {
        if sites.contains_key(site) {
            Ok(())
        } else {
            Err(format!(
                "unknown site {site:?} (declare it as [site.{site}])"
            ))
        }
    };
    for site in member_sites {
        known(&site.to_string()).map_err(|e| format!("{e}: a member of its pool is there"))?;
    }
    if kind != "subnet" && !has_geo {
        return Err(format!("policy {kind:?} needs server.geo_database"));
    }
    let default_order = match &fname.default_order {
        Some(list) => {
            list.iter().try_for_each(known)?;
            list.clone()
        }
        // Unplaced clients get every site of the pool, in the order members list them.
        None => {
            let mut order: Vec<String> = Vec::new();
            for s in member_sites {
                if !order.iter().any(|o| o == s) {
                    order.push(s.to_string());
                }
            }
            order
        }
    };
    let mut subnets: Vec<(IpNet, Vec<String>)> = Vec::new();
    let mut add_subnet = |net: &str, list: Vec<String>, at: &str| -> Result<(), String> {
        let parsed = net
            .parse::<IpNet>()
            .map_err(|_| format!("{at}subnet {net:?} is not a network (CIDR)"))?;
        if parsed.trunc() != parsed {
            return Err(format!(
                "{at}subnet {net:?} has host bits set (did you mean {}?)",
                parsed.trunc()
            ));
        }
        if list.is_empty() {
            return Err(format!("{at}subnet {net:?} lists no site"));
        }
        list.iter()
            .try_for_each(known)
            .map_err(|e| format!("{at}{e}"))?;
        if subnets.iter().any(|(n, _)| *n == parsed) {
            return Err(format!("{at}subnet {net:?} is listed twice"));
        }
        subnets.push((parsed, list));
        Ok(())
    };
    for (net, list) in fname.subnets.clone().unwrap_or_default() {
        add_subnet(&net, list, "")?;
    }
    if let Some(f) = &fname.subnet_file {
        let path = file.parent().unwrap_or(Path::new(".")).join(f);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("subnet_file {}: {e}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let net = words.next().unwrap_or_default();
            let list: Vec<String> = words
                .flat_map(|w| w.split(','))
                .filter(|w| !w.is_empty())
                .map(String::from)
                .collect();
            add_subnet(net, list, &format!("{}:{}: ", path.display(), i + 1))?;
        }
        sources.push(path);
    }
    subnets.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
    let mode = match kind {
        "geo-nearest" => {
            if fname.map.is_some() {
                return Err("map applies to geo-map, not geo-nearest".into());
            }
            let limit = match fname.limit {
                None => None,
                Some(n) if n >= 1 => Some(n as usize),
                Some(_) => return Err("limit must be at least 1".into()),
            };
            let mut located = Vec::new();
            for site in member_sites {
                if located.iter().any(|(s, _): &(String, Coords)| s == site) {
                    continue;
                }
                match sites.get(*site) {
                    Some(Some(c)) => located.push((site.to_string(), *c)),
                    _ => {
                        return Err(format!(
                            "site {site:?} has no location, which geo-nearest needs"
                        ))
                    }
                }
            }
            GeoMode::Nearest {
                sites: located
                    .into_iter()
                    .map(|(s, c)| (intern(interned, &s), c.unit()))
                    .collect(),
                limit,
            }
        }
        "geo-map" => {
            if fname.limit.is_some() {
                return Err("limit applies to geo-nearest only".into());
            }
            let map = fname
                .map
                .clone()
                .ok_or("geo-map needs map = { \"EU\" = [\"fra\"], ... }")?;
            for (key, list) in &map {
                let parts: Vec<&str> = key.split('/').collect();
                if parts.len() > 3
                    || parts
                        .iter()
                        .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric()))
                {
                    return Err(format!(
                            "map key {key:?} must be CONTINENT, CONTINENT/COUNTRY or CONTINENT/COUNTRY/SUBDIVISION"
                        ));
                }
                if list.is_empty() {
                    return Err(format!("map key {key:?} lists no site"));
                }
                list.iter().try_for_each(known)?;
            }
            GeoMode::Map(
                map.into_iter()
                    .map(|(k, v)| (k, names(interned, v)))
                    .collect(),
            )
        }
        _ => {
            if fname.limit.is_some() || fname.map.is_some() {
                return Err("limit and map do not apply to the subnet policy".into());
            }
            if subnets.is_empty() {
                return Err("the subnet policy needs subnets or subnet_file".into());
            }
            GeoMode::Subnet
        }
    };
    Ok(PolicyKind::Geo(Arc::new(GeoPolicy {
        mode,
        subnets: subnets
            .into_iter()
            .map(|(n, v)| (n, names(interned, v)))
            .collect(),
        default_order: names(interned, default_order),
    })))
}

fn intern(table: &mut HashMap<String, SiteName>, site: &str) -> SiteName {
    table
        .entry(site.to_string())
        .or_insert_with(|| SiteName::from(site))
        .clone()
}

fn names(table: &mut HashMap<String, SiteName>, list: Vec<String>) -> Vec<SiteName> {
    list.into_iter().map(|s| intern(table, &s)).collect()
}

impl Builder {
    /// Rejects load-balanced names whose CNAME members lead, directly or through static
    /// CNAMEs, back to themselves.
    fn check_alias_loops(&self) -> Result<(), ConfigError> {
        // Where an alias lands: the binding at the end of its static CNAME chain, if any.
        let lands_on = |target: &str| -> Option<usize> {
            let mut name = Name::from_ascii(target).ok()?;
            for _ in 0..=8 {
                let zone = self
                    .zones
                    .iter()
                    .filter(|z| z.origin.zone_of(&name))
                    .max_by_key(|z| z.origin.num_labels())?;
                let node = zone.node(&name)?;
                if let Some(lb) = node.lb {
                    return Some(lb.binding);
                }
                let cname = node.rrset(RecordType::CNAME)?;
                match cname.first() {
                    hickory_proto::rr::RData::CNAME(c) => name = fqdn_lower(&c.0),
                    _ => return None,
                }
            }
            None
        };
        let edges: Vec<Vec<usize>> = self
            .bindings
            .iter()
            .map(|b| {
                let mut pools = vec![b.pool];
                if let WhenAllDown::Fallback(p) = b.when_all_down {
                    pools.push(p);
                }
                pools
                    .into_iter()
                    .flat_map(|p| self.pools[p].members.iter())
                    .filter_map(|m| match &m.target {
                        Target::Alias(t) => lands_on(t),
                        Target::Addr(_) => None,
                    })
                    .collect()
            })
            .collect();
        for start in 0..self.bindings.len() {
            if edges[start].is_empty() {
                continue;
            }
            // Depth-first walk from each name, remembering the path.
            let mut stack = vec![(start, vec![start])];
            let mut seen = vec![false; self.bindings.len()];
            while let Some((at, path)) = stack.pop() {
                for &next in &edges[at] {
                    if next == start {
                        let b = &self.bindings[start];
                        let chain: Vec<String> = path
                            .iter()
                            .chain(std::iter::once(&start))
                            .map(|&i| self.bindings[i].name.to_string())
                            .collect();
                        return Err(ConfigError::Invalid {
                            file: b.file.to_path_buf(),
                            line: b.line,
                            object: format!("name {:?}", b.name.to_string()),
                            message: format!("CNAME members loop: {}", chain.join(" -> ")),
                        });
                    }
                    if !seen[next] {
                        seen[next] = true;
                        let mut p = path.clone();
                        p.push(next);
                        stack.push((next, p));
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(self, server: ServerSettings) -> Result<Config, ConfigError> {
        self.check_alias_loops()?;
        let Builder {
            zones,
            zone_ecs,
            zone_transfer,
            keys,
            geo,
            geo_path,
            bindings,
            pools,
            mut probes,
            probe_order,
            sources,
            mut warnings,
        } = self;
        warnings.extend(
            zones
                .iter()
                .flat_map(|z| z.warnings.iter().map(ToString::to_string)),
        );
        Ok(Config {
            server,
            zones: zones.into_iter().map(Arc::new).collect(),
            zone_ecs,
            zone_transfer,
            keys,
            geo: match geo {
                Some(g) => g,
                None => Arc::new(NoGeo),
            },
            geo_path,
            bindings,
            pools,
            probes: probe_order
                .into_iter()
                .map(|s| {
                    let members = probes.remove(&s).unwrap_or_default();
                    (s, members)
                })
                .collect(),
            sources,
            warnings,
        })
    }
}

fn check_kind(c: &FileCheck, file: &Path) -> Result<Option<ProbeKind>, String> {
    let http = |tls: bool| -> Result<ProbeKind, String> {
        let expect = parse_status_ranges(c.expect_status.as_deref().unwrap_or("200-299"))?;
        let path = c.path.clone().unwrap_or_else(|| "/".into());
        if !path.starts_with('/') {
            return Err(format!("path {path:?} must start with '/'"));
        }
        Ok(ProbeKind::Http(HttpCheck {
            tls,
            method: c.method.clone().unwrap_or_else(|| "GET".into()),
            path,
            host: c.host.clone(),
            expect,
            body_contains: c.body_contains.clone(),
            ca_file: c
                .ca_file
                .as_ref()
                .map(|p| file.parent().unwrap_or(Path::new(".")).join(p)),
            insecure: c.verify_tls == Some(false),
        }))
    };
    let kind = match c.kind.as_str() {
        "http" => Some(http(false)?),
        "https" => Some(http(true)?),
        "tcp" => Some(ProbeKind::Tcp),
        "none" => None,
        other => return Err(format!("unknown kind {other:?} (http, https, tcp or none)")),
    };
    if !matches!(c.kind.as_str(), "https") && (c.ca_file.is_some() || c.verify_tls.is_some()) {
        return Err("ca_file and verify_tls apply to kind = \"https\" only".into());
    }
    if c.kind == "tcp"
        && (c.path.is_some()
            || c.method.is_some()
            || c.expect_status.is_some()
            || c.body_contains.is_some())
    {
        return Err(
            "path, method, expect_status and body_contains apply to http and https only".into(),
        );
    }
    for (key, v) in [("rise", c.rise), ("fall", c.fall)] {
        if v == Some(0) {
            return Err(format!("{key} must be at least 1"));
        }
    }
    Ok(kind)
}

fn parse_status_ranges(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |s: &str| {
            s.parse::<u16>()
                .ok()
                .filter(|v| (100..=599).contains(v))
                .ok_or_else(|| format!("expect_status {text:?}: {s:?} is not a status code"))
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if lo > hi {
            return Err(format!("expect_status {text:?}: empty range {lo}-{hi}"));
        }
        out.push((lo, hi));
    }
    Ok(out)
}

/// A check's schedule and thresholds, validated where the check is declared.
#[derive(Debug, Clone, Copy)]
struct Timing {
    port: Option<u16>,
    interval: Duration,
    timeout: Duration,
    rise: u32,
    fall: u32,
    jitter_percent: u8,
}

impl Timing {
    fn of(c: &FileCheck) -> Result<Timing, String> {
        let duration = |value: &Option<DurationValue>, key: &str, default: u64| {
            value
                .as_ref()
                .map(DurationValue::get)
                .transpose()
                .map(|d| d.unwrap_or(Duration::from_secs(default)))
                .map_err(|m| format!("{key}: {m}"))
        };
        let interval = duration(&c.interval, "interval", 5)?;
        let timeout = duration(&c.timeout, "timeout", 2)?;
        if interval.is_zero() || timeout.is_zero() {
            return Err("interval and timeout must be greater than 0".into());
        }
        let jitter_percent = match &c.jitter {
            None => 10,
            Some(j) => j
                .trim_end_matches('%')
                .parse::<u8>()
                .ok()
                .filter(|v| *v <= 50)
                .ok_or_else(|| format!("jitter {j:?} must be a percentage from 0% to 50%"))?,
        };
        Ok(Timing {
            port: c.port,
            interval,
            timeout,
            rise: c.rise.unwrap_or(2),
            fall: c.fall.unwrap_or(3),
            jitter_percent,
        })
    }
}

fn probe_spec(
    kind: ProbeKind,
    c: &Timing,
    m: &FileMember,
    target: &Target,
) -> Result<ProbeSpec, String> {
    let addr = match (&m.probe, target, c.port) {
        (Some(p), _, _) => p
            .parse::<SocketAddr>()
            .or_else(|_| {
                p.parse::<IpAddr>()
                    .map_err(|_| ())
                    .and_then(|ip| c.port.map(|port| SocketAddr::new(ip, port)).ok_or(()))
            })
            .map_err(|_| {
                format!("probe {p:?} must be ADDRESS:PORT (or an address when the check sets port)")
            })?,
        (None, Target::Addr(ip), Some(port)) => SocketAddr::new(*ip, port),
        (None, Target::Addr(_), None) => {
            return Err("no probe address: set probe = \"ADDRESS:PORT\" or the check's port".into())
        }
        (None, Target::Alias(_), _) => {
            return Err("a cname member needs probe = \"ADDRESS:PORT\"".into())
        }
    };
    Ok(ProbeSpec {
        kind,
        addr,
        interval: c.interval,
        timeout: c.timeout,
        rise: c.rise,
        fall: c.fall,
        jitter_percent: c.jitter_percent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_loads() {
        let cfg = load(&Source::demo()).expect("demo config is valid");
        assert_eq!(cfg.bindings.len(), 4);
        // Identical probes are shared: fra's two members use one probe; iad's two and the six
        // of the geo pool all check the control endpoint the same way and share another; the
        // backup pool's TCP check is a third.
        let mut sizes: Vec<usize> = cfg
            .probes
            .iter()
            .map(|(_, members)| members.len())
            .collect();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![1, 2, 8]);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2 parsecs").is_err());
    }

    #[test]
    fn status_ranges_parse() {
        assert_eq!(
            parse_status_ranges("200-299, 301").unwrap(),
            vec![(200, 299), (301, 301)]
        );
        assert!(parse_status_ranges("700").is_err());
    }
}
