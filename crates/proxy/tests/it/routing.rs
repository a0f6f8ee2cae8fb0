use http::{Request, StatusCode, Version};
use turnout_proxy::{ProxyConfig, Upstream};

use crate::support::*;

#[tokio::test]
async fn each_host_gets_its_own_backend() {
    let p = start_proxy(ProxyConfig::default()).await;
    let a = Upstream::new(named_backend("backend A").await, "app/a");
    let b = Upstream::new(named_backend("backend B").await, "app/b");
    p.proxy.apply(routes(&[("a.test", &a), ("b.test", &b)]));

    let mut client = connect_h1(p.addr).await;
    for _ in 0..3 {
        let answer = send(&mut client, get_request("a.test", "/")).await;
        assert_eq!(
            (answer.status, answer.text()),
            (StatusCode::OK, "backend A")
        );
        let answer = send(&mut client, get_request("B.TEST:8080", "/")).await;
        assert_eq!(
            (answer.status, answer.text()),
            (StatusCode::OK, "backend B")
        );
    }
}

#[tokio::test]
async fn unknown_host_is_404_and_missing_host_is_400() {
    let p = start_proxy(ProxyConfig::default()).await;
    let a = Upstream::new(named_backend("backend A").await, "app/a");
    p.proxy.apply(routes(&[("a.test", &a)]));

    let answer = get(p.addr, "nobody.test", "/").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.text(),
        "turnout: no environment is routed for host 'nobody.test'\n"
    );
    assert_eq!(answer.headers["content-type"], "text/plain; charset=utf-8");

    let mut client = connect_h1(p.addr).await;
    let no_host = Request::builder().uri("/").body(empty()).unwrap();
    let answer = send(&mut client, no_host).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.text(), "turnout: request has no Host header\n");
}

#[tokio::test]
async fn unreachable_backend_is_502() {
    let p = start_proxy(ProxyConfig::default()).await;
    let down = Upstream::new(dead_port().await, "app/down");
    p.proxy.apply(routes(&[("down.test", &down)]));

    let answer = get(p.addr, "down.test", "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(answer.text().contains("'down.test'"), "{}", answer.text());
    assert!(
        !answer.text().contains("app/down"),
        "internal labels stay in the log"
    );
    assert_eq!(down.in_flight(), 0);
}

#[tokio::test]
async fn http2_prior_knowledge_is_routed_by_authority() {
    let p = start_proxy(ProxyConfig::default()).await;
    let echo = backend(|req| async move {
        let host = req
            .headers()
            .get("host")
            .map(|h| h.to_str().unwrap().to_owned());
        text(
            StatusCode::OK,
            format!(
                "{:?} {} host={}",
                req.version(),
                req.uri(),
                host.unwrap_or_default()
            ),
        )
    })
    .await;
    let a = Upstream::new(echo, "app/a");
    p.proxy.apply(routes(&[("a.test", &a)]));

    let mut client = connect_h2(p.addr).await;
    for i in 0..3 {
        let req = Request::builder()
            .version(Version::HTTP_2)
            .uri(format!("http://a.test/h2?i={i}"))
            .body(empty())
            .unwrap();
        let response = within("h2 response", client.send_request(req))
            .await
            .unwrap();
        assert_eq!(response.version(), Version::HTTP_2);
        let answer = collect(response).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.text(), format!("HTTP/1.1 /h2?i={i} host=a.test"));
    }

    let req = Request::builder()
        .version(Version::HTTP_2)
        .uri("http://other.test/")
        .body(empty())
        .unwrap();
    let answer = collect(client.send_request(req).await.unwrap()).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn oversized_request_head_is_refused() {
    let config = ProxyConfig {
        max_header_bytes: 16 * 1024,
        ..ProxyConfig::default()
    };
    let p = start_proxy(config).await;
    let a = Upstream::new(named_backend("backend A").await, "app/a");
    p.proxy.apply(routes(&[("a.test", &a)]));

    let mut client = connect_h1(p.addr).await;
    let req = Request::builder()
        .uri("/")
        .header("host", "a.test")
        .header("x-big", "x".repeat(32 * 1024))
        .body(empty())
        .unwrap();
    let answer = send(&mut client, req).await;
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

/// While the runtime restarts an instance after a crash, a refused connection is a passing
/// state: 503 with `Retry-After`, on both paths. Otherwise it stays a 502.
#[tokio::test]
async fn an_instance_being_restarted_answers_503_with_retry_after() {
    let p = start_proxy(ProxyConfig::default()).await;
    let down = Upstream::new(dead_port().await, "app/down");
    p.proxy.apply(routes(&[("down.test", &down)]));
    down.set_restarting(true);

    let plain = get(p.addr, "down.test", "/").await;
    let mut h2 = connect_h2(p.addr).await;
    let hyper = collect(
        h2.send_request(get_request("down.test", "/"))
            .await
            .unwrap(),
    )
    .await;
    for answer in [&plain, &hyper] {
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers["retry-after"], "5");
        assert_eq!(
            answer.text(),
            "turnout: the environment for host 'down.test' is restarting; try again shortly\n"
        );
    }

    down.set_restarting(false);
    let answer = get(p.addr, "down.test", "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(answer.headers.get("retry-after").is_none());
}
