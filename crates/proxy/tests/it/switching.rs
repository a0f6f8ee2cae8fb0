use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;
use tokio_util::sync::CancellationToken;
use turnout_proxy::{ProxyConfig, Resolved, RouteTable, Upstream};

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

/// A switch among 10,000 routes changes exactly the one host: the next table shares every
/// other host's entry (the very same memory, not a copy) with the one before, requests go
/// where each table says, and wildcards keep their precedence.
#[tokio::test]
async fn switching_one_host_among_ten_thousand_changes_only_that_host() {
    const HOSTS: usize = 10_000;
    let p = start_proxy(ProxyConfig::default()).await;
    let blue = Upstream::new(named_backend("blue").await, "shop/blue");
    let green = Upstream::new(named_backend("green").await, "shop/green");
    let wild = Upstream::new(named_backend("wild").await, "shop/wild");
    let host = |i: usize| format!("d{i:05}.bench.test");
    let mut table = RouteTable::default();
    for i in 0..HOSTS {
        table.insert(&host(i), blue.clone().into());
    }
    table.insert("*.bench.test", wild.clone().into());
    p.proxy.apply(table);

    let before = p.proxy.current();
    let mut next = (*before).clone();
    next.insert(&host(4242), green.clone().into());
    p.proxy.apply(next);
    let after = p.proxy.current();

    assert_eq!(after.len(), HOSTS + 1);
    let moved: Vec<String> = (0..HOSTS)
        .map(host)
        .filter(|h| !same_entry(before.lookup(h), after.lookup(h)))
        .collect();
    assert_eq!(moved, [host(4242)]);
    assert!(same_entry(
        before.lookup("x.bench.test"),
        after.lookup("x.bench.test")
    ));

    assert_eq!(get(p.addr, &host(4242), "/").await.text(), "green");
    assert_eq!(get(p.addr, &host(4241), "/").await.text(), "blue");
    assert_eq!(get(p.addr, &host(HOSTS - 1), "/").await.text(), "blue");
    // An exact name beats the wildcard; a name nobody lists falls to it.
    assert_eq!(get(p.addr, "unlisted.bench.test", "/").await.text(), "wild");
    assert_eq!(get(p.addr, "a.d04242.bench.test", "/").await.text(), "wild");
    // The table before the switch still routes as it did, for requests that hold it.
    let routed = |t: &RouteTable, h: &str| t.lookup(h).and_then(Resolved::upstream).cloned();
    assert!(Arc::ptr_eq(&routed(&before, &host(4242)).unwrap(), &blue));
    assert!(Arc::ptr_eq(&routed(&after, &host(4242)).unwrap(), &green));
    assert!(before.retired_by(&after).is_empty());
}

/// Both tables hold the very same entry for a host (shared, not copied): the upstream each
/// names sits at one address.
fn same_entry(a: Option<Resolved<'_>>, b: Option<Resolved<'_>>) -> bool {
    match (a, b) {
        (Some(Resolved::Upstream(a)), Some(Resolved::Upstream(b))) => std::ptr::eq(a, b),
        _ => false,
    }
}
