//! The HTTP cache in front of balancing (RFC 9111): a stored response answers a request
//! before any server is chosen, so a hit counts no request in flight.
//!
//! Whether a response may be stored, whether a stored one may answer a request (freshness,
//! `Age`, `Vary`, request directives) and how it is revalidated come from
//! `http-cache-semantics`, evaluated as a shared cache; this module adds what a proxy needs
//! around it: the key, variants per key, the memory tier (moka, TinyLFU admission, bounded by
//! bytes), bodies stored while they stream to the client, `Cache-Status` (RFC 9211) on every
//! response of a caching route, invalidation after unsafe methods (section 4.4), and the
//! route's caps (entry size, freshness, `Set-Cookie`).
//!
//! A response is stored as the proxy sends it (hidden headers removed, the route's headers
//! set); the sticky cookie and the request ID are added after the cache and never stored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};

use super::body::ProxyBody;
use crate::config::RouteCache;

/// Stored responses per key at most (one per `Vary` variant).
const MAX_VARIANTS: usize = 8;

/// What `Cache-Status` names this cache.
const NAME: &str = "Meridian";

/// The cache of one proxy process (its memory tier), shared by every route that caches.
pub struct Cache {
    entries: moka::sync::Cache<String, Arc<Variants>>,
    pub counters: Counters,
}

/// What the cache did, for metrics and status.
#[derive(Default)]
pub struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stored: AtomicU64,
    pub revalidated: AtomicU64,
    pub invalidated: AtomicU64,
}

/// The stored responses of one key.
struct Variants(Vec<Arc<Entry>>);

/// One stored response.
struct Entry {
    policy: CachePolicy,
    /// The headers as stored (the policy's copy is what it judges by; these are sent).
    headers: HeaderMap,
    body: Bytes,
    /// The route's freshness cap: after this the entry is not used.
    until: Option<SystemTime>,
}

impl Entry {
    fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        self.body.len() + 2 * headers + 256
    }
}

/// What the cache says of a request before it goes upstream.
pub enum Lookup {
    /// A stored response answers it.
    Hit(Box<Response<ProxyBody>>),
    /// It goes upstream; what comes back goes through [`Cache::complete`].
    Forward(Box<Pending>),
}

/// A request on its way upstream, as the cache needs it back.
pub struct Pending {
    key: String,
    /// The client's request head (no body), for the policy.
    request: http::request::Parts,
    /// A stored response being revalidated, and the headers that ask the server whether it
    /// changed (`If-None-Match`, `If-Modified-Since`).
    stale: Option<(Arc<Entry>, HeaderMap)>,
    /// Why it went upstream (`Cache-Status`'s `fwd`).
    fwd: &'static str,
    route: RouteCache,
}

impl Pending {
    /// The validators to add to the upstream request, when a stored response is revalidated.
    pub fn conditional_headers(&self) -> impl Iterator<Item = (&header::HeaderName, &HeaderValue)> {
        self.stale.iter().flat_map(|(_, h)| {
            h.iter()
                .filter(|(k, _)| *k == header::IF_NONE_MATCH || *k == header::IF_MODIFIED_SINCE)
        })
    }
}

fn options() -> CacheOptions {
    CacheOptions {
        shared: true,
        ..CacheOptions::default()
    }
}

fn cache_status(value: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{NAME}; {value}")).expect("a header value")
}

impl Cache {
    /// A cache whose memory tier holds at most `bytes` of stored responses.
    pub fn new(bytes: u64) -> Cache {
        Cache {
            entries: moka::sync::Cache::builder()
                .max_capacity(bytes)
                .weigher(|_k: &String, v: &Arc<Variants>| {
                    let w: usize = v.0.iter().map(|e| e.weight()).sum();
                    u32::try_from(w).unwrap_or(u32::MAX)
                })
                .build(),
            counters: Counters::default(),
        }
    }

    /// Bytes and keys the memory tier holds.
    pub fn size(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.weighted_size(), self.entries.entry_count())
    }

    /// Looks `req` up under `key` (the route caches as `route` says).
    pub fn lookup<B>(&self, key: String, req: &Request<B>, route: &RouteCache) -> Lookup {
        let mut head = Request::builder()
            .method(req.method().clone())
            .uri(req.uri().clone())
            .version(req.version())
            .body(())
            .expect("a request head")
            .into_parts()
            .0;
        head.headers = req.headers().clone();
        let pending = |stale, fwd| {
            Lookup::Forward(Box::new(Pending {
                key: key.clone(),
                request: head.clone(),
                stale,
                fwd,
                route: route.clone(),
            }))
        };
        let method = req.method();
        if method != Method::GET && method != Method::HEAD {
            return pending(None, "method");
        }
        let now = SystemTime::now();
        let Some(variants) = self.entries.get(&key) else {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return pending(None, "uri-miss");
        };
        // A HEAD is answered from the stored GET.
        let mut as_get = head.clone();
        as_get.method = Method::GET;
        let mut stale = None;
        for entry in &variants.0 {
            if entry.until.is_some_and(|u| u <= now) {
                continue;
            }
            match entry.policy.before_request(&as_get, now) {
                BeforeRequest::Fresh(parts) => {
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    let response = self.stored(entry, parts, method, "hit".to_string(), now);
                    return Lookup::Hit(Box::new(response));
                }
                BeforeRequest::Stale {
                    request,
                    matches: true,
                } if stale.is_none() => stale = Some((entry.clone(), request.headers)),
                BeforeRequest::Stale { .. } => {}
            }
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        match stale {
            Some(s) => pending(Some(s), "stale"),
            None => pending(None, "vary-miss"),
        }
    }

    /// A stored response as sent: the policy's headers (`Age` set), the stored `Date` kept.
    fn stored(
        &self,
        entry: &Entry,
        parts: http::response::Parts,
        method: &Method,
        status: String,
        now: SystemTime,
    ) -> Response<ProxyBody> {
        let mut headers = entry.headers.clone();
        if let Some(age) = parts.headers.get(header::AGE) {
            headers.insert(header::AGE, age.clone());
        }
        let ttl = entry.policy.time_to_live(now).as_secs();
        let status = match status.as_str() {
            "hit" => format!("hit; ttl={ttl}"),
            _ => status,
        };
        headers.insert("cache-status", cache_status(&status));
        let body = match *method == Method::HEAD {
            true => Bytes::new(),
            false => entry.body.clone(),
        };
        let mut response = Response::new(Either::Right(Full::new(body)));
        *response.status_mut() = parts.status;
        *response.headers_mut() = headers;
        response.extensions_mut().insert(FromCache);
        response
    }

    /// Takes the server's response to a request the cache sent upstream: a `304` refreshes
    /// the stored response and answers with it; a storable response is stored as its body
    /// streams to the client; a successful unsafe request invalidates what it changed.
    pub fn complete(
        self: &Arc<Self>,
        pending: Pending,
        mut response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let now = SystemTime::now();
        let status = response.status();
        let method = pending.request.method.clone();
        if !method.is_safe() {
            if status.is_success() || status.is_redirection() {
                self.invalidate_after(&pending, response.headers());
            }
            response
                .headers_mut()
                .insert("cache-status", cache_status("fwd=method"));
            return response;
        }
        if let (Some((entry, _)), StatusCode::NOT_MODIFIED) = (&pending.stale, status) {
            let head = response_head(&response);
            if let AfterResponse::NotModified(policy, parts) =
                entry.policy.after_response(&pending.request, &head, now)
            {
                self.counters.revalidated.fetch_add(1, Ordering::Relaxed);
                // The stored headers updated with the 304's (RFC 9111 section 3.2).
                let mut headers = entry.headers.clone();
                for name in response.headers().keys() {
                    if *name == header::CONTENT_LENGTH {
                        continue;
                    }
                    headers.remove(name);
                    for v in response.headers().get_all(name) {
                        headers.append(name.clone(), v.clone());
                    }
                }
                let refreshed = Arc::new(Entry {
                    policy,
                    headers,
                    body: entry.body.clone(),
                    until: until(&pending.route, now),
                });
                self.insert(&pending, refreshed.clone());
                let status = "fwd=stale; fwd-status=304".to_string();
                return self.stored(&refreshed, parts, &method, status, now);
            }
        }
        let fwd = format!("fwd={}; fwd-status={}", pending.fwd, status.as_u16());
        let head = response_head(&response);
        let policy = CachePolicy::new_options(&pending.request, &head, now, options());
        let too_large = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > pending.route.max_entry);
        // A response that is stale at once and has no validator could never be used.
        let usable = !policy.time_to_live(now).is_zero()
            || response.headers().contains_key(header::ETAG)
            || response.headers().contains_key(header::LAST_MODIFIED);
        let storable = method == Method::GET
            && usable
            && policy.is_storable()
            && status != StatusCode::PARTIAL_CONTENT
            && !too_large
            && (pending.route.store_set_cookie
                || !response.headers().contains_key(header::SET_COOKIE));
        if !storable {
            response
                .headers_mut()
                .insert("cache-status", cache_status(&fwd));
            return response;
        }
        let headers = response.headers().clone();
        response
            .headers_mut()
            .insert("cache-status", cache_status(&format!("{fwd}; stored")));
        let until = until(&pending.route, now);
        let cache = self.clone();
        let max = pending.route.max_entry;
        let commit = Box::new(move |body: Bytes| {
            cache.counters.stored.fetch_add(1, Ordering::Relaxed);
            let entry = Entry {
                policy,
                headers,
                body,
                until,
            };
            cache.insert(&pending, Arc::new(entry));
        });
        // Only a server's body is stored (the proxy's own responses never are).
        if let Either::Left(tracked) = response.body_mut() {
            tracked.tee = Some(Tee::new(max, commit));
        }
        response
    }

    /// Stores `entry` under the pending request's key, replacing the variant it matches.
    fn insert(&self, pending: &Pending, entry: Arc<Entry>) {
        let now = SystemTime::now();
        let mut kept: Vec<Arc<Entry>> = match self.entries.get(&pending.key) {
            Some(v) => {
                v.0.iter()
                    .filter(|e| {
                        !matches!(
                            e.policy.before_request(&pending.request, now),
                            BeforeRequest::Fresh(_) | BeforeRequest::Stale { matches: true, .. }
                        )
                    })
                    .cloned()
                    .collect()
            }
            None => Vec::new(),
        };
        kept.insert(0, entry);
        kept.truncate(MAX_VARIANTS);
        self.entries
            .insert(pending.key.clone(), Arc::new(Variants(kept)));
    }

    /// After a successful unsafe request: the request's own key, and those its `Location` and
    /// `Content-Location` name on the same host (RFC 9111 section 4.4).
    fn invalidate_after(&self, pending: &Pending, headers: &HeaderMap) {
        let (prefix, _) = split_key(&pending.key);
        self.invalidate(&pending.key);
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(target) = headers.get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let key = if target.starts_with('/') {
                Some(format!("{prefix}{target}"))
            } else {
                // Absolute: only when it names this scheme and host.
                target.starts_with(prefix).then(|| target.to_string())
            };
            if let Some(k) = key {
                self.invalidate(&k);
            }
        }
    }

    /// Drops everything stored under `key`.
    pub fn invalidate(&self, key: &str) {
        if self.entries.remove(key).is_some() {
            self.counters.invalidated.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `scheme://host` and the path of a key.
fn split_key(key: &str) -> (&str, &str) {
    let after_scheme = key.find("://").map_or(0, |i| i + 3);
    match key[after_scheme..].find('/') {
        Some(i) => key.split_at(after_scheme + i),
        None => (key, ""),
    }
}

/// The key of a request: scheme, host and target.
pub fn key(tls: bool, host: &str, target: &str) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{host}{target}")
}

fn until(route: &RouteCache, now: SystemTime) -> Option<SystemTime> {
    route.ttl_max.map(|d| now + d)
}

fn response_head(response: &Response<ProxyBody>) -> http::response::Parts {
    let mut head = Response::builder()
        .status(response.status())
        .version(response.version())
        .body(())
        .expect("a response head")
        .into_parts()
        .0;
    head.headers = response.headers().clone();
    head
}

/// Marks a response the cache answered (no server was asked).
#[derive(Clone, Copy)]
pub struct FromCache;

/// A body being stored as it streams: its bytes kept up to the route's limit, handed to the
/// cache when the body ends whole.
pub struct Tee {
    buf: BytesMut,
    max: u64,
    commit: Option<Box<dyn FnOnce(Bytes) + Send + Sync>>,
}

impl Tee {
    fn new(max: u64, commit: Box<dyn FnOnce(Bytes) + Send + Sync>) -> Tee {
        Tee {
            buf: BytesMut::new(),
            max,
            commit: Some(commit),
        }
    }

    /// Keeps a chunk; past the limit the body streams on uncached.
    pub fn data(&mut self, chunk: &Bytes) {
        if self.commit.is_none() {
            return;
        }
        if (self.buf.len() + chunk.len()) as u64 > self.max {
            self.commit = None;
            self.buf = BytesMut::new();
            return;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The body ended whole: it is stored.
    pub fn end(&mut self) {
        if let Some(commit) = self.commit.take() {
            commit(std::mem::take(&mut self.buf).freeze());
        }
    }
}
