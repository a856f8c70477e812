//! Health: probers that report raw outcomes, a rise/fall tracker that alone turns outcomes into
//! state, and the [`HealthStore`] whose lock-free snapshot the query path reads.
//!
//! Probe path: `ProbeSpec` (deduplicated across members) -> one task per spec with jitter ->
//! [`Prober::probe`] -> [`Tracker::observe`] -> on a transition, [`HealthStore::apply`] for every
//! member that shares the spec -> new snapshot swapped in, and the change handed to the
//! [`Persist`] hook (the `state` module's sled store when serving).
//!
//! Files: `probe` (the probers), `tracker` (rise and fall), `load` (load reports and the
//! weight factor they earn), `latency` (round-trip times per client network and site),
//! `passive` (what clients got, tripping a member), `scheduler` (the probe tasks of a config), `store` (the health
//! table); this one holds a member's identity and states.

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

impl Admin {
    /// The override a control call names (`drain`, `undrain`, `force-up`, `force-down`), for
    /// both control endpoints.
    pub fn from_action(action: &str) -> Option<Admin> {
        match action {
            "drain" => Some(Admin::Drained),
            "undrain" => Some(Admin::Normal),
            "force-up" => Some(Admin::ForcedUp),
            "force-down" => Some(Admin::ForcedDown),
            _ => None,
        }
    }
}

/// Everything the query path knows about one member.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct MemberState {
    pub admin: Admin,
    pub health: Health,
    /// The share of its weight (or of client networks) its site's load leaves it; full
    /// unless load shedding is configured for its site. Not persisted: the first load
    /// report after a start sets it.
    #[serde(default)]
    pub factor: Factor,
    /// Whether what its clients got (errors, latency) has tripped it. Not persisted either.
    #[serde(default)]
    pub passive: Passive,
}

mod latency;
mod load;
mod passive;
mod probe;
mod scheduler;
mod store;
mod tracker;
pub use latency::*;
pub use load::*;
pub use passive::*;
pub use probe::*;
pub use scheduler::*;
pub use store::*;
pub use tracker::*;

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

    /// A TCP probe every two seconds, without jitter; rise 2, fall 3.
    fn every_two_seconds() -> ProbeSpec {
        ProbeSpec {
            kind: ProbeKind::Tcp,
            addr: "127.0.0.1:9".parse().unwrap(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            jitter_percent: 0,
        }
    }

    struct Scripted(Mutex<Vec<bool>>);
    impl Prober for Scripted {
        fn probe(&self) -> BoxFuture<'_, ProbeOutcome> {
            let up = self.0.lock().unwrap().pop().unwrap_or(true);
            Box::pin(async move {
                if up {
                    ProbeOutcome::Up {
                        latency: Duration::ZERO,
                        report: None,
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
        let spec = every_two_seconds();
        // popped from the end: up, then down forever
        let prober = Box::new(Scripted(Mutex::new(vec![false, false, false, true])));
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run_probe(
            spec,
            prober,
            Tracker::new(2, 3, Health::Unknown),
            vec![id.clone().into()],
            store.clone(),
            Default::default(),
            stopping,
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(store.snapshot().get(&id).health, Health::Up);
        tokio::time::sleep(Duration::from_secs(4)).await; // two failures seen
        assert_eq!(store.snapshot().get(&id).health, Health::Up);
        tokio::time::sleep(Duration::from_secs(2)).await; // third failure
        assert_eq!(store.snapshot().get(&id).health, Health::Down);
        // Told to stop, the task ends at its next wait, on its own.
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_millis(10), task)
            .await
            .expect("stopped at once")
            .unwrap();
    }

    /// Up every time, with the load reports of a script (popped from the end).
    struct Reports(Mutex<Vec<usize>>);
    impl Prober for Reports {
        fn probe(&self) -> BoxFuture<'_, ProbeOutcome> {
            let connections = self.0.lock().unwrap().pop().unwrap_or(0);
            Box::pin(async move {
                ProbeOutcome::Up {
                    latency: Duration::ZERO,
                    report: Some(SiteReport {
                        load: LoadReport {
                            servers: 2,
                            healthy_servers: 2,
                            active_connections: connections,
                            ..Default::default()
                        },
                        rtt: None,
                    }),
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shedding_acts_on_each_report_while_health_waits_for_fall() {
        let store = Arc::new(HealthStore::in_memory());
        let id = MemberId::new("s", "192.0.2.1");
        let spec = every_two_seconds();
        let rule = ShedRule {
            signal: Signal::Connections,
            low: 100.0,
            high: 200.0,
        };
        // Popped from the end: quiet, past the high mark, just under it, at the middle of
        // the band, quiet again.
        let script = vec![10, 150, 190, 500, 10];
        let prober = Box::new(Reports(Mutex::new(script)));
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let member = Driven {
            id: id.clone(),
            shedder: Some(Shedder::new(rule, Factor::FULL)),
            passive: None,
        };
        tokio::spawn(run_probe(
            spec,
            prober,
            Tracker::new(2, 3, Health::Unknown),
            vec![member],
            store.clone(),
            Default::default(),
            stopping,
        ));
        let mut seen = Vec::new();
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let state = store.snapshot().get(&id);
            assert_eq!(state.health, Health::Up);
            seen.push(state.factor);
            tokio::time::sleep(Duration::from_millis(1990)).await;
        }
        assert_eq!(
            seen,
            [
                Factor::FULL,
                Factor::NONE,
                Factor::NONE,
                Factor::of(0.5),
                Factor::FULL
            ]
        );
        assert_eq!(store.factor_changes(&id), 3);
        let last = store.last_report(&id).expect("a report is kept");
        assert_eq!(last.report.active_connections, 10);
        stop.send(true).unwrap();
    }

    #[test]
    fn a_member_whose_rules_a_reload_took_away_is_clear_and_in_full_again() {
        let store = HealthStore::in_memory();
        let id = MemberId::new("s", "192.0.2.1");
        store.apply(Change::Factor(id.clone(), Factor::of(0.25)));
        store.apply(Change::Passive(id.clone(), Passive::Errors));
        Driven::from(id.clone()).apply(Health::Up, &store);
        let state = store.snapshot().get(&id);
        assert_eq!(
            (state.health, state.factor, state.passive),
            (Health::Up, Factor::FULL, Passive::Clear)
        );
    }
}
