//! Load shedding: a site proxy's load report, the weight factor it earns a member, and the
//! [`Shedder`] that alone turns reports into factors (pure, like [`Tracker`]: no clock, no I/O).
//!
//! Between the low and high watermarks of the chosen signal the factor falls in a straight
//! line from full to nothing. Two rules keep answers from oscillating as shed clients move
//! away and the signal falls with them:
//! - a member left out (it crossed the high mark) comes back only once the signal is back at
//!   the middle of the band, not as soon as it dips under the high mark;
//! - inside the band the factor moves only by [`STEP`] or more; crossing either watermark
//!   always takes effect.
//!
//! Shedding acts on each report; only `down` waits for `fall` failures.

use super::*;

/// The document a site proxy publishes at `GET /load` on its report listener.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LoadReport {
    pub servers: usize,
    pub healthy_servers: usize,
    pub active_connections: usize,
    pub in_flight: u64,
    pub requests_per_second: f64,
    /// Over the window; `None` without requests.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The share of 5xx responses over the window (0 without requests).
    pub error_rate: f64,
    /// Seconds the figures cover.
    pub window_seconds: f64,
}

/// A member's weight factor in thousandths: 1000 answers it in full, 0 leaves it out.
/// Weighted policies multiply its weight by the factor; the others keep that share of client
/// networks on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Factor(u16);

impl Factor {
    pub const FULL: Factor = Factor(1000);
    pub const NONE: Factor = Factor(0);

    /// The factor for a share in `[0, 1]` (clamped), to the nearest thousandth.
    pub fn of(share: f64) -> Factor {
        Factor((share.clamp(0.0, 1.0) * 1000.0).round() as u16)
    }

    /// The factor of `permille` thousandths (at most 1000).
    pub fn from_permille(permille: u16) -> Factor {
        Factor(permille.min(1000))
    }

    pub fn permille(self) -> u16 {
        self.0
    }

    pub fn share(self) -> f64 {
        f64::from(self.0) / 1000.0
    }

    /// Neither full nor nothing: the member keeps only part of its clients.
    pub fn is_partial(self) -> bool {
        self.0 > 0 && self.0 < 1000
    }
}

impl Default for Factor {
    fn default() -> Self {
        Factor::FULL
    }
}

impl std::fmt::Display for Factor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}%", f64::from(self.0) / 10.0)
    }
}

/// What a site's load is measured by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Client connections open at the site proxy.
    Connections,
    /// Requests per second over the report's window.
    Requests,
    /// The share of the site's servers that are healthy, in percent: the site sheds as it
    /// falls, so `high` is where shedding starts and `low` where the site is left out.
    HealthyServers,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Connections => "connections",
            Signal::Requests => "requests",
            Signal::HealthyServers => "healthy-servers",
        }
    }

    pub fn from_name(name: &str) -> Option<Signal> {
        [
            Signal::Connections,
            Signal::Requests,
            Signal::HealthyServers,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// The signal's value in a report.
    pub fn read(self, report: &LoadReport) -> f64 {
        match self {
            Signal::Connections => report.active_connections as f64,
            Signal::Requests => report.requests_per_second,
            Signal::HealthyServers if report.servers == 0 => 0.0,
            Signal::HealthyServers => 100.0 * report.healthy_servers as f64 / report.servers as f64,
        }
    }
}

/// A site's watermarks on one signal (`low < high`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShedRule {
    pub signal: Signal,
    pub low: f64,
    pub high: f64,
}

impl ShedRule {
    /// The factor the signal's value calls for, before hysteresis: full at or below `low`,
    /// nothing at or above `high`, a straight line between (mirrored for healthy servers).
    pub fn curve(&self, value: f64) -> f64 {
        let along = ((value - self.low) / (self.high - self.low)).clamp(0.0, 1.0);
        match self.signal {
            Signal::HealthyServers => along,
            _ => 1.0 - along,
        }
    }
}

/// The smallest move of the factor inside the band.
pub const STEP: f64 = 0.1;

/// Turns one member's load reports into its weight factor.
#[derive(Debug, Clone)]
pub struct Shedder {
    pub rule: ShedRule,
    pub factor: Factor,
}

/// A factor change the shedder decided on, and the signal's value that moved it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shed {
    pub from: Factor,
    pub to: Factor,
    pub value: f64,
}

impl Shedder {
    pub fn new(rule: ShedRule, factor: Factor) -> Self {
        Shedder { rule, factor }
    }

    pub fn observe(&mut self, report: &LoadReport) -> Option<Shed> {
        let value = self.rule.signal.read(report);
        let target = self.rule.curve(value);
        let current = self.factor.share();
        let crossed = target <= 0.0 || target >= 1.0;
        if self.factor == Factor::NONE && target < 0.5 {
            // Left out, it stays out until the signal is back at the middle of the band.
            return None;
        }
        if !crossed && self.factor != Factor::NONE && (target - current).abs() + 1e-9 < STEP {
            return None;
        }
        let to = Factor::of(target);
        if to == self.factor {
            return None;
        }
        let from = std::mem::replace(&mut self.factor, to);
        Some(Shed { from, to, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections(n: usize) -> LoadReport {
        LoadReport {
            active_connections: n,
            ..Default::default()
        }
    }

    fn shedder() -> Shedder {
        Shedder::new(
            ShedRule {
                signal: Signal::Connections,
                low: 100.0,
                high: 200.0,
            },
            Factor::FULL,
        )
    }

    #[test]
    fn curve_is_full_below_low_nothing_above_high_and_straight_between() {
        let r = shedder().rule;
        assert_eq!(r.curve(0.0), 1.0);
        assert_eq!(r.curve(100.0), 1.0);
        assert!((r.curve(150.0) - 0.5).abs() < 1e-9);
        assert!((r.curve(175.0) - 0.25).abs() < 1e-9);
        assert_eq!(r.curve(200.0), 0.0);
        assert_eq!(r.curve(5000.0), 0.0);
        let healthy = ShedRule {
            signal: Signal::HealthyServers,
            low: 50.0,
            high: 100.0,
        };
        assert_eq!(healthy.curve(100.0), 1.0);
        assert!((healthy.curve(75.0) - 0.5).abs() < 1e-9);
        assert_eq!(healthy.curve(40.0), 0.0);
    }

    #[test]
    fn a_jump_past_each_watermark_is_one_change() {
        let mut s = shedder();
        assert_eq!(s.observe(&connections(50)), None);
        let out = s.observe(&connections(500)).unwrap();
        assert_eq!((out.from, out.to), (Factor::FULL, Factor::NONE));
        assert_eq!(s.observe(&connections(450)), None);
        let back = s.observe(&connections(10)).unwrap();
        assert_eq!((back.from, back.to), (Factor::NONE, Factor::FULL));
        assert_eq!(s.observe(&connections(20)), None);
    }

    #[test]
    fn inside_the_band_small_moves_are_ignored() {
        let mut s = shedder();
        // Jitter just above the low mark never moves the factor.
        for n in [101, 104, 99, 108, 100, 103] {
            assert_eq!(s.observe(&connections(n)), None, "{n}");
        }
        assert_eq!(
            s.observe(&connections(130)).map(|c| c.to),
            Some(Factor::of(0.7))
        );
        for n in [125, 135, 131, 138] {
            assert_eq!(s.observe(&connections(n)), None, "{n}");
        }
        assert_eq!(
            s.observe(&connections(150)).map(|c| c.to),
            Some(Factor::of(0.5))
        );
        // Back under the low mark: full again at once.
        assert_eq!(
            s.observe(&connections(90)).map(|c| c.to),
            Some(Factor::FULL)
        );
    }

    #[test]
    fn a_member_left_out_returns_at_the_middle_of_the_band() {
        let mut s = shedder();
        s.observe(&connections(250));
        assert_eq!(s.factor, Factor::NONE);
        // Just under the high mark: still out, the load it shed has not settled yet.
        for n in [199, 180, 160, 151] {
            assert_eq!(s.observe(&connections(n)), None, "{n}");
        }
        assert_eq!(
            s.observe(&connections(140)).map(|c| c.to),
            Some(Factor::of(0.6))
        );
    }

    #[test]
    fn an_oscillating_signal_around_the_high_mark_changes_the_factor_once() {
        let mut s = shedder();
        let changes = [190, 210, 195, 205, 199, 201, 190, 220]
            .into_iter()
            .filter_map(|n| s.observe(&connections(n)))
            .count();
        // 1.0 -> 0.1, then out; the dips under the mark never bring it back.
        assert_eq!(changes, 2);
        assert_eq!(s.factor, Factor::NONE);
    }

    #[test]
    fn healthy_servers_shed_as_the_share_falls() {
        let mut s = Shedder::new(
            ShedRule {
                signal: Signal::HealthyServers,
                low: 50.0,
                high: 100.0,
            },
            Factor::FULL,
        );
        let report = |healthy, servers| LoadReport {
            healthy_servers: healthy,
            servers,
            ..Default::default()
        };
        assert_eq!(s.observe(&report(4, 4)), None);
        assert_eq!(
            s.observe(&report(3, 4)).map(|c| c.to),
            Some(Factor::of(0.5))
        );
        assert_eq!(s.observe(&report(1, 4)).map(|c| c.to), Some(Factor::NONE));
        assert_eq!(s.observe(&report(0, 0)), None);
    }
}
