//! State across `kill -9`, rejected configs (from `check` and on reload), and reload under load.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::rr::RecordType;

fn pool_config(up: &Backend, down: &Backend, first_address: &str) -> String {
    format!(
        r#"
[[name]]
name = "www"
policy = "all"
pool = "web"

[pool.web]
check = "c"
members = [
  {{ site = "a", address = "{first_address}", probe = "{up}" }},
  {{ site = "d", address = "192.0.2.98", probe = "{down}" }},
  {{ site = "x", address = "192.0.2.99", probe = "{up}" }},
]

[check.c]
kind = "http"
interval = "200ms"
timeout = "150ms"
rise = 2
fall = 2
"#,
        up = up.addr,
        down = down.addr
    )
}

#[test]
fn drain_and_last_known_health_survive_kill_9() {
    let up = Backend::start(200);
    let down = Backend::start(503);
    let cfg = ConfigDir::new(&zone_with(""), &pool_config(&up, &down, "192.0.2.1"));
    let srv = Server::start(&cfg);
    assert!(wait_until(Duration::from_secs(5), || srv
        .member_health("d/192.0.2.98")
        == "down"));
    assert!(srv.ctl(&["drain", "x/192.0.2.99"]).0);
    assert_eq!(
        answers(&srv.query("www.example.test.", RecordType::A)),
        vec!["192.0.2.1"]
    );
    srv.kill9();

    // The "down" backend now answers 200, but the restarted server must start from what it
    // remembered (down, needing `rise` good probes) and keep the drain.
    down.set(200);
    let srv = Server::start(&cfg);
    assert_eq!(
        srv.member_health("d/192.0.2.98"),
        "down",
        "last-known health restored"
    );
    let r = srv.query("www.example.test.", RecordType::A);
    assert_eq!(
        answers(&r),
        vec!["192.0.2.1"],
        "drain held and last-known health used"
    );
    // Fresh probes land later and bring the member back; the drain still holds.
    assert!(wait_until(Duration::from_secs(5), || srv
        .member_health("d/192.0.2.98")
        == "up"));
    assert_eq!(
        answers(&srv.query("www.example.test.", RecordType::A)),
        vec!["192.0.2.1", "192.0.2.98"]
    );
    let st = srv.status();
    assert!(st["orphan_overrides"].as_array().unwrap().is_empty());
}

#[test]
fn override_for_a_member_that_left_is_reported() {
    let up = Backend::start(200);
    let down = Backend::start(503);
    let cfg = ConfigDir::new(&zone_with(""), &pool_config(&up, &down, "192.0.2.1"));
    let srv = Server::start(&cfg);
    assert!(srv.ctl(&["drain", "a/192.0.2.1"]).0);
    cfg.write(
        "example.test.gslb.toml",
        &pool_config(&up, &down, "192.0.2.2"),
    );
    let (ok, out) = srv.ctl(&["reload"]);
    assert!(ok, "{out}");
    let st = srv.status();
    let orphans = st["orphan_overrides"].as_array().unwrap();
    assert_eq!(orphans.len(), 1, "{st}");
    assert_eq!(orphans[0]["id"], "a/192.0.2.1");
    assert!(srv.stderr().contains("not in the config"));
    // It can still be cleared.
    assert!(srv.ctl(&["undrain", "a/192.0.2.1"]).0);
    assert!(srv.status()["orphan_overrides"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// Broken inputs: (what, file to break, its text, a fragment the error must contain).
fn broken_inputs() -> Vec<(&'static str, &'static str, String, &'static str)> {
    let z = zone_with("static IN A 192.0.2.80\n");
    let g = |extra: &str| {
        format!("[pool.p]\nmembers = [ {{ site = \"a\", address = \"192.0.2.1\" }} ]\n{extra}")
    };
    let n = |fields: &str| g(&format!("\n[[name]]\n{fields}\n"));
    vec![
        ("toml syntax", "example.test.gslb.toml", "[[name]\nname = \"x\"\n".into(), "example.test.gslb.toml:1:"),
        ("unknown key", "example.test.gslb.toml", n("name = \"x\"\npool = \"p\"\ncolour = \"red\""), "unknown field `colour`"),
        ("unknown pool", "example.test.gslb.toml", n("name = \"x\"\npool = \"nope\""), "unknown pool \"nope\""),
        (
            "zero weight",
            "example.test.gslb.toml",
            "[pool.web]\nmembers = [\n  { site = \"a\", address = \"192.0.2.1\" },\n  { site = \"b\", address = \"192.0.2.2\", weight = 0 },\n]\n".into(),
            "example.test.gslb.toml:4: pool \"web\", member 2: weight must be greater than 0",
        ),
        (
            "bad address",
            "example.test.gslb.toml",
            "[pool.p]\nmembers = [ { site = \"a\", address = \"192.0.2.300\" } ]\n".into(),
            "is not an IPv4 or IPv6 address",
        ),
        ("clash with a static name", "example.test.gslb.toml", n("name = \"static\"\npool = \"p\""), "clashes with the static A record"),
        ("unknown policy", "example.test.gslb.toml", n("name = \"x\"\npool = \"p\"\npolicy = \"random\""), "unknown policy"),
        ("unknown check", "example.test.gslb.toml", "[pool.p]\ncheck = \"nope\"\nmembers = [ { site = \"a\", address = \"192.0.2.1\" } ]\n".into(), "unknown check \"nope\""),
        (
            "bad status range",
            "example.test.gslb.toml",
            g("[check.c]\nkind = \"http\"\nexpect_status = \"900\"\n"),
            "check \"c\": expect_status",
        ),
        ("fallback without pool", "example.test.gslb.toml", n("name = \"x\"\npool = \"p\"\nwhen_all_down = \"fallback\""), "needs fallback"),
        ("CNAME beside other data", "example.test.zone", format!("{z}static IN CNAME www\n"), "CNAME beside other data"),
        ("out-of-zone data", "example.test.zone", format!("{z}www.example.org. IN A 192.0.2.1\n"), "out-of-zone data"),
        ("missing SOA", "example.test.zone", "$TTL 60\n@ IN NS ns1\nns1 IN A 192.0.2.1\n".into(), "missing SOA"),
        ("bad record data", "example.test.zone", format!("{z}bad IN A not-an-address\n"), "example.test.zone:6: bad.example.test. A: bad record data"),
        ("missing zone file", "example.test.zone", String::new(), "cannot read"),
        ("member with no probe address", "example.test.gslb.toml", g("").replace("[pool.p]\n", "[pool.p]\ncheck = \"c\"\n") + "[check.c]\nkind = \"tcp\"\n", "no probe address"),
        (
            "CNAME members that loop",
            "example.test.gslb.toml",
            "[[name]]\nname = \"a\"\npool = \"pa\"\n[[name]]\nname = \"b\"\npool = \"pb\"\n\
             [pool.pa]\nmembers = [ { site = \"s\", cname = \"b.example.test.\" } ]\n\
             [pool.pb]\nmembers = [ { site = \"s\", cname = \"a.example.test.\" } ]\n"
                .into(),
            "CNAME members loop: a.example.test. -> b.example.test. -> a.example.test.",
        ),
        (
            "unknown site",
            "example.test.gslb.toml",
            n("name = \"x\"\npool = \"p\"\npolicy = \"subnet\"\nsubnets = { \"10.0.0.0/8\" = [\"a\", \"nowhere\"] }\n[site.a]\n"),
            "unknown site \"nowhere\"",
        ),
        (
            "geo policy without a database",
            "example.test.gslb.toml",
            n("name = \"x\"\npool = \"p\"\npolicy = \"geo-nearest\"\n[site.a]\nlocation = [1.0, 2.0]\n"),
            "needs server.geo_database",
        ),
        (
            "shedding on an unknown signal",
            "example.test.gslb.toml",
            g("[site.a]\nshed = { signal = \"load\", low = 1, high = 2 }\n"),
            "site \"a\": shed signal \"load\" is not one of connections, requests, healthy-servers",
        ),
        (
            "shedding watermarks upside down",
            "example.test.gslb.toml",
            g("[site.a]\nshed = { signal = \"requests\", low = 500, high = 100 }\n"),
            "shed watermarks need 0 <= low < high (low 500, high 100)",
        ),
        (
            "shedding with a check that reads no load",
            "example.test.gslb.toml",
            g("[site.a]\nshed = { signal = \"connections\", low = 10, high = 20 }\n"),
            "member 1: site \"a\" sheds load or judges what its clients got, which its pool's check must read",
        ),
        (
            "passive health without a threshold",
            "example.test.gslb.toml",
            g("[site.a]\npassive = { reports = 3 }\n"),
            "passive needs errors_above, p99_above or both",
        ),
        (
            "passive health with a bad percentage",
            "example.test.gslb.toml",
            g("[site.a]\npassive = { errors_above = \"0.05\" }\n"),
            "passive errors_above \"0.05\" must be a percentage like \"5%\"",
        ),
        (
            "subnet with host bits",
            "example.test.gslb.toml",
            n("name = \"x\"\npool = \"p\"\npolicy = \"subnet\"\nsubnets = { \"10.0.0.1/8\" = [\"a\"] }\n[site.a]\n"),
            "has host bits set",
        ),
    ]
}

fn install(cfg: &ConfigDir, file: &str, text: &str) {
    if text.is_empty() && file.ends_with(".zone") {
        std::fs::remove_file(cfg.path(file)).unwrap();
    } else {
        cfg.write(file, text);
    }
}

#[test]
fn broken_configs_give_their_own_error_from_check_and_on_reload() {
    let good_zone = zone_with("static IN A 192.0.2.80\n");
    let good_gslb = "[[name]]\nname = \"www\"\npool = \"p\"\n[pool.p]\nmembers = [ { site = \"a\", address = \"192.0.2.1\" } ]\n";
    let cases = broken_inputs();
    assert!(cases.len() >= 12);

    // `check` on each.
    let mut seen = std::collections::HashSet::new();
    for (what, file, text, want) in &cases {
        let cfg = ConfigDir::new(&good_zone, good_gslb);
        assert!(check_config(&cfg).0, "the good config passes");
        install(&cfg, file, text);
        let (ok, err) = check_config(&cfg);
        assert!(!ok, "{what}: check accepted it");
        assert!(err.contains(want), "{what}: expected {want:?} in {err:?}");
        assert!(err.contains(file), "{what}: error names the file: {err}");
        assert!(
            seen.insert(err.clone()),
            "{what}: same error as another case"
        );
    }

    // On reload: the running config keeps answering.
    let cfg = ConfigDir::new(&good_zone, good_gslb);
    let srv = Server::start(&cfg);
    for (what, file, text, want) in &cases {
        install(&cfg, file, text);
        let (ok, out) = srv.ctl(&["reload", "--json"]);
        assert!(!ok, "{what}: reload accepted it");
        let reply: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(reply["result"], "rejected", "{what}");
        let error = reply["error"].as_str().unwrap();
        assert!(error.contains(want), "{what}: expected {want:?} in {error}");
        assert_eq!(
            answers(&srv.query("www.example.test.", RecordType::A)),
            vec!["192.0.2.1"],
            "{what}"
        );
        assert_eq!(
            answers(&srv.query("static.example.test.", RecordType::A)),
            vec!["192.0.2.80"],
            "{what}"
        );
        cfg.write("example.test.zone", &good_zone);
        cfg.write("example.test.gslb.toml", good_gslb);
    }
    let (ok, out) = srv.ctl(&["reload"]);
    assert!(
        ok && out.trim_end() == "reload: applied, config version 2",
        "{out}"
    );
    assert!(srv.stderr().contains("reload rejected"));
}

#[test]
fn shipped_configs_check_clean_and_bogus_keys_are_rejected_everywhere() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(BIN).arg("check").output().unwrap();
    assert!(
        out.status.success(),
        "demo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ops = format!("{root}/ops/meridian.toml");
    let out = Command::new(BIN)
        .args(["check", "--config", &ops])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ops: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A bogus key added to each table of every shipped TOML file is rejected, naming the key.
    let sets = [
        (
            "zones",
            "meridian.toml",
            "example.test.zone",
            "example.test.gslb.toml",
        ),
        (
            "ops",
            "meridian.toml",
            "zones/gslb.example.com.zone",
            "zones/gslb.example.com.gslb.toml",
        ),
    ];
    let mut rejected = 0;
    for (dir, server, zone, gslb) in sets {
        let base = std::path::Path::new(root).join(dir);
        for file in [server, gslb] {
            let text = std::fs::read_to_string(base.join(file)).unwrap();
            for (i, line) in text.lines().enumerate() {
                if !line.starts_with('[') {
                    continue;
                }
                let mut lines: Vec<&str> = text.lines().collect();
                lines.insert(i + 1, "bogus_key = 1");
                // The same layout as the repository: DIR/... beside geo/.
                let root_tmp = tempfile::tempdir().unwrap();
                let tmp = root_tmp.path().join(dir);
                for f in [server, zone, gslb] {
                    let to = tmp.join(f);
                    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                    std::fs::copy(base.join(f), &to).unwrap();
                }
                std::fs::create_dir_all(root_tmp.path().join("geo")).unwrap();
                std::fs::copy(
                    std::path::Path::new(root).join("geo/demo-city.mmdb"),
                    root_tmp.path().join("geo/demo-city.mmdb"),
                )
                .unwrap();
                std::fs::write(tmp.join(file), lines.join("\n")).unwrap();
                let out = Command::new(BIN)
                    .args(["check", "--config"])
                    .arg(tmp.join(server))
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "{dir}/{file} line {}: {err}",
                    i + 1
                );
                assert!(
                    err.contains("bogus_key") && err.contains(file),
                    "{dir}/{file} line {}: {err}",
                    i + 1
                );
                rejected += 1;
            }
        }
    }
    assert!(rejected >= 15, "{rejected}");
}

#[test]
fn reload_under_load_never_fails_and_keeps_health_and_drains() {
    let up = Backend::start(200);
    let down = Backend::start(503);
    let version_a = pool_config(&up, &down, "192.0.2.1");
    let version_b = pool_config(&up, &down, "192.0.2.2");
    let cfg = ConfigDir::new(&zone_with(""), &version_a);
    let srv = Server::start(&cfg);
    assert!(wait_until(Duration::from_secs(5), || srv
        .member_health("d/192.0.2.98")
        == "down"));
    assert!(srv.ctl(&["drain", "x/192.0.2.99"]).0);

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let dns = srv.dns;
    let loaders: Vec<_> = (0..2)
        .map(|_| {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 1232];
                for _ in 0..200_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let q = build_query("www.example.test.", RecordType::A, None);
                    sock.send_to(&q, dns).unwrap();
                    let (n, _) = sock
                        .recv_from(&mut buf)
                        .map_err(|e| format!("no reply: {e}"))?;
                    let m = hickory_proto::op::Message::from_vec(&buf[..n])
                        .map_err(|e| e.to_string())?;
                    let got = answers(&m);
                    if got != vec!["192.0.2.1"] && got != vec!["192.0.2.2"] {
                        return Err(format!(
                            "answer matches neither version: {got:?} rcode {:?}",
                            m.response_code
                        ));
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();

    for i in 0..50 {
        let (text, want) = if i % 2 == 0 {
            (&version_b, "192.0.2.2")
        } else {
            (&version_a, "192.0.2.1")
        };
        cfg.write("example.test.gslb.toml", text);
        let (ok, out) = srv.ctl(&["reload"]);
        assert!(ok, "reload {i}: {out}");
        assert_eq!(
            answers(&srv.query("www.example.test.", RecordType::A)),
            vec![want],
            "after reload {i}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.join().unwrap().unwrap();
    }
    assert!(sent.load(Ordering::Relaxed) > 100, "the load actually ran");
    assert_eq!(
        srv.member_health("d/192.0.2.98"),
        "down",
        "health survived 50 reloads"
    );
}

#[test]
fn sighup_and_file_changes_reload() {
    let cfg = ConfigDir::new(&zone_with("v IN A 192.0.2.1\n"), "");
    let srv = Server::start(&cfg);
    assert_eq!(
        answers(&srv.query("v.example.test.", RecordType::A)),
        vec!["192.0.2.1"]
    );
    // A file change alone is picked up (polled, debounced).
    cfg.write("example.test.zone", &zone_with("v IN A 192.0.2.2\n"));
    assert!(wait_until(Duration::from_secs(10), || answers(
        &srv.query("v.example.test.", RecordType::A)
    ) == vec![
        "192.0.2.2"
    ]));
    // SIGHUP reloads too.
    cfg.write("example.test.zone", &zone_with("v IN A 192.0.2.3\n"));
    srv.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || answers(
        &srv.query("v.example.test.", RecordType::A)
    ) == vec![
        "192.0.2.3"
    ]));
    // An invalid change keeps the old data.
    cfg.write("example.test.zone", "garbage (\n");
    srv.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || srv
        .stderr()
        .contains("reload rejected")));
    assert_eq!(
        answers(&srv.query("v.example.test.", RecordType::A)),
        vec!["192.0.2.3"]
    );
}

/// The server file `ConfigDir` writes, with `control` and `listen` as given.
fn server_file(listen: &str, control: &str) -> String {
    format!(
        "[server]\nlisten = {listen}\ncontrol = \"{control}\"\nstate_dir = \"state\"\nudp_workers = 2\n\n[[zone]]\norigin = \"example.test\"\nfile = \"example.test.zone\"\ngslb = \"example.test.gslb.toml\"\n"
    )
}

#[test]
fn check_enforces_what_serve_enforces_with_one_exit_code() {
    let gslb = "[[name]]\nname = \"www\"\npool = \"p\"\n[pool.p]\nmembers = [ { site = \"a\", address = \"192.0.2.1\" } ]\n";
    let cfg = ConfigDir::new(&zone_with("static IN A 192.0.2.80\n"), gslb);

    // Clean: each zone with its serial and record count.
    let out = check_output(&cfg);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("zone example.test.: serial 1, 4 records, 1 load-balanced name(s)"),
        "{stdout}"
    );

    // A control endpoint off loopback without a token: check, serve and a reload all refuse
    // it, naming file and line, with exit status 1.
    let srv = Server::start(&cfg);
    cfg.write(
        "meridian.toml",
        &server_file("[\"127.0.0.1:0\"]", "0.0.0.0:0"),
    );
    let out = check_output(&cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("meridian.toml:1: server.control: 0.0.0.0:0 is not on loopback"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(cfg.config())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is not on loopback"), "{err}");
    let ctl = Command::new(BIN)
        .args(["ctl", "--control", &srv.control.to_string(), "reload"])
        .output()
        .unwrap();
    assert_eq!(ctl.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&ctl.stdout).contains("not on loopback"));
    cfg.write(
        "meridian.toml",
        &server_file("[\"127.0.0.1:0\"]", "127.0.0.1:0"),
    );

    // A damaged cookie secret in the state directory stops serve: check says so too.
    std::fs::write(cfg.path("state/cookie.secret"), "not hex\n").unwrap();
    let (ok, err) = check_config(&cfg);
    assert!(
        !ok && err.contains("cookie.secret:1: cookie secret"),
        "{err}"
    );
    std::fs::remove_file(cfg.path("state/cookie.secret")).unwrap();

    // Every broken zone is reported in one run, not only the first.
    let mut server = server_file("[\"127.0.0.1:0\"]", "127.0.0.1:0");
    server.push_str("\n[[zone]]\norigin = \"two.test\"\nfile = \"two.zone\"\n");
    server.push_str("\n[[zone]]\norigin = \"three.test\"\nfile = \"three.zone\"\n");
    cfg.write("meridian.toml", &server);
    cfg.write(
        "two.zone",
        "$TTL 60\n@ SOA ns h 1 2 3 4 5\n NS ns\nns A 192.0.2.1\nbad A 300.1.1.1\nok A 192.0.2.2\nworse MX ten mail\n",
    );
    cfg.write("three.zone", "$TTL 60\n@ NS ns\n");
    let (ok, err) = check_config(&cfg);
    assert!(!ok);
    // Every broken record of a file, and every broken file.
    assert!(err.contains("two.zone:5: bad.two.test. A"), "{err}");
    assert!(err.contains("two.zone:7: worse.two.test. MX"), "{err}");
    assert!(
        err.contains("three.zone: zone three.test.: missing SOA"),
        "{err}"
    );
    assert!(err.contains("check failed: 3 error(s)"), "{err}");
}

#[test]
fn check_and_serve_warn_of_what_mature_servers_warn_of() {
    let zone = "\u{feff}$TTL 300\n@ IN SOA ns1.example.test. h.example.test. 1 7200 900 1209600 60\n  IN NS ns1\nns1 IN A 192.0.2.53\nw 60 A 192.0.2.1\nw 300 A 192.0.2.2\nbig 4294967295 A 192.0.2.3\n";
    let gslb = "[[name]]\nname = \"www\"\npool = \"p\"\n[pool.p]\ncheck = \"c\"\nmembers = [ { site = \"a\", address = \"192.0.2.1\", probe = \"127.0.0.1:1\" } ]\n\n[check.c]\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"3s\"\n";
    let cfg = ConfigDir::new(zone, gslb);
    let out = check_output(&cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a byte-order mark is accepted: {err}");
    for want in [
        "example.test.zone:6: w.example.test. A: TTL 300 differs from the set's 60",
        "example.test.zone:7: big.example.test. A: TTL 4294967295 is over 2147483647",
        "example.test.gslb.toml:8: check \"c\": timeout 3s is longer than the interval 1s",
    ] {
        assert!(err.contains(want), "{want:?} in {err}");
    }
    // A bad duration is named at the check's own line, not at a member's.
    cfg.write("example.test.gslb.toml", &gslb.replace("\"1s\"", "\"1x\""));
    let (ok, err) = check_config(&cfg);
    assert!(
        !ok && err.contains("example.test.gslb.toml:8: check \"c\": interval: bad duration"),
        "{err}"
    );
    // serve logs the same warnings.
    cfg.write("example.test.gslb.toml", gslb);
    let srv = Server::start(&cfg);
    assert!(wait_until(Duration::from_secs(5), || srv
        .stderr()
        .contains("TTL 300 differs from the set's 60")));
}

#[test]
fn reload_says_what_it_cannot_apply_and_what_it_rejected() {
    let gslb = "[[name]]\nname = \"www\"\npool = \"p\"\n[pool.p]\nmembers = [ { site = \"a\", address = \"192.0.2.1\" } ]\n";
    let zone = |serial: u32, extra: &str| {
        format!(
            "$TTL 300\n@ IN SOA ns1.example.test. h.example.test. {serial} 7200 900 1209600 60\n  IN NS ns1\nns1 IN A 192.0.2.53\n{extra}"
        )
    };
    let cfg = ConfigDir::new(&zone(1, ""), gslb);
    cfg.write(
        "meridian.toml",
        &server_file("[\"127.0.0.1:0\"]", "127.0.0.1:0"),
    );
    // The config's own listen address (no --listen override), so a change to it is real.
    let srv = Server::launch(&cfg, &[]);
    assert!(srv.stderr().contains("zone example.test. loaded, serial 1"));

    cfg.write(
        "meridian.toml",
        &server_file("[\"127.0.0.1:0\", \"127.0.0.2:0\"]", "127.0.0.1:0"),
    );
    let (ok, out) = srv.ctl(&["reload"]);
    assert!(ok, "{out}");
    assert!(srv.stderr().contains("server.listen changed"));
    let st = srv.status();
    assert_eq!(st["restart_needed"], serde_json::json!(["server.listen"]));
    assert_eq!(st["last_reload"]["result"], "applied");
    let (ok, table) = srv.ctl(&["status"]);
    assert!(ok && table.contains("RESTART NEEDED"), "{table}");
    // The old sockets still answer.
    assert_eq!(
        answers(&srv.query("www.example.test.", RecordType::A)),
        vec!["192.0.2.1"]
    );

    // Changed back, nothing waits for a restart any more.
    cfg.write(
        "meridian.toml",
        &server_file("[\"127.0.0.1:0\"]", "127.0.0.1:0"),
    );
    assert!(srv.ctl(&["reload"]).0);
    assert_eq!(srv.status()["restart_needed"], serde_json::json!([]));

    // A new serial is logged; changed data without one is warned of.
    cfg.write("example.test.zone", &zone(2, ""));
    assert!(srv.ctl(&["reload"]).0);
    assert!(srv.stderr().contains("zone example.test. loaded, serial 2"));
    cfg.write("example.test.zone", &zone(2, "x IN A 192.0.2.9\n"));
    assert!(srv.ctl(&["reload"]).0);
    assert!(srv
        .stderr()
        .contains("zone example.test. data changed but its SOA serial 2 did not"));

    // An automatic reload (file change) that is rejected shows in status.
    cfg.write("example.test.zone", &zone(3, "bad IN A 300.1.1.1\n"));
    assert!(wait_until(Duration::from_secs(10), || srv.status()
        ["last_reload"]["result"]
        == "rejected"));
    let st = srv.status();
    let error = st["last_reload"]["error"].as_str().unwrap();
    assert!(error.contains("example.test.zone:5"), "{error}");
    assert!(st["last_reload"]["at"].as_u64().is_some());
    let (_, table) = srv.ctl(&["status"]);
    assert!(table.contains("last reload: REJECTED"), "{table}");
}

#[test]
fn a_state_store_that_opens_empty_is_loud() {
    let gslb = "[[name]]\nname = \"www\"\npool = \"p\"\npolicy = \"all\"\n[pool.p]\nmembers = [ { site = \"a\", address = \"192.0.2.1\" }, { site = \"b\", address = \"192.0.2.2\" } ]\n";
    let cfg = ConfigDir::new(&zone_with(""), gslb);
    let srv = Server::start(&cfg);
    // ctl prints one line for the action.
    let (ok, out) = srv.ctl(&["drain", "a/192.0.2.1"]);
    assert!(ok, "{out}");
    assert_eq!(out.trim_end().lines().count(), 1, "{out}");
    assert!(
        out.contains("drain a/192.0.2.1: applied to a/192.0.2.1; answers: www.example.test. A 192.0.2.1 192.0.2.2 -> 192.0.2.2"),
        "{out}"
    );
    assert_eq!(
        answers(&srv.query("www.example.test.", RecordType::A)),
        vec!["192.0.2.2"]
    );
    assert!(srv.status()["state_lost"].is_null());
    // ctl status: tables, no epoch seconds.
    let (ok, table) = srv.ctl(&["status"]);
    assert!(ok, "{table}");
    for header in [
        "ZONE",
        "SERIAL",
        "POOL",
        "USABLE",
        "MEMBER",
        "HEALTH",
        "OVERRIDE",
        "LAST PROBE",
    ] {
        assert!(table.contains(header), "{header} in {table}");
    }
    assert!(
        table.contains("a/192.0.2.1") && table.contains("drained"),
        "{table}"
    );
    assert!(!table.contains("\"config_loaded_at\""), "{table}");
    drop(srv);
    // The store's files are gone (as after a restore that missed them, or a lost snapshot).
    std::fs::remove_dir_all(cfg.path("state/store")).unwrap();
    let srv = Server::start(&cfg);
    assert!(
        srv.stderr().contains("STATE STORE OPENED EMPTY"),
        "{}",
        srv.stderr()
    );
    let lost = srv.status()["state_lost"].as_str().unwrap().to_string();
    assert!(
        lost.contains("drains, overrides and remembered health were lost"),
        "{lost}"
    );
    let (_, table) = srv.ctl(&["status"]);
    assert!(table.contains("STATE LOST at start"), "{table}");
    // The drain is gone, as the message says.
    assert_eq!(
        answers(&srv.query("www.example.test.", RecordType::A)),
        vec!["192.0.2.1", "192.0.2.2"]
    );
}
