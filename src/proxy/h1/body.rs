//! A response body read from its connection: how it is delimited, and reading it so.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::{header, StatusCode};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::{Conn, Error, Head, MAX_HEAD, MAX_HEADERS, READ_MAX, READ_MIN, ROOM_MIN};

/// How a response's body is delimited, and whether the connection may carry another
/// request after it (RFC 9112 sections 6.3 and 9.3).
fn framing(head: &Head, head_only: bool) -> Result<(Framing, bool), Error> {
    let keep_alive = super::keeps_alive(head.version, &head.headers);
    let status = head.status;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok((Framing::Upgrade, false));
    }
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Length(0), keep_alive));
    }
    if head.headers.contains_key(header::TRANSFER_ENCODING) {
        // With a length as well, the connection is not trusted with another request.
        let with_length = head.headers.contains_key(header::CONTENT_LENGTH);
        // Not chunked last: to the connection's close (RFC 9112 section 6.3).
        return Ok(match super::codings(&head.headers) {
            super::Codings::NotChunkedLast => (Framing::Close, false),
            _ => (Framing::Chunked(Chunk::Size), keep_alive && !with_length),
        });
    }
    let mut length = None;
    for v in head.headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|b| *b == b',') {
            let part = part.trim_ascii();
            let n = std::str::from_utf8(part)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(Error::Malformed("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Malformed("conflicting Content-Length"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), keep_alive),
        None => (Framing::Close, false),
    })
}

/// What the start of a read buffer holds of a chunked body's trailer section.
enum Section {
    /// Not all of it yet.
    Partial,
    /// An empty one: the body's end.
    Empty,
    Fields(http::HeaderMap),
}

/// The trailer section at the start of `buf`, taken from it once whole.
fn trailers(buf: &mut bytes::BytesMut) -> Result<Section, Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (len, located) = match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((len, found))) => (len, super::locate(buf.as_ptr(), found)?),
        Ok(httparse::Status::Partial) => return Ok(Section::Partial),
        Err(_) => return Err(Error::Malformed("bad trailer section")),
    };
    let section = buf.split_to(len).freeze();
    if located.is_empty() {
        return Ok(Section::Empty);
    }
    super::cut(&section, located).map(Section::Fields)
}

/// Where a response body's reading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the server closes.
    Close,
    /// A `101`: the connection is the upgrade's, not the body's.
    Upgrade,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of a chunk's data are still to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section: fields until an empty line.
    Trailers,
}

/// A response body read from its connection.
pub struct Body<I = super::Io> {
    conn: Option<Conn<I>>,
    framing: Framing,
    /// The connection may carry another request once the body has ended.
    keep_alive: bool,
}

impl<I> Body<I> {
    /// The body of the response `head` names, read from `conn`; `reusable` when the request
    /// went whole (else the connection is not used again).
    pub(super) fn new(
        mut conn: Conn<I>,
        head: &Head,
        head_only: bool,
        reusable: bool,
    ) -> Result<Body<I>, Error> {
        let (framing, keep_alive) = framing(head, head_only)?;
        conn.first_read = match framing {
            Framing::Length(n) => usize::try_from(n)
                .unwrap_or(usize::MAX)
                .saturating_add(head.len),
            _ => READ_MIN,
        }
        .clamp(ROOM_MIN, READ_MAX);
        Ok(Body {
            conn: Some(conn),
            framing,
            keep_alive: keep_alive && reusable,
        })
    }

    /// A request body read from a client's connection: `length` bytes, or chunked.
    pub fn of_request(conn: Conn<I>, length: Option<u64>) -> Body<I> {
        Body {
            conn: Some(conn),
            framing: match length {
                Some(n) => Framing::Length(n),
                None => Framing::Chunked(Chunk::Size),
            },
            keep_alive: true,
        }
    }

    /// The connection, if the body has been read to its end and the connection can carry
    /// another request.
    pub fn take_reusable(&mut self) -> Option<Conn<I>> {
        let done = matches!(self.framing, Framing::Done | Framing::Length(0));
        let conn = self
            .conn
            .take_if(|c| done && self.keep_alive && c.buf.is_empty())?;
        self.framing = Framing::Done;
        Some(conn)
    }

    /// The connection, and whether the body was read to its end: a client's connection goes
    /// back to its server loop either way (which reads what is left of the body, or closes).
    pub fn take_conn(&mut self) -> Option<(Conn<I>, bool)> {
        let done = matches!(self.framing, Framing::Done | Framing::Length(0));
        self.conn.take().map(|c| (c, done))
    }

    /// The connection of a `101` response, for the upgrade.
    pub fn take_upgraded(&mut self) -> Option<Conn<I>> {
        self.conn.take_if(|_| self.framing == Framing::Upgrade)
    }
}

impl<I: tokio::io::AsyncRead + Unpin> Body<I> {
    /// Reads more when nothing is buffered; the end of the stream is an error here.
    fn poll_more(conn: &mut Conn<I>, cx: &mut Context<'_>, want: u64) -> Poll<Result<(), Error>> {
        if !conn.buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let want = usize::try_from(want).unwrap_or(usize::MAX);
        match ready!(conn.poll_fill(cx, want))? {
            0 => Poll::Ready(Err(Error::ClosedEarly)),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match self.framing {
                Framing::Done | Framing::Upgrade | Framing::Length(0) => return Poll::Ready(None),
                Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
                    ready!(Self::poll_more(conn, cx, left))?;
                    let n = conn
                        .buf
                        .len()
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    let data = conn.buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.framing = match self.framing {
                        Framing::Length(_) => Framing::Length(left),
                        _ if left == 0 => Framing::Chunked(Chunk::DataEnd),
                        _ => Framing::Chunked(Chunk::Data(left)),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Close => {
                    if conn.buf.is_empty() && ready!(conn.poll_fill(cx, READ_MAX))? == 0 {
                        self.framing = Framing::Done;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(conn.buf.split().freeze()))));
                }
                Framing::Chunked(Chunk::Size) => match httparse::parse_chunk_size(&conn.buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        conn.buf.advance(used);
                        self.framing = Framing::Chunked(match size {
                            0 => Chunk::Trailers,
                            n => Chunk::Data(n),
                        });
                    }
                    Ok(httparse::Status::Partial) if conn.buf.len() < MAX_HEAD => {
                        let more = conn.buf.len() + 1;
                        ready!(Self::poll_more_than(conn, cx, more))?;
                    }
                    _ => return Poll::Ready(Some(Err(Error::Malformed("bad chunk size")))),
                },
                Framing::Chunked(Chunk::DataEnd) => {
                    if conn.buf.len() < 2 {
                        ready!(Self::poll_more_than(conn, cx, 2))?;
                        continue;
                    }
                    if &conn.buf[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(Error::Malformed("chunk without its CRLF"))));
                    }
                    conn.buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers) => match trailers(&mut conn.buf)? {
                    Section::Empty => {
                        self.framing = Framing::Done;
                        return Poll::Ready(None);
                    }
                    Section::Fields(fields) => {
                        self.framing = Framing::Done;
                        return Poll::Ready(Some(Ok(Frame::trailers(fields))));
                    }
                    Section::Partial if conn.buf.len() < MAX_HEAD => {
                        let more = conn.buf.len() + 1;
                        ready!(Self::poll_more_than(conn, cx, more))?;
                    }
                    Section::Partial => {
                        return Poll::Ready(Some(Err(Error::Malformed("trailers too long"))))
                    }
                },
            }
        }
    }

    /// Reads until at least `len` bytes are buffered; the end of the stream is an error here.
    fn poll_more_than(
        conn: &mut Conn<I>,
        cx: &mut Context<'_>,
        len: usize,
    ) -> Poll<Result<(), Error>> {
        while conn.buf.len() < len {
            if ready!(conn.poll_fill(cx, READ_MIN))? == 0 {
                return Poll::Ready(Err(Error::ClosedEarly));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: tokio::io::AsyncRead + Unpin> HttpBody for Body<I> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        let next = ready!(this.poll_next(cx));
        if let Some(Err(_)) = &next {
            // A broken body ends here, and its connection closes.
            this.keep_alive = false;
            this.framing = Framing::Done;
            this.conn = None;
        }
        Poll::Ready(next)
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
            || matches!(
                self.framing,
                Framing::Done | Framing::Upgrade | Framing::Length(0)
            )
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done | Framing::Upgrade => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
