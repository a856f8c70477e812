//! Start-up of a running node: loads the config, opens the state store, starts probes, binds
//! DNS and the control endpoint, and reloads (through [`crate::node`]) on SIGHUP or when a
//! config file changes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{ConfigError, Source};
use crate::dns::{DnsServer, Loaded, Responder};
use crate::health::{HealthStore, ProbeError, ProbeSet};
use crate::node::{
    announce, check_serials, load, report_orphans, report_warnings, report_zones, Node, NodeParts,
};
use crate::state::{Opened, StateError, Store};

pub use crate::node::{check, Overrides};

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("probe setup: {0}")]
    Probe(#[from] ProbeError),
    #[error("cannot bind DNS on {0}: {1}")]
    BindDns(String, std::io::Error),
    #[error("cannot bind the control endpoint on {0}: {1}")]
    BindControl(SocketAddr, std::io::Error),
    #[error("{}", crate::node::control_unprotected(*.0))]
    ControlUnprotected(SocketAddr),
}

fn node_token_missing(responder: &Responder) -> bool {
    responder
        .current
        .load()
        .config
        .server
        .control_token
        .is_none()
}

/// Runs `serve` until `shutdown` completes. Prints `listening dns=... control=...` once bound.
pub async fn serve(
    source: Source,
    overrides: Overrides,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let cfg = load(&source, &overrides)?;
    let stamps = stamp(&cfg.sources);
    report_warnings(&cfg);
    report_zones(&cfg, None);
    let (store, state_lost) = match Store::open(&cfg.server.state_dir)? {
        Opened::Clean(s) => (s, None),
        Opened::Recreated {
            store,
            moved_to,
            error,
        } => {
            tracing::error!(
                %error,
                moved_to = %moved_to.display(),
                "STATE STORE COULD NOT BE OPENED: moved aside, starting with no remembered health or overrides"
            );
            let lost = format!(
                "the state store could not be opened ({error}) and was moved aside to {}: drains, overrides and remembered health were lost",
                moved_to.display()
            );
            (store, Some(lost))
        }
        Opened::Emptied { store, path } => {
            tracing::error!(
                store = %path.display(),
                "STATE STORE OPENED EMPTY although this node wrote it before (its files were removed or damaged, or its snapshot is missing): starting with no remembered health or overrides"
            );
            let lost = format!(
                "the state store at {} opened empty although this node wrote it before: drains, overrides and remembered health were lost",
                path.display()
            );
            (store, Some(lost))
        }
    };
    let health = Arc::new(HealthStore::new(
        store.load(),
        Some(Box::new(store.clone())),
    ));
    report_orphans(&cfg, &health);
    check_serials(&cfg, &store)?;
    let probe_specs = cfg.probes.clone();
    let steering = cfg.steering.clone();
    let listen = cfg.server.listen.clone();
    let workers = cfg.server.udp_workers;
    let control_addr = cfg.server.control;
    let responder = Arc::new(Responder::new(
        Loaded::new(cfg, 1).with_explainer(crate::explain::in_band),
        health.clone(),
    ));
    let dns = DnsServer::bind(&listen, workers, responder.clone())
        .map_err(|e| ServeError::BindDns(format!("{listen:?}"), e))?;
    if !control_addr.ip().is_loopback() && node_token_missing(&responder) {
        return Err(ServeError::ControlUnprotected(control_addr));
    }
    let control = tokio::net::TcpListener::bind(control_addr)
        .await
        .map_err(|e| ServeError::BindControl(control_addr, e))?;
    let control_bound = control
        .local_addr()
        .map_err(|e| ServeError::BindControl(control_addr, e))?;

    // Probes start as soon as the sockets are bound (a member may probe this node itself).
    let probes = ProbeSet::start(probe_specs, &steering, health.clone())?;
    let node = Arc::new(Node::new(NodeParts {
        source,
        overrides,
        responder,
        health,
        probes,
        store,
        state_lost,
    }));
    // Secondaries hear of every zone at start: the data may have changed while this node was
    // down.
    let all: Vec<usize> = (0..node.config().config.zones.len()).collect();
    announce(&node.config().config, &node.store, &all);
    let dns_list: Vec<String> = dns.addrs.iter().map(|a| a.to_string()).collect();
    println!(
        "listening dns={} control={}",
        dns_list.join(","),
        control_bound
    );
    tracing::info!(dns = %dns_list.join(","), control = %control_bound, "serving");

    // Every task stops when `stop` says so: the control endpoint and DNS over TCP after the
    // request in hand, the file watcher, SIGHUP handler, housekeeping and probes at their next
    // wait.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::admin::run(control, node.clone(), stopping.clone()));
    tasks.spawn(until(stopping.clone(), watch_files(node.clone(), stamps)));
    tasks.spawn(until(stopping.clone(), reload_on_sighup(node.clone())));
    tasks.spawn(until(stopping.clone(), reload_at_key_events(node.clone())));
    tasks.spawn(until(stopping, node.clone().housekeeping()));

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    let probes = ProbeSet::start(Vec::new(), &Default::default(), node.health.clone())?;
    let running = std::mem::replace(
        &mut *node.probes.lock().unwrap_or_else(|p| p.into_inner()),
        probes,
    );
    running.stop().await;
    dns.shutdown().await;
    node.store.flush();
    Ok(())
}

/// Runs `task` until `stopping` turns true (or its sender goes).
async fn until(
    mut stopping: tokio::sync::watch::Receiver<bool>,
    task: impl std::future::Future<Output = ()>,
) {
    tokio::select! {
        _ = task => {}
        _ = stopping.changed() => {}
    }
}

/// A file's modification time and length; `None` when it cannot be read.
type FileStamp = Option<(SystemTime, u64)>;

fn stamp(files: &[PathBuf]) -> Vec<FileStamp> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

async fn reload_on_sighup(node: Arc<Node>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading");
        node.reload().await;
    }
}

/// Reloads when a DNSSEC key's timing metadata says its state changes (Publish, Activate,
/// Inactive, Delete): the zone then publishes and signs with the keys as they stand, so a
/// rollover the key files describe is carried out on time without an operator's reload.
/// While a key-signing key is held for the parent's DS, reloads every [`PARENT_RECHECK`] to
/// read the parent again.
async fn reload_at_key_events(node: Arc<Node>) {
    loop {
        let now = crate::clock::unix_now();
        let (next, held) = {
            let loaded = node.config();
            let zones = &loaded.config.zones;
            let held = zones
                .iter()
                .any(|z| z.signing.as_ref().is_some_and(|s| s.holds_any()));
            let next = zones
                .iter()
                .flat_map(|z| z.dnssec_keys.iter())
                .flat_map(|k| {
                    [
                        k.times.publish,
                        k.times.activate,
                        k.times.inactive,
                        k.times.delete,
                    ]
                })
                .flatten()
                .filter(|&at| at > now)
                .min();
            (next, held)
        };
        // Looked at again at least hourly: a reload may have brought other keys.
        let wait = next.map_or(3600, |at| (at - now).min(3600));
        let wait = if held { wait.min(PARENT_RECHECK) } else { wait };
        tokio::time::sleep(Duration::from_secs(wait)).await;
        if next.is_some_and(|at| crate::clock::unix_now() >= at) {
            tracing::info!("a DNSSEC key's state changes now: reloading");
            node.reload().await;
        } else if held {
            tracing::info!("a key-signing key is held for the parent's DS: reloading to read it");
            node.reload().await;
        }
    }
}

/// How often the parent's DS set is read again while a key-signing key waits for it, in
/// seconds.
const PARENT_RECHECK: u64 = 300;

/// Polls the config's files once a second; after a change, waits until they have been quiet
/// for half a second (editors write in several steps), then reloads.
/// `seen` is the files' state taken right after the running config was read.
async fn watch_files(node: Arc<Node>, mut seen: Vec<FileStamp>) {
    let mut files = node.config().config.sources.clone();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = stamp(&files);
        if now == seen {
            continue;
        }
        // Debounce: wait for the files to stop changing.
        let mut settled = now;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let again = stamp(&files);
            if again == settled {
                break;
            }
            settled = again;
        }
        tracing::info!("config files changed: reloading");
        node.reload().await;
        // The files as they were before the reload read them: a change made while it ran is
        // noticed at the next poll (stamping after would take it for the loaded state).
        let sources = node.config().config.sources.clone();
        seen = if sources == files {
            settled
        } else {
            stamp(&sources)
        };
        files = sources;
    }
}
