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

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;
use futures_util::FutureExt;

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor given to one connection's h2 server: it queues each stream for the
/// connection's [`WithStreams`] to run.
#[derive(Clone, Default)]
pub struct Streams {
    queued: Arc<Mutex<Vec<Stream>>>,
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
    running: FuturesUnordered<Stream>,
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
            self.running.push(stream);
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
