//! Plain values the server settings hold for the DNS side: TSIG keys, DNS cookie secrets and
//! response rate limits. Parsing and validation live here, with the rest of the config; the
//! DNS modules do the work with them (`dns::tsig` signs, `dns::cookie` hashes, `dns::rrl`
//! limits), so the config knows nothing of DNS.

use std::fmt;
use std::sync::Arc;

use ipnet::IpNet;

/// Response rate limiting for UDP, from `[server.rate_limit]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Credits per account per second; 0 turns rate limiting off.
    pub responses_per_second: u32,
    /// Every `slip`-th limited response is sent truncated; 0 drops them all.
    pub slip: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Clients never limited.
    pub exempt: Vec<IpNet>,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            responses_per_second: 200,
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt: vec![
                "127.0.0.0/8".parse().expect("literal"),
                "::1/128".parse().expect("literal"),
            ],
        }
    }
}

/// The DNS cookie server secrets: the current one signs, the current and the previous one
/// validate.
#[derive(Clone, PartialEq, Eq)]
pub struct CookieSecrets {
    pub(crate) current: [u8; 16],
    pub(crate) previous: Option<[u8; 16]>,
}

impl fmt::Debug for CookieSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CookieSecrets(..)") // never print secrets
    }
}

impl CookieSecrets {
    pub fn new(current: [u8; 16], previous: Option<[u8; 16]>) -> CookieSecrets {
        CookieSecrets { current, previous }
    }

    /// A fresh random secret.
    pub fn random() -> CookieSecrets {
        CookieSecrets::new(rand::random(), None)
    }

    /// Reads the file format: 32 hex digits for the current secret, optionally a second line
    /// with the previous one; blank lines and `#` comments are ignored.
    pub fn parse(text: &str) -> Result<CookieSecrets, String> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            keys.push(hex16(line).map_err(|m| format!("line {}: {m}", n + 1))?);
        }
        match keys.as_slice() {
            [current] => Ok(CookieSecrets::new(*current, None)),
            [current, previous] => Ok(CookieSecrets::new(*current, Some(*previous))),
            [] => Err("no secret (32 hex digits) in the file".into()),
            _ => Err("more than two secrets (current, then previous)".into()),
        }
    }

    /// The file format of [`CookieSecrets::parse`].
    pub fn to_text(&self) -> String {
        let hex = |k: &[u8; 16]| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut out = format!("{}\n", hex(&self.current));
        if let Some(p) = &self.previous {
            out.push_str(&hex(p));
            out.push('\n');
        }
        out
    }
}

fn hex16(text: &str) -> Result<[u8; 16], String> {
    let bytes = text.as_bytes();
    if bytes.len() != 32 {
        return Err(format!(
            "a secret is 32 hex digits, found {} characters",
            bytes.len()
        ));
    }
    let mut out = [0u8; 16];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| "not hex".to_string())?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| format!("{s:?} is not hex"))?;
    }
    Ok(out)
}

/// A TSIG algorithm (RFC 8945).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigAlgorithm {
    HmacSha1,
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl TsigAlgorithm {
    /// From its name as written in configs (`hmac-sha256`) or on the wire.
    pub fn from_name(name: &str) -> Option<TsigAlgorithm> {
        match name.trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha1" => Some(TsigAlgorithm::HmacSha1),
            "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
            "hmac-sha384" => Some(TsigAlgorithm::HmacSha384),
            "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
            _ => None,
        }
    }

    /// Its name as configs and the wire write it.
    pub fn name(self) -> &'static str {
        match self {
            TsigAlgorithm::HmacSha1 => "hmac-sha1",
            TsigAlgorithm::HmacSha256 => "hmac-sha256",
            TsigAlgorithm::HmacSha384 => "hmac-sha384",
            TsigAlgorithm::HmacSha512 => "hmac-sha512",
        }
    }
}

/// A TSIG shared secret key (`[[key]]`).
#[derive(Clone)]
pub struct TsigKey {
    /// The key's name, lower case, without the trailing dot.
    pub name: String,
    pub algorithm: TsigAlgorithm,
    pub(crate) secret: Arc<[u8]>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TsigKey({} {})", self.name, self.algorithm.name())
    }
}

impl PartialEq for TsigKey {
    fn eq(&self, other: &TsigKey) -> bool {
        self.name == other.name && self.algorithm == other.algorithm
    }
}

impl Eq for TsigKey {}

impl TsigKey {
    /// A key from its name, algorithm and base64 secret (as `tsig-keygen` and `keymgr` print).
    pub fn new(
        name: &str,
        algorithm: TsigAlgorithm,
        secret_base64: &str,
    ) -> Result<TsigKey, String> {
        let secret = data_encoding::BASE64
            .decode(secret_base64.trim().as_bytes())
            .map_err(|e| format!("the secret is not base64: {e}"))?;
        if secret.is_empty() {
            return Err("the secret is empty".into());
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || name.split('.').any(|l| l.is_empty() || l.len() > 63) {
            return Err(format!("{name:?} is not a key name"));
        }
        Ok(TsigKey {
            name,
            algorithm,
            secret: secret.into(),
        })
    }
}
