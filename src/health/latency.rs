//! Measured latency: the round-trip times site proxies publish per client network
//! (`GET /rtt`), gathered per site into the [`Latency`] table the `latency` policy reads from
//! the health snapshot.

use super::*;

use ipnet::IpNet;
use smallvec::SmallVec;

/// One client network's round-trip time as a site proxy publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRtt {
    pub network: IpNet,
    /// Moving average of its connections' round trips, in milliseconds.
    pub rtt_ms: f64,
    pub samples: u64,
    /// Seconds since its last sample.
    pub age_seconds: u64,
}

/// What `GET /rtt` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RttReport {
    pub max_age_seconds: u64,
    pub networks: Vec<NetworkRtt>,
}

/// Round-trip times a check read from one site proxy: its whole table, or the networks
/// sampled since the check's previous read.
#[derive(Debug, Clone, PartialEq)]
pub struct RttUpdate {
    pub whole: bool,
    pub networks: Vec<NetworkRtt>,
}

/// What a `proxy-load` check read: the load report and, when the proxy publishes them, the
/// round-trip times of its client networks.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteReport {
    pub load: LoadReport,
    pub rtt: Option<RttUpdate>,
}

/// Measurements older than this are dropped.
pub const RTT_MAX_AGE: u64 = 600;
/// Measurements at most this old are fresh: a network measured at two sites this lately is
/// no longer explored.
pub const RTT_FRESH: u64 = 120;

/// One site's round-trip time to a client network.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteRtt {
    pub site: Arc<str>,
    pub rtt_ms: f32,
    /// Sampled within [`RTT_FRESH`] of the table's making.
    pub fresh: bool,
}

/// Round-trip times per client network (/24 or /48) and site, best first. Built whole from
/// the members' measurements each time one of them changes, and read without locks from the
/// health snapshot.
#[derive(Debug, Default)]
pub struct Latency {
    networks: crate::hash::FastMap<IpNet, SmallVec<[SiteRtt; 2]>>,
}

impl Latency {
    /// The sites measured for `unit` (a /24 or /48), fastest first.
    pub fn of(&self, unit: &IpNet) -> &[SiteRtt] {
        self.networks.get(unit).map_or(&[], |s| s.as_slice())
    }

    /// Client networks measured at some site.
    pub fn len(&self) -> usize {
        self.networks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// Gathers members' measurements (network -> (round trip in ms, sampled at)) by the site
    /// in each member's identity (`site/address`), the fastest member of a site speaking
    /// for it; measurements past [`RTT_MAX_AGE`] at `now` are left out.
    pub(super) fn build<'a>(
        members: impl Iterator<Item = (&'a MemberId, &'a Measured)>,
        now: u64,
    ) -> Latency {
        let mut networks: crate::hash::FastMap<IpNet, SmallVec<[SiteRtt; 2]>> = Default::default();
        for (id, measured) in members {
            let site: Arc<str> = id.0.split('/').next().unwrap_or_default().into();
            for (network, &(rtt_ms, at)) in measured {
                let age = now.saturating_sub(at);
                if age > RTT_MAX_AGE {
                    continue;
                }
                let fresh = age <= RTT_FRESH;
                let sites = networks.entry(*network).or_default();
                match sites.iter_mut().find(|s| s.site == site) {
                    Some(s) if s.rtt_ms <= rtt_ms => s.fresh |= fresh,
                    Some(s) => {
                        s.rtt_ms = rtt_ms;
                        s.fresh |= fresh;
                    }
                    None => sites.push(SiteRtt {
                        site: site.clone(),
                        rtt_ms,
                        fresh,
                    }),
                }
            }
        }
        for sites in networks.values_mut() {
            sites.sort_by(|a, b| a.rtt_ms.total_cmp(&b.rtt_ms));
        }
        Latency { networks }
    }
}

/// One member's measurements: client network -> (round trip in ms, sampled at, in seconds
/// since the epoch).
pub type Measured = crate::hash::FastMap<IpNet, (f32, u64)>;

/// Applies an update read at `now` to a member's measurements.
pub(super) fn merge(measured: &mut Measured, update: &RttUpdate, now: u64) {
    if update.whole {
        measured.clear();
    }
    for n in &update.networks {
        measured.insert(
            n.network,
            (n.rtt_ms as f32, now.saturating_sub(n.age_seconds)),
        );
    }
    measured.retain(|_, (_, at)| now.saturating_sub(*at) <= RTT_MAX_AGE);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(whole: bool, list: &[(&str, f64, u64)]) -> RttUpdate {
        RttUpdate {
            whole,
            networks: list
                .iter()
                .map(|&(n, rtt_ms, age_seconds)| NetworkRtt {
                    network: n.parse().unwrap(),
                    rtt_ms,
                    samples: 1,
                    age_seconds,
                })
                .collect(),
        }
    }

    #[test]
    fn sites_are_ranked_per_network_by_their_fastest_member() {
        let now = 10_000;
        let mut a1 = Measured::default();
        let mut a2 = Measured::default();
        let mut b = Measured::default();
        merge(&mut a1, &update(true, &[("10.1.2.0/24", 30.0, 0)]), now);
        merge(&mut a2, &update(true, &[("10.1.2.0/24", 20.0, 300)]), now);
        merge(
            &mut b,
            &update(true, &[("10.1.2.0/24", 25.0, 5), ("10.9.0.0/24", 1.0, 700)]),
            now,
        );
        let ids = [
            MemberId::new("a", "192.0.2.1"),
            MemberId::new("a", "192.0.2.2"),
            MemberId::new("b", "192.0.2.3"),
        ];
        let t = Latency::build(ids.iter().zip([&a1, &a2, &b]), now);
        let sites = t.of(&"10.1.2.0/24".parse().unwrap());
        let names: Vec<(&str, f32, bool)> = sites
            .iter()
            .map(|s| (&*s.site, s.rtt_ms, s.fresh))
            .collect();
        // a's fastest member speaks for it; its fresh one makes it fresh.
        assert_eq!(names, [("a", 20.0, true), ("b", 25.0, true)]);
        assert!(t.of(&"10.9.0.0/24".parse().unwrap()).is_empty(), "too old");
        assert_eq!(b.len(), 1, "merging drops what is too old");

        // An update since the last read adds to what is known; a whole one replaces it.
        merge(&mut b, &update(false, &[("10.3.0.0/24", 9.0, 0)]), now);
        assert_eq!(b.len(), 2);
        merge(&mut b, &update(true, &[]), now);
        assert!(b.is_empty());
    }
}
