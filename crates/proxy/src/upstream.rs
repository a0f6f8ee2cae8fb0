//! One running instance behind the proxy, and the bookkeeping that lets it be drained.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use http::uri::Authority;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{info, warn};
use turnout_netns::Network;

use crate::client::{UpstreamClient, upstream_client};

/// How long cut work gets to wind down after the drain deadline before `drain` returns anyway:
/// enough for a tunnel to finish the WebSocket frame it is in and send its close frame
/// (see `tunnel::CLOSE_GRACE`), short enough that a stuck client cannot hold up a deploy.
const CUT_GRACE: Duration = Duration::from_secs(2);
/// Idle connections kept per instance for the plain path; as many as hyper's pool keeps.
const IDLE_MAX: usize = 128;
/// How long an instance may take to send a response head when its route entry does not say
/// (see [`Upstream::with_response_timeout`]); the app file's default too.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// One running instance that the proxy can send requests to.
pub struct Upstream {
    addr: SocketAddr,
    /// Where `addr` is: the environment's network namespace, or the host's network.
    network: Network,
    /// The hyper path's pooled connections to this instance, made on first use.
    client: OnceLock<UpstreamClient>,
    label: String,
    /// `addr` in the form the upstream request URI needs, built once.
    authority: Authority,
    /// How long the instance may take to send its response head, counted from when the proxy
    /// starts sending the request (after a streamed upload: from its last byte). Past it the
    /// request answers 504 and the connection to the instance is closed.
    response_timeout: Duration,
    /// Every proxied request holds a token until its response body has been sent. `drain`
    /// closes the tracker and waits for it to empty.
    work: TaskTracker,
    /// Cancelled by `drain` once the requests' deadline has passed: requests still waiting for
    /// the instance answer 503, response bodies still streaming end with an error.
    cut: CancellationToken,
    /// Streams: upgraded tunnels (WebSockets) and server-sent-event responses, which by design
    /// never finish on their own. A request turns into a stream when its response head says
    /// so, trading its `work` token for one of these. They get their own, shorter deadline.
    streams: TaskTracker,
    /// Cancelled at the streams' deadline: event streams end cleanly at the next event
    /// boundary, WebSockets get close code 1001 at the next frame boundary, other tunnels shut.
    close_streams: CancellationToken,
    /// Set while the runtime restarts the instance after a crash (it exited and is waiting out
    /// its backoff or starting again), by whoever watches the runtime (the control plane's
    /// `launch`). Read only when a connect fails, to answer 503 with `Retry-After` instead of
    /// 502: the instance is known to be coming back.
    restarting: AtomicBool,
    /// Open connections to the instance that no request is using, for the plain path (see
    /// `plain`); the most recently used last. Locked only to push or pop one, never across an
    /// `.await`.
    idle: Mutex<Vec<TcpStream>>,
}

/// How long a drain lets each kind of work finish before ending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainDeadlines {
    /// Ordinary requests (a slow upload or a long computation).
    pub requests: Duration,
    /// WebSockets, other upgraded connections and server-sent-event streams.
    pub streams: Duration,
}

/// What a drain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainOutcome {
    /// From the start of the drain until it returned.
    pub waited: Duration,
    /// Requests still running at their deadline, which the drain cut.
    pub cut: usize,
    /// Streams still open at their deadline, which the drain closed cleanly.
    pub closed_streams: usize,
}

impl Upstream {
    /// An instance on the host's network. `label` names it in logs, e.g. `shop/staging@3f2a1c9`.
    /// Its response timeout is [`DEFAULT_RESPONSE_TIMEOUT`].
    pub fn new(addr: SocketAddr, label: impl Into<String>) -> Arc<Upstream> {
        Upstream::with_response_timeout(addr, label, DEFAULT_RESPONSE_TIMEOUT)
    }

    /// Like [`new`](Self::new), with the time the instance has to send each response head.
    pub fn with_response_timeout(
        addr: SocketAddr,
        label: impl Into<String>,
        response_timeout: Duration,
    ) -> Arc<Upstream> {
        Upstream::in_network(Network::Host, addr, label, response_timeout)
    }

    /// An instance listening on `addr` inside `network` (every connection to it is made there),
    /// with the time it has to send each response head.
    pub fn in_network(
        network: Network,
        addr: SocketAddr,
        label: impl Into<String>,
        response_timeout: Duration,
    ) -> Arc<Upstream> {
        let authority = Authority::try_from(addr.to_string())
            .expect("a socket address is a valid URI authority");
        Arc::new(Upstream {
            addr,
            network,
            client: OnceLock::new(),
            label: label.into(),
            authority,
            response_timeout,
            work: TaskTracker::new(),
            cut: CancellationToken::new(),
            streams: TaskTracker::new(),
            close_streams: CancellationToken::new(),
            restarting: AtomicBool::new(false),
            idle: Mutex::new(Vec::new()),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// Tell the proxy whether the instance is being restarted after a crash (see the field).
    pub fn set_restarting(&self, restarting: bool) {
        self.restarting.store(restarting, Ordering::Relaxed);
    }

    pub fn is_restarting(&self) -> bool {
        self.restarting.load(Ordering::Relaxed)
    }

    /// Proxied requests and streams currently running.
    pub fn in_flight(&self) -> usize {
        self.work.len() + self.streams.len()
    }

    /// [`drain_with`](Self::drain_with) one deadline for requests and streams alike.
    pub async fn drain(&self, deadline: Duration) -> DrainOutcome {
        self.drain_with(DrainDeadlines {
            requests: deadline,
            streams: deadline,
        })
        .await
    }

    /// Wait for the work in flight on this instance to finish, each kind up to its deadline,
    /// then end whatever is still running. Call it after a route table that no longer routes
    /// here has been applied: new requests cannot reach this instance any more, so the work
    /// only shrinks.
    ///
    /// Steps: (1) close both trackers, so a request that raced the switch and picked this
    /// instance after the close re-reads the table instead (see `forward::route`); (2) wait,
    /// concurrently, for requests up to their deadline and for streams (and for requests, since a
    /// request may still turn into a stream) up to theirs; (3) at a deadline, cancel that kind's
    /// token: waiting requests answer 503 and streaming bodies end with an error; event streams
    /// end at an event boundary, WebSockets send close code 1001 at a frame boundary, other
    /// tunnels shut down; (4) give what was ended `CUT_GRACE` to let go, then return.
    pub async fn drain_with(&self, deadlines: DrainDeadlines) -> DrainOutcome {
        let started = Instant::now();
        self.work.close();
        self.streams.close();
        // No request will need them; connections in use are dropped when they are let go.
        self.idle_connections().clear();
        let requests = async {
            if timeout(deadlines.requests, self.work.wait()).await.is_ok() {
                return 0;
            }
            let cut = self.work.len();
            warn!(
                upstream = %self.label, cut, deadline_ms = deadlines.requests.as_millis() as u64,
                "drain deadline passed; cutting the requests still running"
            );
            self.cut.cancel();
            if timeout(CUT_GRACE, self.work.wait()).await.is_err() {
                warn!(
                    upstream = %self.label, remaining = self.work.len(),
                    "cut requests have not let go yet (a client is not reading); giving up on them"
                );
            }
            cut
        };
        let streams = async {
            let all_done = async {
                self.work.wait().await;
                self.streams.wait().await;
            };
            if timeout(deadlines.streams, all_done).await.is_ok() {
                return 0;
            }
            let closed = self.streams.len();
            info!(
                upstream = %self.label, closed, deadline_ms = deadlines.streams.as_millis() as u64,
                "closing the streams still open"
            );
            // Also ends streams that requests still running turn into later.
            self.close_streams.cancel();
            if timeout(CUT_GRACE, self.streams.wait()).await.is_err() {
                warn!(
                    upstream = %self.label, remaining = self.streams.len(),
                    "closed streams have not let go yet; giving up on them"
                );
            }
            closed
        };
        let (cut, closed_streams) = tokio::join!(requests, streams);
        let waited = started.elapsed();
        info!(
            upstream = %self.label, waited_ms = waited.as_millis() as u64, cut, closed_streams,
            "drained"
        );
        DrainOutcome {
            waited,
            cut,
            closed_streams,
        }
    }

    pub(crate) fn authority(&self) -> &Authority {
        &self.authority
    }

    /// A new connection to the instance, made in its network.
    pub(crate) async fn connect(&self) -> std::io::Result<TcpStream> {
        self.network.connect(self.addr).await
    }

    /// The hyper path's client for this instance, made on first use.
    pub(crate) fn client(&self, connect_timeout: Duration) -> &UpstreamClient {
        self.client
            .get_or_init(|| upstream_client(self.network.clone(), self.addr, connect_timeout))
    }

    /// A token that keeps this instance from counting as drained, or `None` once a drain has
    /// begun. The token is taken before the closed flag is read: both live in one atomic, so
    /// either the drain sees this token and waits for it, or we see the drain and step back.
    pub(crate) fn begin_work(&self) -> Option<TaskTrackerToken> {
        let token = self.work.token();
        if self.work.is_closed() {
            None
        } else {
            Some(token)
        }
    }

    /// A token regardless of drain state, for the rare request that could not find an
    /// undrained instance; the drain then still waits for it (or cuts it).
    pub(crate) fn force_work(&self) -> TaskTrackerToken {
        self.work.token()
    }

    pub(crate) fn cut_signal(&self) -> &CancellationToken {
        &self.cut
    }

    /// A token for a request that has turned into a stream (it replaces the request's token).
    pub(crate) fn stream_token(&self) -> TaskTrackerToken {
        self.streams.token()
    }

    pub(crate) fn close_streams_signal(&self) -> &CancellationToken {
        &self.close_streams
    }

    /// An idle connection to the instance, most recently used first. It may have been closed
    /// by the instance meanwhile: the caller checks.
    pub(crate) fn take_idle(&self) -> Option<TcpStream> {
        self.idle_connections().pop()
    }

    /// Keep a connection that has finished an exchange for the next request, unless the
    /// instance is being drained or enough are kept already.
    pub(crate) fn put_idle(&self, conn: TcpStream) {
        if self.work.is_closed() {
            return;
        }
        let mut idle = self.idle_connections();
        if idle.len() < IDLE_MAX {
            idle.push(conn);
        }
    }

    fn idle_connections(&self) -> std::sync::MutexGuard<'_, Vec<TcpStream>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr)
            .field("network", &self.network.name())
            .field("label", &self.label)
            .field("in_flight", &self.in_flight())
            .field("draining", &self.work.is_closed())
            .field("restarting", &self.is_restarting())
            .finish()
    }
}
