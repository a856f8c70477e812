//! The probe tasks of one config: one per distinct probe, with jitter, feeding the tracker
//! and the health table.

use super::*;

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

/// The running probe tasks of one config. Dropping it (a reload replaces it) tells them to
/// stop at their next wait: a probe in flight is dropped, but a round that has a result is
/// applied to all its members first, never cut half-way.
pub struct ProbeSet {
    tasks: Vec<JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
    /// Last outcome per probe address, shared with `status`.
    pub last: Arc<Mutex<HashMap<SocketAddr, LastProbe>>>,
}

impl Drop for ProbeSet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// What a member's load reports may do to it: shed load between watermarks, trip it on what
/// its clients got.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoadRules {
    pub shed: Option<ShedRule>,
    pub passive: Option<PassiveRule>,
}

/// The load rules of the members whose site has any, by member.
pub type Steering = HashMap<MemberId, LoadRules>;

impl ProbeSet {
    /// Starts one task per distinct spec; each drives the health of the members listed with it
    /// and, for those in `steering`, their weight factor and passive state. Trackers, shedders
    /// and judges start from the members' current state, so a reload keeps what is known.
    pub fn start(
        probes: Vec<(ProbeSpec, Vec<MemberId>)>,
        steering: &Steering,
        store: Arc<HealthStore>,
    ) -> Result<ProbeSet, ProbeError> {
        let last = Arc::new(Mutex::new(HashMap::new()));
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for (spec, members) in probes {
            let prober = prober_for(&spec)?;
            let start = members
                .first()
                .map(|m| store.snapshot().get(m).health)
                .unwrap_or_default();
            let tracker = Tracker::new(spec.rise, spec.fall, start);
            let members = members
                .into_iter()
                .map(|id| {
                    let rules = steering.get(&id).copied().unwrap_or_default();
                    let now = store.snapshot().get(&id);
                    Driven {
                        shedder: rules.shed.map(|r| Shedder::new(r, now.factor)),
                        passive: rules.passive.map(|r| PassiveJudge::new(r, now.passive)),
                        id,
                    }
                })
                .collect();
            tasks.push(tokio::spawn(run_probe(
                spec,
                prober,
                tracker,
                members,
                store.clone(),
                last.clone(),
                stopping.clone(),
            )));
        }
        Ok(ProbeSet { tasks, stop, last })
    }

    /// Stops every task at its next wait and returns when all have.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

/// A member a probe drives, with its shedder and passive judge when its site has them.
pub(super) struct Driven {
    pub(super) id: MemberId,
    pub(super) shedder: Option<Shedder>,
    pub(super) passive: Option<PassiveJudge>,
}

impl From<MemberId> for Driven {
    fn from(id: MemberId) -> Self {
        Driven {
            id,
            shedder: None,
            passive: None,
        }
    }
}

impl Driven {
    /// Reads what a site proxy reported: the shedder and the judge each take the load
    /// report, the health table the round-trip times.
    fn read(&mut self, site: &SiteReport, store: &HealthStore) {
        let report = &site.load;
        if let Some(shed) = self.shedder.as_mut().and_then(|s| s.observe(report)) {
            tracing::debug!(member = %self.id, from = %shed.from, to = %shed.to, value = shed.value,
                "weight factor changed");
        }
        if let Some(p) = self.passive.as_mut() {
            p.observe(report);
        }
        store.reported(&self.id, report.clone());
        if let Some(rtt) = &site.rtt {
            store.measured(&self.id, rtt);
        }
    }

    /// Applies what the probe and the reports decided to the health table.
    pub(super) fn apply(&self, probed: Health, store: &HealthStore) {
        let health = if self.passive.as_ref().is_some_and(PassiveJudge::takes_down) {
            Health::Down
        } else {
            probed
        };
        if health != Health::Unknown {
            store.apply(Change::Health(self.id.clone(), health));
        }
        // Without rules (a reload took them away) the member is clear and in full again.
        let passive = self.passive.as_ref().map_or(Passive::Clear, |p| p.state);
        store.apply(Change::Passive(self.id.clone(), passive));
        let shed = self.shedder.as_ref().map_or(Factor::FULL, |s| s.factor);
        let cap = self
            .passive
            .as_ref()
            .map_or(Factor::FULL, PassiveJudge::cap);
        store.apply(Change::Factor(self.id.clone(), shed.min(cap)));
    }
}

pub(super) async fn run_probe(
    spec: ProbeSpec,
    prober: Box<dyn Prober>,
    mut tracker: Tracker,
    mut members: Vec<Driven>,
    store: Arc<HealthStore>,
    last: Arc<Mutex<HashMap<SocketAddr, LastProbe>>>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let outcome = tokio::select! {
            outcome = prober.probe() => outcome,
            _ = stopping.changed() => return,
        };
        let up = matches!(outcome, ProbeOutcome::Up { .. });
        let (detail, latency_ms) = match &outcome {
            ProbeOutcome::Up { latency, .. } => (
                format!("up in {} ms", latency.as_millis()),
                Some(latency.as_secs_f64() * 1000.0),
            ),
            ProbeOutcome::Down { reason } => (reason.clone(), None),
        };
        store.probe_observed(
            spec.addr,
            match &outcome {
                ProbeOutcome::Up { latency, .. } => Some(*latency),
                ProbeOutcome::Down { .. } => None,
            },
        );
        if let Some(t) = tracker.observe(up) {
            tracing::info!(probe = %spec.addr, from = ?t.from, to = ?t.to, %detail, "health changed");
        }
        // Re-assert the state every round: members added by a reload, or a store restored
        // from disk, converge without waiting for the next transition.
        for m in &mut members {
            if let ProbeOutcome::Up {
                report: Some(report),
                ..
            } = &outcome
            {
                m.read(report, &store);
            }
            m.apply(tracker.state, &store);
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
        // Nothing below awaits before this point: a round is applied whole or not at all.
        tokio::select! {
            _ = tokio::time::sleep(jittered(spec.interval, spec.jitter_percent)) => {}
            _ = stopping.changed() => return,
        }
    }
}

pub(super) fn jittered(interval: Duration, percent: u8) -> Duration {
    if percent == 0 {
        return interval;
    }
    let span = interval.as_secs_f64() * f64::from(percent.min(100)) / 100.0;
    let offset = (rand::random::<f64>() * 2.0 - 1.0) * span;
    Duration::from_secs_f64((interval.as_secs_f64() + offset).max(0.001))
}
