//! RFC 9111's rules as a shared cache applies them: what may be stored, how long it is
//! fresh, how old it is, whether a stored response may answer a request, how a `304`
//! updates it. Also the fields targeted at this cache, `CDN-Cache-Control` (RFC 9213) and
//! `Surrogate-Control` (the Edge Architecture's), which replace `Cache-Control` for it, and
//! `stale-if-error` (RFC 5861).

use std::time::SystemTime;

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// Directives of a `Cache-Control`-like field: lower-case names, values unquoted.
#[derive(Debug, Default, Clone)]
pub(super) struct Directives(Vec<(String, Option<String>)>);

impl Directives {
    /// Parses every line of `name` in `headers` as one comma-separated list.
    pub(super) fn of(headers: &HeaderMap, name: &HeaderName) -> Directives {
        let mut out = Vec::new();
        for value in headers.get_all(name) {
            let Ok(text) = value.to_str() else {
                continue;
            };
            for item in split_list(text) {
                let (key, value) = match item.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"').to_string())),
                    None => (item.trim(), None),
                };
                if !key.is_empty() {
                    out.push((key.to_ascii_lowercase(), value));
                }
            }
        }
        Directives(out)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// The directive without a value (`private`, not `private="x"`).
    fn has_bare(&self, name: &str) -> bool {
        self.0.iter().any(|(k, v)| k == name && v.is_none())
    }

    /// The field names a qualified directive lists (`private="set-cookie, x-a"`).
    fn fields(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .filter_map(|(_, v)| v.as_deref())
            .flat_map(|v| v.split(','))
            .map(|f| f.trim().to_ascii_lowercase())
            .filter(|f| !f.is_empty())
            .collect()
    }

    /// A delta-seconds directive's first occurrence (RFC 9111 section 4.2.1); a value that
    /// is not one makes the directive count as zero.
    pub(super) fn seconds(&self, name: &str) -> Option<u64> {
        let (_, value) = self.0.iter().find(|(k, _)| k == name)?;
        let digits = value.as_deref().unwrap_or("");
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Some(0);
        }
        Some(digits.parse::<u64>().unwrap_or(u64::MAX))
    }
}

/// Items of a comma-separated list, commas inside quotes kept.
fn split_list(text: &str) -> Vec<&str> {
    let (mut items, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(text[start..].trim());
    items.into_iter().filter(|s| !s.is_empty()).collect()
}

const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// The device name this cache gives in `Surrogate-Capability`, which `Surrogate-Control`
/// directives may target.
pub(super) const DEVICE: &str = "meridian";

/// What the cache tells servers it understands (the Edge Architecture's
/// `Surrogate-Capability: meridian="Surrogate/1.0"`).
pub(super) fn capability() -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static("surrogate-capability"),
        HeaderValue::from_static("meridian=\"Surrogate/1.0\""),
    )
}
const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The response directives this cache obeys: `CDN-Cache-Control` when the response has one
/// (RFC 9213), else `Surrogate-Control` (directives targeted at a named device, `max-age=60;
/// other`, are another cache's), else `Cache-Control`.
pub(super) fn response_directives(headers: &HeaderMap) -> Directives {
    let cdn = Directives::of(headers, &CDN_CACHE_CONTROL);
    if !cdn.is_empty() {
        return cdn;
    }
    // `directive;device`: for the named device only; ours is [`DEVICE`].
    let ours_only = |target: &str| target.trim().eq_ignore_ascii_case(DEVICE);
    let surrogate = Directives::of(headers, &SURROGATE_CONTROL);
    let ours: Vec<(String, Option<String>)> = surrogate
        .0
        .into_iter()
        .filter_map(|(k, v)| match (k.split_once(';'), v) {
            (Some((name, target)), v) => ours_only(target).then(|| (name.to_string(), v)),
            (None, Some(v)) => match v.split_once(';') {
                Some((value, target)) => {
                    ours_only(target).then(|| (k, Some(value.trim().to_string())))
                }
                None => Some((k, Some(v))),
            },
            (None, None) => Some((k, None)),
        })
        .collect();
    if !ours.is_empty() {
        return Directives(ours);
    }
    Directives::of(headers, &header::CACHE_CONTROL)
}

/// Status codes whose responses may be stored without explicit freshness (RFC 9110 section
/// 15.1: heuristically cacheable).
fn heuristic_status(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Status codes whose caching rules this cache knows (for `must-understand`).
fn understood(status: u16) -> bool {
    matches!(
        status,
        200 | 203
            | 204
            | 300
            | 301
            | 302
            | 303
            | 307
            | 308
            | 400
            | 403
            | 404
            | 405
            | 410
            | 414
            | 451
            | 500
            | 501
            | 502
            | 503
            | 504
    )
}

/// Why a response is not stored, or `None` when it may be (RFC 9111 section 3).
pub(super) fn not_storable(
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
    store_set_cookie: bool,
) -> Option<&'static str> {
    let code = status.as_u16();
    let rc = response_directives(response);
    let req = Directives::of(request, &header::CACHE_CONTROL);
    if method != Method::GET {
        return Some("method");
    }
    if !(200..600).contains(&code) || code == 206 || code == 304 {
        return Some("status");
    }
    if rc.has("must-understand") {
        if !understood(code) {
            return Some("must-understand");
        }
    } else if rc.has("no-store") {
        return Some("no-store");
    }
    if req.has("no-store") {
        return Some("request no-store");
    }
    if rc.has_bare("private") {
        return Some("private");
    }
    if request.contains_key(header::AUTHORIZATION)
        && !(rc.has("public") || rc.has("s-maxage") || rc.has("must-revalidate"))
    {
        return Some("authorization");
    }
    if !store_set_cookie && response.contains_key(header::SET_COOKIE) {
        return Some("set-cookie");
    }
    if vary_names(response).iter().any(|n| n == "*") {
        return Some("vary *");
    }
    // The store keeps a body's bytes, not the trailer fields that follow them.
    if response.contains_key(header::TRAILER) {
        return Some("trailers");
    }
    let explicit = response.contains_key(header::EXPIRES)
        || rc.has("max-age")
        || rc.has("s-maxage")
        || rc.has("public");
    if !explicit && !heuristic_status(code) {
        return Some("no freshness");
    }
    None
}

/// What a stored response needs of its headers, worked out once when it is stored.
#[derive(Debug, Clone)]
pub(super) struct Meta {
    /// Freshness lifetime (RFC 9111 section 4.2.1).
    pub(super) lifetime: u64,
    /// The age it had when it arrived (section 4.2.3's corrected initial age).
    initial_age: u64,
    /// When it arrived.
    pub(super) received: SystemTime,
    /// `no-cache` (unqualified): every use is revalidated.
    no_cache: bool,
    /// `must-revalidate`, `proxy-revalidate` or `s-maxage`: never served stale.
    must_revalidate: bool,
    /// `stale-if-error=N`: how long past its lifetime it may answer when the server fails.
    stale_if_error: Option<u64>,
    /// `stale-while-revalidate=N`: how long past its lifetime it may answer while it is
    /// revalidated in the background (RFC 5861 section 3).
    stale_while_revalidate: Option<u64>,
    /// The request headers `Vary` names, as the stored request had them.
    pub(super) vary: Vec<(HeaderName, Option<String>)>,
    /// Stored on a route that compresses: `Accept-Encoding` is compared by the encoding it
    /// selects, not byte for byte.
    negotiated: bool,
}

/// Field values as `Vary` compares them: every line joined, whitespace around commas dropped.
fn normalized(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let joined: Vec<String> = values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .collect();
    Some(joined.join(","))
}

/// A request header's value as `Vary` compares it; `Accept-Encoding` by the encoding it
/// selects when the proxy chose the encoding itself.
fn selecting(headers: &HeaderMap, name: &HeaderName, negotiated: bool) -> Option<String> {
    if negotiated && name == header::ACCEPT_ENCODING {
        let accept = headers.get(name).and_then(|v| v.to_str().ok());
        let chosen = crate::proxy::compress::choose(accept);
        return Some(chosen.map_or("identity", |e| e.token()).to_string());
    }
    normalized(headers, name)
}

fn vary_names(response: &HeaderMap) -> Vec<String> {
    response
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .collect()
}

fn date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    httpdate::parse_http_date(first.to_str().ok()?).ok()
}

fn secs_between(earlier: SystemTime, later: SystemTime) -> u64 {
    later.duration_since(earlier).map_or(0, |d| d.as_secs())
}

impl Meta {
    /// The metadata of `response` (status `status`) to `request`, sent at `sent` and
    /// received at `received`; `negotiated` when the proxy chose its encoding.
    pub(super) fn new(
        request: &HeaderMap,
        (status, response): (StatusCode, &HeaderMap),
        sent: SystemTime,
        received: SystemTime,
        negotiated: bool,
    ) -> Meta {
        let rc = response_directives(response);
        let server_date = date(response, &header::DATE);
        let lifetime = if let Some(s) = rc.seconds("s-maxage") {
            s
        } else if let Some(m) = rc.seconds("max-age") {
            m
        } else if response.contains_key(header::EXPIRES) {
            match date(response, &header::EXPIRES) {
                Some(expires) => secs_between(server_date.unwrap_or(received), expires),
                // An invalid Expires means already expired (RFC 9111 section 5.3).
                None => 0,
            }
        } else if heuristic_status(status.as_u16()) || rc.has("public") {
            // A tenth of the time since Last-Modified, as caches commonly do (section 4.2.2).
            match date(response, &header::LAST_MODIFIED) {
                Some(lm) => secs_between(lm, server_date.unwrap_or(received)) / 10,
                None => 0,
            }
        } else {
            0
        };
        // Section 4.2.3. An Age that is not one non-negative integer makes the response
        // count as old as can be.
        let age_value = match response.get_all(header::AGE).iter().count() {
            0 => 0,
            1 => response
                .get(header::AGE)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .map_or(u64::MAX / 4, |v| v.parse().unwrap_or(u64::MAX / 4)),
            _ => u64::MAX / 4,
        };
        let apparent = server_date.map_or(0, |d| secs_between(d, received));
        let delay = secs_between(sent, received);
        let initial_age = apparent.max(age_value.saturating_add(delay));
        let vary = vary_names(response)
            .into_iter()
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .map(|n| {
                let v = selecting(request, &n, negotiated);
                (n, v)
            })
            .collect();
        Meta {
            lifetime,
            initial_age,
            received,
            no_cache: rc.has_bare("no-cache"),
            must_revalidate: rc.has("must-revalidate")
                || rc.has("proxy-revalidate")
                || rc.has("s-maxage"),
            stale_if_error: rc.seconds("stale-if-error"),
            stale_while_revalidate: rc.seconds("stale-while-revalidate"),
            vary,
            negotiated,
        }
    }

    /// Whether `Accept-Encoding` is compared by the encoding it selects.
    pub(super) fn negotiated(&self) -> bool {
        self.negotiated
    }

    /// The response's age at `now` (section 4.2.3).
    pub(super) fn age(&self, now: SystemTime) -> u64 {
        self.initial_age
            .saturating_add(secs_between(self.received, now))
    }

    /// Whether `request` selects this variant (section 4.1).
    pub(super) fn matches(&self, request: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| selecting(request, name, self.negotiated) == *value)
    }

    /// Whether this stored response may answer `request` at `now` without asking the server
    /// (section 4.2, with the request's directives of section 5.2.1).
    pub(super) fn fresh_for(&self, request: &HeaderMap, now: SystemTime) -> bool {
        let req = Directives::of(request, &header::CACHE_CONTROL);
        let pragma_no_cache = req.is_empty()
            && request.get_all(header::PRAGMA).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.to_ascii_lowercase().contains("no-cache"))
            });
        if self.no_cache || req.has("no-cache") || pragma_no_cache {
            return false;
        }
        let age = self.age(now);
        if req.seconds("max-age").is_some_and(|m| age > m) {
            return false;
        }
        if let Some(min) = req.seconds("min-fresh") {
            if self.lifetime.saturating_sub(age) < min {
                return false;
            }
        }
        if self.lifetime > age {
            return true;
        }
        // Stale: only a client that accepts it, and not when the response forbids it.
        if self.must_revalidate || !req.has("max-stale") {
            return false;
        }
        match req.0.iter().find(|(k, _)| k == "max-stale") {
            Some((_, None)) => true,
            _ => req
                .seconds("max-stale")
                .is_some_and(|m| age - self.lifetime <= m),
        }
    }

    /// Seconds of freshness left at `now` (zero when stale).
    pub(super) fn ttl(&self, now: SystemTime) -> u64 {
        self.lifetime.saturating_sub(self.age(now))
    }

    /// Whether, stale at `now`, it may answer `request` while it is revalidated in the
    /// background: within its `stale-while-revalidate`, and the request asks nothing of
    /// freshness itself.
    pub(super) fn while_revalidating(&self, request: &HeaderMap, now: SystemTime) -> bool {
        let Some(window) = self.stale_while_revalidate else {
            return false;
        };
        !self.must_revalidate
            && !self.no_cache
            && !request.contains_key(header::CACHE_CONTROL)
            && !request.contains_key(header::PRAGMA)
            && self.age(now).saturating_sub(self.lifetime) <= window
    }

    /// Whether, stale at `now` by at most `window` seconds, it may answer while no server
    /// can be reached (the response does not forbid serving it stale).
    pub(super) fn may_serve_stale(&self, now: SystemTime, window: u64) -> bool {
        !self.must_revalidate
            && !self.no_cache
            && self.age(now).saturating_sub(self.lifetime) <= window
    }

    /// Whether, stale at `now`, it may still answer because the server failed (RFC 5861).
    pub(super) fn serves_on_error(&self, request: &HeaderMap, now: SystemTime) -> bool {
        if self.must_revalidate || self.no_cache {
            return false;
        }
        let req = Directives::of(request, &header::CACHE_CONTROL);
        let window = match (self.stale_if_error, req.seconds("stale-if-error")) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => match a.or(b) {
                Some(w) => w,
                None => return false,
            },
        };
        self.age(now).saturating_sub(self.lifetime) <= window
    }
}

/// Fields a stored response keeps from a `304` that revalidated it: all but the ones that
/// describe its stored content (RFC 9111 section 3.2).
pub(super) fn update_from_304(stored: &mut HeaderMap, fresh: &HeaderMap) {
    const KEPT: [&str; 6] = [
        "content-length",
        "content-encoding",
        "content-md5",
        "content-range",
        "etag",
        "transfer-encoding",
    ];
    for name in fresh.keys() {
        if KEPT.contains(&name.as_str()) {
            continue;
        }
        stored.remove(name);
        for v in fresh.get_all(name) {
            stored.append(name.clone(), v.clone());
        }
    }
}

/// Headers a stored response loses before it is stored: the fields `private="..."` and
/// `no-cache="..."` name (a shared cache may store the rest), and `Surrogate-Control`, which
/// is this cache's alone.
pub(super) fn strip_for_storage(response: &mut HeaderMap) {
    let cc = Directives::of(response, &header::CACHE_CONTROL);
    for field in cc
        .fields("private")
        .into_iter()
        .chain(cc.fields("no-cache"))
    {
        response.remove(field.as_str());
    }
}

/// Removes the fields meant for this cache only before a response goes to the client.
pub(super) fn strip_targeted(response: &mut HeaderMap) {
    response.remove(SURROGATE_CONTROL);
}

/// The validators to revalidate a stored response with (section 4.3.1).
pub(super) fn validators(stored: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    if let Some(etag) = stored.get(header::ETAG) {
        out.push((header::IF_NONE_MATCH, etag.clone()));
    } else if let Some(lm) = stored.get(header::LAST_MODIFIED) {
        out.push((header::IF_MODIFIED_SINCE, lm.clone()));
    }
    out
}

/// Whether a stored response satisfies the client's own conditional request, so it gets a
/// `304` (section 4.3.2): `If-None-Match` (weak comparison) first, else `If-Modified-Since`.
pub(super) fn not_modified_for(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
    if let Some(inm) = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        return inm.trim() == "*" || split_list(inm).iter().any(|t| weak(t) == weak(etag));
    }
    let Some(since) = date(request, &header::IF_MODIFIED_SINCE) else {
        return false;
    };
    let modified = date(stored, &header::LAST_MODIFIED).or_else(|| date(stored, &header::DATE));
    modified.is_some_and(|m| m <= since)
}

/// The fields a `304` to the client carries of the stored response (RFC 9110 section 15.4.5).
pub(super) fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::LAST_MODIFIED,
    ] {
        for v in stored.get_all(&name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

/// A stored response of the seconds given, for the tests.
#[cfg(test)]
fn meta(headers: &[(&str, &str)]) -> Meta {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let now = SystemTime::now();
    Meta::new(&HeaderMap::new(), (StatusCode::OK, &h), now, now, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_comes_from_the_targeted_field_first() {
        assert_eq!(meta(&[("cache-control", "max-age=60")]).lifetime, 60);
        assert_eq!(
            meta(&[("cache-control", "max-age=60, s-maxage=5")]).lifetime,
            5
        );
        assert_eq!(
            meta(&[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "max-age=600")
            ])
            .lifetime,
            600
        );
        assert_eq!(
            meta(&[
                ("cache-control", "max-age=60"),
                ("surrogate-control", "max-age=7;other")
            ])
            .lifetime,
            60,
            "a directive targeted at another device is not ours"
        );
        assert_eq!(meta(&[("cache-control", "Max-Age=\"30\"")]).lifetime, 30);
        assert_eq!(meta(&[("expires", "not a date")]).lifetime, 0);
    }

    #[test]
    fn a_malformed_age_makes_the_response_stale() {
        let now = SystemTime::now();
        assert!(meta(&[("cache-control", "max-age=60"), ("age", "10")])
            .fresh_for(&HeaderMap::new(), now));
        for bad in ["ten", "-1", "1.5", "0, 0"] {
            let m = meta(&[("cache-control", "max-age=60"), ("age", bad)]);
            assert!(!m.fresh_for(&HeaderMap::new(), now), "{bad}");
        }
    }

    #[test]
    fn request_directives_limit_reuse() {
        let now = SystemTime::now();
        let m = meta(&[("cache-control", "max-age=60"), ("age", "30")]);
        let req = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CACHE_CONTROL, v.parse().unwrap());
            h
        };
        assert!(m.fresh_for(&req("max-age=40"), now));
        assert!(!m.fresh_for(&req("max-age=20"), now));
        assert!(!m.fresh_for(&req("min-fresh=40"), now));
        assert!(!m.fresh_for(&req("no-cache"), now));
        let stale = meta(&[("cache-control", "max-age=10"), ("age", "30")]);
        assert!(!stale.fresh_for(&HeaderMap::new(), now));
        assert!(stale.fresh_for(&req("max-stale"), now));
        assert!(!stale.fresh_for(&req("max-stale=5"), now));
        let strict = meta(&[
            ("cache-control", "max-age=10, must-revalidate"),
            ("age", "30"),
        ]);
        assert!(!strict.fresh_for(&req("max-stale"), now));
    }

    #[test]
    fn storage_rules() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            m
        };
        let get = Method::GET;
        let ok = StatusCode::OK;
        let none = HeaderMap::new();
        assert_eq!(
            not_storable(
                &get,
                &none,
                ok,
                &h(&[("cache-control", "max-age=5")]),
                false
            ),
            None
        );
        assert_eq!(
            not_storable(
                &get,
                &none,
                ok,
                &h(&[("cache-control", "No-Store, max-age=5")]),
                false
            ),
            Some("no-store")
        );
        assert_eq!(
            not_storable(
                &get,
                &none,
                ok,
                &h(&[("cache-control", "private=\"x-a\", max-age=5")]),
                false
            ),
            None,
            "a qualified private stores the rest"
        );
        let status = StatusCode::from_u16(599).unwrap();
        assert_eq!(
            not_storable(
                &get,
                &none,
                status,
                &h(&[("cache-control", "max-age=5, must-understand")]),
                false
            ),
            Some("must-understand")
        );
        assert_eq!(
            not_storable(
                &get,
                &none,
                StatusCode::INTERNAL_SERVER_ERROR,
                &h(&[("cache-control", "max-age=5")]),
                false
            ),
            None
        );
        let auth = h(&[("authorization", "Basic x")]);
        assert_eq!(
            not_storable(
                &get,
                &auth,
                ok,
                &h(&[("cache-control", "max-age=5")]),
                false
            ),
            Some("authorization")
        );
        assert_eq!(
            not_storable(
                &get,
                &auth,
                ok,
                &h(&[("cache-control", "max-age=5, public")]),
                false
            ),
            None
        );
    }
}
