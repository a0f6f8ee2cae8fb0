//! What can go wrong on the request path, and on which side of the proxy it went wrong.
//!
//! The side decides the status code and what the client is told; it is also what an operator
//! needs first when reading the log ("is it the app or us?").

use std::error::Error as StdError;
use std::io;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{BoxError, ResponseBody};
use crate::upstream::Upstream;

/// `Retry-After` while an instance restarts: its first restarts come after 1 to 4 s, plus its
/// start-up; the same hint a domain whose environment is starting gives.
const RESTARTING_RETRY_AFTER: u64 = 5;

/// Who is responsible for a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSide {
    /// The request itself is unusable (no Host, a host nobody serves, a method we do not proxy).
    Client,
    /// The proxy chose to stop the request (an instance was drained past its deadline).
    Proxy,
    /// The instance behind the route failed: refused, timed out, or broke the exchange.
    Upstream,
}

/// A request the proxy answered itself instead of relaying the instance's answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("request has no Host header")]
    MissingHost,

    /// RFC 9112 §3.2: a request with more than one Host field, or an unparsable one, gets a 400.
    #[error("request has an invalid Host header")]
    InvalidHost,

    #[error("no environment is routed for host '{host}'")]
    UnknownHost { host: String },

    /// A reverse proxy has no business opening arbitrary tunnels (RFC 9110 §9.3.6).
    #[error("method {method} is not proxied")]
    MethodNotAllowed { method: http::Method },

    #[error("request target cannot be forwarded: {reason}")]
    BadTarget { reason: String },

    /// The instance refused the connection while its runtime restarts it after a crash: a
    /// passing state, so 503 with `Retry-After` (RFC 9110 §15.6.4) rather than 502.
    #[error("could not connect to {upstream}: it is restarting")]
    Restarting {
        upstream: String,
        #[source]
        source: BoxError,
    },

    /// The client's request body broke off or was malformed (a bad chunk line, RFC 9112 §7.1)
    /// while it was being forwarded: the client's fault, not the instance's.
    #[error("the request body could not be read from the client")]
    BadRequestBody {
        #[source]
        source: BoxError,
    },

    #[error("could not connect to {upstream}")]
    UpstreamUnreachable {
        upstream: String,
        #[source]
        source: BoxError,
    },

    #[error("connecting to {upstream} timed out")]
    UpstreamTimeout {
        upstream: String,
        #[source]
        source: BoxError,
    },

    /// The instance took the request but sent no response head within its route's
    /// response timeout; the connection to it is closed.
    #[error("{upstream} sent no response head within {}ms", timeout.as_millis())]
    ResponseTimeout {
        upstream: String,
        timeout: std::time::Duration,
    },

    #[error("{upstream} failed while answering")]
    UpstreamFailed {
        upstream: String,
        #[source]
        source: BoxError,
    },

    /// RFC 9110 §15.2.2: a server must not switch protocols the client did not ask for.
    #[error("{upstream} switched protocols without being asked to")]
    UnrequestedUpgrade { upstream: String },

    #[error("{upstream} was drained before it answered")]
    Drained { upstream: String },

    /// The environment sleeps and this proxy stops (or is replaced) before it woke.
    #[error("{env} was asleep and the proxy is stopping")]
    WakeInterrupted { env: String },

    /// The environment sleeps and did not wake (pass its health check) within its wait.
    #[error("{env} did not wake within {}s", waited.as_secs())]
    WakeTimeout {
        env: String,
        waited: std::time::Duration,
    },
}

impl ProxyError {
    pub fn side(&self) -> ErrorSide {
        match self {
            ProxyError::MissingHost
            | ProxyError::InvalidHost
            | ProxyError::UnknownHost { .. }
            | ProxyError::MethodNotAllowed { .. }
            | ProxyError::BadTarget { .. }
            | ProxyError::BadRequestBody { .. } => ErrorSide::Client,
            ProxyError::Drained { .. }
            | ProxyError::WakeTimeout { .. }
            | ProxyError::WakeInterrupted { .. } => ErrorSide::Proxy,
            ProxyError::UpstreamUnreachable { .. }
            | ProxyError::Restarting { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::ResponseTimeout { .. }
            | ProxyError::UpstreamFailed { .. }
            | ProxyError::UnrequestedUpgrade { .. } => ErrorSide::Upstream,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::MissingHost
            | ProxyError::InvalidHost
            | ProxyError::BadTarget { .. }
            | ProxyError::BadRequestBody { .. } => StatusCode::BAD_REQUEST,
            ProxyError::UnknownHost { .. } => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Drained { .. }
            | ProxyError::Restarting { .. }
            | ProxyError::WakeTimeout { .. }
            | ProxyError::WakeInterrupted { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamTimeout { .. } | ProxyError::ResponseTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::UpstreamUnreachable { .. }
            | ProxyError::UpstreamFailed { .. }
            | ProxyError::UnrequestedUpgrade { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// Text for the client. Upstream failures name the host the client asked for, never the
    /// instance's address or release label: those are for the log, not for the internet.
    fn client_message(&self, host: Option<&str>) -> String {
        let host = host.unwrap_or("?");
        match self {
            ProxyError::MissingHost => "turnout: request has no Host header\n".to_owned(),
            ProxyError::InvalidHost => "turnout: request has an invalid Host header\n".to_owned(),
            ProxyError::UnknownHost { host } => {
                format!("turnout: no environment is routed for host '{host}'\n")
            }
            ProxyError::MethodNotAllowed { method } => {
                format!("turnout: method {method} is not proxied\n")
            }
            ProxyError::BadTarget { .. } => "turnout: request target is not supported\n".to_owned(),
            ProxyError::BadRequestBody { .. } => {
                "turnout: the request body is malformed or incomplete\n".to_owned()
            }
            ProxyError::UpstreamUnreachable { .. } | ProxyError::UpstreamFailed { .. } => {
                format!("turnout: the environment for host '{host}' did not answer\n")
            }
            ProxyError::UnrequestedUpgrade { .. } => {
                format!(
                    "turnout: the environment for host '{host}' answered with an invalid response\n"
                )
            }
            ProxyError::Restarting { .. } => {
                format!(
                    "turnout: the environment for host '{host}' is restarting; try again shortly\n"
                )
            }
            ProxyError::UpstreamTimeout { .. } | ProxyError::ResponseTimeout { .. } => {
                format!("turnout: the environment for host '{host}' did not answer in time\n")
            }
            ProxyError::Drained { .. } => {
                format!(
                    "turnout: the environment for host '{host}' was replaced before it answered\n"
                )
            }
            ProxyError::WakeInterrupted { .. } => format!(
                "turnout: the environment for host '{host}' was asleep and this proxy is restarting; try again shortly\n"
            ),
            ProxyError::WakeTimeout { waited, .. } => format!(
                "turnout: the environment for host '{host}' was asleep and did not wake within {}s; try again shortly\n",
                waited.as_secs()
            ),
        }
    }

    /// Seconds the client should wait before trying again, for a passing failure.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ProxyError::Restarting { .. }
            | ProxyError::WakeTimeout { .. }
            | ProxyError::WakeInterrupted { .. } => Some(RESTARTING_RETRY_AFTER),
            _ => None,
        }
    }

    /// A connect failure: [`Restarting`](Self::Restarting) while the runtime restarts the
    /// instance, [`UpstreamUnreachable`](Self::UpstreamUnreachable) otherwise.
    pub(crate) fn unreachable(upstream: &Upstream, source: BoxError) -> Self {
        let label = upstream.label().to_owned();
        if upstream.is_restarting() {
            ProxyError::Restarting {
                upstream: label,
                source,
            }
        } else {
            ProxyError::UpstreamUnreachable {
                upstream: label,
                source,
            }
        }
    }

    pub(crate) fn into_response(self, host: Option<&str>) -> Response<ResponseBody> {
        let status = self.status();
        let text = self.client_message(host);
        let retry_after = self.retry_after();
        let mut response = local_response(status, text);
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }

    /// The answer of [`into_response`](Self::into_response) as HTTP/1.1 bytes, for the plain
    /// path; with `Connection: close` when `close`.
    pub(crate) fn to_http1(&self, host: Option<&str>, close: bool) -> Vec<u8> {
        let status = self.status();
        let text = self.client_message(host);
        let mut out = Vec::with_capacity(256 + text.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in local_fields(TEXT) {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("content-length: {}\r\ndate: ", text.len()).as_bytes());
        crate::wire::push_date(&mut out);
        out.extend_from_slice(b"\r\n");
        if let Some(seconds) = self.retry_after() {
            out.extend_from_slice(format!("retry-after: {seconds}\r\n").as_bytes());
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(text.as_bytes());
        out
    }

    /// Classify a failure of the pooled client by what it tells us about the upstream.
    pub(crate) fn from_client(to: &Upstream, source: hyper_util::client::legacy::Error) -> Self {
        let upstream = to.label().to_owned();
        // The only body the client sends that can fail is the client's own request body
        // (hyper calls an error of the body it is given a user error).
        if chain_has(&source, |e| {
            e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_user)
        }) {
            return ProxyError::BadRequestBody {
                source: source.into(),
            };
        }
        if source.is_connect() {
            // hyper-util's connector reports its connect timeout as io::ErrorKind::TimedOut.
            if chain_has(&source, |e| {
                e.downcast_ref::<io::Error>()
                    .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
            }) {
                ProxyError::UpstreamTimeout {
                    upstream,
                    source: source.into(),
                }
            } else {
                ProxyError::unreachable(to, source.into())
            }
        } else {
            ProxyError::UpstreamFailed {
                upstream,
                source: source.into(),
            }
        }
    }
}

/// True when the client guarantees that not a byte of the request reached the upstream:
/// the connection was never established, or hyper handed the request back unsent
/// (`hyper::Error::is_canceled`, e.g. a pooled connection that turned out closed).
pub(crate) fn nothing_was_sent(error: &hyper_util::client::legacy::Error) -> bool {
    error.is_connect()
        || chain_has(error, |e| {
            e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_canceled)
        })
}

fn chain_has(
    error: &(dyn StdError + 'static),
    pred: impl Fn(&(dyn StdError + 'static)) -> bool,
) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if pred(e) {
            return true;
        }
        current = e.source();
    }
    false
}

const TEXT: &str = "text/plain; charset=utf-8";

/// A response the proxy writes itself. `nosniff` because the body echoes a client-supplied
/// host; `no-store` so a shared cache never keeps a transient 502 in place of the app.
pub(crate) fn local_response(status: StatusCode, text: String) -> Response<ResponseBody> {
    local(status, text, TEXT)
}

/// An HTML page the proxy writes itself (maintenance, login), with the same caching rules.
pub(crate) fn local_page(status: StatusCode, html: String) -> Response<ResponseBody> {
    local(status, html, "text/html; charset=utf-8")
}

/// The fields of every answer the proxy writes itself.
fn local_fields(content_type: &'static str) -> [(header::HeaderName, &'static str); 3] {
    [
        (header::CONTENT_TYPE, content_type),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ]
}

fn local(status: StatusCode, body: String, content_type: &'static str) -> Response<ResponseBody> {
    local_bytes(status, Bytes::from(body), content_type)
}

/// A response the proxy writes itself, of any content type (an ACME key authorization).
pub(crate) fn local_bytes(
    status: StatusCode,
    body: Bytes,
    content_type: &'static str,
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in local_fields(content_type) {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_map_to_4xx() {
        assert_eq!(ProxyError::MissingHost.status(), StatusCode::BAD_REQUEST);
        assert_eq!(ProxyError::MissingHost.side(), ErrorSide::Client);
        let unknown = ProxyError::UnknownHost { host: "x".into() };
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            unknown.client_message(None),
            "turnout: no environment is routed for host 'x'\n"
        );
        let drained = ProxyError::Drained {
            upstream: "a".into(),
        };
        assert_eq!(drained.side(), ErrorSide::Proxy);
        assert_eq!(drained.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
