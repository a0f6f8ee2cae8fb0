//! One client connection of the egress proxy: HTTP/1.1 (hyper's server, heads bounded to
//! `MAX_HEAD`, `HEAD_TIMEOUT` to send one), each request either forwarded (absolute form,
//! RFC 9112 §3.2.2) on a new connection to the origin, or a `CONNECT` tunnel (RFC 9110
//! §9.3.6) to it. Every request that names an environment ends in one log record.
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use turnout_model::{EgressDecision, EgressPolicy};

use super::policy::{self, Blocked};
use super::{Egress, EnvEntry};
use crate::store::egress::LogRecord;

type Body = Either<Incoming, Full<Bytes>>;

/// A request head (line and headers) longer than this is refused (hyper's read buffer).
const MAX_HEAD: usize = 64 * 1024;
/// A client has this long to send a request head, including between requests on a kept
/// connection: an idle client connection closes after it.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The origin has this long to start answering a forwarded request.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// A tunnel that carries nothing either way for this long is closed.
const TUNNEL_IDLE: Duration = Duration::from_secs(300);
/// Resolved addresses tried, at most.
const MAX_ADDRS: usize = 8;
/// The longest path (and host) kept in the log.
const MAX_LOGGED: usize = 1024;

pub(super) async fn connection(egress: Arc<Egress>, stream: TcpStream, inside: Option<i64>) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req| {
        let egress = egress.clone();
        async move { Ok::<_, Infallible>(handle(egress, req, inside).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

/// Where a request goes.
struct Target {
    /// Lower case, without a trailing dot; an IPv6 address in brackets.
    host: String,
    port: u16,
    /// The path without the query string; empty for CONNECT.
    path: String,
}

/// One request being handled: what its log record says.
struct Call {
    egress: Arc<Egress>,
    env: Arc<EnvEntry>,
    method: String,
    target: Target,
    started: Instant,
    at_ms: i64,
}

impl Call {
    fn record(
        &self,
        decision: EgressDecision,
        status: u16,
        counters: Option<&Counters>,
        error: Option<String>,
    ) {
        let (up, down) = counters.map_or((0, 0), |c| {
            (c.up.load(Ordering::Relaxed), c.down.load(Ordering::Relaxed))
        });
        self.egress.record(LogRecord {
            env_id: self.env.id,
            at_ms: self.at_ms,
            method: self.method.clone(),
            host: self.target.host.clone(),
            port: self.target.port,
            path: self.target.path.clone(),
            decision,
            status,
            bytes_up: up,
            bytes_down: down,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            error,
        });
    }
}

async fn handle(
    egress: Arc<Egress>,
    mut req: Request<Incoming>,
    inside: Option<i64>,
) -> Response<Body> {
    let env = match identify(&egress, req.headers(), inside) {
        Ok(env) => env,
        Err(refused) => return refused.answer(),
    };
    let target = match target(&req) {
        Ok(t) => t,
        Err(why) => return text(StatusCode::BAD_REQUEST, &why),
    };
    let call = Call {
        egress: egress.clone(),
        env,
        method: req.method().as_str().chars().take(16).collect(),
        target,
        started: Instant::now(),
        at_ms: now_ms(),
    };
    let (policy, _) = egress.policy(call.env.app_id, call.env.tier);
    let decision = policy::decide(&policy, &call.target.host, call.target.port);
    if decision == EgressDecision::Denied {
        call.record(decision, 403, None, None);
        return text(StatusCode::FORBIDDEN, &denied(&call));
    }
    let addrs = match resolve(&call.target).await {
        Ok(a) => a,
        Err(e) => {
            call.record(decision, 502, None, Some(e.clone()));
            return text(StatusCode::BAD_GATEWAY, &format!("turnout egress: {e}\n"));
        }
    };
    let (addrs, refused) = reachable(&egress, &policy, &call.target, addrs);
    if addrs.is_empty() {
        let message = refused_message(&call, refused);
        call.record(
            EgressDecision::Denied,
            403,
            None,
            Some(message.trim_end().to_owned()),
        );
        return text(StatusCode::FORBIDDEN, &message);
    }
    let counters = Arc::new(Counters::default());
    let origin = match connect(&addrs).await {
        Ok(stream) => Counted {
            inner: stream,
            counters: counters.clone(),
        },
        Err((status, e)) => {
            call.record(decision, status.as_u16(), None, Some(e.clone()));
            return text(status, &format!("turnout egress: {e}\n"));
        }
    };
    if req.method() == Method::CONNECT {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let error = match upgrade.await {
                Ok(client) => tunnel(TokioIo::new(client), origin, &counters).await,
                Err(e) => Some(format!("the client's tunnel did not open: {e}")),
            };
            call.record(decision, 200, Some(&counters), error);
        });
        return Response::new(Either::Right(Full::new(Bytes::new())));
    }
    forward(call, decision, req, origin, counters).await
}

/// Forward `req` to the origin on `origin`; the log record is written when the exchange ends
/// (the response's body sent, or it failed).
async fn forward(
    call: Call,
    decision: EgressDecision,
    req: Request<Incoming>,
    origin: Counted,
    counters: Arc<Counters>,
) -> Response<Body> {
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(origin)).await
    {
        Ok(pair) => pair,
        Err(e) => {
            let e = format!("cannot speak HTTP to {}: {e}", call.target.host);
            call.record(decision, 502, Some(&counters), Some(e.clone()));
            return text(StatusCode::BAD_GATEWAY, &format!("turnout egress: {e}\n"));
        }
    };
    // The record waits for both ends: the exchange with the origin (which may finish before
    // this task has looked at the response) and what the client was answered.
    let (answered, answer) = tokio::sync::oneshot::channel::<(u16, Option<String>)>();
    let abort = CancellationToken::new();
    {
        let (abort, counters) = (abort.clone(), counters.clone());
        tokio::spawn(async move {
            let conn_error = tokio::select! {
                r = conn => r.err().map(|e| e.to_string()),
                () = abort.cancelled() => None,
            };
            let (status, error) = answer
                .await
                .unwrap_or((502, Some("the request was dropped".to_owned())));
            call.record(decision, status, Some(&counters), error.or(conn_error));
        });
    }
    let fail = |answered: tokio::sync::oneshot::Sender<(u16, Option<String>)>,
                code: StatusCode,
                e: String| {
        abort.cancel();
        let _ = answered.send((code.as_u16(), Some(e.clone())));
        text(code, &format!("turnout egress: {e}\n"))
    };
    let (mut parts, body) = req.into_parts();
    let host_header = parts
        .uri
        .authority()
        .map(|a| match a.port() {
            Some(p) => format!("{}:{p}", a.host()),
            None => a.host().to_owned(),
        })
        .unwrap_or_default();
    let origin_form = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .parse::<Uri>();
    parts.uri = match origin_form {
        Ok(uri) => uri,
        Err(e) => {
            return fail(
                answered,
                StatusCode::BAD_REQUEST,
                format!("bad request target: {e}"),
            );
        }
    };
    parts.version = hyper::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    match HeaderValue::from_str(&host_header) {
        Ok(v) => {
            parts.headers.insert(header::HOST, v);
        }
        Err(e) => return fail(answered, StatusCode::BAD_REQUEST, format!("bad host: {e}")),
    }
    let sent = tokio::time::timeout(
        RESPONSE_TIMEOUT,
        sender.send_request(Request::from_parts(parts, body)),
    )
    .await;
    drop(sender);
    match sent {
        Ok(Ok(mut resp)) => {
            let _ = answered.send((resp.status().as_u16(), None));
            strip_hop_by_hop(resp.headers_mut());
            resp.map(Either::Left)
        }
        Ok(Err(e)) => fail(
            answered,
            StatusCode::BAD_GATEWAY,
            format!("{} did not answer: {e}", call_host(&host_header)),
        ),
        Err(_) => fail(
            answered,
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "{} did not answer within {}s",
                call_host(&host_header),
                RESPONSE_TIMEOUT.as_secs()
            ),
        ),
    }
}

fn call_host(h: &str) -> &str {
    if h.is_empty() { "the origin" } else { h }
}

/// Who is asking: the namespace's environment (a credential, if sent, must be its own), or on
/// the host's listener the environment the credentials name.
fn identify(
    egress: &Egress,
    headers: &HeaderMap,
    inside: Option<i64>,
) -> Result<Arc<EnvEntry>, Refused> {
    let table = egress.table();
    let sent = headers.get(header::PROXY_AUTHORIZATION).map(basic);
    let checked = |env: &EnvEntry, user: &str, password: &str| {
        user == env.user() && egress.credentials.check_credential(env.id, password)
    };
    match inside {
        Some(id) => {
            let env = table.envs.get(&id).cloned().ok_or(Refused::Unknown)?;
            match sent {
                None => Ok(env),
                Some(Some((user, password))) if checked(&env, &user, &password) => Ok(env),
                Some(_) => Err(Refused::Wrong),
            }
        }
        None => match sent {
            None => Err(Refused::Missing),
            Some(None) => Err(Refused::Wrong),
            Some(Some((user, password))) => table
                .users
                .get(&user)
                .and_then(|id| table.envs.get(id))
                .filter(|env| checked(env, &user, &password))
                .cloned()
                .ok_or(Refused::Wrong),
        },
    }
}

/// Why a request names no environment it may speak for.
enum Refused {
    Missing,
    Wrong,
    /// A namespace's listener of an environment the proxy has not been told of.
    Unknown,
}

impl Refused {
    fn answer(self) -> Response<Body> {
        match self {
            Refused::Missing => auth_required(MISSING),
            Refused::Wrong => auth_required(WRONG),
            Refused::Unknown => text(
                StatusCode::FORBIDDEN,
                "turnout egress: this environment is not known to the proxy yet; restart it\n",
            ),
        }
    }
}

const MISSING: &str = "turnout egress: proxy credentials missing: use the proxy URL Turnout gives each environment in HTTP_PROXY (user APP.ENV and that environment's password)\n";
const WRONG: &str = "turnout egress: the proxy credentials do not match an environment: use the proxy URL Turnout gives each environment in HTTP_PROXY (user APP.ENV and that environment's password)\n";

/// `Basic base64(user:password)`: `Some(None)` when the header is not that.
fn basic(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 1024 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn auth_required(body: &str) -> Response<Body> {
    let mut resp = text(StatusCode::PROXY_AUTHENTICATION_REQUIRED, body);
    resp.headers_mut().insert(
        header::PROXY_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"turnout egress\""),
    );
    resp
}

fn target(req: &Request<Incoming>) -> Result<Target, String> {
    let uri = req.uri();
    if req.method() == Method::CONNECT {
        let authority = uri
            .authority()
            .ok_or("turnout egress: CONNECT needs HOST:PORT")?;
        let port = authority
            .port_u16()
            .ok_or("turnout egress: CONNECT needs HOST:PORT")?;
        return Ok(Target {
            host: normal_host(authority.host())?,
            port,
            path: String::new(),
        });
    }
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err("turnout egress: send https:// requests through CONNECT (HTTPS clients do when HTTPS_PROXY is set)\n".to_owned());
        }
        Some(other) => {
            return Err(format!(
                "turnout egress: only http:// requests and CONNECT tunnels pass, not {}\n",
                other.chars().take(20).collect::<String>()
            ));
        }
        None => {
            return Err("turnout egress: this is Turnout's egress proxy: it takes requests in absolute form (GET http://host/path), as clients send them when HTTP_PROXY is set\n".to_owned());
        }
    }
    let authority = uri
        .authority()
        .ok_or("turnout egress: the request names no host")?;
    Ok(Target {
        host: normal_host(authority.host())?,
        port: authority.port_u16().unwrap_or(80),
        path: uri.path().chars().take(MAX_LOGGED).collect(),
    })
}

fn normal_host(host: &str) -> Result<String, String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() || host.len() > 255 {
        return Err(
            "turnout egress: the request names no host (or one over 255 characters)\n".to_owned(),
        );
    }
    Ok(host)
}

fn denied(call: &Call) -> String {
    let (app, env, tier) = (&call.env.app, &call.env.env, call.env.tier);
    let host = &call.target.host;
    format!(
        "turnout egress: {app}/{env} may not reach {host}:{port}: the {tier} tier's outbound requests are denied except to the hosts on its allow-list.\nTo allow it: turnout egress policy {app} --tier {tier} --allow-host {host}\n",
        port = call.target.port
    )
}

fn refused_message(call: &Call, refused: Option<(IpAddr, Blocked)>) -> String {
    let (app, tier) = (&call.env.app, call.env.tier);
    let (host, port) = (&call.target.host, call.target.port);
    match refused {
        Some((ip, Blocked::OwnPort)) => format!(
            "turnout egress: {host}:{port} ({ip}) is a port of Turnout itself; no environment reaches it through the egress proxy\n"
        ),
        Some((ip, Blocked::Internal)) => format!(
            "turnout egress: {host}:{port} resolves to {ip}, an address of this machine or of a private network; only a host on the allow-list by its exact name or address reaches one.\nTo allow it: turnout egress policy {app} --tier {tier} --allow-host {host}:{port}\n"
        ),
        None => format!("turnout egress: {host} resolves to no address\n"),
    }
}

async fn resolve(target: &Target) -> Result<Vec<SocketAddr>, String> {
    let bare = target.host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, target.port)]);
    }
    match tokio::time::timeout(
        RESOLVE_TIMEOUT,
        tokio::net::lookup_host((bare, target.port)),
    )
    .await
    {
        Ok(Ok(addrs)) => {
            let addrs: Vec<_> = addrs.take(MAX_ADDRS).collect();
            if addrs.is_empty() {
                Err(format!("{bare} resolves to no address"))
            } else {
                Ok(addrs)
            }
        }
        Ok(Err(e)) => Err(format!("cannot resolve {bare}: {e}")),
        Err(_) => Err(format!(
            "resolving {bare} took over {}s",
            RESOLVE_TIMEOUT.as_secs()
        )),
    }
}

/// The addresses that may be reached, and the first refused one with why.
fn reachable(
    egress: &Egress,
    policy: &EgressPolicy,
    target: &Target,
    addrs: Vec<SocketAddr>,
) -> (Vec<SocketAddr>, Option<(IpAddr, Blocked)>) {
    let exactly = policy.lists_exactly(&target.host, target.port);
    let mut ok = Vec::new();
    let mut refused = None;
    for addr in addrs {
        match policy::blocked(addr.ip(), addr.port(), &egress.own_ports, exactly) {
            None => ok.push(addr),
            Some(why) => {
                refused.get_or_insert((addr.ip(), why));
            }
        }
    }
    (ok, refused)
}

/// Connect to the first address that answers: the ones checked, never a fresh lookup.
async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, (StatusCode, String)> {
    let mut last = (
        StatusCode::BAD_GATEWAY,
        "no address to connect to".to_owned(),
    );
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => {
                last = (
                    StatusCode::BAD_GATEWAY,
                    format!("cannot connect to {addr}: {e}"),
                )
            }
            Err(_) => {
                last = (
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "connecting to {addr} took over {}s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                );
            }
        }
    }
    Err(last)
}

/// Carry bytes both ways until both sides are done, or nothing moves for `TUNNEL_IDLE`.
async fn tunnel(
    mut client: TokioIo<hyper::upgrade::Upgraded>,
    mut origin: Counted,
    counters: &Counters,
) -> Option<String> {
    let idle = async {
        let mut seen = counters.total();
        loop {
            tokio::time::sleep(TUNNEL_IDLE).await;
            let now = counters.total();
            if now == seen {
                return;
            }
            seen = now;
        }
    };
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut origin) => r.err().map(|e| e.to_string()),
        () = idle => Some(format!("closed after {}s without traffic", TUNNEL_IDLE.as_secs())),
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and the proxy's own: never passed on, so the
/// environment's proxy credentials never reach an origin.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body.to_owned()))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Bytes sent to (`up`) and received from (`down`) the origin.
#[derive(Default)]
struct Counters {
    up: AtomicU64,
    down: AtomicU64,
}

impl Counters {
    fn total(&self) -> u64 {
        self.up.load(Ordering::Relaxed) + self.down.load(Ordering::Relaxed)
    }
}

/// The connection to the origin, counting what passes.
struct Counted {
    inner: TcpStream,
    counters: Arc<Counters>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.counters.down.fetch_add(read, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.counters.up.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
