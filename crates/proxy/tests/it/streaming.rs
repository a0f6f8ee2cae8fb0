use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use turnout_proxy::{ProxyConfig, Upstream};

use crate::support::*;

const CHUNK: usize = 64 * 1024;
const CHUNKS: usize = 128; // 8 MiB

fn chunk(i: usize) -> Bytes {
    (0..CHUNK)
        .map(|j| (i * 31 + j * 7) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A backend that streams the request body straight back as the response body.
async fn echo_body() -> std::net::SocketAddr {
    backend(|req| async move {
        let body = req.into_body().map_err(|e| Box::new(e) as BoxError).boxed();
        http::Response::new(body)
    })
    .await
}

#[tokio::test]
async fn large_post_streams_through_both_ways() {
    let p = start_proxy(ProxyConfig::default()).await;
    let a = Upstream::new(echo_body().await, "app/a");
    p.proxy.apply(routes(&[("a.test", &a)]));

    let (tx, body) = channel_body(2);
    let mut client = connect_h1(p.addr).await;
    client.ready().await.unwrap();
    let req = Request::builder()
        .method("POST")
        .uri("/upload")
        .header("host", "a.test")
        .header("content-length", (CHUNK * CHUNKS).to_string())
        .body(body)
        .unwrap();
    let response = client.send_request(req);
    let first = tx.send(chunk(0));
    let (response, sent) = within("response head", async { tokio::join!(response, first) }).await;
    sent.unwrap();
    let response = response.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();

    // The echo of the first chunk arrives before the rest is sent: nothing in between
    // buffers a whole body.
    let mut received = Vec::with_capacity(CHUNK * CHUNKS);
    while received.len() < CHUNK {
        let frame = within("first echoed bytes", body.frame())
            .await
            .unwrap()
            .unwrap();
        received.extend_from_slice(frame.data_ref().unwrap());
    }

    let sender = tokio::spawn(async move {
        for i in 1..CHUNKS {
            tx.send(chunk(i)).await.unwrap();
        }
    });
    while let Some(frame) = within("echoed body", body.frame()).await {
        received.extend_from_slice(frame.unwrap().data_ref().unwrap());
    }
    sender.await.unwrap();

    assert_eq!(received.len(), CHUNK * CHUNKS);
    for (i, got) in received.chunks(CHUNK).enumerate() {
        assert!(got == chunk(i).as_ref(), "chunk {i} differs");
    }
    eventually("the request to leave the books", || a.in_flight() == 0).await;
}
