//! A pool at run time: each server's requests in flight and latency, the shared step that
//! decides which servers may be used (health, drains, earlier tries), and the pool's algorithm
//! over what is left.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::algorithm::{self, Balancer, Candidate, Input};
use crate::balance::{Member, Pool};
use crate::clock;
use crate::config::PoolSettings;
use crate::health::{Admin, Health, HealthSnapshot};

/// Live counters of one server.
#[derive(Debug, Default)]
pub struct ServerLoad {
    pub in_flight: AtomicU32,
    /// Peak-EWMA response time in nanoseconds, as `f64` bits.
    latency: AtomicU64,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    /// Failures since the last success.
    in_a_row: AtomicU32,
    /// Ejected until this many milliseconds after the pool's start (0: not ejected).
    ejected_until: AtomicU64,
    /// Ejections in a row: each doubles the next one's length.
    ejections: AtomicU32,
    pub ejected_total: AtomicU64,
    /// Responses by status class (1xx to 5xx).
    pub classes: [AtomicU64; 5],
}

/// How quickly the latency average forgets: the weight of the newest sample.
const EWMA_NEW: f64 = 0.3;

impl ServerLoad {
    pub fn latency_ns(&self) -> f64 {
        f64::from_bits(self.latency.load(Ordering::Relaxed))
    }

    /// Folds in one response time. A sample above the average replaces it at once (the
    /// "peak" of peak-EWMA: a server that turns slow is avoided at its first slow answer);
    /// lower samples pull it down gradually.
    pub fn observe(&self, took: Duration) {
        let sample = took.as_nanos() as f64;
        let old = self.latency_ns();
        let new = if old == 0.0 || sample > old {
            sample
        } else {
            old + EWMA_NEW * (sample - old)
        };
        self.latency.store(new.to_bits(), Ordering::Relaxed);
    }
}

/// What one try at a server came to, for passive health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response that was not a 5xx.
    Answered,
    /// A connection failure, a timeout, or a 5xx response.
    Failed,
}

/// Counts a request in flight on a server until dropped (the response body's end).
pub struct InFlight(Arc<PoolState>, usize);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.load[self.1]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
        if self.0.max_in_flight.is_some() {
            self.0.freed.notify_waiters();
        }
    }
}

/// One pool's run-time state, rebuilt with each config (counters start at zero).
pub struct PoolState {
    pub index: usize,
    /// Ejections are timed from here.
    started: std::time::Instant,
    /// Tries and retries in the current second (on the coarse clock), for the retry budget.
    budget: std::sync::Mutex<(u64, u32, u32)>,
    pub load: Vec<ServerLoad>,
    id_hashes: Vec<u64>,
    cursor: AtomicU64,
    balancer: Box<dyn Balancer>,
    /// Each server's cap on requests in flight, and the signal that one finished.
    max_in_flight: Option<u32>,
    freed: tokio::sync::Notify,
    /// Requests waiting for a server below its cap.
    pub queued: AtomicU32,
}

impl PoolState {
    pub fn new(index: usize, pool: &Pool, settings: &PoolSettings) -> PoolState {
        PoolState {
            index,
            started: std::time::Instant::now(),
            budget: std::sync::Mutex::new((0, 0, 0)),
            load: pool.members.iter().map(|_| ServerLoad::default()).collect(),
            id_hashes: pool
                .members
                .iter()
                .map(|m| algorithm::hash_bytes(m.id.0.as_bytes()))
                .collect(),
            cursor: AtomicU64::new(0),
            balancer: algorithm::for_kind(&settings.algorithm),
            max_in_flight: settings.max_in_flight,
            freed: tokio::sync::Notify::new(),
            queued: AtomicU32::new(0),
        }
    }

    /// Whether `server` is below its cap on requests in flight.
    pub fn has_room(&self, server: usize) -> bool {
        self.max_in_flight
            .is_none_or(|max| self.load[server].in_flight.load(Ordering::Relaxed) < max)
    }

    /// Waits, up to the pool's `queue_timeout`, until `pick` finds a server: it is tried at
    /// once and again each time a request finishes. `Err(AllBusy)` when time ran out with every
    /// usable server at its cap, `Ok(None)` when none is usable at all.
    pub async fn queue_for(
        &self,
        settings: &PoolSettings,
        mut pick: impl FnMut() -> Pick,
    ) -> Result<Option<usize>, AllBusy> {
        let deadline = tokio::time::Instant::now() + settings.queue_timeout;
        let mut counted = false;
        let outcome = loop {
            let freed = self.freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            match pick() {
                Pick::Server(s) => break Ok(Some(s)),
                Pick::NoneUsable => break Ok(None),
                Pick::AllFull => {}
            }
            if !counted {
                counted = true;
                self.queued.fetch_add(1, Ordering::Relaxed);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                break Err(AllBusy);
            }
        };
        if counted {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        outcome
    }

    /// Marks a request in flight on `server`.
    pub fn start(self: &Arc<Self>, server: usize) -> InFlight {
        self.load[server].in_flight.fetch_add(1, Ordering::Relaxed);
        self.load[server].requests.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone(), server)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether `server` is out for its recent failures.
    pub fn ejected(&self, server: usize) -> bool {
        // Never ejected: no clock to read.
        let until = self.load[server].ejected_until.load(Ordering::Relaxed);
        until != 0 && self.now_ms() < until
    }

    /// Passive health: a success clears a server's failures; `eject_after` failures in a row
    /// eject it for `eject_for`, doubled for each ejection in a row. When an ejection ends the
    /// server takes requests again, and one more failure ejects it at once.
    pub fn record(&self, server: usize, outcome: Outcome, settings: &PoolSettings) -> bool {
        let load = &self.load[server];
        if outcome == Outcome::Answered {
            load.in_a_row.store(0, Ordering::Relaxed);
            load.ejections.store(0, Ordering::Relaxed);
            return false;
        }
        load.failures.fetch_add(1, Ordering::Relaxed);
        if settings.eject_after == 0 {
            return false;
        }
        let in_a_row = load.in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row < settings.eject_after || self.ejected(server) {
            return false;
        }
        let level = load.ejections.fetch_add(1, Ordering::Relaxed).min(6);
        let length = settings.eject_for.as_millis() as u64 * (1 << level);
        load.ejected_until
            .store(self.now_ms() + length, Ordering::Relaxed);
        // The trial after the ejection counts as the last of a run.
        load.in_a_row
            .store(settings.eject_after - 1, Ordering::Relaxed);
        load.ejected_total.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Whether a retry fits the pool's budget: `percent` of this second's requests, and
    /// always ten a second (so a quiet pool still retries around a server that just died).
    pub fn may_retry(&self, percent: u32) -> bool {
        self.may_retry_in(clock::coarse_ms() / 1000, percent)
    }

    fn may_retry_in(&self, second: u64, percent: u32) -> bool {
        let mut b = self.budget_in(second);
        let allowed = 10 + b.1 * percent / 100;
        if b.2 >= allowed {
            return false;
        }
        b.2 += 1;
        true
    }

    /// Counts a request routed to this pool, once whatever picks its server (a sticky
    /// cookie, a hash, the balancer, or several tries of a queue), for the retry budget.
    pub fn count_request(&self) {
        self.count_request_in(clock::coarse_ms() / 1000);
    }

    fn count_request_in(&self, second: u64) {
        self.budget_in(second).1 += 1;
    }

    /// The retry budget's counts in `second`, started afresh when the second has changed.
    fn budget_in(&self, second: u64) -> std::sync::MutexGuard<'_, (u64, u32, u32)> {
        let mut b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        if b.0 != second {
            *b = (second, 0, 0);
        }
        b
    }

    /// Chooses a server for a request from `client` (hashing key `key`), skipping `tried`:
    /// the shared step keeps the servers that may be used, then the algorithm picks. `None`
    /// when no server may be used.
    pub fn choose(
        &self,
        pool: &Pool,
        settings: &PoolSettings,
        health: &HealthSnapshot,
        client: IpAddr,
        key: Option<u64>,
        tried: &[usize],
    ) -> Option<usize> {
        let candidates = self.candidates(pool, settings, health, tried);
        if candidates.is_empty() {
            return None;
        }
        let cursor = self.cursor.fetch_add(1, Ordering::Relaxed);
        let input = Input {
            cursor,
            random: algorithm::mix(cursor ^ rand::random::<u64>()),
            client,
            key,
        };
        Some(candidates[self.balancer.pick(&candidates, &input)].server)
    }

    /// [`PoolState::choose`], telling a pool whose usable servers are all at their cap
    /// from one with none usable.
    pub fn pick(
        &self,
        pool: &Pool,
        settings: &PoolSettings,
        health: &HealthSnapshot,
        client: IpAddr,
        key: Option<u64>,
        tried: &[usize],
    ) -> Pick {
        if let Some(s) = self.choose(pool, settings, health, client, key, tried) {
            return Pick::Server(s);
        }
        let any_usable = pool
            .members
            .iter()
            .enumerate()
            .any(|(i, m)| !tried.contains(&i) && usable(m, settings, health));
        match any_usable {
            true => Pick::AllFull,
            false => Pick::NoneUsable,
        }
    }

    /// The server a hash picks among the usable ones (source-address stickiness); an ejected
    /// server sits out here too, so its clients move while it does and come back after.
    pub fn by_hash(
        &self,
        pool: &Pool,
        settings: &PoolSettings,
        health: &HealthSnapshot,
        key: u64,
    ) -> Option<usize> {
        let candidates = self.candidates(pool, settings, health, &[]);
        (!candidates.is_empty()).then(|| candidates[algorithm::rendezvous(&candidates, key)].server)
    }

    /// The servers a request may go to: usable and not yet tried; ejected ones sit out,
    /// unless every such server is ejected: then they all take part (passive health must not
    /// take the whole pool down).
    fn candidates(
        &self,
        pool: &Pool,
        settings: &PoolSettings,
        health: &HealthSnapshot,
        tried: &[usize],
    ) -> smallvec::SmallVec<[Candidate; 8]> {
        let open = |i: usize, m: &Member| {
            !tried.contains(&i) && usable(m, settings, health) && self.has_room(i)
        };
        let any_in = pool
            .members
            .iter()
            .enumerate()
            .any(|(i, m)| open(i, m) && !self.ejected(i));
        pool.members
            .iter()
            .enumerate()
            .filter(|(i, m)| open(*i, m) && (!any_in || !self.ejected(*i)))
            .map(|(i, m)| Candidate {
                server: i,
                weight: m.weight.max(1),
                in_flight: self.load[i].in_flight.load(Ordering::Relaxed),
                latency: self.load[i].latency_ns(),
                id_hash: self.id_hashes[i],
            })
            .collect()
    }
}

/// What a server choice came to, when servers have caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Server(usize),
    /// Usable servers exist, each at its cap: wait for one.
    AllFull,
    NoneUsable,
}

/// Every usable server of the pool stayed at its cap for the queue timeout.
#[derive(Debug, Clone, Copy)]
pub struct AllBusy;

/// The shared step: whether a server may take requests. Drained and forced-down servers may
/// not; a server whose health is not known yet may only where the pool starts servers up (no
/// check, or `start = "up"`).
pub fn usable(member: &Member, settings: &PoolSettings, health: &HealthSnapshot) -> bool {
    let (admin, state) = health.state(&member.id);
    match (admin, state) {
        (Admin::Drained | Admin::ForcedDown, _) => false,
        (Admin::ForcedUp, _) => true,
        (Admin::Normal, Health::Up) => true,
        (Admin::Normal, Health::Down) => false,
        (Admin::Normal, Health::Unknown) => settings.start_up,
    }
}

/// A server's address.
pub fn address(member: &Member) -> Option<SocketAddr> {
    match (&member.target, member.port) {
        (crate::balance::Target::Addr(ip), Some(port)) => Some(SocketAddr::new(*ip, port)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_retry_budget_counts_requests_not_the_picks_a_queued_one_makes() {
        let text = "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[pool.p]\nservers = [{ address = \"127.0.0.1:1\" }]\n";
        let site = crate::config::parse_site(text, Path::new("t.toml"), Path::new(".")).unwrap();
        let (pool, settings) = (&site.pools[0], &site.pool_settings[0]);
        let health = crate::health::HealthStore::in_memory().snapshot();
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let state = PoolState::new(0, pool, settings);
        let budget = || *state.budget.lock().unwrap();
        // Twenty requests in one second, each picking its server a hundred times (as a queued
        // request does each time a slot frees). The picks leave the budget alone.
        for _ in 0..20 {
            state.count_request_in(7);
            let before = budget();
            for _ in 0..100 {
                state.choose(pool, settings, &health, client, None, &[]);
            }
            assert_eq!(budget(), before);
        }
        assert_eq!(budget(), (7, 20, 0));
        // Ten retries a second always, and half of twenty requests more: 20 in all.
        assert_eq!(
            (0..100).take_while(|_| state.may_retry_in(7, 50)).count(),
            20
        );
        // The next second starts a new budget: ten retries, and half of its requests more.
        state.count_request_in(8);
        state.count_request_in(8);
        assert_eq!(
            (0..100).take_while(|_| state.may_retry_in(8, 50)).count(),
            11
        );
    }

    #[test]
    fn hashing_by_source_address_skips_an_ejected_server_and_moves_only_its_clients() {
        let text = "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[pool.p]\nstart = \"up\"\neject_after = 1\neject_for = \"1h\"\nservers = [{ address = \"127.0.0.1:1\" }, { address = \"127.0.0.1:2\" }, { address = \"127.0.0.1:3\" }]\n";
        let site = crate::config::parse_site(text, Path::new("t.toml"), Path::new(".")).unwrap();
        let (pool, settings) = (&site.pools[0], &site.pool_settings[0]);
        let state = PoolState::new(0, pool, settings);
        let health = crate::health::HealthStore::in_memory().snapshot();
        let pick = |key: u64| state.by_hash(pool, settings, &health, key).unwrap();
        let keys: Vec<u64> = (0..300).map(algorithm::mix).collect();
        let before: Vec<usize> = keys.iter().map(|&k| pick(k)).collect();
        let victim = before[0];
        assert!(
            state.record(victim, Outcome::Failed, settings),
            "not ejected"
        );
        for (&key, &was) in keys.iter().zip(&before) {
            let now = pick(key);
            assert_ne!(now, victim);
            if was != victim {
                assert_eq!(now, was, "a client of a server still in moved");
            }
        }
    }
}
