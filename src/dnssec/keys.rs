//! Zone keys as BIND writes them, so `dnssec-settime`, `dnssec-dsfromkey` and Knot's `keymgr
//! import-bind` work on the files: the public key as a DNSKEY record in `.key`, the private
//! key and the timing metadata (Created, Publish, Activate, Inactive, Delete) in `.private`
//! (format v1.3). Key material is read and written here only, and never printed: a key's
//! `Debug` shows its tag, algorithm and zone.

use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use data_encoding::{BASE64, HEXUPPER};
use hickory_proto::rr::Name;

use crate::clock::{parse_stamp, stamp};

/// A DNSSEC signing algorithm Meridian signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256 (13), the default.
    EcdsaP256Sha256,
    /// Ed25519 (15).
    Ed25519,
}

impl Algorithm {
    pub fn number(self) -> u8 {
        match self {
            Algorithm::EcdsaP256Sha256 => 13,
            Algorithm::Ed25519 => 15,
        }
    }

    /// The mnemonic BIND writes beside the number.
    pub fn mnemonic(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256Sha256 => "ECDSAP256SHA256",
            Algorithm::Ed25519 => "ED25519",
        }
    }

    pub fn from_number(n: u8) -> Option<Algorithm> {
        [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519]
            .into_iter()
            .find(|a| a.number() == n)
    }

    /// `ecdsap256sha256` (or `13`), `ed25519` (or `15`).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        let lower = name.to_ascii_lowercase();
        [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519]
            .into_iter()
            .find(|a| a.mnemonic().to_ascii_lowercase() == lower || a.number().to_string() == lower)
    }

    /// Bytes of the public key in a DNSKEY (x | y for ECDSA P-256).
    fn public_len(self) -> usize {
        match self {
            Algorithm::EcdsaP256Sha256 => 64,
            Algorithm::Ed25519 => 32,
        }
    }
}

/// What a key signs: the DNSKEY set only (KSK), everything else (ZSK), or both (CSK). KSKs and
/// CSKs carry the SEP flag (DNSKEY flags 257), ZSKs do not (256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    Csk,
    Ksk,
    Zsk,
}

impl KeyRole {
    fn flags(self) -> u16 {
        match self {
            KeyRole::Csk | KeyRole::Ksk => 257,
            KeyRole::Zsk => 256,
        }
    }
}

/// A key's timing metadata, in seconds since the epoch (RFC 7583's events as BIND names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyTimes {
    pub created: u64,
    pub publish: Option<u64>,
    pub activate: Option<u64>,
    pub inactive: Option<u64>,
    pub delete: Option<u64>,
}

/// Where a key stands in its life (RFC 7583's states, as far as the timing metadata tells).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Not yet published.
    Future,
    /// Its DNSKEY is in the zone but it does not sign yet (pre-publication).
    Published,
    /// It signs.
    Active,
    /// It signs no more; its DNSKEY stays until its Delete time.
    Retired,
    /// Past its Delete time.
    Removed,
}

impl KeyState {
    pub fn name(self) -> &'static str {
        match self {
            KeyState::Future => "future",
            KeyState::Published => "published",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
            KeyState::Removed => "removed",
        }
    }
}

impl KeyTimes {
    /// The key's state at `now`.
    pub fn state(&self, now: u64) -> KeyState {
        if self.delete.is_some_and(|at| at <= now) {
            KeyState::Removed
        } else if self.inactive.is_some_and(|at| at <= now) {
            KeyState::Retired
        } else if self.is_active(now) {
            KeyState::Active
        } else if self.is_published(now) {
            KeyState::Published
        } else {
            KeyState::Future
        }
    }

    /// Whether a key with these times signs at `now`: activated, and not yet inactive.
    pub fn is_active(&self, now: u64) -> bool {
        self.activate.is_some_and(|at| at <= now) && self.inactive.is_none_or(|at| at > now)
    }

    /// Whether its DNSKEY is in the zone at `now`: published (or, with no Publish time,
    /// activated), and not yet deleted.
    pub fn is_published(&self, now: u64) -> bool {
        self.publish.or(self.activate).is_some_and(|at| at <= now)
            && self.delete.is_none_or(|at| at > now)
    }
}

/// A zone key: its public half as in the DNSKEY record, its private half, and its timing.
#[derive(Clone, PartialEq, Eq)]
pub struct ZoneKey {
    /// Fully qualified, lower case.
    pub zone: String,
    pub algorithm: Algorithm,
    /// DNSKEY flags: 257 (SEP: KSK or CSK) or 256 (ZSK).
    pub flags: u16,
    pub public: Vec<u8>,
    /// The ECDSA private scalar or the Ed25519 seed.
    private: Vec<u8>,
    pub times: KeyTimes,
}

impl std::fmt::Debug for ZoneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ZoneKey({} {} {} tag {})",
            self.zone,
            self.flags,
            self.algorithm.mnemonic(),
            self.key_tag()
        )
    }
}

/// Why a key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0:?} is not a zone name: {1}")]
    Zone(String, String),
    #[error("cannot make a key: the crypto library refused")]
    Generate,
    #[error("{path}: {error}", path = .0.display(), error = .1)]
    Io(PathBuf, std::io::Error),
    #[error("{path}:{line}: {message}", path = .0.display(), line = .1, message = .2)]
    Format(PathBuf, usize, String),
    #[error("{path}: {message}", path = .0.display(), message = .1)]
    Mismatch(PathBuf, String),
}

/// A name in canonical wire form (RFC 4034 section 6.2): lower case, uncompressed.
pub(super) fn canonical_name(name: &Name, out: &mut Vec<u8>) {
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
}

/// The canonical form of a zone name: fully qualified, lower case.
fn canonical_zone(zone: &str) -> Result<Name, KeyError> {
    let name =
        Name::from_ascii(zone).map_err(|e| KeyError::Zone(zone.to_string(), e.to_string()))?;
    let mut name = name.to_lowercase();
    name.set_fqdn(true);
    Ok(name)
}

impl ZoneKey {
    /// A new key for `zone`, created, published and active at `now`.
    pub fn generate(
        zone: &str,
        algorithm: Algorithm,
        role: KeyRole,
        now: u64,
    ) -> Result<ZoneKey, KeyError> {
        let zone = canonical_zone(zone)?.to_string();
        let (public, private) = match algorithm {
            Algorithm::EcdsaP256Sha256 => {
                let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| KeyError::Generate)?;
                // The uncompressed point 0x04 | x | y; DNSKEY carries x | y.
                let point = pair.public_key().as_ref()[1..].to_vec();
                let scalar = pair
                    .private_key()
                    .as_be_bytes()
                    .map_err(|_| KeyError::Generate)?;
                (point, scalar.as_ref().to_vec())
            }
            Algorithm::Ed25519 => {
                let pair = Ed25519KeyPair::generate().map_err(|_| KeyError::Generate)?;
                let seed = pair
                    .seed()
                    .and_then(|s| s.as_be_bytes())
                    .map_err(|_| KeyError::Generate)?;
                (pair.public_key().as_ref().to_vec(), seed.as_ref().to_vec())
            }
        };
        Ok(ZoneKey {
            zone,
            algorithm,
            flags: role.flags(),
            public,
            private,
            times: KeyTimes {
                created: now,
                publish: Some(now),
                activate: Some(now),
                inactive: None,
                delete: None,
            },
        })
    }

    /// The private key's bytes, for the signer only.
    pub(super) fn private(&self) -> &[u8] {
        &self.private
    }

    /// Whether the key carries the SEP flag (a KSK or CSK: the parent's DS points at it).
    pub fn is_sep(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The DNSKEY record's data: flags, protocol 3, algorithm, public key.
    pub fn dnskey_rdata(&self) -> Vec<u8> {
        let mut rdata = Vec::with_capacity(4 + self.public.len());
        rdata.extend_from_slice(&self.flags.to_be_bytes());
        rdata.push(3);
        rdata.push(self.algorithm.number());
        rdata.extend_from_slice(&self.public);
        rdata
    }

    /// The key tag (RFC 4034 appendix B): the DNSKEY data summed as 16-bit words, carries
    /// folded in once.
    pub fn key_tag(&self) -> u16 {
        let mut sum: u32 = 0;
        for (i, b) in self.dnskey_rdata().iter().enumerate() {
            sum += if i % 2 == 0 {
                u32::from(*b) << 8
            } else {
                u32::from(*b)
            };
        }
        sum += (sum >> 16) & 0xffff;
        (sum & 0xffff) as u16
    }

    /// The SHA-256 digest of a DS record for this key (RFC 4509): over the owner name in
    /// canonical wire form followed by the DNSKEY data.
    pub fn ds_sha256(&self) -> Vec<u8> {
        let mut data = Vec::new();
        match canonical_zone(&self.zone) {
            Ok(name) => canonical_name(&name, &mut data),
            Err(_) => data.push(0),
        }
        data.extend_from_slice(&self.dnskey_rdata());
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &data)
            .as_ref()
            .to_vec()
    }

    /// The data of a SHA-256 DS (or CDS) record for this key: tag, algorithm, digest type 2,
    /// digest.
    pub fn ds_rdata(&self) -> Vec<u8> {
        let mut rdata = self.key_tag().to_be_bytes().to_vec();
        rdata.push(self.algorithm.number());
        rdata.push(2);
        rdata.extend_from_slice(&self.ds_sha256());
        rdata
    }

    /// The DS record in presentation form, as `dnssec-dsfromkey -2` prints it.
    pub fn ds_record(&self) -> String {
        format!(
            "{} IN DS {} {} 2 {}",
            self.zone,
            self.key_tag(),
            self.algorithm.number(),
            HEXUPPER.encode(&self.ds_sha256())
        )
    }

    /// The DNSKEY record in presentation form.
    pub fn dnskey_record(&self) -> String {
        format!(
            "{} IN DNSKEY {} 3 {} {}",
            self.zone,
            self.flags,
            self.algorithm.number(),
            BASE64.encode(&self.public)
        )
    }

    /// `K<zone>.+<alg>+<tag>` (the zone fully qualified, the numbers zero-padded), the name
    /// both files share.
    pub fn file_stem(&self) -> String {
        format!(
            "K{}+{:03}+{:05}",
            self.zone,
            self.algorithm.number(),
            self.key_tag()
        )
    }

    fn timing_lines(&self) -> Vec<(&'static str, u64)> {
        let t = &self.times;
        let mut lines = vec![("Created", t.created)];
        for (what, at) in [
            ("Publish", t.publish),
            ("Activate", t.activate),
            ("Inactive", t.inactive),
            ("Delete", t.delete),
        ] {
            if let Some(at) = at {
                lines.push((what, at));
            }
        }
        lines
    }

    /// The `.key` file: comments with the key's role and timing, then its DNSKEY record.
    pub fn key_file(&self) -> String {
        let role = if self.is_sep() {
            "key-signing"
        } else {
            "zone-signing"
        };
        let mut out = format!(
            "; This is a {role} key, keyid {}, for {}\n",
            self.key_tag(),
            self.zone
        );
        for (what, at) in self.timing_lines() {
            out.push_str(&format!("; {what}: {}\n", stamp(at)));
        }
        out.push_str(&self.dnskey_record());
        out.push('\n');
        out
    }

    /// The `.private` file (format v1.3).
    pub fn private_file(&self) -> String {
        let mut out = format!(
            "Private-key-format: v1.3\nAlgorithm: {} ({})\nPrivateKey: {}\n",
            self.algorithm.number(),
            self.algorithm.mnemonic(),
            BASE64.encode(&self.private)
        );
        for (what, at) in self.timing_lines() {
            out.push_str(&format!("{what}: {}\n", stamp(at)));
        }
        out
    }

    /// Writes both files into `dir` (the private one readable by its owner only); returns
    /// the path of the `.key` file.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, KeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // Not `with_extension`: the stem's own dots would be taken for one.
        let key = dir.join(format!("{}.key", self.file_stem()));
        let private = dir.join(format!("{}.private", self.file_stem()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&private)
            .map_err(|e| KeyError::Io(private.clone(), e))?;
        file.write_all(self.private_file().as_bytes())
            .map_err(|e| KeyError::Io(private.clone(), e))?;
        std::fs::write(&key, self.key_file()).map_err(|e| KeyError::Io(key.clone(), e))?;
        Ok(key)
    }

    /// Reads a key from its two files, given either one or their shared stem; the private
    /// key must belong to the public one.
    pub fn read(path: &Path) -> Result<ZoneKey, KeyError> {
        let stem = match path.extension().and_then(|e| e.to_str()) {
            Some("key" | "private") => path.with_extension(""),
            _ => path.to_path_buf(),
        };
        let key_path = PathBuf::from(format!("{}.key", stem.display()));
        let private_path = PathBuf::from(format!("{}.private", stem.display()));
        let key_text =
            std::fs::read_to_string(&key_path).map_err(|e| KeyError::Io(key_path.clone(), e))?;
        let private_text = std::fs::read_to_string(&private_path)
            .map_err(|e| KeyError::Io(private_path.clone(), e))?;
        let (zone, flags, algorithm, public) = parse_dnskey(&key_path, &key_text)?;
        let (private_algorithm, private, times) = parse_private(&private_path, &private_text)?;
        if private_algorithm != algorithm {
            return Err(KeyError::Mismatch(
                private_path,
                format!(
                    "algorithm {} here, {} in the .key file",
                    private_algorithm.number(),
                    algorithm.number()
                ),
            ));
        }
        let key = ZoneKey {
            zone,
            algorithm,
            flags,
            public,
            private,
            times,
        };
        if !key.halves_match() {
            return Err(KeyError::Mismatch(
                private_path,
                "the private key does not belong to the public key in the .key file".into(),
            ));
        }
        Ok(key)
    }

    /// Whether the private key is the one whose public half the key holds.
    fn halves_match(&self) -> bool {
        match self.algorithm {
            Algorithm::EcdsaP256Sha256 => {
                let mut point = vec![4];
                point.extend_from_slice(&self.public);
                EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &self.private,
                    &point,
                )
                .is_ok()
            }
            Algorithm::Ed25519 => {
                Ed25519KeyPair::from_seed_and_public_key(&self.private, &self.public).is_ok()
            }
        }
    }
}

/// A zone's keys as its config names them, checked for serving at `now`.
pub struct ZoneKeys {
    pub keys: Vec<ZoneKey>,
    /// What is served but probably not meant (a key past its Inactive time).
    pub warnings: Vec<String>,
}

/// Reads the keys of `zone` (each a path to either file, or their stem) and checks them as
/// a signer would at `now`: each belongs to the zone and its halves match, and a key-signing
/// key (KSK or CSK) is active. A key past its Inactive or Delete time is a warning.
pub fn zone_keys(zone: &str, paths: &[PathBuf], now: u64) -> Result<ZoneKeys, String> {
    let zone = canonical_zone(zone).map_err(|e| e.to_string())?.to_string();
    let mut keys: Vec<ZoneKey> = Vec::new();
    let mut warnings = Vec::new();
    for path in paths {
        let key = ZoneKey::read(path).map_err(|e| e.to_string())?;
        let name = key.file_stem();
        if key.zone != zone {
            return Err(format!("key {name} is for {}, not this zone", key.zone));
        }
        if keys
            .iter()
            .any(|k| k.key_tag() == key.key_tag() && k.algorithm == key.algorithm)
        {
            return Err(format!("key {name} is listed twice"));
        }
        if let Some(at) = key.times.delete.filter(|&at| at <= now) {
            // Reached while serving (the node reloads at each key event): not an error, or
            // the reload would be refused and the key kept.
            warnings.push(format!(
                "key {name} was deleted at {}: it is no longer published; take it out of \
                 dnssec_keys",
                stamp(at)
            ));
        } else if let Some(at) = key.times.inactive.filter(|&at| at <= now) {
            warnings.push(format!(
                "key {name} is inactive since {}: it signs nothing",
                stamp(at)
            ));
        }
        keys.push(key);
    }
    if !keys.iter().any(|k| k.is_sep() && k.times.is_active(now)) {
        return Err(
            "no active key-signing key (a CSK or KSK, DNSKEY flags 257) among dnssec_keys".into(),
        );
    }
    Ok(ZoneKeys { keys, warnings })
}

/// The DNSKEY record of a `.key` file: (zone, flags, algorithm, public key).
fn parse_dnskey(path: &Path, text: &str) -> Result<(String, u16, Algorithm, Vec<u8>), KeyError> {
    let bad = |line: usize, m: String| KeyError::Format(path.to_path_buf(), line, m);
    for (i, line) in text.lines().enumerate() {
        let line = line.split(';').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| w.eq_ignore_ascii_case("DNSKEY")) else {
            return Err(bad(i + 1, "expected a DNSKEY record".into()));
        };
        let owner = canonical_zone(words[0]).map_err(|e| bad(i + 1, e.to_string()))?;
        let fields = &words[at + 1..];
        if fields.len() < 4 {
            return Err(bad(
                i + 1,
                "a DNSKEY needs flags, protocol, algorithm and key".into(),
            ));
        }
        let flags: u16 = fields[0]
            .parse()
            .map_err(|_| bad(i + 1, format!("flags {:?}", fields[0])))?;
        if flags != 256 && flags != 257 {
            return Err(bad(
                i + 1,
                format!("flags {flags}: a zone key has 256 or 257"),
            ));
        }
        if fields[1] != "3" {
            return Err(bad(i + 1, format!("protocol {} (must be 3)", fields[1])));
        }
        let algorithm = fields[2]
            .parse::<u8>()
            .ok()
            .and_then(Algorithm::from_number)
            .ok_or_else(|| bad(i + 1, format!("algorithm {} is not 13 or 15", fields[2])))?;
        let public = BASE64
            .decode(fields[3..].concat().as_bytes())
            .map_err(|e| bad(i + 1, format!("public key: {e}")))?;
        if public.len() != algorithm.public_len() {
            return Err(bad(
                i + 1,
                format!(
                    "a {} public key has {} bytes, not {}",
                    algorithm.mnemonic(),
                    algorithm.public_len(),
                    public.len()
                ),
            ));
        }
        return Ok((owner.to_string(), flags, algorithm, public));
    }
    Err(bad(1, "no DNSKEY record".into()))
}

/// The fields of a `.private` file: (algorithm, private key, timing).
fn parse_private(path: &Path, text: &str) -> Result<(Algorithm, Vec<u8>, KeyTimes), KeyError> {
    let bad = |line: usize, m: String| KeyError::Format(path.to_path_buf(), line, m);
    let (mut algorithm, mut private) = (None, None);
    let mut times = KeyTimes::default();
    for (i, line) in text.lines().enumerate() {
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let at =
            || parse_stamp(value).ok_or_else(|| bad(i + 1, format!("{field}: bad time {value:?}")));
        match field.trim() {
            "Algorithm" => {
                let n = value.split_whitespace().next().unwrap_or("");
                algorithm = Some(
                    n.parse::<u8>()
                        .ok()
                        .and_then(Algorithm::from_number)
                        .ok_or_else(|| bad(i + 1, format!("algorithm {n} is not 13 or 15")))?,
                );
            }
            "PrivateKey" => {
                private = Some(
                    BASE64
                        .decode(value.as_bytes())
                        .map_err(|e| bad(i + 1, format!("PrivateKey: {e}")))?,
                )
            }
            "Created" => times.created = at()?,
            "Publish" => times.publish = Some(at()?),
            "Activate" => times.activate = Some(at()?),
            "Inactive" => times.inactive = Some(at()?),
            "Delete" => times.delete = Some(at()?),
            _ => {}
        }
    }
    let algorithm = algorithm.ok_or_else(|| bad(1, "no Algorithm line".into()))?;
    let private = private.ok_or_else(|| bad(1, "no PrivateKey line".into()))?;
    Ok((algorithm, private, times))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DNSKEY of RFC 4509's example, whose DS it also gives: `dskey.example.com.`,
    /// flags 256, algorithm 5 (RSA/SHA-1), tag 60485.
    fn rfc4509_example() -> ZoneKey {
        let public = BASE64
            .decode(
                concat!(
                    "AQOeiiR0GOMYkDshWoSKz9XzfwJr1AYtsmx3TGkJaNXVbfi/",
                    "2pHm822aJ5iI9BMzNXxeYCmZDRD99WYwYqUSdjMmmAphXdvx",
                    "egXd/M5+X7OrzKBaMbCVdFLUUh6DhweJBjEVv5f2wwjM9Xzc",
                    "nOf+EPbtG9DMBmADjFDc2w/rljwvFw=="
                )
                .as_bytes(),
            )
            .unwrap();
        ZoneKey {
            zone: "dskey.example.com.".into(),
            algorithm: Algorithm::EcdsaP256Sha256,
            flags: 256,
            public,
            private: Vec::new(),
            times: KeyTimes::default(),
        }
    }

    #[test]
    fn key_tag_and_ds_digest_match_rfc_4509s_example() {
        // The example's algorithm is 5; the tag and digest cover the algorithm byte, so
        // compute them over its DNSKEY data as the RFC has it.
        let key = rfc4509_example();
        let mut rdata = key.dnskey_rdata();
        rdata[3] = 5;
        let mut sum: u32 = 0;
        for (i, b) in rdata.iter().enumerate() {
            sum += if i % 2 == 0 {
                u32::from(*b) << 8
            } else {
                u32::from(*b)
            };
        }
        sum += (sum >> 16) & 0xffff;
        assert_eq!(sum & 0xffff, 60485);
        let mut data = b"\x05dskey\x07example\x03com\x00".to_vec();
        data.extend_from_slice(&rdata);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &data);
        assert_eq!(
            HEXUPPER.encode(digest.as_ref()),
            "D4B7D520E7BB5F0F67674A0CCEB1E3E0614B93C4F9E99B8383F6A1E4469DA50A"
        );
    }

    #[test]
    fn generated_keys_round_trip_through_their_files_and_a_wrong_half_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (algorithm, role) in [
            (Algorithm::EcdsaP256Sha256, KeyRole::Csk),
            (Algorithm::Ed25519, KeyRole::Zsk),
        ] {
            let mut key =
                ZoneKey::generate("Example.TEST", algorithm, role, 1_798_761_600).unwrap();
            key.times.inactive = Some(1_830_297_600);
            let path = key.write(dir.path()).unwrap();
            assert_eq!(
                path.file_name().unwrap().to_str().unwrap(),
                format!(
                    "Kexample.test.+{:03}+{:05}.key",
                    algorithm.number(),
                    key.key_tag()
                )
            );
            let read = ZoneKey::read(&path).unwrap();
            assert_eq!(read, key);
            assert_eq!(read.is_sep(), role != KeyRole::Zsk);
            assert!(key.private_file().contains("Created: 20270101000000\n"));
            assert!(key
                .key_file()
                .ends_with(&format!("{}\n", key.dnskey_record())));
            assert!(!format!("{key:?}").contains(&BASE64.encode(&key.private)));
        }
        // Another key's private half beside this public one.
        let a =
            ZoneKey::generate("example.test", Algorithm::EcdsaP256Sha256, KeyRole::Csk, 0).unwrap();
        let b =
            ZoneKey::generate("example.test", Algorithm::EcdsaP256Sha256, KeyRole::Csk, 0).unwrap();
        let stem = dir.path().join("Kmixed");
        std::fs::write(stem.with_extension("key"), a.key_file()).unwrap();
        std::fs::write(stem.with_extension("private"), b.private_file()).unwrap();
        let err = ZoneKey::read(&stem).unwrap_err().to_string();
        assert!(err.contains("does not belong"), "{err}");
    }

    #[test]
    fn a_zones_keys_need_an_active_key_signing_key_and_none_past_its_delete_time() {
        let dir = tempfile::tempdir().unwrap();
        let write = |key: &ZoneKey| key.write(dir.path()).unwrap();
        let now = 1_800_000_000;
        let zsk = ZoneKey::generate(
            "example.test",
            Algorithm::EcdsaP256Sha256,
            KeyRole::Zsk,
            now,
        )
        .unwrap();
        let ksk = ZoneKey::generate(
            "example.test",
            Algorithm::EcdsaP256Sha256,
            KeyRole::Ksk,
            now,
        )
        .unwrap();
        let (zsk_path, ksk_path) = (write(&zsk), write(&ksk));
        let err = zone_keys("example.test", std::slice::from_ref(&zsk_path), now)
            .err()
            .unwrap();
        assert!(err.contains("no active key-signing key"), "{err}");
        let ok = zone_keys("Example.Test.", &[zsk_path.clone(), ksk_path.clone()], now).unwrap();
        assert_eq!(ok.keys.len(), 2);
        assert!(ok.warnings.is_empty());
        let err = zone_keys("other.test", std::slice::from_ref(&ksk_path), now)
            .err()
            .unwrap();
        assert!(err.contains("is for example.test., not this zone"), "{err}");
        let err = zone_keys("example.test", &[ksk_path.clone(), ksk_path.clone()], now)
            .err()
            .unwrap();
        assert!(err.contains("listed twice"), "{err}");

        let mut old =
            ZoneKey::generate("example.test", Algorithm::Ed25519, KeyRole::Zsk, now - 100).unwrap();
        old.times.inactive = Some(now - 10);
        let old_path = write(&old);
        let ok = zone_keys("example.test", &[ksk_path.clone(), old_path], now).unwrap();
        assert!(
            ok.warnings[0].contains("is inactive since"),
            "{:?}",
            ok.warnings
        );
        let mut gone =
            ZoneKey::generate("example.test", Algorithm::Ed25519, KeyRole::Zsk, now - 100).unwrap();
        gone.times.delete = Some(now - 1);
        let ok = zone_keys("example.test", &[ksk_path, write(&gone)], now).unwrap();
        assert!(
            ok.warnings[0].contains("was deleted at"),
            "{:?}",
            ok.warnings
        );
    }
}
