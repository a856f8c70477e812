//! The DNS side: one synchronous function that turns query bytes into response bytes
//! ([`answer_with`], reached through [`Responder::answer`]), and the transports that call it.
//!
//! Query path: bytes -> header checks (QR=1 dropped, malformed -> FORMERR) -> EDNS (BADVERS,
//! payload size, ECS, cookie, NSID) -> CHAOS identity names -> zone by longest suffix (none:
//! REFUSED) -> `resolve`: [`crate::zone::Zone::find`] -> static RRset, CNAME
//! chain, referral, NXDOMAIN/NODATA with the RFC 2308 SOA, or a load-balanced binding decided
//! by [`crate::balance::decide()`] over the health snapshot -> additional data -> ECS scope ->
//! encode, shedding additional data and then truncating for UDP.
//!
//! The same function serves UDP, TCP, `explain` (with hypothetical health and a [`Trace`])
//! and the in-band explanation, so every path gives the same answer. [`Responder::answer_into`]
//! tries the fast path ([`fast`]) first and applies UDP rate limiting ([`rrl`]) to whichever
//! answered. Zone transfers ([`xfr`]) are the one multi-message exchange: TCP hands them to
//! [`Responder::transfer`] before the one-answer path.

pub mod cookie;
pub mod ecs;
pub mod fast;
mod resolve;
pub mod rrl;
mod transport;
pub mod tsig;
pub mod xfr;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption, NSIDPayload};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use ipnet::IpNet;

use crate::balance::{self, ClientInfo, Selection};
use crate::config::Config;
use crate::health::{HealthSnapshot, HealthStore};

pub(crate) use resolve::{request, select_for, target_addresses};
use resolve::{Ctx, LbAnswer};
pub use transport::DnsServer;

/// A config as served: the validated config plus per-name round-robin cursors.
pub struct Loaded {
    pub config: Config,
    /// One round-robin cursor per binding; advanced once per answered query for that name.
    cursors: balance::Cursors,
    pub loaded_at: SystemTime,
    /// Counts successful loads since start.
    pub version: u64,
    /// Unique in the process (versions repeat across servers in one process, as in tests).
    pub(crate) id: u64,
    /// Every static answer as bytes, for the fast path.
    fast: Option<fast::FastIndex>,
    /// UDP response rate limiting; kept across reloads that leave its settings alone.
    pub limiter: Arc<rrl::Limiter>,
    /// Metric slots of this config's zones, names and members.
    pub(crate) slots: crate::metrics::Slots,
    /// Answers the in-band CHAOS TXT explanation; `None` refuses it.
    pub explainer: Option<Explainer>,
}

/// Explains a load-balanced name for the in-band CHAOS TXT answer: the lines `meridian
/// explain` prints for (name, type, client address, ECS prefix). The explanation runs this
/// module's answer, so it lives above DNS and the node hands it in.
pub type Explainer = fn(
    &Loaded,
    &HealthSnapshot,
    &Name,
    RecordType,
    IpAddr,
    Option<IpNet>,
) -> Result<Vec<String>, String>;

static LOADED_IDS: AtomicU64 = AtomicU64::new(1);

impl Loaded {
    /// A config loaded to replace `previous`: rate-limit accounts carry over when their
    /// settings did not change, and the limiter's counts always do.
    pub fn replacing(config: Config, version: u64, previous: &Loaded) -> Self {
        let mut loaded = Loaded::new(config, version);
        loaded.explainer = previous.explainer;
        loaded.limiter = if *previous.limiter.settings() == loaded.config.server.rate_limit {
            previous.limiter.clone()
        } else {
            Arc::new(rrl::Limiter::continuing(
                loaded.config.server.rate_limit.clone(),
                &previous.limiter,
            ))
        };
        loaded
    }

    pub fn new(config: Config, version: u64) -> Self {
        let limiter = Arc::new(rrl::Limiter::new(config.server.rate_limit.clone()));
        let cursors = balance::Cursors::new(config.bindings.len());
        let mut loaded = Loaded {
            config,
            cursors,
            loaded_at: SystemTime::now(),
            version,
            id: LOADED_IDS.fetch_add(1, Ordering::Relaxed),
            fast: None,
            limiter,
            slots: crate::metrics::Slots::default(),
            explainer: None,
        };
        loaded.slots = crate::metrics::Slots::new(&metric_labels(&loaded.config));
        loaded.fast = fast::FastIndex::build(&loaded);
        loaded
    }

    /// This config, answering in-band explanations with `explainer`.
    pub fn with_explainer(mut self, explainer: Explainer) -> Self {
        self.explainer = Some(explainer);
        self
    }
}

/// How the query arrived; decides the size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Where health comes from for one answer.
#[derive(Clone, Copy)]
pub enum HealthView<'a> {
    /// The live table (read without locking when a load-balanced name is asked).
    Live(&'a HealthStore),
    /// A fixed snapshot: `explain` with hypothetical health.
    Fixed(&'a HealthSnapshot),
}

/// What `explain` wants to know about how an answer was reached. Filling it does not change
/// the answer; asking with one does not advance round-robin cursors.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    /// The client as the policy saw it (network, and location when the policy needed it).
    pub client: Option<ClientInfo>,
    /// Whether the client network came from an ECS option.
    pub used_ecs: bool,
    /// The load-balanced name that answered, if any.
    pub binding: Option<usize>,
    pub selection: Option<Selection>,
}

/// Answers queries from the current config and health. Shared by every transport.
pub struct Responder {
    /// Swapped whole on reload; a query in flight keeps the `Arc` it loaded.
    pub current: ArcSwap<Loaded>,
    pub health: Arc<HealthStore>,
    /// TCP connections refused over the connection limits, since start.
    pub tcp_refused: AtomicU64,
}

const MAX_CNAME_HOPS: usize = 8;

impl Responder {
    pub fn new(loaded: Loaded, health: Arc<HealthStore>) -> Self {
        Responder {
            current: ArcSwap::from_pointee(loaded),
            health,
            tcp_refused: AtomicU64::new(0),
        }
    }

    /// Answers a zone transfer request (TCP only): the messages to send, or `None` when the
    /// query is not one.
    pub fn transfer(&self, query: &[u8], peer: SocketAddr) -> Option<Vec<Vec<u8>>> {
        let loaded = self.current.load();
        xfr::answer(&loaded, HealthView::Live(&self.health), query, peer)
    }

    /// Answers one query. `None` means send nothing (responses, runt packets).
    pub fn answer(&self, query: &[u8], src: SocketAddr, transport: Transport) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.answer_into(query, src, transport, &mut out)
            .then_some(out)
    }

    /// Answers one query into `out` (reused between queries); `false` means send nothing.
    /// Ordinary queries take the fast path; the general path answers everything else.
    pub fn answer_into(
        &self,
        query: &[u8],
        src: SocketAddr,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> bool {
        let loaded = self.current.load();
        let health = HealthView::Live(&self.health);
        let mut seen = crate::metrics::Seen::default();
        if !fast::answer_noting(&loaded, health, query, src, transport, out, &mut seen) {
            seen = crate::metrics::Seen::default();
            // The fast path takes no signed query: TSIG is handled here only.
            let signed = match query.get(10..12) {
                Some([0, 0]) | None => None,
                Some(_) => tsig::find(query).ok().flatten(),
            };
            let answered = match signed {
                Some(found) => answer_signed(&loaded, health, query, src, transport, &found),
                None => answer_with(&loaded, health, query, src, transport, None),
            };
            match answered {
                Some(bytes) => {
                    out.clear();
                    out.extend_from_slice(&bytes);
                }
                None => return false,
            }
        }
        if query.len() >= 12 && out.len() >= 4 {
            let tcp = transport == Transport::Tcp;
            crate::metrics::query(&loaded.slots, asked(query, seen), out[3], tcp);
        }
        if transport == Transport::Tcp || !loaded.limiter.applies_to(src.ip()) {
            return true;
        }
        let now = cookie::now();
        let verdict = loaded.limiter.charge(src.ip(), rrl::response_key(out), now);
        if verdict == rrl::Verdict::Send {
            return true;
        }
        // A valid server cookie proves the source address: never limited.
        let proven = match (
            ecs::find_raw(query, cookie::CODE),
            &loaded.config.server.cookie_secrets,
        ) {
            (Ok(Some(data)), Some(secrets)) => secrets.validates(data, src.ip(), now),
            _ => false,
        };
        match verdict {
            _ if proven => true,
            rrl::Verdict::Slip => {
                rrl::slip(out);
                true
            }
            _ => false,
        }
    }
}

// The counters hold series for as many names as the config lets an operator ask for.
const _: () = assert!(crate::metrics::MAX_NAMES >= crate::config::MAX_METRICS_NAMES);

/// What a config's answers are counted under: its zones, its load-balanced names (by name
/// where `server.metrics_names` asks for it) and policies, and its pools' members.
fn metric_labels(cfg: &Config) -> crate::metrics::Labels {
    use crate::metrics::POLICIES;
    crate::metrics::Labels {
        zones: cfg
            .zones
            .iter()
            .map(|z| {
                let text = z.origin.to_ascii().to_ascii_lowercase();
                let wire = crate::zone::text_to_wire(&text);
                (text, wire)
            })
            .collect(),
        names: cfg
            .bindings
            .iter()
            .map(|b| {
                let text = b.name.to_ascii().to_ascii_lowercase();
                cfg.server.metrics_names.contains(&text).then_some(text)
            })
            .collect(),
        policies: cfg
            .bindings
            .iter()
            .map(|b| {
                POLICIES
                    .iter()
                    .position(|p| *p == b.policy.name())
                    .unwrap_or(0)
            })
            .collect(),
        members: cfg
            .pools
            .iter()
            .map(|p| {
                p.members
                    .iter()
                    .map(|m| (p.name.clone(), m.id.0.clone()))
                    .collect()
            })
            .collect(),
    }
}

/// A load-balanced answer's reason as the counters label it (an index in
/// [`crate::metrics::REASONS`]): a forced member counts as `forced`.
pub(crate) fn reason_label(reason: balance::Reason, forced: bool) -> usize {
    use balance::Reason;
    match reason {
        _ if forced => 4,
        Reason::Healthy => 0,
        Reason::FailOpen => 1,
        Reason::Fallback => 2,
        Reason::AllDown => 3,
    }
}

/// The question of `query` as the counters take it: as the fast path placed it, or read from
/// the packet (its name as it stands there, a compression pointer included).
fn asked(query: &[u8], seen: crate::metrics::Seen) -> crate::metrics::Asked<'_> {
    use crate::metrics::Asked;
    if let Some((zone, qtype)) = seen.placed() {
        return Asked::Placed { zone, qtype };
    }
    let Some(end) = ecs::skip_name(query, 12) else {
        return Asked::Unreadable;
    };
    match query.get(12..end) {
        Some(name) => Asked::Named {
            name,
            qtype: query
                .get(end..end + 2)
                .map_or(0, |t| u16::from_be_bytes([t[0], t[1]])),
        },
        None => Asked::Unreadable,
    }
}

/// Answers a TSIG-signed query (RFC 8945 section 5.3). The signature is checked first: a query
/// that fails gets NOTAUTH with the TSIG error and is not answered. A UDP reply that would not
/// fit the client's size once signed goes out truncated (TC, question only), still signed, so
/// the client retries over TCP knowing the answer came from the key holder.
fn answer_signed(
    loaded: &Loaded,
    health: HealthView<'_>,
    query: &[u8],
    src: SocketAddr,
    transport: Transport,
    found: &tsig::Found,
) -> Option<Vec<u8>> {
    let now = crate::clock::unix_now();
    let (error, signer) = match tsig::verify(query, found, &loaded.config.keys, now) {
        Ok((_, mut signer)) => {
            let mut out = answer_with(loaded, health, query, src, transport, None)?;
            if transport == Transport::Udp {
                let cap = Message::from_vec(query).map_or(512, |request| {
                    let advertised = request.edns.as_ref().map(Edns::max_payload);
                    reply_cap(transport, advertised, loaded.config.server.edns_udp_size)
                });
                if out.len() + signer.record_len() > cap {
                    out = truncated(&out)?;
                }
            }
            signer.sign(&mut out, None);
            return Some(out);
        }
        Err(failed) => failed,
    };
    let mut m = Message::response(u16::from_be_bytes([query[0], query[1]]), OpCode::Query);
    m.metadata.message_type = MessageType::Response;
    m.metadata.response_code = ResponseCode::NotAuth;
    if let Ok(request) = Message::from_vec(query) {
        m.metadata.op_code = request.op_code;
        m.queries = request.queries;
    }
    let mut out = m.to_vec().ok()?;
    tsig::seal_error(&mut out, found, error, signer, now);
    Some(out)
}

/// The largest reply a client takes: over UDP 512 bytes without EDNS, else the size it
/// advertises capped at ours (never below 512); over TCP a whole message. The fast path and
/// the general one both size their answers here.
pub(crate) fn reply_cap(transport: Transport, advertised: Option<u16>, ours: u16) -> usize {
    match (transport, advertised) {
        (Transport::Tcp, _) => u16::MAX as usize,
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some(size)) => size.clamp(512, ours.max(512)) as usize,
    }
}

/// `reply` emptied to its header, question and OPT, with TC set.
fn truncated(reply: &[u8]) -> Option<Vec<u8>> {
    let mut m = Message::from_vec(reply).ok()?;
    m.answers.clear();
    m.authorities.clear();
    m.additionals.clear();
    m.metadata.truncation = true;
    m.to_vec().ok()
}

/// The one function that answers a query.
pub fn answer_with(
    loaded: &Loaded,
    health: HealthView<'_>,
    query: &[u8],
    src: SocketAddr,
    transport: Transport,
    trace: Option<&mut Trace>,
) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let request = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => return Some(header_only(query, ResponseCode::FormErr)),
    };
    let ours = loaded.config.server.edns_udp_size;
    let mut resp = Message::response(request.id, request.op_code);
    // RD is copied; CD is not (NSD and Knot clear it in authoritative answers too).
    resp.metadata.recursion_desired = request.recursion_desired;
    // The question is echoed only when there is exactly one (anything else is FORMERR or
    // NOTIMP, and echoing a dozen questions would make the error larger than the query).
    if request.queries.len() == 1 {
        resp.queries = request.queries.clone();
    }
    if let Some(req_edns) = &request.edns {
        let mut e = Edns::new();
        e.set_max_payload(ours);
        e.set_version(0);
        e.set_dnssec_ok(req_edns.flags().dnssec_ok);
        resp.edns = Some(e);
    }
    let cap = reply_cap(
        transport,
        request.edns.as_ref().map(Edns::max_payload),
        ours,
    );

    if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        resp.metadata.response_code = ResponseCode::BADVERS;
        return encode(&mut resp, cap);
    }
    let ecs = match ecs::find(query) {
        ecs::Found::Malformed => {
            resp.metadata.response_code = ResponseCode::FormErr;
            return encode(&mut resp, cap);
        }
        ecs::Found::None => None,
        ecs::Found::Subnet(e) => Some(e),
    };
    // DNS cookies: a malformed option is FORMERR; a good one gets a fresh server cookie.
    let cookie = match ecs::find_raw(query, cookie::CODE) {
        Ok(None) => None,
        Ok(Some(data)) if cookie::well_formed(data) => Some(data),
        _ => {
            resp.metadata.response_code = ResponseCode::FormErr;
            return encode(&mut resp, cap);
        }
    };
    if let (Some(data), Some(secrets), Some(edns)) = (
        cookie,
        loaded.config.server.cookie_secrets.as_deref(),
        resp.edns.as_mut(),
    ) {
        let reply = secrets.reply(data, src.ip(), cookie::now());
        edns.options_mut()
            .insert(EdnsOption::Unknown(cookie::CODE, reply.to_vec()));
    }
    // NSID (RFC 5001): the node's identity when the query asks for it.
    let identity = loaded.config.server.identity.as_deref();
    if let (Some(req_edns), Some(id), Some(edns)) = (&request.edns, identity, resp.edns.as_mut()) {
        if req_edns.option(EdnsCode::NSID).is_some() {
            if let Ok(payload) = NSIDPayload::new(id.as_bytes()) {
                edns.options_mut().insert(EdnsOption::NSID(payload));
            }
        }
    }
    match request.op_code {
        OpCode::Query => {}
        // NOTIFY is for secondaries; this server is a primary only. Refused with AA set, as
        // NSD answers it.
        OpCode::Notify => {
            resp.metadata.response_code = ResponseCode::Refused;
            resp.metadata.authoritative = true;
            return encode(&mut resp, cap);
        }
        _ => {
            resp.metadata.response_code = ResponseCode::NotImp;
            return encode(&mut resp, cap);
        }
    }
    // A cookie-only query (no question) learns a server cookie (RFC 7873 section 5.4).
    if request.queries.is_empty() && cookie.is_some() && request.answers.is_empty() {
        return encode(&mut resp, cap);
    }
    if request.queries.len() != 1 || !request.answers.is_empty() || !request.authorities.is_empty()
    {
        resp.metadata.response_code = ResponseCode::FormErr;
        return encode(&mut resp, cap);
    }
    let q = &request.queries[0];
    let qname = crate::zone::fqdn_lower(&q.name);
    if q.query_class == DNSClass::CH && is_identity_name(&qname) {
        // The node's identity, as NSD and Knot answer it: TXT only, not authoritative (there
        // is no CH zone), and refused when no identity is configured.
        match (identity, q.query_type) {
            (Some(id), RecordType::TXT) => {
                let mut r =
                    Record::from_rdata(qname, 0, RData::TXT(TXT::new(vec![id.to_string()])));
                r.dns_class = DNSClass::CH;
                resp.answers.push(r);
            }
            _ => resp.metadata.response_code = ResponseCode::Refused,
        }
        return encode(&mut resp, cap);
    }
    let cfg = &loaded.config;
    let zone_index = cfg
        .zones
        .iter()
        .enumerate()
        .filter(|(_, z)| z.origin.zone_of(&qname))
        .max_by_key(|(_, z)| z.origin.num_labels())
        .map(|(i, _)| i);
    let Some(zone_index) = zone_index else {
        resp.metadata.response_code = ResponseCode::Refused;
        extended_error(&mut resp, EDE_NOT_AUTHORITATIVE);
        return encode(&mut resp, cap);
    };
    let zone = &cfg.zones[zone_index];

    // The client: the ECS prefix when the zone honours ECS and the prefix is not empty.
    let zone_ecs = cfg.zones[zone_index].ecs;
    let (network, used_ecs) = match &ecs {
        Some(e) if zone_ecs && e.source > 0 => (e.network(), true),
        _ => (IpNet::from(src.ip()), false),
    };
    let mut ctx = Ctx {
        loaded,
        health,
        zone,
        client: ClientInfo::from_network(network),
        scope: None,
        required_glue: 0,
        used_ecs,
        peek: trace.is_some(),
        trace,
    };
    if let Some(t) = ctx.trace.as_deref_mut() {
        t.used_ecs = used_ecs;
    }

    match (q.query_class, q.query_type) {
        (DNSClass::CH, RecordType::TXT) => ctx.explain_in_band(&qname, src.ip(), &mut resp),
        // Transfers run over TCP (RFC 5936 section 4.2); over UDP, AXFR is not implemented
        // and IXFR refused, as NSD answers both.
        (_, RecordType::AXFR) if transport == Transport::Udp => {
            resp.metadata.response_code = ResponseCode::NotImp;
        }
        (_, RecordType::IXFR) if transport == Transport::Udp => {
            resp.metadata.response_code = ResponseCode::Refused;
            extended_error(&mut resp, EDE_PROHIBITED);
        }
        (DNSClass::IN, _) => {
            resp.metadata.authoritative = true;
            ctx.resolve(qname, q.query_type, &mut resp);
        }
        // QCLASS * (RFC 1035 section 3.2.5): the IN data, never authoritative (RFC 6895
        // section 3.2).
        (DNSClass::ANY, _) => ctx.resolve(qname, q.query_type, &mut resp),
        _ => resp.metadata.response_code = ResponseCode::Refused,
    }

    if resp.metadata.response_code == ResponseCode::NoError {
        ctx.additional_data(&mut resp);
    }
    // ECS in the reply (RFC 7871): echo family, source and address; scope 0 unless the answer
    // depended on the client, then the decision's network, never longer than the source.
    if let (Some(e), true) = (&ecs, zone_ecs) {
        let scope = match ctx.scope {
            Some(valid_for) if used_ecs => valid_for.prefix_len().min(e.source),
            _ => 0,
        };
        if !ctx.peek {
            crate::metrics::ecs(scope);
        }
        if let Some(edns) = resp.edns.as_mut() {
            edns.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(
                    e.addr, e.source, scope,
                )));
        }
    }
    encode_keeping(&mut resp, cap, ctx.required_glue)
}

/// `id.server.` and `hostname.bind.`: the CHAOS names that ask a server who it is.
fn is_identity_name(name: &Name) -> bool {
    let text = name.to_ascii();
    text.eq_ignore_ascii_case("id.server.") || text.eq_ignore_ascii_case("hostname.bind.")
}

/// Extended DNS Error codes (RFC 8914) this server gives.
const EDE: u16 = 15;
const EDE_PROHIBITED: u16 = 18;
const EDE_NOT_AUTHORITATIVE: u16 = 20;

/// Adds an Extended DNS Error option, when the query had EDNS.
fn extended_error(resp: &mut Message, code: u16) {
    if let Some(edns) = resp.edns.as_mut() {
        edns.options_mut()
            .insert(EdnsOption::Unknown(EDE, code.to_be_bytes().to_vec()));
    }
}

/// Encodes a response; a UDP answer over `cap` goes out empty with TC set.
fn encode(resp: &mut Message, cap: usize) -> Option<Vec<u8>> {
    encode_keeping(resp, cap, 0)
}

/// Encodes a response within `cap`: additional data past the first `required` records is
/// dropped first, a whole RRset at a time from the end, without setting TC (RFC 2181 section
/// 9); if the answer still does not fit it goes out empty with TC set.
fn encode_keeping(resp: &mut Message, cap: usize, required: usize) -> Option<Vec<u8>> {
    resp.metadata.message_type = MessageType::Response;
    let mut bytes = resp.to_vec().ok()?;
    while bytes.len() > cap && resp.additionals.len() > required {
        let last = resp
            .additionals
            .last()
            .map(|r| (r.name.clone(), r.record_type()));
        while resp.additionals.len() > required
            && resp
                .additionals
                .last()
                .map(|r| (r.name.clone(), r.record_type()))
                == last
        {
            resp.additionals.pop();
        }
        bytes = resp.to_vec().ok()?;
    }
    if bytes.len() <= cap {
        return Some(bytes);
    }
    resp.answers.clear();
    resp.authorities.clear();
    resp.additionals.clear();
    resp.metadata.truncation = true;
    let bytes = resp.to_vec().ok()?;
    if bytes.len() <= cap {
        return Some(bytes);
    }
    // Still too large (a very long question with a large OPT): header and OPT only.
    resp.queries.clear();
    resp.to_vec().ok()
}

/// A bare header answer for packets too broken to parse: ID, opcode and RD copied.
fn header_only(query: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let mut out = vec![0u8; 12];
    out[0] = query[0];
    out[1] = query[1];
    out[2] = 0x80 | (query[2] & 0x79); // QR, opcode, RD
    out[3] = rcode.low();
    out
}

/// The ECS option of a reply, if any: (source prefix, scope prefix).
pub fn reply_scope(m: &Message) -> Option<(u8, u8)> {
    m.edns
        .as_ref()
        .and_then(|e| match e.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(s)) => Some((s.source_prefix(), s.scope_prefix())),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Asked, Seen};

    #[test]
    fn counted_questions_never_read_past_a_broken_name() {
        // Found by fuzzing: a pointer where the name starts, in a 13-byte packet.
        let packet = [18, 52, 1, 0, 0, 253, 47, 255, 255, 127, 255, 255, 255];
        assert_eq!(asked(&packet, Seen::default()), Asked::Unreadable);
        let mut q = vec![0u8; 12];
        q.extend([3, b'w', b'w', b'w', 0, 0, 1, 0, 1]);
        assert_eq!(
            asked(&q, Seen::default()),
            Asked::Named {
                name: &[3, b'w', b'w', b'w', 0],
                qtype: 1
            }
        );
        assert_eq!(
            asked(&q, Seen::new(2, 28)),
            Asked::Placed { zone: 2, qtype: 28 }
        );
    }
}
