//! Resolving a question in a zone (RFC 1034 section 4.3.2): static data, CNAME chains,
//! wildcards, referrals with their glue, load-balanced names decided by [`crate::balance`], and
//! the additional data of MX, SRV and NS answers.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use ipnet::IpNet;

use super::secure::Denial;
use super::{HealthView, Loaded, Trace, MAX_CNAME_HOPS};
use crate::balance::{self, ClientInfo, Family, Reason, Selection, Target};
use crate::config::Binding;
use crate::zone::{Position, Zone};

pub(super) struct Ctx<'a, 't> {
    pub(super) loaded: &'a Loaded,
    pub(super) health: HealthView<'a>,
    pub(super) zone: &'a Zone,
    pub(super) client: ClientInfo,
    /// The network the client-dependent part of the answer holds for, if any part was.
    pub(super) scope: Option<IpNet>,
    /// How many of the first additional records must be sent or the reply truncated: the
    /// in-domain glue of a referral (RFC 9471). The rest is optional and dropped to fit.
    pub(super) required_glue: usize,
    /// Whether `client.network` came from ECS.
    pub(super) used_ecs: bool,
    /// Read round-robin cursors without advancing them (explanations).
    pub(super) peek: bool,
    pub(super) trace: Option<&'t mut Trace>,
    /// What a negative answer or referral denies, for a signed zone's proof.
    pub(super) denial: Option<super::secure::Denial<'a>>,
}

/// What a load-balanced name answers, decided once for the general and the fast path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LbAnswer {
    /// The selection's addresses of the asked family (at least one), with this TTL.
    Addresses(u32),
    /// A CNAME to the first member's name, with this TTL.
    Alias(Name, u32),
    /// Nothing to answer: NODATA, the SOA's TTL capped at this negative TTL.
    Empty(u32),
}

/// Decides load-balanced name `index` for `client` and family ([`select_for`]) and what the
/// answer holds, counting it in the metrics unless `peek`.
pub(crate) fn decide_lb(
    loaded: &Loaded,
    health: HealthView<'_>,
    index: usize,
    client: &mut ClientInfo,
    family: Family,
    peek: bool,
) -> (Selection, LbAnswer) {
    let sel = select_for(loaded, health, index, client, family, peek);
    if !peek {
        let reason = super::reason_label(sel.reason, sel.forced);
        crate::metrics::answer(&loaded.slots, index, reason, &sel.members);
    }
    let b = &loaded.config.bindings[index];
    let pools = &loaded.config.pools;
    let first = sel
        .members
        .first()
        .map(|&(p, m)| &pools[p].members[m].target);
    let answer = match first {
        _ if sel.reason == Reason::AllDown => LbAnswer::Empty(b.negative_ttl),
        None => LbAnswer::Empty(b.negative_ttl),
        Some(Target::Alias(target)) => match Name::from_ascii(target) {
            Ok(name) => LbAnswer::Alias(name, b.ttl),
            Err(_) => LbAnswer::Empty(b.negative_ttl),
        },
        Some(_) if addresses(pools, &sel, family).next().is_none() => {
            LbAnswer::Empty(b.negative_ttl)
        }
        Some(_) => LbAnswer::Addresses(b.ttl),
    };
    (sel, answer)
}

/// The addresses of family `family` among a selection's members, in answer order.
pub(crate) fn addresses<'s>(
    pools: &'s [crate::balance::Pool],
    sel: &'s Selection,
    family: Family,
) -> impl Iterator<Item = IpAddr> + 's {
    sel.members
        .iter()
        .filter_map(move |&(p, m)| match pools[p].members[m].target {
            Target::Addr(ip @ IpAddr::V4(_)) if family == Family::V4 => Some(ip),
            Target::Addr(ip @ IpAddr::V6(_)) if family == Family::V6 => Some(ip),
            _ => None,
        })
}

impl Ctx<'_, '_> {
    pub(super) fn resolve(&mut self, qname: Name, qtype: RecordType, resp: &mut Message) {
        let zone = self.zone;
        let mut name = qname;
        for _ in 0..=MAX_CNAME_HOPS {
            let node = match zone.find(&name, qtype) {
                Position::Referral { cut, node } => {
                    // Also at the end of a CNAME chain (RFC 1034 section 4.3.2 step 3b).
                    self.referral(&cut, node, resp);
                    self.denial = Some(Denial::Delegation { cut, node });
                    return;
                }
                Position::Missing { encloser } => {
                    resp.metadata.response_code = ResponseCode::NXDomain;
                    resp.authorities.push(zone.negative_soa());
                    self.denial = Some(Denial::Name { name, encloser });
                    return;
                }
                Position::Exact(node) | Position::Wildcard(node) => node,
            };
            if let Some(lb) = node.lb {
                let wanted = if qtype == RecordType::ANY {
                    Some(if lb.a {
                        RecordType::A
                    } else {
                        RecordType::AAAA
                    })
                } else if lb.covers(qtype) {
                    Some(qtype)
                } else {
                    None
                };
                if let Some(t) = wanted {
                    match self.answer_lb(lb.binding, &name, t, &mut resp.answers) {
                        LbAnswer::Addresses(_) => {}
                        LbAnswer::Alias(target, ttl) => {
                            resp.answers.push(Record::from_rdata(
                                name.clone(),
                                ttl,
                                RData::CNAME(CNAME(target.clone())),
                            ));
                            let looped = resp.answers.iter().any(|r| r.name == target);
                            if zone.origin.zone_of(&target) && qtype != RecordType::ANY && !looped {
                                name = target;
                                continue;
                            }
                        }
                        LbAnswer::Empty(neg) => {
                            let mut soa = zone.negative_soa();
                            soa.ttl = soa.ttl.min(neg);
                            resp.authorities.push(soa);
                            self.denial = Some(Denial::Type {
                                owner: name,
                                node,
                                qtype: t,
                            });
                        }
                    }
                    return;
                }
            }
            if qtype == RecordType::ANY {
                // RFC 8482: answer one RRset rather than everything.
                match node.rrsets.first() {
                    Some(set) => resp.answers.extend(set.records(&name)),
                    None => {
                        resp.authorities.push(zone.negative_soa());
                        self.denial = Some(Denial::Type {
                            owner: name,
                            node,
                            qtype,
                        });
                    }
                }
                return;
            }
            if let Some(set) = node.rrset(qtype) {
                resp.answers.extend(set.records(&name));
                return;
            }
            if let Some(set) = node.rrset(RecordType::CNAME) {
                resp.answers.extend(set.records(&name));
                let RData::CNAME(CNAME(target)) = set.first() else {
                    return;
                };
                let target = crate::zone::fqdn_lower(&target);
                let looped = resp.answers.iter().any(|r| r.name == target);
                if !zone.origin.zone_of(&target) || looped {
                    return;
                }
                name = target;
                continue;
            }
            resp.authorities.push(zone.negative_soa());
            self.denial = Some(Denial::Type {
                owner: name,
                node,
                qtype,
            });
            return;
        }
    }

    /// Refers to the child's name servers. After a CNAME the answer keeps AA (the alias is
    /// this zone's data), as NSD answers; a plain referral is not authoritative.
    fn referral(&mut self, cut: &Name, node: &crate::zone::Node, resp: &mut Message) {
        if resp.answers.is_empty() {
            resp.metadata.authoritative = false;
        }
        let Some(ns) = node.rrset(RecordType::NS) else {
            return;
        };
        resp.authorities.extend(ns.records(cut));
        // Glue: the addresses this zone holds for the servers. In-domain glue (below this
        // cut) is required and goes first; sibling glue (below another cut) and ordinary
        // in-zone addresses are optional (RFC 9471).
        let targets: Vec<Name> = ns
            .rdata()
            .filter_map(|d| match d {
                RData::NS(target) => Some(target.0),
                _ => None,
            })
            .collect();
        let (in_domain, other): (Vec<&Name>, Vec<&Name>) =
            targets.iter().partition(|t| cut.zone_of(t));
        for target in in_domain {
            resp.additionals.extend(self.zone.addresses(target));
        }
        self.required_glue = resp.additionals.len();
        for target in other {
            if self.zone.origin.zone_of(target) {
                resp.additionals.extend(self.zone.addresses(target));
            }
        }
    }

    /// Additional-section data for a positive answer (RFC 1034 section 4.3.2 step 6, RFC 1035
    /// section 3.3.9, RFC 2782): the addresses of the MX, SRV and NS targets in the answer
    /// that are this zone's authoritative data ([`target_addresses`]), each set once and not
    /// when the answer holds it already. Off with `minimal_responses`.
    pub(super) fn additional_data(&self, resp: &mut Message) {
        if self.loaded.config.server.minimal_responses {
            return;
        }
        let targets: Vec<Name> = resp
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some(mx.exchange.clone()),
                RData::SRV(srv) => Some(srv.target.clone()),
                RData::NS(ns) => Some(ns.0.clone()),
                _ => None,
            })
            .collect();
        for target in targets {
            for set in target_addresses(&self.loaded.config.zones, self.zone, &target) {
                let held = |r: &Record| r.record_type() == set.rtype && r.name == target;
                if resp.answers.iter().chain(&resp.additionals).any(held) {
                    continue;
                }
                resp.additionals.extend(set.records(&target));
            }
        }
    }

    /// Answers load-balanced name `index` for the client: its addresses go into `answers`.
    pub(super) fn answer_lb(
        &mut self,
        index: usize,
        owner: &Name,
        qtype: RecordType,
        answers: &mut Vec<Record>,
    ) -> LbAnswer {
        let family = if qtype == RecordType::A {
            Family::V4
        } else {
            Family::V6
        };
        let (sel, answer) = decide_lb(
            self.loaded,
            self.health,
            index,
            &mut self.client,
            family,
            self.peek,
        );
        if let Some(t) = self.trace.as_deref_mut() {
            t.client = Some(self.client.clone());
            t.binding = Some(index);
            t.selection = Some(sel.clone());
        }
        // The part of the answer that depends on the client holds for this network.
        self.scope = Some(match self.scope {
            Some(s) if s.prefix_len() > sel.valid_for.prefix_len() => s,
            _ => sel.valid_for,
        });
        if let LbAnswer::Addresses(ttl) = answer {
            let pools = &self.loaded.config.pools;
            let records = addresses(pools, &sel, family)
                .map(|ip| match ip {
                    IpAddr::V4(a) => RData::A(A(a)),
                    IpAddr::V6(a) => RData::AAAA(AAAA(a)),
                })
                .map(|rd| Record::from_rdata(owner.clone(), ttl, rd));
            answers.extend(records);
        }
        answer
    }

    /// CHAOS TXT for a load-balanced name: its explanation as TXT strings, for clients in
    /// `server.explain_from` only. The lines are those `meridian explain` prints for the same
    /// client (the query's ECS prefix, or its source address), for each type the name answers.
    pub(super) fn explain_in_band(&mut self, qname: &Name, from: IpAddr, resp: &mut Message) {
        let cfg = &self.loaded.config;
        if !cfg.server.explain_from.iter().any(|n| n.contains(&from)) {
            resp.metadata.response_code = ResponseCode::Refused;
            return;
        }
        let (Some(lb), Some(explainer)) = (
            self.zone.node(qname).and_then(|n| n.lb),
            self.loaded.explainer,
        ) else {
            resp.metadata.response_code = ResponseCode::Refused;
            return;
        };
        let snapshot = match self.health {
            HealthView::Live(store) => store.snapshot(),
            HealthView::Fixed(snap) => Arc::new(snap.clone()),
        };
        let mut lines = Vec::new();
        for (covered, qtype) in [(lb.a, RecordType::A), (lb.aaaa, RecordType::AAAA)] {
            if !covered {
                continue;
            }
            let ecs = self.used_ecs.then_some(self.client.network);
            match explainer(self.loaded, &snapshot, qname, qtype, from, ecs) {
                Ok(explained) => lines.extend(explained),
                Err(e) => lines.push(format!("{qtype}: {e}")),
            }
        }
        for line in lines {
            let mut r = Record::from_rdata(qname.clone(), 0, RData::TXT(TXT::new(vec![line])));
            r.dns_class = DNSClass::CH;
            resp.answers.push(r);
        }
    }
}

/// What binding `index` asks of the balancer for `family`.
pub(crate) fn request(loaded: &Loaded, index: usize, family: Family) -> balance::Request<'_> {
    let cfg = &loaded.config;
    let b: &Binding = &cfg.bindings[index];
    balance::Request {
        pools: &cfg.pools,
        pool: b.pool,
        policy: &b.policy,
        answers: b.answers,
        when_all_down: &b.when_all_down,
        family,
    }
}

/// Decides a binding's answer for a client ([`balance::decide()`]) over the health view,
/// taking the round-robin position from its cursor (advancing it unless `peek`). Shared by
/// the general and the fast path, `explain` and the control endpoint's dry runs.
pub(crate) fn select_for(
    loaded: &Loaded,
    health: HealthView<'_>,
    index: usize,
    client: &mut ClientInfo,
    family: Family,
    peek: bool,
) -> Selection {
    let cursor = if peek {
        loaded.cursors.peek(index)
    } else {
        loaded.cursors.next(index)
    };
    let req = request(loaded, index, family);
    let geo = &*loaded.config.geo;
    match health {
        // Live answers take their plan from this thread's cache.
        HealthView::Live(store) if !peek => PLANS.with(|cache| {
            let snap = store.guard();
            let mut cache = cache.borrow_mut();
            let plan = cache.plan(loaded.id, index, &req, geo, &snap, client);
            Selection {
                members: plan.pick(req.pools, cursor),
                reason: plan.reason,
                forced: plan.forced,
                valid_for: plan.valid_for,
                // The walked site order is for explanations, which peek.
                sites: None,
            }
        }),
        HealthView::Live(store) => balance::decide(&req, geo, &store.guard(), client, cursor),
        HealthView::Fixed(snap) => balance::decide(&req, geo, snap, client, cursor),
    }
}

thread_local! {
    /// Plans of load-balanced names, one cache per answering thread (see
    /// [`balance::PlanCache`]).
    static PLANS: std::cell::RefCell<balance::PlanCache> = Default::default();
}

/// The address RRsets sent as additional data for `target` (an MX exchange, SRV target or NS
/// host named in an answer from `zone`): its A and AAAA sets when the name is authoritative
/// data of that zone, found as a query would find it (wildcards included), and not below a
/// cut, out of zone, in a zone nested inside this one, at a CNAME, or load-balanced (a
/// load-balanced address depends on the client and its health: the client asks for it).
fn target_addresses<'z>(
    zones: &[crate::config::ServedZone],
    zone: &'z Zone,
    target: &Name,
) -> impl Iterator<Item = &'z crate::zone::RRset> {
    let nested = || {
        zones
            .iter()
            .any(|o| o.origin.num_labels() > zone.origin.num_labels() && o.origin.zone_of(target))
    };
    let node = match zone.find(target, RecordType::A) {
        Position::Exact(node) | Position::Wildcard(node)
            if zone.origin.zone_of(target) && !nested() =>
        {
            Some(node)
        }
        _ => None,
    };
    [RecordType::A, RecordType::AAAA]
        .into_iter()
        .filter_map(move |t| {
            let node = node?;
            match node.lb {
                Some(lb) if lb.covers(t) => None,
                _ => node.rrset(t),
            }
        })
}
