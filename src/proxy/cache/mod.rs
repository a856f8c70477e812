//! The HTTP cache in front of balancing (RFC 9111): a stored response answers a request
//! before any server is chosen, so a hit counts no request in flight.
//!
//! `policy` holds the rules (what may be stored, freshness and age, reuse, `Vary`, `304`
//! updates, the fields targeted at this cache, `stale-if-error`), `range` the byte ranges
//! answered from stored bodies, `key` the cache keys, `purge` the purges, `disk` the disk
//! tier, `coalesce` who fetches a key and who follows, and `stream` the bodies stored while
//! they stream (read as they arrive by the requests coalesced on their key); this module is
//! the store around them: variants per key, the memory tier (moka, TinyLFU admission,
//! bounded by bytes), `304` answers to clients' conditional requests, `Cache-Status` (RFC
//! 9211) on every response of a caching route, invalidation after unsafe methods (section
//! 4.4), and the route's caps (entry size, freshness, `Set-Cookie`).
//!
//! The rules are written here rather than taken from `http-cache-semantics`: that crate
//! stores only a fixed list of status codes (no `500` with explicit freshness), reads a
//! malformed `Age` leniently, rewrites `Date`, and has no `stale-if-error`, no targeted
//! fields and no qualified `private`; the HTTP caching test suite counts each of these.
//!
//! A response is stored as the proxy sends it (hidden headers removed, the route's headers
//! set); the sticky cookie and the request ID are added after the cache and never stored.

mod coalesce;
mod disk;
mod key;
mod policy;
mod purge;
mod range;
mod stream;

use coalesce::{Leader, Leading, Streaming};
use key::split_key;
pub use key::{key, key_for};
pub use purge::{purge_request, Purge};
pub use stream::{Following, Tee};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;

use super::body::ProxyBody;
use crate::config::RouteCache;
use policy::Meta;

/// Stored responses per key at most (one per `Vary` variant).
const MAX_VARIANTS: usize = 8;

/// What `Cache-Status` names this cache.
const NAME: &str = "Meridian";

/// The cache of one proxy process (its memory tier), shared by every route that caches.
pub struct Cache {
    entries: moka::sync::Cache<String, Arc<Variants>>,
    /// Keys a request is fetching now, with what its followers wait on (dropped, the
    /// sender wakes them).
    fetching: std::sync::Mutex<std::collections::HashMap<String, Leading>>,
    /// Keys whose last response could not be stored: their misses go upstream at once
    /// rather than wait for each other (Varnish's hit-for-miss).
    hit_for_miss: moka::sync::Cache<String, ()>,
    /// Keys by the tags their responses carry (in `tag_header`), for purges by tag. A key
    /// evicted or purged leaves its tags; a replaced one may stay listed under an old tag,
    /// so a purge by that tag drops it too (the safe side).
    tags:
        Arc<std::sync::Mutex<std::collections::HashMap<String, std::collections::HashSet<String>>>>,
    tag_header: http::HeaderName,
    /// The disk tier, when the config names one.
    disk: Option<Arc<disk::Disk>>,
    pub counters: Counters,
}

/// Keys by tag.
type TagIndex = std::collections::HashMap<String, std::collections::HashSet<String>>;

/// How long a key stays hit-for-miss after a response that could not be stored.
const HIT_FOR_MISS: std::time::Duration = std::time::Duration::from_secs(10);

/// What a lookup found. (Responses unboxed: a hit should not cost an allocation.)
#[allow(clippy::large_enum_variant)]
enum Found {
    Fresh(Response<ProxyBody>),
    /// Stale, but it may answer while it is revalidated (`stale-while-revalidate`).
    Revalidating(Response<ProxyBody>, Arc<Entry>),
    /// To fetch: a stale response to revalidate, if any, and why (`fwd`).
    Fetch(Option<Arc<Entry>>, &'static str),
}

/// What the cache did, for metrics and status.
#[derive(Default)]
pub struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stored: AtomicU64,
    pub revalidated: AtomicU64,
    pub invalidated: AtomicU64,
    pub stale_served: AtomicU64,
    /// Requests that waited for another request fetching the same key.
    pub coalesced: AtomicU64,
    /// Keys the memory tier dropped to stay under its bound.
    pub evicted: Arc<AtomicU64>,
}

/// The stored responses of one key.
struct Variants(Vec<Arc<Entry>>);

/// One stored response.
#[derive(Clone)]
struct Entry {
    meta: Meta,
    status: StatusCode,
    headers: HeaderMap,
    /// What a client is sent of `headers`: without the fields targeted at this cache and
    /// the tag header (worked out once, not per hit).
    shown: HeaderMap,
    body: Bytes,
    /// The route's freshness cap: after this the entry is not used.
    until: Option<SystemTime>,
    /// Its tags, for purges.
    tags: Vec<String>,
    /// When its request went upstream, and that request's headers the response varies on
    /// (the disk tier rebuilds the entry from them).
    sent: SystemTime,
    varied: HeaderMap,
}

impl Entry {
    /// What the disk tier keeps of it.
    fn record(&self) -> disk::Record {
        disk::Record {
            status: self.status,
            negotiated: self.meta.negotiated(),
            sent: self.sent,
            received: self.meta.received,
            until: self.until,
            request: self.varied.clone(),
            headers: self.headers.clone(),
            body: self.body.clone(),
        }
    }

    fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        self.body.len() + headers + 256
    }
}

/// What the cache says of a request before it goes upstream. (Responses unboxed: a hit
/// should not cost an allocation.)
#[allow(clippy::large_enum_variant)]
pub enum Lookup {
    /// A stored response answers it.
    Hit(Response<ProxyBody>),
    /// It goes upstream; what comes back goes through [`Cache::complete`] (or
    /// [`Cache::failed`] when no server answered).
    Forward(Box<Pending>),
    /// A stale response answers, and the request in `Pending` is to be sent in the
    /// background to revalidate it.
    Revalidate(Response<ProxyBody>, Box<Pending>),
}

/// A request on its way upstream, as the cache needs it back.
pub struct Pending {
    key: String,
    method: Method,
    /// The client's request headers.
    request: HeaderMap,
    /// When it went upstream.
    sent: SystemTime,
    /// A stored response being revalidated.
    stale: Option<Arc<Entry>>,
    /// Why it went upstream (`Cache-Status`'s `fwd`).
    fwd: &'static str,
    route: RouteCache,
    /// Other requests for the key wait on this one.
    leader: Option<Leader>,
    /// The route compresses: the proxy chooses the encoding of what it stores.
    negotiated: bool,
}

impl Pending {
    /// The client's request headers.
    pub fn request_headers(&self) -> &HeaderMap {
        &self.request
    }

    /// Readies the upstream request: it says what this cache understands
    /// (`Surrogate-Capability`), and revalidates the stored response the request holds, if
    /// any, the client's own validators replaced by the stored response's.
    pub fn prepare(&self, headers: &mut HeaderMap) {
        let (name, value) = policy::capability();
        headers.append(name, value);
        let Some(entry) = &self.stale else {
            return;
        };
        let ours = policy::validators(&entry.headers);
        if ours.is_empty() {
            return;
        }
        headers.remove(header::IF_NONE_MATCH);
        headers.remove(header::IF_MODIFIED_SINCE);
        for (k, v) in ours {
            headers.insert(k, v);
        }
    }
}

fn cache_status(value: &str) -> HeaderValue {
    let mut text = String::with_capacity(NAME.len() + 2 + value.len());
    text.push_str(NAME);
    text.push_str("; ");
    text.push_str(value);
    HeaderValue::try_from(text).expect("a header value")
}

/// `Cache-Status` for a hit with `ttl` seconds of freshness left, `more` following.
fn hit_status(ttl: u64, more: &str) -> HeaderValue {
    use std::fmt::Write;
    let mut text = String::with_capacity(48);
    let _ = write!(text, "{NAME}; hit; ttl={ttl}{more}");
    HeaderValue::try_from(text).expect("a header value")
}

impl Cache {
    /// A cache whose memory tier holds at most `bytes` of stored responses, tagged by the
    /// values of response header `tag_header`, with a disk tier in `disk` (directory and
    /// bound in bytes) when given.
    pub fn new(
        bytes: u64,
        tag_header: &str,
        disk: Option<(&std::path::Path, u64)>,
    ) -> std::io::Result<Cache> {
        let tag_header = http::HeaderName::from_bytes(tag_header.as_bytes())
            .unwrap_or(http::HeaderName::from_static("surrogate-key"));
        let tags: Arc<std::sync::Mutex<TagIndex>> = Default::default();
        let disk = match disk {
            Some((dir, max)) => {
                let (d, on_disk) = disk::Disk::open(dir, max, &tag_header)?;
                let mut index = tags.lock().unwrap_or_else(|p| p.into_inner());
                for (key, values) in on_disk {
                    for v in values {
                        index.entry(v).or_default().insert(key.clone());
                    }
                }
                Some(Arc::new(d))
            }
            None => None,
        };
        // Without a disk tier, a key the memory tier evicts is gone: its tags go too.
        let index = (disk.is_none()).then(|| tags.clone());
        let counters = Counters::default();
        let evicted = counters.evicted.clone();
        Ok(Cache {
            entries: moka::sync::Cache::builder()
                .max_capacity(bytes)
                .weigher(|_k: &String, v: &Arc<Variants>| {
                    let w: usize = v.0.iter().map(|e| e.weight()).sum();
                    u32::try_from(w).unwrap_or(u32::MAX)
                })
                .eviction_listener(move |key: Arc<String>, v: Arc<Variants>, cause| {
                    if cause == moka::notification::RemovalCause::Size {
                        evicted.fetch_add(1, Ordering::Relaxed);
                    }
                    let Some(index) = index.as_ref() else {
                        return;
                    };
                    if cause == moka::notification::RemovalCause::Replaced {
                        return;
                    }
                    let mut index = index.lock().unwrap_or_else(|p| p.into_inner());
                    for tag in v.0.iter().flat_map(|e| &e.tags) {
                        if let Some(keys) = index.get_mut(tag) {
                            keys.remove(key.as_str());
                            if keys.is_empty() {
                                index.remove(tag);
                            }
                        }
                    }
                })
                .build(),
            tags,
            tag_header,
            disk,
            fetching: Default::default(),
            hit_for_miss: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(HIT_FOR_MISS)
                .build(),
            counters,
        })
    }

    /// Bytes and keys the memory tier holds.
    pub fn size(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.weighted_size(), self.entries.entry_count())
    }

    /// Bytes the disk tier holds, when there is one.
    pub fn disk_bytes(&self) -> Option<u64> {
        self.disk.as_ref().map(|d| d.bytes())
    }

    /// Looks `req` up under `key` (the route caches as `route` says). A miss while another
    /// request fetches the same key waits for it, at most `wait`, and looks again: the
    /// response it stored answers, else this request goes upstream itself.
    pub async fn lookup<B>(
        self: &Arc<Self>,
        key: String,
        req: &Request<B>,
        route: &RouteCache,
        (wait, negotiated): (std::time::Duration, bool),
    ) -> Lookup {
        let method = req.method();
        let pending = |stale, fwd, leader| {
            Box::new(Pending {
                key: key.clone(),
                method: method.clone(),
                request: req.headers().clone(),
                sent: SystemTime::now(),
                stale,
                fwd,
                route: route.clone(),
                leader,
                negotiated,
            })
        };
        if method != Method::GET && method != Method::HEAD {
            return Lookup::Forward(pending(None, "method", None));
        }
        if self.disk.is_some() && !self.entries.contains_key(&key) {
            self.load(&key).await;
        }
        let mut collapsed = false;
        loop {
            let (stale, fwd) = match self.find(&key, req, collapsed) {
                Found::Fresh(response) => {
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return Lookup::Hit(response);
                }
                Found::Revalidating(response, entry) => {
                    self.counters.stale_served.fetch_add(1, Ordering::Relaxed);
                    // One background revalidation per key at a time.
                    return match self.lead(&key) {
                        Ok(leader) => Lookup::Revalidate(
                            response,
                            pending(Some(entry), "stale", Some(leader)),
                        ),
                        Err(_) => Lookup::Hit(response),
                    };
                }
                Found::Fetch(stale, fwd) => (stale, fwd),
            };
            // HEAD is not stored, so it neither leads nor follows.
            if collapsed || method != Method::GET || self.hit_for_miss.contains_key(&key) {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                return Lookup::Forward(pending(stale, fwd, None));
            }
            // Lead the fetch, or follow the request already leading it.
            match self.lead(&key) {
                Ok(leader) => {
                    self.counters.misses.fetch_add(1, Ordering::Relaxed);
                    return Lookup::Forward(pending(stale, fwd, Some(leader)));
                }
                Err(mut leading) => {
                    self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
                    if let Some(response) = self.follow(&mut leading, req, wait).await {
                        self.counters.hits.fetch_add(1, Ordering::Relaxed);
                        return Lookup::Hit(response);
                    }
                }
            }
            collapsed = true;
        }
    }

    /// What the store holds for `req` under `key` now.
    fn find<B>(&self, key: &str, req: &Request<B>, collapsed: bool) -> Found {
        let now = SystemTime::now();
        let Some(variants) = self.entries.get(key) else {
            return Found::Fetch(None, "uri-miss");
        };
        let mut stale = None;
        for entry in &variants.0 {
            if entry.until.is_some_and(|u| u <= now) || !entry.meta.matches(req.headers()) {
                continue;
            }
            if entry.meta.fresh_for(req.headers(), now) {
                let more = if collapsed { "; collapsed" } else { "" };
                let status = hit_status(entry.meta.ttl(now), more);
                let response = self.answer(entry, req.headers(), req.method(), status, now);
                return Found::Fresh(response);
            }
            if entry.meta.while_revalidating(req.headers(), now) {
                let status = cache_status("hit; detail=stale-while-revalidate");
                let response = self.answer(entry, req.headers(), req.method(), status, now);
                return Found::Revalidating(response, entry.clone());
            }
            stale.get_or_insert_with(|| entry.clone());
        }
        match stale {
            Some(s) => Found::Fetch(Some(s), "stale"),
            None => Found::Fetch(None, "vary-miss"),
        }
    }

    /// The status and headers a stored response is sent with to a client whose request has
    /// `request` headers: its stored headers with `Age` and `Cache-Status` (`status`), or a
    /// `304` when the client's conditional request matches.
    fn head(
        &self,
        entry: &Entry,
        request: &HeaderMap,
        status: HeaderValue,
        now: SystemTime,
    ) -> (StatusCode, HeaderMap) {
        let not_modified =
            entry.status == StatusCode::OK && policy::not_modified_for(request, &entry.headers);
        let (code, mut headers) = match not_modified {
            true => (
                StatusCode::NOT_MODIFIED,
                policy::not_modified_headers(&entry.headers),
            ),
            false => (entry.status, entry.shown.clone()),
        };
        let age = entry.meta.age(now).min(u64::from(u32::MAX));
        headers.insert(header::AGE, HeaderValue::from(age));
        headers.insert("cache-status", status);
        (code, headers)
    }

    /// A stored response as sent to a client whose request has `request` headers (see
    /// [`Cache::head`]), its body cut to the ranges the request asks for.
    fn answer(
        &self,
        entry: &Entry,
        request: &HeaderMap,
        method: &Method,
        status: HeaderValue,
        now: SystemTime,
    ) -> Response<ProxyBody> {
        let (mut code, mut headers) = self.head(entry, request, status, now);
        let mut body = match code {
            StatusCode::NOT_MODIFIED => Bytes::new(),
            _ => entry.body.clone(),
        };
        // A GET with Range, answered from the whole stored body.
        if code == StatusCode::OK && *method == Method::GET {
            match range::ranges(request, &entry.headers, body.len() as u64) {
                range::Ranged::Whole => {}
                range::Ranged::Parts(parts) => {
                    (code, body) = range::partial(&mut headers, &body, &parts);
                }
                range::Ranged::Unsatisfiable => {
                    code = StatusCode::RANGE_NOT_SATISFIABLE;
                    let total = format!("bytes */{}", body.len());
                    headers.insert(
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&total).expect("ascii"),
                    );
                    headers.remove(header::CONTENT_TYPE);
                    body = Bytes::new();
                }
            }
        }
        if *method == Method::HEAD {
            // The length the GET would have, with no body.
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            body = Bytes::new();
        }
        let mut response = Response::new(ProxyBody::Stored(Full::new(body)));
        *response.status_mut() = code;
        *response.headers_mut() = headers;
        response
    }

    /// Takes the server's response to a request the cache sent upstream: a `304` refreshes
    /// the stored response and answers with it; a server error may be answered by a stale
    /// one (`stale-if-error`); a storable response is stored as its body streams to the
    /// client; a successful unsafe request invalidates what it changed.
    pub fn complete(
        self: &Arc<Self>,
        pending: Pending,
        mut response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let now = SystemTime::now();
        let status = response.status();
        let tag_values: Vec<HeaderValue> = response
            .headers()
            .get_all(&self.tag_header)
            .iter()
            .cloned()
            .collect();
        response.headers_mut().remove(&self.tag_header);
        if !pending.method.is_safe() {
            if status.is_success() || status.is_redirection() {
                self.invalidate_after(&pending, response.headers());
            }
            response
                .headers_mut()
                .insert("cache-status", cache_status("fwd=method"));
            return response;
        }
        if let Some(entry) = &pending.stale {
            if status == StatusCode::NOT_MODIFIED && !policy::validators(&entry.headers).is_empty()
            {
                self.counters.revalidated.fetch_add(1, Ordering::Relaxed);
                let mut headers = entry.headers.clone();
                policy::update_from_304(&mut headers, response.headers());
                let headers = compact(&headers);
                let meta = Meta::new(
                    &pending.request,
                    (entry.status, &headers),
                    pending.sent,
                    now,
                    pending.negotiated,
                );
                let stored = (entry.status, headers, entry.body.clone());
                let refreshed = Arc::new(self.entry(&pending, meta, stored, now));
                self.insert(&pending, refreshed.clone());
                let status = cache_status("fwd=stale; fwd-status=304");
                return self.answer(&refreshed, &pending.request, &pending.method, status, now);
            }
            if status.is_server_error() {
                if let Some(stale) = self.stale_on_error(&pending, status.as_u16(), now) {
                    return stale;
                }
            }
        }
        let fwd = format!("fwd={}; fwd-status={}", pending.fwd, status.as_u16());
        let too_large = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > pending.route.max_entry);
        let refused = policy::not_storable(
            &pending.method,
            &pending.request,
            status,
            response.headers(),
            pending.route.store_set_cookie,
        );
        let tracked = matches!(response.body(), ProxyBody::Upstream(_));
        let meta = Meta::new(
            &pending.request,
            (status, response.headers()),
            pending.sent,
            now,
            pending.negotiated,
        );
        // A response stale at once with no validator could never be used.
        let useless = meta.lifetime == 0
            && !response.headers().contains_key(header::ETAG)
            && !response.headers().contains_key(header::LAST_MODIFIED);
        if refused.is_some() || too_large || !tracked || useless {
            if pending.leader.is_some() {
                self.hit_for_miss.insert(pending.key.clone(), ());
            }
            policy::strip_targeted(response.headers_mut());
            response
                .headers_mut()
                .insert("cache-status", cache_status(&fwd));
            return response;
        }
        let mut headers = response.headers().clone();
        for v in tag_values {
            headers.append(self.tag_header.clone(), v);
        }
        policy::strip_for_storage(&mut headers);
        policy::strip_targeted(response.headers_mut());
        response
            .headers_mut()
            .insert("cache-status", cache_status(&format!("{fwd}; stored")));
        let headers = compact(&headers);
        let shell = self.entry(&pending, meta, (status, headers, Bytes::new()), now);
        let leader = pending.leader.as_ref().map(|l| l.publish.clone());
        let (cache, max) = (self.clone(), pending.route.max_entry);
        let stored = shell.clone();
        let commit = Box::new(move |body: Bytes| {
            cache.counters.stored.fetch_add(1, Ordering::Relaxed);
            cache.insert(&pending, Arc::new(Entry { body, ..stored }));
        });
        let (tee, body) = Tee::new(max, commit);
        if let ProxyBody::Upstream(tracked) = response.body_mut() {
            tracked.tee = Some(tee);
        }
        // The requests waiting for this key stream it from here on.
        if let Some(publish) = leader {
            publish.send_replace(Some(Arc::new(Streaming { entry: shell, body })));
        }
        response
    }

    /// Takes the proxy's own response to a request the cache sent upstream (no server
    /// answered): a stale response answers instead when `stale-if-error` allows it, or when
    /// the route's `stale_if_down` does and the response does not forbid it (RFC 9111
    /// section 4.2.4: a cache cut off from the origin may serve stale).
    pub fn failed(
        &self,
        pending: Pending,
        mut response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let status = response.status();
        let now = SystemTime::now();
        if status.is_server_error() {
            if let Some(stale) = self.stale_on_error(&pending, status.as_u16(), now) {
                return stale;
            }
            let down = pending.route.stale_if_down.as_secs();
            if let Some(entry) = pending
                .stale
                .as_ref()
                .filter(|e| e.meta.may_serve_stale(now, down))
            {
                self.counters.stale_served.fetch_add(1, Ordering::Relaxed);
                let value = format!(
                    "hit; fwd=stale; fwd-status={}; detail=server-down",
                    status.as_u16()
                );
                let value = cache_status(&value);
                return self.answer(entry, &pending.request, &pending.method, value, now);
            }
        }
        let value = format!("fwd={}; detail=no-response", pending.fwd);
        response
            .headers_mut()
            .insert("cache-status", cache_status(&value));
        response
    }

    /// The stale response `pending` holds, when `stale-if-error` lets it answer for a server
    /// that failed with `code`.
    fn stale_on_error(
        &self,
        pending: &Pending,
        code: u16,
        now: SystemTime,
    ) -> Option<Response<ProxyBody>> {
        let entry = pending.stale.as_ref()?;
        if !entry.meta.serves_on_error(&pending.request, now) {
            return None;
        }
        self.counters.stale_served.fetch_add(1, Ordering::Relaxed);
        let status = format!("hit; fwd=stale; fwd-status={code}; detail=stale-if-error");
        let status = cache_status(&status);
        Some(self.answer(entry, &pending.request, &pending.method, status, now))
    }

    /// Stores `entry` under the pending request's key, replacing the variant it matches.
    fn insert(&self, pending: &Pending, entry: Arc<Entry>) {
        let mut kept: Vec<Arc<Entry>> = match self.entries.get(&pending.key) {
            Some(v) => {
                v.0.iter()
                    .filter(|e| !e.meta.matches(&pending.request))
                    .cloned()
                    .collect()
            }
            None => Vec::new(),
        };
        {
            let mut index = self.tags.lock().unwrap_or_else(|p| p.into_inner());
            for tag in &entry.tags {
                index
                    .entry(tag.clone())
                    .or_default()
                    .insert(pending.key.clone());
            }
        }
        kept.insert(0, entry);
        kept.truncate(MAX_VARIANTS);
        if let Some(disk) = &self.disk {
            let records: Vec<disk::Record> = kept.iter().map(|e| e.record()).collect();
            let (disk, key) = (disk.clone(), pending.key.clone());
            // Files are written off the request's thread.
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || disk.write(&key, &records))),
                Err(_) => disk.write(&key, &records),
            }
        }
        self.entries
            .insert(pending.key.clone(), Arc::new(Variants(kept)));
    }

    /// Brings `key`'s stored responses from the disk tier into memory, when it has them.
    async fn load(&self, key: &str) {
        let Some(disk) = self.disk.clone().filter(|d| d.has(key)) else {
            return;
        };
        let owned = key.to_string();
        let Ok(Some(records)) = tokio::task::spawn_blocking(move || disk.read(&owned)).await else {
            return;
        };
        let entries: Vec<Arc<Entry>> = records
            .into_iter()
            .map(|r| {
                let meta = Meta::new(
                    &r.request,
                    (r.status, &r.headers),
                    r.sent,
                    r.received,
                    r.negotiated,
                );
                Arc::new(Entry {
                    meta,
                    status: r.status,
                    tags: self.tags_of(&r.headers),
                    shown: self.shown(&r.headers),
                    sent: r.sent,
                    varied: r.request,
                    headers: r.headers,
                    body: r.body,
                    until: r.until,
                })
            })
            .collect();
        self.entries
            .insert(key.to_string(), Arc::new(Variants(entries)));
    }

    /// The entry `pending`'s request stores at `now`: `status`, `headers` and `body`, with
    /// their `meta`.
    fn entry(
        &self,
        pending: &Pending,
        meta: Meta,
        (status, headers, body): (StatusCode, HeaderMap, Bytes),
        now: SystemTime,
    ) -> Entry {
        Entry {
            meta,
            status,
            sent: pending.sent,
            varied: varied(&pending.request, &headers),
            tags: self.tags_of(&headers),
            shown: self.shown(&headers),
            headers,
            body,
            until: until(&pending.route, now),
        }
    }

    /// What a client is sent of a stored response's `headers`.
    fn shown(&self, headers: &HeaderMap) -> HeaderMap {
        let mut shown = headers.clone();
        policy::strip_targeted(&mut shown);
        shown.remove(&self.tag_header);
        shown
    }

    /// The tags a response's headers give it.
    fn tags_of(&self, headers: &HeaderMap) -> Vec<String> {
        headers
            .get_all(&self.tag_header)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(str::split_whitespace)
            .map(str::to_string)
            .collect()
    }

    fn remove(&self, key: &str) -> bool {
        let on_disk = self.disk.as_ref().is_some_and(|d| {
            let had = d.has(key);
            d.remove(key);
            had
        });
        let gone = self.entries.remove(key).is_some() || on_disk;
        if gone {
            self.counters.invalidated.fetch_add(1, Ordering::Relaxed);
        }
        gone
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
        self.remove(key);
    }
}

/// `headers` with their values copied into one buffer of their own: a server's header values
/// share the connection's whole read buffer, which a stored response should not keep.
fn compact(headers: &HeaderMap) -> HeaderMap {
    let total: usize = headers.values().map(|v| v.len()).sum();
    let mut all = bytes::BytesMut::with_capacity(total);
    for v in headers.values() {
        all.extend_from_slice(v.as_bytes());
    }
    let all = all.freeze();
    let mut out = HeaderMap::with_capacity(headers.len());
    let mut at = 0;
    for (name, v) in headers {
        let value = HeaderValue::from_maybe_shared(all.slice(at..at + v.len()))
            .expect("the bytes of a header value");
        at += v.len();
        out.append(name.clone(), value);
    }
    out
}

/// The request headers a response varies on, as the request had them.
fn varied(request: &HeaderMap, response: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in response
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| http::HeaderName::from_bytes(n.trim().as_bytes()).ok())
    {
        for v in request.get_all(&name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

fn until(route: &RouteCache, now: SystemTime) -> Option<SystemTime> {
    route.ttl_max.map(|d| now + d)
}
