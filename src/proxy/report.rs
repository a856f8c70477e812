//! What the proxy counts, for its Prometheus page and its load report: requests, errors and
//! a latency histogram for the process's lifetime, and a window of one-second samples from
//! which the load report (the document the DNS side's `proxy-load` check will read) takes
//! its rates and percentiles.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bounds of the latency buckets, in seconds.
pub const BOUNDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram (the last bucket is everything above the bounds).
#[derive(Debug, Default)]
pub struct Histogram {
    pub buckets: [AtomicU64; BOUNDS.len() + 1],
    pub sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let s = took.as_secs_f64();
        let i = BOUNDS.iter().position(|&b| s <= b).unwrap_or(BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    fn counts(&self) -> [u64; BOUNDS.len() + 1] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }
}

/// Counters for the process's lifetime (they survive reloads).
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    /// Responses with a 5xx status, the proxy's own included.
    pub errors: AtomicU64,
    pub retries: AtomicU64,
    /// Requests refused by a listener's and by a route's access rules.
    pub denied_by_listener: AtomicU64,
    pub denied_by_route: AtomicU64,
    /// Connections accepted by TCP listeners; those closed unrouted (no ClientHello, or no
    /// server reachable); bytes from clients and to them.
    pub l4_connections: AtomicU64,
    pub l4_unrouted: AtomicU64,
    pub l4_bytes_in: AtomicU64,
    pub l4_bytes_out: AtomicU64,
    /// From the request's arrival to the response head's departure.
    pub latency: Histogram,
}

/// Where the access rules that refused a request are.
#[derive(Debug, Clone, Copy)]
pub enum RuleScope {
    Listener,
    Route,
}

impl Stats {
    /// Counts a request the access rules refused.
    pub fn denied(&self, scope: RuleScope) {
        let counter = match scope {
            RuleScope::Listener => &self.denied_by_listener,
            RuleScope::Route => &self.denied_by_route,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One second's sample of the counters.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    requests: u64,
    errors: u64,
    buckets: [u64; BOUNDS.len() + 1],
}

/// The samples of the last [`WINDOW`] seconds.
#[derive(Debug, Default)]
pub struct Window(Mutex<VecDeque<Sample>>);

/// How far back the load report looks.
pub const WINDOW: usize = 10;

/// The load report, as the DNS side's `proxy-load` check reads it.
pub use crate::health::LoadReport;

impl Window {
    /// Takes a sample of `stats`; called once a second.
    pub fn tick(&self, stats: &Stats) {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        w.push_back(Sample {
            at: Instant::now(),
            requests: stats.requests.load(Ordering::Relaxed),
            errors: stats.errors.load(Ordering::Relaxed),
            buckets: stats.latency.counts(),
        });
        while w.len() > WINDOW + 1 {
            w.pop_front();
        }
    }

    /// Rates and percentiles between the oldest sample and `stats` now.
    pub fn report(&self, stats: &Stats) -> (f64, Option<f64>, Option<f64>, f64, f64) {
        let w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(first) = w.front() else {
            return (0.0, None, None, 0.0, 0.0);
        };
        let seconds = first.at.elapsed().as_secs_f64().max(0.001);
        let requests = stats.requests.load(Ordering::Relaxed) - first.requests;
        let errors = stats.errors.load(Ordering::Relaxed) - first.errors;
        let now = stats.latency.counts();
        let delta: Vec<u64> = now
            .iter()
            .zip(first.buckets.iter())
            .map(|(a, b)| a - b)
            .collect();
        let rate = requests as f64 / seconds;
        let error_rate = if requests == 0 {
            0.0
        } else {
            errors as f64 / requests as f64
        };
        (
            rate,
            percentile(&delta, 0.50),
            percentile(&delta, 0.99),
            error_rate,
            seconds,
        )
    }
}

/// The `q` quantile of bucket counts, in milliseconds: the upper bound of the bucket it falls
/// in (the last bucket reports the largest bound).
pub fn percentile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, &n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let bound = BOUNDS.get(i).copied().unwrap_or(BOUNDS[BOUNDS.len() - 1]);
            return Some(bound * 1000.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_bucket_bounds() {
        let h = Histogram::default();
        for _ in 0..98 {
            h.observe(Duration::from_micros(800));
        }
        h.observe(Duration::from_millis(40));
        h.observe(Duration::from_millis(40));
        let counts = h.counts();
        assert_eq!(percentile(&counts, 0.5), Some(1.0));
        assert_eq!(percentile(&counts, 0.99), Some(50.0));
        assert_eq!(percentile(&[0; 14], 0.5), None);
    }
}
