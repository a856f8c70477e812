//! HTTP/1.x request framing (RFC 9112 section 6): how a request head says its body is
//! delimited, and the forms refused because two parsers could read them two ways (request
//! smuggling): `Content-Length` twice or malformed, `Transfer-Encoding` together with
//! `Content-Length`, and over h2 the connection-specific headers RFC 9113 section 8.2.2
//! forbids, values with whitespace at either end (section 8.2.1) and a request with neither
//! `:authority` nor `Host` (section 8.3.1). A transfer coding other than `chunked` alone is
//! not implemented (501, as nginx, Apache and Go answer it): a proxy that dechunked `gzip,
//! chunked` and sent it on as `chunked` would hand its server gzip bytes as if they were the
//! body.
//!
//! The other heads refused ([`refused`]) are those whose target two hops could read two
//! ways: an HTTP/1.1 request without `Host` (and no host in its target), with several, or
//! with one that is not a host (RFC 9112 section 3.2) or names none (empty, or a port alone,
//! as nginx refuses it); an authority (an absolute target's, or h2's `:authority`) with user
//! information, as in `http://admin.test@open.test/`, which RFC 9110 section 4.2.4 has
//! recipients treat as an error and RFC 9113 section 8.3.1 forbids (it serves to make one
//! host look like another); and the asterisk form for any
//! method but `OPTIONS`. So are two methods, with 405 as nginx answers them: `CONNECT`,
//! which a reverse proxy does not tunnel, and `TRACE`, whose echo would show the client the
//! fields the proxy adds for its servers (a route's `set_request_headers` may hold their
//! secrets).
//!
//! The HTTP/1.1 server ([`super::h1::server`]) reads a body only as [`request_framing`]
//! says; a request refused is answered by the request path and its connection closed, since
//! nothing after it can be trusted to start a request.

use super::h1::Codings;
use http::header::{self, HeaderMap};
use http::{Method, Request, StatusCode, Version};

/// A request head refused: the status it is answered with, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub why: &'static str,
}

impl Refused {
    const fn bad(why: &'static str) -> Refused {
        Refused {
            status: StatusCode::BAD_REQUEST,
            why,
        }
    }
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// This many bytes.
    Length(u64),
    /// Chunked, to its last chunk and trailer section.
    Chunked,
}

/// How a request head frames its body, or why it is refused.
pub fn request_framing(version: Version, h: &HeaderMap) -> Result<RequestFraming, Refused> {
    let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
    let length = lengths.next();
    if lengths.next().is_some() {
        return Err(Refused::bad("several Content-Length headers"));
    }
    let malformed = Refused::bad("a malformed Content-Length");
    let length = match length {
        None => None,
        Some(v) if v.is_empty() || !v.as_bytes().iter().all(u8::is_ascii_digit) => {
            return Err(malformed)
        }
        Some(v) => Some(
            std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(malformed)?,
        ),
    };
    if !h.contains_key(header::TRANSFER_ENCODING) {
        return Ok(match length {
            None | Some(0) => RequestFraming::Empty,
            Some(n) => RequestFraming::Length(n),
        });
    }
    if length.is_some() {
        return Err(Refused::bad("Transfer-Encoding with Content-Length"));
    }
    if version == Version::HTTP_10 {
        return Err(Refused::bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    match super::h1::codings(h) {
        Codings::Chunked => Ok(RequestFraming::Chunked),
        Codings::ChunkedAfterOthers => Err(Refused {
            status: StatusCode::NOT_IMPLEMENTED,
            why: "a transfer coding other than chunked",
        }),
        Codings::NotChunkedLast => Err(Refused::bad("a transfer coding other than chunked last")),
    }
}

/// Why a request is refused for its head, if it is: what [`request_framing`] refuses, the
/// target forms of the module's list, and over h2 the connection-specific headers.
pub fn refused<B>(req: &Request<B>) -> Option<Refused> {
    let h = req.headers();
    if let Err(refused) = request_framing(req.version(), h) {
        return Some(refused);
    }
    if let Some(refused) = refused_target(req) {
        return Some(refused);
    }
    if req.version() == Version::HTTP_2 {
        let forbidden = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
        ];
        if forbidden.iter().any(|n| h.contains_key(*n))
            || h.get(header::TE).is_some_and(|v| v != "trailers")
        {
            return Some(Refused::bad(
                "a connection-specific header in an h2 request",
            ));
        }
        // RFC 9113 section 8.3.1: an http or https request names its host one way or the
        // other.
        if req.uri().authority().is_none() && !h.contains_key(header::HOST) {
            return Some(Refused::bad("an h2 request without :authority or Host"));
        }
        // Section 8.2.1: no value starts or ends with whitespace, which an HTTP/1.1 server
        // would trim off (so two hops would read two values).
        let padded = |v: &[u8]| matches!(v, [b' ' | b'\t', ..] | [.., b' ' | b'\t']);
        if h.values().any(|v| padded(v.as_bytes())) {
            return Some(Refused::bad(
                "an h2 field value that starts or ends with whitespace",
            ));
        }
    }
    None
}

/// The methods and target forms refused (see the module's list): `CONNECT` and `TRACE`, the
/// asterisk form but for `OPTIONS`, user information in the authority, and over HTTP/1.x a
/// `Host` absent (HTTP/1.1, unless the target is in absolute form and names the host
/// itself), repeated or malformed.
fn refused_target<B>(req: &Request<B>) -> Option<Refused> {
    if req.method() == Method::CONNECT || req.method() == Method::TRACE {
        return Some(Refused {
            status: StatusCode::METHOD_NOT_ALLOWED,
            why: "CONNECT and TRACE are not served",
        });
    }
    if req.uri().path() == "*" && req.method() != Method::OPTIONS {
        return Some(Refused::bad("the asterisk form for a method but OPTIONS"));
    }
    // Of what an authority may hold, only user information is not a host and port.
    if req
        .uri()
        .authority()
        .is_some_and(|a| !is_host(a.as_str().as_bytes()))
    {
        return Some(Refused::bad("user information in the target's authority"));
    }
    if !matches!(req.version(), Version::HTTP_10 | Version::HTTP_11) {
        return None;
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Some(Refused::bad("several Host headers")),
        (None, _) if req.version() == Version::HTTP_11 && req.uri().authority().is_none() => {
            Some(Refused::bad("an HTTP/1.1 request without Host"))
        }
        (Some(host), _) if !is_host(host.as_bytes()) => Some(Refused::bad("a malformed Host")),
        // An http URI with an empty host is invalid (RFC 9110 section 4.2.1), and one made
        // from an empty `Host` would be (RFC 9112 section 3.3), unless the target names its
        // own host.
        (Some(host), _)
            if matches!(host.as_bytes().first(), None | Some(b':'))
                && req.uri().authority().is_none() =>
        {
            Some(Refused::bad("a Host naming no host"))
        }
        _ => None,
    }
}

/// Whether a `Host` value (or an authority) can be a host and port (RFC 3986's
/// `host [":" port]`, which may be empty): the characters of a registered name, an IP literal
/// and a port, and no user information or path.
fn is_host(value: &[u8]) -> bool {
    value.iter().all(|b| HOST_BYTES[usize::from(*b)])
}

/// The bytes of [`is_host`], as a table: looked up once per byte of every request's `Host`.
const HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"-._~!$&'()*+,;=%:[]";
    let mut i = 0;
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The status a request with this method, target, version and fields is refused with, if
    /// it is.
    fn refusal(
        method: &str,
        target: &str,
        version: Version,
        fields: &[(&str, &str)],
    ) -> Option<u16> {
        let mut b = Request::builder()
            .method(method)
            .uri(target)
            .version(version);
        for (k, v) in fields {
            b = b.header(*k, *v);
        }
        refused(&b.body(()).unwrap()).map(|r| r.status.as_u16())
    }

    #[test]
    fn smuggling_forms_are_refused() {
        let v11 = Version::HTTP_11;
        let get = |fields: &[(&str, &str)]| refusal("GET", "/", v11, fields);
        let h = ("host", "site.test");
        assert_eq!(get(&[h, ("content-length", "5")]), None);
        assert_eq!(
            get(&[h, ("content-length", "5"), ("content-length", "6")]),
            Some(400)
        );
        assert_eq!(get(&[h, ("content-length", "5, 5")]), Some(400));
        assert_eq!(
            get(&[h, ("content-length", "5"), ("transfer-encoding", "chunked")]),
            Some(400)
        );
        let h2 =
            |fields: &[(&str, &str)]| refusal("GET", "https://site.test/", Version::HTTP_2, fields);
        assert_eq!(h2(&[("connection", "close")]), Some(400));
        assert_eq!(h2(&[("te", "trailers")]), None);
        assert_eq!(h2(&[("te", "gzip")]), Some(400));
        // RFC 9113 section 8.2.1: no whitespace at either end of a value.
        assert_eq!(h2(&[("x-a", "a b")]), None);
        for padded in [" a", "a ", "\ta", "a\t", " "] {
            assert_eq!(h2(&[("x-a", padded)]), Some(400), "{padded:?}");
        }
        // Section 8.3.1: the host in `:authority` or `Host`, one or the other.
        let no_authority = |fields: &[(&str, &str)]| refusal("GET", "/", Version::HTTP_2, fields);
        assert_eq!(no_authority(&[]), Some(400));
        assert_eq!(no_authority(&[("host", "site.test")]), None);
    }

    #[test]
    fn a_target_two_hops_could_read_two_ways_is_refused() {
        let v11 = Version::HTTP_11;
        let h = ("host", "site.test:8080");
        assert_eq!(refusal("GET", "/", v11, &[h]), None);
        assert_eq!(refusal("GET", "/", v11, &[("host", "[::1]:8080")]), None);
        // RFC 9112 section 3.2: HTTP/1.1 needs exactly one Host, and it must be a host.
        assert_eq!(refusal("GET", "/", v11, &[]), Some(400));
        assert_eq!(refusal("GET", "/", Version::HTTP_10, &[]), None);
        assert_eq!(refusal("GET", "http://site.test/", v11, &[]), None);
        // An absolute target names the host, whatever `Host` says.
        assert_eq!(
            refusal("GET", "http://site.test/", v11, &[("host", "")]),
            None
        );
        assert_eq!(
            refusal("GET", "/", Version::HTTP_10, &[("host", "")]),
            Some(400)
        );
        assert_eq!(
            refusal("GET", "/", v11, &[h, ("host", "other.test")]),
            Some(400)
        );
        for bad in [
            "a b",
            "user@site.test",
            "site.test/path",
            "site.test\\x",
            "",
            ":80",
        ] {
            assert_eq!(
                refusal("GET", "/", v11, &[("host", bad)]),
                Some(400),
                "{bad}"
            );
        }
        // h2 names its host in `:authority`.
        assert_eq!(
            refusal("GET", "https://site.test/", Version::HTTP_2, &[]),
            None
        );
        // User information makes one host read as another (RFC 9110 section 4.2.4).
        for target in ["http://admin.test@site.test/", "https://u:p@site.test/"] {
            assert_eq!(refusal("GET", target, v11, &[h]), Some(400), "{target}");
            assert_eq!(
                refusal("GET", target, Version::HTTP_2, &[]),
                Some(400),
                "{target}"
            );
        }
        assert_eq!(refusal("OPTIONS", "*", v11, &[h]), None);
        assert_eq!(refusal("GET", "*", v11, &[h]), Some(400));
        assert_eq!(refusal("CONNECT", "site.test:443", v11, &[h]), Some(405));
        assert_eq!(refusal("TRACE", "/", v11, &[h]), Some(405));
    }

    #[test]
    fn a_body_is_delimited_as_its_head_says() {
        let head = |fields: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in fields {
                h.append(
                    header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                );
            }
            h
        };
        let v11 = Version::HTTP_11;
        assert_eq!(request_framing(v11, &head(&[])), Ok(RequestFraming::Empty));
        assert_eq!(
            request_framing(v11, &head(&[("content-length", "0")])),
            Ok(RequestFraming::Empty)
        );
        assert_eq!(
            request_framing(v11, &head(&[("content-length", "12")])),
            Ok(RequestFraming::Length(12))
        );
        assert_eq!(
            request_framing(v11, &head(&[("transfer-encoding", " Chunked")])),
            Ok(RequestFraming::Chunked)
        );
        // Codings besides chunked are not implemented; chunked twice is a malformed coding.
        for coded in ["gzip, chunked", "chunked, chunked"] {
            let refused = request_framing(v11, &head(&[("transfer-encoding", coded)]));
            assert_eq!(
                refused.map_err(|r| r.status),
                Err(StatusCode::NOT_IMPLEMENTED)
            );
        }
        let split = head(&[
            ("transfer-encoding", "gzip"),
            ("transfer-encoding", "chunked"),
        ]);
        assert_eq!(
            request_framing(v11, &split).map_err(|r| r.status),
            Err(StatusCode::NOT_IMPLEMENTED)
        );
        for refused in [
            &[("transfer-encoding", "chunked, gzip")][..],
            &[("content-length", "+5")],
            &[("content-length", "99999999999999999999999")],
            &[("content-length", "5"), ("transfer-encoding", "chunked")],
        ] {
            let status = request_framing(v11, &head(refused)).map_err(|r| r.status);
            assert_eq!(status, Err(StatusCode::BAD_REQUEST), "{refused:?}");
        }
        // HTTP/1.0 knows no transfer codings.
        assert!(
            request_framing(Version::HTTP_10, &head(&[("transfer-encoding", "chunked")])).is_err()
        );
    }
}
