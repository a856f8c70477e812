//! Zone transfer out over real TCP: AXFR content and framing, load-balanced snapshots, who may
//! transfer, IXFR from a current secondary, the serial rule across reloads and restarts, and
//! TSIG on transfers and ordinary queries. `tests/e2e/transfer.sh` does the same with a real NSD secondary and NOTIFY.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};

const GSLB: &str = r#"
[[name]]
name = "www"
ttl = "300s"
policy = "all"
pool = "web"

[pool.web]
members = [
  { site = "fra", address = "192.0.2.10" },
  { site = "iad", address = "192.0.2.11" },
]
"#;

const TRANSFER: &str = "[zone.transfer]\nallow = [\"127.0.0.1\"]\n";

fn zone(serial: u32, extra: &str) -> String {
    let mut z = format!(
        "$TTL 300\n@ IN SOA ns1.example.test. hostmaster.example.test. {serial} 7200 900 1209600 60\n  IN NS ns1\nns1 IN A 192.0.2.53\n"
    );
    z.push_str(extra);
    z
}

fn transfer_query(rtype: RecordType, their_serial: Option<u32>) -> Vec<u8> {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    let origin = Name::from_ascii("example.test.").unwrap();
    m.queries.push(Query::query(origin.clone(), rtype));
    if let Some(serial) = their_serial {
        let soa = SOA::new(origin.clone(), origin.clone(), serial, 0, 0, 0, 0);
        m.authorities
            .push(Record::from_rdata(origin, 0, RData::SOA(soa)));
    }
    m.to_vec().unwrap()
}

/// Sends a transfer request from `from` (a loopback address) and reads messages until the
/// closing SOA, a refusal, or the bound on messages.
fn transfer(server: SocketAddr, from: &str, query: &[u8]) -> Vec<Message> {
    transfer_raw(server, from, query)
        .iter()
        .map(|b| Message::from_vec(b).unwrap())
        .collect()
}

fn transfer_raw(server: SocketAddr, from: &str, query: &[u8]) -> Vec<Vec<u8>> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    sock.bind(&local.into()).unwrap();
    sock.connect(&server.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    s.write_all(&framed).unwrap();
    let mut out = Vec::new();
    let mut soas = 0;
    for _ in 0..1000 {
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            break;
        }
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).unwrap();
        let m = Message::from_vec(&buf).unwrap();
        soas += m
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count();
        let done = m.metadata.response_code != ResponseCode::NoError
            || soas >= 2
            || (soas == 1 && m.answers.len() == 1 && out.is_empty());
        out.push(buf);
        if done {
            break;
        }
    }
    out
}

#[test]
fn axfr_holds_the_zone_and_a_snapshot_of_load_balanced_names() {
    let mut extra = String::new();
    for i in 0..3000 {
        extra.push_str(&format!(
            "h{i} IN TXT \"record number {i} with some text to fill\"\n"
        ));
    }
    let cfg = ConfigDir::new_with(&zone(7, &extra), GSLB, "", TRANSFER);
    let srv = Server::start(&cfg);

    let msgs = transfer(
        srv.dns,
        "127.0.0.1",
        &transfer_query(RecordType::AXFR, None),
    );
    assert!(msgs.len() > 1, "3000 records span several messages");
    assert!(msgs
        .iter()
        .all(|m| m.metadata.authoritative && m.id == 4242));
    assert_eq!(
        msgs[0].queries.len(),
        1,
        "the first message repeats the question"
    );
    let records: Vec<&Record> = msgs.iter().flat_map(|m| m.answers.iter()).collect();
    assert_eq!(records.first().unwrap().record_type(), RecordType::SOA);
    assert_eq!(records.last().unwrap().record_type(), RecordType::SOA);
    // 2 SOA, NS, ns1 A, 3000 TXT, 2 load-balanced A.
    assert_eq!(records.len(), 3006);
    let www: Vec<&&Record> = records
        .iter()
        .filter(|r| r.name.to_ascii() == "www.example.test.")
        .collect();
    assert_eq!(www.len(), 2);
    assert!(
        www.iter().all(|r| r.ttl == 30),
        "snapshot TTL capped at 30 s"
    );

    // Left out when the zone says so (hidden secondaries).
    cfg.write(
        "meridian.toml",
        &std::fs::read_to_string(cfg.config())
            .unwrap()
            .replace(TRANSFER, &format!("{TRANSFER}load_balanced = \"omit\"\n")),
    );
    let (ok, out) = srv.ctl(&["reload"]);
    assert!(ok, "{out}");
    let msgs = transfer(
        srv.dns,
        "127.0.0.1",
        &transfer_query(RecordType::AXFR, None),
    );
    let records = msgs.iter().map(|m| m.answers.len()).sum::<usize>();
    assert_eq!(records, 3004);
}

#[test]
fn only_allowed_secondaries_transfer_and_ixfr_answers_current_ones_briefly() {
    let cfg = ConfigDir::new_with(&zone(7, "static IN A 192.0.2.80\n"), GSLB, "", TRANSFER);
    let srv = Server::start(&cfg);

    let refused = transfer(
        srv.dns,
        "127.0.0.2",
        &transfer_query(RecordType::AXFR, None),
    );
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].metadata.response_code, ResponseCode::Refused);
    assert!(refused[0].answers.is_empty());

    // IXFR from a secondary at our serial: the SOA alone; from an older one: the whole zone.
    let current = transfer(
        srv.dns,
        "127.0.0.1",
        &transfer_query(RecordType::IXFR, Some(7)),
    );
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].answers.len(), 1);
    let older = transfer(
        srv.dns,
        "127.0.0.1",
        &transfer_query(RecordType::IXFR, Some(6)),
    );
    let records = older.iter().map(|m| m.answers.len()).sum::<usize>();
    assert_eq!(records, 7, "2 SOA, NS, ns1, static, 2 load-balanced");

    // A zone without a transfer section transfers to nobody; the ordinary path still answers.
    let other = ConfigDir::new(&zone(1, ""), GSLB);
    let srv = Server::start(&other);
    let refused = transfer(
        srv.dns,
        "127.0.0.1",
        &transfer_query(RecordType::AXFR, None),
    );
    assert_eq!(refused[0].metadata.response_code, ResponseCode::Refused);
    let r = query_tcp(
        srv.dns,
        &build_query("www.example.test.", RecordType::A, None),
    );
    assert_eq!(answers(&r), vec!["192.0.2.10", "192.0.2.11"]);
}

#[test]
fn the_serial_never_goes_backwards_across_reloads_and_restarts() {
    let cfg = ConfigDir::new_with(&zone(5, "a IN A 192.0.2.1\n"), GSLB, "", TRANSFER);
    let srv = Server::start(&cfg);
    let serial = |srv: &Server| match &srv.query("example.test.", RecordType::SOA).answers[0].data {
        RData::SOA(s) => s.serial,
        other => panic!("{other:?}"),
    };
    assert_eq!(serial(&srv), 5);

    for (text, why) in [
        (zone(4, "a IN A 192.0.2.1\n"), "SOA serial 4 is below 5"),
        (
            zone(5, "a IN A 192.0.2.2\n"),
            "data changed but its SOA serial 5 did not",
        ),
    ] {
        cfg.write("example.test.zone", &text);
        let (ok, out) = srv.ctl(&["reload"]);
        assert!(!ok, "reload accepted: {out}");
        assert!(
            out.contains(why) && out.contains("example.test.zone:2"),
            "{out}"
        );
        assert_eq!(serial(&srv), 5);
    }
    cfg.write("example.test.zone", &zone(6, "a IN A 192.0.2.2\n"));
    assert!(srv.ctl(&["reload"]).0);
    assert_eq!(serial(&srv), 6);

    // While the node runs it holds the store: check says the rule is left to it.
    let check = || {
        let out = check_output(&cfg);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("serial rule for zones with secondaries not checked"),
        "{err}"
    );
    drop(srv);

    // After a restart the served serial is remembered: an older file stops the start, and
    // check (the node stopped) says so first.
    cfg.write("example.test.zone", &zone(5, "a IN A 192.0.2.1\n"));
    let (code, err) = check();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("SOA serial 5 is below 6"), "{err}");
    cfg.write("example.test.zone", &zone(6, "a IN A 192.0.2.3\n"));
    let (code, err) = check();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("data changed but its SOA serial 6 did not"),
        "{err}"
    );
    cfg.write("example.test.zone", &zone(5, "a IN A 192.0.2.1\n"));
    let err = serve_fails(&cfg, "127.0.0.1:0");
    assert!(err.contains("SOA serial 5 is below 6"), "{err}");

    cfg.write("example.test.zone", &zone(6, "a IN A 192.0.2.2\n"));
    let srv = Server::start(&cfg);
    assert_eq!(serial(&srv), 6);
}

#[test]
fn a_zone_with_a_key_transfers_only_to_signed_requests_and_signs_every_message() {
    use meridian::dns::tsig::{self, Algorithm, Key, Signer};
    let secret = "bWVyaWRpYW4gdGVzdCBzZWNyZXQgZm9yIHRzaWc=";
    let mut extra = String::new();
    for i in 0..2000 {
        extra.push_str(&format!(
            "h{i} IN TXT \"record number {i} with some text to fill\"\n"
        ));
    }
    let cfg = ConfigDir::new_with(
        &zone(3, &extra),
        GSLB,
        "",
        &format!(
            "{TRANSFER}key = \"xfr-key\"\n\n[[key]]\nname = \"xfr-key\"\nsecret = \"{secret}\"\n"
        ),
    );
    let srv = Server::start(&cfg);
    let axfr = transfer_query(RecordType::AXFR, None);

    let unsigned = transfer(srv.dns, "127.0.0.1", &axfr);
    assert_eq!(unsigned[0].metadata.response_code, ResponseCode::Refused);

    let key = Key::new("xfr-key", Algorithm::HmacSha256, secret).unwrap();
    let mut signed = axfr.clone();
    Signer::request(&key, meridian::clock::unix_now()).sign(&mut signed, None);
    let msgs = transfer_raw(srv.dns, "127.0.0.1", &signed);
    assert!(msgs.len() > 1);
    for m in &msgs {
        assert!(
            tsig::find(m).unwrap().is_some(),
            "every message carries a TSIG"
        );
    }
    let records: usize = msgs
        .iter()
        .map(|b| Message::from_vec(b).unwrap().answers.len())
        .sum();
    assert_eq!(records, 2006, "2 SOA, NS, ns1, 2000 TXT, 2 load-balanced");

    let wrong = Key::new("xfr-key", Algorithm::HmacSha256, "b3RoZXIgc2VjcmV0").unwrap();
    let mut forged = axfr.clone();
    Signer::request(&wrong, meridian::clock::unix_now()).sign(&mut forged, None);
    let refused = transfer(srv.dns, "127.0.0.1", &forged);
    assert_eq!(refused[0].metadata.response_code, ResponseCode::NotAuth);
    assert!(srv.stderr().contains("BadSig"), "{}", srv.stderr());
}

#[test]
fn a_signed_query_is_verified_first_and_a_signed_udp_reply_truncates_to_fit() {
    use meridian::dns::tsig::{self, Algorithm, Key, Signer};
    let secret = "bWVyaWRpYW4gdGVzdCBzZWNyZXQgZm9yIHRzaWc=";
    // Four 100-byte strings: about 485 bytes unsigned (fits 512), about 565 signed (does not).
    let text = "x".repeat(100);
    let mut extra = String::new();
    for i in 0..4 {
        extra.push_str(&format!("big IN TXT \"{i}{}\"\n", &text[1..]));
    }
    let cfg = ConfigDir::new_with(
        &zone(1, &extra),
        GSLB,
        "",
        &format!("{TRANSFER}\n[[key]]\nname = \"q-key\"\nsecret = \"{secret}\"\n"),
    );
    let srv = Server::start(&cfg);
    let key = Key::new("q-key", Algorithm::HmacSha256, secret).unwrap();
    let query = build_query("big.example.test.", RecordType::TXT, None);

    let plain = query_udp_raw(srv.dns, &query).unwrap();
    assert!(
        plain.len() <= 512 && plain.len() + 79 > 512,
        "{}",
        plain.len()
    );
    assert_eq!(Message::from_vec(&plain).unwrap().answers.len(), 4);

    let mut signed = query.clone();
    Signer::request(&key, meridian::clock::unix_now()).sign(&mut signed, None);
    let reply = query_udp_raw(srv.dns, &signed).unwrap();
    assert!(
        reply.len() <= 512,
        "{} bytes for a 512-byte client",
        reply.len()
    );
    assert!(
        tsig::find(&reply).unwrap().is_some(),
        "the truncated reply is signed"
    );
    let m = Message::from_vec(&reply).unwrap();
    assert!(m.metadata.truncation);
    assert_eq!(m.queries.len(), 1);
    assert!(m.answers.is_empty());

    // Over TCP the whole answer, signed.
    let mut signed = query.clone();
    Signer::request(&key, meridian::clock::unix_now()).sign(&mut signed, None);
    let whole = transfer_raw(srv.dns, "127.0.0.1", &signed);
    assert!(tsig::find(&whole[0]).unwrap().is_some());
    assert_eq!(Message::from_vec(&whole[0]).unwrap().answers.len(), 4);

    // A wrong secret: NOTAUTH and no answer records, over UDP too.
    let wrong = Key::new("q-key", Algorithm::HmacSha256, "b3RoZXIgc2VjcmV0").unwrap();
    let mut forged = query.clone();
    Signer::request(&wrong, meridian::clock::unix_now()).sign(&mut forged, None);
    let refused = Message::from_vec(&query_udp_raw(srv.dns, &forged).unwrap()).unwrap();
    assert_eq!(refused.metadata.response_code, ResponseCode::NotAuth);
    assert!(refused.answers.is_empty());
}
