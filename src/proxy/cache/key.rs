//! Cache keys: scheme, host, the request target and any request headers a route names.

use http::HeaderMap;

/// The key of a request: scheme, host and target, as a route keys them (`spec`; the
/// default keeps all three whole). Parts left out read `-`; key headers follow the target,
/// one `\nname: value` each.
pub fn key(tls: bool, host: &str, target: &str) -> String {
    key_for(
        &crate::config::CacheKey::default(),
        tls,
        host,
        target,
        &HeaderMap::new(),
    )
}

/// [`key`] as route settings `spec` make it, with the request's `headers`.
pub fn key_for(
    spec: &crate::config::CacheKey,
    tls: bool,
    host: &str,
    target: &str,
    headers: &HeaderMap,
) -> String {
    use crate::config::KeyQuery;
    let scheme = match (spec.scheme, tls) {
        (false, _) => "-",
        (true, true) => "https",
        (true, false) => "http",
    };
    let host = if spec.host { host } else { "-" };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut out = String::with_capacity(scheme.len() + 3 + host.len() + target.len() + 16);
    out.push_str(scheme);
    out.push_str("://");
    out.push_str(host);
    out.push_str(path);
    match (&spec.query, query) {
        (KeyQuery::All, Some(q)) => {
            out.push('?');
            out.push_str(q);
        }
        (KeyQuery::Only(names), Some(q)) => {
            let mut kept: Vec<&str> = q
                .split('&')
                .filter(|pair| {
                    let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
                    names.iter().any(|k| k == name)
                })
                .collect();
            kept.sort();
            if !kept.is_empty() {
                out.push('?');
                out.push_str(&kept.join("&"));
            }
        }
        _ => {}
    }
    for name in &spec.headers {
        out.push('\n');
        out.push_str(name);
        out.push_str(": ");
        for (i, v) in headers.get_all(name.as_str()).iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
    }
    out
}

/// `scheme://host` and the path of a key.
pub(super) fn split_key(key: &str) -> (&str, &str) {
    let after_scheme = key.find("://").map_or(0, |i| i + 3);
    match key[after_scheme..].find('/') {
        Some(i) => key.split_at(after_scheme + i),
        None => (key, ""),
    }
}
