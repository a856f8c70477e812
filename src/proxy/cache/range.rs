//! Byte ranges served from a stored full response (RFC 9110 section 14): one range as a
//! `206` with `Content-Range`, several as `multipart/byteranges`, none satisfiable as `416`,
//! and `If-Range` deciding whether the ranges apply at all.

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, StatusCode};

/// What a stored response of `len` bytes answers to a request's `Range`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ranged {
    /// No range applies: the whole response.
    Whole,
    /// These inclusive byte ranges.
    Parts(Vec<(u64, u64)>),
    /// Ranges were asked for and none overlaps the body.
    Unsatisfiable,
}

/// Reads the request's `Range` (bytes only; anything unreadable is ignored, as RFC 9110
/// allows) against a body of `len` bytes, after `If-Range` against the stored headers.
pub(super) fn ranges(request: &HeaderMap, stored: &HeaderMap, len: u64) -> Ranged {
    let Some(spec) = request.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ranged::Whole;
    };
    if let Some(cond) = request.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        if !if_range_holds(cond.trim(), stored) {
            return Ranged::Whole;
        }
    }
    let Some(list) = spec.trim().strip_prefix("bytes=") else {
        return Ranged::Whole;
    };
    let mut parts = Vec::new();
    for item in list.split(',') {
        let item = item.trim();
        let Some((first, last)) = item.split_once('-') else {
            return Ranged::Whole;
        };
        let num = |s: &str| -> Option<u64> {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        let range = match (first.trim(), last.trim()) {
            ("", suffix) => match num(suffix) {
                Some(0) => None,
                Some(n) => Some((len.saturating_sub(n), len.saturating_sub(1))),
                None => return Ranged::Whole,
            },
            (a, "") => match num(a) {
                Some(start) => Some((start, len.saturating_sub(1))),
                None => return Ranged::Whole,
            },
            (a, b) => match (num(a), num(b)) {
                (Some(start), Some(end)) if start <= end => {
                    Some((start, end.min(len.saturating_sub(1))))
                }
                _ => return Ranged::Whole,
            },
        };
        if let Some((start, end)) = range.filter(|&(s, _)| s < len) {
            parts.push((start, end));
        }
    }
    match parts.is_empty() {
        true => Ranged::Unsatisfiable,
        false => Ranged::Parts(parts),
    }
}

/// `If-Range`: a strong ETag equal to the stored one, or the stored `Last-Modified` date.
fn if_range_holds(cond: &str, stored: &HeaderMap) -> bool {
    if cond.starts_with('"') {
        return stored
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|etag| etag == cond);
    }
    if cond.starts_with("W/") {
        return false;
    }
    stored
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|lm| {
            httpdate::parse_http_date(lm).ok() == httpdate::parse_http_date(cond).ok()
        })
}

/// A `206` body and its headers for `parts` of `body` (the stored headers given).
pub(super) fn partial(
    headers: &mut HeaderMap,
    body: &Bytes,
    parts: &[(u64, u64)],
) -> (StatusCode, Bytes) {
    let len = body.len() as u64;
    let slice = |(s, e): (u64, u64)| body.slice(s as usize..=e as usize);
    if let [one] = parts {
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {}-{}/{len}", one.0, one.1)).expect("ascii"),
        );
        headers.remove(header::CONTENT_LENGTH);
        return (StatusCode::PARTIAL_CONTENT, slice(*one));
    }
    let boundary = format!("{:016x}", rand::random::<u64>());
    let content_type = headers.remove(header::CONTENT_TYPE);
    let mut out = BytesMut::new();
    for &(s, e) in parts {
        out.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
        if let Some(ct) = &content_type {
            out.extend_from_slice(b"content-type: ");
            out.extend_from_slice(ct.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("content-range: bytes {s}-{e}/{len}\r\n\r\n").as_bytes());
        out.extend_from_slice(&slice((s, e)));
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
            .expect("ascii"),
    );
    headers.remove(header::CONTENT_LENGTH);
    (StatusCode::PARTIAL_CONTENT, out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(range: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, range.parse().unwrap());
        h
    }

    #[test]
    fn range_forms() {
        let none = HeaderMap::new();
        assert_eq!(
            ranges(&req("bytes=0-1"), &none, 10),
            Ranged::Parts(vec![(0, 1)])
        );
        assert_eq!(
            ranges(&req("bytes=5-"), &none, 10),
            Ranged::Parts(vec![(5, 9)])
        );
        assert_eq!(
            ranges(&req("bytes=-3"), &none, 10),
            Ranged::Parts(vec![(7, 9)])
        );
        assert_eq!(
            ranges(&req("bytes=8-100"), &none, 10),
            Ranged::Parts(vec![(8, 9)])
        );
        assert_eq!(
            ranges(&req("bytes=0-0, -1"), &none, 10),
            Ranged::Parts(vec![(0, 0), (9, 9)])
        );
        assert_eq!(ranges(&req("bytes=10-"), &none, 10), Ranged::Unsatisfiable);
        assert_eq!(ranges(&req("bytes=3-1"), &none, 10), Ranged::Whole);
        assert_eq!(ranges(&req("items=0-1"), &none, 10), Ranged::Whole);
        assert_eq!(ranges(&none, &none, 10), Ranged::Whole);
    }

    #[test]
    fn if_range_needs_the_stored_validator() {
        let mut stored = HeaderMap::new();
        stored.insert(header::ETAG, "\"v1\"".parse().unwrap());
        let mut r = req("bytes=0-1");
        r.insert(header::IF_RANGE, "\"v1\"".parse().unwrap());
        assert_eq!(ranges(&r, &stored, 10), Ranged::Parts(vec![(0, 1)]));
        r.insert(header::IF_RANGE, "\"v2\"".parse().unwrap());
        assert_eq!(ranges(&r, &stored, 10), Ranged::Whole);
    }
}
