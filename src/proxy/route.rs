//! Routing by request content: the first route whose every condition holds (host, path
//! prefix, path suffix, header, method) takes the request.
//!
//! Paths are matched as a server will read them ([`path_of`]): percent-escapes decoded, dot
//! segments resolved and repeated slashes merged, as nginx matches its locations. A route
//! that guards `/admin` is then not passed by `/%61dmin`, `//admin` or `/x/../admin`, which
//! the server behind would resolve to `/admin`. The target goes upstream as the client sent
//! it.

use crate::config::Route;

/// What routing reads of a request.
pub struct RequestFacts<'a> {
    /// Lower case, port removed.
    pub host: &'a str,
    pub path: &'a str,
    pub method: &'a http::Method,
    pub headers: &'a http::HeaderMap,
}

/// The index of the route that takes the request, if any.
pub fn find(routes: &[Route], req: &RequestFacts<'_>) -> Option<usize> {
    routes.iter().position(|r| matches(r, req))
}

fn matches(r: &Route, req: &RequestFacts<'_>) -> bool {
    if let Some(host) = &r.host {
        let ok = match host.strip_prefix("*.") {
            Some(parent) => req
                .host
                .strip_suffix(parent)
                .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
            None => req.host == host,
        };
        if !ok {
            return false;
        }
    }
    if let Some(prefix) = &r.path_prefix {
        if !req.path.starts_with(prefix.as_str()) {
            return false;
        }
    }
    if !r.path_suffix.is_empty() && !r.path_suffix.iter().any(|s| req.path.ends_with(s.as_str())) {
        return false;
    }
    if let Some((name, value)) = &r.header {
        let mut values = req.headers.get_all(name.as_str()).iter();
        let ok = match value {
            None => values.next().is_some(),
            Some(v) => values.any(|h| h.as_bytes() == v.as_bytes()),
        };
        if !ok {
            return false;
        }
    }
    r.methods.is_empty() || r.methods.iter().any(|m| m == req.method.as_str())
}

/// The path routes match for a request's path (see the module's doc). Most paths have no
/// escape, dot segment or double slash, and are matched as they are.
pub fn path_of(raw: &str) -> std::borrow::Cow<'_, str> {
    let b = raw.as_bytes();
    // Only an origin-form path has segments to resolve (not `*`).
    let plain = !b.starts_with(b"/")
        || (!b.contains(&b'%')
            && !b
                .windows(2)
                .any(|w| w[0] == b'/' && (w[1] == b'/' || w[1] == b'.')));
    if plain {
        return raw.into();
    }
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                decoded.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (c, _, _) => {
                decoded.push(c);
                i += 1;
            }
        }
    }
    // RFC 3986 section 5.2.4, with empty segments dropped: a ".." above the root stays there.
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut ends_in_slash = false;
    for segment in decoded.split(|c| *c == b'/').skip(1) {
        ends_in_slash = matches!(segment, b"" | b"." | b"..");
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut path = Vec::with_capacity(decoded.len() + 1);
    for s in &segments {
        path.push(b'/');
        path.extend_from_slice(s);
    }
    if ends_in_slash || segments.is_empty() {
        path.push(b'/');
    }
    String::from_utf8_lossy(&path).into_owned().into()
}

/// The host a request names: its URI authority (h2, or an absolute target), else its `Host`
/// header, lower case, without a port or a final dot.
pub fn host_of<B>(req: &http::Request<B>) -> std::borrow::Cow<'_, str> {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.host())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| match h.rsplit_once(':') {
                    // Keep IPv6 literals whole: "[::1]:8080" -> "[::1]".
                    Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
                    _ => h,
                })
        })
        .unwrap_or_default();
    // A fully qualified name's root dot names the same host, as nginx reads it: a route
    // for `admin.example.com` also takes `admin.example.com.`.
    let raw = raw.strip_suffix('.').unwrap_or(raw);
    // Lower-cased only when it is not already (a copy only then).
    match raw.bytes().any(|b| b.is_ascii_uppercase()) {
        true => raw.to_ascii_lowercase().into(),
        false => raw.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn route(f: impl FnOnce(&mut Route)) -> Route {
        let mut r = Route {
            host: None,
            path_prefix: None,
            path_suffix: Vec::new(),
            header: None,
            methods: Vec::new(),
            pool: 0,
            timeout: Duration::from_secs(1),
            set_request_headers: Vec::new(),
            set_response_headers: Vec::new(),
            error_page: None,
            access: Default::default(),
            max_body: None,
            cache: None,
            compress: None,
            line: 1,
        };
        f(&mut r);
        r
    }

    #[test]
    fn the_first_route_whose_conditions_all_hold_wins() {
        let routes = vec![
            route(|r| {
                r.host = Some("*.example.com".into());
                r.path_prefix = Some("/api/".into());
                r.methods = vec!["POST".into()];
            }),
            route(|r| r.path_suffix = vec![".jpg".into(), ".png".into()]),
            route(|r| r.header = Some(("x-beta".into(), Some("1".into())))),
            route(|r| r.header = Some(("x-any".into(), None))),
            route(|_| {}),
        ];
        let mut headers = http::HeaderMap::new();
        let post = http::Method::POST;
        let get = http::Method::GET;
        fn facts<'a>(
            host: &'a str,
            path: &'a str,
            method: &'a http::Method,
            headers: &'a http::HeaderMap,
        ) -> RequestFacts<'a> {
            RequestFacts {
                host,
                path,
                method,
                headers,
            }
        }
        assert_eq!(
            find(&routes, &facts("a.example.com", "/api/x", &post, &headers)),
            Some(0)
        );
        assert_eq!(
            find(&routes, &facts("example.com", "/api/x", &post, &headers)),
            Some(4)
        );
        assert_eq!(
            find(&routes, &facts("a.example.com", "/api/x", &get, &headers)),
            Some(4)
        );
        assert_eq!(
            find(&routes, &facts("h", "/img/a.png", &get, &headers)),
            Some(1)
        );
        headers.insert("x-beta", "1".parse().unwrap());
        assert_eq!(find(&routes, &facts("h", "/", &get, &headers)), Some(2));
        headers.insert("x-beta", "2".parse().unwrap());
        headers.insert("x-any", "".parse().unwrap());
        assert_eq!(find(&routes, &facts("h", "/", &get, &headers)), Some(3));
    }

    #[test]
    fn paths_are_matched_as_a_server_resolves_them() {
        for (raw, path) in [
            ("/admin/x", "/admin/x"),
            ("/", "/"),
            ("//admin", "/admin"),
            ("/./admin", "/admin"),
            ("/x/../admin", "/admin"),
            ("/x/..%2Fadmin", "/admin"),
            ("/x/%2e%2E/admin", "/admin"),
            ("/%61dmin/", "/admin/"),
            ("/admin/.", "/admin/"),
            ("/admin/x/..", "/admin/"),
            ("/../../admin", "/admin"),
            ("/a%2", "/a%2"),
            ("/a%zz", "/a%zz"),
            ("/caf%C3%A9", "/café"),
            ("/..", "/"),
            ("/file.txt", "/file.txt"),
            ("*", "*"),
        ] {
            assert_eq!(path_of(raw), path, "{raw}");
        }
        assert!(matches!(
            path_of("/img/a.png"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn hosts_drop_their_port_and_case() {
        let req = http::Request::builder()
            .uri("/x")
            .header("host", "WWW.Example.com:8443")
            .body(())
            .unwrap();
        assert_eq!(host_of(&req), "www.example.com");
        let req = http::Request::builder()
            .uri("/x")
            .header("host", "Admin.Example.com.:8443")
            .body(())
            .unwrap();
        assert_eq!(host_of(&req), "admin.example.com");
        let req = http::Request::builder()
            .uri("https://[::1]:8443/x")
            .body(())
            .unwrap();
        assert_eq!(host_of(&req), "[::1]");
    }
}
