//! Load shedding in a decision: members whose site's load report earned them a weight
//! factor below full. Weighted policies scale weights by it; the others keep that share of
//! client networks on the member, chosen by a fixed hash of the client's network, so every
//! node splits clients alike and the ECS scope of a split answer is that network.

use std::net::IpAddr;

use ipnet::IpNet;
use smallvec::SmallVec;

use super::Indexes;
use crate::health::Factor;

/// Where a client network falls among all of them, in thousandths: a member whose factor is
/// above it keeps the network. A fixed mix of the network's bits, so every node and every
/// restart splits clients the same way.
pub fn shed_point(unit: IpNet) -> u16 {
    let bits: u128 = match unit.network() {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    let mut x =
        (bits as u64) ^ ((bits >> 64) as u64).rotate_left(17) ^ u64::from(unit.prefix_len());
    // splitmix64's finaliser: every input bit moves every output bit.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % 1000) as u16
}

/// Load shedding over a pool's usable candidates, `factors` beside them. Weighted policies
/// drop members left out and scale the others' weights (returned as factors for the group);
/// the others keep only the members that keep this client's network (`unit`, placed by
/// [`shed_point`] only when some factor is partial), the rest spilling to the next-ranked.
/// Members left out still answer when every candidate is; a client no partial member keeps
/// goes to a partial one rather than one left out. Returns the weights' factors and whether
/// a partial factor split the decision by network.
pub(super) fn shed(
    candidates: &mut Indexes,
    factors: &[Factor],
    weighted: bool,
    unit: IpNet,
) -> (Option<SmallVec<[u16; 4]>>, bool) {
    if factors.iter().all(|&f| f == Factor::FULL) {
        return (None, false);
    }
    let keep = |test: &dyn Fn(Factor) -> bool| -> Option<Indexes> {
        let kept: Indexes = candidates
            .iter()
            .zip(factors)
            .filter(|(_, &f)| test(f))
            .map(|(&i, _)| i)
            .collect();
        (!kept.is_empty()).then_some(kept)
    };
    let open = |f: Factor| f != Factor::NONE;
    if weighted {
        let Some(kept) = keep(&open) else {
            return (None, false);
        };
        let weights = factors
            .iter()
            .filter(|&&f| open(f))
            .map(|f| f.permille())
            .collect();
        *candidates = kept;
        return (Some(weights), false);
    }
    let split = factors.iter().any(|f| f.is_partial());
    let point = if split { shed_point(unit) } else { 0 };
    if let Some(kept) = keep(&|f| f.permille() > point).or_else(|| keep(&open)) {
        *candidates = kept;
    }
    (None, split)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{pool, request, run};
    use super::super::*;
    use crate::health::{HealthSnapshot, MemberState};

    fn shed_member(snap: &mut HealthSnapshot, m: &Member, share: f64) {
        snap.set(
            m.id.clone(),
            MemberState {
                factor: Factor::of(share),
                ..Default::default()
            },
        );
    }

    #[test]
    fn weighted_shedding_scales_weights_and_leaves_out_only_while_others_answer() {
        let pools = [pool(&[(1, 1), (1, 1)])];
        let mut snap = HealthSnapshot::default();
        let weighted = |snap: &HealthSnapshot, n| {
            run(&pools, PolicyKind::Weighted, WhenAllDown::FailOpen, snap, n)
        };
        shed_member(&mut snap, &pools[0].members[0], 0.5);
        let sels = weighted(&snap, 1500);
        let first = sels.iter().filter(|s| s.members[0].1 == 0).count();
        assert_eq!(first, 500, "weight 1 x 0.5 against weight 1");
        // Interleaved: every three answers hold one led by the shedding member.
        for window in sels.chunks(3) {
            assert_eq!(window.iter().filter(|s| s.members[0].1 == 0).count(), 1);
        }
        shed_member(&mut snap, &pools[0].members[0], 0.3);
        let sels = weighted(&snap, 130);
        for window in sels.chunks(13) {
            assert_eq!(window.iter().filter(|s| s.members[0].1 == 0).count(), 3);
        }
        let runs = sels
            .windows(3)
            .filter(|w| w.iter().all(|s| s.members[0].1 == 0))
            .count();
        assert_eq!(runs, 0, "never three in a row at 3 in 13");
        assert!(sels.iter().all(|s| s.valid_for.prefix_len() == 0));

        shed_member(&mut snap, &pools[0].members[0], 0.0);
        let sels = weighted(&snap, 10);
        assert!(sels.iter().all(|s| s.members.to_vec() == vec![(0, 1)]));

        shed_member(&mut snap, &pools[0].members[1], 0.0);
        let sels = weighted(&snap, 10);
        let first = sels.iter().filter(|s| s.members[0].1 == 0).count();
        assert_eq!(
            first, 5,
            "every member left out: all answer at their weights"
        );
        assert!(sels.iter().all(|s| s.reason == Reason::Healthy));
    }

    /// The share of client /24s a failover pool's first member keeps, and each decision's
    /// network, over `n` client networks.
    fn failover_share(pools: &[Pool], snap: &HealthSnapshot, n: u32) -> (f64, Vec<IpNet>) {
        let req = request(pools, &PolicyKind::Failover, &WhenAllDown::FailOpen);
        let mut kept = 0;
        let mut nets = Vec::new();
        for i in 0..n {
            let addr = std::net::Ipv4Addr::from((10u32 << 24) | (i << 8) | 77);
            let client = ClientInfo::from_network(IpNet::from(IpAddr::V4(addr)));
            let sel = select(&req, snap, &client, 0);
            // Every address of the network the decision holds for is decided alike.
            let other = std::net::Ipv4Addr::from((10u32 << 24) | (i << 8) | 200);
            let again = select(
                &req,
                snap,
                &ClientInfo::from_network(IpNet::from(IpAddr::V4(other))),
                7,
            );
            assert_eq!(sel.members, again.members);
            kept += usize::from(sel.members[0] == (0, 0));
            nets.push(sel.valid_for);
        }
        (kept as f64 / f64::from(n), nets)
    }

    #[test]
    fn failover_shedding_keeps_a_stable_share_of_client_networks() {
        let pools = [pool(&[(1, 1), (1, 2)])];
        let mut snap = HealthSnapshot::default();
        let (share, nets) = failover_share(&pools, &snap, 200);
        assert_eq!(share, 1.0);
        assert!(
            nets.iter().all(|n| n.prefix_len() == 0),
            "no shedding: scope 0"
        );

        for target in [0.3, 0.75] {
            shed_member(&mut snap, &pools[0].members[0], target);
            let (share, nets) = failover_share(&pools, &snap, 2000);
            assert!(
                (share - target).abs() < 0.04,
                "{share} kept for a factor of {target}"
            );
            assert!(nets.iter().all(|n| n.prefix_len() == 24), "split by /24");
        }
        // Networks kept at a smaller factor stay kept at a larger one: raising the factor
        // moves clients back, it does not reshuffle them.
        let req = request(&pools, &PolicyKind::Failover, &WhenAllDown::FailOpen);
        let (mut low, mut high) = (snap.clone(), snap.clone());
        shed_member(&mut low, &pools[0].members[0], 0.2);
        shed_member(&mut high, &pools[0].members[0], 0.6);
        for i in 0..500u32 {
            let c = ClientInfo::from_network(IpNet::from(IpAddr::V4((i << 8).into())));
            if select(&req, &low, &c, 0).members[0] == (0, 0) {
                assert_eq!(select(&req, &high, &c, 0).members[0], (0, 0));
            }
        }

        shed_member(&mut snap, &pools[0].members[0], 0.0);
        let (share, nets) = failover_share(&pools, &snap, 100);
        assert_eq!(share, 0.0);
        assert!(
            nets.iter().all(|n| n.prefix_len() == 0),
            "left out: no split"
        );

        // Both left out: the first answers again, as if nobody shed.
        shed_member(&mut snap, &pools[0].members[1], 0.0);
        let (share, _) = failover_share(&pools, &snap, 100);
        assert_eq!(share, 1.0);
    }

    #[test]
    fn the_shedding_unit_is_at_most_a_slash_24_or_48_and_never_wider_than_the_client() {
        let unit = |s: &str| client_unit(s.parse().unwrap()).to_string();
        assert_eq!(unit("198.51.100.7/32"), "198.51.100.0/24");
        assert_eq!(unit("198.51.0.0/16"), "198.51.0.0/16");
        assert_eq!(unit("2001:db8:1:2::1/128"), "2001:db8:1::/48");
        assert_eq!(unit("2001:db8::/32"), "2001:db8::/32");
    }
}
