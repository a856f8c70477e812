//! What each fuzz target does with one input, shared with `tests/fuzz_corpus.rs`, which replays
//! the seed corpus under `cargo test`. Every function must return for any input: a panic or a
//! hang is the bug the fuzzer looks for.

#![allow(dead_code, unreachable_pub)] // each target uses one of these; tests use them all

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use meridian::config::{self, LbInTransfer, Source, Transfer};
use meridian::dns::cookie::Secrets;
use meridian::dns::tsig::{Algorithm, Key};
use meridian::dns::{Loaded, Responder, Transport};
use meridian::health::HealthStore;

/// The demo config, with cookies on, answering over both transports.
pub fn packet(data: &[u8]) {
    static RESPONDER: OnceLock<Responder> = OnceLock::new();
    let responder = RESPONDER.get_or_init(|| {
        let mut cfg = config::load(&Source::demo()).expect("the demo config loads");
        cfg.server.cookie_secrets = Some(Arc::new(Secrets::new([7; 16], None)));
        // Transfers open to everyone, and one TSIG key, so both paths see every input.
        cfg.keys
            .push(Key::new("fuzz-key", Algorithm::HmacSha256, "ZnV6eg==").expect("key"));
        cfg.zones[0].transfer = Some(Transfer {
            allow: vec!["0.0.0.0/0".parse().expect("literal")],
            notify: Vec::new(),
            load_balanced: LbInTransfer::Snapshot { ttl: 30 },
            key: None,
        });
        Responder::new(Loaded::new(cfg, 1), Arc::new(HealthStore::in_memory()))
    });
    let client: SocketAddr = "192.0.2.7:5353".parse().expect("literal");
    let mut out = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        if responder.answer_into(data, client, transport, &mut out) {
            assert!(out.len() >= 12, "a reply shorter than a header");
            assert_eq!(out[..2], data[..2], "a reply with another ID");
            if transport == Transport::Udp {
                assert!(out.len() <= 1232, "a UDP reply over our EDNS size");
            }
        }
    }
    for message in responder.transfer(data, client).unwrap_or_default() {
        assert!(
            message.len() <= u16::MAX as usize,
            "a transfer message over 64 KiB"
        );
    }
}

/// A zone file for `example.test.`.
pub fn zone(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let origin = hickory_proto::rr::Name::from_ascii("example.test.").expect("literal");
    let _ = meridian::zone::Zone::parse(&text, Path::new("fuzz.zone"), &origin);
}

/// A load-balancing file beside a fixed server file and zone, through the whole config load;
/// and the same bytes as an anycast helper config.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = meridian::anycast::AnycastConfig::parse(&text, Path::new("anycast.toml"));
    let dir = tempfile::tempdir().expect("temp dir");
    let write =
        |name: &str, body: &str| std::fs::write(dir.path().join(name), body).expect("write");
    write(
        "meridian.toml",
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[[zone]]\norigin = \"example.test\"\nfile = \"example.test.zone\"\ngslb = \"example.test.gslb.toml\"\n",
    );
    write(
        "example.test.zone",
        "$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 900 1209600 60\n@ IN NS ns1\nns1 IN A 192.0.2.53\n",
    );
    write("example.test.gslb.toml", &text);
    let _ = config::load(&Source::File(dir.path().join("meridian.toml")));
}

/// A client's stream of HTTP/1.1 requests, read as a proxy connection reads it: heads,
/// framing and bodies.
pub fn http1(data: &[u8]) {
    use meridian::proxy::h1::server::{read_requests, Limits};
    let limits = Limits {
        max_headers: 100,
        max_head: 64 * 1024,
        head_timeout: std::time::Duration::from_secs(1),
    };
    let (requests, _) = read_requests(data, limits);
    let body_bytes: usize = requests.iter().map(|(_, body)| body.len()).sum();
    assert!(body_bytes <= data.len(), "more body than input");
}

/// A connection's first bytes as an L4 listener that takes PROXY headers and routes by server
/// name reads them: a PROXY header, then a TLS ClientHello from what follows it (or from the
/// start, when there is no header). Each reader may take only a prefix of what it is given.
pub fn l4_head(data: &[u8]) {
    use meridian::proxy::{l4, proxy_header};
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
    }
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let mut input = data;
            let after_header = match proxy_header::read(&mut input).await {
                Ok(_) => {
                    let taken = &data[..data.len() - input.len()];
                    assert!(
                        taken.starts_with(b"PROXY ") && taken.ends_with(b"\r\n")
                            || taken.starts_with(b"\r\n\r\n\0\r\nQUIT\n"),
                        "a header accepted from bytes that are not one"
                    );
                    input
                }
                Err(_) => data,
            };
            let mut rest = after_header;
            if let Ok((_, seen)) = l4::client_hello(&mut rest, Duration::from_secs(1)).await {
                assert!(
                    after_header.starts_with(&seen),
                    "the bytes to replay are not the ones read"
                );
                assert_eq!(
                    seen.len(),
                    after_header.len() - rest.len(),
                    "bytes read but not kept for the server"
                );
            }
        })
    });
}
