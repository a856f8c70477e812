//! The DNS side: one synchronous function that turns query bytes into response bytes
//! ([`answer_with`], reached through [`Responder::answer`]), and the transports that call it.
//!
//! Query path: bytes -> [`query::Query::read`] (one walk: header, question, EDNS with ECS,
//! cookie and NSID, TSIG; a response is dropped, broken framing is FORMERR) -> the fast path
//! ([`fast`]) or the general one: BADVERS, bad options, opcodes -> CHAOS identity names ->
//! zone by longest suffix (none: REFUSED) -> `resolve`: [`crate::zone::Zone::find`] -> static
//! RRset, CNAME chain, referral, NXDOMAIN/NODATA with the RFC 2308 SOA, or a load-balanced
//! name decided by `resolve::decide_lb` over the health snapshot -> additional data -> encode,
//! shedding additional data and then truncating for UDP -> the OPT record (`opt`), written
//! by one writer for both paths. A DO query to a signed zone has its signatures and compact
//! denial added (`secure`) before it is encoded. An answer that holds for every client is
//! then kept for the fast path: in the index's slot for a name's static type ([`fast`]), as
//! the zone's negative SOA (`negative`), or in the store of answers asked twice (`cache`).
//!
//! The same function serves UDP, TCP, `explain` (with hypothetical health and a [`Trace`])
//! and the in-band explanation, so every path gives the same answer. [`Responder::answer_into`]
//! reads the query once, tries the fast path first and applies UDP rate limiting ([`rrl`]) to
//! whichever answered. Zone transfers ([`xfr`]) are the one multi-message exchange: TCP hands
//! them to [`Responder::transfer`] before the one-answer path.

mod cache;
pub mod cookie;
pub mod ecs;
pub mod fast;
mod negative;
mod opt;
pub mod query;
mod resolve;
pub mod rrl;
mod secure;
mod transport;
pub mod tsig;
pub mod xfr;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use ipnet::IpNet;

use crate::balance::{self, ClientInfo, Selection};
use crate::config::{Config, ServedZone};
use crate::health::{HealthSnapshot, HealthStore};

use opt::OptReply;
use query::{NameBuf, Query, Read};
pub(crate) use resolve::{addresses, decide_lb, select_for};
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
    /// Answers the general path built that hold for every client, for the fast path.
    answers: cache::AnswerCache,
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
    pub fn replacing(mut config: Config, version: u64, previous: &Loaded) -> Self {
        // A zone whose keys did not change keeps the signatures made so far.
        for zone in &mut config.zones {
            let before = previous
                .config
                .zones
                .iter()
                .find(|z| z.origin == zone.origin)
                .and_then(|z| z.signing.as_deref());
            if let (Some(signing), Some(before)) = (zone.signing.as_mut(), before) {
                if let Some(signing) = Arc::get_mut(signing) {
                    signing.adopt_cache(before);
                }
            }
        }
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
            answers: cache::AnswerCache::default(),
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
    /// The query is read once; ordinary queries take the fast path, the general path
    /// answers everything else.
    pub fn answer_into(
        &self,
        packet: &[u8],
        src: SocketAddr,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> bool {
        let loaded = self.current.load();
        let health = HealthView::Live(&self.health);
        let mut name = NameBuf::default();
        let q = match Query::read(packet, &mut name) {
            Read::Ignore => return false,
            Read::Malformed => {
                out.clear();
                out.extend_from_slice(&header_only(packet, ResponseCode::FormErr));
                None
            }
            Read::Query(q) => Some(q),
        };
        let mut seen = crate::metrics::Seen::default();
        if let Some(q) = &q {
            if !fast::answer_noting(&loaded, health, q, src, transport, out, &mut seen) {
                seen = crate::metrics::Seen::default();
                let answered = match q.signed {
                    // The fast path takes no signed query: TSIG is handled here only.
                    true => answer_signed(&loaded, health, q, src, transport),
                    false => answer_query(&loaded, health, q, src, transport, None, 0),
                };
                match answered {
                    Some(bytes) => {
                        out.clear();
                        out.extend_from_slice(&bytes);
                    }
                    None => return false,
                }
            }
        }
        let tcp = transport == Transport::Tcp;
        crate::metrics::query(&loaded.slots, asked(q.as_ref(), seen), out[3], tcp);
        if tcp || !loaded.limiter.applies_to(src.ip()) {
            return true;
        }
        let now = cookie::now();
        let verdict = loaded.limiter.charge(src.ip(), rrl::response_key(out), now);
        if verdict == rrl::Verdict::Send {
            return true;
        }
        // A valid server cookie proves the source address: never limited.
        let secrets = loaded.config.server.cookie_secrets.as_deref();
        let proven = q.is_some_and(|q| q.proves(secrets, src.ip(), now));
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

/// The question of a query as the counters take it: as the fast path placed it, or its name
/// and type as read.
fn asked<'q>(q: Option<&'q Query<'_>>, seen: crate::metrics::Seen) -> crate::metrics::Asked<'q> {
    use crate::metrics::Asked;
    if let Some((zone, qtype)) = seen.placed() {
        return Asked::Placed { zone, qtype };
    }
    match q.and_then(|q| q.question.as_ref()) {
        Some(question) => Asked::Named {
            name: question.name(),
            qtype: question.qtype,
        },
        None => Asked::Unreadable,
    }
}

/// Answers a TSIG-signed query (RFC 8945 section 5.3). The signature is checked first: a query
/// that fails gets NOTAUTH with the TSIG error and is not answered. The answer is fitted to
/// the client's size with room for the signature (shedding additional data, then truncating),
/// and signed.
fn answer_signed(
    loaded: &Loaded,
    health: HealthView<'_>,
    q: &Query<'_>,
    src: SocketAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    let Some(found) = tsig::find(q.packet).ok().flatten() else {
        // A TSIG record that cannot be read: answered as if unsigned.
        return answer_query(loaded, health, q, src, transport, None, 0);
    };
    let now = crate::clock::unix_now();
    let (error, signer) = match tsig::verify(q.packet, &found, &loaded.config.keys, now) {
        Ok((_, mut signer)) => {
            let reserve = signer.record_len();
            let mut out = answer_query(loaded, health, q, src, transport, None, reserve)?;
            signer.sign(&mut out, None);
            return Some(out);
        }
        Err(failed) => failed,
    };
    let mut m = Message::response(u16::from_be_bytes(q.id), OpCode::from_u8(q.opcode()));
    m.metadata.message_type = MessageType::Response;
    m.metadata.response_code = ResponseCode::NotAuth;
    m.queries = echoed_question(q);
    let mut out = m.to_vec().ok()?;
    tsig::seal_error(&mut out, &found, error, signer, now);
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

/// The question a reply echoes: the query's one question with its name as sent (so 0x20
/// mixed case survives); none when it has several or none (anything else is FORMERR or
/// NOTIMP, and echoing a dozen questions would make the error larger than the query).
fn echoed_question(q: &Query<'_>) -> Vec<hickory_proto::op::Query> {
    use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
    let Some(question) = q.question.as_ref().filter(|_| q.counts[0] == 1) else {
        return Vec::new();
    };
    let mut decoder = BinDecoder::new(q.packet);
    if decoder.read_slice(12).is_err() {
        return Vec::new();
    }
    let Ok(name) = Name::read(&mut decoder) else {
        return Vec::new();
    };
    let mut echoed = hickory_proto::op::Query::query(name, RecordType::from(question.qtype));
    echoed.query_class = DNSClass::from(question.qclass);
    vec![echoed]
}

/// The one function that answers a query.
pub fn answer_with(
    loaded: &Loaded,
    health: HealthView<'_>,
    packet: &[u8],
    src: SocketAddr,
    transport: Transport,
    trace: Option<&mut Trace>,
) -> Option<Vec<u8>> {
    match Query::read(packet, &mut NameBuf::default()) {
        Read::Ignore => None,
        Read::Malformed => Some(header_only(packet, ResponseCode::FormErr)),
        Read::Query(q) => answer_query(loaded, health, &q, src, transport, trace, 0),
    }
}

/// Answers a query as read, fitting the reply `reserve` bytes under the client's size (room
/// for a signature).
fn answer_query(
    loaded: &Loaded,
    health: HealthView<'_>,
    q: &Query<'_>,
    src: SocketAddr,
    transport: Transport,
    trace: Option<&mut Trace>,
    reserve: usize,
) -> Option<Vec<u8>> {
    let ours = loaded.config.server.edns_udp_size;
    let mut resp = Message::response(u16::from_be_bytes(q.id), OpCode::from_u8(q.opcode()));
    // RD is copied; CD is not (NSD and Knot clear it in authoritative answers too).
    resp.metadata.recursion_desired = q.recursion_desired();
    resp.queries = echoed_question(q);
    let cap =
        reply_cap(transport, q.edns.as_ref().map(|e| e.payload), ours).saturating_sub(reserve);
    if q.edns.as_ref().is_some_and(|e| e.version > 0) {
        resp.metadata.response_code = ResponseCode::BADVERS;
        return encode(&mut resp, OptReply::bare(q, loaded), cap, 0);
    }
    // A malformed ECS or COOKIE option is FORMERR.
    if q.bad_option() {
        resp.metadata.response_code = ResponseCode::FormErr;
        return encode(&mut resp, OptReply::bare(q, loaded), cap, 0);
    }
    let mut opt = OptReply::for_query(q, loaded, src);
    match resp.metadata.op_code {
        OpCode::Query => {}
        // NOTIFY is for secondaries; this server is a primary only. Refused with AA set, as
        // NSD answers it.
        OpCode::Notify => {
            resp.metadata.response_code = ResponseCode::Refused;
            resp.metadata.authoritative = true;
            return encode(&mut resp, opt, cap, 0);
        }
        _ => {
            resp.metadata.response_code = ResponseCode::NotImp;
            return encode(&mut resp, opt, cap, 0);
        }
    }
    // A cookie-only query (no question) learns a server cookie (RFC 7873 section 5.4).
    if q.counts[0] == 0 && q.cookie().is_some() && q.counts[1] == 0 {
        return encode(&mut resp, opt, cap, 0);
    }
    let question = match &q.question {
        Some(question) if q.counts[..3] == [1, 0, 0] => question,
        _ => {
            resp.metadata.response_code = ResponseCode::FormErr;
            return encode(&mut resp, opt, cap, 0);
        }
    };
    let qname = crate::zone::fqdn_lower(&resp.queries.first()?.name);
    let (qclass, qtype) = (
        DNSClass::from(question.qclass),
        RecordType::from(question.qtype),
    );
    let identity = loaded.config.server.identity.as_deref();
    if qclass == DNSClass::CH && is_identity_name(&qname) {
        // The node's identity, as NSD and Knot answer it: TXT only, not authoritative (there
        // is no CH zone), and refused when no identity is configured.
        match (identity, qtype) {
            (Some(id), RecordType::TXT) => {
                let mut r =
                    Record::from_rdata(qname, 0, RData::TXT(TXT::new(vec![id.to_string()])));
                r.dns_class = DNSClass::CH;
                resp.answers.push(r);
            }
            _ => resp.metadata.response_code = ResponseCode::Refused,
        }
        return encode(&mut resp, opt, cap, 0);
    }
    let cfg = &loaded.config;
    // The most specific zone holding the name; but a DS set belongs to the parent side of a
    // cut (RFC 4035 section 3.1.4.1): asked at a zone's apex, the enclosing zone answers when
    // this server has it too.
    let parent_side = |z: &ServedZone| qtype == RecordType::DS && z.origin == qname;
    let zone_index = cfg
        .zones
        .iter()
        .enumerate()
        .filter(|(_, z)| z.origin.zone_of(&qname))
        .max_by_key(|(_, z)| (!parent_side(z), z.origin.num_labels()))
        .map(|(i, _)| i);
    let Some(zone_index) = zone_index else {
        resp.metadata.response_code = ResponseCode::Refused;
        if let Some(opt) = opt.as_mut() {
            opt.ede = Some(EDE_NOT_AUTHORITATIVE);
        }
        return encode(&mut resp, opt, cap, 0);
    };
    let zone = &cfg.zones[zone_index];
    let client = q.client(zone.ecs, src);
    let mut ctx = Ctx {
        loaded,
        health,
        zone,
        client: ClientInfo::from_network(client.network),
        scope: None,
        required_glue: 0,
        used_ecs: client.used_ecs,
        peek: trace.is_some(),
        trace,
        denial: None,
    };
    if let Some(t) = ctx.trace.as_deref_mut() {
        t.used_ecs = client.used_ecs;
    }

    match (qclass, qtype) {
        (DNSClass::CH, RecordType::TXT) => ctx.explain_in_band(&qname, src.ip(), &mut resp),
        // Transfers run over TCP (RFC 5936 section 4.2); over UDP, AXFR is not implemented
        // and IXFR refused, as NSD answers both.
        (_, RecordType::AXFR) if transport == Transport::Udp => {
            resp.metadata.response_code = ResponseCode::NotImp;
        }
        (_, RecordType::IXFR) if transport == Transport::Udp => {
            resp.metadata.response_code = ResponseCode::Refused;
            if let Some(opt) = opt.as_mut() {
                opt.ede = Some(EDE_PROHIBITED);
            }
        }
        (DNSClass::IN, _) => {
            resp.metadata.authoritative = true;
            ctx.resolve(qname, qtype, &mut resp);
        }
        // QCLASS * (RFC 1035 section 3.2.5): the IN data, never authoritative (RFC 6895
        // section 3.2).
        (DNSClass::ANY, _) => ctx.resolve(qname, qtype, &mut resp),
        _ => resp.metadata.response_code = ResponseCode::Refused,
    }

    if resp.metadata.response_code == ResponseCode::NoError {
        ctx.additional_data(&mut resp);
    }
    let edns = q.edns.as_ref();
    if let (Some(signing), true, DNSClass::IN) = (
        zone.signing.as_deref(),
        edns.is_some_and(|e| e.dnssec_ok),
        qclass,
    ) {
        let compact_ok = edns.is_some_and(|e| e.compact_ok);
        let now = crate::clock::unix_now();
        secure::secure(&mut resp, zone, signing, ctx.denial.take(), compact_ok, now);
    }
    // An answer that consulted no load-balanced name holds for every client: kept for the
    // fast path, in the index's slot when the name holds the type (and the answer has no
    // signatures), else in the store of answers asked more than once.
    let general = ctx.trace.is_none() && ctx.scope.is_none() && reserve == 0;
    if general && qclass == DNSClass::IN && resp.metadata.op_code == OpCode::Query {
        let flags = cache::flags(
            edns.is_some_and(|e| e.dnssec_ok),
            edns.is_some_and(|e| e.compact_ok),
        );
        let question_len = question.end - 12;
        let asked = (question.name(), question.qtype, flags);
        let now = crate::clock::unix_now();
        let negative = resp.answers.is_empty()
            && resp.authorities.len() == 1
            && resp.additionals.is_empty()
            && matches!(
                resp.metadata.response_code,
                ResponseCode::NoError | ResponseCode::NXDomain
            );
        let resp = &mut resp;
        let mut encode = || {
            resp.metadata.message_type = MessageType::Response;
            resp.edns = None;
            let encoded = resp.to_vec().ok()?;
            // Stored only when the question was echoed as asked (same length, any case).
            let echoed = encoded.get(12..12 + question_len)?;
            echoed
                .eq_ignore_ascii_case(&q.packet[12..question.end])
                .then_some(encoded)
        };
        // The fast index keeps answers without signatures.
        let index = (loaded.fast.as_ref()).filter(|_| flags == 0 || zone.signing.is_none());
        match index.and_then(|index| index.slot(question.name(), question.qtype)) {
            Some(slot) => {
                if slot.get().is_none() {
                    let built = encode()
                        .and_then(|e| cache::Stored::from_reply(zone_index, &e, question_len));
                    if let Some(built) = built {
                        let _ = slot.set(Box::new(built));
                    }
                }
            }
            None => {
                // A negative answer teaches the fast path the zone's SOA as encoded here.
                if let Some(index) = index.filter(|_| negative) {
                    index.learn_negative(zone_index, question_len - 4, &mut encode);
                }
                loaded
                    .answers
                    .store(asked, zone_index, question_len, now, encode)
            }
        }
    }
    if let Some(opt) = opt.as_mut() {
        opt.echo_ecs(q, zone.ecs, client, ctx.scope, !ctx.peek);
    }
    encode(&mut resp, opt, cap, ctx.required_glue)
}

/// `id.server.` and `hostname.bind.`: the CHAOS names that ask a server who it is.
fn is_identity_name(name: &Name) -> bool {
    let text = name.to_ascii();
    text.eq_ignore_ascii_case("id.server.") || text.eq_ignore_ascii_case("hostname.bind.")
}

/// Extended DNS Error codes (RFC 8914) this server gives.
pub(crate) const EDE_PROHIBITED: u16 = 18;
const EDE_NOT_AUTHORITATIVE: u16 = 20;

/// Encodes a response within `cap` with its OPT: additional data past the first `required`
/// records is dropped first, a whole RRset at a time from the end, without setting TC (RFC
/// 2181 section 9); if the answer still does not fit it goes out empty with TC set.
fn encode(
    resp: &mut Message,
    opt: Option<OptReply<'_>>,
    cap: usize,
    required: usize,
) -> Option<Vec<u8>> {
    resp.metadata.message_type = MessageType::Response;
    resp.edns = None;
    let cap = cap.saturating_sub(opt.as_ref().map_or(0, OptReply::len));
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
    if bytes.len() > cap {
        resp.answers.clear();
        resp.authorities.clear();
        resp.additionals.clear();
        resp.metadata.truncation = true;
        bytes = resp.to_vec().ok()?;
        if bytes.len() > cap {
            // Still too large (a very long question with a large OPT): header and OPT only.
            resp.queries.clear();
            bytes = resp.to_vec().ok()?;
        }
    }
    if let Some(opt) = opt {
        opt.append(&mut bytes, resp.metadata.response_code.high());
    }
    Some(bytes)
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
        assert!(matches!(
            Query::read(&packet, &mut NameBuf::default()),
            Read::Malformed
        ));
        assert_eq!(asked(None, Seen::default()), Asked::Unreadable);
        let mut q = vec![0u8; 12];
        q[5] = 1;
        q.extend([3, b'W', b'w', b'w', 0, 0, 1, 0, 1]);
        let mut name = NameBuf::default();
        let Read::Query(read) = Query::read(&q, &mut name) else {
            panic!("a query");
        };
        assert_eq!(
            asked(Some(&read), Seen::default()),
            Asked::Named {
                name: &[3, b'w', b'w', b'w', 0],
                qtype: 1
            }
        );
        assert_eq!(
            asked(Some(&read), Seen::new(2, 28)),
            Asked::Placed { zone: 2, qtype: 28 }
        );
    }
}
