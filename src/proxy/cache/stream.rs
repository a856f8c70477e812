//! A response body being stored while it streams, and read as it arrives by the requests
//! that waited for the same key: coalesced requests get the response at the pace the server
//! sends it, not once it has been stored whole.
//!
//! The body's chunks are kept once (the client's own `Bytes`, not copies) while it is still
//! storable, since a request may join from its first chunk until then. Past the route's
//! entry limit nobody new joins, nothing is stored, and a chunk is dropped once every reader
//! has read it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};

/// One body on its way to the client that fetched it, shared with its readers.
pub(super) struct Growing {
    state: Mutex<State>,
}

struct State {
    /// The chunks not yet dropped, from chunk number `first` on.
    chunks: VecDeque<Bytes>,
    first: usize,
    /// Bytes so far.
    len: u64,
    /// Still storable: every chunk is kept, and requests may join.
    keep: bool,
    end: Option<End>,
    /// Each reader's next chunk number, `None` once it has gone, with its waker.
    readers: Vec<(Option<usize>, Option<Waker>)>,
}

/// How a body ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    Whole,
    /// The server's body failed, or nobody read it to its end.
    Cut,
}

impl State {
    fn total(&self) -> usize {
        self.first + self.chunks.len()
    }

    fn wake(&mut self) {
        for (_, waker) in &mut self.readers {
            if let Some(w) = waker.take() {
                w.wake();
            }
        }
    }

    /// Drops the chunks every reader has read, once the body is no longer kept.
    fn trim(&mut self) {
        if self.keep {
            return;
        }
        let read = self
            .readers
            .iter()
            .filter_map(|(next, _)| *next)
            .min()
            .unwrap_or(usize::MAX)
            .min(self.total());
        while self.first < read {
            self.chunks.pop_front();
            self.first += 1;
        }
    }
}

impl Growing {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reader from the first chunk on, while the body is still kept whole.
    pub(super) fn join(self: &Arc<Self>) -> Option<Following> {
        let mut s = self.lock();
        if !s.keep || s.end == Some(End::Cut) {
            return None;
        }
        s.readers.push((Some(0), None));
        Some(Following {
            growing: self.clone(),
            slot: s.readers.len() - 1,
        })
    }
}

/// The writing side, held by the body going to the fetching request's client: its chunks are
/// kept up to the route's limit and handed to the cache when the body ends whole.
pub struct Tee {
    growing: Arc<Growing>,
    max: u64,
    commit: Option<Box<dyn FnOnce(Bytes) + Send + Sync>>,
}

impl Tee {
    /// A tee storing at most `max` bytes through `commit`, and the body its readers join.
    pub(super) fn new(
        max: u64,
        commit: Box<dyn FnOnce(Bytes) + Send + Sync>,
    ) -> (Tee, Arc<Growing>) {
        let growing = Arc::new(Growing {
            state: Mutex::new(State {
                chunks: VecDeque::new(),
                first: 0,
                len: 0,
                keep: true,
                end: None,
                readers: Vec::new(),
            }),
        });
        let tee = Tee {
            growing: growing.clone(),
            max,
            commit: Some(commit),
        };
        (tee, growing)
    }

    /// Keeps a chunk; past the limit the body streams on uncached.
    pub fn data(&mut self, chunk: &Bytes) {
        let mut s = self.growing.lock();
        if s.end.is_some() {
            return;
        }
        s.len += chunk.len() as u64;
        if s.keep && s.len > self.max {
            s.keep = false;
            self.commit = None;
        }
        s.chunks.push_back(chunk.clone());
        s.trim();
        s.wake();
    }

    /// The body ended whole: it is stored, and its readers reach their end.
    pub fn end(&mut self) {
        let body = {
            let mut s = self.growing.lock();
            if s.end.is_some() {
                return;
            }
            s.end = Some(End::Whole);
            s.wake();
            // Copied into one buffer of its own (a chunk may share a larger read buffer), and
            // only when it is stored: past the limit nothing is kept.
            let whole = self.commit.is_some().then(|| {
                let mut whole = BytesMut::with_capacity(s.len as usize);
                for c in &s.chunks {
                    whole.extend_from_slice(c);
                }
                whole.freeze()
            });
            s.trim();
            whole
        };
        if let (Some(commit), Some(body)) = (self.commit.take(), body) {
            commit(body);
        }
    }

    /// Whether the body is still being stored (within the route's entry limit).
    pub fn storing(&self) -> bool {
        self.commit.is_some()
    }

    /// Whether requests are reading the body besides the client fetching it.
    pub fn followed(&self) -> bool {
        self.growing
            .lock()
            .readers
            .iter()
            .any(|(next, _)| next.is_some())
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        let mut s = self.growing.lock();
        if s.end.is_none() {
            s.end = Some(End::Cut);
            s.wake();
        }
    }
}

/// A coalesced request's body: the fetching request's, read as it arrives.
pub struct Following {
    growing: Arc<Growing>,
    slot: usize,
}

/// The body being followed was cut off (the server's failed): so is this one.
#[derive(Debug)]
pub struct CutOff;

impl std::fmt::Display for CutOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the response being followed was cut off")
    }
}

impl std::error::Error for CutOff {}

impl Body for Following {
    type Data = Bytes;
    type Error = CutOff;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CutOff>>> {
        let this = self.get_mut();
        let mut s = this.growing.lock();
        let Some(next) = s.readers[this.slot].0 else {
            return Poll::Ready(None);
        };
        if next < s.total() {
            let chunk = s.chunks[next - s.first].clone();
            s.readers[this.slot].0 = Some(next + 1);
            s.trim();
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match s.end {
            Some(End::Whole) => Poll::Ready(None),
            Some(End::Cut) => Poll::Ready(Some(Err(CutOff))),
            None => {
                s.readers[this.slot].1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = self.growing.lock();
        s.end == Some(End::Whole) && s.readers[self.slot].0 == Some(s.total())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut s = self.growing.lock();
        s.readers[self.slot] = (None, None);
        s.trim();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn tee(max: u64) -> (Tee, Arc<Growing>, Arc<Mutex<Option<Bytes>>>) {
        let stored = Arc::new(Mutex::new(None));
        let into = stored.clone();
        let (tee, growing) = Tee::new(max, Box::new(move |b| *into.lock().unwrap() = Some(b)));
        (tee, growing, stored)
    }

    #[tokio::test]
    async fn readers_get_every_chunk_from_the_first_and_the_body_is_stored() {
        let (mut tee, growing, stored) = tee(100);
        tee.data(&Bytes::from_static(b"ab"));
        let early = growing.join().unwrap();
        tee.data(&Bytes::from_static(b"cd"));
        let late = growing.join().unwrap();
        let read = tokio::spawn(async move { early.collect().await.unwrap().to_bytes() });
        tee.data(&Bytes::from_static(b"ef"));
        tee.end();
        assert_eq!(read.await.unwrap(), "abcdef");
        assert_eq!(late.collect().await.unwrap().to_bytes(), "abcdef");
        assert_eq!(stored.lock().unwrap().as_deref(), Some(&b"abcdef"[..]));
    }

    #[tokio::test]
    async fn past_the_limit_nobody_joins_nothing_is_stored_and_read_chunks_go() {
        let (mut tee, growing, stored) = tee(3);
        let mut reader = growing.join().unwrap();
        tee.data(&Bytes::from_static(b"ab"));
        tee.data(&Bytes::from_static(b"cd"));
        assert!(growing.join().is_none());
        assert_eq!(growing.lock().chunks.len(), 2);
        let first = reader.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "ab");
        assert_eq!(growing.lock().chunks.len(), 1);
        tee.data(&Bytes::from_static(b"ef"));
        tee.end();
        assert_eq!(reader.collect().await.unwrap().to_bytes(), "cdef");
        assert!(growing.lock().chunks.is_empty());
        assert!(stored.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn a_body_cut_off_cuts_its_readers_and_stores_nothing() {
        let (mut tee, growing, stored) = tee(100);
        let reader = growing.join().unwrap();
        tee.data(&Bytes::from_static(b"ab"));
        assert!(tee.followed());
        drop(tee);
        assert!(reader.collect().await.is_err());
        assert!(stored.lock().unwrap().is_none());
        assert!(growing.join().is_none());
    }

    #[test]
    fn a_reader_waiting_is_woken_by_the_next_chunk() {
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let (mut tee, growing, _) = tee(100);
        let mut reader = growing.join().unwrap();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut reader).poll_frame(&mut cx).is_pending());
        tee.data(&Bytes::from_static(b"x"));
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(Pin::new(&mut reader).poll_frame(&mut cx).is_ready());
    }
}
