//! Who fetches a key and who follows: the first miss for a key leads its fetch; the misses
//! that come while it runs wait on it, and stream its response as it arrives once it turns
//! out storable (or look again when the fetch ends otherwise).

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;

use super::{hit_status, stream, Cache, Entry};
use crate::proxy::body::ProxyBody;

/// The request fetching a key for every request that waits on it. Once its response turns
/// out storable it is published to them, to stream as it arrives; when it is dropped (the
/// response stored, or found unstorable, or the request failed) they look again.
pub(super) struct Leader {
    cache: Arc<Cache>,
    key: String,
    pub(super) publish: tokio::sync::watch::Sender<Option<Arc<Streaming>>>,
}

/// What requests waiting on a key's fetch watch.
pub(super) type Leading = tokio::sync::watch::Receiver<Option<Arc<Streaming>>>;

/// A response being stored, as the requests waiting for its key get it: its head as it will
/// be stored (the entry, with no body yet), and its body as it arrives.
pub(super) struct Streaming {
    pub(super) entry: Entry,
    pub(super) body: Arc<stream::Growing>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut fetching = self
            .cache
            .fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        fetching.remove(&self.key);
    }
}

impl Cache {
    /// Makes the caller the request fetching `key`, or, when another already is, gives what
    /// its followers wait on.
    pub(super) fn lead(self: &Arc<Self>, key: &str) -> Result<Leader, Leading> {
        let mut fetching = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(leading) = fetching.get(key) {
            return Err(leading.clone());
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        fetching.insert(key.to_string(), rx);
        Ok(Leader {
            cache: self.clone(),
            key: key.to_string(),
            publish: tx,
        })
    }

    /// Waits, at most `wait`, for the request fetching a key: its response, when it turns
    /// out storable and fits `req`, streams as it arrives; `None` when the fetch ended
    /// otherwise (or the wait did), and the caller looks again.
    pub(super) async fn follow<B>(
        &self,
        leading: &mut Leading,
        req: &Request<B>,
        wait: std::time::Duration,
    ) -> Option<Response<ProxyBody>> {
        let deadline = tokio::time::Instant::now() + wait;
        // A range is cut from the whole stored body: such a request waits for it.
        let ranged = req.headers().contains_key(header::RANGE);
        loop {
            match tokio::time::timeout_at(deadline, leading.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
            let published = leading.borrow_and_update().clone();
            let Some(streaming) = published.filter(|_| !ranged) else {
                continue;
            };
            let now = SystemTime::now();
            let entry = &streaming.entry;
            if !entry.meta.matches(req.headers()) || !entry.meta.fresh_for(req.headers(), now) {
                continue;
            }
            let status = hit_status(entry.meta.ttl(now), "; collapsed");
            let (code, headers) = self.head(entry, req.headers(), status, now);
            let body = match code {
                StatusCode::NOT_MODIFIED => ProxyBody::Stored(Full::new(Bytes::new())),
                _ => match streaming.body.join() {
                    Some(following) => ProxyBody::Following(following),
                    None => continue,
                },
            };
            let mut response = Response::new(body);
            *response.status_mut() = code;
            *response.headers_mut() = headers;
            return Some(response);
        }
    }
}
