//! The health table: every member's state in a snapshot read without locks, changes applied
//! one at a time (persisted through [`Persist`]), recent changes and probe rounds for status.

use super::*;

/// An immutable view of every member's state, swapped as a whole on each change.
#[derive(Debug, Clone, Default)]
pub struct HealthSnapshot {
    members: crate::hash::FastMap<MemberId, MemberState>,
    /// Members whose factor is partial: while there are any, decisions depend on the
    /// client's network even for policies that otherwise do not.
    partial: usize,
    /// Round-trip times per client network and site, from the site proxies.
    latency: Arc<Latency>,
    /// Unique per snapshot a store publishes (0 for one built elsewhere), so a cache of
    /// decisions can tell it still holds for the current health.
    id: u64,
}

/// Snapshot ids, unique in the process.
pub(super) static SNAPSHOT_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(super) fn fresh_snapshot_id() -> u64 {
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
        let was = self.members.insert(id, state);
        if was.is_some_and(|w| w.factor.is_partial()) {
            self.partial -= 1;
        }
        if state.factor.is_partial() {
            self.partial += 1;
        }
    }

    /// Round-trip times per client network and site, as the site proxies measured them.
    pub fn latency(&self) -> &Latency {
        &self.latency
    }

    /// Whether some member keeps only part of its client networks, so that which networks
    /// those are matters to every decision.
    pub fn splits_networks(&self) -> bool {
        self.partial > 0
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
    /// A weight factor the member's load report earned it.
    Factor(MemberId, Factor),
    /// Whether what its clients got has tripped it.
    Passive(MemberId, Passive),
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
    /// The last load report read for each member whose check reads one.
    reports: Mutex<HashMap<MemberId, Reported>>,
    /// Round-trip times each member's site proxy measured, per client network.
    measured: Mutex<HashMap<MemberId, Measured>>,
}

/// A load report as a member's check last read it.
#[derive(Debug, Clone, Serialize)]
pub struct Reported {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub report: LoadReport,
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
pub(super) const HISTORY: usize = 200;

#[derive(Default)]
pub(super) struct History {
    events: std::collections::VecDeque<Event>,
    transitions: HashMap<MemberId, u64>,
    /// Weight factor changes per member.
    factor_changes: HashMap<MemberId, u64>,
}

/// One change to a member's state, as status and the status page list them.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub member: MemberId,
    /// `health`, `admin`, `passive` or `factor`.
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
            reports: Mutex::new(HashMap::new()),
            measured: Mutex::new(HashMap::new()),
        }
    }

    /// Client networks whose round trips a member's site proxy has published (and are not
    /// too old).
    pub fn measured_networks(&self, id: &MemberId) -> usize {
        let measured = self.measured.lock().unwrap_or_else(|p| p.into_inner());
        measured.get(id).map_or(0, |m| m.len())
    }

    /// Takes in round-trip times a member's site proxy published, and publishes a snapshot
    /// whose latency table holds them.
    pub fn measured(&self, id: &MemberId, update: &RttUpdate) {
        if !update.whole && update.networks.is_empty() {
            return;
        }
        let now = unix_now();
        let latency = {
            let mut measured = self.measured.lock().unwrap_or_else(|p| p.into_inner());
            merge(measured.entry(id.clone()).or_default(), update, now);
            Arc::new(Latency::build(measured.iter(), now))
        };
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = (**self.current.load()).clone();
        next.latency = latency;
        next.id = fresh_snapshot_id();
        self.current.store(Arc::new(next));
    }

    /// Keeps the load report a member's check read last.
    pub fn reported(&self, id: &MemberId, report: LoadReport) {
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.insert(
            id.clone(),
            Reported {
                at: unix_now(),
                report,
            },
        );
    }

    /// The load report a member's check read last, if its check reads one.
    pub fn last_report(&self, id: &MemberId) -> Option<Reported> {
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.get(id).cloned()
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

    /// Weight factor changes of `id` since start.
    pub fn factor_changes(&self, id: &MemberId) -> u64 {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.factor_changes.get(id).copied().unwrap_or(0)
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
        if before.passive != after.passive {
            push("passive", label(&before.passive), label(&after.passive));
        }
        if before.factor != after.factor {
            push(
                "factor",
                before.factor.to_string(),
                after.factor.to_string(),
            );
            *h.factor_changes.entry(id.clone()).or_default() += 1;
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
            Change::Health(id, _)
            | Change::Admin(id, _)
            | Change::Factor(id, _)
            | Change::Passive(id, _) => id,
        };
        let before = old.get(id);
        let mut after = before;
        match change {
            Change::Health(_, h) => after.health = h,
            Change::Admin(_, a) => after.admin = a,
            Change::Factor(_, f) => after.factor = f,
            Change::Passive(_, p) => after.passive = p,
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
pub(super) fn label<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
