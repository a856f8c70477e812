//! Checks: whether this node answers as a client expects (DNS queries to its own service
//! address, HTTP, TCP), each a raw outcome.

use super::*;

/// How one check (or a prefix's set of checks) went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "kebab-case")]
pub enum Outcome {
    Good,
    /// The service answered, but not as expected (wrong rcode, flags, addresses or status).
    Wrong(String),
    /// No answer at all: timeout, refused, unreachable.
    NoAnswer(String),
}

impl Outcome {
    /// The worst of several outcomes: no answer over a wrong answer over good.
    pub(super) fn worst(outcomes: impl IntoIterator<Item = Outcome>) -> Outcome {
        let mut worst = Outcome::Good;
        for o in outcomes {
            worst = match (&worst, &o) {
                (Outcome::NoAnswer(_), _) => worst,
                (_, Outcome::NoAnswer(_)) => o,
                (Outcome::Wrong(_), _) => worst,
                _ => o,
            };
        }
        worst
    }
}

/// Runs every check of a prefix at once; the worst outcome decides.
pub async fn check_prefix(p: &PrefixSpec, timeout: Duration, http: &reqwest::Client) -> Outcome {
    let mut set = tokio::task::JoinSet::new();
    for c in &p.checks {
        let (c, http) = (c.clone(), http.clone());
        set.spawn(async move { run_check(&c, timeout, &http).await });
    }
    let mut outcomes = Vec::new();
    while let Some(r) = set.join_next().await {
        outcomes.push(r.unwrap_or_else(|e| Outcome::NoAnswer(format!("check task failed: {e}"))));
    }
    Outcome::worst(outcomes)
}

pub async fn run_check(c: &Check, timeout: Duration, http: &reqwest::Client) -> Outcome {
    match c {
        Check::Dns {
            server,
            name,
            qtype,
            rcode,
            addresses,
        } => match tokio::time::timeout(timeout, dns_query(*server, name, *qtype)).await {
            Err(_) => Outcome::NoAnswer(format!("no answer from {server} within {timeout:?}")),
            Ok(Err(e)) => Outcome::NoAnswer(format!("{server}: {e}")),
            Ok(Ok(m)) => judge_dns(&m, *rcode, addresses),
        },
        Check::Http { url, status } => {
            match tokio::time::timeout(timeout, http.get(url).send()).await {
                Err(_) => Outcome::NoAnswer(format!("{url}: no response within {timeout:?}")),
                Ok(Err(e)) => Outcome::NoAnswer(format!("{url}: {e}")),
                Ok(Ok(r)) => {
                    let code = r.status().as_u16();
                    if (status.0..=status.1).contains(&code) {
                        Outcome::Good
                    } else {
                        Outcome::Wrong(format!("{url}: status {code}"))
                    }
                }
            }
        }
    }
}

pub(super) async fn dns_query(
    server: SocketAddr,
    name: &Name,
    qtype: RecordType,
) -> std::io::Result<Message> {
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("literal"),
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    let id: u16 = rand::random();
    let mut q = Message::new(id, MessageType::Query, OpCode::Query);
    q.add_query(Query::query(name.clone(), qtype));
    let bytes = q.to_vec().map_err(std::io::Error::other)?;
    sock.send(&bytes).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).await?;
        match Message::from_vec(&buf[..n]) {
            Ok(m) if m.metadata.id == id && m.metadata.message_type == MessageType::Response => {
                return Ok(m)
            }
            _ => continue, // stray or spoofed datagram: keep waiting until the timeout
        }
    }
}

/// Judges a canary answer: rcode, AA, and (when configured) addresses only from the set.
pub fn judge_dns(m: &Message, rcode: ResponseCode, addresses: &[IpAddr]) -> Outcome {
    if m.metadata.response_code != rcode {
        return Outcome::Wrong(format!("rcode {} (want {rcode})", m.metadata.response_code));
    }
    if !m.metadata.authoritative {
        return Outcome::Wrong("answer is not authoritative (AA clear)".into());
    }
    if addresses.is_empty() {
        return Outcome::Good;
    }
    let got: Vec<IpAddr> = m.answers.iter().filter_map(|r| r.data.ip_addr()).collect();
    if got.is_empty() {
        return Outcome::Wrong("no address in the answer".into());
    }
    if let Some(bad) = got.iter().find(|a| !addresses.contains(a)) {
        return Outcome::Wrong(format!("answered {bad}, not an expected address"));
    }
    Outcome::Good
}
