//! DNS cookies (RFC 7873, server cookies per RFC 9018), on by default.

mod common;

use std::net::IpAddr;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::RecordType;
use meridian::dns::cookie::{self, Secrets};

const CLIENT: [u8; 8] = [0xc1, 0x1e, 0x27, 0x00, 0x0c, 0x00, 0x0c, 0x1e];
const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn reply_cookie(m: &Message) -> Option<Vec<u8>> {
    match m.edns.as_ref()?.option(EdnsCode::Cookie)? {
        EdnsOption::Unknown(_, data) => Some(data.clone()),
        _ => None,
    }
}

fn ask(srv: &Server, name: &str, rtype: RecordType, cookie: &[u8]) -> Message {
    let opts = Opts {
        cookie: Some(cookie.to_vec()),
        ..Default::default()
    };
    query_udp(srv.dns, &build_query(name, rtype, Some(&opts)))
}

fn zone() -> String {
    zone_with("www IN A 192.0.2.80\n*.wild IN A 192.0.2.81\n")
}

/// A query with no question and only an OPT carrying a client cookie.
fn cookie_only(cookie: &[u8]) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    q.extend_from_slice(&((4 + cookie.len()) as u16).to_be_bytes());
    q.extend_from_slice(&[0, 10]);
    q.extend_from_slice(&(cookie.len() as u16).to_be_bytes());
    q.extend_from_slice(cookie);
    q
}

#[test]
fn every_path_returns_a_server_cookie_that_validates_with_the_node_secret() {
    let cfg = ConfigDir::new(&zone(), "");
    let srv = Server::start(&cfg);
    let secrets =
        Secrets::parse(&std::fs::read_to_string(cfg.path("state/cookie.secret")).unwrap())
            .expect("serve keeps its secret in the state directory");
    // Fast path (static answer), general path (wildcard), NXDOMAIN, TCP.
    let replies = [
        ask(&srv, "www.example.test.", RecordType::A, &CLIENT),
        ask(&srv, "x.wild.example.test.", RecordType::A, &CLIENT),
        ask(&srv, "nope.example.test.", RecordType::A, &CLIENT),
        query_tcp(
            srv.dns,
            &build_query(
                "www.example.test.",
                RecordType::A,
                Some(&Opts {
                    cookie: Some(CLIENT.to_vec()),
                    ..Default::default()
                }),
            ),
        ),
    ];
    for m in &replies {
        let c = reply_cookie(m).expect("a cookie in the reply");
        assert_eq!(c.len(), 24);
        assert_eq!(&c[..8], &CLIENT);
        assert!(secrets.validates(&c, LOCAL, cookie::now()), "{c:02x?}");
    }
    assert_eq!(answers(&replies[0]), vec!["192.0.2.80"]);
    assert_eq!(answers(&replies[1]), vec!["192.0.2.81"]);
    assert_eq!(replies[2].response_code, ResponseCode::NXDomain);

    // Sending the server cookie back is answered as usual, with a fresh cookie.
    let again = ask(
        &srv,
        "www.example.test.",
        RecordType::A,
        &reply_cookie(&replies[0]).unwrap(),
    );
    assert_eq!(answers(&again), vec!["192.0.2.80"]);
    assert!(secrets.validates(&reply_cookie(&again).unwrap(), LOCAL, cookie::now()));

    // No cookie asked, none sent.
    let plain = query_udp(
        srv.dns,
        &build_query("www.example.test.", RecordType::A, Some(&Opts::edns(1232))),
    );
    assert!(reply_cookie(&plain).is_none());

    // A cookie-only query learns a server cookie (RFC 7873 section 5.4).
    let m = query_udp(srv.dns, &cookie_only(&CLIENT));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.queries.is_empty() && m.answers.is_empty());
    assert!(secrets.validates(&reply_cookie(&m).unwrap(), LOCAL, cookie::now()));

    // Malformed cookies are FORMERR, on every path.
    for bad in [vec![1u8; 5], vec![1u8; 12], vec![1u8; 41]] {
        let m = ask(&srv, "www.example.test.", RecordType::A, &bad);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::FormErr,
            "{} bytes",
            bad.len()
        );
        let m = query_udp(srv.dns, &cookie_only(&bad));
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::FormErr,
            "{} bytes, no question",
            bad.len()
        );
    }

    // The secret survives a restart.
    drop(srv);
    let srv = Server::start(&cfg);
    let m = ask(&srv, "www.example.test.", RecordType::A, &CLIENT);
    assert!(secrets.validates(&reply_cookie(&m).unwrap(), LOCAL, cookie::now()));
}

#[test]
fn nodes_sharing_a_secret_file_validate_each_others_cookies_and_rollover_keeps_the_old_one() {
    let old = "00112233445566778899aabbccddeeff\n";
    let cfg_a = ConfigDir::new_with(&zone(), "", "cookie_secret_file = \"cookie.key\"", "");
    cfg_a.write("cookie.key", old);
    let cfg_b = ConfigDir::new_with(&zone(), "", "cookie_secret_file = \"cookie.key\"", "");
    cfg_b.write(
        "cookie.key",
        &format!("ffeeddccbbaa99887766554433221100\n{old}"),
    );
    let a = Server::start(&cfg_a);
    let b = Server::start(&cfg_b);
    let from_a = reply_cookie(&ask(&a, "www.example.test.", RecordType::A, &CLIENT)).unwrap();
    let from_b = reply_cookie(&ask(&b, "www.example.test.", RecordType::A, &CLIENT)).unwrap();
    let secrets_b =
        Secrets::parse(&std::fs::read_to_string(cfg_b.path("cookie.key")).unwrap()).unwrap();
    let secrets_a = Secrets::parse(old).unwrap();
    // B signs with its new secret and still accepts A's cookie (its previous secret).
    assert!(secrets_b.validates(&from_b, LOCAL, cookie::now()));
    assert!(secrets_b.validates(&from_a, LOCAL, cookie::now()));
    assert!(!secrets_a.validates(&from_b, LOCAL, cookie::now()));
    assert!(!cfg_a.path("state/cookie.secret").exists());
}

#[test]
fn cookies_can_be_switched_off_and_a_bad_secret_file_is_a_config_error() {
    let cfg = ConfigDir::new_with(&zone(), "", "cookies = false", "");
    let srv = Server::start(&cfg);
    let m = ask(&srv, "www.example.test.", RecordType::A, &CLIENT);
    assert_eq!(answers(&m), vec!["192.0.2.80"]);
    assert!(reply_cookie(&m).is_none());

    let cfg = ConfigDir::new_with(&zone(), "", "cookie_secret_file = \"cookie.key\"", "");
    cfg.write("cookie.key", "not hex\n");
    let (ok, err) = check_config(&cfg);
    assert!(!ok);
    assert!(
        err.contains("server.cookie_secret_file") && err.contains("cookie.key"),
        "{err}"
    );
}
