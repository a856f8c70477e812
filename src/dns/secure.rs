//! DNSSEC in answers, for a query with DO set to a signed zone: each authoritative RRset
//! followed by its RRSIGs (from [`crate::dnssec::ZoneSigning`], which signs each distinct set
//! once), and denial of existence in compact form (RFC 9824): one NSEC owned by the name
//! asked about, whose next name is the least name after it, so every denial is one signature
//! over a record that covers nothing else.
//!
//! - A name that does not exist: NOERROR (NXDOMAIN when the client sets CO) with an NSEC
//!   listing RRSIG, NSEC and NXNAME. A zone set to white lies (RFC 4470) answers NXDOMAIN
//!   with two NSEC records instead, one covering the name (from just before the next closer
//!   name to just past it, [`crate::dnssec::cover`]) and one covering the wildcard at the
//!   closest encloser.
//! - A name without the type asked: an NSEC listing what the name holds, less that type.
//!   An empty non-terminal lists RRSIG and NSEC only.
//! - A wildcard's answer is signed as the name asked (an online signer may: the RRSIG's
//!   labels are the query name's), so it needs no proof that the name is absent, and a
//!   wildcard's NODATA is the name's NSEC like any other.
//! - A referral carries the child's DS set and its RRSIGs, or an NSEC at the cut showing NS
//!   without DS (an insecure delegation). Glue and the NS set are the child's and unsigned.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::NULL;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::dnssec::{compact_nsec, cover, nsec_rdata, DenialStyle, Rrset, ZoneSigning};
use crate::zone::{Node, Zone};

/// NXNAME (RFC 9824): in a compact denial's bitmap, the name does not exist.
const NXNAME: u16 = 128;

/// What a negative answer or a referral has to prove, as the resolver found it.
#[derive(Debug)]
pub(super) enum Denial<'z> {
    /// `name` does not exist; `encloser` is its deepest existing ancestor.
    Name { name: Name, encloser: Name },
    /// `owner` exists (as `node`, which may be a wildcard's or empty) without `qtype`.
    Type {
        owner: Name,
        node: &'z Node,
        qtype: RecordType,
    },
    /// A referral to the zone cut at `cut`.
    Delegation { cut: Name, node: &'z Node },
}

/// Adds the proofs and signatures to an answer from `zone`, signed by `signing`.
/// `compact_ok` is the client's CO flag.
pub(super) fn secure(
    resp: &mut Message,
    zone: &Zone,
    signing: &ZoneSigning,
    denial: Option<Denial<'_>>,
    compact_ok: bool,
    now: u64,
) {
    let (soa_ttl, negative_ttl) = (zone.soa().ttl, zone.negative_soa().ttl);
    // NSEC records take the TTL of the SOA they come with (lowered for a load-balanced name's
    // NODATA), else the zone's negative TTL.
    let ttl = resp
        .authorities
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .map_or(negative_ttl, |r| r.ttl);
    let mut cut = None;
    match denial {
        None => {}
        Some(Denial::Name { name, encloser }) => match signing.denial() {
            DenialStyle::Compact => {
                if !compact_ok {
                    resp.metadata.response_code = ResponseCode::NoError;
                }
                resp.authorities.push(nsec(name, ttl, &[NXNAME]));
            }
            DenialStyle::WhiteLies => {
                // The name just below the closest encloser on the way to the one asked
                // (RFC 5155's "next closer"): covering it covers the name asked too.
                let next_closer = name.trim_to(encloser.iter().count() + 1);
                let wildcard = encloser
                    .prepend_label("*")
                    .expect("the encloser held a child");
                for covered in [next_closer, wildcard] {
                    resp.authorities.push(covering_nsec(zone, &covered, ttl));
                }
            }
        },
        Some(Denial::Type { owner, node, qtype }) => {
            let types: Vec<u16> = held(node).filter(|&t| t != u16::from(qtype)).collect();
            resp.authorities.push(nsec(owner, ttl, &types));
        }
        Some(Denial::Delegation { cut: at, node }) => {
            match node.rrset(RecordType::DS) {
                Some(ds) => resp.authorities.extend(ds.records(&at)),
                None => {
                    let types: Vec<u16> = held(node).collect();
                    resp.authorities
                        .push(nsec(at.clone(), negative_ttl, &types));
                }
            }
            cut = Some(at);
        }
    }
    for section in [
        &mut resp.answers,
        &mut resp.authorities,
        &mut resp.additionals,
    ] {
        let records = std::mem::take(section);
        let child = |owner: &Name, rtype: RecordType| {
            cut.as_ref().is_some_and(|c| c.zone_of(owner))
                && !matches!(rtype, RecordType::DS | RecordType::NSEC)
        };
        *section = signed(records, signing, &child, Some(soa_ttl), now);
    }
}

/// The types a node holds, as an NSEC bitmap lists them (a load-balanced name's A and AAAA
/// included).
fn held(node: &Node) -> impl Iterator<Item = u16> + '_ {
    let lb = node.lb.into_iter().flat_map(|lb| {
        [(lb.a, 1u16), (lb.aaaa, 28)]
            .into_iter()
            .filter_map(|(covered, t)| covered.then_some(t))
    });
    node.rrsets
        .iter()
        .map(|s| u16::from(s.rtype))
        .chain(lb)
        .filter(|&t| t != 46 && t != 47)
}

/// An NSEC record that covers `name`, absent from `zone`, and no name that exists (RFC 4470):
/// from just before `name` to just past it and its subtree. Its owner lists what it holds
/// when it is a name of the zone (the encloser itself, before a `\000` label).
fn covering_nsec(zone: &Zone, name: &Name, ttl: u32) -> Record {
    let owner = cover::before(name, |n| zone.node(n).is_some());
    let next = cover::after_subtree(name)
        .filter(|n| zone.origin.zone_of(n))
        .unwrap_or_else(|| zone.origin.clone());
    let types: Vec<u16> = zone
        .node(&owner)
        .map(|n| held(n).collect())
        .unwrap_or_default();
    let data = nsec_rdata(&next, &types);
    Record::from_rdata(owner, ttl, opaque(RecordType::NSEC, data))
}

fn nsec(owner: Name, ttl: u32, types: &[u16]) -> Record {
    let data = compact_nsec(&owner, types);
    Record::from_rdata(owner, ttl, opaque(RecordType::NSEC, data))
}

/// A signed zone as a transfer carries it (`records`: every record but the closing SOA,
/// the load-balanced names' snapshot included): in canonical order, with a full NSEC chain
/// over the authoritative names (RFC 4034 section 4; a delegation point is in it, names
/// below a cut are not) and every authoritative RRset signed, so a secondary serves data
/// that validates and proves no load-balanced name absent.
pub(super) fn signed_zone(
    mut records: Vec<Record>,
    apex: &Name,
    signing: &ZoneSigning,
    negative_ttl: u32,
    now: u64,
) -> Vec<Record> {
    use crate::dnssec::canonical_order;
    records.sort_by(|a, b| {
        canonical_order(&a.name, &b.name)
            .then(u16::from(a.record_type()).cmp(&u16::from(b.record_type())))
    });
    records.dedup();
    let cuts: Vec<Name> = records
        .iter()
        .filter(|r| r.record_type() == RecordType::NS && r.name != *apex)
        .map(|r| r.name.clone())
        .collect();
    let below_cut = |owner: &Name| cuts.iter().any(|c| c != owner && c.zone_of(owner));
    // The chain's owners in canonical order, each with the types it holds.
    let mut owners: Vec<(Name, Vec<u16>)> = Vec::new();
    for r in &records {
        if below_cut(&r.name) {
            continue;
        }
        let t = u16::from(r.record_type());
        match owners.last_mut() {
            Some((name, types)) if *name == r.name => {
                if !types.contains(&t) {
                    types.push(t);
                }
            }
            _ => owners.push((r.name.clone(), vec![t])),
        }
    }
    let mut chained = Vec::with_capacity(records.len() + owners.len());
    let mut rest = records.into_iter().peekable();
    for (i, (owner, types)) in owners.iter().enumerate() {
        let next = &owners[(i + 1) % owners.len()].0;
        while let Some(r) = rest.next_if(|r| canonical_order(&r.name, owner).is_le()) {
            chained.push(r);
        }
        let data = crate::dnssec::nsec_rdata(next, types);
        chained.push(Record::from_rdata(
            owner.clone(),
            negative_ttl,
            opaque(RecordType::NSEC, data),
        ));
    }
    chained.extend(rest);
    let child = |owner: &Name, rtype: RecordType| {
        below_cut(owner)
            || (cuts.contains(owner) && !matches!(rtype, RecordType::DS | RecordType::NSEC))
    };
    signed(chained, signing, &child, None, now)
}

fn opaque(code: RecordType, data: Vec<u8>) -> RData {
    RData::Unknown {
        code,
        rdata: NULL::with(data),
    }
}

/// A section with each signable RRset (records of one owner and type in a row) followed by
/// its RRSIGs; `child` says which sets are not this zone's to sign (at or below a cut, all
/// but DS and NSEC).
pub(super) fn signed(
    records: Vec<Record>,
    signing: &ZoneSigning,
    child: &dyn Fn(&Name, RecordType) -> bool,
    soa_ttl: Option<u32>,
    now: u64,
) -> Vec<Record> {
    if records.is_empty() {
        return records;
    }
    let mut out = Vec::with_capacity(records.len() + 2);
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let rtype = first.record_type();
        let len = rest
            .iter()
            .take_while(|r| r.record_type() == rtype && r.name == first.name)
            .count();
        let (set, tail) = rest.split_at(len);
        rest = tail;
        out.extend_from_slice(set);
        if child(&first.name, rtype) || first.dns_class != hickory_proto::rr::DNSClass::IN {
            continue;
        }
        let rdatas: Vec<Vec<u8>> = set.iter().map(|r| canonical_rdata(&r.data)).collect();
        // A negative answer's SOA goes out with the negative TTL; it is signed with the
        // TTL it has in the zone (the RRSIG's original TTL), as every other answer holding
        // it is.
        let ttl = match (rtype, soa_ttl) {
            (RecordType::SOA, Some(zone_ttl)) => zone_ttl,
            _ => first.ttl,
        };
        let signatures = signing.signatures(
            &Rrset {
                owner: &first.name,
                rtype: u16::from(rtype),
                class: 1,
                ttl,
                rdatas: &rdatas,
            },
            now,
        );
        for signature in signatures.iter() {
            out.push(Record::from_rdata(
                first.name.clone(),
                first.ttl,
                opaque(RecordType::RRSIG, signature.clone()),
            ));
        }
    }
    out
}

/// The RRSIGs of a load-balanced name's address set as the fast path wrote it: `owner` in
/// lower-case wire form, each address's data; canonical form built straight from the bytes.
pub(super) fn sign_addresses<'d>(
    signing: &ZoneSigning,
    owner: &[u8],
    rtype: u8,
    ttl: u32,
    rdatas: impl Iterator<Item = &'d [u8]>,
) -> std::sync::Arc<[Vec<u8>]> {
    let mut sorted: Vec<&[u8]> = rdatas.collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut canonical = Vec::with_capacity(sorted.len() * (owner.len() + 26));
    for data in sorted {
        canonical.extend_from_slice(owner);
        canonical.extend_from_slice(&[0, rtype, 0, 1]);
        canonical.extend_from_slice(&ttl.to_be_bytes());
        canonical.extend_from_slice(&(data.len() as u16).to_be_bytes());
        canonical.extend_from_slice(data);
    }
    let labels = crate::dnssec::sign::wire_labels(owner);
    let now = crate::clock::unix_now();
    signing.signatures_canonical(labels, u16::from(rtype), ttl, canonical, now)
}

/// Record data in canonical form (RFC 4034 section 6.2): names uncompressed, and lower case
/// in the types that section lists.
fn canonical_rdata(data: &RData) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(32);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_canonical_form(true);
    // Data that was encoded once already encodes again.
    let _ = data.emit(&mut encoder);
    bytes
}
