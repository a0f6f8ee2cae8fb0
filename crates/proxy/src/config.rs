//! Limits and timeouts of the proxy listener.

use std::time::Duration;

/// Limits and timeouts of the proxy. The defaults suit a proxy facing the internet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// How long a client may take to send a complete request head, from the first byte of it
    /// (or from the accept, for the first request). Against slowloris; the connection is
    /// closed without an answer. Default 10 s.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may stay open with no request in progress before the
    /// proxy closes it (HTTP/2: GOAWAY). Default 60 s.
    pub idle_timeout: Duration,
    /// Largest request head accepted; larger ones get 431 (HTTP/1) or a stream error
    /// (HTTP/2). Floored at 8 KiB, hyper's minimum buffer. Default 64 KiB.
    pub max_header_bytes: usize,
    /// How long connecting to an instance may take before the request answers 504.
    /// Default 5 s.
    pub upstream_connect_timeout: Duration,
    /// After shutdown is requested, how long in-flight requests may take to finish before
    /// their connections are dropped. Default 30 s.
    pub shutdown_grace: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            upstream_connect_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}
