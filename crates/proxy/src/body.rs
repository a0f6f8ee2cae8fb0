//! The body of every response the proxy sends to a client, and the bodies it sends upstream.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::connection::ActiveRequest;

/// What the proxy sends upstream: the client's body streamed through, or nothing (which is
/// what makes a request replayable).
pub(crate) type UpstreamBody = Either<Incoming, Empty<Bytes>>;

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
        }
    }

    pub(crate) fn set_active(&mut self, active: ActiveRequest) {
        self.active = Some(active);
    }

    fn finish(&mut self) {
        self.work = None;
        self.cut = None;
        self.active = None;
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
            this.finish();
            return Poll::Ready(Some(Err(Box::new(CutByDrain))));
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
            Some(Ok(_)) => {}
            Some(Err(_)) | None => this.finish(),
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
