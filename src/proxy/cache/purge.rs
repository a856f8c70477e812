//! Purges: by key, prefix or tag, through the control endpoint or the `PURGE` method.

use http::{Request, Response, StatusCode};

use super::{key_for, Cache};
use crate::proxy::body::ProxyBody;

/// What a purge drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// One key (`http://host/path?query`).
    Key(String),
    /// Every key that starts with this.
    Prefix(String),
    /// Every key whose response carried this tag.
    Tag(String),
    /// Every key.
    All,
}

impl Cache {
    /// Drops what `purge` names; returns how many keys went.
    pub fn purge(&self, purge: &Purge) -> usize {
        let keys: Vec<String> = match purge {
            Purge::Key(key) => vec![key.clone()],
            Purge::Prefix(prefix) => self.keys_starting(prefix),
            Purge::All => self.keys_starting(""),
            Purge::Tag(tag) => {
                let mut index = self.tags.lock().unwrap_or_else(|p| p.into_inner());
                index
                    .remove(tag)
                    .map_or_else(Vec::new, |k| k.into_iter().collect())
            }
        };
        keys.iter().filter(|k| self.remove(k)).count()
    }

    /// The keys, in memory or on disk, that start with `prefix`.
    fn keys_starting(&self, prefix: &str) -> Vec<String> {
        let mut keys: std::collections::BTreeSet<String> = self
            .entries
            .iter()
            .map(|(k, _)| k.as_ref().clone())
            .filter(|k| k.starts_with(prefix))
            .collect();
        if let Some(disk) = &self.disk {
            keys.extend(disk.keys().into_iter().filter(|k| k.starts_with(prefix)));
        }
        keys.into_iter().collect()
    }
}

/// Answers a `PURGE` on a caching route whose keys `spec` makes: the request's own key (the
/// key headers the route names taken from the request), or the tags it lists.
pub fn purge_request<B>(
    shared: &crate::proxy::Shared,
    running: &crate::proxy::Running,
    req: &Request<B>,
    (spec, tls, host): (&crate::config::CacheKey, bool, &str),
    client: std::net::IpAddr,
) -> Response<ProxyBody> {
    use crate::proxy::forward::own;
    if !running.site.purge_allow.iter().any(|n| n.contains(&client)) {
        return own(
            StatusCode::FORBIDDEN,
            "PURGE is not allowed from this address",
        );
    }
    let tags: Vec<String> = req
        .headers()
        .get_all(running.site.cache_tag_header.as_str())
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(str::split_whitespace)
        .map(str::to_string)
        .collect();
    let purged: usize = if tags.is_empty() {
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let key = key_for(spec, tls, host, target, req.headers());
        shared.cache.purge(&Purge::Key(key))
    } else {
        tags.into_iter()
            .map(|t| shared.cache.purge(&Purge::Tag(t)))
            .sum()
    };
    own(StatusCode::OK, &format!("purged {purged}"))
}
