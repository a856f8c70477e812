//! Round-trip times of client connections, per client network, for latency steering: the
//! DNS side reads them (`GET /rtt` on the report listener) and ranks sites for each network
//! by what its clients measured here.
//!
//! A sample is the kernel's minimum RTT of the connection (`TCP_INFO`) when the client is the
//! TCP peer; behind a PROXY header the peer is a relay, so a TLS listener takes the
//! handshake's duration instead (one round trip plus both ends' cryptography) and a plain
//! one takes nothing. Samples go into a moving average per network ([`client_unit`]: /24 or
//! /48), in a table of at most `cap` networks that forgets the stalest first.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::balance::client_unit;
use crate::hash::FastMap;
use crate::health::NetworkRtt;

/// How far one sample moves a network's average.
const WEIGHT: f64 = 0.3;

/// How long a network's last sample stands before a new connection from it is measured.
pub const RESAMPLE: Duration = Duration::from_secs(1);

/// How long a network without new samples is kept.
pub const MAX_AGE: Duration = Duration::from_secs(600);

/// Client networks and their round-trip times.
pub struct RttTable {
    cap: usize,
    networks: Mutex<FastMap<IpNet, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Moving average, in microseconds.
    rtt_us: f64,
    samples: u64,
    last: Instant,
}

impl RttTable {
    /// A table of at most `cap` networks (0: measuring is off).
    pub fn new(cap: usize) -> Self {
        RttTable {
            cap,
            networks: Mutex::new(FastMap::default()),
        }
    }

    /// Whether a sample from `client` is wanted now: measuring is on and its network has
    /// had none for [`RESAMPLE`]. Asked before the system call that takes a sample, so a
    /// busy network costs one call a second, not one per connection.
    pub fn wants(&self, client: IpAddr) -> bool {
        if self.cap == 0 {
            return false;
        }
        let network = client_unit(IpNet::from(client));
        let networks = self.networks.lock().unwrap_or_else(|p| p.into_inner());
        networks
            .get(&network)
            .is_none_or(|e| e.last.elapsed() >= RESAMPLE)
    }

    /// Counts one connection's round trip from `client`.
    pub fn observe(&self, client: IpAddr, rtt: Duration) {
        if self.cap == 0 {
            return;
        }
        let network = client_unit(IpNet::from(client));
        let now = Instant::now();
        let us = rtt.as_secs_f64() * 1e6;
        let mut networks = self.networks.lock().unwrap_or_else(|p| p.into_inner());
        if networks.len() >= self.cap && !networks.contains_key(&network) {
            forget_stalest(&mut networks, self.cap);
        }
        networks
            .entry(network)
            .and_modify(|e| {
                e.rtt_us += WEIGHT * (us - e.rtt_us);
                e.samples += 1;
                e.last = now;
            })
            .or_insert(Entry {
                rtt_us: us,
                samples: 1,
                last: now,
            });
    }

    /// The networks sampled within `within` (all kept ones when `None`), best known first.
    pub fn published(&self, within: Option<Duration>) -> Vec<NetworkRtt> {
        let now = Instant::now();
        let limit = within.unwrap_or(MAX_AGE).min(MAX_AGE);
        let mut networks = self.networks.lock().unwrap_or_else(|p| p.into_inner());
        networks.retain(|_, e| now.duration_since(e.last) <= MAX_AGE);
        let mut out: Vec<NetworkRtt> = networks
            .iter()
            .filter(|(_, e)| now.duration_since(e.last) <= limit)
            .map(|(n, e)| NetworkRtt {
                network: *n,
                rtt_ms: (e.rtt_us / 10.0).round() / 100.0,
                samples: e.samples,
                age_seconds: now.duration_since(e.last).as_secs(),
            })
            .collect();
        drop(networks);
        out.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.network.cmp(&b.network)));
        out
    }

    /// Networks in the table.
    pub fn len(&self) -> usize {
        self.networks.lock().map_or(0, |n| n.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Makes room: drops the eighth of the table sampled longest ago (at least one), so a full
/// table sorts once per many new networks rather than on each.
fn forget_stalest(networks: &mut FastMap<IpNet, Entry>, cap: usize) {
    let mut ages: Vec<(Instant, IpNet)> = networks.iter().map(|(n, e)| (e.last, *n)).collect();
    let drop = (cap / 8).max(1).min(ages.len());
    ages.select_nth_unstable_by_key(drop - 1, |(at, _)| *at);
    for (_, n) in &ages[..drop] {
        networks.remove(n);
    }
}

/// The kernel's minimum round-trip time of a TCP connection (`tcpi_min_rtt`, Linux 4.6 and
/// later), known from its handshake on.
pub fn tcp_min_rtt(socket: &impl std::os::fd::AsFd) -> Option<Duration> {
    use std::os::fd::AsRawFd;
    // `struct tcp_info` up to and past `tcpi_min_rtt` (bytes 148..152); the kernel copies
    // what it has, and says how much.
    const MIN_RTT: usize = 148;
    let mut info = [0u32; 64];
    let mut len = std::mem::size_of_val(&info) as nix::libc::socklen_t;
    // SAFETY: the buffer is writable for `len` bytes and outlives the call; the kernel
    // writes at most `len` bytes and updates `len`.
    let rc = unsafe {
        nix::libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            nix::libc::IPPROTO_TCP,
            nix::libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 || (len as usize) < MIN_RTT + 4 {
        return None;
    }
    let us = info[MIN_RTT / 4];
    // No sample yet reads as "infinite".
    (us != 0 && us != u32::MAX).then(|| Duration::from_micros(u64::from(us)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_average_per_network_and_the_stalest_go_first() {
        let t = RttTable::new(16);
        let ms = Duration::from_millis;
        t.observe("10.1.2.3".parse().unwrap(), ms(10));
        t.observe("10.1.2.200".parse().unwrap(), ms(20));
        t.observe("2001:db8:1:2::1".parse().unwrap(), ms(5));
        let out = t.published(None);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].network.to_string(), "10.1.2.0/24");
        assert_eq!(out[0].samples, 2);
        assert!((out[0].rtt_ms - 13.0).abs() < 1e-9, "{}", out[0].rtt_ms);
        assert_eq!(out[1].network.to_string(), "2001:db8:1::/48");

        // Full: a new network pushes out the one sampled longest ago, never a fresh one.
        for i in 0..16u32 {
            t.observe(IpAddr::V4((0x0b00_0000 | (i << 8)).into()), ms(1));
        }
        assert!(t.len() <= 16);
        let networks: Vec<String> = t
            .published(None)
            .iter()
            .map(|n| n.network.to_string())
            .collect();
        assert!(
            !networks.contains(&"10.1.2.0/24".to_string()),
            "{networks:?}"
        );
        assert!(networks.contains(&"11.0.15.0/24".to_string()));
        assert!(RttTable::new(0).published(None).is_empty());
        assert!(!RttTable::new(0).wants("10.1.2.3".parse().unwrap()));
        assert!(!t.wants("11.0.15.9".parse().unwrap()), "sampled just now");
        assert!(t.wants("12.0.0.1".parse().unwrap()), "never sampled");
    }

    #[test]
    fn a_loopback_connection_has_a_minimum_rtt_from_its_handshake() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let rtt = tcp_min_rtt(&server).expect("a sample from the handshake");
        assert!(rtt < Duration::from_millis(100), "{rtt:?}");
        drop(client);
    }
}
