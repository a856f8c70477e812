//! DNSSEC: zone keys in BIND's file format (`K<zone>.+<alg>+<tag>.key` and `.private`),
//! their DNSKEY and DS records, and key generation (`meridian dnssec keygen`, `meridian
//! dnssec ds`). Files: `keys` (the key files and what is computed from a key).

pub mod keys;

pub use keys::{Algorithm, KeyError, KeyRole, KeyTimes, ZoneKey};
