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
//!
//! An answer is stored the second time it is built, not the first: a doorkeeper (two bits per
//! hashed question, cleared now and then) remembers what was asked once. So a flood of names
//! asked once each (random subdomains of a wildcard, denials of names that do not exist)
//! costs one bit apiece instead of churning the store, and a signed answer is stored once
//! its signatures are cached.

use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Two bits per hashed question asked once ([`DOORKEEPER_BITS`], 128 KiB).
    doorkeeper: Box<[AtomicU64]>,
    /// Bits set since the doorkeeper was last cleared.
    marked: AtomicU64,
}

/// The doorkeeper's size; it is cleared after marking this many questions, so a bit set long
/// ago does not admit a question forever.
const DOORKEEPER_BITS: usize = 1 << 20;

impl Default for AnswerCache {
    fn default() -> Self {
        AnswerCache {
            map: BoundedMap::new(ENTRIES, BYTES),
            doorkeeper: (0..DOORKEEPER_BITS / 64)
                .map(|_| AtomicU64::new(0))
                .collect(),
            marked: AtomicU64::new(0),
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
    /// Whether `key` was marked before (both of its bits set); marks it.
    fn seen_before(&self, key: &[u8]) -> bool {
        let hash = self.map.hash(key);
        let mut seen = true;
        for bit in [hash as u32, (hash >> 32) as u32].map(|h| h as usize % DOORKEEPER_BITS) {
            let mask = 1u64 << (bit % 64);
            seen &= self.doorkeeper[bit / 64].fetch_or(mask, Ordering::Relaxed) & mask != 0;
        }
        // Cleared at an eighth full: a question asked once is then taken for one asked
        // before about once in sixty.
        if !seen && self.marked.fetch_add(1, Ordering::Relaxed) + 1 >= DOORKEEPER_BITS as u64 / 16 {
            self.marked.store(0, Ordering::Relaxed);
            for word in self.doorkeeper.iter() {
                word.store(0, Ordering::Relaxed);
            }
        }
        seen
    }

    /// The answer stored for (`name`, `qtype`, `flags`) and still served at `now`.
    pub(crate) fn get(&self, name: &[u8], qtype: u16, flags: u8, now: u64) -> Option<Arc<Stored>> {
        let mut buf = [0; 259];
        let key = key(name, qtype, flags, &mut buf)?;
        self.map.get(key, |s| s.until > now)
    }

    /// Stores the reply `encode` makes (a whole message without OPT whose question is
    /// `question_len` bytes; `None` when it cannot) as the answer of zone `zone` to (`name`,
    /// `qtype`, `flags`), if the question was asked before: `encode` runs only then. Only
    /// NOERROR and NXDOMAIN replies are stored.
    pub(crate) fn store(
        &self,
        question: (&[u8], u16, u8),
        zone: usize,
        question_len: usize,
        now: u64,
        encode: impl FnOnce() -> Option<Vec<u8>>,
    ) {
        let (name, qtype, flags) = question;
        let mut buf = [0; 259];
        let Some(key) = key(name, qtype, flags, &mut buf) else {
            return;
        };
        // A question asked once costs a bit, not an encoding.
        if !self.seen_before(key) {
            return;
        }
        let Some(stored) = encode().and_then(|e| Stored::from_reply(zone, &e, question_len)) else {
            return;
        };
        let stored = Stored {
            until: now + LIFETIME,
            ..stored
        };
        let size = stored.sections.len() + 64;
        self.map.insert(key.into(), Arc::new(stored), size);
    }
}

impl Stored {
    /// The part of `encoded` (a whole reply without OPT, from zone `zone`, whose question is
    /// `question_len` bytes) that holds for every query of its question, with no expiry (the
    /// store sets one); `None` for replies other than NOERROR and NXDOMAIN.
    pub(crate) fn from_reply(zone: usize, encoded: &[u8], question_len: usize) -> Option<Stored> {
        let sections = encoded.get(12 + question_len..)?;
        if !matches!(encoded[3] & 0x0f, 0 | 3) {
            return None;
        }
        Some(Stored {
            zone,
            flags: encoded[2] & !0x01,
            rcode: encoded[3],
            counts: encoded[6..12].try_into().unwrap_or_default(),
            sections: sections.into(),
            until: u64::MAX,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> Vec<u8> {
        // A header (NOERROR, AA, one answer), the question www.example A, one A record.
        let mut m = vec![0, 0, 0x84, 0, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03www\x07example\x00\x00\x01\x00\x01");
        m.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        m
    }

    #[test]
    fn an_answer_is_stored_the_second_time_it_is_built() {
        let cache = AnswerCache::default();
        let name = b"\x03www\x07example\x00";
        let question = (&name[..], 1, 0);
        cache.store(question, 0, name.len() + 4, 100, || {
            panic!("encoded when asked once")
        });
        assert!(
            cache.get(name, 1, 0, 100).is_none(),
            "asked once: only marked"
        );
        cache.store(question, 0, name.len() + 4, 100, || Some(reply()));
        let stored = cache.get(name, 1, 0, 100).expect("stored");
        assert_eq!(stored.counts, [0, 1, 0, 0, 0, 0]);
        assert_eq!(stored.sections.len(), 16);
        assert!(
            cache.get(name, 1, 1, 100).is_none(),
            "DO is part of the key"
        );
        assert!(cache.get(name, 1, 0, 100 + LIFETIME).is_none(), "expired");
    }

    #[test]
    fn names_asked_once_do_not_fill_the_store() {
        let cache = AnswerCache::default();
        for i in 0..20_000u32 {
            let name = format!("\x08{i:08}\x07example\x00");
            let mut m = reply();
            m.splice(12..25, name.bytes());
            cache.store((name.as_bytes(), 1, 0), 0, name.len() + 4, 100, || Some(m));
        }
        // Hash collisions in the doorkeeper admit a few.
        assert!(cache.map.size().0 < 20_000 / 50, "{:?}", cache.map.size());
    }
}
