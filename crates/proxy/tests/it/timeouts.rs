use std::time::Duration;

use http::StatusCode;
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
