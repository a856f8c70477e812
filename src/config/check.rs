//! A `[check.*]` table, shared by the DNS and site files: its kind (the probe it runs) and
//! its schedule and thresholds.

use super::*;

pub(super) fn check_kind(c: &FileCheck, file: &Path) -> Result<Option<ProbeKind>, String> {
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
    let base = file.parent().unwrap_or(Path::new("."));
    let kind = match c.kind.as_str() {
        "http" => Some(http(false)?),
        "https" => Some(http(true)?),
        "tcp" => Some(ProbeKind::Tcp),
        "proxy-load" => Some(proxy_load(c, base)?),
        "none" => None,
        other => {
            return Err(format!(
                "unknown kind {other:?} (http, https, tcp, proxy-load or none)"
            ))
        }
    };
    let tls_load = c.kind == "proxy-load" && c.tls == Some(true);
    if c.kind != "https" && !tls_load && (c.ca_file.is_some() || c.verify_tls.is_some()) {
        return Err(
            "ca_file and verify_tls apply to kind = \"https\" and to proxy-load with tls = true"
                .into(),
        );
    }
    if c.kind != "proxy-load" && (c.tls.is_some() || c.token_file.is_some()) {
        return Err("tls and token_file apply to kind = \"proxy-load\" only".into());
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

/// A `proxy-load` check: `GET /load` from a site proxy's report listener.
fn proxy_load(c: &FileCheck, base: &Path) -> Result<ProbeKind, String> {
    if c.path.is_some()
        || c.method.is_some()
        || c.expect_status.is_some()
        || c.body_contains.is_some()
    {
        return Err("a proxy-load check asks for /load and reads it; path, method, expect_status and body_contains do not apply".into());
    }
    let token = match &c.token_file {
        None => None,
        Some(f) => Some(
            std::fs::read_to_string(base.join(f))
                .map_err(|e| format!("token_file {f:?}: {e}"))?
                .trim()
                .to_string(),
        ),
    };
    Ok(ProbeKind::ProxyLoad {
        http: HttpCheck {
            tls: c.tls.unwrap_or(false),
            method: "GET".into(),
            path: "/load".into(),
            host: c.host.clone(),
            expect: vec![(200, 200)],
            body_contains: None,
            ca_file: c.ca_file.as_ref().map(|p| base.join(p)),
            insecure: c.verify_tls == Some(false),
        },
        token,
    })
}

pub(super) fn parse_status_ranges(text: &str) -> Result<Vec<(u16, u16)>, String> {
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
pub(super) struct Timing {
    pub(super) port: Option<u16>,
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
    pub(super) rise: u32,
    pub(super) fall: u32,
    pub(super) jitter_percent: u8,
}

impl Timing {
    /// The probe of `addr` with this schedule.
    pub(super) fn spec(&self, kind: ProbeKind, addr: SocketAddr) -> ProbeSpec {
        ProbeSpec {
            kind,
            addr,
            interval: self.interval,
            timeout: self.timeout,
            rise: self.rise,
            fall: self.fall,
            jitter_percent: self.jitter_percent,
        }
    }

    pub(super) fn of(c: &FileCheck) -> Result<Timing, String> {
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
