//! Background revalidation for `stale-while-revalidate` (RFC 5861 section 3): the client got
//! the stale response already; this sends the request again on its own, with the stored
//! response's validators, and hands the answer to the cache (a `304` refreshes the stored
//! response, anything storable replaces it). Nobody waits on it and nothing is retried.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method};
use http_body_util::BodyExt;

use super::body::{Cut, Pace};
use super::cache::Pending;
use super::connections::Outbound;
use super::forward::{respond, route_headers, upstream_body, upstream_uri, Outgoing};
use super::headers::strip_hop_by_hop;
use super::{Running, Shared};

/// Starts revalidating what `pending` holds, for route `route` and request target `target`.
pub(super) fn spawn(
    shared: &Arc<Shared>,
    running: &Arc<Running>,
    route: usize,
    pending: Pending,
    target: String,
) {
    let (shared, running) = (shared.clone(), running.clone());
    tokio::spawn(async move {
        if let Err(why) = revalidate(&shared, &running, route, pending, &target).await {
            tracing::debug!(target = %target, why, "background revalidation failed");
        }
    });
}

async fn revalidate(
    shared: &Arc<Shared>,
    running: &Arc<Running>,
    ri: usize,
    pending: Pending,
    target: &str,
) -> Result<(), &'static str> {
    let r = &running.site.routes[ri];
    let pi = r.pool;
    let (pool, settings, state) = (
        &running.site.pools[pi],
        &running.site.pool_settings[pi],
        &running.pools[pi],
    );
    let health = shared.health.snapshot();
    let client = std::net::IpAddr::from([127, 0, 0, 1]);
    let server = state
        .choose(pool, settings, &health, client, None, &[])
        .ok_or("no server available")?;
    let addr = super::upstream::address(&pool.members[server]).ok_or("server has no address")?;
    let mut headers = pending.request_headers().clone();
    strip_hop_by_hop(&mut headers);
    route_headers(&mut headers, settings, r);
    if r.compress.is_some() {
        headers.remove(header::ACCEPT_ENCODING);
    }
    pending.prepare(&mut headers);
    let target = http::uri::PathAndQuery::try_from(target).map_err(|_| "bad target")?;
    let uri = upstream_uri(settings, &target, headers.get(header::HOST), addr)
        .ok_or("bad request target")?;
    let accept = pending
        .request_headers()
        .get(header::ACCEPT_ENCODING)
        .cloned();
    let limits = (
        None,
        Pace::new(running.site.body_timeout, running.site.body_min_rate),
        Arc::new(Cut::default()),
    );
    let (up, _) = upstream_body(Outgoing::Held(Bytes::new()), limits);
    let head = Outbound {
        method: &Method::GET,
        uri: &uri,
        headers: &headers,
        interim: None,
    };
    let in_flight = state.start(server);
    let conns = &running.connections[pi];
    let exchange = async {
        let mut lease = conns
            .checkout(server, addr, false)
            .await
            .map_err(|_| "connect")?;
        let resp = lease.send(head, up).await.map_err(|_| "send")?;
        Ok::<_, &'static str>((resp, lease))
    };
    let (resp, lease) = tokio::time::timeout(r.timeout, exchange)
        .await
        .map_err(|_| "timed out")??;
    let mut resp = respond(resp, in_flight, (lease, conns.clone()), running, ri);
    if let Some(c) = &r.compress {
        super::compress::apply(c, &Method::GET, accept.as_ref(), &mut resp);
    }
    let resp = shared.cache.complete(pending, resp);
    // Reading the body to its end is what stores it.
    resp.into_body().collect().await.map_err(|_| "body")?;
    Ok(())
}
