use std::time::Duration;

use http::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use turnout_proxy::{ProxyConfig, Upstream};

use crate::support::*;

async fn held_backend() -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let (arrived_tx, arrived_rx) = mpsc::unbounded_channel();
    let addr = backend(move |_req| {
        let arrived_tx = arrived_tx.clone();
        async move {
            let (release_tx, release_rx) = oneshot::channel();
            arrived_tx.send(release_tx).unwrap();
            let _ = release_rx.await;
            text(StatusCode::OK, "finished")
        }
    })
    .await;
    (addr, arrived_rx)
}

#[tokio::test]
async fn shutdown_stops_accepting_closes_idle_connections_and_finishes_requests() {
    let p = start_proxy(ProxyConfig::default()).await;
    let (addr, mut arrived) = held_backend().await;
    let a = Upstream::new(addr, "app/a");
    let b = Upstream::new(named_backend("B").await, "app/b");
    p.proxy.apply(routes(&[("a.test", &a), ("b.test", &b)]));

    // A keep-alive connection that has served a request and sits idle, and a request in
    // flight on another connection.
    let stream = TcpStream::connect(p.addr).await.unwrap();
    let (mut idle, idle_conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let idle_conn = tokio::spawn(idle_conn);
    assert_eq!(
        send(&mut idle, get_request("b.test", "/")).await.text(),
        "B"
    );
    let in_flight = tokio::spawn(get(p.addr, "a.test", "/"));
    let release = within("request to arrive", arrived.recv()).await.unwrap();

    p.shutdown.cancel();
    within("idle connection to close", idle_conn)
        .await
        .unwrap()
        .unwrap();
    eventually("listener to close", || {
        std::net::TcpStream::connect_timeout(&p.addr, Duration::from_secs(1)).is_err()
    })
    .await;
    assert!(
        !p.task.is_finished(),
        "serve returned with a request in flight"
    );

    release.send(()).unwrap();
    let answer = within("in-flight answer", in_flight).await.unwrap();
    assert_eq!((answer.status, answer.text()), (StatusCode::OK, "finished"));
    within("serve to return", p.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_grace_bounds_how_long_serve_waits() {
    let config = ProxyConfig {
        shutdown_grace: Duration::from_millis(100),
        ..ProxyConfig::default()
    };
    let p = start_proxy(config).await;
    let (addr, mut arrived) = held_backend().await;
    let a = Upstream::new(addr, "app/a");
    p.proxy.apply(routes(&[("a.test", &a)]));

    let mut client = connect_h1(p.addr).await;
    client.ready().await.unwrap();
    let in_flight = client.send_request(get_request("a.test", "/"));
    let waiting = tokio::spawn(in_flight);
    let _never = within("request to arrive", arrived.recv()).await.unwrap();

    p.shutdown.cancel();
    within("serve to return", p.task).await.unwrap().unwrap();
    let result = within("client to see the cut", waiting).await.unwrap();
    assert!(result.is_err(), "the cut request must fail, not succeed");
}
