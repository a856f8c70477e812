//! Passive health: a site proxy's report of what real clients got (the share of 5xx answers,
//! the 99th percentile latency) takes a member out of service, or cuts its weight, before
//! its probes notice anything. [`PassiveJudge`] alone decides, from consecutive reports:
//! `reports` in a row past a threshold trip it, the check's `rise` in a row within both
//! bring it back. A report over too few requests to judge counts as within (a member taken
//! out gets no traffic, so it comes back on probation, as a circuit breaker half-opens).

use super::*;

/// Thresholds on what a site's clients got, and what crossing them does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PassiveRule {
    /// Share of 5xx responses (0 to 1) above which a report counts against the member.
    pub max_error_rate: Option<f64>,
    /// 99th percentile latency, in milliseconds, above which a report counts against it.
    pub max_p99_ms: Option<f64>,
    /// Requests a report's window must hold to be judged at all.
    pub min_requests: f64,
    /// Consecutive reports past a threshold that trip the member.
    pub reports: u32,
    /// Consecutive reports within both that bring it back (the check's `rise`).
    pub rise: u32,
    pub action: PassiveAction,
}

/// What a tripped member suffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassiveAction {
    /// Down for DNS, as if its probes had failed.
    Down,
    /// Its weight factor cut to at most this.
    Degrade(Factor),
}

/// Why a member is tripped, if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Passive {
    #[default]
    Clear,
    /// Its clients got too many 5xx answers.
    Errors,
    /// Its clients waited too long.
    Latency,
}

impl PassiveRule {
    /// What a report says against the member, if anything.
    pub fn breach(&self, report: &LoadReport) -> Option<Passive> {
        let requests = report.requests_per_second * report.window_seconds;
        if requests < self.min_requests {
            return None;
        }
        if self
            .max_error_rate
            .is_some_and(|max| report.error_rate > max)
        {
            return Some(Passive::Errors);
        }
        match (self.max_p99_ms, report.p99_ms) {
            (Some(max), Some(p99)) if p99 > max => Some(Passive::Latency),
            _ => None,
        }
    }
}

/// Turns one member's reports into its passive state.
#[derive(Debug, Clone)]
pub struct PassiveJudge {
    pub rule: PassiveRule,
    pub state: Passive,
    run: u32,
}

impl PassiveJudge {
    pub fn new(rule: PassiveRule, state: Passive) -> Self {
        PassiveJudge {
            rule,
            state,
            run: 0,
        }
    }

    /// Reads one report; returns the new state when it changed.
    pub fn observe(&mut self, report: &LoadReport) -> Option<Passive> {
        let breach = self.rule.breach(report);
        match (self.state, breach) {
            (Passive::Clear, None) => self.run = 0,
            (Passive::Clear, Some(why)) => {
                self.run += 1;
                if self.run >= self.rule.reports.max(1) {
                    self.run = 0;
                    self.state = why;
                    return Some(why);
                }
            }
            (_, None) => {
                self.run += 1;
                if self.run >= self.rule.rise.max(1) {
                    self.run = 0;
                    self.state = Passive::Clear;
                    return Some(Passive::Clear);
                }
            }
            (_, Some(why)) => {
                self.run = 0;
                if why != self.state {
                    self.state = why;
                    return Some(why);
                }
            }
        }
        None
    }

    /// The factor a tripped member is cut to (full otherwise, or when the action is down).
    pub fn cap(&self) -> Factor {
        match (self.state, self.rule.action) {
            (Passive::Clear, _) | (_, PassiveAction::Down) => Factor::FULL,
            (_, PassiveAction::Degrade(f)) => f,
        }
    }

    /// Whether the member is down for DNS whatever its probes say.
    pub fn takes_down(&self) -> bool {
        self.state != Passive::Clear && self.rule.action == PassiveAction::Down
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(requests: f64, error_rate: f64, p99_ms: f64) -> LoadReport {
        LoadReport {
            requests_per_second: requests / 10.0,
            window_seconds: 10.0,
            error_rate,
            p99_ms: Some(p99_ms),
            ..Default::default()
        }
    }

    fn judge(action: PassiveAction) -> PassiveJudge {
        PassiveJudge::new(
            PassiveRule {
                max_error_rate: Some(0.05),
                max_p99_ms: Some(500.0),
                min_requests: 20.0,
                reports: 3,
                rise: 2,
                action,
            },
            Passive::Clear,
        )
    }

    #[test]
    fn trips_after_consecutive_bad_reports_and_returns_after_rise_good_ones() {
        let mut j = judge(PassiveAction::Down);
        let bad = report(100.0, 0.2, 10.0);
        let good = report(100.0, 0.0, 10.0);
        assert_eq!(j.observe(&bad), None);
        assert_eq!(j.observe(&bad), None);
        assert_eq!(j.observe(&good), None, "a good report resets the run");
        assert_eq!(j.observe(&bad), None);
        assert_eq!(j.observe(&bad), None);
        assert_eq!(j.observe(&bad), Some(Passive::Errors));
        assert!(j.takes_down());
        assert_eq!(j.cap(), Factor::FULL);
        assert_eq!(j.observe(&good), None);
        assert_eq!(j.observe(&bad), None, "a bad report resets the way back");
        assert_eq!(j.observe(&good), None);
        assert_eq!(j.observe(&good), Some(Passive::Clear));
        assert!(!j.takes_down());
    }

    #[test]
    fn latency_trips_too_and_degrading_cuts_the_factor() {
        let mut j = judge(PassiveAction::Degrade(Factor::of(0.25)));
        let slow = report(100.0, 0.0, 900.0);
        for _ in 0..2 {
            assert_eq!(j.observe(&slow), None);
        }
        assert_eq!(j.observe(&slow), Some(Passive::Latency));
        assert!(!j.takes_down());
        assert_eq!(j.cap(), Factor::of(0.25));
    }

    #[test]
    fn too_few_requests_are_not_judged_and_count_as_good_on_the_way_back() {
        let mut j = judge(PassiveAction::Down);
        let few_bad = report(10.0, 1.0, 900.0);
        for _ in 0..5 {
            assert_eq!(j.observe(&few_bad), None);
        }
        let bad = report(100.0, 1.0, 10.0);
        for _ in 0..3 {
            j.observe(&bad);
        }
        assert!(j.takes_down());
        // Out of service it gets no traffic: quiet reports bring it back on probation.
        let quiet = report(0.0, 0.0, 0.0);
        assert_eq!(j.observe(&quiet), None);
        assert_eq!(j.observe(&quiet), Some(Passive::Clear));
    }
}
