//! h2 streams served inside their connection's task.
//!
//! hyper's h2 server hands each stream it takes up to an executor, and the stock one spawns a
//! task per stream. Here the executor ([`Streams`]) only queues the stream, and the
//! connection's own future ([`WithStreams`]) polls the queued streams beside the connection:
//! a stream costs no task (no spawn, no entry in the runtime's task list, no scheduling of
//! its own), and its answer, once ready, is flushed by the same task that wrote it. nginx and
//! HAProxy likewise serve a connection's streams from the connection's own event handling.
//!
//! A stream still runs to its end after its connection's future has ended (as a spawned one
//! would); a connection cut at the drain timeout takes its streams with it. A stream that
//! panics ends alone, as a spawned one would: its connection and the other streams go on.
//!
//! A stream whose answer waits on the client's flow-control window for the send timeout is
//! reset (nginx's `send_timeout` on h2 streams). The client's socket may be read all the
//! while, so the connection's own send timeout ([`super::guard::SendTimeout`]) never sees
//! it; without this, a client that opens no window holds each such stream, and the server
//! connection its answer comes on, for as long as it likes. hyper polls an answer's body only
//! when the window has room, so the stream's own code notes, as it runs, when its answer is
//! ready and what its body did ([`note_answered`], [`Noted`]), and the stream's wrapper reads
//! that after each poll. A body waiting on its server is not the client's doing, and is not
//! timed.

use std::cell::Cell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;
use futures_util::FutureExt;

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor given to one connection's h2 server: it queues each stream for the
/// connection's [`WithStreams`] to run.
#[derive(Clone, Default)]
pub struct Streams {
    queued: Arc<Mutex<Vec<Stream>>>,
    /// How long an answer may wait on the client's window (none: for ever).
    send_timeout: Option<Duration>,
}

impl Streams {
    /// Streams whose answers may wait on the client's window for `send_timeout` at most.
    pub fn new(send_timeout: Duration) -> Streams {
        Streams {
            queued: Arc::default(),
            send_timeout: Some(send_timeout),
        }
    }
}

impl<F> hyper::rt::Executor<F> for Streams
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        // A panic is caught here (and reported by the panic hook) rather than unwinding
        // through the connection's task. The stream is dropped, which resets it.
        let stream = AssertUnwindSafe(stream).catch_unwind().map(drop);
        self.queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::pin(stream));
    }
}

thread_local! {
    /// What the stream being polled noted of itself in this poll ([`ANSWERED`], [`SENT`],
    /// [`AWAITING`]).
    static NOTED: Cell<u8> = const { Cell::new(0) };
}

/// The answer's head is ready.
const ANSWERED: u8 = 1;
/// The answer's body gave a frame to send.
const SENT: u8 = 2;
/// The body's last poll found it waiting on its server.
const AWAITING: u8 = 4;

fn note(set: u8, clear: u8) {
    NOTED.with(|n| n.set(n.get() & !clear | set));
}

/// Notes, from inside an h2 stream's poll, that its answer's head is ready.
pub fn note_answered() {
    note(ANSWERED, 0);
}

/// An h2 answer's body that notes, for its stream's send timeout, what each poll gave.
pub struct Noted<B>(pub B);

impl<B: Body<Data = Bytes> + Unpin> Body for Noted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.get_mut().0).poll_frame(cx);
        match &polled {
            Poll::Pending => note(AWAITING, 0),
            Poll::Ready(_) => note(SENT, AWAITING),
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// A running stream, whose answer may not wait on the client's window longer than `limit`
/// (when there is one): past it the stream ends, and dropping it resets it.
struct Paced {
    stream: Stream,
    limit: Option<Duration>,
    answered: bool,
    awaiting_server: bool,
    /// Armed while the answer waits on the client, from its last progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Paced {
    fn new(stream: Stream, limit: Option<Duration>) -> Paced {
        Paced {
            stream,
            limit,
            answered: false,
            awaiting_server: false,
            stalled: None,
        }
    }
}

impl Future for Paced {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let outer = NOTED.replace(0);
        let polled = this.stream.as_mut().poll(cx);
        let noted = NOTED.replace(outer);
        let Some(limit) = this.limit.filter(|_| polled.is_pending()) else {
            return polled;
        };
        this.answered |= noted & ANSWERED != 0;
        if noted & (ANSWERED | SENT) != 0 {
            this.stalled = None;
        }
        if noted & (SENT | AWAITING) != 0 {
            this.awaiting_server = noted & AWAITING != 0;
        }
        if !this.answered || this.awaiting_server {
            this.stalled = None;
            return Poll::Pending;
        }
        let timer = this
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                tracing::debug!(
                    "h2 stream reset: the client opened no window for the send timeout"
                );
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A connection's future with the streams its server takes up polled inside it; it ends
/// with the connection's outcome once the connection and all its streams have ended.
///
/// The connection and the streams each get a waker of their own, so a wake-up polls only the
/// side that was woken. Wake-ups raised while this future is being polled (a stream's answer
/// leaves frames for the connection to write; the connection's read hands a stream its data)
/// are served in the same poll instead of scheduling the task again.
pub struct WithStreams<C: Future> {
    conn: Pin<Box<C>>,
    queued: Arc<Mutex<Vec<Stream>>>,
    running: FuturesUnordered<Paced>,
    send_timeout: Option<Duration>,
    ended: Option<C::Output>,
    task: Arc<Task>,
    conn_side: Arc<Side>,
    stream_side: Arc<Side>,
    /// Wakers of the two sides, made once.
    wakers: [Waker; 2],
}

/// The task that polls a [`WithStreams`]: its waker, and whether it is being polled now.
#[derive(Default)]
struct Task {
    polling: AtomicBool,
    waker: AtomicWaker,
}

/// One side of a [`WithStreams`] (the connection, or its streams): woken since last polled.
struct Side {
    woken: AtomicBool,
    task: Arc<Task>,
}

impl Wake for Side {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        // Read after `woken` is set; the poll clears `polling` before it reads `woken` a last
        // time, so one of the two sees the other's write.
        if !self.task.polling.load(Ordering::SeqCst) {
            self.task.waker.wake();
        }
    }
}

/// How many rounds one poll of a [`WithStreams`] takes over wake-ups raised within it before
/// it lets the runtime's other tasks run.
const ROUNDS: usize = 8;

impl<C: Future> WithStreams<C> {
    /// `conn`, served with `streams` as its h2 server's executor.
    pub(super) fn new(conn: C, streams: &Streams) -> WithStreams<C> {
        let task = Arc::new(Task::default());
        let side = || {
            Arc::new(Side {
                woken: AtomicBool::new(true),
                task: task.clone(),
            })
        };
        let (conn_side, stream_side) = (side(), side());
        WithStreams {
            conn: Box::pin(conn),
            queued: streams.queued.clone(),
            running: FuturesUnordered::new(),
            send_timeout: streams.send_timeout,
            ended: None,
            wakers: [conn_side.clone().into(), stream_side.clone().into()],
            conn_side,
            stream_side,
            task,
        }
    }

    /// Moves the streams taken up since the last call to the running set: whether any were.
    fn take_queued(&mut self) -> bool {
        let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        let any = !queued.is_empty();
        for stream in queued.drain(..) {
            self.running.push(Paced::new(stream, self.send_timeout));
        }
        any
    }

    /// One round: the connection if it was woken, then the streams if they were or any are
    /// new.
    fn round(&mut self) {
        if self.conn_side.woken.swap(false, Ordering::SeqCst) && self.ended.is_none() {
            let mut cx = Context::from_waker(&self.wakers[0]);
            if let Poll::Ready(out) = self.conn.as_mut().poll(&mut cx) {
                self.ended = Some(out);
            }
        }
        let new = self.take_queued();
        if self.stream_side.woken.swap(false, Ordering::SeqCst) || new {
            let mut cx = Context::from_waker(&self.wakers[1]);
            while let Poll::Ready(Some(())) = self.running.poll_next_unpin(&mut cx) {}
        }
    }

    fn woken(&self) -> bool {
        self.conn_side.woken.load(Ordering::SeqCst) || self.stream_side.woken.load(Ordering::SeqCst)
    }
}

// The connection is boxed, and its outcome is never pinned: only moved out.
impl<C: Future> Unpin for WithStreams<C> {}

impl<C: Future> Future for WithStreams<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.get_mut();
        this.task.waker.register(cx.waker());
        for _ in 0..ROUNDS {
            this.task.polling.store(true, Ordering::SeqCst);
            this.round();
            if this.ended.is_some() && this.running.is_empty() {
                this.task.polling.store(false, Ordering::SeqCst);
                return Poll::Ready(this.ended.take().expect("checked"));
            }
            this.task.polling.store(false, Ordering::SeqCst);
            if !this.woken() {
                return Poll::Pending;
            }
        }
        // Still woken after its rounds: the runtime's other tasks go first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<C: Future + super::drain::GracefulClose> super::drain::GracefulClose for WithStreams<C> {
    /// Asks the connection to close, and has it polled next: that poll sends its GOAWAY,
    /// which nothing else would wake an idle connection for.
    fn close_gracefully(self: Pin<&mut Self>) {
        let this = self.get_mut();
        this.conn.as_mut().close_gracefully();
        this.conn_side.wake_by_ref();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::atomic::AtomicUsize;

    /// A task's waker that counts how often it was woken.
    #[derive(Default)]
    struct Counted(AtomicUsize);

    impl Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A stream that ends once `go` is sent, and the flag it sets as it ends.
    fn waiting_stream() -> (
        tokio::sync::oneshot::Sender<()>,
        Arc<AtomicBool>,
        impl Future<Output = ()> + Send + 'static,
    ) {
        let (go, gone) = tokio::sync::oneshot::channel::<()>();
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        let stream = async move {
            let _ = gone.await;
            flag.store(true, Ordering::SeqCst);
        };
        (go, finished, stream)
    }

    fn poll<F: Future + Unpin>(f: &mut F, task: &Arc<Counted>) -> Poll<F::Output> {
        let waker = Waker::from(task.clone());
        Pin::new(f).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_connection_ends_once_its_streams_have_and_wakes_come_from_either() {
        let streams = Streams::default();
        let (end, ended) = tokio::sync::oneshot::channel::<()>();
        let (go, finished, stream) = waiting_stream();
        let spawner = streams.clone();
        let conn = async move {
            spawner.execute(stream);
            let _ = ended.await;
            7
        };
        let mut served = WithStreams::new(conn, &streams);
        let task = Arc::new(Counted::default());
        assert!(poll(&mut served, &task).is_pending());
        // The connection ends first: the future waits for its stream.
        end.send(()).unwrap();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(poll(&mut served, &task).is_pending());
        assert!(!finished.load(Ordering::SeqCst));
        go.send(()).unwrap();
        assert_eq!(task.0.load(Ordering::SeqCst), 2);
        assert_eq!(poll(&mut served, &task), Poll::Ready(7));
        assert!(finished.load(Ordering::SeqCst));
    }

    #[test]
    fn a_stream_that_panics_ends_alone() {
        let streams = Streams::default();
        let spawner = streams.clone();
        let (go, finished, stream) = waiting_stream();
        let conn = async move {
            spawner.execute(async { panic!("a stream's bug") });
            spawner.execute(stream);
            5
        };
        let mut served = WithStreams::new(conn, &streams);
        let task = Arc::new(Counted::default());
        assert!(
            poll(&mut served, &task).is_pending(),
            "the other stream runs on"
        );
        go.send(()).unwrap();
        assert_eq!(poll(&mut served, &task), Poll::Ready(5));
        assert!(finished.load(Ordering::SeqCst));
    }

    #[test]
    fn a_wake_raised_within_the_poll_is_served_in_it() {
        let streams = Streams::default();
        let spawner = streams.clone();
        let conn = async move {
            // A stream that wakes itself once before it ends, as one does when it leaves
            // work for the connection.
            let mut woke = false;
            spawner.execute(std::future::poll_fn(move |cx| {
                if woke {
                    return Poll::Ready(());
                }
                woke = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }));
            3
        };
        let mut served = WithStreams::new(conn, &streams);
        let task = Arc::new(Counted::default());
        assert_eq!(poll(&mut served, &task), Poll::Ready(3));
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            0,
            "the task was not scheduled again"
        );
    }
}
