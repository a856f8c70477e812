//! The closed loop against real processes: two `meridian proxy` sites, each in front of its
//! own server, behind one `meridian serve` whose `proxy-load` check reads their load
//! reports. Client connections held open at one site move DNS answers to the other as its
//! weight factor falls, and back when they close.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::*;
use hickory_proto::rr::RecordType;

/// A site proxy with a report listener on loopback, in front of `server`.
fn site(server: &Backend) -> SiteProxy {
    SiteProxy::start(&format!(
        "[proxy]\naccess_log = \"off\"\nheader_timeout = \"5m\"\nreport = {{ address = \"127.0.0.1:0\" }}\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[pool.p]\nservers = [{{ address = \"{}\" }}]\n",
        server.addr
    ))
}

/// Site a first, b when a sheds or fails; a sheds between 2 and 6 open connections.
fn gslb(a: &SiteProxy, b: &SiteProxy, policy: &str) -> String {
    format!(
        r#"
[[name]]
name = "www"
policy = "{policy}"
pool = "sites"

[pool.sites]
check = "load"
members = [
  {{ site = "a", address = "192.0.2.1", probe = "{}", priority = 1 }},
  {{ site = "b", address = "192.0.2.2", probe = "{}", priority = 2 }},
]

[check.load]
kind = "proxy-load"
interval = "200ms"
rise = 1
fall = 1

[site.a]
shed = {{ signal = "connections", low = 2, high = 6 }}
"#,
        a.report.unwrap(),
        b.report.unwrap()
    )
}

/// A member's entry in `status`.
fn member(srv: &Server, id: &str) -> serde_json::Value {
    let st = srv.status();
    st["pools"][0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no member {id} in status"))
}

/// The answer and ECS scope for client network `10.X.Y.0/24` numbered `i`.
fn ask(srv: &Server, i: u32) -> (String, Option<u8>) {
    let net = format!("10.{}.{}.0/24", i / 256, i % 256);
    let (answers, scope) = srv.query_ecs("www.example.test.", RecordType::A, &net);
    assert_eq!(answers.len(), 1, "{net}: {answers:?}");
    (answers[0].clone(), scope)
}

/// The share of `n` client networks answered with site a, and the scopes seen.
fn share_of_a(srv: &Server, n: u32) -> (f64, Vec<Option<u8>>) {
    let mut on_a = 0;
    let mut scopes = Vec::new();
    for i in 0..n {
        let (answer, scope) = ask(srv, i);
        on_a += usize::from(answer.ends_with("192.0.2.1"));
        scopes.push(scope);
    }
    (on_a as f64 / f64::from(n), scopes)
}

fn hold(proxy: &SiteProxy, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| TcpStream::connect(proxy.addr).expect("connect to the site proxy"))
        .collect()
}

#[test]
fn a_site_past_its_high_watermark_is_left_out_and_sheds_part_of_its_clients_between() {
    let (server_a, server_b) = (Backend::start(200), Backend::start(200));
    let (a, b) = (site(&server_a), site(&server_b));
    let cfg = ConfigDir::new(&zone_with(""), &gslb(&a, &b, "failover"));
    let srv = Server::start(&cfg);
    let factor = |want: f64| {
        wait_until(Duration::from_secs(10), || {
            member(&srv, "a/192.0.2.1")["factor"].as_f64() == Some(want)
        })
    };
    assert!(wait_until(Duration::from_secs(10), || {
        member(&srv, "a/192.0.2.1")["load"]["report"]["servers"] == 1
            && member(&srv, "b/192.0.2.2")["health"] == "up"
    }));
    let (share, scopes) = share_of_a(&srv, 50);
    assert_eq!(share, 1.0);
    assert!(scopes.iter().all(|s| *s == Some(0)), "{scopes:?}");

    // Past the high mark: left out, every client network goes to b; the site stays up.
    let held = hold(&a, 8);
    assert!(factor(0.0), "{}", member(&srv, "a/192.0.2.1"));
    let (share, scopes) = share_of_a(&srv, 50);
    assert_eq!(share, 0.0);
    assert!(scopes.iter().all(|s| *s == Some(0)), "{scopes:?}");
    let a_member = member(&srv, "a/192.0.2.1");
    assert_eq!(a_member["health"], "up");
    assert_eq!(a_member["factor_changes"], 1, "one change for one crossing");
    drop(held);
    assert!(factor(1.0), "{}", member(&srv, "a/192.0.2.1"));
    assert_eq!(member(&srv, "a/192.0.2.1")["factor_changes"], 2);
    assert_eq!(share_of_a(&srv, 50).0, 1.0);

    // Half way between the marks: half the client networks stay on a, each /24 as a whole.
    let held = hold(&a, 4);
    assert!(factor(0.5), "{}", member(&srv, "a/192.0.2.1"));
    let (share, scopes) = share_of_a(&srv, 1000);
    assert!((share - 0.5).abs() <= 0.05, "{share} of networks on a");
    assert!(scopes.iter().all(|s| *s == Some(24)), "scope is the /24");
    let metrics = http(srv.control, "GET", "/metrics", None, None).1;
    assert!(
        metrics
            .contains("meridian_member_weight_factor{pool=\"sites\",member=\"a/192.0.2.1\"} 0.5"),
        "{metrics}"
    );
    let why = srv.explain(&[
        "www.example.test",
        "--client",
        "192.0.2.9",
        "--ecs",
        "10.0.7.0/24",
    ]);
    assert!(why.contains("shed to 50%"), "{why}");
    assert!(why.contains("client network 10.0.7.0/24 falls at"), "{why}");
    drop(held);
    assert!(factor(1.0));
}

#[test]
fn weighted_answers_scale_a_shedding_sites_weight() {
    let (server_a, server_b) = (Backend::start(200), Backend::start(200));
    let (a, b) = (site(&server_a), site(&server_b));
    let cfg = ConfigDir::new(&zone_with(""), &gslb(&a, &b, "weighted"));
    let srv = Server::start(&cfg);
    let held = hold(&a, 4);
    assert!(wait_until(Duration::from_secs(10), || {
        member(&srv, "a/192.0.2.1")["factor"].as_f64() == Some(0.5)
            && member(&srv, "b/192.0.2.2")["health"] == "up"
    }));
    // Equal weights, a's halved: one answer in three leads with a, for every client alike.
    let mut first_a = 0;
    for _ in 0..300 {
        let m = srv.query("www.example.test.", RecordType::A);
        first_a += usize::from(m.answers[0].data.to_string() == "192.0.2.1");
    }
    assert_eq!(first_a, 100);
    let (_, scope) = ask(&srv, 3);
    assert_eq!(scope, Some(0), "weights do not depend on the client");
    drop(held);
}

/// Site a's server answers 5xx while everything its probes see stays fine: what site a's
/// clients got takes it out of the DNS answers after two reports, and good answers bring it
/// back after the check's rise.
#[test]
fn errors_its_clients_got_take_a_site_down_before_its_probes_fail() {
    let (server_a, server_b) = (Backend::start(200), Backend::start(200));
    let a = SiteProxy::start(&format!(
        "[proxy]\naccess_log = \"off\"\nreport = {{ address = \"127.0.0.1:0\" }}\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[pool.p]\neject_after = 0\nservers = [{{ address = \"{}\" }}]\n",
        server_a.addr
    ));
    let b = site(&server_b);
    let gslb = gslb(&a, &b, "failover").replace(
        "shed = {",
        "passive = { errors_above = \"20%\", reports = 2, min_requests = 5 }\n# shed = {",
    );
    let cfg = ConfigDir::new(&zone_with(""), &gslb);
    let srv = Server::start(&cfg);
    let answer = || ask(&srv, 1).0;
    assert!(wait_until(Duration::from_secs(10), || {
        member(&srv, "b/192.0.2.2")["health"] == "up" && answer() == "192.0.2.1"
    }));

    server_a.set(503);
    for _ in 0..30 {
        assert_eq!(get(a.addr, "/", "").0, 503);
    }
    assert!(
        wait_until(Duration::from_secs(10), || answer() == "192.0.2.2"),
        "{}",
        member(&srv, "a/192.0.2.1")
    );
    let m = member(&srv, "a/192.0.2.1");
    assert_eq!(m["health"], "down");
    assert_eq!(m["passive"], "errors");
    assert_eq!(m["last_probe"]["up"], true, "its probes still pass: {m}");
    let metrics = http(srv.control, "GET", "/metrics", None, None).1;
    assert!(metrics.contains("meridian_member_tripped{pool=\"sites\",member=\"a/192.0.2.1\"} 1"));

    // The server recovers; good answers dilute the window under the threshold.
    server_a.set(200);
    for _ in 0..200 {
        assert_eq!(get(a.addr, "/", "").0, 200);
    }
    assert!(
        wait_until(Duration::from_secs(10), || answer() == "192.0.2.1"),
        "{}",
        member(&srv, "a/192.0.2.1")
    );
    assert_eq!(member(&srv, "a/192.0.2.1")["passive"], "clear");
}
