//! The config files as written: serde structs (unknown keys rejected) for the server file and
//! the load-balancing files, and reading them with errors that name file, line and column.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerFile {
    pub(super) server: Option<Spanned<ServerSection>>,
    #[serde(default)]
    pub(super) zone: Vec<Spanned<ZoneEntry>>,
    #[serde(default)]
    pub(super) key: Vec<Spanned<KeyEntry>>,
}

/// A TSIG key, `[[key]]` in the server file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyEntry {
    pub(super) name: String,
    pub(super) algorithm: Option<String>,
    pub(super) secret: Option<String>,
    pub(super) secret_file: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerSection {
    pub(super) listen: Option<Vec<String>>,
    pub(super) control: Option<String>,
    pub(super) state_dir: Option<String>,
    pub(super) udp_workers: Option<usize>,
    pub(super) edns_udp_size: Option<u16>,
    pub(super) minimal_responses: Option<bool>,
    pub(super) geo_database: Option<String>,
    pub(super) explain_from: Option<Vec<String>>,
    pub(super) identity: Option<String>,
    pub(super) cookies: Option<bool>,
    pub(super) cookie_secret_file: Option<String>,
    pub(super) rate_limit: Option<RateLimitSection>,
    pub(super) tcp: Option<TcpSection>,
    pub(super) control_token_file: Option<String>,
    pub(super) metrics_names: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TcpSection {
    pub(super) max_connections: Option<usize>,
    pub(super) max_per_client: Option<usize>,
    pub(super) idle_timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimitSection {
    pub(super) responses_per_second: Option<u32>,
    pub(super) slip: Option<u32>,
    pub(super) ipv4_prefix: Option<u8>,
    pub(super) ipv6_prefix: Option<u8>,
    pub(super) exempt: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ZoneEntry {
    pub(super) origin: String,
    pub(super) file: String,
    pub(super) gslb: Option<String>,
    pub(super) ecs: Option<bool>,
    pub(super) transfer: Option<TransferSection>,
    /// DNSSEC key files (BIND's `K<zone>.+<alg>+<tag>`, either file or the stem), relative
    /// to the server file.
    pub(super) dnssec_keys: Option<Vec<String>>,
    /// How long signatures hold (`"14d"`), when they are made again (`"7d"` before they
    /// expire), and how much is added to spread expirations (`"12h"`).
    pub(super) dnssec_validity: Option<String>,
    pub(super) dnssec_refresh: Option<String>,
    pub(super) dnssec_jitter: Option<String>,
    /// Publish CDS and CDNSKEY for the parent (default true).
    pub(super) dnssec_cds: Option<bool>,
    /// How absent names are denied: `"compact"` (RFC 9824, the default) or `"white-lies"`
    /// (RFC 4470).
    pub(super) dnssec_denial: Option<String>,
    /// Servers of the parent zone (`ADDR` or `ADDR:PORT`), asked for the zone's DS set when
    /// this node does not serve the parent.
    pub(super) dnssec_parent: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TransferSection {
    pub(super) allow: Vec<String>,
    #[serde(default)]
    pub(super) notify: Vec<String>,
    pub(super) load_balanced: Option<String>,
    pub(super) snapshot_ttl: Option<u32>,
    pub(super) key: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct GslbFile {
    #[serde(default)]
    pub(super) name: Vec<Spanned<FileName>>,
    #[serde(default)]
    pub(super) pool: BTreeMap<String, Spanned<FilePool>>,
    #[serde(default)]
    pub(super) check: BTreeMap<String, Spanned<FileCheck>>,
    #[serde(default)]
    pub(super) site: BTreeMap<String, Spanned<FileSite>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSite {
    /// `[latitude, longitude]` in degrees.
    pub(super) location: Option<[f64; 2]>,
    /// Load shedding: `{ signal = "connections", low = 800, high = 1000 }`.
    pub(super) shed: Option<FileShed>,
    /// Passive health: `{ errors_above = "5%", p99_above = "800ms", reports = 3 }`.
    pub(super) passive: Option<FilePassive>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePassive {
    pub(super) errors_above: Option<String>,
    pub(super) p99_above: Option<DurationValue>,
    pub(super) reports: Option<u32>,
    pub(super) min_requests: Option<u32>,
    pub(super) action: Option<String>,
    pub(super) degrade_to: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileShed {
    pub(super) signal: String,
    pub(super) low: f64,
    pub(super) high: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileName {
    pub(super) name: String,
    pub(super) types: Option<Vec<String>>,
    pub(super) ttl: Option<DurationValue>,
    pub(super) policy: Option<String>,
    pub(super) pool: String,
    pub(super) answers: Option<i64>,
    pub(super) when_all_down: Option<String>,
    pub(super) fallback: Option<String>,
    pub(super) limit: Option<i64>,
    pub(super) default_order: Option<Vec<String>>,
    pub(super) map: Option<BTreeMap<String, Vec<String>>>,
    pub(super) subnets: Option<BTreeMap<String, Vec<String>>>,
    pub(super) subnet_file: Option<String>,
    /// For the latency policy: the share of answers that try the second site (`"2%"`).
    pub(super) explore: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePool {
    pub(super) check: Option<String>,
    pub(super) members: Vec<Spanned<FileMember>>,
    pub(super) min_usable: Option<usize>,
    pub(super) min_weight_percent: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileMember {
    pub(super) site: String,
    pub(super) address: Option<String>,
    pub(super) cname: Option<String>,
    pub(super) probe: Option<String>,
    pub(super) weight: Option<i64>,
    pub(super) priority: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCheck {
    pub(super) kind: String,
    pub(super) port: Option<u16>,
    pub(super) method: Option<String>,
    pub(super) path: Option<String>,
    pub(super) host: Option<String>,
    pub(super) expect_status: Option<String>,
    pub(super) body_contains: Option<String>,
    pub(super) ca_file: Option<String>,
    pub(super) verify_tls: Option<bool>,
    /// `proxy-load`: the report listener speaks TLS, and the token it wants.
    pub(super) tls: Option<bool>,
    pub(super) token_file: Option<String>,
    pub(super) interval: Option<DurationValue>,
    pub(super) timeout: Option<DurationValue>,
    pub(super) rise: Option<u32>,
    pub(super) fall: Option<u32>,
    pub(super) jitter: Option<String>,
}

/// A duration written as seconds (`30`) or with a unit (`"200ms"`, `"2s"`, `"1m"`, `"1h"`).
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum DurationValue {
    Seconds(u64),
    Text(String),
}

impl DurationValue {
    pub(super) fn get(&self) -> Result<Duration, String> {
        match self {
            DurationValue::Seconds(s) => Ok(Duration::from_secs(*s)),
            DurationValue::Text(t) => parse_duration(t),
        }
    }
}

/// Parses a list of networks (`192.0.2.0/24`) or single addresses.
pub(super) fn networks(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|n| {
            n.parse::<IpNet>()
                .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| format!("{n:?} is not a network"))
        })
        .collect()
}

/// Parses `"250ms"`, `"2s"`, `"5m"`, `"1h"`, `"14d"` or a bare number of seconds.
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
        "d" => Duration::from_secs(n * 86_400),
        _ => return Err(format!("bad duration unit in {text:?} (ms, s, m, h or d)")),
    };
    Ok(d)
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
pub(super) struct Lines(Vec<usize>);

impl Lines {
    pub(super) fn new(text: &str) -> Lines {
        Lines(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }

    pub(super) fn line(&self, offset: usize) -> usize {
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

pub(super) fn column_of(text: &str, offset: usize) -> usize {
    let before = &text[..offset.min(text.len())];
    before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1
}
