//! The site proxy's config (`site.toml`) as the proxy uses it: listeners, routes, pools of
//! servers and their checks. The file is read in the same two stages as the DNS files (serde
//! structs with unknown keys rejected, then validation; see `site_file`) with errors that
//! name file, line and object.
//! Pools are the decision core's [`Pool`]s (a server is a member with a port), and checks are
//! the DNS side's `[check.*]` tables, probed by the same probers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::file::read;
use super::ConfigError;
use crate::balance::Pool;
use crate::health::{MemberId, ProbeSpec};

/// The demo site, compiled in so `meridian proxy` runs with no flags.
pub const DEMO_SITE: &str = include_str!("../../ops/site/demo.toml");

/// A validated site config.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    pub file: PathBuf,
    pub listeners: Vec<Listener>,
    /// In file order; the first that matches a request routes it.
    pub routes: Vec<Route>,
    pub pools: Vec<Pool>,
    /// Per pool (same index): how it balances and forwards.
    pub pool_settings: Vec<PoolSettings>,
    /// One probe per distinct check and server, with the servers it decides.
    pub probes: Vec<(ProbeSpec, Vec<MemberId>)>,
    /// The loopback control endpoint, if any.
    pub control: Option<SocketAddr>,
    /// The load report's own listener, for the DNS side's checks (read at start).
    pub report: Option<ReportListener>,
    /// How long reload and shutdown wait for requests in flight before cutting them.
    pub drain_timeout: Duration,
    /// A client must send a request's whole head within this time of starting it (or of
    /// its connection going idle), or the connection closes (slow-header attacks). Read at
    /// start only.
    pub header_timeout: Duration,
    /// A response that makes no progress towards a client that does not read for this long
    /// is cut (read at start).
    pub send_timeout: Duration,
    /// A request body must keep coming: no wait for its next bytes longer than
    /// `body_timeout`, and, with `body_min_rate` (bytes per second), no more waiting in all
    /// than `body_timeout` plus the time its bytes so far would take at that rate. Else 408.
    pub body_timeout: Duration,
    pub body_min_rate: Option<u64>,
    /// Concurrent streams an h2 client may open on one connection (read at start).
    pub h2_max_streams: u32,
    /// Client networks whose round-trip times are kept for latency steering (0: none are
    /// measured; read at start).
    pub rtt_networks: usize,
    /// Request heads with more header fields, or more bytes, get 431 (read at start).
    pub max_headers: usize,
    pub max_header_bytes: usize,
    /// Peers whose `X-Forwarded-For` and `Forwarded` headers are kept (and extended).
    pub trusted_proxies: Vec<IpNet>,
    /// The header that carries each request's ID (added when absent), logged with it.
    pub request_id_header: String,
    pub access_log: AccessLog,
    /// The access log's own file (reopened on SIGUSR1); the process log when absent.
    pub access_log_file: Option<PathBuf>,
    /// Response headers removed before the client sees them (lower case).
    pub hide_headers: Vec<String>,
    /// Threads that serve connections (`[proxy] workers`, default one per CPU); read at
    /// start only, since a running process keeps its threads.
    pub workers: usize,
    /// Built-in demo responders to start on these addresses (the demo site only).
    pub demo_responders: Vec<SocketAddr>,
    /// What one client network may open and send (`[limits]`).
    pub limits: ClientLimits,
    /// Bytes of stored responses the cache keeps in memory (`[proxy] cache_memory`); read
    /// at start only.
    pub cache_memory: u64,
    /// The response header whose values tag stored responses for purges (lower case; read
    /// at start only). It is removed before responses reach clients.
    pub cache_tag_header: String,
    /// Clients whose `PURGE` requests are obeyed.
    pub purge_allow: Vec<IpNet>,
    /// The cache's disk tier: its directory and its bound in bytes (`[proxy] cache_disk`,
    /// `cache_disk_size`); read at start only.
    pub cache_disk: Option<(PathBuf, u64)>,
}

/// Limits per client network, and in all (`[limits]`). A client network is the client's
/// address with its host bits cleared to `prefix_v4` or `prefix_v6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// Connections open at once per client network; one more is closed at accept.
    pub connections: Option<u32>,
    /// Requests per client network: `count` per `period`, with `burst` at once; more get
    /// 429 with `Retry-After`.
    pub rate: Option<RequestRate>,
    /// Client networks the rate limiter remembers; the least recent are forgotten first.
    pub max_clients: usize,
    /// Connections open at once in all (read at start only); more wait in the listen
    /// queue until one closes, as with HAProxy's `maxconn`.
    pub max_connections: Option<usize>,
}

impl Default for ClientLimits {
    fn default() -> ClientLimits {
        ClientLimits {
            prefix_v4: 32,
            prefix_v6: 64,
            connections: None,
            rate: None,
            max_clients: 100_000,
            max_connections: None,
        }
    }
}

/// A request rate: `count` requests per `period`, and up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRate {
    pub count: std::num::NonZeroU32,
    pub period: Duration,
    pub burst: std::num::NonZeroU32,
}

/// Where the load report (`GET /load`) is served for DNS nodes: anywhere, but off loopback
/// only over TLS and only to a caller with the token or a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportListener {
    pub addr: SocketAddr,
    /// Callers must send `Authorization: Bearer TOKEN`.
    pub token: Option<Vec<u8>>,
    pub tls: Option<TlsSettings>,
}

/// A listening address: HTTP (plain or TLS), or TCP forwarded as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub tls: Option<TlsSettings>,
    /// Which clients it serves (a reload applies a change).
    pub access: AccessRules,
    pub mode: ListenerMode,
    /// Each connection starts with a PROXY protocol header (v1 or v2) from a trusted proxy,
    /// naming the client; a connection from any other peer, or without one, is closed.
    pub proxy_protocol: bool,
}

/// What a listener does with a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerMode {
    /// Reads HTTP requests and routes each.
    Http,
    /// Forwards the connection's bytes to a pool's server, both ways (layer 4).
    Tcp(TcpForward),
}

/// A TCP listener's forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpForward {
    /// The pool connections go to (and, with server names, the one for names not listed).
    pub pool: usize,
    /// TLS passthrough: the ClientHello's server name picks the pool (lower case; a leading
    /// `*.` matches any subdomain). The TLS is not terminated.
    pub by_server_name: Vec<(String, usize)>,
    /// A connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// With server names: the ClientHello must have arrived within this time.
    pub hello_timeout: Duration,
}

impl TcpForward {
    /// The pool for a ClientHello naming `name` (or none).
    pub fn pool_for(&self, name: Option<&str>) -> usize {
        let Some(name) = name else { return self.pool };
        let name = name.to_ascii_lowercase();
        self.by_server_name
            .iter()
            .find(|(pattern, _)| match pattern.strip_prefix("*.") {
                Some(parent) => name
                    .strip_suffix(parent)
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                None => *pattern == name,
            })
            .map_or(self.pool, |(_, pool)| *pool)
    }
}

/// The PROXY protocol version a pool sends its servers first on each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text form (`PROXY TCP4 ...`).
    V1,
    /// The binary form.
    V2,
}

/// Allow and deny lists of networks: a client in a denied network is refused; when there
/// are allowed networks, a client outside all of them is refused too. Deny wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRules {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl AccessRules {
    pub fn permits(&self, client: std::net::IpAddr) -> bool {
        let client = match client {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, std::net::IpAddr::V4),
            v4 => v4,
        };
        !self.deny.iter().any(|n| n.contains(&client))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&client)))
    }

    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// TLS termination on a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// (certificate chain, private key) PEM files; the first is the default, the others are
    /// chosen by SNI from the names their certificates hold.
    pub certificates: Vec<(PathBuf, PathBuf)>,
    /// Clients must present a certificate signed by one of these (PEM).
    pub client_ca: Option<PathBuf>,
    /// Session resumption (tickets and session IDs); on unless the listener says
    /// `resumption = false`, which makes every connection a full handshake.
    pub resumption: bool,
}

/// One access log line per request, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    /// The combined log format of nginx and Apache.
    Combined,
    Json,
}

/// A route: every condition given must hold.
#[derive(Debug, Clone)]
pub struct Route {
    /// Lower case, without port; a leading `*.` matches any subdomain.
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    /// The path ends in one of these (e.g. `.jpg`).
    pub path_suffix: Vec<String>,
    /// A header (lower-case name) present, or equal to a value.
    pub header: Option<(String, Option<String>)>,
    /// Upper case.
    pub methods: Vec<String>,
    pub pool: usize,
    /// From sending the request to the end of the response headers.
    pub timeout: Duration,
    /// Fields set on the request sent upstream, and on the response, parsed when the config
    /// loads.
    pub set_request_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub set_response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// An HTML page sent instead of the body of any 5xx response (the servers' and the
    /// proxy's own), read when the config loads.
    pub error_page: Option<std::sync::Arc<Vec<u8>>>,
    /// Which clients the route serves (others get 403).
    pub access: AccessRules,
    /// Request bodies larger than this get 413 (the route's, else `[proxy] max_body`).
    pub max_body: Option<u64>,
    /// How the route caches responses, when it does (`cache`).
    pub cache: Option<RouteCache>,
    /// How the route compresses responses, when it does (`compress`).
    pub compress: Option<RouteCompress>,
    pub line: usize,
}

/// The default size of the cache's memory tier.
pub(super) const DEFAULT_CACHE_MEMORY: u64 = 64 << 20;

/// The default largest response body a route stores.
pub(super) const DEFAULT_CACHE_MAX_ENTRY: u64 = 8 << 20;

/// How long past its freshness a stored response may answer while no server does.
pub(super) const DEFAULT_STALE_IF_DOWN: Duration = Duration::from_secs(86_400);

/// A route's compression settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCompress {
    /// Bodies whose `Content-Length` is below this are sent as they are.
    pub min_size: u64,
}

/// A route's cache settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCache {
    /// Bodies larger than this stream through uncached.
    pub max_entry: u64,
    /// A stored response is not used longer than this after it was stored, whatever its
    /// freshness.
    pub ttl_max: Option<Duration>,
    /// Responses with `Set-Cookie` may be stored (off by default, as nginx and Varnish).
    pub store_set_cookie: bool,
    /// How long past its freshness a stored response may answer when no server answers
    /// (unless it says `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache`).
    pub stale_if_down: Duration,
    /// What the cache key is made of.
    pub key: CacheKey,
}

/// What a route's cache key is made of: by default scheme, host, path and the whole query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    pub scheme: bool,
    pub host: bool,
    pub query: KeyQuery,
    /// Request headers whose values are part of the key (lower case).
    pub headers: Vec<String>,
}

impl Default for CacheKey {
    fn default() -> Self {
        CacheKey {
            scheme: true,
            host: true,
            query: KeyQuery::All,
            headers: Vec::new(),
        }
    }
}

/// Which of the query's parameters a cache key keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyQuery {
    /// The query as sent.
    All,
    /// None: `/a?x=1` and `/a` share a key.
    None,
    /// These parameters only, in name order.
    Only(Vec<String>),
}

/// How a pool balances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    /// Smooth weighted round-robin (as nginx's).
    Weighted,
    /// Fewest requests in flight relative to weight.
    LeastConnections,
    /// Peak EWMA of response time, two random choices.
    LeastTime,
    /// Weighted random.
    Random,
    /// Rendezvous hash of the client address.
    IpHash,
    /// Rendezvous hash of a request property.
    Hash(HashOn),
}

impl Algorithm {
    /// The name the config gives it.
    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::Weighted => "weighted",
            Algorithm::LeastConnections => "least-connections",
            Algorithm::LeastTime => "least-time",
            Algorithm::Random => "random",
            Algorithm::IpHash => "ip-hash",
            Algorithm::Hash(_) => "hash",
        }
    }
}

/// The request property a hashing pool keys on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Header(String),
    Cookie(String),
    Path,
}

/// How one pool forwards.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub algorithm: Algorithm,
    /// Servers whose health is not known yet take traffic (no check, or `start = "up"`).
    pub start_up: bool,
    /// The `Host` sent upstream; the client's when absent.
    pub host: Option<String>,
    pub sticky: Option<Sticky>,
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept per server, and for how long.
    pub idle_per_server: usize,
    pub idle_timeout: Duration,
    /// Passive health: this many failures in a row (connection failures, timeouts, 5xx)
    /// eject a server (0: never).
    pub eject_after: u32,
    /// The first ejection's length; each further one in a row doubles it (up to 64 times).
    pub eject_for: Duration,
    /// Retries allowed as a share of requests (percent), besides a few per second always.
    pub retry_budget_percent: u32,
    /// An idempotent request's body up to this many bytes (by its `Content-Length`) is read
    /// whole before it goes upstream, so that it may go again to another server.
    pub retry_body_limit: u64,
    /// HTTPS to the servers, when set.
    pub tls: Option<UpstreamTls>,
    /// HTTP/1.1 or HTTP/2 to the servers.
    pub protocol: UpstreamProtocol,
    /// A PROXY protocol header sent first on each connection (TCP listeners' pools).
    pub send_proxy: Option<ProxyVersion>,
    /// Requests (or forwarded connections) in flight per server at most; with every usable
    /// server at it, a request waits up to `queue_timeout` for one to finish, then gets 503.
    pub max_in_flight: Option<u32>,
    pub queue_timeout: Duration,
}

/// The HTTP version a pool speaks to its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// Keep-alive connections, one request at a time each.
    Http1,
    /// One multiplexed connection per server: over TLS (`"h2"`, offered by ALPN) or in the
    /// clear by prior knowledge (`"h2c"`).
    Http2,
}

/// HTTPS to a pool's servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Verify the servers' certificates (against `ca_file`, else the system's trust store).
    /// Off only when the config says `verify = false`.
    pub verify: bool,
    pub ca_file: Option<PathBuf>,
    /// The name sent as SNI and verified; else the pool's `host`, else the server's address.
    pub server_name: Option<String>,
}

/// Session persistence.
#[derive(Debug, Clone)]
pub enum Sticky {
    /// A signed cookie naming the server.
    Cookie(StickyCookie),
    /// The client address picks the server (rendezvous hash), re-picked when it is down.
    SourceIp,
}

#[derive(Debug, Clone)]
pub struct StickyCookie {
    pub name: String,
    pub max_age: Option<Duration>,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<String>,
    /// The HMAC key; random per process when none is configured (cookies then last until a
    /// restart).
    pub key: Option<Vec<u8>>,
    /// A drained server keeps its sticky sessions this long.
    pub drain_grace: Duration,
}

/// Where a site config comes from.
pub enum SiteSource {
    File(PathBuf),
    /// The compiled-in demo, resolved against `base`.
    Demo {
        base: PathBuf,
    },
}

impl SiteSource {
    pub fn demo() -> SiteSource {
        SiteSource::Demo {
            base: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/ops/site")),
        }
    }
}

/// Whether `text` is a site config rather than a DNS server config (it has listeners or
/// routes), so `meridian check FILE` takes either.
pub fn looks_like_site(text: &str) -> bool {
    text.lines().map(str::trim_start).any(|l| {
        l.starts_with("[[listener]]") || l.starts_with("[[route]]") || l.starts_with("[pool.")
    })
}

/// Reads and validates a site config.
pub fn load_site(source: &SiteSource) -> Result<SiteConfig, ConfigError> {
    use super::site_file::parse_site;
    let (text, file, base) = match source {
        SiteSource::File(p) => (
            read(p)?,
            p.clone(),
            p.parent().map(Path::to_path_buf).unwrap_or_default(),
        ),
        SiteSource::Demo { base } => (DEMO_SITE.to_string(), base.join("demo.toml"), base.clone()),
    };
    parse_site(&text, &file, &base)
}
