//! Geo policies: the order in which a client's sites are tried, by subnet table, by
//! great-circle distance or by a location map, and the client network that order holds for.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::Serialize;
use smallvec::SmallVec;

use super::{ClientInfo, Group, Indexes, Pool, Ranking, SelectionPolicy, Sites};
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
}

/// One site in a ranking, with its distance when distance decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedSite {
    pub site: SiteName,
    /// Cosine of the angle between the client and the site, when distance decided
    /// (ranking compares these; [`RankedSite::distance_km`] turns one into kilometres).
    pub cos_angle: Option<f64>,
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
                })
                .collect()
        };
        // Subnet entries override geography.
        if let Some((entry, sites)) = self.subnets.iter().find(|(net, _)| net.contains(&addr)) {
            return SiteOrder {
                sites: named(sites),
                basis: Basis::Subnet { entry: *entry },
                valid_for: self.exclude_more_specific(*entry, addr),
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
        SiteOrder {
            sites,
            basis,
            valid_for,
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
