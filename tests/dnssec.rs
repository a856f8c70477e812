//! DNSSEC keys through the binary: `meridian dnssec keygen` and `ds`, and zone keys named in
//! the server file checked by `meridian check` and shown (public facts only) by status.

mod common;

use std::process::Command;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

/// Runs `meridian dnssec ARGS` in `dir`; returns its standard output.
fn dnssec(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("dnssec")
        .args(args)
        .args(["--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn zone_keys_are_checked_at_load_and_never_shown() {
    let cfg = ConfigDir::new(&zone_with(""), "");
    let dir = cfg.path("");
    let csk = dnssec(&dir, &["keygen", "example.test"]);
    let zsk = dnssec(
        &dir,
        &[
            "keygen",
            "example.test",
            "--role",
            "zsk",
            "--algorithm",
            "ed25519",
        ],
    );
    let ds = dnssec(&dir, &["ds", "example.test"]);
    let tag = csk.rsplit('+').next().unwrap().trim_start_matches('0');
    assert!(
        ds.starts_with(&format!("example.test. IN DS {tag} 13 2 ")),
        "{ds}"
    );
    assert_eq!(ds.lines().count(), 1, "the ZSK has no DS: {ds}");
    let private = std::fs::read_to_string(cfg.path(&format!("{csk}.private"))).unwrap();
    let secret = private
        .lines()
        .find_map(|l| l.strip_prefix("PrivateKey: "))
        .unwrap()
        .to_string();

    let with_keys = |keys: &[&str]| {
        let list: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
        let server = std::fs::read_to_string(cfg.config()).unwrap();
        let server = match server.find("dnssec_keys") {
            Some(at) => server[..at].to_string(),
            None => server,
        };
        cfg.write(
            "meridian.toml",
            &format!("{server}dnssec_keys = [{}]\n", list.join(", ")),
        );
    };
    with_keys(&[&zsk]);
    let (ok, out) = check_config(&cfg);
    assert!(!ok);
    assert!(out.contains("meridian.toml:"), "{out}");
    assert!(
        out.contains("zone \"example.test\": dnssec_keys: no active key-signing key"),
        "{out}"
    );

    with_keys(&[&csk, &zsk]);
    let (ok, out) = check_config(&cfg);
    assert!(ok, "{out}");

    let srv = Server::start(&cfg);
    let st = srv.status();
    let keys = &st["zones"][0]["dnssec_keys"];
    assert_eq!(keys.as_array().unwrap().len(), 2, "{keys}");
    assert_eq!(keys[0]["tag"].to_string(), tag);
    assert!(
        !st.to_string().contains(&secret),
        "status shows no key material"
    );
    assert!(
        !srv.stderr().contains(&secret),
        "the log shows no key material"
    );
}

const SIGNED_ZONE: &str = "www2 IN A 192.0.2.80\n\
    www2 IN AAAA 2001:db8::80\n\
    mail IN MX 10 MAIL.example.test.\n\
    *.wild IN A 192.0.2.90\n\
    a.ent IN TXT \"below an empty non-terminal\"\n\
    secure IN NS ns.secure\n\
    secure IN DS 12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF\n\
    ns.secure IN A 192.0.2.153\n\
    insecure IN NS ns.insecure\n\
    ns.insecure IN A 192.0.2.154\n";

const SIGNED_GSLB: &str = r#"
[[name]]
name = "www"
policy = "weighted"
pool = "web"
answers = 2

[pool.web]
members = [
  { site = "a", address = "192.0.2.1" },
  { site = "b", address = "192.0.2.2" },
  { site = "c", address = "192.0.2.3" },
]
"#;

/// The public key in key file `stem`.key, as the DNSKEY record holds it.
fn public_key(cfg: &ConfigDir, stem: &str) -> Vec<u8> {
    let key_line = std::fs::read_to_string(cfg.path(&format!("{stem}.key"))).unwrap();
    key_line
        .lines()
        .find(|l| l.contains("DNSKEY"))
        .and_then(|l| l.split_whitespace().last())
        .map(|k| data_encoding::BASE64.decode(k.as_bytes()).unwrap())
        .unwrap()
}

/// A query with DO (and CO when asked) set.
fn signed_query(name: &str, rtype: RecordType, ecs: Option<&str>, compact_ok: bool) -> Vec<u8> {
    let mut opts = match ecs {
        Some(net) => Opts::ecs(net),
        None => Opts::edns(1232),
    };
    opts.dnssec_ok = true;
    let mut bytes = build_query(name, rtype, Some(&opts));
    if compact_ok {
        // The OPT follows the question: root name, type, class, then the TTL's flags.
        let question_end = 12 + Name::from_ascii(name).unwrap().to_bytes().unwrap().len() + 4;
        bytes[question_end + 7] |= 0x40;
    }
    bytes
}

/// Record data as it is signed (names uncompressed, lower case where RFC 4034 says).
fn canonical(data: &RData) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_canonical_form(true);
    data.emit(&mut encoder).unwrap();
    bytes
}

fn wire_lower(name: &Name) -> Vec<u8> {
    name.to_lowercase().to_bytes().unwrap()
}

/// RRSIG data of `r`, if it is one.
fn rrsig_data(r: &Record) -> Option<Vec<u8>> {
    (r.record_type() == RecordType::RRSIG).then(|| canonical(&r.data))
}

/// Checks every RRSIG in the reply against the ECDSA P-256 key `public` (x | y): the set it
/// covers (same section, owner and type) must verify. Returns how many were checked.
fn verify_all(m: &Message, public: &[u8]) -> Result<usize, String> {
    use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
    let mut point = vec![4];
    point.extend_from_slice(public);
    let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point);
    let mut checked = 0;
    for section in [&m.answers, &m.authorities, &m.additionals] {
        for sig in section.iter() {
            let Some(rdata) = rrsig_data(sig) else {
                continue;
            };
            let covered = u16::from_be_bytes([rdata[0], rdata[1]]);
            let ttl = u32::from_be_bytes(rdata[4..8].try_into().unwrap());
            let mut at = 18;
            while rdata[at] != 0 {
                at += 1 + rdata[at] as usize;
            }
            let (fields, signature) = rdata.split_at(at + 1);
            let mut records: Vec<Vec<u8>> = section
                .iter()
                .filter(|r| u16::from(r.record_type()) == covered && r.name == sig.name)
                .map(|r| canonical(&r.data))
                .collect();
            records.sort();
            let mut signed = fields.to_vec();
            for data in records {
                signed.extend(wire_lower(&sig.name));
                signed.extend(covered.to_be_bytes());
                signed.extend(1u16.to_be_bytes());
                signed.extend(ttl.to_be_bytes());
                signed.extend((data.len() as u16).to_be_bytes());
                signed.extend(data);
            }
            key.verify(&signed, signature)
                .map_err(|_| format!("RRSIG over {} type {covered} does not verify", sig.name))?;
            checked += 1;
        }
    }
    Ok(checked)
}

/// The types an NSEC's bitmap lists, and its next name's wire form.
fn nsec_of(m: &Message) -> (Name, Vec<u8>, Vec<u16>) {
    let nsec = m
        .authorities
        .iter()
        .find(|r| r.record_type() == RecordType::NSEC)
        .expect("an NSEC");
    let data = canonical(&nsec.data);
    let mut at = 0;
    while data[at] != 0 {
        at += 1 + data[at] as usize;
    }
    let next = data[..=at].to_vec();
    let mut types = Vec::new();
    let mut rest = &data[at + 1..];
    while rest.len() >= 2 {
        let (window, len) = (u16::from(rest[0]), rest[1] as usize);
        for (i, byte) in rest[2..2 + len].iter().enumerate() {
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    types.push(window * 256 + (i * 8 + bit) as u16);
                }
            }
        }
        rest = &rest[2 + len..];
    }
    (nsec.name.clone(), next, types)
}

#[test]
fn answers_with_do_are_signed_and_deny_compactly() {
    let unsigned = ConfigDir::new(&zone_with(SIGNED_ZONE), SIGNED_GSLB);
    let cfg = ConfigDir::new(&zone_with(SIGNED_ZONE), SIGNED_GSLB);
    let csk = dnssec(&cfg.path(""), &["keygen", "example.test"]);
    let config = std::fs::read_to_string(cfg.config()).unwrap();
    cfg.write(
        "meridian.toml",
        &format!("{config}dnssec_keys = [{csk:?}]\n"),
    );
    let public = public_key(&cfg, &csk);
    let srv = Server::start(&cfg);
    let plain = Server::start(&unsigned);
    let ask = |name: &str, rtype, ecs, co| query_udp(srv.dns, &signed_query(name, rtype, ecs, co));

    // The DNSKEY set, signed by the CSK.
    let keys = ask("example.test", RecordType::DNSKEY, None, false);
    assert_eq!(keys.answers.len(), 2, "{keys:?}");
    assert_eq!(verify_all(&keys, &public), Ok(1));
    // CDS and CDNSKEY for the parent, signed by the key-signing key.
    for rtype in [RecordType::CDS, RecordType::CDNSKEY] {
        let m = ask("example.test", rtype, None, false);
        assert_eq!(m.answers.len(), 2, "{rtype}: {m:?}");
        assert_eq!(verify_all(&m, &public), Ok(1), "{rtype}");
    }

    // Static data, an MX with its target's addresses, a wildcard's answer (signed as the
    // name asked: labels 4).
    for (name, rtype, sets) in [
        ("www2.example.test", RecordType::AAAA, 1),
        ("mail.example.test", RecordType::MX, 1),
        ("x.wild.example.test", RecordType::A, 1),
    ] {
        let m = ask(name, rtype, None, false);
        assert_eq!(m.response_code, ResponseCode::NoError);
        assert_eq!(verify_all(&m, &public), Ok(sets), "{name}: {m:?}");
    }
    let wild = ask("x.wild.example.test", RecordType::A, None, false);
    assert_eq!(rrsig_data(&wild.answers[1]).unwrap()[3], 4);

    // A load-balanced name: each distinct set of two addresses has one signature, whatever
    // order the rotation gives it; with ECS too.
    let mut seen: std::collections::HashMap<Vec<String>, Vec<u8>> = Default::default();
    for i in 0..12 {
        let ecs = (i % 2 == 0).then_some("198.51.100.0/24");
        let m = ask("www.example.test", RecordType::A, ecs, false);
        assert_eq!(verify_all(&m, &public), Ok(1), "{m:?}");
        let set = answers(&m)
            .into_iter()
            .filter(|a| a.contains('.'))
            .collect::<Vec<_>>();
        let sig = m.answers.iter().find_map(rrsig_data).unwrap();
        assert_eq!(seen.entry(set).or_insert(sig.clone()), &sig);
    }
    assert!(seen.len() >= 2, "the rotation gave {} sets", seen.len());

    // A name that does not exist: NOERROR with an NSEC at the name (NXNAME), or NXDOMAIN
    // when the client sets CO, which the reply echoes.
    let missing = ask("nope.example.test", RecordType::A, None, false);
    assert_eq!(missing.response_code, ResponseCode::NoError);
    assert_eq!(verify_all(&missing, &public), Ok(2), "SOA and NSEC");
    let (owner, next, types) = nsec_of(&missing);
    assert_eq!(owner.to_ascii(), "nope.example.test.");
    assert_eq!(next, b"\x01\x00\x04nope\x07example\x04test\x00");
    assert_eq!(types, [46, 47, 128]);
    let co = signed_query("nope.example.test", RecordType::A, None, true);
    let raw = query_udp_raw(srv.dns, &co).unwrap();
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(m.response_code, ResponseCode::NXDomain);
    // The OPT is last and has no options: its flags byte is the fourth from the end.
    assert_eq!(raw[raw.len() - 4] & 0xc0, 0xc0, "DO and CO echoed");

    // No such type: the bitmap lists what the name holds, less the type asked; an empty
    // non-terminal holds nothing.
    for (name, rtype, want) in [
        ("www2.example.test", RecordType::TXT, vec![1, 28, 46, 47]),
        ("www.example.test", RecordType::AAAA, vec![1, 46, 47]),
        ("ent.example.test", RecordType::A, vec![46, 47]),
        ("y.wild.example.test", RecordType::AAAA, vec![1, 46, 47]),
        ("insecure.example.test", RecordType::DS, vec![2, 46, 47]),
    ] {
        let m = ask(name, rtype, None, false);
        assert_eq!(m.response_code, ResponseCode::NoError, "{name}");
        assert!(m.answers.is_empty(), "{name}: {m:?}");
        assert_eq!(verify_all(&m, &public), Ok(2), "{name}");
        assert_eq!(nsec_of(&m).2, want, "{name}");
    }

    // Referrals: the DS set signed, or an NSEC proving there is none; glue unsigned.
    let secure = ask("host.secure.example.test", RecordType::A, None, false);
    assert!(!secure.metadata.authoritative);
    let types: Vec<RecordType> = secure.authorities.iter().map(|r| r.record_type()).collect();
    assert_eq!(types, [RecordType::NS, RecordType::DS, RecordType::RRSIG]);
    assert_eq!(verify_all(&secure, &public), Ok(1));
    assert!(secure
        .additionals
        .iter()
        .all(|r| r.record_type() == RecordType::A));
    let insecure = ask("host.insecure.example.test", RecordType::A, None, false);
    assert_eq!(verify_all(&insecure, &public), Ok(1));
    assert_eq!(nsec_of(&insecure).2, [2, 46, 47]);

    // A byte changed in the data fails.
    let mut tampered = ask("www2.example.test", RecordType::AAAA, None, false);
    tampered.answers[0].data = RData::AAAA("2001:db8::81".parse().unwrap());
    assert!(verify_all(&tampered, &public).is_err());

    // Status and metrics show the key's state and the signatures made and cached.
    let st = srv.status();
    let zone = &st["zones"][0];
    assert_eq!(zone["dnssec_keys"][0]["state"], "active", "{zone}");
    let made = zone["signatures"]["made"].as_u64().unwrap();
    assert!(made >= 10, "{zone}");
    let in_a_week = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 6 * 86_400;
    assert!(zone["signatures"]["earliest_expiry"].as_u64().unwrap() > in_a_week);
    let metrics = http(srv.control, "GET", "/metrics", None, None).1;
    let tag = csk.rsplit('+').next().unwrap().trim_start_matches('0');
    for series in [
        format!("meridian_dnssec_signatures_made_total{{zone=\"example.test.\"}} {made}"),
        format!(
            "meridian_dnssec_key_state{{zone=\"example.test.\",tag=\"{tag}\",state=\"active\"}} 1"
        ),
    ] {
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }

    // Without DO the answers are the unsigned zone's, byte for byte (but for the ID).
    for (name, rtype) in [
        ("www2.example.test", RecordType::AAAA),
        ("nope.example.test", RecordType::A),
        ("ent.example.test", RecordType::A),
        ("host.secure.example.test", RecordType::A),
        ("mail.example.test", RecordType::MX),
    ] {
        let q = build_query(name, rtype, Some(&Opts::edns(1232)));
        let (a, b) = (
            query_udp_raw(srv.dns, &q).unwrap(),
            query_udp_raw(plain.dns, &q).unwrap(),
        );
        assert_eq!(a, b, "{name} {rtype}");
    }
}

/// The canonical order of names (RFC 4034 section 6.1).
fn canonical_cmp(a: &Name, b: &Name) -> std::cmp::Ordering {
    let labels = |n: &Name| -> Vec<Vec<u8>> {
        let mut l: Vec<Vec<u8>> = n.iter().map(|l| l.to_ascii_lowercase()).collect();
        l.reverse();
        l
    };
    labels(a).cmp(&labels(b))
}

#[test]
fn white_lies_deny_with_nxdomain_and_two_covering_nsecs() {
    let cfg = ConfigDir::new(&zone_with(SIGNED_ZONE), SIGNED_GSLB);
    let csk = dnssec(&cfg.path(""), &["keygen", "example.test"]);
    let config = std::fs::read_to_string(cfg.config()).unwrap();
    cfg.write(
        "meridian.toml",
        &format!("{config}dnssec_keys = [{csk:?}]\ndnssec_denial = \"nsec\"\n"),
    );
    let (ok, out) = check_config(&cfg);
    assert!(!ok);
    assert!(
        out.contains("dnssec_denial: \"nsec\" is neither \"compact\""),
        "{out}"
    );
    cfg.write(
        "meridian.toml",
        &format!("{config}dnssec_keys = [{csk:?}]\ndnssec_denial = \"white-lies\"\n"),
    );
    let public = public_key(&cfg, &csk);
    let srv = Server::start(&cfg);
    let ask = |name: &str, rtype, co| query_udp(srv.dns, &signed_query(name, rtype, None, co));
    let n = |s: &str| Name::from_ascii(s).unwrap();
    let covers = |nsec: &Record, name: &Name| {
        let data = canonical(&nsec.data);
        let mut decoder = hickory_proto::serialize::binary::BinDecoder::new(&data);
        let next: Name =
            hickory_proto::serialize::binary::BinDecodable::read(&mut decoder).unwrap();
        canonical_cmp(&nsec.name, name).is_lt() && canonical_cmp(name, &next).is_lt()
    };

    // NXDOMAIN whether or not the client understands compact denial; the closest encloser
    // is the apex, or the empty non-terminal, or a name below it.
    for (name, encloser, co) in [
        ("nope.example.test", "example.test", false),
        ("nope.example.test", "example.test", true),
        ("a.b.nope.example.test", "example.test", false),
        ("b.ent.example.test", "ent.example.test", false),
        ("z.a.ent.example.test", "a.ent.example.test", false),
    ] {
        let m = ask(name, RecordType::A, co);
        assert_eq!(m.response_code, ResponseCode::NXDomain, "{name}");
        assert_eq!(verify_all(&m, &public), Ok(3), "SOA and two NSECs: {m:?}");
        let nsecs: Vec<&Record> = m
            .authorities
            .iter()
            .filter(|r| r.record_type() == RecordType::NSEC)
            .collect();
        assert_eq!(nsecs.len(), 2, "{name}: {m:?}");
        let wildcard = n(&format!("*.{encloser}"));
        assert!(covers(nsecs[0], &n(name)), "{name}: {:?}", nsecs[0]);
        assert!(covers(nsecs[1], &wildcard), "{name}: {:?}", nsecs[1]);
        // Neither covers a name that exists: the encloser, or the zone's names around.
        for exists in [
            "example.test",
            "ent.example.test",
            "mail.example.test",
            "www.example.test",
        ] {
            assert!(
                !nsecs.iter().any(|r| covers(r, &n(exists))),
                "{name}: {exists}"
            );
        }
    }
    // NODATA and the empty non-terminal are as in compact denial: the name's own NSEC.
    let m = ask("ent.example.test", RecordType::A, false);
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert_eq!(verify_all(&m, &public), Ok(2));
    assert_eq!(nsec_of(&m).0, n("ent.example.test."));
    assert_eq!(nsec_of(&m).2, [46, 47]);
}
