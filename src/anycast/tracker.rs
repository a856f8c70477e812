//! Decisions: per prefix, rise and fall over the check outcomes, and drains, into a route.

use super::*;

/// What a prefix should be in BGP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    Withdrawn,
    Announced,
    /// Announced with the degraded prepends: the service answers, wrongly.
    Degraded,
}

/// Rise/fall/hold-down for one prefix. Pure: time comes in as an argument.
#[derive(Debug, Clone)]
pub struct Tracker {
    rise: u32,
    fall: u32,
    hold_down: Duration,
    on_failure: OnFailure,
    route: Route,
    good_run: u32,
    /// Consecutive answers, good or wrong.
    answering_run: u32,
    /// Consecutive failures, wrong or no answer.
    bad_run: u32,
    /// Consecutive checks with no answer at all.
    dead_run: u32,
    withdrawn_at: Option<Instant>,
}

impl Tracker {
    /// A tracker starting withdrawn (the helper withdraws everything when it starts).
    pub fn new(rise: u32, fall: u32, hold_down: Duration, on_failure: OnFailure) -> Tracker {
        Tracker {
            rise,
            fall,
            hold_down,
            on_failure,
            route: Route::Withdrawn,
            good_run: 0,
            answering_run: 0,
            bad_run: 0,
            dead_run: 0,
            withdrawn_at: None,
        }
    }

    pub fn route(&self) -> Route {
        self.route
    }

    /// Takes one outcome (or a drain) and returns the new route when it changes.
    pub fn observe(&mut self, outcome: &Outcome, drained: bool, now: Instant) -> Option<Route> {
        if drained {
            self.good_run = 0;
            self.answering_run = 0;
            return self.go(Route::Withdrawn, now);
        }
        match outcome {
            Outcome::Good => {
                self.good_run += 1;
                self.answering_run += 1;
                self.bad_run = 0;
                self.dead_run = 0;
            }
            Outcome::Wrong(_) => {
                self.good_run = 0;
                self.answering_run += 1;
                self.bad_run += 1;
                self.dead_run = 0;
            }
            Outcome::NoAnswer(_) => {
                self.good_run = 0;
                self.answering_run = 0;
                self.bad_run += 1;
                self.dead_run += 1;
            }
        }
        let degrade = self.on_failure == OnFailure::Degrade;
        let held = self
            .withdrawn_at
            .is_some_and(|t| now.duration_since(t) < self.hold_down);
        let next = match self.route {
            Route::Announced if self.dead_run >= self.fall => Route::Withdrawn,
            Route::Announced if self.bad_run >= self.fall && degrade => Route::Degraded,
            Route::Announced if self.bad_run >= self.fall => Route::Withdrawn,
            Route::Degraded if self.dead_run >= self.fall => Route::Withdrawn,
            Route::Degraded if self.good_run >= self.rise => Route::Announced,
            Route::Withdrawn if held => Route::Withdrawn,
            Route::Withdrawn if self.good_run >= self.rise => Route::Announced,
            Route::Withdrawn if degrade && self.answering_run >= self.rise => Route::Degraded,
            r => r,
        };
        self.go(next, now)
    }

    fn go(&mut self, next: Route, now: Instant) -> Option<Route> {
        if next == self.route {
            return None;
        }
        if next == Route::Withdrawn {
            self.withdrawn_at = Some(now);
        }
        self.route = next;
        Some(next)
    }
}
