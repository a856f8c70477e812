//! One request through the proxy: framing checks, route, server choice (sticky first, then
//! the pool's algorithm), the upstream request with forwarding headers over a pooled
//! connection, a retry on another server while that is safe, and the response with its
//! headers cleaned. Bodies stream both ways ([`super::body`]); only a small body an
//! idempotent request may need again is held whole.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Body;

use super::body::{ClientBody, Cut, CutReason, Pace, ProxyBody, Sent, Tracked, UpstreamBody};
use super::connections::{Connections, Inbound, Lease, Outbound, SendError};
use super::framing;
use super::guard::Refusal;
use super::h1::server::{OnUpgrade, Upgraded};
use super::headers::{client_address, forwarding_headers, join_cookies, strip_hop_by_hop};
use super::report::RuleScope;
use super::route::{self, RequestFacts};
use super::sticky;
use super::upstream::{AllBusy, InFlight, Pick};
use super::{Running, Shared};
use crate::config::{AccessLog, Sticky, UpstreamProtocol};

/// The client connection a request came on.
#[derive(Debug, Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    /// Which of the config's listeners accepted it.
    pub listener: usize,
    pub tls: bool,
    /// The drain generation the connection was opened in.
    pub born: u64,
    /// The peer's address as `X-Forwarded-For` gives it, and the start of its `Forwarded`
    /// element (`for=...;proto=...`): the same for every request on the connection.
    pub(super) peer_text: HeaderValue,
    pub(super) forwarded_for: Arc<str>,
    /// Where servers' interim responses go: the HTTP/1 server's, for the request it has in
    /// hand (it serves one at a time). `None` on h2, whose server cannot send them.
    pub(super) interim: Option<super::h1::InterimSink>,
}

impl Conn {
    pub fn new(peer: SocketAddr, listener: usize, tls: bool, born: u64) -> Conn {
        let ip = peer.ip();
        let proto = if tls { "https" } else { "http" };
        let forwarded_for = match ip {
            std::net::IpAddr::V6(v6) => format!("for=\"[{v6}]\";proto={proto}"),
            v4 => format!("for={v4};proto={proto}"),
        };
        Conn {
            peer,
            listener,
            tls,
            born,
            peer_text: HeaderValue::try_from(ip.to_string()).expect("an address is a header value"),
            forwarded_for: forwarded_for.into(),
            interim: None,
        }
    }
}

/// Answers one request.
///
/// One async function from here to `forward`: each layer of them would hold the request
/// again and be moved whole when it starts.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<ClientBody>,
    conn: Arc<Conn>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let running = shared.current.load_full();
    let request_id = request_id(&running, &req, &conn);
    let version = req.version();
    // What the access log says of the request, taken before the request moves on.
    let logged = (running.site.access_log != AccessLog::Off).then(|| Logged {
        method: req.method().clone(),
        target: req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        referer: header_text(req.headers(), header::REFERER),
        agent: header_text(req.headers(), header::USER_AGENT),
    });
    let (mut route, mut pending) = (None, None);
    let (mut response, upstream) = forward(
        &shared,
        &running,
        req,
        &conn,
        &request_id,
        &mut route,
        &mut pending,
    )
    .await;
    // A request the cache sent upstream that no server answered.
    if let Some(p) = pending {
        response = shared.cache.failed(*p, response);
    }
    if response.status().is_server_error() {
        if let Some(page) = route.and_then(|r| running.site.routes[r].error_page.clone()) {
            response = error_page(response, &page);
        }
    }
    response
        .headers_mut()
        .insert(running.request_id_header.clone(), request_id.clone());
    let status = response.status().as_u16();
    shared
        .stats
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if status >= 500 {
        shared
            .stats
            .errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let took = started.elapsed();
    shared.stats.latency.observe(took);
    let own_body = matches!(response.body(), ProxyBody::Whole(_));
    if own_body && status != 101 {
        let mut local = shared.local.lock().unwrap_or_else(|p| p.into_inner());
        *local.entry(status).or_default() += 1;
    }
    // A connection from before a reload or shutdown: HTTP/1.x clients are told it closes.
    if version <= Version::HTTP_11 && shared.drain.generation() != conn.born {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(logged) = logged {
        let entry = super::access::Entry {
            client: conn.peer.ip(),
            method: &logged.method,
            target: &logged.target,
            version,
            status: response.status(),
            referer: &logged.referer,
            agent: &logged.agent,
            took,
            upstream,
            request_id: request_id.to_str().unwrap_or("-"),
            cache: response
                .headers()
                .get("cache-status")
                .and_then(|v| v.to_str().ok()),
        };
        if let Some(line) = entry.line(running.site.access_log) {
            shared.access.write(&line);
        }
    }
    Ok(response)
}

/// The request as the access log shows it.
struct Logged {
    method: Method,
    target: String,
    referer: String,
    agent: String,
}

fn header_text(headers: &HeaderMap, name: HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

/// The request's ID: the one a trusted proxy in front sent, else a new one (128 random bits
/// in hex).
///
/// The value is marked sensitive, which HTTP/2 encodes as "never indexed": an ID is
/// unique to one exchange, so entering it in the HPACK dynamic table would only evict the
/// entries that repeat (content type, server-set headers) and lengthen every later lookup.
/// HTTP/1.1 ignores the mark.
fn request_id<B>(running: &Running, req: &Request<B>, conn: &Conn) -> HeaderValue {
    let given = req
        .headers()
        .get(&running.request_id_header)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.to_str().is_ok())
        .filter(|_| running.trusts(conn.peer.ip()));
    let mut id = match given {
        Some(v) => v.clone(),
        None => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut text = [0u8; 32];
            let bits = rand::random::<u128>();
            for (i, c) in text.iter_mut().enumerate() {
                *c = HEX[((bits >> (124 - 4 * i)) & 0xf) as usize];
            }
            HeaderValue::from_bytes(&text).expect("hex digits are a header value")
        }
    };
    id.set_sensitive(true);
    id
}

/// `response` with its body replaced by the route's error page (its status kept).
fn error_page(response: Response<ProxyBody>, page: &[u8]) -> Response<ProxyBody> {
    let (mut parts, _) = response.into_parts();
    for h in [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::TRANSFER_ENCODING,
        header::ETAG,
        header::LAST_MODIFIED,
    ] {
        parts.headers.remove(h);
    }
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Response::from_parts(parts, ProxyBody::whole(Bytes::copy_from_slice(page)))
}

/// A response of the proxy's own, with a short text body.
pub fn own(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::whole(format!("{text}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Methods a retry may repeat (RFC 9110 section 9.2.2).
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// How many servers one request may try.
const MAX_TRIES: usize = 3;

async fn forward(
    shared: &Arc<Shared>,
    running: &Arc<Running>,
    mut req: Request<ClientBody>,
    conn: &Conn,
    request_id: &HeaderValue,
    route_taken: &mut Option<usize>,
    pending: &mut Option<Box<super::cache::Pending>>,
) -> (Response<ProxyBody>, Option<SocketAddr>) {
    if let Some(refused) = framing::refused(&req) {
        tracing::debug!(peer = %conn.peer, why = refused.why, "request refused");
        // What follows on the connection cannot be trusted to start a request: close it.
        let mut r = own(refused.status, refused.why);
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return (r, None);
    }
    // Access rules: the listener's, then the route's, for the client the request speaks for.
    let listener_rules = running.site.listeners.get(conn.listener).map(|l| &l.access);
    let client = match running.client_matters {
        true => client_address(running, conn, req.headers()),
        false => conn.peer.ip(),
    };
    if listener_rules.is_some_and(|r| !r.permits(client)) {
        return (refused(shared, RuleScope::Listener, client), None);
    }
    if let Some(wait) = shared.over_rate(running, client) {
        return (too_many(wait), None);
    }
    let host = route::host_of(&req);
    let path = route::path_of(req.uri().path());
    let facts = RequestFacts {
        host: &host,
        path: &path,
        method: req.method(),
        headers: req.headers(),
    };
    let Some(ri) = route::find(&running.site.routes, &facts) else {
        return (
            own(StatusCode::NOT_FOUND, "no route for this request"),
            None,
        );
    };
    *route_taken = Some(ri);
    let r = &running.site.routes[ri];
    if !r.access.permits(client) {
        return (refused(shared, RuleScope::Route, client), None);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if r.max_body
        .is_some_and(|max| declared.is_some_and(|n| n > max))
    {
        return (too_large(), None);
    }
    // PURGE from the networks allowed to send it: the request's key, or the tags its tag
    // header lists, dropped from the cache; nothing goes upstream.
    if let Some(rc) = r
        .cache
        .as_ref()
        .filter(|_| req.method().as_str() == "PURGE")
    {
        let keyed = (&rc.key, conn.tls, &*host);
        return (
            super::cache::purge_request(shared, running, &req, keyed, client),
            None,
        );
    }
    // The cache answers before a server is chosen; what goes upstream comes back through it.
    if let Some(rc) = r
        .cache
        .as_ref()
        .filter(|_| !req.headers().contains_key(header::UPGRADE))
    {
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let key = super::cache::key_for(&rc.key, conn.tls, &host, target, req.headers());
        let negotiated = r.compress.is_some();
        match shared
            .cache
            .lookup(key, &req, rc, (r.timeout, negotiated))
            .await
        {
            super::cache::Lookup::Hit(response) => return (response, None),
            super::cache::Lookup::Forward(p) => *pending = Some(p),
            super::cache::Lookup::Revalidate(response, p) => {
                super::revalidate::spawn(shared, running, ri, *p, target.to_string());
                return (response, None);
            }
        }
    }
    let cut = Arc::new(Cut::default());
    let pace = || Pace::new(running.site.body_timeout, running.site.body_min_rate);
    let pi = r.pool;
    let pool = &running.site.pools[pi];
    let settings = &running.site.pool_settings[pi];
    let state = &running.pools[pi];
    let health = shared.health.snapshot();
    let client_ip = conn.peer.ip();
    state.count_request();

    // Sticky: the server a valid cookie or the client address names, while it may be used.
    let (mut chosen, mut pinned) = (None, false);
    match &settings.sticky {
        Some(Sticky::Cookie(c)) => {
            let signer = &running.signers[pi];
            let named = sticky::cookie(req.headers(), &c.name)
                .and_then(|v| signer.as_ref()?.read(v))
                .and_then(|tag| running.server_by_tag(pi, tag))
                .filter(|&s| {
                    let m = &pool.members[s];
                    super::upstream::usable(m, settings, &health)
                        || shared.in_drain_grace(m, &health, c.drain_grace)
                });
            if let Some(s) = named {
                chosen = Some(s);
                pinned = true;
            }
        }
        Some(Sticky::SourceIp) => {
            chosen = state.by_hash(
                pool,
                settings,
                &health,
                super::algorithm::hash_ip(client_ip),
            );
            pinned = true;
        }
        None => {}
    }
    let key = match &settings.algorithm {
        crate::config::Algorithm::Hash(on) => hash_key(on, &req),
        _ => None,
    };
    if settings.max_in_flight.is_some() {
        // Servers have caps: a pinned server's client waits for that server, others for any.
        let pinned_to = chosen;
        let waited = state
            .queue_for(settings, || match pinned_to {
                Some(s) if state.has_room(s) => Pick::Server(s),
                Some(_) => Pick::AllFull,
                None => state.pick(pool, settings, &health, client_ip, key, &[]),
            })
            .await;
        match waited {
            Ok(s) => chosen = s,
            Err(AllBusy) => {
                shared.refusals.refuse(Refusal::Queue, client);
                let mut r = own(StatusCode::SERVICE_UNAVAILABLE, "every server is busy");
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return (r, None);
            }
        }
    } else if chosen.is_none() {
        chosen = state.choose(pool, settings, &health, client_ip, key, &[]);
    }

    // The upstream request's head, built once for every try. A target with an authority
    // (the absolute form, or h2's `:authority`) names the host, and `Host` is replaced by it
    // (RFC 9112 section 3.2.2), as routing read it.
    let original_host = match req.uri().authority() {
        Some(a) => {
            let host = a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, h)| h);
            HeaderValue::from_str(host).ok()
        }
        None => req.headers().get(header::HOST).cloned(),
    };
    // An HTTP/1.1 upgrade (WebSocket) asks for the connection: the protocol it names goes
    // upstream, and on 101 the two connections are joined. Not h2c: its server would speak
    // h2 on the joined connection, past this proxy's routes and rules ("h2c smuggling"), so
    // the request goes as a plain one.
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .filter(|_| req.version() == Version::HTTP_11 && !offers_h2c(req.headers()))
        .cloned();
    if upgrade.is_none() && req.headers().contains_key(header::UPGRADE) {
        req.headers_mut().remove(HTTP2_SETTINGS);
    }
    let client_side = upgrade
        .as_ref()
        .and_then(|_| req.extensions_mut().remove::<OnUpgrade>());
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    // `TE: trailers` says the client takes trailer fields, which servers wait to hear before
    // they send any (HTTP/2 ones speaking gRPC refuse a request without it). It goes on; on
    // HTTP/1.1 it is the hop's, and named in `Connection` as such.
    let takes_trailers = upgrade.is_none()
        && headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
            });
    strip_hop_by_hop(&mut headers);
    if parts.version == Version::HTTP_2 && settings.protocol == UpstreamProtocol::Http1 {
        join_cookies(&mut headers);
    }
    if takes_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        if settings.protocol == UpstreamProtocol::Http1 {
            headers.insert(header::CONNECTION, HeaderValue::from_static("te"));
        }
    }
    // A route that compresses asks its servers for identity and encodes itself.
    let accept_encoding = match r.compress {
        Some(_) => headers.remove(header::ACCEPT_ENCODING),
        None => None,
    };
    if let Some(protocol) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    forwarding_headers(
        &mut headers,
        running,
        conn,
        original_host.as_ref(),
        request_id,
    );
    if let Some(h) = original_host {
        headers.insert(header::HOST, h);
    }
    route_headers(&mut headers, settings, r);
    if let Some(p) = pending.as_deref() {
        p.prepare(&mut headers);
    }
    if upgrade.is_some() && settings.protocol == UpstreamProtocol::Http2 {
        return (
            own(
                StatusCode::BAD_GATEWAY,
                "upgrades go to HTTP/1.1 servers only",
            ),
            None,
        );
    }
    let target = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    // A request can go again (to another server, or on a new connection) when its body is
    // held: it has none, or it is idempotent and says it has at most `retry_body_limit` bytes,
    // which are read whole first. Any other body streams, and goes once.
    let mut stream = (!body.is_end_stream()).then_some(body);
    let mut held = Bytes::new();
    let may_hold = idempotent(&parts.method)
        && upgrade.is_none()
        && declared.is_some_and(|n| n <= settings.retry_body_limit);
    if let Some(body) = stream.take_if(|_| may_hold) {
        let paced = Sent {
            inner: body,
            done: None,
            allowed: None,
            pace: pace(),
            cut: cut.clone(),
        };
        match tokio::time::timeout(r.timeout, paced.collect()).await {
            Ok(Ok(all)) => held = all.to_bytes(),
            Ok(Err(_)) => return (cut_off(cut.reason().unwrap_or(CutReason::Broken)), None),
            Err(_) => return (cut_off(CutReason::TooSlow), None),
        }
    }
    let replayable = stream.is_none();
    let retryable = idempotent(&parts.method) && replayable && upgrade.is_none();
    let mut client_side = client_side;
    let mut tried: Vec<usize> = Vec::new();
    let conns = &running.connections[pi];
    // Never to an HTTP/1.0 client (RFC 9110 section 15.2).
    let interim_sink = conn
        .interim
        .as_ref()
        .filter(|_| parts.version == Version::HTTP_11);
    loop {
        let Some(server) = chosen else {
            let mut r = own(StatusCode::SERVICE_UNAVAILABLE, "no server available");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return (r, None);
        };
        let Some(addr) = super::upstream::address(&pool.members[server]) else {
            return (own(StatusCode::BAD_GATEWAY, "server has no address"), None);
        };
        let Some(uri) = upstream_uri(settings, &target, headers.get(header::HOST), addr) else {
            return (own(StatusCode::BAD_REQUEST, "bad request target"), None);
        };
        let build = |body: Option<ClientBody>| {
            let body = match body {
                Some(b) => Outgoing::Streamed(b),
                None => Outgoing::Held(held.clone()),
            };
            upstream_body(body, (r.max_body, pace(), cut.clone()))
        };
        let (up, sent_all) = build(stream.take());
        let head = Outbound {
            method: &parts.method,
            uri: &uri,
            headers: &headers,
            interim: interim_sink,
        };
        let in_flight = state.start(server);
        let sent = Instant::now();
        // The response must start within the route's timeout of the request's end.
        let first_byte = async {
            let end = match sent_all {
                Some(sent_all) => {
                    // A body that fails before its end ends the request with an error instead.
                    if sent_all.await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::Instant::now()
                }
                // No body to stream: the request ends as it is sent (`sent`, read once for
                // this and the server's latency).
                None => tokio::time::Instant::from_std(sent),
            };
            tokio::time::sleep_until(end + r.timeout).await;
        };
        let exchange = async {
            let mut lease = conns
                .checkout(server, addr, false)
                .await
                .map_err(|e| e.to_string())?;
            let failed = match lease.send(head, up).await {
                Ok(resp) => return Ok((resp, lease)),
                Err(e) => e,
            };
            // Once more on a new connection: a request that never left, or one without a
            // body whose kept-alive connection the server had closed before answering.
            let again = match failed {
                SendError {
                    unsent: Some(body), ..
                } => body,
                SendError { error, .. }
                    if lease.reused && retryable && error.closed_before_answer() =>
                {
                    build(None).0
                }
                SendError { error, .. } => return Err(format!("{error:#}")),
            };
            drop(lease);
            let mut lease = conns
                .checkout(server, addr, true)
                .await
                .map_err(|e| e.to_string())?;
            match lease.send(head, again).await {
                Ok(resp) => Ok((resp, lease)),
                Err(e) => Err(format!("{:#}", e.error)),
            }
        };
        let outcome = tokio::select! {
            biased;
            answered = exchange => answered,
            _ = first_byte => Err("timed out before the response headers".to_string()),
        };
        let failure = match outcome {
            Ok((resp, lease)) => {
                state.load[server].observe(sent.elapsed());
                let class = (resp.status().as_u16() / 100).clamp(1, 5) as usize - 1;
                state.load[server].classes[class]
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let outcome = match resp.status().is_server_error() {
                    true => super::upstream::Outcome::Failed,
                    false => super::upstream::Outcome::Answered,
                };
                if state.record(server, outcome, settings) {
                    tracing::warn!(server = %addr, pool = %pool.name, "server ejected after failures in a row");
                }
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(client_side) = client_side.take() {
                        return (tunnel(resp, client_side, in_flight), Some(addr));
                    }
                    return (
                        own(StatusCode::BAD_GATEWAY, "an upgrade nobody asked for"),
                        Some(addr),
                    );
                }
                let mut resp = respond(resp, in_flight, (lease, conns.clone()), running, ri);
                if let Some(c) = &r.compress {
                    super::compress::apply(c, &parts.method, accept_encoding.as_ref(), &mut resp);
                }
                if let Some(p) = pending.take() {
                    resp = shared.cache.complete(*p, resp);
                }
                if let (Some(Sticky::Cookie(_)), false) = (&settings.sticky, pinned) {
                    if let Some(v) = running.set_cookie(pi, server) {
                        resp.headers_mut().append(header::SET_COOKIE, v.clone());
                    }
                }
                return (resp, Some(addr));
            }
            Err(failure) => failure,
        };
        drop(in_flight);
        if let Some(why) = cut.reason() {
            return (cut_off(why), Some(addr));
        }
        tracing::warn!(server = %addr, pool = %pool.name, error = %failure, "upstream failed");
        if state.record(server, super::upstream::Outcome::Failed, settings) {
            tracing::warn!(server = %addr, pool = %pool.name, "server ejected after failures in a row");
        }
        tried.push(server);
        let may_retry = retryable
            && tried.len() < MAX_TRIES.min(pool.members.len())
            && state.may_retry(settings.retry_budget_percent);
        if !may_retry {
            let status = if failure.starts_with("timed out") {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            return (own(status, "the server did not answer"), Some(addr));
        }
        shared
            .stats
            .retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Another server: the pinned one failed, so the client is pinned anew.
        pinned = false;
        chosen = state.choose(pool, settings, &health, client_ip, key, &tried);
    }
}

/// The field an h2c upgrade carries its settings in (RFC 7540 section 3.2.1), connection
/// specific.
const HTTP2_SETTINGS: header::HeaderName = header::HeaderName::from_static("http2-settings");

/// Whether a request's `Upgrade` offers h2c.
fn offers_h2c(headers: &http::HeaderMap) -> bool {
    super::h1::tokens(headers, header::UPGRADE).any(|t| t.eq_ignore_ascii_case(b"h2c"))
}

/// A client the access rules refuse: 403, counted by the rules' place.
fn refused(shared: &Shared, scope: RuleScope, client: std::net::IpAddr) -> Response<ProxyBody> {
    shared.deny(scope, client);
    own(StatusCode::FORBIDDEN, "forbidden")
}

/// 429, for a client over its request rate, with the whole seconds until it may send again.
fn too_many(wait: std::time::Duration) -> Response<ProxyBody> {
    let mut r = own(StatusCode::TOO_MANY_REQUESTS, "too many requests");
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    r
}

/// 413, for a request body over the route's limit; the connection closes (the rest of the
/// body is not read).
fn too_large() -> Response<ProxyBody> {
    cut_off(CutReason::TooLarge)
}

/// The answer to a request whose body was cut off: 413 (too large), 408 (too slow) or 400
/// (malformed or cut short by the client); the connection closes, as the rest of the body
/// is not read.
fn cut_off(why: CutReason) -> Response<ProxyBody> {
    let status = match why {
        CutReason::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        CutReason::TooSlow => StatusCode::REQUEST_TIMEOUT,
        CutReason::Broken => StatusCode::BAD_REQUEST,
    };
    let mut r = own(status, &why.to_string());
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The target a server is sent: origin-form (`/path?query`) to HTTP/1.1 servers; for HTTP/2
/// the scheme and authority too (the `Host` sent, else the server's address).
pub(super) fn upstream_uri(
    settings: &crate::config::PoolSettings,
    target: &http::uri::PathAndQuery,
    host: Option<&HeaderValue>,
    addr: SocketAddr,
) -> Option<http::Uri> {
    match settings.protocol {
        UpstreamProtocol::Http1 => Some(http::Uri::from(target.clone())),
        UpstreamProtocol::Http2 => {
            let authority = host
                .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
                .or_else(|| http::uri::Authority::try_from(addr.to_string()).ok())?;
            let scheme = match settings.tls {
                Some(_) => http::uri::Scheme::HTTPS,
                None => http::uri::Scheme::HTTP,
            };
            http::Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query(target.clone())
                .build()
                .ok()
        }
    }
}

/// What the pool and the route set on every request sent upstream: the pool's `host`, the
/// route's `set_request_headers`.
pub(super) fn route_headers(
    headers: &mut HeaderMap,
    settings: &crate::config::PoolSettings,
    route: &crate::config::Route,
) {
    if let Some(h) = settings
        .host
        .as_deref()
        .and_then(|h| HeaderValue::from_str(h).ok())
    {
        headers.insert(header::HOST, h);
    }
    for (name, value) in &route.set_request_headers {
        headers.insert(name, value.clone());
    }
}

/// A request body on its way upstream.
pub(super) enum Outgoing {
    /// The client's, as it comes.
    Streamed(ClientBody),
    /// Read whole before (empty when the request has none): it may go more than once.
    Held(Bytes),
}

/// The body a server is sent, and for a streamed one a receiver told when it has all gone.
pub(super) fn upstream_body(
    body: Outgoing,
    (allowed, pace, cut): (Option<u64>, Pace, Arc<Cut>),
) -> (UpstreamBody, Option<tokio::sync::oneshot::Receiver<()>>) {
    match body {
        Outgoing::Streamed(b) => {
            let (done, sent_all) = tokio::sync::oneshot::channel();
            let sent = Sent {
                inner: b,
                done: Some(done),
                allowed,
                pace,
                cut,
            };
            (Either::Left(sent), Some(sent_all))
        }
        Outgoing::Held(held) => (Either::Right(Full::new(held)), None),
    }
}

/// Answers an accepted upgrade: the server's 101 goes to the client with its `Upgrade` and
/// `Connection` headers, and once both sides have switched their bytes are copied both ways
/// until either closes (the server's request stays counted in flight until then).
fn tunnel(
    resp: Response<Inbound>,
    client_side: OnUpgrade,
    in_flight: InFlight,
) -> Response<ProxyBody> {
    let (parts, body) = resp.into_parts();
    let Inbound::H1(mut body) = body else {
        return own(
            StatusCode::BAD_GATEWAY,
            "upgrades go to HTTP/1.1 servers only",
        );
    };
    let Some(server) = body.take_upgraded() else {
        return own(StatusCode::BAD_GATEWAY, "an upgrade nobody asked for");
    };
    tokio::spawn(async move {
        // The server's request stays in flight while the tunnel is open.
        let _in_flight = in_flight;
        let Some(Upgraded {
            io: mut client,
            read: client_early,
        }) = client_side.connection().await
        else {
            return;
        };
        // What each side sent past its head goes first.
        let (mut server, early) = server.into_parts();
        use tokio::io::AsyncWriteExt;
        if !early.is_empty() && client.write_all(&early).await.is_err() {
            return;
        }
        if !client_early.is_empty() && server.write_all(&client_early).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    let mut out = Response::new(ProxyBody::whole(Bytes::new()));
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for name in [header::UPGRADE, header::CONNECTION] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    for (k, v) in &parts.headers {
        if k.as_str().starts_with("sec-websocket-") {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// The hash a `hash` pool keys on, when the request has it.
fn hash_key<B>(on: &crate::config::HashOn, req: &Request<B>) -> Option<u64> {
    use super::algorithm::hash_bytes;
    use crate::config::HashOn;
    match on {
        HashOn::Path => Some(hash_bytes(req.uri().path().as_bytes())),
        HashOn::Header(name) => req
            .headers()
            .get(name.as_str())
            .map(|v| hash_bytes(v.as_bytes())),
        HashOn::Cookie(name) => {
            sticky::cookie(req.headers(), name).map(|v| hash_bytes(v.as_bytes()))
        }
    }
}

/// The client's response: the server's, with hop-by-hop and hidden headers removed and the
/// route's headers set.
pub(super) fn respond(
    resp: Response<Inbound>,
    in_flight: InFlight,
    lease: (Lease, Arc<Connections>),
    running: &Running,
    route: usize,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    for h in &running.hide_headers {
        parts.headers.remove(h);
    }
    for (name, value) in &running.site.routes[route].set_response_headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(
        parts,
        ProxyBody::Upstream(Box::new(Tracked {
            inner: Some(body),
            _in_flight: Some(in_flight),
            lease: Some(lease),
            tee: None,
            encoder: None,
        })),
    )
}
