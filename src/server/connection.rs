//! Per-connection read deadlines: a client has SERVER_READ_TIMEOUT to send a request's headers
//! once it has started, and an idle keep-alive connection is closed after SERVER_IDLE_TIMEOUT.
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection waits for its
//! next request, so it would close idle connections after the (short) header timeout. This
//! wrapper distinguishes the two waits by watching the bytes read and the requests that the
//! connection's service has started and finished.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// The shortest interval at which a busy connection checks whether its requests have ended,
/// so that a zero idle timeout does not spin.
const MIN_BUSY_CHECK: Duration = Duration::from_millis(100);

/// Requests a connection's service has started, and those still running. The service updates
/// it; [`DeadlineStream`] reads it. Atomics because HTTP/2 runs each stream in its own task.
pub struct ConnectionActivity {
    started: AtomicU64,
    in_flight: AtomicUsize,
    opened: Instant,
    /// When the last request ended, in nanoseconds after `opened`: the start of the idle wait.
    last_finished: AtomicU64,
}

impl Default for ConnectionActivity {
    fn default() -> Self {
        ConnectionActivity {
            started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            opened: Instant::now(),
            last_finished: AtomicU64::new(0),
        }
    }
}

impl ConnectionActivity {
    /// Records a request's start; the guard records its end when dropped.
    pub fn start_request(self: &Arc<Self>) -> RequestGuard {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestGuard(Arc::clone(self))
    }

    /// Returns when the last request ended, or when the connection opened if none has.
    fn last_finished(&self) -> Instant {
        self.opened + Duration::from_nanos(self.last_finished.load(Ordering::Relaxed))
    }
}

/// Marks a request as finished when dropped, whether it completed or was cancelled.
///
/// It does not wake the connection's task: a busy connection keeps a deadline armed instead
/// (see [`DeadlineStream`]). With a wake-up per request, the shared database connections made
/// 0.53 `sendto` calls to PostgreSQL per request on the user route, against 0.18 without it.
pub struct RequestGuard(Arc<ConnectionActivity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        let since_opened = activity.opened.elapsed().as_nanos();
        activity.last_finished.store(
            u64::try_from(since_opened).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        // Release, so a read that loads no request in flight also loads the time stored above.
        activity.in_flight.fetch_sub(1, Ordering::Release);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the rest of a request's headers, under the read timeout.
    ReadingHeaders,
    /// A request is being handled; the write timeout bounds it, not this stream.
    Busy,
    /// Between requests, under the idle timeout.
    Idle,
}

/// A TCP stream whose reads end when the current wait runs past its deadline: with an error
/// while headers are late, and with end-of-file when the connection idled too long, so hyper
/// closes it cleanly.
pub struct DeadlineStream {
    inner: TcpStream,
    activity: Arc<ConnectionActivity>,
    read_timeout: Duration,
    idle_timeout: Duration,
    phase: Phase,
    requests_seen: u64,
    deadline: Pin<Box<Sleep>>,
}

impl DeadlineStream {
    /// Wraps a freshly accepted stream; its first request's headers are due within the read
    /// timeout.
    pub fn new(
        inner: TcpStream,
        activity: Arc<ConnectionActivity>,
        read_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        DeadlineStream {
            inner,
            activity,
            read_timeout,
            idle_timeout,
            phase: Phase::ReadingHeaders,
            requests_seen: 0,
            deadline: Box::pin(tokio::time::sleep(read_timeout)),
        }
    }

    fn enter(&mut self, phase: Phase, deadline: Instant) {
        self.phase = phase;
        self.deadline.as_mut().reset(deadline);
    }

    /// Keeps a deadline armed while requests run, so that the connection's task reads again
    /// within the idle timeout of their end and then arms the idle deadline from that end.
    fn wait_while_busy(&mut self, cx: &mut Context<'_>) {
        let check = self.idle_timeout.max(MIN_BUSY_CHECK);
        if self.phase != Phase::Busy {
            self.phase = Phase::Busy;
            let check_by = Instant::now() + check;
            if self.deadline.deadline() > check_by {
                self.deadline.as_mut().reset(check_by);
            }
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.deadline.as_mut().reset(Instant::now() + check);
            // A deadline in the future is pending, and polling it registers the wake-up.
            let _pending = self.deadline.as_mut().poll(cx);
        }
    }
}

impl AsyncRead for DeadlineStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let filled_before = buf.filled().len();
        if let Poll::Ready(result) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            if this.phase == Phase::Idle && buf.filled().len() > filled_before {
                this.enter(Phase::ReadingHeaders, Instant::now() + this.read_timeout);
            }
            return Poll::Ready(result);
        }

        // Nothing to read: decide which wait this is before looking at the deadline.
        let started = this.activity.started.load(Ordering::Relaxed);
        if this.activity.in_flight.load(Ordering::Acquire) > 0 {
            this.requests_seen = started;
            this.wait_while_busy(cx);
            return Poll::Pending;
        }
        if this.phase == Phase::Busy || started != this.requests_seen {
            this.requests_seen = started;
            let idle_since = this.activity.last_finished();
            this.enter(Phase::Idle, idle_since + this.idle_timeout);
        }

        match this.deadline.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) if this.phase == Phase::Idle => Poll::Ready(Ok(())),
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "request headers not received within {:?}",
                    this.read_timeout
                ),
            ))),
        }
    }
}

impl AsyncWrite for DeadlineStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
