//! DNSSEC: zone keys in BIND's file format (`K<zone>.+<alg>+<tag>.key` and `.private`),
//! their DNSKEY and DS records, key generation (`meridian dnssec keygen`, `meridian dnssec
//! ds`), RRSIGs over RRsets in canonical form, and online signing with a bounded signature
//! cache. Files: `keys` (the key files and what is computed from a key), `sign` (RRSIGs),
//! `online` (a zone's signing keys as served, the cache, compact-denial NSEC data), `cover`
//! (the names around an absent name, for NSEC white lies), `parent` (the parent's DS set read
//! from its servers).

pub mod cover;
pub mod keys;
pub mod online;
pub mod parent;
pub mod sign;

pub use keys::{zone_keys, Algorithm, KeyError, KeyRole, KeyState, KeyTimes, ZoneKey, ZoneKeys};
pub use online::{
    canonical_order, compact_nsec, nsec_rdata, CacheLimits, CacheSummary, DenialStyle,
    SigningPolicy, ZoneSigning,
};
pub use parent::parent_ds;
pub use sign::{Rrset, Signer, Validity};
