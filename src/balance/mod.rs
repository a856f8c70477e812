//! The decision core: which members of a pool answer a client. Pure functions of (pool,
//! health, client, cursor), free of DNS types, metrics and the control endpoint, so DNS
//! answers, `explain` and the site proxy all decide the same way.
//!
//! - this file: pools and members, the client, policies that rank ([`SelectionPolicy`]), and
//!   the one step that applies health and `when_all_down` ([`plan`], [`select`]);
//! - [`geo`]: the geo policies' site order (distance, map, subnet table);
//! - [`decide`](mod@self::decide): a decision for a client as the query path takes it (the geo
//!   lookup when the policy needs one, round-robin cursors, a per-thread plan cache);
//! - [`safety`]: what an override would do to each pool, per address family;
//! - [`shed`](mod@self::shed): load shedding, the weight factors of members whose site
//!   reports too much load.
//!
//! A [`SelectionPolicy`] only *ranks* candidates. One shared step, [`select`], then applies
//! health, admin overrides and `when_all_down`, and says why it chose what it chose
//! ([`Reason`]). Round-robin position comes in as `cursor`: policies never read a clock or a
//! random source, so the same inputs always give the same answer.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::Serialize;
use smallvec::SmallVec;

/// Member indexes, inline for small pools (the query path allocates nothing for them).
pub type Indexes = SmallVec<[usize; 4]>;
/// Sites in ranked order, inline for up to four.
pub type Sites = SmallVec<[RankedSite; 4]>;

use crate::geo::{whole_space, GeoHit};
use crate::health::{Admin, Factor, Health, HealthSnapshot, Latency, MemberId, SiteRtt};

pub mod decide;
pub mod geo;
pub mod safety;
pub mod shed;
pub use decide::{decide, plan_for, Cursors, PlanCache};
pub use geo::{common_prefix_len, Basis, GeoMode, GeoPolicy, RankedSite, SiteName, SiteOrder};
pub use safety::{drain_impact, PoolImpact};
use shed::shed;
pub use shed::shed_point;

/// What a member answers with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Addr(IpAddr),
    /// An alias to another name (answered as a CNAME by DNS), fully qualified.
    Alias(String),
}

/// Address family a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Family {
    #[serde(rename = "IPv4")]
    V4,
    #[serde(rename = "IPv6")]
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    /// `IPv4` or `IPv6`, for messages.
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
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
    /// Interned per load-balancing file: members and geo policies of one file share the same
    /// allocation for a site, so rankings compare pointers before bytes.
    pub site: SiteName,
    pub target: Target,
    /// The upstream port, for a server behind a site proxy (`address = "IP:PORT"`); DNS
    /// answers the address alone. Part of the member's identity when given.
    pub port: Option<u16>,
    pub weight: u32,
    /// Failover group: lower numbers are tried first.
    pub priority: u32,
}

/// A named set of members.
#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub members: Vec<Member>,
    pub safety: DrainSafety,
}

/// How far operators may take a pool out of service without forcing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainSafety {
    /// Usable members the pool keeps at least (default 1: never drain the last one).
    pub min_usable: usize,
    /// Share of the pool's total weight its usable members keep at least, in percent.
    pub min_weight_percent: u8,
}

impl Default for DrainSafety {
    fn default() -> Self {
        DrainSafety {
            min_usable: 1,
            min_weight_percent: 0,
        }
    }
}

/// What a policy knows about the client: its network (the ECS prefix, or the source address
/// as a host network) and, for policies that need it, where the geo database places it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub network: IpNet,
    pub geo: Option<GeoHit>,
    /// For the latency policy: what the site proxies measured for the client's network.
    pub rtt: Option<RttHit>,
}

impl ClientInfo {
    /// A client known only by its network.
    pub fn from_network(network: IpNet) -> Self {
        ClientInfo {
            network,
            geo: None,
            rtt: None,
        }
    }
}

/// The round-trip times site proxies measured for a client's network (a /24 or /48), fastest
/// site first; none when the client's network is wider than that (an ECS prefix of /16 says
/// nothing about one /24 in it) or nothing was measured.
#[derive(Debug, Clone)]
pub struct RttHit {
    pub network: IpNet,
    pub sites: SmallVec<[SiteRtt; 2]>,
}

impl RttHit {
    pub fn lookup(latency: &Latency, client: IpNet) -> RttHit {
        let network = client_unit(client);
        let sites = if network.prefix_len() == unit_len(client) {
            latency.of(&network).iter().cloned().collect()
        } else {
            SmallVec::new()
        };
        RttHit { network, sites }
    }
}

/// How a load-balanced name picks among its pool's members.
#[derive(Debug, Clone)]
pub enum PolicyKind {
    /// Weighted round-robin: each member's share of first answers follows its weight.
    Weighted,
    /// Ordered groups by priority: the first group with a usable member answers, weighted inside it.
    Failover,
    /// Every usable member, in configured order.
    All,
    /// Sites ordered by the client (subnet table, then geography); the first site with a usable
    /// member answers, weighted inside it; the next sites follow.
    Geo(Arc<GeoPolicy>),
}

/// What to answer when no member of the asked family is usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhenAllDown {
    /// Answer every member that is not drained or forced down, healthy or not.
    FailOpen,
    /// Answer from another pool (by index into the config's pools).
    Fallback(usize),
    /// Answer with no member: DNS says NODATA (the config spells it `"nodata"`), a proxy
    /// would answer 503.
    Nothing,
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
    pub members: SmallVec<[(usize, usize); 4]>,
    pub reason: Reason,
    /// Whether a member forced up by an operator (and down by its probes) was a candidate.
    pub forced: bool,
    /// The client network this decision holds for: every address in it gets the same answer.
    pub valid_for: IpNet,
    /// For geo policies, the site order that was walked.
    pub sites: Option<SiteOrder>,
}

/// A policy's ranking of one pool for one client: groups in answer order. Independent of the
/// round-robin position, so a ranking can be kept and reused while config and health stand.
#[derive(Debug, Clone, Default)]
pub struct Ranking {
    pub groups: SmallVec<[Group; 4]>,
    /// For geo policies: the site order behind the ranking (and the network it holds for).
    pub sites: Option<SiteOrder>,
}

/// Members answered together, in configured order; a weighted group starts where the
/// round-robin position falls (by weight) and wraps around.
#[derive(Debug, Clone, Default)]
pub struct Group {
    pub members: Indexes,
    pub weighted: bool,
    /// Each member's weight factor in thousandths, when load shedding scales the weights.
    pub factors: Option<SmallVec<[u16; 4]>>,
}

impl Ranking {
    fn one(members: Indexes, weighted: bool) -> Ranking {
        let mut groups = SmallVec::new();
        groups.push(Group {
            members,
            weighted,
            factors: None,
        });
        Ranking {
            groups,
            sites: None,
        }
    }
}

/// Ranks the usable candidates of a pool for a client.
pub trait SelectionPolicy {
    /// `usable` lists member indexes that may be answered, in configured order. Returns them
    /// grouped best first; the shared step applies the round-robin position and keeps as many
    /// as it needs.
    fn rank(&self, pool: &Pool, usable: &[usize], client: &ClientInfo) -> Ranking;
}

/// Weighted round-robin: position `cursor mod total weight` picks the first member, the rest
/// follow in configured order, so over any full cycle each member leads in proportion to weight.
pub struct Weighted;

impl SelectionPolicy for Weighted {
    fn rank(&self, _: &Pool, usable: &[usize], _: &ClientInfo) -> Ranking {
        Ranking::one(Indexes::from_slice(usable), true)
    }
}

/// Position in the group's members of the one the cursor's point falls on, by weight.
///
/// Plain weights are walked in order: a member of weight 3 leads three positions in a row.
/// Weights scaled by load factors are reduced by their greatest common divisor and the
/// positions visited in a stride coprime with the total, so that members still lead in
/// proportion over every full cycle, but interleaved: a factor in thousandths would otherwise
/// make runs hundreds of answers long.
#[inline]
fn weighted_first(pool: &Pool, group: &Group, cursor: u64) -> usize {
    let weight = |pos: usize| u64::from(pool.members[group.members[pos]].weight);
    let Some(factors) = &group.factors else {
        return position_of((0..group.members.len()).map(weight), cursor);
    };
    let scaled = |pos: usize| weight(pos) * u64::from(factors[pos]);
    let divisor = (0..group.members.len()).map(scaled).fold(0, gcd).max(1);
    let total: u64 = (0..group.members.len()).map(|p| scaled(p) / divisor).sum();
    if total == 0 {
        return 0;
    }
    let stride = [7919u64, 7907, 7901]
        .into_iter()
        .find(|p| !total.is_multiple_of(*p))
        .unwrap_or(1);
    let point = ((u128::from(cursor % total) * u128::from(stride)) % u128::from(total)) as u64;
    position_of((0..group.members.len()).map(|p| scaled(p) / divisor), point)
}

/// Which of `weights` the point `cursor mod total` falls on.
fn position_of(weights: impl Iterator<Item = u64> + Clone, cursor: u64) -> usize {
    let total: u64 = weights.clone().sum();
    if total == 0 {
        return 0;
    }
    let mut point = cursor % total;
    for (pos, w) in weights.enumerate() {
        if point < w {
            return pos;
        }
        point -= w;
    }
    0
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Failover: the lowest priority group that has usable members, weighted inside it; the other
/// groups follow in priority order.
pub struct Failover;

impl SelectionPolicy for Failover {
    fn rank(&self, pool: &Pool, usable: &[usize], _: &ClientInfo) -> Ranking {
        let mut priorities: SmallVec<[u32; 4]> =
            usable.iter().map(|&i| pool.members[i].priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let mut ranking = Ranking::default();
        for p in priorities {
            let members: Indexes = usable
                .iter()
                .copied()
                .filter(|&i| pool.members[i].priority == p)
                .collect();
            ranking.groups.push(Group {
                members,
                weighted: true,
                factors: None,
            });
        }
        ranking
    }
}

/// Every usable member in configured order.
pub struct All;

impl SelectionPolicy for All {
    fn rank(&self, _: &Pool, usable: &[usize], _: &ClientInfo) -> Ranking {
        Ranking::one(Indexes::from_slice(usable), false)
    }
}

impl PolicyKind {
    pub fn policy(&self) -> &dyn SelectionPolicy {
        match self {
            PolicyKind::Weighted => &Weighted,
            PolicyKind::Failover => &Failover,
            PolicyKind::All => &All,
            PolicyKind::Geo(g) => g.as_ref(),
        }
    }

    /// Whether every candidate is answered rather than `answers` of them.
    pub fn answers_all(&self) -> bool {
        matches!(self, PolicyKind::All)
    }

    /// Whether the client's location is needed (so callers look it up only then).
    pub fn needs_location(&self) -> bool {
        matches!(self, PolicyKind::Geo(g) if !matches!(g.mode, GeoMode::Subnet))
    }

    /// Whether the site proxies' round-trip times for the client are needed.
    pub fn needs_rtt(&self) -> bool {
        matches!(self, PolicyKind::Geo(g) if g.latency.is_some())
    }

    /// The name used in config files.
    pub fn name(&self) -> &'static str {
        match self {
            PolicyKind::Weighted => "weighted",
            PolicyKind::Failover => "failover",
            PolicyKind::All => "all",
            PolicyKind::Geo(g) if g.latency.is_some() => "latency",
            PolicyKind::Geo(g) => match g.mode {
                GeoMode::Nearest { .. } => "geo-nearest",
                GeoMode::Map(_) => "geo-map",
                GeoMode::Subnet => "subnet",
            },
        }
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
    pub policy: &'a PolicyKind,
    pub answers: usize,
    pub when_all_down: &'a WhenAllDown,
    pub family: Family,
}

/// A selection before the round-robin position is applied: which groups answer, why, and for
/// which client network. It depends only on config, health and the client, so the fast path
/// keeps plans for geo names and reuses them until config or health change.
#[derive(Debug, Clone)]
pub struct Plan {
    /// (pool index, group) in answer order.
    pub groups: SmallVec<[(usize, Group); 4]>,
    pub reason: Reason,
    /// Whether a member forced up by an operator (and down by its probes) was a candidate.
    pub forced: bool,
    pub valid_for: IpNet,
    pub sites: Option<SiteOrder>,
    /// How many members an answer holds at most.
    pub limit: usize,
}

impl Plan {
    /// The selection this plan makes at round-robin position `cursor`.
    pub fn select(self, pools: &[Pool], cursor: u64) -> Selection {
        Selection {
            members: self.pick(pools, cursor),
            reason: self.reason,
            forced: self.forced,
            valid_for: self.valid_for,
            sites: self.sites,
        }
    }

    /// The members to answer at round-robin position `cursor`, best first. A latency plan
    /// that explores puts its second site first at its share of positions, spread evenly.
    pub fn pick(&self, pools: &[Pool], cursor: u64) -> SmallVec<[(usize, usize); 4]> {
        let mut out = SmallVec::new();
        let explore = self.sites.as_ref().map_or(0, |s| s.explore);
        let swap = explore > 0
            && self.groups.len() >= 2
            && (cursor.wrapping_mul(7919) % 1000) < u64::from(explore);
        let mut order: SmallVec<[usize; 4]> = (0..self.groups.len()).collect();
        if swap {
            order.swap(0, 1);
        }
        for (pool, g) in order.iter().map(|&i| &self.groups[i]) {
            let first = if g.weighted {
                weighted_first(&pools[*pool], g, cursor)
            } else {
                0
            };
            for &i in g.members[first..].iter().chain(&g.members[..first]) {
                if out.len() == self.limit {
                    return out;
                }
                out.push((*pool, i));
            }
        }
        out
    }
}

/// The client network decisions that tell clients apart work by: the client's network, at
/// most a /24 (IPv4) or a /48 (IPv6) wide. Load shedding keeps or spills every address in it
/// alike (so it bounds the ECS scope of a split decision), and site proxies measure latency
/// per such network.
pub fn client_unit(network: IpNet) -> IpNet {
    IpNet::new(
        network.network(),
        network.prefix_len().min(unit_len(network)),
    )
    .map(|n| n.trunc())
    .unwrap_or(network)
}

/// The prefix length of a whole [`client_unit`] in the network's family.
fn unit_len(network: IpNet) -> u8 {
    match network {
        IpNet::V4(_) => 24,
        IpNet::V6(_) => 48,
    }
}

/// Applies health and admin state, ranks with the policy, and falls back as configured.
pub fn plan(req: &Request<'_>, health: &HealthSnapshot, client: &ClientInfo) -> Plan {
    let everyone = whole_space(client.network.network());
    let unit = client_unit(client.network);
    let weighted = matches!(req.policy, PolicyKind::Weighted);
    let mut sites: Option<SiteOrder> = None;
    let mut forced = false;
    let mut split = false;
    let mut rank = |pool_idx: usize, only_usable: bool| -> SmallVec<[(usize, Group); 4]> {
        let pool = &req.pools[pool_idx];
        let mut candidates = Indexes::new();
        let mut factors: SmallVec<[Factor; 4]> = SmallVec::new();
        for (i, m) in pool.members.iter().enumerate() {
            if !m.target.serves(req.family) {
                continue;
            }
            let st = health.get(&m.id);
            let candidate = if only_usable {
                usable(st.admin, st.health)
            } else {
                !matches!(st.admin, Admin::Drained | Admin::ForcedDown)
            };
            if candidate {
                candidates.push(i);
                factors.push(st.factor);
                forced |= st.admin == Admin::ForcedUp && st.health == Health::Down;
            }
        }
        // Failing open answers whatever is left: load does not matter then.
        let (weights, splits) = if only_usable {
            shed(&mut candidates, &factors, weighted, unit)
        } else {
            (None, false)
        };
        split |= splits;
        let ranking = req.policy.policy().rank(pool, &candidates, client);
        if ranking.sites.is_some() {
            sites = ranking.sites;
        }
        ranking
            .groups
            .into_iter()
            .filter(|g| !g.members.is_empty())
            .map(|mut g| {
                if let Some(w) = &weights {
                    // A weighted ranking is one group of the candidates in order.
                    g.factors = Some(w.clone());
                }
                (pool_idx, g)
            })
            .collect()
    };

    let limit = if req.policy.answers_all() {
        usize::MAX
    } else {
        req.answers.max(1)
    };
    let chosen = rank(req.pool, true);
    let (groups, reason) = if !chosen.is_empty() {
        (chosen, Reason::Healthy)
    } else {
        match req.when_all_down {
            WhenAllDown::Nothing => (SmallVec::new(), Reason::AllDown),
            WhenAllDown::FailOpen => (rank(req.pool, false), Reason::FailOpen),
            WhenAllDown::Fallback(fb) => {
                let from_fallback = rank(*fb, true);
                if from_fallback.is_empty() {
                    (rank(req.pool, false), Reason::FailOpen)
                } else {
                    (from_fallback, Reason::Fallback)
                }
            }
        }
    };
    let reason = if groups.is_empty() {
        Reason::AllDown
    } else {
        reason
    };
    let mut valid_for = sites.as_ref().map_or(everyone, |s| s.valid_for);
    if split && unit.prefix_len() > valid_for.prefix_len() {
        valid_for = unit;
    }
    Plan {
        groups,
        reason,
        forced,
        valid_for,
        sites,
        limit,
    }
}

/// [`plan`], then the members at round-robin position `cursor`.
pub fn select(
    req: &Request<'_>,
    health: &HealthSnapshot,
    client: &ClientInfo,
    cursor: u64,
) -> Selection {
    plan(req, health, client).select(req.pools, cursor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{HealthSnapshot, MemberState};

    pub(super) fn pool(weights: &[(u32, u32)]) -> Pool {
        Pool {
            safety: DrainSafety::default(),
            name: "p".into(),
            members: weights
                .iter()
                .enumerate()
                .map(|(i, &(weight, priority))| Member {
                    id: MemberId::new("s", &format!("192.0.2.{}", i + 1)),
                    site: "s".into(),
                    target: Target::Addr(format!("192.0.2.{}", i + 1).parse().unwrap()),
                    port: None,
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
                ..Default::default()
            },
        );
    }

    fn client() -> ClientInfo {
        ClientInfo::from_network("198.51.100.7/32".parse().unwrap())
    }

    /// One answer for IPv4 clients from the first pool.
    pub(super) fn request<'a>(
        pools: &'a [Pool],
        policy: &'a PolicyKind,
        wad: &'a WhenAllDown,
    ) -> Request<'a> {
        Request {
            pools,
            pool: 0,
            policy,
            answers: 1,
            when_all_down: wad,
            family: Family::V4,
        }
    }

    pub(super) fn run(
        pools: &[Pool],
        policy: PolicyKind,
        wad: WhenAllDown,
        snap: &HealthSnapshot,
        n: u64,
    ) -> Vec<Selection> {
        let req = request(pools, &policy, &wad);
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
        assert_eq!(s[0].members.to_vec(), vec![(0, 1)]);
        mark(&mut snap, &pools[0].members[1], Admin::Normal);
        let s = run(
            &pools,
            PolicyKind::Failover,
            WhenAllDown::FailOpen,
            &snap,
            1,
        );
        assert_eq!(s[0].members.to_vec(), vec![(0, 0)]);
        assert_eq!(s[0].reason, Reason::Healthy);
    }

    #[test]
    fn all_down_fails_open_but_never_answers_drained() {
        let pools = [pool(&[(1, 1), (1, 1)])];
        let mut snap = HealthSnapshot::default();
        mark(&mut snap, &pools[0].members[0], Admin::Normal);
        mark(&mut snap, &pools[0].members[1], Admin::Drained);
        let req = request(&pools, &PolicyKind::All, &WhenAllDown::FailOpen);
        let s = select(&req, &snap, &client(), 0);
        assert_eq!(s.reason, Reason::FailOpen);
        assert_eq!(s.members.to_vec(), vec![(0, 0)]);
    }

    #[test]
    fn all_down_nodata_answers_nothing() {
        let pools = [pool(&[(1, 1)])];
        let mut snap = HealthSnapshot::default();
        mark(&mut snap, &pools[0].members[0], Admin::Normal);
        let s = run(&pools, PolicyKind::Weighted, WhenAllDown::Nothing, &snap, 1);
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
        assert_eq!(s[0].members.to_vec(), vec![(1, 0)]);
        assert_eq!(s[0].reason, Reason::Fallback);
    }
}
