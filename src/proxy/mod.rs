//! The site proxy (`meridian proxy`): an HTTP/1.1 and h2 reverse proxy for one site that
//! spreads requests over the site's servers, keeps sessions sticky, hides the servers and
//! takes them out when their checks fail.
//!
//! Request path: accept -> hyper (h1/h2) -> [`forward::handle`]: framing checks -> [`route`]
//! -> sticky cookie or source address -> [`upstream::PoolState::choose`] (the shared health
//! and drain step, then the pool's [`algorithm`]) -> a pooled upstream connection -> retry on
//! another server while safe -> response headers cleaned -> access log.
//!
//! Health comes from the DNS side's probers and tracker ([`crate::health`]) into an in-memory
//! health store; pools are the decision core's [`crate::balance::Pool`]s. A reload (SIGHUP)
//! swaps the whole [`Running`] config: a request in flight finishes on the one it loaded.
//!
//! # Layout
//! - [`algorithm`]: the balancing algorithms behind one small trait.
//! - [`upstream`]: a pool at run time (in-flight counts, latency), the shared step that says
//!   which servers may be used.
//! - [`route`]: matching a request to a route.
//! - [`sticky`]: the signed server cookie.
//! - [`forward`]: one request, end to end.
//! - [`demo`]: the built-in responders of the demo site.

pub mod algorithm;
pub mod demo;
pub mod forward;
pub mod route;
pub mod sticky;
pub mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::config::{load_site, SiteConfig, SiteSource, Sticky};
use crate::health::{HealthStore, ProbeSet};
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
}

/// A site config as served: the config and the run-time state of its pools.
pub struct Running {
    pub site: SiteConfig,
    /// Per pool: counters, cursor and algorithm.
    pub pools: Vec<Arc<PoolState>>,
    /// Per pool: pooled keep-alive connections to its servers.
    clients: Vec<Client<hyper_util::client::legacy::connect::HttpConnector, forward::UpstreamBody>>,
    /// Per pool with a sticky cookie: its signer.
    signers: Vec<Option<sticky::Signer>>,
    /// Per pool: each server's cookie tag (a hash of its identity).
    tags: Vec<Vec<u64>>,
}

impl Running {
    /// Builds the run-time state of `site`; `process_key` signs sticky cookies of pools that
    /// configure no key.
    pub fn new(site: SiteConfig, process_key: &[u8]) -> Running {
        let pools = site
            .pools
            .iter()
            .zip(&site.pool_settings)
            .enumerate()
            .map(|(i, (p, s))| Arc::new(PoolState::new(i, p, s)))
            .collect();
        let clients = site
            .pool_settings
            .iter()
            .map(|s| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(s.idle_timeout)
                    .pool_max_idle_per_host(s.idle_per_server)
                    .pool_timer(hyper_util::rt::TokioTimer::new())
                    .build(forward::connector(s.connect_timeout))
            })
            .collect();
        let signers = site
            .pool_settings
            .iter()
            .map(|s| match &s.sticky {
                Some(Sticky::Cookie(c)) => {
                    Some(sticky::Signer::new(c.key.as_deref().unwrap_or(process_key)))
                }
                _ => None,
            })
            .collect();
        let tags = site
            .pools
            .iter()
            .map(|p| {
                p.members
                    .iter()
                    .map(|m| algorithm::hash_bytes(m.id.0.as_bytes()))
                    .collect()
            })
            .collect();
        Running {
            site,
            pools,
            clients,
            signers,
            tags,
        }
    }

    /// Whether `ip` is a trusted proxy (its forwarding headers are kept).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.site.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    fn server_by_tag(&self, pool: usize, tag: u64) -> Option<usize> {
        self.tags[pool].iter().position(|&t| t == tag)
    }

    fn tag_of(&self, pool: usize, server: usize) -> u64 {
        self.tags[pool][server]
    }
}

/// What every connection shares.
pub struct Shared {
    /// Swapped whole on reload.
    pub current: ArcSwap<Running>,
    pub health: Arc<HealthStore>,
    /// Signs sticky cookies of pools without a configured key (random per process).
    process_key: [u8; 32],
}

/// Runs the proxy for `source` until `shutdown` completes: binds every listener (printing
/// `listening proxy=ADDR,... control=-`), starts the demo responders and health checks, and
/// reloads on SIGHUP. On shutdown it stops accepting and lets requests in flight finish for
/// up to the config's `drain_timeout`.
pub async fn serve(
    source: SiteSource,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ProxyError> {
    let site = load_site(&source)?;
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
    for &addr in &site.listeners {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| ProxyError::Bind { addr, source })?;
        listeners.push(l);
    }
    let bound: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    println!("listening proxy={} control=-", bound.join(","));
    tracing::info!(listeners = %bound.join(","), config = %site.file.display(), "proxy started");

    let health = Arc::new(HealthStore::in_memory());
    let mut probes = ProbeSet::start(site.probes.clone(), health.clone())?;
    let drain = site.drain_timeout;
    let process_key: [u8; 32] = rand::random();
    let shared = Arc::new(Shared {
        current: ArcSwap::from_pointee(Running::new(site, &process_key)),
        health: health.clone(),
        process_key,
    });

    let (stop, stopping) = tokio::sync::watch::channel(false);
    let graceful = Arc::new(hyper_util::server::graceful::GracefulShutdown::new());
    let mut accepts = tokio::task::JoinSet::new();
    for l in listeners {
        accepts.spawn(accept(
            l,
            shared.clone(),
            stopping.clone(),
            graceful.clone(),
        ));
    }

    let reloads = async {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return std::future::pending().await;
        };
        loop {
            hup.recv().await;
            match load_site(&source) {
                Ok(site) => {
                    match ProbeSet::start(site.probes.clone(), health.clone()) {
                        Ok(p) => probes = p,
                        Err(e) => {
                            tracing::error!(error = %e, "reload refused: the checks cannot start; the running config stays");
                            continue;
                        }
                    }
                    shared
                        .current
                        .store(Arc::new(Running::new(site, &shared.process_key)));
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
    // Every accept loop has ended: this is the last handle.
    if let Ok(graceful) = Arc::try_unwrap(graceful) {
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(after = ?drain, "requests still in flight were cut at the drain timeout");
        }
    }
    probes.stop().await;
    for r in responders {
        r.abort();
    }
    tracing::info!("proxy stopped");
    Ok(())
}

/// Accepts connections on one listener until told to stop; each is served with h1 or h2
/// as the client speaks, and watched for a graceful shutdown.
async fn accept(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    graceful: Arc<hyper_util::server::graceful::GracefulShutdown>,
) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopping.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let conn = forward::Conn { peer, tls: false };
        let shared = shared.clone();
        let service =
            hyper::service::service_fn(move |req| forward::handle(shared.clone(), req, conn));
        let served = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let served = graceful.watch(served);
        tokio::spawn(async move {
            if let Err(e) = served.await {
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
            }
        });
    }
}
