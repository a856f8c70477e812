//! Meridian: an authoritative DNS server that answers load-balanced names with healthy
//! backends, chosen by policy, from file-based zones.
//!
//! # Layout
//! - [`config`]: file structs (unknown keys rejected) and validation into [`config::Config`];
//!   the same load path serves `check`, start-up and reload. `config::settings` holds the
//!   plain values the DNS side works with (TSIG keys, cookie secrets, rate limits).
//! - [`zone`]: static RFC 1035 zone data and the lookups an authoritative server needs
//!   (exact, wildcard, empty non-terminal, zone cut).
//! - [`dns`]: the query read once into a borrowed view (`dns::query`), the query-to-response
//!   function (a fast path for ordinary queries, the general path for the rest), the one OPT
//!   writer, EDNS Client Subnet, cookies, NSID, rate limiting, zone transfer out and NOTIFY,
//!   and the UDP/TCP transports.
//! - [`dnssec`]: zone keys in BIND's file format, their DNSKEY and DS records, RRSIGs, and
//!   online signing with a bounded signature cache; `dns::secure` puts the signatures and
//!   compact denial into answers.
//! - [`geo`]: `.mmdb` lookups, great-circle distance, the demo database builder.
//! - [`explain`]: why a name answered what it did, from the same code that answers it.
//! - [`hash`]: the fast hasher of the tables read on every query.
//! - [`bounded`]: a map bounded by entries and bytes, for the caches on the query path
//!   (signatures, encoded answers); depends on nothing.
//! - [`clock`]: wall-clock seconds since the epoch, as status, logs, the store and TSIG use
//!   them; depends on nothing.
//! - [`metrics`]: Prometheus metrics, every name defined there; per-thread counters the query
//!   path increments without hashing labels. It knows no other module: callers pass what they
//!   count.
//! - [`balance`]: the decision core: pools, members, selection policies (weighted, failover,
//!   all, geo-nearest, geo-map, subnet, latency), `when_all_down`, load shedding, cursors,
//!   the plan cache and drain safety; no DNS types, metrics or control endpoint, so the site
//!   proxy can reuse it.
//! - [`health`]: probers (HTTP, HTTPS, TCP, a site proxy's load report and round-trip
//!   times), the rise/fall tracker, the shedder that turns load reports into weight factors,
//!   passive health, the measured latency table, and the lock-free health table; no DNS
//!   types either.
//! - [`state`]: the sled store of last-known health and admin overrides; the only module that
//!   sees sled.
//! - [`admin`]: the loopback control endpoint (JSON) used by `meridian ctl`.
//! - [`render`]: the control endpoint's documents as `ctl` prints them for a person.
//! - [`node`]: a running node's config lifecycle (load with overrides, `check`, reload, the
//!   serial rule), shared by `server` and `admin`.
//! - [`server`]: start-up, reload on SIGHUP and file change, shutdown.
//! - [`proxy`]: the site proxy (`meridian proxy`): routes, the HTTP cache, balancing algorithms, sticky
//!   sessions and forwarding over pooled connections, deciding health through [`health`]
//!   and pools through [`balance`].
//! - [`tls`]: TLS server configs for the proxy: certificates by SNI (reloaded when their files
//!   change), ALPN, resumption, client certificates.
//! - `web`: small HTTP helpers both control endpoints share (percent-decoding).
//! - [`anycast`]: the helper that announces the node's prefixes through ExaBGP or BIRD only
//!   while the node answers as clients expect.

pub mod admin;
pub mod anycast;
pub mod balance;
pub mod bounded;
pub mod clock;
pub mod config;
pub mod dns;
pub mod dnssec;
pub mod explain;
pub mod geo;
pub mod hash;
pub mod health;
pub mod metrics;
pub mod node;
pub mod proxy;
pub mod render;
pub mod server;
pub mod state;
pub mod tls;
mod web;
pub mod zone;
