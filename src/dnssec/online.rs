//! Online signing: a zone's keys as they serve at load time (which sign, which are
//! published), and its signatures, made the first time an RRset is answered and kept in a
//! cache bounded by entries and bytes. The cache keys on the RRset in canonical form, so a
//! load-balanced answer is signed once per distinct address set, whatever order the
//! rotation gives it and whichever client asked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hickory_proto::rr::Name;

use crate::bounded::BoundedMap;

use super::keys::{KeyError, KeyState, ZoneKey};
use super::sign::{Rrset, Signer, Validity};

/// DNSKEY, CDS and CDNSKEY: the sets the key-signing keys sign.
const KEY_SETS: [u16; 3] = [48, 59, 60];

/// How long signatures hold, and when they are made again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigningPolicy {
    /// From inception to expiration, in seconds (jitter added).
    pub validity: u32,
    /// A cached signature with less than this left is made again.
    pub refresh: u32,
    /// Up to this much is added to each expiration, so signatures made together do not all
    /// expire together.
    pub jitter: u32,
    /// Publish CDS and CDNSKEY at the apex for the parent (RFC 7344).
    pub cds: bool,
    /// How a name that does not exist is denied.
    pub denial: DenialStyle,
}

/// How a signed zone proves that a name does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenialStyle {
    /// Compact denial (RFC 9824): NOERROR with one NSEC owned by the name, listing NXNAME
    /// (NXDOMAIN restored when the client sets CO). One signature per denial.
    #[default]
    Compact,
    /// Minimally covering NSEC records, "white lies" (RFC 4470): NXDOMAIN with one NSEC
    /// covering the name and one covering the wildcard at its closest encloser, each spanning
    /// no other name. Two signatures per denial, understood by every validator.
    WhiteLies,
}

impl Default for SigningPolicy {
    fn default() -> Self {
        SigningPolicy {
            validity: 14 * 86_400,
            refresh: 7 * 86_400,
            jitter: 12 * 3600,
            cds: true,
            denial: DenialStyle::Compact,
        }
    }
}

/// Inception is set this far in the past, for validators whose clocks run behind.
const INCEPTION_SKEW: u64 = 3600;

/// What the signature cache may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub entries: usize,
    pub bytes: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            entries: 200_000,
            bytes: 64 << 20,
        }
    }
}

/// A zone's signing keys as served.
pub struct ZoneSigning {
    /// Active keys that sign the zone's data: the ZSKs, or the key-signing keys when there is
    /// no active ZSK (they are then CSKs).
    zone_signers: Vec<Signer>,
    /// Active key-signing keys (SEP): they sign the DNSKEY, CDS and CDNSKEY sets.
    key_signers: Vec<Signer>,
    /// The DNSKEY data of every published key.
    published: Vec<Vec<u8>>,
    /// The key-signing keys the parent's DS set should point at (published or active, not
    /// retired), as CDS and CDNSKEY data (RFC 7344); empty when the zone withholds them.
    cds: Vec<Vec<u8>>,
    cdnskey: Vec<Vec<u8>>,
    /// Tags of key-signing keys held past their Inactive time for the parent's DS.
    held: Vec<u16>,
    policy: SigningPolicy,
    /// Which keys sign (tag and public key, zone signers then key signers): a reload that
    /// keeps them keeps the cache.
    identity: Vec<(u16, Vec<u8>)>,
    cache: Arc<SignatureCache>,
}

impl std::fmt::Debug for ZoneSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tags = |s: &[Signer]| s.iter().map(Signer::tag).collect::<Vec<_>>();
        f.debug_struct("ZoneSigning")
            .field("zone_signers", &tags(&self.zone_signers))
            .field("key_signers", &tags(&self.key_signers))
            .field("published", &self.published.len())
            .field("policy", &self.policy)
            .finish()
    }
}

impl ZoneSigning {
    /// Signing for a zone with `keys` (checked by [`super::zone_keys`]) as they stand at
    /// `now`. `parent_ds` is the DS data the parent zone holds for this zone, when this node
    /// knows it: a key-signing key past its Inactive time that the parent still points at
    /// is then held (it keeps signing the key set and stays published) until the parent
    /// points at another active key-signing key, the retire step of a Double-KSK rollover
    /// (RFC 7583 section 3.3.2) waiting for the new DS.
    pub fn new(
        keys: &[ZoneKey],
        policy: SigningPolicy,
        limits: CacheLimits,
        now: u64,
        parent_ds: Option<&[Vec<u8>]>,
    ) -> Result<ZoneSigning, KeyError> {
        let pointed_at = |k: &ZoneKey| {
            parent_ds.is_some_and(|ds| {
                ds.iter().any(|d| {
                    d.len() > 3
                        && d[..2] == k.key_tag().to_be_bytes()
                        && d[2] == k.algorithm.number()
                })
            })
        };
        let successor = keys
            .iter()
            .any(|k| k.is_sep() && k.times.state(now) == KeyState::Active && pointed_at(k));
        let held: Vec<u16> = keys
            .iter()
            .filter(|k| {
                k.is_sep()
                    && matches!(k.times.state(now), KeyState::Retired | KeyState::Removed)
                    && pointed_at(k)
                    && !successor
            })
            .map(ZoneKey::key_tag)
            .collect();
        let is_held = |k: &ZoneKey| k.is_sep() && held.contains(&k.key_tag());
        let active: Vec<&ZoneKey> = keys
            .iter()
            .filter(|k| k.times.is_active(now) || is_held(k))
            .collect();
        let seps: Vec<&ZoneKey> = active.iter().copied().filter(|k| k.is_sep()).collect();
        let zsks: Vec<&ZoneKey> = active.iter().copied().filter(|k| !k.is_sep()).collect();
        let zone_keys = if zsks.is_empty() { &seps } else { &zsks };
        // What the parent should point at: key-signing keys in the zone and not retiring.
        let parent_keys = || {
            keys.iter().filter(move |k| {
                k.is_sep()
                    && policy.cds
                    && matches!(k.times.state(now), KeyState::Published | KeyState::Active)
            })
        };
        let identity = zone_keys
            .iter()
            .chain(&seps)
            .map(|k| (k.key_tag(), k.public.clone()))
            .collect();
        Ok(ZoneSigning {
            zone_signers: zone_keys
                .iter()
                .map(|k| k.signer())
                .collect::<Result<_, _>>()?,
            key_signers: seps.iter().map(|k| k.signer()).collect::<Result<_, _>>()?,
            published: keys
                .iter()
                .filter(|k| k.times.is_published(now) || is_held(k))
                .map(ZoneKey::dnskey_rdata)
                .collect(),
            held,
            cds: parent_keys().map(ZoneKey::ds_rdata).collect(),
            cdnskey: parent_keys().map(ZoneKey::dnskey_rdata).collect(),
            policy,
            identity,
            cache: Arc::new(SignatureCache::new(limits)),
        })
    }

    /// How the zone proves a name absent.
    pub fn denial(&self) -> DenialStyle {
        self.policy.denial
    }

    /// The DNSKEY data of the published keys, for the apex DNSKEY set.
    pub fn published(&self) -> &[Vec<u8>] {
        &self.published
    }

    /// Whether a key is held for the parent's DS: the node then reads the parent again
    /// every few minutes.
    pub fn holds_any(&self) -> bool {
        !self.held.is_empty()
    }

    /// Whether the key with this tag is held past its Inactive time (see [`ZoneSigning::new`]).
    pub fn is_held(&self, tag: u16) -> bool {
        self.held.contains(&tag)
    }

    /// The CDS and CDNSKEY data for the apex (empty when withheld).
    pub fn parent_signals(&self) -> (&[Vec<u8>], &[Vec<u8>]) {
        (&self.cds, &self.cdnskey)
    }

    /// Keeps `previous`'s signatures when the same keys sign with the same policy (a reload
    /// that changed no key). Signatures over data the reload changed are simply not asked
    /// for again and age out.
    pub fn adopt_cache(&mut self, previous: &ZoneSigning) {
        if previous.identity == self.identity && previous.policy == self.policy {
            self.cache = previous.cache.clone();
        }
    }

    /// The RRSIG data for `set`, one per signing key, made now or taken from the cache.
    pub fn signatures(&self, set: &Rrset<'_>, now: u64) -> Arc<[Vec<u8>]> {
        let labels = super::sign::labels(set.owner);
        self.signatures_canonical(labels, set.rtype, set.ttl, set.canonical(), now)
    }

    /// [`ZoneSigning::signatures`] for an RRset already in canonical form
    /// ([`Rrset::canonical`]), whose owner has `labels` labels.
    pub fn signatures_canonical(
        &self,
        labels: u8,
        rtype: u16,
        ttl: u32,
        canonical: Vec<u8>,
        now: u64,
    ) -> Arc<[Vec<u8>]> {
        if let Some(found) = self.cache.get(&canonical, now) {
            return found;
        }
        let signers = if KEY_SETS.contains(&rtype) {
            &self.key_signers
        } else {
            &self.zone_signers
        };
        // The jitter is taken from the set itself: spread across sets, stable for one.
        let jitter = match self.policy.jitter {
            0 => 0,
            j => (self.cache.map.hash(&canonical) % u64::from(j)) as u32,
        };
        let validity = Validity {
            inception: now.saturating_sub(INCEPTION_SKEW) as u32,
            expiration: (now + u64::from(self.policy.validity) + u64::from(jitter)) as u32,
        };
        let signatures: Arc<[Vec<u8>]> = signers
            .iter()
            .map(|s| s.sign_canonical(labels, rtype, ttl, &canonical, validity))
            .collect();
        let expires = u64::from(validity.expiration);
        let renew_at = expires.saturating_sub(u64::from(self.policy.refresh));
        self.cache
            .made
            .fetch_add(signatures.len() as u64, Ordering::Relaxed);
        self.cache
            .insert(canonical, signatures.clone(), renew_at, expires);
        signatures
    }

    /// What the signature cache holds at `now` (a walk over it: for status and metrics).
    pub fn summary(&self, now: u64) -> CacheSummary {
        self.cache.summary(now)
    }

    /// Notes that a transfer of `serial` carried signatures expiring at `earliest` or later.
    /// A secondary keeps them until the serial changes, so the earliest over every transfer
    /// of one serial is what status and the alert rules watch.
    pub fn note_transfer(&self, serial: u32, earliest: u64) {
        let mut noted = self.cache.transferred.lock().unwrap();
        *noted = match *noted {
            Some((s, e)) if s == serial => Some((s, e.min(earliest))),
            _ => Some((serial, earliest)),
        };
    }
}

/// The signature cache of a zone, as status and metrics show it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheSummary {
    /// RRsets whose signatures are cached, and the bytes they take.
    pub entries: usize,
    pub bytes: usize,
    /// Signatures made since the cache was created (it lives across reloads that keep the
    /// keys).
    pub made: u64,
    /// The earliest expiration among the signatures still served (those not yet due to be
    /// made again), in seconds since the epoch.
    pub earliest_expiry: Option<u64>,
    /// The earliest expiration among the signatures sent in transfers of the serial last
    /// transferred: secondaries keep them until the serial changes.
    pub transferred_expiry: Option<u64>,
}

/// Signatures by canonical RRset, in a map bounded by entries and bytes (its keys can come
/// from query names: the denial of a name that does not exist).
struct SignatureCache {
    map: BoundedMap<Cached>,
    /// Signatures made, since the cache was created.
    made: AtomicU64,
    /// The serial last transferred, and the earliest expiration of the signatures sent with
    /// it (over every transfer of that serial).
    transferred: std::sync::Mutex<Option<(u32, u64)>>,
}

#[derive(Clone)]
struct Cached {
    signatures: Arc<[Vec<u8>]>,
    /// Seconds since the epoch after which the signatures are made again.
    renew_at: u64,
    /// Their expiration.
    expires: u64,
}

impl SignatureCache {
    fn new(limits: CacheLimits) -> SignatureCache {
        SignatureCache {
            map: BoundedMap::new(limits.entries, limits.bytes),
            made: AtomicU64::new(0),
            transferred: std::sync::Mutex::new(None),
        }
    }

    fn get(&self, key: &[u8], now: u64) -> Option<Arc<[Vec<u8>]>> {
        self.map
            .get(key, |c| c.renew_at > now)
            .map(|c| c.signatures)
    }

    fn insert(&self, key: Vec<u8>, signatures: Arc<[Vec<u8>]>, renew_at: u64, expires: u64) {
        let size = signatures.iter().map(|s| s.len() + 24).sum::<usize>();
        let cached = Cached {
            signatures,
            renew_at,
            expires,
        };
        self.map.insert(key.into(), cached, size);
    }

    fn summary(&self, now: u64) -> CacheSummary {
        let (entries, bytes) = self.map.size();
        let earliest_expiry = self.map.fold(None, |earliest: Option<u64>, c, _| {
            match (earliest, c.renew_at > now) {
                (Some(e), true) => Some(e.min(c.expires)),
                (None, true) => Some(c.expires),
                (e, false) => e,
            }
        });
        CacheSummary {
            entries,
            bytes,
            made: self.made.load(Ordering::Relaxed),
            earliest_expiry,
            transferred_expiry: self.transferred.lock().unwrap().map(|(_, e)| e),
        }
    }
}

/// The data of a compact-denial NSEC record (RFC 9824) owned by `owner`: the next name is
/// `\000.owner`, the least name after it, so the record covers no other name; the bitmap
/// lists `types` (RRSIG and NSEC are added).
pub fn compact_nsec(owner: &Name, types: &[u16]) -> Vec<u8> {
    // `\000.owner` when it fits in 255 bytes; otherwise the owner itself, which leaves the
    // proof to the bitmap alone.
    let next = owner
        .prepend_label(&[0u8][..])
        .unwrap_or_else(|_| owner.clone());
    nsec_rdata(&next, types)
}

/// The data of an NSEC record: `next` in canonical form, then the bitmap of `types` with
/// RRSIG and NSEC added.
pub fn nsec_rdata(next: &Name, types: &[u16]) -> Vec<u8> {
    let mut rdata = Vec::with_capacity(next.len() + 40);
    super::keys::canonical_name(next, &mut rdata);
    let mut all: Vec<u16> = types.to_vec();
    all.extend([46, 47]);
    type_bitmap(&mut all, &mut rdata);
    rdata
}

/// The canonical order of names (RFC 4034 section 6.1): label by label from the root, each
/// compared as lower-case bytes, a name before its descendants.
pub fn canonical_order(a: &Name, b: &Name) -> std::cmp::Ordering {
    let lower = |l: &[u8]| l.iter().map(u8::to_ascii_lowercase).collect::<Vec<u8>>();
    let (mut x, mut y) = (a.iter().rev(), b.iter().rev());
    loop {
        match (x.next(), y.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(l), Some(m)) => match lower(l).cmp(&lower(m)) {
                std::cmp::Ordering::Equal => {}
                other => return other,
            },
        }
    }
}

/// Writes an NSEC type bitmap (RFC 4034 section 4.1.2): per window of 256 types, its number,
/// its length and the bits, each window as short as its highest type allows.
fn type_bitmap(types: &mut [u16], out: &mut Vec<u8>) {
    types.sort_unstable();
    let mut at = 0;
    while at < types.len() {
        let window = (types[at] >> 8) as u8;
        let mut bits = [0u8; 32];
        let mut len = 0;
        while at < types.len() && (types[at] >> 8) as u8 == window {
            let low = (types[at] & 0xff) as usize;
            bits[low / 8] |= 0x80 >> (low % 8);
            len = len.max(low / 8 + 1);
            at += 1;
        }
        out.push(window);
        out.push(len as u8);
        out.extend_from_slice(&bits[..len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dnssec::Algorithm;
    use crate::dnssec::KeyRole;

    #[test]
    fn names_sort_in_canonical_order() {
        // RFC 4034 section 6.1's example, shuffled.
        let order: [&[&[u8]]; 9] = [
            &[b"example"],
            &[b"a", b"example"],
            &[b"yljkjljk", b"a", b"example"],
            &[b"Z", b"a", b"example"],
            &[b"zABC", b"a", b"EXAMPLE"],
            &[b"z", b"example"],
            &[b"\x01", b"z", b"example"],
            &[b"*", b"z", b"example"],
            &[b"\x80", b"z", b"example"],
        ];
        let name = |labels: &[&[u8]]| {
            let mut n = Name::from_labels(labels.iter().copied()).unwrap();
            n.set_fqdn(true);
            n
        };
        let sorted: Vec<Name> = order.iter().map(|l| name(l)).collect();
        let mut names: Vec<Name> = sorted.iter().rev().cloned().collect();
        names.sort_by(canonical_order);
        assert_eq!(names, sorted);
    }

    #[test]
    fn bitmaps_are_written_per_window() {
        // RFC 4034 section 4.3's example: A MX RRSIG NSEC TYPE1234.
        let mut out = Vec::new();
        type_bitmap(&mut [1, 15, 46, 47, 1234], &mut out);
        assert_eq!(
            out,
            [
                0, 6, 0x40, 0x01, 0x00, 0x00, 0x00, 0x03, 4, 27, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20
            ]
        );
    }

    #[test]
    fn compact_denial_covers_only_its_owner() {
        let owner = Name::from_ascii("Nope.Example.test.").unwrap();
        let rdata = compact_nsec(&owner, &[128]);
        let mut want = b"\x01\x00\x04nope\x07example\x04test\x00".to_vec();
        // RRSIG (46) and NSEC (47) in window 0, NXNAME (128) too.
        want.extend_from_slice(&[0, 17, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80]);
        assert_eq!(rdata, want);
    }

    #[test]
    fn one_signature_per_distinct_set_and_signer() {
        let now = 1_800_000_000;
        let csk =
            ZoneKey::generate("example.test", Algorithm::Ed25519, KeyRole::Csk, now - 10).unwrap();
        let zsk =
            ZoneKey::generate("example.test", Algorithm::Ed25519, KeyRole::Zsk, now - 10).unwrap();
        let signing = ZoneSigning::new(
            &[csk.clone(), zsk.clone()],
            SigningPolicy::default(),
            CacheLimits::default(),
            now,
            None,
        )
        .unwrap();
        let owner = Name::from_ascii("www.example.test.").unwrap();
        let set = |rdatas: &[Vec<u8>], rtype| {
            let rdatas = rdatas.to_vec();
            let set = Rrset {
                owner: &owner,
                rtype,
                class: 1,
                ttl: 30,
                rdatas: &rdatas,
            };
            signing.signatures(&set, now)
        };
        let a = set(&[vec![192, 0, 2, 1], vec![192, 0, 2, 2]], 1);
        assert_eq!(a.len(), 1, "the ZSK signs data, the KSK does not");
        assert_eq!(u16::from_be_bytes([a[0][16], a[0][17]]), zsk.key_tag());
        let rotated = set(&[vec![192, 0, 2, 2], vec![192, 0, 2, 1]], 1);
        assert!(Arc::ptr_eq(&a, &rotated), "a rotation reuses the signature");
        let summary = signing.summary(now);
        assert_eq!((summary.entries, summary.made), (1, 1));
        let keys = set(&[csk.dnskey_rdata(), zsk.dnskey_rdata()], 48);
        assert_eq!(
            u16::from_be_bytes([keys[0][16], keys[0][17]]),
            csk.key_tag()
        );
        // Expiration: validity plus at most the jitter.
        let expiration = u64::from(u32::from_be_bytes(a[0][8..12].try_into().unwrap()));
        let p = SigningPolicy::default();
        assert!(expiration >= now + u64::from(p.validity));
        assert!(expiration < now + u64::from(p.validity + p.jitter));
        // Past the refresh point the set is signed again.
        let later = expiration - u64::from(p.refresh) + 1;
        let rdatas = vec![vec![192, 0, 2, 1], vec![192, 0, 2, 2]];
        let again = signing.signatures(
            &Rrset {
                owner: &owner,
                rtype: 1,
                class: 1,
                ttl: 30,
                rdatas: &rdatas,
            },
            later,
        );
        assert!(!Arc::ptr_eq(&a, &again));
        let summary = signing.summary(later);
        assert!(summary.earliest_expiry > Some(later + u64::from(p.refresh)));
    }

    #[test]
    fn a_retired_key_signing_key_is_held_until_the_parent_points_at_its_successor() {
        let now = 1_800_000_000;
        let mut old =
            ZoneKey::generate("example.test", Algorithm::Ed25519, KeyRole::Ksk, now - 100).unwrap();
        old.times.inactive = Some(now - 10);
        let new =
            ZoneKey::generate("example.test", Algorithm::Ed25519, KeyRole::Ksk, now - 50).unwrap();
        let zsk =
            ZoneKey::generate("example.test", Algorithm::Ed25519, KeyRole::Zsk, now - 100).unwrap();
        let keys = [old.clone(), new.clone(), zsk];
        let signing = |parent: Option<Vec<Vec<u8>>>| {
            ZoneSigning::new(
                &keys,
                SigningPolicy::default(),
                CacheLimits::default(),
                now,
                parent.as_deref(),
            )
            .unwrap()
        };
        // The parent points at the old key only: it is held, and the key set is signed by both.
        let waiting = signing(Some(vec![old.ds_rdata()]));
        assert!(waiting.is_held(old.key_tag()));
        assert_eq!(waiting.key_signers.len(), 2);
        assert_eq!(waiting.published().len(), 3);
        assert_eq!(
            waiting.parent_signals().0,
            [new.ds_rdata()],
            "CDS asks for the new key"
        );
        // The parent points at the new key too: the old one retires.
        let done = signing(Some(vec![old.ds_rdata(), new.ds_rdata()]));
        assert!(!done.is_held(old.key_tag()));
        assert_eq!(done.key_signers.len(), 1);
        assert_eq!(
            done.published().len(),
            3,
            "still published until its Delete time"
        );
        // The parent unknown: the timing alone decides.
        assert!(!signing(None).is_held(old.key_tag()));
    }
}
