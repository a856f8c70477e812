//! Geo-proximity with EDNS Client Subnet, over real DNS, against the in-tree demo database
//! (10.1/16 Frankfurt with 10.1.128/17 Munich, 10.2/16 Ashburn, 10.3/16 Singapore,
//! 10.4/16 Sao Paulo, 10.5/16 Tokyo, 10.6/16 London; 2001:db8:3::/48 Singapore).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::RecordType;

const DEMO_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/geo/demo-city.mmdb");

const FRA: &str = "192.0.2.1";
const IAD: &str = "192.0.2.2";
const SIN: &str = "192.0.2.3";

/// Three sites, each probed on its own in-test backend.
fn geo_gslb(b: &[Backend; 3], extra_names: &str) -> String {
    format!(
        r#"
[[name]]
name = "geo"
policy = "geo-nearest"
pool = "global"
default_order = ["iad", "fra", "sin"]
{extra_names}

[pool.global]
check = "c"
members = [
  {{ site = "fra", address = "{FRA}", probe = "{a}" }},
  {{ site = "iad", address = "{IAD}", probe = "{b}" }},
  {{ site = "sin", address = "{SIN}", probe = "{c}" }},
  {{ site = "sin", address = "2001:db8:30::1", probe = "{c}" }},
]

[pool.plain]
members = [ {{ site = "fra", address = "192.0.2.9" }} ]

[check.c]
kind = "http"
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 1

[site.fra]
location = [50.11, 8.68]
[site.iad]
location = [38.95, -77.45]
[site.sin]
location = [1.35, 103.82]
"#,
        a = b[0].addr,
        b = b[1].addr,
        c = b[2].addr
    )
}

fn backends() -> [Backend; 3] {
    [
        Backend::start(200),
        Backend::start(200),
        Backend::start(200),
    ]
}

fn geo_server(b: &[Backend; 3], extra_names: &str, server_extra: &str) -> (ConfigDir, Server) {
    let cfg = ConfigDir::new_with(
        &zone_with("static IN A 192.0.2.80\n"),
        &geo_gslb(b, extra_names),
        &format!("geo_database = \"geo.mmdb\"\n{server_extra}"),
        "",
    );
    std::fs::copy(DEMO_DB, cfg.path("geo.mmdb")).unwrap();
    let srv = Server::start(&cfg);
    for id in ["fra/192.0.2.1", "iad/192.0.2.2", "sin/192.0.2.3"] {
        assert!(
            wait_until(Duration::from_secs(5), || srv.member_health(id) == "up"),
            "{id}"
        );
    }
    (cfg, srv)
}

#[test]
fn ecs_clients_get_their_nearest_site_with_minimal_scope() {
    let b = backends();
    let (_cfg, srv) = geo_server(&b, "", "");
    let geo = |net: &str| srv.query_ecs("geo.example.test.", RecordType::A, net);
    // Near each site, and scope = the database network (never longer than the source).
    for (net, site, scope, what) in [
        ("10.1.0.0/24", FRA, 17, "Frankfurt"),
        ("10.2.0.0/24", IAD, 16, "Ashburn"),
        ("10.3.0.0/24", SIN, 16, "Singapore"),
        ("10.6.1.0/24", FRA, 16, "London is nearest fra"),
        ("10.4.0.0/24", IAD, 16, "Sao Paulo is nearest iad"),
        ("10.5.0.0/24", SIN, 16, "Tokyo is nearest sin"),
    ] {
        assert_eq!(geo(net), (vec![site.to_string()], Some(scope)), "{what}");
    }
    assert_eq!(
        geo("10.3.0.0/12").1,
        Some(12),
        "scope never longer than the source"
    );
    // A client the database cannot place: the default order, scoped to the empty network.
    let (ans, scope) = geo("10.9.0.0/24");
    assert_eq!(ans, vec![IAD]);
    assert_eq!(scope, Some(16));
    // IPv6 ECS.
    let (ans, scope) = srv.query_ecs("geo.example.test.", RecordType::AAAA, "2001:db8:3:1::/56");
    assert_eq!(ans, vec!["2001:db8:30::1"]);
    assert_eq!(scope, Some(48));

    // Source prefix 0: located by the resolver's address (127.0.0.1: unplaced), scope 0.
    let (ans, scope) = geo("0.0.0.0/0");
    assert_eq!(ans, vec![IAD]);
    assert_eq!(scope, Some(0));
    // No ECS in, none out.
    let r = srv.query("geo.example.test.", RecordType::A);
    assert!(r.edns.is_none());
    // Policies and data that do not depend on the client: scope 0.
    assert_eq!(
        srv.query_ecs("static.example.test.", RecordType::A, "10.3.0.0/24")
            .1,
        Some(0)
    );

    // Malformed options: FORMERR.
    for (what, raw) in [
        ("unknown family", vec![0, 3, 24, 0, 10, 3, 0]),
        ("prefix too long", vec![0, 1, 33, 0, 10, 3, 0, 1, 1]),
        ("extra address bytes", vec![0, 1, 16, 0, 10, 3, 0]),
        ("bits past the prefix", vec![0, 1, 15, 0, 10, 3]),
    ] {
        let opts = Opts {
            raw_ecs: Some(raw),
            ..Default::default()
        };
        let raw = query_udp_raw(
            srv.dns,
            &build_query("geo.example.test.", RecordType::A, Some(&opts)),
        )
        .unwrap();
        assert_eq!(raw[3] & 0x0f, 1, "{what}: FORMERR");
    }
}

#[test]
fn unhealthy_nearest_site_moves_clients_to_the_next_nearest() {
    let b = backends();
    let (_cfg, srv) = geo_server(&b, "", "");
    // Each query comes from a new port, so the server's UDP threads all see some: every
    // thread's kept decisions must notice the health change.
    let tokyo = |want: &str| {
        for _ in 0..16 {
            assert_eq!(
                srv.query_ecs("geo.example.test.", RecordType::A, "10.5.0.0/24")
                    .0,
                vec![want]
            );
        }
    };
    assert!(wait_until(Duration::from_secs(5), || srv
        .member_health("sin/192.0.2.3")
        == "up"));
    tokyo(SIN);
    b[2].set(503); // sin
    assert!(wait_until(Duration::from_secs(5), || srv
        .member_health("sin/192.0.2.3")
        == "down"));
    // Tokyo: sin 5314 km, fra 9333 km, iad 10883 km.
    tokyo(FRA);
    b[2].set(200);
    assert!(wait_until(Duration::from_secs(5), || srv
        .member_health("sin/192.0.2.3")
        == "up"));
    tokyo(SIN);
}

#[test]
fn scopes_for_map_and_subnet_policies_exclude_more_specific_entries() {
    let b = backends();
    let names = r#"
[[name]]
name = "map"
policy = "geo-map"
pool = "global"
map = { "EU" = ["fra"], "EU/DE/BY" = ["sin"], "NA" = ["iad"] }

[[name]]
name = "nets"
policy = "subnet"
pool = "global"
default_order = ["iad"]
subnets = { "10.50.0.0/16" = ["fra"], "10.50.128.0/20" = ["sin"], "10.50.200.0/24" = ["iad"] }

[[name]]
name = "mixed"
policy = "geo-nearest"
pool = "global"
subnets = { "10.3.7.0/24" = ["fra"] }

[[name]]
name = "plain"
pool = "plain"
"#;
    let (_cfg, srv) = geo_server(&b, names, "");
    let q =
        |name: &str, net: &str| srv.query_ecs(&format!("{name}.example.test."), RecordType::A, net);
    // geo-map: the most specific key wins; scope is the database network.
    assert_eq!(
        q("map", "10.1.0.0/24"),
        (vec![FRA.to_string()], Some(17)),
        "EU/DE/HE -> EU"
    );
    assert_eq!(
        q("map", "10.1.130.0/24"),
        (vec![SIN.to_string()], Some(17)),
        "EU/DE/BY"
    );
    assert_eq!(
        q("map", "10.8.0.0/24"),
        (vec![IAD.to_string()], Some(16)),
        "NA"
    );
    // subnet: longest prefix wins; the scope excludes every more specific entry.
    assert_eq!(q("nets", "10.50.1.0/24"), (vec![FRA.to_string()], Some(17)));
    assert_eq!(
        q("nets", "10.50.129.0/24"),
        (vec![SIN.to_string()], Some(20))
    );
    assert_eq!(
        q("nets", "10.50.200.0/24"),
        (vec![IAD.to_string()], Some(24))
    );
    assert_eq!(
        q("nets", "10.50.192.0/24"),
        (vec![FRA.to_string()], Some(21))
    );
    assert_eq!(
        q("nets", "10.51.0.0/24"),
        (vec![IAD.to_string()], Some(16)),
        "no entry: default order"
    );
    // A subnet entry inside a database network overrides geography and narrows its scope.
    assert_eq!(q("mixed", "10.3.7.0/24"), (vec![FRA.to_string()], Some(24)));
    assert_eq!(q("mixed", "10.3.0.0/24"), (vec![SIN.to_string()], Some(22)));
    // Weighted does not depend on the client.
    assert_eq!(q("plain", "10.3.0.0/24").1, Some(0));
}

/// A CHAOS-class TXT query: the in-band explanation.
fn chaos_txt(name: &str) -> Vec<u8> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    let mut query = Query::query(name.parse().unwrap(), RecordType::TXT);
    query.set_query_class(hickory_proto::rr::DNSClass::CH);
    m.add_query(query);
    m.to_vec().unwrap()
}

fn explain(srv: &Server, args: &[&str]) -> String {
    srv.explain(args)
}

#[test]
fn explain_shows_the_decision_chain() {
    let b = backends();
    let (cfg, srv) = geo_server(&b, "", "");
    let args = [
        "geo.example.test",
        "--client",
        "192.0.2.77",
        "--ecs",
        "10.5.0.0/24",
    ];

    // Healthy.
    let text = explain(&srv, &args);
    for want in [
        "client:    10.5.0.0/24 from ECS",
        "location:  AS/JP/13 Tokyo at 35.68,139.69 (database network 10.5.0.0/16)",
        "sites:     sin 5314 km > fra 9333 km > iad 10883 km (by distance)",
        "member:    sin/192.0.2.3 in pool \"global\": 192.0.2.3, weight 1, priority 1, health up, admin normal -> usable",
        "answer:    192.0.2.3",
        "ecs scope: /16 (source /24)",
        "ttl:       30",
        "reason:    healthy",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }

    // Assumed: the nearest site down moves the answer, without touching real health.
    let mut assumed = args.to_vec();
    assumed.extend(["--assume", "global/sin=down"]);
    let text = explain(&srv, &assumed);
    assert!(text.contains("assumed:   sin/192.0.2.3 down"), "{text}");
    assert!(text.contains("answer:    192.0.2.1"), "{text}");
    assert_eq!(srv.member_health("sin/192.0.2.3"), "up");
    // The same, offline from the config files.
    let mut offline = assumed.clone();
    offline.extend(["--offline", "--config"]);
    let cfg_path = cfg.config().display().to_string();
    offline.push(&cfg_path);
    let text = explain(&srv, &offline);
    assert!(text.contains("answer:    192.0.2.1"), "{text}");

    // Fail-open: everything down.
    for be in &b {
        be.set(503);
    }
    assert!(wait_until(Duration::from_secs(5), || {
        ["fra/192.0.2.1", "iad/192.0.2.2", "sin/192.0.2.3"]
            .iter()
            .all(|id| srv.member_health(id) == "down")
    }));
    let text = explain(&srv, &args);
    assert!(text.contains("reason:    fail-open"), "{text}");
    assert!(
        text.contains("answer:    192.0.2.3"),
        "fail-open keeps the geo order:\n{text}"
    );

    // In-band from an allowed network (loopback by default).
    let q = chaos_txt("geo.example.test.");
    // Long: truncated over UDP without EDNS, complete over TCP.
    assert!(query_udp(srv.dns, &q).truncation);
    let r = query_tcp(srv.dns, &q);
    assert_eq!(r.response_code, ResponseCode::NoError);
    let txt: Vec<String> = r.answers.iter().map(|a| a.data.to_string()).collect();
    assert!(
        txt.iter().any(|t| t.contains("policy:    geo-nearest")),
        "{txt:?}"
    );
    // Asked for the same client (its ECS prefix), the in-band lines are the CLI's lines:
    // answer, scope, TTL and reason included.
    let cli = explain(&srv, &args);
    let mut q = hickory_proto::op::Message::from_vec(&q).unwrap();
    let mut edns = hickory_proto::op::Edns::new();
    edns.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(
            "10.5.0.0".parse().unwrap(),
            24,
            0,
        )));
    q.set_edns(edns);
    let r = query_tcp(srv.dns, &q.to_vec().unwrap());
    let txt: Vec<String> = r
        .answers
        .iter()
        .map(|a| match &a.data {
            hickory_proto::rr::RData::TXT(t) => t.to_string(),
            other => other.to_string(),
        })
        .collect();
    for line in cli.lines().filter(|l| !l.is_empty()) {
        assert!(
            txt.iter().any(|t| t == line),
            "in-band lacks {line:?}: {txt:?}"
        );
    }
    for want in ["answer:    ", "ecs scope: /", "ttl:       ", "reason:    "] {
        assert!(txt.iter().any(|t| t.starts_with(want)), "{want:?}: {txt:?}");
    }

    // A client the database does not place.
    let text = explain(
        &srv,
        &[
            "geo.example.test",
            "--client",
            "192.0.2.77",
            "--ecs",
            "10.200.0.0/24",
        ],
    );
    assert!(text.contains("location:  not in database"), "{text}");
}

#[test]
fn in_band_explanation_is_refused_outside_allowed_networks() {
    let b = backends();
    let (_cfg, srv) = geo_server(&b, "", "explain_from = [\"10.0.0.0/8\"]\n");
    let r = query_udp(srv.dns, &chaos_txt("geo.example.test."));
    assert_eq!(r.response_code, ResponseCode::Refused);
    assert!(r.answers.is_empty());
}

#[test]
fn replaced_database_is_picked_up_and_a_corrupt_one_rejected() {
    let b = backends();
    let (cfg, srv) = geo_server(&b, "", "");
    assert_eq!(
        srv.query_ecs("geo.example.test.", RecordType::A, "10.3.0.0/24")
            .0,
        vec![SIN]
    );
    // A new database that moves 10.3.0.0/16 to Frankfurt, built with Meridian's own builder
    // and swapped in by rename.
    std::fs::write(
        cfg.path("moved.csv"),
        "network,latitude,longitude,continent,country,subdivision,city\n10.3.0.0/16,50.11,8.68,EU,DE,HE,Frankfurt\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["geo", "build"])
        .arg(cfg.path("moved.csv"))
        .arg("-o")
        .arg(cfg.path("new.mmdb"))
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::rename(cfg.path("new.mmdb"), cfg.path("geo.mmdb")).unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        srv.query_ecs("geo.example.test.", RecordType::A, "10.3.0.0/24")
            .0
            == vec![FRA]
    }));
    // A corrupt replacement is rejected; the previous database keeps serving.
    std::fs::write(cfg.path("bad.mmdb"), b"\x00garbage, not a MaxMind database").unwrap();
    std::fs::rename(cfg.path("bad.mmdb"), cfg.path("geo.mmdb")).unwrap();
    assert!(wait_until(Duration::from_secs(10), || srv
        .stderr()
        .contains("reload rejected")));
    assert!(srv.stderr().contains("geo.mmdb"));
    assert_eq!(
        srv.query_ecs("geo.example.test.", RecordType::A, "10.3.0.0/24")
            .0,
        vec![FRA]
    );
}

#[test]
fn demo_database_is_reproducible_from_its_csv() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.mmdb");
    let status = Command::new(BIN)
        .args([
            "geo",
            "build",
            concat!(env!("CARGO_MANIFEST_DIR"), "/geo/demo-city.csv"),
            "-o",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(DEMO_DB).unwrap(),
        "rebuild geo/demo-city.mmdb from the CSV"
    );
    let lookup = Command::new(BIN)
        .args(["geo", "lookup", "10.1.200.1", "--db", DEMO_DB])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&lookup.stdout);
    assert!(
        text.contains("network:     10.1.128.0/17") && text.contains("city:        Munich"),
        "{text}"
    );
}

#[test]
fn ecs_can_be_switched_off_per_zone_and_subnet_files_reload() {
    let b = backends();
    let names = r#"
[[name]]
name = "office"
policy = "subnet"
pool = "global"
default_order = ["iad"]
subnet_file = "offices.txt"
"#;
    let cfg = ConfigDir::new_with(
        &zone_with(""),
        &geo_gslb(&b, names),
        "geo_database = \"geo.mmdb\"",
        "",
    );
    std::fs::copy(DEMO_DB, cfg.path("geo.mmdb")).unwrap();
    cfg.write("offices.txt", "# office networks\n10.77.0.0/16 sin\n");
    let srv = Server::start(&cfg);
    let q = |net: &str| srv.query_ecs("office.example.test.", RecordType::A, net);
    assert_eq!(q("10.77.1.0/24"), (vec![SIN.to_string()], Some(16)));
    // The file changes: picked up without a restart.
    cfg.write("offices.txt", "10.77.0.0/16 fra\n");
    assert!(wait_until(Duration::from_secs(10), || q("10.77.1.0/24").0 == vec![FRA]));
    // A broken line is rejected with file and line; the old table keeps serving.
    cfg.write("offices.txt", "10.77.0.0/16 fra\n10.78.0.0/33 sin\n");
    assert!(wait_until(Duration::from_secs(10), || srv
        .stderr()
        .contains("offices.txt:2: subnet")));
    assert_eq!(q("10.77.1.0/24").0, vec![FRA]);
    drop(srv);

    // With ecs = false the option is ignored (the resolver's address decides) and not echoed.
    let cfg = ConfigDir::new_with(
        &zone_with(""),
        &geo_gslb(&b, ""),
        "geo_database = \"geo.mmdb\"",
        "ecs = false",
    );
    std::fs::copy(DEMO_DB, cfg.path("geo.mmdb")).unwrap();
    let srv = Server::start(&cfg);
    assert!(wait_until(Duration::from_secs(5), || srv
        .member_health("iad/192.0.2.2")
        == "up"));
    let (ans, scope) = srv.query_ecs("geo.example.test.", RecordType::A, "10.3.0.0/24");
    assert_eq!(ans, vec![IAD], "127.0.0.1 is unplaced: default order");
    assert_eq!(scope, None);
}
