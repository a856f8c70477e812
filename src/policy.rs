//! Selection: which members of a pool answer a client. Pure functions of (pool, health, client,
//! cursor), free of DNS types so the site proxy can reuse them.
//!
//! A [`SelectionPolicy`] only *ranks* candidates. One shared step, [`select`], then applies
//! health, admin overrides and `when_all_down`, and says why it chose what it chose
//! ([`Reason`]). Round-robin position comes in as `cursor`: policies never read a clock or a
//! random source, so the same inputs always give the same answer.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::health::{Admin, Health, HealthSnapshot, MemberId};

/// What a member answers with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Addr(IpAddr),
    /// An alias to another name (answered as a CNAME by DNS), fully qualified.
    Alias(String),
}

/// Address family a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Target {
    /// Whether this member can answer a query for `family`. Aliases answer both.
    pub fn serves(&self, family: Family) -> bool {
        match self {
            Target::Addr(IpAddr::V4(_)) => family == Family::V4,
            Target::Addr(IpAddr::V6(_)) => family == Family::V6,
            Target::Alias(_) => true,
        }
    }
}

/// One pool member. Identity is `site/address` (or `site/alias`), never the list position.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: MemberId,
    pub site: String,
    pub target: Target,
    pub weight: u32,
    /// Failover group: lower numbers are tried first.
    pub priority: u32,
}

/// A named set of members.
#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub members: Vec<Member>,
}

/// What a policy knows about the client. Filled from the source address (or, later, the ECS
/// prefix and a geo lookup).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub network: IpNet,
}

/// How a load-balanced name picks among its pool's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Weighted round-robin: each member's share of first answers follows its weight.
    Weighted,
    /// Ordered groups by priority: the first group with a usable member answers, weighted inside it.
    Failover,
    /// Every usable member, in configured order.
    All,
}

/// What to answer when no member of the asked family is usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhenAllDown {
    /// Answer every member that is not drained or forced down, healthy or not.
    FailOpen,
    /// Answer from another pool (by index into the config's pools).
    Fallback(usize),
    /// Answer with no records (NODATA).
    NoData,
}

/// Why a selection came out the way it did; read the same way by DNS, `status` and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Usable members were found and ranked by the policy.
    Healthy,
    /// None was usable; every member not drained or forced down is answered.
    FailOpen,
    /// None was usable; the fallback pool answered.
    Fallback,
    /// None was usable and the name is configured to answer NODATA (or nothing can be answered).
    AllDown,
}

/// The outcome of one selection.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Chosen members, best first, as (pool index, member index).
    pub members: Vec<(usize, usize)>,
    pub reason: Reason,
    /// The client network this decision holds for: every address in it gets the same answer.
    pub valid_for: IpNet,
}

/// Ranks the usable candidates of a pool for a client.
pub trait SelectionPolicy {
    /// `usable` lists member indexes that may be answered, in configured order. Returns them
    /// best first; the caller keeps as many as it needs.
    fn rank(&self, pool: &Pool, usable: &[usize], client: &ClientInfo, cursor: u64) -> Vec<usize>;
}

/// Weighted round-robin: position `cursor mod total weight` picks the first member, the rest
/// follow in configured order, so over any full cycle each member leads in proportion to weight.
pub struct Weighted;

impl SelectionPolicy for Weighted {
    fn rank(&self, pool: &Pool, usable: &[usize], _: &ClientInfo, cursor: u64) -> Vec<usize> {
        let total: u64 = usable.iter().map(|&i| pool.members[i].weight as u64).sum();
        if total == 0 {
            return usable.to_vec();
        }
        let mut point = cursor % total;
        let mut first = 0;
        for (pos, &i) in usable.iter().enumerate() {
            let w = pool.members[i].weight as u64;
            if point < w {
                first = pos;
                break;
            }
            point -= w;
        }
        usable[first..]
            .iter()
            .chain(&usable[..first])
            .copied()
            .collect()
    }
}

/// Failover: the lowest priority group that has usable members, weighted inside it; the other
/// groups follow in priority order.
pub struct Failover;

impl SelectionPolicy for Failover {
    fn rank(&self, pool: &Pool, usable: &[usize], client: &ClientInfo, cursor: u64) -> Vec<usize> {
        let mut priorities: Vec<u32> = usable.iter().map(|&i| pool.members[i].priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let mut out = Vec::with_capacity(usable.len());
        for p in priorities {
            let group: Vec<usize> = usable
                .iter()
                .copied()
                .filter(|&i| pool.members[i].priority == p)
                .collect();
            out.extend(Weighted.rank(pool, &group, client, cursor));
        }
        out
    }
}

/// Every usable member in configured order.
pub struct All;

impl SelectionPolicy for All {
    fn rank(&self, _: &Pool, usable: &[usize], _: &ClientInfo, _: u64) -> Vec<usize> {
        usable.to_vec()
    }
}

impl PolicyKind {
    pub fn policy(self) -> &'static dyn SelectionPolicy {
        match self {
            PolicyKind::Weighted => &Weighted,
            PolicyKind::Failover => &Failover,
            PolicyKind::All => &All,
        }
    }

    /// Whether every candidate is answered rather than `answers` of them.
    pub fn answers_all(self) -> bool {
        self == PolicyKind::All
    }
}

/// Whether a member may be answered given its admin state and health. Unknown health (no
/// probe result yet and no remembered state) counts as usable: a new node answers at once and
/// its first probe result decides within one interval.
pub fn usable(admin: Admin, health: Health) -> bool {
    match admin {
        Admin::Drained | Admin::ForcedDown => false,
        Admin::ForcedUp => true,
        Admin::Normal => health != Health::Down,
    }
}

/// What one load-balanced name asks of [`select`].
pub struct Request<'a> {
    pub pools: &'a [Pool],
    pub pool: usize,
    pub policy: PolicyKind,
    pub answers: usize,
    pub when_all_down: &'a WhenAllDown,
    pub family: Family,
}

/// Applies health and admin state, ranks with the policy, and falls back as configured.
pub fn select(
    req: &Request<'_>,
    health: &HealthSnapshot,
    client: &ClientInfo,
    cursor: u64,
) -> Selection {
    let everyone = IpNet::from(match client.network {
        IpNet::V4(_) => IpNet::V4(Default::default()),
        IpNet::V6(_) => IpNet::V6(Default::default()),
    });
    let pick = |pool_idx: usize, only_usable: bool| -> Vec<(usize, usize)> {
        let pool = &req.pools[pool_idx];
        let candidates: Vec<usize> = pool
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.target.serves(req.family))
            .filter(|(_, m)| {
                let (admin, h) = health.state(&m.id);
                if only_usable {
                    usable(admin, h)
                } else {
                    !matches!(admin, Admin::Drained | Admin::ForcedDown)
                }
            })
            .map(|(i, _)| i)
            .collect();
        if candidates.is_empty() {
            return Vec::new();
        }
        let mut ranked = req.policy.policy().rank(pool, &candidates, client, cursor);
        if !req.policy.answers_all() {
            ranked.truncate(req.answers.max(1));
        }
        ranked.into_iter().map(|i| (pool_idx, i)).collect()
    };

    let chosen = pick(req.pool, true);
    if !chosen.is_empty() {
        return Selection {
            members: chosen,
            reason: Reason::Healthy,
            valid_for: everyone,
        };
    }
    let (members, reason) = match req.when_all_down {
        WhenAllDown::NoData => (Vec::new(), Reason::AllDown),
        WhenAllDown::FailOpen => (pick(req.pool, false), Reason::FailOpen),
        WhenAllDown::Fallback(fb) => {
            let from_fallback = pick(*fb, true);
            if from_fallback.is_empty() {
                (pick(req.pool, false), Reason::FailOpen)
            } else {
                (from_fallback, Reason::Fallback)
            }
        }
    };
    let reason = if members.is_empty() {
        Reason::AllDown
    } else {
        reason
    };
    Selection {
        members,
        reason,
        valid_for: everyone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{HealthSnapshot, MemberState};

    fn pool(weights: &[(u32, u32)]) -> Pool {
        Pool {
            name: "p".into(),
            members: weights
                .iter()
                .enumerate()
                .map(|(i, &(weight, priority))| Member {
                    id: MemberId::new("s", &format!("192.0.2.{}", i + 1)),
                    site: "s".into(),
                    target: Target::Addr(format!("192.0.2.{}", i + 1).parse().unwrap()),
                    weight,
                    priority,
                })
                .collect(),
        }
    }

    /// Marks a member down, with the given admin state.
    fn mark(snap: &mut HealthSnapshot, m: &Member, admin: Admin) {
        snap.set(
            m.id.clone(),
            MemberState {
                health: Health::Down,
                admin,
            },
        );
    }

    fn client() -> ClientInfo {
        ClientInfo {
            network: "198.51.100.7/32".parse().unwrap(),
        }
    }

    fn run(
        pools: &[Pool],
        policy: PolicyKind,
        wad: WhenAllDown,
        snap: &HealthSnapshot,
        n: u64,
    ) -> Vec<Selection> {
        let req = Request {
            pools,
            pool: 0,
            policy,
            answers: 1,
            when_all_down: &wad,
            family: Family::V4,
        };
        (0..n).map(|c| select(&req, snap, &client(), c)).collect()
    }

    #[test]
    fn weights_hold_exactly_over_full_cycles() {
        let pools = [pool(&[(3, 1), (1, 1)])];
        let sels = run(
            &pools,
            PolicyKind::Weighted,
            WhenAllDown::FailOpen,
            &HealthSnapshot::default(),
            400,
        );
        let first = sels.iter().filter(|s| s.members[0].1 == 0).count();
        assert_eq!(first, 300);
    }

    #[test]
    fn failover_prefers_lowest_priority_group_until_it_is_down() {
        let pools = [pool(&[(1, 2), (1, 1)])];
        let mut snap = HealthSnapshot::default();
        let s = run(
            &pools,
            PolicyKind::Failover,
            WhenAllDown::FailOpen,
            &snap,
            1,
        );
        assert_eq!(s[0].members, vec![(0, 1)]);
        mark(&mut snap, &pools[0].members[1], Admin::Normal);
        let s = run(
            &pools,
            PolicyKind::Failover,
            WhenAllDown::FailOpen,
            &snap,
            1,
        );
        assert_eq!(s[0].members, vec![(0, 0)]);
        assert_eq!(s[0].reason, Reason::Healthy);
    }

    #[test]
    fn all_down_fails_open_but_never_answers_drained() {
        let pools = [pool(&[(1, 1), (1, 1)])];
        let mut snap = HealthSnapshot::default();
        mark(&mut snap, &pools[0].members[0], Admin::Normal);
        mark(&mut snap, &pools[0].members[1], Admin::Drained);
        let req = Request {
            pools: &pools,
            pool: 0,
            policy: PolicyKind::All,
            answers: 1,
            when_all_down: &WhenAllDown::FailOpen,
            family: Family::V4,
        };
        let s = select(&req, &snap, &client(), 0);
        assert_eq!(s.reason, Reason::FailOpen);
        assert_eq!(s.members, vec![(0, 0)]);
    }

    #[test]
    fn all_down_nodata_answers_nothing() {
        let pools = [pool(&[(1, 1)])];
        let mut snap = HealthSnapshot::default();
        mark(&mut snap, &pools[0].members[0], Admin::Normal);
        let s = run(&pools, PolicyKind::Weighted, WhenAllDown::NoData, &snap, 1);
        assert!(s[0].members.is_empty());
        assert_eq!(s[0].reason, Reason::AllDown);
    }

    #[test]
    fn all_down_uses_fallback_pool() {
        let pools = [pool(&[(1, 1)]), pool(&[(1, 1)])];
        let mut pools = pools;
        pools[1].members[0].id = MemberId::new("b", "192.0.2.99");
        let mut snap = HealthSnapshot::default();
        mark(&mut snap, &pools[0].members[0], Admin::Normal);
        let s = run(
            &pools,
            PolicyKind::Weighted,
            WhenAllDown::Fallback(1),
            &snap,
            1,
        );
        assert_eq!(s[0].members, vec![(1, 0)]);
        assert_eq!(s[0].reason, Reason::Fallback);
    }
}
