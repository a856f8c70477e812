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
        probes: Vec<(ProbeSpec, Vec<MemberId>)>,
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

pub(super) async fn run_probe(
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

pub(super) fn jittered(interval: Duration, percent: u8) -> Duration {
    if percent == 0 {
        return interval;
    }
    let span = interval.as_secs_f64() * f64::from(percent.min(100)) / 100.0;
    let offset = (rand::random::<f64>() * 2.0 - 1.0) * span;
    Duration::from_secs_f64((interval.as_secs_f64() + offset).max(0.001))
}
