//! The proxy itself: its route table and the accept loop.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, StatusCode, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::ProxyConfig;
use crate::connection::{Activity, Expiry, WatchedIo};
use crate::forward;
use crate::plain::{Outcome, PlainConnection};
use crate::route_table::RouteTable;
use crate::tls::{ACME_TLS_ALPN, TlsTable};

/// hyper refuses an HTTP/1 buffer smaller than this.
const MIN_H1_BUFFER: usize = 8 * 1024;
/// Streams one HTTP/2 client may have open at once; browsers open about 100.
const H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// HTTP/2 PINGs find peers that vanished without closing (a laptop lid, a NAT timeout).
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The reverse proxy: routes each request by host to the instance the current route table
/// names.
pub struct Proxy {
    /// The routes in force. Replaced whole by [`Proxy::apply`]; each lookup `load()`s it and
    /// lets go before any `.await`, so a switch never waits for a request or vice versa.
    table: ArcSwap<RouteTable>,
    config: ProxyConfig,
    /// Set by [`Proxy::hand_over`]: the shutdown that follows leaves idle keep-alive
    /// connections open for their next request.
    handing_over: AtomicBool,
    /// Cancelled by [`Proxy::stop_waiting`]: requests waiting for a sleeping environment get a
    /// 503 at once, as this proxy will see no more route changes.
    no_more_wakes: CancellationToken,
    /// Certificates, redirects, HSTS and ACME challenges in force; replaced whole by
    /// [`Proxy::apply_tls`] and read like the route table. Shared with the handshakes' resolver.
    tls: Arc<ArcSwap<TlsTable>>,
    acceptor: TlsAcceptor,
}

impl Proxy {
    pub fn new(config: ProxyConfig) -> Arc<Proxy> {
        let tls = Arc::new(ArcSwap::from_pointee(TlsTable::default()));
        Arc::new(Proxy {
            table: ArcSwap::from_pointee(RouteTable::default()),
            config,
            handing_over: AtomicBool::new(false),
            no_more_wakes: CancellationToken::new(),
            acceptor: TlsAcceptor::from(crate::tls::server_config(tls.clone())),
            tls,
        })
    }

    /// The one way HTTPS settings change (certificates, redirects, HSTS, ACME challenges):
    /// handshakes and requests that start after it returns use `table`.
    pub fn apply_tls(&self, table: TlsTable) {
        let hosts = table.len();
        self.tls.store(Arc::new(table));
        info!(hosts, "TLS table applied");
    }

    pub(crate) fn tls(&self) -> &ArcSwap<TlsTable> {
        &self.tls
    }

    /// The one way routes change: start-up, deploy, switch and rollback all call this.
    /// Requests that start after it returns use `table`; requests already running keep their
    /// instance. Returns the previous table, whose no-longer-routed upstreams
    /// ([`RouteTable::retired_by`]) the caller drains.
    pub fn apply(&self, table: RouteTable) -> Arc<RouteTable> {
        let routes = table.len();
        let table = Arc::new(table);
        let previous = self.table.swap(table.clone());
        // Requests waiting for a sleeping environment look again, in the table now in force.
        for asleep in previous.woken_by(&table) {
            asleep.woke().cancel();
        }
        info!(
            routes,
            previous_routes = previous.len(),
            "route table applied"
        );
        previous
    }

    /// Another process takes over the listening sockets: at the shutdown that follows, an idle
    /// plain keep-alive connection is not closed at once (its client could be sending a request
    /// at that very moment, which would fail) but kept for its next request, answered with
    /// `Connection: close`, until the shutdown grace runs out. HAProxy calls this
    /// `idle-close-on-response`.
    pub fn hand_over(&self) {
        self.handing_over.store(true, Ordering::Relaxed);
    }

    /// This proxy is stopping or being replaced, and gets no more route changes: a request
    /// waiting for a sleeping environment (now or later) gets a 503 saying to try again (a
    /// successor, if any, wakes it) rather than waiting for a wake it would never see.
    pub fn stop_waiting(&self) {
        self.no_more_wakes.cancel();
    }

    pub(crate) fn no_more_wakes(&self) -> &CancellationToken {
        &self.no_more_wakes
    }

    /// Whether [`Proxy::hand_over`] was called.
    pub(crate) fn is_handing_over(&self) -> bool {
        self.handing_over.load(Ordering::Relaxed)
    }

    pub fn current(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    pub(crate) fn routes(&self) -> &ArcSwap<RouteTable> {
        &self.table
    }

    /// Accept connections on `listener` until `shutdown` is cancelled.
    ///
    /// Shutdown, in order: (1) stop accepting and close the listener; (2) tell every
    /// connection to finish: idle HTTP/1 connections close at once, busy ones after their
    /// current response, HTTP/2 ones send GOAWAY and finish their open streams; (3) wait up
    /// to `shutdown_grace` for them; (4) drop the connections still open, and return.
    /// Upgraded tunnels are not connections any more: they belong to their upstream, and
    /// [`Upstream::drain`](crate::Upstream::drain) closes them.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> io::Result<()> {
        self.accept(listener, shutdown, false, None).await
    }

    /// Like [`serve`](Self::serve), for a link's listener: every request on it is routed as a
    /// request for `host` (an environment's internal host), whatever its Host field says, and
    /// passes no login: the listener is the link (it exists only where the link's maker put
    /// it). The key is data of this accept loop, so the request path stays as lean as for any
    /// other listener: the same table, drains, retries and pages.
    pub async fn serve_fixed(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
        host: Arc<FixedHost>,
    ) -> io::Result<()> {
        self.accept(listener, shutdown, false, Some(host)).await
    }

    /// Like [`serve`](Self::serve), for HTTPS: each connection's handshake (certificate by SNI
    /// from the table [`apply_tls`](Self::apply_tls) put in force, ALPN `h2` or `http/1.1`)
    /// must end within the header read timeout; then hyper serves it.
    pub async fn serve_tls(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> io::Result<()> {
        self.accept(listener, shutdown, true, None).await
    }

    /// `fixed`: the host every request on this listener is routed as (see `serve_fixed`).
    async fn accept(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
        secure: bool,
        fixed: Option<Arc<FixedHost>>,
    ) -> io::Result<()> {
        let builder = Arc::new(self.connection_builder());
        // One task per client connection; waited for at shutdown.
        let connections = TaskTracker::new();
        // Cancelled when the shutdown grace has run out: open connections are dropped.
        let abort = CancellationToken::new();
        info!(listen = ?listener.local_addr().ok(), tls = secure, "proxy listening");

        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            let accepted = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    pair
                }
                // The client gave up between SYN and accept; nothing is wrong with us.
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Typically out of file descriptors: wait for some to be released
                    // rather than spin.
                    warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let watch = Watch {
                activity: Activity::new(),
                header_timeout: self.config.header_read_timeout,
                idle_timeout: self.config.idle_timeout,
                shutdown: shutdown.clone(),
                abort: abort.clone(),
                peer,
            };
            if secure {
                connections.spawn(serve_tls_connection(
                    self.clone(),
                    builder.clone(),
                    stream,
                    watch,
                ));
            } else {
                connections.spawn(serve_connection(
                    self.clone(),
                    builder.clone(),
                    stream,
                    watch,
                    Mode {
                        secure: false,
                        fixed: fixed.as_ref().map(|f| f.get()),
                    },
                ));
            }
        }

        drop(listener);
        connections.close();
        info!(
            open = connections.len(),
            "proxy stopped accepting; finishing requests in flight"
        );
        if timeout(self.config.shutdown_grace, connections.wait())
            .await
            .is_err()
        {
            warn!(
                open = connections.len(),
                grace_ms = self.config.shutdown_grace.as_millis() as u64,
                "shutdown grace ran out; dropping the connections still open"
            );
            abort.cancel();
            connections.wait().await;
        }
        info!("proxy stopped");
        Ok(())
    }

    fn connection_builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // The header and idle timeouts are the proxy's own (see `connection`): hyper's
            // header timer would also close idle keep-alive connections.
            .header_read_timeout(None)
            .max_buf_size(self.config.max_header_bytes.max(MIN_H1_BUFFER))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(u32::try_from(self.config.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
        builder
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("routes", &self.table.load().len())
            .field("config", &self.config)
            .finish()
    }
}

/// How a connection's requests are taken: over TLS or not, and by their Host or as one fixed
/// host (a link's listener).
#[derive(Clone)]
pub(crate) struct Mode {
    /// The stream is TLS (over which HTTP/1.1 was agreed, or nothing).
    pub secure: bool,
    pub fixed: Option<Arc<String>>,
}

/// The host a link's listener routes every request as. Changed in place (`set`) when what the
/// link resolves to changes, so the listener keeps its socket (no connection is refused
/// meanwhile); each connection reads it once, when accepted.
#[derive(Debug)]
pub struct FixedHost(ArcSwap<String>);

impl FixedHost {
    pub fn new(host: String) -> Arc<FixedHost> {
        Arc::new(FixedHost(ArcSwap::from_pointee(host)))
    }

    pub fn set(&self, host: String) {
        self.0.store(Arc::new(host));
    }

    pub fn get(&self) -> Arc<String> {
        self.0.load_full()
    }
}

/// Serve one client connection: plain requests on the plain path (`plain`), and from the
/// first request that is not plain, the rest of the connection with hyper.
async fn serve_connection<S>(
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut stream: S,
    watch: Watch,
    mode: Mode,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = watch.peer;
    // Set once a graceful close has begun; from then on only completion or abort matter.
    let closing = AtomicBool::new(false);
    let read = {
        let plain =
            PlainConnection::new(&proxy, peer, &mode, &watch.activity, &closing).serve(&mut stream);
        tokio::pin!(plain);
        loop {
            match watch
                .next(plain.as_mut(), closing.load(Ordering::Relaxed))
                .await
            {
                Event::Done(Outcome::Closed) | Event::Abort => return,
                Event::Done(Outcome::Handoff(read)) => break read,
                // An idle connection closes now (unless the sockets are being handed over: then
                // after its next response, like a busy one after its current one).
                Event::Close if watch.activity.is_idle() && !proxy.is_handing_over() => {
                    return;
                }
                Event::Close => closing.store(true, Ordering::Relaxed),
            }
        }
    };
    let closing = closing.into_inner();
    let io = WatchedIo::new(stream, read, watch.activity.clone());
    serve_hyper(proxy, &builder, io, watch, closing, mode).await;
}

/// Serve one HTTPS connection: its handshake (within the header timeout, like a request head),
/// then HTTP/2 with hyper, or HTTP/1.1 as a plain connection is served (the plain path, then
/// hyper from the first request that is not plain). A TLS-ALPN-01 validation ends once its
/// handshake is done.
async fn serve_tls_connection(
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    watch: Watch,
) {
    let handshake = timeout(watch.header_timeout, proxy.acceptor.accept(stream));
    let mut stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                debug!(client = %watch.peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(client = %watch.peer, "TLS handshake not done in time; closing");
                return;
            }
        },
        // Not on shutdown: a client whose handshake is under way gets its request answered
        // (with `Connection: close`), like one whose request head is.
        _ = watch.abort.cancelled() => return,
    };
    match stream.get_ref().1.alpn_protocol() {
        Some(ACME_TLS_ALPN) => {
            let _ = stream.shutdown().await;
        }
        Some(b"h2") => {
            watch.activity.set_http2();
            let io = WatchedIo::new(stream, bytes::Bytes::new(), watch.activity.clone());
            let mode = Mode {
                secure: true,
                fixed: None,
            };
            serve_hyper(proxy, &builder, io, watch, false, mode).await;
        }
        _ => {
            let mode = Mode {
                secure: true,
                fixed: None,
            };
            serve_connection(proxy, builder, stream, watch, mode).await
        }
    }
}

/// Serve the rest of a connection with hyper (HTTP/1.1 or HTTP/2), until it ends, is closed
/// gracefully (shutdown, idle) or aborted.
async fn serve_hyper<T>(
    proxy: Arc<Proxy>,
    builder: &auto::Builder<TokioExecutor>,
    io: WatchedIo<T>,
    watch: Watch,
    mut closing: bool,
    mode: Mode,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = watch.peer;
    let io = TokioIo::new(io);
    let service = {
        let activity = watch.activity.clone();
        let proxy = proxy.clone();
        service_fn(move |req: Request<Incoming>| {
            let proxy = proxy.clone();
            let mode = mode.clone();
            let http1 = req.version() < Version::HTTP_2;
            let active = activity.begin_request(!http1);
            async move {
                let mut response = forward::handle(&proxy, req, peer, &mode).await;
                response.body_mut().set_active(active);
                // Another process takes the listening sockets over: every HTTP/1 answer from now
                // on says so, so the client opens its next connection to the successor, and
                // never sends a request on one this process is about to close.
                if http1
                    && proxy.is_handing_over()
                    && response.status() != StatusCode::SWITCHING_PROTOCOLS
                {
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, Infallible>(response)
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    // Handing over with the connection idle: hyper would close it at once, racing a request
    // the client may be sending; wait for the next request instead, and close after it.
    let mut close_when_busy = false;
    loop {
        let event = if close_when_busy {
            tokio::select! {
                out = conn.as_mut() => Event::Done(out),
                _ = watch.abort.cancelled() => Event::Abort,
                () = busy(&watch.activity) => {
                    close_when_busy = false;
                    // HTTP/1 ends by itself: the answer to this request says `Connection:
                    // close` (see the service), and hyper closes after it. Shutting down now
                    // could close silently after an answer already on its way without it,
                    // while the client sends its next request on the connection.
                    if watch.activity.is_http2() {
                        conn.as_mut().graceful_shutdown();
                    }
                    continue;
                }
            }
        } else {
            watch.next(conn.as_mut(), closing).await
        };
        match event {
            Event::Done(result) => {
                if let Err(e) = result {
                    debug!(client = %peer, error = %e, "client connection ended with an error");
                }
                return;
            }
            Event::Close => {
                closing = true;
                let http2 = watch.activity.is_http2();
                if proxy.is_handing_over() && (watch.activity.is_idle() || !http2) {
                    close_when_busy = true;
                } else {
                    conn.as_mut().graceful_shutdown();
                }
            }
            Event::Abort => return,
        }
    }
}

/// Resolves once hyper has a request on the connection (its head parsed and handed to the
/// service). Not merely its first bytes: hyper closes an HTTP/1 connection whose next head it
/// has not parsed yet at once on `graceful_shutdown`, dropping that request; once the request
/// is under way it is answered, with `Connection: close`. Polled only for idle connections
/// during a handover, so a short tick costs nothing otherwise.
async fn busy(activity: &Activity) {
    while !activity.has_request() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What a client connection is watched for besides its own progress.
struct Watch {
    activity: Arc<Activity>,
    header_timeout: Duration,
    idle_timeout: Duration,
    shutdown: CancellationToken,
    abort: CancellationToken,
    peer: SocketAddr,
}

/// What happened first.
enum Event<T> {
    /// The connection's future finished.
    Done(T),
    /// Shutdown began or the connection sat idle too long: finish gracefully.
    Close,
    /// A request head took too long, or the shutdown grace ran out: drop the connection.
    Abort,
}

impl Watch {
    /// Drive `conn` until it finishes or something else happens; once `closing`, only its end
    /// or an abort.
    async fn next<F: Future>(&self, conn: Pin<&mut F>, closing: bool) -> Event<F::Output> {
        tokio::select! {
            out = conn => Event::Done(out),
            _ = self.shutdown.cancelled(), if !closing => Event::Close,
            expiry = self.activity.expired(self.header_timeout, self.idle_timeout), if !closing => {
                match expiry {
                    Expiry::HeaderTimeout => {
                        debug!(client = %self.peer, "request head not received in time; closing");
                        Event::Abort
                    }
                    Expiry::Idle => Event::Close,
                }
            }
            _ = self.abort.cancelled() => Event::Abort,
        }
    }
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}
