//! A sleeping host: requests wait, the first one alone asks for a wake, and all are served
//! once a table routing the host to an instance is applied; without one they get a 503 after
//! the entry's wait, and the next request asks again.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use turnout_proxy::{Asleep, ProxyConfig, RouteTable, Target, Upstream};

use crate::support::*;

fn sleeping(wait: Duration) -> (Arc<Asleep>, Arc<AtomicUsize>) {
    let wakes = Arc::new(AtomicUsize::new(0));
    let counted = wakes.clone();
    let asleep = Asleep::new("shop/test".into(), wait, move || {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    (Arc::new(asleep), wakes)
}

#[tokio::test]
async fn waiting_requests_ask_for_one_wake_and_are_served_once_the_host_is_live() {
    let p = start_proxy(ProxyConfig::default()).await;
    let (asleep, wakes) = sleeping(Duration::from_secs(30));
    let mut table = RouteTable::default();
    table.insert("test.shop.localhost", Target::Asleep(asleep.clone()));
    table.insert("shop-test.example", Target::Asleep(asleep));
    p.proxy.apply(table);

    let mut waiting = tokio::task::JoinSet::new();
    for i in 0..8 {
        let host = if i % 2 == 0 {
            "test.shop.localhost"
        } else {
            "shop-test.example"
        };
        let addr = p.addr;
        waiting.spawn(async move { get(addr, host, "/").await });
    }
    eventually("a wake asked for", || wakes.load(Ordering::SeqCst) > 0).await;

    let app = Upstream::new(named_backend("awake").await, "shop/test");
    p.proxy.apply(routes(&[
        ("test.shop.localhost", &app),
        ("shop-test.example", &app),
    ]));
    while let Some(answer) = waiting.join_next().await {
        let answer = answer.unwrap();
        assert_eq!((answer.status, answer.text()), (StatusCode::OK, "awake"));
    }
    assert_eq!(wakes.load(Ordering::SeqCst), 1, "one wake for all of them");
}

#[tokio::test]
async fn a_wake_that_does_not_come_in_time_is_a_clear_503_and_the_next_request_asks_again() {
    let p = start_proxy(ProxyConfig::default()).await;
    let (asleep, wakes) = sleeping(Duration::from_millis(200));
    let mut table = RouteTable::default();
    table.insert("test.shop.localhost", Target::Asleep(asleep));
    p.proxy.apply(table);

    let answer = within("the wait to end", get(p.addr, "test.shop.localhost", "/")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers["retry-after"], "5");
    assert!(
        answer.text().contains("was asleep and did not wake within"),
        "{}",
        answer.text()
    );
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
    get(p.addr, "test.shop.localhost", "/").await;
    assert_eq!(wakes.load(Ordering::SeqCst), 2, "asked again");
}

#[tokio::test]
async fn a_proxy_that_stops_lets_its_waiting_requests_go_with_a_503() {
    let p = start_proxy(ProxyConfig::default()).await;
    let (asleep, wakes) = sleeping(Duration::from_secs(60));
    let mut table = RouteTable::default();
    table.insert("test.shop.localhost", Target::Asleep(asleep));
    p.proxy.apply(table);

    let addr = p.addr;
    let waiting = tokio::spawn(async move { get(addr, "test.shop.localhost", "/").await });
    eventually("a wake asked for", || wakes.load(Ordering::SeqCst) > 0).await;
    p.proxy.stop_waiting();
    let answer = within("the waiting request", waiting).await.unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer
            .text()
            .contains("this proxy is restarting; try again"),
        "{}",
        answer.text()
    );
}
