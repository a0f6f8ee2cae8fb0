//! A client that gives up while the app is slow: the proxy lets go of everything at once.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use turnout_proxy::{ProxyConfig, Upstream};

use crate::support::*;

/// How soon the proxy must have closed its side after the client hung up.
const LET_GO: Duration = Duration::from_secs(1);

/// Send `head` on a raw connection, wait until the app has it, then hang up.
async fn hang_up_after(
    proxy: std::net::SocketAddr,
    head: &[u8],
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>,
) -> Instant {
    let mut client = TcpStream::connect(proxy).await.unwrap();
    client.write_all(head).await.unwrap();
    assert_eq!(
        within("the head at the app", seen.recv()).await,
        Some(Seen::Head)
    );
    drop(client);
    Instant::now()
}

#[tokio::test]
async fn a_client_that_hangs_up_leaves_no_close_wait_and_the_app_sees_its_connection_closed() {
    for (path, head) in [
        ("plain", &b"GET / HTTP/1.1\r\nHost: slow.test\r\n\r\n"[..]),
        // HTTP/1.0 is served on hyper's path.
        ("hyper", &b"GET / HTTP/1.0\r\nHost: slow.test\r\n\r\n"[..]),
    ] {
        let p = start_proxy(ProxyConfig::default()).await;
        let (addr, mut seen) = silent_backend().await;
        let slow = Upstream::new(addr, "app/slow");
        p.proxy.apply(routes(&[("slow.test", &slow)]));

        let hung_up = hang_up_after(p.addr, head, &mut seen).await;
        while close_wait_sockets(p.addr.port()) > 0 {
            assert!(
                hung_up.elapsed() < LET_GO,
                "{path}: a socket toward the client is still in CLOSE-WAIT"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            within("the app to see its connection closed", seen.recv()).await,
            Some(Seen::Closed),
            "{path}"
        );
        eventually("the request to let go of its drain token", || {
            slow.in_flight() == 0
        })
        .await;
    }
}

/// The same once the app has sent its head but its body stalls (a long poll, an event stream).
#[tokio::test]
async fn a_client_that_hangs_up_during_a_stalled_body_is_let_go_at_once() {
    let p = start_proxy(ProxyConfig::default()).await;
    let (addr, mut seen) = stalling_backend(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .await;
    let app = Upstream::new(addr, "app/events");
    p.proxy.apply(routes(&[("events.test", &app)]));

    let mut client = TcpStream::connect(p.addr).await.unwrap();
    client
        .write_all(b"GET /events HTTP/1.1\r\nHost: events.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        within("the head at the app", seen.recv()).await,
        Some(Seen::Head)
    );
    let mut head = [0u8; 15];
    within("the response head", client.read_exact(&mut head))
        .await
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 OK");
    eventually("the stream to be counted", || app.in_flight() == 1).await;
    drop(client);
    let hung_up = Instant::now();
    while close_wait_sockets(p.addr.port()) > 0 {
        assert!(
            hung_up.elapsed() < LET_GO,
            "a socket is still in CLOSE-WAIT"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        within("the app to see its connection closed", seen.recv()).await,
        Some(Seen::Closed)
    );
    eventually("the stream to let go of its token", || app.in_flight() == 0).await;
}

#[tokio::test]
async fn a_drain_does_not_wait_for_a_request_whose_client_is_gone() {
    let p = start_proxy(ProxyConfig::default()).await;
    let (addr, mut seen) = silent_backend().await;
    let old = Upstream::new(addr, "app/old");
    p.proxy.apply(routes(&[("slow.test", &old)]));

    let mut client = TcpStream::connect(p.addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: slow.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        within("the head at the app", seen.recv()).await,
        Some(Seen::Head)
    );
    p.proxy.apply(routes(&[]));
    let deadline = Duration::from_secs(30);
    let draining = {
        let old = old.clone();
        tokio::spawn(async move { old.drain(deadline).await })
    };
    eventually("the drain to have begun", || old.in_flight() == 1).await;
    assert!(!draining.is_finished());

    drop(client);
    let outcome = within("the drain", draining).await.unwrap();
    assert_eq!(outcome.cut, 0, "{outcome:?}");
    assert!(outcome.waited < Duration::from_secs(5), "{outcome:?}");
    assert_eq!(
        within("the app to see its connection closed", seen.recv()).await,
        Some(Seen::Closed)
    );
}
