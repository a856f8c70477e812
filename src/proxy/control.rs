//! The proxy's loopback control endpoint, in the DNS control endpoint's shape so `meridian
//! ctl` drives both: `GET /status` (pools and servers with health, overrides, load),
//! `POST /members/POOL%2FADDRESS/{drain,undrain,force-up,force-down}` (`?dry_run=true` to
//! ask first; a drain that would leave a pool without a usable server is refused, by the
//! decision core's drain safety rule), `GET /metrics` (Prometheus), `GET /load` (the load
//! report) and `GET /rtt` (client networks' round-trip times).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::report::{self, LoadReport};
use super::{upstream, Shared};
use crate::health::{Admin, Change, Health, MemberId};

/// Serves the control endpoint on `listener` until `stopping` turns true.
pub async fn run(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stopping: tokio::sync::watch::Receiver<bool>,
) {
    each_connection(listener, stopping, move |stream| {
        let shared = shared.clone();
        let service = hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(answer(&shared, req)) }
        });
        async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await
}

/// Accepts connections on `listener` until `stopping` turns true, each served by `serve` in
/// a task of its own.
async fn each_connection<F, Fut>(
    listener: tokio::net::TcpListener,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = stopping.changed() => return,
        };
        tokio::spawn(serve(stream));
    }
}

/// How long a DNS node may take over the report listener's TLS handshake.
const REPORT_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves the load report and the round-trip times alone (`GET /load`, `GET /rtt`) on
/// `listener` for DNS nodes, over TLS when given, to callers with `Authorization: Bearer
/// TOKEN` when a token is set, until `stopping` turns true. Nothing else is answered there:
/// it may face the network.
pub async fn report(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    token: Option<Vec<u8>>,
    shared: Arc<Shared>,
    stopping: tokio::sync::watch::Receiver<bool>,
) {
    let token: Option<Arc<[u8]>> = token.map(Into::into);
    each_connection(listener, stopping, move |stream| {
        let (shared, token, tls) = (shared.clone(), token.clone(), tls.clone());
        let service = hyper::service::service_fn(move |req| {
            let answer = load_for(&shared, token.as_deref(), &req);
            async move { Ok::<_, Infallible>(answer) }
        });
        async move {
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
                Some(acceptor) => {
                    let shaken =
                        tokio::time::timeout(REPORT_HANDSHAKE, acceptor.accept(stream)).await;
                    if let Ok(Ok(stream)) = shaken {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            }
        }
    })
    .await
}

/// The report listener's one answer: the load report to a caller with the token.
fn load_for<B>(shared: &Shared, token: Option<&[u8]>, req: &Request<B>) -> Response<Full<Bytes>> {
    if let Some(token) = token {
        let given = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if aws_lc_rs::constant_time::verify_slices_are_equal(given, token).is_err() {
            let mut r = json_reply(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "a token is needed"}),
            );
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/load") => json_reply(StatusCode::OK, &json!(load_report(shared))),
        (&Method::GET, "/rtt") => rtt_report(shared, req.uri().query()),
        _ => json_reply(
            StatusCode::NOT_FOUND,
            &json!({"error": "only GET /load and GET /rtt are served here"}),
        ),
    }
}

/// `GET /rtt[?within=SECONDS]`: client networks and their round-trip times, those sampled in
/// the last SECONDS only when asked (a DNS node that read the whole table asks for what
/// changed since).
fn rtt_report(shared: &Shared, query: Option<&str>) -> Response<Full<Bytes>> {
    let within = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|p| p.strip_prefix("within="));
    let within = match within.map(str::parse::<u64>) {
        None => None,
        Some(Ok(s)) => Some(std::time::Duration::from_secs(s)),
        Some(Err(_)) => {
            return json_reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": "within is a number of seconds"}),
            )
        }
    };
    let report = crate::health::RttReport {
        max_age_seconds: super::rtt::MAX_AGE.as_secs(),
        networks: shared.rtt.published(within),
    };
    json_reply(StatusCode::OK, &json!(report))
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn json_reply(status: StatusCode, doc: &Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", format!("{doc}\n"))
}

fn answer<B>(shared: &Shared, req: Request<B>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let dry_run = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "dry_run=true"));
    match (req.method(), path.as_str()) {
        (&Method::GET, "/status") => json_reply(StatusCode::OK, &status(shared)),
        (&Method::GET, "/load") => json_reply(StatusCode::OK, &json!(load_report(shared))),
        (&Method::GET, "/rtt") => rtt_report(shared, req.uri().query()),
        (&Method::GET, "/metrics") => {
            reply(StatusCode::OK, "text/plain; version=0.0.4", metrics(shared))
        }
        (&Method::POST, "/cache/purge") => purge(shared, req.uri().query()),
        (&Method::POST, p) if p.starts_with("/members/") => {
            let rest = &p["/members/".len()..];
            let Some((member, action)) = rest.rsplit_once('/') else {
                return json_reply(StatusCode::NOT_FOUND, &json!({"error": "no such call"}));
            };
            let member = crate::web::percent_decode(member);
            override_member(shared, &member, action, dry_run)
        }
        _ => json_reply(StatusCode::NOT_FOUND, &json!({"error": "no such call"})),
    }
}

/// `POST /cache/purge?key=URL`, `?prefix=URL-PREFIX`, `?tag=TAG` or `?all`: drops what it
/// names from the cache and says how many keys went. Exactly one is named; an empty value or
/// an unknown name is refused, so a purge whose value was left out never drops everything.
fn purge(shared: &Shared, query: Option<&str>) -> Response<Full<Bytes>> {
    use super::cache::Purge;
    let refuse = |why: String| json_reply(StatusCode::BAD_REQUEST, &json!({ "error": why }));
    let mut asked = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = crate::web::percent_decode(value);
        asked.push(match (name, value.is_empty()) {
            ("all", true) => Purge::All,
            ("all", false) => return refuse("all takes no value".into()),
            ("key" | "prefix" | "tag", true) => {
                return refuse(format!("{name}= is empty (to drop everything: ?all)"))
            }
            ("key", false) => Purge::Key(value),
            ("prefix", false) => Purge::Prefix(value),
            ("tag", false) => Purge::Tag(value),
            _ => return refuse(format!("unknown parameter {name:?}")),
        });
    }
    if asked.len() != 1 {
        return refuse("name one of key=, prefix=, tag= or all".into());
    }
    let purged = shared.cache.purge(&asked[0]);
    json_reply(StatusCode::OK, &json!({ "purged": purged }))
}

fn health_text(h: Health) -> &'static str {
    match h {
        Health::Up => "up",
        Health::Down => "down",
        Health::Unknown => "unknown",
    }
}

fn admin_text(a: Admin) -> &'static str {
    match a {
        Admin::Normal => "normal",
        Admin::Drained => "drained",
        Admin::ForcedUp => "forced-up",
        Admin::ForcedDown => "forced-down",
    }
}

/// Pools and servers as they stand.
fn status(shared: &Shared) -> Value {
    let running = shared.current.load();
    let snap = shared.health.snapshot();
    let pools: Vec<Value> = running
        .pools_with_state()
        .map(|(pool, settings, state)| {
            let servers: Vec<Value> = pool
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let (admin, health) = snap.state(&m.id);
                    let load = &state.load[i];
                    json!({
                        "id": m.id.0,
                        "address": upstream::address(m).map(|a| a.to_string()),
                        "weight": m.weight,
                        "health": health_text(health),
                        "admin": admin_text(admin),
                        "usable": upstream::usable(m, settings, &snap),
                        "ejected": state.ejected(i),
                        "in_flight": load.in_flight.load(Ordering::Relaxed),
                        "requests": load.requests.load(Ordering::Relaxed),
                        "failures": load.failures.load(Ordering::Relaxed),
                        "latency_ms": load.latency_ns() / 1e6,
                    })
                })
                .collect();
            json!({
                "name": pool.name,
                "algorithm": settings.algorithm.name(),
                "servers": servers,
            })
        })
        .collect();
    json!({
        "kind": "proxy",
        "config": running.site.file.display().to_string(),
        "pools": pools,
        "load": load_report(shared),
    })
}

/// The load report, as the DNS side's `proxy-load` check is to read it.
pub fn load_report(shared: &Shared) -> LoadReport {
    let running = shared.current.load();
    let snap = shared.health.snapshot();
    let (mut servers, mut healthy, mut in_flight) = (0, 0, 0);
    for (pool, settings, state) in running.pools_with_state() {
        for (i, m) in pool.members.iter().enumerate() {
            servers += 1;
            if upstream::usable(m, settings, &snap) && !state.ejected(i) {
                healthy += 1;
            }
            in_flight += u64::from(state.load[i].in_flight.load(Ordering::Relaxed));
        }
    }
    let (rate, p50, p99, error_rate, seconds) = shared.window.report(&shared.stats);
    LoadReport {
        servers,
        healthy_servers: healthy,
        active_connections: shared.drain.live(),
        in_flight,
        requests_per_second: rate,
        p50_ms: p50,
        p99_ms: p99,
        error_rate,
        window_seconds: seconds,
    }
}

/// Drain, undrain, force up or down one server (`POOL/ADDRESS:PORT`).
fn override_member(
    shared: &Shared,
    member: &str,
    action: &str,
    dry_run: bool,
) -> Response<Full<Bytes>> {
    let Some(admin) = Admin::from_action(action) else {
        return json_reply(StatusCode::NOT_FOUND, &json!({"error": "no such call"}));
    };
    let running = shared.current.load();
    let id = MemberId(member.to_string());
    if !running
        .site
        .pools
        .iter()
        .any(|p| p.members.iter().any(|m| m.id == id))
    {
        return json_reply(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no server {member:?} (POOL/ADDRESS:PORT)")}),
        );
    }
    let snap = shared.health.snapshot();
    let impact =
        crate::balance::drain_impact(&running.site.pools, &snap, std::slice::from_ref(&id), admin);
    let refusals: Vec<String> = impact.iter().filter_map(|i| i.refused.clone()).collect();
    let doc = json!({
        "members": [member],
        "dry_run": dry_run,
        "would_be_refused": !refusals.is_empty(),
        "refusals": refusals,
        "impact": impact,
    });
    if dry_run {
        return json_reply(StatusCode::OK, &doc);
    }
    if !refusals.is_empty() {
        return json_reply(StatusCode::CONFLICT, &json!({"error": refusals.join("; ")}));
    }
    shared.overridden(&id, admin);
    shared.health.apply(Change::Admin(id, admin));
    tracing::info!(server = %member, action, "override applied");
    json_reply(StatusCode::OK, &doc)
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus page.
fn metrics(shared: &Shared) -> String {
    let running = shared.current.load();
    let snap = shared.health.snapshot();
    let mut out = String::new();
    let stats = &shared.stats;
    let _ = writeln!(out, "# HELP meridian_proxy_requests_total Requests answered, by pool, server and status class.\n# TYPE meridian_proxy_requests_total counter");
    for (pool, state) in running.site.pools.iter().zip(&running.pools) {
        for (i, m) in pool.members.iter().enumerate() {
            for (c, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
                let n = state.load[i].classes[c].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "meridian_proxy_requests_total{{pool=\"{}\",server=\"{}\",class=\"{class}\"}} {n}",
                    label(&pool.name),
                    label(&m.id.0)
                );
            }
        }
    }
    let _ = writeln!(out, "# HELP meridian_proxy_local_responses_total Responses the proxy made itself (no route, no server, bad framing, upstream failure), by status.\n# TYPE meridian_proxy_local_responses_total counter");
    for (status, n) in shared
        .local
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        let _ = writeln!(
            out,
            "meridian_proxy_local_responses_total{{status=\"{status}\"}} {n}"
        );
    }
    let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    };
    gauge(
        &mut out,
        "meridian_proxy_active_connections",
        "Client connections open.",
        shared.drain.live() as f64,
    );
    gauge(
        &mut out,
        "meridian_proxy_rtt_networks",
        "Client networks with a measured round-trip time, for latency steering.",
        shared.rtt.len() as f64,
    );
    let c = &shared.cache.counters;
    let _ = writeln!(out, "# HELP meridian_proxy_cache_total What the cache did with requests of caching routes and their responses.\n# TYPE meridian_proxy_cache_total counter");
    for (what, n) in [
        ("hit", &c.hits),
        ("miss", &c.misses),
        ("stored", &c.stored),
        ("revalidated", &c.revalidated),
        ("invalidated", &c.invalidated),
        ("stale", &c.stale_served),
        ("coalesced", &c.coalesced),
        ("evicted", &*c.evicted),
    ] {
        let _ = writeln!(
            out,
            "meridian_proxy_cache_total{{result=\"{what}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    let (bytes, keys) = shared.cache.size();
    let _ = writeln!(
        out,
        "# HELP meridian_proxy_cache_bytes Bytes the cache holds, by tier.\n# TYPE meridian_proxy_cache_bytes gauge\nmeridian_proxy_cache_bytes{{tier=\"memory\"}} {bytes}"
    );
    if let Some(disk) = shared.cache.disk_bytes() {
        let _ = writeln!(out, "meridian_proxy_cache_bytes{{tier=\"disk\"}} {disk}");
    }
    gauge(
        &mut out,
        "meridian_proxy_cache_keys",
        "Keys with stored responses in the memory tier.",
        keys as f64,
    );
    counter(
        &mut out,
        "meridian_proxy_retries_total",
        "Requests tried again on another server.",
        stats.retries.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP meridian_proxy_denied_total Requests refused by access rules, by where the rule is.\n# TYPE meridian_proxy_denied_total counter\nmeridian_proxy_denied_total{{scope=\"listener\"}} {}\nmeridian_proxy_denied_total{{scope=\"route\"}} {}",
        stats.denied_by_listener.load(Ordering::Relaxed),
        stats.denied_by_route.load(Ordering::Relaxed),
    );
    let _ = writeln!(out, "# HELP meridian_proxy_limited_total Clients refused by a limit, by reason.\n# TYPE meridian_proxy_limited_total counter");
    for reason in super::guard::Refusal::ALL {
        if reason != super::guard::Refusal::Denied {
            let _ = writeln!(
                out,
                "meridian_proxy_limited_total{{reason=\"{}\"}} {}",
                reason.name(),
                shared.refusals.count(reason)
            );
        }
    }
    if let Some(rate) = &running.rate {
        gauge(
            &mut out,
            "meridian_proxy_rate_limiter_clients",
            "Client networks the rate limiter remembers.",
            rate.clients().len() as f64,
        );
        counter(
            &mut out,
            "meridian_proxy_rate_limiter_evictions_total",
            "Client networks the rate limiter forgot to make room (the least recent first).",
            rate.clients().evicted(),
        );
    }
    counter(
        &mut out,
        "meridian_proxy_l4_connections_total",
        "Connections accepted by TCP listeners.",
        stats.l4_connections.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "meridian_proxy_l4_unrouted_total",
        "TCP listener connections closed unforwarded: no usable ClientHello, or no server reachable.",
        stats.l4_unrouted.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP meridian_proxy_l4_bytes_total Bytes forwarded by TCP listeners, by direction (in: from clients).\n# TYPE meridian_proxy_l4_bytes_total counter\nmeridian_proxy_l4_bytes_total{{direction=\"in\"}} {}\nmeridian_proxy_l4_bytes_total{{direction=\"out\"}} {}",
        stats.l4_bytes_in.load(Ordering::Relaxed),
        stats.l4_bytes_out.load(Ordering::Relaxed),
    );
    gauge(
        &mut out,
        "meridian_proxy_connection_clients",
        "Client networks with a connection open (counted while connections_per_client is set).",
        shared.open.clients() as f64,
    );
    let _ = writeln!(out, "# HELP meridian_proxy_upstream_connections_opened_total Connections opened to servers, by pool.\n# TYPE meridian_proxy_upstream_connections_opened_total counter");
    let _ = writeln!(out, "# HELP meridian_proxy_upstream_connection_reuses_total Requests sent on a connection kept from an earlier request, by pool.\n# TYPE meridian_proxy_upstream_connection_reuses_total counter");
    let _ = writeln!(out, "# HELP meridian_proxy_upstream_idle_connections HTTP/1.1 connections kept idle for the next request, by pool.\n# TYPE meridian_proxy_upstream_idle_connections gauge");
    let _ = writeln!(out, "# HELP meridian_proxy_queued_requests Requests waiting for a server below its max_in_flight, by pool.\n# TYPE meridian_proxy_queued_requests gauge");
    for (pool, state) in running.site.pools.iter().zip(&running.pools) {
        let _ = writeln!(
            out,
            "meridian_proxy_queued_requests{{pool=\"{}\"}} {}",
            label(&pool.name),
            state.queued.load(Ordering::Relaxed)
        );
    }
    for (pool, conns) in running.site.pools.iter().zip(&running.connections) {
        let name = label(&pool.name);
        let _ = writeln!(
            out,
            "meridian_proxy_upstream_connections_opened_total{{pool=\"{name}\"}} {}\nmeridian_proxy_upstream_connection_reuses_total{{pool=\"{name}\"}} {}\nmeridian_proxy_upstream_idle_connections{{pool=\"{name}\"}} {}",
            conns.opened.load(Ordering::Relaxed),
            conns.reused.load(Ordering::Relaxed),
            conns.idle(),
        );
    }
    let _ = writeln!(out, "# HELP meridian_proxy_in_flight Requests sent to a server and not finished.\n# TYPE meridian_proxy_in_flight gauge");
    let _ = writeln!(out, "# HELP meridian_proxy_ejections_total Passive-health ejections.\n# TYPE meridian_proxy_ejections_total counter");
    let _ = writeln!(out, "# HELP meridian_proxy_server_up Whether a server may take requests (1) or not (0).\n# TYPE meridian_proxy_server_up gauge");
    for (pool, settings, state) in running.pools_with_state() {
        for (i, m) in pool.members.iter().enumerate() {
            let labels = format!(
                "pool=\"{}\",server=\"{}\"",
                label(&pool.name),
                label(&m.id.0)
            );
            let load = &state.load[i];
            let _ = writeln!(
                out,
                "meridian_proxy_in_flight{{{labels}}} {}",
                load.in_flight.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "meridian_proxy_ejections_total{{{labels}}} {}",
                load.ejected_total.load(Ordering::Relaxed)
            );
            let up = upstream::usable(m, settings, &snap) && !state.ejected(i);
            let _ = writeln!(out, "meridian_proxy_server_up{{{labels}}} {}", u8::from(up));
        }
    }
    let _ = writeln!(out, "# HELP meridian_proxy_request_duration_seconds From a request's arrival to its response head's departure.\n# TYPE meridian_proxy_request_duration_seconds histogram");
    let mut cumulative = 0;
    for (i, bound) in report::BOUNDS.iter().enumerate() {
        cumulative += stats.latency.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "meridian_proxy_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += stats.latency.buckets[report::BOUNDS.len()].load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "meridian_proxy_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        out,
        "meridian_proxy_request_duration_seconds_sum {}",
        stats.latency.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "meridian_proxy_request_duration_seconds_count {cumulative}"
    );
    out
}
