//! Reading a client's stream of requests, delivered in pieces of every size.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};

use super::{read_requests, Ended, Limits};

/// An in-memory stream that gives at most `step` bytes per read.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let n = this.step.min(this.data.len()).min(buf.remaining());
        buf.put_slice(&this.data[..n]);
        this.data = &this.data[n..];
        Poll::Ready(Ok(()))
    }
}

const LIMITS: Limits = Limits {
    max_headers: 10,
    max_head: 8192,
    head_timeout: Duration::from_secs(1),
};

/// The targets read and their bodies, and how reading ended, the same for every piece size.
fn read(input: &[u8]) -> (Vec<(String, String)>, Ended) {
    let mut seen = None;
    for step in [1, 2, 7, 64, 4096] {
        let (requests, ended) = read_requests(Trickle { data: input, step }, LIMITS);
        let requests: Vec<(String, String)> = requests
            .into_iter()
            .map(|(req, body)| {
                let body = String::from_utf8(body).unwrap();
                (req.uri().to_string(), body)
            })
            .collect();
        match &seen {
            None => seen = Some((requests, ended)),
            Some(first) => assert_eq!(first, &(requests, ended), "step {step}"),
        }
    }
    seen.unwrap()
}

fn targets(of: &[(String, String)]) -> Vec<&str> {
    of.iter().map(|(t, _)| t.as_str()).collect()
}

#[test]
fn pipelined_requests_are_read_with_their_bodies_and_a_bad_framing_stops_the_reading() {
    let pipelined = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nT: 1\r\n\r\nGET /c HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /d HTTP/1.1\r\n\r\n";
    let (requests, ended) = read(pipelined);
    assert_eq!(targets(&requests), ["/a", "/b"]);
    assert_eq!(requests[0].1, "hello");
    assert_eq!(requests[1].1, "hello");
    assert_eq!(
        ended,
        Ended::BadFraming("Transfer-Encoding with Content-Length")
    );
    // A body that looks like a head is a body.
    let body = b"POST / HTTP/1.1\r\nContent-Length: 60\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\nGET /next HTTP/1.1\r\n\r\n";
    let (requests, ended) = read(body);
    assert_eq!(targets(&requests), ["/", "/next"]);
    assert_eq!(requests[0].1.len(), 60);
    assert_eq!(ended, Ended::Between);
    let twice = b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello";
    assert_eq!(
        read(twice).1,
        Ended::BadFraming("several Content-Length headers")
    );
}

#[test]
fn malformed_and_oversized_heads_are_refused_and_a_cut_stream_ends_where_it_was() {
    for (input, ended) in [
        (
            &b"GET / HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n"[..],
            Ended::Refused { too_large: false },
        ),
        (
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            Ended::Refused { too_large: false },
        ),
        (
            b"GET / HTTP/2.0\r\n\r\n",
            Ended::Refused { too_large: false },
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", Ended::InHead),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Ended::H2c),
        (b"PRI * HTTP/2.0\r\n", Ended::InHead),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nshort",
            Ended::BadBody,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            Ended::BadBody,
        ),
    ] {
        assert_eq!(read(input).1, ended, "{}", String::from_utf8_lossy(input));
    }
    // Eleven fields where ten are allowed, and a head past the byte limit.
    let many: String = (0..11).map(|i| format!("X-F-{i}: {i}\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(read(many.as_bytes()).1, Ended::Refused { too_large: true });
    let long = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(9000));
    assert_eq!(read(long.as_bytes()).1, Ended::Refused { too_large: true });
    // An absolute-form target is kept whole.
    let (requests, _) = read(b"GET http://example.test/p?q HTTP/1.1\r\n\r\n");
    assert_eq!(targets(&requests), ["http://example.test/p?q"]);
}
