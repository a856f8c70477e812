//! The site proxy's limits per client network, end to end: the real `meridian proxy` on port
//! 0, clients on real connections from different loopback addresses.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

/// A site with one listener on port 0 and a control endpoint, one route to the servers, and
/// `limits` as its `[limits]` table.
fn limited_site(limits: &str, servers: &[&Upstream], proxy_extra: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|u| format!("{{ address = \"{}\" }}", u.addr))
        .collect();
    format!(
        "[proxy]\naccess_log = \"off\"\ndrain_timeout = \"2s\"\ncontrol = \"127.0.0.1:0\"\n{proxy_extra}\n\n[limits]\n{limits}\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[pool.p]\nservers = [{}]\n",
        list.join(", ")
    )
}

/// A connection to `addr` from the loopback address `from`.
fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: IpAddr = from.parse().unwrap();
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .expect("bind a loopback source");
    socket.connect(&addr.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// One kept-alive GET on `conn`: the status, or `None` when the proxy closed the connection.
fn exchange(conn: &mut TcpStream, extra: &str) -> Option<(u16, String)> {
    conn.write_all(format!("GET / HTTP/1.1\r\nHost: site.test\r\n{extra}\r\n").as_bytes())
        .ok()?;
    let head = read_head(conn)?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).ok()?;
    Some((status, head))
}

/// A GET on a new connection from `from`.
fn get_from(from: &str, addr: SocketAddr) -> Option<(u16, String)> {
    exchange(&mut connect_from(from, addr), "")
}

fn metrics(proxy: &SiteProxy) -> String {
    http(proxy.control.unwrap(), "GET", "/metrics", None, None).1
}

/// The value of the metric line that starts with `series`.
fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn the_eleventh_connection_from_one_address_is_refused_while_another_address_gets_in() {
    let up = Upstream::start("u");
    let proxy = SiteProxy::start(&limited_site("connections_per_client = 10", &[&up], ""));
    let mut held: Vec<TcpStream> = (0..10)
        .map(|_| connect_from("127.0.0.1", proxy.addr))
        .collect();
    for c in &mut held {
        assert_eq!(exchange(c, "").map(|e| e.0), Some(200));
    }
    // The eleventh is closed at accept: no answer.
    let mut eleventh = connect_from("127.0.0.1", proxy.addr);
    assert_eq!(exchange(&mut eleventh, ""), None);
    // Another client network is not affected.
    assert_eq!(get_from("127.0.0.2", proxy.addr).map(|e| e.0), Some(200));
    // The ten held are still served.
    assert_eq!(exchange(&mut held[3], "").map(|e| e.0), Some(200));
    // One closed makes room for one.
    held.pop();
    assert!(wait_until(Duration::from_secs(5), || get_from(
        "127.0.0.1",
        proxy.addr
    )
    .is_some_and(|e| e.0 == 200)));
    let page = metrics(&proxy);
    assert!(
        metric(
            &page,
            "meridian_proxy_limited_total{reason=\"connections\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{page}"
    );
}

#[test]
fn over_its_rate_a_client_gets_429_with_retry_after_and_recovers() {
    let up = Upstream::start("u");
    let proxy = SiteProxy::start(&limited_site("rate = \"2/s\"\nburst = 5", &[&up], ""));
    let mut conn = connect_from("127.0.0.1", proxy.addr);
    for _ in 0..5 {
        assert_eq!(exchange(&mut conn, "").map(|e| e.0), Some(200));
    }
    let (status, head) = exchange(&mut conn, "").expect("an answer");
    assert_eq!(status, 429, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1\r\n"),
        "{head}"
    );
    // Twenty more refused at once: every one counted, one log line for them all.
    for _ in 0..20 {
        assert_eq!(exchange(&mut conn, "").map(|e| e.0), Some(429));
    }
    // The refusals reached no server.
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 5);
    let page = metrics(&proxy);
    assert_eq!(
        metric(&page, "meridian_proxy_limited_total{reason=\"rate\"}"),
        Some(21.0),
        "{page}"
    );
    let log = std::fs::read_to_string(&proxy.stderr_log).unwrap();
    let lines = log.matches("client refused").count();
    assert!(lines == 1 || lines == 2, "{lines} refusal lines:\n{log}");
    // Another client network has its own budget.
    assert_eq!(get_from("127.0.0.2", proxy.addr).map(|e| e.0), Some(200));
    // Two requests a second come back.
    assert!(wait_until(Duration::from_secs(3), || exchange(
        &mut conn, ""
    )
    .is_some_and(|e| e.0 == 200)));
    let page = metrics(&proxy);
    assert!(
        metric(&page, "meridian_proxy_limited_total{reason=\"rate\"}").is_some_and(|n| n >= 1.0),
        "{page}"
    );
}

/// Many distinct clients (named by a trusted proxy's `X-Forwarded-For`) never make the rate
/// limiter remember more than its cap: the least recent are forgotten and counted.
#[test]
fn the_rate_limiter_remembers_at_most_its_cap_of_clients() {
    let up = Upstream::start("u");
    let proxy = SiteProxy::start(&limited_site(
        "rate = \"1/s\"\nmax_clients = 1000",
        &[&up],
        "trusted_proxies = [\"127.0.0.1\"]",
    ));
    let mut conn = connect_from("127.0.0.1", proxy.addr);
    for i in 0..5000u32 {
        let client = std::net::Ipv4Addr::from(0x0a00_0000 + i);
        let (status, head) =
            exchange(&mut conn, &format!("X-Forwarded-For: {client}\r\n")).expect("an answer");
        assert_eq!(status, 200, "{head}");
    }
    // The last client is remembered: its second request within the second is refused.
    let last = std::net::Ipv4Addr::from(0x0a00_0000 + 4999);
    assert_eq!(
        exchange(&mut conn, &format!("X-Forwarded-For: {last}\r\n")).map(|e| e.0),
        Some(429)
    );
    let page = metrics(&proxy);
    assert_eq!(
        metric(&page, "meridian_proxy_rate_limiter_clients"),
        Some(1000.0),
        "{page}"
    );
    assert_eq!(
        metric(&page, "meridian_proxy_rate_limiter_evictions_total"),
        Some(4000.0),
        "{page}"
    );
}

#[test]
fn check_names_the_limit_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    for (limits, says) in [
        ("rate = \"ten/s\"", "limits.rate"),
        ("burst = 4", "limits.burst"),
        (
            "connections_per_client = 0",
            "limits.connections_per_client",
        ),
        ("client_prefix_v6 = 129", "limits.client_prefix_v6"),
        ("max_clients = 0", "limits.max_clients"),
        ("bogus = 1", "bogus"),
    ] {
        let file = dir.path().join("site.toml");
        std::fs::write(
            &file,
            format!(
                "[limits]\n{limits}\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\npool = \"p\"\n\n[pool.p]\nservers = [{{ address = \"127.0.0.1:9\" }}]\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{limits}: {text}");
        assert!(
            text.contains("site.toml") && text.contains(says),
            "{limits}: {text}"
        );
    }
}
