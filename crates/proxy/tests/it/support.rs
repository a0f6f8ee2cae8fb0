//! Test helpers: tiny hyper backends, a proxy on a free port, and clients.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use turnout_proxy::{Proxy, ProxyConfig, RouteTable, Target, Upstream};

pub type BoxError = Box<dyn StdError + Send + Sync>;
pub type TestBody = BoxBody<Bytes, BoxError>;
type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>
        + Send
        + Sync,
>;

/// Generous bound for anything a test waits on; tests finish far sooner unless broken.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub fn full(text: impl Into<Bytes>) -> TestBody {
    Full::new(text.into()).map_err(|e| match e {}).boxed()
}

pub fn empty() -> TestBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
}

/// An HTTP/1.1 backend on 127.0.0.1 that answers every request with `handler`.
pub async fn backend<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    backend_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), handler)
}

/// An HTTP/1.1 backend on `listener` (e.g. one made inside a network namespace).
pub fn backend_on<F, Fut>(listener: TcpListener, handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// What a [`silent_backend`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A request head arrived.
    Head,
    /// A connection ended: the proxy closed it (end of file) or reset it.
    Closed,
}

/// A backend that reads request heads and never answers, reporting each head and the end of
/// each connection.
pub async fn silent_backend() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    stalling_backend(b"").await
}

/// Like [`silent_backend`], but writes `start` (the start of an answer that never ends) after
/// each head.
pub async fn stalling_backend(start: &'static [u8]) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let mut read = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = seen_tx.send(Seen::Closed);
                            return;
                        }
                        Ok(n) => read.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                        read.drain(..end + 4);
                        let _ = seen_tx.send(Seen::Head);
                        if stream.write_all(start).await.is_err() {
                            let _ = seen_tx.send(Seen::Closed);
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A backend answering every request with a fixed text.
pub async fn named_backend(name: &'static str) -> SocketAddr {
    backend(move |_req| async move { text(StatusCode::OK, name) }).await
}

/// A port nothing listens on.
pub async fn dead_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

pub struct TestProxy {
    pub proxy: Arc<Proxy>,
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<std::io::Result<()>>,
}

pub async fn start_proxy(config: ProxyConfig) -> TestProxy {
    let proxy = Proxy::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(proxy.clone().serve(listener, shutdown.clone()));
    TestProxy {
        proxy,
        addr,
        shutdown,
        task,
    }
}

pub fn routes(pairs: &[(&str, &Arc<Upstream>)]) -> RouteTable {
    let mut table = RouteTable::default();
    for (host, upstream) in pairs {
        table.insert(host, Target::Upstream((*upstream).clone()));
    }
    table
}

pub type H1 = hyper::client::conn::http1::SendRequest<TestBody>;

/// One keep-alive HTTP/1.1 connection to `addr`.
pub async fn connect_h1(addr: SocketAddr) -> H1 {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    send
}

pub type H2 = hyper::client::conn::http2::SendRequest<TestBody>;

/// One HTTP/2 connection with prior knowledge (no upgrade, no TLS).
pub async fn connect_h2(addr: SocketAddr) -> H2 {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

pub async fn send(client: &mut H1, req: Request<TestBody>) -> Answer {
    client.ready().await.unwrap();
    let response = client.send_request(req).await.unwrap();
    collect(response).await
}

pub async fn collect(response: Response<Incoming>) -> Answer {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// GET `path` with `Host: host` on a fresh connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Answer {
    let mut client = connect_h1(addr).await;
    send(&mut client, get_request(host, path)).await
}

pub fn get_request(host: &str, path: &str) -> Request<TestBody> {
    Request::builder()
        .uri(path)
        .header("host", host)
        .body(empty())
        .unwrap()
}

/// Poll `check` until it holds, failing the test at `DEADLINE`.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = tokio::time::Instant::now();
    while !check() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Await `fut`, failing the test at `DEADLINE`.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A request or response body fed chunk by chunk from the test.
pub fn channel_body(buffer: usize) -> (tokio::sync::mpsc::Sender<Bytes>, TestBody) {
    let (tx, rx) = tokio::sync::mpsc::channel(buffer);
    (tx, ChannelBody(rx).boxed())
}

struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(hyper::body::Frame::data(bytes))))
    }
}

/// A listening port whose accept queue is full, so new connections to it hang in SYN_SENT
/// until the connecting side gives up. Keep the returned value alive while it is used.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

pub async fn blackhole() -> Blackhole {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => queued.push(stream),
            Ok(Err(e)) => panic!("connect to the blackhole failed: {e}"),
            Err(_) => break,
        }
        assert!(queued.len() < 64, "the accept queue never filled");
    }
    Blackhole {
        addr,
        _listener: listener,
        _queued: queued,
    }
}

/// The values of `name` in a backend's listing of the headers it received (`name: value`
/// lines).
pub fn received<'a>(listing: &'a str, name: &str) -> Vec<&'a str> {
    listing
        .lines()
        .filter_map(|line| line.split_once(": "))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .collect()
}

/// Sockets in CLOSE-WAIT (the peer closed, this side has not) whose local port is `port`, from
/// `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn close_wait_sockets(port: u16) -> usize {
    const CLOSE_WAIT: &str = "08";
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields
                        .get(1)
                        .and_then(|local| local.rsplit_once(':'))
                        .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
                    local_port == Some(port) && fields.get(3) == Some(&CLOSE_WAIT)
                })
                .count()
        })
        .sum()
}
