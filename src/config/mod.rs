//! Configuration: file structs (serde, unknown keys rejected), then validation into [`Config`].
//!
//! The same [`load`] runs for `meridian check`, at start-up and on every reload. Every error
//! names the file, the line, and the object it is about, e.g.
//! `zones/example.test.gslb.toml:14: pool "web", member 2: weight must be greater than 0`.
//!
//! Files: the server file (`meridian.toml`) lists zones; each zone has an RFC 1035 zone file
//! and optionally a `*.gslb.toml` file declaring its load-balanced names, pools and checks.
//! Relative paths are resolved against the directory of the file that names them.
//!
//! Modules: `file` (the file structs), `gslb` (the load-balancing files and the builder),
//! `check` (a `[check.*]` table), `settings` (plain server settings), `dnssec` (a zone's
//! keys, signing policy and parent, and its signing set up once every zone is read), `site`
//! and `site_file` (the site proxy's config).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};

use crate::balance::{
    DrainSafety, GeoMode, GeoPolicy, Member, PolicyKind, Pool, SiteName, Target, WhenAllDown,
};
use crate::geo::{Coords, GeoError, GeoLocator, Mmdb, NoGeo};
use crate::health::{
    Factor, HttpCheck, LoadRules, MemberId, PassiveAction, PassiveRule, ProbeKind, ProbeSpec,
    ShedRule, Signal, Steering,
};
use crate::zone::{fqdn_lower, LbMark, Zone, ZoneError};

mod check;
mod dnssec;
mod file;
mod gslb;
mod settings;
mod site;
mod site_file;
pub use file::parse_duration;
use file::*;
pub(crate) use file::{line_of, parse_toml, read};
use gslb::Builder;
use ipnet::IpNet;
pub use settings::{CookieSecrets, RateLimit, TsigAlgorithm, TsigKey};
pub use site::{
    load_site, looks_like_site, AccessLog, AccessRules, Algorithm, CacheKey, ClientLimits, HashOn,
    KeyQuery, Listener, ListenerMode, PoolSettings, ProxyVersion, ReportListener, RequestRate,
    Route, RouteCache, RouteCompress, SiteConfig, SiteSource, Sticky, StickyCookie, TcpForward,
    TlsSettings, UpstreamProtocol, UpstreamTls, DEMO_SITE,
};
pub use site_file::parse_site;

/// The demo server file, compiled in so `meridian serve` runs with no flags.
pub const DEMO_CONFIG: &str = include_str!("../../zones/meridian.toml");

/// How many load-balanced names `server.metrics_names` may give series of their own (each
/// costs a fixed block of counters on every query thread; the counters hold this many).
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
        object: Object,
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

/// The object a configuration error is about, shown as the message names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// A setting by its path in the file (`server.listen`), or a section (`[anycast]`).
    Setting(&'static str),
    /// A `[[zone]]` entry, by its origin as written.
    Zone(String),
    /// A zone's SOA record, by the zone's origin.
    ZoneSoa(String),
    /// A TSIG `[[key]]`.
    Key(String),
    /// The server cookie secret file.
    CookieSecret,
    Site(String),
    Check(String),
    Pool(String),
    /// A pool's member, by its position (from 1).
    Member {
        pool: String,
        index: usize,
    },
    /// A load-balanced `[[name]]`.
    Name(String),
    /// A site proxy's `[[listener]]`, by its address as written.
    Listener(String),
    /// A site proxy's `[[route]]`, by its position (from 1).
    Route(usize),
    /// An anycast `[[prefix]]`, as written.
    Prefix(String),
    /// A prefix's check, by its position (from 1).
    PrefixCheck {
        prefix: String,
        index: usize,
    },
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Object::Setting(path) => f.write_str(path),
            Object::Zone(origin) => write!(f, "zone {origin:?}"),
            Object::ZoneSoa(origin) => write!(f, "zone {origin} SOA"),
            Object::Key(name) => write!(f, "key {name:?}"),
            Object::CookieSecret => f.write_str("cookie secret"),
            Object::Site(name) => write!(f, "site {name:?}"),
            Object::Check(name) => write!(f, "check {name:?}"),
            Object::Pool(name) => write!(f, "pool {name:?}"),
            Object::Member { pool, index } => write!(f, "pool {pool:?}, member {index}"),
            Object::Name(name) => write!(f, "name {name:?}"),
            Object::Listener(address) => write!(f, "listener {address:?}"),
            Object::Route(index) => write!(f, "route {index}"),
            Object::Prefix(prefix) => write!(f, "prefix {prefix}"),
            Object::PrefixCheck { prefix, index } => write!(f, "prefix {prefix}, check {index}"),
        }
    }
}

impl ConfigError {
    /// The error of a value at byte `offset` of `text` (the file `file`), naming `object`.
    pub fn at(file: &Path, text: &str, offset: usize, object: Object, message: String) -> Self {
        ConfigError::Invalid {
            file: file.to_path_buf(),
            line: line_of(text, offset),
            object,
            message,
        }
    }

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

/// One served zone: its data (reached through `Deref`, so `zone.origin` and `zone.find()` read
/// as on the data itself) and how it is served.
#[derive(Debug)]
pub struct ServedZone {
    pub data: Arc<Zone>,
    /// Whether EDNS Client Subnet is honoured.
    pub ecs: bool,
    /// Who may transfer it, and whom to notify.
    pub transfer: Option<Transfer>,
    /// Its DNSSEC keys, checked at load.
    pub dnssec_keys: Arc<[crate::dnssec::ZoneKey]>,
    /// How its answers are signed, when it has keys.
    pub signing: Option<Arc<crate::dnssec::ZoneSigning>>,
}

impl std::ops::Deref for ServedZone {
    type Target = Zone;

    fn deref(&self) -> &Zone {
        &self.data
    }
}

/// The validated, runtime configuration. Immutable; a reload builds a new one.
pub struct Config {
    pub server: ServerSettings,
    /// The zones, each with how it is served.
    pub zones: Vec<ServedZone>,
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
    /// What the load reports of members whose site sheds load or judges what its clients
    /// got may do to them.
    pub steering: Steering,
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
    let invalid = |span: std::ops::Range<usize>, object: Object, message: String| {
        ConfigError::at(&file, &text, span.start, object, message)
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
                s.parse::<SocketAddr>().map_err(|e| {
                    invalid(
                        span.clone(),
                        Object::Setting("server.listen"),
                        format!("{s:?}: {e}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let control: SocketAddr = match &section.control {
        None => "127.0.0.1:5380".parse().expect("literal"),
        Some(s) => s.parse().map_err(|e| {
            invalid(
                span.clone(),
                Object::Setting("server.control"),
                format!("{s:?}: {e}"),
            )
        })?,
    };
    let edns_udp_size = section.edns_udp_size.unwrap_or(1232);
    if edns_udp_size < 512 {
        return Err(invalid(
            span.clone(),
            Object::Setting("server.edns_udp_size"),
            "must be at least 512".into(),
        ));
    }
    if let Some(id) = &section.identity {
        if id.is_empty() || id.len() > 255 || !id.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return Err(invalid(
                span.clone(),
                Object::Setting("server.identity"),
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
                    Object::Setting("server.cookie_secret_file"),
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
                Some(list) => networks(list).map_err(|m| {
                    invalid(span.clone(), Object::Setting("server.rate_limit.exempt"), m)
                })?,
            },
        };
        if s.ipv4_prefix > 32 || s.ipv6_prefix > 128 {
            return Err(invalid(
                span.clone(),
                Object::Setting("server.rate_limit"),
                "ipv4_prefix is at most 32 and ipv6_prefix at most 128".into(),
            ));
        }
        s
    };
    let tcp = {
        let t = section.tcp.as_ref();
        let idle_timeout = match t.and_then(|t| t.idle_timeout.as_deref()) {
            None => Duration::from_secs(10),
            Some(d) => parse_duration(d).map_err(|m| {
                invalid(span.clone(), Object::Setting("server.tcp.idle_timeout"), m)
            })?,
        };
        let s = TcpSettings {
            max_connections: t.and_then(|t| t.max_connections).unwrap_or(512),
            max_per_client: t.and_then(|t| t.max_per_client).unwrap_or(16),
            idle_timeout,
        };
        if s.max_connections == 0 || s.max_per_client == 0 || s.idle_timeout.is_zero() {
            return Err(invalid(
                span.clone(),
                Object::Setting("server.tcp"),
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
                    Object::Setting("server.control_token_file"),
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
            Object::Setting("server.control"),
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
            Object::Setting("server.metrics_names"),
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
            Some(list) => networks(list)
                .map_err(|m| invalid(span.clone(), Object::Setting("server.explain_from"), m))?,
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
        return Err(invalid(
            0..0,
            Object::Setting("zone"),
            "no [[zone]] configured".into(),
        ));
    }
    for entry in &parsed.key {
        let k = entry.get_ref();
        let fail = |m: String| invalid(entry.span(), Object::Key(k.name.clone()), m);
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
    // Zones with keys, signed once every zone is read.
    let mut signed: Vec<dnssec::Pending> = Vec::new();
    let mut origins: Vec<Name> = Vec::new();
    for entry in &parsed.zone {
        let z = entry.get_ref();
        let object = || Object::Zone(z.origin.clone());
        let origin = match Name::from_ascii(&z.origin).map(|n| fqdn_lower(&n)) {
            Ok(origin) => origin,
            Err(e) => {
                errors.push(invalid(entry.span(), object(), format!("bad origin: {e}")));
                continue;
            }
        };
        if origins.contains(&origin) {
            errors.push(invalid(entry.span(), object(), "zone listed twice".into()));
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
                .map_err(|m| invalid(entry.span(), object(), m)),
        };
        let keys = match &z.dnssec_keys {
            None => Ok((Vec::new(), None)),
            Some(paths) => {
                let paths: Vec<PathBuf> = paths.iter().map(|p| base.join(p)).collect();
                // Both files of each key are watched: a timing change (`dnssec-settime`)
                // reloads like any other edit.
                for path in &paths {
                    let text = path.to_string_lossy();
                    let stem = text
                        .strip_suffix(".key")
                        .or_else(|| text.strip_suffix(".private"))
                        .unwrap_or(&text);
                    builder.sources.push(PathBuf::from(format!("{stem}.key")));
                    builder
                        .sources
                        .push(PathBuf::from(format!("{stem}.private")));
                }
                dnssec::zone_dnssec(z, &paths).map(|(keys, policy, warnings)| {
                    let at = line_of(&text, entry.span().start);
                    for w in warnings {
                        builder.warnings.push(format!(
                            "{}:{at}: {}: {w}",
                            file.display(),
                            object()
                        ));
                    }
                    (keys, Some(policy))
                })
            }
        }
        .map_err(|m| invalid(entry.span(), object(), m));
        let zone = match (Zone::load(&zone_file, &origin), transfer, keys) {
            (Ok(zone), Ok(transfer), Ok((keys, policy))) => {
                if let Some(settings) = policy {
                    let at = line_of(&text, entry.span().start);
                    let declared = (entry.span(), object(), at);
                    signed.push((builder.zones.len(), settings, declared));
                }
                builder.zone_transfer.push(transfer);
                builder.zone_keys.push((keys.into(), None));
                zone
            }
            (zone, transfer, keys) => {
                errors.extend(zone.err().map(ConfigError::from));
                errors.extend(transfer.err());
                errors.extend(keys.err());
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
    // Signing is set up once every zone is read: a zone's parent, when this node serves it,
    // says which DS records point at the zone's keys.
    for (span, object, message) in dnssec::set_up_signing(&mut builder, signed, &file) {
        errors.push(invalid(span, object, message));
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

#[cfg(test)]
mod tests {
    use super::check::parse_status_ranges;
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
    fn a_member_may_carry_a_port_that_dns_does_not_answer() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("m.toml"),
            "[server]\nstate_dir = \"s\"\n[[zone]]\norigin = \"example.test\"\nfile = \"z\"\ngslb = \"g\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("z"),
            "$TTL 60\n@ SOA ns h 1 2 3 4 5\n NS ns\nns A 192.0.2.53\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("g"),
            "[[name]]\nname = \"www\"\npool = \"p\"\n[pool.p]\ncheck = \"t\"\nmembers = [ { site = \"a\", address = \"192.0.2.1:8080\" }, { site = \"b\", address = \"[2001:db8::1]:8443\" } ]\n[check.t]\nkind = \"tcp\"\n",
        )
        .unwrap();
        let cfg = load(&Source::File(dir.path().join("m.toml"))).unwrap();
        let members = &cfg.pools[0].members;
        assert_eq!(members[0].id.0, "a/192.0.2.1:8080");
        assert_eq!(
            members[0].target,
            Target::Addr("192.0.2.1".parse().unwrap())
        );
        assert_eq!(members[0].port, Some(8080));
        assert_eq!(members[1].id.0, "b/[2001:db8::1]:8443");
        // Probed at the member's own port when the check names none.
        let mut probed: Vec<String> = cfg.probes.iter().map(|(s, _)| s.addr.to_string()).collect();
        probed.sort();
        assert_eq!(probed, ["192.0.2.1:8080", "[2001:db8::1]:8443"]);
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
