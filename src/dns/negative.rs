//! A zone's negative answer (NXDOMAIN and NODATA: its SOA in the authority section) as the
//! general path encoded it once, moved behind any other question of the zone.
//!
//! The encoder compresses the SOA's names against the question: the owner (the apex) points
//! at the apex inside the question, and the server and mailbox names at the apex or at names
//! earlier in the record. Another question of the zone ends in the same apex but may be
//! longer or shorter, so each pointer is kept with what it points at (a place in the apex or
//! in the record itself) and written again per query. An answer whose pointers reach into the
//! question's labels above the apex holds for that question only and teaches nothing.

/// What a compression pointer in the template points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// This many bytes into the apex's wire form, inside the question.
    Apex(usize),
    /// This many bytes into the template.
    Template(usize),
}

/// A zone's SOA record as the authority section of its negative answers.
#[derive(Debug, Clone)]
pub(crate) struct Negative {
    record: Box<[u8]>,
    /// Where each pointer sits in `record`, and what it points at.
    pointers: Box<[(usize, Target)]>,
    /// Where the TTL sits in `record`, and the TTL itself.
    ttl_at: usize,
    pub(crate) ttl: u32,
}

/// The SOA record type.
const SOA: u16 = 6;

impl Negative {
    /// The template from `reply`, a whole encoded reply without OPT whose question name is
    /// `name_len` bytes, in a zone whose apex is `apex_len` bytes: `None` unless it is a
    /// negative answer (no answers, the SOA alone in authority, no additional records) whose
    /// pointers hold for every question of the zone.
    pub(crate) fn learn(reply: &[u8], name_len: usize, apex_len: usize) -> Option<Negative> {
        let counts = reply.get(6..12)?;
        if counts != [0, 0, 0, 1, 0, 0] || apex_len > name_len {
            return None;
        }
        let start = 12 + name_len + 4;
        let record = reply.get(start..)?;
        let apex_at = 12 + name_len - apex_len;
        let mut pointers = Vec::new();
        let mut at = 0;
        let name = |at: &mut usize, pointers: &mut Vec<(usize, Target)>| -> Option<()> {
            loop {
                let len = *record.get(*at)? as usize;
                match len {
                    0 => {
                        *at += 1;
                        return Some(());
                    }
                    1..=63 => *at += 1 + len,
                    0xC0..=0xFF => {
                        let to = u16::from_be_bytes([record[*at], *record.get(*at + 1)?]);
                        let to = (to & 0x3FFF) as usize;
                        let target = match to {
                            _ if to >= start && to - start < *at => Target::Template(to - start),
                            _ if (apex_at..12 + name_len).contains(&to) => {
                                Target::Apex(to - apex_at)
                            }
                            _ => return None,
                        };
                        pointers.push((*at, target));
                        *at += 2;
                        return Some(());
                    }
                    _ => return None,
                }
            }
        };
        name(&mut at, &mut pointers)?;
        // The owner must be the apex inside the question: an encoder that wrote it out (the
        // question's case differed) makes every later answer longer than it need be.
        if pointers.first() != Some(&(0, Target::Apex(0))) {
            return None;
        }
        let fixed = record.get(at..at + 10)?;
        if u16::from_be_bytes([fixed[0], fixed[1]]) != SOA {
            return None;
        }
        let ttl_at = at + 4;
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        at += 10;
        let rdata_end = at + rdlen;
        name(&mut at, &mut pointers)?;
        name(&mut at, &mut pointers)?;
        if at + 20 != rdata_end || rdata_end != record.len() {
            return None;
        }
        Some(Negative {
            record: record.into(),
            pointers: pointers.into(),
            ttl_at,
            ttl,
        })
    }

    /// Appends the record after a question whose name is `name_len` bytes (its apex the last
    /// `apex_len`), with its TTL lowered to `ttl` when that is lower.
    pub(crate) fn write(&self, out: &mut Vec<u8>, name_len: usize, apex_len: usize, ttl: u32) {
        let at = out.len();
        out.extend_from_slice(&self.record);
        for &(p, target) in self.pointers.iter() {
            let to = match target {
                Target::Apex(k) => 12 + name_len - apex_len + k,
                Target::Template(k) => at + k,
            };
            let pointer = (0xC000 | (to & 0x3FFF) as u16).to_be_bytes();
            out[at + p..at + p + 2].copy_from_slice(&pointer);
        }
        if ttl < self.ttl {
            out[at + self.ttl_at..at + self.ttl_at + 4].copy_from_slice(&ttl.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
    use hickory_proto::rr::rdata::SOA as SoaData;
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    /// The reply an encoder gives to `qname` in zone `apex`, with the SOA's names.
    fn negative(qname: &str, apex: &str, mname: &str, rname: &str) -> Vec<u8> {
        let mut m = Message::response(7, hickory_proto::op::OpCode::Query);
        m.metadata.message_type = MessageType::Response;
        m.metadata.response_code = ResponseCode::NXDomain;
        m.add_query(Query::query(
            Name::from_ascii(qname).unwrap(),
            RecordType::A,
        ));
        let soa = SoaData::new(
            Name::from_ascii(mname).unwrap(),
            Name::from_ascii(rname).unwrap(),
            2026,
            3600,
            600,
            86400,
            30,
        );
        m.add_authority(Record::from_rdata(
            Name::from_ascii(apex).unwrap(),
            300,
            RData::SOA(soa),
        ));
        m.to_vec().unwrap()
    }

    /// The name's length in wire form.
    fn name_len(name: &str) -> usize {
        use hickory_proto::serialize::binary::BinEncodable;
        Name::from_ascii(name).unwrap().to_bytes().unwrap().len()
    }

    #[test]
    fn a_template_moves_behind_longer_and_shorter_questions() {
        let apex = "example.test.";
        let learned_from = "a.example.test.";
        let reply = negative(
            learned_from,
            apex,
            "ns1.example.test.",
            "h.ns1.example.test.",
        );
        let t = Negative::learn(&reply, name_len(learned_from), name_len(apex)).unwrap();
        assert!(t
            .pointers
            .iter()
            .any(|p| matches!(p.1, Target::Template(_))));
        for qname in [
            "example.test.",
            "a.example.test.",
            "deep.er.x.example.test.",
        ] {
            let expected = negative(qname, apex, "ns1.example.test.", "h.ns1.example.test.");
            let mut out = expected[..12 + name_len(qname) + 4].to_vec();
            t.write(&mut out, name_len(qname), name_len(apex), u32::MAX);
            assert_eq!(
                Message::from_vec(&out).unwrap(),
                Message::from_vec(&expected).unwrap(),
                "{qname}"
            );
        }
        // The TTL lowered for a load-balanced name's NODATA, never raised.
        let mut out = reply[..12 + name_len(learned_from) + 4].to_vec();
        t.write(&mut out, name_len(learned_from), name_len(apex), 20);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.authorities[0].ttl, 20);
    }

    #[test]
    fn an_answer_that_points_above_the_apex_or_is_not_negative_teaches_nothing() {
        let apex = "example.test.";
        // Asked in another case: the owner could not point at the question.
        let q = "A.EXAMPLE.TEST.";
        let reply = negative(q, apex, "ns1.example.test.", "h.example.test.");
        assert!(Negative::learn(&reply, name_len(q), name_len(apex)).is_none());
        // The mailbox compressed against the question's own labels above the apex.
        let q = "hostmaster.example.test.";
        let reply = negative(q, apex, "ns1.example.test.", "x.hostmaster.example.test.");
        assert!(Negative::learn(&reply, name_len(q), name_len(apex)).is_none());
        let mut with_answer = negative("a.example.test.", apex, "ns.other.", "h.other.");
        with_answer[7] = 1;
        assert!(
            Negative::learn(&with_answer, name_len("a.example.test."), name_len(apex)).is_none()
        );
        assert!(Negative::learn(&[0; 11], 1, 1).is_none());
    }
}
