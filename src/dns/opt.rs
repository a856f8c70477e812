//! The reply's OPT record (RFC 6891), written in one place for every path: our payload size,
//! the extended rcode, DO (and CO, RFC 9824) echoed, the cookie reply (RFC 7873), NSID (RFC 5001), ECS with
//! its scope (RFC 7871) and an Extended DNS Error (RFC 8914). Answers are encoded without it
//! and [`OptReply::append`] adds it, so its size is known before the answer is fitted.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::cookie;
use super::ecs::Ecs;
use super::query::{Client, Query};
use super::Loaded;

const OPT: u16 = 41;
const NSID: u16 = 3;
const ECS: u16 = 8;
const EDE: u16 = 15;

/// What a reply's OPT holds; a reply has one exactly when its query had one.
#[derive(Debug, Clone, Copy)]
pub(super) struct OptReply<'a> {
    /// Our UDP payload size.
    payload: u16,
    dnssec_ok: bool,
    /// CO echoed (RFC 9824): the client asked, with DO.
    compact_ok: bool,
    cookie: Option<cookie::Reply>,
    nsid: Option<&'a [u8]>,
    /// The client's ECS option echoed, with the scope the answer holds for.
    ecs: Option<(Ecs, u8)>,
    /// An Extended DNS Error code.
    pub(super) ede: Option<u16>,
}

impl<'a> OptReply<'a> {
    /// The OPT of a reply to `q` that says no more than the size and DO (error replies to
    /// a bad version or a malformed option); `None` when the query had no OPT.
    pub(super) fn bare(q: &Query<'_>, loaded: &Loaded) -> Option<OptReply<'a>> {
        let edns = q.edns.as_ref()?;
        Some(OptReply {
            payload: loaded.config.server.edns_udp_size,
            dnssec_ok: edns.dnssec_ok,
            compact_ok: edns.dnssec_ok && edns.compact_ok,
            cookie: None,
            nsid: None,
            ecs: None,
            ede: None,
        })
    }

    /// The OPT of an ordinary reply to `q` from `src`: a fresh server cookie when the query
    /// brought a client cookie and cookies are on, and the node's identity when asked.
    pub(super) fn for_query(
        q: &Query<'_>,
        loaded: &'a Loaded,
        src: SocketAddr,
    ) -> Option<OptReply<'a>> {
        let mut opt = OptReply::bare(q, loaded)?;
        let server = &loaded.config.server;
        if let (Some(data), Some(secrets)) = (q.cookie(), server.cookie_secrets.as_deref()) {
            opt.cookie = Some(secrets.reply(data, src.ip(), cookie::now()));
        }
        if q.edns.as_ref().is_some_and(|e| e.nsid) {
            opt.nsid = server.identity.as_deref().map(str::as_bytes);
        }
        Some(opt)
    }

    /// Echoes the query's ECS option from a zone that honours ECS (RFC 7871 section 7.2.1):
    /// family, source and address as sent; the scope 0 unless the answer depended on the
    /// client's network (`valid_for`), then that network's length, never longer than the
    /// source. Counted in the ECS metric unless `count` is false (explanations).
    pub(super) fn echo_ecs(
        &mut self,
        q: &Query<'_>,
        zone_ecs: bool,
        client: Client,
        valid_for: Option<IpNet>,
        count: bool,
    ) {
        let Some(e) = q.ecs().filter(|_| zone_ecs) else {
            return;
        };
        let scope = match valid_for {
            Some(net) if client.used_ecs => net.prefix_len().min(e.source),
            _ => 0,
        };
        if count {
            crate::metrics::ecs(scope);
        }
        self.ecs = Some((e, scope));
    }

    /// The record's length in bytes.
    pub(super) fn len(&self) -> usize {
        let mut len = 11;
        len += self.cookie.map_or(0, |c| 4 + c.len());
        len += self.nsid.map_or(0, |n| 4 + n.len());
        len += self
            .ecs
            .map_or(0, |(e, _)| 8 + (e.source as usize).div_ceil(8));
        len += self.ede.map_or(0, |_| 6);
        len
    }

    /// Appends the record to `reply` (a whole message without an OPT) and counts it in
    /// ARCOUNT; `rcode_high` is the upper eight bits of the reply's 12-bit rcode.
    pub(super) fn append(&self, reply: &mut Vec<u8>, rcode_high: u8) {
        let ar = u16::from_be_bytes([reply[10], reply[11]]).wrapping_add(1);
        reply[10..12].copy_from_slice(&ar.to_be_bytes());
        reply.push(0);
        reply.extend_from_slice(&OPT.to_be_bytes());
        reply.extend_from_slice(&self.payload.to_be_bytes());
        let flags = u8::from(self.dnssec_ok) << 7 | u8::from(self.compact_ok) << 6;
        reply.extend_from_slice(&[rcode_high, 0, flags, 0]);
        let rdlen_at = reply.len();
        reply.extend_from_slice(&[0, 0]);
        let mut option = |code: u16, data: &[&[u8]]| {
            let len: usize = data.iter().map(|d| d.len()).sum();
            reply.extend_from_slice(&code.to_be_bytes());
            reply.extend_from_slice(&(len as u16).to_be_bytes());
            for d in data {
                reply.extend_from_slice(d);
            }
        };
        if let Some(c) = &self.cookie {
            option(cookie::CODE, &[c]);
        }
        if let Some(n) = self.nsid {
            option(NSID, &[n]);
        }
        if let Some((e, scope)) = self.ecs {
            let family: u16 = if e.addr.is_ipv4() { 1 } else { 2 };
            let bytes = (e.source as usize).div_ceil(8);
            let mut octets = [0u8; 16];
            match e.addr {
                IpAddr::V4(a) => octets[..4].copy_from_slice(&a.octets()),
                IpAddr::V6(a) => octets = a.octets(),
            }
            let head = [
                family.to_be_bytes()[0],
                family.to_be_bytes()[1],
                e.source,
                scope,
            ];
            option(ECS, &[&head, &octets[..bytes]]);
        }
        if let Some(code) = self.ede {
            option(EDE, &[&code.to_be_bytes()]);
        }
        let rdlen = (reply.len() - rdlen_at - 2) as u16;
        reply[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    }
}
