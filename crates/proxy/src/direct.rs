//! A client connection's own connection to the instance it is routed to.
//!
//! An HTTP/1 client sends one request at a time, so its requests can all go over one upstream
//! connection kept with the client connection, driven by the client connection's own task: no
//! hand-off to a pooled connection's task, no pool lock. The connection is polled by whoever
//! holds it: the request while it waits for the response head, then the response body while
//! it is sent; when the body has been sent in full it goes back to the client connection's
//! [`Slot`] for the next request. It is dropped (closing it) when a request is routed to
//! another instance, when it breaks, or with the client connection.
//!
//! Anything the direct connection cannot take (HTTP/2 clients, upgrades, a connection that is
//! not ready) goes through the proxy's pooled client instead, as before, and so does the first
//! request of each client connection (see [`SlotState::warm`]).

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::{BoxError, UpstreamBody};
use crate::upstream::Upstream;

type Conn = Connection<TokioIo<TcpStream>, UpstreamBody>;

/// At most this many own upstream connections at once, over all client connections: beyond it
/// requests go through the pool, whose idle connections are capped, so thousands of idle
/// keep-alive clients do not hold as many idle connections to the instances.
const MAX_OPEN: usize = 512;

/// One of the [`MAX_OPEN`] places, given back when the connection is dropped.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn take(open: &Arc<AtomicUsize>) -> Option<Counted> {
        if open.fetch_add(1, Ordering::Relaxed) >= MAX_OPEN {
            open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Counted(open.clone()))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One upstream connection and the instance it goes to.
pub(crate) struct Direct {
    upstream: Arc<Upstream>,
    sender: SendRequest<UpstreamBody>,
    conn: Pin<Box<Conn>>,
    _counted: Counted,
}

/// Where a client connection keeps its idle upstream connection between requests. Only its
/// own task ever locks it, never across an `.await`, so the lock is never contended.
#[derive(Clone, Default)]
pub(crate) struct Slot(Arc<SlotState>);

#[derive(Default)]
struct SlotState {
    held: Mutex<Option<Direct>>,
    /// A request has been sent already. The first goes through the pool: a client that sends
    /// one request per connection (HTTP/1.0, `Connection: close`, scripts) then reuses pooled
    /// connections instead of opening one to the instance every time.
    warm: AtomicBool,
}

/// Why a direct exchange failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection could not be opened within the connect timeout; nothing was sent.
    ConnectTimeout(io::Error),
    /// The connection could not be opened; nothing was sent.
    Connect(BoxError),
    /// The exchange broke; nothing was sent only if hyper says it was canceled.
    Exchange(hyper::Error),
}

impl Failure {
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, Failure::ConnectTimeout(_) | Failure::Connect(_))
    }

    pub(crate) fn nothing_was_sent(&self) -> bool {
        match self {
            Failure::ConnectTimeout(_) | Failure::Connect(_) => true,
            Failure::Exchange(e) => e.is_canceled(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::ConnectTimeout(e) => write!(f, "connect: {e}"),
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Exchange(e) => e.fmt(f),
        }
    }
}

/// What `send` ended with: the response and, when it may be reused, the connection that
/// carried it (its body is only read while the connection is polled).
pub(crate) enum Sent {
    Direct(Response<Incoming>, Option<Direct>),
    /// The request came back unsent: the caller sends it through the pool.
    Unsent(Request<UpstreamBody>),
}

impl Slot {
    fn take(&self, upstream: &Arc<Upstream>) -> Option<Direct> {
        let held = self
            .0
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        // One to another instance is dropped here: its route has moved on.
        Arc::ptr_eq(&held.upstream, upstream).then_some(held)
    }

    pub(crate) fn put(&self, direct: Direct) {
        *self.0.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(direct);
    }

    /// Send `request` to `upstream` over this client connection's own connection, opening one
    /// if needed (unless `open` says [`MAX_OPEN`] are open already). `request` has an
    /// origin-form target.
    pub(crate) async fn send(
        &self,
        upstream: &Arc<Upstream>,
        connect_timeout: Duration,
        open: &Arc<AtomicUsize>,
        request: Request<UpstreamBody>,
    ) -> Result<Sent, Failure> {
        if !self.0.warm.swap(true, Ordering::Relaxed) {
            return Ok(Sent::Unsent(request));
        }
        let reused = match self.take(upstream) {
            Some(mut held) => poll_fn(|cx| Poll::Ready(held.ready(cx)))
                .await
                .then_some(held),
            None => None,
        };
        let mut direct = match reused {
            Some(held) => held,
            None => {
                let Some(counted) = Counted::take(open) else {
                    return Ok(Sent::Unsent(request));
                };
                let mut fresh = Direct::connect(upstream, connect_timeout, counted).await?;
                if !poll_fn(|cx| Poll::Ready(fresh.ready(cx))).await {
                    return Ok(Sent::Unsent(request));
                }
                fresh
            }
        };
        let response = direct.sender.try_send_request(request);
        tokio::pin!(response);
        let mut alive = true;
        let result = poll_fn(|cx| {
            if alive && direct.conn.as_mut().poll(cx).is_ready() {
                alive = false;
            }
            response.as_mut().poll(cx)
        })
        .await;
        match result {
            Ok(response) => Ok(Sent::Direct(response, alive.then_some(direct))),
            Err(mut e) => match e.take_message() {
                Some(request) => Ok(Sent::Unsent(request)),
                None => Err(Failure::Exchange(e.into_error())),
            },
        }
    }
}

impl Direct {
    async fn connect(
        upstream: &Arc<Upstream>,
        connect_timeout: Duration,
        counted: Counted,
    ) -> Result<Direct, Failure> {
        let stream = match tokio::time::timeout(
            connect_timeout,
            TcpStream::connect(upstream.addr()),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(Failure::Connect(e.into())),
            Err(_) => {
                return Err(Failure::ConnectTimeout(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connect timed out",
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Connect(e.into()))?;
        Ok(Direct {
            upstream: upstream.clone(),
            sender,
            conn: Box::pin(conn),
            _counted: counted,
        })
    }

    /// Drive the connection once; true when it can take a request right now.
    fn ready(&mut self, cx: &mut Context<'_>) -> bool {
        if self.conn.as_mut().poll(cx).is_ready() {
            return false;
        }
        matches!(self.sender.poll_ready(cx), Poll::Ready(Ok(())))
    }

    /// Drive the connection (it reads the response body the caller is sending on); false once
    /// it has ended.
    pub(crate) fn poll_alive(&mut self, cx: &mut Context<'_>) -> bool {
        self.conn.as_mut().poll(cx).is_pending()
    }
}
