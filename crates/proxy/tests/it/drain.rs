use std::time::Duration;

use http::{Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, oneshot};
use turnout_proxy::{ProxyConfig, Upstream};

use crate::support::*;

/// A backend that reports each request's arrival with a sender the test fires to let the
/// answer go.
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
            text(StatusCode::OK, "slow answer")
        }
    })
    .await;
    (addr, arrived_rx)
}

#[tokio::test]
async fn drain_waits_for_a_slow_request() {
    let p = start_proxy(ProxyConfig::default()).await;
    let (slow_addr, mut arrived) = held_backend().await;
    let slow = Upstream::new(slow_addr, "shop/old");
    let fast = Upstream::new(named_backend("new").await, "shop/new");
    p.proxy.apply(routes(&[("shop.test", &slow)]));

    let in_flight = tokio::spawn(get(p.addr, "shop.test", "/"));
    let release = within("request to arrive", arrived.recv()).await.unwrap();
    assert_eq!(slow.in_flight(), 1);

    p.proxy.apply(routes(&[("shop.test", &fast)]));
    let draining = {
        let slow = slow.clone();
        tokio::spawn(async move { slow.drain(DEADLINE).await })
    };
    assert_eq!(get(p.addr, "shop.test", "/").await.text(), "new");
    assert!(
        !draining.is_finished(),
        "drain returned while a request was in flight"
    );

    release.send(()).unwrap();
    let outcome = within("drain", draining).await.unwrap();
    assert_eq!(outcome.cut, 0);
    let answer = within("slow answer", in_flight).await.unwrap();
    assert_eq!(
        (answer.status, answer.text()),
        (StatusCode::OK, "slow answer")
    );
    assert_eq!(slow.in_flight(), 0);
}

#[tokio::test]
async fn drain_cuts_a_request_that_never_answers() {
    let p = start_proxy(ProxyConfig::default()).await;
    let (addr, mut arrived) = held_backend().await;
    let stuck = Upstream::new(addr, "shop/stuck");
    p.proxy.apply(routes(&[("shop.test", &stuck)]));

    let in_flight = tokio::spawn(get(p.addr, "shop.test", "/"));
    let _never_released = within("request to arrive", arrived.recv()).await.unwrap();
    p.proxy.apply(routes(&[]));

    let outcome = within("drain", stuck.drain(Duration::from_millis(50))).await;
    assert!(outcome.cut >= 1, "{outcome:?}");
    assert!(outcome.waited >= Duration::from_millis(50));
    let answer = within("cut answer", in_flight).await.unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(stuck.in_flight(), 0);
}

#[tokio::test]
async fn drain_cuts_a_response_body_that_never_ends() {
    let p = start_proxy(ProxyConfig::default()).await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let addr = backend(move |_req| {
        let started_tx = started_tx.clone();
        async move {
            let (tx, body) = channel_body(1);
            tokio::spawn(async move {
                tx.send("first part".into()).await.unwrap();
                // Keep the body open until the test ends.
                started_tx.send(tx).unwrap();
            });
            Response::new(body)
        }
    })
    .await;
    let streaming = Upstream::new(addr, "shop/stream");
    p.proxy.apply(routes(&[("shop.test", &streaming)]));

    let mut client = connect_h1(p.addr).await;
    client.ready().await.unwrap();
    let response = within("head", client.send_request(get_request("shop.test", "/")))
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = within("first part", body.frame()).await.unwrap().unwrap();
    assert_eq!(first.data_ref().unwrap(), "first part");
    let _open_body = within("backend body", started.recv()).await.unwrap();
    assert_eq!(streaming.in_flight(), 1);

    let outcome = within("drain", streaming.drain(Duration::from_millis(20))).await;
    assert_eq!(outcome.cut, 1);
    let rest = within("cut body", body.collect()).await;
    assert!(rest.is_err(), "a cut body must not look complete");
    assert_eq!(streaming.in_flight(), 0);
}

/// Server-sent events get their own, shorter deadline: at it the stream ends cleanly between
/// two events (never mid-event), while a slow ordinary request keeps its longer deadline.
#[tokio::test]
async fn event_streams_close_cleanly_at_their_own_deadline() {
    let p = start_proxy(ProxyConfig::default()).await;
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<mpsc::Sender<bytes::Bytes>>();
    let (slow_tx, mut slow_rx) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
    let addr = backend(move |req| {
        let (events_tx, slow_tx) = (events_tx.clone(), slow_tx.clone());
        async move {
            if req.uri().path() == "/events" {
                let (tx, body) = channel_body(8);
                events_tx.send(tx).unwrap();
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(body)
                    .unwrap()
            } else {
                let (release, wait) = oneshot::channel();
                slow_tx.send(release).unwrap();
                let _ = wait.await;
                text(StatusCode::OK, "slow answer")
            }
        }
    })
    .await;
    let old = Upstream::new(addr, "shop/old");
    p.proxy.apply(routes(&[("shop.test", &old)]));

    let mut client = connect_h1(p.addr).await;
    let response = client
        .send_request(get_request("shop.test", "/events"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let feed = within("stream to open", events_rx.recv()).await.unwrap();
    feed.send("data: one\n\n".into()).await.unwrap();
    // Half an event is in flight when the drain starts.
    feed.send("data: tw".into()).await.unwrap();
    let slow = tokio::spawn(get(p.addr, "shop.test", "/slow"));
    let release_slow = within("slow request", slow_rx.recv()).await.unwrap();
    assert_eq!(old.in_flight(), 2);

    p.proxy.apply(routes(&[]));
    let draining = {
        let old = old.clone();
        tokio::spawn(async move {
            old.drain_with(turnout_proxy::DrainDeadlines {
                requests: Duration::from_secs(10),
                streams: Duration::from_millis(50),
            })
            .await
        })
    };
    // Past the streams' deadline the stream waits for the end of the event it is in...
    tokio::time::sleep(Duration::from_millis(100)).await;
    feed.send("o\n\n".into()).await.unwrap();
    // ...then ends cleanly, before the next event.
    let _ = feed.send("data: three\n\n".into()).await;
    let body = within("stream to end", response.into_body().collect())
        .await
        .unwrap();
    assert_eq!(body.to_bytes(), "data: one\n\ndata: two\n\n");
    assert!(
        !draining.is_finished(),
        "the slow request still holds the drain"
    );

    release_slow.send(()).unwrap();
    let outcome = within("drain", draining).await.unwrap();
    assert_eq!((outcome.cut, outcome.closed_streams), (0, 1), "{outcome:?}");
    assert_eq!(
        within("slow answer", slow).await.unwrap().text(),
        "slow answer"
    );
}
