//! Load-balanced names: zone-node rules, weighted shares, failover driven by real HTTP probes,
//! `when_all_down`, drains, and per-family judgement.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

#[test]
fn load_balanced_names_are_nodes_of_their_zone() {
    let zone = zone_with(
        "www IN MX 10 mail\n\
         mail IN A 192.0.2.25\n\
         * IN A 192.0.2.99\n\
         alias IN CNAME www\n",
    );
    let gslb = r#"
[[name]]
name = "www"
types = ["A"]
pool = "p"

[[name]]
name = "deep.ent"
pool = "p"

[pool.p]
members = [ { site = "a", address = "192.0.2.10" }, { site = "b", address = "2001:db8::10" } ]
"#;
    let cfg = ConfigDir::new(&zone, gslb);
    let srv = Server::start(&cfg);

    // The binding answers A; the wildcard does not shadow it.
    let r = srv.query("www.example.test.", RecordType::A);
    assert!(r.authoritative);
    assert_eq!(answers(&r), vec!["192.0.2.10"]);
    // AAAA is not bound here: NODATA with the SOA, never NXDOMAIN.
    let r = srv.query("www.example.test.", RecordType::AAAA);
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    // Static records of other types at the same owner.
    let r = srv.query("www.example.test.", RecordType::MX);
    assert_eq!(answers(&r), vec!["10 mail.example.test."]);
    let r = srv.query("www.example.test.", RecordType::TXT);
    assert!(r.answers.is_empty());
    assert_eq!(r.response_code, ResponseCode::NoError);
    // ANY at a load-balanced name answers its addresses.
    let r = srv.query("www.example.test.", RecordType::ANY);
    assert_eq!(answers(&r), vec!["192.0.2.10"]);
    // The name above a load-balanced name is an empty non-terminal, not a wildcard match.
    let r = srv.query("ent.example.test.", RecordType::A);
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    // Both families bound by default.
    let r = srv.query("deep.ent.example.test.", RecordType::AAAA);
    assert_eq!(answers(&r), vec!["2001:db8::10"]);
    // A static CNAME to a load-balanced name is followed and answered by its policy.
    let r = srv.query("alias.example.test.", RecordType::A);
    assert_eq!(r.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(r.answers[1].data.to_string(), "192.0.2.10");
    // The wildcard still covers other names.
    assert_eq!(
        answers(&srv.query("other.example.test.", RecordType::A)),
        vec!["192.0.2.99"]
    );
}

#[test]
fn cname_members_answer_an_alias() {
    let gslb = r#"
[[name]]
name = "cdn"
pool = "p"
[pool.p]
members = [ { site = "edge", cname = "edge.cdn.example.net." } ]
"#;
    let cfg = ConfigDir::new(&zone_with(""), gslb);
    let srv = Server::start(&cfg);
    for t in [RecordType::A, RecordType::AAAA] {
        let r = srv.query("cdn.example.test.", t);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].record_type(), RecordType::CNAME);
        assert_eq!(r.answers[0].data.to_string(), "edge.cdn.example.net.");
    }
}

#[test]
fn weights_hold_within_two_points_over_10000_queries() {
    let gslb = r#"
[[name]]
name = "w"
policy = "weighted"
pool = "p"
answers = 1
[pool.p]
members = [
  { site = "a", address = "192.0.2.1", weight = 5 },
  { site = "b", address = "192.0.2.2", weight = 3 },
  { site = "c", address = "192.0.2.3", weight = 2 },
]
"#;
    let cfg = ConfigDir::new(&zone_with(""), gslb);
    let srv = Server::start(&cfg);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut counts = std::collections::HashMap::new();
    let mut buf = [0u8; 512];
    let n = 10_000;
    for _ in 0..n {
        let q = build_query("w.example.test.", RecordType::A, None);
        sock.send_to(&q, srv.dns).unwrap();
        let (len, _) = sock.recv_from(&mut buf).expect("reply");
        let m = hickory_proto::op::Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(m.answers.len(), 1);
        *counts.entry(m.answers[0].data.to_string()).or_insert(0u32) += 1;
    }
    for (addr, weight) in [("192.0.2.1", 5.0), ("192.0.2.2", 3.0), ("192.0.2.3", 2.0)] {
        let share = f64::from(counts[addr]) / f64::from(n) * 100.0;
        let want = weight / 10.0 * 100.0;
        assert!(
            (share - want).abs() <= 2.0,
            "{addr}: {share:.2}% vs {want}%"
        );
    }
}

fn failover_config(a: &Backend, b: &Backend) -> String {
    format!(
        r#"
[[name]]
name = "fo"
policy = "failover"
pool = "web"
when_all_down = "fail-open"

[[name]]
name = "fb"
policy = "failover"
pool = "web"
when_all_down = "fallback"
fallback = "sorry"

[[name]]
name = "nd"
policy = "all"
pool = "web"
ttl = 20
when_all_down = "nodata"

[pool.web]
check = "fast"
members = [
  {{ site = "one", address = "192.0.2.1", probe = "{a}", priority = 1 }},
  {{ site = "two", address = "192.0.2.2", probe = "{b}", priority = 2 }},
]

[pool.sorry]
members = [ {{ site = "sorry", address = "203.0.113.1" }} ]

[check.fast]
kind = "http"
path = "/health"
interval = "200ms"
timeout = "150ms"
rise = 2
fall = 2
jitter = "0%"
"#,
        a = a.addr,
        b = b.addr
    )
}

#[test]
fn failover_follows_probes_and_all_down_behaves_as_configured() {
    let a = Backend::start(200);
    let b = Backend::start(200);
    let cfg = ConfigDir::new(&zone_with(""), &failover_config(&a, &b));
    let srv = Server::start(&cfg);
    let fo = || answers(&srv.query("fo.example.test.", RecordType::A));

    assert!(wait_until(Duration::from_secs(5), || srv
        .member_health("one/192.0.2.1")
        == "up"));
    assert_eq!(fo(), vec!["192.0.2.1"]);

    // Primary fails: it leaves within interval x fall + one interval (plus scheduling slack).
    a.set(503);
    let t0 = Instant::now();
    assert!(wait_until(Duration::from_secs(5), || fo() == vec!["192.0.2.2"]));
    let took = t0.elapsed();
    assert!(
        took <= Duration::from_millis(600 + 400),
        "left after {took:?}"
    );

    // It returns after `rise` good probes.
    a.set(200);
    let t0 = Instant::now();
    assert!(wait_until(Duration::from_secs(5), || fo() == vec!["192.0.2.1"]));
    let took = t0.elapsed();
    assert!(
        took <= Duration::from_millis(600 + 400),
        "returned after {took:?}"
    );

    // Everything down: each when_all_down choice.
    a.set(503);
    b.set(503);
    assert!(wait_until(Duration::from_secs(5), || {
        srv.member_health("one/192.0.2.1") == "down" && srv.member_health("two/192.0.2.2") == "down"
    }));
    // fail-open: every member not drained or forced down, still by failover order.
    assert_eq!(fo(), vec!["192.0.2.1"]);
    // fallback: the sorry pool.
    assert_eq!(
        answers(&srv.query("fb.example.test.", RecordType::A)),
        vec!["203.0.113.1"]
    );
    // nodata: empty answer, SOA with TTL no longer than the name's (20 < SOA minimum 60).
    let r = srv.query("nd.example.test.", RecordType::A);
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].ttl, 20);

    // A drained member stays out even when failing open.
    let (ok, out) = srv.ctl(&["drain", "one/192.0.2.1"]);
    assert!(ok, "{out}");
    assert_eq!(fo(), vec!["192.0.2.2"]);
    // Taking the last member out would make fo go all-down: refused without --force.
    let (ok, out) = srv.ctl(&["drain", "web/two"]); // POOL/SITE form
    assert!(
        !ok && out.contains("fo.example.test. A would go from fail-open to all-down"),
        "{out}"
    );
    let (ok, _) = srv.ctl(&["drain", "web/two", "--force"]);
    assert!(ok);
    let r = srv.query("fo.example.test.", RecordType::A);
    assert_eq!(
        r.response_code,
        ResponseCode::NoError,
        "never NXDOMAIN or SERVFAIL because of health"
    );
    assert!(r.answers.is_empty());
    // Undrain and recover.
    assert!(srv.ctl(&["undrain", "one/192.0.2.1"]).0);
    assert!(srv.ctl(&["undrain", "two/192.0.2.2"]).0);
    a.set(200);
    assert!(wait_until(Duration::from_secs(5), || srv
        .member_health("one/192.0.2.1")
        == "up"));
    assert_eq!(fo(), vec!["192.0.2.1"]);
    // Forced down beats healthy; forced up beats down. Taking the last usable member out
    // needs --force (the pool's drain safety).
    let (ok, out) = srv.ctl(&["force-down", "one/192.0.2.1"]);
    assert!(!ok && out.contains("below its minimum of 1"), "{out}");
    assert!(srv.ctl(&["force-down", "one/192.0.2.1", "--force"]).0);
    assert_eq!(fo(), vec!["192.0.2.2"]);
    assert!(srv.ctl(&["force-up", "two/192.0.2.2"]).0);
    assert!(srv.ctl(&["undrain", "one/192.0.2.1"]).0);
    assert_eq!(fo(), vec!["192.0.2.1"], "{}", srv.status());
    // Unknown members are refused with a clear message.
    let (ok, _) = srv.ctl(&["drain", "nowhere/192.0.2.77"]);
    assert!(!ok);
}

#[test]
fn all_down_is_judged_per_address_family() {
    let v4 = Backend::start(503);
    let v6 = Backend::start(200);
    let gslb = format!(
        r#"
[[name]]
name = "dual"
policy = "all"
pool = "p"
when_all_down = "nodata"
[pool.p]
check = "c"
members = [
  {{ site = "x", address = "192.0.2.1", probe = "{v4}" }},
  {{ site = "x", address = "2001:db8::1", probe = "{v6}" }},
]
[check.c]
kind = "http"
interval = "200ms"
timeout = "150ms"
"#,
        v4 = v4.addr,
        v6 = v6.addr
    );
    let cfg = ConfigDir::new(&zone_with(""), &gslb);
    let srv = Server::start(&cfg);
    assert!(wait_until(Duration::from_secs(5), || srv
        .member_health("x/192.0.2.1")
        == "down"));
    let r = srv.query("dual.example.test.", RecordType::A);
    assert!(r.answers.is_empty(), "IPv4 all down: nodata");
    let r = srv.query("dual.example.test.", RecordType::AAAA);
    assert_eq!(answers(&r), vec!["2001:db8::1"]);
}

#[test]
fn apex_names_and_delegations_inside_a_load_balanced_zone() {
    let zone = zone_with(
        "@ IN MX 10 mail\n\
         mail IN A 192.0.2.25\n\
         sub IN NS ns1.sub\n\
         ns1.sub IN A 192.0.2.60\n",
    );
    let gslb = r#"
[[name]]
name = "@"
pool = "p"

[[name]]
name = "www"
pool = "p"

[pool.p]
members = [ { site = "a", address = "192.0.2.10" }, { site = "b", address = "2001:db8::10" } ]
"#;
    let cfg = ConfigDir::new(&zone, gslb);
    let srv = Server::start(&cfg);

    // The apex answers its addresses from the pool (what Route 53 calls an alias at the apex),
    // and keeps SOA, NS and MX as static data.
    let r = srv.query("example.test.", RecordType::A);
    assert!(r.authoritative);
    assert_eq!(answers(&r), vec!["192.0.2.10"]);
    assert_eq!(
        answers(&srv.query("example.test.", RecordType::AAAA)),
        vec!["2001:db8::10"]
    );
    assert_eq!(
        srv.query("example.test.", RecordType::SOA).answers[0].record_type(),
        RecordType::SOA
    );
    assert_eq!(
        answers(&srv.query("example.test.", RecordType::NS)),
        vec!["ns1.example.test."]
    );
    assert_eq!(
        answers(&srv.query("example.test.", RecordType::MX)),
        vec!["10 mail.example.test."]
    );
    let r = srv.query("example.test.", RecordType::TXT);
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());

    // Below a delegation the child answers: a referral with glue, not the apex's pool, not
    // NXDOMAIN; over TCP the same.
    for name in [
        "sub.example.test.",
        "www.sub.example.test.",
        "a.b.sub.example.test.",
    ] {
        let r = srv.query(name, RecordType::A);
        assert_eq!(r.response_code, ResponseCode::NoError, "{name}");
        assert!(!r.authoritative, "{name}");
        assert!(r.answers.is_empty(), "{name}");
        assert_eq!(r.authorities[0].record_type(), RecordType::NS, "{name}");
        assert_eq!(r.additionals[0].data.to_string(), "192.0.2.60", "{name}");
    }
    // Load-balanced names beside the delegation are untouched by it.
    assert_eq!(
        answers(&srv.query("www.example.test.", RecordType::A)),
        vec!["192.0.2.10"]
    );
}

#[test]
fn a_load_balanced_name_under_a_delegation_is_refused() {
    let zone = zone_with("sub IN NS ns1.sub\nns1.sub IN A 192.0.2.60\n");
    let gslb = r#"
[[name]]
name = "www.sub"
pool = "p"
[pool.p]
members = [ { site = "a", address = "192.0.2.10" } ]
"#;
    let cfg = ConfigDir::new(&zone, gslb);
    let (ok, err) = check_config(&cfg);
    assert!(!ok);
    assert!(
        err.contains("at or below the delegation sub.example.test."),
        "{err}"
    );
    assert!(err.contains("example.test.gslb.toml:"), "{err}");
}
