//! Health: probers that report raw outcomes, a rise/fall tracker that alone turns outcomes into
//! state, and the [`HealthStore`] whose lock-free snapshot the query path reads.
//!
//! Probe path: `ProbeSpec` (deduplicated across members) -> one task per spec with jitter ->
//! [`Prober::probe`] -> [`Tracker::observe`] -> on a transition, [`HealthStore::apply`] for every
//! member that shares the spec -> new snapshot swapped in, and the change handed to the
//! [`Persist`] hook (the `state` module's sled store when serving).

use crate::clock::unix_now;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

/// A member's identity: `site/address` (or `site/alias`). Stable across reloads and list order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemberId(pub String);

impl MemberId {
    pub fn new(site: &str, target: &str) -> Self {
        MemberId(format!("{site}/{target}"))
    }
}

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Health as judged by the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No probe result yet and nothing remembered: answered until a probe says otherwise.
    #[default]
    Unknown,
    Up,
    Down,
}

/// An operator's override, which wins over health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Admin {
    #[default]
    Normal,
    /// Never answered; the operator is taking it out of service.
    Drained,
    /// Answered whatever the probes say.
    ForcedUp,
    /// Never answered whatever the probes say.
    ForcedDown,
}

/// Everything the query path knows about one member.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct MemberState {
    pub admin: Admin,
    pub health: Health,
}

/// An immutable view of every member's state, swapped as a whole on each change.
#[derive(Debug, Clone, Default)]
pub struct HealthSnapshot {
    members: crate::hash::FastMap<MemberId, MemberState>,
    /// Unique per snapshot a store publishes (0 for one built elsewhere), so a cache of
    /// decisions can tell it still holds for the current health.
    id: u64,
}

/// Snapshot ids, unique in the process.
static SNAPSHOT_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn fresh_snapshot_id() -> u64 {
    SNAPSHOT_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl HealthSnapshot {
    /// The snapshot's id: unique for each one a [`HealthStore`] published, 0 otherwise.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The admin state and health of a member; members never seen are Normal/Unknown.
    pub fn state(&self, id: &MemberId) -> (Admin, Health) {
        self.members
            .get(id)
            .map(|s| (s.admin, s.health))
            .unwrap_or_default()
    }

    pub fn get(&self, id: &MemberId) -> MemberState {
        self.members.get(id).copied().unwrap_or_default()
    }

    pub fn set(&mut self, id: MemberId, state: MemberState) {
        self.members.insert(id, state);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&MemberId, &MemberState)> {
        self.members.iter()
    }
}

/// One change to the health table.
#[derive(Debug, Clone)]
pub enum Change {
    /// A probe-driven transition.
    Health(MemberId, Health),
    /// An operator override (Normal clears it).
    Admin(MemberId, Admin),
}

/// Where changes are written so they survive a restart. Implemented by `state::Store`.
pub trait Persist: Send + Sync {
    fn health_changed(&self, id: &MemberId, health: Health);
    fn admin_changed(&self, id: &MemberId, admin: Admin);
}

/// The health table: lock-free reads through an `ArcSwap`, writers serialised by a mutex so
/// two concurrent changes never lose each other (read-modify-swap).
pub struct HealthStore {
    /// Readers load this without locking; the query path does nothing else with health.
    current: ArcSwap<HealthSnapshot>,
    /// Held only while building and swapping a new snapshot.
    write: Mutex<()>,
    persist: Option<Box<dyn Persist>>,
    /// Bumped on every change; subscribers (status, logs) watch it.
    generation: tokio::sync::watch::Sender<u64>,
    /// Recent changes (newest last) and health transitions per member, since start.
    history: Mutex<History>,
    /// Probe rounds per probe address since start (kept across reloads, which replace the
    /// probe tasks but not this store).
    rounds: Mutex<HashMap<SocketAddr, ProbeRounds>>,
}

/// Upper bounds of the probe latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// The rounds of one probe since start: the latency of each passing round, counted into
/// [`LATENCY_BUCKETS`] (cumulative, as a histogram is read), and the failed rounds.
#[derive(Debug, Default, Clone)]
pub struct ProbeRounds {
    pub buckets: [u64; LATENCY_BUCKETS.len()],
    /// Passing rounds.
    pub count: u64,
    /// Their latencies added up, in seconds.
    pub sum_seconds: f64,
    pub failures: u64,
}

/// How many recent changes the store keeps for status.
const HISTORY: usize = 200;

#[derive(Default)]
struct History {
    events: std::collections::VecDeque<Event>,
    transitions: HashMap<MemberId, u64>,
}

/// One change to a member's state, as status and the status page list them.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub member: MemberId,
    /// `health` or `admin`.
    pub kind: &'static str,
    pub from: String,
    pub to: String,
}

impl HealthStore {
    pub fn new(mut initial: HealthSnapshot, persist: Option<Box<dyn Persist>>) -> Self {
        initial.id = fresh_snapshot_id();
        HealthStore {
            current: ArcSwap::from_pointee(initial),
            write: Mutex::new(()),
            persist,
            generation: tokio::sync::watch::channel(0).0,
            history: Mutex::new(History::default()),
            rounds: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one probe round: its latency when it passed, `None` when it failed.
    pub fn probe_observed(&self, probe: SocketAddr, latency: Option<Duration>) {
        let mut rounds = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
        let r = rounds.entry(probe).or_default();
        match latency {
            Some(l) => {
                let secs = l.as_secs_f64();
                r.count += 1;
                r.sum_seconds += secs;
                for (b, le) in r.buckets.iter_mut().zip(LATENCY_BUCKETS) {
                    if secs <= le {
                        *b += 1;
                    }
                }
            }
            None => r.failures += 1,
        }
    }

    /// Every probe's rounds since start, by probe address.
    pub fn probe_rounds(&self) -> Vec<(SocketAddr, ProbeRounds)> {
        let rounds = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = rounds.iter().map(|(a, r)| (*a, r.clone())).collect();
        out.sort_by_key(|(a, _)| *a);
        out
    }

    /// The most recent changes, oldest first.
    pub fn events(&self) -> Vec<Event> {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.events.iter().cloned().collect()
    }

    /// Health transitions of `id` since start (its flap count).
    pub fn transitions(&self, id: &MemberId) -> u64 {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.transitions.get(id).copied().unwrap_or(0)
    }

    /// Health transitions of every member since start.
    pub fn total_transitions(&self) -> u64 {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.transitions.values().sum()
    }

    fn record(&self, id: &MemberId, before: MemberState, after: MemberState) {
        let at = unix_now();
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let mut push = |kind, from: String, to: String| {
            tracing::info!(member = %id, kind, from, to, "member state changed");
            if h.events.len() == HISTORY {
                h.events.pop_front();
            }
            h.events.push_back(Event {
                at,
                member: id.clone(),
                kind,
                from,
                to,
            });
        };
        if before.health != after.health {
            push("health", label(&before.health), label(&after.health));
        }
        if before.admin != after.admin {
            push("admin", label(&before.admin), label(&after.admin));
        }
        if before.health != after.health && before.health != Health::Unknown {
            *h.transitions.entry(id.clone()).or_default() += 1;
        }
    }

    /// An in-memory store for tests and tools.
    pub fn in_memory() -> Self {
        Self::new(HealthSnapshot::default(), None)
    }

    pub fn snapshot(&self) -> Arc<HealthSnapshot> {
        self.current.load_full()
    }

    /// A cheap read guard on the current snapshot, for the query path.
    pub fn guard(&self) -> arc_swap::Guard<Arc<HealthSnapshot>> {
        self.current.load()
    }

    /// Applies one change; returns whether anything changed.
    pub fn apply(&self, change: Change) -> bool {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.current.load();
        let id = match &change {
            Change::Health(id, _) | Change::Admin(id, _) => id,
        };
        let before = old.get(id);
        let mut after = before;
        match change {
            Change::Health(_, h) => after.health = h,
            Change::Admin(_, a) => after.admin = a,
        }
        if after == before {
            return false;
        }
        let mut next = (**old).clone();
        next.set(id.clone(), after);
        next.id = fresh_snapshot_id();
        self.current.store(Arc::new(next));
        self.record(id, before, after);
        if let Some(p) = &self.persist {
            if after.health != before.health {
                p.health_changed(id, after.health);
            }
            if after.admin != before.admin {
                p.admin_changed(id, after.admin);
            }
        }
        self.generation.send_modify(|g| *g += 1);
        true
    }

    /// A receiver that changes whenever the table does.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// A state as the API writes it (`up`, `drained`, ...).
fn label<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// What a single probe saw.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeOutcome {
    /// The check passed.
    Up { latency: Duration },
    /// The check failed; `reason` says how, for logs and status.
    Down { reason: String },
}

/// A state change the tracker decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
}

/// Rise/fall thresholds over consecutive probe outcomes. Pure: no clock, no I/O.
///
/// From `Unknown` the first outcome decides (so a new member settles within one interval);
/// from `Up`, `fall` consecutive failures mark it `Down`; from `Down`, `rise` consecutive
/// successes mark it `Up`. An outcome that agrees with the state resets the opposite run.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub rise: u32,
    pub fall: u32,
    pub state: Health,
    run: u32,
}

impl Tracker {
    pub fn new(rise: u32, fall: u32, state: Health) -> Self {
        Tracker {
            rise: rise.max(1),
            fall: fall.max(1),
            state,
            run: 0,
        }
    }

    pub fn observe(&mut self, up: bool) -> Option<Transition> {
        let from = self.state;
        let to = match (self.state, up) {
            (Health::Unknown, true) => Health::Up,
            (Health::Unknown, false) => Health::Down,
            (Health::Up, true) | (Health::Down, false) => {
                self.run = 0;
                return None;
            }
            (Health::Up, false) | (Health::Down, true) => {
                self.run += 1;
                let needed = if up { self.rise } else { self.fall };
                if self.run < needed {
                    return None;
                }
                if up {
                    Health::Up
                } else {
                    Health::Down
                }
            }
        };
        self.run = 0;
        self.state = to;
        Some(Transition { from, to })
    }
}

/// What to check, and how.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// A TCP connect that completes within the timeout.
    Tcp,
    Http(HttpCheck),
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
    method: reqwest::Method,
    check: HttpCheck,
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
            method,
            check: check.clone(),
        })
    }
}

impl Prober for HttpProber {
    fn probe(&self) -> BoxFuture<'_, ProbeOutcome> {
        Box::pin(async move {
            let start = tokio::time::Instant::now();
            let resp = match self
                .client
                .request(self.method.clone(), &self.url)
                .send()
                .await
            {
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
            }
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
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
    })
}

/// The last probe result per spec, for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct LastProbe {
    pub up: bool,
    pub detail: String,
    /// How long a passing check took.
    pub latency_ms: Option<f64>,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// The running probe tasks of one config. Dropping it stops them.
pub struct ProbeSet {
    tasks: Vec<JoinHandle<()>>,
    /// Last outcome per probe address, shared with `status`.
    pub last: Arc<Mutex<HashMap<SocketAddr, LastProbe>>>,
}

impl Drop for ProbeSet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl ProbeSet {
    /// Starts one task per distinct spec; each drives the health of the members listed with it.
    /// Trackers start from the members' current health, so a reload keeps what is known.
    pub fn start(
        probes: Vec<(ProbeSpec, Vec<super::health::MemberId>)>,
        store: Arc<HealthStore>,
    ) -> Result<ProbeSet, ProbeError> {
        let last = Arc::new(Mutex::new(HashMap::new()));
        let mut tasks = Vec::new();
        for (spec, members) in probes {
            let prober = prober_for(&spec)?;
            let start = members
                .first()
                .map(|m| store.snapshot().get(m).health)
                .unwrap_or_default();
            let tracker = Tracker::new(spec.rise, spec.fall, start);
            tasks.push(tokio::spawn(run_probe(
                spec,
                prober,
                tracker,
                members,
                store.clone(),
                last.clone(),
            )));
        }
        Ok(ProbeSet { tasks, last })
    }
}

async fn run_probe(
    spec: ProbeSpec,
    prober: Box<dyn Prober>,
    mut tracker: Tracker,
    members: Vec<MemberId>,
    store: Arc<HealthStore>,
    last: Arc<Mutex<HashMap<SocketAddr, LastProbe>>>,
) {
    loop {
        let outcome = prober.probe().await;
        let up = matches!(outcome, ProbeOutcome::Up { .. });
        let (detail, latency_ms) = match &outcome {
            ProbeOutcome::Up { latency } => (
                format!("up in {} ms", latency.as_millis()),
                Some(latency.as_secs_f64() * 1000.0),
            ),
            ProbeOutcome::Down { reason } => (reason.clone(), None),
        };
        store.probe_observed(
            spec.addr,
            match &outcome {
                ProbeOutcome::Up { latency } => Some(*latency),
                ProbeOutcome::Down { .. } => None,
            },
        );
        if let Some(t) = tracker.observe(up) {
            tracing::info!(probe = %spec.addr, from = ?t.from, to = ?t.to, %detail, "health changed");
        }
        // Re-assert the tracker's state every round: members added by a reload, or a store
        // restored from disk, converge without waiting for the next transition.
        if tracker.state != Health::Unknown {
            for m in &members {
                store.apply(Change::Health(m.clone(), tracker.state));
            }
        }
        last.lock().unwrap_or_else(|p| p.into_inner()).insert(
            spec.addr,
            LastProbe {
                up,
                detail,
                latency_ms,
                at: unix_now(),
            },
        );
        tokio::time::sleep(jittered(spec.interval, spec.jitter_percent)).await;
    }
}

fn jittered(interval: Duration, percent: u8) -> Duration {
    if percent == 0 {
        return interval;
    }
    let span = interval.as_secs_f64() * f64::from(percent.min(100)) / 100.0;
    let offset = (rand::random::<f64>() * 2.0 - 1.0) * span;
    Duration::from_secs_f64((interval.as_secs_f64() + offset).max(0.001))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_settles_on_first_outcome() {
        let mut t = Tracker::new(2, 3, Health::Unknown);
        assert_eq!(t.observe(false).map(|t| t.to), Some(Health::Down));
        let mut t = Tracker::new(2, 3, Health::Unknown);
        assert_eq!(t.observe(true).map(|t| t.to), Some(Health::Up));
    }

    #[test]
    fn fall_needs_consecutive_failures() {
        let mut t = Tracker::new(2, 3, Health::Up);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), None); // resets the run
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false).map(|t| t.to), Some(Health::Down));
    }

    #[test]
    fn rise_needs_consecutive_successes() {
        let mut t = Tracker::new(2, 3, Health::Down);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true).map(|t| t.to), Some(Health::Up));
    }

    struct Scripted(Mutex<Vec<bool>>);
    impl Prober for Scripted {
        fn probe(&self) -> BoxFuture<'_, ProbeOutcome> {
            let up = self.0.lock().unwrap().pop().unwrap_or(true);
            Box::pin(async move {
                if up {
                    ProbeOutcome::Up {
                        latency: Duration::ZERO,
                    }
                } else {
                    ProbeOutcome::Down {
                        reason: "scripted".into(),
                    }
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn member_goes_down_after_fall_intervals_under_paused_time() {
        let store = Arc::new(HealthStore::in_memory());
        let id = MemberId::new("s", "192.0.2.1");
        let spec = ProbeSpec {
            kind: ProbeKind::Tcp,
            addr: "127.0.0.1:9".parse().unwrap(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            jitter_percent: 0,
        };
        // popped from the end: up, then down forever
        let prober = Box::new(Scripted(Mutex::new(vec![false, false, false, true])));
        let task = tokio::spawn(run_probe(
            spec,
            prober,
            Tracker::new(2, 3, Health::Unknown),
            vec![id.clone()],
            store.clone(),
            Default::default(),
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(store.snapshot().get(&id).health, Health::Up);
        tokio::time::sleep(Duration::from_secs(4)).await; // two failures seen
        assert_eq!(store.snapshot().get(&id).health, Health::Up);
        tokio::time::sleep(Duration::from_secs(2)).await; // third failure
        assert_eq!(store.snapshot().get(&id).health, Health::Down);
        task.abort();
    }
}
