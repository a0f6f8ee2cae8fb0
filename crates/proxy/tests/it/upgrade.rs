use std::net::SocketAddr;
use std::time::Duration;

use http::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use turnout_proxy::{ProxyConfig, Upstream};

use crate::support::*;

/// A backend that accepts any upgrade, echoes every byte it receives on the upgraded
/// connection, and reports those bytes to the test.
async fn upgrade_echo() -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    let addr = backend(move |mut req| {
        let seen_tx = seen_tx.clone();
        async move {
            let Some(protocol) = req.headers().get("upgrade").cloned() else {
                return text(StatusCode::OK, "not upgraded");
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let mut io = TokioIo::new(on_upgrade.await.unwrap());
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = match io.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    seen_tx.send(buf[..n].to_vec()).unwrap();
                    if io.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            let mut response = Response::new(empty());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            response.headers_mut().insert("upgrade", protocol);
            response
                .headers_mut()
                .insert("connection", "Upgrade".parse().unwrap());
            response
        }
    })
    .await;
    (addr, seen_rx)
}

/// Send an upgrade request over a raw socket and read the response head.
async fn open_upgrade(proxy: SocketAddr, protocol: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let head = upgrade_on(&mut stream, protocol).await;
    (stream, head)
}

/// Send an upgrade request on `stream` and read the response head.
async fn upgrade_on(stream: &mut TcpStream, protocol: &str) -> String {
    let request = format!(
        "GET /socket HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        within("response head", stream.read_exact(&mut byte))
            .await
            .unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// A masked client-to-server text frame (RFC 6455 §5.2).
fn client_frame(payload: &[u8]) -> Vec<u8> {
    let key = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

async fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    within("tunnel bytes", stream.read_exact(&mut buf))
        .await
        .unwrap();
    buf
}

#[tokio::test]
async fn websocket_tunnel_relays_and_drain_closes_it_with_1001() {
    let p = start_proxy(ProxyConfig::default()).await;
    let (addr, mut seen) = upgrade_echo().await;
    let ws = Upstream::new(addr, "chat/ws");
    p.proxy.apply(routes(&[("ws.test", &ws)]));

    let (mut stream, head) = open_upgrade(p.addr, "websocket").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert!(lower.contains("connection: upgrade"), "{head}");

    for message in [&b"hello"[..], b"second message"] {
        let frame = client_frame(message);
        stream.write_all(&frame).await.unwrap();
        assert_eq!(read_exactly(&mut stream, frame.len()).await, frame);
    }
    assert_eq!(ws.in_flight(), 1, "an open tunnel counts as in flight");

    let outcome = within("drain", ws.drain(Duration::from_millis(20))).await;
    assert_eq!((outcome.cut, outcome.closed_streams), (0, 1));
    // Close, 2-byte payload, status 1001, then the end of the stream.
    assert_eq!(read_exactly(&mut stream, 4).await, [0x88, 0x02, 0x03, 0xE9]);
    let mut rest = Vec::new();
    within("EOF", stream.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty());

    // The backend got a masked close frame with the same status.
    let mut upstream_bytes = Vec::new();
    let expected = client_frame(b"hello").len() + client_frame(b"second message").len() + 8;
    while upstream_bytes.len() < expected {
        upstream_bytes.extend(within("backend bytes", seen.recv()).await.unwrap());
    }
    let close = &upstream_bytes[upstream_bytes.len() - 8..];
    assert_eq!(close[..2], [0x88, 0x82]);
    assert_eq!([close[6] ^ close[2], close[7] ^ close[3]], [0x03, 0xE9]);
    assert_eq!(ws.in_flight(), 0);
}

/// Plain requests are served on the plain path until the upgrade, which hyper takes over with
/// the bytes already read: the same connection then carries the tunnel.
#[tokio::test]
async fn an_upgrade_after_plain_requests_on_the_same_connection() {
    let p = start_proxy(ProxyConfig::default()).await;
    let (addr, _seen) = upgrade_echo().await;
    let ws = Upstream::new(addr, "chat/ws");
    p.proxy.apply(routes(&[("ws.test", &ws)]));

    let mut stream = TcpStream::connect(p.addr).await.unwrap();
    for _ in 0..2 {
        stream
            .write_all(b"GET /page HTTP/1.1\r\nHost: ws.test\r\n\r\n")
            .await
            .unwrap();
        let expected = b"not upgraded";
        let mut answer = Vec::new();
        while !answer.ends_with(expected) {
            let mut buf = [0u8; 1024];
            let n = within("plain answer", stream.read(&mut buf)).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let head = upgrade_on(&mut stream, "websocket").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let frame = client_frame(b"after plain requests");
    stream.write_all(&frame).await.unwrap();
    assert_eq!(read_exactly(&mut stream, frame.len()).await, frame);
}

#[tokio::test]
async fn other_upgrades_are_tunnelled_and_shut_down_on_drain() {
    let p = start_proxy(ProxyConfig::default()).await;
    let (addr, _seen) = upgrade_echo().await;
    let up = Upstream::new(addr, "app/custom");
    p.proxy.apply(routes(&[("ws.test", &up)]));

    let (mut stream, head) = open_upgrade(p.addr, "custom-protocol/1").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream.write_all(b"raw bytes").await.unwrap();
    assert_eq!(read_exactly(&mut stream, 9).await, b"raw bytes");

    let outcome = within("drain", up.drain(Duration::from_millis(20))).await;
    assert_eq!((outcome.cut, outcome.closed_streams), (0, 1));
    let mut rest = Vec::new();
    within("EOF", stream.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn upgrade_refused_by_the_backend_is_a_plain_response() {
    let p = start_proxy(ProxyConfig::default()).await;
    let plain = Upstream::new(named_backend("no sockets here").await, "app/plain");
    p.proxy.apply(routes(&[("ws.test", &plain)]));

    let (mut stream, head) = open_upgrade(p.addr, "websocket").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(read_exactly(&mut stream, 15).await, b"no sockets here");
    eventually("request to finish", || plain.in_flight() == 0).await;
}
