//! TSIG (RFC 8945): HMAC signatures on zone transfers and NOTIFY, worked on message bytes.
//!
//! A signed request is verified against the configured keys (BADKEY, BADSIG, BADTIME and
//! BADTRUNC as the RFC says); the reply to a valid one is signed, each message of a
//! multi-message transfer chained to the MAC before it. HMAC comes from aws-lc-rs, the
//! library rustls already uses here.

use aws_lc_rs::{constant_time, hmac};

use super::ecs::skip_name;
use crate::zone::text_to_wire as wire;

/// The TSIG record type and the class it travels in.
const TYPE_TSIG: u16 = 250;
const CLASS_ANY: u16 = 255;
/// The fudge this server signs with, in seconds (RFC 8945 recommends 300).
const FUDGE: u16 = 300;

/// A TSIG algorithm and key (config values); signing and verifying are here.
pub use crate::config::{TsigAlgorithm as Algorithm, TsigKey as Key};

impl Algorithm {
    fn hmac(self) -> hmac::Algorithm {
        match self {
            Algorithm::HmacSha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Algorithm::HmacSha256 => hmac::HMAC_SHA256,
            Algorithm::HmacSha384 => hmac::HMAC_SHA384,
            Algorithm::HmacSha512 => hmac::HMAC_SHA512,
        }
    }

    fn wire_name(self) -> Vec<u8> {
        wire(self.name())
    }
}

impl Key {
    fn wire_name(&self) -> Vec<u8> {
        wire(&self.name)
    }

    /// The HMAC key for signing and verifying with this key.
    fn hmac_key(&self) -> hmac::Key {
        hmac::Key::new(self.algorithm.hmac(), &self.secret)
    }
}

/// A TSIG error (RFC 8945 section 5.2); each makes the reply NOTAUTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigError {
    BadSig = 16,
    BadKey = 17,
    BadTime = 18,
    BadTrunc = 22,
}

/// The TSIG record found at the end of a message.
#[derive(Debug, Clone)]
pub struct Found {
    /// Offset of the record: the message without it ends here.
    start: usize,
    key_name: Vec<u8>,
    algorithm: Vec<u8>,
    time: u64,
    fudge: u16,
    mac: Vec<u8>,
    original_id: u16,
    other: Vec<u8>,
}

/// A TSIG record that is misplaced or malformed (the reply is FORMERR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Finds the TSIG record of `msg`: `Ok(None)` for an unsigned message, `Err(Malformed)` when a
/// TSIG is present but misplaced or malformed.
pub fn find(msg: &[u8]) -> Result<Option<Found>, Malformed> {
    let count = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]) as usize;
    if msg.len() < 12 {
        return Err(Malformed);
    }
    let (qd, rrs) = (count(4), count(6) + count(8) + count(10));
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(msg, pos).ok_or(Malformed)? + 4;
    }
    let mut last = None;
    for i in 0..rrs {
        let start = pos;
        let after_name = skip_name(msg, pos).ok_or(Malformed)?;
        let fixed = msg.get(after_name..after_name + 10).ok_or(Malformed)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        pos = after_name + 10 + rdlen;
        if pos > msg.len() {
            return Err(Malformed);
        }
        if rtype == TYPE_TSIG {
            // Only the very last record may be a TSIG.
            if i + 1 != rrs {
                return Err(Malformed);
            }
            last = Some((start, after_name));
        }
    }
    let Some((start, after_name)) = last else {
        return Ok(None);
    };
    let key_name = plain_name(msg, start).ok_or(Malformed)?;
    let class = u16::from_be_bytes([msg[after_name + 2], msg[after_name + 3]]);
    if class != CLASS_ANY {
        return Err(Malformed);
    }
    let rdata = &msg[after_name + 10..pos];
    let algorithm = plain_name(rdata, 0).ok_or(Malformed)?;
    let mut at = algorithm.len();
    let mut take = |n: usize| -> Result<&[u8], Malformed> {
        let s = rdata.get(at..at + n).ok_or(Malformed)?;
        at += n;
        Ok(s)
    };
    let time = take(6)?.iter().fold(0u64, |t, &b| t << 8 | b as u64);
    let fudge = u16::from_be_bytes(take(2)?.try_into().map_err(|_| Malformed)?);
    let mac_len = u16::from_be_bytes(take(2)?.try_into().map_err(|_| Malformed)?) as usize;
    let mac = take(mac_len)?.to_vec();
    let original_id = u16::from_be_bytes(take(2)?.try_into().map_err(|_| Malformed)?);
    let _error = take(2)?;
    let other_len = u16::from_be_bytes(take(2)?.try_into().map_err(|_| Malformed)?) as usize;
    let other = take(other_len)?.to_vec();
    Ok(Some(Found {
        start,
        key_name: lower(&key_name),
        algorithm: lower(&algorithm),
        time,
        fudge,
        mac,
        original_id,
        other,
    }))
}

/// Verifies a signed request against `keys` at time `now` (seconds since the epoch).
/// On success returns the key and a [`Signer`] for the reply.
pub fn verify<'k>(
    msg: &[u8],
    found: &Found,
    keys: &'k [Key],
    now: u64,
) -> Result<(&'k Key, Signer), (TsigError, Option<Signer>)> {
    let key = keys
        .iter()
        .find(|k| k.wire_name() == found.key_name && k.algorithm.wire_name() == found.algorithm)
        .ok_or((TsigError::BadKey, None))?;
    let full = key.algorithm.hmac().digest_algorithm().output_len;
    // Truncated MACs: at least 10 bytes and half the hash (RFC 8945 section 5.2.2.1).
    if found.mac.len() > full {
        return Err((TsigError::BadSig, None));
    }
    if found.mac.len() < 10.max(full / 2) {
        return Err((TsigError::BadTrunc, None));
    }
    let mut ctx = hmac::Context::with_key(&key.hmac_key());
    ctx.update(&stripped(msg, found));
    Variables {
        key_name: &found.key_name,
        algorithm: &found.algorithm,
        time: found.time,
        fudge: found.fudge,
        error: 0,
        other: &found.other,
    }
    .digest(&mut ctx);
    let tag = ctx.sign();
    if constant_time::verify_slices_are_equal(&tag.as_ref()[..found.mac.len()], &found.mac).is_err()
    {
        return Err((TsigError::BadSig, None));
    }
    let signer = Signer {
        key: key.clone(),
        prior: found.mac.clone(),
        first: true,
        time: now,
    };
    if now.abs_diff(found.time) > found.fudge as u64 {
        return Err((TsigError::BadTime, Some(signer)));
    }
    Ok((key, signer))
}

/// Signs the messages of one reply (or one request) in order.
#[derive(Debug)]
pub struct Signer {
    key: Key,
    /// The MAC the next signature chains to: the request's, then each message's own.
    prior: Vec<u8>,
    first: bool,
    time: u64,
}

impl Signer {
    /// A signer for a request this server sends (NOTIFY): nothing to chain to.
    pub fn request(key: &Key, now: u64) -> Signer {
        Signer {
            key: key.clone(),
            prior: Vec::new(),
            first: true,
            time: now,
        }
    }

    /// The size of the record [`Signer::sign`] appends when there is no error.
    pub fn record_len(&self) -> usize {
        let mac = self.key.algorithm.hmac().digest_algorithm().output_len;
        // Owner, type, class, TTL, RDLENGTH; algorithm, time, fudge, MAC size, MAC,
        // original ID, error, other length.
        self.key.wire_name().len() + 10 + self.key.algorithm.wire_name().len() + 16 + mac
    }

    /// Appends a TSIG record to `msg` (an encoded message), with `error` and, for BADTIME,
    /// this server's time as other data.
    pub fn sign(&mut self, msg: &mut Vec<u8>, error: Option<TsigError>) {
        let other = match error {
            Some(TsigError::BadTime) => time48(self.time).to_vec(),
            _ => Vec::new(),
        };
        let (key_name, algorithm) = (self.key.wire_name(), self.key.algorithm.wire_name());
        let fields = Variables {
            key_name: &key_name,
            algorithm: &algorithm,
            time: self.time,
            fudge: FUDGE,
            error: error.map_or(0, |e| e as u16),
            other: &other,
        };
        let mut ctx = hmac::Context::with_key(&self.key.hmac_key());
        if !self.prior.is_empty() {
            ctx.update(&(self.prior.len() as u16).to_be_bytes());
            ctx.update(&self.prior);
        }
        ctx.update(msg);
        if self.first {
            fields.digest(&mut ctx);
        } else {
            // Later messages of a transfer cover the timers only (RFC 8945 section 5.3.1).
            ctx.update(&time48(self.time));
            ctx.update(&FUDGE.to_be_bytes());
        }
        let mac = ctx.sign().as_ref().to_vec();
        let id = u16::from_be_bytes([msg[0], msg[1]]);
        fields.append(msg, &mac, id);
        self.prior = mac;
        self.first = false;
    }
}

/// Completes the reply to a request whose TSIG failed: signed when only the time was wrong
/// (BADTIME, `signer` given), else with an unsigned TSIG carrying the error (RFC 8945
/// section 5.3.2).
pub fn seal_error(
    msg: &mut Vec<u8>,
    found: &Found,
    error: TsigError,
    signer: Option<Signer>,
    now: u64,
) {
    match signer {
        Some(mut s) => s.sign(msg, Some(error)),
        None => Variables {
            key_name: &found.key_name,
            algorithm: &found.algorithm,
            time: now,
            fudge: FUDGE,
            error: error as u16,
            other: &[],
        }
        .append(msg, &[], found.original_id),
    }
}

/// The TSIG fields a MAC covers after the message (RFC 8945 section 4.3.3), and which the
/// record carries besides the MAC.
struct Variables<'a> {
    /// Wire form, lower case.
    key_name: &'a [u8],
    algorithm: &'a [u8],
    time: u64,
    fudge: u16,
    error: u16,
    other: &'a [u8],
}

impl Variables<'_> {
    fn digest(&self, ctx: &mut hmac::Context) {
        ctx.update(self.key_name);
        ctx.update(&CLASS_ANY.to_be_bytes());
        ctx.update(&0u32.to_be_bytes());
        ctx.update(self.algorithm);
        ctx.update(&time48(self.time));
        ctx.update(&self.fudge.to_be_bytes());
        ctx.update(&self.error.to_be_bytes());
        ctx.update(&(self.other.len() as u16).to_be_bytes());
        ctx.update(self.other);
    }

    /// Appends the TSIG record with `mac` to `msg`, counting it in ARCOUNT.
    fn append(&self, msg: &mut Vec<u8>, mac: &[u8], original_id: u16) {
        msg.extend(self.key_name);
        msg.extend(TYPE_TSIG.to_be_bytes());
        msg.extend(CLASS_ANY.to_be_bytes());
        msg.extend(0u32.to_be_bytes());
        let mut rdata = self.algorithm.to_vec();
        rdata.extend(time48(self.time));
        rdata.extend(self.fudge.to_be_bytes());
        rdata.extend((mac.len() as u16).to_be_bytes());
        rdata.extend(mac);
        rdata.extend(original_id.to_be_bytes());
        rdata.extend(self.error.to_be_bytes());
        rdata.extend((self.other.len() as u16).to_be_bytes());
        rdata.extend(self.other);
        msg.extend((rdata.len() as u16).to_be_bytes());
        msg.extend(rdata);
        let ar = u16::from_be_bytes([msg[10], msg[11]]).wrapping_add(1);
        msg[10..12].copy_from_slice(&ar.to_be_bytes());
    }
}

/// The request as it was signed: without its TSIG, ARCOUNT one less, the original ID.
fn stripped(msg: &[u8], found: &Found) -> Vec<u8> {
    let mut m = msg[..found.start].to_vec();
    m[0..2].copy_from_slice(&found.original_id.to_be_bytes());
    let ar = u16::from_be_bytes([m[10], m[11]]).wrapping_sub(1);
    m[10..12].copy_from_slice(&ar.to_be_bytes());
    m
}

fn time48(t: u64) -> [u8; 6] {
    let b = t.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// An uncompressed name at `at` (TSIG names are never compressed), as its wire bytes.
fn plain_name(buf: &[u8], mut at: usize) -> Option<Vec<u8>> {
    let start = at;
    loop {
        let len = *buf.get(at)? as usize;
        if len & 0xC0 != 0 {
            return None;
        }
        at += 1 + len;
        if len == 0 {
            return buf.get(start..at).map(<[u8]>::to_vec);
        }
        if at - start > 255 {
            return None;
        }
    }
}

fn lower(name: &[u8]) -> Vec<u8> {
    name.iter().map(u8::to_ascii_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(
            "xfr.example.",
            Algorithm::HmacSha256,
            "c2VjcmV0LXNlY3JldC1zZWNyZXQ=",
        )
        .unwrap()
    }

    fn query() -> Vec<u8> {
        // ID 0x1234, one question: example.test AXFR IN.
        let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend(wire("example.test"));
        q.extend([0, 252, 0, 1]);
        q
    }

    #[test]
    fn a_signed_request_verifies_and_a_changed_one_does_not() {
        let k = key();
        let mut q = query();
        Signer::request(&k, 1_000_000).sign(&mut q, None);
        let found = find(&q).unwrap().expect("TSIG present");
        assert!(verify(&q, &found, std::slice::from_ref(&k), 1_000_100).is_ok());
        // The reply's signer knows the size of what it appends.
        let (_, mut signer) = verify(&q, &found, std::slice::from_ref(&k), 1_000_100).unwrap();
        let mut reply = q[..found.start].to_vec();
        let before = reply.len();
        let expected = signer.record_len();
        signer.sign(&mut reply, None);
        assert_eq!(reply.len() - before, expected);
        // Outside the fudge: BADTIME, with a signer for the error reply.
        let e = verify(&q, &found, std::slice::from_ref(&k), 1_000_000 + 301).unwrap_err();
        assert_eq!(e.0, TsigError::BadTime);
        assert!(e.1.is_some());
        // Another secret: BADSIG; another name: BADKEY.
        let other = Key::new("xfr.example", Algorithm::HmacSha256, "b3RoZXI=").unwrap();
        let e = verify(&q, &found, &[other], 1_000_000).unwrap_err();
        assert_eq!(e.0, TsigError::BadSig);
        let stranger = Key::new("other.example", Algorithm::HmacSha256, "b3RoZXI=").unwrap();
        assert_eq!(
            verify(&q, &found, &[stranger], 1_000_000).unwrap_err().0,
            TsigError::BadKey
        );
        // One changed byte of the question: BADSIG.
        let mut changed = q.clone();
        changed[13] ^= 0x20;
        let found = find(&changed).unwrap().unwrap();
        let e = verify(&changed, &found, std::slice::from_ref(&k), 1_000_000).unwrap_err();
        assert_eq!(e.0, TsigError::BadSig);
    }

    #[test]
    fn misplaced_or_broken_records_are_errors() {
        assert!(find(&query()).unwrap().is_none());
        let mut q = query();
        Signer::request(&key(), 5).sign(&mut q, None);
        let n = q.len();
        assert!(find(&q[..n - 3]).is_err(), "cut short");
    }

    #[test]
    fn keys_need_a_base64_secret_and_a_name() {
        assert!(Key::new("k", Algorithm::HmacSha256, "not base64!").is_err());
        assert!(Key::new("", Algorithm::HmacSha256, "c2VjcmV0").is_err());
        assert_eq!(
            Algorithm::from_name("HMAC-SHA512."),
            Some(Algorithm::HmacSha512)
        );
        assert_eq!(Algorithm::from_name("hmac-md5"), None);
    }
}
