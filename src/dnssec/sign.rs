//! RRSIGs (RFC 4034 section 3): an RRset in canonical form (section 6) signed with a zone
//! key. The caller hands the records' data already in canonical wire form (names in the
//! data of the types section 6.2 lists lower-cased, none compressed); this module orders
//! them, drops duplicates and builds what is signed.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use hickory_proto::rr::Name;

use super::keys::{canonical_name, Algorithm, KeyError, ZoneKey};

/// A zone key loaded for signing.
pub struct Signer {
    algorithm: Algorithm,
    tag: u16,
    /// The zone, lower case, as the signer's name is written.
    zone: Name,
    pair: Pair,
    random: SystemRandom,
}

enum Pair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// One RRset: its owner, type, class and TTL, and each record's data in canonical wire form.
pub struct Rrset<'a> {
    pub owner: &'a Name,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    pub rdatas: &'a [Vec<u8>],
}

/// When a signature holds, in seconds since the epoch (serial number arithmetic, RFC 1982,
/// lets these wrap in 2106).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub inception: u32,
    pub expiration: u32,
}

/// The RRSIG labels field: the owner's labels, not counting the root or a leading `*`.
pub fn labels(owner: &Name) -> u8 {
    let n = owner.iter().count();
    let wild = owner.iter().next().is_some_and(|l| l == b"*");
    (n - usize::from(wild)) as u8
}

/// [`labels`] of an owner in wire form (uncompressed).
pub fn wire_labels(owner: &[u8]) -> u8 {
    let (mut at, mut n) = (0, 0u8);
    while at < owner.len() && owner[at] != 0 {
        n += 1;
        at += 1 + owner[at] as usize;
    }
    n - u8::from(owner.starts_with(b"\x01*"))
}

impl ZoneKey {
    /// This key, ready to sign; the private half is checked against the public one.
    pub fn signer(&self) -> Result<Signer, KeyError> {
        let refused = || KeyError::Mismatch(self.file_stem().into(), "unusable key".into());
        let pair = match self.algorithm {
            Algorithm::EcdsaP256Sha256 => {
                let mut point = vec![4];
                point.extend_from_slice(&self.public);
                Pair::Ecdsa(
                    EcdsaKeyPair::from_private_key_and_public_key(
                        &ECDSA_P256_SHA256_FIXED_SIGNING,
                        self.private(),
                        &point,
                    )
                    .map_err(|_| refused())?,
                )
            }
            Algorithm::Ed25519 => Pair::Ed25519(
                Ed25519KeyPair::from_seed_and_public_key(self.private(), &self.public)
                    .map_err(|_| refused())?,
            ),
        };
        let zone = Name::from_ascii(&self.zone)
            .map_err(|e| KeyError::Zone(self.zone.clone(), e.to_string()))?
            .to_lowercase();
        Ok(Signer {
            algorithm: self.algorithm,
            tag: self.key_tag(),
            zone,
            pair,
            random: SystemRandom::new(),
        })
    }
}

impl Rrset<'_> {
    /// The records as they are signed (RFC 4034 section 6.3): each as owner, type, class,
    /// TTL, length and data, in canonical order, duplicates dropped. This is also what the
    /// signature cache keys on: two answers holding the same set in any order share it.
    pub fn canonical(&self) -> Vec<u8> {
        let mut owner = Vec::with_capacity(64);
        canonical_name(self.owner, &mut owner);
        let mut records: Vec<&Vec<u8>> = self.rdatas.iter().collect();
        records.sort();
        records.dedup();
        let size: usize = records.iter().map(|d| owner.len() + 10 + d.len()).sum();
        let mut out = Vec::with_capacity(size);
        for data in records {
            out.extend_from_slice(&owner);
            out.extend_from_slice(&self.rtype.to_be_bytes());
            out.extend_from_slice(&self.class.to_be_bytes());
            out.extend_from_slice(&self.ttl.to_be_bytes());
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(data);
        }
        out
    }
}

impl Signer {
    /// The key tag of the key signing.
    pub fn tag(&self) -> u16 {
        self.tag
    }

    /// The RRSIG record's data for `set`: the fields, then the signature over them and the
    /// RRset in canonical order.
    pub fn rrsig(&self, set: &Rrset<'_>, validity: Validity) -> Vec<u8> {
        let labels = labels(set.owner);
        self.sign_canonical(labels, set.rtype, set.ttl, &set.canonical(), validity)
    }

    /// The RRSIG record's data for an RRset already in canonical form ([`Rrset::canonical`]),
    /// whose owner has `labels` labels ([`labels`]), of type `rtype` and original TTL `ttl`.
    pub fn sign_canonical(
        &self,
        labels: u8,
        rtype: u16,
        ttl: u32,
        canonical: &[u8],
        validity: Validity,
    ) -> Vec<u8> {
        let mut rdata = Vec::with_capacity(128);
        rdata.extend_from_slice(&rtype.to_be_bytes());
        rdata.push(self.algorithm.number());
        rdata.push(labels);
        rdata.extend_from_slice(&ttl.to_be_bytes());
        rdata.extend_from_slice(&validity.expiration.to_be_bytes());
        rdata.extend_from_slice(&validity.inception.to_be_bytes());
        rdata.extend_from_slice(&self.tag.to_be_bytes());
        canonical_name(&self.zone, &mut rdata);

        let mut signed = Vec::with_capacity(rdata.len() + canonical.len());
        signed.extend_from_slice(&rdata);
        signed.extend_from_slice(canonical);
        let signature = match &self.pair {
            Pair::Ecdsa(pair) => pair
                .sign(&self.random, &signed)
                .map(|s| s.as_ref().to_vec())
                // Signing with a key that loaded fails only if the library does.
                .unwrap_or_default(),
            Pair::Ed25519(pair) => pair.sign(&signed).as_ref().to_vec(),
        };
        rdata.extend_from_slice(&signature);
        rdata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_stamp;
    use data_encoding::BASE64;

    /// An Ed25519 key whose signatures BIND's `dnssec-signzone` made for the RRsets below
    /// (`-s 20270101000000 -e 20270201000000`); Ed25519 signatures are deterministic, so
    /// ours must be the same bytes.
    fn bind_signed_key() -> ZoneKey {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("Kexample.test.+015+24510");
        std::fs::write(
            format!("{}.key", stem.display()),
            "example.test. IN DNSKEY 257 3 15 7fUptT3K4rZuVNZyhW4RTBvjwe0Okd2bol5DgW5EKd4=\n",
        )
        .unwrap();
        std::fs::write(
            format!("{}.private", stem.display()),
            "Private-key-format: v1.3\nAlgorithm: 15 (ED25519)\nPrivateKey: NBiokrbBaQmzA+XDTyzQd4OsLxCcQti+Ab+7Rbtukf0=\nCreated: 20261206082637\n",
        )
        .unwrap();
        ZoneKey::read(&stem).unwrap()
    }

    fn validity() -> Validity {
        Validity {
            inception: parse_stamp("20270101000000").unwrap() as u32,
            expiration: parse_stamp("20270201000000").unwrap() as u32,
        }
    }

    #[test]
    fn signatures_match_bind_byte_for_byte() {
        let key = bind_signed_key();
        assert_eq!(key.key_tag(), 24510);
        let signer = key.signer().unwrap();
        // Given out of canonical order, and one twice: sorted and deduplicated.
        let www = Name::from_ascii("www.example.test.").unwrap();
        let rdatas = vec![vec![192, 0, 2, 80], vec![192, 0, 2, 7], vec![192, 0, 2, 80]];
        let rrsig = signer.rrsig(
            &Rrset {
                owner: &www,
                rtype: 1,
                class: 1,
                ttl: 300,
                rdatas: &rdatas,
            },
            validity(),
        );
        assert_eq!(
            BASE64.encode(&rrsig[rrsig.len() - 64..]),
            "svyCZX4aLlt8uPhwuhnTkuXfqg5RlXWofUjz+HK15kZHm/WC2c1WKbe1Eg4yAVmYKPSSKiVDVHLfCdAWiRZvDg=="
        );
        assert_eq!(
            &rrsig[..4],
            &[0, 1, 15, 3],
            "type A, algorithm 15, 3 labels"
        );

        // The owner's case and the MX target's (lowered by the caller, as section 6.2 says
        // for MX) do not change what is signed.
        let mixed = Name::from_ascii("Mixed.example.test.").unwrap();
        let mut mx = vec![0, 10];
        for label in ["mail", "example", "test"] {
            mx.push(label.len() as u8);
            mx.extend_from_slice(label.as_bytes());
        }
        mx.push(0);
        let rrsig = signer.rrsig(
            &Rrset {
                owner: &mixed,
                rtype: 15,
                class: 1,
                ttl: 300,
                rdatas: &[mx],
            },
            validity(),
        );
        assert_eq!(
            BASE64.encode(&rrsig[rrsig.len() - 64..]),
            "Ix+SPxpWHjHENWcODGUCvA9G4wb4CQP7/1z6IxmUfiRGcnTdIucfX040dKpJ6m1xuJTk5PnxKv38GLfs69A0Dw=="
        );
    }

    #[test]
    fn ecdsa_signatures_verify_with_the_public_key() {
        let key = ZoneKey::generate(
            "example.test",
            Algorithm::EcdsaP256Sha256,
            super::super::KeyRole::Csk,
            0,
        )
        .unwrap();
        let signer = key.signer().unwrap();
        let owner = Name::from_ascii("*.example.test.").unwrap();
        let rdatas = vec![vec![192, 0, 2, 1]];
        let set = Rrset {
            owner: &owner,
            rtype: 1,
            class: 1,
            ttl: 60,
            rdatas: &rdatas,
        };
        let rrsig = signer.rrsig(&set, validity());
        assert_eq!(rrsig[3], 2, "a wildcard's labels leave out the *");
        let (fields, signature) = rrsig.split_at(rrsig.len() - 64);
        let mut signed = fields.to_vec();
        signed.extend_from_slice(
            b"\x01*\x07example\x04test\x00\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04",
        );
        signed.extend_from_slice(&[192, 0, 2, 1]);
        let mut point = vec![4];
        point.extend_from_slice(&key.public);
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            &point,
        )
        .verify(&signed, signature)
        .expect("a valid signature");
    }
}
