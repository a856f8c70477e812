//! Static zone data from RFC 1035 master files, and the lookups an authoritative server needs.
//!
//! Record data is parsed by hickory-proto (`RData::try_from_str`); the master-file framing
//! (entries, parentheses, comments, `$ORIGIN`, `$TTL`, omitted owners) is read in
//! `reader` so every error can name its file and line, which hickory's own zone
//! parser does not report. This file holds the name tree and its lookups.
//!
//! A [`Zone`] is a map from owner name to [`Node`]. Every ancestor of an owner down from the
//! apex exists as a node too (an empty non-terminal when it holds nothing), so "does this name
//! exist" is a single map lookup and the closest encloser of a missing name is found by walking
//! up. Load-balanced names are marked on their node ([`Node::lb`]) so they take part in the same
//! walk: they are never shadowed by wildcards and their ancestors are empty non-terminals.

use std::path::{Path, PathBuf};

use smallvec::SmallVec;

use crate::hash::FastMap;

mod reader;

use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinDecodable;
use hickory_proto::serialize::binary::{
    BinDecoder, BinEncodable, BinEncoder, NameEncoding, Restrict,
};

/// A zone file could not be read or holds data an authoritative server must refuse.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("{file}: cannot read zone file: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{file}:{line}: {owner} {rtype}: {message}")]
    Record {
        file: PathBuf,
        line: usize,
        owner: String,
        rtype: String,
        message: String,
    },
    #[error("{file}: zone {origin}: {message}")]
    Zone {
        file: PathBuf,
        origin: String,
        message: String,
    },
    /// Several records failed (at most [`MAX_ERRORS`]): each error, one per line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ZoneError>),
}

/// How many errors one zone file reports before reading stops.
pub const MAX_ERRORS: usize = 100;

/// One RRset of static data, in file order.
///
/// The record data is kept in wire form (uncompressed, each record behind its 2-byte length)
/// rather than as decoded `Record`s: a decoded A record costs about 270 bytes, its wire form 6,
/// which is what lets a million-record zone fit in less memory than NSD takes. The fast path
/// copies these bytes straight into its answers; the general path decodes them on use.
#[derive(Debug, Clone)]
pub struct RRset {
    pub rtype: RecordType,
    /// One TTL per RRset (RFC 2181 section 5.2).
    pub ttl: u32,
    /// Line of the first record, for error messages about the set.
    line: u32,
    count: u16,
    wire: Box<[u8]>,
}

impl RRset {
    fn new(rtype: RecordType, ttl: u32, line: usize, rdata: &RData) -> Result<RRset, String> {
        let mut set = RRset {
            rtype,
            ttl,
            line: u32::try_from(line).unwrap_or(u32::MAX),
            count: 0,
            wire: Box::default(),
        };
        set.push(rdata)?;
        Ok(set)
    }

    /// Adds a record unless the set already holds the same data.
    fn push(&mut self, rdata: &RData) -> Result<(), String> {
        let mut bytes = Vec::new();
        let mut enc = BinEncoder::new(&mut bytes);
        enc.set_name_encoding(NameEncoding::Uncompressed);
        rdata.emit(&mut enc).map_err(|e| e.to_string())?;
        let len = u16::try_from(bytes.len()).map_err(|_| "record data over 65535 bytes")?;
        if self.wire_rdata().any(|w| w == bytes.as_slice()) {
            return Ok(());
        }
        self.count = self
            .count
            .checked_add(1)
            .ok_or("more than 65535 records in one set")?;
        let mut wire = std::mem::take(&mut self.wire).into_vec();
        wire.extend_from_slice(&len.to_be_bytes());
        wire.extend_from_slice(&bytes);
        self.wire = wire.into_boxed_slice();
        Ok(())
    }

    /// Line of the set's first record in its zone file.
    pub fn line(&self) -> usize {
        self.line as usize
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Each record's data in wire form (names uncompressed).
    pub fn wire_rdata(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest: &[u8] = &self.wire;
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            let (data, tail) = tail.split_at(u16::from_be_bytes(*len) as usize);
            rest = tail;
            Some(data)
        })
    }

    /// Each record's data, decoded.
    pub fn rdata(&self) -> impl Iterator<Item = RData> + '_ {
        let rtype = self.rtype;
        self.wire_rdata().map(move |w| decode_rdata(rtype, w))
    }

    /// The first record's data (a set is never empty).
    pub fn first(&self) -> RData {
        self.rdata()
            .next()
            .expect("an RRset holds at least one record")
    }

    /// The records with `owner` as their name.
    pub fn records<'a>(&'a self, owner: &'a Name) -> impl Iterator<Item = Record> + 'a {
        self.rdata()
            .map(move |d| Record::from_rdata(owner.clone(), self.ttl, d))
    }
}

/// Decodes record data this module encoded; data hickory cannot read back (types it parses
/// only with features we leave off, such as DS) stays opaque, which encodes to the same bytes.
fn decode_rdata(rtype: RecordType, wire: &[u8]) -> RData {
    let mut dec = BinDecoder::new(wire);
    match RData::read(&mut dec, rtype, Restrict::new(wire.len() as u16)) {
        Ok(d) if dec.is_empty() => d,
        _ => RData::Unknown {
            code: rtype,
            rdata: null(wire.to_vec()),
        },
    }
}

/// Opaque record data; empty data (`\# 0`, RFC 3597) is allowed.
fn null(bytes: Vec<u8>) -> hickory_proto::rr::rdata::NULL {
    if bytes.is_empty() {
        hickory_proto::rr::rdata::NULL::new()
    } else {
        hickory_proto::rr::rdata::NULL::with(bytes)
    }
}

/// Which types of a node are answered by a load-balanced binding instead of static data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbMark {
    /// Index into the config's list of bindings.
    pub binding: usize,
    pub a: bool,
    pub aaaa: bool,
}

impl LbMark {
    /// Whether the binding answers this query type.
    pub fn covers(&self, rtype: RecordType) -> bool {
        (rtype == RecordType::A && self.a) || (rtype == RecordType::AAAA && self.aaaa)
    }
}

/// Everything at one owner name.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// Most names hold one RRset: it is kept inline, saving an allocation per name.
    pub rrsets: SmallVec<[RRset; 1]>,
    /// Set when a load-balanced name lives here.
    pub lb: Option<LbMark>,
}

impl Node {
    pub fn rrset(&self, rtype: RecordType) -> Option<&RRset> {
        self.rrsets.iter().find(|s| s.rtype == rtype)
    }

    /// An empty non-terminal: the name exists only because names below it do.
    pub fn is_empty(&self) -> bool {
        self.rrsets.is_empty() && self.lb.is_none()
    }
}

/// Where a query name lands in a zone.
#[derive(Debug)]
pub enum Position<'z> {
    /// The name exists (possibly as an empty non-terminal); answer from this node.
    Exact(&'z Node),
    /// The name does not exist but a wildcard covers it; answer from the wildcard node,
    /// rewriting owners to the query name.
    Wildcard(&'z Node),
    /// The name is at or below a zone cut: refer to the child's name servers.
    Referral { cut: Name, node: &'z Node },
    /// Nothing here and no wildcard: NXDOMAIN. `encloser` is the closest encloser, the
    /// deepest existing ancestor of the name asked (RFC 4592 section 3.3.1).
    Missing { encloser: Name },
}

/// A parsed, validated zone.
#[derive(Debug, Clone)]
pub struct Zone {
    pub origin: Name,
    pub file: PathBuf,
    /// Nodes by lower-cased wire name (a hickory `Name` key alone would take 80 bytes).
    nodes: FastMap<Box<[u8]>, Node>,
    /// The apex SOA, decoded once when the zone is validated.
    soa: Option<Record>,
    /// [`Zone::digest`], computed on first use (only zones with secondaries need it).
    digest: std::sync::OnceLock<u64>,
    /// Data served as written but probably not meant: `file:line: owner type: message`.
    pub warnings: Vec<String>,
}

impl Zone {
    /// Reads and validates a zone file for `origin`.
    pub fn load(file: &Path, origin: &Name) -> Result<Zone, ZoneError> {
        let text = std::fs::read_to_string(file).map_err(|source| ZoneError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Zone::parse(&text, file, origin)
    }

    fn insert(&mut self, owner: &Name, ttl: u32, rdata: &RData, line: usize) -> Result<(), String> {
        self.ensure_node(owner);
        let node = self.node_mut(owner).expect("node just ensured");
        let rtype = rdata.record_type();
        match node.rrsets.iter_mut().find(|s| s.rtype == rtype) {
            Some(set) => {
                // RFC 2181 section 5.2: one TTL per RRset; take the lowest, as NSD does.
                set.ttl = set.ttl.min(ttl);
                set.push(rdata)
            }
            None => {
                node.rrsets.push(RRset::new(rtype, ttl, line, rdata)?);
                Ok(())
            }
        }
    }

    /// Adds a signed zone's key sets at its apex (data already in the zone file is kept; the
    /// same record twice is held once), with the SOA's TTL: DNSKEY, and CDS and CDNSKEY for
    /// the parent.
    pub fn publish_keys(&mut self, dnskey: &[Vec<u8>], cds: &[Vec<u8>], cdnskey: &[Vec<u8>]) {
        let apex = self.origin.clone();
        let ttl = self.soa.as_ref().map_or(3600, |s| s.ttl);
        let sets = [
            (RecordType::DNSKEY, dnskey),
            (RecordType::CDS, cds),
            (RecordType::CDNSKEY, cdnskey),
        ];
        for (code, records) in sets {
            for data in records {
                let data = RData::Unknown {
                    code,
                    rdata: null(data.clone()),
                };
                // Key data is at most a few hundred bytes: it always fits a set.
                let _ = self.insert(&apex, ttl, &data, 0);
            }
        }
        self.digest = std::sync::OnceLock::new();
    }

    /// Makes sure `name` and every ancestor down from the apex has a node.
    pub fn ensure_node(&mut self, name: &Name) {
        let apex_labels = self.origin.num_labels();
        let mut buf = [0; 256];
        for n in (apex_labels..=name.num_labels()).rev() {
            let ancestor = key(&name.trim_to(n as usize), &mut buf);
            if self.nodes.contains_key(ancestor) {
                break;
            }
            self.nodes.insert(ancestor.into(), Node::default());
        }
        // `num_labels` does not count a leading `*`: a wildcard owner is added here.
        let own = key(name, &mut buf);
        if !self.nodes.contains_key(own) {
            self.nodes.insert(own.into(), Node::default());
        }
    }

    /// The node at `name`, if the name exists in the zone.
    pub fn node(&self, name: &Name) -> Option<&Node> {
        self.nodes.get(key(name, &mut [0; 256]))
    }

    pub fn node_mut(&mut self, name: &Name) -> Option<&mut Node> {
        self.nodes.get_mut(key(name, &mut [0; 256]))
    }

    fn apex(&self) -> &Node {
        self.node(&self.origin).expect("the apex always has a node")
    }

    /// How many records the zone holds (load-balanced names not counted).
    pub fn record_count(&self) -> usize {
        self.nodes
            .values()
            .flat_map(|n| n.rrsets.iter())
            .map(RRset::len)
            .sum()
    }

    /// How many names exist in the zone, empty non-terminals included.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Every node with its name, in no particular order.
    pub fn nodes(&self) -> impl Iterator<Item = (Name, &Node)> {
        self.nodes.iter().filter_map(|(k, node)| {
            let name = Name::read(&mut BinDecoder::new(k)).ok()?;
            Some((name, node))
        })
    }

    /// Whether any wildcard owner exists.
    pub fn has_wildcard(&self) -> bool {
        self.nodes.keys().any(|k| k.starts_with(&[1, b'*']))
    }

    fn validate(&self) -> Result<(), ZoneError> {
        let zone_err = |message: String| ZoneError::Zone {
            file: self.file.clone(),
            origin: self.origin.to_string(),
            message,
        };
        let apex = self.apex();
        match apex.rrset(RecordType::SOA) {
            None => return Err(zone_err("missing SOA record at the apex".into())),
            Some(s) if s.len() > 1 => {
                return Err(self.record_error(
                    &self.origin,
                    s,
                    "more than one SOA record at the apex",
                ))
            }
            Some(_) => {}
        }
        if apex.rrset(RecordType::NS).is_none() {
            return Err(zone_err("no NS records at the apex".into()));
        }
        let apex_key = key(&self.origin, &mut [0; 256]).to_vec();
        for (k, node) in &self.nodes {
            let problem = match (node.rrset(RecordType::CNAME), node.rrset(RecordType::SOA)) {
                (Some(cname), _) if cname.len() > 1 => {
                    Some((cname, "more than one CNAME at one name"))
                }
                (Some(cname), _) if node.rrsets.len() > 1 => {
                    Some((cname, "CNAME beside other data"))
                }
                (_, Some(soa)) if **k != *apex_key => {
                    Some((soa, "SOA record outside the zone apex"))
                }
                _ => None,
            };
            if let Some((set, message)) = problem {
                let name = Name::read(&mut BinDecoder::new(k)).unwrap_or_default();
                return Err(self.record_error(&name, set, message));
            }
        }
        Ok(())
    }

    fn record_error(&self, owner: &Name, set: &RRset, message: &str) -> ZoneError {
        ZoneError::Record {
            file: self.file.clone(),
            line: set.line(),
            owner: owner.to_string(),
            rtype: set.rtype.to_string(),
            message: message.into(),
        }
    }

    /// The apex SOA record.
    pub fn soa(&self) -> &Record {
        self.soa.as_ref().expect("validated zone has a SOA")
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        match &self.soa().data {
            RData::SOA(soa) => soa.serial,
            _ => 0,
        }
    }

    /// The line of the SOA record in the zone file.
    pub fn soa_line(&self) -> usize {
        self.apex()
            .rrset(RecordType::SOA)
            .map_or(0, |s| s.line as usize)
    }

    /// A digest of every record (owner, type, TTL, data), independent of order: the same
    /// files give the same digest on every node, and any change to the data changes it.
    /// Keeps the serial honest for secondaries.
    pub fn digest(&self) -> u64 {
        *self.digest.get_or_init(|| self.compute_digest())
    }

    fn compute_digest(&self) -> u64 {
        use std::hash::Hasher;
        let mut sum = 0u64;
        for (key, node) in &self.nodes {
            for set in &node.rrsets {
                for rdata in set.wire_rdata() {
                    let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
                    h.write(key);
                    h.write(&u16::from(set.rtype).to_be_bytes());
                    h.write(&set.ttl.to_be_bytes());
                    h.write(&(rdata.len() as u16).to_be_bytes());
                    h.write(rdata);
                    sum = sum.wrapping_add(h.finish());
                }
            }
        }
        sum
    }

    /// The SOA to put in a negative answer, with TTL = min(SOA TTL, SOA MINIMUM) (RFC 2308).
    pub fn negative_soa(&self) -> Record {
        let mut soa = self.soa().clone();
        if let RData::SOA(data) = &soa.data {
            soa.ttl = soa.ttl.min(data.minimum);
        }
        soa
    }

    /// Finds where `qname` (lower case, inside this zone) lands.
    pub fn find(&self, qname: &Name, qtype: RecordType) -> Position<'_> {
        let apex_labels = self.origin.num_labels() as usize;
        let total = qname.num_labels() as usize;
        let mut encloser = self.origin.clone();
        for n in apex_labels + 1..=total {
            let ancestor = qname.trim_to(n);
            let Some(node) = self.node(&ancestor) else {
                return self.wildcard(encloser);
            };
            if node.rrset(RecordType::NS).is_some() && node.lb.is_none() {
                // A zone cut. DS lives on the parent side of the cut (RFC 4035 section 3.1.4.1).
                if n == total && qtype == RecordType::DS {
                    return Position::Exact(node);
                }
                return Position::Referral {
                    cut: ancestor,
                    node,
                };
            }
            encloser = ancestor;
        }
        match self.node(qname) {
            Some(node) => Position::Exact(node),
            None => self.wildcard(encloser),
        }
    }

    fn wildcard(&self, encloser: Name) -> Position<'_> {
        match encloser.prepend_label("*").ok().and_then(|w| self.node(&w)) {
            Some(node) => Position::Wildcard(node),
            None => Position::Missing { encloser },
        }
    }

    /// Address records for `name` if it is data in this zone (glue included), ignoring cuts.
    pub fn addresses<'a>(&'a self, name: &'a Name) -> impl Iterator<Item = Record> + 'a {
        self.node(name)
            .into_iter()
            .flat_map(|n| n.rrsets.iter())
            .filter(|s| matches!(s.rtype, RecordType::A | RecordType::AAAA))
            .flat_map(move |s| s.records(name))
    }
}

/// Writes `name` lower-cased in wire form into `buf` (a wire name is at most 255 bytes).
fn key<'b>(name: &Name, buf: &'b mut [u8; 256]) -> &'b [u8] {
    let mut at = 0;
    for label in name.iter() {
        buf[at] = label.len() as u8;
        for (to, b) in buf[at + 1..].iter_mut().zip(label) {
            *to = b.to_ascii_lowercase();
        }
        at += 1 + label.len();
    }
    buf[at] = 0;
    &buf[..=at]
}

/// A domain name written as text (`www.example.test`, the final dot optional) in lower-case
/// wire form.
pub fn text_to_wire(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    out.push(0);
    out
}

/// A name made fully qualified and lower case.
pub fn fqdn_lower(name: &Name) -> Name {
    let mut n = name.to_lowercase();
    n.set_fqdn(true);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(text: &str) -> Result<Zone, ZoneError> {
        Zone::parse(
            text,
            Path::new("t.zone"),
            &Name::from_ascii("example.test.").unwrap(),
        )
    }

    const BASE: &str = "$TTL 300\n@ IN SOA ns1 hostmaster ( 1 7200 900 1209600\n 60 )\n  NS ns1\nns1 A 192.0.2.53\n";

    #[test]
    fn parses_multiline_soa_and_relative_names() {
        let z = zone(BASE).unwrap();
        let soa = z.negative_soa();
        assert_eq!(soa.ttl, 60);
        let ns = z.node(&z.origin).unwrap().rrset(RecordType::NS).unwrap();
        assert_eq!(ns.first().to_string(), "ns1.example.test.");
    }

    #[test]
    fn cname_beside_other_data_names_its_line() {
        let err = zone(&format!("{BASE}www CNAME ns1\nwww TXT \"x\"\n")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("t.zone:6:") && msg.contains("CNAME beside other data"),
            "{msg}"
        );
    }

    #[test]
    fn out_of_zone_data_is_rejected() {
        let err = zone(&format!("{BASE}www.other.test. A 192.0.2.1\n")).unwrap_err();
        assert!(err.to_string().contains("out-of-zone"), "{err}");
    }

    #[test]
    fn missing_soa_is_rejected() {
        let err = zone("$TTL 60\n@ NS ns1\n").unwrap_err();
        assert!(err.to_string().contains("missing SOA"), "{err}");
    }

    #[test]
    fn empty_non_terminals_exist_and_wildcards_cover_missing_names() {
        let z = zone(&format!("{BASE}a.b.c A 192.0.2.1\n*.w A 192.0.2.2\n")).unwrap();
        let n = |s: &str| Name::from_ascii(s).unwrap();
        assert!(
            matches!(z.find(&n("b.c.example.test."), RecordType::A), Position::Exact(node) if node.is_empty())
        );
        assert!(matches!(
            z.find(&n("x.w.example.test."), RecordType::A),
            Position::Wildcard(_)
        ));
        assert!(matches!(
            z.find(&n("zz.example.test."), RecordType::A),
            Position::Missing { encloser } if encloser == n("example.test.")
        ));
    }

    #[test]
    fn text_names_become_lower_case_wire_names() {
        assert_eq!(text_to_wire("Example.TEST."), b"\x07example\x04test\x00");
        assert_eq!(text_to_wire("example.test"), text_to_wire("example.test."));
    }

    #[test]
    fn quoted_strings_keep_spaces_and_semicolons() {
        let z = zone(&format!("{BASE}t TXT \"a b; c\" \"d\"\n")).unwrap();
        let n = Name::from_ascii("t.example.test.").unwrap();
        let txt = z.node(&n).unwrap().rrset(RecordType::TXT).unwrap();
        assert!(txt.first().to_string().contains("a b; c"));
    }
}
