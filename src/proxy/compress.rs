//! Response compression on routes that ask for it: zstd, brotli or gzip, chosen by the
//! client's `Accept-Encoding` q-values (ties go to zstd, then brotli, then gzip), for
//! compressible content types above a size, never for a body already encoded, a
//! `Cache-Control: no-transform` response or a range response; a HEAD gets the fields its
//! GET would. The body is compressed as it streams, each upstream chunk flushed on its own so
//! event streams keep flowing; nothing is buffered whole.
//!
//! A compressed response gets `Content-Encoding`, `Vary: Accept-Encoding`, a weak `ETag`
//! (its bytes are no longer the server's), and loses `Content-Length` and `Accept-Ranges`.
//! A server's `304` gets the `Vary` and weak `ETag` such a `200` would have had. The cache
//! stores a compressed response as sent, one variant per encoding chosen.

use std::io::Write;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::body::ProxyBody;
use crate::config::RouteCompress;

/// A content coding this proxy produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Zstd,
    Brotli,
    Gzip,
}

impl Encoding {
    /// In order of preference when the client weighs them alike.
    const ALL: [Encoding; 3] = [Encoding::Zstd, Encoding::Brotli, Encoding::Gzip];

    pub fn token(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }
}

/// The encoding for a request's `Accept-Encoding` (RFC 9110 section 12.5.3): the highest
/// q-value above zero among ours, a `*` standing for those it does not name; `None` for
/// identity.
pub fn choose(accept: Option<&str>) -> Option<Encoding> {
    let accept = accept?;
    let mut named: Vec<(String, f32)> = Vec::new();
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if coding.is_empty() {
            continue;
        }
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        named.push((coding, q));
    }
    let q_of = |token: &str| {
        named
            .iter()
            .find(|(c, _)| c == token)
            .or_else(|| named.iter().find(|(c, _)| c == "*"))
            .map_or(0.0, |(_, q)| *q)
    };
    let mut best: Option<(Encoding, f32)> = None;
    for e in Encoding::ALL {
        let q = q_of(e.token());
        if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((e, q));
        }
    }
    best.map(|(e, _)| e)
}

/// Media types worth compressing: text, and the structured formats served as text.
fn compressible(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/javascript"
                | "application/x-javascript"
                | "application/xml"
                | "application/wasm"
                | "application/manifest+json"
                | "image/svg+xml"
                | "image/x-icon"
                | "font/ttf"
                | "font/otf"
        )
}

/// Compresses `response` (to a request with `method` and `accept`) when the route's rules
/// allow it; otherwise leaves it, adding `Vary: Accept-Encoding` when it could have been.
pub fn apply(
    route: &RouteCompress,
    method: &Method,
    accept: Option<&HeaderValue>,
    response: &mut Response<ProxyBody>,
) {
    let headers = response.headers();
    let status = response.status();
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let no_transform = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("no-transform"));
    // Whether the content type is one compressed (`untyped` when none is given).
    let compressible_type = |untyped: bool| {
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map_or(untyped, compressible)
    };
    if status == StatusCode::NOT_MODIFIED {
        // A 304 carries the `ETag` and `Vary` its 200 would have (RFC 9110 section 15.4.5),
        // but not what would tell whether that 200 was compressed (a length; often no type).
        // So its ETag is made weak wherever the client takes an encoding: a weak one still
        // matches a stored identity copy (weak comparison), while a strong one would keep a
        // client's cache from freshening a compressed copy with it (RFC 9111 section 4.3.4).
        if !no_transform
            && !headers.contains_key(header::CONTENT_ENCODING)
            && compressible_type(true)
        {
            add_vary(response.headers_mut());
            if choose(accept.and_then(|v| v.to_str().ok())).is_some() {
                weaken_etag(response.headers_mut());
            }
        }
        return;
    }
    let eligible = status == StatusCode::OK
        && !headers.contains_key(header::CONTENT_ENCODING)
        && !headers.contains_key(header::CONTENT_RANGE)
        && !no_transform
        // Announced trailers may speak of the body's bytes (a digest, a length).
        && !headers.contains_key(header::TRAILER)
        && compressible_type(false)
        && length.is_none_or(|n| n >= route.min_size)
        && matches!(response.body(), ProxyBody::Upstream(_));
    if !eligible {
        return;
    }
    add_vary(response.headers_mut());
    let Some(encoding) = choose(accept.and_then(|v| v.to_str().ok())) else {
        return;
    };
    let Ok(encoder) = Encoder::new(encoding) else {
        return;
    };
    // A HEAD gets the fields its GET would (RFC 9110 section 9.3.2), with no body to encode.
    let encoder = (*method != Method::HEAD).then_some(encoder);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(encoding.token()),
    );
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    weaken_etag(headers);
    if let ProxyBody::Upstream(tracked) = response.body_mut() {
        tracked.encoder = encoder;
    }
}

/// Marks a strong `ETag` weak: the bytes it names are no longer the ones sent.
fn weaken_etag(headers: &mut HeaderMap) {
    if let Some(etag) = headers.get(header::ETAG).and_then(|v| v.to_str().ok()) {
        if !etag.starts_with("W/") {
            if let Ok(weak) = HeaderValue::from_str(&format!("W/{etag}")) {
                headers.insert(header::ETAG, weak);
            }
        }
    }
}

fn add_vary(headers: &mut HeaderMap) {
    let listed = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            let v = v.trim();
            v == "*" || v.eq_ignore_ascii_case("accept-encoding")
        });
    if !listed {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// One response body's encoder: chunks in, compressed chunks out.
pub struct Encoder {
    state: Option<State>,
}

enum State {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    /// Levels chosen for speed per request: gzip 5, brotli 4, zstd 3.
    fn new(encoding: Encoding) -> std::io::Result<Encoder> {
        let state = match encoding {
            Encoding::Gzip => State::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(5),
            )),
            Encoding::Brotli => State::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                4,
                22,
            ))),
            Encoding::Zstd => State::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 3)?),
        };
        Ok(Encoder { state: Some(state) })
    }

    /// Whether the encoder has written its end.
    pub fn finished(&self) -> bool {
        self.state.is_none()
    }

    /// Compresses `data` and flushes, so what the server sent so far can be decoded.
    pub fn chunk(&mut self, data: &[u8]) -> Bytes {
        let out = match self.state.as_mut() {
            None => return Bytes::new(),
            Some(State::Gzip(e)) => e
                .write_all(data)
                .and_then(|_| e.flush())
                .map(|_| std::mem::take(e.get_mut())),
            Some(State::Brotli(e)) => e
                .write_all(data)
                .and_then(|_| e.flush())
                .map(|_| std::mem::take(e.get_mut())),
            Some(State::Zstd(e)) => e
                .write_all(data)
                .and_then(|_| e.flush())
                .map(|_| std::mem::take(e.get_mut())),
        };
        Bytes::from(out.unwrap_or_default())
    }

    /// Ends the stream: the encoder's last bytes.
    pub fn finish(&mut self) -> Bytes {
        let out = match self.state.take() {
            None => Ok(Vec::new()),
            Some(State::Gzip(e)) => e.finish(),
            Some(State::Brotli(e)) => Ok(e.into_inner()),
            Some(State::Zstd(e)) => e.finish(),
        };
        Bytes::from(out.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_values_choose_and_ties_prefer_zstd() {
        assert_eq!(choose(Some("gzip, deflate, br")), Some(Encoding::Brotli));
        assert_eq!(choose(Some("gzip, br, zstd")), Some(Encoding::Zstd));
        assert_eq!(choose(Some("gzip;q=1, br;q=0.5")), Some(Encoding::Gzip));
        assert_eq!(choose(Some("br;q=0, gzip;q=0")), None);
        assert_eq!(choose(Some("*")), Some(Encoding::Zstd));
        assert_eq!(choose(Some("*;q=0.1, gzip;q=0.5")), Some(Encoding::Gzip));
        assert_eq!(choose(Some("identity")), None);
        assert_eq!(choose(None), None);
    }

    #[test]
    fn a_304_carries_the_vary_and_weak_etag_its_compressed_200_would() {
        use http_body_util::Full;
        let route = RouteCompress { min_size: 1024 };
        let not_modified = |fields: &[(&str, &str)], accept: Option<&str>| {
            let mut r = Response::new(ProxyBody::Whole(Full::new(Bytes::new())));
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            for (k, v) in fields {
                r.headers_mut().append(
                    header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            let accept = accept.map(|a| HeaderValue::from_str(a).unwrap());
            apply(&route, &Method::GET, accept.as_ref(), &mut r);
            let h = |n| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
            (h(header::ETAG), h(header::VARY))
        };
        let etag = ("etag", "\"v1\"");
        let vary = Some("accept-encoding".to_string());
        assert_eq!(
            not_modified(&[etag], Some("gzip")),
            (Some("W/\"v1\"".into()), vary.clone())
        );
        // A client that takes no encoding had the identity body, strong ETag and all.
        assert_eq!(
            not_modified(&[etag], None),
            (Some("\"v1\"".into()), vary.clone())
        );
        // Types never compressed, and no-transform, are left as they are.
        for other in [
            ("content-type", "image/png"),
            ("cache-control", "no-transform"),
        ] {
            assert_eq!(
                not_modified(&[etag, other], Some("gzip")),
                (Some("\"v1\"".into()), None),
                "{other:?}"
            );
        }
    }

    #[test]
    fn each_encoder_round_trips_chunk_by_chunk() {
        use std::io::Read;
        let text = "event: tick\ndata: 1\n\n".repeat(50);
        for encoding in Encoding::ALL {
            let mut e = Encoder::new(encoding).unwrap();
            let mut out = Vec::new();
            for part in text.as_bytes().chunks(100) {
                let chunk = e.chunk(part);
                assert!(!chunk.is_empty(), "{encoding:?} flushes every chunk");
                out.extend_from_slice(&chunk);
            }
            out.extend_from_slice(&e.finish());
            let mut back = Vec::new();
            match encoding {
                Encoding::Gzip => {
                    flate2::read::GzDecoder::new(&out[..])
                        .read_to_end(&mut back)
                        .unwrap();
                }
                Encoding::Brotli => {
                    brotli::Decompressor::new(&out[..], 4096)
                        .read_to_end(&mut back)
                        .unwrap();
                }
                Encoding::Zstd => back = zstd::decode_all(&out[..]).unwrap(),
            }
            assert_eq!(back, text.as_bytes(), "{encoding:?}");
        }
    }
}
