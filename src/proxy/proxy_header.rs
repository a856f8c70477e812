//! The PROXY protocol (v1 text and v2 binary, as HAProxy defines them): reading the header a
//! trusted proxy in front sends before a connection's own bytes, and writing one to a server.
//!
//! Reading takes exactly the header's bytes off the socket (the v2 length field says how
//! many; a v1 line is read to its CRLF), so what follows (a TLS ClientHello, an HTTP request)
//! is left for the next reader untouched. The parsing itself is the `ppp` crate's.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 header's first twelve bytes.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included (the protocol's own bound).
const V1_MAX: usize = 107;
/// The most address and TLV bytes a v2 header may carry here.
const V2_MAX_BODY: usize = 4096;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    #[error("the PROXY protocol header is longer than {V2_MAX_BODY} bytes")]
    TooLong,
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads a PROXY header off `stream`: the client it names, or `None` when it names none
/// (v2 `LOCAL`, v1 `UNKNOWN`: the proxy's own connection, such as a health check).
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Option<SocketAddr>, HeaderError> {
    // Both forms are longer than twelve bytes, so these are the header's.
    let mut head = vec![0u8; V2_SIGNATURE.len()];
    stream.read_exact(&mut head).await?;
    if head == V2_SIGNATURE {
        let mut rest = [0u8; 4];
        stream.read_exact(&mut rest).await?;
        let length = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        if length > V2_MAX_BODY {
            return Err(HeaderError::TooLong);
        }
        head.extend_from_slice(&rest);
        head.resize(head.len() + length, 0);
        stream.read_exact(&mut head[16..]).await?;
        let header = ppp::v2::Header::try_from(head.as_slice())
            .map_err(|e| HeaderError::Malformed(e.to_string()))?;
        if header.command == ppp::v2::Command::Local {
            return Ok(None);
        }
        return Ok(match header.addresses {
            ppp::v2::Addresses::IPv4(a) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            ppp::v2::Addresses::IPv6(a) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
        });
    }
    if !head.starts_with(b"PROXY ") {
        return Err(HeaderError::Missing);
    }
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        if head.len() >= V1_MAX {
            return Err(HeaderError::Malformed("a v1 line without its end".into()));
        }
        stream.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    let header = ppp::v1::Header::try_from(head.as_slice())
        .map_err(|e| HeaderError::Malformed(e.to_string()))?;
    Ok(match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v1::Addresses::Tcp6(a) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v1::Addresses::Unknown => None,
    })
}

/// The header that tells a server a connection is from `client` to `local` (our listening
/// address). Both are written in one family: an IPv4 address beside an IPv6 one is written
/// IPv4-mapped.
pub fn write(
    version: crate::config::ProxyVersion,
    client: SocketAddr,
    local: SocketAddr,
) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    match version {
        crate::config::ProxyVersion::V1 => {
            let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                client.ip(),
                local.ip(),
                client.port(),
                local.port()
            )
            .into_bytes()
        }
        crate::config::ProxyVersion::V2 => {
            let addresses: ppp::v2::Addresses = (client, local).into();
            ppp::v2::Builder::with_addresses(
                ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                ppp::v2::Protocol::Stream,
                addresses,
            )
            .build()
            .expect("a header of two addresses is always built")
        }
    }
}

fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |s: SocketAddr| match s {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    };
    if a.is_ipv4() == b.is_ipv4() {
        (a, b)
    } else {
        (v6(a), v6(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyVersion;

    async fn read_all(bytes: &[u8]) -> (Result<Option<SocketAddr>, HeaderError>, Vec<u8>) {
        let mut input = bytes;
        let got = read(&mut input).await;
        (got, input.to_vec())
    }

    #[tokio::test]
    async fn both_versions_round_trip_and_leave_what_follows() {
        let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let local: SocketAddr = "198.51.100.1:443".parse().unwrap();
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            let mut bytes = write(version, client, local);
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let (got, rest) = read_all(&bytes).await;
            assert_eq!(got.unwrap(), Some(client), "{version:?}");
            assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        }
        let v6: SocketAddr = "[2001:db8::7]:5000".parse().unwrap();
        let (got, _) = read_all(&write(ProxyVersion::V2, v6, local)).await;
        assert_eq!(got.unwrap(), Some(v6));
        let (got, _) = read_all(&write(ProxyVersion::V1, v6, local)).await;
        assert_eq!(got.unwrap(), Some(v6));
    }

    #[tokio::test]
    async fn a_missing_or_broken_header_is_an_error_and_local_names_no_client() {
        let (got, _) = read_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(matches!(got, Err(HeaderError::Missing)));
        let (got, _) = read_all(b"PROXY TCP4 1.2.3.4 bad 1 2\r\n").await;
        assert!(matches!(got, Err(HeaderError::Malformed(_))));
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        let (got, _) = read_all(long.as_bytes()).await;
        assert!(matches!(got, Err(HeaderError::Malformed(_))));
        let (got, _) = read_all(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(got.unwrap(), None);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        let (got, _) = read_all(&local).await;
        assert_eq!(got.unwrap(), None);
        // Cut short.
        let (got, _) = read_all(&V2_SIGNATURE[..8]).await;
        assert!(matches!(got, Err(HeaderError::Io(_))));
    }
}
