//! Response rate limiting for UDP, against reflection and amplification.
//!
//! Responses are counted per (client prefix, response): the prefix is the client's /24 (IPv4)
//! or /56 (IPv6) by default; the response is its rcode with the query name and type, except that
//! every NXDOMAIN to a prefix shares one account (random names must not buy fresh credit). Each
//! account earns `responses_per_second` credits a second, up to one second's worth. Past that,
//! every `slip`-th response goes out truncated (TC set, sections empty: a real client retries
//! over TCP) and the rest are dropped. TCP answers, queries with a valid server cookie (a
//! spoofed source cannot have one) and exempt networks (loopback by default: reflection needs
//! a remote victim) are never limited.
//!
//! The table is sharded by account, each shard behind its own mutex and bounded in size: a
//! full shard forgets accounts idle for over a second, or all of them.

use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::ecs;
use crate::hash::{FastHasher, FastMap};

/// Settings, from `[server.rate_limit]`.
pub use crate::config::RateLimit as Settings;

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send it truncated and empty instead.
    Slip,
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Account {
    credit: u32,
    second: u32,
    limited: u32,
}

const SHARDS: usize = 64;
const SHARD_LIMIT: usize = 16_384;

/// The accounts and counters of one running server.
pub struct Limiter {
    settings: Settings,
    shards: Box<[Mutex<FastMap<u64, Account>>]>,
    pub dropped: AtomicU64,
    pub slipped: AtomicU64,
}

impl Limiter {
    pub fn new(settings: Settings) -> Limiter {
        Limiter {
            settings,
            shards: (0..SHARDS)
                .map(|_| Mutex::new(FastMap::default()))
                .collect(),
            dropped: AtomicU64::new(0),
            slipped: AtomicU64::new(0),
        }
    }

    /// A limiter with new settings that keeps counting where `previous` left off.
    pub fn continuing(settings: Settings, previous: &Limiter) -> Limiter {
        let l = Limiter::new(settings);
        l.dropped
            .store(previous.dropped.load(Ordering::Relaxed), Ordering::Relaxed);
        l.slipped
            .store(previous.slipped.load(Ordering::Relaxed), Ordering::Relaxed);
        l
    }

    pub fn enabled(&self) -> bool {
        self.settings.responses_per_second > 0
    }

    /// Whether responses to `client` are counted at all (checked before anything costlier).
    pub fn applies_to(&self, client: IpAddr) -> bool {
        self.enabled() && !self.settings.exempt.iter().any(|n| n.contains(&client))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Charges one response to its account at second `now`.
    pub fn charge(&self, client: IpAddr, response: u64, now: u32) -> Verdict {
        if !self.applies_to(client) {
            return Verdict::Send;
        }
        let mut h = FastHasher::default();
        match client {
            IpAddr::V4(a) => {
                let bits = u32::from(a) & mask32(self.settings.ipv4_prefix);
                h.write_u32(bits);
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a) & mask128(self.settings.ipv6_prefix);
                h.write_u128(bits);
            }
        }
        h.write_u64(response);
        let key = h.finish();
        let rate = self.settings.responses_per_second;
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut accounts = shard.lock().unwrap_or_else(|p| p.into_inner());
        if accounts.len() >= SHARD_LIMIT && !accounts.contains_key(&key) {
            accounts.retain(|_, a| now.saturating_sub(a.second) <= 1);
            if accounts.len() >= SHARD_LIMIT {
                accounts.clear();
            }
        }
        let account = accounts.entry(key).or_insert(Account {
            credit: rate,
            second: now,
            limited: 0,
        });
        if account.second != now {
            let earned = now.saturating_sub(account.second).saturating_mul(rate);
            account.credit = account.credit.saturating_add(earned).min(rate);
            account.second = now;
        }
        if account.credit > 0 {
            account.credit -= 1;
            return Verdict::Send;
        }
        account.limited = account.limited.wrapping_add(1);
        let slip = self.settings.slip;
        if slip > 0 && account.limited.is_multiple_of(slip) {
            self.slipped.fetch_add(1, Ordering::Relaxed);
            Verdict::Slip
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            Verdict::Drop
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

fn mask128(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => u128::MAX << (128 - u32::from(p.min(128))),
    }
}

/// The account a response is charged to: its rcode, and for anything but NXDOMAIN the query
/// name (lower-cased) and type, read from the response's question.
pub fn response_key(reply: &[u8]) -> u64 {
    let mut h = FastHasher::default();
    let rcode = reply.get(3).map_or(0, |b| b & 0x0F);
    h.write_u8(rcode);
    if rcode != 3 {
        if let Some(end) = ecs::skip_name(reply, 12) {
            for b in &reply[12..end] {
                h.write_u8(b.to_ascii_lowercase());
            }
            if let Some(t) = reply.get(end..end + 2) {
                h.write(t);
            }
        }
    }
    h.finish()
}

/// Rewrites a reply in place into the truncated, empty form sent on a slip: header and
/// question kept, TC set, every other section gone.
pub fn slip(reply: &mut Vec<u8>) {
    if reply.len() < 12 {
        return;
    }
    let mut end = 12;
    if reply[4..6] == [0, 1] {
        end = ecs::skip_name(reply, 12).map_or(reply.len(), |e| (e + 4).min(reply.len()));
    } else {
        reply[4..6].copy_from_slice(&[0, 0]);
    }
    reply.truncate(end);
    reply[2] |= 0x02;
    reply[6..12].copy_from_slice(&[0; 6]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, slip: u32) -> Limiter {
        Limiter::new(Settings {
            responses_per_second: rate,
            slip,
            exempt: vec!["192.0.2.0/24".parse().unwrap()],
            ..Settings::default()
        })
    }

    #[test]
    fn a_prefix_gets_its_rate_then_slips_every_second_response() {
        let l = limiter(5, 2);
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        let same_24: IpAddr = "198.51.100.200".parse().unwrap();
        let other: IpAddr = "198.51.101.7".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(l.charge(a, 1, 100), Verdict::Send);
        }
        assert_eq!(l.charge(same_24, 1, 100), Verdict::Drop);
        assert_eq!(l.charge(a, 1, 100), Verdict::Slip);
        assert_eq!(l.charge(a, 1, 100), Verdict::Drop);
        // Another response, another account; another /24, another account.
        assert_eq!(l.charge(a, 2, 100), Verdict::Send);
        assert_eq!(l.charge(other, 1, 100), Verdict::Send);
        // The next second brings a second's credit, no more.
        for _ in 0..5 {
            assert_eq!(l.charge(a, 1, 101), Verdict::Send);
        }
        assert_ne!(l.charge(a, 1, 101), Verdict::Send);
        for _ in 0..5 {
            assert_eq!(l.charge(a, 1, 200), Verdict::Send);
        }
        assert_ne!(l.charge(a, 1, 200), Verdict::Send);
        assert_eq!(l.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(l.slipped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn off_never_limits_and_v6_prefixes_are_56() {
        let off = limiter(0, 2);
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..1000 {
            assert_eq!(off.charge(a, 1, 1), Verdict::Send);
        }
        let l = limiter(1, 0);
        let x: IpAddr = "2001:db8:0:1100::1".parse().unwrap();
        let same_56: IpAddr = "2001:db8:0:11ff::2".parse().unwrap();
        let other_56: IpAddr = "2001:db8:0:1200::1".parse().unwrap();
        assert_eq!(l.charge(x, 1, 1), Verdict::Send);
        assert_eq!(l.charge(same_56, 1, 1), Verdict::Drop);
        assert_eq!(l.charge(other_56, 1, 1), Verdict::Send);
        let exempt: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(l.charge(exempt, 1, 1), Verdict::Send);
        }
    }

    #[test]
    fn nxdomains_share_an_account_and_names_fold_case() {
        let mut nx1 = vec![
            0, 0, 0x84, 3, 0, 1, 0, 0, 0, 1, 0, 0, 1, b'a', 0, 0, 1, 0, 1,
        ];
        let nx2 = {
            let mut v = nx1.clone();
            v[13] = b'b';
            v
        };
        assert_eq!(response_key(&nx1), response_key(&nx2));
        nx1[3] = 0;
        let mut upper = nx1.clone();
        upper[13] = b'A';
        assert_eq!(response_key(&nx1), response_key(&upper));
        let mut other_type = nx1.clone();
        other_type[16] = 28;
        assert_ne!(response_key(&nx1), response_key(&other_type));
    }

    #[test]
    fn a_slip_keeps_header_and_question_only() {
        let mut r = vec![
            0x12, 0x34, 0x84, 0, 0, 1, 0, 1, 0, 0, 0, 1, 1, b'a', 0, 0, 1, 0, 1,
        ];
        r.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        r.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        slip(&mut r);
        assert_eq!(
            r,
            vec![0x12, 0x34, 0x86, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1]
        );
    }
}
