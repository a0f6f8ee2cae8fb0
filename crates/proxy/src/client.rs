//! The pooled HTTP/1.1 client of the hyper path, one per instance: its connections are made in
//! the instance's network (see `turnout-netns`), so two environments' instances on the same
//! port of their own loopbacks can never share a pooled connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use turnout_netns::Network;

use crate::body::UpstreamBody;

/// Idle pooled connections to an instance are closed after this. The client retries a request
/// that a pooled connection closed under it (see `retry_canceled_requests`).
const POOL_IDLE: Duration = Duration::from_secs(30);
const POOL_MAX_IDLE: usize = 128;

pub(crate) type UpstreamClient = Client<Connector, UpstreamBody>;

/// Connects to one instance, whatever the request's URI says: the URI only names it for the
/// pool.
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    network: Network,
    addr: SocketAddr,
    timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let Connector {
            network,
            addr,
            timeout,
        } = self.clone();
        Box::pin(async move {
            let stream = tokio::time::timeout(timeout, network.connect(addr))
                .await
                // Reported as hyper-util's own connector reports its timeout.
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            let _ = stream.set_nodelay(true);
            Ok(TokioIo::new(stream))
        })
    }
}

pub(crate) fn upstream_client(
    network: Network,
    addr: SocketAddr,
    connect_timeout: Duration,
) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        // A request handed back unsent by a pooled connection that had closed is sent again on
        // another connection: nothing of it reached the instance.
        .retry_canceled_requests(true)
        // The Host header is the client's, set by `headers::prepare_request_headers`.
        .set_host(false)
        .build(Connector {
            network,
            addr,
            timeout: connect_timeout,
        })
}
