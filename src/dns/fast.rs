//! The fast path: ordinary queries answered without building a `Message`, a cache of
//! encoded answers in front of the general path.
//!
//! When a config loads, every name is indexed ([`FastIndex`]) with what kind it is and a slot
//! for each type it holds. The answer in a slot is the general path's: the first query of a
//! (name, type) is answered there, and the general path, the one answer builder, leaves the
//! encoded sections in the slot (they hold for every client and stay until the next config).
//! A later query, read once ([`super::query::Query`]), is looked up by its lower-cased wire
//! name and answered by copying: the query's ID and RD bit, the query's own question bytes (so
//! 0x20 mixed case survives), the slot's sections, and the OPT from the one writer (`opt`).
//! Load-balanced names are decided by the general path's own `decide_lb` and only encoded
//! here. Negative answers (NXDOMAIN, NODATA) carry the zone's SOA as the general path encoded
//! it in the zone's first one (`dns::negative`), moved behind each question.
//!
//! Anything unusual (other opcodes or classes, EDNS versions above 0, malformed options, ANY,
//! wildcards, delegations, names whose pools hold CNAME members, DO queries to signed zones
//! but for load-balanced addresses, answers that need shedding or truncation) is answered from
//! what the general path stored for it (`dns::cache`) when it holds for every client, or
//! returns `false` and is answered by the general path, which stays the authority. A signed
//! load-balanced address set is signed here, through the zone's signature cache. A test
//! compares both paths, signed and not.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::{Name, RecordType};
use std::hash::Hasher;
use std::sync::OnceLock;

use hashbrown::HashTable;
use ipnet::IpNet;

use super::cache::Stored;
use super::negative::Negative;
use super::opt::OptReply;
use super::query::{NameBuf, Query, Question, Read};
use super::resolve::LbAnswer;
use super::{HealthView, Loaded, Transport};
use crate::balance::{ClientInfo, Family, Target};
use crate::hash::FastHasher;
use crate::zone::{Position, RRset};

#[derive(Debug)]
struct FastZone {
    /// The SOA of negative answers as the general path encoded it, once it has (see
    /// [`Negative`]); until then negative answers are the general path's.
    negative: OnceLock<Negative>,
    /// Wire length of the apex, root label included.
    apex_len: usize,
    has_wildcard: bool,
    ecs: bool,
    /// A signed zone's signing: a DO query's load-balanced answer is signed here, its other
    /// answers come from the general path (and then from its stored answers).
    signing: Option<std::sync::Arc<crate::dnssec::ZoneSigning>>,
}

/// Every name of a config, and the static answers the general path has built for them.
///
/// All names live in one byte arena, one record per name; the table holds only the offset of
/// each record (four bytes a slot), hashed by the name: several times smaller than a map of
/// boxed keys. Loading a million-record zone takes 350 MiB in all, against 402 MiB when the
/// index held every answer encoded (`ops/bench/dns.sh --scale`).
///
/// A record: the name's length and lower-cased wire form; kind (`KIND_*`), flags (`FLAG_*`),
/// zone index (2 bytes), binding index (4 bytes), number of types; then per type the query
/// type (2) and its slot in `built` (4; `GENERAL` sends the type to the general path).
pub struct FastIndex {
    table: HashTable<u32>,
    arena: Vec<u8>,
    zones: Vec<FastZone>,
    /// Per static (name, type): the general path's answer, once built. Boxed, so a slot
    /// never asked costs 16 bytes.
    built: Box<[OnceLock<Box<Stored>>]>,
}

const KIND_STATIC: u8 = 0;
const KIND_LB: u8 = 1;
/// At or below a delegation, or otherwise unusual: the general path answers.
const KIND_SLOW: u8 = 2;
const FLAG_A: u8 = 1;
const FLAG_AAAA: u8 = 2;
/// Types the name does not hold are NODATA (not at a CNAME: the chain is the general path's).
const FLAG_NODATA: u8 = 4;
const GENERAL: u32 = u32::MAX;

/// One name's record, read from the arena.
struct Entry<'a> {
    kind: u8,
    flags: u8,
    zone: usize,
    binding: usize,
    ntypes: u8,
    /// The per-type answers, and the arena's further records after them.
    types: &'a [u8],
}

/// What a static type answers.
enum Pick {
    /// The general path's answer, from this slot of [`FastIndex::built`].
    Answer(usize),
    NoData,
    General,
}

impl Entry<'_> {
    fn pick(&self, qtype: u16) -> Pick {
        for t in self.types.chunks_exact(6).take(self.ntypes as usize) {
            if u16::from_be_bytes([t[0], t[1]]) == qtype {
                return match u32::from_be_bytes([t[2], t[3], t[4], t[5]]) {
                    GENERAL => Pick::General,
                    slot => Pick::Answer(slot as usize),
                };
            }
        }
        if self.flags & FLAG_NODATA != 0 {
            Pick::NoData
        } else {
            Pick::General
        }
    }
}

fn hash_name(wire: &[u8]) -> u64 {
    let mut h = FastHasher::default();
    h.write(wire);
    h.finish()
}

fn wire(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

impl FastIndex {
    /// Builds the index: every exact name with an empty slot per type it holds. `None` when
    /// the data does not fit the index (over 4 GiB): the general path answers all.
    pub fn build(loaded: &Loaded) -> Option<FastIndex> {
        let cfg = &loaded.config;
        let mut index = FastIndex {
            table: HashTable::with_capacity(cfg.zones.iter().map(|z| z.node_count()).sum()),
            arena: Vec::new(),
            zones: Vec::new(),
            built: Box::default(),
        };
        let mut slots: u32 = 0;
        for (zi, zone) in cfg.zones.iter().enumerate() {
            index.zones.push(FastZone {
                negative: OnceLock::new(),
                apex_len: wire(&zone.origin).len(),
                has_wildcard: zone.has_wildcard(),
                ecs: zone.ecs,
                signing: zone.signing.clone(),
            });

            // Zones nested inside this one own their names (the general path picks the most
            // specific zone): leave those names to them.
            let nested: Vec<&Name> = cfg
                .zones
                .iter()
                .filter(|o| {
                    o.origin.num_labels() > zone.origin.num_labels()
                        && zone.origin.zone_of(&o.origin)
                })
                .map(|o| &o.origin)
                .collect();
            let zone_index = u16::try_from(zi).ok()?;
            for (name, node) in zone.nodes() {
                let name = &name;
                if nested.iter().any(|o| o.zone_of(name)) {
                    continue;
                }
                let key = wire(name);
                let at = u32::try_from(index.arena.len()).ok()?;
                let a = &mut index.arena;
                a.push(key.len() as u8);
                a.extend_from_slice(&key);
                let slow = !matches!(zone.find(name, RecordType::A), Position::Exact(_))
                    || name.is_wildcard();
                let (kind, mut flags, binding) = match node.lb {
                    _ if slow => (KIND_SLOW, 0, 0),
                    Some(lb) if may_alias(cfg, lb.binding) => (KIND_SLOW, 0, 0),
                    Some(lb) => (
                        KIND_LB,
                        (u8::from(lb.a) * FLAG_A) | (u8::from(lb.aaaa) * FLAG_AAAA),
                        u32::try_from(lb.binding).ok()?,
                    ),
                    None => (KIND_STATIC, 0, 0),
                };
                // A type the node holds is answered with its RRset; any other type is NODATA,
                // except at a CNAME, where every other type follows the chain (general path).
                if node.rrset(RecordType::CNAME).is_none() {
                    flags |= FLAG_NODATA;
                }
                let sets: Vec<&RRset> = match slow {
                    true => Vec::new(),
                    false => node
                        .rrsets
                        .iter()
                        .filter(|set| !node.lb.is_some_and(|lb| lb.covers(set.rtype)))
                        .collect(),
                };
                a.extend_from_slice(&[kind, flags]);
                a.extend_from_slice(&zone_index.to_be_bytes());
                a.extend_from_slice(&binding.to_be_bytes());
                a.push(u8::try_from(sets.len()).ok()?);
                for set in sets {
                    a.extend_from_slice(&u16::from(set.rtype).to_be_bytes());
                    a.extend_from_slice(&slots.to_be_bytes());
                    slots = slots.checked_add(1).filter(|&n| n != GENERAL)?;
                }
                let arena = &index.arena;
                index.table.insert_unique(hash_name(&key), at, |&o| {
                    hash_name(name_at(arena, o as usize))
                });
            }
        }
        index.arena.shrink_to_fit();
        index.built = (0..slots).map(|_| OnceLock::new()).collect();
        Some(index)
    }

    /// Keeps the SOA of zone `zone`'s negative answers from the general path's negative
    /// answer `encode` makes (a whole reply without OPT whose question name is `name_len`
    /// bytes), unless the zone has it already or its negative answers are not the fast
    /// path's (wildcards).
    pub(crate) fn learn_negative(
        &self,
        zone: usize,
        name_len: usize,
        encode: impl FnOnce() -> Option<Vec<u8>>,
    ) {
        let Some(z) = self.zones.get(zone) else {
            return;
        };
        if z.has_wildcard || z.negative.get().is_some() {
            return;
        }
        if let Some(learned) = encode().and_then(|e| Negative::learn(&e, name_len, z.apex_len)) {
            let _ = z.negative.set(learned);
        }
    }

    /// The slot for the general path's answer to (`name`, `qtype`) when the name is
    /// indexed and holds the type.
    pub(crate) fn slot(&self, name: &[u8], qtype: u16) -> Option<&OnceLock<Box<Stored>>> {
        let entry = self.get(name)?;
        match entry.pick(qtype) {
            Pick::Answer(slot) if entry.kind != KIND_SLOW => self.built.get(slot),
            _ => None,
        }
    }

    fn get(&self, key: &[u8]) -> Option<Entry<'_>> {
        let arena = &self.arena;
        let &at = self
            .table
            .find(hash_name(key), |&o| name_at(arena, o as usize) == key)?;
        let at = at as usize;
        let rest = &arena[at + 1 + arena[at] as usize..];
        Some(Entry {
            kind: rest[0],
            flags: rest[1],
            zone: u16::from_be_bytes([rest[2], rest[3]]) as usize,
            binding: u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize,
            ntypes: rest[8],
            types: &rest[9..],
        })
    }
}

/// Whether load-balanced name `binding` may answer with a CNAME (a pool it answers from holds
/// a name): such names are the general path's.
fn may_alias(cfg: &crate::config::Config, binding: usize) -> bool {
    let b = &cfg.bindings[binding];
    let fallback = match b.when_all_down {
        crate::balance::WhenAllDown::Fallback(pool) => Some(pool),
        _ => None,
    };
    std::iter::once(b.pool).chain(fallback).any(|pool| {
        cfg.pools[pool]
            .members
            .iter()
            .any(|m| matches!(m.target, Target::Alias(_)))
    })
}

fn name_at(arena: &[u8], at: usize) -> &[u8] {
    &arena[at + 1..at + 1 + arena[at] as usize]
}

/// Answers `query` into `out` when the fast path can; `false` leaves it to the general path.
pub fn answer(
    loaded: &Loaded,
    health: HealthView<'_>,
    query: &[u8],
    src: SocketAddr,
    transport: Transport,
    out: &mut Vec<u8>,
) -> bool {
    let mut name = NameBuf::default();
    let Read::Query(q) = Query::read(query, &mut name) else {
        return false;
    };
    let mut seen = crate::metrics::Seen::default();
    answer_noting(loaded, health, &q, src, transport, out, &mut seen)
}

/// One fast answer in the making: the query and what its reply carries besides the records.
struct Reply<'a, 'q> {
    loaded: &'a Loaded,
    q: &'a Query<'q>,
    question: &'a Question<'q>,
    opt: Option<OptReply<'a>>,
    src: SocketAddr,
}

impl Reply<'_, '_> {
    fn header(&self, out: &mut Vec<u8>, rcode: u8, counts: [u16; 3]) {
        out.extend_from_slice(&self.q.id);
        out.push(0x84 | u8::from(self.q.recursion_desired()));
        out.push(rcode);
        out.extend_from_slice(&[0, 1]);
        for c in counts {
            out.extend_from_slice(&c.to_be_bytes());
        }
        out.extend_from_slice(&self.q.packet[12..self.question.end]);
    }

    /// Appends the OPT, echoing ECS for zone `z` with the scope the answer holds for.
    fn finish(&self, out: &mut Vec<u8>, z: &FastZone, scope: Option<IpNet>) {
        if let Some(mut opt) = self.opt {
            let client = self.q.client(z.ecs, self.src);
            opt.echo_ecs(self.q, z.ecs, client, scope, true);
            opt.append(out, 0);
        }
    }
}

/// [`answer`] for a query already read, noting the zone and type for metrics (so they need
/// not be found again).
pub(crate) fn answer_noting(
    loaded: &Loaded,
    health: HealthView<'_>,
    q: &Query<'_>,
    src: SocketAddr,
    transport: Transport,
    out: &mut Vec<u8>,
    seen: &mut crate::metrics::Seen,
) -> bool {
    let Some(index) = loaded.fast.as_ref() else {
        return false;
    };
    let Some(question) = q.question.as_ref() else {
        return false;
    };
    if !q.is_plain() || !question.plain || question.qclass != 1 || q.bad_option() {
        return false;
    }
    if q.edns.as_ref().is_some_and(|e| e.version > 0) {
        return false;
    }
    let qtype = question.qtype;
    // ANY, transfers and the other query-only types (128-255, RFC 6895 section 3.1), OPT
    // and type 0 are the general path's; so is DS, which the parent zone answers at a child
    // zone's apex.
    let special = [RecordType::OPT, RecordType::DS].map(u16::from);
    if (128..=255).contains(&qtype) || special.contains(&qtype) || qtype == 0 {
        return false;
    }
    let key = question.name();
    let dnssec_ok = q.edns.as_ref().is_some_and(|e| e.dnssec_ok);
    let ours = loaded.config.server.edns_udp_size;
    let cap = super::reply_cap(transport, q.edns.as_ref().map(|e| e.payload), ours);
    let reply = Reply {
        loaded,
        q,
        question,
        opt: OptReply::for_query(q, loaded, src),
        src,
    };
    out.clear();
    let Some(entry) = index.get(key) else {
        // NXDOMAIN: the closest existing ancestor decides the zone; delegations and
        // wildcards are left to the general path.
        let mut at = 0;
        while key[at] != 0 {
            at += 1 + key[at] as usize;
            let Some(up) = index.get(&key[at..]) else {
                continue;
            };
            *seen = crate::metrics::Seen::new(up.zone, qtype);
            let z = &index.zones[up.zone];
            if up.kind == KIND_SLOW || z.has_wildcard || (z.signing.is_some() && dnssec_ok) {
                return recall(&reply, index, qtype, out, cap);
            }
            let Some(negative) = z.negative.get() else {
                return false;
            };
            reply.header(out, 3, [0, 1, 0]);
            negative.write(out, key.len(), z.apex_len, u32::MAX);
            reply.finish(out, z, None);
            return out.len() <= cap;
        }
        return false;
    };
    *seen = crate::metrics::Seen::new(entry.zone, qtype);
    if entry.kind == KIND_SLOW {
        return recall(&reply, index, qtype, out, cap);
    }
    let z = &index.zones[entry.zone];
    let covered = entry.kind == KIND_LB
        && ((qtype == 1 && entry.flags & FLAG_A != 0)
            || (qtype == 28 && entry.flags & FLAG_AAAA != 0));
    if covered {
        let family = if qtype == 1 { Family::V4 } else { Family::V6 };
        return lb_answer(reply, health, z, entry.binding, family, out) && out.len() <= cap;
    }
    if z.signing.is_some() && dnssec_ok {
        return recall(&reply, index, qtype, out, cap);
    }
    match entry.pick(qtype) {
        Pick::General => return recall(&reply, index, qtype, out, cap),
        // Not built yet: the general path builds it and leaves it here.
        Pick::Answer(slot) => {
            return index.built[slot]
                .get()
                .is_some_and(|stored| copy_stored(&reply, index, stored, out, cap))
        }
        Pick::NoData => {
            let Some(negative) = z.negative.get() else {
                return false;
            };
            reply.header(out, 0, [0, 1, 0]);
            negative.write(out, key.len(), z.apex_len, u32::MAX);
        }
    }
    reply.finish(out, z, None);
    out.len() <= cap
}

/// Answers from the general path's stored answers (`dns::cache`) when one is stored for
/// this question and fits.
fn recall(
    reply: &Reply<'_, '_>,
    index: &FastIndex,
    qtype: u16,
    out: &mut Vec<u8>,
    cap: usize,
) -> bool {
    let edns = reply.q.edns.as_ref();
    let flags = super::cache::flags(
        edns.is_some_and(|e| e.dnssec_ok),
        edns.is_some_and(|e| e.compact_ok),
    );
    let now = crate::clock::unix_now();
    let name = reply.question.name();
    let Some(stored) = reply.loaded.answers.get(name, qtype, flags, now) else {
        return false;
    };
    copy_stored(reply, index, &stored, out, cap)
}

/// Answers with an answer the general path built: its sections behind the query's own
/// header and question.
fn copy_stored(
    reply: &Reply<'_, '_>,
    index: &FastIndex,
    stored: &Stored,
    out: &mut Vec<u8>,
    cap: usize,
) -> bool {
    let Some(z) = index.zones.get(stored.zone) else {
        return false;
    };
    out.clear();
    out.extend_from_slice(&reply.q.id);
    out.push(stored.flags | u8::from(reply.q.recursion_desired()));
    out.push(stored.rcode);
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&stored.counts);
    out.extend_from_slice(&reply.q.packet[12..reply.question.end]);
    out.extend_from_slice(&stored.sections);
    reply.finish(out, z, None);
    out.len() <= cap
}

/// Writes a load-balanced answer as [`super::decide_lb`] decides it.
fn lb_answer(
    reply: Reply<'_, '_>,
    health: HealthView<'_>,
    z: &FastZone,
    binding: usize,
    family: Family,
    out: &mut Vec<u8>,
) -> bool {
    let loaded = reply.loaded;
    let dnssec_ok = reply.q.edns.as_ref().is_some_and(|e| e.dnssec_ok);
    let signing = z.signing.as_deref().filter(|_| dnssec_ok);
    let mut client = ClientInfo::from_network(reply.q.client(z.ecs, reply.src).network);
    let (sel, answer) = super::decide_lb(loaded, health, binding, &mut client, family, false);
    let scope = Some(sel.valid_for);
    match answer {
        LbAnswer::Addresses(ttl) => {
            reply.header(out, 0, [0, 0, 0]);
            let mut count: u16 = 0;
            let rtype: u8 = if family == Family::V4 { 1 } else { 28 };
            let first = out.len();
            for ip in super::addresses(&loaded.config.pools, &sel, family) {
                let data: &[u8] = match &ip {
                    IpAddr::V4(a) => &a.octets(),
                    IpAddr::V6(a) => &a.octets(),
                };
                out.extend_from_slice(&[0xC0, 12, 0, rtype, 0, 1]);
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&(data.len() as u16).to_be_bytes());
                out.extend_from_slice(data);
                count += 1;
            }
            if let Some(signing) = signing {
                let owner = reply.question.name();
                let width = if family == Family::V4 { 4 } else { 16 };
                let records = &out[first..];
                let rdatas = records.chunks(12 + width).map(|r| &r[12..]);
                let signed = super::secure::sign_addresses(signing, owner, rtype, ttl, rdatas);
                for rrsig in signed.iter() {
                    out.extend_from_slice(&[0xC0, 12, 0, 46, 0, 1]);
                    out.extend_from_slice(&ttl.to_be_bytes());
                    out.extend_from_slice(&(rrsig.len() as u16).to_be_bytes());
                    out.extend_from_slice(rrsig);
                    count += 1;
                }
            }
            out[6..8].copy_from_slice(&count.to_be_bytes());
        }
        // A signed NODATA needs its proof: the general path's.
        LbAnswer::Empty(_) if signing.is_some() => return false,
        LbAnswer::Empty(negative_ttl) => {
            let Some(negative) = z.negative.get() else {
                return false;
            };
            reply.header(out, 0, [0, 1, 0]);
            let name_len = reply.question.name().len();
            negative.write(out, name_len, z.apex_len, negative_ttl);
        }
        // Names whose pools hold aliases are the general path's (see `FastIndex::build`).
        LbAnswer::Alias(..) => return false,
    }
    reply.finish(out, z, scope);
    true
}
