//! A traffic client for load tests: the kinds of traffic a web app gets, each in a loop that
//! runs until told to stop and checks every answer.
//!
//! Loops: keep-alive GETs (one connection for the loop's whole life), POSTs of 1 MB bodies that
//! must come back byte for byte, 2 s requests, a server-sent-events reader and a WebSocket echo
//! client. They talk to the fixture `fixtures/mixed_app.py`, which names the environment and
//! release that answered in `X-Env` and `X-Release`; a [`Judge`] supplied by the test decides
//! whether that instance was allowed to answer. Every failure is recorded in the [`Tally`]
//! with what was expected and when, and counted; nothing panics inside a loop.
use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Where traffic goes: the proxy's address and the Host header that picks the environment.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
}

/// Decides whether an answer came from an instance that was allowed to give it.
pub trait Judge: Send + Sync + 'static {
    /// What the judge needs to remember about the moment a request started.
    type Ticket: Send + 'static;

    /// Taken just before a request (or a stream, or a WebSocket handshake) is sent.
    fn ticket(&self) -> Self::Ticket;

    /// Called when the answer's head arrives: may the instance `env`/`release` answer a
    /// request that started with `ticket`?
    fn check(&self, ticket: &Self::Ticket, env: &str, release: &str) -> Result<(), String>;

    /// May a stream served by `env`/`release` be closed by a drain now? True once that release
    /// is being replaced.
    fn may_be_closed(&self, env: &str, release: &str) -> bool;
}

/// Counts of what went through, shared by every loop and readable while they run.
pub struct Tally {
    started: Instant,
    pub gets: AtomicU64,
    pub posts: AtomicU64,
    pub slow: AtomicU64,
    pub sse_events: AtomicU64,
    /// SSE streams that a drain ended cleanly, after which the reader reconnected.
    pub sse_reconnects: AtomicU64,
    pub ws_echoes: AtomicU64,
    /// WebSocket connections a drain closed with 1001, after which the client reconnected.
    pub ws_drain_closes: AtomicU64,
    /// WebSocket messages sent but not echoed because a drain closed the connection first.
    pub ws_unanswered_at_close: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            started: Instant::now(),
            gets: AtomicU64::new(0),
            posts: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            sse_events: AtomicU64::new(0),
            sse_reconnects: AtomicU64::new(0),
            ws_echoes: AtomicU64::new(0),
            ws_drain_closes: AtomicU64::new(0),
            ws_unanswered_at_close: AtomicU64::new(0),
            failures: Mutex::new(Vec::new()),
        }
    }

    pub fn fail(&self, who: &str, what: impl Display) {
        let at = self.started.elapsed().as_secs_f64();
        self.failures
            .lock()
            .unwrap()
            .push(format!("[{at:7.3}s] {who}: {what}"));
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }

    pub fn failure_count(&self) -> usize {
        self.failures.lock().unwrap().len()
    }

    pub fn summary(&self) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "GET {} ok, POST 1 MB {} ok, slow {} ok, SSE events {} (reconnects after a drain {}), \
             WS echoes {} (1001 closes by a drain {}, messages unanswered at those closes {}), \
             failures {}",
            n(&self.gets),
            n(&self.posts),
            n(&self.slow),
            n(&self.sse_events),
            n(&self.sse_reconnects),
            n(&self.ws_echoes),
            n(&self.ws_drain_closes),
            n(&self.ws_unanswered_at_close),
            self.failure_count()
        )
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The head of an answer plus its whole body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub env: String,
    pub release: String,
    pub body: Bytes,
}

fn who_answered<B>(resp: &Response<B>) -> (String, String) {
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    (header("x-env"), header("x-release"))
}

/// One HTTP/1.1 connection, kept alive across requests.
pub struct HttpConn {
    send: http1::SendRequest<Full<Bytes>>,
}

impl HttpConn {
    pub async fn open(addr: SocketAddr) -> Result<HttpConn, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).ok();
        let (send, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn.with_upgrades());
        Ok(HttpConn { send })
    }

    /// Whether a request can go out on it: false once the server has closed it between
    /// requests (after answering one with `Connection: close`, or idle), when an HTTP client
    /// opens a new connection; nothing was sent, so nothing failed.
    pub async fn usable(&mut self) -> bool {
        self.send.ready().await.is_ok()
    }

    /// Send one request and return its head, leaving the body to the caller.
    pub async fn start(
        &mut self,
        target: &Target,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response<Incoming>, String> {
        self.send
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &target.host);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(body)).unwrap();
        self.send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))
    }

    /// One whole request and answer.
    pub async fn request(
        &mut self,
        target: &Target,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Reply, String> {
        let resp = self.start(target, method, path, &[], body).await?;
        let status = resp.status();
        let (env, release) = who_answered(&resp);
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body cut after the head ({status}, env {env:?}): {e}"))?
            .to_bytes();
        Ok(Reply {
            status,
            env,
            release,
            body,
        })
    }
}

/// A body of `len` bytes that differs for every `seed` (xorshift64), so an answer mixed up with
/// another request's or shifted by a byte cannot match.
pub fn pattern(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = BytesMut::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out.freeze()
}

/// How an event stream ended.
#[derive(Debug)]
pub enum StreamEnd {
    /// The body ended properly (for chunked framing: with its last chunk).
    Clean,
    /// The connection failed; `mid_event` says whether part of an event had arrived.
    Broken { mid_event: bool, error: String },
}

impl Display for StreamEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamEnd::Clean => f.write_str("ended cleanly"),
            StreamEnd::Broken {
                mid_event: true,
                error,
            } => write!(f, "broke inside an event: {error}"),
            StreamEnd::Broken {
                mid_event: false,
                error,
            } => write!(f, "broke between events: {error}"),
        }
    }
}

/// A server-sent-events stream (text/event-stream) read event by event.
pub struct SseStream {
    body: Incoming,
    buf: BytesMut,
    pub env: String,
    pub release: String,
}

impl SseStream {
    /// GET `path` on a connection of its own; the answer must be 200 text/event-stream.
    pub async fn open(target: &Target, path: &str) -> Result<SseStream, String> {
        let mut conn = HttpConn::open(target.addr).await?;
        let resp = conn
            .start(
                target,
                Method::GET,
                path,
                &[("accept", "text/event-stream")],
                Bytes::new(),
            )
            .await?;
        let (env, release) = who_answered(&resp);
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if resp.status() != StatusCode::OK || content_type != "text/event-stream" {
            return Err(format!(
                "GET {path}: status {}, content-type {content_type:?}",
                resp.status()
            ));
        }
        Ok(SseStream {
            body: resp.into_body(),
            buf: BytesMut::new(),
            env,
            release,
        })
    }

    /// The data of the next event (its `data:` lines joined by newlines). Cancel-safe: what
    /// has arrived stays buffered.
    pub async fn next_event(&mut self) -> Result<String, StreamEnd> {
        loop {
            if let Some(end) = find(&self.buf, b"\n\n") {
                let event = self.buf.split_to(end + 2);
                let text = String::from_utf8_lossy(&event[..end]).into_owned();
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                return Ok(data.join("\n"));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    return Err(StreamEnd::Broken {
                        mid_event: !self.buf.is_empty(),
                        error: e.to_string(),
                    });
                }
                None if self.buf.is_empty() => return Err(StreamEnd::Clean),
                None => {
                    return Err(StreamEnd::Broken {
                        mid_event: true,
                        error: format!("stream ended inside an event: {:?}", self.buf),
                    });
                }
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The Sec-WebSocket-Key of RFC 6455 §1.3's example and its accept value: a fixed key is as good
/// as a random one for a test client, and the expected answer needs no SHA-1 here.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A WebSocket message (RFC 6455 §5.6, §5.5), one frame each: the test client neither sends
/// nor expects fragmented messages.
#[derive(Debug, PartialEq, Eq)]
pub enum WsMessage {
    Text(String),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<u16>),
}

/// The client end of a WebSocket.
pub struct WebSocket {
    io: TokioIo<Upgraded>,
    buf: BytesMut,
    mask_seed: u64,
    pub env: String,
    pub release: String,
}

impl WebSocket {
    /// The opening handshake (RFC 6455 §4.1) on a connection of its own.
    pub async fn connect(target: &Target, path: &str) -> Result<WebSocket, String> {
        let mut conn = HttpConn::open(target.addr).await?;
        let resp = conn
            .start(
                target,
                Method::GET,
                path,
                &[
                    ("connection", "Upgrade"),
                    ("upgrade", "websocket"),
                    ("sec-websocket-version", "13"),
                    ("sec-websocket-key", WS_KEY),
                ],
                Bytes::new(),
            )
            .await?;
        let (env, release) = who_answered(&resp);
        let accept = resp
            .headers()
            .get("sec-websocket-accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS || accept != WS_ACCEPT {
            return Err(format!(
                "handshake: status {}, Sec-WebSocket-Accept {accept:?}",
                resp.status()
            ));
        }
        let upgraded = hyper::upgrade::on(resp)
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        Ok(WebSocket {
            io: TokioIo::new(upgraded),
            buf: BytesMut::new(),
            mask_seed: 0x2545_F491_4F6C_DD1D,
            env,
            release,
        })
    }

    /// Send one frame; client frames are masked (RFC 6455 §5.3).
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        self.mask_seed ^= self.mask_seed << 13;
        self.mask_seed ^= self.mask_seed >> 7;
        self.mask_seed ^= self.mask_seed << 17;
        let key = (self.mask_seed as u32).to_be_bytes();
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            n @ 0..=125 => frame.push(0x80 | n as u8),
            n @ 126..=65535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.io.write_all(&frame).await?;
        self.io.flush().await
    }

    pub async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        self.send(0x1, text.as_bytes()).await
    }

    /// A Close frame with `code` (RFC 6455 §5.5.1).
    pub async fn send_close(&mut self, code: u16) -> std::io::Result<()> {
        self.send(0x8, &code.to_be_bytes()).await
    }

    /// The next frame. `Ok(None)`: the connection ended at a frame boundary; an error: it
    /// ended inside a frame, failed, or sent something that is not a valid server frame.
    /// Cancel-safe: what has arrived stays buffered.
    pub async fn recv(&mut self) -> Result<Option<WsMessage>, String> {
        loop {
            if let Some(message) = self.parse()? {
                return Ok(Some(message));
            }
            let mut chunk = [0u8; 8192];
            let n = self
                .io
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(format!("connection ended inside a frame: {:?}", self.buf))
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn parse(&mut self) -> Result<Option<WsMessage>, String> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        if b[0] & 0x80 == 0 || b[0] & 0x70 != 0 {
            return Err(format!(
                "fragmented frame or reserved bits set: {:#04x}",
                b[0]
            ));
        }
        if b[1] & 0x80 != 0 {
            return Err("a server frame is masked (RFC 6455 §5.1)".into());
        }
        let (len, head) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()), 10),
            126 | 127 => return Ok(None),
            n => (u64::from(n), 2),
        };
        let len = usize::try_from(len).map_err(|_| "frame too large".to_owned())?;
        if b.len() < head + len {
            return Ok(None);
        }
        let opcode = b[0] & 0x0f;
        self.buf.advance(head);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(match opcode {
            0x1 => WsMessage::Text(
                String::from_utf8(payload.to_vec()).map_err(|_| "text frame not UTF-8")?,
            ),
            0x2 => WsMessage::Binary(payload),
            0x8 => WsMessage::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            0x9 => WsMessage::Ping(payload),
            0xA => WsMessage::Pong(payload),
            other => return Err(format!("unknown opcode {other:#x}")),
        }))
    }
}

/// The closing handshake (RFC 6455 §7.1.2): send Close 1000, read until the peer's Close
/// (echoes still in flight may come first).
async fn close_at_stop(ws: &mut WebSocket, mut waiting: bool, tally: &Tally) {
    if let Err(e) = ws.send_close(1000).await {
        return tally.fail("WS", format!("sending Close at the end: {e}"));
    }
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.recv().await {
                Ok(Some(WsMessage::Text(_))) if waiting => {
                    waiting = false;
                    bump(&tally.ws_echoes);
                }
                other => return other,
            }
        }
    })
    .await;
    match answer {
        Ok(Ok(Some(WsMessage::Close(Some(1000))))) => {}
        other => tally.fail("WS", format!("closing at the end: got {other:?}")),
    }
}

/// Longer than any request of the fixture takes, even on a loaded machine.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every loop shares: where traffic goes, who judges the answers, where they are counted,
/// and when to stop. Each loop takes its own clone: `tokio::spawn(traffic.clone().get_loop(0, pause))`.
pub struct Traffic<J> {
    pub target: Target,
    pub judge: Arc<J>,
    pub tally: Arc<Tally>,
    pub stop: CancellationToken,
}

impl<J> Clone for Traffic<J> {
    fn clone(&self) -> Self {
        Traffic {
            target: self.target.clone(),
            judge: self.judge.clone(),
            tally: self.tally.clone(),
            stop: self.stop.clone(),
        }
    }
}

impl<J: Judge> Traffic<J> {
    /// Every kind of load at once, each loop on a task of its own: `gets` keep-alive GET loops
    /// (5 ms apart), 1 MB POSTs, 2 s requests, an event stream and a WebSocket (each reopened
    /// after at most 10 s).
    pub fn mixed(&self, gets: usize) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks: Vec<_> = (0..gets)
            .map(|id| tokio::spawn(self.clone().get_loop(id, Duration::from_millis(5))))
            .collect();
        tasks.push(tokio::spawn(self.clone().post_loop(0)));
        tasks.push(tokio::spawn(self.clone().slow_loop(0)));
        tasks.push(tokio::spawn(self.clone().sse_loop(Duration::from_secs(10))));
        tasks.push(tokio::spawn(
            self.clone()
                .ws_loop(Duration::from_millis(50), Duration::from_secs(10)),
        ));
        tasks
    }

    /// GET / on one keep-alive connection, `pause` between requests, until `stop`.
    pub async fn get_loop(self, id: usize, pause: Duration) {
        let who = format!("GET #{id}");
        let mut conn = Some(match HttpConn::open(self.target.addr).await {
            Ok(c) => c,
            Err(e) => return self.tally.fail(&who, e),
        });
        while !self.stop.is_cancelled() {
            let ok = self
                .one_request(&who, &mut conn, Method::GET, "/", Bytes::new(), |r| {
                    let want = format!("mixed app env={} release={}\n", r.env, r.release);
                    (r.body == want.as_bytes())
                        .then_some(())
                        .ok_or_else(|| format!("body {:?}, want {want:?}", r.body))
                })
                .await;
            if ok {
                bump(&self.tally.gets);
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// POST /echo with a 1 MB body of a pattern unique to each request, on one keep-alive
    /// connection, until `stop`; the answer must be the same bytes.
    pub async fn post_loop(self, id: usize) {
        const SIZE: usize = 1 << 20;
        let who = format!("POST #{id}");
        let mut conn = None;
        let mut n = 0u64;
        while !self.stop.is_cancelled() {
            n += 1;
            let sent = pattern(((id as u64) << 32) | n, SIZE);
            let ok = self
                .one_request(&who, &mut conn, Method::POST, "/echo", sent.clone(), |r| {
                    if r.body == sent {
                        return Ok(());
                    }
                    let first_difference = r.body.iter().zip(sent.iter()).position(|(a, b)| a != b);
                    Err(format!(
                        "echo of request {n} differs: {} bytes back of {SIZE}, first different \
                         byte at {first_difference:?}",
                        r.body.len()
                    ))
                })
                .await;
            if ok {
                bump(&self.tally.posts);
            }
        }
    }

    /// GET /slow (answers after 2 s) on one keep-alive connection, until `stop`.
    pub async fn slow_loop(self, id: usize) {
        let who = format!("slow #{id}");
        let mut conn = None;
        while !self.stop.is_cancelled() {
            let ok = self
                .one_request(&who, &mut conn, Method::GET, "/slow", Bytes::new(), |r| {
                    let want = format!("slow done {}\n", r.env);
                    (r.body == want.as_bytes())
                        .then_some(())
                        .ok_or_else(|| format!("body {:?}, want {want:?}", r.body))
                })
                .await;
            if ok {
                bump(&self.tally.slow);
            }
        }
    }

    /// Send one request on `conn` and check the answer: status 200, an instance the judge
    /// accepts, and the body `expect` wants given who answered. After a connection error the
    /// next call opens a new connection, so the loop keeps going.
    async fn one_request(
        &self,
        who: &str,
        conn: &mut Option<HttpConn>,
        method: Method,
        path: &str,
        body: Bytes,
        expect: impl FnOnce(&Reply) -> Result<(), String>,
    ) -> bool {
        let tally = &self.tally;
        if let Some(c) = conn.as_mut()
            && !c.usable().await
        {
            *conn = None;
        }
        let c = match conn {
            Some(c) => c,
            None => match HttpConn::open(self.target.addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tally.fail(who, e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return false;
                }
            },
        };
        let ticket = self.judge.ticket();
        let request = c.request(&self.target, method.clone(), path, body);
        let reply = match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                tally.fail(who, format!("{method} {path}: {e}"));
                *conn = None;
                return false;
            }
            Err(_) => {
                tally.fail(
                    who,
                    format!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"),
                );
                *conn = None;
                return false;
            }
        };
        if reply.status != StatusCode::OK {
            let text =
                String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)]).into_owned();
            tally.fail(
                who,
                format!("{method} {path}: status {}: {text:?}", reply.status),
            );
            return false;
        }
        let checked = self
            .judge
            .check(&ticket, &reply.env, &reply.release)
            .and_then(|()| expect(&reply));
        if let Err(e) = checked {
            tally.fail(who, format!("{method} {path}: {e}"));
            return false;
        }
        true
    }

    /// Keep one SSE stream on GET /events open until `stop`; every event must be `<env> <n>`
    /// from the environment that answered, numbered from 0 without a gap, and the next must
    /// come within `max_gap`. A stream may end only cleanly (the last chunk, after a whole
    /// event) and only once the judge says its release is being replaced (a drain closed it);
    /// the reader then reconnects, as an EventSource would. A broken connection is a failure.
    pub async fn sse_loop(self, max_gap: Duration) {
        let (who, judge, tally) = ("SSE", &self.judge, &self.tally);
        while !self.stop.is_cancelled() {
            let ticket = judge.ticket();
            let mut stream = match SseStream::open(&self.target, "/events").await {
                Ok(s) => s,
                Err(e) => {
                    tally.fail(who, e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if let Err(e) = judge.check(&ticket, &stream.env, &stream.release) {
                tally.fail(who, e);
            }
            let mut n = 0u64;
            let end = loop {
                let next = tokio::select! {
                    _ = self.stop.cancelled() => return,
                    next = tokio::time::timeout(max_gap, stream.next_event()) => next,
                };
                match next {
                    Err(_) => break Err(format!("no event for {max_gap:?} after event {n}")),
                    Ok(Ok(data)) => {
                        let want = format!("{} {n}", stream.env);
                        if data != want {
                            break Err(format!("event {data:?}, want {want:?}"));
                        }
                        bump(&tally.sse_events);
                        n += 1;
                    }
                    Ok(Err(end)) => break Ok(end),
                }
            };
            let drained = judge.may_be_closed(&stream.env, &stream.release);
            match end {
                Ok(StreamEnd::Clean) if drained => bump(&tally.sse_reconnects),
                Ok(end) => tally.fail(
                    who,
                    format!(
                        "stream from {} {end} after {n} events (its release was {}being replaced)",
                        stream.env,
                        if drained { "" } else { "not " }
                    ),
                ),
                Err(e) => tally.fail(who, e),
            }
        }
    }

    /// Keep one WebSocket on GET /ws open until `stop`, sending a text message every `every`
    /// and expecting each echoed before the next is sent (within `max_wait`). The only
    /// acceptable end is a Close with 1001 "going away" once the judge says the serving release
    /// is being replaced (a drain); the client then reconnects. At `stop` it closes with 1000
    /// and expects the echo of its Close.
    pub async fn ws_loop(self, every: Duration, max_wait: Duration) {
        let (who, judge, tally) = ("WS", &self.judge, &self.tally);
        let mut sent_total = 0u64;
        while !self.stop.is_cancelled() {
            let ticket = judge.ticket();
            let mut ws = match WebSocket::connect(&self.target, "/ws").await {
                Ok(ws) => ws,
                Err(e) => {
                    tally.fail(who, e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if let Err(e) = judge.check(&ticket, &ws.env, &ws.release) {
                tally.fail(who, e);
            }
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The message waiting for its echo, and since when.
            let mut waiting: Option<(String, Instant)> = None;
            let mut echoed_here = 0u64;
            loop {
                let message = tokio::select! {
                    _ = self.stop.cancelled() => {
                        close_at_stop(&mut ws, waiting.is_some(), tally).await;
                        return;
                    }
                    _ = tick.tick() => {
                        if let Some((text, since)) = &waiting {
                            if since.elapsed() > max_wait {
                                tally.fail(who, format!("no echo of {text:?} within {max_wait:?}"));
                                break;
                            }
                            continue;
                        }
                        sent_total += 1;
                        let text = format!("ws message {sent_total} via {}", ws.env);
                        if let Err(e) = ws.send_text(&text).await {
                            // A drain may have closed the connection just now; its Close frame
                            // would already be here.
                            let close =
                                tokio::time::timeout(Duration::from_secs(1), ws.recv()).await;
                            match close {
                                Ok(Ok(Some(WsMessage::Close(Some(1001)))))
                                    if judge.may_be_closed(&ws.env, &ws.release) =>
                                {
                                    bump(&tally.ws_drain_closes);
                                    bump(&tally.ws_unanswered_at_close);
                                }
                                other => tally.fail(
                                    who,
                                    format!("send after {echoed_here} echoes: {e}; then {other:?}"),
                                ),
                            }
                            break;
                        }
                        waiting = Some((text, Instant::now()));
                        continue;
                    }
                    message = ws.recv() => message,
                };
                match message {
                    Ok(Some(WsMessage::Text(text)))
                        if waiting.as_ref().is_some_and(|(w, _)| *w == text) =>
                    {
                        waiting = None;
                        echoed_here += 1;
                        bump(&tally.ws_echoes);
                    }
                    Ok(Some(WsMessage::Close(Some(1001))))
                        if judge.may_be_closed(&ws.env, &ws.release) =>
                    {
                        bump(&tally.ws_drain_closes);
                        if waiting.is_some() {
                            bump(&tally.ws_unanswered_at_close);
                        }
                        break;
                    }
                    other => {
                        tally.fail(
                            who,
                            format!(
                                "from {} after {echoed_here} echoes, waiting for {:?}: got {other:?}",
                                ws.env,
                                waiting.as_ref().map(|(w, _)| w)
                            ),
                        );
                        break;
                    }
                }
            }
        }
    }
}

/// Every answer must come from shop/prod's `release`. Once `moving` is set (an upgrade began, or
/// a deploy replaces the release), streams may be closed cleanly, and with `then_any_release`
/// another release of shop/prod may answer too.
pub struct ProdRelease {
    pub release: String,
    pub moving: std::sync::atomic::AtomicBool,
    pub then_any_release: bool,
}

impl ProdRelease {
    pub fn new(release: String, then_any_release: bool) -> ProdRelease {
        ProdRelease {
            release,
            moving: std::sync::atomic::AtomicBool::new(false),
            then_any_release,
        }
    }

    fn is_moving(&self) -> bool {
        self.moving.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Judge for ProdRelease {
    type Ticket = ();
    fn ticket(&self) {}
    fn check(&self, _: &(), env: &str, release: &str) -> Result<(), String> {
        let release_ok = release == self.release || (self.then_any_release && self.is_moving());
        (env == "prod" && release_ok)
            .then_some(())
            .ok_or_else(|| format!("answered by {env} {release}"))
    }
    fn may_be_closed(&self, _: &str, _: &str) -> bool {
        self.is_moving()
    }
}
