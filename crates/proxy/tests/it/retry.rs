use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use turnout_proxy::{ProxyConfig, Upstream};

use crate::support::*;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);

fn config() -> ProxyConfig {
    ProxyConfig {
        upstream_connect_timeout: CONNECT_TIMEOUT,
        ..ProxyConfig::default()
    }
}

#[tokio::test]
async fn connect_timeout_is_504() {
    let p = start_proxy(config()).await;
    let hole = blackhole().await;
    let stuck = Upstream::new(hole.addr, "app/stuck");
    p.proxy.apply(routes(&[("a.test", &stuck)]));

    let started = Instant::now();
    let answer = get(p.addr, "a.test", "/").await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        answer.text(),
        "turnout: the environment for host 'a.test' did not answer in time\n"
    );
    assert!(started.elapsed() >= CONNECT_TIMEOUT);
}

/// A GET whose instance never accepted the connection was not seen by it, so it is sent
/// again to wherever the host is routed now.
#[tokio::test]
async fn unsent_idempotent_request_is_retried_on_the_current_route() {
    let p = start_proxy(config()).await;
    let hole = blackhole().await;
    let stuck = Upstream::new(hole.addr, "app/stuck");
    let fresh = Upstream::new(named_backend("fresh").await, "app/fresh");
    p.proxy.apply(routes(&[("a.test", &stuck)]));

    let started = Instant::now();
    let request = tokio::spawn(get(p.addr, "a.test", "/"));
    eventually("the request to pick the stuck instance", || {
        stuck.in_flight() == 1
    })
    .await;
    p.proxy.apply(routes(&[("a.test", &fresh)]));

    let answer = within("retried answer", request).await.unwrap();
    assert_eq!((answer.status, answer.text()), (StatusCode::OK, "fresh"));
    assert!(
        started.elapsed() >= CONNECT_TIMEOUT,
        "the answer came from the retry"
    );
    assert_eq!(stuck.in_flight(), 0);
}

#[tokio::test]
async fn unsent_post_is_not_retried() {
    let p = start_proxy(config()).await;
    let hole = blackhole().await;
    let stuck = Upstream::new(hole.addr, "app/stuck");
    let fresh = Upstream::new(named_backend("fresh").await, "app/fresh");
    p.proxy.apply(routes(&[("a.test", &stuck)]));

    let request = tokio::spawn(async move {
        let mut client = connect_h1(p.addr).await;
        let post = Request::builder()
            .method("POST")
            .uri("/")
            .header("host", "a.test")
            .body(full("payload"))
            .unwrap();
        send(&mut client, post).await
    });
    eventually("the request to pick the stuck instance", || {
        stuck.in_flight() == 1
    })
    .await;
    p.proxy.apply(routes(&[("a.test", &fresh)]));
    let answer = within("answer", request).await.unwrap();
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
}

/// Once the request went out, a failure is the answer: the instance may have acted on it.
#[tokio::test]
async fn request_that_reached_the_instance_is_never_retried() {
    let p = start_proxy(config()).await;
    // Reads a request head, then hangs up without answering.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = stream.shutdown().await;
            });
        }
    });
    let rude = Upstream::new(addr, "app/rude");
    p.proxy.apply(routes(&[("a.test", &rude)]));

    let answer = get(p.addr, "a.test", "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the GET was sent twice");
}

#[tokio::test]
async fn header_timeout_also_applies_to_later_requests_on_a_connection() {
    let config = ProxyConfig {
        header_read_timeout: Duration::from_millis(100),
        ..ProxyConfig::default()
    };
    let p = start_proxy(config).await;
    let a = Upstream::new(named_backend("A").await, "app/a");
    p.proxy.apply(routes(&[("a.test", &a)]));

    let mut stream = TcpStream::connect(p.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    while !response.ends_with(b"\r\n\r\nA") {
        let n = within("first response", stream.read(&mut buf))
            .await
            .unwrap();
        assert!(
            n > 0,
            "closed early: {:?}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&buf[..n]);
    }
    // Half a request head, then silence: cut after the header timeout (the idle timeout is
    // a minute, and `within` gives up after ten seconds).
    let started = Instant::now();
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = within("the proxy to close", stream.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(100));
}
