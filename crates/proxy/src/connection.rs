//! Per-connection timeouts: how long a client may take to send a request head, and how long a
//! connection may sit idle between requests.
//!
//! hyper's own HTTP/1 `header_read_timeout` starts its timer whenever it waits for a request
//! head, including on an idle keep-alive connection, so it would also close every idle
//! connection after the (short) header timeout. Keeping the two apart takes knowing when the
//! first byte of a head arrives, so the proxy wraps the socket and tracks it here.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Marker for "no request head is being read".
const NONE: u64 = u64::MAX;

/// What one client connection is doing, shared by its socket wrapper, its request handlers
/// and its watchdog.
pub(crate) struct Activity {
    /// Times below are microseconds since this instant (the accept).
    epoch: Instant,
    /// Requests whose response has not been fully sent; while above zero the connection is
    /// busy and neither timeout applies.
    active: AtomicUsize,
    /// When the connection last had no request in progress.
    idle_since: AtomicU64,
    /// When the first byte of the next request head arrived, or `NONE`. Starts at the accept,
    /// so a client that connects and sends nothing gets the header timeout, not the idle one.
    head_started: AtomicU64,
    /// HTTP/2 frames between requests (PING, SETTINGS, WINDOW_UPDATE) are not the start of a
    /// request head, so once a connection is known to be HTTP/2 only the idle timeout applies.
    http2: AtomicBool,
}

/// Why the watchdog wants the connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// A request head did not arrive completely in time: close at once.
    HeaderTimeout,
    /// No request for the idle timeout: close gracefully (HTTP/2 GOAWAY).
    Idle,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            active: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            http2: AtomicBool::new(false),
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn at(&self, micros: u64) -> Instant {
        self.epoch + Duration::from_micros(micros)
    }

    /// A request head has been parsed; the connection is busy until the guard drops.
    pub(crate) fn begin_request(self: &Arc<Self>, http2: bool) -> ActiveRequest {
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.active.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NONE, Ordering::Release);
        ActiveRequest(self.clone())
    }

    /// Bytes of a request have arrived: if no request is in progress and no head has begun,
    /// a head begins now and its header timeout starts.
    pub(crate) fn saw_bytes(&self) {
        if self.active.load(Ordering::Acquire) == 0
            && !self.http2.load(Ordering::Relaxed)
            && self.head_started.load(Ordering::Relaxed) == NONE
        {
            let _ = self.head_started.compare_exchange(
                NONE,
                self.now(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// No request is in progress and no byte of the next one has arrived.
    /// The connection speaks HTTP/2 (its first request said so, or ALPN chose it).
    pub(crate) fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    pub(crate) fn set_http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
    }

    /// A request is in progress (its head was parsed; its response not fully sent).
    pub(crate) fn has_request(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Acquire) == NONE
    }

    /// Resolves when the connection has broken one of its timeouts.
    ///
    /// Nothing wakes the watchdog when the connection changes state (that would cost two
    /// wake-ups of the connection's task per request): it sleeps until the earliest moment a
    /// timeout could run out whatever happens meanwhile, then looks again. A timeout that
    /// starts while it sleeps (a request ends, a head starts) cannot run out before it wakes:
    /// each sleep is at most the shorter timeout, or ends when the header timeout of a head
    /// starting right now would.
    pub(crate) async fn expired(&self, header_timeout: Duration, idle_timeout: Duration) -> Expiry {
        loop {
            let now = Instant::now();
            let wake = if self.active.load(Ordering::Acquire) > 0 {
                now + header_timeout.min(idle_timeout)
            } else {
                let head = self.head_started.load(Ordering::Acquire);
                let http2 = self.http2.load(Ordering::Relaxed);
                if head != NONE && !http2 {
                    let at = self.at(head) + header_timeout;
                    if now >= at {
                        return Expiry::HeaderTimeout;
                    }
                    at
                } else {
                    let at = self.at(self.idle_since.load(Ordering::Acquire)) + idle_timeout;
                    if now >= at {
                        return Expiry::Idle;
                    }
                    if http2 {
                        at
                    } else {
                        at.min(now + header_timeout)
                    }
                }
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// Held by a request from the parse of its head until its response body has been sent.
pub(crate) struct ActiveRequest(Arc<Activity>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.idle_since.store(activity.now(), Ordering::Release);
        activity.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The client socket, reporting to its [`Activity`] when bytes arrive. Reads first return
/// `read`: bytes taken from the socket already, by the plain path, before it handed the
/// connection over.
pub(crate) struct WatchedIo<T> {
    inner: T,
    read: Bytes,
    activity: Arc<Activity>,
}

impl<T> WatchedIo<T> {
    pub(crate) fn new(inner: T, read: Bytes, activity: Arc<Activity>) -> Self {
        WatchedIo {
            inner,
            read,
            activity,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.saw_bytes();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silent_connection_gets_the_header_timeout() {
        let activity = Activity::new();
        let expiry = activity
            .expired(Duration::from_secs(10), Duration::from_secs(60))
            .await;
        assert_eq!(expiry, Expiry::HeaderTimeout);
        assert!(activity.epoch.elapsed() >= Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keep_alive_gets_the_idle_timeout() {
        let activity = Activity::new();
        drop(activity.begin_request(false));
        let started = Instant::now();
        let expiry = activity
            .expired(Duration::from_secs(10), Duration::from_secs(60))
            .await;
        assert_eq!(expiry, Expiry::Idle);
        assert!(started.elapsed() >= Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn busy_connection_never_expires_and_a_new_head_restarts_the_header_clock() {
        let activity = Activity::new();
        let request = activity.begin_request(false);
        let waited = tokio::time::timeout(
            Duration::from_secs(3600),
            activity.expired(Duration::from_secs(10), Duration::from_secs(60)),
        )
        .await;
        assert!(
            waited.is_err(),
            "a connection with a request in flight is not idle"
        );
        drop(request);
        activity.saw_bytes();
        let started = Instant::now();
        let expiry = activity
            .expired(Duration::from_secs(10), Duration::from_secs(60))
            .await;
        assert_eq!(expiry, Expiry::HeaderTimeout);
        assert!(started.elapsed() <= Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_between_requests_do_not_count_as_a_head() {
        let activity = Activity::new();
        drop(activity.begin_request(true));
        activity.saw_bytes();
        let expiry = activity
            .expired(Duration::from_secs(10), Duration::from_secs(60))
            .await;
        assert_eq!(expiry, Expiry::Idle);
    }
}
