//! A query read once: [`Query::read`] walks the packet a single time and keeps what every
//! later step asks of it (header, the question with its name lower-cased, EDNS with ECS,
//! cookie and NSID, whether it is TSIG-signed) as a borrowed view, without allocating. The
//! fast path, the general path, metrics and rate limiting all read this view; hickory's
//! `Message` parses only signed queries and transfers, which need whole records.
//!
//! The framing rules are those of a full parse: names (labels of at most 63 bytes, at most
//! 255 in all, pointers only backwards), records within the packet, OPT, TSIG and SIG only in
//! the additional section, one OPT with the root as owner, TSIG last, no empty record data
//! outside UPDATE. A packet that breaks one is [`Read::Malformed`] (FORMERR). Record data
//! other than OPT's is not decoded: a query's answer and authority sections are refused
//! anyway, and the additional section's records other than OPT and TSIG are ignored.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::cookie;
use super::ecs::{self, Ecs};

const OPT: u16 = 41;
const TSIG: u16 = 250;
const SIG: u16 = 24;
const NSID: u16 = 3;
const ECS: u16 = 8;
const OPCODE_UPDATE: u8 = 5;

/// What reading a packet gave.
pub enum Read<'a> {
    /// Not a query to answer: shorter than a header, or a response (QR set).
    Ignore,
    /// Broken framing: answered with a bare FORMERR header.
    Malformed,
    Query(Query<'a>),
}

/// Where a query's lower-cased name is written when it is read: kept by the caller, so the
/// read query stays small to pass around.
pub struct NameBuf([u8; 255]);

impl Default for NameBuf {
    fn default() -> Self {
        NameBuf([0; 255])
    }
}

/// A query as read from its packet.
pub struct Query<'a> {
    pub packet: &'a [u8],
    pub id: [u8; 2],
    /// Header byte 2 (QR, opcode, AA, TC, RD).
    flags: u8,
    /// QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT.
    pub counts: [u16; 4],
    /// The first question, when there is one.
    pub question: Option<Question<'a>>,
    pub edns: Option<Edns>,
    /// The last additional record is a TSIG.
    pub signed: bool,
}

/// A question: its name lower-cased in wire form, pointers followed.
pub struct Question<'a> {
    name: &'a [u8],
    /// Where the question ends in the packet.
    pub end: usize,
    /// The name stands in the packet without compression pointers, so the question's bytes
    /// can be copied into a reply as they are (case included).
    pub plain: bool,
    pub qtype: u16,
    pub qclass: u16,
}

impl<'a> Question<'a> {
    /// The name, lower-cased wire form.
    pub fn name(&self) -> &'a [u8] {
        self.name
    }
}

/// The query's OPT record.
#[derive(Debug, Clone, Copy)]
pub struct Edns {
    /// The UDP payload size the client advertises.
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    /// CO: the client takes NXDOMAIN with compact denial (RFC 9824).
    pub compact_ok: bool,
    pub ecs: ecs::Found,
    pub cookie: Cookie,
    /// The client asks for the server's identity (NSID, RFC 5001).
    pub nsid: bool,
}

/// The query's COOKIE option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cookie {
    None,
    /// The option's data, as a range of the packet (checked by [`cookie::well_formed`]).
    At(u16, u16),
    /// Badly sized, or present twice: FORMERR.
    Malformed,
}

/// The client as one answer sees it: the network a decision is made for, and where it came
/// from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub network: IpNet,
    /// The network is the query's ECS prefix (else the source address).
    pub used_ecs: bool,
}

impl<'a> Query<'a> {
    /// Reads `packet`, writing the question's name into `name`.
    pub fn read(packet: &'a [u8], name: &'a mut NameBuf) -> Read<'a> {
        if packet.len() < 12 || packet[2] & 0x80 != 0 {
            return Read::Ignore;
        }
        match walk(packet, name) {
            Some(q) => Read::Query(q),
            None => Read::Malformed,
        }
    }

    pub fn opcode(&self) -> u8 {
        (self.flags >> 3) & 0x0F
    }

    pub fn recursion_desired(&self) -> bool {
        self.flags & 0x01 != 0
    }

    /// A plain query as the fast path takes it: opcode QUERY, no TC, one question, nothing in
    /// the answer and authority sections, at most the OPT in the additional one.
    pub fn is_plain(&self) -> bool {
        self.flags & 0x7A == 0
            && self.counts[..3] == [1, 0, 0]
            && usize::from(self.counts[3]) == usize::from(self.edns.is_some())
    }

    /// The ECS option, when the query carries a well-formed one.
    pub fn ecs(&self) -> Option<Ecs> {
        match self.edns.as_ref()?.ecs {
            ecs::Found::Subnet(e) => Some(e),
            _ => None,
        }
    }

    /// The COOKIE option's data, when well formed.
    pub fn cookie(&self) -> Option<&[u8]> {
        match self.edns.as_ref()?.cookie {
            Cookie::At(from, to) => self.packet.get(from as usize..to as usize),
            _ => None,
        }
    }

    /// A malformed ECS or COOKIE option (answered FORMERR, with the question and an OPT).
    pub fn bad_option(&self) -> bool {
        self.edns
            .as_ref()
            .is_some_and(|e| e.ecs == ecs::Found::Malformed || e.cookie == Cookie::Malformed)
    }

    /// The client for an answer from a zone that honours ECS (`zone_ecs`) or not: the ECS
    /// prefix when the zone honours it and it is not empty, else the source address.
    pub fn client(&self, zone_ecs: bool, src: SocketAddr) -> Client {
        match self.ecs() {
            Some(e) if zone_ecs && e.source > 0 => Client {
                network: e.network(),
                used_ecs: true,
            },
            _ => Client {
                network: IpNet::from(src.ip()),
                used_ecs: false,
            },
        }
    }

    /// The question's bytes as they stand in the packet (name, type, class).
    pub fn question_bytes(&self) -> Option<&[u8]> {
        let q = self.question.as_ref()?;
        self.packet.get(12..q.end)
    }

    /// Whether the source address proved itself with a valid server cookie.
    pub fn proves(&self, secrets: Option<&cookie::Secrets>, client: IpAddr, now: u32) -> bool {
        match (self.cookie(), secrets) {
            (Some(data), Some(secrets)) => secrets.validates(data, client, now),
            _ => false,
        }
    }
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

fn walk<'a>(p: &'a [u8], buf: &'a mut NameBuf) -> Option<Query<'a>> {
    let counts = [u16_at(p, 4)?, u16_at(p, 6)?, u16_at(p, 8)?, u16_at(p, 10)?];
    let flags = p[2];
    let update = (flags >> 3) & 0x0F == OPCODE_UPDATE;
    let mut q = Query {
        packet: p,
        id: [p[0], p[1]],
        flags,
        counts,
        question: None,
        edns: None,
        signed: false,
    };
    let mut pos = 12;
    let mut buf = Some(buf);
    for _ in 0..counts[0] {
        if let Some(buf) = buf.take() {
            let (end, len, plain) = read_name(p, pos, &mut buf.0)?;
            pos = end + 4;
            q.question = Some(Question {
                name: &buf.0[..len],
                end: pos,
                plain,
                qtype: u16_at(p, end)?,
                qclass: u16_at(p, end + 2)?,
            });
        } else {
            pos = skip_name(p, pos)? + 4;
            if pos > p.len() {
                return None;
            }
        }
    }
    let records = counts[1] as usize + counts[2] as usize + counts[3] as usize;
    let additional_from = counts[1] as usize + counts[2] as usize;
    for i in 0..records {
        let owner = pos;
        pos = skip_name(p, pos)?;
        let rtype = u16_at(p, pos)?;
        let class = u16_at(p, pos + 2)?;
        let rdlen = u16_at(p, pos + 8)? as usize;
        let rdata = p.get(pos + 10..pos + 10 + rdlen)?;
        let ttl_at = pos + 4;
        pos += 10 + rdlen;
        if q.signed {
            return None; // a record after the TSIG
        }
        let additional = i >= additional_from;
        if matches!(rtype, OPT | TSIG | SIG) && !additional {
            return None;
        }
        if rdlen == 0 && rtype != OPT && !update {
            return None;
        }
        match rtype {
            OPT => {
                if q.edns.is_some() || p[owner] != 0 {
                    return None;
                }
                q.edns = Some(read_opt(p, class, ttl_at, rdata, pos - rdlen)?);
            }
            TSIG => q.signed = true,
            _ => {}
        }
    }
    Some(q)
}

/// Reads the name at `pos` into `name` (lower-cased): where it ends in place, its length,
/// and whether it was written without pointers.
fn read_name(p: &[u8], mut pos: usize, name: &mut [u8; 255]) -> Option<(usize, usize, bool)> {
    let mut end = None;
    let mut len = 0usize;
    loop {
        let label = *p.get(pos)? as usize;
        match label {
            0 => {
                name[len] = 0;
                return Some((end.unwrap_or(pos + 1), len + 1, end.is_none()));
            }
            l if l & 0xC0 == 0xC0 => {
                let target = ((l & 0x3F) << 8) | *p.get(pos + 1)? as usize;
                if target >= pos {
                    return None; // only backwards, so the walk ends
                }
                end.get_or_insert(pos + 2);
                pos = target;
            }
            l if l > 63 => return None,
            l => {
                if len + 1 + l + 1 > 255 {
                    return None;
                }
                let bytes = p.get(pos + 1..pos + 1 + l)?;
                name[len] = l as u8;
                for (to, b) in name[len + 1..len + 1 + l].iter_mut().zip(bytes) {
                    *to = b.to_ascii_lowercase();
                }
                len += 1 + l;
                pos += 1 + l;
            }
        }
    }
}

/// The position after the name at `pos`, checking labels and pointers as [`read_name`] does.
fn skip_name(p: &[u8], mut pos: usize) -> Option<usize> {
    let mut end = None;
    let mut len = 0usize;
    loop {
        let label = *p.get(pos)? as usize;
        match label {
            0 => return Some(end.unwrap_or(pos + 1)),
            l if l & 0xC0 == 0xC0 => {
                let target = ((l & 0x3F) << 8) | *p.get(pos + 1)? as usize;
                if target >= pos {
                    return None;
                }
                end.get_or_insert(pos + 2);
                pos = target;
            }
            l if l > 63 => return None,
            l => {
                len += 1 + l;
                if len + 1 > 255 || pos + 1 + l > p.len() {
                    return None;
                }
                pos += 1 + l;
            }
        }
    }
}

/// Reads an OPT record: payload size from its class, version and DO from its TTL, and its
/// options (`rdata`, starting at `rdata_at` in the packet).
fn read_opt(p: &[u8], class: u16, ttl_at: usize, rdata: &[u8], rdata_at: usize) -> Option<Edns> {
    let mut edns = Edns {
        payload: class,
        version: p[ttl_at + 1],
        dnssec_ok: p[ttl_at + 2] & 0x80 != 0,
        compact_ok: p[ttl_at + 2] & 0x40 != 0,
        ecs: ecs::Found::None,
        cookie: Cookie::None,
        nsid: false,
    };
    let mut o = 0;
    while o < rdata.len() {
        let code = u16_at(rdata, o)?;
        let len = u16_at(rdata, o + 2)? as usize;
        let data = rdata.get(o + 4..o + 4 + len)?;
        let at = rdata_at + o + 4;
        o += 4 + len;
        match code {
            ECS => {
                edns.ecs = match edns.ecs {
                    ecs::Found::None => ecs::parse(data),
                    _ => ecs::Found::Malformed,
                }
            }
            cookie::CODE => {
                edns.cookie = match edns.cookie {
                    Cookie::None if cookie::well_formed(data) => {
                        Cookie::At(at as u16, (at + len) as u16)
                    }
                    _ => Cookie::Malformed,
                }
            }
            NSID => edns.nsid = true,
            _ => {}
        }
    }
    Some(edns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], extra: &[u8], arcount: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0];
        q.extend(arcount.to_be_bytes());
        q.extend(name);
        q.extend([0, 1, 0, 1]);
        q.extend(extra);
        q
    }

    fn read<'a>(packet: &'a [u8], name: &'a mut NameBuf) -> Option<Query<'a>> {
        match Query::read(packet, name) {
            Read::Query(q) => Some(q),
            _ => None,
        }
    }

    #[test]
    fn a_plain_query_with_options_is_read_in_one_walk() {
        // OPT: payload 1232, DO, ECS 192.0.2.0/24, a client cookie, NSID.
        let mut opt = vec![0, 0, 41, 4, 0xD0, 0, 0, 0x80, 0];
        let mut options = vec![0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2];
        options.extend([0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        options.extend([0, 3, 0, 0]);
        opt.extend((options.len() as u16).to_be_bytes());
        opt.extend(&options);
        let packet = query(b"\x03WwW\x07example\x00", &opt, 1);
        let mut name = NameBuf::default();
        let q = read(&packet, &mut name).expect("a query");
        assert!(q.is_plain() && !q.signed && q.recursion_desired());
        let question = q.question.as_ref().unwrap();
        assert_eq!(question.name(), b"\x03www\x07example\x00");
        assert!(question.plain);
        assert_eq!((question.qtype, question.qclass), (1, 1));
        assert_eq!(
            q.question_bytes().unwrap()[1..4],
            *b"WwW",
            "case kept in place"
        );
        let edns = q.edns.unwrap();
        assert_eq!(
            (edns.payload, edns.version, edns.dnssec_ok),
            (1232, 0, true)
        );
        assert!(edns.nsid);
        assert_eq!(q.cookie(), Some(&[1, 2, 3, 4, 5, 6, 7, 8][..]));
        let src: SocketAddr = "198.51.100.1:53".parse().unwrap();
        assert_eq!(
            q.client(true, src),
            Client {
                network: "192.0.2.0/24".parse().unwrap(),
                used_ecs: true
            }
        );
        assert!(!q.client(false, src).used_ecs);
    }

    #[test]
    fn broken_framing_is_malformed_and_responses_are_ignored() {
        let ok = query(b"\x01a\x00", &[], 0);
        assert!(read(&ok, &mut NameBuf::default()).is_some());
        let mut response = ok.clone();
        response[2] |= 0x80;
        assert!(matches!(
            Query::read(&response, &mut NameBuf::default()),
            Read::Ignore
        ));
        assert!(matches!(
            Query::read(&ok[..11], &mut NameBuf::default()),
            Read::Ignore
        ));
        for (what, packet) in [
            ("cut question", ok[..ok.len() - 1].to_vec()),
            ("forward pointer", query(b"\xC0\x0C", &[], 0)),
            ("label over 63", query(b"\x40a\x00", &[], 0)),
            ("missing additional", query(b"\x01a\x00", &[], 1)),
            (
                "two OPT records",
                query(
                    b"\x01a\x00",
                    &[
                        0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 0,
                    ],
                    2,
                ),
            ),
            (
                "OPT not at the root",
                query(
                    b"\x01a\x00",
                    &[1, b'x', 0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 0],
                    1,
                ),
            ),
            (
                "option past its record",
                query(
                    b"\x01a\x00",
                    &[0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 4, 0, 8, 0, 9],
                    1,
                ),
            ),
        ] {
            assert!(
                matches!(
                    Query::read(&packet, &mut NameBuf::default()),
                    Read::Malformed
                ),
                "{what} read as a query"
            );
        }
        // A pointer back to the first name is fine, and marks the question as not plain.
        let mut two = vec![0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0];
        two.extend(b"\x01a\x00\x00\x01\x00\x01\xC0\x0C\x00\x01\x00\x01");
        let mut name = NameBuf::default();
        let q = read(&two, &mut name).expect("two questions");
        assert!(q.question.as_ref().unwrap().plain && !q.is_plain());
    }

    #[test]
    fn bad_options_are_noted_not_fatal() {
        let twice = [
            0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        let short = [0, 10, 0, 3, 1, 2, 3];
        let bad_ecs = [0, 8, 0, 4, 0, 3, 0, 0];
        for options in [&twice[..], &short[..], &bad_ecs[..]] {
            let mut opt = vec![0, 0, 41, 2, 0, 0, 0, 0, 0];
            opt.extend((options.len() as u16).to_be_bytes());
            opt.extend(options);
            let packet = query(b"\x01a\x00", &opt, 1);
            let mut name = NameBuf::default();
            let q = read(&packet, &mut name).expect("a query");
            assert!(q.bad_option(), "{options:?}");
        }
    }
}
