use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use turnout_proxy::{Maintenance, ProxyConfig, RouteStats, RouteTable, Target, Upstream};

use crate::support::*;

#[tokio::test]
async fn maintenance_answers_503_with_the_message_but_health_checks_pass_through() {
    let p = start_proxy(ProxyConfig::default()).await;
    let app = Upstream::new(named_backend("the app").await, "shop/production");
    let mut table = RouteTable::default();
    table.insert(
        "shop.test",
        Target::Maintenance(Arc::new(Maintenance {
            message: "Back at 5 <b>pm</b> & then some".into(),
            retry_after: Duration::from_secs(120),
            health: Some(("/healthz".into(), app.clone())),
        })),
    );
    p.proxy.apply(table);

    let answer = get(p.addr, "shop.test", "/checkout").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers["retry-after"], "120");
    assert_eq!(answer.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(answer.headers["cache-control"], "no-store");
    assert!(
        answer
            .text()
            .contains("Back at 5 &lt;b&gt;pm&lt;/b&gt; &amp; then some"),
        "{}",
        answer.text()
    );
    assert!(!answer.text().contains("the app"));

    let health = get(p.addr, "shop.test", "/healthz").await;
    assert_eq!((health.status, health.text()), (StatusCode::OK, "the app"));
}

#[tokio::test]
async fn each_route_counts_its_responses_and_latency() {
    let p = start_proxy(ProxyConfig::default()).await;
    let app = Upstream::new(named_backend("the app").await, "shop/production");
    let shop = Arc::new(RouteStats::default());
    let other = Arc::new(RouteStats::default());
    let mut table = RouteTable::default();
    table.insert_with_stats("shop.test", Target::Upstream(app.clone()), shop.clone());
    table.insert_with_stats(
        "down.test",
        Target::Upstream(Upstream::new(dead_port().await, "shop/down")),
        other.clone(),
    );
    p.proxy.apply(table);

    for _ in 0..3 {
        assert_eq!(get(p.addr, "shop.test", "/").await.status, StatusCode::OK);
    }
    assert_eq!(
        get(p.addr, "down.test", "/").await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        get(p.addr, "nobody.test", "/").await.status,
        StatusCode::NOT_FOUND
    );

    let s = shop.snapshot();
    assert_eq!(s.by_class, [0, 3, 0, 0, 0]);
    assert_eq!(*s.cumulative_buckets.last().unwrap(), 3);
    assert!(s.latency_sum_seconds > 0.0);
    assert_eq!(other.snapshot().by_class, [0, 0, 0, 0, 1]);
}
