use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;
use tokio_util::sync::CancellationToken;
use turnout_proxy::{ProxyConfig, Upstream};

use crate::support::*;

const SWITCHES: usize = 60;
const LOAD_CLIENTS: usize = 3;

/// The zero-downtime promise: keep-alive clients hammer a host while it is switched back and
/// forth between two instances; every request succeeds with a complete body, every request
/// made after `apply` returns reaches the new instance, and every drain finishes uncut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_under_keep_alive_load_loses_nothing() {
    let p = start_proxy(ProxyConfig::default()).await;
    let addr_a = named_backend("A").await;
    let addr_b = named_backend("B").await;
    let first = Upstream::new(addr_a, "shop/a#0");
    p.proxy.apply(routes(&[("shop.test", &first)]));

    let stop = CancellationToken::new();
    let completed = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..LOAD_CLIENTS)
        .map(|_| {
            let (stop, completed, addr) = (stop.clone(), completed.clone(), p.addr);
            tokio::spawn(async move {
                let mut client = connect_h1(addr).await;
                while !stop.is_cancelled() {
                    let answer = send(&mut client, get_request("shop.test", "/")).await;
                    assert_eq!(answer.status, StatusCode::OK);
                    assert!(
                        matches!(answer.text(), "A" | "B"),
                        "body {:?}",
                        answer.text()
                    );
                    completed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    eventually("load to start", || completed.load(Ordering::Relaxed) > 10).await;

    let mut probe = connect_h1(p.addr).await;
    let mut drains = Vec::new();
    for i in 1..=SWITCHES {
        let (addr, name) = if i % 2 == 0 {
            (addr_a, "A")
        } else {
            (addr_b, "B")
        };
        let next = Upstream::new(addr, format!("shop/{name}#{i}"));
        let previous = p.proxy.apply(routes(&[("shop.test", &next)]));

        let answer = send(&mut probe, get_request("shop.test", "/")).await;
        assert_eq!(
            answer.text(),
            name,
            "switch {i}: request after apply reached the old instance"
        );

        for old in previous.retired_by(&p.proxy.current()) {
            drains.push(tokio::spawn(async move { old.drain(DEADLINE).await }));
        }
        let before = completed.load(Ordering::Relaxed);
        eventually("load to continue", || {
            completed.load(Ordering::Relaxed) > before
        })
        .await;
    }

    stop.cancel();
    for client in load {
        within("load client", client)
            .await
            .expect("a load client saw a failure");
    }
    for drain in drains {
        let outcome = within("drain", drain).await.unwrap();
        assert_eq!(outcome.cut, 0);
    }
    assert!(completed.load(Ordering::Relaxed) > SWITCHES);
}
