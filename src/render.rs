//! Text renderings of the control endpoint's JSON documents, as `meridian ctl` prints them
//! for a person: tables with times as ISO 8601 and ages, never epoch seconds. `--json` prints
//! the documents themselves. Pure functions of the JSON, so a test renders a document
//! without a server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// `2026-12-05T20:30:11Z (2m ago)` for Unix seconds `at`, seen at `now`.
pub fn when(at: u64, now: SystemTime) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(at);
    let stamp = humantime::format_rfc3339_seconds(t);
    match now.duration_since(t) {
        Ok(ago) => format!("{stamp} ({} ago)", age(ago)),
        Err(e) => format!("{stamp} (in {})", age(e.duration())),
    }
}

/// A duration the way a person reads it: `45s`, `12m`, `3h5m`, `2d4h`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// Lays out rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON array's items as text (nothing for anything else).
fn texts(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().map(text).collect()
}

/// A site proxy's `/status` document as a person reads it: its load, then each pool's
/// servers.
pub fn proxy_status(doc: &Value) -> String {
    let load = &doc["load"];
    let ms = |v: &Value| v.as_f64().map_or("-".to_string(), |m| format!("{m:.1} ms"));
    let mut out = format!(
        "site proxy {}: {} of {} servers usable, {} connections, {:.1} requests/s, p50 {}, p99 {}, {:.1}% errors\n",
        text(&doc["config"]),
        text(&load["healthy_servers"]),
        text(&load["servers"]),
        text(&load["active_connections"]),
        load["requests_per_second"].as_f64().unwrap_or(0.0),
        ms(&load["p50_ms"]),
        ms(&load["p99_ms"]),
        load["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
    );
    for pool in doc["pools"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\npool {} ({})\n",
            text(&pool["name"]),
            text(&pool["algorithm"])
        ));
        let rows: Vec<Vec<String>> = pool["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let mut state = text(&s["health"]);
                if s["admin"] != "normal" {
                    state = format!("{state}, {}", text(&s["admin"]));
                }
                if s["ejected"] == true {
                    state.push_str(", ejected");
                }
                vec![
                    text(&s["id"]),
                    text(&s["weight"]),
                    state,
                    if s["usable"] == true { "yes" } else { "no" }.to_string(),
                    text(&s["in_flight"]),
                    text(&s["requests"]),
                    text(&s["failures"]),
                    s["latency_ms"]
                        .as_f64()
                        .map_or("-".into(), |m| format!("{m:.1} ms")),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "SERVER",
                "WEIGHT",
                "STATE",
                "USABLE",
                "IN FLIGHT",
                "REQUESTS",
                "FAILURES",
                "LATENCY",
            ],
            &rows,
        ));
    }
    out
}

/// The `/status` document as a person reads it: the node, then zones, pools and members.
pub fn status(doc: &Value, now: SystemTime) -> String {
    let mut out = String::new();
    let at = |v: &Value| v.as_u64().map_or("-".to_string(), |s| when(s, now));
    out.push_str(&format!(
        "node {}: config version {}, loaded {}; started {}\n",
        doc["identity"].as_str().unwrap_or("(no identity)"),
        text(&doc["config_version"]),
        at(&doc["config_loaded_at"]),
        at(&doc["started_at"]),
    ));
    let reload = &doc["last_reload"];
    if !reload.is_null() {
        let outcome = match reload["result"].as_str() {
            Some("applied") => format!("applied (version {})", text(&reload["version"])),
            _ => format!(
                "REJECTED, the old config keeps serving: {}",
                text(&reload["error"])
            ),
        };
        out.push_str(&format!("last reload: {outcome}, {}\n", at(&reload["at"])));
    }
    let names = texts(&doc["restart_needed"]);
    if !names.is_empty() {
        out.push_str(&format!(
            "RESTART NEEDED: changed on reload, applied only at start: {}\n",
            names.join(", ")
        ));
    }
    if let Some(lost) = doc["state_lost"].as_str() {
        out.push_str(&format!("STATE LOST at start: {lost}\n"));
    }
    if let Some(list) = doc["orphan_overrides"].as_array().filter(|l| !l.is_empty()) {
        for o in list {
            out.push_str(&format!(
                "override kept for a member not in the config: {} {}\n",
                text(&o["id"]),
                text(&o["admin"])
            ));
        }
    }

    let zones: Vec<Vec<String>> = doc["zones"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|z| {
            // Each key as `TAG/ALGORITHM`, with `SEP` for a key-signing key.
            let keys: Vec<String> = z["dnssec_keys"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| {
                    let sep = if k["sep"] == true { " SEP" } else { "" };
                    let state = k["state"].as_str().map(|s| format!(" {s}"));
                    let state = state.unwrap_or_default();
                    format!("{}/{}{sep}{state}", text(&k["tag"]), text(&k["algorithm"]))
                })
                .collect();
            vec![
                text(&z["origin"]),
                text(&z["serial"]),
                text(&z["names"]),
                text(&z["load_balanced"]),
                if keys.is_empty() {
                    "-".to_string()
                } else {
                    keys.join(", ")
                },
                text(&z["file"]),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &[
            "ZONE",
            "SERIAL",
            "NAMES",
            "LOAD-BALANCED",
            "DNSSEC KEYS",
            "FILE",
        ],
        &zones,
    ));

    let mut pools = Vec::new();
    let mut members = Vec::new();
    for p in doc["pools"].as_array().into_iter().flatten() {
        let list = p["members"].as_array().cloned().unwrap_or_default();
        let usable = list.iter().filter(|m| m["usable"] == true).count();
        pools.push(vec![
            text(&p["name"]),
            format!("{usable}/{}", list.len()),
            text(&p["min_usable"]),
            format!("{}%", text(&p["min_weight_percent"])),
        ]);
        for m in &list {
            members.push(member_row(m, now));
        }
    }
    out.push('\n');
    out.push_str(&table(
        &["POOL", "USABLE", "MIN-USABLE", "MIN-WEIGHT"],
        &pools,
    ));
    out.push('\n');
    out.push_str(&table(
        &[
            "MEMBER",
            "POOL",
            "WEIGHT",
            "HEALTH",
            "OVERRIDE",
            "USABLE",
            "LAST PROBE",
            "LATENCY",
            "SHARE",
        ],
        &members,
    ));
    out
}

fn member_row(m: &Value, now: SystemTime) -> Vec<String> {
    let admin = text(&m["admin"]);
    let overridden = match (admin.as_str(), m["admin_expires_at"].as_u64()) {
        ("normal", _) => "-".to_string(),
        (a, Some(until)) => format!("{a} until {}", when(until, now)),
        (a, None) => a.to_string(),
    };
    let probe = &m["last_probe"];
    let (last, latency) = match probe["at"].as_u64() {
        None => ("never".to_string(), "-".to_string()),
        Some(at) => {
            let ago = now
                .duration_since(UNIX_EPOCH + Duration::from_secs(at))
                .unwrap_or_default();
            let last = if probe["up"] == true {
                format!("{} ago, up", age(ago))
            } else {
                let detail = probe["detail"].as_str().unwrap_or("");
                format!("{} ago, down: {}", age(ago), cause(detail))
            };
            let latency = probe["latency_ms"]
                .as_f64()
                .map_or("-".to_string(), |ms| format!("{ms:.1} ms"));
            (last, latency)
        }
    };
    let share = m["answer_share_last_minute"]
        .as_f64()
        .map_or("-".to_string(), |s| format!("{:.0}%", s * 100.0));
    let mut health = text(&m["health"]);
    if let Some(by) = m["passive"].as_str().filter(|&p| p != "clear") {
        health = format!("{health}, tripped by {by}");
    }
    if let Some(f) = m["factor"].as_f64().filter(|&f| f < 1.0) {
        health = format!("{health}, shed to {:.0}%", f * 100.0);
    }
    vec![
        text(&m["id"]),
        text(&m["pool"]),
        text(&m["weight"]),
        health,
        overridden,
        if m["usable"] == true { "yes" } else { "no" }.to_string(),
        last,
        latency,
        share,
    ]
}

/// The innermost cause of a probe failure (`tcp connect error: Connection refused (os error
/// 111)` out of an HTTP client's chain of contexts), at most 60 characters.
fn cause(detail: &str) -> String {
    let parts: Vec<&str> = detail.split(": ").collect();
    let tail = parts[parts.len().saturating_sub(2)..].join(": ");
    if tail.chars().count() > 60 {
        tail.chars().take(59).collect::<String>() + "…"
    } else {
        tail
    }
}

/// One line for a member action's reply: what was done (or would be, or was refused) and
/// which answers change.
pub fn action(action: &str, target: &str, doc: &Value, now: SystemTime) -> String {
    if let Some(error) = doc["error"].as_str() {
        return format!("{action} {target}: refused: {error}");
    }
    let members = texts(&doc["members"]);
    let changes: Vec<String> = doc["answers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["changes"] == true)
        .map(|a| {
            let list = |v: &Value| {
                let l = texts(v);
                if l.is_empty() {
                    "nothing".to_string()
                } else {
                    l.join(" ")
                }
            };
            format!(
                "{} {} {} -> {} ({} -> {})",
                text(&a["name"]),
                text(&a["family"]),
                list(&a["before"]),
                list(&a["after"]),
                text(&a["reason_before"]),
                text(&a["reason_after"])
            )
        })
        .collect();
    let answers = if changes.is_empty() {
        "no answer changes".to_string()
    } else {
        format!("answers: {}", changes.join("; "))
    };
    if doc["dry_run"] == true {
        let verdict = if doc["would_be_refused"] == true {
            let why = texts(&doc["refusals"]);
            format!("would be refused ({})", why.join("; "))
        } else {
            "would be applied".to_string()
        };
        return format!(
            "dry run: {action} {target} ({}) {verdict}; {answers}",
            members.join(", ")
        );
    }
    let until = doc["expires_at"]
        .as_u64()
        .map_or(String::new(), |at| format!(" until {}", when(at, now)));
    format!(
        "{action} {target}: applied to {}{until}; {answers}",
        members.join(", ")
    )
}

/// One line for a reload's reply.
pub fn reload(doc: &Value) -> String {
    match doc["result"].as_str() {
        Some("applied") => format!("reload: applied, config version {}", text(&doc["version"])),
        _ => format!(
            "reload: REJECTED, the running config keeps serving:\n{}",
            text(&doc["error"])
        ),
    }
}

/// The audit log, newest first, one row a call.
pub fn audit(doc: &Value, now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = doc
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let outcome = &e["outcome"];
            let what = if let Some(refused) = outcome["refused"].as_str() {
                format!("refused: {refused}")
            } else if let Some(result) = outcome["result"].as_str() {
                match outcome["error"].as_str() {
                    Some(error) => format!("{result}: {error}"),
                    None => result.to_string(),
                }
            } else if outcome["forced"] == true {
                format!("{} (forced)", text(&outcome["applied"]))
            } else {
                text(&outcome["applied"])
            };
            vec![
                e["at"].as_u64().map_or("-".to_string(), |at| when(at, now)),
                text(&e["peer"]),
                text(&e["call"]),
                what,
            ]
        })
        .collect();
    table(&["AT", "PEER", "CALL", "OUTCOME"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_are_iso_8601_with_ages() {
        let now = UNIX_EPOCH + Duration::from_secs(1_765_000_000);
        assert_eq!(
            when(1_765_000_000 - 125, now),
            "2025-12-06T05:44:35Z (2m ago)"
        );
        assert!(when(1_765_000_000 + 3700, now).ends_with("(in 1h1m)"));
    }

    #[test]
    fn status_renders_tables_without_epoch_seconds() {
        let now = UNIX_EPOCH + Duration::from_secs(1_765_000_000);
        let doc = json!({
            "identity": "n1", "config_version": 2, "config_loaded_at": 1_764_999_990u64,
            "started_at": 1_764_999_000u64,
            "last_reload": {"at": 1_764_999_990u64, "result": "rejected", "error": "x.zone:3: bad"},
            "restart_needed": ["server.listen"], "state_lost": null,
            "zones": [{"origin": "example.test.", "serial": 7, "names": 4, "load_balanced": 1, "file": "z",
                       "dnssec_keys": [{"tag": 4711, "algorithm": "ECDSAP256SHA256", "sep": true, "state": "active"}]}],
            "pools": [{"name": "web", "min_usable": 1, "min_weight_percent": 0, "members": [
                {"id": "fra/192.0.2.10", "pool": "web", "weight": 3, "health": "down",
                 "admin": "drained", "admin_expires_at": 1_765_000_600u64, "usable": false,
                 "factor": 0.4, "passive": "errors",
                 "last_probe": {"up": false, "detail": "connection refused", "latency_ms": null, "at": 1_764_999_998u64},
                 "answer_share_last_minute": 0.0},
                {"id": "iad/198.51.100.10", "pool": "web", "weight": 1, "health": "up",
                 "admin": "normal", "admin_expires_at": null, "usable": true,
                 "last_probe": {"up": true, "detail": "", "latency_ms": 1.25, "at": 1_764_999_999u64},
                 "answer_share_last_minute": 1.0}
            ]}],
        });
        let out = status(&doc, now);
        assert!(
            out.contains("REJECTED, the old config keeps serving: x.zone:3: bad"),
            "{out}"
        );
        assert!(out.contains("RESTART NEEDED"), "{out}");
        assert!(out.contains("web   1/2"), "{out}");
        assert!(
            out.contains("drained until 2025-12-06T05:56:40Z (in 10m)"),
            "{out}"
        );
        assert!(out.contains("2s ago, down: connection refused"), "{out}");
        assert!(out.contains("1s ago, up  "), "{out}");
        assert!(out.contains("1.2 ms"), "{out}");
        assert!(out.contains("4711/ECDSAP256SHA256 SEP active"), "{out}");
        assert!(
            out.contains("down, tripped by errors, shed to 40%"),
            "{out}"
        );
        assert!(!out.contains("1764999"), "epoch seconds in:\n{out}");
    }

    #[test]
    fn a_refused_drain_is_one_line() {
        let now = UNIX_EPOCH;
        let doc = json!({"error": "www.example.test. A would go from healthy to fail-open: add force=true", "status": 409});
        let line = action("drain", "iad/198.51.100.10", &doc, now);
        assert_eq!(line.lines().count(), 1);
        assert!(line.contains("refused: www.example.test. A"), "{line}");
    }
}
