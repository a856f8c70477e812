//! The HTTP/1.1 client against scripted servers on loopback.

use super::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A server that answers each request head it reads with the next of `answers`, and
/// sends back everything it read, in order, when it is done.
async fn server(
    answers: Vec<&'static [u8]>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        for answer in answers {
            let mut heads = seen.windows(4).filter(|w| w == b"\r\n\r\n").count();
            let before = heads;
            while heads == before {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return seen;
                }
                seen.extend_from_slice(&chunk[..n]);
                heads = seen.windows(4).filter(|w| w == b"\r\n\r\n").count();
            }
            s.write_all(answer).await.unwrap();
        }
        seen
    });
    (addr, task)
}

/// Sends `req` on `conn` as the pool does: its head borrowed, its body given.
async fn send<B>(conn: Conn, req: Request<B>) -> Result<Response<Body>, Error>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    send_with(conn, req, None).await
}

async fn send_with<B>(
    conn: Conn,
    req: Request<B>,
    interim: Option<&InterimSink>,
) -> Result<Response<Body>, Error>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let head = RequestHead {
        method: &parts.method,
        target: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        headers: &parts.headers,
        interim,
    };
    conn.send(head, body).await
}

async fn conn(addr: std::net::SocketAddr) -> Conn {
    Conn::new(Io::Plain(Tcp::new(TcpStream::connect(addr).await.unwrap())))
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header("host", "example.test")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Reads a response body whole; the connection back, when it may carry another request.
async fn read(resp: Response<Body>) -> (StatusCode, Vec<u8>, Option<Conn>) {
    let (status, all, _, conn) = read_with_trailers(resp).await;
    (status, all, conn)
}

/// [`read`], and the trailer fields that came after the body.
async fn read_with_trailers(
    resp: Response<Body>,
) -> (StatusCode, Vec<u8>, Option<HeaderMap>, Option<Conn>) {
    let status = resp.status();
    let mut body = resp.into_body();
    let (mut all, mut trailers) = (Vec::new(), None);
    while let Some(frame) = body.frame().await {
        match frame.unwrap().into_data() {
            Ok(data) => all.extend_from_slice(&data),
            Err(frame) => trailers = Some(frame.into_trailers().unwrap()),
        }
    }
    (status, all, trailers, body.take_reusable())
}

#[tokio::test]
async fn chunked_and_length_bodies_read_whole_and_the_connection_is_reused() {
    let (addr, server) = server(vec![
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\nx-sum: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc",
    ])
    .await;
    let resp = send(conn(addr).await, get("/one")).await.unwrap();
    let (status, body, trailers, again) = read_with_trailers(resp).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"hello, world"[..])
    );
    let trailers = trailers.expect("the trailer section");
    assert_eq!(
        (
            trailers["x-trailer"].as_bytes(),
            trailers["x-sum"].as_bytes()
        ),
        (&b"1"[..], &b"2"[..])
    );
    let mut again = again.expect("reusable after a chunked body");
    assert!(again.alive());
    let resp = send(again, get("/two?q=1")).await.unwrap();
    assert_eq!(resp.body().size_hint().exact(), Some(3));
    let (_, body, again) = read(resp).await;
    assert_eq!(body, b"abc");
    assert!(again.is_some());
    let seen = String::from_utf8(server.await.unwrap()).unwrap();
    assert!(
        seen.starts_with("GET /one HTTP/1.1\r\nhost: example.test\r\n\r\n"),
        "{seen}"
    );
    assert!(seen.contains("GET /two?q=1 HTTP/1.1\r\n"), "{seen}");
}

#[tokio::test]
async fn a_close_delimited_or_closing_response_ends_the_connection() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\n\r\nuntil the end"[..],
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 13\r\n\r\nuntil the end",
        b"HTTP/1.0 200 OK\r\ncontent-length: 13\r\n\r\nuntil the end",
    ] {
        let (addr, _server) = server(vec![answer]).await;
        let (_, body, again) = read(send(conn(addr).await, get("/")).await.unwrap()).await;
        assert_eq!(body, b"until the end");
        assert!(again.is_none(), "{}", String::from_utf8_lossy(answer));
    }
}

#[tokio::test]
async fn interim_responses_are_passed_on_and_head_answers_have_no_body() {
    let (addr, _server) = server(vec![
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\nconnection: x-hop\r\nx-hop: 1\r\n\r\nHTTP/1.1 204 No Content\r\ncontent-length: 10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
    ])
    .await;
    let (sink, mut interim) = tokio::sync::mpsc::channel(INTERIM_HELD);
    let resp = send_with(conn(addr).await, get("/"), Some(&sink)).await;
    let (status, body, again) = read(resp.unwrap()).await;
    assert_eq!((status, body.len()), (StatusCode::NO_CONTENT, 0));
    // The 103 is passed on without its hop-by-hop fields; the 100 was the proxy's own.
    let hints = interim.try_recv().unwrap();
    assert_eq!(hints.status, StatusCode::EARLY_HINTS);
    assert_eq!(format!("{:?}", hints.headers), r#"{"link": "</a>"}"#);
    assert!(interim.try_recv().is_err());
    let mut head = get("/");
    *head.method_mut() = Method::HEAD;
    let resp = send(again.unwrap(), head).await.unwrap();
    assert!(resp.body().is_end_stream());
    let (status, _, again) = read(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert!(again.is_some());
}

/// A server flooding interim responses loses the excess: the request is not held up by a
/// client that has not written them yet.
#[tokio::test]
async fn a_flood_of_interim_responses_is_cut_to_what_the_client_holds() {
    let flood = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n".repeat(50);
    let answer: &'static [u8] = [
        flood,
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
    ]
    .concat()
    .leak();
    let (addr, _server) = server(vec![answer]).await;
    let (sink, mut interim) = tokio::sync::mpsc::channel(INTERIM_HELD);
    let resp = send_with(conn(addr).await, get("/"), Some(&sink)).await;
    assert_eq!(resp.unwrap().status(), StatusCode::OK);
    let mut held = 0;
    while interim.try_recv().is_ok() {
        held += 1;
    }
    assert_eq!(held, INTERIM_HELD);
}

#[tokio::test]
async fn request_framing_is_the_bodys_own() {
    let (addr, server) = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/up")
        .header("content-length", "99")
        .header("transfer-encoding", "chunked")
        .body(Full::new(Bytes::from_static(b"12345")))
        .unwrap();
    read(send(conn(addr).await, req).await.unwrap()).await;
    let seen = server.await.unwrap();
    let seen = String::from_utf8_lossy(&seen);
    assert_eq!(seen, "POST /up HTTP/1.1\r\ncontent-length: 5\r\n\r\n12345");
}

/// A body of the frames given, of a length not known ahead.
struct Frames(VecDeque<Frame<Bytes>>);

impl HttpBody for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

#[tokio::test]
async fn request_trailers_go_in_the_last_chunk() {
    let (addr, server) = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]).await;
    let mut fields = HeaderMap::new();
    fields.insert("x-sum", HeaderValue::from_static("9"));
    let body = Frames(
        [
            Frame::data(Bytes::from_static(b"part")),
            Frame::trailers(fields),
        ]
        .into(),
    );
    let req = Request::builder()
        .method(Method::POST)
        .uri("/up")
        .body(body)
        .unwrap();
    read(send(conn(addr).await, req).await.unwrap()).await;
    let seen = server.await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&seen),
        "POST /up HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n4\r\npart\r\n0\r\nx-sum: 9\r\n\r\n"
    );
}

/// A body that gives one chunk and then never ends.
struct Trickle(bool);

impl HttpBody for Trickle {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match std::mem::replace(&mut self.0, true) {
            false => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"part"))))),
            true => Poll::Pending,
        }
    }
}

#[tokio::test]
async fn an_answer_before_the_body_has_gone_ends_the_sending() {
    let (addr, server) = server(vec![
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Too Large\r\ncontent-length: 4\r\n\r\nbig!",
    ])
    .await;
    let req = Request::builder()
        .method(Method::PUT)
        .uri("/")
        .body(Trickle(false))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), send(conn(addr).await, req))
        .await
        .expect("the early answer is taken")
        .unwrap();
    let (status, body, again) = read(resp).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::PAYLOAD_TOO_LARGE, &b"big!"[..])
    );
    assert!(
        again.is_none(),
        "a request cut short leaves the connection unusable"
    );
    drop(server);
}

#[tokio::test]
async fn broken_answers_are_errors() {
    for (answer, closed_before) in [
        (&b""[..], true),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            false,
        ),
        (b"HTTP/1.1 200 OK\r\ncontent", false),
        (b"SSH-2.0-OpenSSH\r\n\r\n", false),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = s.read(&mut head).await;
            s.write_all(answer).await.unwrap();
        });
        let e = send(conn(addr).await, get("/"))
            .await
            .err()
            .expect("an error");
        assert_eq!(e.closed_before_answer(), closed_before, "{e}");
        server.await.unwrap();
    }
}

#[tokio::test]
async fn a_body_cut_short_is_an_error() {
    let (addr, _server) = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"]).await;
    let resp = send(conn(addr).await, get("/")).await.unwrap();
    let mut body = resp.into_body();
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        failed |= frame.is_err();
    }
    assert!(failed);
    assert!(body.take_reusable().is_none());
}

#[tokio::test]
async fn an_idle_connection_the_server_closed_is_not_alive() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut c = conn(addr).await;
    let (s, _) = listener.accept().await.unwrap();
    assert!(c.alive());
    drop(s);
    // Once the close has reached the socket, a look sees it.
    let Io::Plain(socket) = &c.io else {
        unreachable!()
    };
    socket.get_ref().readable().await.unwrap();
    assert!(!c.alive());
}

#[tokio::test]
async fn a_length_beside_chunked_framing_is_dropped_and_not_trusted_again() {
    let (addr, _server) = server(vec![
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 99\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ])
    .await;
    let resp = send(conn(addr).await, get("/")).await.unwrap();
    assert!(!resp.headers().contains_key(header::CONTENT_LENGTH));
    let (_, body, again) = read(resp).await;
    assert_eq!(body, b"ok");
    assert!(again.is_none());
}

#[tokio::test]
async fn an_answer_in_two_parts_during_the_body_wakes_the_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 1024];
        let _ = s.read(&mut head).await;
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
        // A pause that makes the two parts two reads; the answer is taken either way.
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.write_all(b"HTTP/1.1 413 Too Large\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        s
    });
    let req = Request::builder()
        .method(Method::PUT)
        .uri("/")
        .body(Trickle(false))
        .unwrap();
    let send = send(conn(addr).await, req);
    // The bound is looked at first: a request never woken is not saved by the timer's wake.
    let resp = tokio::select! {
        biased;
        _ = tokio::time::sleep(Duration::from_secs(10)) => panic!("the second part never woke the request"),
        resp = send => resp.unwrap(),
    };
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    drop(server.await.unwrap());
}

#[tokio::test]
async fn the_first_read_is_sized_by_the_last_response_of_a_stated_length() {
    let long: &'static [u8] = Box::leak(
        [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 20000\r\n\r\n"[..],
            &[b'x'; 20000][..],
        ]
        .concat()
        .into_boxed_slice(),
    );
    let (addr, _server) = server(vec![
        long,
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ])
    .await;
    let conn = conn(addr).await;
    assert_eq!(conn.first_read, READ_MIN);
    let (_, body, again) = read(send(conn, get("/long")).await.unwrap()).await;
    assert_eq!(body.len(), 20000);
    let again = again.unwrap();
    assert_eq!(again.first_read, 20000 + 42);
    let (_, _, again) = read(send(again, get("/chunked")).await.unwrap()).await;
    assert_eq!(again.unwrap().first_read, READ_MIN);
}
