//! The fast path: ordinary queries answered without building a `Message`.
//!
//! When a config loads, every static (name, type) answer is encoded once from the zone's RRsets
//! and kept as wire bytes ([`FastIndex`]); a test checks them against the general path. A query is then parsed in place (header, one
//! question, at most one OPT), looked up by its lower-cased wire name, and answered by copying:
//! the query's ID, RD and CD bits, the query's own question bytes (so 0x20 mixed case
//! survives), the stored sections, and an OPT written per query (our size, DO, ECS).
//! Load-balanced names run the same [`policy::select`] as the general path and write their
//! address records directly; names that do not exist get the zone's SOA written directly.
//!
//! Anything unusual (other opcodes or classes, EDNS versions above 0, malformed options, ANY,
//! wildcards, delegations, CNAME members, answers that need truncation) returns `None` and is
//! answered by the general path, which stays the authority. A test compares both paths.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use ipnet::IpNet;

use super::ecs::{self, Ecs};
use super::{HealthView, Loaded, Transport};
use crate::policy::{ClientInfo, Family, Reason, Target};
use crate::zone::Position;

type NameMap<K, V> = crate::hash::FastMap<K, V>;

/// Precomputed sections of one response, valid for a question of the same length.
#[derive(Debug, Clone)]
struct Blob {
    /// Header byte 2 without RD, and byte 3 (RA/Z/AD/CD cleared, RCODE kept).
    flags2: u8,
    rcode: u8,
    counts: [u16; 3],
    /// Everything after the question.
    sections: Box<[u8]>,
}

#[derive(Debug, Clone)]
enum Entry {
    /// Static data: answers per query type (`None`: dynamic, ask the general path), and the
    /// answer for any other type (`None` at a CNAME).
    Static {
        zone: usize,
        by_type: Vec<(u16, Option<Blob>)>,
        other: Option<Blob>,
    },
    /// A load-balanced name; other types are static.
    Lb {
        zone: usize,
        binding: usize,
        a: bool,
        aaaa: bool,
        by_type: Vec<(u16, Option<Blob>)>,
        other: Option<Blob>,
    },
    /// At or below a delegation, or otherwise unusual: the general path answers.
    Slow,
}

#[derive(Debug, Clone)]
struct FastZone {
    /// The SOA record for negative answers, position independent (no compression).
    soa: Vec<u8>,
    /// Offset of the TTL inside `soa`, to lower it for load-balanced NODATA.
    soa_ttl_at: usize,
    soa_ttl: u32,
    has_wildcard: bool,
    ecs: bool,
}

/// Every static answer of a config, as bytes.
pub struct FastIndex {
    names: NameMap<Box<[u8]>, Entry>,
    zones: Vec<FastZone>,
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
    /// Builds the index: every exact name's RRsets encoded, NODATA as the zone's SOA.
    pub fn build(loaded: &Loaded) -> FastIndex {
        let cfg = &loaded.config;
        let mut names: NameMap<Box<[u8]>, Entry> = NameMap::default();
        let mut zones = Vec::new();
        for (zi, zone) in cfg.zones.iter().enumerate() {
            let soa = zone.negative_soa();
            let mut bytes = wire(&soa.name);
            bytes.extend(6u16.to_be_bytes());
            bytes.extend(1u16.to_be_bytes());
            let soa_ttl_at = bytes.len();
            bytes.extend(soa.ttl.to_be_bytes());
            let RData::SOA(s) = &soa.data else { continue };
            let mut rdata = wire(&s.mname);
            rdata.extend(wire(&s.rname));
            for v in [
                s.serial,
                s.refresh as u32,
                s.retry as u32,
                s.expire as u32,
                s.minimum,
            ] {
                rdata.extend(v.to_be_bytes());
            }
            bytes.extend((rdata.len() as u16).to_be_bytes());
            bytes.extend(rdata);
            zones.push(FastZone {
                soa: bytes,
                soa_ttl_at,
                soa_ttl: soa.ttl,
                has_wildcard: zone.nodes.keys().any(|n| n.is_wildcard()),
                ecs: cfg.zone_ecs[zi],
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
            for (name, node) in &zone.nodes {
                if nested.iter().any(|o| o.zone_of(name)) {
                    continue;
                }
                let key = wire(name).into_boxed_slice();
                if !matches!(zone.find(name, RecordType::A), Position::Exact(_))
                    || name.is_wildcard()
                {
                    names.insert(key, Entry::Slow);
                    continue;
                }
                // A type the node holds is answered with its RRset; any other type is NODATA,
                // except at a CNAME, where every other type follows the chain (general path).
                let by_type: Vec<(u16, Option<Blob>)> = node
                    .rrsets
                    .iter()
                    .filter(|set| !node.lb.is_some_and(|lb| lb.covers(set.rtype)))
                    .map(|set| (u16::from(set.rtype), rrset_blob(&set.records)))
                    .collect();
                let other = node.rrset(RecordType::CNAME).is_none().then(|| Blob {
                    flags2: 0x84,
                    rcode: 0,
                    counts: [0, 1, 0],
                    sections: zones[zi].soa.clone().into_boxed_slice(),
                });
                let entry = match node.lb {
                    Some(lb) => Entry::Lb {
                        zone: zi,
                        binding: lb.binding,
                        a: lb.a,
                        aaaa: lb.aaaa,
                        by_type,
                        other,
                    },
                    None => Entry::Static {
                        zone: zi,
                        by_type,
                        other,
                    },
                };
                names.insert(key, entry);
            }
        }
        FastIndex { names, zones }
    }
}

/// An authoritative answer holding one RRset, owners pointing at the question (offset 12),
/// record data uncompressed so the bytes fit after any question.
fn rrset_blob(records: &[Record]) -> Option<Blob> {
    let mut sections = Vec::new();
    let mut rdata = Vec::new();
    for r in records {
        rdata.clear();
        let mut enc = BinEncoder::new(&mut rdata);
        enc.set_name_encoding(NameEncoding::Uncompressed);
        r.data.emit(&mut enc).ok()?;
        sections.extend_from_slice(&[0xC0, 12]);
        sections.extend_from_slice(&u16::from(r.record_type()).to_be_bytes());
        sections.extend_from_slice(&[0, 1]);
        sections.extend_from_slice(&r.ttl.to_be_bytes());
        sections.extend_from_slice(&u16::try_from(rdata.len()).ok()?.to_be_bytes());
        sections.extend_from_slice(&rdata);
    }
    Some(Blob {
        flags2: 0x84,
        rcode: 0,
        counts: [u16::try_from(records.len()).ok()?, 0, 0],
        sections: sections.into_boxed_slice(),
    })
}

/// A query parsed in place.
struct Parsed {
    id: [u8; 2],
    rd: bool,
    cd: bool,
    /// End of the question section.
    question_end: usize,
    /// Length of the lower-cased wire name written into the caller's buffer.
    name_len: usize,
    qtype: u16,
    edns: Option<Edns>,
}

struct Edns {
    payload: u16,
    dnssec_ok: bool,
    ecs: Option<Ecs>,
}

/// Parses `q`, writing its lower-cased wire name into `name` (kept by the caller, so the
/// parsed query stays small to move).
fn parse(q: &[u8], name: &mut [u8; 256]) -> Option<Parsed> {
    if q.len() < 17 {
        return None;
    }
    // QR=0, OPCODE=0, TC=0; QD=1, AN=0, NS=0, AR<=1.
    if q[2] & 0xFA != 0 || q[4..10] != [0, 1, 0, 0, 0, 0] || q[10] != 0 || q[11] > 1 {
        return None;
    }
    let mut p = Parsed {
        id: [q[0], q[1]],
        rd: q[2] & 0x01 != 0,
        cd: q[3] & 0x10 != 0,
        question_end: 0,
        name_len: 0,
        qtype: 0,
        edns: None,
    };
    let mut pos = 12;
    loop {
        let len = *q.get(pos)? as usize;
        if len > 63 || p.name_len + len + 1 > 255 {
            return None;
        }
        name[p.name_len] = len as u8;
        p.name_len += 1;
        if len == 0 {
            pos += 1;
            break;
        }
        let label = q.get(pos + 1..pos + 1 + len)?;
        for (i, b) in label.iter().enumerate() {
            name[p.name_len + i] = b.to_ascii_lowercase();
        }
        p.name_len += len;
        pos += 1 + len;
    }
    let fixed = q.get(pos..pos + 4)?;
    p.qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    if fixed[2..4] != [0, 1] {
        return None; // class IN only
    }
    pos += 4;
    p.question_end = pos;
    if q[11] == 1 {
        // The one additional record must be an OPT, version 0, ending the packet.
        let rr = q.get(pos..pos + 11)?;
        if rr[0] != 0 || rr[1..3] != [0, 41] || rr[6] != 0 {
            return None;
        }
        let payload = u16::from_be_bytes([rr[3], rr[4]]);
        let dnssec_ok = rr[7] & 0x80 != 0;
        let rdlen = u16::from_be_bytes([rr[9], rr[10]]) as usize;
        let rdata = q.get(pos + 11..pos + 11 + rdlen)?;
        if pos + 11 + rdlen != q.len() {
            return None;
        }
        let mut ecs = None;
        let mut o = 0;
        while o < rdata.len() {
            let head = rdata.get(o..o + 4)?;
            let code = u16::from_be_bytes([head[0], head[1]]);
            let len = u16::from_be_bytes([head[2], head[3]]) as usize;
            let data = rdata.get(o + 4..o + 4 + len)?;
            o += 4 + len;
            if code == 8 {
                match (ecs, ecs::parse(data)) {
                    (None, ecs::Found::Subnet(e)) => ecs = Some(e),
                    _ => return None, // malformed, or twice: the general path says FORMERR
                }
            }
        }
        p.edns = Some(Edns {
            payload,
            dnssec_ok,
            ecs,
        });
    } else if pos != q.len() {
        return None;
    }
    Some(p)
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
    let Some(index) = loaded.fast.as_ref() else {
        return false;
    };
    let mut name = [0u8; 256];
    let Some(p) = parse(query, &mut name) else {
        return false;
    };
    if p.qtype == u16::from(RecordType::ANY)
        || p.qtype == u16::from(RecordType::OPT)
        || p.qtype == 0
    {
        return false;
    }
    let key = &name[..p.name_len];
    let ours = loaded.config.server.edns_udp_size;
    let cap = match (transport, &p.edns) {
        (Transport::Tcp, _) => u16::MAX as usize,
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some(e)) => e.payload.clamp(512, ours.max(512)) as usize,
    };
    out.clear();
    let question = &query[12..p.question_end];
    match index.names.get(key) {
        Some(Entry::Slow) => false,
        Some(Entry::Static {
            zone,
            by_type,
            other,
        }) => {
            let Some(blob) = pick(by_type, other, p.qtype) else {
                return false;
            };
            write_blob(out, &p, question, blob, &index.zones[*zone], None, ours);
            out.len() <= cap
        }
        Some(Entry::Lb {
            zone,
            binding,
            a,
            aaaa,
            by_type,
            other,
        }) => {
            let covered = (p.qtype == 1 && *a) || (p.qtype == 28 && *aaaa);
            if !covered {
                let Some(blob) = pick(by_type, other, p.qtype) else {
                    return false;
                };
                write_blob(out, &p, question, blob, &index.zones[*zone], None, ours);
                return out.len() <= cap;
            }
            lb_answer(
                loaded,
                health,
                &p,
                question,
                &index.zones[*zone],
                *binding,
                src,
                out,
                ours,
            ) && out.len() <= cap
        }
        None => {
            // NXDOMAIN: the closest existing ancestor decides the zone; delegations and
            // wildcards are left to the general path.
            let mut at = 0;
            while key[at] != 0 {
                at += 1 + key[at] as usize;
                match index.names.get(&key[at..]) {
                    None => continue,
                    Some(Entry::Slow) => return false,
                    Some(Entry::Static { zone, .. } | Entry::Lb { zone, .. }) => {
                        let z = &index.zones[*zone];
                        if z.has_wildcard {
                            return false;
                        }
                        write_header(out, &p, 0x84, 3, [0, 1, 0]);
                        out.extend_from_slice(question);
                        out.extend_from_slice(&z.soa);
                        finish_opt(out, &p, z, None, ours);
                        return out.len() <= cap;
                    }
                }
            }
            false
        }
    }
}

fn pick<'b>(
    by_type: &'b [(u16, Option<Blob>)],
    other: &'b Option<Blob>,
    qtype: u16,
) -> Option<&'b Blob> {
    match by_type.iter().find(|(t, _)| *t == qtype) {
        Some((_, blob)) => blob.as_ref(),
        None => other.as_ref(),
    }
}

fn write_header(out: &mut Vec<u8>, p: &Parsed, flags2: u8, rcode: u8, counts: [u16; 3]) {
    out.extend_from_slice(&p.id);
    out.push(flags2 | u8::from(p.rd));
    out.push(if p.cd { 0x10 } else { 0 } | rcode);
    out.extend_from_slice(&[0, 1]);
    for c in counts {
        out.extend_from_slice(&c.to_be_bytes());
    }
}

fn write_blob(
    out: &mut Vec<u8>,
    p: &Parsed,
    question: &[u8],
    blob: &Blob,
    z: &FastZone,
    scope: Option<IpNet>,
    ours: u16,
) {
    write_header(out, p, blob.flags2, blob.rcode, blob.counts);
    out.extend_from_slice(question);
    out.extend_from_slice(&blob.sections);
    finish_opt(out, p, z, scope, ours);
}

/// Appends our OPT when the query had one (raising ARCOUNT), echoing ECS with its scope.
fn finish_opt(out: &mut Vec<u8>, p: &Parsed, z: &FastZone, scope: Option<IpNet>, ours: u16) {
    let Some(e) = &p.edns else { return };
    let ar = u16::from_be_bytes([out[10], out[11]]) + 1;
    out[10..12].copy_from_slice(&ar.to_be_bytes());
    out.extend_from_slice(&[0, 0, 41]);
    out.extend_from_slice(&ours.to_be_bytes());
    out.extend_from_slice(&[0, 0, if e.dnssec_ok { 0x80 } else { 0 }, 0]);
    match (&e.ecs, z.ecs) {
        (Some(ecs), true) => {
            let used = ecs.source > 0;
            let scope = match scope {
                Some(valid_for) if used => valid_for.prefix_len().min(ecs.source),
                _ => 0,
            };
            let addr_len = (ecs.source as usize).div_ceil(8);
            let opt_len = 4 + addr_len;
            out.extend_from_slice(&((4 + opt_len) as u16).to_be_bytes());
            out.extend_from_slice(&[0, 8]);
            out.extend_from_slice(&(opt_len as u16).to_be_bytes());
            let family: u16 = if ecs.addr.is_ipv4() { 1 } else { 2 };
            out.extend_from_slice(&family.to_be_bytes());
            out.push(ecs.source);
            out.push(scope);
            match ecs.addr {
                IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..addr_len]),
                IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..addr_len]),
            }
        }
        _ => out.extend_from_slice(&[0, 0]),
    }
}

#[allow(clippy::too_many_arguments)]
fn lb_answer(
    loaded: &Loaded,
    health: HealthView<'_>,
    p: &Parsed,
    question: &[u8],
    z: &FastZone,
    binding: usize,
    src: SocketAddr,
    out: &mut Vec<u8>,
    ours: u16,
) -> bool {
    let cfg = &loaded.config;
    let b = &cfg.bindings[binding];
    let network = match p.edns.as_ref().and_then(|e| e.ecs.as_ref()) {
        Some(e) if z.ecs && e.source > 0 => e.network(),
        _ => IpNet::from(src.ip()),
    };
    let mut client = ClientInfo::from_network(network);
    let family = if p.qtype == 1 { Family::V4 } else { Family::V6 };
    let sel = super::select_for(loaded, health, binding, &mut client, family, false);
    let members = sel
        .members
        .iter()
        .map(|&(pi, mi)| &cfg.pools[pi].members[mi]);
    if members
        .clone()
        .any(|m| matches!(m.target, Target::Alias(_)))
    {
        return false; // CNAME answers: the general path
    }
    let scope = Some(sel.valid_for);
    if sel.reason == Reason::AllDown || sel.members.is_empty() {
        write_header(out, p, 0x84, 0, [0, 1, 0]);
        out.extend_from_slice(question);
        let at = out.len() + z.soa_ttl_at;
        out.extend_from_slice(&z.soa);
        out[at..at + 4].copy_from_slice(&z.soa_ttl.min(b.negative_ttl).to_be_bytes());
        finish_opt(out, p, z, scope, ours);
        return true;
    }
    write_header(out, p, 0x84, 0, [0, 0, 0]);
    out.extend_from_slice(question);
    let mut count: u16 = 0;
    for m in members {
        match (m.target.clone(), family) {
            (Target::Addr(IpAddr::V4(a)), Family::V4) => {
                out.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
                out.extend_from_slice(&b.ttl.to_be_bytes());
                out.extend_from_slice(&[0, 4]);
                out.extend_from_slice(&a.octets());
                count += 1;
            }
            (Target::Addr(IpAddr::V6(a)), Family::V6) => {
                out.extend_from_slice(&[0xC0, 12, 0, 28, 0, 1]);
                out.extend_from_slice(&b.ttl.to_be_bytes());
                out.extend_from_slice(&[0, 16]);
                out.extend_from_slice(&a.octets());
                count += 1;
            }
            _ => {}
        }
    }
    if count == 0 {
        return false;
    }
    out[6..8].copy_from_slice(&count.to_be_bytes());
    finish_opt(out, p, z, scope, ours);
    true
}
