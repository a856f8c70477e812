//! DNSSEC: zone keys in BIND's file format (`K<zone>.+<alg>+<tag>.key` and `.private`),
//! their DNSKEY and DS records, key generation (`meridian dnssec keygen`, `meridian dnssec
//! ds`), and RRSIGs over RRsets in canonical form. Files: `keys` (the key files and what is
//! computed from a key), `sign` (RRSIGs).

pub mod keys;
pub mod sign;

pub use keys::{zone_keys, Algorithm, KeyError, KeyRole, KeyTimes, ZoneKey, ZoneKeys};
pub use sign::{Rrset, Signer, Validity};
