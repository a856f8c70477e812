//! The site file's smaller tables, each turned into its part of the model: a listener's mode
//! (HTTP, or TCP with TLS passthrough routes), a `tls` table, the report listener, `[limits]`,
//! and a pool's `sticky` table.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use std::net::SocketAddr;

use super::{duration, LimitsFile, ListenerFile, ReportFile, StickyFile, TlsFile};
use crate::config::file::DurationValue;
use crate::config::site::*;

/// A listener's mode: HTTP, or TCP to a pool (and by server name to others); the pools a TCP
/// listener uses must not need a request to balance.
pub(super) fn listener_mode(
    l: &ListenerFile,
    pool_index: &HashMap<&str, usize>,
    settings: &[PoolSettings],
) -> Result<ListenerMode, String> {
    let tcp_only = l.pool.is_some()
        || l.server_names.is_some()
        || l.idle_timeout.is_some()
        || l.hello_timeout.is_some();
    match l.mode.as_deref().unwrap_or("http") {
        "http" if tcp_only => {
            Err("pool, server_names, idle_timeout and hello_timeout apply to mode = \"tcp\"; an http listener routes with [[route]]".into())
        }
        "http" => Ok(ListenerMode::Http),
        "tcp" => {
            let pool_of = |name: &str| -> Result<usize, String> {
                let pool = *pool_index
                    .get(name)
                    .ok_or_else(|| format!("unknown pool {name:?}"))?;
                let s = &settings[pool];
                if matches!(s.algorithm, Algorithm::Hash(_)) {
                    return Err(format!("pool {name:?} hashes a request property; a tcp listener has no requests (ip-hash keys on the client)"));
                }
                if matches!(s.sticky, Some(Sticky::Cookie(_))) {
                    return Err(format!("pool {name:?} is sticky by cookie; a tcp listener has no cookies (use mode = \"source-ip\")"));
                }
                if s.tls.is_some() || s.protocol != UpstreamProtocol::Http1 {
                    return Err(format!("pool {name:?} speaks HTTPS or HTTP/2 to its servers; a tcp listener forwards bytes as they are"));
                }
                Ok(pool)
            };
            let pool = pool_of(
                l.pool
                    .as_deref()
                    .ok_or("mode = \"tcp\" needs a pool")?,
            )?;
            let mut by_server_name = Vec::new();
            for n in l.server_names.iter().flatten() {
                let name = n.name.to_ascii_lowercase();
                let bare = name.strip_prefix("*.").unwrap_or(&name);
                if rustls::pki_types::DnsName::try_from(bare).is_err() {
                    return Err(format!("server name {:?} is not a DNS name", n.name));
                }
                by_server_name.push((name, pool_of(&n.pool)?));
            }
            Ok(ListenerMode::Tcp(TcpForward {
                pool,
                by_server_name,
                idle_timeout: duration(&l.idle_timeout, Duration::from_secs(600))
                    .map_err(|m| format!("idle_timeout: {m}"))?,
                hello_timeout: duration(&l.hello_timeout, Duration::from_secs(5))
                    .map_err(|m| format!("hello_timeout: {m}"))?,
            }))
        }
        other => Err(format!("mode {other:?}: \"http\" or \"tcp\"")),
    }
}

/// `[limits]`; an error names the key at fault.
pub(super) fn client_limits(l: &LimitsFile) -> Result<ClientLimits, (&'static str, String)> {
    let mut limits = ClientLimits::default();
    if let Some(p) = l.client_prefix_v4 {
        if p == 0 || p > 32 {
            return Err(("limits.client_prefix_v4", format!("{p}: 1 to 32")));
        }
        limits.prefix_v4 = p;
    }
    if let Some(p) = l.client_prefix_v6 {
        if p == 0 || p > 128 {
            return Err(("limits.client_prefix_v6", format!("{p}: 1 to 128")));
        }
        limits.prefix_v6 = p;
    }
    if let Some(n) = l.connections_per_client {
        if n == 0 {
            return Err((
                "limits.connections_per_client",
                "0 would refuse every client".into(),
            ));
        }
        limits.connections = Some(n);
    }
    if let Some(text) = &l.rate {
        let bad = || {
            (
                "limits.rate",
                format!("{text:?}: requests per second, minute or hour, as \"10/s\", \"600/m\" or \"1000/h\""),
            )
        };
        let (count, per) = text.split_once('/').ok_or_else(bad)?;
        let count = count
            .trim()
            .parse::<u32>()
            .ok()
            .and_then(std::num::NonZeroU32::new)
            .ok_or_else(bad)?;
        let period = match per.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let burst = match l.burst {
            None => count,
            Some(b) => std::num::NonZeroU32::new(b)
                .ok_or(("limits.burst", "0 would refuse every request".to_string()))?,
        };
        limits.rate = Some(RequestRate {
            count,
            period,
            burst,
        });
    } else if l.burst.is_some() {
        return Err(("limits.burst", "a burst needs a rate".into()));
    }
    if let Some(n) = l.max_clients {
        if n == 0 {
            return Err(("limits.max_clients", "needs room for one client".into()));
        }
        limits.max_clients = n;
    }
    if let Some(n) = l.max_connections {
        if n == 0 {
            return Err(("limits.max_connections", "0 would accept nothing".into()));
        }
        limits.max_connections = Some(n);
    }
    Ok(limits)
}

pub(super) fn sticky(s: &StickyFile, base: &Path) -> Result<Sticky, String> {
    let duration = |v: &Option<DurationValue>| v.as_ref().map(DurationValue::get).transpose();
    match s.mode.as_deref().unwrap_or("cookie") {
        "source-ip" => {
            if s.cookie.is_some() || s.key.is_some() || s.key_file.is_some() {
                return Err("sticky: cookie, key and key_file apply to mode = \"cookie\"".into());
            }
            Ok(Sticky::SourceIp)
        }
        "cookie" => {
            let key = match (&s.key, &s.key_file) {
                (Some(k), None) => Some(k.as_bytes().to_vec()),
                (None, Some(f)) => Some(
                    std::fs::read(base.join(f))
                        .map_err(|e| format!("sticky key_file {f:?}: {e}"))?
                        .trim_ascii()
                        .to_vec(),
                ),
                (None, None) => None,
                (Some(_), Some(_)) => return Err("sticky: give key or key_file, not both".into()),
            };
            if key.as_ref().is_some_and(|k| k.len() < 16) {
                return Err("sticky: the key must be at least 16 bytes".into());
            }
            let same_site = match s.same_site.as_deref() {
                None => None,
                Some(v @ ("Strict" | "Lax" | "None")) => Some(v.to_string()),
                Some(other) => {
                    return Err(format!("sticky same_site {other:?}: Strict, Lax or None"))
                }
            };
            let name = s.cookie.clone().unwrap_or_else(|| "mrd_srv".into());
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                return Err(format!(
                    "sticky cookie name {name:?}: letters, digits, '-' and '_' only"
                ));
            }
            Ok(Sticky::Cookie(StickyCookie {
                name,
                max_age: duration(&s.max_age).map_err(|m| format!("sticky max_age: {m}"))?,
                secure: s.secure.unwrap_or(false),
                http_only: s.http_only.unwrap_or(true),
                same_site,
                key,
                drain_grace: duration(&s.drain_grace)
                    .map_err(|m| format!("sticky drain_grace: {m}"))?
                    .unwrap_or(Duration::from_secs(60)),
            }))
        }
        other => Err(format!("sticky mode {other:?}: cookie or source-ip")),
    }
}

/// A `tls` table, its files read now so `check` and a reload catch a broken pair.
pub(super) fn tls_settings(t: &TlsFile, base: &Path) -> Result<TlsSettings, String> {
    let settings = TlsSettings {
        certificates: t
            .certificates
            .iter()
            .map(|c| (base.join(&c.cert), base.join(&c.key)))
            .collect(),
        client_ca: t.client_ca.as_ref().map(|c| base.join(c)),
        resumption: t.resumption.unwrap_or(true),
    };
    if settings.certificates.is_empty() {
        return Err("tls needs at least one certificate".into());
    }
    crate::tls::Certificates::load(&settings.certificates)
        .and_then(|certs| {
            crate::tls::server_config(
                certs.into(),
                settings.client_ca.as_deref(),
                settings.resumption,
            )
        })
        .map_err(|e| e.to_string())?;
    Ok(settings)
}

/// `[proxy] report`: off loopback it must be TLS, and callers must prove themselves (a token,
/// or a client certificate).
pub(super) fn report_listener(r: &ReportFile, base: &Path) -> Result<ReportListener, String> {
    let addr = r
        .address
        .parse::<SocketAddr>()
        .map_err(|e| format!("address {:?}: {e}", r.address))?;
    let token = match &r.token_file {
        None => None,
        Some(f) => {
            let token = std::fs::read(base.join(f))
                .map_err(|e| format!("token_file {f:?}: {e}"))?
                .trim_ascii()
                .to_vec();
            if token.len() < 16 {
                return Err(format!(
                    "token_file {f:?}: the token must be at least 16 bytes"
                ));
            }
            Some(token)
        }
    };
    let tls = r.tls.as_ref().map(|t| tls_settings(t, base)).transpose()?;
    if !addr.ip().is_loopback() {
        let proven = token.is_some() || tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if tls.is_none() || !proven {
            return Err(
                "off loopback the report needs tls and a token_file or tls.client_ca".into(),
            );
        }
    }
    Ok(ReportListener { addr, token, tls })
}
