//! Decisions as the query path takes them: the client placed by the geo database when the
//! policy needs it (once per client), the round-robin position from a cursor per name, and a
//! per-thread cache of plans keyed by the client network each holds for.

use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;

use super::{client_unit, plan, ClientInfo, Family, Plan, PolicyKind, Request, RttHit, Selection};
use crate::geo::{whole_space, GeoLocator};
use crate::hash::FastMap;
use crate::health::HealthSnapshot;

/// Round-robin cursors, one per rule (a load-balanced name), each advanced once per decision.
pub struct Cursors(Box<[AtomicU64]>);

impl Cursors {
    pub fn new(rules: usize) -> Cursors {
        Cursors((0..rules).map(|_| AtomicU64::new(0)).collect())
    }

    /// The position for the next decision of rule `i`, advancing it.
    pub fn next(&self, i: usize) -> u64 {
        self.0[i].fetch_add(1, Ordering::Relaxed)
    }

    /// The position the next decision of rule `i` would take, without advancing it (an
    /// explanation must not move the rotation clients see).
    pub fn peek(&self, i: usize) -> u64 {
        self.0[i].load(Ordering::Relaxed)
    }
}

/// The plan for a client: looks it up in the geo database first when the policy needs its
/// location and it has none yet.
pub fn plan_for(
    req: &Request<'_>,
    geo: &dyn GeoLocator,
    health: &HealthSnapshot,
    client: &mut ClientInfo,
) -> Plan {
    if req.policy.needs_location() && client.geo.is_none() {
        client.geo = Some(geo.locate(client.network.network()));
    }
    if req.policy.needs_rtt() && client.rtt.is_none() {
        client.rtt = Some(RttHit::lookup(health.latency(), client.network));
    }
    plan(req, health, client)
}

/// A decision for a client: [`plan_for`], then the members at round-robin position `cursor`.
pub fn decide(
    req: &Request<'_>,
    geo: &dyn GeoLocator,
    health: &HealthSnapshot,
    client: &mut ClientInfo,
    cursor: u64,
) -> Selection {
    plan_for(req, geo, health, client).select(req.pools, cursor)
}

/// Plans by (rule, family, client network), for one thread. A plan is everything of a
/// decision but the round-robin position (database lookup, site order, health filtering,
/// fallbacks), so a hit costs a hash lookup instead of the tree walk and the ranking. Only
/// geo plans (and, while load shedding splits clients, failover and all plans) are kept per
/// client network; the others hold for the whole address family. The
/// cache empties itself when the config or the health snapshot it was filled from is no
/// longer current, and when it reaches [`PLAN_LIMIT`] entries.
#[derive(Default)]
pub struct PlanCache {
    config: u64,
    health: u64,
    plans: FastMap<(usize, bool, IpNet), Plan>,
}

/// Plans one cache holds at most.
pub const PLAN_LIMIT: usize = 16_384;

impl PlanCache {
    /// The plan of rule `rule` (asked as `req`) for `client`, from the cache when config
    /// `config` and `health` are the ones it was filled from.
    pub fn plan(
        &mut self,
        config: u64,
        rule: usize,
        req: &Request<'_>,
        geo: &dyn GeoLocator,
        health: &HealthSnapshot,
        client: &mut ClientInfo,
    ) -> &Plan {
        if self.config != config || self.health != health.id() || self.plans.len() >= PLAN_LIMIT {
            self.plans.clear();
            self.config = config;
            self.health = health.id();
        }
        // Geo decisions depend on the client; the others hold for its whole family, unless
        // load shedding keeps part of the client networks on some member.
        let network = match req.policy {
            PolicyKind::Geo(_) => client.network,
            PolicyKind::Failover | PolicyKind::All if health.splits_networks() => {
                client_unit(client.network)
            }
            _ => whole_space(client.network.network()),
        };
        let key = (rule, req.family == Family::V6, network);
        self.plans
            .entry(key)
            .or_insert_with(|| plan_for(req, geo, health, client))
    }
}
