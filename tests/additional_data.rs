//! Additional-section data and CNAMEs into delegations, answered as NSD and Knot answer them,
//! over real UDP and TCP, with and without EDNS, in mixed case.

mod common;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

fn zone() -> String {
    let mut many = String::new();
    for i in 1..=40 {
        many.push_str(&format!("many IN A 192.0.2.{i}\n"));
    }
    let mut wide = String::new();
    for i in 0..20 {
        wide.push_str(&format!(
            "wide IN NS ns{i}.wide\nns{i}.wide IN AAAA 2001:db8:1::{i:x}\nsibs IN NS ns{i}.wide\n"
        ));
    }
    zone_with(&format!(
        "@ IN MX 10 mail\n\
         mail IN A 192.0.2.25\n\
         mail IN AAAA 2001:db8::25\n\
         *.wmx IN MX 10 mail\n\
         _sip._tcp IN SRV 10 5 5060 sip\n\
         sip IN A 192.0.2.60\n\
         twice IN MX 10 mail\n\
         twice IN MX 20 MAIL\n\
         cut IN MX 10 ns.sub\n\
         out IN MX 10 mx.example.org.\n\
         viacname IN MX 10 alias\n\
         alias IN CNAME mail\n\
         lbmx IN MX 10 www\n\
         sub IN NS ns.sub\n\
         sub IN NS ns.elsewhere.org.\n\
         ns.sub IN A 192.0.2.153\n\
         to-sub IN CNAME host.sub\n\
         to-chain IN CNAME to-sub\n\
         bigmx IN MX 10 many\n\
         {many}{wide}"
    ))
}

const GSLB: &str = r#"
[[name]]
name = "www"
pool = "p"

[pool.p]
members = [ { site = "a", address = "192.0.2.10" } ]
"#;

/// The additional section as sorted `owner type data` lines (the OPT is not in it).
fn additional(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .additionals
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r.name.to_ascii().to_ascii_lowercase(),
                r.record_type(),
                r.data
            )
        })
        .collect();
    v.sort();
    v
}

/// Every way a client asks: UDP and TCP, without EDNS and with it.
fn ask(srv: &Server, name: &str, rtype: RecordType) -> Vec<(String, Message)> {
    let mut out = Vec::new();
    for (label, opts) in [("plain", None), ("edns", Some(Opts::edns(1232)))] {
        let q = build_query(name, rtype, opts.as_ref());
        out.push((
            format!("{name} {rtype} {label} udp"),
            query_udp(srv.dns, &q),
        ));
        out.push((
            format!("{name} {rtype} {label} tcp"),
            query_tcp(srv.dns, &q),
        ));
    }
    out
}

#[test]
fn mx_and_srv_answers_carry_their_targets_addresses() {
    let cfg = ConfigDir::new(&zone(), GSLB);
    let srv = Server::start(&cfg);
    let mail = vec![
        "mail.example.test. A 192.0.2.25".to_string(),
        "mail.example.test. AAAA 2001:db8::25".to_string(),
    ];
    // The apex MX, in mixed case (0x20), from a wildcard, and two MX to one host (its
    // addresses once).
    for name in [
        "example.test.",
        "ExAmPlE.tEsT.",
        "x.wmx.example.test.",
        "A.b.WMX.example.TEST.",
        "twice.example.test.",
    ] {
        for (what, r) in ask(&srv, name, RecordType::MX) {
            assert_eq!(r.response_code, ResponseCode::NoError, "{what}");
            assert!(r.authoritative && !r.truncation, "{what}");
            assert!(!r.answers.is_empty(), "{what}");
            assert_eq!(additional(&r), mail, "{what}");
            assert!(r.authorities.is_empty(), "{what}");
        }
    }
    for (what, r) in ask(&srv, "_SIP._tcp.example.test.", RecordType::SRV) {
        assert_eq!(answers(&r), vec!["10 5 5060 sip.example.test."], "{what}");
        assert_eq!(
            additional(&r),
            vec!["sip.example.test. A 192.0.2.60"],
            "{what}"
        );
    }
    // NS answers carry their in-zone servers' addresses too.
    let r = srv.query("example.test.", RecordType::NS);
    assert_eq!(additional(&r), vec!["ns1.example.test. A 192.0.2.53"]);
}

#[test]
fn only_authoritative_data_of_the_zone_is_added() {
    let cfg = ConfigDir::new(&zone(), GSLB);
    let srv = Server::start(&cfg);
    // Below a cut (glue is not authoritative), out of zone, at a CNAME, and a load-balanced
    // target (its answer depends on the client: the client asks for it).
    for name in [
        "cut.example.test.",
        "out.example.test.",
        "viacname.example.test.",
        "lbmx.example.test.",
    ] {
        for (what, r) in ask(&srv, name, RecordType::MX) {
            assert_eq!(answers(&r).len(), 1, "{what}");
            assert!(r.additionals.is_empty(), "{what}: {:?}", additional(&r));
        }
    }
}

#[test]
fn additional_data_is_dropped_to_fit_without_setting_tc() {
    let cfg = ConfigDir::new(&zone(), GSLB);
    let srv = Server::start(&cfg);
    // 40 addresses do not fit 512 bytes: the MX goes alone, TC clear.
    let q = build_query("bigmx.example.test.", RecordType::MX, None);
    let raw = query_udp_raw(srv.dns, &q).expect("a reply");
    assert!(raw.len() <= 512);
    let r = Message::from_vec(&raw).unwrap();
    assert!(!r.truncation);
    assert_eq!(answers(&r), vec!["10 many.example.test."]);
    assert!(r.additionals.is_empty());
    // They fit 1232 bytes, and TCP.
    let q = build_query(
        "bigmx.example.test.",
        RecordType::MX,
        Some(&Opts::edns(1232)),
    );
    assert_eq!(query_udp(srv.dns, &q).additionals.len(), 40);
    let q = build_query("bigmx.example.test.", RecordType::MX, None);
    assert_eq!(query_tcp(srv.dns, &q).additionals.len(), 40);

    // A referral whose in-domain glue does not fit is truncated (RFC 9471)...
    let q = build_query("host.wide.example.test.", RecordType::A, None);
    let r = query_udp(srv.dns, &q);
    assert!(r.truncation);
    assert_eq!(query_tcp(srv.dns, &q).additionals.len(), 20);
    // ...while sibling glue is optional: dropped to fit, TC clear.
    let q = build_query("host.sibs.example.test.", RecordType::A, None);
    let raw = query_udp_raw(srv.dns, &q).expect("a reply");
    let r = Message::from_vec(&raw).unwrap();
    assert!(raw.len() <= 512 && !r.truncation);
    assert_eq!(r.authorities.len(), 20);
    assert!(r.additionals.len() < 20);
}

#[test]
fn a_cname_into_a_delegation_is_followed_by_the_referral() {
    let cfg = ConfigDir::new(&zone(), GSLB);
    let srv = Server::start(&cfg);
    for (name, rtype, chain) in [
        ("to-sub.example.test.", RecordType::A, 1),
        ("TO-Sub.Example.Test.", RecordType::AAAA, 1),
        ("to-chain.example.test.", RecordType::A, 2),
    ] {
        for (what, r) in ask(&srv, name, rtype) {
            assert_eq!(r.response_code, ResponseCode::NoError, "{what}");
            // AA: the alias is this zone's data (NSD and Knot set it too).
            assert!(r.authoritative, "{what}");
            assert!(!r.truncation, "{what}");
            let types: Vec<_> = r.answers.iter().map(|r| r.record_type()).collect();
            assert_eq!(types, vec![RecordType::CNAME; chain], "{what}");
            let mut ns: Vec<String> = r
                .authorities
                .iter()
                .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
                .collect();
            ns.sort();
            assert_eq!(
                ns,
                vec![
                    "sub.example.test. NS ns.elsewhere.org.",
                    "sub.example.test. NS ns.sub.example.test."
                ],
                "{what}"
            );
            assert_eq!(
                additional(&r),
                vec!["ns.sub.example.test. A 192.0.2.153"],
                "{what}"
            );
        }
    }
}

#[test]
fn minimal_responses_leave_out_optional_data_but_keep_glue() {
    let cfg = ConfigDir::new_with(&zone(), GSLB, "minimal_responses = true", "");
    let srv = Server::start(&cfg);
    for (name, rtype) in [
        ("example.test.", RecordType::MX),
        ("x.wmx.example.test.", RecordType::MX),
        ("_sip._tcp.example.test.", RecordType::SRV),
        ("example.test.", RecordType::NS),
    ] {
        for (what, r) in ask(&srv, name, rtype) {
            assert!(!r.answers.is_empty(), "{what}");
            assert!(r.additionals.is_empty(), "{what}: {:?}", additional(&r));
        }
    }
    let r = srv.query("to-sub.example.test.", RecordType::A);
    assert_eq!(additional(&r), vec!["ns.sub.example.test. A 192.0.2.153"]);
    let r = srv.query("host.sub.example.test.", RecordType::A);
    assert_eq!(additional(&r), vec!["ns.sub.example.test. A 192.0.2.153"]);
}
