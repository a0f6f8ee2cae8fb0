//! The plain path: how a client connection's plain HTTP/1.1 requests are proxied.
//!
//! Most requests a proxy sees are plain: HTTP/1.1 on a keep-alive connection, origin-form
//! target, one Host, no body or a Content-Length one, for a host routed to a running instance.
//! For those this module does the work itself, on the client connection's own task: it parses
//! the head in place (httparse), writes the instance's head while copying the fields once,
//! sends it over an idle connection to the instance (or a new one), and relays the answer as
//! it arrives, following its framing without decoding it. No `HeaderMap`, no per-request task
//! hand-off, no pool lock.
//!
//! Anything else (HTTP/1.0 and HTTP/2 clients, upgrades, chunked or `Expect` request bodies,
//! hosts in maintenance, protected or unknown hosts, malformed or oversized heads) is left to
//! hyper: [`PlainConnection::serve`] stops at that request's head and returns the bytes it has
//! read but not used, and the caller hands the rest of the connection to hyper, which
//! carries on as if it had read them itself. The guarantees are the same either way: a drain
//! token per request, a stream token and a clean end at an event boundary for server-sent
//! events, one retry of a replayable request that never left, the same error answers and
//! the same counters.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::debug;

use crate::body::EventBoundary;
use crate::connection::Activity;
use crate::error::ProxyError;
use crate::forward::{log_failure, with_work};
use crate::route_table::Resolved;
use crate::server::{Mode, Proxy};
use crate::stats::RouteStats;
use crate::upstream::Upstream;
use crate::wire::{self, BodyKind, Chunked, LAST_CHUNK, Seen};

/// A client connection the plain path serves: plain TCP, or TLS over it.
pub(crate) trait Client: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> Client for T {}

/// Each read from either side asks for at least this much room.
const READ_CHUNK: usize = 8 * 1024;

/// How [`PlainConnection::serve`] ended.
pub(crate) enum Outcome {
    /// The connection is finished: either side closed it, or the proxy is closing it.
    Closed,
    /// The next request is not plain: hyper serves the connection from here, starting with
    /// these bytes.
    Handoff(Bytes),
}

/// One client connection on the plain path.
pub(crate) struct PlainConnection<'a> {
    proxy: &'a Proxy,
    peer: SocketAddr,
    /// The client's address as X-Forwarded-For gives it, rendered once.
    client_ip: String,
    /// The connection came over TLS.
    secure: bool,
    activity: &'a Arc<Activity>,
    /// Set when the connection should close after the response in progress (shutdown).
    closing: &'a AtomicBool,
    /// From the client, not handled yet.
    buf: BytesMut,
    /// From the instance.
    rbuf: BytesMut,
    /// The head being sent: the request's to the instance, then the response's to the client.
    head: Vec<u8>,
    /// The Host of the request in progress (the host it is routed as).
    host: String,
    /// A link's listener: every request is routed as this host, with no login.
    fixed: Option<Arc<String>>,
}

/// What the connection does after a request.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
    /// The request is still unsent at the front of the buffer, for hyper's path.
    Handoff,
}

/// Why an exchange with the instance failed.
enum Failure {
    ConnectTimeout,
    Connect(io::Error),
    /// The first write of the head failed: not a byte of the request left.
    Unsent(io::Error),
    /// The exchange broke after the request had (partly) gone out.
    Exchange(io::Error),
    /// The instance answered something that cannot be relayed.
    Invalid(&'static str),
    /// The instance sent no response head within its response timeout.
    ResponseTimeout(Duration),
    /// The instance was drained past its deadline before it answered.
    Drained,
}

impl Failure {
    fn nothing_was_sent(&self) -> bool {
        matches!(
            self,
            Failure::ConnectTimeout | Failure::Connect(_) | Failure::Unsent(_)
        )
    }

    fn is_connect(&self) -> bool {
        matches!(self, Failure::ConnectTimeout | Failure::Connect(_))
    }

    fn into_error(self, to: &Upstream) -> ProxyError {
        let upstream = to.label().to_owned();
        match self {
            Failure::ConnectTimeout => ProxyError::UpstreamTimeout {
                upstream,
                source: "connect timed out".into(),
            },
            Failure::Connect(e) => ProxyError::unreachable(to, e.into()),
            Failure::Unsent(e) | Failure::Exchange(e) => ProxyError::UpstreamFailed {
                upstream,
                source: e.into(),
            },
            Failure::Invalid(why) => ProxyError::UpstreamFailed {
                upstream,
                source: why.into(),
            },
            Failure::ResponseTimeout(timeout) => ProxyError::ResponseTimeout { upstream, timeout },
            Failure::Drained => ProxyError::Drained { upstream },
        }
    }
}

fn closed_early() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "connection closed before the response was complete",
    )
}

/// `fut`, unless `signal` fires first (`None`). The signal is only looked at while `fut` has
/// to wait.
async fn unless<T>(signal: &CancellationToken, fut: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        out = fut => Some(out),
        _ = signal.cancelled() => None,
    }
}

/// Write `a` then `b`, in as few system calls as the socket allows.
async fn write_two(
    stream: &mut (impl AsyncWrite + Unpin),
    mut a: &[u8],
    mut b: &[u8],
) -> io::Result<()> {
    while !a.is_empty() {
        let n = stream
            .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n < a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    stream.write_all(b).await
}

/// Read more from `stream` into `buf`; 0 means the peer closed.
async fn read_more(stream: &mut (impl AsyncRead + Unpin), buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    stream.read_buf(buf).await
}

/// What came first while waiting for the instance.
enum Heard {
    /// A read from the instance (0: it closed).
    Upstream(io::Result<usize>),
    /// The client closed or reset its connection: nobody is left to answer.
    ClientGone,
}

/// The client side of an exchange, watched while the proxy waits for the instance, so that a
/// client that gives up is noticed at once: its socket is not left in CLOSE-WAIT until the app
/// answers, and the request stops holding the instance's connection and its drain token.
struct ClientSide<'c, C> {
    client: &'c mut C,
    /// Bytes the client sends meanwhile (a pipelined request) are kept here, for later.
    buf: &'c mut BytesMut,
    /// Past this many kept bytes the client is no longer read (and so no longer watched).
    cap: usize,
}

impl<C: Client> ClientSide<'_, C> {
    /// Read more from `conn` into `rbuf`, unless the client goes first. Both reads are
    /// cancel-safe (a TLS stream keeps a record it has not handed out yet), so the one that
    /// loses the race loses nothing.
    async fn read_upstream(&mut self, conn: &mut TcpStream, rbuf: &mut BytesMut) -> Heard {
        loop {
            let watch = self.buf.len() < self.cap;
            if watch && self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                read = read_more(conn, rbuf) => return Heard::Upstream(read),
                read = self.client.read_buf(self.buf), if watch => match read {
                    Ok(1..) => {}
                    Ok(0) | Err(_) => return Heard::ClientGone,
                },
            }
        }
    }
}

/// An idle connection to `upstream` that is still open, or a new one.
async fn connection(upstream: &Upstream, connect_timeout: Duration) -> Result<TcpStream, Failure> {
    while let Some(conn) = upstream.take_idle() {
        // Readiness is cached by the runtime: an idle connection the instance has not
        // touched answers WouldBlock without a system call. Anything else (the instance
        // closed it, or sent bytes nobody asked for) makes it unusable.
        if matches!(conn.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            return Ok(conn);
        }
    }
    match tokio::time::timeout(connect_timeout, upstream.connect()).await {
        Ok(Ok(conn)) => {
            let _ = conn.set_nodelay(true);
            Ok(conn)
        }
        Ok(Err(e)) => Err(Failure::Connect(e)),
        Err(_) => Err(Failure::ConnectTimeout),
    }
}

impl<'a> PlainConnection<'a> {
    pub(crate) fn new(
        proxy: &'a Proxy,
        peer: SocketAddr,
        mode: &Mode,
        activity: &'a Arc<Activity>,
        closing: &'a AtomicBool,
    ) -> Self {
        PlainConnection {
            proxy,
            peer,
            client_ip: peer.ip().to_canonical().to_string(),
            secure: mode.secure,
            fixed: mode.fixed.clone(),
            activity,
            closing,
            buf: BytesMut::with_capacity(READ_CHUNK),
            rbuf: BytesMut::new(),
            head: Vec::with_capacity(1024),
            host: String::new(),
        }
    }

    /// Serve plain requests until the connection ends or a request is not plain.
    pub(crate) async fn serve(mut self, client: &mut impl Client) -> Outcome {
        loop {
            let request = loop {
                if !self.buf.is_empty() {
                    match wire::request(&self.buf, &mut self.head, &self.client_ip, self.secure) {
                        wire::Request::Plain(request) => break request,
                        wire::Request::Other => return self.handoff(),
                        wire::Request::Partial => {}
                    }
                    // hyper answers 431 to what is already too long.
                    if self.buf.len() >= self.proxy.config().max_header_bytes {
                        return self.handoff();
                    }
                } else if self.closing.load(Ordering::Relaxed) && !self.proxy.is_handing_over() {
                    // Closing between requests; during a handover the next request is awaited
                    // instead and answered with `Connection: close`.
                    return Outcome::Closed;
                }
                match read_more(client, &mut self.buf).await {
                    Ok(0) | Err(_) => return Outcome::Closed,
                    Ok(_) => self.activity.saw_bytes(),
                }
            };
            self.host.clear();
            match &self.fixed {
                Some(key) => self.host.push_str(key),
                None => self
                    .host
                    .push_str(std::str::from_utf8(&self.buf[request.host.clone()]).unwrap_or("")),
            }
            // A body still on its way is streamed both ways at once by hyper's path (the
            // instance may answer before it has read all of it).
            let body_here = (self.buf.len() - request.head_len) as u64 >= request.content_length;
            let routed = if body_here && !self.intercepted(&request) {
                self.route()
            } else {
                None
            };
            let Some((upstream, work, stats)) = routed else {
                return self.handoff();
            };
            match self.exchange(client, &request, upstream, work, stats).await {
                Next::KeepAlive => {}
                Next::Close => return Outcome::Closed,
                Next::Handoff => return self.handoff(),
            }
            if !self.buf.is_empty() {
                // A pipelined head has begun: its header timeout runs from now.
                self.activity.saw_bytes();
            }
        }
    }

    fn handoff(self) -> Outcome {
        Outcome::Handoff(self.buf.freeze())
    }

    /// Whether the request is one the proxy answers itself over plain HTTP (a redirect to
    /// HTTPS, an ACME HTTP-01 token): hyper's path does.
    fn intercepted(&self, request: &wire::Plain) -> bool {
        if self.secure || self.fixed.is_some() {
            return false;
        }
        let tls = self.proxy.tls().load();
        let line = std::str::from_utf8(&self.head[request.line.clone()]).unwrap_or("");
        let path = line.split_once(' ').map_or("", |(_, path)| path);
        tls.intercepts_plain(&self.host, path)
    }

    /// The instance the host routes to, with a drain token of it and the route's counters; or
    /// `None` when the request is not for the plain path (a host in maintenance, protected, or
    /// not routed at all: hyper's path answers those).
    fn route(&self) -> Option<(Arc<Upstream>, TaskTrackerToken, Arc<RouteStats>)> {
        with_work(self.proxy, &self.host, |table| {
            let found = table.find(&self.host).ok_or(())?;
            match (found.target, found.login) {
                (Resolved::Upstream(upstream), None) => Ok((upstream.clone(), found.stats.clone())),
                // A link's listener has no login to pass.
                (Resolved::Upstream(upstream), Some(_)) if self.fixed.is_some() => {
                    Ok((upstream.clone(), found.stats.clone()))
                }
                _ => Err(()),
            }
        })
        .ok()
    }

    /// Relay one request and its answer. The request is at the front of `self.buf`, whole;
    /// the head the instance gets is in `self.head`.
    async fn exchange(
        &mut self,
        client: &mut impl Client,
        request: &wire::Plain,
        mut upstream: Arc<Upstream>,
        mut work: TaskTrackerToken,
        stats: Arc<RouteStats>,
    ) -> Next {
        let started = Instant::now();
        let _active = self.activity.begin_request(false);
        let mut retried = false;
        let mut conn = loop {
            let sent = unless(upstream.cut_signal(), self.send(request, &upstream)).await;
            let failure = match sent {
                Some(Ok(conn)) => break conn,
                Some(Err(failure)) => failure,
                None => Failure::Drained,
            };
            if !request.replayable || retried || !failure.nothing_was_sent() {
                self.buf.advance(request.len());
                let error = failure.into_error(&upstream);
                return self.fail(client, request, started, &stats, error).await;
            }
            // Nothing reached the instance, so repeating is safe; ask the table again in
            // case the host moved in the meantime.
            let Some((next, next_work, _)) = self.route() else {
                // The host is not plain any more (maintenance, a login): hyper's path
                // answers the request as it is now routed.
                return Next::Handoff;
            };
            if failure.is_connect() && Arc::ptr_eq(&next, &upstream) {
                // A connect failure against the same instance would only fail again, slower.
                self.buf.advance(request.len());
                let error = failure.into_error(&upstream);
                return self.fail(client, request, started, &stats, error).await;
            }
            debug!(
                host = %self.host, upstream = %upstream.label(), next = %next.label(),
                "request never reached the instance; retrying once"
            );
            (upstream, work, retried) = (next, next_work, true);
        };

        // The response head; interim (1xx) answers are not relayed. The timer is only
        // registered when a read has to wait.
        let close = request.close || self.closing.load(Ordering::Relaxed);
        self.rbuf.clear();
        let head_deadline = tokio::time::Instant::now() + upstream.response_timeout();
        let answer = loop {
            let failure = match wire::response(
                &self.rbuf,
                &mut self.head,
                request.head_method,
                close,
            ) {
                wire::Response::Final(answer) => break answer,
                wire::Response::Interim(len) => {
                    self.rbuf.advance(len);
                    continue;
                }
                wire::Response::Invalid(why) => Failure::Invalid(why),
                wire::Response::Partial => {
                    let mut side = ClientSide {
                        client,
                        buf: &mut self.buf,
                        cap: self.proxy.config().max_header_bytes,
                    };
                    let read = tokio::time::timeout_at(
                        head_deadline,
                        side.read_upstream(&mut conn, &mut self.rbuf),
                    );
                    match unless(upstream.cut_signal(), read).await {
                        Some(Ok(Heard::Upstream(Ok(1..)))) => continue,
                        Some(Ok(Heard::Upstream(Ok(0)))) => Failure::Exchange(closed_early()),
                        Some(Ok(Heard::Upstream(Err(e)))) => Failure::Exchange(e),
                        Some(Ok(Heard::ClientGone)) => {
                            debug!(
                                host = %self.host, upstream = %upstream.label(), client = %self.peer,
                                "client closed its connection before the instance answered"
                            );
                            return Next::Close;
                        }
                        Some(Err(_)) => Failure::ResponseTimeout(upstream.response_timeout()),
                        None => Failure::Drained,
                    }
                }
            };
            let error = failure.into_error(&upstream);
            return self.fail(client, request, started, &stats, error).await;
        };
        stats.record(
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY),
            started.elapsed(),
        );
        if self.secure
            && let Some(hsts) = self
                .proxy
                .tls()
                .load()
                .for_host_header(&self.host)
                .and_then(|t| t.hsts.clone())
        {
            wire::replace_field(
                &mut self.head,
                b"strict-transport-security",
                hsts.as_bytes(),
            );
        }

        // The body. A server-sent-event stream trades its request token for a stream token
        // and ends cleanly at an event boundary when its deadline comes; any other body is
        // cut (the client sees it incomplete) when the request deadline comes.
        let (signal, mut events, _token) = if answer.event_stream {
            drop(work);
            (
                upstream.close_streams_signal().clone(),
                Some(EventBoundary::new()),
                upstream.stream_token(),
            )
        } else {
            (upstream.cut_signal().clone(), None, work)
        };
        let cap = self.proxy.config().max_header_bytes;
        let relayed = Relay {
            client,
            pipelined: &mut self.buf,
            cap,
            conn: &mut conn,
            rbuf: &mut self.rbuf,
            head: &self.head,
            signal: &signal,
            events: &mut events,
        }
        .run(answer.head_len, answer.body)
        .await;
        match relayed {
            Ok(reusable) => {
                if reusable && answer.reusable {
                    upstream.put_idle(conn);
                }
                if close { Next::Close } else { Next::KeepAlive }
            }
            Err(_) => Next::Close,
        }
    }

    /// Take a connection to `upstream` and send it the request; on success the request
    /// leaves the front of `self.buf` (on failure the caller takes it off).
    async fn send(
        &mut self,
        request: &wire::Plain,
        upstream: &Upstream,
    ) -> Result<TcpStream, Failure> {
        let mut conn = connection(upstream, self.proxy.config().upstream_connect_timeout).await?;
        let end = request.len();
        let (head, body) = (&self.head[..], &self.buf[request.head_len..end]);
        let n = match conn
            .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            .await
        {
            Ok(0) => return Err(Failure::Unsent(io::ErrorKind::WriteZero.into())),
            Ok(n) => n,
            Err(e) => return Err(Failure::Unsent(e)),
        };
        let rest = if n < head.len() {
            write_two(&mut conn, &head[n..], body).await
        } else {
            conn.write_all(&body[n - head.len()..]).await
        };
        rest.map_err(Failure::Exchange)?;
        self.buf.advance(end);
        Ok(conn)
    }

    /// Answer a request the proxy could not relay, as hyper's path would.
    async fn fail(
        &mut self,
        client: &mut impl Client,
        request: &wire::Plain,
        started: Instant,
        stats: &RouteStats,
        error: ProxyError,
    ) -> Next {
        stats.record(error.status(), started.elapsed());
        // `self.head` still holds the request's head: the response's is only written over it
        // once a final response has been parsed, and nothing fails after that.
        let line = std::str::from_utf8(&self.head[request.line.clone()]).unwrap_or("");
        let (method, path) = line.split_once(' ').unwrap_or((line, ""));
        log_failure(&self.host, method, path, self.peer, &error);
        let close = request.close || self.closing.load(Ordering::Relaxed);
        let answer = error.to_http1(Some(&self.host), close);
        match client.write_all(&answer).await {
            Ok(()) if !close => Next::KeepAlive,
            _ => Next::Close,
        }
    }
}

/// One response body on its way from the instance to the client.
struct Relay<'r, C> {
    client: &'r mut C,
    /// Where bytes the client sends meanwhile go, up to `cap` (see [`ClientSide`]).
    pipelined: &'r mut BytesMut,
    cap: usize,
    conn: &'r mut TcpStream,
    rbuf: &'r mut BytesMut,
    head: &'r [u8],
    /// Cuts the body (or, for an event stream, asks it to end at the next event boundary).
    signal: &'r CancellationToken,
    events: &'r mut Option<EventBoundary>,
}

/// Write `a` then `b` to the client, unless `cut` fires first. An event stream passes no
/// `cut`: it is not cut but ended between events, and a client that stops reading holds only
/// its own connection.
async fn send(
    client: &mut (impl AsyncWrite + Unpin),
    cut: Option<&CancellationToken>,
    a: &[u8],
    b: &[u8],
) -> io::Result<()> {
    match cut {
        Some(cut) => unless(cut, write_two(client, a, b))
            .await
            .unwrap_or_else(|| Err(cut_error())),
        None => write_two(client, a, b).await,
    }
}

impl<C: Client> Relay<'_, C> {
    /// Send the client's head and the body; true when the instance's connection ended at the
    /// end of the body and may take another request. An error means the client connection
    /// must close: the client has an incomplete response.
    async fn run(mut self, head_len: usize, body: BodyKind) -> io::Result<bool> {
        self.rbuf.advance(head_len);
        match body {
            BodyKind::None => {
                let cut = self.events.is_none().then_some(self.signal);
                send(self.client, cut, self.head, &[]).await?;
                Ok(self.rbuf.is_empty())
            }
            BodyKind::Length(length) => self.length(length).await,
            BodyKind::Chunked => self.chunked().await,
            BodyKind::UntilClose => self.until_close().await.map(|()| false),
        }
    }

    /// Read more of the body into the emptied `rbuf`; `Ok(None)` when an event stream has
    /// just been asked to end.
    /// A client that goes away meanwhile ends the body with an error.
    async fn read(&mut self) -> io::Result<Option<usize>> {
        self.rbuf.clear();
        let mut side = ClientSide {
            client: &mut *self.client,
            buf: self.pipelined,
            cap: self.cap,
        };
        let read = side.read_upstream(self.conn, self.rbuf);
        let heard = if self.events.as_ref().is_some_and(|e| e.closing) {
            Some(read.await)
        } else {
            unless(self.signal, read).await
        };
        match heard {
            Some(Heard::Upstream(read)) => read.map(Some),
            Some(Heard::ClientGone) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the client closed its connection",
            )),
            None => match self.events {
                Some(events) => {
                    events.closing = true;
                    Ok(None)
                }
                None => Err(cut_error()),
            },
        }
    }

    async fn length(&mut self, length: u64) -> io::Result<bool> {
        let cut = self.events.is_none().then_some(self.signal);
        let mut here = self
            .rbuf
            .len()
            .min(usize::try_from(length).unwrap_or(usize::MAX));
        let mut extra = self.rbuf.len() > here;
        send(self.client, cut, self.head, &self.rbuf[..here]).await?;
        let mut left = length - here as u64;
        while left > 0 {
            let Some(n) = self.read().await? else {
                continue;
            };
            if n == 0 {
                return Err(closed_early());
            }
            here = n.min(usize::try_from(left).unwrap_or(usize::MAX));
            extra |= n > here;
            send(self.client, cut, &self.rbuf[..here], &[]).await?;
            left -= here as u64;
        }
        Ok(!extra)
    }

    async fn chunked(&mut self) -> io::Result<bool> {
        let cut = self.events.is_none().then_some(self.signal);
        let mut scanner = Chunked::default();
        let mut head = self.head;
        loop {
            let events = &mut *self.events;
            let n = scanner
                .scan(self.rbuf, |seen| match (seen, events.as_mut()) {
                    (Seen::Data(data), Some(events)) => {
                        events.sent(data);
                        false
                    }
                    (Seen::ChunkEnd, Some(events)) => events.may_end(),
                    (_, None) => false,
                })
                .map_err(|_| io::Error::other("invalid chunked body"))?;
            let extra = self.rbuf.len() > n;
            send(self.client, cut, head, &self.rbuf[..n]).await?;
            head = &[];
            if scanner.is_done() {
                return Ok(!extra);
            }
            if scanner.between_chunks() && self.events.as_ref().is_some_and(EventBoundary::may_end)
            {
                // A clean end between events. The instance's connection is in the middle of
                // its body, so it is not kept.
                send(self.client, None, LAST_CHUNK, &[]).await?;
                return Ok(false);
            }
            if self.read().await? == Some(0) {
                return Err(closed_early());
            }
        }
    }

    async fn until_close(&mut self) -> io::Result<()> {
        let cut = self.events.is_none().then_some(self.signal);
        send(self.client, cut, self.head, &[]).await?;
        loop {
            if !self.rbuf.is_empty() {
                if let Some(events) = self.events.as_mut() {
                    events.sent(self.rbuf);
                }
                let mut chunk = Vec::with_capacity(self.rbuf.len() + 32);
                wire::push_chunk(&mut chunk, self.rbuf);
                send(self.client, cut, &chunk, &[]).await?;
            }
            if self.events.as_ref().is_some_and(EventBoundary::may_end) {
                return send(self.client, None, LAST_CHUNK, &[]).await;
            }
            if self.read().await? == Some(0) {
                return send(self.client, cut, LAST_CHUNK, &[]).await;
            }
        }
    }
}

fn cut_error() -> io::Error {
    io::Error::other("response cut: the instance was drained past its deadline")
}
