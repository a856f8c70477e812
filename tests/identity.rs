//! Node identity: NSID (RFC 5001) and the CHAOS names `id.server` and `hostname.bind`.

mod common;

use common::*;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

fn nsid(m: &Message) -> Option<String> {
    match m.edns.as_ref()?.option(EdnsCode::NSID)? {
        EdnsOption::NSID(p) => Some(String::from_utf8_lossy(p.as_ref()).into_owned()),
        EdnsOption::Unknown(_, data) => Some(String::from_utf8_lossy(data).into_owned()),
        _ => None,
    }
}

fn chaos(srv: &Server, name: &str) -> Message {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    let mut q = Query::query(Name::from_ascii(name).unwrap(), RecordType::TXT);
    q.set_query_class(DNSClass::CH);
    m.add_query(q);
    query_udp(srv.dns, &m.to_vec().unwrap())
}

fn txt(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(t.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn nsid_and_chaos_names_tell_which_node_answered() {
    let cfg = ConfigDir::new_with(
        &zone_with("www IN A 192.0.2.80\n"),
        "",
        "identity = \"fra-2.example.net\"",
        "",
    );
    let srv = Server::start(&cfg);
    let asks = Opts {
        nsid: true,
        ..Default::default()
    };
    for (name, rtype) in [
        ("www.example.test.", RecordType::A),
        ("nope.example.test.", RecordType::A),
    ] {
        let m = query_udp(srv.dns, &build_query(name, rtype, Some(&asks)));
        assert_eq!(nsid(&m).as_deref(), Some("fra-2.example.net"), "{name}");
    }
    let m = query_tcp(
        srv.dns,
        &build_query("www.example.test.", RecordType::A, Some(&asks)),
    );
    assert_eq!(nsid(&m).as_deref(), Some("fra-2.example.net"));
    assert_eq!(answers(&m), vec!["192.0.2.80"]);
    // Not asked, not sent.
    let m = query_udp(
        srv.dns,
        &build_query("www.example.test.", RecordType::A, Some(&Opts::edns(1232))),
    );
    assert_eq!(nsid(&m), None);

    for name in ["id.server.", "hostname.bind.", "ID.Server."] {
        let m = chaos(&srv, name);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        // Not authoritative: there is no CH zone (NSD and Knot answer the same way).
        assert!(!m.metadata.authoritative, "{name}");
        assert_eq!(txt(&m), vec!["fra-2.example.net"], "{name}");
    }
}

#[test]
fn without_an_identity_nothing_is_revealed() {
    let cfg = ConfigDir::new(&zone_with("www IN A 192.0.2.80\n"), "");
    let srv = Server::start(&cfg);
    let asks = Opts {
        nsid: true,
        ..Default::default()
    };
    let m = query_udp(
        srv.dns,
        &build_query("www.example.test.", RecordType::A, Some(&asks)),
    );
    assert_eq!(nsid(&m), None);
    assert_eq!(answers(&m), vec!["192.0.2.80"]);
    assert_eq!(
        chaos(&srv, "id.server.").metadata.response_code,
        ResponseCode::Refused
    );
}

#[test]
fn a_bad_identity_is_a_config_error() {
    let cfg = ConfigDir::new_with(&zone_with(""), "", "identity = \"\"", "");
    let (ok, err) = check_config(&cfg);
    assert!(!ok);
    assert!(
        err.contains("server.identity") && err.contains("meridian.toml:"),
        "{err}"
    );
}
