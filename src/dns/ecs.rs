//! EDNS Client Subnet (RFC 7871) read straight from the query bytes.
//!
//! hickory-proto decodes the option leniently (extra address bytes and bits set past the
//! source prefix are accepted silently), while RFC 7871 section 6 asks a server to reject
//! such options with FORMERR; so the option is located and checked here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// A well-formed ECS option from a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecs {
    /// The address with every bit past `source` zero.
    pub addr: IpAddr,
    /// SOURCE PREFIX-LENGTH.
    pub source: u8,
}

impl Ecs {
    /// The client network the option names.
    pub fn network(&self) -> IpNet {
        IpNet::new(self.addr, self.source).expect("prefix checked when parsed")
    }
}

/// What the query carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    None,
    Subnet(Ecs),
    /// A bad family, a prefix too long, the wrong number of address bytes, bits set past the
    /// prefix, or two ECS options: answer FORMERR.
    Malformed,
}

const OPT: u16 = 41;
const ECS: u16 = 8;

/// Finds and checks the ECS option of a query. A packet whose framing cannot be walked is
/// reported as carrying none: the general parser decides what to do with it.
pub fn find(packet: &[u8]) -> Found {
    let mut found = Found::None;
    let walked = each_option(packet, |code, data| {
        if code == ECS {
            found = match found {
                Found::None => parse(data),
                _ => Found::Malformed,
            };
        }
    });
    match walked {
        Some(()) => found,
        None => Found::None,
    }
}

/// An EDNS option that may appear once appeared more than once (the query is malformed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeated;

/// The raw data of option `code` in a query's OPT: `Ok(None)` when absent, `Err(Repeated)` when
/// it appears twice. A packet whose framing cannot be walked counts as carrying none.
pub fn find_raw(packet: &[u8], code: u16) -> Result<Option<&[u8]>, Repeated> {
    let mut found: Result<Option<&[u8]>, Repeated> = Ok(None);
    let walked = each_option(packet, |c, data| {
        if c == code {
            found = match found {
                Ok(None) => Ok(Some(data)),
                _ => Err(Repeated),
            };
        }
    });
    match walked {
        Some(()) => found,
        None => Ok(None),
    }
}

/// Calls `f` with each option of each OPT record; `None` when the framing cannot be walked.
fn each_option<'p>(p: &'p [u8], mut f: impl FnMut(u16, &'p [u8])) -> Option<()> {
    let count = |at: usize| -> Option<usize> {
        Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]) as usize)
    };
    let (qd, an, ns, ar) = (count(4)?, count(6)?, count(8)?, count(10)?);
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(p, pos)? + 4;
    }
    for _ in 0..an + ns {
        pos = skip_name(p, pos)?;
        let rdlen = count(pos + 8)?;
        pos += 10 + rdlen;
    }
    for _ in 0..ar {
        pos = skip_name(p, pos)?;
        let rtype = count(pos)? as u16;
        let rdlen = count(pos + 8)?;
        let rdata = p.get(pos + 10..pos + 10 + rdlen)?;
        pos += 10 + rdlen;
        if rtype != OPT {
            continue;
        }
        let mut o = 0;
        while o + 4 <= rdata.len() {
            let code = u16::from_be_bytes([rdata[o], rdata[o + 1]]);
            let len = u16::from_be_bytes([rdata[o + 2], rdata[o + 3]]) as usize;
            let data = rdata.get(o + 4..o + 4 + len)?;
            o += 4 + len;
            f(code, data);
        }
    }
    Some(())
}

/// The position after the wire name that starts at `pos` (a compression pointer ends it).
pub(crate) fn skip_name(p: &[u8], mut pos: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *p.get(pos)? as usize;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xC0 == 0xC0 => return Some(pos + 2),
            l if l & 0xC0 != 0 => return None,
            l => pos += 1 + l,
        }
    }
    None
}

/// Checks one ECS option's data (after the option code and length).
pub fn parse(d: &[u8]) -> Found {
    if d.len() < 4 {
        return Found::Malformed;
    }
    let family = u16::from_be_bytes([d[0], d[1]]);
    let source = d[2];
    let addr = &d[4..];
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return Found::Malformed,
    };
    if source > max || addr.len() != (source as usize).div_ceil(8) {
        return Found::Malformed;
    }
    if !source.is_multiple_of(8) {
        let last = addr[addr.len() - 1];
        if last & (0xFFu8 >> (source % 8)) != 0 {
            return Found::Malformed;
        }
    }
    let addr = if family == 1 {
        let mut b = [0u8; 4];
        b[..addr.len()].copy_from_slice(addr);
        IpAddr::V4(Ipv4Addr::from(b))
    } else {
        let mut b = [0u8; 16];
        b[..addr.len()].copy_from_slice(addr);
        IpAddr::V6(Ipv6Addr::from(b))
    };
    Found::Subnet(Ecs { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_as_rfc_7871_asks() {
        assert_eq!(
            parse(&[0, 1, 24, 0, 10, 3, 0]),
            Found::Subnet(Ecs {
                addr: "10.3.0.0".parse().unwrap(),
                source: 24
            })
        );
        assert_eq!(
            parse(&[0, 1, 0, 0]),
            Found::Subnet(Ecs {
                addr: "0.0.0.0".parse().unwrap(),
                source: 0
            })
        );
        assert_eq!(
            parse(&[0, 3, 24, 0, 10, 3, 0]),
            Found::Malformed,
            "unknown family"
        );
        assert_eq!(
            parse(&[0, 1, 33, 0, 1, 2, 3, 4, 5]),
            Found::Malformed,
            "prefix too long"
        );
        assert_eq!(
            parse(&[0, 1, 24, 0, 10, 3, 0, 0]),
            Found::Malformed,
            "too many address bytes"
        );
        assert_eq!(
            parse(&[0, 1, 23, 0, 10, 3, 1]),
            Found::Malformed,
            "bits past the prefix"
        );
        assert_eq!(parse(&[0, 1, 24]), Found::Malformed, "short option");
    }
}
