//! Anycast: announce this node's service prefixes through a real BGP daemon only while the
//! node answers the way clients expect, and withdraw them when it does not.
//!
//! `meridian anycast` runs beside `meridian serve` (and later the site proxy). It checks each
//! prefix the way a client would, through the service address itself: a DNS query for a canary
//! name (expected rcode, AA set, answers only from an expected set) and optionally HTTP URLs.
//! A [`Tracker`] per prefix turns check outcomes into a [`Route`] with rise, fall and a
//! hold-down after a withdrawal (upstream route-flap dampening punishes a flapping prefix for
//! much longer than any outage). A driver hands the decision to the BGP daemon:
//!
//! - [`Driver::ExaBgp`]: the helper is an ExaBGP `process`; it prints one `announce route` or
//!   `withdraw route` line per change on stdout, reads ExaBGP's acknowledgements on stdin and
//!   exits when stdin closes (ExaBGP is gone). On start it withdraws every prefix, since
//!   ExaBGP keeps the routes of a helper that died.
//! - [`Driver::Bird`]: for sites that already run BIRD 2. The helper writes an include file
//!   of prefix sets (temp file, fsync, rename) that the operator's export filter reads, and
//!   runs `birdc configure` (never `configure soft`, which would not re-evaluate filters on
//!   routes already exported) and checks the reply. BIRD rejects an empty prefix set, so each
//!   set always holds a dummy prefix that never matches a real route.
//!
//! A drain file withdraws every prefix until it is removed, across restarts of the helper and
//! of the machine. Degraded mode (`on_failure = "degrade"`) keeps announcing, with extra
//! AS-path prepends, while the service answers but answers wrongly: a bad configuration pushed
//! to every site at once must not withdraw the service everywhere. A node that does not answer
//! at all is always withdrawn.
//!
//! A watchdog thread aborts the process when the check loop stops making progress, so ExaBGP
//! (or systemd) starts a fresh one instead of keeping a stale announcement alive.
//!
//! Files: `config` (the helper's file), `check` (the checks), `tracker` (rise, fall and
//! hold-down into a route), `driver` (ExaBGP and BIRD); this one holds the drain file, the
//! status and the helper's loop.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::{parse_duration, parse_toml, ConfigError};

/// What can go wrong outside the checks themselves.
#[derive(Debug, thiserror::Error)]
pub enum AnycastError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("birdc configure: {0}")]
    Bird(String),
    #[error("writing to ExaBGP: {0}")]
    ExaBgp(std::io::Error),
}

mod check;
mod config;
mod driver;
mod tracker;
pub use check::*;
pub use config::*;
pub use driver::*;
pub use tracker::*;

// ---------------------------------------------------------------- drain and status

/// Withdraws every prefix until [`undrain`]: creates the drain file.
pub fn drain(cfg: &AnycastConfig) -> Result<(), AnycastError> {
    let stamp = crate::clock::unix_now();
    write_atomically(
        &cfg.drain_file,
        format!("drained at unix time {stamp}\n").as_bytes(),
    )
}

pub fn undrain(cfg: &AnycastConfig) -> Result<(), AnycastError> {
    match std::fs::remove_file(&cfg.drain_file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AnycastError::File {
            path: cfg.drain_file.clone(),
            source: e,
        }),
        _ => Ok(()),
    }
}

pub fn is_drained(cfg: &AnycastConfig) -> bool {
    cfg.drain_file.exists()
}

/// One prefix in the status file.
#[derive(Debug, Clone, Serialize)]
pub struct PrefixStatus {
    pub prefix: String,
    pub route: Route,
    pub transitions: u64,
    pub last: Outcome,
    /// Unix time of the last change.
    pub since: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub drained: bool,
    pub prefixes: Vec<PrefixStatus>,
}

// ---------------------------------------------------------------- the helper

/// Runs the helper until SIGTERM/SIGINT (withdraws everything, returns) or, under ExaBGP,
/// until stdin closes (ExaBGP is gone; returns).
pub fn run(cfg: AnycastConfig, kind: DriverKind) -> Result<(), AnycastError> {
    let mut driver = Driver::new(kind, &cfg);
    let all_withdrawn = vec![Route::Withdrawn; cfg.prefixes.len()];
    let every: Vec<usize> = (0..cfg.prefixes.len()).collect();
    let every = &every;
    // ExaBGP keeps the routes of a helper that died: start from a clean slate. A BGP daemon
    // that is not up yet gets the routes again at every check until it takes them.
    let mut retry = match driver.apply(&cfg.prefixes, &all_withdrawn, every) {
        Ok(()) => false,
        Err(e @ AnycastError::ExaBgp(_)) => return Err(e),
        Err(e) => {
            tracing::error!(error = %e, "could not withdraw at start; trying again every check");
            true
        }
    };
    tracing::info!(
        prefixes = cfg.prefixes.len(),
        "anycast helper started; every prefix withdrawn"
    );

    let heartbeat = Arc::new(AtomicU64::new(now_ms()));
    spawn_watchdog(heartbeat.clone(), cfg.watchdog);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    if kind == DriverKind::ExaBgp {
        spawn_ack_reader(stop_tx.clone());
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| AnycastError::File {
            path: PathBuf::from("tokio runtime"),
            source,
        })?;
    rt.block_on(async move {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .unwrap_or_default();
        let mut trackers: Vec<Tracker> = cfg
            .prefixes
            .iter()
            .map(|p| Tracker::new(cfg.rise, cfg.fall, cfg.hold_down, p.on_failure))
            .collect();
        let mut status = Status {
            drained: false,
            prefixes: cfg
                .prefixes
                .iter()
                .map(|p| PrefixStatus {
                    prefix: p.prefix.to_string(),
                    route: Route::Withdrawn,
                    transitions: 0,
                    last: Outcome::NoAnswer("not checked yet".into()),
                    since: now_ms() / 1000,
                })
                .collect(),
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|source| AnycastError::File { path: "SIGTERM".into(), source })?;
        let mut tick = tokio::time::interval(cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reason = loop {
            tokio::select! {
                _ = term.recv() => break "SIGTERM",
                _ = tokio::signal::ctrl_c() => break "SIGINT",
                _ = stop_rx.changed() => break "ExaBGP closed stdin",
                _ = tick.tick() => {}
            }
            heartbeat.store(now_ms(), Ordering::Relaxed);
            let drained = is_drained(&cfg);
            status.drained = drained;
            let mut outcomes = Vec::new();
            for p in &cfg.prefixes {
                outcomes.push(check_prefix(p, cfg.timeout, &http).await);
            }
            let now = Instant::now();
            let mut changed = Vec::new();
            for (i, outcome) in outcomes.into_iter().enumerate() {
                if let Some(route) = trackers[i].observe(&outcome, drained, now) {
                    status.prefixes[i].transitions += 1;
                    status.prefixes[i].since = now_ms() / 1000;
                    tracing::warn!(
                        prefix = %cfg.prefixes[i].prefix,
                        route = ?route,
                        drained,
                        result = ?outcome,
                        transitions = status.prefixes[i].transitions,
                        "anycast route change"
                    );
                    changed.push(i);
                }
                status.prefixes[i].route = trackers[i].route();
                status.prefixes[i].last = outcome;
            }
            // Set when the daemon refused a change: every route is handed over again.
            if retry {
                changed = every.to_vec();
            }
            if !changed.is_empty() {
                let routes: Vec<Route> = trackers.iter().map(|t| t.route()).collect();
                retry = match driver.apply(&cfg.prefixes, &routes, &changed) {
                    Ok(()) => false,
                    Err(e) => {
                        tracing::error!(error = %e, "could not hand the routes to the BGP daemon; trying again next check");
                        true
                    }
                };
            }
            if let Ok(json) = serde_json::to_vec_pretty(&status) {
                if let Err(e) = write_atomically(&cfg.status_file, &json) {
                    tracing::debug!(error = %e, "status file not written");
                }
            }
        };
        tracing::info!(reason, "anycast helper stopping; withdrawing every prefix");
        if reason != "ExaBGP closed stdin" {
            driver.apply(&cfg.prefixes, &all_withdrawn, every)?;
        }
        Ok(())
    })
}

/// Withdraws every prefix once and returns (for a service manager's stop hook).
pub fn withdraw_all(cfg: &AnycastConfig, kind: DriverKind) -> Result<(), AnycastError> {
    let routes = vec![Route::Withdrawn; cfg.prefixes.len()];
    let every: Vec<usize> = (0..cfg.prefixes.len()).collect();
    Driver::new(kind, cfg).apply(&cfg.prefixes, &routes, &every)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Aborts the process when the check loop has not beaten for `limit`: a stuck helper must not
/// keep a route announced. ExaBGP (or systemd) starts a new one, which withdraws first.
fn spawn_watchdog(heartbeat: Arc<AtomicU64>, limit: Duration) {
    std::thread::Builder::new()
        .name("anycast-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(250));
            let last = heartbeat.load(Ordering::Relaxed);
            if now_ms().saturating_sub(last) > limit.as_millis() as u64 {
                eprintln!("meridian anycast: check loop stalled for over {limit:?}; aborting");
                std::process::abort();
            }
        })
        .expect("spawn watchdog thread");
}

/// Reads ExaBGP's acknowledgements ("done", "error", "shutdown") from stdin; stdin closing
/// means ExaBGP went away, which stops the helper.
fn spawn_ack_reader(stop: tokio::sync::watch::Sender<bool>) {
    std::thread::Builder::new()
        .name("exabgp-acks".into())
        .spawn(move || {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines() {
                match line.as_deref().map(str::trim) {
                    Ok("done") | Ok("") => {}
                    Ok(s) if s.starts_with("shutdown") => break,
                    Ok(other) => tracing::warn!(reply = other, "ExaBGP did not accept a command"),
                    Err(_) => break,
                }
            }
            let _ = stop.send(true);
        })
        .expect("spawn ack reader thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrong() -> Outcome {
        Outcome::Wrong("x".into())
    }
    fn dead() -> Outcome {
        Outcome::NoAnswer("x".into())
    }

    #[test]
    fn rises_falls_and_holds_down() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut t = Tracker::new(2, 2, Duration::from_secs(10), OnFailure::Withdraw);
        assert_eq!(t.observe(&Outcome::Good, false, s(0)), None);
        assert_eq!(
            t.observe(&Outcome::Good, false, s(1)),
            Some(Route::Announced)
        );
        assert_eq!(t.observe(&dead(), false, s(2)), None);
        assert_eq!(t.observe(&dead(), false, s(3)), Some(Route::Withdrawn));
        // Healthy again, but inside the hold-down: stays withdrawn.
        for n in 4..13 {
            assert_eq!(t.observe(&Outcome::Good, false, s(n)), None, "second {n}");
        }
        assert_eq!(
            t.observe(&Outcome::Good, false, s(13)),
            Some(Route::Announced)
        );
    }

    #[test]
    fn drain_withdraws_at_once_and_rise_counts_after_it() {
        let t0 = Instant::now();
        let mut t = Tracker::new(2, 3, Duration::ZERO, OnFailure::Withdraw);
        t.observe(&Outcome::Good, false, t0);
        assert_eq!(t.observe(&Outcome::Good, false, t0), Some(Route::Announced));
        assert_eq!(t.observe(&Outcome::Good, true, t0), Some(Route::Withdrawn));
        assert_eq!(t.observe(&Outcome::Good, true, t0), None);
        assert_eq!(t.observe(&Outcome::Good, false, t0), None);
        assert_eq!(t.observe(&Outcome::Good, false, t0), Some(Route::Announced));
    }

    #[test]
    fn degrade_mode_prepends_on_wrong_answers_but_withdraws_on_silence() {
        let t0 = Instant::now();
        let mut t = Tracker::new(1, 2, Duration::ZERO, OnFailure::Degrade);
        assert_eq!(t.observe(&Outcome::Good, false, t0), Some(Route::Announced));
        assert_eq!(t.observe(&wrong(), false, t0), None);
        assert_eq!(t.observe(&wrong(), false, t0), Some(Route::Degraded));
        assert_eq!(t.observe(&dead(), false, t0), None);
        assert_eq!(t.observe(&dead(), false, t0), Some(Route::Withdrawn));
        // A node that comes back answering wrongly is announced degraded, not withdrawn.
        assert_eq!(t.observe(&wrong(), false, t0), Some(Route::Degraded));
        assert_eq!(t.observe(&Outcome::Good, false, t0), Some(Route::Announced));
    }

    #[test]
    fn without_degrade_a_wrong_answer_withdraws() {
        let t0 = Instant::now();
        let mut t = Tracker::new(1, 1, Duration::ZERO, OnFailure::Withdraw);
        t.observe(&Outcome::Good, false, t0);
        assert_eq!(t.observe(&wrong(), false, t0), Some(Route::Withdrawn));
        assert_eq!(t.observe(&wrong(), false, t0), None);
    }

    fn spec(text: &str) -> Result<AnycastConfig, ConfigError> {
        AnycastConfig::parse(text, Path::new("/etc/meridian/anycast.toml"))
    }

    const GOOD: &str = r#"
[anycast]
interval = "1s"
local_as = 65001

[[prefix]]
prefix = "192.0.2.53/32"
med = 50
prepend = 1
communities = ["65001:100"]
on_failure = "degrade"
[[prefix.check]]
kind = "dns"
server = "192.0.2.53"
name = "canary.gslb.example.com"
addresses = ["192.0.2.10"]

[[prefix]]
prefix = "2001:db8::53/128"
[[prefix.check]]
kind = "http"
url = "http://[2001:db8::53]/healthz"
expect_status = "200-399"
"#;

    #[test]
    fn lines_for_exabgp_carry_med_prepends_and_communities() {
        let cfg = spec(GOOD).unwrap();
        let p = &cfg.prefixes[0];
        assert_eq!(
            exabgp_line(p, Route::Announced, cfg.local_as),
            "announce route 192.0.2.53/32 next-hop self med 50 as-path [ 65001 ] community [ 65001:100 ]"
        );
        assert_eq!(
            exabgp_line(p, Route::Degraded, cfg.local_as),
            "announce route 192.0.2.53/32 next-hop self med 50 as-path [ 65001 65001 65001 65001 ] community [ 65001:100 ]"
        );
        assert_eq!(
            exabgp_line(&cfg.prefixes[1], Route::Withdrawn, cfg.local_as),
            "withdraw route 2001:db8::53/128 next-hop self"
        );
        let Check::Dns { server, .. } = &p.checks[0] else {
            panic!()
        };
        assert_eq!(server.port(), 53);
    }

    #[test]
    fn bird_include_keeps_a_dummy_in_every_set() {
        let cfg = spec(GOOD).unwrap();
        let text = bird_include(&cfg.prefixes, &[Route::Withdrawn, Route::Withdrawn]);
        assert!(
            text.contains("define MERIDIAN_ANNOUNCE_V4 = [ 0.0.0.0/32 ];"),
            "{text}"
        );
        assert!(
            text.contains("define MERIDIAN_ANNOUNCE_V6 = [ ::/128 ];"),
            "{text}"
        );
        let text = bird_include(&cfg.prefixes, &[Route::Degraded, Route::Announced]);
        assert!(
            text.contains("MERIDIAN_ANNOUNCE_V4 = [ 0.0.0.0/32, 192.0.2.53/32 ];"),
            "{text}"
        );
        assert!(
            text.contains("MERIDIAN_DEGRADED_V4 = [ 0.0.0.0/32, 192.0.2.53/32 ];"),
            "{text}"
        );
        assert!(
            text.contains("MERIDIAN_ANNOUNCE_V6 = [ ::/128, 2001:db8::53/128 ];"),
            "{text}"
        );
        assert!(
            text.contains("MERIDIAN_DEGRADED_V6 = [ ::/128 ];"),
            "{text}"
        );
    }

    #[test]
    fn bad_configs_name_line_and_object() {
        let cases = [
            (
                GOOD.replace("192.0.2.53/32", "192.0.2.53/24"),
                "host bits set",
            ),
            (
                GOOD.replace("local_as = 65001", ""),
                "need [anycast] local_as",
            ),
            (
                GOOD.replace("kind = \"http\"", "kind = \"ping\""),
                "kind \"ping\"",
            ),
            (
                GOOD.replace("on_failure = \"degrade\"", "on_failure = \"panic\""),
                "on_failure",
            ),
            (GOOD.replace("med = 50", "mde = 50"), "unknown field"),
            (
                GOOD.replace("expect_status = \"200-399\"", "expect_status = \"399-200\""),
                "expect_status",
            ),
        ];
        for (text, want) in cases {
            let e = spec(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
            assert!(e.starts_with("/etc/meridian/anycast.toml:"), "{e}");
        }
        let e = spec(&GOOD.replace("kind = \"http\"", "kind = \"ping\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("prefix 2001:db8::53/128, check 1"), "{e}");
    }

    #[test]
    fn worst_outcome_wins() {
        assert_eq!(Outcome::worst([Outcome::Good, wrong()]), wrong());
        assert_eq!(Outcome::worst([dead(), Outcome::Good, wrong()]), dead());
        assert_eq!(Outcome::worst([]), Outcome::Good);
    }
}
