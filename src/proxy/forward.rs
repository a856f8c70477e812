//! One request through the proxy: framing checks, route, server choice (sticky first, then
//! the pool's algorithm), the upstream request with forwarding headers over a pooled
//! connection, a retry on another server while that is safe, and the response with its
//! headers cleaned. Bodies stream both ways; nothing is buffered whole.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::route::{self, RequestFacts};
use super::sticky;
use super::upstream::InFlight;
use super::{Running, Shared};
use crate::config::{AccessLog, Sticky};

/// What the client receives: an upstream body (counted in flight until it ends) or a short
/// body of the proxy's own.
pub type ProxyBody = Either<Tracked, Full<Bytes>>;
/// What a server receives: the client's body (which says when it has all gone), or nothing
/// (a retry, which only requests without a body get).
pub type UpstreamBody = Either<Sent, Empty<Bytes>>;

/// A request body on its way to a server: it notes when its last frame has gone, so the wait
/// for the response starts there (a slow upload is not a slow server).
pub struct Sent {
    inner: Incoming,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Body for Sent {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            if let Some(done) = this.done.take() {
                let _ = done.send(());
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An upstream response body that keeps its server's in-flight count until it ends.
pub struct Tracked {
    inner: Incoming,
    _in_flight: InFlight,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client connection a request came on.
#[derive(Debug, Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The drain generation the connection was opened in.
    pub born: u64,
    /// What the connection's framing watcher found of each HTTP/1.1 request head.
    pub verdicts: Arc<super::framing::Verdicts>,
}

/// Headers that belong to one connection, never forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Answers one request.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    conn: Conn,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let running = shared.current.load_full();
    let request_id = request_id(&running, &req, &conn);
    let ambiguous = req.version() <= Version::HTTP_11 && conn.verdicts.next();
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let version = req.version();
    let referer = header_text(req.headers(), header::REFERER);
    let agent = header_text(req.headers(), header::USER_AGENT);
    let mut route = None;
    let (mut response, upstream) = forward(
        &shared,
        &running,
        req,
        &conn,
        &request_id,
        ambiguous,
        &mut route,
    )
    .await;
    if response.status().is_server_error() {
        if let Some(page) = route.and_then(|r| running.site.routes[r].error_page.clone()) {
            response = error_page(response, &page);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        let name = HeaderName::from_bytes(running.site.request_id_header.as_bytes());
        if let Ok(name) = name {
            response.headers_mut().insert(name, v);
        }
    }
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
    shared.stats.latency.observe(started.elapsed());
    let own_body = matches!(response.body(), Either::Right(_));
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
    let took = started.elapsed();
    match running.site.access_log {
        AccessLog::Off => {}
        AccessLog::Combined => tracing::info!(
            target: "meridian::access",
            "{} - - [{}] \"{method} {target} {version:?}\" {} - \"{referer}\" \"{agent}\" rt={:.3} upstream={} id={request_id}",
            conn.peer.ip(),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            response.status().as_u16(),
            took.as_secs_f64(),
            upstream.map_or_else(|| "-".to_string(), |a| a.to_string()),
        ),
        AccessLog::Json => tracing::info!(
            target: "meridian::access",
            "{}",
            serde_json::json!({
                "client": conn.peer.ip().to_string(),
                "method": method.as_str(),
                "target": target,
                "version": format!("{version:?}"),
                "status": response.status().as_u16(),
                "referer": referer,
                "user_agent": agent,
                "seconds": took.as_secs_f64(),
                "upstream": upstream.map(|a| a.to_string()),
                "request_id": request_id,
            })
        ),
    }
    Ok(response)
}

fn header_text(headers: &HeaderMap, name: HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

/// The request's ID: the one a trusted proxy in front sent, else a new one.
fn request_id<B>(running: &Running, req: &Request<B>, conn: &Conn) -> String {
    let trusted = running.trusts(conn.peer.ip());
    let given = req
        .headers()
        .get(running.site.request_id_header.as_str())
        .and_then(|v| v.to_str().ok())
        .filter(|v| trusted && !v.is_empty() && v.len() <= 128);
    match given {
        Some(v) => v.to_string(),
        None => format!("{:032x}", rand::random::<u128>()),
    }
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
    Response::from_parts(
        parts,
        Either::Right(Full::new(Bytes::copy_from_slice(page))),
    )
}

/// A response of the proxy's own, with a short text body.
pub fn own(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(format!("{text}\n")))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Request framing that could let a request be read two ways by two parsers (request
/// smuggling), refused before anything goes upstream: several or malformed `Content-Length`
/// values, `Transfer-Encoding` together with `Content-Length`, and over h2 the
/// connection-specific headers RFC 9113 section 8.2.2 forbids.
fn bad_framing<B>(req: &Request<B>, ambiguous: bool) -> Option<&'static str> {
    let h = req.headers();
    if ambiguous {
        return Some("ambiguous framing: Content-Length twice, or with Transfer-Encoding");
    }
    let lengths: Vec<&HeaderValue> = h.get_all(header::CONTENT_LENGTH).iter().collect();
    if lengths.len() > 1 {
        return Some("several Content-Length headers");
    }
    if let Some(v) = lengths.first() {
        if v.is_empty() || !v.as_bytes().iter().all(u8::is_ascii_digit) {
            return Some("a malformed Content-Length");
        }
    }
    if h.contains_key(header::TRANSFER_ENCODING) && !lengths.is_empty() {
        return Some("Transfer-Encoding with Content-Length");
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

/// Removes hop-by-hop headers, and those the `Connection` header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    h.remove(header::UPGRADE);
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
    shared: &Shared,
    running: &Arc<Running>,
    mut req: Request<Incoming>,
    conn: &Conn,
    request_id: &str,
    ambiguous: bool,
    route_taken: &mut Option<usize>,
) -> (Response<ProxyBody>, Option<SocketAddr>) {
    if let Some(why) = bad_framing(&req, ambiguous) {
        tracing::debug!(peer = %conn.peer, why, "request refused");
        // What follows on the connection cannot be trusted to start a request: close it.
        let mut r = own(StatusCode::BAD_REQUEST, why);
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return (r, None);
    }
    let host = route::host_of(&req);
    let facts = RequestFacts {
        host: &host,
        path: req.uri().path(),
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
    let pi = r.pool;
    let pool = &running.site.pools[pi];
    let settings = &running.site.pool_settings[pi];
    let state = &running.pools[pi];
    let health = shared.health.snapshot();
    let client_ip = conn.peer.ip();

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
    if chosen.is_none() {
        chosen = state.choose(pool, settings, &health, client_ip, key, &[]);
    }

    // The upstream request's head, built once for every try.
    let original_host = req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    // An HTTP/1.1 upgrade (WebSocket) asks for the connection: the protocol it names goes
    // upstream, and on 101 the two connections are joined.
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .filter(|_| req.version() == Version::HTTP_11)
        .cloned();
    let client_side = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
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
    if let Some(h) = settings
        .host
        .as_deref()
        .and_then(|h| HeaderValue::from_str(h).ok())
    {
        headers.insert(header::HOST, h);
    } else if let Some(h) = original_host {
        headers.insert(header::HOST, h);
    }
    for (k, v) in &r.set_request_headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(k, v);
        }
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let retryable = idempotent(&parts.method) && body.is_end_stream() && upgrade.is_none();
    let mut body = Some(body);
    let mut client_side = client_side;
    let mut tried: Vec<usize> = Vec::new();
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
        let scheme = if settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let uri = match format!("{scheme}://{addr}{path}").parse::<http::Uri>() {
            Ok(u) => u,
            Err(_) => return (own(StatusCode::BAD_REQUEST, "bad request target"), None),
        };
        // The response must start within the route's timeout of the request's end.
        let (done, sent_all) = tokio::sync::oneshot::channel();
        let mut up = Request::new(match body.take() {
            Some(b) if !b.is_end_stream() => Either::Left(Sent {
                inner: b,
                done: Some(done),
            }),
            _ => {
                let _ = done.send(());
                Either::Right(Empty::new())
            }
        });
        *up.method_mut() = parts.method.clone();
        *up.uri_mut() = uri;
        *up.headers_mut() = headers.clone();
        let in_flight = state.start(server);
        let sent = Instant::now();
        let first_byte = async {
            // A body that fails before its end ends the request with an error instead.
            if sent_all.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(r.timeout).await;
        };
        let outcome = tokio::select! {
            answered = running.clients[pi].request(up) => Ok(answered),
            _ = first_byte => Err(()),
        };
        let failure = match outcome {
            Ok(Ok(resp)) => {
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
                let mut resp = respond(resp, in_flight, running, ri);
                if let (Some(Sticky::Cookie(c)), false) = (&settings.sticky, pinned) {
                    if let Some(signer) = &running.signers[pi] {
                        let value = signer.value(running.tag_of(pi, server));
                        if let Ok(v) = HeaderValue::from_str(&sticky::set_cookie(c, &value)) {
                            resp.headers_mut().append(header::SET_COOKIE, v);
                        }
                    }
                }
                return (resp, Some(addr));
            }
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => "timed out before the response headers".to_string(),
        };
        drop(in_flight);
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

/// Answers an accepted upgrade: the server's 101 goes to the client with its `Upgrade` and
/// `Connection` headers, and once both sides have switched their bytes are copied both ways
/// until either closes (the server's request stays counted in flight until then).
fn tunnel(
    mut resp: Response<Incoming>,
    client_side: hyper::upgrade::OnUpgrade,
    in_flight: InFlight,
) -> Response<ProxyBody> {
    let server_side = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let _in_flight = in_flight;
        let (Ok(client), Ok(server)) = tokio::join!(client_side, server_side) else {
            return;
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut server = hyper_util::rt::TokioIo::new(server);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    let (parts, _) = resp.into_parts();
    let mut out = Response::new(Either::Right(Full::new(Bytes::new())));
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

/// Sets `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded` (RFC 7239): extended when the
/// peer is a trusted proxy, replaced otherwise (a client cannot claim another address).
fn forwarding_headers(
    h: &mut HeaderMap,
    running: &Running,
    conn: &Conn,
    host: Option<&HeaderValue>,
    request_id: &str,
) {
    let trusted = running.trusts(conn.peer.ip());
    let ip = conn.peer.ip();
    let proto = if conn.tls { "https" } else { "http" };
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) if trusted => format!("{prior}, {ip}"),
        _ => ip.to_string(),
    };
    let node = match ip {
        std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
        v4 => v4.to_string(),
    };
    let host_text = host.and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut element = format!("for={node};proto={proto}");
    if !host_text.is_empty() && host_text.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        element.push_str(&format!(";host=\"{host_text}\""));
    }
    let forwarded = match h.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prior) if trusted => format!("{prior}, {element}"),
        _ => element,
    };
    let keep_proto = trusted && h.contains_key("x-forwarded-proto");
    let keep_host = trusted && h.contains_key("x-forwarded-host");
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set("x-forwarded-for", &xff);
    set("forwarded", &forwarded);
    if !keep_proto {
        set("x-forwarded-proto", proto);
    }
    if !keep_host {
        match host {
            Some(host) => {
                h.insert("x-forwarded-host", host.clone());
            }
            None => {
                h.remove("x-forwarded-host");
            }
        }
    }
    if let Ok(name) = HeaderName::from_bytes(running.site.request_id_header.as_bytes()) {
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(name, v);
        }
    }
}

/// The client's response: the server's, with hop-by-hop and hidden headers removed and the
/// route's headers set.
fn respond(
    resp: Response<Incoming>,
    in_flight: InFlight,
    running: &Running,
    route: usize,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    for h in &running.site.hide_headers {
        parts.headers.remove(h.as_str());
    }
    for (k, v) in &running.site.routes[route].set_response_headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            parts.headers.insert(k, v);
        }
    }
    Response::from_parts(
        parts,
        Either::Left(Tracked {
            inner: body,
            _in_flight: in_flight,
        }),
    )
}

/// How a pool connects to its servers: TCP, then TLS for `https` pools.
pub type Connector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// The connector of a pool: its connect timeout, and its TLS settings when it speaks HTTPS
/// (the config was checked at load, so a TLS setup that fails here falls back to none and
/// every request to the pool fails with 502, which the log explains).
pub fn connector(settings: &crate::config::PoolSettings) -> Connector {
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.set_connect_timeout(Some(settings.connect_timeout));
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let tls = settings.tls.as_ref().and_then(|t| {
        crate::tls::client_config(t.verify, t.ca_file.as_deref())
            .inspect_err(|e| tracing::error!(error = %e, "upstream TLS unavailable"))
            .ok()
    });
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.unwrap_or_else(|| {
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("the default protocol versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
        }))
        .https_or_http();
    // The name sent as SNI and verified: the pool's `server_name`, else the `Host` it sends
    // upstream, else the server's address.
    let name = settings
        .tls
        .as_ref()
        .and_then(|t| t.server_name.clone().or_else(|| settings.host.clone()))
        .and_then(|n| rustls::pki_types::ServerName::try_from(n).ok());
    match name {
        Some(name) => builder
            .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            .enable_http1()
            .wrap_connector(tcp),
        None => builder.enable_http1().wrap_connector(tcp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_framing_plain<B>(req: &Request<B>) -> Option<&'static str> {
        bad_framing(req, false)
    }

    #[test]
    fn smuggling_forms_are_refused() {
        let req = |f: &dyn Fn(http::request::Builder) -> http::request::Builder| {
            f(Request::builder().uri("/")).body(()).unwrap()
        };
        assert!(bad_framing_plain(&req(&|b| b.header("content-length", "5"))).is_none());
        assert!(bad_framing_plain(&req(&|b| b
            .header("content-length", "5")
            .header("content-length", "6")))
        .is_some());
        assert!(bad_framing_plain(&req(&|b| b.header("content-length", "5, 5"))).is_some());
        assert!(bad_framing_plain(&req(&|b| b
            .header("content-length", "5")
            .header("transfer-encoding", "chunked")))
        .is_some());
        assert!(bad_framing_plain(&req(&|b| b
            .version(Version::HTTP_2)
            .header("connection", "close")))
        .is_some());
        assert!(bad_framing_plain(&req(&|b| b
            .version(Version::HTTP_2)
            .header("te", "trailers")))
        .is_none());
        assert!(
            bad_framing_plain(&req(&|b| b.version(Version::HTTP_2).header("te", "gzip"))).is_some()
        );
    }

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
}
