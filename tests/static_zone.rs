//! Static zone data answered as NSD or Knot would, over real UDP and TCP.

mod common;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

fn zone() -> String {
    let mut big = String::new();
    for i in 1..=60 {
        big.push_str(&format!("big IN A 192.0.2.{i}\n"));
    }
    zone_with(&format!(
        "www IN A 192.0.2.80\n\
         a.b.c IN A 192.0.2.81\n\
         alias1 IN CNAME alias2\n\
         loop1 IN CNAME loop2\n\
         loop2 IN CNAME loop1\n\
         alias2 IN CNAME www\n\
         dangling IN CNAME nowhere\n\
         outside IN CNAME www.example.org.\n\
         *.wild IN A 192.0.2.90\n\
         *.wild IN TXT \"wild\"\n\
         sub IN NS ns.sub\n\
         sub IN NS ns.elsewhere.org.\n\
         sub IN DS 12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF\n\
         ns.sub IN A 192.0.2.153\n\
         nods IN NS ns.nods\n\
         ns.nods IN A 192.0.2.154\n\
         multi IN A 192.0.2.1\n\
         multi IN TXT \"t\"\n\
         multi IN MX 10 www\n\
         sib IN NS ns.nods\n\
         naptr IN NAPTR 100 10 \"S\" \"SIP+D2U\" \"\" _sip._tcp\n\
         unknown IN TYPE65300 \\# 2 abcd\n\
         {big}"
    ))
}

fn server() -> (ConfigDir, Server) {
    let cfg = ConfigDir::new(&zone(), "");
    let srv = Server::start(&cfg);
    (cfg, srv)
}

#[test]
fn static_behaviours() {
    let (_cfg, srv) = server();

    // Exact data, authoritative.
    let r = srv.query("www.example.test.", RecordType::A);
    assert!(r.authoritative);
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert_eq!(answers(&r), vec!["192.0.2.80"]);

    // Mixed case query (0x20) still matches, question echoed as sent.
    let r = srv.query("WwW.ExAmple.TEST.", RecordType::A);
    assert_eq!(answers(&r), vec!["192.0.2.80"]);
    assert_eq!(r.queries[0].name.to_string(), "WwW.ExAmple.TEST.");

    // NXDOMAIN with SOA at min(SOA TTL, MINIMUM) = 60.
    let r = srv.query("missing.example.test.", RecordType::A);
    assert_eq!(r.response_code, ResponseCode::NXDomain);
    assert!(r.authoritative);
    assert_eq!(r.authorities.len(), 1);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(r.authorities[0].ttl, 60);

    // NODATA at an existing name and at an empty non-terminal.
    for name in ["www.example.test.", "b.c.example.test.", "c.example.test."] {
        let r = srv.query(name, RecordType::TXT);
        assert_eq!(r.response_code, ResponseCode::NoError, "{name}");
        assert!(r.answers.is_empty(), "{name}");
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA, "{name}");
        assert_eq!(r.authorities[0].ttl, 60, "{name}");
    }

    // In-zone CNAME chain followed.
    let r = srv.query("alias1.example.test.", RecordType::A);
    let types: Vec<_> = r.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(
        types,
        vec![RecordType::CNAME, RecordType::CNAME, RecordType::A]
    );
    // A CNAME query returns the CNAME itself.
    let r = srv.query("alias1.example.test.", RecordType::CNAME);
    assert_eq!(r.answers.len(), 1);
    // A chain to a missing in-zone name: NXDOMAIN with the CNAME (RFC 6604).
    let r = srv.query("dangling.example.test.", RecordType::A);
    assert_eq!(r.response_code, ResponseCode::NXDomain);
    assert_eq!(r.answers[0].record_type(), RecordType::CNAME);
    // A CNAME loop ends after each link once, without a server failure.
    let r = srv.query("loop1.example.test.", RecordType::A);
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 2);
    // Out-of-zone target: the CNAME alone.
    let r = srv.query("outside.example.test.", RecordType::A);
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert_eq!(answers(&r), vec!["www.example.org."]);

    // Wildcard synthesises the query name; missing type there is NODATA.
    let r = srv.query("anything.wild.example.test.", RecordType::A);
    assert_eq!(answers(&r), vec!["192.0.2.90"]);
    assert_eq!(r.answers[0].name.to_string(), "anything.wild.example.test.");
    let r = srv.query("x.y.wild.example.test.", RecordType::A);
    assert_eq!(answers(&r), vec!["192.0.2.90"]);
    let r = srv.query("anything.wild.example.test.", RecordType::MX);
    assert!(r.answers.is_empty());
    assert_eq!(r.response_code, ResponseCode::NoError);

    // Referral: AA clear, NS in authority, in-domain glue only.
    let r = srv.query("host.sub.example.test.", RecordType::A);
    assert!(!r.authoritative);
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities.len(), 2);
    assert!(r
        .authorities
        .iter()
        .all(|a| a.record_type() == RecordType::NS));
    let glue: Vec<String> = r.additionals.iter().map(|a| a.data.to_string()).collect();
    assert_eq!(glue, vec!["192.0.2.153"]);
    // NS at the cut itself is a referral too.
    let r = srv.query("sub.example.test.", RecordType::NS);
    assert!(!r.authoritative);

    // DS at a cut comes from the parent side, authoritatively.
    let r = srv.query("sub.example.test.", RecordType::DS);
    assert!(r.authoritative);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].record_type(), RecordType::DS);
    let r = srv.query("nods.example.test.", RecordType::DS);
    assert!(r.authoritative);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);

    // REFUSED outside every zone.
    let r = srv.query("www.example.org.", RecordType::A);
    assert_eq!(r.response_code, ResponseCode::Refused);
    assert!(!r.authoritative);

    // ANY answered minimally: one RRset.
    let r = srv.query("multi.example.test.", RecordType::ANY);
    let mut types: Vec<_> = r.answers.iter().map(|r| r.record_type()).collect();
    types.dedup();
    assert_eq!(types.len(), 1, "{types:?}");
}

#[test]
fn edns_rules() {
    let (_cfg, srv) = server();

    // No OPT in, none out.
    let r = srv.query("www.example.test.", RecordType::A);
    assert!(r.edns.is_none());

    // OPT in: ours advertised (1232), DO echoed.
    let opts = Opts {
        edns: Some(4096),
        dnssec_ok: true,
        ..Default::default()
    };
    let r = query_udp(
        srv.dns,
        &build_query("www.example.test.", RecordType::A, Some(&opts)),
    );
    let e = r.edns.as_ref().expect("OPT in reply");
    assert_eq!(e.max_payload(), 1232);
    assert!(e.flags().dnssec_ok);
    assert!(e.options().as_ref().is_empty(), "no options echoed");
    let opts = Opts {
        edns: Some(4096),
        ..Default::default()
    };
    let r = query_udp(
        srv.dns,
        &build_query("www.example.test.", RecordType::A, Some(&opts)),
    );
    assert!(!r.edns.unwrap().flags().dnssec_ok);

    // EDNS version 1: BADVERS.
    let opts = Opts {
        edns_version: 1,
        ..Opts::edns(1232)
    };
    let r = query_udp(
        srv.dns,
        &build_query("www.example.test.", RecordType::A, Some(&opts)),
    );
    assert_eq!(
        u16::from(r.response_code),
        16,
        "BADVERS (16; hickory decodes it as BADSIG)"
    );
    assert!(r.edns.is_some());
}

#[test]
fn truncation_and_payload_cap() {
    let (_cfg, srv) = server();
    // 60 A records: 60 * 16 + header > 512 but < 1232.
    let plain = build_query("big.example.test.", RecordType::A, None);
    let r = query_udp(srv.dns, &plain);
    assert!(r.truncation, "no EDNS: capped at 512 and truncated");
    assert!(r.answers.is_empty());
    let r = query_tcp(srv.dns, &plain);
    assert!(!r.truncation);
    assert_eq!(r.answers.len(), 60);

    // With EDNS 1232 it fits; with EDNS 4096 we still cap at ours (1232): fits too.
    let opts = Opts::edns(1232);
    let raw = query_udp_raw(
        srv.dns,
        &build_query("big.example.test.", RecordType::A, Some(&opts)),
    )
    .unwrap();
    assert!(raw.len() <= 1232);
    let r = hickory_proto::op::Message::from_vec(&raw).unwrap();
    assert!(!r.truncation);
    assert_eq!(r.answers.len(), 60);
    // A client payload below 512 is treated as 512.
    let opts = Opts {
        edns: Some(100),
        ..Default::default()
    };
    let raw = query_udp_raw(
        srv.dns,
        &build_query("big.example.test.", RecordType::A, Some(&opts)),
    )
    .unwrap();
    assert!(raw.len() <= 512);
}

#[test]
fn malformed_and_response_packets() {
    let (_cfg, srv) = server();
    // QR=1: dropped (no reply) — checked with one short try after a valid exchange.
    let mut resp_bit = build_query("www.example.test.", RecordType::A, None);
    resp_bit[2] |= 0x80;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    sock.send_to(&resp_bit, srv.dns).unwrap();
    let mut buf = [0u8; 512];
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "a response packet must not be answered"
    );

    // Garbage after a valid header: FORMERR, and the server keeps answering.
    let mut junk = build_query("www.example.test.", RecordType::A, None);
    junk.truncate(15);
    let raw = query_udp_raw(srv.dns, &junk).unwrap();
    assert_eq!(raw[3] & 0x0f, 1, "FORMERR");
    let r = srv.query("www.example.test.", RecordType::A);
    assert_eq!(answers(&r), vec!["192.0.2.80"]);
    if let RData::A(_) = &r.answers[0].data {
    } else {
        panic!("not an A record");
    }
}

#[test]
fn several_zones_at_once() {
    let cfg = ConfigDir::new(&zone_with("www IN A 192.0.2.80\n"), "");
    std::fs::write(
        cfg.path("other.zone"),
        "$TTL 60\n@ SOA ns1.other.test. h.other.test. 1 2 3 4 30\n NS ns1\nns1 A 192.0.2.1\nwww A 198.51.100.1\n",
    )
    .unwrap();
    let mut server_file = std::fs::read_to_string(cfg.config()).unwrap();
    server_file.push_str("\n[[zone]]\norigin = \"other.test\"\nfile = \"other.zone\"\n");
    std::fs::write(cfg.config(), server_file).unwrap();
    let srv = Server::start(&cfg);
    assert_eq!(
        answers(&srv.query("www.example.test.", RecordType::A)),
        vec!["192.0.2.80"]
    );
    assert_eq!(
        answers(&srv.query("www.other.test.", RecordType::A)),
        vec!["198.51.100.1"]
    );
    let r = srv.query("nope.other.test.", RecordType::A);
    assert_eq!(r.authorities[0].ttl, 30);
}

/// Details settled against NSD and Knot (ops/conformance/dns-diff.sh runs the full comparison).
#[test]
fn answers_as_the_reference_servers_do() {
    let (_cfg, srv) = server();

    // NS answers carry the in-zone servers' addresses.
    let r = srv.query("example.test.", RecordType::NS);
    assert!(r.authoritative);
    let extra: Vec<String> = r.additionals.iter().map(|a| a.data.to_string()).collect();
    assert_eq!(extra, vec!["192.0.2.53"]);
    // A referral carries sibling glue: ns.nods lies under another delegation.
    let r = srv.query("host.sib.example.test.", RecordType::A);
    assert!(!r.authoritative);
    let glue: Vec<String> = r.additionals.iter().map(|a| a.data.to_string()).collect();
    assert_eq!(glue, vec!["192.0.2.154"]);

    // Relative names inside record data take the origin; TYPEnnn and generic data load.
    let r = srv.query("naptr.example.test.", RecordType::NAPTR);
    assert!(
        r.answers[0]
            .data
            .to_string()
            .ends_with("_sip._tcp.example.test."),
        "{r:?}"
    );
    let r = srv.query("unknown.example.test.", RecordType::Unknown(65300));
    assert_eq!(r.answers.len(), 1);

    // CD is not copied into an authoritative answer; RD is.
    let mut q = build_query("www.example.test.", RecordType::A, None);
    q[2] |= 0x01;
    q[3] |= 0x10;
    let r = query_udp(srv.dns, &q);
    assert!(!r.checking_disabled);
    assert!(r.recursion_desired);
    assert_eq!(answers(&r), vec!["192.0.2.80"]);

    // QCLASS * gets the IN data, not authoritative.
    let mut q = build_query("www.example.test.", RecordType::A, None);
    let n = q.len();
    q[n - 2..].copy_from_slice(&255u16.to_be_bytes());
    let r = query_udp(srv.dns, &q);
    assert_eq!(answers(&r), vec!["192.0.2.80"]);
    assert!(!r.authoritative);

    // Transfers over UDP: AXFR not implemented, IXFR refused.
    let r = srv.query("example.test.", RecordType::AXFR);
    assert_eq!(r.response_code, ResponseCode::NotImp);
    let r = srv.query("example.test.", RecordType::IXFR);
    assert_eq!(r.response_code, ResponseCode::Refused);

    // NOTIFY to a primary-only server: refused.
    let mut q = build_query("example.test.", RecordType::SOA, None);
    q[2] = (q[2] & 0x87) | (4 << 3);
    let r = query_udp(srv.dns, &q);
    assert_eq!(r.response_code, ResponseCode::Refused);

    // A refused name outside every zone says why (Extended DNS Error 20, Not Authoritative).
    let opts = Opts::edns(1232);
    let r = query_udp(
        srv.dns,
        &build_query("www.example.org.", RecordType::A, Some(&opts)),
    );
    assert_eq!(r.response_code, ResponseCode::Refused);
    let ede = r.edns.as_ref().and_then(|e| {
        e.options().as_ref().iter().find_map(|(code, o)| match o {
            hickory_proto::rr::rdata::opt::EdnsOption::Unknown(15, data)
                if u16::from(*code) == 15 =>
            {
                Some(data.clone())
            }
            _ => None,
        })
    });
    assert_eq!(ede, Some(vec![0, 20]));
}
