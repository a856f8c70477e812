//! Test harness: the real `meridian` binary on port 0 ([`server`]), a DNS client over UDP and
//! TCP built on hickory-proto ([`dns`]), HTTP backends and a control-endpoint client
//! ([`http`]), and waiting on conditions with a deadline.
#![allow(dead_code, unused_imports, unreachable_pub)]

pub mod dns;
pub mod http;
pub mod server;

pub use dns::*;
pub use http::*;
pub use server::*;

use std::time::{Duration, Instant};

/// Waits `d`: the pace of a slow client or server under test (a trickle, a slow reader),
/// never a stand-in for waiting on a condition (that is [`wait_until`]).
pub fn pace(d: Duration) {
    std::thread::sleep(d);
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
