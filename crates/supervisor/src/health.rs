use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, HeaderValue, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use turnout_netns::Network;

use crate::fmt_duration;

/// How to tell that an instance is ready for traffic: an HTTP/1.1 GET of `path` on
/// 127.0.0.1:port with the given Host header; any status below 400 counts as healthy, so an app
/// that redirects to a login page is healthy.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct HealthCheck {
    /// Request path, e.g. "/" or "/healthz".
    pub path: String,
    /// Host header, e.g. "staging.shop.localhost": apps often route or redirect by host.
    pub host: String,
    /// How long a new instance has to become healthy.
    pub timeout: Duration,
    /// Pause between probes.
    pub interval: Duration,
}

impl HealthCheck {
    /// Bound on one probe, so a server that accepts but never answers cannot stall a deploy.
    /// Never below one second: on a loaded machine a healthy app may take that long to answer.
    pub(crate) fn probe_timeout(&self) -> Duration {
        (self.interval * 4).clamp(Duration::from_secs(1), Duration::from_secs(5))
    }
}

/// One probe. The error is a short description of what was seen, e.g. "GET / answered 500
/// Internal Server Error" or "GET /: connection refused".
pub(crate) async fn probe(
    network: &Network,
    addr: SocketAddr,
    check: &HealthCheck,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, request(network, addr, check)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "GET {}: no answer within {}",
            check.path,
            fmt_duration(timeout)
        )),
    }
}

async fn request(network: &Network, addr: SocketAddr, check: &HealthCheck) -> Result<(), String> {
    let path = &check.path;
    let stream = network.connect(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            format!("GET {path}: connection refused")
        } else {
            format!("GET {path}: could not connect: {e}")
        }
    })?;
    let host = HeaderValue::from_str(&check.host)
        .map_err(|_| format!("invalid Host header for the health check: {:?}", check.host))?;
    let req = Request::builder()
        .method(Method::GET)
        .uri(path.as_str())
        .header(HOST, host)
        .header(USER_AGENT, "turnout-health-check")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|_| format!("invalid health check path: {path:?}"))?;

    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    // The connection must be driven while the request is in flight; it is dropped (closed) as
    // soon as the status line arrives, since the body says nothing about health.
    tokio::pin!(conn);
    let send = sender.send_request(req);
    tokio::pin!(send);
    let response = tokio::select! {
        biased;
        response = &mut send => response,
        // A finished connection has either handed over the response or failed the request,
        // so the request future resolves at once.
        _ = &mut conn => send.await,
    }
    .map_err(|e| format!("GET {path}: {e}"))?;
    let status = response.status();
    if status.as_u16() < 400 {
        Ok(())
    } else {
        Err(format!("GET {path} answered {status}"))
    }
}
