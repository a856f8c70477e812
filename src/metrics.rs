//! Prometheus metrics: every name is defined in this module, and the text format is written
//! here.
//!
//! The query path counts into per-thread arrays of relaxed atomics, indexed by slots resolved
//! when a config loads (zone, member, and the names switched on for per-name series): a count
//! is one thread-local lookup and one uncontended increment, with no label hashing. A scrape
//! sums the threads' arrays. Labels are interned process-wide, so a series keeps its slot
//! across reloads and counters never go backwards.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Query types counted by name; the rest share `other`.
pub const QTYPES: [(&str, u16); 14] = [
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("SRV", 33),
    ("DS", 43),
    ("HTTPS", 65),
    ("CAA", 257),
    ("ANY", 255),
    ("AXFR", 252),
];
const QTYPE_SLOTS: usize = QTYPES.len() + 1;
/// Response codes counted by name; the rest share `other`.
pub const RCODES: [(&str, u8); 7] = [
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("NOTAUTH", 9),
];
const RCODE_SLOTS: usize = RCODES.len() + 1;
pub const TRANSPORTS: [&str; 2] = ["udp", "tcp"];
/// Zones with their own series; further zones (and queries outside every zone) share `other`.
pub const MAX_ZONES: usize = 32;
const ZONE_SLOTS: usize = MAX_ZONES + 1;
pub const POLICIES: [&str; 6] = [
    "weighted",
    "failover",
    "all",
    "geo-nearest",
    "geo-map",
    "subnet",
];
pub const REASONS: [&str; 5] = ["healthy", "fail-open", "fallback", "all-down", "forced"];
/// Names with per-name series (switched on by `server.metrics_names`).
pub const MAX_NAMES: usize = 64;
/// Members whose answers are counted (for the status page's share of answers).
pub const MAX_MEMBERS: usize = 4096;
/// ECS scope prefix lengths 0..=128.
const SCOPES: usize = 129;

const Q_LEN: usize = ZONE_SLOTS * QTYPE_SLOTS * RCODE_SLOTS * 2;
const A_OFF: usize = Q_LEN;
const A_LEN: usize = POLICIES.len() * REASONS.len();
const N_OFF: usize = A_OFF + A_LEN;
const N_LEN: usize = MAX_NAMES * REASONS.len();
const M_OFF: usize = N_OFF + N_LEN;
const ECS_OFF: usize = M_OFF + MAX_MEMBERS;
const SCOPE_OFF: usize = ECS_OFF + 1;
const CELLS: usize = SCOPE_OFF + SCOPES;

/// One thread's counters.
struct Cells(Box<[AtomicU64]>);

fn threads() -> &'static Mutex<Vec<Arc<Cells>>> {
    static THREADS: OnceLock<Mutex<Vec<Arc<Cells>>>> = OnceLock::new();
    THREADS.get_or_init(|| Mutex::new(Vec::new()))
}

thread_local! {
    static MINE: Arc<Cells> = {
        let cells = Arc::new(Cells((0..CELLS).map(|_| AtomicU64::new(0)).collect()));
        threads().lock().unwrap_or_else(|p| p.into_inner()).push(cells.clone());
        cells
    };
}

fn bump(index: usize) {
    MINE.with(|c| c.0[index].fetch_add(1, Ordering::Relaxed));
}

/// The sums over every thread of the cells in `range`, in one pass under one lock.
fn totals(range: std::ops::Range<usize>) -> Vec<u64> {
    let threads = threads().lock().unwrap_or_else(|p| p.into_inner());
    let mut out = vec![0u64; range.len()];
    for c in threads.iter() {
        for (o, cell) in out.iter_mut().zip(&c.0[range.clone()]) {
            *o += cell.load(Ordering::Relaxed);
        }
    }
    out
}

/// Process-wide label interning: a label keeps its slot for the life of the process.
#[derive(Default)]
struct Interned {
    zones: Vec<String>,
    names: Vec<String>,
    members: HashMap<String, usize>,
    member_labels: Vec<(String, String)>,
}

fn interned() -> &'static Mutex<Interned> {
    static I: OnceLock<Mutex<Interned>> = OnceLock::new();
    I.get_or_init(|| Mutex::new(Interned::default()))
}

fn intern(list: &mut Vec<String>, label: &str, max: usize) -> Option<usize> {
    if let Some(i) = list.iter().position(|l| l == label) {
        return Some(i);
    }
    (list.len() < max).then(|| {
        list.push(label.to_string());
        list.len() - 1
    })
}

/// Slots resolved for one loaded config, read on the query path.
#[derive(Debug, Default)]
pub struct Slots {
    /// Per zone (config order): its slot, and its origin in lower-case wire form.
    zones: Vec<(usize, Vec<u8>)>,
    /// Per binding: its per-name slot, when switched on.
    names: Vec<Option<usize>>,
    /// Per binding: its policy's index in [`POLICIES`].
    policies: Vec<usize>,
    /// Per pool, per member: its slot.
    members: Vec<Vec<Option<usize>>>,
}

/// What a served config is counted under, in plain terms (the DNS side builds it when a
/// config loads).
#[derive(Debug, Default)]
pub struct Labels {
    /// Per zone (config order): its origin as text (lower case) and in wire form.
    pub zones: Vec<(String, Vec<u8>)>,
    /// Per load-balanced name: the name, when it has series of its own.
    pub names: Vec<Option<String>>,
    /// Per load-balanced name: its policy's index in [`POLICIES`].
    pub policies: Vec<usize>,
    /// Per pool, per member: (pool name, member identity).
    pub members: Vec<Vec<(String, String)>>,
}

impl Slots {
    pub fn new(labels: &Labels) -> Slots {
        let mut i = interned().lock().unwrap_or_else(|p| p.into_inner());
        let zones = labels
            .zones
            .iter()
            .map(|(text, wire)| {
                let slot = intern(&mut i.zones, text, MAX_ZONES).unwrap_or(MAX_ZONES);
                (slot, wire.clone())
            })
            .collect();
        let names = labels
            .names
            .iter()
            .map(|n| {
                n.as_ref()
                    .and_then(|text| intern(&mut i.names, text, MAX_NAMES))
            })
            .collect();
        let members = labels
            .members
            .iter()
            .map(|pool| {
                pool.iter()
                    .map(|(pool, id)| {
                        let key = format!("{pool}\u{0}{id}");
                        if let Some(&s) = i.members.get(&key) {
                            return Some(s);
                        }
                        if i.member_labels.len() >= MAX_MEMBERS {
                            return None;
                        }
                        let s = i.member_labels.len();
                        i.member_labels.push((pool.clone(), id.clone()));
                        i.members.insert(key, s);
                        Some(s)
                    })
                    .collect()
            })
            .collect();
        Slots {
            zones,
            names,
            policies: labels.policies.clone(),
            members,
        }
    }

    /// The slot of the zone the wire name `name` falls in (the longest origin that is a
    /// suffix); a malformed or compressed name belongs to none.
    fn zone_of(&self, name: &[u8]) -> usize {
        let mut best: Option<(usize, usize)> = None;
        for (slot, origin) in &self.zones {
            if origin.len() <= name.len()
                && name[name.len() - origin.len()..].eq_ignore_ascii_case(origin)
                && label_boundary(name, name.len() - origin.len())
                && best.is_none_or(|(len, _)| origin.len() > len)
            {
                best = Some((origin.len(), *slot));
            }
        }
        best.map_or(MAX_ZONES, |(_, s)| s)
    }
}

/// Whether `at` is where a label starts in the uncompressed wire name `name`.
fn label_boundary(name: &[u8], at: usize) -> bool {
    let mut pos = 0;
    while pos < at {
        match name.get(pos) {
            Some(&len) if len < 64 => pos += 1 + len as usize,
            _ => return false,
        }
    }
    pos == at
}

/// What the answering path already knew of a query: its zone (index in the config) and type.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    zone: usize,
    qtype: u16,
}

impl Default for Seen {
    /// Nothing known: [`query`] reads the question itself.
    fn default() -> Self {
        Seen {
            zone: usize::MAX,
            qtype: 0,
        }
    }
}

impl Seen {
    pub fn new(zone: usize, qtype: u16) -> Seen {
        Seen { zone, qtype }
    }

    /// The zone index and type, when the fast path placed the query.
    pub fn placed(&self) -> Option<(usize, u16)> {
        (self.zone != usize::MAX).then_some((self.zone, self.qtype))
    }
}

/// A counted query's question, as the DNS side read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked<'a> {
    /// Placed by the fast path: the zone's index in the config, and the type.
    Placed { zone: usize, qtype: u16 },
    /// The question's wire name as it stands in the packet, and the type: the zone is found
    /// here.
    Named { name: &'a [u8], qtype: u16 },
    /// A question that could not be read.
    Unreadable,
}

/// The slot of a query type in [`QTYPES`] (`other` past the end).
fn qtype_slot(qtype: u16) -> usize {
    match qtype {
        1 => 0,
        2 => 1,
        5 => 2,
        6 => 3,
        12 => 4,
        15 => 5,
        16 => 6,
        28 => 7,
        33 => 8,
        43 => 9,
        65 => 10,
        257 => 11,
        255 => 12,
        252 => 13,
        _ => QTYPES.len(),
    }
}

/// The slot of each 4-bit rcode in [`RCODES`] (`other` past the end).
const RCODE_SLOT: [usize; 16] = {
    let mut table = [RCODES.len(); 16];
    let mut i = 0;
    while i < RCODES.len() {
        table[RCODES[i].1 as usize] = i;
        i += 1;
    }
    table
};

/// Counts one answered query: its zone and type, the reply's rcode (its low four bits), and
/// the transport.
pub fn query(slots: &Slots, asked: Asked<'_>, rcode: u8, tcp: bool) {
    let (zone, qtype) = match asked {
        Asked::Placed { zone, qtype } => (slots.zones.get(zone).map_or(MAX_ZONES, |z| z.0), qtype),
        Asked::Named { name, qtype } => (slots.zone_of(name), qtype),
        Asked::Unreadable => (MAX_ZONES, 0),
    };
    let r = RCODE_SLOT[(rcode & 0x0F) as usize];
    bump(((zone * QTYPE_SLOTS + qtype_slot(qtype)) * RCODE_SLOTS + r) * 2 + usize::from(tcp));
}

/// Counts one load-balanced answer: the binding's policy and why, per name when switched on,
/// and each member answered.
pub fn answer(slots: &Slots, binding: usize, reason: usize, members: &[(usize, usize)]) {
    let r = reason.min(REASONS.len() - 1);
    let Some(&p) = slots.policies.get(binding) else {
        return;
    };
    bump(A_OFF + p * REASONS.len() + r);
    if let Some(Some(n)) = slots.names.get(binding) {
        bump(N_OFF + n * REASONS.len() + r);
    }
    for &(pool, member) in members {
        if let Some(Some(m)) = slots.members.get(pool).and_then(|p| p.get(member)) {
            bump(M_OFF + m);
        }
    }
}

/// Counts a query that carried ECS, with the scope the reply returned.
pub fn ecs(scope: u8) {
    bump(ECS_OFF);
    bump(SCOPE_OFF + (scope as usize).min(SCOPES - 1));
}

/// Answers given per member so far, as ((pool, member id), count).
pub fn member_answers() -> Vec<((String, String), u64)> {
    let labels = interned()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .member_labels
        .clone();
    let counts = totals(M_OFF..M_OFF + labels.len());
    labels.into_iter().zip(counts).collect()
}

// ------------------------------------------------------------------ rare events

/// Counters for rare events, kept in one place.
#[derive(Default)]
struct Events {
    reloads: HashMap<&'static str, u64>,
    transfers: HashMap<&'static str, u64>,
    notifies: HashMap<&'static str, u64>,
}

fn events() -> &'static Mutex<Events> {
    static E: OnceLock<Mutex<Events>> = OnceLock::new();
    E.get_or_init(|| Mutex::new(Events::default()))
}

/// A reload's outcome: `applied` or `rejected`.
pub fn reload(result: &'static str) {
    *events()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .reloads
        .entry(result)
        .or_default() += 1;
}

/// A zone transfer's outcome: `sent`, `refused` or `bad-tsig`.
pub fn transfer(result: &'static str) {
    *events()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .transfers
        .entry(result)
        .or_default() += 1;
}

/// A NOTIFY's outcome: `acknowledged` or `unanswered`.
pub fn notify(result: &'static str) {
    *events()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .notifies
        .entry(result)
        .or_default() += 1;
}

// ------------------------------------------------------------------ exposition

/// Node facts a scrape needs beyond the counters, in plain terms.
pub struct Scrape {
    /// The running config's version and when it was loaded (Unix seconds).
    pub config_version: u64,
    pub config_loaded_at: u64,
    pub members: Vec<MemberGauge>,
    pub probes: Vec<ProbeHistogram>,
    pub tcp_refused: u64,
    /// UDP responses dropped and slipped by rate limiting, since start.
    pub rate_limited: (u64, u64),
    /// The signed zones: their signature caches and keys.
    pub signed: Vec<SignedZone>,
}

/// A signed zone, as the DNSSEC gauges show it.
pub struct SignedZone {
    pub zone: String,
    /// RRsets whose signatures are cached, and their bytes.
    pub cached_sets: u64,
    pub cached_bytes: u64,
    /// Signatures made since the cache was created.
    pub made: u64,
    /// The earliest expiration among the signatures served (Unix seconds).
    pub earliest_expiry: Option<u64>,
    /// The earliest expiration among the signatures secondaries hold (Unix seconds).
    pub transferred_expiry: Option<u64>,
    /// Each key's tag and state name.
    pub keys: Vec<(u16, &'static str)>,
}

/// One member's state, as the gauges show it.
pub struct MemberGauge {
    pub pool: String,
    pub member: String,
    /// 1 up, 0 down, -1 not yet known.
    pub up: i8,
    pub usable: bool,
    /// Health transitions since start.
    pub transitions: u64,
    /// The weight factor load shedding leaves it (1 in full), and its changes since start.
    pub factor: f64,
    pub factor_changes: u64,
    /// Whether what its clients got (errors, latency) has tripped it.
    pub tripped: bool,
    /// Client networks whose round trips its site proxy measured, for latency steering.
    pub rtt_networks: usize,
}

/// One probe's rounds since start.
pub struct ProbeHistogram {
    pub probe: String,
    /// (upper bound in seconds, passing rounds at most that long), cumulative.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
    pub failures: u64,
}

/// Writes every metric in the Prometheus text format (version 0.0.4).
pub fn render(s: &Scrape) -> String {
    let cells = totals(0..CELLS);
    let mut out = String::new();

    let i = interned().lock().unwrap_or_else(|p| p.into_inner());
    let zone_label = |z: usize| {
        if z < i.zones.len() {
            i.zones[z].clone()
        } else {
            "other".to_string()
        }
    };
    head(
        &mut out,
        "queries_total",
        "counter",
        "DNS queries answered, by zone, query type, response code and transport.",
    );
    for z in 0..ZONE_SLOTS {
        for t in 0..QTYPE_SLOTS {
            for r in 0..RCODE_SLOTS {
                for (tr, transport) in TRANSPORTS.iter().enumerate() {
                    let v = cells[((z * QTYPE_SLOTS + t) * RCODE_SLOTS + r) * 2 + tr];
                    if v == 0 {
                        continue;
                    }
                    let qtype = QTYPES.get(t).map_or("other", |q| q.0);
                    let rcode = RCODES.get(r).map_or("other", |q| q.0);
                    let _ = writeln!(
                        out,
                        "meridian_queries_total{{zone=\"{}\",qtype=\"{qtype}\",rcode=\"{rcode}\",transport=\"{transport}\"}} {v}",
                        escape(&zone_label(z))
                    );
                }
            }
        }
    }
    head(
        &mut out,
        "answers_total",
        "counter",
        "Load-balanced answers, by policy and reason (forced: a forced-up member answered).",
    );
    for (p, policy) in POLICIES.iter().enumerate() {
        for (r, reason) in REASONS.iter().enumerate() {
            let v = cells[A_OFF + p * REASONS.len() + r];
            let _ = writeln!(
                out,
                "meridian_answers_total{{policy=\"{policy}\",reason=\"{reason}\"}} {v}"
            );
        }
    }
    head(
        &mut out,
        "name_answers_total",
        "counter",
        "Load-balanced answers per name, for the names listed in server.metrics_names.",
    );
    for (n, name) in i.names.iter().enumerate() {
        for (r, reason) in REASONS.iter().enumerate() {
            let v = cells[N_OFF + n * REASONS.len() + r];
            let _ = writeln!(
                out,
                "meridian_name_answers_total{{name=\"{}\",reason=\"{reason}\"}} {v}",
                escape(name)
            );
        }
    }
    head(
        &mut out,
        "member_answers_total",
        "counter",
        "Times each member was in a load-balanced answer.",
    );
    for (m, (pool, member)) in i.member_labels.iter().enumerate() {
        let v = cells[M_OFF + m];
        let _ = writeln!(
            out,
            "meridian_member_answers_total{{pool=\"{}\",member=\"{}\"}} {v}",
            escape(pool),
            escape(member)
        );
    }
    drop(i);
    head(
        &mut out,
        "ecs_queries_total",
        "counter",
        "Queries that carried an EDNS Client Subnet option the zone honours.",
    );
    let _ = writeln!(out, "meridian_ecs_queries_total {}", cells[ECS_OFF]);
    head(
        &mut out,
        "ecs_scope_total",
        "counter",
        "ECS replies by the scope prefix length returned.",
    );
    for scope in 0..SCOPES {
        let v = cells[SCOPE_OFF + scope];
        if v > 0 || scope == 0 {
            let _ = writeln!(out, "meridian_ecs_scope_total{{scope=\"{scope}\"}} {v}");
        }
    }

    // Each member series: name, type, help, and the member's value in it.
    type Series = (
        &'static str,
        &'static str,
        &'static str,
        fn(&MemberGauge) -> String,
    );
    let series: [Series; 7] = [
        (
            "member_up",
            "gauge",
            "Member health from its probes: 1 up, 0 down, -1 not yet known.",
            |m| m.up.to_string(),
        ),
        (
            "member_usable",
            "gauge",
            "Whether a member may be answered: health with overrides applied.",
            |m| u8::from(m.usable).to_string(),
        ),
        (
            "member_transitions_total",
            "counter",
            "Health state transitions (flaps) per member since start.",
            |m| m.transitions.to_string(),
        ),
        (
            "member_weight_factor",
            "gauge",
            "The share of its weight (or of client networks) load shedding leaves a member: 1 in full, 0 left out.",
            |m| m.factor.to_string(),
        ),
        (
            "member_weight_factor_changes_total",
            "counter",
            "Weight factor changes per member since start.",
            |m| m.factor_changes.to_string(),
        ),
        (
            "member_tripped",
            "gauge",
            "Whether the errors or latency a member's site proxy reported have tripped it (passive health).",
            |m| u8::from(m.tripped).to_string(),
        ),
        (
            "member_rtt_networks",
            "gauge",
            "Client networks whose round trips a member's site proxy measured (latency steering).",
            |m| m.rtt_networks.to_string(),
        ),
    ];
    let labels: Vec<String> = s
        .members
        .iter()
        .map(|m| {
            format!(
                "pool=\"{}\",member=\"{}\"",
                escape(&m.pool),
                escape(&m.member)
            )
        })
        .collect();
    for (name, kind, help, value) in series {
        head(&mut out, name, kind, help);
        for (m, labels) in s.members.iter().zip(&labels) {
            let _ = writeln!(out, "meridian_{name}{{{labels}}} {}", value(m));
        }
    }

    let e = events().lock().unwrap_or_else(|p| p.into_inner());
    head(
        &mut out,
        "probe_duration_seconds",
        "histogram",
        "Latency of passing health probes.",
    );
    let mut failures = String::new();
    for h in &s.probes {
        let addr = &h.probe;
        for &(le, b) in &h.buckets {
            let _ = writeln!(
                out,
                "meridian_probe_duration_seconds_bucket{{probe=\"{addr}\",le=\"{le}\"}} {b}"
            );
        }
        let _ = writeln!(
            out,
            "meridian_probe_duration_seconds_bucket{{probe=\"{addr}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "meridian_probe_duration_seconds_sum{{probe=\"{addr}\"}} {}",
            h.sum_seconds
        );
        let _ = writeln!(
            out,
            "meridian_probe_duration_seconds_count{{probe=\"{addr}\"}} {}",
            h.count
        );
        let _ = writeln!(
            failures,
            "meridian_probe_failures_total{{probe=\"{addr}\"}} {}",
            h.failures
        );
    }
    head(
        &mut out,
        "probe_failures_total",
        "counter",
        "Health probes that failed.",
    );
    out.push_str(&failures);
    for (name, help, map, keys) in [
        (
            "reloads_total",
            "Config loads after start, by result.",
            &e.reloads,
            &["applied", "rejected"][..],
        ),
        (
            "transfers_total",
            "Zone transfer requests, by result.",
            &e.transfers,
            &["sent", "refused", "bad-tsig"][..],
        ),
        (
            "notifies_total",
            "NOTIFY messages, by result.",
            &e.notifies,
            &["acknowledged", "unanswered"][..],
        ),
    ] {
        head(&mut out, name, "counter", help);
        for k in keys {
            let _ = writeln!(
                out,
                "meridian_{name}{{result=\"{k}\"}} {}",
                map.get(k).copied().unwrap_or(0)
            );
        }
    }
    drop(e);
    head(
        &mut out,
        "config_version",
        "gauge",
        "Successful config loads since start.",
    );
    let _ = writeln!(out, "meridian_config_version {}", s.config_version);
    head(
        &mut out,
        "config_loaded_timestamp_seconds",
        "gauge",
        "When the running config was loaded.",
    );
    let at = s.config_loaded_at;
    let _ = writeln!(out, "meridian_config_loaded_timestamp_seconds {at}");
    head(
        &mut out,
        "tcp_refused_total",
        "counter",
        "DNS-over-TCP connections refused over the connection limits.",
    );
    let _ = writeln!(out, "meridian_tcp_refused_total {}", s.tcp_refused);
    head(
        &mut out,
        "rate_limited_total",
        "counter",
        "UDP responses dropped or slipped by rate limiting since start.",
    );
    let _ = writeln!(
        out,
        "meridian_rate_limited_total{{action=\"dropped\"}} {}",
        s.rate_limited.0
    );
    let _ = writeln!(
        out,
        "meridian_rate_limited_total{{action=\"slipped\"}} {}",
        s.rate_limited.1
    );
    dnssec(&mut out, &s.signed);
    out
}

/// The DNSSEC series: per signed zone its signature cache and each key's state. The
/// families are declared even with no signed zone, so rules may name them.
fn dnssec(out: &mut String, zones: &[SignedZone]) {
    type Gauge = fn(&SignedZone) -> Option<u64>;
    let series: [(&str, &str, &str, Gauge); 5] = [
        (
            "dnssec_signature_cache_sets",
            "gauge",
            "RRsets whose signatures the zone's cache holds.",
            |z| Some(z.cached_sets),
        ),
        (
            "dnssec_signature_cache_bytes",
            "gauge",
            "Bytes the zone's signature cache takes.",
            |z| Some(z.cached_bytes),
        ),
        (
            "dnssec_signatures_made_total",
            "counter",
            "Signatures made (the cache lives across reloads that keep the keys).",
            |z| Some(z.made),
        ),
        (
            "dnssec_earliest_signature_expiry_timestamp_seconds",
            "gauge",
            "The earliest expiration among the signatures the zone serves.",
            |z| z.earliest_expiry,
        ),
        (
            "dnssec_transferred_signature_expiry_timestamp_seconds",
            "gauge",
            "The earliest expiration among the signatures sent with the serial last transferred.",
            |z| z.transferred_expiry,
        ),
    ];
    for (name, kind, help, value) in series {
        head(out, name, kind, help);
        for z in zones {
            if let Some(v) = value(z) {
                let _ = writeln!(out, "meridian_{name}{{zone=\"{}\"}} {v}", escape(&z.zone));
            }
        }
    }
    head(
        out,
        "dnssec_key_state",
        "gauge",
        "1 for each key's state (future, published, active, held, retired, removed).",
    );
    for z in zones {
        for (tag, state) in &z.keys {
            let zone = escape(&z.zone);
            let _ = writeln!(
                out,
                "meridian_dnssec_key_state{{zone=\"{zone}\",tag=\"{tag}\",state=\"{state}\"}} 1"
            );
        }
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP meridian_{name} {help}");
    let _ = writeln!(out, "# TYPE meridian_{name} {kind}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `www.example.test.` and `example.test.` in wire form.
    const WWW: &[u8] = b"\x03www\x07example\x04test\x00";
    const APEX: &[u8] = b"\x07example\x04test\x00";

    #[test]
    fn label_boundaries_in_wire_names() {
        assert!(label_boundary(WWW, 0));
        assert!(label_boundary(WWW, 4));
        assert!(!label_boundary(WWW, 5));
        assert!(!label_boundary(&[0xC0, 12], 1), "a pointer is no label");
    }

    #[test]
    fn slot_tables_match_the_label_lists() {
        for (i, &(_, code)) in QTYPES.iter().enumerate() {
            assert_eq!(qtype_slot(code), i);
        }
        assert_eq!(qtype_slot(99), QTYPES.len());
        for (i, &(_, code)) in RCODES.iter().enumerate() {
            assert_eq!(RCODE_SLOT[code as usize], i);
        }
        assert_eq!(RCODE_SLOT[15], RCODES.len());
    }

    #[test]
    fn broken_question_names_belong_to_no_zone() {
        let slots = Slots {
            zones: vec![(0, APEX.to_vec())],
            ..Slots::default()
        };
        let mut name = WWW.to_vec();
        assert_eq!(slots.zone_of(&name), 0);
        name[0] = 0xC0;
        assert_eq!(slots.zone_of(&name), MAX_ZONES);
        assert_eq!(slots.zone_of(&[0xC0]), MAX_ZONES);
    }
}
