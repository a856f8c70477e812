//! Resolver-cache safety of ECS scopes, in process: for 1,000 random ECS prefixes, 8 random
//! addresses inside each returned scope (asked with the same source prefix length, as a
//! resolver's clients would be) get the same site ranking as the prefix that was answered.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use ipnet::IpNet;
use meridian::config::{load, Source};
use meridian::dns::{answer_with, reply_scope, HealthView, Loaded, Trace, Transport};
use meridian::health::HealthStore;

const GSLB: &str = r#"
[[name]]
name = "near"
policy = "geo-nearest"
pool = "p"
limit = 2
subnets = { "10.3.7.0/24" = ["fra"], "10.3.7.128/25" = ["iad"], "10.1.0.0/20" = ["sin"], "10.60.0.0/14" = ["fra"], "10.60.4.0/22" = ["sin", "iad"], "2001:db8:3:100::/56" = ["iad"] }

[[name]]
name = "map"
policy = "geo-map"
pool = "p"
map = { "EU" = ["fra"], "EU/DE/BY" = ["sin"], "NA" = ["iad"], "AS/JP" = ["iad", "sin"] }
subnets = { "10.2.128.0/17" = ["sin"] }

[pool.p]
members = [
  { site = "fra", address = "192.0.2.1" }, { site = "iad", address = "192.0.2.2" }, { site = "sin", address = "192.0.2.3" },
  { site = "fra", address = "2001:db8::1" }, { site = "iad", address = "2001:db8::2" }, { site = "sin", address = "2001:db8::3" },
]
[site.fra]
location = [50.11, 8.68]
[site.iad]
location = [38.95, -77.45]
[site.sin]
location = [1.35, 103.82]
"#;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Answers one ECS question; returns (ranking, scope).
fn ask(
    loaded: &Loaded,
    store: &HealthStore,
    name: &str,
    qtype: RecordType,
    net: IpNet,
) -> (Vec<String>, u8) {
    let q = build_query(
        name,
        qtype,
        Some(&Opts {
            ecs: Some(net),
            ..Default::default()
        }),
    );
    let mut trace = Trace::default();
    let src = SocketAddr::from(([127, 0, 0, 1], 5300));
    let bytes = answer_with(
        loaded,
        HealthView::Live(store),
        &q,
        src,
        Transport::Tcp,
        Some(&mut trace),
    )
    .unwrap();
    let m = Message::from_vec(&bytes).unwrap();
    let (_, scope) = reply_scope(&m).expect("ECS echoed");
    let order = trace
        .selection
        .and_then(|s| s.sites)
        .expect("a geo decision");
    (
        order
            .sites
            .into_iter()
            .map(|s| s.site.to_string())
            .collect(),
        scope,
    )
}

fn random_inside(rng: &mut Rng, net: IpNet) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let host = (rng.next() as u32) & !u32::from(n.netmask());
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | host))
        }
        IpNet::V6(n) => {
            let r = ((rng.next() as u128) << 64) | rng.next() as u128;
            let host = r & !u128::from(n.netmask());
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | host))
        }
    }
}

#[test]
fn every_address_inside_a_returned_scope_gets_the_same_ranking() {
    let cfg = ConfigDir::new_with(&zone_with(""), GSLB, "geo_database = \"geo.mmdb\"", "");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/geo/demo-city.mmdb"),
        cfg.path("geo.mmdb"),
    )
    .unwrap();
    let loaded = Loaded::new(load(&Source::File(cfg.config())).expect("config loads"), 1);
    let store = HealthStore::in_memory();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut narrowed = 0;
    for i in 0..1000 {
        let (name, qtype, net) = if i % 5 == 4 {
            // IPv6 around the demo's 2001:db8:1..5::/48 networks.
            let addr = Ipv6Addr::new(
                0x2001,
                0xdb8,
                rng.below(6) as u16,
                rng.below(0x300) as u16,
                0,
                0,
                0,
                rng.next() as u16,
            );
            let len = 24 + rng.below(41) as u8;
            (
                "near.example.test.",
                RecordType::AAAA,
                IpNet::new(IpAddr::V6(addr), len).unwrap().trunc(),
            )
        } else {
            let second = [1u8, 2, 3, 4, 5, 6, 9, 60, 61, 62, 63][rng.below(11) as usize];
            let addr = Ipv4Addr::new(10, second, rng.below(256) as u8, rng.below(256) as u8);
            let len = 8 + rng.below(25) as u8;
            let name = if i % 2 == 0 {
                "near.example.test."
            } else {
                "map.example.test."
            };
            (
                name,
                RecordType::A,
                IpNet::new(IpAddr::V4(addr), len).unwrap().trunc(),
            )
        };
        let (ranking, scope) = ask(&loaded, &store, name, qtype, net);
        assert!(
            scope <= net.prefix_len(),
            "{net}: scope /{scope} longer than the source"
        );
        if scope < net.prefix_len() {
            narrowed += 1;
        }
        let scope_net = IpNet::new(net.network(), scope).unwrap().trunc();
        for _ in 0..8 {
            let other = IpNet::new(random_inside(&mut rng, scope_net), net.prefix_len())
                .unwrap()
                .trunc();
            let (other_ranking, _) = ask(&loaded, &store, name, qtype, other);
            assert_eq!(
                other_ranking, ranking,
                "{name}: {net} answered with scope /{scope}, but {other} inside it ranks differently"
            );
        }
    }
    // The property is not vacuous: most answers hold for more than the asked prefix.
    assert!(
        narrowed > 300,
        "only {narrowed} scopes were wider than their source"
    );
}
