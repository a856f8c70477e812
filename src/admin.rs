//! The control endpoint: a JSON API over HTTP/1.1 (loopback by default), the status page,
//! and Prometheus metrics.
//!
//! | call | what it does |
//! |---|---|
//! | `GET /` | the status page (HTML; live health, answer shares, recent changes, explain form) |
//! | `GET /api` | index of the calls below |
//! | `GET /healthz` | the node's own health: zones loaded, probes running (200 or 503) |
//! | `GET /status` | everything below in one document |
//! | `GET /zones`, `/names`, `/pools`, `/members` | one part of it each |
//! | `GET /events` | recent health and override changes |
//! | `GET /audit?limit=N` | the audit log of mutating calls, newest first |
//! | `GET /metrics` | Prometheus text format |
//! | `POST /members/{TARGET}/{ACTION}` | ACTION: `drain`, `undrain`, `force-up`, `force-down`; TARGET: `SITE/ADDRESS` or `POOL/SITE` (URL-encoded). Query: `force=true` past the pool's drain safety, `dry_run=true` to see the effect only, `expires=30m` to clear it later |
//! | `POST /reload` | reload the config files; a rejected config keeps the old one |
//! | `POST /explain` | JSON `{"name", "qtype", "client", "ecs", "assume": []}`: the decision chain |
//!
//! With `server.control_token_file` set (required when the endpoint is not on loopback),
//! every call but the page itself needs `Authorization: Bearer TOKEN`. Every mutating call is
//! written to the audit log in the state store, refused ones included.
//!
//! What a web page could make a browser send is refused (`cross_site`): a `Host` that is
//! neither the endpoint's own address nor a loopback name gets 421 (DNS rebinding), and a POST
//! with a foreign `Origin`, or with neither a JSON content type nor the `X-Meridian-Control`
//! header (a form cannot send either), gets 403. Headers must arrive within
//! [`HEADER_TIMEOUT`], and at most [`MAX_CONNECTIONS`] connections are served at once.
//! Routing is one `match` on (method, path segments): new calls are one arm each.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::balance::Reason;
use crate::clock::{unix_now, unix_seconds};
use crate::health::{Admin, Change, MemberId};
use crate::node::{orphan_overrides, Node, ReloadOutcome};

/// The status page: one self-contained file (no external assets).
const PAGE: &str = include_str!("status.html");

/// Connections served at once; further ones are closed as they are accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// A request's headers (and, on a kept-alive connection, the next request's) must arrive
/// within this time, or the connection is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a stopping endpoint lets its connections finish the request in hand.
const DRAIN: Duration = Duration::from_secs(2);

/// Serves the control API on `listener` until `stopping` turns true (or its sender goes):
/// then it accepts no more, lets each connection finish the request in hand (for up to
/// `DRAIN`) and returns.
pub async fn run(
    listener: tokio::net::TcpListener,
    node: Arc<Node>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopping.changed() => break,
        };
        while connections.try_join_next().is_some() {}
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "control endpoint: {MAX_CONNECTIONS} connections open, one more closed");
            continue;
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let node = node.clone();
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let service =
                hyper::service::service_fn(move |req| handle(req, node.clone(), peer, local));
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(io, service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stopping.changed() => {
                    // The request in hand is answered; the connection then closes.
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(slot);
        });
    }
    let drained = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

/// Refuses a request a web page could have made a browser send: to a name that is not this
/// endpoint's (DNS rebinding: 421), or a state-changing one from another origin or in a form a
/// cross-site page can send without asking (403). `local` is the address the connection
/// reached.
fn cross_site(req: &Request<Incoming>, local: SocketAddr) -> Option<Response<Full<Bytes>>> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let host = header("host").unwrap_or("");
    if !host_allowed(host, local) {
        return Some(error(
            StatusCode::MISDIRECTED_REQUEST,
            format!("Host {host:?} is not this endpoint: use its address ({local}) or localhost"),
        ));
    }
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return None;
    }
    if let Some(origin) = header("origin") {
        let host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        if !host_allowed(host, local) {
            return Some(error(
                StatusCode::FORBIDDEN,
                format!("requests from origin {origin:?} are refused"),
            ));
        }
    }
    let json = header("content-type").is_some_and(|t| {
        t.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
    });
    if !json && header("x-meridian-control").is_none() {
        return Some(error(
            StatusCode::FORBIDDEN,
            "a state-changing call needs Content-Type: application/json or an X-Meridian-Control header",
        ));
    }
    None
}

/// Whether `host` (a `Host` header: a name or address, perhaps with a port) names this
/// endpoint: its own address, a loopback address, or `localhost`. The port is not compared
/// (a forwarded port is fine); a name that only resolves here, as in DNS rebinding, is not.
fn host_allowed(host: &str, local: SocketAddr) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None if host.matches(':').count() == 1 => host.split(':').next().unwrap_or(""),
        None => host,
    };
    let name = name.trim_end_matches('.');
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip == local.ip(),
        Err(_) => false,
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    text.push(b'\n');
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .expect("static response parts")
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

fn error(status: StatusCode, reason: impl Into<String>) -> Response<Full<Bytes>> {
    reply(
        status,
        json!({ "error": reason.into(), "status": status.as_u16() }),
    )
}

/// Whether the request carries the configured bearer token (compared in constant time).
fn authorized(req: &Request<Incoming>, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), token.as_bytes()).is_ok()
}

/// `key=value` pairs of the query string.
fn query_params(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, "true"));
            (crate::web::percent_decode(k), crate::web::percent_decode(v))
        })
        .collect()
}

async fn handle(
    req: Request<Incoming>,
    node: Arc<Node>,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(refused) = cross_site(&req, local) {
        return Ok(refused);
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let params = query_params(&req);
    let token = node.config().config.server.control_token.clone();
    let is_page = method == Method::GET && path == "/";
    if !is_page && !authorized(&req, token.as_deref()) {
        return Ok(error(
            StatusCode::UNAUTHORIZED,
            "this endpoint needs Authorization: Bearer TOKEN (server.control_token_file)",
        ));
    }
    // Bodies are small JSON documents; anything over 64 KiB is refused.
    let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ))
        }
    };
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(crate::web::percent_decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    Ok(match (&method, segs.as_slice()) {
        (&Method::GET, []) => text(StatusCode::OK, "text/html; charset=utf-8", PAGE.to_string()),
        (&Method::GET, ["api"]) => reply(
            StatusCode::OK,
            json!({
                "service": "meridian",
                "calls": [
                    "GET /healthz", "GET /status", "GET /zones", "GET /names", "GET /pools",
                    "GET /members", "GET /events", "GET /audit?limit=N", "GET /metrics",
                    "POST /members/{TARGET}/{drain|undrain|force-up|force-down}?force=true&dry_run=true&expires=30m",
                    "POST /reload", "POST /explain",
                ],
            }),
        ),
        (&Method::GET, ["healthz"]) => healthz(&node),
        (&Method::GET, ["status"]) => reply(StatusCode::OK, status(&node)),
        (&Method::GET, [part @ ("zones" | "names" | "pools" | "members" | "events")]) => {
            reply(StatusCode::OK, status(&node)[*part].clone())
        }
        (&Method::GET, ["audit"]) => {
            let limit = param("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
            reply(StatusCode::OK, json!(node.store.audit_log(limit)))
        }
        (&Method::GET, ["metrics"]) => {
            let body = crate::metrics::render(&scrape(&node));
            text(StatusCode::OK, "text/plain; version=0.0.4", body)
        }
        (&Method::POST, ["explain"]) => explain(&node, &body),
        (&Method::POST, ["reload"]) => {
            let outcome = node.reload().await;
            audit(&node, peer, "reload", None, json!(outcome));
            match outcome {
                ok @ ReloadOutcome::Applied { .. } => reply(StatusCode::OK, json!(ok)),
                bad @ ReloadOutcome::Rejected { .. } => {
                    reply(StatusCode::UNPROCESSABLE_ENTITY, json!(bad))
                }
            }
        }
        (&Method::POST, ["members", target @ .., action]) if !target.is_empty() => {
            let options = ActionOptions {
                force: param("force").is_some_and(truthy),
                dry_run: param("dry_run").is_some_and(truthy),
                expires: param("expires").map(str::to_string),
            };
            member_action(&node, peer, &target.join("/"), action, &options)
        }
        (
            _,
            ["healthz" | "status" | "zones" | "names" | "pools" | "members" | "events" | "audit"
            | "metrics" | "api"],
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        (_, ["reload" | "explain"]) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such call: {method} {path}"),
        ),
    })
}

/// The node facts a Prometheus scrape shows besides the counters.
/// A key's state as status and metrics name it: its timing's, or `held` when a retired
/// key-signing key keeps signing until the parent points at its successor.
fn key_state(
    zone: &crate::config::ServedZone,
    key: &crate::dnssec::ZoneKey,
    now: u64,
) -> &'static str {
    match &zone.signing {
        Some(s) if s.is_held(key.key_tag()) => "held",
        _ => key.times.state(now).name(),
    }
}

fn scrape(node: &Node) -> crate::metrics::Scrape {
    use crate::health::Health;
    use std::sync::atomic::Ordering::Relaxed;
    let loaded = node.config();
    let snap = node.health.snapshot();
    let members = loaded
        .config
        .pools
        .iter()
        .flat_map(|p| p.members.iter().map(move |m| (p, m)))
        .map(|(p, m)| {
            let st = snap.get(&m.id);
            crate::metrics::MemberGauge {
                pool: p.name.clone(),
                member: m.id.0.clone(),
                up: match st.health {
                    Health::Up => 1,
                    Health::Down => 0,
                    Health::Unknown => -1,
                },
                usable: crate::balance::usable(st.admin, st.health),
                transitions: node.health.transitions(&m.id),
                factor: st.factor.share(),
                factor_changes: node.health.factor_changes(&m.id),
                tripped: st.passive != crate::health::Passive::Clear,
                rtt_networks: node.health.measured_networks(&m.id),
            }
        })
        .collect();
    let probes = node
        .health
        .probe_rounds()
        .into_iter()
        .map(|(addr, r)| crate::metrics::ProbeHistogram {
            probe: addr.to_string(),
            buckets: crate::health::LATENCY_BUCKETS
                .iter()
                .copied()
                .zip(r.buckets)
                .collect(),
            count: r.count,
            sum_seconds: r.sum_seconds,
            failures: r.failures,
        })
        .collect();
    let now = crate::clock::unix_now();
    let signed = loaded
        .config
        .zones
        .iter()
        .filter_map(|z| {
            let signing = z.signing.as_ref()?;
            let cache = signing.summary(now);
            Some(crate::metrics::SignedZone {
                zone: z.origin.to_string(),
                cached_sets: cache.entries as u64,
                cached_bytes: cache.bytes as u64,
                made: cache.made,
                earliest_expiry: cache.earliest_expiry,
                transferred_expiry: cache.transferred_expiry,
                keys: z
                    .dnssec_keys
                    .iter()
                    .map(|k| (k.key_tag(), key_state(z, k, now)))
                    .collect(),
            })
        })
        .collect();
    crate::metrics::Scrape {
        signed,
        config_version: loaded.version,
        config_loaded_at: unix_seconds(loaded.loaded_at),
        members,
        probes,
        tcp_refused: node.responder.tcp_refused.load(Relaxed),
        rate_limited: (
            loaded.limiter.dropped.load(Relaxed),
            loaded.limiter.slipped.load(Relaxed),
        ),
    }
}

fn truthy(v: &str) -> bool {
    matches!(v, "true" | "1" | "yes")
}

/// Writes one mutating call to the audit log (and the log).
fn audit(node: &Node, peer: SocketAddr, call: &str, target: Option<&str>, outcome: Value) {
    let entry = json!({
        "at": unix_now(),
        "peer": peer.to_string(),
        "call": call,
        "target": target,
        "outcome": outcome,
    });
    tracing::info!(%peer, call, target, outcome = %entry["outcome"], "control call");
    node.store.audit(&entry);
}

fn healthz(node: &Node) -> Response<Full<Bytes>> {
    let loaded = node.config();
    let zones = loaded.config.zones.len();
    let probes_configured = loaded.config.probes.len();
    let probes_running = node
        .probes
        .lock()
        .map(|p| p.last.lock().map(|l| l.len()).unwrap_or(0))
        .unwrap_or(0);
    let ok = zones > 0;
    let body = json!({
        "ok": ok,
        "zones": zones,
        "probes": probes_configured,
        "probes_reported": probes_running,
        "config_version": loaded.version,
    });
    reply(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body,
    )
}

fn status(node: &Node) -> Value {
    let loaded = node.config();
    let cfg = &loaded.config;
    let snap = node.health.snapshot();
    let last = node
        .probes
        .lock()
        .map(|p| p.last.lock().map(|l| l.clone()).unwrap_or_default())
        .unwrap_or_default();
    let probe_of = |id: &MemberId| {
        cfg.probes
            .iter()
            .find(|(_, ms)| ms.contains(id))
            .map(|(spec, _)| spec.addr)
    };
    let expiries: std::collections::HashMap<MemberId, u64> =
        node.store.expiries().into_iter().collect();
    let shares = node.answer_shares();
    let mut flat = Vec::new();
    let pools: Vec<Value> = cfg
        .pools
        .iter()
        .map(|p| {
            let members: Vec<Value> = p
                .members
                .iter()
                .map(|m| {
                    let st = snap.get(&m.id);
                    let probe = probe_of(&m.id);
                    let last_probe = probe.and_then(|a| last.get(&a));
                    let member = json!({
                        "id": m.id,
                        "pool": p.name,
                        "site": m.site,
                        "target": match &m.target {
                            crate::balance::Target::Addr(a) => a.to_string(),
                            crate::balance::Target::Alias(n) => n.clone(),
                        },
                        "weight": m.weight,
                        "priority": m.priority,
                        "health": st.health,
                        "admin": st.admin,
                        "admin_expires_at": expiries.get(&m.id),
                        "usable": crate::balance::usable(st.admin, st.health),
                        "flaps": node.health.transitions(&m.id),
                        "factor": st.factor.share(),
                        "passive": st.passive,
                        "rtt_networks": node.health.measured_networks(&m.id),
                        "factor_changes": node.health.factor_changes(&m.id),
                        "load": node.health.last_report(&m.id),
                        "answer_share_last_minute": shares.get(&(p.name.clone(), m.id.0.clone())),
                        "probe": probe.map(|a| a.to_string()),
                        "last_probe": last_probe.map(|l| json!({
                            "up": l.up, "detail": l.detail, "latency_ms": l.latency_ms, "at": l.at,
                        })),
                    });
                    flat.push(member.clone());
                    member
                })
                .collect();
            json!({
                "name": p.name,
                "min_usable": p.safety.min_usable,
                "min_weight_percent": p.safety.min_weight_percent,
                "members": members,
            })
        })
        .collect();
    let names: Vec<Value> = cfg
        .bindings
        .iter()
        .map(|b| {
            json!({
                "name": b.name.to_string(),
                "zone": cfg.zones[b.zone].origin.to_string(),
                "policy": b.policy.name(),
                "pool": cfg.pools[b.pool].name,
                "ttl": b.ttl,
                "answers": b.answers,
                "when_all_down": match b.when_all_down {
                    crate::balance::WhenAllDown::FailOpen => "fail-open".to_string(),
                    crate::balance::WhenAllDown::Nothing => "nodata".to_string(),
                    crate::balance::WhenAllDown::Fallback(i) => format!("fallback:{}", cfg.pools[i].name),
                },
                "declared_at": b.declared_at(),
            })
        })
        .collect();
    let now = crate::clock::unix_now();
    let zones: Vec<Value> = cfg
        .zones
        .iter()
        .enumerate()
        .map(|(i, z)| {
            json!({
                "origin": z.origin.to_string(),
                "file": z.file.display().to_string(),
                "serial": z.serial(),
                "names": z.node_count(),
                "load_balanced": cfg.bindings.iter().filter(|b| b.zone == i).count(),
                "ecs": z.ecs,
                "transfer": z.transfer.as_ref().map(|t| json!({
                    "allow": t.allow.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                    "notify": t.notify.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                    "key": t.key.as_ref().map(|k| k.name.clone()),
                })),
                // Public facts only: never key material.
                "dnssec_keys": z.dnssec_keys.iter().map(|k| json!({
                    "tag": k.key_tag(),
                    "algorithm": k.algorithm.mnemonic(),
                    "sep": k.is_sep(),
                    "state": key_state(z, k, now),
                    "activate": k.times.activate,
                    "inactive": k.times.inactive,
                    "delete": k.times.delete,
                })).collect::<Vec<_>>(),
                "signatures": z.signing.as_ref().map(|s| {
                    let cache = s.summary(now);
                    json!({
                        "cached_sets": cache.entries,
                        "cached_bytes": cache.bytes,
                        "made": cache.made,
                        "earliest_expiry": cache.earliest_expiry,
                        "transferred_expiry": cache.transferred_expiry,
                    })
                }),
            })
        })
        .collect();
    let orphans: Vec<Value> = orphan_overrides(cfg, &node.health)
        .into_iter()
        .map(|(id, admin)| json!({ "id": id, "admin": admin }))
        .collect();
    let mut events = node.health.events();
    events.reverse();
    json!({
        "config_version": loaded.version,
        "config_loaded_at": unix_seconds(loaded.loaded_at),
        "started_at": unix_seconds(node.started),
        "identity": cfg.server.identity,
        "last_reload": *node.last_reload.lock().unwrap_or_else(|p| p.into_inner()),
        "restart_needed": *node.restart_needed.lock().unwrap_or_else(|p| p.into_inner()),
        "state_lost": node.state_lost,
        "zones": zones,
        "names": names,
        "pools": pools,
        "members": flat,
        "events": events,
        "orphan_overrides": orphans,
        "tcp_refused": node.responder.tcp_refused.load(std::sync::atomic::Ordering::Relaxed),
        "rate_limit": {
            "responses_per_second": loaded.limiter.settings().responses_per_second,
            "slip": loaded.limiter.settings().slip,
            "dropped": loaded.limiter.dropped.load(std::sync::atomic::Ordering::Relaxed),
            "slipped": loaded.limiter.slipped.load(std::sync::atomic::Ordering::Relaxed),
        },
        "unknown_health_means": "answered until the first probe result",
    })
}

fn explain(node: &Node, body: &[u8]) -> Response<Full<Bytes>> {
    let req: crate::explain::Request = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("explain request: {e}")),
    };
    match crate::explain::explain(&node.config(), &node.health.snapshot(), &req) {
        Ok(x) => reply(StatusCode::OK, json!(x)),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// Options of a member action, from the query string.
struct ActionOptions {
    force: bool,
    dry_run: bool,
    expires: Option<String>,
}

fn member_action(
    node: &Node,
    peer: SocketAddr,
    target: &str,
    action: &str,
    options: &ActionOptions,
) -> Response<Full<Bytes>> {
    let Some(admin) = Admin::from_action(action) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown action {action:?} (drain, undrain, force-up, force-down)"),
        );
    };
    let expires_in = match (&options.expires, admin) {
        (None, _) => None,
        (Some(_), Admin::Normal) => {
            return error(StatusCode::BAD_REQUEST, "undrain takes no expiry")
        }
        (Some(text), _) => match crate::config::parse_duration(text) {
            Ok(d) if d.as_secs() > 0 => Some(d.as_secs()),
            Ok(_) => return error(StatusCode::BAD_REQUEST, "expires must be at least 1s"),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("expires: {e}")),
        },
    };
    let loaded = node.config();
    let cfg = &loaded.config;
    let mut ids = cfg.resolve_members(target);
    if ids.is_empty() {
        // An override left over from an earlier config can still be cleared.
        let orphan = orphan_overrides(cfg, &node.health)
            .into_iter()
            .find(|(id, _)| id.0.eq_ignore_ascii_case(target));
        match (orphan, admin) {
            (Some((id, _)), Admin::Normal) => ids.push(id),
            _ => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no member {target:?}: give SITE/ADDRESS or POOL/SITE as listed by status"
                    ),
                )
            }
        }
    }
    let snap = node.health.snapshot();
    let impact = crate::balance::drain_impact(&cfg.pools, &snap, &ids, admin);
    let mut after = (*snap).clone();
    for id in &ids {
        let mut st = after.get(id);
        st.admin = admin;
        after.set(id.clone(), st);
    }
    let answers = answer_changes(&loaded, &snap, &after, &ids);
    // Refused: a pool below its safety rule in a family, or any name and family that would
    // stop answering from healthy members (fail open, fall back, or go all-down).
    let refusals: Vec<String> = impact
        .iter()
        .filter_map(|i| i.refused.clone())
        .chain(answers.iter().filter_map(AnswerChange::degradation))
        .collect();
    let call = format!("{action} {target}");
    if options.dry_run {
        return reply(
            StatusCode::OK,
            json!({
                "dry_run": true,
                "members": ids,
                "admin": admin,
                "would_be_refused": !refusals.is_empty() && !options.force,
                "refusals": refusals,
                "pools": impact,
                "answers": answers,
            }),
        );
    }
    if !refusals.is_empty() && !options.force {
        let reason = refusals.join("; ");
        audit(
            node,
            peer,
            &call,
            Some(target),
            json!({ "refused": reason }),
        );
        return reply(
            StatusCode::CONFLICT,
            json!({
                "error": format!("{reason}: add force=true (ctl --force) to do it anyway"),
                "status": 409,
                "pools": impact,
            }),
        );
    }
    let expires_at = expires_in.map(|s| unix_now() + s);
    for id in &ids {
        node.health.apply(Change::Admin(id.clone(), admin));
        node.store.set_expiry(id, expires_at);
    }
    audit(
        node,
        peer,
        &call,
        Some(target),
        json!({ "applied": admin, "members": ids, "forced": options.force && !refusals.is_empty(), "expires_at": expires_at }),
    );
    reply(
        StatusCode::OK,
        json!({
            "members": ids, "admin": admin, "expires_at": expires_at, "pools": impact,
            "answers": answers,
        }),
    )
}

/// How one load-balanced name's answer for one family would change, for a client no database
/// places.
#[derive(Debug, serde::Serialize)]
struct AnswerChange {
    name: String,
    /// `A` or `AAAA`.
    family: &'static str,
    before: Vec<String>,
    after: Vec<String>,
    reason_before: Reason,
    reason_after: Reason,
    changes: bool,
}

impl AnswerChange {
    /// Why the change is refused without force: the name would stop answering from healthy
    /// members (fail open, fall back), or from any (all-down). Moves the other way never are.
    fn degradation(&self) -> Option<String> {
        let rank = |r: Reason| match r {
            Reason::Healthy => 0,
            Reason::Fallback | Reason::FailOpen => 1,
            Reason::AllDown => 2,
        };
        (rank(self.reason_after) > rank(self.reason_before)).then(|| {
            format!(
                "{} {} would go from {} to {}",
                self.name,
                self.family,
                reason_text(self.reason_before),
                reason_text(self.reason_after)
            )
        })
    }
}

/// A selection's reason as the API spells it (`fail-open`, `all-down`, ...).
fn reason_text(reason: Reason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// How the answers of the load-balanced names that use `ids` would change, for a client no
/// database places (geo policies answer in their default order), for each family the name
/// answers.
fn answer_changes(
    loaded: &crate::dns::Loaded,
    before: &crate::health::HealthSnapshot,
    after: &crate::health::HealthSnapshot,
    ids: &[MemberId],
) -> Vec<AnswerChange> {
    use crate::balance::{ClientInfo, Family};
    use crate::dns::HealthView;
    let cfg = &loaded.config;
    let mut out = Vec::new();
    for (index, b) in cfg.bindings.iter().enumerate() {
        let Some(mark) = cfg.zones[b.zone].node(&b.name).and_then(|n| n.lb) else {
            continue;
        };
        let mut pools = vec![b.pool];
        if let crate::balance::WhenAllDown::Fallback(f) = b.when_all_down {
            pools.push(f);
        }
        let touched = pools
            .iter()
            .any(|&p| cfg.pools[p].members.iter().any(|m| ids.contains(&m.id)));
        if !touched {
            continue;
        }
        for (family, nowhere, label, answered) in [
            (Family::V4, "0.0.0.0/0", "A", mark.a),
            (Family::V6, "::/0", "AAAA", mark.aaaa),
        ] {
            if !answered {
                continue;
            }
            let answer = |snap: &crate::health::HealthSnapshot| {
                let mut client = ClientInfo::from_network(nowhere.parse().expect("literal"));
                let sel = crate::dns::select_for(
                    loaded,
                    HealthView::Fixed(snap),
                    index,
                    &mut client,
                    family,
                    true,
                );
                // Selections hold only members that serve the family.
                let targets: Vec<String> = sel
                    .members
                    .iter()
                    .map(|&(p, m)| match &cfg.pools[p].members[m].target {
                        crate::balance::Target::Addr(a) => a.to_string(),
                        crate::balance::Target::Alias(n) => n.clone(),
                    })
                    .collect();
                (targets, sel.reason)
            };
            let (was, was_reason) = answer(before);
            let (will, will_reason) = answer(after);
            if was.is_empty() && will.is_empty() {
                continue;
            }
            out.push(AnswerChange {
                name: b.name.to_string(),
                family: label,
                changes: was != will || was_reason != will_reason,
                before: was,
                after: will,
                reason_before: was_reason,
                reason_after: will_reason,
            });
        }
    }
    out
}
