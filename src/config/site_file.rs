//! Reading a site config file: the TOML's shape (serde structs, unknown keys rejected) and
//! the validation that turns it into a [`SiteConfig`], each error naming file, line and
//! object.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::check::{check_kind, Timing};
use super::file::{line_of, parse_toml, DurationValue, FileCheck};
use super::site::*;
use super::{ConfigError, Object};
use crate::balance::{DrainSafety, Member, Pool, Target};
use crate::health::{MemberId, ProbeKind, ProbeSpec};
use cache::{route_cache, route_compress, CacheFile, CompressFile};
use tables::{client_limits, listener_mode, report_listener, sticky, tls_settings};

mod cache;
mod tables;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteFile {
    proxy: Option<Spanned<ProxySection>>,
    #[serde(default)]
    listener: Vec<Spanned<ListenerFile>>,
    #[serde(default)]
    route: Vec<Spanned<RouteFile>>,
    #[serde(default)]
    pool: BTreeMap<String, Spanned<PoolFile>>,
    #[serde(default)]
    check: BTreeMap<String, Spanned<FileCheck>>,
    demo: Option<Spanned<DemoFile>>,
    limits: Option<Spanned<LimitsFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    client_prefix_v4: Option<u8>,
    client_prefix_v6: Option<u8>,
    connections_per_client: Option<u32>,
    /// `"N/s"`, `"N/m"` or `"N/h"`.
    rate: Option<String>,
    burst: Option<u32>,
    max_clients: Option<usize>,
    max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxySection {
    control: Option<String>,
    report: Option<ReportFile>,
    drain_timeout: Option<DurationValue>,
    header_timeout: Option<DurationValue>,
    send_timeout: Option<DurationValue>,
    body_timeout: Option<DurationValue>,
    body_min_rate: Option<u64>,
    h2_max_streams: Option<u32>,
    rtt_networks: Option<usize>,
    max_headers: Option<usize>,
    max_header_bytes: Option<usize>,
    max_body: Option<u64>,
    trusted_proxies: Option<Vec<String>>,
    request_id_header: Option<String>,
    access_log: Option<String>,
    access_log_file: Option<String>,
    hide_headers: Option<Vec<String>>,
    workers: Option<usize>,
    /// Bytes of the cache's memory tier.
    cache_memory: Option<u64>,
    /// The response header whose space-separated values tag a stored response for purges.
    cache_tag_header: Option<String>,
    /// Networks whose `PURGE` requests are obeyed.
    purge_allow: Option<Vec<String>>,
    /// The disk tier's directory, and its bound in bytes (default 1 GiB).
    cache_disk: Option<String>,
    cache_disk_size: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerFile {
    address: String,
    tls: Option<TlsFile>,
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
    /// `"http"` (the default) or `"tcp"`.
    mode: Option<String>,
    /// A TCP listener's pool.
    pool: Option<String>,
    /// A TCP listener's TLS passthrough routes.
    server_names: Option<Vec<ServerNameFile>>,
    proxy_protocol: Option<bool>,
    idle_timeout: Option<DurationValue>,
    hello_timeout: Option<DurationValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerNameFile {
    name: String,
    pool: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportFile {
    address: String,
    token_file: Option<String>,
    tls: Option<TlsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    certificates: Vec<CertFile>,
    client_ca: Option<String>,
    resumption: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertFile {
    cert: String,
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    host: Option<String>,
    path_prefix: Option<String>,
    path_suffix: Option<Vec<String>>,
    header: Option<HeaderFile>,
    method: Option<Vec<String>>,
    pool: String,
    timeout: Option<DurationValue>,
    set_request_headers: Option<BTreeMap<String, String>>,
    set_response_headers: Option<BTreeMap<String, String>>,
    error_page: Option<String>,
    max_body: Option<u64>,
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
    /// `true`, or a table of the route's cache settings.
    cache: Option<CacheFile>,
    /// `true`, or `{ min_size = BYTES }`.
    compress: Option<CompressFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderFile {
    name: String,
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolFile {
    algorithm: Option<String>,
    hash_on: Option<String>,
    servers: Vec<ServerFile>,
    check: Option<String>,
    start: Option<String>,
    host: Option<String>,
    sticky: Option<StickyFile>,
    connect_timeout: Option<DurationValue>,
    idle_per_server: Option<usize>,
    idle_timeout: Option<DurationValue>,
    eject_after: Option<u32>,
    eject_for: Option<DurationValue>,
    retry_budget: Option<String>,
    retry_body_limit: Option<u64>,
    tls: Option<UpstreamTlsFile>,
    protocol: Option<String>,
    /// `"v1"` or `"v2"`: a PROXY protocol header first on each connection (TCP listeners).
    proxy_protocol: Option<String>,
    max_in_flight: Option<u32>,
    queue_timeout: Option<DurationValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamTlsFile {
    verify: Option<bool>,
    ca_file: Option<String>,
    server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    address: String,
    weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StickyFile {
    mode: Option<String>,
    cookie: Option<String>,
    max_age: Option<DurationValue>,
    secure: Option<bool>,
    http_only: Option<bool>,
    same_site: Option<String>,
    key: Option<String>,
    key_file: Option<String>,
    drain_grace: Option<DurationValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoFile {
    responders: Vec<String>,
}

/// Addresses or prefixes (`192.0.2.1`, `10.0.0.0/8`, `2001:db8::/32`); the one that is
/// neither is named in the error.
fn networks(list: &Option<Vec<String>>) -> Result<Vec<IpNet>, String> {
    list.iter()
        .flatten()
        .map(|t| {
            t.parse::<IpNet>()
                .or_else(|_| t.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{t:?} is not an address or prefix"))
        })
        .collect()
}

fn access_rules(
    allow: &Option<Vec<String>>,
    deny: &Option<Vec<String>>,
) -> Result<AccessRules, String> {
    Ok(AccessRules {
        allow: networks(allow).map_err(|m| format!("allow: {m}"))?,
        deny: networks(deny).map_err(|m| format!("deny: {m}"))?,
    })
}

/// A duration the file may give, else `default`.
fn duration(value: &Option<DurationValue>, default: Duration) -> Result<Duration, String> {
    value
        .as_ref()
        .map(DurationValue::get)
        .transpose()
        .map(|d| d.unwrap_or(default))
}

/// Validates a site config's text (`file` names it in errors; `base` resolves relative paths).
pub fn parse_site(text: &str, file: &Path, base: &Path) -> Result<SiteConfig, ConfigError> {
    let parsed: SiteFile = parse_toml(text, file)?;
    let invalid = |offset: usize, object: Object, message: String| {
        ConfigError::at(file, text, offset, object, message)
    };

    let section = parsed.proxy.as_ref().map(|s| s.get_ref());
    let at = parsed.proxy.as_ref().map_or(0, |s| s.span().start);
    let default_section = ProxySection::default();
    let section = section.unwrap_or(&default_section);
    let control = section
        .control
        .as_deref()
        .map(|c| {
            c.parse::<SocketAddr>()
                .map_err(|e| invalid(at, Object::Setting("proxy.control"), format!("{c:?}: {e}")))
        })
        .transpose()?;
    if control.is_some_and(|c| !c.ip().is_loopback()) {
        return Err(invalid(
            at,
            Object::Setting("proxy.control"),
            "the control endpoint listens on loopback only".into(),
        ));
    }
    let report = section
        .report
        .as_ref()
        .map(|r| report_listener(r, base))
        .transpose()
        .map_err(|m| invalid(at, Object::Setting("proxy.report"), m))?;
    let drain_timeout = duration(&section.drain_timeout, Duration::from_secs(30))
        .map_err(|m| invalid(at, Object::Setting("proxy.drain_timeout"), m))?;
    let header_timeout = duration(&section.header_timeout, Duration::from_secs(10))
        .map_err(|m| invalid(at, Object::Setting("proxy.header_timeout"), m))?;
    let send_timeout = duration(&section.send_timeout, Duration::from_secs(60))
        .map_err(|m| invalid(at, Object::Setting("proxy.send_timeout"), m))?;
    let body_timeout = duration(&section.body_timeout, Duration::from_secs(60))
        .map_err(|m| invalid(at, Object::Setting("proxy.body_timeout"), m))?;
    if section.body_min_rate == Some(0) {
        return Err(invalid(
            at,
            Object::Setting("proxy.body_min_rate"),
            "0 bytes a second is no minimum; leave it out instead".into(),
        ));
    }
    let h2_max_streams = section.h2_max_streams.unwrap_or(100);
    if h2_max_streams == 0 {
        return Err(invalid(
            at,
            Object::Setting("proxy.h2_max_streams"),
            "an h2 client needs at least one stream".into(),
        ));
    }
    let rtt_networks = section.rtt_networks.unwrap_or(65_536);
    let max_headers = section.max_headers.unwrap_or(100);
    let max_header_bytes = section.max_header_bytes.unwrap_or(64 * 1024);
    if max_header_bytes < 8192 {
        return Err(invalid(
            at,
            Object::Setting("proxy.max_header_bytes"),
            format!("{max_header_bytes} is below the least allowed, 8192"),
        ));
    }
    let trusted_proxies = networks(&section.trusted_proxies)
        .map_err(|m| invalid(at, Object::Setting("proxy.trusted_proxies"), m))?;
    let purge_allow = networks(&section.purge_allow)
        .map_err(|m| invalid(at, Object::Setting("proxy.purge_allow"), m))?;
    // A header name setting, lower-cased, or its default.
    let header_setting = |value: &Option<String>, default: &str, setting: &'static str| {
        let name = value.as_deref().unwrap_or(default).to_ascii_lowercase();
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(_) => Ok(name),
            Err(_) => Err(invalid(
                at,
                Object::Setting(setting),
                format!("{name:?} is not a header name"),
            )),
        }
    };
    let cache_tag_header = header_setting(
        &section.cache_tag_header,
        "surrogate-key",
        "proxy.cache_tag_header",
    )?;
    let request_id_header = header_setting(
        &section.request_id_header,
        "x-request-id",
        "proxy.request_id_header",
    )?;
    let access_log = match section.access_log.as_deref().unwrap_or("combined") {
        "off" => AccessLog::Off,
        "combined" => AccessLog::Combined,
        "json" => AccessLog::Json,
        other => {
            return Err(invalid(
                at,
                Object::Setting("proxy.access_log"),
                format!("{other:?}: off, combined or json"),
            ))
        }
    };
    let workers = match section.workers {
        Some(0) => {
            return Err(invalid(
                at,
                Object::Setting("proxy.workers"),
                "needs at least one worker".into(),
            ))
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let mut hide_headers = vec!["server".to_string()];
    hide_headers.extend(
        section
            .hide_headers
            .iter()
            .flatten()
            .map(|h| h.to_ascii_lowercase()),
    );
    if let Some(bad) = hide_headers
        .iter()
        .find(|h| http::HeaderName::from_bytes(h.as_bytes()).is_err())
    {
        return Err(invalid(
            at,
            Object::Setting("proxy.hide_headers"),
            format!("{bad:?} is not a header name"),
        ));
    }

    if parsed.listener.is_empty() {
        return Err(invalid(
            0,
            Object::Setting("listener"),
            "no [[listener]] configured".into(),
        ));
    }
    let mut listeners: Vec<Listener> = Vec::new();
    for l in &parsed.listener {
        let address = &l.get_ref().address;
        let addr = address.parse::<SocketAddr>().map_err(|e| {
            invalid(
                l.span().start,
                Object::Listener(address.clone()),
                format!("not ADDRESS:PORT: {e}"),
            )
        })?;
        if addr.port() != 0 && listeners.iter().any(|o| o.addr == addr) {
            return Err(invalid(
                l.span().start,
                Object::Listener(address.clone()),
                "listed twice".into(),
            ));
        }
        let tls = l
            .get_ref()
            .tls
            .as_ref()
            .map(|t| tls_settings(t, base))
            .transpose()
            .map_err(|m| invalid(l.span().start, Object::Listener(address.clone()), m))?;
        let access = access_rules(&l.get_ref().allow, &l.get_ref().deny)
            .map_err(|m| invalid(l.span().start, Object::Listener(address.clone()), m))?;
        let proxy_protocol = l.get_ref().proxy_protocol.unwrap_or(false);
        if proxy_protocol && trusted_proxies.is_empty() {
            return Err(invalid(
                l.span().start,
                Object::Listener(address.clone()),
                "proxy_protocol is accepted from trusted_proxies only, and [proxy] lists none"
                    .into(),
            ));
        }
        listeners.push(Listener {
            addr,
            tls,
            access,
            // Set once the pools are known (TCP listeners name one).
            mode: ListenerMode::Http,
            proxy_protocol,
        });
    }

    // Checks first: pools refer to them.
    let mut checks: HashMap<&str, (Option<ProbeKind>, Timing)> = HashMap::new();
    for (name, c) in &parsed.check {
        let object = Object::Check(name.clone());
        let kind = check_kind(c.get_ref(), file)
            .map_err(|m| invalid(c.span().start, object.clone(), m))?;
        let timing = Timing::of(c.get_ref()).map_err(|m| invalid(c.span().start, object, m))?;
        checks.insert(name.as_str(), (kind, timing));
    }

    let mut pools = Vec::new();
    let mut pool_settings = Vec::new();
    let mut probes: Vec<(ProbeSpec, Vec<MemberId>)> = Vec::new();
    let mut pool_index: HashMap<&str, usize> = HashMap::new();
    for (name, p) in &parsed.pool {
        let at = p.span().start;
        let object = || Object::Pool(name.clone());
        let fp = p.get_ref();
        if fp.servers.is_empty() {
            return Err(invalid(
                at,
                object(),
                "a pool needs at least one server".into(),
            ));
        }
        let check = match &fp.check {
            None => None,
            Some(c) => Some(
                checks
                    .get(c.as_str())
                    .ok_or_else(|| invalid(at, object(), format!("unknown check {c:?}")))?,
            ),
        };
        let mut members: Vec<Member> = Vec::new();
        for (i, s) in fp.servers.iter().enumerate() {
            let object = Object::Member {
                pool: name.clone(),
                index: i + 1,
            };
            let addr: SocketAddr = s.address.parse().map_err(|_| {
                invalid(
                    at,
                    object.clone(),
                    format!("address {:?} must be ADDRESS:PORT", s.address),
                )
            })?;
            let weight = s.weight.unwrap_or(1);
            if weight == 0 || weight > 1000 {
                return Err(invalid(at, object, "weight must be 1 to 1000".into()));
            }
            let id = MemberId::new(name, &addr.to_string());
            if members.iter().any(|m| m.id == id) {
                return Err(invalid(at, object, "server listed twice".into()));
            }
            if let Some((Some(kind), timing)) = check {
                let spec = timing.spec(
                    kind.clone(),
                    SocketAddr::new(addr.ip(), timing.port.unwrap_or(addr.port())),
                );
                match probes.iter_mut().find(|(s, _)| *s == spec) {
                    Some((_, ids)) => ids.push(id.clone()),
                    None => probes.push((spec, vec![id.clone()])),
                }
            }
            members.push(Member {
                id,
                site: name.as_str().into(),
                target: Target::Addr(addr.ip()),
                port: Some(addr.port()),
                weight,
                priority: 0,
            });
        }
        let hash_on = match fp.hash_on.as_deref() {
            None => None,
            Some("path") => Some(HashOn::Path),
            Some(h) => match h.split_once(':') {
                Some(("header", n)) if !n.is_empty() => {
                    Some(HashOn::Header(n.trim().to_ascii_lowercase()))
                }
                Some(("cookie", n)) if !n.is_empty() => Some(HashOn::Cookie(n.trim().into())),
                _ => {
                    return Err(invalid(
                        at,
                        object(),
                        format!("hash_on {h:?}: \"path\", \"header:NAME\" or \"cookie:NAME\""),
                    ))
                }
            },
        };
        let algorithm = match fp.algorithm.as_deref().unwrap_or("round-robin") {
            "round-robin" => Algorithm::RoundRobin,
            "weighted" => Algorithm::Weighted,
            "least-connections" => Algorithm::LeastConnections,
            "least-time" => Algorithm::LeastTime,
            "random" => Algorithm::Random,
            "ip-hash" => Algorithm::IpHash,
            "hash" => match &hash_on {
                Some(on) => Algorithm::Hash(on.clone()),
                None => {
                    return Err(invalid(
                        at,
                        object(),
                        "algorithm \"hash\" needs hash_on".into(),
                    ))
                }
            },
            other => {
                return Err(invalid(
                    at,
                    object(),
                    format!(
                        "algorithm {other:?}: round-robin, weighted, least-connections, least-time, random, ip-hash or hash"
                    ),
                ))
            }
        };
        if hash_on.is_some() && !matches!(algorithm, Algorithm::Hash(_)) {
            return Err(invalid(
                at,
                object(),
                "hash_on applies to algorithm = \"hash\" only".into(),
            ));
        }
        let start_up = match (fp.start.as_deref(), check) {
            (None, Some((Some(_), _))) | (Some("unknown"), _) => false,
            (None, _) | (Some("up"), _) => true,
            (Some(other), _) => {
                return Err(invalid(
                    at,
                    object(),
                    format!("start {other:?}: \"unknown\" (wait for the first probe) or \"up\""),
                ))
            }
        };
        let sticky = match &fp.sticky {
            None => None,
            Some(s) => Some(sticky(s, base).map_err(|m| invalid(at, object(), m))?),
        };
        let connect_timeout = duration(&fp.connect_timeout, Duration::from_secs(3))
            .map_err(|m| invalid(at, object(), format!("connect_timeout: {m}")))?;
        let idle_timeout = duration(&fp.idle_timeout, Duration::from_secs(60))
            .map_err(|m| invalid(at, object(), format!("idle_timeout: {m}")))?;
        let eject_for = duration(&fp.eject_for, Duration::from_secs(5))
            .map_err(|m| invalid(at, object(), format!("eject_for: {m}")))?;
        let retry_budget_percent = match fp.retry_budget.as_deref() {
            None => 20,
            Some(b) => b
                .trim_end_matches('%')
                .parse::<u32>()
                .ok()
                .filter(|v| *v <= 100)
                .ok_or_else(|| {
                    invalid(
                        at,
                        object(),
                        format!("retry_budget {b:?} must be a percentage from 0% to 100%"),
                    )
                })?,
        };
        let send_proxy = match fp.proxy_protocol.as_deref() {
            None => None,
            Some("v1") => Some(ProxyVersion::V1),
            Some("v2") => Some(ProxyVersion::V2),
            Some(other) => {
                return Err(invalid(
                    at,
                    object(),
                    format!("proxy_protocol {other:?}: \"v1\" or \"v2\""),
                ))
            }
        };
        let protocol = match (fp.protocol.as_deref(), fp.tls.is_some()) {
            (None | Some("http/1.1"), _) => UpstreamProtocol::Http1,
            (Some("h2"), true) | (Some("h2c"), false) => UpstreamProtocol::Http2,
            (Some("h2"), false) => {
                return Err(invalid(
                    at,
                    object(),
                    "protocol \"h2\" is HTTP/2 over TLS and needs a tls table; \"h2c\" is HTTP/2 in the clear".into(),
                ))
            }
            (Some("h2c"), true) => {
                return Err(invalid(
                    at,
                    object(),
                    "protocol \"h2c\" is HTTP/2 in the clear; over TLS it is \"h2\"".into(),
                ))
            }
            (Some(other), _) => {
                return Err(invalid(
                    at,
                    object(),
                    format!("protocol {other:?}: \"http/1.1\", \"h2\" (over TLS) or \"h2c\""),
                ))
            }
        };
        pool_index.insert(name.as_str(), pools.len());
        pools.push(Pool {
            name: name.clone(),
            members,
            safety: DrainSafety {
                min_usable: 1,
                min_weight_percent: 0,
            },
        });
        pool_settings.push(PoolSettings {
            algorithm,
            start_up,
            host: fp.host.clone(),
            sticky,
            connect_timeout,
            idle_per_server: fp.idle_per_server.unwrap_or(256),
            idle_timeout,
            eject_after: fp.eject_after.unwrap_or(5),
            eject_for,
            retry_budget_percent,
            retry_body_limit: fp.retry_body_limit.unwrap_or(64 * 1024),
            tls: match &fp.tls {
                None => None,
                Some(t) => {
                    let tls = UpstreamTls {
                        verify: t.verify.unwrap_or(true),
                        ca_file: t.ca_file.as_ref().map(|f| base.join(f)),
                        server_name: t.server_name.clone(),
                    };
                    if !tls.verify && tls.ca_file.is_some() {
                        return Err(invalid(
                            at,
                            object(),
                            "tls: ca_file needs verify = true".into(),
                        ));
                    }
                    if let Some(n) = &tls.server_name {
                        if rustls::pki_types::ServerName::try_from(n.as_str()).is_err() {
                            return Err(invalid(
                                at,
                                object(),
                                format!("tls: server_name {n:?} is not a name"),
                            ));
                        }
                    }
                    crate::tls::client_config(tls.verify, tls.ca_file.as_deref())
                        .map_err(|e| invalid(at, object(), format!("tls: {e}")))?;
                    Some(tls)
                }
            },
            protocol,
            send_proxy,
            max_in_flight: match fp.max_in_flight {
                Some(0) => {
                    return Err(invalid(
                        at,
                        object(),
                        "max_in_flight 0 would send nothing".into(),
                    ))
                }
                n => n,
            },
            queue_timeout: duration(&fp.queue_timeout, Duration::from_secs(5))
                .map_err(|m| invalid(at, object(), format!("queue_timeout: {m}")))?,
        });
    }

    for (listener, l) in listeners.iter_mut().zip(&parsed.listener) {
        listener.mode = listener_mode(l.get_ref(), &pool_index, &pool_settings).map_err(|m| {
            invalid(
                l.span().start,
                Object::Listener(l.get_ref().address.clone()),
                m,
            )
        })?;
        if listener.tls.is_some() && listener.mode != ListenerMode::Http {
            return Err(invalid(
                l.span().start,
                Object::Listener(l.get_ref().address.clone()),
                "a tcp listener forwards TLS untouched (route it with server_names); tls terminates it on an http listener".into(),
            ));
        }
    }
    let serves_http = listeners.iter().any(|l| l.mode == ListenerMode::Http);

    if parsed.route.is_empty() && serves_http {
        return Err(invalid(
            0,
            Object::Setting("route"),
            "no [[route]] configured".into(),
        ));
    }
    let mut routes = Vec::new();
    for (i, r) in parsed.route.iter().enumerate() {
        let at = r.span().start;
        let object = || Object::Route(i + 1);
        let fr = r.get_ref();
        let pool = *pool_index
            .get(fr.pool.as_str())
            .ok_or_else(|| invalid(at, object(), format!("unknown pool {:?}", fr.pool)))?;
        if pool_settings[pool].send_proxy.is_some() {
            return Err(invalid(
                at,
                object(),
                format!(
                    "pool {:?} sends a PROXY protocol header, which only tcp listeners send",
                    fr.pool
                ),
            ));
        }
        if let Some(p) = &fr.path_prefix {
            if !p.starts_with('/') {
                return Err(invalid(
                    at,
                    object(),
                    format!("path_prefix {p:?} must start with '/'"),
                ));
            }
        }
        let methods: Vec<String> = fr
            .method
            .iter()
            .flatten()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        if let Some(m) = methods
            .iter()
            .find(|m| http::Method::from_bytes(m.as_bytes()).is_err())
        {
            return Err(invalid(
                at,
                object(),
                format!("method {m:?} is not a method"),
            ));
        }
        type Fields = Vec<(http::HeaderName, http::HeaderValue)>;
        let header_pairs = |map: &Option<BTreeMap<String, String>>| -> Result<Fields, ConfigError> {
            map.iter()
                .flatten()
                .map(|(k, v)| {
                    match (
                        http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
                        http::HeaderValue::from_str(v),
                    ) {
                        (Ok(name), Ok(value)) => Ok((name, value)),
                        _ => Err(invalid(
                            at,
                            object(),
                            format!("header {k:?}: {v:?} cannot be sent"),
                        )),
                    }
                })
                .collect()
        };
        routes.push(Route {
            host: fr.host.as_ref().map(|h| h.to_ascii_lowercase()),
            path_prefix: fr.path_prefix.clone(),
            path_suffix: fr.path_suffix.clone().unwrap_or_default(),
            header: fr
                .header
                .as_ref()
                .map(|h| (h.name.to_ascii_lowercase(), h.value.clone())),
            methods,
            pool,
            timeout: duration(&fr.timeout, Duration::from_secs(60))
                .map_err(|m| invalid(at, object(), format!("timeout: {m}")))?,
            set_request_headers: header_pairs(&fr.set_request_headers)?,
            set_response_headers: header_pairs(&fr.set_response_headers)?,
            error_page: match &fr.error_page {
                None => None,
                Some(f) => Some(std::sync::Arc::new(
                    std::fs::read(base.join(f))
                        .map_err(|e| invalid(at, object(), format!("error_page {f:?}: {e}")))?,
                )),
            },
            access: access_rules(&fr.allow, &fr.deny).map_err(|m| invalid(at, object(), m))?,
            max_body: fr.max_body.or(section.max_body),
            cache: route_cache(fr.cache.as_ref()).map_err(|m| invalid(at, object(), m))?,
            compress: route_compress(fr.compress.as_ref()),
            line: line_of(text, at),
        });
    }

    let demo_responders = match &parsed.demo {
        None => Vec::new(),
        Some(d) => d
            .get_ref()
            .responders
            .iter()
            .map(|a| {
                a.parse::<SocketAddr>()
                    .ok()
                    .filter(|s| s.ip().is_loopback())
                    .ok_or_else(|| {
                        invalid(
                            d.span().start,
                            Object::Setting("demo.responders"),
                            format!("{a:?} must be a loopback ADDRESS:PORT"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
    };

    let limits = match &parsed.limits {
        None => ClientLimits::default(),
        Some(l) => client_limits(l.get_ref())
            .map_err(|(key, m)| invalid(l.span().start, Object::Setting(key), m))?,
    };

    Ok(SiteConfig {
        file: file.to_path_buf(),
        listeners,
        routes,
        pools,
        pool_settings,
        probes,
        control,
        report,
        drain_timeout,
        header_timeout,
        send_timeout,
        body_timeout,
        body_min_rate: section.body_min_rate,
        h2_max_streams,
        rtt_networks,
        max_headers,
        max_header_bytes,
        trusted_proxies,
        request_id_header,
        access_log,
        hide_headers,
        access_log_file: section.access_log_file.as_ref().map(|f| base.join(f)),
        workers,
        demo_responders,
        limits,
        cache_memory: section.cache_memory.unwrap_or(DEFAULT_CACHE_MEMORY),
        cache_tag_header,
        purge_allow,
        cache_disk: section
            .cache_disk
            .as_ref()
            .map(|d| (base.join(d), section.cache_disk_size.unwrap_or(1 << 30))),
    })
}
