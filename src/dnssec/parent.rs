//! The parent's DS set for a zone, read over DNS from the parent's servers when this node does
//! not serve the parent itself: what a double-KSK rollover's retire step waits for.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

/// How long each server gets to answer, and how many tries it gets.
const TIMEOUT: Duration = Duration::from_millis(800);
const TRIES: usize = 2;

/// The DS data the first of `servers` to answer authoritatively holds for `zone` (empty when
/// it has none); an error naming each server when none answers.
pub fn parent_ds(zone: &Name, servers: &[SocketAddr]) -> Result<Vec<Vec<u8>>, String> {
    let mut failures = Vec::new();
    for server in servers {
        match ask(zone, *server) {
            Ok(ds) => return Ok(ds),
            Err(e) => failures.push(format!("{server}: {e}")),
        }
    }
    Err(failures.join("; "))
}

fn ask(zone: &Name, server: SocketAddr) -> Result<Vec<Vec<u8>>, String> {
    let id = (crate::clock::unix_now() as u16) ^ 0x5a5a;
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(zone.clone(), RecordType::DS));
    let bytes = query.to_vec().map_err(|e| e.to_string())?;
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    socket.connect(server).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65535];
    for _ in 0..TRIES {
        socket.send(&bytes).map_err(|e| e.to_string())?;
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let Ok(reply) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if reply.metadata.id != id {
            continue;
        }
        if !reply.metadata.authoritative {
            return Err("the answer is not authoritative".into());
        }
        return Ok(reply
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::DS && r.name == *zone)
            .map(|r| {
                let mut data = Vec::new();
                let _ = r.data.emit(&mut BinEncoder::new(&mut data));
                data
            })
            .collect());
    }
    Err("no answer".into())
}
