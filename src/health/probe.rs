//! Probers: one check each (HTTP, HTTPS, TCP), a raw outcome each time, no thresholds.

use super::*;

/// What to check, and how.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// A TCP connect that completes within the timeout.
    Tcp,
    Http(HttpCheck),
    /// A site proxy's load report (`GET /load` on its report listener, with the bearer token
    /// when given): down when the site has no healthy server.
    ProxyLoad {
        http: HttpCheck,
        token: Option<String>,
    },
}

/// An HTTP or HTTPS request and what its answer must look like.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpCheck {
    pub tls: bool,
    pub method: String,
    pub path: String,
    /// Host header and TLS server name; the probe address when absent.
    pub host: Option<String>,
    /// Inclusive status ranges that count as up.
    pub expect: Vec<(u16, u16)>,
    pub body_contains: Option<String>,
    /// Extra trust anchor (PEM) for HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification (only when configured explicitly).
    pub insecure: bool,
}

/// One probe task's full description; equal specs are probed once and shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub addr: SocketAddr,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Up to this share (in percent) of the interval is added or removed at random.
    pub jitter_percent: u8,
}

/// A boxed future, so probers can sit behind `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One check against one address, one raw outcome. Thresholds live in [`Tracker`] only.
pub trait Prober: Send + Sync {
    fn probe(&self) -> BoxFuture<'_, ProbeOutcome>;
}

/// Connects over TCP.
pub struct TcpProber {
    pub addr: SocketAddr,
    pub timeout: Duration,
}

impl Prober for TcpProber {
    fn probe(&self) -> BoxFuture<'_, ProbeOutcome> {
        Box::pin(async move {
            let start = tokio::time::Instant::now();
            match tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(self.addr))
                .await
            {
                Ok(Ok(_)) => ProbeOutcome::Up {
                    latency: start.elapsed(),
                    report: None,
                },
                Ok(Err(e)) => ProbeOutcome::Down {
                    reason: format!("connect: {e}"),
                },
                Err(_) => ProbeOutcome::Down {
                    reason: "connect timed out".into(),
                },
            }
        })
    }
}

/// Requests over HTTP or HTTPS with reqwest. The host name (if any) is pinned to the probe
/// address, so the system resolver is never asked, and no proxy from the environment is used.
pub struct HttpProber {
    client: reqwest::Client,
    url: String,
    /// Scheme and authority, for the other documents a site proxy serves.
    base: String,
    method: reqwest::Method,
    check: HttpCheck,
    /// Reading a site proxy's load report rather than judging status and body only.
    report: Option<LoadReading>,
}

/// The shortest time between two reads of a site proxy's round-trip times.
pub const RTT_READ_EVERY: Duration = Duration::from_secs(2);

/// How a prober reads a site proxy: with a bearer token, if any; and after each load report
/// the round-trip times (`/rtt`), all of them at first, then those sampled since the last
/// read (with a margin).
struct LoadReading {
    token: Option<String>,
    rtt_url: String,
    /// When the round trips were last asked for, and last read.
    last_rtt: Mutex<RttReads>,
}

#[derive(Default)]
struct RttReads {
    asked: Option<tokio::time::Instant>,
    read: Option<tokio::time::Instant>,
}

/// Why a probe could not be built from its spec.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot read CA file {0}: {1}")]
    CaFile(PathBuf, std::io::Error),
    #[error("CA file {0} holds no usable PEM certificate: {1}")]
    CaPem(PathBuf, reqwest::Error),
    #[error("bad HTTP method {0:?}")]
    Method(String),
    #[error("cannot build HTTP client: {0}")]
    Client(reqwest::Error),
}

impl HttpProber {
    pub fn new(spec: &ProbeSpec, check: &HttpCheck) -> Result<Self, ProbeError> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(spec.timeout)
            .connect_timeout(spec.timeout)
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("meridian-probe/", env!("CARGO_PKG_VERSION")));
        let scheme = if check.tls { "https" } else { "http" };
        let authority = match &check.host {
            Some(host) => {
                builder = builder.resolve(host, spec.addr);
                format!("{host}:{}", spec.addr.port())
            }
            None => spec.addr.to_string(),
        };
        if let Some(ca) = &check.ca_file {
            let pem = std::fs::read(ca).map_err(|e| ProbeError::CaFile(ca.clone(), e))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ProbeError::CaPem(ca.clone(), e))?;
            builder = builder.add_root_certificate(cert);
        }
        if check.insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let method = reqwest::Method::from_bytes(check.method.as_bytes())
            .map_err(|_| ProbeError::Method(check.method.clone()))?;
        Ok(HttpProber {
            client: builder.build().map_err(ProbeError::Client)?,
            url: format!("{scheme}://{authority}{}", check.path),
            base: format!("{scheme}://{authority}"),
            method,
            check: check.clone(),
            report: None,
        })
    }

    /// This prober reading a site proxy's load report, sending `token` as a bearer token.
    pub fn reading_load(mut self, token: Option<String>) -> Self {
        self.report = Some(LoadReading {
            token,
            rtt_url: format!("{}/rtt", self.base),
            last_rtt: Mutex::new(RttReads::default()),
        });
        self
    }

    /// The round-trip times a site proxy published since the last read (all at first); none
    /// when it publishes none or the read fails (the next read asks for everything again).
    async fn read_rtt(&self, reading: &LoadReading) -> Option<RttUpdate> {
        let now = tokio::time::Instant::now();
        let since = {
            let mut reads = reading.last_rtt.lock().unwrap_or_else(|p| p.into_inner());
            // Round trips change slowly, and each read that brings news publishes a snapshot
            // (emptying the plan caches): at most one request per RTT_READ_EVERY, also to a
            // proxy that does not answer it.
            if reads
                .asked
                .is_some_and(|at| now.duration_since(at) < RTT_READ_EVERY)
            {
                return None;
            }
            reads.asked = Some(now);
            reads.read
        };
        let url = match since {
            // Whole seconds, with a margin: overlapping reads only refresh what is known.
            Some(last) => format!(
                "{}?within={}",
                reading.rtt_url,
                now.duration_since(last).as_secs() + 2
            ),
            None => reading.rtt_url.clone(),
        };
        let mut request = self.client.get(url);
        if let Some(token) = &reading.token {
            request = request.bearer_auth(token);
        }
        let read = async {
            let resp = request.send().await.ok()?.error_for_status().ok()?;
            serde_json::from_slice::<RttReport>(&resp.bytes().await.ok()?).ok()
        };
        let report = read.await;
        reading
            .last_rtt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .read = report.as_ref().map(|_| now);
        report.map(|r| RttUpdate {
            whole: since.is_none(),
            networks: r.networks,
        })
    }
}

/// Reads a load report; an error when the body is not one or the site has no healthy server.
fn judge_report(body: &str) -> Result<LoadReport, String> {
    let report: LoadReport =
        serde_json::from_str(body).map_err(|e| format!("not a load report: {e}"))?;
    match report.healthy_servers {
        0 => Err(format!(
            "the site proxy has no healthy server (of {})",
            report.servers
        )),
        _ => Ok(report),
    }
}

impl Prober for HttpProber {
    fn probe(&self) -> BoxFuture<'_, ProbeOutcome> {
        Box::pin(async move {
            let start = tokio::time::Instant::now();
            let mut request = self.client.request(self.method.clone(), &self.url);
            if let Some(LoadReading {
                token: Some(token), ..
            }) = &self.report
            {
                request = request.bearer_auth(token);
            }
            let resp = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    return ProbeOutcome::Down {
                        reason: format!("request: {}", error_chain(&e)),
                    }
                }
            };
            let status = resp.status().as_u16();
            if !self
                .check
                .expect
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&status))
            {
                return ProbeOutcome::Down {
                    reason: format!("status {status}"),
                };
            }
            if let Some(reading) = &self.report {
                let load = match resp.text().await.map_err(|e| format!("body: {e}")) {
                    Ok(body) => match judge_report(&body) {
                        Ok(load) => load,
                        Err(reason) => return ProbeOutcome::Down { reason },
                    },
                    Err(reason) => return ProbeOutcome::Down { reason },
                };
                let latency = start.elapsed();
                let rtt = self.read_rtt(reading).await;
                return ProbeOutcome::Up {
                    latency,
                    report: Some(SiteReport { load, rtt }),
                };
            }
            if let Some(needle) = &self.check.body_contains {
                match resp.text().await {
                    Ok(body) if body.contains(needle.as_str()) => {}
                    Ok(_) => {
                        return ProbeOutcome::Down {
                            reason: format!("body lacks {needle:?}"),
                        }
                    }
                    Err(e) => {
                        return ProbeOutcome::Down {
                            reason: format!("body: {e}"),
                        }
                    }
                }
            }
            ProbeOutcome::Up {
                latency: start.elapsed(),
                report: None,
            }
        })
    }
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Builds the prober for a spec.
pub fn prober_for(spec: &ProbeSpec) -> Result<Box<dyn Prober>, ProbeError> {
    Ok(match &spec.kind {
        ProbeKind::Tcp => Box::new(TcpProber {
            addr: spec.addr,
            timeout: spec.timeout,
        }),
        ProbeKind::Http(check) => Box::new(HttpProber::new(spec, check)?),
        ProbeKind::ProxyLoad { http, token } => {
            Box::new(HttpProber::new(spec, http)?.reading_load(token.clone()))
        }
    })
}
