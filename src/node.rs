//! A running node's config lifecycle, shared by start-up ([`crate::server`]) and the control
//! endpoint ([`crate::admin`]): loading with command-line overrides, `check`, the serial rule
//! for zones with secondaries, and [`Node`] with its reload.
//!
//! Reload: the same `config::load` as `check`; on success the new config is swapped into the
//! responder (queries in flight finish on the old one) and the probe set is replaced, its
//! trackers starting from the current health so nothing is forgotten; on failure the old
//! config keeps serving and the error is logged and returned. Settings bound at start (the
//! sockets) are reported as needing a restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::{self, Config, ConfigError, ServerSettings, Source};
use crate::dns::cookie::Secrets;
use crate::dns::{Loaded, Responder};
use crate::health::{Admin, Change, HealthStore, MemberId, ProbeSet};
use crate::state::Store;

/// Why a control endpoint may not serve where it is: off loopback without a token.
pub fn control_unprotected(control: SocketAddr) -> String {
    format!(
        "the control endpoint {control} is not on loopback: set server.control_token_file so callers must authenticate"
    )
}

/// Command-line settings that win over the config file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Vec<SocketAddr>,
    pub control: Option<SocketAddr>,
    pub state_dir: Option<PathBuf>,
}

impl Overrides {
    fn apply(&self, cfg: &mut Config) {
        if !self.listen.is_empty() {
            cfg.server.listen = self.listen.clone();
        }
        if let Some(c) = self.control {
            cfg.server.control = c;
        }
        if let Some(d) = &self.state_dir {
            cfg.server.state_dir = d.clone();
        }
    }
}

/// Loads the config with overrides applied: what `serve` and every reload use.
pub fn load(source: &Source, overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut cfg = config::load(source)?;
    overrides.apply(&mut cfg);
    if cfg.server.cookies && cfg.server.cookie_secrets.is_none() {
        cfg.server.cookie_secrets = Some(Arc::new(state_cookie_secret(&cfg.server.state_dir)?));
    }
    Ok(cfg)
}

/// What `meridian check` runs: the config as `serve` loads it (the same validation, with
/// every zone's errors), and the rules `serve` adds from the state directory, read but never
/// written: a node's own cookie secret must parse, and zones with secondaries keep the serial
/// rule against the serials last served. A running node holds the state store: then the
/// serial rule is left to its reload, and a warning says so.
pub fn check(source: &Source) -> Result<Config, ConfigError> {
    let mut cfg = config::load(source)?;
    if cfg.server.cookies && cfg.server.cookie_secrets.is_none() {
        existing_cookie_secret(&cfg.server.state_dir.join("cookie.secret"))?;
    }
    if cfg.zones.iter().any(|z| z.transfer.is_some()) {
        match Store::open_existing(&cfg.server.state_dir) {
            Ok(Some(store)) => {
                check_serials(&cfg, &store)?;
            }
            Ok(None) => {}
            Err(e) => cfg.warnings.push(format!(
                "serial rule for zones with secondaries not checked: {e}; the node checks it at reload"
            )),
        }
    }
    Ok(cfg)
}

/// The cookie secret in `path`, read once; `None` when there is no such file.
fn existing_cookie_secret(path: &std::path::Path) -> Result<Option<Secrets>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Read {
                file: path.to_path_buf(),
                source,
            })
        }
    };
    Secrets::parse(&text)
        .map(Some)
        .map_err(|m| ConfigError::Invalid {
            file: path.to_path_buf(),
            line: 1,
            object: crate::config::Object::CookieSecret,
            message: format!("{m} (delete the file to make a new one)"),
        })
}

/// This node's own cookie secret, kept in the state directory (created on first start, readable
/// by the service only). Nodes that must validate each other's cookies share a
/// `cookie_secret_file` instead.
fn state_cookie_secret(dir: &std::path::Path) -> Result<Secrets, ConfigError> {
    let path = dir.join("cookie.secret");
    let io = |source| ConfigError::Read {
        file: path.clone(),
        source,
    };
    match existing_cookie_secret(&path)? {
        Some(secrets) => Ok(secrets),
        None => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::create_dir_all(dir).map_err(io)?;
            let secrets = Secrets::random();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
            f.write_all(secrets.to_text().as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok(secrets)
        }
    }
}

/// The serial rule for zones with secondaries: a zone's SOA serial never goes backwards
/// (RFC 1982 arithmetic) against the one last served, kept in the state store across restarts,
/// and data that changed comes with a higher serial (else secondaries would keep the old
/// data). Returns the zones whose serial or data differ from what was last served.
pub fn check_serials(cfg: &Config, store: &Store) -> Result<Vec<usize>, ConfigError> {
    let mut changed = Vec::new();
    for (i, zone) in cfg.zones.iter().enumerate() {
        if zone.transfer.is_none() {
            continue;
        }
        let (serial, digest) = (zone.serial(), zone.digest());
        let origin = zone.origin.to_ascii();
        let problem = match store.served_serial(&origin) {
            None => {
                changed.push(i);
                None
            }
            Some((last, _)) if crate::dns::xfr::serial_lt(serial, last) => Some(format!(
                "SOA serial {serial} is below {last}, the serial already served to secondaries \
                 (a serial never goes backwards)"
            )),
            Some((last, old)) if last == serial && old != digest => Some(format!(
                "the zone's data changed but its SOA serial {serial} did not: raise it so \
                 secondaries pick the change up"
            )),
            Some((last, old)) => {
                if last != serial || old != digest {
                    changed.push(i);
                }
                None
            }
        };
        if let Some(message) = problem {
            return Err(ConfigError::Invalid {
                file: zone.file.clone(),
                line: zone.soa_line(),
                object: crate::config::Object::ZoneSoa(origin.clone()),
                message,
            });
        }
    }
    Ok(changed)
}

/// For each of `zones` that has secondaries: records what is now served, and sends NOTIFY
/// to them (in the background). Zones left out are served as they were recorded.
pub(crate) fn announce(cfg: &Config, store: &Store, zones: &[usize]) {
    for &i in zones {
        let zone = &cfg.zones[i];
        let Some(t) = &zone.transfer else {
            continue;
        };
        store.record_served(&zone.origin.to_ascii(), zone.serial(), zone.digest());
        if !t.notify.is_empty() {
            tokio::spawn(crate::dns::xfr::notify(
                zone.origin.clone(),
                zone.serial(),
                zone.soa().clone(),
                t.notify.clone(),
                t.key.clone(),
            ));
        }
    }
}

/// The shared state of a running node, used by the control endpoint and the reloader.
pub struct Node {
    pub source: Source,
    pub overrides: Overrides,
    pub responder: Arc<Responder>,
    pub health: Arc<HealthStore>,
    /// Replaced on reload; the std mutex is held only to swap it.
    pub probes: Mutex<ProbeSet>,
    /// Serialises reloads (SIGHUP, file watcher and control calls).
    reload_lock: tokio::sync::Mutex<()>,
    pub store: Store,
    pub started: SystemTime,
    /// Answers per member, sampled every few seconds over the last minute (newest last).
    answer_samples: Mutex<std::collections::VecDeque<(std::time::Instant, AnswerCounts)>>,
    /// The last reload, however it was asked for (SIGHUP, file change, control call).
    pub last_reload: Mutex<Option<ReloadRecord>>,
    /// Settings changed by a reload that only a restart applies (sockets are bound once).
    pub restart_needed: Mutex<Vec<String>>,
    /// The settings the sockets were bound with, at start.
    bound: ServerSettings,
    /// Why the state store started empty, when it did (damaged and moved aside, or missing
    /// after an earlier run): drains and remembered health were lost.
    pub state_lost: Option<String>,
}

/// What the last reload did, and when.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadRecord {
    /// Unix seconds.
    pub at: u64,
    #[serde(flatten)]
    pub outcome: ReloadOutcome,
}

/// Answers given per (pool, member id) since start.
type AnswerCounts = std::collections::HashMap<(String, String), u64>;

/// How often member answer counts are sampled, and how far back shares look.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const SHARE_WINDOW: Duration = Duration::from_secs(60);

/// Result of a reload request.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum ReloadOutcome {
    /// The new config is serving.
    Applied { version: u64 },
    /// The files did not validate; the old config keeps serving.
    Rejected { error: String },
}

/// What a node starts with; the rest of [`Node`] starts empty.
pub struct NodeParts {
    pub source: Source,
    pub overrides: Overrides,
    pub responder: Arc<Responder>,
    pub health: Arc<HealthStore>,
    pub probes: ProbeSet,
    pub store: Store,
    pub state_lost: Option<String>,
}

impl Node {
    pub fn new(parts: NodeParts) -> Node {
        let bound = parts.responder.current.load().config.server.clone();
        Node {
            source: parts.source,
            overrides: parts.overrides,
            responder: parts.responder,
            health: parts.health,
            probes: Mutex::new(parts.probes),
            reload_lock: tokio::sync::Mutex::new(()),
            store: parts.store,
            started: SystemTime::now(),
            answer_samples: Mutex::new(Default::default()),
            last_reload: Mutex::new(None),
            restart_needed: Mutex::new(Vec::new()),
            bound,
            state_lost: parts.state_lost,
        }
    }

    /// Each member's share of its pool's answers over about the last minute (from the oldest
    /// sample in the window to now).
    pub fn answer_shares(&self) -> std::collections::HashMap<(String, String), f64> {
        let now: AnswerCounts = crate::metrics::member_answers().into_iter().collect();
        let samples = self
            .answer_samples
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let empty = AnswerCounts::new();
        let base = samples.front().map_or(&empty, |(_, c)| c);
        let delta = |k: &(String, String)| now[k].saturating_sub(base.get(k).copied().unwrap_or(0));
        let mut per_pool: std::collections::HashMap<&str, u64> = Default::default();
        for k in now.keys() {
            *per_pool.entry(k.0.as_str()).or_default() += delta(k);
        }
        now.keys()
            .map(|k| {
                let pool = per_pool[k.0.as_str()];
                let share = if pool == 0 {
                    0.0
                } else {
                    delta(k) as f64 / pool as f64
                };
                (k.clone(), share)
            })
            .collect()
    }

    /// Samples answer counts (for [`Node::answer_shares`]) and clears expired overrides, until
    /// the task is aborted.
    pub(crate) async fn housekeeping(self: Arc<Node>) {
        let mut last_sample = std::time::Instant::now() - SAMPLE_EVERY;
        loop {
            if last_sample.elapsed() >= SAMPLE_EVERY {
                last_sample = std::time::Instant::now();
                let counts = crate::metrics::member_answers().into_iter().collect();
                let mut samples = self
                    .answer_samples
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                samples.push_back((last_sample, counts));
                while samples
                    .front()
                    .is_some_and(|(at, _)| at.elapsed() > SHARE_WINDOW)
                {
                    samples.pop_front();
                }
            }
            let now = crate::clock::unix_now();
            for (id, at) in self.store.expiries() {
                if at <= now {
                    // Recorded before it shows: whoever sees the override gone finds why.
                    self.store.set_expiry(&id, None);
                    tracing::info!(member = %id, "override expired");
                    self.store.audit(&serde_json::json!({
                        "at": now, "peer": null, "call": "expire", "target": id,
                        "outcome": {"applied": Admin::Normal},
                    }));
                    self.health.apply(Change::Admin(id.clone(), Admin::Normal));
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Validates and swaps in the config on disk.
    pub async fn reload(&self) -> ReloadOutcome {
        let outcome = self.try_reload().await;
        crate::metrics::reload(match outcome {
            ReloadOutcome::Applied { .. } => "applied",
            ReloadOutcome::Rejected { .. } => "rejected",
        });
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(ReloadRecord {
            at: crate::clock::unix_now(),
            outcome: outcome.clone(),
        });
        outcome
    }

    async fn try_reload(&self) -> ReloadOutcome {
        let _guard = self.reload_lock.lock().await;
        let rejected = |error: String| {
            tracing::error!(%error, "reload rejected; the running config keeps serving");
            ReloadOutcome::Rejected { error }
        };
        let cfg = match load(&self.source, &self.overrides) {
            Ok(c) => c,
            Err(e) => return rejected(e.to_string()),
        };
        if !cfg.server.control.ip().is_loopback() && cfg.server.control_token.is_none() {
            return rejected(control_unprotected(cfg.server.control));
        }
        let changed = match check_serials(&cfg, &self.store) {
            Ok(c) => c,
            Err(e) => return rejected(e.to_string()),
        };
        let probes = match ProbeSet::start(cfg.probes.clone(), &cfg.steering, self.health.clone()) {
            Ok(p) => p,
            Err(e) => return rejected(e.to_string()),
        };
        let previous = self.responder.current.load_full();
        let version = previous.version + 1;
        report_orphans(&cfg, &self.health);
        report_warnings(&cfg);
        report_zones(&cfg, Some(&previous.config));
        // Against what the sockets were bound with: a setting changed back needs nothing.
        let unapplied = needs_restart(&self.bound, &cfg.server);
        let changed_now = needs_restart(&previous.config.server, &cfg.server);
        for setting in &unapplied {
            if changed_now.contains(setting) {
                tracing::warn!(
                    setting,
                    "reload: {setting} changed; sockets are bound at start, so it applies after a restart"
                );
            }
        }
        *self
            .restart_needed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = unapplied;
        let loaded = Arc::new(Loaded::replacing(cfg, version, &previous));
        self.responder.current.store(loaded.clone());
        announce(&loaded.config, &self.store, &changed);
        *self.probes.lock().unwrap_or_else(|p| p.into_inner()) = probes;
        tracing::info!(version, "config reloaded");
        ReloadOutcome::Applied { version }
    }

    /// Members configured now, for resolving `ctl` targets.
    pub fn config(&self) -> arc_swap::Guard<Arc<Loaded>> {
        self.responder.current.load()
    }
}

/// Logs each config warning (also printed by `check`).
pub(crate) fn report_warnings(cfg: &Config) {
    for warning in &cfg.warnings {
        tracing::warn!("{warning}");
    }
}

/// Logs `zone NAME loaded, serial N` for each zone that is new or whose serial changed
/// since `previous` (every zone at start), and warns of zones whose data changed while their
/// serial did not (secondaries and caches keyed on the serial would miss the change).
pub(crate) fn report_zones(cfg: &Config, previous: Option<&Config>) {
    for zone in &cfg.zones {
        let before = previous.and_then(|p| p.zones.iter().find(|z| z.origin == zone.origin));
        match before {
            Some(old) if old.serial() == zone.serial() => {
                if old.digest() != zone.digest() {
                    tracing::warn!(
                        zone = %zone.origin,
                        serial = zone.serial(),
                        "zone {} data changed but its SOA serial {} did not: raise it",
                        zone.origin,
                        zone.serial()
                    );
                }
            }
            _ => tracing::info!(
                zone = %zone.origin,
                serial = zone.serial(),
                "zone {} loaded, serial {}",
                zone.origin,
                zone.serial()
            ),
        }
    }
}

/// The settings that differ between `a` and `b` that a reload cannot apply: the DNS and
/// control sockets and their TCP limits are bound once, at start.
fn needs_restart(a: &ServerSettings, b: &ServerSettings) -> Vec<String> {
    let mut out = Vec::new();
    if a.listen != b.listen {
        out.push("server.listen".to_string());
    }
    if a.udp_workers != b.udp_workers {
        out.push("server.udp_workers".to_string());
    }
    if a.control != b.control {
        out.push("server.control".to_string());
    }
    if a.tcp != b.tcp {
        out.push("server.tcp".to_string());
    }
    out
}

/// Overrides for members no longer in the config are kept (they apply again if the member
/// returns) and reported, never dropped silently.
pub fn orphan_overrides(cfg: &Config, health: &HealthStore) -> Vec<(MemberId, Admin)> {
    let snap = health.snapshot();
    let mut out: Vec<_> = snap
        .iter()
        .filter(|(_, s)| s.admin != Admin::Normal)
        .filter(|(id, _)| {
            !cfg.pools
                .iter()
                .any(|p| p.members.iter().any(|m| &m.id == *id))
        })
        .map(|(id, s)| (id.clone(), s.admin))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub(crate) fn report_orphans(cfg: &Config, health: &HealthStore) {
    for (id, admin) in orphan_overrides(cfg, health) {
        tracing::warn!(member = %id, ?admin, "override kept for a member that is not in the config");
    }
}
