use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use turnout_proxy::{ProxyConfig, Upstream};

use crate::support::*;

#[tokio::test]
async fn a_request_head_that_trickles_in_is_cut_off() {
    let config = ProxyConfig {
        header_read_timeout: Duration::from_millis(200),
        ..ProxyConfig::default()
    };
    let p = start_proxy(config).await;
    let a = Upstream::new(named_backend("A").await, "app/a");
    p.proxy.apply(routes(&[("a.test", &a)]));

    let started = Instant::now();
    let mut stream = TcpStream::connect(p.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = within("the proxy to close", stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok_and(|n| n == 0) || rest.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_lives_for_the_idle_timeout_not_the_header_timeout() {
    let config = ProxyConfig {
        header_read_timeout: Duration::from_millis(50),
        idle_timeout: Duration::from_millis(500),
        ..ProxyConfig::default()
    };
    let p = start_proxy(config).await;
    let a = Upstream::new(named_backend("A").await, "app/a");
    p.proxy.apply(routes(&[("a.test", &a)]));

    let stream = TcpStream::connect(p.addr).await.unwrap();
    let (mut client, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let answer = send(&mut client, get_request("a.test", "/")).await;
    assert_eq!(answer.status, StatusCode::OK);
    // The proxy's idle clock started a moment before the client finished reading, so
    // allow some slack; the point is that the 50 ms header timeout did not close it.
    let idle_from = Instant::now();

    within("the proxy to close the idle connection", conn)
        .await
        .unwrap()
        .unwrap();
    assert!(
        idle_from.elapsed() >= Duration::from_millis(350),
        "closed after {:?}",
        idle_from.elapsed()
    );
}

const RESPONSE_TIMEOUT: Duration = Duration::from_millis(300);

/// How a request reaches the proxy: on the plain path, or on hyper's (HTTP/2 here).
#[derive(Debug, Clone, Copy)]
enum Path {
    Plain,
    Hyper,
}

async fn get_by(path: Path, addr: std::net::SocketAddr, host: &str) -> Answer {
    match path {
        Path::Plain => get(addr, host, "/").await,
        Path::Hyper => {
            let mut client = connect_h2(addr).await;
            let response = client.send_request(get_request(host, "/")).await.unwrap();
            collect(response).await
        }
    }
}

#[tokio::test]
async fn an_app_that_sends_no_response_head_gets_504_at_its_response_timeout() {
    for path in [Path::Plain, Path::Hyper] {
        let p = start_proxy(ProxyConfig::default()).await;
        let (addr, mut seen) = silent_backend().await;
        let slow = Upstream::with_response_timeout(addr, "app/slow", RESPONSE_TIMEOUT);
        p.proxy.apply(routes(&[("slow.test", &slow)]));

        let started = Instant::now();
        let answer = within("the 504", get_by(path, p.addr, "slow.test")).await;
        let took = started.elapsed();
        assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT, "{path:?}");
        assert_eq!(
            answer.text(),
            "turnout: the environment for host 'slow.test' did not answer in time\n"
        );
        assert_eq!(answer.headers["cache-control"], "no-store");
        // Generous upper bound for a loaded machine; without the timeout it would never come.
        assert!(
            took >= RESPONSE_TIMEOUT && took < RESPONSE_TIMEOUT + Duration::from_secs(5),
            "{path:?}: answered after {took:?}"
        );
        assert_eq!(within("the head", seen.recv()).await, Some(Seen::Head));
        assert_eq!(
            within("the app to see its connection closed", seen.recv()).await,
            Some(Seen::Closed),
            "{path:?}: the connection must not go back to the pool"
        );
        assert_eq!(slow.in_flight(), 0);
    }
}

/// The timer starts when the request body has gone: an upload slower than the response
/// timeout is not a slow app.
#[tokio::test]
async fn a_slow_upload_does_not_count_against_the_response_timeout() {
    let p = start_proxy(ProxyConfig::default()).await;
    let (chunk_tx, mut chunks) = tokio::sync::mpsc::unbounded_channel();
    let addr = backend(move |req| {
        let chunk_tx = chunk_tx.clone();
        async move {
            let mut body = req.into_body();
            let mut total = 0;
            while let Some(frame) = body.frame().await {
                let frame = frame.unwrap();
                if let Some(data) = frame.data_ref() {
                    total += data.len();
                    let _ = chunk_tx.send(());
                }
            }
            text(StatusCode::OK, format!("got {total} bytes"))
        }
    })
    .await;
    let app = Upstream::with_response_timeout(addr, "app/upload", RESPONSE_TIMEOUT);
    p.proxy.apply(routes(&[("upload.test", &app)]));

    let (feed, body) = channel_body(1);
    let request = http::Request::post("/")
        .header("host", "upload.test")
        .body(body)
        .unwrap();
    let mut client = connect_h1(p.addr).await;
    let response = tokio::spawn(async move { client.send_request(request).await });
    feed.send("first".into()).await.unwrap();
    within("the first chunk", chunks.recv()).await.unwrap();
    // The upload outlasts the response timeout on purpose.
    tokio::time::sleep(RESPONSE_TIMEOUT * 2).await;
    feed.send("second".into()).await.unwrap();
    drop(feed);
    let answer = collect(within("the answer", response).await.unwrap().unwrap()).await;
    assert_eq!(
        (answer.status, answer.text()),
        (StatusCode::OK, "got 11 bytes")
    );
}
