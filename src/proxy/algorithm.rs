//! Balancing algorithms: each picks one server among candidates that the shared step
//! ([`super::upstream`]) has already filtered for health, drains and earlier tries. An
//! algorithm never probes, never reads the clock and never sees a server that may not be
//! used; what it needs of the moment (a rotation position, a random draw, a hash of the
//! request) arrives in [`Input`].

use std::net::IpAddr;
use std::sync::Mutex;

use crate::config::Algorithm as Kind;

/// What an algorithm sees of one usable server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The server's index in its pool.
    pub server: usize,
    pub weight: u32,
    /// Requests sent to it and not yet finished.
    pub in_flight: u32,
    /// Peak-EWMA of its response time, nanoseconds (0 before its first response).
    pub latency: f64,
    /// A hash of the server's identity, for rendezvous hashing.
    pub id_hash: u64,
}

/// The moment's facts an algorithm may use.
#[derive(Debug, Clone, Copy)]
pub struct Input {
    /// A position that advances once per request in the pool.
    pub cursor: u64,
    /// A uniform random draw.
    pub random: u64,
    /// The client's address.
    pub client: IpAddr,
    /// A hash of the request property the pool keys on (`hash_on`), if any.
    pub key: Option<u64>,
}

/// One balancing algorithm: the position in `candidates` (never empty) of the chosen server.
pub trait Balancer: Send + Sync {
    fn pick(&self, candidates: &[Candidate], input: &Input) -> usize;
}

/// The algorithm a pool's config names.
pub fn for_kind(kind: &Kind) -> Box<dyn Balancer> {
    match kind {
        Kind::RoundRobin => Box::new(RoundRobin),
        Kind::Weighted => Box::new(SmoothWeighted(Mutex::new(None))),
        Kind::LeastConnections => Box::new(LeastConnections),
        Kind::LeastTime => Box::new(LeastTime),
        Kind::Random => Box::new(Random),
        Kind::IpHash => Box::new(IpHash),
        Kind::Hash(_) => Box::new(Rendezvous),
    }
}

/// Each server in turn.
pub struct RoundRobin;

impl Balancer for RoundRobin {
    fn pick(&self, c: &[Candidate], input: &Input) -> usize {
        (input.cursor % c.len() as u64) as usize
    }
}

/// Smooth weighted round-robin: one cycle of `sum(weights)` turns in which each server's
/// turns are spread evenly, walked by the rotation position. Server `i`'s `k`-th turn falls at
/// `(k + phase) / weight`, where servers of equal weight take evenly staggered phases, so
/// weights 5, 1, 1 give a b a a a c a: never more than three in a row, also across the end
/// of the cycle (nginx's current-weight method gives a a b a c a a, which repeats into four).
/// The cycle is rebuilt only when the usable servers change.
pub struct SmoothWeighted(Mutex<Option<Cycle>>);

/// A weighted cycle and the (server, weight) list it was built for.
type Cycle = (Vec<(usize, u32)>, Vec<usize>);

impl SmoothWeighted {
    fn schedule(c: &[Candidate]) -> Vec<usize> {
        let mut turns: Vec<(f64, usize)> = Vec::new();
        for (i, s) in c.iter().enumerate() {
            let same: Vec<usize> = c
                .iter()
                .enumerate()
                .filter(|(_, o)| o.weight == s.weight)
                .map(|(j, _)| j)
                .collect();
            let rank = same.iter().position(|&j| j == i).unwrap_or(0);
            let phase = (rank as f64 + 0.5) / same.len() as f64;
            for k in 0..s.weight {
                turns.push(((f64::from(k) + phase) / f64::from(s.weight), i));
            }
        }
        turns.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        turns.into_iter().map(|(_, i)| i).collect()
    }
}

impl Balancer for SmoothWeighted {
    fn pick(&self, c: &[Candidate], input: &Input) -> usize {
        let key: Vec<(usize, u32)> = c.iter().map(|s| (s.server, s.weight)).collect();
        let mut cached = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let schedule = match &*cached {
            Some((k, schedule)) if *k == key => schedule,
            _ => &cached.insert((key, SmoothWeighted::schedule(c))).1,
        };
        schedule[(input.cursor % schedule.len() as u64) as usize]
    }
}

/// Fewest requests in flight per unit of weight; ties go round the rotation, so idle
/// servers share the load.
pub struct LeastConnections;

impl Balancer for LeastConnections {
    fn pick(&self, c: &[Candidate], input: &Input) -> usize {
        let start = (input.cursor % c.len() as u64) as usize;
        let load = |s: &Candidate| f64::from(s.in_flight) / f64::from(s.weight);
        (0..c.len())
            .map(|i| (start + i) % c.len())
            .min_by(|&a, &b| load(&c[a]).total_cmp(&load(&c[b])))
            .unwrap_or(0)
    }
}

/// Least response time: of two candidates drawn at random, the one whose peak-EWMA latency
/// times its queue (in flight + 1) per weight is lower (the power of two choices keeps one
/// fast server from taking everything at once).
pub struct LeastTime;

impl Balancer for LeastTime {
    fn pick(&self, c: &[Candidate], input: &Input) -> usize {
        if c.len() == 1 {
            return 0;
        }
        let a = (input.random % c.len() as u64) as usize;
        let b = (a + 1 + ((input.random >> 32) % (c.len() as u64 - 1)) as usize) % c.len();
        let cost = |s: &Candidate| {
            // A server without a measurement yet looks as fast as the fastest possible.
            s.latency.max(1.0) * f64::from(s.in_flight + 1) / f64::from(s.weight)
        };
        if cost(&c[b]) < cost(&c[a]) {
            b
        } else {
            a
        }
    }
}

/// Weighted random.
pub struct Random;

impl Balancer for Random {
    fn pick(&self, c: &[Candidate], input: &Input) -> usize {
        let total: u64 = c.iter().map(|s| u64::from(s.weight)).sum();
        let mut at = input.random % total;
        for (i, s) in c.iter().enumerate() {
            match at.checked_sub(u64::from(s.weight)) {
                Some(rest) => at = rest,
                None => return i,
            }
        }
        c.len() - 1
    }
}

/// The client address, hashed by rendezvous (so a server leaving moves only its clients).
pub struct IpHash;

impl Balancer for IpHash {
    fn pick(&self, c: &[Candidate], input: &Input) -> usize {
        rendezvous(c, hash_ip(input.client))
    }
}

/// Consistent hashing on the pool's `hash_on` key (a header, a cookie or the path); a request
/// without the key goes round-robin.
pub struct Rendezvous;

impl Balancer for Rendezvous {
    fn pick(&self, c: &[Candidate], input: &Input) -> usize {
        match input.key {
            Some(key) => rendezvous(c, key),
            None => (input.cursor % c.len() as u64) as usize,
        }
    }
}

/// Weighted rendezvous hashing: each candidate scores `-weight / ln(u)` with `u` uniform from
/// a hash of (key, server); the highest wins. A server that leaves moves exactly the keys it
/// held, and weights hold in proportion.
pub fn rendezvous(c: &[Candidate], key: u64) -> usize {
    let score = |s: &Candidate| {
        let h = mix(key ^ s.id_hash);
        // (0, 1]: never ln(0).
        let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        -f64::from(s.weight) / u.ln()
    };
    let mut best = 0;
    for i in 1..c.len() {
        if score(&c[i]) > score(&c[best]) {
            best = i;
        }
    }
    best
}

/// A 64-bit finaliser (SplitMix64's): spreads close inputs over the whole range.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A stable hash of bytes (FNV-1a, then mixed): the same on every node and every run, so
/// hashing and source-address stickiness agree across restarts.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

pub fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => hash_bytes(&a.octets()),
        IpAddr::V6(a) => hash_bytes(&a.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Candidate {
                server: i,
                weight,
                in_flight: 0,
                latency: 0.0,
                id_hash: hash_bytes(format!("server-{i}").as_bytes()),
            })
            .collect()
    }

    fn input(n: u64) -> Input {
        Input {
            cursor: n,
            random: mix(n),
            client: IpAddr::from([192, 0, 2, (n % 250) as u8]),
            key: Some(mix(n ^ 0xABCD)),
        }
    }

    /// Shares of 10,000 picks.
    fn shares(b: &dyn Balancer, c: &[Candidate]) -> Vec<f64> {
        let mut counts = vec![0u32; c.len()];
        for n in 0..10_000 {
            counts[c[b.pick(c, &input(n))].server] += 1;
        }
        counts.iter().map(|&k| f64::from(k) / 100.0).collect()
    }

    #[test]
    fn weights_hold_within_two_points_over_10000_requests() {
        let c = servers(&[5, 3, 2]);
        for kind in [
            Kind::Weighted,
            Kind::Random,
            Kind::Hash(crate::config::HashOn::Path),
        ] {
            let got = shares(&*for_kind(&kind), &c);
            for (share, want) in got.iter().zip([50.0, 30.0, 20.0]) {
                assert!((share - want).abs() <= 2.0, "{kind:?}: {got:?}");
            }
        }
        let got = shares(&RoundRobin, &servers(&[1, 1, 1, 1]));
        assert!(got.iter().all(|s| (s - 25.0).abs() <= 2.0), "{got:?}");
    }

    #[test]
    fn smooth_weighted_never_sends_more_than_three_in_a_row_for_5_1_1() {
        let c = servers(&[5, 1, 1]);
        let b = for_kind(&Kind::Weighted);
        let (mut last, mut run, mut longest) = (usize::MAX, 0, 0);
        for n in 0..700 {
            let s = c[b.pick(&c, &input(n))].server;
            run = if s == last { run + 1 } else { 1 };
            last = s;
            longest = longest.max(run);
        }
        assert!(longest <= 3, "{longest} in a row");
    }

    #[test]
    fn least_connections_prefers_the_idle_server() {
        let mut c = servers(&[1, 1, 1]);
        c[0].in_flight = 4;
        c[1].in_flight = 0;
        c[2].in_flight = 2;
        for n in 0..10 {
            assert_eq!(LeastConnections.pick(&c, &input(n)), 1);
        }
        // Per unit of weight: 4 in flight at weight 8 is less loaded than 1 at weight 1.
        let mut w = servers(&[8, 1]);
        w[0].in_flight = 4;
        w[1].in_flight = 1;
        assert_eq!(LeastConnections.pick(&w, &input(0)), 0);
    }

    #[test]
    fn least_time_avoids_a_slow_server() {
        let mut c = servers(&[1, 1, 1]);
        c[0].latency = 50_000_000.0;
        c[1].latency = 1_000_000.0;
        c[2].latency = 1_200_000.0;
        let got = shares(&LeastTime, &c);
        assert!(got[0] < 1.0, "the slow server took {}%", got[0]);
    }

    #[test]
    fn consistent_hash_moves_only_the_keys_of_a_server_that_leaves() {
        let all = servers(&[1, 1, 1, 1, 1, 1]);
        let without: Vec<Candidate> = all.iter().copied().filter(|s| s.server != 3).collect();
        let mut moved = 0;
        for n in 0..10_000u64 {
            let key = mix(n);
            let before = all[rendezvous(&all, key)].server;
            let after = without[rendezvous(&without, key)].server;
            if before != after {
                assert_eq!(before, 3, "key {n} moved off a server that stayed");
                moved += 1;
            }
        }
        // About 1/6 of the keys were on server 3; at most 1.5/N may move.
        assert!(moved <= 10_000 * 3 / (2 * 6), "{moved} keys moved");
        assert!(moved > 0);
    }
}
