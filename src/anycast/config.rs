//! The helper's config file: prefixes, checks, timers and the BGP daemon to drive.

use super::*;
use crate::config::Object;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AnycastFile {
    anycast: Option<Spanned<Section>>,
    bird: Option<BirdSection>,
    #[serde(default)]
    prefix: Vec<Spanned<FilePrefix>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Section {
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
pub(super) struct BirdSection {
    include: Option<String>,
    birdc: Option<String>,
    socket: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePrefix {
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
pub(super) struct FileCheck {
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
        let invalid = |offset: usize, object: Object, message: String| {
            ConfigError::at(path, text, offset, object, message)
        };
        let (section, at) = match &file.anycast {
            Some(s) => (s.get_ref(), s.span().start),
            None => (&Section::default(), 0),
        };
        let dur =
            |v: &Option<String>, default: Duration, what: &str| -> Result<Duration, ConfigError> {
                match v {
                    None => Ok(default),
                    Some(t) => parse_duration(t).map_err(|m| {
                        invalid(at, Object::Setting("[anycast]"), format!("{what}: {m}"))
                    }),
                }
            };
        let interval = dur(&section.interval, Duration::from_secs(1), "interval")?;
        let timeout = dur(&section.timeout, Duration::from_millis(500), "timeout")?;
        let hold_down = dur(&section.hold_down, Duration::from_secs(10), "hold_down")?;
        let watchdog = dur(&section.watchdog, (interval + timeout) * 10, "watchdog")?;
        if interval.is_zero() || timeout.is_zero() {
            return Err(invalid(
                at,
                Object::Setting("[anycast]"),
                "interval and timeout must be above zero".into(),
            ));
        }
        if watchdog <= interval + timeout {
            return Err(invalid(
                at,
                Object::Setting("[anycast]"),
                "watchdog must be longer than interval + timeout".into(),
            ));
        }
        let rise = section.rise.unwrap_or(3);
        let fall = section.fall.unwrap_or(2);
        if rise == 0 || fall == 0 {
            return Err(invalid(
                at,
                Object::Setting("[anycast]"),
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
            return Err(invalid(
                at,
                Object::Setting("[anycast]"),
                "no [[prefix]] to announce".into(),
            ));
        }
        let mut prefixes = Vec::new();
        for p in &file.prefix {
            let at = p.span().start;
            let p = p.get_ref();
            let object = || Object::Prefix(p.prefix.clone());
            let prefix: IpNet = p
                .prefix
                .parse()
                .map_err(|_| invalid(at, object(), "not a prefix (e.g. 192.0.2.53/32)".into()))?;
            if prefix != prefix.trunc() {
                return Err(invalid(
                    at,
                    object(),
                    format!("host bits set; did you mean {}?", prefix.trunc()),
                ));
            }
            if prefixes.iter().any(|q: &PrefixSpec| q.prefix == prefix) {
                return Err(invalid(at, object(), "declared twice".into()));
            }
            let on_failure = match p.on_failure.as_deref().unwrap_or("withdraw") {
                "withdraw" => OnFailure::Withdraw,
                "degrade" => OnFailure::Degrade,
                other => {
                    return Err(invalid(
                        at,
                        object(),
                        format!("on_failure {other:?}: withdraw or degrade"),
                    ))
                }
            };
            let prepend = p.prepend.unwrap_or(0);
            let degraded_prepend = p.degraded_prepend.unwrap_or(3);
            if (prepend > 0 || on_failure == OnFailure::Degrade) && section.local_as.is_none() {
                return Err(invalid(
                    at,
                    object(),
                    "AS-path prepends need [anycast] local_as".into(),
                ));
            }
            if p.check.is_empty() {
                return Err(invalid(
                    at,
                    object(),
                    "no [[prefix.check]]: nothing would decide it".into(),
                ));
            }
            let mut checks = Vec::new();
            for (i, c) in p.check.iter().enumerate() {
                let object = Object::PrefixCheck {
                    prefix: p.prefix.clone(),
                    index: i + 1,
                };
                checks.push(
                    parse_check(c.get_ref()).map_err(|m| invalid(c.span().start, object, m))?,
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

pub(super) fn parse_check(c: &FileCheck) -> Result<Check, String> {
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
