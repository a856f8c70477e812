//! HTTP/1.x request framing (RFC 9112 section 6): how a request head says its body is
//! delimited, and the forms refused because two parsers could read them two ways (request
//! smuggling): `Content-Length` twice or malformed, `Transfer-Encoding` together with
//! `Content-Length`, a transfer coding other than `chunked` last, and over h2 the
//! connection-specific headers RFC 9113 section 8.2.2 forbids. The HTTP/1.1 server
//! ([`super::h1::server`]) reads a body only as [`request_framing`] says; a request it refuses
//! is answered 400 by the request path ([`bad_framing`]) and its connection closed, since
//! nothing after it can be trusted to start a request.

use http::header::{self, HeaderMap};
use http::{Request, Version};

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
pub fn request_framing(version: Version, h: &HeaderMap) -> Result<RequestFraming, &'static str> {
    let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
    let length = lengths.next();
    if lengths.next().is_some() {
        return Err("several Content-Length headers");
    }
    let length = match length {
        None => None,
        Some(v) if v.is_empty() || !v.as_bytes().iter().all(u8::is_ascii_digit) => {
            return Err("a malformed Content-Length")
        }
        Some(v) => Some(
            std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("a malformed Content-Length")?,
        ),
    };
    if !h.contains_key(header::TRANSFER_ENCODING) {
        return Ok(match length {
            None | Some(0) => RequestFraming::Empty,
            Some(n) => RequestFraming::Length(n),
        });
    }
    if length.is_some() {
        return Err("Transfer-Encoding with Content-Length");
    }
    if version == Version::HTTP_10 {
        return Err("Transfer-Encoding in an HTTP/1.0 request");
    }
    match super::h1::chunked_last(h) {
        true => Ok(RequestFraming::Chunked),
        false => Err("a transfer coding other than chunked last"),
    }
}

/// Why a request's framing is refused, if it is: what [`request_framing`] refuses, and over
/// h2 the connection-specific headers.
pub fn bad_framing<B>(req: &Request<B>) -> Option<&'static str> {
    let h = req.headers();
    if let Err(why) = request_framing(req.version(), h) {
        return Some(why);
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
            return Some("a connection-specific header in an h2 request");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smuggling_forms_are_refused() {
        let req = |f: &dyn Fn(http::request::Builder) -> http::request::Builder| {
            f(Request::builder().uri("/")).body(()).unwrap()
        };
        assert!(bad_framing(&req(&|b| b.header("content-length", "5"))).is_none());
        assert!(bad_framing(&req(&|b| b
            .header("content-length", "5")
            .header("content-length", "6")))
        .is_some());
        assert!(bad_framing(&req(&|b| b.header("content-length", "5, 5"))).is_some());
        assert!(bad_framing(&req(&|b| b
            .header("content-length", "5")
            .header("transfer-encoding", "chunked")))
        .is_some());
        assert!(bad_framing(&req(&|b| b
            .version(Version::HTTP_2)
            .header("connection", "close")))
        .is_some());
        assert!(bad_framing(&req(&|b| b
            .version(Version::HTTP_2)
            .header("te", "trailers")))
        .is_none());
        assert!(bad_framing(&req(&|b| b.version(Version::HTTP_2).header("te", "gzip"))).is_some());
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
            request_framing(v11, &head(&[("transfer-encoding", "gzip, Chunked")])),
            Ok(RequestFraming::Chunked)
        );
        for refused in [
            &[("transfer-encoding", "chunked, gzip")][..],
            &[("content-length", "+5")],
            &[("content-length", "99999999999999999999999")],
            &[("content-length", "5"), ("transfer-encoding", "chunked")],
        ] {
            assert!(request_framing(v11, &head(refused)).is_err(), "{refused:?}");
        }
        // HTTP/1.0 knows no transfer codings.
        assert!(
            request_framing(Version::HTTP_10, &head(&[("transfer-encoding", "chunked")])).is_err()
        );
    }
}
