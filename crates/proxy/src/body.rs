//! The body of every response the proxy sends to a client, and the bodies it sends upstream.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::connection::ActiveRequest;

/// What the proxy sends upstream: the client's body streamed through, or nothing (which is
/// what makes a request replayable).
pub(crate) type UpstreamBody = Either<Upload, Empty<Bytes>>;

/// A client's request body streamed to the instance. The instance's response timeout only
/// starts once the body has gone (a slow upload is not a slow app), so the receiver `new`
/// returns resolves at its end: after the last frame, on an error, or when the body is
/// dropped unsent.
pub(crate) struct Upload {
    body: Incoming,
    /// Dropped to signal the end.
    sent: Option<oneshot::Sender<()>>,
}

impl Upload {
    pub(crate) fn new(body: Incoming) -> (Upload, oneshot::Receiver<()>) {
        let (sent, uploaded) = oneshot::channel();
        let upload = Upload {
            body,
            sent: Some(sent),
        };
        (upload, uploaded)
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if !matches!(polled, Some(Ok(_))) || this.body.is_end_stream() {
            this.sent = None;
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// A response body that keeps its request counted as in flight until the last byte is sent.
pub(crate) struct ResponseBody {
    inner: Inner,
    /// The upstream's drain token; released at end of stream, on error, or when hyper drops
    /// the body (client gone), whichever comes first.
    work: Option<TaskTrackerToken>,
    /// Resolves when the upstream's drain gives up; the body then ends with an error so the
    /// client sees a cut-off response rather than a short one that looks complete.
    cut: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// Keeps the client connection from counting as idle while this response is being sent.
    active: Option<ActiveRequest>,
    /// Set for server-sent events: when `cut` fires the stream ends cleanly at an event
    /// boundary instead of with an error, and EventSource clients simply reconnect.
    events: Option<EventBoundary>,
}

/// Where a server-sent-event stream is, so a drain can end it between two events (an event
/// ends with a blank line: `\n\n`, `\r\r` or `\r\n\r\n`).
pub(crate) struct EventBoundary {
    /// The last four bytes sent, oldest first.
    tail: [u8; 4],
    /// Nothing of an unfinished event has been sent.
    at_boundary: bool,
    /// The drain asked to close: end as soon as `at_boundary`.
    pub(crate) closing: bool,
}

impl EventBoundary {
    pub(crate) fn new() -> Self {
        EventBoundary {
            tail: [0; 4],
            at_boundary: true,
            closing: false,
        }
    }

    pub(crate) fn sent(&mut self, data: &[u8]) {
        for b in data {
            self.tail = [self.tail[1], self.tail[2], self.tail[3], *b];
        }
        if !data.is_empty() {
            let t = &self.tail;
            self.at_boundary = t[2..] == *b"\n\n" || t[2..] == *b"\r\r" || *t == *b"\r\n\r\n";
        }
    }

    /// Closing was asked for and the stream may end here.
    pub(crate) fn may_end(&self) -> bool {
        self.closing && self.at_boundary
    }
}

enum Inner {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

impl ResponseBody {
    pub(crate) fn full(bytes: Bytes) -> Self {
        ResponseBody {
            inner: Inner::Full(Some(bytes)),
            work: None,
            cut: None,
            active: None,
            events: None,
        }
    }

    pub(crate) fn empty() -> Self {
        ResponseBody::full(Bytes::new())
    }

    pub(crate) fn upstream(
        body: Incoming,
        work: TaskTrackerToken,
        cut: &CancellationToken,
    ) -> Self {
        ResponseBody {
            inner: Inner::Upstream(body),
            work: Some(work),
            cut: Some(Box::pin(cut.clone().cancelled_owned())),
            active: None,
            events: None,
        }
    }

    /// A server-sent-event stream: holds a stream token, and `close` ends it cleanly at the
    /// next event boundary.
    pub(crate) fn event_stream(
        body: Incoming,
        stream: TaskTrackerToken,
        close: &CancellationToken,
    ) -> Self {
        let mut body = ResponseBody::upstream(body, stream, close);
        body.events = Some(EventBoundary::new());
        body
    }

    pub(crate) fn set_active(&mut self, active: ActiveRequest) {
        self.active = Some(active);
    }

    fn finish(&mut self) {
        self.work = None;
        self.cut = None;
        self.active = None;
        self.events = None;
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(cut) = this.cut.as_mut()
            && cut.as_mut().poll(cx).is_ready()
        {
            this.cut = None;
            match &mut this.events {
                Some(events) => events.closing = true,
                None => {
                    this.finish();
                    return Poll::Ready(Some(Err(Box::new(CutByDrain))));
                }
            }
        }
        if let Some(events) = &this.events
            && events.may_end()
        {
            // A clean end of the chunked body (RFC 9112 §7.1): the client sees a finished
            // stream, never half an event.
            this.finish();
            return Poll::Ready(None);
        }
        let polled = match &mut this.inner {
            Inner::Upstream(body) => {
                ready!(Pin::new(body).poll_frame(cx)).map(|r| r.map_err(Into::into))
            }
            Inner::Full(bytes) => bytes
                .take()
                .filter(|b| !b.is_empty())
                .map(|b| Ok(Frame::data(b))),
        };
        match &polled {
            Some(Ok(frame)) => {
                if let (Some(events), Some(data)) = (&mut this.events, frame.data_ref()) {
                    events.sent(data);
                }
            }
            Some(Err(_)) => this.finish(),
            None => this.finish(),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("upstream", &matches!(self.inner, Inner::Upstream(_)))
            .field("in_flight", &self.work.is_some())
            .finish()
    }
}

#[derive(Debug)]
struct CutByDrain;

impl fmt::Display for CutByDrain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("response cut: the instance was drained past its deadline")
    }
}

impl StdError for CutByDrain {}
