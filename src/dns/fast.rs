//! The fast path: ordinary queries answered without building a `Message`, a cache of
//! encoded answers in front of the general path.
//!
//! When a config loads, every static (name, type) answer is encoded once from the zone's RRsets
//! and kept as wire bytes ([`FastIndex`]); a test checks them against the general path. A
//! query, read once ([`super::query::Query`]), is looked up by its lower-cased wire name and
//! answered by copying: the query's ID and RD bit, the query's own question bytes (so 0x20
//! mixed case survives), the stored sections, and the OPT from the one writer
//! (`opt`). Load-balanced names are decided by the general path's own
//! `decide_lb` and only encoded here; names that do not exist get the zone's SOA.
//!
//! Anything unusual (other opcodes or classes, EDNS versions above 0, malformed options, ANY,
//! wildcards, delegations, names whose pools hold CNAME members, DO queries to signed zones
//! but for load-balanced addresses, answers that need shedding or truncation) is answered from
//! what the general path stored for it (`dns::cache`) when it holds for every client, or
//! returns `false` and is answered by the general path, which stays the authority. A signed
//! load-balanced address set is signed here, through the zone's signature cache. A test
//! compares both paths, signed and not.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use std::hash::Hasher;

use hashbrown::HashTable;
use ipnet::IpNet;

use super::opt::OptReply;
use super::query::{NameBuf, Query, Question, Read};
use super::resolve::LbAnswer;
use super::{HealthView, Loaded, Transport};
use crate::balance::{ClientInfo, Family, Target};
use crate::hash::FastHasher;
use crate::zone::{Position, RRset};

#[derive(Debug, Clone)]
struct FastZone {
    /// The SOA record for negative answers. Its owner, and its server and mailbox names when
    /// they end in the apex, are compressed against the apex inside the question: the
    /// pointers at `soa_pointers` are written per query (see [`FastZone::write_soa`]).
    soa: Vec<u8>,
    soa_pointers: Vec<usize>,
    /// Wire length of the apex, root label included.
    apex_len: usize,
    /// Offset of the TTL inside `soa`, to lower it for load-balanced NODATA.
    soa_ttl_at: usize,
    soa_ttl: u32,
    has_wildcard: bool,
    ecs: bool,
    /// A signed zone's signing: a DO query's load-balanced answer is signed here, its other
    /// answers come from the general path (and then from its stored answers).
    signing: Option<std::sync::Arc<crate::dnssec::ZoneSigning>>,
}

impl FastZone {
    /// Appends the SOA record after a question whose name (`name_len` bytes of wire form,
    /// starting at offset 12) lies in this zone; returns where the record starts.
    fn write_soa(&self, out: &mut Vec<u8>, name_len: usize) -> usize {
        let at = out.len();
        out.extend_from_slice(&self.soa);
        let apex = (0xC000 | (12 + name_len - self.apex_len) as u16).to_be_bytes();
        for &p in &self.soa_pointers {
            out[at + p..at + p + 2].copy_from_slice(&apex);
        }
        at
    }
}

/// Every static answer of a config, as bytes.
///
/// All names and answers live in one byte arena, one record per name; the table holds only
/// the offset of each record (four bytes a slot), hashed by the name. A million names cost
/// about 60 MB this way, against several times that for a map of boxed keys and answers.
///
/// A record: the name's length and lower-cased wire form; kind (`KIND_*`), flags (`FLAG_*`),
/// zone index (2 bytes), binding index (4 bytes), number of types; then per type the query
/// type (2), answer count (2; `GENERAL` sends the type to the general path), additional
/// count (2), length (2) and the answer and additional sections, owners pointing at the
/// question (answers) or at the target names in the answers' data (additional data).
pub struct FastIndex {
    table: HashTable<u32>,
    arena: Vec<u8>,
    zones: Vec<FastZone>,
}

const KIND_STATIC: u8 = 0;
const KIND_LB: u8 = 1;
/// At or below a delegation, or otherwise unusual: the general path answers.
const KIND_SLOW: u8 = 2;
const FLAG_A: u8 = 1;
const FLAG_AAAA: u8 = 2;
/// Types the name does not hold are NODATA (not at a CNAME: the chain is the general path's).
const FLAG_NODATA: u8 = 4;
const GENERAL: u16 = u16::MAX;

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
enum Pick<'a> {
    Answer {
        count: u16,
        extra: u16,
        sections: &'a [u8],
    },
    NoData,
    General,
}

impl Entry<'_> {
    fn pick(&self, qtype: u16) -> Pick<'_> {
        let mut rest = self.types;
        for _ in 0..self.ntypes {
            let [t0, t1, c0, c1, e0, e1, l0, l1, tail @ ..] = rest else {
                break;
            };
            let len = u16::from_be_bytes([*l0, *l1]) as usize;
            if u16::from_be_bytes([*t0, *t1]) == qtype {
                let count = u16::from_be_bytes([*c0, *c1]);
                return match count {
                    GENERAL => Pick::General,
                    _ => Pick::Answer {
                        count,
                        extra: u16::from_be_bytes([*e0, *e1]),
                        sections: &tail[..len],
                    },
                };
            }
            rest = &tail[len..];
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
    /// Builds the index: every exact name's RRsets encoded, NODATA as the zone's SOA. `None`
    /// when the data does not fit the index (over 4 GiB): the general path answers all.
    pub fn build(loaded: &Loaded) -> Option<FastIndex> {
        let cfg = &loaded.config;
        let mut index = FastIndex {
            table: HashTable::with_capacity(cfg.zones.iter().map(|z| z.node_count()).sum()),
            arena: Vec::new(),
            zones: Vec::new(),
        };
        for (zi, zone) in cfg.zones.iter().enumerate() {
            let soa = zone.negative_soa();
            let apex = wire(&soa.name);
            // The owner is the apex: a pointer, like the names below that end in it.
            let mut bytes = vec![0, 0];
            let mut soa_pointers = vec![0];
            bytes.extend(6u16.to_be_bytes());
            bytes.extend(1u16.to_be_bytes());
            let soa_ttl_at = bytes.len();
            bytes.extend(soa.ttl.to_be_bytes());
            let RData::SOA(s) = &soa.data else { continue };
            let rdlen_at = bytes.len();
            bytes.extend([0, 0]);
            for name in [&s.mname, &s.rname] {
                let full = wire(name);
                if soa.name.zone_of(name) {
                    bytes.extend(&full[..full.len() - apex.len()]);
                    soa_pointers.push(bytes.len());
                    bytes.extend([0, 0]);
                } else {
                    bytes.extend(full);
                }
            }
            for v in [
                s.serial,
                s.refresh as u32,
                s.retry as u32,
                s.expire as u32,
                s.minimum,
            ] {
                bytes.extend(v.to_be_bytes());
            }
            let rdlen = (bytes.len() - rdlen_at - 2) as u16;
            bytes[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
            index.zones.push(FastZone {
                soa: bytes,
                soa_pointers,
                apex_len: apex.len(),
                soa_ttl_at,
                soa_ttl: soa.ttl,
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
                    let additional = Additional {
                        zones: &cfg.zones,
                        zone,
                        question_len: key.len() + 4,
                        off: cfg.server.minimal_responses,
                    };
                    write_rrset(a, set, &additional);
                }
                let arena = &index.arena;
                index.table.insert_unique(hash_name(&key), at, |&o| {
                    hash_name(name_at(arena, o as usize))
                });
            }
        }
        index.arena.shrink_to_fit();
        Some(index)
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

/// What a name's MX and SRV answers carry as additional data (see
/// [`super::target_addresses`]).
struct Additional<'a> {
    zones: &'a [crate::config::ServedZone],
    zone: &'a crate::zone::Zone,
    /// The question's length in the packet (name and type and class), fixed per name.
    question_len: usize,
    /// `minimal_responses`: no additional data.
    off: bool,
}

/// Where the target name starts in the data of an MX or SRV record.
fn target_at(rtype: RecordType) -> Option<usize> {
    match rtype {
        RecordType::MX => Some(2),
        RecordType::SRV => Some(6),
        _ => None,
    }
}

/// Appends one type's answer: an authoritative answer holding the RRset, owners pointing at
/// the question (offset 12), record data uncompressed so the bytes fit after any question of
/// this name; then, for MX and SRV, the addresses of their targets, owners pointing at the
/// target names in the answer (the question's length is the same for every query of a name).
fn write_rrset(a: &mut Vec<u8>, set: &RRset, additional: &Additional<'_>) {
    let rtype = u16::from(set.rtype).to_be_bytes();
    a.extend_from_slice(&rtype);
    if set.rtype == RecordType::NS {
        // NS answers carry the servers' addresses: the general path adds them.
        a.extend_from_slice(&GENERAL.to_be_bytes());
        a.extend_from_slice(&[0; 4]);
        return;
    }
    let head = a.len();
    a.extend_from_slice(&[0; 6]);
    let sections = a.len();
    // Each target name: its offset in the reply and the name.
    let mut targets: Vec<(usize, Name)> = Vec::new();
    let target_at = target_at(set.rtype).filter(|_| !additional.off);
    for rdata in set.wire_rdata() {
        a.extend_from_slice(&[0xC0, 12]);
        a.extend_from_slice(&rtype);
        a.extend_from_slice(&[0, 1]);
        a.extend_from_slice(&set.ttl.to_be_bytes());
        a.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        if let Some(at) = target_at {
            let name = rdata
                .get(at..)
                .and_then(|w| Name::read(&mut BinDecoder::new(w)).ok());
            if let Some(name) = name {
                let offset = 12 + additional.question_len + (a.len() - sections) + at;
                targets.push((offset, name));
            }
        }
        a.extend_from_slice(rdata);
    }
    let mut extra: usize = 0;
    let mut written: Vec<(&Name, RecordType)> = Vec::new();
    for (offset, target) in &targets {
        for addrs in super::target_addresses(additional.zones, additional.zone, target) {
            if written.contains(&(target, addrs.rtype)) {
                continue;
            }
            written.push((target, addrs.rtype));
            for data in addrs.wire_rdata() {
                match u16::try_from(*offset).ok().filter(|&o| o < 0x4000) {
                    Some(o) => a.extend_from_slice(&(0xC000 | o).to_be_bytes()),
                    None => a.extend_from_slice(&wire(target)),
                }
                a.extend_from_slice(&u16::from(addrs.rtype).to_be_bytes());
                a.extend_from_slice(&[0, 1]);
                a.extend_from_slice(&addrs.ttl.to_be_bytes());
                a.extend_from_slice(&(data.len() as u16).to_be_bytes());
                a.extend_from_slice(data);
                extra += 1;
            }
        }
    }
    let len = u16::try_from(a.len() - sections);
    let count = u16::try_from(set.len()).ok().filter(|&c| c != GENERAL);
    match (len, count, u16::try_from(extra)) {
        (Ok(len), Some(count), Ok(extra)) => {
            a[head..head + 2].copy_from_slice(&count.to_be_bytes());
            a[head + 2..head + 4].copy_from_slice(&extra.to_be_bytes());
            a[head + 4..head + 6].copy_from_slice(&len.to_be_bytes());
        }
        _ => {
            a.truncate(head);
            a.extend_from_slice(&GENERAL.to_be_bytes());
            a.extend_from_slice(&[0; 4]);
        }
    }
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
            reply.header(out, 3, [0, 1, 0]);
            z.write_soa(out, key.len());
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
        Pick::Answer {
            count,
            extra,
            sections,
        } => {
            reply.header(out, 0, [count, 0, extra]);
            out.extend_from_slice(sections);
        }
        Pick::NoData => {
            reply.header(out, 0, [0, 1, 0]);
            z.write_soa(out, key.len());
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
            reply.header(out, 0, [0, 1, 0]);
            let at = z.write_soa(out, reply.question.name().len()) + z.soa_ttl_at;
            out[at..at + 4].copy_from_slice(&z.soa_ttl.min(negative_ttl).to_be_bytes());
        }
        // Names whose pools hold aliases are the general path's (see `FastIndex::build`).
        LbAnswer::Alias(..) => return false,
    }
    reply.finish(out, z, scope);
    true
}
