use http::{Request, StatusCode};
use turnout_proxy::{ProxyConfig, Upstream};

use crate::support::*;

/// A backend that lists the request headers it received, one `name: value` per line, and
/// answers with some hop-by-hop headers of its own.
async fn header_echo() -> std::net::SocketAddr {
    backend(|req| async move {
        let mut listing = String::new();
        for (name, value) in req.headers() {
            listing.push_str(&format!("{name}: {}\n", value.to_str().unwrap()));
        }
        let mut response = text(StatusCode::OK, listing);
        let h = response.headers_mut();
        h.insert("connection", "x-internal".parse().unwrap());
        h.insert("x-internal", "secret".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-app", "kept".parse().unwrap());
        response
    })
    .await
}

#[tokio::test]
async fn forwarded_headers_are_set_and_hop_by_hop_headers_stripped() {
    let p = start_proxy(ProxyConfig::default()).await;
    let a = Upstream::new(header_echo().await, "app/a");
    p.proxy.apply(routes(&[("a.test", &a)]));

    let mut client = connect_h1(p.addr).await;
    let req = Request::builder()
        .uri("/headers")
        .header("host", "A.test:8080")
        .header("connection", "keep-alive, x-per-hop")
        .header("x-per-hop", "1")
        .header("keep-alive", "timeout=30")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers, gzip")
        .header("proxy-authorization", "Basic dXNlcjpwdw==")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-end-to-end", "kept")
        .body(empty())
        .unwrap();
    let answer = send(&mut client, req).await;
    assert_eq!(answer.status, StatusCode::OK);
    let listing = answer.text();

    assert_eq!(
        received(listing, "host"),
        ["A.test:8080"],
        "Host as the client sent it"
    );
    assert_eq!(
        received(listing, "x-forwarded-for"),
        ["203.0.113.7, 127.0.0.1"]
    );
    assert_eq!(received(listing, "x-forwarded-proto"), ["http"]);
    assert_eq!(received(listing, "x-forwarded-host"), ["A.test:8080"]);
    assert_eq!(received(listing, "via"), ["1.1 turnout"]);
    assert_eq!(received(listing, "x-end-to-end"), ["kept"]);
    assert_eq!(
        received(listing, "proxy-authorization"),
        ["Basic dXNlcjpwdw=="]
    );
    assert_eq!(received(listing, "te"), ["trailers"]);
    assert_eq!(received(listing, "connection"), ["te"]);
    for gone in [
        "x-per-hop",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "transfer-encoding",
    ] {
        assert!(
            received(listing, gone).is_empty(),
            "{gone} reached the backend:\n{listing}"
        );
    }

    let h = &answer.headers;
    assert_eq!(h["x-app"], "kept");
    assert!(
        !h.contains_key("x-internal"),
        "a field named by Connection reached the client"
    );
    assert!(!h.contains_key("keep-alive"));
    assert_eq!(h["via"], "1.1 turnout");
}

#[tokio::test]
async fn chunked_request_reaches_the_backend_reframed() {
    let p = start_proxy(ProxyConfig::default()).await;
    let echo = backend(|req| async move {
        let te = req.headers().get("transfer-encoding").cloned();
        let body = http_body_util::BodyExt::collect(req.into_body())
            .await
            .unwrap()
            .to_bytes();
        text(
            StatusCode::OK,
            format!("{te:?} {}", String::from_utf8_lossy(&body)),
        )
    })
    .await;
    let a = Upstream::new(echo, "app/a");
    p.proxy.apply(routes(&[("a.test", &a)]));

    // A streaming body of unknown length goes out chunked.
    let (tx, body) = channel_body(4);
    let mut client = connect_h1(p.addr).await;
    let req = Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "a.test")
        .body(body)
        .unwrap();
    client.ready().await.unwrap();
    let response = client.send_request(req);
    let writer = async move {
        tx.send("hello ".into()).await.unwrap();
        tx.send("world".into()).await.unwrap();
    };
    let (response, ()) = tokio::join!(response, writer);
    let answer = collect(response.unwrap()).await;
    assert_eq!(answer.text(), "Some(\"chunked\") hello world");
}

/// A keep-alive client's requests after its first go over the client connection's own upstream
/// connection: every kind of exchange, one after the other, arrives whole, including answers
/// without a body and a switch to another instance between two requests.
#[tokio::test]
async fn keep_alive_requests_of_every_kind_go_through_in_turn() {
    use http_body_util::BodyExt;
    let echo = |name: &'static str| async move {
        backend(move |req: Request<hyper::body::Incoming>| async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            if parts.uri.path() == "/empty" {
                return text(StatusCode::NO_CONTENT, "");
            }
            text(
                StatusCode::OK,
                format!("{name} {} {} {}", parts.method, parts.uri, body.len()),
            )
        })
        .await
    };
    let p = start_proxy(ProxyConfig::default()).await;
    let a = Upstream::new(echo("A").await, "app/a#1");
    p.proxy.apply(routes(&[("app.test", &a)]));
    let mut client = connect_h1(p.addr).await;
    for round in 0..3 {
        let answer = send(&mut client, get_request("app.test", "/x?q=1")).await;
        assert_eq!(answer.text(), "A GET /x?q=1 0", "round {round}");
        let post = Request::builder()
            .method("POST")
            .uri("/form")
            .header("host", "app.test")
            .body(full("hello"))
            .unwrap();
        assert_eq!(send(&mut client, post).await.text(), "A POST /form 5");
        let head = Request::builder()
            .method("HEAD")
            .uri("/h")
            .header("host", "app.test")
            .body(empty())
            .unwrap();
        let answer = send(&mut client, head).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.body.is_empty());
        let answer = send(&mut client, get_request("app.test", "/empty")).await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
    }
    let b = Upstream::new(echo("B").await, "app/b#2");
    p.proxy.apply(routes(&[("app.test", &b)]));
    let answer = send(&mut client, get_request("app.test", "/y")).await;
    assert_eq!(answer.text(), "B GET /y 0");
    let answer = send(&mut client, get_request("app.test", "/z")).await;
    assert_eq!(answer.text(), "B GET /z 0");
}
