//! The demo site's servers: small HTTP responders on loopback, started only when the site
//! config has a `[demo]` table, so `meridian proxy` shows balancing and stickiness with no
//! other program running. Each answers `served by ADDRESS` with the path it was asked, and
//! `/health` with 200.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Starts one responder on `addr`; the task serves until aborted.
pub async fn start(addr: SocketAddr) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok(tokio::spawn(async move {
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = hyper::service::service_fn(move |req: http::Request<_>| {
                let body = if req.uri().path() == "/health" {
                    "ok\n".to_string()
                } else {
                    format!(
                        "served by {bound} for {} {}\n",
                        req.method(),
                        req.uri().path()
                    )
                };
                async move {
                    let mut r = http::Response::new(Full::new(Bytes::from(body)));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    Ok::<_, Infallible>(r)
                }
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    }))
}
