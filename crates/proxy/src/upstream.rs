//! One running instance behind the proxy, and the bookkeeping that lets it be drained.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{info, warn};

/// How long cut work gets to wind down after the drain deadline before `drain` returns anyway:
/// enough for a tunnel to finish the WebSocket frame it is in and send its close frame
/// (see `tunnel::CLOSE_GRACE`), short enough that a stuck client cannot hold up a deploy.
const CUT_GRACE: Duration = Duration::from_secs(2);

/// One running instance that the proxy can send requests to.
pub struct Upstream {
    addr: SocketAddr,
    label: String,
    /// `addr` in the form the upstream request URI needs, built once.
    authority: Authority,
    /// Every proxied request holds a token until its response body has been sent, and every
    /// upgraded tunnel until it closes. `drain` closes the tracker and waits for it to empty.
    work: TaskTracker,
    /// Cancelled by `drain` once its deadline has passed: requests still waiting for the
    /// instance answer 503, response bodies still streaming end with an error, tunnels close.
    cut: CancellationToken,
}

/// What a drain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainOutcome {
    /// From the start of the drain until it returned.
    pub waited: Duration,
    /// Requests and tunnels still running at the deadline, which the drain cut.
    pub cut: usize,
}

impl Upstream {
    /// `label` names the instance in logs, e.g. `shop/staging@3f2a1c9`.
    pub fn new(addr: SocketAddr, label: impl Into<String>) -> Arc<Upstream> {
        let authority = Authority::try_from(addr.to_string())
            .expect("a socket address is a valid URI authority");
        Arc::new(Upstream {
            addr,
            label: label.into(),
            authority,
            work: TaskTracker::new(),
            cut: CancellationToken::new(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Proxied requests and upgraded tunnels currently running.
    pub fn in_flight(&self) -> usize {
        self.work.len()
    }

    /// Wait for the work in flight on this instance to finish, up to `deadline`, then cut
    /// whatever is still running. Call it after a route table that no longer routes here has
    /// been applied: new requests cannot reach this instance any more, so the work only shrinks.
    ///
    /// Steps: (1) close the tracker, so a request that raced the switch and picked this
    /// instance after the close re-reads the table instead (see `forward::route`); (2) wait
    /// until every token is gone or the deadline passes; (3) at the deadline, cancel `cut`:
    /// waiting requests answer 503, streaming bodies end with an error, WebSocket tunnels send
    /// close code 1001 at the next frame boundary, other tunnels shut down; (4) give the cut
    /// work `CUT_GRACE` to let go, then return.
    pub async fn drain(&self, deadline: Duration) -> DrainOutcome {
        let started = Instant::now();
        self.work.close();
        if timeout(deadline, self.work.wait()).await.is_ok() {
            let waited = started.elapsed();
            info!(upstream = %self.label, waited_ms = waited.as_millis() as u64, "drained");
            return DrainOutcome { waited, cut: 0 };
        }
        let cut = self.work.len();
        warn!(
            upstream = %self.label,
            cut,
            deadline_ms = deadline.as_millis() as u64,
            "drain deadline passed; cutting the requests and tunnels still running"
        );
        self.cut.cancel();
        if timeout(CUT_GRACE, self.work.wait()).await.is_err() {
            warn!(
                upstream = %self.label,
                remaining = self.work.len(),
                "cut work has not let go yet (a client is not reading); giving up on it"
            );
        }
        DrainOutcome {
            waited: started.elapsed(),
            cut,
        }
    }

    pub(crate) fn authority(&self) -> &Authority {
        &self.authority
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
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr)
            .field("label", &self.label)
            .field("in_flight", &self.in_flight())
            .field("draining", &self.work.is_closed())
            .finish()
    }
}
