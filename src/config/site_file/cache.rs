//! A route's `cache` and `compress` tables, turned into its cache and compression settings.

use serde::Deserialize;

use super::duration;
use crate::config::file::DurationValue;
use crate::config::site::*;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum CompressFile {
    On(bool),
    Settings(CompressSettingsFile),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CompressSettingsFile {
    min_size: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum CacheFile {
    On(bool),
    Settings(CacheSettingsFile),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CacheSettingsFile {
    max_entry: Option<u64>,
    ttl_max: Option<DurationValue>,
    store_set_cookie: Option<bool>,
    stale_if_down: Option<DurationValue>,
    key: Option<CacheKeyFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CacheKeyFile {
    scheme: Option<bool>,
    host: Option<bool>,
    /// `"all"`, `"none"`, or a list of parameter names.
    query: Option<toml::Value>,
    headers: Option<Vec<String>>,
}

/// A route's cache settings: none, the defaults (`cache = true`), or its table's.
pub(super) fn route_cache(file: Option<&CacheFile>) -> Result<Option<RouteCache>, String> {
    let c = match file {
        None | Some(CacheFile::On(false)) => return Ok(None),
        Some(CacheFile::On(true)) => None,
        Some(CacheFile::Settings(c)) => Some(c),
    };
    Ok(Some(RouteCache {
        max_entry: c
            .and_then(|c| c.max_entry)
            .unwrap_or(DEFAULT_CACHE_MAX_ENTRY),
        ttl_max: c
            .and_then(|c| c.ttl_max.as_ref())
            .map(DurationValue::get)
            .transpose()
            .map_err(|m| format!("cache.ttl_max: {m}"))?,
        store_set_cookie: c.and_then(|c| c.store_set_cookie).unwrap_or(false),
        stale_if_down: match c {
            Some(c) => duration(&c.stale_if_down, DEFAULT_STALE_IF_DOWN)
                .map_err(|m| format!("cache.stale_if_down: {m}"))?,
            None => DEFAULT_STALE_IF_DOWN,
        },
        key: cache_key(c.and_then(|c| c.key.as_ref())).map_err(|m| format!("cache.key: {m}"))?,
    }))
}

/// A route's compression settings: none, the defaults (`compress = true`), or its table's.
pub(super) fn route_compress(file: Option<&CompressFile>) -> Option<RouteCompress> {
    match file? {
        CompressFile::On(false) => None,
        CompressFile::On(true) => Some(RouteCompress { min_size: 1024 }),
        CompressFile::Settings(c) => Some(RouteCompress {
            min_size: c.min_size.unwrap_or(1024),
        }),
    }
}

/// A route's cache key as the file describes it.
fn cache_key(file: Option<&CacheKeyFile>) -> Result<CacheKey, String> {
    let Some(f) = file else {
        return Ok(CacheKey::default());
    };
    let query = match &f.query {
        None => KeyQuery::All,
        Some(toml::Value::String(s)) if s == "all" => KeyQuery::All,
        Some(toml::Value::String(s)) if s == "none" => KeyQuery::None,
        Some(toml::Value::Array(items)) => {
            let mut names = items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<String>>>()
                .ok_or("query: a list of parameter names")?;
            names.sort();
            KeyQuery::Only(names)
        }
        Some(other) => return Err(format!("query: {other} is not \"all\", \"none\" or a list")),
    };
    let headers = f
        .headers
        .iter()
        .flatten()
        .map(|h| {
            let h = h.to_ascii_lowercase();
            http::HeaderName::from_bytes(h.as_bytes())
                .map(|_| h.clone())
                .map_err(|_| format!("headers: {h:?} is not a header name"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CacheKey {
        scheme: f.scheme.unwrap_or(true),
        host: f.host.unwrap_or(true),
        query,
        headers,
    })
}
