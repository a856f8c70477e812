//! Response rate limiting over real UDP: credit per client prefix, slips into truncated
//! answers, drops, and the exemptions (TCP, a valid server cookie).

mod common;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::RecordType;

const LIMITED: &str = "[server.rate_limit]\nresponses_per_second = 5\nslip = 2\nexempt = []";

/// Sends every query, then collects replies until 300 ms pass without one: reply by ID.
fn burst(srv: &Server, queries: &[Vec<u8>]) -> HashMap<u16, Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for q in queries {
        sock.send_to(q, srv.dns).unwrap();
    }
    let mut replies = HashMap::new();
    let mut buf = [0u8; 4096];
    while replies.len() < queries.len() {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let m = Message::from_vec(&buf[..n]).unwrap();
                replies.insert(m.metadata.id, m);
            }
            Err(_) => break,
        }
    }
    replies
}

fn query(id: u16, cookie: Option<&[u8]>) -> Vec<u8> {
    let opts = Opts {
        cookie: cookie.map(<[u8]>::to_vec),
        ..Opts::edns(1232)
    };
    let mut q = build_query("www.example.test.", RecordType::A, Some(&opts));
    q[..2].copy_from_slice(&id.to_be_bytes());
    q
}

fn full(m: &Message) -> bool {
    !m.metadata.truncation && answers(m) == vec!["192.0.2.80"]
}

fn slipped(m: &Message) -> bool {
    m.metadata.truncation && m.answers.is_empty() && m.queries.len() == 1
}

#[test]
fn a_busy_prefix_is_limited_with_slips_and_exemptions_hold() {
    let cfg = ConfigDir::new_with(&zone_with("www IN A 192.0.2.80\n"), "", LIMITED, "");
    let srv = Server::start(&cfg);

    let queries: Vec<Vec<u8>> = (1..=40).map(|id| query(id, None)).collect();
    let replies = burst(&srv, &queries);
    let answered = replies.values().filter(|m| full(m)).count();
    let truncated = replies.values().filter(|m| slipped(m)).count();
    // Five a second (a second boundary inside the burst can add five more).
    assert!((5..=10).contains(&answered), "{answered} full answers");
    assert!(truncated >= 5, "{truncated} truncated answers");
    assert!(replies.len() < 40, "nothing was dropped");
    assert_eq!(answered + truncated, replies.len());

    // TCP is never limited.
    let m = query_tcp(srv.dns, &query(999, None));
    assert!(full(&m));

    // A valid server cookie (learnt over TCP) proves the source: answered while others are not.
    let client = [9u8; 8];
    let m = query_tcp(srv.dns, &query(998, Some(&client)));
    let server_cookie = match m.edns.as_ref().and_then(|e| e.option(EdnsCode::Cookie)) {
        Some(EdnsOption::Unknown(_, data)) => data.clone(),
        other => panic!("no cookie over TCP: {other:?}"),
    };
    let mut shown = false;
    for attempt in 0..5u16 {
        let base = 1000 + attempt * 100;
        let mut qs: Vec<Vec<u8>> = (0..12).map(|i| query(base + i, None)).collect();
        qs.push(query(base + 50, Some(&server_cookie)));
        qs.push(query(base + 51, None));
        let r = burst(&srv, &qs);
        let with_cookie = r.get(&(base + 50)).is_some_and(full);
        let without = r.get(&(base + 51)).is_some_and(full);
        if with_cookie && !without {
            shown = true;
            break;
        }
    }
    assert!(shown, "a query with a valid server cookie was limited");

    let status = srv.status();
    let dropped = status["rate_limit"]["dropped"].as_u64().unwrap();
    let slipped = status["rate_limit"]["slipped"].as_u64().unwrap();
    assert!(dropped > 0 && slipped > 0, "{status}");
    // A reload keeps the counts (and, with the same settings, the accounts).
    assert!(srv.ctl(&["reload"]).0);
    let status = srv.status();
    assert!(status["rate_limit"]["dropped"].as_u64().unwrap() >= dropped);
    assert!(status["rate_limit"]["slipped"].as_u64().unwrap() >= slipped);
}

#[test]
fn loopback_is_exempt_by_default() {
    let cfg = ConfigDir::new(&zone_with("www IN A 192.0.2.80\n"), "");
    let srv = Server::start(&cfg);
    let queries: Vec<Vec<u8>> = (1..=300).map(|id| query(id, None)).collect();
    let replies = burst(&srv, &queries);
    assert!(replies.values().all(full));
    assert!(replies.len() > 250, "{} of 300 answered", replies.len());
}
