//! Drain safety: what an override would do to each pool's capacity, per address family, as
//! a pure function of the pools and a health snapshot. The DNS control endpoint refuses an
//! override that breaks a pool's rule; the site proxy's will do the same.

use serde::Serialize;

use super::{usable, Family, Member, Pool};
use crate::health::{Admin, HealthSnapshot, MemberId};

/// What an override would do to one pool's capacity for one address family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolImpact {
    pub pool: String,
    /// The members counted: those that serve this family (aliases serve both).
    pub family: Family,
    pub usable_before: usize,
    pub usable_after: usize,
    pub weight_percent_before: u32,
    pub weight_percent_after: u32,
    /// Why the change breaks the pool's drain safety rule; `None` when it does not.
    pub refused: Option<String>,
}

/// The impact on every pool of setting `admin` on `targets` over health `snap`, per address
/// family: the rules hold for the members that serve each family, since a name answering A
/// records fails open when its IPv4 members are gone, whatever its IPv6 members do. A change
/// that lowers a pool's capacity in a family below its [`super::DrainSafety`] is marked refused (one
/// that does not lower capacity never is, even in a pool already below it).
pub fn drain_impact(
    pools: &[Pool],
    snap: &HealthSnapshot,
    targets: &[MemberId],
    admin: Admin,
) -> Vec<PoolImpact> {
    let mut out = Vec::new();
    for pool in pools {
        for family in Family::BOTH {
            if let Some(impact) = family_impact(pool, family, snap, targets, admin) {
                out.push(impact);
            }
        }
    }
    out
}

/// [`drain_impact`] for one pool and family; `None` when no target serves the family.
fn family_impact(
    pool: &Pool,
    family: Family,
    snap: &HealthSnapshot,
    targets: &[MemberId],
    admin: Admin,
) -> Option<PoolImpact> {
    let members: Vec<&Member> = pool
        .members
        .iter()
        .filter(|m| m.target.serves(family))
        .collect();
    if !members.iter().any(|m| targets.contains(&m.id)) {
        return None;
    }
    let total: u64 = members.iter().map(|m| m.weight as u64).sum();
    let (mut before, mut after, mut w_before, mut w_after) = (0, 0, 0u64, 0u64);
    for m in members {
        let st = snap.get(&m.id);
        if usable(st.admin, st.health) {
            before += 1;
            w_before += m.weight as u64;
        }
        let admin_after = if targets.contains(&m.id) {
            admin
        } else {
            st.admin
        };
        if usable(admin_after, st.health) {
            after += 1;
            w_after += m.weight as u64;
        }
    }
    let percent = |w: u64| (w * 100 / total.max(1)) as u32;
    let lowers = after < before || w_after < w_before;
    let rule = pool.safety;
    let refused = if !lowers {
        None
    } else if after < rule.min_usable {
        Some(format!(
            "pool {:?} would keep {after} usable {} member(s), below its minimum of {}",
            pool.name,
            family.label(),
            rule.min_usable
        ))
    } else if percent(w_after) < rule.min_weight_percent as u32 {
        Some(format!(
            "pool {:?} ({}) would keep {}% of its weight usable, below its minimum of {}%",
            pool.name,
            family.label(),
            percent(w_after),
            rule.min_weight_percent
        ))
    } else {
        None
    };
    Some(PoolImpact {
        pool: pool.name.clone(),
        family,
        usable_before: before,
        usable_after: after,
        weight_percent_before: percent(w_before),
        weight_percent_after: percent(w_after),
        refused,
    })
}
