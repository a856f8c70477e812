//! Guarding the servers from clients: connections and request rates counted per client
//! network (a /32 for IPv4 and a /64 for IPv6 unless the config says otherwise), a cap on the
//! clients the rate limiter remembers (the least recent are forgotten first), and a log of
//! refusals that writes at most one line per reason each second, however many clients are
//! refused.
//!
//! The rate is governor's GCRA; what it remembers per client lives in [`RecentClients`], a
//! bounded least-recently-used table, so a flood of distinct addresses costs a fixed amount of
//! memory and no sweeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, MonotonicClock};
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};

use crate::config::ClientLimits;

/// Why a client was turned away. Each reason has its own counter and its own log budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many connections open from the client's network.
    Connections,
    /// Requests faster than the client's rate allows (429).
    Rate,
    /// The listener's or the route's access rules (403, or closed at accept on L4).
    Denied,
    /// A PROXY protocol header missing, malformed, or from a peer that is not trusted.
    ProxyHeader,
    /// The server's queue was full for longer than the pool allows (503).
    Queue,
    /// An h2 client cancelled too many streams before their answers (rapid reset): its
    /// connection is closed.
    Resets,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::Connections,
        Refusal::Rate,
        Refusal::Denied,
        Refusal::ProxyHeader,
        Refusal::Queue,
        Refusal::Resets,
    ];

    /// The `reason` label of `meridian_proxy_limited_total` and of the log line.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Connections => "connections",
            Refusal::Rate => "rate",
            Refusal::Denied => "denied",
            Refusal::ProxyHeader => "proxy_header",
            Refusal::Queue => "queue",
            Refusal::Resets => "h2_resets",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The client network a limit counts: `ip` with its host bits cleared (IPv4-mapped IPv6
/// addresses count as IPv4).
pub fn client_key(ip: IpAddr, limits: &ClientLimits) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(mask_v4(v4, limits.prefix_v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(mask_v4(v4, limits.prefix_v4)),
            None => {
                let bits = u128::from(v6);
                let keep = match limits.prefix_v6 {
                    0 => 0,
                    p => u128::MAX << (128 - u32::from(p.min(128))),
                };
                IpAddr::V6((bits & keep).into())
            }
        },
    }
}

fn mask_v4(v4: std::net::Ipv4Addr, prefix: u8) -> std::net::Ipv4Addr {
    let keep = match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    };
    (u32::from(v4) & keep).into()
}

/// The rate limiter's memory: each client's next allowed time, for at most `cap` clients; the
/// least recently seen is forgotten when a new one comes (and counted). Clones share it:
/// the limiter owns one, the metrics read another.
#[derive(Clone)]
pub struct RecentClients(Arc<Recent>);

struct Recent {
    table: Mutex<lru::LruCache<IpAddr, u64>>,
    evicted: AtomicU64,
}

impl RecentClients {
    pub fn new(cap: NonZeroUsize) -> RecentClients {
        RecentClients(Arc::new(Recent {
            table: Mutex::new(lru::LruCache::new(cap)),
            evicted: AtomicU64::new(0),
        }))
    }

    /// Clients remembered now.
    pub fn len(&self) -> usize {
        self.0.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Clients forgotten to make room, since start.
    pub fn evicted(&self) -> u64 {
        self.0.evicted.load(Ordering::Relaxed)
    }
}

impl StateStore for RecentClients {
    type Key = IpAddr;

    fn measure_and_replace<T, F, E>(&self, key: &IpAddr, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut table = self.0.table.lock().unwrap_or_else(|p| p.into_inner());
        // Looking a client up makes it the most recent, refused or not.
        let before = table.get(key).copied().map(Nanos::from);
        let (outcome, next) = f(before)?;
        if let Some((old, _)) = table.push(*key, next.as_u64()) {
            if old != *key {
                self.0.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(outcome)
    }
}

/// A request rate per client network, with a burst.
pub struct RateLimit {
    limiter: RateLimiter<IpAddr, RecentClients, MonotonicClock>,
    clients: RecentClients,
    /// What it was built from, so a reload that keeps it keeps its memory.
    pub quota: Quota,
    pub cap: NonZeroUsize,
}

impl RateLimit {
    pub fn new(quota: Quota, cap: NonZeroUsize) -> RateLimit {
        let clients = RecentClients::new(cap);
        RateLimit {
            limiter: RateLimiter::new(quota, clients.clone(), MonotonicClock),
            clients,
            quota,
            cap,
        }
    }

    /// `Ok` if the client `key` may send a request now, else how long until it may.
    pub fn check(&self, key: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// The clients it remembers.
    pub fn clients(&self) -> &RecentClients {
        &self.clients
    }
}

/// Connections open per client network, across every listener (and across reloads).
#[derive(Default)]
pub struct OpenConnections {
    open: Mutex<HashMap<IpAddr, u32>>,
}

impl OpenConnections {
    /// Takes a slot for one more connection from `key`, unless it has `limit` open already.
    /// The slot is given back when dropped. Without a limit nothing is counted.
    pub fn admit(self: &Arc<Self>, key: IpAddr, limit: Option<u32>) -> Option<ConnectionSlot> {
        if limit.is_none() {
            return Some(ConnectionSlot(None));
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key).or_insert(0);
        if limit.is_some_and(|l| *n >= l) {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot(Some((self.clone(), key))))
    }

    /// Client networks with a connection open (counted while there is a limit).
    pub fn clients(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// One open connection, counted against its client network until dropped (when there is a
/// limit to count for).
pub struct ConnectionSlot(Option<(Arc<OpenConnections>, IpAddr)>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let Some((table, key)) = &self.0 else { return };
        let mut open = table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                open.remove(key);
            }
        }
    }
}

/// A client stream whose writes must make progress: a write that stays blocked (the client
/// reads nothing, so its window and our socket buffer are full) for `limit` fails with
/// `TimedOut`, which ends the connection (nginx's `send_timeout`). The timer exists only
/// while a write is blocked.
pub struct SendTimeout<S> {
    inner: S,
    limit: Duration,
    blocked: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> SendTimeout<S> {
    pub fn new(inner: S, limit: Duration) -> SendTimeout<S> {
        SendTimeout {
            inner,
            limit,
            blocked: None,
        }
    }

    /// After a write that returned `polled`: the timer disarmed on progress, armed and
    /// checked while blocked.
    fn watch<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        polled: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::future::Future;
        use std::task::Poll;
        if polled.is_ready() {
            self.blocked = None;
            return polled;
        }
        let limit = self.limit;
        let timer = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing for the send timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for SendTimeout<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for SendTimeout<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// How often each reason may write a log line.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Refusals: every one counted, a few logged.
#[derive(Default)]
pub struct Refusals {
    counts: [AtomicU64; Refusal::ALL.len()],
    /// Per reason: when it last wrote a line, and the refusals not written since.
    logged: [Mutex<Option<(Instant, u64)>>; Refusal::ALL.len()],
}

impl Refusals {
    /// Counts a refusal of `client`, and logs it unless this reason logged less than a
    /// second ago (then the next line says how many were left out).
    pub fn refuse(&self, reason: Refusal, client: IpAddr) {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
        let mut logged = self.logged[reason.index()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match &mut *logged {
            Some((at, suppressed)) if at.elapsed() < LOG_EVERY => *suppressed += 1,
            _ => {
                let suppressed = logged.map_or(0, |(_, s)| s);
                *logged = Some((Instant::now(), 0));
                drop(logged);
                if suppressed > 0 {
                    tracing::warn!(reason = reason.name(), %client, suppressed, "client refused ({suppressed} more refusals for this reason were not logged)");
                } else {
                    tracing::warn!(reason = reason.name(), %client, "client refused");
                }
            }
        }
    }

    /// Refusals for `reason` since start.
    pub fn count(&self, reason: Refusal) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn limits(v4: u8, v6: u8) -> ClientLimits {
        ClientLimits {
            prefix_v4: v4,
            prefix_v6: v6,
            ..ClientLimits::default()
        }
    }

    #[test]
    fn clients_are_counted_by_network() {
        let l = limits(24, 64);
        let a = client_key("192.0.2.7".parse().unwrap(), &l);
        assert_eq!(a, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)));
        let mapped = client_key("::ffff:192.0.2.200".parse().unwrap(), &l);
        assert_eq!(mapped, a);
        let v6 = client_key("2001:db8:1:2:3:4:5:6".parse().unwrap(), &l);
        assert_eq!(v6, "2001:db8:1:2::".parse::<Ipv6Addr>().unwrap());
        let all = client_key("2001:db8::1".parse().unwrap(), &limits(0, 0));
        assert_eq!(all, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }

    #[test]
    fn a_connection_slot_is_given_back() {
        let open = Arc::new(OpenConnections::default());
        let key: IpAddr = "192.0.2.1".parse().unwrap();
        let slots: Vec<_> = (0..3).map(|_| open.admit(key, Some(3)).unwrap()).collect();
        assert!(open.admit(key, Some(3)).is_none());
        assert!(open.admit("192.0.2.2".parse().unwrap(), Some(3)).is_some());
        drop(slots);
        assert_eq!(open.clients(), 0);
        assert!(open.admit(key, Some(3)).is_some());
    }

    #[test]
    fn the_rate_allows_its_burst_then_says_when() {
        // Two a minute, so no pause between the checks below can earn a new one.
        let quota = Quota::per_minute(std::num::NonZeroU32::new(2).unwrap())
            .allow_burst(std::num::NonZeroU32::new(5).unwrap());
        let rate = RateLimit::new(quota, NonZeroUsize::new(10).unwrap());
        let key: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            assert!(rate.check(key).is_ok());
        }
        let wait = rate.check(key).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(30));
        // Another client has its own burst.
        assert!(rate.check("192.0.2.2".parse().unwrap()).is_ok());
    }

    /// A million distinct clients never make the limiter remember more than its cap; the
    /// ones forgotten are counted.
    #[test]
    fn a_million_clients_stay_within_the_cap() {
        let quota = Quota::per_second(std::num::NonZeroU32::new(1).unwrap());
        let cap = 100_000;
        let rate = RateLimit::new(quota, NonZeroUsize::new(cap).unwrap());
        for i in 0..1_000_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            assert!(rate.check(ip).is_ok());
            assert!(rate.clients().len() <= cap);
        }
        assert_eq!(rate.clients().len(), cap);
        assert_eq!(rate.clients().evicted(), 900_000);
        // The most recent are remembered: the last client is still limited.
        assert!(rate
            .check(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 999_999)))
            .is_err());
    }
}
