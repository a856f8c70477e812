//! Zone transfer out: AXFR (RFC 5936) over TCP to allowed secondaries, IXFR (RFC 1995)
//! answered with the whole zone or, when the secondary is current, the SOA alone; and NOTIFY
//! (RFC 1996) sent when a zone's data changes.
//!
//! A transfer holds the zone file's data and, unless the zone says to omit them, a snapshot
//! of each load-balanced name: the answer a client nobody can place would get now, with the
//! TTL capped, so a public secondary never answers NXDOMAIN for `www`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use ipnet::IpNet;

use super::{ecs, tsig, Ctx, HealthView, LbAnswer, Loaded, EDE_PROHIBITED};
use crate::balance::ClientInfo;
use crate::config::LbInTransfer;
use crate::zone::Zone;

/// Records per message: well under the 64 KiB TCP limit for ordinary data; a message that
/// still encodes too large is split further.
const BATCH: usize = 256;

/// Whether `query` asks for a zone transfer (AXFR or IXFR), read without a full parse.
pub fn is_transfer(query: &[u8]) -> bool {
    if query.len() < 12 || query[2] & 0xF8 != 0 || query[4..6] != [0, 1] {
        return false;
    }
    let Some(end) = ecs::skip_name(query, 12) else {
        return false;
    };
    matches!(query.get(end..end + 2), Some([0, 251]) | Some([0, 252]))
}

/// Answers a transfer request over TCP: the messages to send, in order. `None` for a query
/// that is not a transfer (or too broken to answer), which the ordinary path then answers.
pub fn answer(
    loaded: &Loaded,
    health: HealthView<'_>,
    query: &[u8],
    peer: SocketAddr,
) -> Option<Vec<Vec<u8>>> {
    if !is_transfer(query) {
        return None;
    }
    let request = Message::from_vec(query).ok()?;
    let q = request.queries.first()?.clone();
    let mut head = Message::response(request.id, OpCode::Query);
    head.metadata.message_type = MessageType::Response;
    head.metadata.recursion_desired = request.recursion_desired;
    head.queries.push(q.clone());
    if request.edns.is_some() {
        let mut e = hickory_proto::op::Edns::new();
        e.set_max_payload(loaded.config.server.edns_udp_size);
        head.edns = Some(e);
    }
    let cfg = &loaded.config;

    // TSIG first (RFC 8945 section 5.2): a signed request is verified whatever the zone, and
    // every reply to a verified one is signed.
    let now = crate::clock::unix_now();
    let (signed_with, mut signer) = match tsig::find(query) {
        Err(tsig::Malformed) => {
            head.metadata.response_code = ResponseCode::FormErr;
            return head.to_vec().ok().map(|b| vec![b]);
        }
        Ok(None) => (None, None),
        Ok(Some(found)) => match tsig::verify(query, &found, &cfg.keys, now) {
            Ok((key, signer)) => (Some(key.clone()), Some(signer)),
            Err((error, signer)) => {
                tracing::info!(%peer, ?error, "transfer with a bad TSIG");
                crate::metrics::transfer("bad-tsig");
                head.metadata.response_code = ResponseCode::NotAuth;
                let mut bytes = head.to_vec().ok()?;
                tsig::seal_error(&mut bytes, &found, error, signer, now);
                return Some(vec![bytes]);
            }
        },
    };
    let mut refuse = |mut m: Message, rcode: ResponseCode| {
        m.metadata.response_code = rcode;
        if rcode == ResponseCode::Refused {
            extended_error(&mut m, EDE_PROHIBITED);
        }
        single(&m, signer.as_mut())
    };
    let qname = crate::zone::fqdn_lower(&q.name);
    let Some(index) = cfg.zones.iter().position(|z| z.origin == qname) else {
        // Not the apex of a zone served here.
        return refuse(head, ResponseCode::NotAuth);
    };
    let zone = &cfg.zones[index];
    // Allowed: from a listed address and, when the zone names a key, signed with it.
    let allowed = cfg.zones[index].transfer.as_ref().filter(|t| {
        t.allow.iter().any(|n| n.contains(&peer.ip()))
            && t.key
                .as_ref()
                .is_none_or(|k| signed_with.as_ref() == Some(k))
    });
    let (Some(settings), DNSClass::IN) = (allowed, q.query_class) else {
        tracing::info!(zone = %zone.origin, %peer, signed = signed_with.is_some(), "transfer refused");
        crate::metrics::transfer("refused");
        return refuse(head, ResponseCode::Refused);
    };
    head.metadata.authoritative = true;
    let soa = zone.soa().clone();

    // IXFR from a secondary that is already current: our SOA alone (RFC 1995 section 4).
    if q.query_type == RecordType::IXFR {
        let theirs = request.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(s) => Some(s.serial),
            _ => None,
        });
        if theirs.is_some_and(|s| !serial_lt(s, zone.serial())) {
            head.answers.push(soa);
            return single(&head, signer.as_mut());
        }
    }

    let lb = match settings.load_balanced {
        LbInTransfer::Snapshot { ttl } => snapshot(loaded, health, zone, ttl),
        LbInTransfer::Omit => Vec::new(),
    };
    // Records are encoded a batch at a time: an unsigned zone is never held as decoded
    // records. A signed one is, to be put in canonical order, chained and signed.
    let body: Box<dyn Iterator<Item = Record>> = match zone.signing.as_deref() {
        None => Box::new(
            std::iter::once(soa.clone())
                .chain(zone_records(zone))
                .chain(lb),
        ),
        Some(signing) => {
            let all: Vec<Record> = std::iter::once(soa.clone())
                .chain(zone_records(zone))
                .chain(lb)
                .collect();
            let negative_ttl = zone.negative_soa().ttl;
            let signed = super::secure::signed_zone(all, &zone.origin, signing, negative_ttl, now);
            if let Some(earliest) = signed.iter().filter_map(rrsig_expiration).min() {
                signing.note_transfer(zone.serial(), earliest);
            }
            // The SOA and its RRSIG open the transfer.
            let (head, rest): (Vec<Record>, Vec<Record>) = signed
                .into_iter()
                .partition(|r| r.name == zone.origin && r.record_type() == RecordType::SOA);
            Box::new(head.into_iter().chain(rest))
        }
    };
    let mut records = body.chain(std::iter::once(soa));
    let (mut out, mut first, mut count) = (Vec::new(), true, 0);
    let mut chunk = Vec::with_capacity(BATCH);
    loop {
        chunk.clear();
        chunk.extend(records.by_ref().take(BATCH));
        if chunk.is_empty() {
            break;
        }
        count += chunk.len();
        encode_chunk(&head, &chunk, &mut first, &mut out)?;
    }
    if let Some(s) = signer.as_mut() {
        for m in &mut out {
            s.sign(m, None);
        }
    }
    tracing::info!(zone = %zone.origin, %peer, serial = zone.serial(), records = count, signed = signed_with.is_some(), "transfer");
    crate::metrics::transfer("sent");
    Some(out)
}

/// Adds an Extended DNS Error option (RFC 8914) to a transfer reply, when the query had EDNS.
/// Transfers build whole messages with hickory (several per answer, each signed), so their
/// OPT is hickory's: our size and this option only.
fn extended_error(m: &mut Message, code: u16) {
    use hickory_proto::rr::rdata::opt::EdnsOption;
    if let Some(edns) = m.edns.as_mut() {
        edns.options_mut()
            .insert(EdnsOption::Unknown(15, code.to_be_bytes().to_vec()));
    }
}

/// A reply of one message, signed when the request was.
fn single(m: &Message, signer: Option<&mut tsig::Signer>) -> Option<Vec<Vec<u8>>> {
    let mut bytes = m.to_vec().ok()?;
    if let Some(s) = signer {
        s.sign(&mut bytes, None);
    }
    Some(vec![bytes])
}

/// Encodes `records` as one message, or as several when one would exceed 64 KiB. Only the
/// first message of a transfer repeats the question.
fn encode_chunk(
    head: &Message,
    records: &[Record],
    first: &mut bool,
    out: &mut Vec<Vec<u8>>,
) -> Option<()> {
    let mut m = head.clone();
    if !*first {
        m.queries.clear();
    }
    m.answers = records.to_vec();
    match m.to_vec() {
        // Room left for a TSIG record.
        Ok(bytes) if bytes.len() <= u16::MAX as usize - 512 => {
            *first = false;
            out.push(bytes);
            Some(())
        }
        _ if records.len() > 1 => {
            let (a, b) = records.split_at(records.len() / 2);
            encode_chunk(head, a, first, out)?;
            encode_chunk(head, b, first, out)
        }
        _ => None,
    }
}

/// Every record of the zone file except the apex SOA (which opens and closes the transfer).
fn zone_records(zone: &Zone) -> impl Iterator<Item = Record> + '_ {
    zone.nodes().flat_map(move |(name, node)| {
        let apex = name == zone.origin;
        node.rrsets
            .iter()
            .filter(move |s| !(apex && s.rtype == RecordType::SOA))
            .flat_map(|s| s.records(&name).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    })
}

/// The load-balanced names' current answers for a client nobody can place, TTL capped.
fn snapshot(loaded: &Loaded, health: HealthView<'_>, zone: &Zone, cap: u32) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    for (name, node) in zone.nodes() {
        let Some(lb) = node.lb else { continue };
        let families = [
            (lb.a, RecordType::A, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            (lb.aaaa, RecordType::AAAA, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        ];
        for (_, rtype, unspecified) in families.into_iter().filter(|f| f.0) {
            // The whole address space: no database places it, so geo policies use their
            // default order.
            let nowhere = IpNet::new(unspecified, 0).expect("prefix 0 is valid");
            let mut ctx = Ctx {
                loaded,
                health,
                zone,
                client: ClientInfo::from_network(nowhere),
                scope: None,
                required_glue: 0,
                used_ecs: false,
                // The snapshot must not move the round-robin rotation clients see.
                peek: true,
                trace: None,
                denial: None,
            };
            let mut records = Vec::new();
            match ctx.answer_lb(lb.binding, &name, rtype, &mut records) {
                LbAnswer::Addresses(_) => out.extend(records.into_iter().map(|mut r| {
                    r.ttl = r.ttl.min(cap);
                    r
                })),
                LbAnswer::Alias(target, ttl) => {
                    let already = out
                        .iter()
                        .any(|r| r.name == name && r.record_type() == RecordType::CNAME);
                    if !already {
                        out.push(Record::from_rdata(
                            name.clone(),
                            ttl.min(cap),
                            RData::CNAME(CNAME(target)),
                        ));
                    }
                }
                LbAnswer::Empty(_) => {}
            }
        }
    }
    out
}

/// The expiration of an RRSIG record (RFC 4034 section 3.1.5), in seconds since the epoch.
fn rrsig_expiration(record: &Record) -> Option<u64> {
    match &record.data {
        RData::Unknown { code, rdata } if *code == RecordType::RRSIG => {
            let at = rdata.anything.get(8..12)?;
            Some(u64::from(u32::from_be_bytes(at.try_into().ok()?)))
        }
        _ => None,
    }
}

/// RFC 1982 serial number arithmetic: whether `a` comes before `b`.
pub fn serial_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

/// Sends NOTIFY for `zone` (serial `serial`) to each target over UDP, signed with `key` when
/// given, retrying with backoff (1, 2, 4, 8, 16 s) until the target acknowledges; logs the
/// outcome. Runs until done.
pub async fn notify(
    zone: Name,
    serial: u32,
    soa: Record,
    targets: Vec<SocketAddr>,
    key: Option<tsig::Key>,
) {
    let tasks: Vec<_> = targets
        .into_iter()
        .map(|target| {
            let (zone, soa, key) = (zone.clone(), soa.clone(), key.clone());
            tokio::spawn(async move {
                match notify_one(&zone, &soa, target, key.as_ref()).await {
                    Ok(rcode) => {
                        crate::metrics::notify("acknowledged");
                        tracing::info!(%zone, serial, %target, %rcode, "notify acknowledged")
                    }
                    Err(e) => {
                        crate::metrics::notify("unanswered");
                        tracing::warn!(%zone, serial, %target, error = %e, "notify not acknowledged")
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

async fn notify_one(
    zone: &Name,
    soa: &Record,
    target: SocketAddr,
    key: Option<&tsig::Key>,
) -> std::io::Result<ResponseCode> {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = tokio::net::UdpSocket::bind(local).await?;
    sock.connect(target).await?;
    let id: u16 = rand::random();
    let mut m = Message::new(id, MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    m.queries.push(Query::query(zone.clone(), RecordType::SOA));
    m.answers.push(soa.clone());
    let mut bytes = m.to_vec().map_err(std::io::Error::other)?;
    if let Some(key) = key {
        tsig::Signer::request(key, crate::clock::unix_now()).sign(&mut bytes, None);
    }
    let mut buf = [0u8; 512];
    for attempt in 0..5 {
        sock.send(&bytes).await?;
        let wait = Duration::from_secs(1 << attempt);
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            match Message::from_vec(&buf[..n]) {
                Ok(r) if r.id == id && r.message_type == MessageType::Response => {
                    return Ok(r.metadata.response_code);
                }
                _ => continue,
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer after 5 tries",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(serial_lt(1, 2));
        assert!(!serial_lt(2, 1));
        assert!(!serial_lt(5, 5));
        assert!(serial_lt(u32::MAX, 0), "0 follows 4294967295");
        assert!(serial_lt(0xFFFF_FF00, 10));
        assert!(!serial_lt(10, 0xFFFF_FF00));
    }

    #[test]
    fn transfers_are_recognised_without_a_parse() {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.queries.push(Query::query(
            Name::from_ascii("example.test.").unwrap(),
            RecordType::AXFR,
        ));
        assert!(is_transfer(&m.to_vec().unwrap()));
        m.queries[0].query_type = RecordType::IXFR;
        assert!(is_transfer(&m.to_vec().unwrap()));
        m.queries[0].query_type = RecordType::SOA;
        assert!(!is_transfer(&m.to_vec().unwrap()));
        assert!(!is_transfer(&[0; 5]));
    }
}
