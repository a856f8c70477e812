//! DNS cookies (RFC 7873) with the interoperable server cookie of RFC 9018.
//!
//! A query carrying a COOKIE option gets the client's cookie back with a fresh server cookie:
//! version 1, three reserved bytes, a 32-bit timestamp and an 8-byte SipHash-2-4 over the
//! client cookie, those fields and the client's address, keyed by a 16-byte secret. Every
//! anycast node that shares the secret (a file the operator deploys) validates the others'
//! cookies; without a file each node keeps a random one in its state directory. The previous
//! secret stays valid during a rollover (a second line in the file).
//!
//! Cookies are not required: a query without one, or with a server cookie that no longer
//! validates, is answered normally (RFC 7873 section 5.2.3) with a new cookie. What a valid
//! cookie earns is exemption from response rate limiting; [`Secrets::validates`] says whether
//! a query has one.

use std::net::IpAddr;

use siphasher::sip::SipHasher24;

/// The COOKIE option code.
pub const CODE: u16 = 10;

/// The server secrets (a config value): the current one signs, the current and the previous
/// one validate.
pub use crate::config::CookieSecrets as Secrets;

/// A client cookie and the server cookie to send back with it.
pub type Reply = [u8; 24];

impl Secrets {
    /// The reply for a COOKIE option's data (already checked by [`well_formed`]).
    pub fn reply(&self, data: &[u8], client: IpAddr, now: u32) -> Reply {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&data[..8]);
        out[8] = 1;
        out[12..16].copy_from_slice(&now.to_be_bytes());
        let hash = hash(&self.current, &out[..16], client);
        out[16..].copy_from_slice(&hash);
        out
    }

    /// Whether the option carries a server cookie this node (or one sharing its secret, the
    /// current or the previous) made for this client within the last hour.
    pub fn validates(&self, data: &[u8], client: IpAddr, now: u32) -> bool {
        if data.len() != 24 || data[8] != 1 || data[9..12] != [0, 0, 0] {
            return false;
        }
        let stamp = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
        // RFC 9018 section 4.3: at most an hour old and five minutes in the future.
        let age = now.wrapping_sub(stamp) as i32;
        if !(-300..=3600).contains(&age) {
            return false;
        }
        std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .any(|k| hash(k, &data[..16], client) == data[16..24])
    }
}

/// RFC 7873 section 5.2.2: a client cookie alone (8 bytes) or with a server cookie of 8 to
/// 32 bytes. Anything else is FORMERR.
pub fn well_formed(data: &[u8]) -> bool {
    data.len() == 8 || (16..=40).contains(&data.len())
}

/// Seconds since the epoch, as cookies count them.
pub fn now() -> u32 {
    crate::clock::unix_now() as u32
}

/// SipHash-2-4 over client cookie | version | reserved | timestamp | client address.
fn hash(key: &[u8; 16], head: &[u8], client: IpAddr) -> [u8; 8] {
    use std::hash::Hasher;
    let mut h = SipHasher24::new_with_key(key);
    h.write(head);
    match client {
        IpAddr::V4(a) => h.write(&a.octets()),
        IpAddr::V6(a) => h.write(&a.octets()),
    }
    h.finish().to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));
    const CLIENT: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    #[test]
    fn a_server_cookie_validates_for_its_client_for_an_hour() {
        let s = Secrets::new([7; 16], None);
        let t = 1_700_000_000;
        let reply = s.reply(&CLIENT, IP, t);
        assert_eq!(&reply[..8], &CLIENT);
        assert_eq!(&reply[8..12], &[1, 0, 0, 0]);
        assert!(s.validates(&reply, IP, t));
        assert!(s.validates(&reply, IP, t + 3600));
        assert!(!s.validates(&reply, IP, t + 3601));
        assert!(!s.validates(&reply, IP, t - 301));
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(!s.validates(&reply, other, t));
        let mut forged = reply;
        forged[20] ^= 1;
        assert!(!s.validates(&forged, IP, t));
    }

    #[test]
    fn rollover_accepts_the_previous_secret_and_nodes_sharing_a_secret_agree() {
        let old = Secrets::new([1; 16], None);
        let t = 1_700_000_000;
        let made_before = old.reply(&CLIENT, IP, t);
        let rolled = Secrets::parse(&format!(
            "# rolled\n{}{}",
            "22".repeat(16) + "\n",
            "01".repeat(16)
        ))
        .unwrap();
        assert!(rolled.validates(&made_before, IP, t + 10));
        let other_node = Secrets::parse(&rolled.to_text()).unwrap();
        assert_eq!(other_node, rolled);
        assert!(other_node.validates(&rolled.reply(&CLIENT, IP, t), IP, t));
        let after = Secrets::new([2; 16], None);
        assert!(!after.validates(&made_before, IP, t + 10));
    }

    #[test]
    fn option_lengths_follow_rfc_7873() {
        for len in [0, 1, 7, 9, 15, 41] {
            assert!(!well_formed(&vec![0; len]), "{len}");
        }
        for len in [8, 16, 24, 40] {
            assert!(well_formed(&vec![0; len]), "{len}");
        }
        assert!(Secrets::parse("zz").is_err());
        assert!(Secrets::parse("").is_err());
    }

    #[test]
    fn matches_the_rfc_9018_test_vector() {
        // RFC 9018 appendix A.1: client 198.51.100.100, secret e5e973e5a6b2a43f48e7dc849e37bfcf,
        // client cookie 2464c4abcf10c957, timestamp 1559731985 (0x5cf79f11).
        let s = Secrets::parse("e5e973e5a6b2a43f48e7dc849e37bfcf").unwrap();
        let client: IpAddr = "198.51.100.100".parse().unwrap();
        let cc = [0x24, 0x64, 0xc4, 0xab, 0xcf, 0x10, 0xc9, 0x57];
        let reply = s.reply(&cc, client, 1_559_731_985);
        let hex: String = reply.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "2464c4abcf10c957010000005cf79f111f8130c3eee29480");
    }
}
