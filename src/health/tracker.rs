//! The rise/fall tracker: the one place where probe outcomes become health.

use super::*;

/// What a single probe saw.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeOutcome {
    /// The check passed; a site proxy's load check carries what it read.
    Up {
        latency: Duration,
        report: Option<SiteReport>,
    },
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
