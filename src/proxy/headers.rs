//! Request and response headers a proxy owns: hop-by-hop fields dropped both ways, the
//! forwarding headers (`X-Forwarded-*`, `Forwarded`) set or extended, and the client a request
//! speaks for behind trusted proxies.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::forward::Conn;
use super::Running;

/// Headers that belong to one connection, never forwarded (RFC 9110 section 7.6.1), and
/// `Upgrade`, which only an upgrade passes on. (`Trailer` is end to end: it announces the
/// trailer fields that follow the body, and goes on with them.)
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop headers, and those the `Connection` header names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the names says which of the list are here: most messages carry none,
    // and a server's usual `Connection: keep-alive` names only fields of the list, so no
    // other name is made or looked for.
    let mut here = 0u8;
    for name in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|n| n == name) {
            here |= 1 << i;
        }
    }
    if here == 0 {
        return;
    }
    let named: smallvec::SmallVec<[HeaderName; 2]> = super::h1::tokens(h, header::CONNECTION)
        .filter(|t| {
            !t.is_empty()
                && !HOP_BY_HOP
                    .iter()
                    .any(|n| n.as_str().as_bytes().eq_ignore_ascii_case(t))
        })
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .filter(|n| h.contains_key(n))
        .collect();
    for n in named {
        h.remove(n);
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if here & (1 << i) != 0 {
            h.remove(n);
        }
    }
}

/// Joins a request's `Cookie` fields into one, with "; " between them, for an HTTP/1.1
/// server: h2 clients may send each cookie as a field of its own, which HTTP/1.1 servers,
/// reading one `Cookie`, would mostly lose (RFC 9113 section 8.2.3).
pub fn join_cookies(h: &mut HeaderMap) {
    let mut crumbs = h.get_all(header::COOKIE).iter();
    if crumbs.next().is_none() || crumbs.next().is_none() {
        return;
    }
    let joined = h
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        h.insert(header::COOKIE, v);
    }
}

/// The client a request speaks for: the peer, or when the peer is a trusted proxy, the
/// nearest address in `X-Forwarded-For` that is not one (read from the right, as each proxy
/// appends the address it saw).
pub fn client_address(running: &Running, conn: &Conn, headers: &HeaderMap) -> std::net::IpAddr {
    let peer = conn.peer.ip();
    if !running.trusts(peer) {
        return peer;
    }
    let hops: Vec<std::net::IpAddr> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !running.trusts(**ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

/// Sets `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded` (RFC 7239): extended when the
/// peer is a trusted proxy, replaced otherwise (a client cannot claim another address).
pub fn forwarding_headers(
    h: &mut HeaderMap,
    running: &Running,
    conn: &Conn,
    host: Option<&HeaderValue>,
    request_id: &HeaderValue,
) {
    let trusted = running.trusts(conn.peer.ip());
    let proto = if conn.tls { "https" } else { "http" };
    let prior = |h: &HeaderMap, name: &HeaderName| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|_| trusted)
            .map(|p| format!("{p}, "))
    };
    let xff = match prior(h, &X_FORWARDED_FOR) {
        Some(mut chain) => {
            chain.push_str(conn.peer_text.to_str().unwrap_or_default());
            HeaderValue::try_from(chain).ok()
        }
        None => Some(conn.peer_text.clone()),
    };
    let mut forwarded = prior(h, &header::FORWARDED).unwrap_or_default();
    forwarded.push_str(&conn.forwarded_for);
    let host_text = host.and_then(|v| v.to_str().ok()).unwrap_or("");
    if !host_text.is_empty() && host_text.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        forwarded.push_str(";host=\"");
        forwarded.push_str(host_text);
        forwarded.push('"');
    }
    // Room for the five set below at once: a map grown one field at a time is rebuilt on
    // each doubling.
    h.reserve(5);
    let keep_proto = trusted && h.contains_key(&X_FORWARDED_PROTO);
    let keep_host = trusted && h.contains_key(&X_FORWARDED_HOST);
    if let Some(v) = xff {
        h.insert(X_FORWARDED_FOR, v);
    }
    if let Ok(v) = HeaderValue::try_from(forwarded) {
        h.insert(header::FORWARDED, v);
    }
    if !keep_proto {
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !keep_host {
        match host {
            Some(host) => {
                h.insert(X_FORWARDED_HOST, host.clone());
            }
            None => {
                h.remove(X_FORWARDED_HOST);
            }
        }
    }
    h.insert(running.request_id_header.clone(), request_id.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn every_hop_by_hop_field_goes_in_any_case_of_its_name_and_of_connections_tokens() {
        let mut h = HeaderMap::new();
        for n in &HOP_BY_HOP {
            h.append(n, "x".parse().unwrap());
            h.append(n, "y".parse().unwrap());
        }
        h.append("connection", " Close ,X-Other,, ".parse().unwrap());
        h.insert("x-other", "1".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["x-kept"]);
        let mut none = HeaderMap::new();
        none.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut none);
        assert_eq!(none.len(), 1);
    }
}
