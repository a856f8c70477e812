//! Geo policies: the order in which a client's sites are tried, by subnet table, by
//! great-circle distance or by a location map, and the client network that order holds for.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::Serialize;
use smallvec::SmallVec;

use super::{ClientInfo, Group, Indexes, Pool, Ranking, RttHit, SelectionPolicy, Sites};
use crate::geo::{cos_to_km, whole_space};

/// How a geo policy orders sites once no subnet entry matched.
#[derive(Debug, Clone)]
pub enum GeoMode {
    /// By great-circle distance from the client; `limit` keeps only the nearest N sites.
    Nearest {
        /// Each site with the unit vector of its location (see [`crate::geo::Coords::unit`]).
        sites: Vec<(SiteName, [f64; 3])>,
        limit: Option<usize>,
    },
    /// By the most specific `continent`, `continent/country` or
    /// `continent/country/subdivision` key that matches the client.
    Map(HashMap<String, Vec<SiteName>>),
    /// The subnet table alone; clients it does not cover get the default order.
    Subnet,
}

/// A site's name, shared: rankings copy it per query, so it is cheap to clone.
pub type SiteName = Arc<str>;

/// Where `site` stands in `order`. Names are interned per load-balancing file, so a pointer
/// match is the rule and comparing bytes only the fallback.
fn site_position(order: &[RankedSite], site: &SiteName) -> Option<usize> {
    order
        .iter()
        .position(|s| Arc::ptr_eq(&s.site, site))
        .or_else(|| order.iter().position(|s| s.site == *site))
}

/// A client-dependent site ordering: subnet entries first (longest prefix wins), then the mode.
#[derive(Debug, Clone)]
pub struct GeoPolicy {
    pub mode: GeoMode,
    /// The latency policy: sites measured for the client's network come first, fastest
    /// first, before the mode's order; while its two best sites are not both freshly
    /// measured, this share of answers (in thousandths) puts the second first.
    pub latency: Option<u16>,
    /// Entries sorted longest prefix first.
    pub subnets: Vec<(IpNet, Vec<SiteName>)>,
    /// Order for clients nothing else places.
    pub default_order: Vec<SiteName>,
}

/// What decided a site order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "by", rename_all = "kebab-case")]
pub enum Basis {
    /// A subnet table entry.
    Subnet { entry: IpNet },
    /// Distance from the client's location.
    Distance,
    /// A geo map key.
    Map { key: String },
    /// Nothing placed the client: the default order.
    Default,
    /// Round trips the site proxies measured for the client's network.
    Measured { network: IpNet },
}

/// One site in a ranking, with its distance when distance decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedSite {
    pub site: SiteName,
    /// Cosine of the angle between the client and the site, when distance decided
    /// (ranking compares these; [`RankedSite::distance_km`] turns one into kilometres).
    pub cos_angle: Option<f64>,
    /// The round trip measured from the client's network, when measurements decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f32>,
}

impl RankedSite {
    /// Great-circle distance from the client, when distance decided.
    pub fn distance_km(&self) -> Option<f64> {
        self.cos_angle.map(cos_to_km)
    }
}

/// The sites a geo policy chose for a client, and the network the choice holds for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteOrder {
    pub sites: Sites,
    pub basis: Basis,
    pub valid_for: IpNet,
    /// Thousandths of answers that put the second site first (latency exploration).
    #[serde(skip_serializing_if = "is_zero")]
    pub explore: u16,
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

impl GeoPolicy {
    /// Orders sites for a client. Pure: the same client always gets the same order.
    pub fn order(&self, client: &ClientInfo) -> SiteOrder {
        let addr = client.network.network();
        let named = |list: &[SiteName]| -> Sites {
            list.iter()
                .map(|s| RankedSite {
                    site: s.clone(),
                    cos_angle: None,
                    rtt_ms: None,
                })
                .collect()
        };
        // Subnet entries override geography.
        if let Some((entry, sites)) = self.subnets.iter().find(|(net, _)| net.contains(&addr)) {
            return SiteOrder {
                sites: named(sites),
                basis: Basis::Subnet { entry: *entry },
                valid_for: self.exclude_more_specific(*entry, addr),
                explore: 0,
            };
        }
        let base = match (&self.mode, &client.geo) {
            (GeoMode::Subnet, _) | (_, None) => whole_space(addr),
            (_, Some(hit)) => hit.network,
        };
        let valid_for = self.exclude_more_specific(base, addr);
        let location = client.geo.as_ref().and_then(|g| g.location.as_ref());
        let (sites, basis) = match (&self.mode, location) {
            (GeoMode::Nearest { sites, limit }, Some(loc)) if loc.unit.is_some() => {
                let here = loc.unit.expect("checked");
                let mut ranked: Sites = sites
                    .iter()
                    .map(|(name, at)| RankedSite {
                        site: name.clone(),
                        cos_angle: Some(here[0] * at[0] + here[1] * at[1] + here[2] * at[2]),
                        rtt_ms: None,
                    })
                    .collect();
                // Stable sort: equal distances keep configured order.
                ranked.sort_by(|a, b| {
                    // Larger cosine, smaller angle: nearer first.
                    b.cos_angle
                        .partial_cmp(&a.cos_angle)
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
                if let Some(n) = limit {
                    ranked.truncate(*n);
                }
                (ranked, Basis::Distance)
            }
            (GeoMode::Map(map), Some(loc)) => {
                match loc
                    .path()
                    .iter()
                    .rev()
                    .find(|k| map.contains_key(k.as_str()))
                {
                    Some(key) => (named(&map[key.as_str()]), Basis::Map { key: key.clone() }),
                    None => (named(&self.default_order), Basis::Default),
                }
            }
            _ => (named(&self.default_order), Basis::Default),
        };
        let order = SiteOrder {
            sites,
            basis,
            valid_for,
            explore: 0,
        };
        match (self.latency, &client.rtt) {
            (Some(explore), Some(hit)) => measured_first(order, hit, explore),
            _ => order,
        }
    }

    /// Narrows `base` (which holds `addr`) until it overlaps no more specific subnet entry
    /// that does not hold `addr` (RFC 7871 section 7.2.1), so every address in the result is
    /// decided the same way.
    fn exclude_more_specific(&self, base: IpNet, addr: IpAddr) -> IpNet {
        let mut len = base.prefix_len();
        for (net, _) in &self.subnets {
            if net.prefix_len() > base.prefix_len() && base.contains(net) && !net.contains(&addr) {
                len = len.max(common_prefix_len(addr, net.network()) + 1);
            }
        }
        IpNet::new(addr, len).map(|n| n.trunc()).unwrap_or(base)
    }
}

/// A geo order with the sites measured for the client's network moved to the front, fastest
/// first (the others keep their order after them), valid for that network at most; it
/// explores while its two best sites are not both freshly measured. Unchanged when none of
/// its sites was measured.
fn measured_first(geo: SiteOrder, hit: &RttHit, explore: u16) -> SiteOrder {
    let rtt_of = |s: &RankedSite| hit.sites.iter().find(|m| *m.site == *s.site);
    if !geo.sites.iter().any(|s| rtt_of(s).is_some()) {
        return geo;
    }
    let mut measured: Sites = Sites::new();
    let mut rest: Sites = Sites::new();
    for s in geo.sites {
        match rtt_of(&s) {
            Some(m) => measured.push(RankedSite {
                rtt_ms: Some(m.rtt_ms),
                ..s
            }),
            None => rest.push(s),
        }
    }
    measured.sort_by(|a, b| {
        a.rtt_ms
            .unwrap_or(f32::MAX)
            .total_cmp(&b.rtt_ms.unwrap_or(f32::MAX))
    });
    let fresh = |s: Option<&RankedSite>| s.and_then(rtt_of).is_some_and(|m| m.fresh);
    measured.extend(rest);
    let settled = fresh(measured.first()) && fresh(measured.get(1));
    let valid_for = if hit.network.prefix_len() > geo.valid_for.prefix_len() {
        hit.network
    } else {
        geo.valid_for
    };
    SiteOrder {
        sites: measured,
        basis: Basis::Measured {
            network: hit.network,
        },
        valid_for,
        explore: if settled { 0 } else { explore },
    }
}

/// How many leading bits two addresses of the same family share (0 across families).
pub fn common_prefix_len(a: IpAddr, b: IpAddr) -> u8 {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)).leading_zeros() as u8,
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)).leading_zeros() as u8,
        _ => 0,
    }
}

/// Geo: walk the client's site order; inside each site, weighted round-robin. Members at
/// sites outside the order (beyond `limit`, or not listed) are not answered.
impl SelectionPolicy for GeoPolicy {
    fn rank(&self, pool: &Pool, usable: &[usize], client: &ClientInfo) -> Ranking {
        let order = self.order(client);
        // Each usable member's place in the order, found once.
        let at: SmallVec<[Option<usize>; 8]> = usable
            .iter()
            .map(|&i| site_position(&order.sites, &pool.members[i].site))
            .collect();
        let mut groups = SmallVec::new();
        for k in 0..order.sites.len() {
            let mut members = Indexes::new();
            for (&i, _) in usable.iter().zip(&at).filter(|(_, &p)| p == Some(k)) {
                members.push(i);
            }
            if !members.is_empty() {
                groups.push(Group {
                    members,
                    weighted: true,
                    factors: None,
                });
            }
        }
        Ranking {
            groups,
            sites: Some(order),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use crate::health::SiteRtt;

    /// The latency policy over sites a and b, a first when nothing was measured.
    fn latency_policy() -> GeoPolicy {
        GeoPolicy {
            mode: GeoMode::Subnet,
            latency: Some(20),
            subnets: Vec::new(),
            default_order: vec!["a".into(), "b".into()],
        }
    }

    fn measured(network: &str, sites: &[(&str, f32, bool)]) -> ClientInfo {
        let network: IpNet = network.parse().unwrap();
        let mut client = ClientInfo::from_network(network);
        client.rtt = Some(RttHit {
            network: client_unit(network),
            sites: sites
                .iter()
                .map(|&(site, rtt_ms, fresh)| SiteRtt {
                    site: site.into(),
                    rtt_ms,
                    fresh,
                })
                .collect(),
        });
        client
    }

    fn names(order: &SiteOrder) -> Vec<&str> {
        order.sites.iter().map(|s| &*s.site).collect()
    }

    #[test]
    fn measured_sites_come_first_fastest_first_scoped_to_the_measured_network() {
        let p = latency_policy();
        let order = p.order(&measured(
            "10.1.2.7/32",
            &[("b", 3.0, true), ("a", 40.0, true)],
        ));
        assert_eq!(names(&order), ["b", "a"]);
        assert_eq!(order.valid_for.to_string(), "10.1.2.0/24");
        assert_eq!(order.explore, 0, "both fresh: settled");
        assert!(matches!(order.basis, Basis::Measured { .. }));

        // Only a measured: it leads, and answers explore b until both are measured.
        let order = p.order(&measured("10.1.2.0/24", &[("b", 3.0, true)]));
        assert_eq!(names(&order), ["b", "a"]);
        assert_eq!(order.explore, 20);
        let order = p.order(&measured(
            "10.1.2.0/24",
            &[("b", 3.0, true), ("a", 1.0, false)],
        ));
        assert_eq!(names(&order), ["a", "b"], "a stale measurement still ranks");
        assert_eq!(order.explore, 20, "but does not settle");

        // Nothing measured: the fallback order, for everyone, with no exploring.
        let order = p.order(&measured("10.9.9.0/24", &[]));
        assert_eq!(names(&order), ["a", "b"]);
        assert_eq!(order.valid_for.prefix_len(), 0);
        assert_eq!(order.explore, 0);
    }

    #[test]
    fn an_exploring_plan_tries_the_second_site_at_its_share_of_answers_spread_out() {
        let pools = [tests_pool()];
        let p = PolicyKind::Geo(Arc::new(latency_policy()));
        let req = Request {
            pools: &pools,
            pool: 0,
            policy: &p,
            answers: 1,
            when_all_down: &WhenAllDown::FailOpen,
            family: Family::V4,
        };
        let client = measured("10.1.2.0/24", &[("a", 3.0, true)]);
        let plan = plan(&req, &HealthSnapshot::default(), &client);
        let picks: Vec<usize> = (0..1000).map(|c| plan.pick(&pools, c)[0].1).collect();
        assert_eq!(picks.iter().filter(|&&m| m == 1).count(), 20, "2% on b");
        let longest_gap = picks.split(|&m| m == 1).map(<[usize]>::len).max().unwrap();
        assert!(
            longest_gap < 150,
            "explorations spread out: gap of {longest_gap}"
        );
    }

    /// Members at sites a and b.
    fn tests_pool() -> Pool {
        Pool {
            name: "p".into(),
            safety: DrainSafety::default(),
            members: ["a", "b"]
                .iter()
                .enumerate()
                .map(|(i, site)| Member {
                    id: MemberId::new(site, &format!("192.0.2.{}", i + 1)),
                    site: (*site).into(),
                    target: Target::Addr(format!("192.0.2.{}", i + 1).parse().unwrap()),
                    port: None,
                    weight: 1,
                    priority: 1,
                })
                .collect(),
        }
    }
}
