//! The sticky-session cookie: it names a server opaquely (a hash of the server's identity,
//! which survives reordering the config) and carries an HMAC-SHA-256 over that name, so a
//! client can neither forge a cookie for a server of its choice nor alter one it was given.

use aws_lc_rs::hmac;

use crate::config::StickyCookie;

/// Hex digits of the server tag and of the truncated MAC.
const TAG_HEX: usize = 16;
const MAC_HEX: usize = 32;

/// Signs and reads sticky cookies with one key.
pub struct Signer {
    key: hmac::Key,
}

impl Signer {
    pub fn new(secret: &[u8]) -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The cookie value for the server whose identity hashes to `tag`.
    pub fn value(&self, tag: u64) -> String {
        let tag = format!("{tag:016x}");
        let mac = hmac::sign(&self.key, tag.as_bytes());
        let mut out = tag;
        for b in &mac.as_ref()[..MAC_HEX / 2] {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// The server tag a cookie value names, when its MAC is right.
    pub fn read(&self, value: &str) -> Option<u64> {
        if value.len() != TAG_HEX + MAC_HEX || !value.is_ascii() {
            return None;
        }
        let (tag, mac) = value.split_at(TAG_HEX);
        let mac: Vec<u8> = (0..MAC_HEX / 2)
            .map(|i| u8::from_str_radix(&mac[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<_>>()?;
        let full = hmac::sign(&self.key, tag.as_bytes());
        // Compared in constant time over the truncated length.
        let expected = &full.as_ref()[..MAC_HEX / 2];
        let diff = expected
            .iter()
            .zip(&mac)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return None;
        }
        u64::from_str_radix(tag, 16).ok()
    }
}

/// The `Set-Cookie` header value pinning a client to a server.
pub fn set_cookie(settings: &StickyCookie, value: &str) -> String {
    let mut out = format!("{}={value}; Path=/", settings.name);
    if let Some(age) = settings.max_age {
        out.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    if settings.http_only {
        out.push_str("; HttpOnly");
    }
    if settings.secure {
        out.push_str("; Secure");
    }
    if let Some(s) = &settings.same_site {
        out.push_str(&format!("; SameSite={s}"));
    }
    out
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_reads_back_and_a_forged_or_altered_one_does_not() {
        let signer = Signer::new(b"0123456789abcdef0123");
        let value = signer.value(0xDEAD_BEEF_0000_0001);
        assert_eq!(signer.read(&value), Some(0xDEAD_BEEF_0000_0001));
        // Another key (another site) does not accept it.
        assert_eq!(Signer::new(b"another key of 16+ bytes").read(&value), None);
        // Steering to another server: the tag changed, the MAC no longer matches.
        let mut steered = value.clone();
        steered.replace_range(0..1, if &value[0..1] == "0" { "1" } else { "0" });
        assert_eq!(signer.read(&steered), None);
        // A flipped MAC digit, a short value, junk.
        let mut flipped = value.clone();
        let last = value.len() - 1;
        flipped.replace_range(last.., if value.ends_with('0') { "1" } else { "0" });
        assert_eq!(signer.read(&flipped), None);
        assert_eq!(signer.read(&value[1..]), None);
        assert_eq!(
            signer.read("not a cookie at all, not even close to it.."),
            None
        );
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; mrd_srv=abc".parse().unwrap());
        h.append(http::header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&h, "mrd_srv"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
