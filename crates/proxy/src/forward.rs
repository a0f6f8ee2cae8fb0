//! One request: route it, relay it to the instance, relay the answer back.
//!
//! Nothing here takes a lock, touches the store or blocks: the route table is an `ArcSwap`
//! load, released before the first `.await`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Incoming};
use tokio::sync::oneshot;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{debug, warn};

use crate::body::{ResponseBody, Upload, UpstreamBody};
use crate::error::{ErrorSide, ProxyError, local_page, nothing_was_sent};
use crate::headers;
use crate::login::{self, Held, Login};
use crate::route_table::{Asleep, Maintenance, Resolved, RouteTable};
use crate::server::{Mode, Proxy};
use crate::stats::RouteStats;
use crate::tls::TlsTable;
use crate::tunnel::Tunnel;
use crate::upstream::Upstream;

/// How many times a request re-reads the table when the instance it found is already being
/// drained. One re-read suffices when the control plane applies before it drains; the bound
/// only guards against a caller that drains an instance it still routes to.
const DRAINING_REREADS: usize = 3;

/// One request. Over TLS (`mode.secure`) HSTS is sent and `X-Forwarded-Proto` says https;
/// else a host that redirects to HTTPS gets a 308, and ACME's HTTP-01 path is answered here.
/// On a link's listener (`mode.fixed`) the request is routed as that host, with no login, and
/// nothing is intercepted; the instance still gets the Host the client sent (the fixed host
/// when it sent none).
pub(crate) async fn handle(
    proxy: &Proxy,
    req: Request<Incoming>,
    peer: SocketAddr,
    mode: &Mode,
) -> Response<ResponseBody> {
    let secure = mode.secure;
    if let Some(key) = &mode.fixed {
        let host = headers::request_host(&req)
            .or_else(|_| HeaderValue::from_str(key).map_err(|_| ProxyError::InvalidHost));
        return relay(proxy, req, host, Some(key.as_str()), peer, false).await;
    }
    let host = headers::request_host(&req);
    // The TLS table is let go before the first `.await`, like the route table.
    let hsts = {
        let tls = proxy.tls().load();
        let name = host.as_ref().ok().and_then(|h| h.to_str().ok());
        if secure {
            name.and_then(|n| tls.for_host_header(n))
                .and_then(|t| t.hsts.clone())
        } else {
            if let Some(answer) = intercepted(&tls, &req, name) {
                return answer;
            }
            None
        }
    };
    let mut response = relay(proxy, req, host, None, peer, secure).await;
    if let Some(hsts) = hsts {
        response
            .headers_mut()
            .insert(http::header::STRICT_TRANSPORT_SECURITY, hsts);
    }
    response
}

/// What the proxy answers itself to a plain-HTTP request for `host` (its Host, if it has a
/// valid one), before any route is looked at (so a domain in maintenance, protected or not
/// routed yet still validates): an HTTP-01 token in force, or a 308 to HTTPS for a host that
/// redirects.
fn intercepted(
    tls: &TlsTable,
    req: &Request<Incoming>,
    host: Option<&str>,
) -> Option<Response<ResponseBody>> {
    if let Some(key_authorization) = tls.http01(req.uri().path()) {
        return Some(crate::error::local_bytes(
            StatusCode::OK,
            key_authorization.clone(),
            "application/octet-stream",
        ));
    }
    let host = host?;
    if !tls.for_host_header(host)?.redirect {
        return None;
    }
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = HeaderValue::from_str(&tls.https_location(host, path)).ok()?;
    let mut response = crate::error::local_response(StatusCode::PERMANENT_REDIRECT, String::new());
    response
        .headers_mut()
        .insert(http::header::LOCATION, location);
    Some(response)
}

/// Route and relay a request whose Host was read (`host`), counting and logging its outcome.
/// `key`: the host it is routed as, when not its own (a link's listener; no login).
async fn relay(
    proxy: &Proxy,
    req: Request<Incoming>,
    host: Result<HeaderValue, ProxyError>,
    key: Option<&str>,
    peer: SocketAddr,
    secure: bool,
) -> Response<ResponseBody> {
    let started = Instant::now();
    // For the error log only; both clones share the request's buffers.
    let method = req.method().clone();
    let uri = req.uri().clone();
    let mut stats = None;
    let (host, result) = match host {
        Ok(host) => {
            let result = forward(proxy, req, peer, secure, (&host, key), &mut stats).await;
            (Some(host), result)
        }
        Err(e) => (None, Err(e)),
    };
    let error = match result {
        Ok(response) => {
            if let Some(stats) = stats {
                stats.record(response.status(), started.elapsed());
            }
            return response;
        }
        Err(error) => error,
    };
    if let Some(stats) = stats {
        stats.record(error.status(), started.elapsed());
    }
    let host = key.or_else(|| host.as_ref().and_then(|h| h.to_str().ok()));
    log_failure(
        host.unwrap_or(""),
        method.as_str(),
        uri.path(),
        peer,
        &error,
    );
    error.into_response(host)
}

/// Log a request the proxy answered itself: refusals at debug level, failures as warnings.
pub(crate) fn log_failure(
    host: &str,
    method: &str,
    path: &str,
    peer: SocketAddr,
    error: &ProxyError,
) {
    match error.side() {
        ErrorSide::Client => debug!(
            host = %host, method = %method, path = %path, client = %peer,
            error = %error, "request refused"
        ),
        ErrorSide::Proxy | ErrorSide::Upstream => warn!(
            host = %host, method = %method, path = %path, client = %peer,
            error = %error, cause = ?std::error::Error::source(error),
            "request failed"
        ),
    }
}

/// `stats` is set to the route's counters as soon as the host is found, so the caller can count
/// the outcome whatever it is.
async fn forward(
    proxy: &Proxy,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    secure: bool,
    (host, key): (&HeaderValue, Option<&str>),
    stats: &mut Option<Arc<RouteStats>>,
) -> Result<Response<ResponseBody>, ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed {
            method: Method::CONNECT,
        });
    }
    let gate = key.is_none();
    let host_name = match key {
        Some(key) => key,
        None => host.to_str().map_err(|_| ProxyError::InvalidHost)?,
    };
    if req.method() == Method::OPTIONS && is_asterisk(req.uri()) {
        return Ok(server_options());
    }
    let upgrade = headers::wants_upgrade(req.headers(), req.version());
    // Must be taken from the client's request itself: hyper resolves it once our 101 is sent.
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    let path = upstream_path(&parts.uri)?;
    // RFC 9110 §9.2.2: idempotent methods may be repeated; without a body there is nothing
    // we would have had to buffer to repeat it.
    let replayable = body.is_end_stream()
        && matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
    let (body, mut uploaded) = if body.is_end_stream() {
        (Either::Right(Empty::new()), None)
    } else {
        let (upload, uploaded) = Upload::new(body);
        (Either::Left(upload), Some(uploaded))
    };
    let mut body = Some(body);
    headers::prepare_request_headers(&mut parts.headers, parts.version, host, peer.ip(), upgrade);
    if secure {
        headers::mark_secure(&mut parts.headers);
    }

    let (mut upstream, mut work, mut login) =
        match awake(proxy, host_name, gate, &parts, stats).await? {
            Routed::Upstream(upstream, work, login) => (upstream, work, login),
            Routed::Maintenance(m) => return Ok(maintenance_page(&m)),
            Routed::Login(login, held) => {
                return Ok(login_answer(&login, held, &parts, body.take(), host_name, peer).await);
            }
        };
    let mut retried = false;
    let mut response = loop {
        // `parts.headers` keep the credentials while a retry may still need to log in again.
        let mut headers = if replayable && !retried {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        login::strip_credentials(&mut headers, login.as_deref());
        let request = build_request(
            &parts.method,
            &path,
            headers,
            body.take().unwrap_or_else(|| Either::Right(Empty::new())),
        );
        let sent = tokio::select! {
            sent = send(proxy, &upstream, &path, request) => sent,
            _ = upstream.cut_signal().cancelled() => {
                return Err(ProxyError::Drained { upstream: upstream.label().to_owned() });
            }
            // Dropping `send` drops hyper's response future, which closes the connection to
            // the instance instead of returning it to the pool.
            _ = response_timer(uploaded.take(), upstream.response_timeout()) => {
                return Err(ProxyError::ResponseTimeout {
                    upstream: upstream.label().to_owned(),
                    timeout: upstream.response_timeout(),
                });
            }
        };
        let error = match sent {
            Ok(response) => break response,
            Err(error) => error,
        };
        if !replayable || retried || !error.nothing_was_sent() {
            return Err(error.into_proxy_error(&upstream));
        }
        // Nothing reached the instance, so repeating is safe; ask the table again in case
        // the host moved in the meantime.
        let (next, next_work, next_login) =
            match awake(proxy, host_name, gate, &parts, stats).await? {
                Routed::Upstream(upstream, work, login) => (upstream, work, login),
                Routed::Maintenance(m) => return Ok(maintenance_page(&m)),
                Routed::Login(login, held) => {
                    return Ok(login_answer(&login, held, &parts, None, host_name, peer).await);
                }
            };
        if error.is_connect() && Arc::ptr_eq(&next, &upstream) {
            // A connect failure against the same instance would only fail again, slower.
            return Err(error.into_proxy_error(&upstream));
        }
        debug!(
            host = %host_name, upstream = %upstream.label(), next = %next.label(), error = %error,
            "request never reached the instance; retrying once"
        );
        (upstream, work, login) = (next, next_work, next_login);
        retried = true;
    };

    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ProxyError::UnrequestedUpgrade {
                upstream: upstream.label().to_owned(),
            });
        };
        // From here on this is a stream: it trades its request token for a stream token.
        drop(work);
        let tunnel = Tunnel {
            client: client_upgrade,
            upstream: hyper::upgrade::on(&mut response),
            websocket: headers::is_websocket(response.headers()),
            label: upstream.label().to_owned(),
            cut: upstream.close_streams_signal().clone(),
            work: upstream.stream_token(),
        };
        tokio::spawn(tunnel.run());
        let (mut parts, _) = response.into_parts();
        headers::prepare_response_headers(&mut parts.headers, parts.version, true);
        parts.version = Version::HTTP_11;
        return Ok(Response::from_parts(parts, ResponseBody::empty()));
    }

    let (mut parts, body) = response.into_parts();
    headers::prepare_response_headers(&mut parts.headers, parts.version, false);
    // hyper writes the version of the client's connection; don't carry the upstream's.
    parts.version = Version::default();
    let body = if headers::is_event_stream(&parts.headers) {
        drop(work);
        ResponseBody::event_stream(
            body,
            upstream.stream_token(),
            upstream.close_streams_signal(),
        )
    } else {
        ResponseBody::upstream(body, work, upstream.cut_signal())
    };
    Ok(Response::from_parts(parts, body))
}

/// Resolves `timeout` after the request body has gone to the instance (for a request without
/// one: from now).
async fn response_timer(uploaded: Option<oneshot::Receiver<()>>, timeout: Duration) {
    if let Some(uploaded) = uploaded {
        // An error only means the body ended without a last frame (an aborted upload).
        let _ = uploaded.await;
    }
    tokio::time::sleep(timeout).await;
}

enum Routed {
    /// Forward to this instance; on a protected host the request logged in with a token of
    /// the login, whose credentials are removed before forwarding.
    Upstream(Arc<Upstream>, TaskTrackerToken, Option<Arc<Login>>),
    Maintenance(Arc<Maintenance>),
    /// A protected host answers itself: a login page, or the request is not logged in.
    Login(Arc<Login>, Held),
}

/// Look the host up in the current table, check the login of a protected host, and take a
/// drain token of its instance. The login and the target come from the same table, so a
/// switch can never forward a request past a login it did not pass. `Ok(Err(_))`: the host's
/// environment sleeps (see `awake`).
/// `gate`: check the login (false on a link's listener, which has none).
fn route(
    proxy: &Proxy,
    host: &str,
    gate: bool,
    request: &http::request::Parts,
    stats: &mut Option<Arc<RouteStats>>,
) -> Result<Result<Routed, Arc<Asleep>>, ProxyError> {
    let path = request.uri.path();
    let picked = with_work(proxy, host, |table| {
        let Some(found) = table.find(host) else {
            return Err(Err(ProxyError::UnknownHost {
                host: host.to_owned(),
            }));
        };
        *stats = Some(found.stats.clone());
        // A protected host checks the login before it even looks at its target: a host in
        // maintenance shows its page (and its health-check path) only to those logged in.
        let login = found.login.filter(|_| gate);
        if let Some(login) = login
            && let Err(held) = login::gate(login, path, &request.headers)
        {
            return Err(Ok(Ok(Routed::Login(login.clone(), held))));
        }
        let upstream = match found.target {
            Resolved::Upstream(upstream) => upstream.clone(),
            Resolved::Maintenance(m) => match &m.health {
                Some((health_path, upstream)) if health_path == path => upstream.clone(),
                _ => return Err(Ok(Ok(Routed::Maintenance(m.clone())))),
            },
            Resolved::Asleep(a) => return Err(Ok(Err(a.clone()))),
        };
        Ok((upstream, login.cloned()))
    });
    match picked {
        Ok((upstream, work, login)) => Ok(Ok(Routed::Upstream(upstream, work, login))),
        Err(answer) => answer,
    }
}

/// `route`, waiting while the host's environment sleeps: the request asks for a wake (only
/// the first one of a sleeping environment reaches the control plane) and waits until a table
/// without that sleeping entry is in force, then routes afresh, up to the entry's wait; then a
/// 503 says the environment did not wake in time. Nothing is locked or blocked meanwhile: the
/// wait is on the entry's own cancellation token and a timer.
async fn awake(
    proxy: &Proxy,
    host: &str,
    gate: bool,
    request: &http::request::Parts,
    stats: &mut Option<Arc<RouteStats>>,
) -> Result<Routed, ProxyError> {
    let mut deadline = None;
    loop {
        let asleep = match route(proxy, host, gate, request, stats)? {
            Ok(routed) => return Ok(routed),
            Err(asleep) => asleep,
        };
        let until = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + asleep.wait);
        asleep.want();
        tokio::select! {
            _ = asleep.woke().cancelled() => {}
            _ = proxy.no_more_wakes().cancelled() => {
                asleep.gave_up();
                return Err(ProxyError::WakeInterrupted { env: asleep.label.clone() });
            }
            _ = tokio::time::sleep_until(until) => {
                asleep.gave_up();
                return Err(ProxyError::WakeTimeout {
                    env: asleep.label.clone(),
                    waited: asleep.wait,
                });
            }
        }
    }
}

/// Take a drain token of the instance `pick` chooses from the current table (`pick` returns
/// `Err` for a request that goes nowhere). A drain only starts after the table that dropped
/// its instance was applied, so a closed tracker means the table just read is already stale:
/// read it again. The table guard is released before returning, so it is never held across an
/// `.await`.
pub(crate) fn with_work<T, R>(
    proxy: &Proxy,
    host: &str,
    mut pick: impl FnMut(&RouteTable) -> Result<(Arc<Upstream>, T), R>,
) -> Result<(Arc<Upstream>, TaskTrackerToken, T), R> {
    let mut last = None;
    for _ in 0..DRAINING_REREADS {
        let (upstream, picked) = pick(&proxy.routes().load())?;
        if let Some(work) = upstream.begin_work() {
            return Ok((upstream, work, picked));
        }
        last = Some((upstream, picked));
    }
    let (upstream, picked) = last.expect("the loop ran at least once");
    warn!(host = %host, upstream = %upstream.label(), "host is still routed to an instance being drained");
    let work = upstream.force_work();
    Ok((upstream, work, picked))
}

/// A protected host's own answer; refusals are logged (never with a token) at debug level,
/// like other client-side refusals.
async fn login_answer(
    login: &Login,
    held: Held,
    parts: &http::request::Parts,
    body: Option<UpstreamBody>,
    host: &str,
    peer: SocketAddr,
) -> Response<ResponseBody> {
    if let Held::Refused(refusal) = held {
        debug!(
            host = %host, method = %parts.method, path = %parts.uri.path(), client = %peer,
            realm = %login.realm, reason = refusal.as_str(), "login required"
        );
    }
    let response = login::answer(login, held, parts, body).await;
    if parts.uri.path() == login::LOGIN_PATH && response.status() == StatusCode::UNAUTHORIZED {
        debug!(
            host = %host, client = %peer, realm = %login.realm,
            "login form refused: token not accepted"
        );
    }
    response
}

/// The maintenance page: 503 with `Retry-After` (RFC 9110 §10.2.3), never cached.
fn maintenance_page(m: &Maintenance) -> Response<ResponseBody> {
    let message = escape_html(&m.message);
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Down for maintenance</title></head>\n\
         <body style=\"font-family: sans-serif; margin: 4em auto; max-width: 40em\">\n\
         <h1>Down for maintenance</h1>\n<p>{message}</p>\n</body></html>\n"
    );
    let mut response = local_page(StatusCode::SERVICE_UNAVAILABLE, html);
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(m.retry_after.as_secs().max(1)),
    );
    response
}

pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn is_asterisk(uri: &Uri) -> bool {
    uri.path_and_query().is_some_and(|pq| pq.as_str() == "*")
}

/// The methods the proxy forwards to an instance: every method but CONNECT (whether an app
/// serves one is the app's answer, per resource).
const ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH";

/// `OPTIONS *` asks about the server in general, not about a resource (RFC 9110 §9.3.7). No
/// single environment is that server, and a host's environment may change between two
/// requests, so the proxy answers itself: 200 with `Allow`, the methods it forwards.
fn server_options() -> Response<ResponseBody> {
    let mut response = crate::error::local_response(StatusCode::OK, String::new());
    response
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(ALLOW));
    response
}

fn upstream_path(uri: &Uri) -> Result<PathAndQuery, ProxyError> {
    match uri.path_and_query() {
        // RFC 9112 §3.2.4: asterisk-form only exists for a server-wide OPTIONS (answered by
        // `server_options`); with any other method it names nothing.
        Some(pq) if pq.as_str() == "*" => Err(ProxyError::BadTarget {
            reason: "asterisk-form request target".to_owned(),
        }),
        Some(pq) => Ok(pq.clone()),
        None => Ok(PathAndQuery::from_static("/")),
    }
}

/// The request for the instance, with an origin-form target; the pooled client gets an
/// absolute one (see `send`).
fn build_request(
    method: &Method,
    path: &PathAndQuery,
    headers: http::HeaderMap,
    body: UpstreamBody,
) -> Request<UpstreamBody> {
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = Uri::from(path.clone());
    // Instances speak HTTP/1.1, whatever the client spoke.
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request
}

/// A failed exchange with the instance.
enum SendError {
    Pool(hyper_util::client::legacy::Error),
    Target(ProxyError),
}

impl SendError {
    fn nothing_was_sent(&self) -> bool {
        match self {
            SendError::Pool(e) => nothing_was_sent(e),
            SendError::Target(_) => false,
        }
    }

    fn is_connect(&self) -> bool {
        match self {
            SendError::Pool(e) => e.is_connect(),
            SendError::Target(_) => false,
        }
    }

    fn into_proxy_error(self, upstream: &Upstream) -> ProxyError {
        match self {
            SendError::Pool(e) => ProxyError::from_client(upstream, e),
            SendError::Target(e) => e,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Pool(e) => e.fmt(f),
            SendError::Target(e) => e.fmt(f),
        }
    }
}

/// Send through the pooled client, with the absolute-form target it needs.
async fn send(
    proxy: &Proxy,
    upstream: &Arc<Upstream>,
    path: &PathAndQuery,
    mut request: Request<UpstreamBody>,
) -> Result<Response<Incoming>, SendError> {
    *request.uri_mut() = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(upstream.authority().clone())
        .path_and_query(path.clone())
        .build()
        .map_err(|e| {
            SendError::Target(ProxyError::BadTarget {
                reason: e.to_string(),
            })
        })?;
    upstream
        .client(proxy.config().upstream_connect_timeout)
        .request(request)
        .await
        .map_err(SendError::Pool)
}
