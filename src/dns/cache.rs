//! Encoded answers the general path built, kept for the fast path. An answer that depends on
//! neither the client nor health (static data, wildcards, referrals, NXDOMAIN and NODATA,
//! signed or not) is the same bytes after the header and question for every query of its
//! name, type and DO and CO flags; the general path stores those bytes when it builds one
//! ([`AnswerCache::store`]), and the fast path answers the next such query by copying them
//! behind the query's own header and question, with the OPT from the one writer. So the
//! general path stays the one answer builder, and what it built once is served at the fast
//! path's cost: signed answers above all, whose signatures it would otherwise look up and
//! encode per query.
//!
//! Names inside the stored sections may point into the question: the same name (in any
//! case) has the same length, so the pointers hold for every query that finds the entry. An
//! entry lives [`LIFETIME`] seconds, well inside the shortest signature refresh, and a config
//! (with its cache) is replaced whole on reload.

use std::sync::Arc;

use crate::bounded::BoundedMap;

/// How long a stored answer is served, in seconds.
const LIFETIME: u64 = 300;

/// Stored answers at most, and their bytes.
const ENTRIES: usize = 100_000;
const BYTES: usize = 32 << 20;

/// The DO and CO flags of a query, as a key byte.
pub(crate) fn flags(dnssec_ok: bool, compact_ok: bool) -> u8 {
    u8::from(dnssec_ok) | u8::from(dnssec_ok && compact_ok) << 1
}

/// One stored answer.
pub(crate) struct Stored {
    /// The zone that answered (its ECS setting decides the OPT).
    pub zone: usize,
    /// Header byte 2 without RD (QR, opcode, AA), and byte 3 (the rcode).
    pub flags: u8,
    pub rcode: u8,
    /// ANCOUNT, NSCOUNT and ARCOUNT as on the wire.
    pub counts: [u8; 6],
    /// The sections after the question.
    pub sections: Box<[u8]>,
    until: u64,
}

pub(crate) struct AnswerCache {
    map: BoundedMap<Arc<Stored>>,
}

impl Default for AnswerCache {
    fn default() -> Self {
        AnswerCache {
            map: BoundedMap::new(ENTRIES, BYTES),
        }
    }
}

/// The key: the lower-case wire name, the type and the flags.
fn key<'b>(name: &[u8], qtype: u16, flags: u8, buf: &'b mut [u8; 259]) -> Option<&'b [u8]> {
    let len = name.len();
    if len > 255 {
        return None;
    }
    buf[..len].copy_from_slice(name);
    buf[len..len + 2].copy_from_slice(&qtype.to_be_bytes());
    buf[len + 2] = flags;
    Some(&buf[..len + 3])
}

impl AnswerCache {
    /// The answer stored for (`name`, `qtype`, `flags`) and still served at `now`.
    pub(crate) fn get(&self, name: &[u8], qtype: u16, flags: u8, now: u64) -> Option<Arc<Stored>> {
        let mut buf = [0; 259];
        let key = key(name, qtype, flags, &mut buf)?;
        self.map.get(key, |s| s.until > now)
    }

    /// Stores `encoded`, a whole reply without OPT whose question is `question_len` bytes,
    /// as the answer of zone `zone` to (`name`, `qtype`, `flags`). Only NOERROR and NXDOMAIN
    /// replies are stored.
    pub(crate) fn store(
        &self,
        question: (&[u8], u16, u8),
        zone: usize,
        question_len: usize,
        encoded: &[u8],
        now: u64,
    ) {
        let (name, qtype, flags) = question;
        let Some(sections) = encoded.get(12 + question_len..) else {
            return;
        };
        if !matches!(encoded[3] & 0x0f, 0 | 3) {
            return;
        }
        let mut buf = [0; 259];
        let Some(key) = key(name, qtype, flags, &mut buf) else {
            return;
        };
        let stored = Stored {
            zone,
            flags: encoded[2] & !0x01,
            rcode: encoded[3],
            counts: encoded[6..12].try_into().unwrap_or_default(),
            sections: sections.into(),
            until: now + LIFETIME,
        };
        self.map
            .insert(key.into(), Arc::new(stored), sections.len() + 64);
    }
}
