//! The site proxy (`meridian proxy`): an HTTP/1.1 and h2 reverse proxy for one site that
//! spreads requests over the site's servers, keeps sessions sticky, hides the servers and
//! takes them out when their checks fail.
//!
//! Request path: accept -> HTTP/1.x ([`h1::server`]) or h2 (hyper, [`streams`]) ->
//! [`forward::handle`]: framing checks -> [`route`]
//! -> sticky cookie or source address -> [`upstream::PoolState::choose`] (the shared health
//! and drain step, then the pool's [`algorithm`]) -> a pooled upstream connection -> retry on
//! another server while safe -> response headers cleaned -> access log.
//!
//! Health comes from the DNS side's probers and tracker ([`crate::health`]) into an in-memory
//! health store; pools are the decision core's [`crate::balance::Pool`]s. A reload (SIGHUP)
//! swaps the whole [`Running`] config: a request in flight finishes on the one it loaded.
//!
//! # Layout
//! - [`accept`]: a listener's accept loop, and one client connection served: PROXY header,
//!   limits, then bytes forwarded (TCP listeners) or the TLS handshake and HTTP.
//! - [`algorithm`]: the balancing algorithms behind one small trait.
//! - [`upstream`]: a pool at run time (in-flight counts, latency), the shared step that says
//!   which servers may be used.
//! - [`route`]: matching a request to a route.
//! - [`sticky`]: the signed server cookie.
//! - [`forward`]: one request, end to end.
//! - [`body`]: request and response bodies on their way through (streamed, held, counted).
//! - [`cache`]: stored responses (RFC 9111), looked up before a server is chosen.
//! - [`compress`]: zstd, brotli and gzip for the routes that ask, streamed chunk by chunk.
//! - [`revalidate`]: `stale-while-revalidate`'s background requests.
//! - [`headers`]: hop-by-hop fields, forwarding headers, the client behind trusted proxies.
//! - [`connections`]: connections to a pool's servers (HTTP/1.1 kept alive, or HTTP/2), kept
//!   idle per server between requests.
//! - [`h1`]: HTTP/1.1 both ways, each exchange run by the task that needs it: to servers, and
//!   from clients ([`h1::server`], one loop per connection).
//! - [`tcp`]: TCP streams that write with the socket calls (`send`, `sendmsg`), and short
//!   writes grouped with the other connections'.
//! - [`guard`]: limits per client network (connections, request rate) and the refusal log.
//! - [`resets`]: h2 streams a client cancels before their answers (rapid reset).
//! - [`streams`]: h2 streams run inside their connection's task, not a task each.
//! - [`framing`]: how an HTTP/1.x request head frames its body, and the forms refused as
//!   request smuggling.
//! - [`l4`]: TCP listeners: bytes forwarded to a pool's server, TLS passed through by SNI.
//! - [`proxy_header`]: the PROXY protocol, read from trusted proxies and sent to servers.
//! - [`drain`]: retiring client connections on reload and shutdown.
//! - [`demo`]: the built-in responders of the demo site.
//! - [`control`]: the loopback control endpoint (status, overrides, metrics, load report).
//! - [`report`]: the counters, the latency histogram and the load report's window.
//! - [`rtt`]: client connections' round-trip times per client network, for latency steering.
//! - [`access`]: the access log's lines and where they go (the process log or a file).

pub mod accept;
pub mod access;
pub mod algorithm;
pub mod body;
pub mod cache;
pub mod compress;
pub mod connections;
pub mod control;
pub mod demo;
pub mod drain;
pub mod forward;
pub mod framing;
pub mod guard;
pub mod h1;
pub mod headers;
pub mod l4;
pub mod proxy_header;
pub mod report;
pub mod resets;
pub mod revalidate;
pub mod route;
pub mod rtt;
pub mod sticky;
pub mod streams;
pub mod tcp;
pub mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use crate::config::{load_site, SiteConfig, SiteSource, Sticky};
use crate::health::{HealthStore, ProbeSet};
use crate::tls;
use drain::Drain;
use upstream::PoolState;

/// A proxy failure that stops it from starting.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the health checks: {0}")]
    Probes(#[from] crate::health::ProbeError),
    #[error("TLS: {0}")]
    Tls(crate::tls::TlsError),
    #[error("cannot open the cache directory {dir}: {source}")]
    CacheDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the access log {file}: {source}")]
    AccessLog {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How often the config file is checked for a change.
const FILE_POLL: Duration = Duration::from_secs(1);

/// A file's modification time and length, to notice a change.
fn file_stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// How often certificate files are checked for a change.
const CERT_POLL: Duration = Duration::from_secs(2);

/// A TLS listener's (certificate, key) files, the resolver that serves them, and the files'
/// times when they were read.
type WatchedCerts = (
    Vec<(PathBuf, PathBuf)>,
    Arc<tls::Resolver>,
    Vec<Option<std::time::SystemTime>>,
);

fn cert_stamps(pairs: &[(PathBuf, PathBuf)]) -> Vec<Option<std::time::SystemTime>> {
    let files: Vec<&std::path::Path> = pairs
        .iter()
        .flat_map(|(c, k)| [c.as_path(), k.as_path()])
        .collect();
    tls::stamps(&files)
}

/// [`tls_acceptor`], its certificate files added to those watched for changes (stamped
/// before they are read, so a change from then on is noticed).
fn watched_acceptor(
    t: &crate::config::TlsSettings,
    watched: &mut Vec<WatchedCerts>,
) -> Result<tokio_rustls::TlsAcceptor, ProxyError> {
    let stamped = cert_stamps(&t.certificates);
    let (acceptor, resolver) = tls_acceptor(t)?;
    watched.push((t.certificates.clone(), resolver, stamped));
    Ok(acceptor)
}

/// TLS termination as `t` configures it: the acceptor, and the resolver that serves its
/// certificates (replaced when their files change).
fn tls_acceptor(
    t: &crate::config::TlsSettings,
) -> Result<(tokio_rustls::TlsAcceptor, Arc<tls::Resolver>), ProxyError> {
    let certs = tls::Certificates::load(&t.certificates).map_err(ProxyError::Tls)?;
    let resolver: Arc<tls::Resolver> = certs.into();
    let config = tls::server_config(resolver.clone(), t.client_ca.as_deref(), t.resumption)
        .map_err(ProxyError::Tls)?;
    Ok((tokio_rustls::TlsAcceptor::from(config), resolver))
}

/// Reloads a listener's certificates when their files change; a pair that no longer loads
/// leaves the old ones serving, and says why.
async fn watch_certificates(mut listeners: Vec<WatchedCerts>) {
    loop {
        tokio::time::sleep(CERT_POLL).await;
        for (pairs, resolver, seen) in &mut listeners {
            let now = cert_stamps(pairs);
            if now == *seen {
                continue;
            }
            *seen = now;
            match tls::Certificates::load(pairs) {
                Ok(certs) => {
                    resolver.replace(certs);
                    tracing::info!("certificates reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "new certificates refused; the old ones keep serving")
                }
            }
        }
    }
}

/// A site config as served: the config and the run-time state of its pools.
pub struct Running {
    pub site: SiteConfig,
    /// Per pool: counters, cursor and algorithm.
    pub pools: Vec<Arc<PoolState>>,
    /// Per pool: connections to its servers, kept idle between requests.
    pub connections: Vec<Arc<connections::Connections>>,
    /// Per pool with a sticky cookie: its signer.
    signers: Vec<Option<sticky::Signer>>,
    /// Per pool: each server's cookie tag (a hash of its identity).
    tags: Vec<Vec<u64>>,
    /// Per pool with a sticky cookie: each server's `Set-Cookie` value, signed once here
    /// (the value depends only on the server and the key).
    set_cookies: Vec<Vec<http::HeaderValue>>,
    /// The request ID header's name.
    pub request_id_header: http::HeaderName,
    /// Response headers removed before the client sees them.
    hide_headers: Vec<http::HeaderName>,
    /// The request rate per client network, when limited.
    pub rate: Option<Arc<guard::RateLimit>>,
    /// Whether some access rule or limit depends on who a request's client is, so it must be
    /// worked out (behind trusted proxies, from `X-Forwarded-For`) rather than taken as the
    /// connection's peer.
    pub(crate) client_matters: bool,
}

impl Running {
    /// Builds the run-time state of `site`; `process_key` signs sticky cookies of pools that
    /// configure no key. A rate limiter with the same rate as `before`'s is carried over, so
    /// a reload forgets no client.
    pub fn new(site: SiteConfig, process_key: &[u8], before: Option<&Running>) -> Running {
        let pools = site
            .pools
            .iter()
            .zip(&site.pool_settings)
            .enumerate()
            .map(|(i, (p, s))| Arc::new(PoolState::new(i, p, s)))
            .collect();
        let connections = site
            .pools
            .iter()
            .zip(&site.pool_settings)
            .map(|(p, s)| connections::Connections::new(p.members.len(), s))
            .collect();
        let signers: Vec<Option<sticky::Signer>> = site
            .pool_settings
            .iter()
            .map(|s| match &s.sticky {
                Some(Sticky::Cookie(c)) => {
                    Some(sticky::Signer::new(c.key.as_deref().unwrap_or(process_key)))
                }
                _ => None,
            })
            .collect();
        let tags: Vec<Vec<u64>> = site
            .pools
            .iter()
            .map(|p| {
                p.members
                    .iter()
                    .map(|m| algorithm::hash_bytes(m.id.0.as_bytes()))
                    .collect()
            })
            .collect();
        let set_cookies = site
            .pool_settings
            .iter()
            .zip(&signers)
            .zip(&tags)
            .map(|((s, signer), tags)| match (&s.sticky, signer) {
                (Some(Sticky::Cookie(c)), Some(signer)) => tags
                    .iter()
                    .filter_map(|&t| {
                        http::HeaderValue::try_from(sticky::set_cookie(c, &signer.value(t))).ok()
                    })
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        // Checked at load, so the fallback is never taken.
        let request_id_header = http::HeaderName::from_bytes(site.request_id_header.as_bytes())
            .unwrap_or(http::HeaderName::from_static("x-request-id"));
        let hide_headers = site
            .hide_headers
            .iter()
            .filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        let rate = site.limits.rate.map(|r| {
            let quota = governor::Quota::with_period(r.period / r.count.get())
                .unwrap_or(governor::Quota::per_second(r.count))
                .allow_burst(r.burst);
            let cap = std::num::NonZeroUsize::new(site.limits.max_clients)
                .unwrap_or(std::num::NonZeroUsize::MIN);
            before
                .and_then(|b| b.rate.clone())
                .filter(|old| old.quota == quota && old.cap == cap)
                .unwrap_or_else(|| Arc::new(guard::RateLimit::new(quota, cap)))
        });
        let client_matters = site.listeners.iter().any(|l| !l.access.is_empty())
            || site.routes.iter().any(|r| !r.access.is_empty())
            || rate.is_some();
        Running {
            site,
            pools,
            connections,
            signers,
            tags,
            set_cookies,
            request_id_header,
            hide_headers,
            rate,
            client_matters,
        }
    }

    /// Each pool with its settings and run-time state.
    pub fn pools_with_state(
        &self,
    ) -> impl Iterator<
        Item = (
            &crate::balance::Pool,
            &crate::config::PoolSettings,
            &PoolState,
        ),
    > {
        self.site
            .pools
            .iter()
            .zip(&self.site.pool_settings)
            .zip(&self.pools)
            .map(|((pool, settings), state)| (pool, settings, &**state))
    }

    /// Whether `ip` is a trusted proxy (its forwarding headers are kept).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.site.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    fn server_by_tag(&self, pool: usize, tag: u64) -> Option<usize> {
        self.tags[pool].iter().position(|&t| t == tag)
    }

    /// The `Set-Cookie` value pinning a client to `server` of a sticky-cookie pool.
    fn set_cookie(&self, pool: usize, server: usize) -> Option<&http::HeaderValue> {
        self.set_cookies[pool].get(server)
    }
}

/// What every connection shares.
pub struct Shared {
    /// Swapped whole on reload.
    pub current: ArcSwap<Running>,
    pub health: Arc<HealthStore>,
    /// The open connections and the generation that retires them.
    drain: Arc<Drain>,
    /// Counters for the process's lifetime.
    pub stats: report::Stats,
    /// One-second samples of `stats`, for the load report.
    window: report::Window,
    /// When each drained server was drained, for its sticky sessions' grace time.
    drained_at:
        std::sync::Mutex<std::collections::HashMap<crate::health::MemberId, std::time::Instant>>,
    /// The proxy's own responses by status (no route, no server, ...).
    local: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
    /// Signs sticky cookies of pools without a configured key (random per process).
    process_key: [u8; 32],
    /// Where access log lines go.
    pub access: access::Sink,
    /// Connections open per client network.
    pub open: Arc<guard::OpenConnections>,
    /// Clients turned away, by reason.
    pub refusals: guard::Refusals,
    /// Room for one more client connection in all, under `[limits] max_connections`.
    capacity: Option<Arc<tokio::sync::Semaphore>>,
    /// Round-trip times of client connections per client network, for latency steering.
    pub rtt: rtt::RttTable,
    /// Stored responses, for the routes that cache.
    pub cache: Arc<cache::Cache>,
}

impl Shared {
    /// Counts and logs a client that `scope`'s access rules refuse.
    fn deny(&self, scope: report::RuleScope, client: IpAddr) {
        self.stats.denied(scope);
        self.refusals.refuse(guard::Refusal::Denied, client);
    }

    /// How long `client` must wait when it is over its network's request rate under
    /// `running` (the refusal counted and logged); `None` when it may go on.
    fn over_rate(&self, running: &Running, client: IpAddr) -> Option<Duration> {
        let rate = running.rate.as_ref()?;
        let wait = rate
            .check(guard::client_key(client, &running.site.limits))
            .err()?;
        self.refusals.refuse(guard::Refusal::Rate, client);
        Some(wait)
    }

    /// Whether `member` is drained but its sticky sessions may still reach it: drained less
    /// than `grace` ago, and not down.
    fn in_drain_grace(
        &self,
        member: &crate::balance::Member,
        health: &crate::health::HealthSnapshot,
        grace: Duration,
    ) -> bool {
        use crate::health::{Admin, Health};
        if health.state(&member.id) != (Admin::Drained, Health::Up)
            && health.state(&member.id) != (Admin::Drained, Health::Unknown)
        {
            return false;
        }
        let drained = self.drained_at.lock().unwrap_or_else(|p| p.into_inner());
        drained
            .get(&member.id)
            .is_some_and(|at| at.elapsed() < grace)
    }

    /// Notes an override, for the drain grace time.
    fn overridden(&self, id: &crate::health::MemberId, admin: crate::health::Admin) {
        let mut drained = self.drained_at.lock().unwrap_or_else(|p| p.into_inner());
        match admin {
            crate::health::Admin::Drained => {
                drained.insert(id.clone(), std::time::Instant::now());
            }
            _ => {
                drained.remove(id);
            }
        }
    }
}

/// Runs the proxy for `source` until `shutdown` completes: binds every listener (printing
/// `listening proxy=ADDR,... control=-`), starts the demo responders and health checks, and
/// reloads on SIGHUP. On shutdown it stops accepting and lets requests in flight finish for
/// up to the config's `drain_timeout`.
pub async fn serve(
    source: SiteSource,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ProxyError> {
    // SIGHUP reloads from before the first line of output, so a reload asked for as soon as
    // the proxy says it listens is never taken for the default action (exit).
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
    // The config file as it was before it was read: a change from then on reloads it.
    let site_file = match &source {
        SiteSource::File(p) => Some(p.clone()),
        SiteSource::Demo { .. } => None,
    };
    let mut seen = site_file.as_deref().map(file_stamp);
    let site = load_site(&source)?;
    let access = access::Sink::default();
    if let Some(file) = &site.access_log_file {
        access
            .set(Some(file))
            .map_err(|source| ProxyError::AccessLog {
                file: file.clone(),
                source,
            })?;
    }
    let mut responders = Vec::new();
    for addr in &site.demo_responders {
        responders.push(
            demo::start(*addr)
                .await
                .map_err(|source| ProxyError::Bind {
                    addr: *addr,
                    source,
                })?,
        );
    }
    let mut listeners = Vec::new();
    let mut watched_certs = Vec::new();
    for listener in &site.listeners {
        let addr = listener.addr;
        let l = accept::bind(addr)
            .await
            .map_err(|source| ProxyError::Bind { addr, source })?;
        let tls = match &listener.tls {
            None => None,
            Some(t) => Some(watched_acceptor(t, &mut watched_certs)?),
        };
        listeners.push((l, tls));
    }
    let control = match site.control {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ProxyError::Bind { addr, source })?,
        ),
        None => None,
    };
    let report = match &site.report {
        None => None,
        Some(r) => {
            let listener = TcpListener::bind(r.addr)
                .await
                .map_err(|source| ProxyError::Bind {
                    addr: r.addr,
                    source,
                })?;
            let tls = match &r.tls {
                None => None,
                Some(t) => Some(watched_acceptor(t, &mut watched_certs)?),
            };
            Some((listener, tls, r.token.clone()))
        }
    };
    let shown = |l: Option<&TcpListener>| {
        l.and_then(|l| l.local_addr().ok())
            .map_or_else(|| "-".to_string(), |a| a.to_string())
    };
    let control_addr = shown(control.as_ref());
    let report_addr = shown(report.as_ref().map(|(l, _, _)| l));
    let bound: Vec<String> = listeners
        .iter()
        .filter_map(|(l, _)| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    println!(
        "listening proxy={} control={control_addr} report={report_addr}",
        bound.join(",")
    );
    tracing::info!(listeners = %bound.join(","), config = %site.file.display(), "proxy started");

    let health = Arc::new(HealthStore::in_memory());
    let mut probes = ProbeSet::start(site.probes.clone(), &Default::default(), health.clone())?;
    let drain_timeout = site.drain_timeout;
    let capacity = site
        .limits
        .max_connections
        .map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
    let process_key: [u8; 32] = rand::random();
    let rtt = rtt::RttTable::new(site.rtt_networks);
    let disk = site
        .cache_disk
        .as_ref()
        .map(|(dir, max)| (dir.as_path(), *max));
    let cache =
        cache::Cache::new(site.cache_memory, &site.cache_tag_header, disk).map_err(|source| {
            ProxyError::CacheDir {
                dir: site.cache_disk.clone().unwrap_or_default().0,
                source,
            }
        })?;
    let cache = Arc::new(cache);
    let shared = Arc::new(Shared {
        current: ArcSwap::from_pointee(Running::new(site, &process_key, None)),
        health: health.clone(),
        drain: Arc::new(Drain::default()),
        stats: report::Stats::default(),
        window: report::Window::default(),
        local: Default::default(),
        drained_at: Default::default(),
        process_key,
        access,
        open: Default::default(),
        refusals: Default::default(),
        capacity,
        rtt,
        cache,
    });

    let (stop, stopping) = tokio::sync::watch::channel(false);
    let drain = shared.drain.clone();
    drain.set_timeout(drain_timeout);
    let mut accepts = tokio::task::JoinSet::new();
    for (index, (l, tls)) in listeners.into_iter().enumerate() {
        accepts.spawn(accept::accept(
            (index, l),
            tls,
            shared.clone(),
            stopping.clone(),
            drain.clone(),
        ));
    }
    let cert_watch = tokio::spawn(watch_certificates(watched_certs));
    let control_task =
        control.map(|l| tokio::spawn(control::run(l, shared.clone(), stopping.clone())));
    let report_task = report.map(|(l, tls, token)| {
        tokio::spawn(control::report(
            l,
            tls,
            token,
            shared.clone(),
            stopping.clone(),
        ))
    });
    let ticker = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                shared.window.tick(&shared.stats);
            }
        })
    };

    let reloads = async {
        let mut hup = hup;
        let mut usr1 = usr1;
        let mut poll = tokio::time::interval(FILE_POLL);
        loop {
            tokio::select! {
                Some(_) = async { hup.as_mut()?.recv().await } => {
                    tracing::info!("SIGHUP: reloading");
                }
                Some(_) = async { usr1.as_mut()?.recv().await } => {
                    match shared.access.reopen() {
                        Ok(()) => tracing::info!("SIGUSR1: access log reopened"),
                        Err(e) => tracing::error!(error = %e, "SIGUSR1: the access log cannot be reopened; it keeps writing where it did"),
                    }
                    continue;
                }
                _ = poll.tick() => {
                    let Some(file) = site_file.as_deref() else { continue };
                    let now = file_stamp(file);
                    if Some(&now) == seen.as_ref() {
                        continue;
                    }
                    // Editors write in steps: wait until the file is quiet.
                    let mut settled = now;
                    loop {
                        tokio::time::sleep(FILE_POLL / 2).await;
                        let again = file_stamp(file);
                        if again == settled {
                            break;
                        }
                        settled = again;
                    }
                    seen = Some(settled);
                    tracing::info!("the config file changed: reloading");
                }
            }
            match load_site(&source) {
                Ok(site) => {
                    let before = &shared.current.load().site;
                    let bound = |s: &SiteConfig| {
                        s.listeners
                            .iter()
                            .map(|l| (l.addr, l.tls.clone()))
                            .collect::<Vec<_>>()
                    };
                    if bound(&site) != bound(before) || site.control != before.control {
                        tracing::warn!("listener and control addresses change only with a restart; the running ones stay");
                    }
                    if let Err(e) = shared.access.set(site.access_log_file.as_deref()) {
                        tracing::error!(error = %e, "reload refused: the access log cannot be opened; the running config stays");
                        continue;
                    }
                    drain.set_timeout(site.drain_timeout);
                    match ProbeSet::start(site.probes.clone(), &Default::default(), health.clone())
                    {
                        Ok(p) => probes = p,
                        Err(e) => {
                            tracing::error!(error = %e, "reload refused: the checks cannot start; the running config stays");
                            continue;
                        }
                    }
                    shared.current.store(Arc::new(Running::new(
                        site,
                        &shared.process_key,
                        Some(&shared.current.load()),
                    )));
                    // Connections opened before close once their request in hand is done:
                    // clients reconnect to the new config.
                    drain.close_open_connections();
                    tracing::info!("reloaded");
                }
                Err(e) => {
                    for m in e.messages() {
                        tracing::error!("reload refused, the running config stays: {m}");
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = shutdown => {}
        _ = reloads => {}
    }
    let _ = stop.send(true);
    while accepts.join_next().await.is_some() {}
    drain.close_open_connections();
    if !drain.all_closed(drain_timeout).await {
        tracing::warn!(after = ?drain_timeout, "requests still in flight were cut at the drain timeout");
    }
    probes.stop().await;
    cert_watch.abort();
    ticker.abort();
    for t in [control_task, report_task].into_iter().flatten() {
        let _ = t.await;
    }
    for r in responders {
        r.abort();
    }
    tracing::info!("proxy stopped");
    Ok(())
}
