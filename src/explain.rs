//! Why a load-balanced name answered what it did.
//!
//! An explanation runs the real query path ([`dns::answer_with`]) on a synthesised query, with
//! the live health (or the health on disk for `--offline`) and any hypothetical changes
//! (`--assume fra/192.0.2.10=down`) applied to a copy of the snapshot, and a [`Trace`] that
//! records the client, its location and the selection. Nothing is copied from the serving
//! code, so an explanation cannot disagree with an answer. Round-robin cursors are read, not
//! advanced.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::balance::{self, Basis, ClientInfo, Reason, Selection, Target};
use crate::dns::{self, HealthView, Loaded, Trace, Transport};
use crate::health::{Admin, Factor, Health, HealthSnapshot, MemberId, Passive};

/// What to explain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub name: String,
    /// `A` or `AAAA`; `A` when absent.
    #[serde(default)]
    pub qtype: Option<String>,
    pub client: IpAddr,
    /// An ECS prefix to send, e.g. `10.3.0.0/24`.
    #[serde(default)]
    pub ecs: Option<IpNet>,
    /// Hypothetical states: `SITE/ADDRESS=down` (or `POOL/SITE=...`); states `down`, `up`,
    /// `drained`, `forced-up`, `forced-down`.
    #[serde(default)]
    pub assume: Vec<String>,
}

/// The answer and the chain of decisions behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub lines: Vec<String>,
    pub rcode: String,
    pub answer: Vec<String>,
    pub ecs_scope: Option<u8>,
    pub ttl: Option<u32>,
    pub reason: Option<Reason>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("bad name {0:?}: {1}")]
    Name(String, String),
    #[error("type {0:?}: explain A or AAAA")]
    Type(String),
    #[error("{0} is not a load-balanced name of a served zone")]
    NotLoadBalanced(String),
    #[error(
        "--assume {0:?}: give MEMBER=STATE with STATE down, up, drained, forced-up or forced-down"
    )]
    Assumption(String),
    #[error(
        "--assume {0:?}: no such member (give SITE/ADDRESS or POOL/SITE as status lists them)"
    )]
    UnknownMember(String),
    #[error("ECS prefix {0} and client {1} are of different families")]
    Family(IpNet, IpAddr),
}

/// Explains one question against a served config and a health snapshot.
pub fn explain(
    loaded: &Loaded,
    health: &HealthSnapshot,
    req: &Request,
) -> Result<Explanation, ExplainError> {
    let name = Name::from_ascii(&req.name)
        .map(|mut n| {
            n.set_fqdn(true);
            n
        })
        .map_err(|e| ExplainError::Name(req.name.clone(), e.to_string()))?;
    let qtype = match req.qtype.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("A") => RecordType::A,
        Some("AAAA") => RecordType::AAAA,
        Some(other) => return Err(ExplainError::Type(other.to_string())),
    };
    if let Some(e) = req.ecs {
        if e.network().is_ipv4() != req.client.is_ipv4() {
            return Err(ExplainError::Family(e, req.client));
        }
    }

    // Hypothetical health on a copy of the snapshot.
    let mut snap = health.clone();
    let mut assumed: Vec<(MemberId, String)> = Vec::new();
    for a in &req.assume {
        let (target, state) = a
            .split_once('=')
            .ok_or_else(|| ExplainError::Assumption(a.clone()))?;
        let ids = loaded.config.resolve_members(target);
        if ids.is_empty() {
            return Err(ExplainError::UnknownMember(a.clone()));
        }
        for id in ids {
            let mut st = snap.get(&id);
            match state {
                "down" => st.health = Health::Down,
                "up" => st.health = Health::Up,
                "drained" => st.admin = Admin::Drained,
                "forced-up" => st.admin = Admin::ForcedUp,
                "forced-down" => st.admin = Admin::ForcedDown,
                _ => match state
                    .strip_prefix("shed:")
                    .map(|p| p.trim_end_matches('%').parse::<f64>())
                {
                    Some(Ok(percent)) if (0.0..=100.0).contains(&percent) => {
                        st.factor = Factor::of(percent / 100.0)
                    }
                    _ => return Err(ExplainError::Assumption(a.clone())),
                },
            }
            snap.set(id.clone(), st);
            assumed.push((id, state.to_string()));
        }
    }

    let query = build_query(&name, qtype, req.ecs);
    let mut trace = Trace::default();
    let src = SocketAddr::new(req.client, 53000);
    let bytes = dns::answer_with(
        loaded,
        HealthView::Fixed(&snap),
        &query,
        src,
        Transport::Tcp,
        Some(&mut trace),
    )
    .unwrap_or_default();
    let reply = Message::from_vec(&bytes).ok();
    let Some(binding) = trace.binding else {
        return Err(ExplainError::NotLoadBalanced(name.to_string()));
    };
    let (client, sel) = match (&trace.client, &trace.selection) {
        (Some(c), Some(s)) => (c, s),
        _ => return Err(ExplainError::NotLoadBalanced(name.to_string())),
    };
    let mut lines = vec![format!("question:  {name} {qtype}")];
    for (id, state) in &assumed {
        lines.push(format!("assumed:   {id} {state}"));
    }
    lines.extend(describe(
        loaded,
        binding,
        client,
        trace.used_ecs,
        sel,
        &snap,
    ));
    let answer: Vec<String> = reply
        .as_ref()
        .map(|m| m.answers.iter().map(|r| r.data.to_string()).collect())
        .unwrap_or_default();
    let rcode = reply
        .as_ref()
        .map(|m| m.response_code.to_string())
        .unwrap_or_else(|| "no reply".into());
    let ecs_scope = reply
        .as_ref()
        .and_then(dns::reply_scope)
        .map(|(_, scope)| scope);
    let ttl = reply
        .as_ref()
        .and_then(|m| m.answers.first().or(m.authorities.first()))
        .map(|r| r.ttl);
    lines.push(format!(
        "answer:    {}",
        if answer.is_empty() {
            format!("none ({rcode}, NODATA)")
        } else {
            answer.join(" ")
        }
    ));
    lines.push(match (req.ecs, ecs_scope) {
        (Some(e), Some(scope)) => format!("ecs scope: /{scope} (source /{})", e.prefix_len()),
        _ => "ecs scope: none (no ECS in the question)".into(),
    });
    if let Some(t) = ttl {
        lines.push(format!("ttl:       {t}"));
    }
    lines.push(format!("reason:    {}", reason_text(sel.reason)));
    Ok(Explanation {
        lines,
        rcode,
        answer,
        ecs_scope,
        ttl,
        reason: Some(sel.reason),
    })
}

/// [`explain`] as the in-band CHAOS TXT answer asks it (a [`dns::Explainer`]): its lines.
pub fn in_band(
    loaded: &Loaded,
    health: &HealthSnapshot,
    name: &Name,
    qtype: RecordType,
    client: IpAddr,
    ecs: Option<IpNet>,
) -> Result<Vec<String>, String> {
    let request = Request {
        name: name.to_string(),
        qtype: Some(qtype.to_string()),
        client,
        ecs,
        assume: Vec::new(),
    };
    explain(loaded, health, &request)
        .map(|x| x.lines)
        .map_err(|e| e.to_string())
}

/// The name a value has in JSON (`down`, `forced-up`), for text output.
fn json_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn reason_text(r: Reason) -> &'static str {
    match r {
        Reason::Healthy => "healthy: usable members answered",
        Reason::FailOpen => {
            "fail-open: nothing usable, every member not drained or forced down answered"
        }
        Reason::Fallback => "fallback: nothing usable, the fallback pool answered",
        Reason::AllDown => "all down: nothing usable, NODATA",
    }
}

fn build_query(name: &Name, qtype: RecordType, ecs: Option<IpNet>) -> Vec<u8> {
    let mut m = Message::new(0x4d45, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(name.clone(), qtype));
    if let Some(net) = ecs {
        let net = net.trunc();
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            net.network(),
            net.prefix_len(),
            0,
        )));
        m.set_edns(e);
    }
    m.to_vec().unwrap_or_default()
}

/// The decision chain of one selection, as lines of text (shared with the in-band answer).
pub fn describe(
    loaded: &Loaded,
    binding: usize,
    client: &ClientInfo,
    used_ecs: bool,
    sel: &Selection,
    health: &HealthSnapshot,
) -> Vec<String> {
    let cfg = &loaded.config;
    let b = &cfg.bindings[binding];
    let pool = &cfg.pools[b.pool];
    let mut lines = vec![format!(
        "policy:    {} over pool {:?} ({}, declared at {})",
        b.policy.name(),
        pool.name,
        match b.when_all_down {
            balance::WhenAllDown::FailOpen => "fail-open when all down".to_string(),
            balance::WhenAllDown::Nothing => "nodata when all down".to_string(),
            balance::WhenAllDown::Fallback(p) =>
                format!("fallback to {:?} when all down", cfg.pools[p].name),
        },
        b.declared_at()
    )];
    lines.push(if used_ecs {
        format!("client:    {} from ECS", client.network)
    } else {
        format!(
            "client:    {} (the query's source; no ECS used)",
            client.network.network()
        )
    });
    match &client.geo {
        None => lines.push("location:  not needed by this policy".into()),
        Some(hit) => lines.push(match &hit.location {
            None => "location:  not in database".to_string(),
            Some(loc) => {
                let mut place = loc.path().last().cloned().unwrap_or_else(|| "?".into());
                if let Some(city) = &loc.city {
                    place.push_str(&format!(" {city}"));
                }
                if let Some(c) = loc.coords {
                    place.push_str(&format!(" at {:.2},{:.2}", c.lat, c.lon));
                }
                format!("location:  {place} (database network {})", hit.network)
            }
        }),
    }
    if let Some(order) = &sel.sites {
        let sites: Vec<String> = order
            .sites
            .iter()
            .map(|s| match (s.rtt_ms, s.distance_km()) {
                (Some(rtt), _) => format!("{} {rtt:.1} ms", s.site),
                (None, Some(d)) => format!("{} {:.0} km", s.site, d),
                (None, None) => s.site.to_string(),
            })
            .collect();
        let basis = match &order.basis {
            Basis::Subnet { entry } => format!("subnet entry {entry}"),
            Basis::Distance => "by distance".into(),
            Basis::Map { key } => format!("map key {key}"),
            Basis::Default => "default order".into(),
            Basis::Measured { network } => format!(
                "round trips measured from {network}{}",
                if order.explore > 0 {
                    format!(
                        ", {} of answers try the second site",
                        Factor::from_permille(order.explore)
                    )
                } else {
                    String::new()
                }
            ),
        };
        lines.push(format!("sites:     {} ({basis})", sites.join(" > ")));
    }
    let mut pools = vec![b.pool];
    if let balance::WhenAllDown::Fallback(p) = b.when_all_down {
        pools.push(p);
    }
    let mut shedding = false;
    for p in pools {
        for m in &cfg.pools[p].members {
            let st = health.get(&m.id);
            let target = match &m.target {
                Target::Addr(a) => a.to_string(),
                Target::Alias(n) => format!("CNAME {n}"),
            };
            let mut load = String::new();
            if st.passive != Passive::Clear {
                load.push_str(&format!(", tripped by {}", json_name(&st.passive)));
            }
            if st.factor != Factor::FULL {
                shedding = true;
                load.push_str(&format!(", shed to {}", st.factor));
            }
            lines.push(format!(
                "member:    {} in pool {:?}: {target}, weight {}, priority {}, health {}, admin {}{load} -> {}",
                m.id,
                cfg.pools[p].name,
                m.weight,
                m.priority,
                json_name(&st.health),
                json_name(&st.admin),
                if balance::usable(st.admin, st.health) { "usable" } else { "not usable" }
            ));
        }
    }
    if shedding {
        let unit = balance::client_unit(client.network);
        lines.push(if matches!(b.policy, balance::PolicyKind::Weighted) {
            "load:      weights scaled by each member's factor; members shed to 0% left out while others answer".to_string()
        } else {
            format!(
                "load:      client network {unit} falls at {} of the split: members shed to that or less spill to the next-ranked",
                Factor::from_permille(balance::shed_point(unit))
            )
        });
    }
    let chosen: Vec<String> = sel
        .members
        .iter()
        .map(|&(p, m)| cfg.pools[p].members[m].id.to_string())
        .collect();
    lines.push(format!(
        "selected:  {}",
        if chosen.is_empty() {
            "nothing".to_string()
        } else {
            chosen.join(" ")
        }
    ));
    lines.push(format!("valid for: {}", sel.valid_for));
    lines
}
