//! The fast path and the general path give the same answers: a corpus of names, types, EDNS
//! and ECS variants, over UDP and TCP, compared message by message.

mod common;

use std::net::SocketAddr;

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use meridian::config::{load, Source};
use meridian::dns::{answer_with, fast, HealthView, Loaded, Transport};
use meridian::health::{Health, HealthSnapshot, MemberId, MemberState};

const ZONE_EXTRA: &str = "www IN A 192.0.2.80\n\
www IN AAAA 2001:db8::80\n\
www IN MX 10 mail\n\
mail IN A 192.0.2.25\n\
mail IN AAAA 2001:db8::25\n\
_sip._tcp IN SRV 10 5 5060 www\n\
_sip._tcp IN SRV 20 5 5060 mail\n\
mxcut IN MX 10 ns.sub\n\
mxlb IN MX 10 all\n\
bigmx IN MX 10 many\n\
{many}\
txt IN TXT \"hello world\" \"second\"\n\
alias IN CNAME www\n\
alias2 IN CNAME alias\n\
toglobal IN CNAME geo\n\
a.b.c IN A 192.0.2.81\n\
sub IN NS ns.sub\n\
ns.sub IN A 192.0.2.153\n\
deep.wild IN A 192.0.2.1\n\
x.child IN A 192.0.2.77\n";

const GSLB: &str = r#"
[[name]]
name = "all"
policy = "all"
pool = "p"

[[name]]
name = "down"
policy = "all"
pool = "q"
when_all_down = "nodata"
ttl = 10

[[name]]
name = "v4only"
policy = "all"
pool = "p"
types = ["A"]

[[name]]
name = "geo"
policy = "geo-nearest"
pool = "g"

[pool.p]
members = [ { site = "fra", address = "192.0.2.1" }, { site = "iad", address = "192.0.2.2" }, { site = "iad", address = "2001:db8::2" } ]

[pool.q]
members = [ { site = "fra", address = "192.0.2.9" } ]

[pool.g]
members = [ { site = "fra", address = "192.0.2.20" }, { site = "iad", address = "198.51.100.20" }, { site = "sin", address = "203.0.113.20" } ]

[site.fra]
location = [50.11, 8.68]
[site.iad]
location = [38.95, -77.45]
[site.sin]
location = [1.35, 103.82]
"#;

fn ttls(m: &Message) -> Vec<u32> {
    m.answers
        .iter()
        .chain(&m.authorities)
        .chain(&m.additionals)
        .map(|r| r.ttl)
        .collect()
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let names = [
        "www.example.test.",
        "WwW.ExAmPlE.TeSt.",
        "mail.example.test.",
        "txt.example.test.",
        "alias.example.test.",
        "alias2.example.test.",
        "toglobal.example.test.",
        "b.c.example.test.",
        "c.example.test.",
        "example.test.",
        "sub.example.test.",
        "host.sub.example.test.",
        "nope.example.test.",
        "a.nope.example.test.",
        "x.wild.example.test.",
        "all.example.test.",
        "ALL.example.test.",
        "down.example.test.",
        "v4only.example.test.",
        "geo.example.test.",
        "outside.example.org.",
        "x.child.example.test.",
        "y.child.example.test.",
        "z.child.example.test.",
        "z.x.child.example.test.",
        "child.example.test.",
        "_sip._tcp.example.test.",
        "_SIP._Tcp.example.test.",
        "mxcut.example.test.",
        "mxlb.example.test.",
        "bigmx.example.test.",
        "BigMX.example.test.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::MX,
        RecordType::SRV,
        RecordType::TXT,
        RecordType::NS,
        RecordType::SOA,
        RecordType::CNAME,
        RecordType::DS,
        RecordType::ANY,
        RecordType::Unknown(65280),
        RecordType::Unknown(99),
    ];
    let variants: Vec<(&str, Option<Opts>)> = vec![
        ("plain", None),
        ("edns", Some(Opts::edns(1232))),
        (
            "edns+do",
            Some(Opts {
                edns: Some(4096),
                dnssec_ok: true,
                ..Default::default()
            }),
        ),
        (
            "edns512",
            Some(Opts {
                edns: Some(512),
                ..Default::default()
            }),
        ),
        ("ecs", Some(Opts::ecs("10.3.0.0/24"))),
        ("ecs0", Some(Opts::ecs("0.0.0.0/0"))),
        ("ecs6", Some(Opts::ecs("2001:db8:3::/56"))),
        (
            "ecs-bad",
            Some(Opts {
                raw_ecs: Some(vec![0, 1, 15, 0, 10, 3]),
                ..Default::default()
            }),
        ),
        (
            "edns1",
            Some(Opts {
                edns_version: 1,
                ..Opts::edns(1232)
            }),
        ),
    ];
    let mut out = Vec::new();
    for n in names {
        for t in types {
            for (label, o) in &variants {
                out.push((format!("{n} {t} {label}"), build_query(n, t, o.as_ref())));
            }
        }
    }
    out
}

#[test]
fn fast_and_general_paths_agree() {
    paths_agree(false);
}

/// The same with the zone signed: DO queries get their load-balanced answers signed by the
/// fast path and everything else from the general path's stored answers, and both must be
/// what the general path gives.
#[test]
fn fast_and_general_paths_agree_on_a_signed_zone() {
    paths_agree(true);
}

fn paths_agree(signed: bool) {
    let many: String = (1..=40)
        .map(|i| format!("many IN A 192.0.2.{i}\n"))
        .collect();
    let cfg = ConfigDir::new_with(
        &zone_with(&ZONE_EXTRA.replace("{many}", &many)),
        GSLB,
        "geo_database = \"geo.mmdb\"",
        "",
    );
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/geo/demo-city.mmdb"),
        cfg.path("geo.mmdb"),
    )
    .unwrap();
    // A zone nested inside the first without a delegation: its names are its own.
    std::fs::write(
        cfg.path("child.zone"),
        "$TTL 60\n@ SOA ns1.child.example.test. h.child.example.test. 1 2 3 4 30\n NS ns1\nns1 A 192.0.2.1\ny A 192.0.2.78\n",
    )
    .unwrap();
    let mut server = std::fs::read_to_string(cfg.config()).unwrap();
    if signed {
        let out = std::process::Command::new(BIN)
            .args(["dnssec", "keygen", "example.test", "--dir"])
            .arg(cfg.path(""))
            .output()
            .unwrap();
        let key = String::from_utf8(out.stdout).unwrap();
        server.push_str(&format!("dnssec_keys = [{:?}]\n", key.trim()));
    }
    server.push_str("\n[[zone]]\norigin = \"child.example.test\"\nfile = \"child.zone\"\n");
    std::fs::write(cfg.config(), server).unwrap();
    let loaded = Loaded::new(load(&Source::File(cfg.config())).unwrap(), 1);
    let mut snap = HealthSnapshot::default();
    snap.set(
        MemberId::new("fra", "192.0.2.9"),
        MemberState {
            health: Health::Down,
            ..Default::default()
        },
    );
    let health = HealthView::Fixed(&snap);
    let src = SocketAddr::from(([10, 1, 2, 3], 5300));

    let (mut fast_taken, mut total, mut signed_taken) = (0, 0, 0);
    for (what, q) in corpus() {
        for transport in [Transport::Udp, Transport::Tcp] {
            total += 1;
            let general =
                answer_with(&loaded, health, &q, src, transport, None).expect("an answer");
            let mut out = Vec::new();
            if !fast::answer(&loaded, health, &q, src, transport, &mut out) {
                continue;
            }
            fast_taken += 1;
            if signed && what.ends_with("edns+do") {
                signed_taken += 1;
            }
            let a = Message::from_vec(&out).unwrap_or_else(|e| {
                panic!("{what} {transport:?}: fast answer does not parse: {e}")
            });
            let b = Message::from_vec(&general).unwrap();
            assert_eq!(a, b, "{what} over {transport:?}");
            // Record equality ignores TTLs (RFC 2136): compare them too.
            assert_eq!(ttls(&a), ttls(&b), "{what} over {transport:?}: TTLs");
            assert_eq!(
                out[2..4],
                general[2..4],
                "{what} over {transport:?}: header flags"
            );
            // Negative answers compress the SOA against the question as an encoder does.
            if a.answers.is_empty() {
                assert!(
                    out.len() <= general.len(),
                    "{what} over {transport:?}: {} bytes, the general path {}",
                    out.len(),
                    general.len()
                );
            }
        }
    }
    // MX and SRV answers with their targets' addresses come from the fast path (as the
    // general path built them for the corpus above).
    for (name, rtype, extra) in [
        ("www.example.test.", RecordType::MX, 2),
        ("_SIP._tcp.example.test.", RecordType::SRV, 4),
        ("BigMX.example.test.", RecordType::MX, 40),
    ] {
        let q = build_query(name, rtype, Some(&Opts::edns(1232)));
        let mut out = Vec::new();
        assert!(
            fast::answer(&loaded, health, &q, src, Transport::Udp, &mut out),
            "{name} {rtype}"
        );
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.additionals.len(), extra, "{name} {rtype}");
    }
    // In a config just loaded, a static answer is the general path's to build first: the
    // fast path declines it, then serves what the general path left in the index, to every
    // client and in the case each one asked.
    let fresh = Loaded::new(load(&Source::File(cfg.config())).unwrap(), 2);
    let mut out = Vec::new();
    let mut both = |name: &str, opts: Option<&Opts>, client: SocketAddr| {
        let q = build_query(name, RecordType::A, opts);
        let fast = fast::answer(&fresh, health, &q, client, Transport::Udp, &mut out);
        let general = answer_with(&fresh, health, &q, client, Transport::Udp, None).unwrap();
        fast.then(|| (out.clone(), general))
    };
    assert!(both("www.example.test.", None, src).is_none());
    let other = SocketAddr::from(([192, 0, 2, 200], 5300));
    let (fast, general) = both("WwW.example.test.", Some(&Opts::edns(1232)), other).unwrap();
    assert_eq!(
        Message::from_vec(&fast).unwrap(),
        Message::from_vec(&general).unwrap()
    );
    // The same for the zone's negative answers: the first is the general path's, whose SOA
    // then serves names of any length.
    assert!(both("nope.example.test.", None, src).is_none());
    for name in ["a.b.c.nope.example.test.", "x.example.test."] {
        let (fast, general) = both(name, None, src).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(fast, general, "{name}");
    }
    assert!(
        fast_taken * 2 > total,
        "the fast path answered only {fast_taken} of {total}"
    );
    if signed {
        // Names x types over both transports with DO: most come from the fast path.
        let asked = total / 9;
        assert!(
            signed_taken * 2 > asked,
            "the fast path answered {signed_taken} of {asked} signed queries"
        );
    }
}
