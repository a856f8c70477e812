//! The control endpoint: a small JSON API over HTTP/1.1, loopback by default.
//!
//! | call | what it does |
//! |---|---|
//! | `GET /` | index of the calls below |
//! | `GET /healthz` | the node's own health: zones loaded, probes running (200 or 503) |
//! | `GET /status` | names, pools, members with health, overrides, last probe results |
//! | `POST /members/{TARGET}/{ACTION}` | ACTION: `drain`, `undrain`, `force-up`, `force-down`; TARGET: `SITE/ADDRESS` or `POOL/SITE` (URL-encoded) |
//! | `POST /reload` | reload the config files; a rejected config keeps the old one |
//! | `POST /explain` | JSON `{"name", "qtype", "client", "ecs", "assume": []}`: the decision chain |
//!
//! Routing is one `match` on (method, path segments): new calls are one arm each.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::health::{Admin, Change, MemberId};
use crate::server::{orphan_overrides, Node, ReloadOutcome};

/// Serves the control API on `listener` until the task is aborted.
pub async fn run(listener: tokio::net::TcpListener, node: Arc<Node>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, node.clone()));
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
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

fn error(status: StatusCode, reason: impl Into<String>) -> Response<Full<Bytes>> {
    reply(status, json!({ "error": reason.into() }))
}

async fn handle(
    req: Request<Incoming>,
    node: Arc<Node>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
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
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    Ok(match (&method, segs.as_slice()) {
        (&Method::GET, []) => reply(
            StatusCode::OK,
            json!({
                "service": "meridian",
                "calls": ["GET /healthz", "GET /status", "POST /members/{TARGET}/{drain|undrain|force-up|force-down}", "POST /reload", "POST /explain"],
            }),
        ),
        (&Method::GET, ["healthz"]) => healthz(&node),
        (&Method::GET, ["status"]) => reply(StatusCode::OK, status(&node)),
        (&Method::POST, ["explain"]) => explain(&node, &body),
        (&Method::POST, ["reload"]) => match node.reload().await {
            ok @ ReloadOutcome::Applied { .. } => reply(StatusCode::OK, json!(ok)),
            bad @ ReloadOutcome::Rejected { .. } => {
                reply(StatusCode::UNPROCESSABLE_ENTITY, json!(bad))
            }
        },
        (&Method::POST, ["members", target @ .., action]) if !target.is_empty() => {
            member_action(&node, &target.join("/"), action)
        }
        (_, ["healthz" | "status" | "reload" | "explain"]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such call: {method} {path}"),
        ),
    })
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
                    json!({
                        "id": m.id,
                        "site": m.site,
                        "target": match &m.target {
                            crate::policy::Target::Addr(a) => a.to_string(),
                            crate::policy::Target::Alias(n) => n.clone(),
                        },
                        "weight": m.weight,
                        "priority": m.priority,
                        "health": st.health,
                        "admin": st.admin,
                        "usable": crate::policy::usable(st.admin, st.health),
                        "probe": probe.map(|a| a.to_string()),
                        "last_probe": probe.and_then(|a| last.get(&a)).map(|l| json!({"up": l.up, "detail": l.detail})),
                    })
                })
                .collect();
            json!({ "name": p.name, "members": members })
        })
        .collect();
    let names: Vec<Value> = cfg
        .bindings
        .iter()
        .map(|b| {
            json!({
                "name": b.name.to_string(),
                "policy": format!("{:?}", b.policy).to_lowercase(),
                "pool": cfg.pools[b.pool].name,
                "ttl": b.ttl,
                "answers": b.answers,
                "when_all_down": match b.when_all_down {
                    crate::policy::WhenAllDown::FailOpen => "fail-open".to_string(),
                    crate::policy::WhenAllDown::NoData => "nodata".to_string(),
                    crate::policy::WhenAllDown::Fallback(i) => format!("fallback:{}", cfg.pools[i].name),
                },
                "declared_at": b.declared_at(),
            })
        })
        .collect();
    let orphans: Vec<Value> = orphan_overrides(cfg, &node.health)
        .into_iter()
        .map(|(id, admin)| json!({ "id": id, "admin": admin }))
        .collect();
    json!({
        "config_version": loaded.version,
        "zones": cfg.zones.iter().map(|z| z.origin.to_string()).collect::<Vec<_>>(),
        "names": names,
        "pools": pools,
        "orphan_overrides": orphans,
        "tcp_refused": node.responder.tcp_refused.load(std::sync::atomic::Ordering::Relaxed),
        "rate_limit": {
            "responses_per_second": loaded.limiter.settings().responses_per_second,
            "slip": loaded.limiter.settings().slip,
            "dropped_since_load": loaded.limiter.dropped.load(std::sync::atomic::Ordering::Relaxed),
            "slipped_since_load": loaded.limiter.slipped.load(std::sync::atomic::Ordering::Relaxed),
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

fn member_action(node: &Node, target: &str, action: &str) -> Response<Full<Bytes>> {
    let admin = match action {
        "drain" => Admin::Drained,
        "undrain" => Admin::Normal,
        "force-up" => Admin::ForcedUp,
        "force-down" => Admin::ForcedDown,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown action {other:?} (drain, undrain, force-up, force-down)"),
            )
        }
    };
    let mut ids = node.config().config.resolve_members(target);
    if ids.is_empty() {
        // An override left over from an earlier config can still be cleared.
        let orphan = orphan_overrides(&node.config().config, &node.health)
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
    for id in &ids {
        node.health.apply(Change::Admin(id.clone(), admin));
        tracing::info!(member = %id, ?admin, "override set");
    }
    reply(StatusCode::OK, json!({ "members": ids, "admin": admin }))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
