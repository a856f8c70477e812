//! The operator surface over real HTTP: every read call, drain safety with dry runs and
//! forcing, override expiry, the audit log across a restart, the bearer token off loopback,
//! and Prometheus metrics parsed by a text-format parser as queries move them.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use hickory_proto::rr::RecordType;
use serde_json::Value;

const GSLB: &str = r#"
[[name]]
name = "www"
policy = "all"
pool = "web"

[[name]]
name = "heavy"
policy = "weighted"
pool = "half"

[pool.web]
min_usable = 2
members = [
  { site = "a", address = "192.0.2.1" },
  { site = "b", address = "192.0.2.2" },
  { site = "c", address = "192.0.2.3" },
]

[pool.half]
min_weight_percent = 50
members = [
  { site = "x", address = "198.51.100.1", weight = 3 },
  { site = "y", address = "198.51.100.2", weight = 1 },
]
"#;

fn server(server_extra: &str) -> (ConfigDir, Server) {
    let cfg = ConfigDir::new_with(&zone_with(""), GSLB, server_extra, "");
    let srv = Server::start(&cfg);
    (cfg, srv)
}

fn get(srv: &Server, path: &str) -> Value {
    let (code, body) = http(srv.control, "GET", path, None, None);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

fn post(srv: &Server, path: &str) -> (u16, Value) {
    let (code, body) = http(srv.control, "POST", path, None, None);
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn www(srv: &Server) -> Vec<String> {
    answers(&srv.query("www.example.test.", RecordType::A))
}

#[test]
fn every_read_call_answers_json() {
    let (_cfg, srv) = server("");
    let api = get(&srv, "/api");
    assert!(api["calls"].as_array().unwrap().len() >= 10);
    assert_eq!(get(&srv, "/healthz")["ok"], true);
    let zones = get(&srv, "/zones");
    assert_eq!(zones[0]["origin"], "example.test.");
    assert_eq!(zones[0]["serial"], 1);
    assert_eq!(zones[0]["load_balanced"], 2);
    let names = get(&srv, "/names");
    assert_eq!(names[0]["name"], "www.example.test.");
    assert_eq!(names[0]["policy"], "all");
    let pools = get(&srv, "/pools");
    let web = pools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "web")
        .unwrap();
    assert_eq!(web["min_usable"], 2);
    let members = get(&srv, "/members");
    assert_eq!(members.as_array().unwrap().len(), 5);
    for key in ["health", "admin", "flaps", "weight", "usable", "last_probe"] {
        assert!(
            members[0].get(key).is_some(),
            "member lacks {key}: {}",
            members[0]
        );
    }
    assert!(get(&srv, "/events").is_array());
    assert!(get(&srv, "/audit").is_array());
    let status = get(&srv, "/status");
    assert!(status["config_loaded_at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(status["config_version"], 1);

    // The status page itself, and JSON errors with the right status.
    let (code, page) = http(srv.control, "GET", "/", None, None);
    assert_eq!(code, 200);
    assert!(page.contains("<title>Meridian status</title>"));
    let (code, body) = http(srv.control, "GET", "/nothing", None, None);
    assert_eq!(code, 404);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("no such call"));
    let (code, _) = http(srv.control, "DELETE", "/status", None, None);
    assert_eq!(code, 405);
    let (code, body) = post(&srv, "/members/a%2F192.0.2.1/explode");
    assert_eq!(code, 400, "{body}");
    let (code, _) = post(&srv, "/members/nowhere%2F192.0.2.9/drain");
    assert_eq!(code, 404);
    let (code, body) = post(&srv, "/members/a%2F192.0.2.1/drain?expires=soon");
    assert_eq!(code, 400, "{body}");
    let (code, body) = http(srv.control, "POST", "/explain", None, Some("{\"name\": 5}"));
    assert_eq!(code, 400, "{body}");
    let ask = r#"{"name": "heavy.example.test", "qtype": "A", "client": "192.0.2.1"}"#;
    let (code, body) = http(srv.control, "POST", "/explain", None, Some(ask));
    assert_eq!(code, 200, "{body}");
    let x: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(x["reason"], "healthy");
    assert_eq!(x["answer"].as_array().unwrap().len(), 1);
    let (code, _) = http(srv.control, "GET", "/reload", None, None);
    assert_eq!(code, 405);
}

#[test]
fn drains_keep_pools_above_their_minimum_unless_forced() {
    let (_cfg, srv) = server("");
    assert_eq!(www(&srv), ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);

    // 3 usable -> 2: allowed.
    let (code, body) = post(&srv, "/members/a%2F192.0.2.1/drain");
    assert_eq!(code, 200, "{body}");
    assert_eq!(www(&srv), ["192.0.2.2", "192.0.2.3"]);

    // 2 -> 1 would break min_usable = 2: refused, nothing changes.
    let (code, body) = post(&srv, "/members/b%2F192.0.2.2/drain");
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("below its minimum of 2"),
        "{body}"
    );
    assert_eq!(www(&srv), ["192.0.2.2", "192.0.2.3"]);

    // A dry run shows the refusal and the answers that would change, and changes nothing.
    let (code, dry) = post(&srv, "/members/b%2F192.0.2.2/drain?dry_run=true");
    assert_eq!(code, 200, "{dry}");
    assert_eq!(dry["would_be_refused"], true);
    let change = dry["answers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "www.example.test." && a["family"] == "A")
        .unwrap_or_else(|| panic!("{dry}"));
    assert_eq!(
        change["before"],
        serde_json::json!(["192.0.2.2", "192.0.2.3"])
    );
    assert_eq!(change["after"], serde_json::json!(["192.0.2.3"]));
    assert_eq!(change["changes"], true);
    assert_eq!(www(&srv), ["192.0.2.2", "192.0.2.3"]);

    // Forced: applied.
    let (code, body) = post(&srv, "/members/b%2F192.0.2.2/drain?force=true");
    assert_eq!(code, 200, "{body}");
    assert_eq!(www(&srv), ["192.0.2.3"]);

    // By weight: x carries 75% of its pool; draining it leaves 25% < 50%.
    let (code, body) = post(&srv, "/members/x%2F198.51.100.1/drain");
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("25% of its weight"),
        "{body}"
    );
    let (code, body) = post(&srv, "/members/y%2F198.51.100.2/drain");
    assert_eq!(code, 200, "{body}");

    // ctl speaks the same API, flags included.
    let (ok, out) = srv.ctl(&["undrain", "b/192.0.2.2"]);
    assert!(ok, "{out}");
    let (ok, out) = srv.ctl(&["force-down", "b/192.0.2.2"]);
    assert!(!ok && out.contains("below its minimum"), "{out}");
    let (ok, out) = srv.ctl(&["force-down", "b/192.0.2.2", "--dry-run"]);
    assert!(ok && out.contains("would be refused"), "{out}");
    let (ok, out) = srv.ctl(&["force-up", "a/192.0.2.1"]);
    assert!(ok, "{out}");

    // Every mutating call is in the audit log, refused ones too; dry runs are not.
    let audit = get(&srv, "/audit");
    let calls: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["call"].as_str().unwrap())
        .collect();
    assert_eq!(
        calls,
        [
            "force-up a/192.0.2.1",
            "force-down b/192.0.2.2",
            "undrain b/192.0.2.2",
            "drain y/198.51.100.2",
            "drain x/198.51.100.1",
            "drain b/192.0.2.2",
            "drain b/192.0.2.2",
            "drain a/192.0.2.1",
        ]
    );
    assert_eq!(audit[5]["outcome"]["forced"], true);
    assert!(audit[6]["outcome"]["refused"].is_string());
    assert!(audit[0]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    let (ok, out) = srv.ctl(&["audit", "--limit", "2"]);
    assert!(ok && out.contains("force-up a/192.0.2.1"), "{out}");
    assert!(
        out.starts_with("AT ") && out.contains("Z ("),
        "a table with ISO times: {out}"
    );
    let (ok, out) = srv.ctl(&["audit", "--limit", "2", "--json"]);
    assert!(ok && serde_json::from_str::<Value>(&out).is_ok(), "{out}");
}

#[test]
fn an_override_expires_on_its_own() {
    let (_cfg, srv) = server("");
    let (ok, out) = srv.ctl(&["drain", "a/192.0.2.1", "--expires", "1s"]);
    assert!(ok, "{out}");
    let member = |srv: &Server| {
        get(srv, "/members")
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == "a/192.0.2.1")
            .cloned()
            .unwrap()
    };
    assert_eq!(member(&srv)["admin"], "drained");
    assert!(member(&srv)["admin_expires_at"].is_u64());
    assert!(wait_until(Duration::from_secs(10), || member(&srv)
        ["admin"]
        == "normal"));
    assert_eq!(www(&srv), ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    let audit = get(&srv, "/audit");
    assert_eq!(audit[0]["call"], "expire");
    assert!(get(&srv, "/events")
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["member"] == "a/192.0.2.1" && e["to"] == "drained"));
}

#[test]
fn the_audit_log_survives_a_restart() {
    let (cfg, srv) = server("");
    let (code, _) = post(&srv, "/members/c%2F192.0.2.3/drain");
    assert_eq!(code, 200);
    srv.kill9();
    let srv = Server::start(&cfg);
    let audit = get(&srv, "/audit");
    assert_eq!(audit[0]["call"], "drain c/192.0.2.3");
    assert_eq!(www(&srv), ["192.0.2.1", "192.0.2.2"]);
}

#[test]
fn off_loopback_the_endpoint_needs_its_token() {
    // Without a token file, a non-loopback endpoint does not start.
    let cfg = ConfigDir::new_with(&zone_with(""), GSLB, "", "");
    let err = serve_fails(&cfg, "0.0.0.0:0");
    assert!(err.contains("not on loopback"), "{err}");

    let token = "s3cret-token-for-tests-0123456789";
    let cfg = ConfigDir::new_with(&zone_with(""), GSLB, "control_token_file = \"token\"", "");
    cfg.write("token", &format!("{token}\n"));
    let srv = Server::start_with(&cfg, &["--admin", "0.0.0.0:0"]);
    let control: SocketAddr = format!("127.0.0.1:{}", srv.control.port()).parse().unwrap();
    let (code, body) = http(control, "GET", "/status", None, None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("Bearer"));
    let (code, _) = http(
        control,
        "GET",
        "/status",
        Some("wrong-token-wrong-token"),
        None,
    );
    assert_eq!(code, 401);
    let (code, _) = http(control, "POST", "/members/a%2F192.0.2.1/drain", None, None);
    assert_eq!(code, 401);
    let (code, _) = http(control, "GET", "/status", Some(token), None);
    assert_eq!(code, 200);
    let (code, _) = http(control, "GET", "/", None, None);
    assert_eq!(code, 200, "the page itself holds no data");

    // ctl with and without the token file.
    let ctl = |extra: &[&str]| {
        std::process::Command::new(BIN)
            .args(["ctl", "--control", &control.to_string()])
            .args(extra)
            .arg("status")
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(!ctl(&[]));
    assert!(ctl(&["--token-file", cfg.path("token").to_str().unwrap()]));
    // explain takes the token file the same way.
    let explain = |extra: &[&str]| {
        std::process::Command::new(BIN)
            .args(["explain", "www.example.test", "--client", "192.0.2.1"])
            .args(["--control", &control.to_string()])
            .args(extra)
            .env_remove("MERIDIAN_TOKEN_FILE")
            .output()
            .unwrap()
    };
    assert!(!explain(&[]).status.success());
    let out = explain(&["--token-file", cfg.path("token").to_str().unwrap()]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("reason:    healthy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn scrape(srv: &Server) -> prometheus_parse::Scrape {
    let (code, body) = http(srv.control, "GET", "/metrics", None, None);
    assert_eq!(code, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format")
}

fn value(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn metrics_parse_and_move_with_queries() {
    let (_cfg, srv) = server("metrics_names = [\"www.example.test\"]");
    let before = scrape(&srv);
    assert!(before
        .samples
        .iter()
        .all(|s| s.metric.starts_with("meridian_")));
    let q = |s: &prometheus_parse::Scrape, qtype: &str, rcode: &str| {
        value(
            s,
            "meridian_queries_total",
            &[
                ("zone", "example.test."),
                ("qtype", qtype),
                ("rcode", rcode),
                ("transport", "udp"),
            ],
        )
    };
    for _ in 0..5 {
        www(&srv);
    }
    for _ in 0..3 {
        srv.query("missing.example.test.", RecordType::A);
    }
    srv.query("ns1.example.test.", RecordType::AAAA);
    query_tcp(
        srv.dns,
        &build_query("www.example.test.", RecordType::A, None),
    );
    let (_, scope) = srv.query_ecs("www.example.test.", RecordType::A, "10.1.0.0/24");
    assert_eq!(scope, Some(0));
    let after = scrape(&srv);
    // Five plain queries and the ECS one answered www over UDP.
    assert_eq!(q(&after, "A", "NOERROR") - q(&before, "A", "NOERROR"), 6.0);
    assert_eq!(
        q(&after, "A", "NXDOMAIN") - q(&before, "A", "NXDOMAIN"),
        3.0
    );
    assert_eq!(
        q(&after, "AAAA", "NOERROR") - q(&before, "AAAA", "NOERROR"),
        1.0
    );
    let tcp = |s| {
        value(
            s,
            "meridian_queries_total",
            &[("zone", "example.test."), ("transport", "tcp")],
        )
    };
    assert_eq!(tcp(&after) - tcp(&before), 1.0);
    let all = |s| {
        value(
            s,
            "meridian_answers_total",
            &[("policy", "all"), ("reason", "healthy")],
        )
    };
    assert_eq!(all(&after) - all(&before), 7.0);
    let named = |s| {
        value(
            s,
            "meridian_name_answers_total",
            &[("name", "www.example.test.")],
        )
    };
    assert_eq!(named(&after) - named(&before), 7.0);
    let member = |s| {
        value(
            s,
            "meridian_member_answers_total",
            &[("pool", "web"), ("member", "a/192.0.2.1")],
        )
    };
    assert_eq!(member(&after) - member(&before), 7.0);
    let ecs = |s| value(s, "meridian_ecs_queries_total", &[]);
    assert_eq!(ecs(&after) - ecs(&before), 1.0);
    assert_eq!(
        value(&after, "meridian_member_up", &[("member", "a/192.0.2.1")]),
        -1.0,
        "no probe: not yet known"
    );
    assert_eq!(
        value(
            &after,
            "meridian_member_usable",
            &[("member", "a/192.0.2.1")]
        ),
        1.0
    );
    assert_eq!(value(&after, "meridian_config_version", &[]), 1.0);

    // Reloads are counted by result.
    assert!(srv.ctl(&["reload"]).0);
    let reloaded = scrape(&srv);
    assert_eq!(
        value(
            &reloaded,
            "meridian_reloads_total",
            &[("result", "applied")]
        ),
        1.0
    );
    assert_eq!(value(&reloaded, "meridian_config_version", &[]), 2.0);
}

#[test]
fn json_logs_carry_state_changes_reloads_and_admin_actions() {
    let cfg = ConfigDir::new_with(&zone_with(""), GSLB, "", "");
    let srv = Server::start_with(&cfg, &["--log-format", "json"]);
    let (code, _) = post(&srv, "/members/c%2F192.0.2.3/drain");
    assert_eq!(code, 200);
    assert!(srv.ctl(&["reload"]).0);
    let lines: Vec<Value> = srv
        .stderr()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let find = |message: &str| lines.iter().find(|l| l["message"] == message).cloned();
    let changed = find("member state changed").expect("a state change line");
    assert_eq!(changed["member"], "c/192.0.2.3");
    assert_eq!(changed["to"], "drained");
    let call = find("control call").expect("an admin action line");
    assert_eq!(call["call"], "drain c/192.0.2.3");
    assert!(find("config reloaded").is_some());
    assert!(lines
        .iter()
        .all(|l| l["timestamp"].is_string() && l["level"].is_string()));
}

/// Sends `request` as is (it must ask the server to close) and returns the status code, or 0
/// when the connection closed without a response.
fn raw(addr: SocketAddr, request: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn requests_a_web_page_could_send_are_refused() {
    let (_cfg, srv) = server("");
    let port = srv.control.port();
    let get = |host: &str| {
        raw(
            srv.control,
            &format!("GET /status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    // DNS rebinding: a page on evil.example whose name now points at 127.0.0.1.
    assert_eq!(get("evil.example"), 421);
    assert_eq!(get(&format!("evil.example:{port}")), 421);
    assert_eq!(get(&format!("127.0.0.1.nip.example:{port}")), 421);
    // The endpoint's own address and loopback names are fine, with or without a port.
    assert_eq!(get(&format!("127.0.0.1:{port}")), 200);
    assert_eq!(get("localhost"), 200);
    assert_eq!(get(&format!("LOCALHOST:{port}")), 200);
    assert_eq!(get(&format!("[::1]:{port}")), 200);

    let post = |path: &str, headers: &str| {
        raw(
            srv.control,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{headers}Content-Length: 0\r\n\r\n"
            ),
        )
    };
    let drain = "/members/a%2F192.0.2.1/drain";
    // A cross-site form post (the content types a form can send), with its Origin...
    for kind in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        let headers = format!("Origin: http://evil.example\r\nContent-Type: {kind}\r\n");
        assert_eq!(post(drain, &headers), 403, "{kind}");
        // ...and without one (older browsers, or a stripped header).
        assert_eq!(
            post(drain, &format!("Content-Type: {kind}\r\n")),
            403,
            "{kind}"
        );
    }
    // A foreign origin is refused even with a JSON body type (a page cannot send that
    // without a preflight this endpoint never grants, but say no all the same).
    let json = "Content-Type: application/json\r\n";
    assert_eq!(
        post("/reload", &format!("Origin: http://evil.example\r\n{json}")),
        403
    );
    assert_eq!(post("/reload", &format!("Origin: null\r\n{json}")), 403);
    assert_eq!(
        post(
            drain,
            "Origin: http://evil.example\r\nX-Meridian-Control: 1\r\n"
        ),
        403
    );
    // Nothing was drained.
    assert_eq!(www(&srv), ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    // The status page's own calls (same origin, JSON) and ctl (JSON, no Origin) work.
    let own = format!("Origin: http://127.0.0.1:{port}\r\n{json}");
    assert_eq!(post("/reload", &own), 200);
    assert_eq!(post("/reload", "X-Meridian-Control: 1\r\n"), 200);
    let (ok, out) = srv.ctl(&["drain", "a/192.0.2.1"]);
    assert!(ok, "{out}");
    assert_eq!(www(&srv), ["192.0.2.2", "192.0.2.3"]);
}

#[test]
fn unfinished_requests_time_out_and_connections_are_capped() {
    use std::io::{Read, Write};
    let (_cfg, srv) = server("");
    // Headers that never end: the connection is closed (5 s), with nothing served.
    let mut slow = std::net::TcpStream::connect(srv.control).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1")
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(25), "not cut");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));

    // 64 idle connections hold every slot: the next one is closed without an answer.
    let held: Vec<_> = (0..64)
        .map(|_| std::net::TcpStream::connect(srv.control).unwrap())
        .collect();
    let request = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(srv.control, request), 0);
    drop(held);
    assert!(wait_until(Duration::from_secs(10), || raw(
        srv.control,
        request
    ) == 200));
}

#[test]
fn a_drain_that_would_fail_a_name_open_is_refused_per_family() {
    // The demo's shape: fra is down (its probe port is closed), iad is up; each site has one
    // member per family.
    let backend = Backend::start(200);
    let gslb = r#"
[[name]]
name = "www"
types = ["A", "AAAA"]
policy = "weighted"
pool = "web"
when_all_down = "fail-open"

[pool.web]
check = "tcp"
members = [
  { site = "fra", address = "192.0.2.10", probe = "127.0.0.1:1", weight = 3 },
  { site = "fra", address = "2001:db8:10::10", probe = "127.0.0.1:1", weight = 3 },
  { site = "iad", address = "198.51.100.10", probe = "BACKEND", weight = 1 },
  { site = "iad", address = "2001:db8:20::10", probe = "BACKEND", weight = 1 },
]

[check.tcp]
kind = "tcp"
interval = "200ms"
timeout = "200ms"
fall = 1
"#
    .replace("BACKEND", &backend.addr.to_string());
    let cfg = ConfigDir::new(&zone_with(""), &gslb);
    let srv = Server::start(&cfg);
    assert!(wait_until(Duration::from_secs(20), || {
        srv.member_health("fra/192.0.2.10") == "down"
            && srv.member_health("fra/2001:db8:10::10") == "down"
    }));
    let www = |t| answers(&srv.query("www.example.test.", t));
    assert_eq!(www(RecordType::A), ["198.51.100.10"]);

    // The pool keeps 3 of 4 members usable, but www A would have none: refused, and the
    // dry run says so, naming the name and family.
    let (code, dry) = post(&srv, "/members/iad%2F198.51.100.10/drain?dry_run=true");
    assert_eq!(code, 200, "{dry}");
    assert_eq!(dry["would_be_refused"], true, "{dry}");
    let change = dry["answers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["family"] == "A")
        .unwrap_or_else(|| panic!("{dry}"));
    assert_eq!(change["reason_before"], "healthy");
    assert_eq!(change["reason_after"], "fail-open");
    assert_eq!(change["after"], serde_json::json!(["192.0.2.10"]));
    for (member, family) in [
        ("iad%2F198.51.100.10", "www.example.test. A"),
        ("iad%2F2001%3Adb8%3A20%3A%3A10", "www.example.test. AAAA"),
    ] {
        let (code, body) = post(&srv, &format!("/members/{member}/drain"));
        assert_eq!(code, 409, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("{family} would go from healthy to fail-open")),
            "{error}"
        );
        // The pool rule holds per family too: the last usable member of a family.
        assert!(error.contains("usable IPv"), "{error}");
    }
    assert_eq!(www(RecordType::A), ["198.51.100.10"]);
    assert_eq!(www(RecordType::AAAA), ["2001:db8:20::10"]);

    // ctl: refused without --force, applied with it.
    let (ok, out) = srv.ctl(&["drain", "iad/198.51.100.10"]);
    assert!(
        !ok && out.contains("www.example.test. A would go from healthy to fail-open"),
        "{out}"
    );
    let (ok, out) = srv.ctl(&["drain", "iad/198.51.100.10", "--force"]);
    assert!(ok, "{out}");
    assert_eq!(www(RecordType::A), ["192.0.2.10"]);
    assert_eq!(www(RecordType::AAAA), ["2001:db8:20::10"]);
}
