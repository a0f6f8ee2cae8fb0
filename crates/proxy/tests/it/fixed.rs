//! A link's listener (`Proxy::serve_fixed`): every request on it is routed as one fixed host,
//! whatever its Host says, through the same table (a switch moves it), on the plain path and
//! hyper's alike, and passes no login; the same host on an ordinary listener still needs one.
//! The host is changed in place when the link resolves elsewhere.
use std::collections::HashMap;
use std::sync::Arc;

use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use turnout_proxy::{FixedHost, Login, ProxyConfig, RouteStats, RouteTable, Target, Upstream};

use crate::support::*;

/// `api.test` (protected) routed to `to`, `other.test` to a backend named "other".
async fn table(to: std::net::SocketAddr) -> RouteTable {
    let mut table = RouteTable::default();
    table.insert_protected(
        "api.test",
        Target::Upstream(Upstream::new(to, "api/staging")),
        Arc::new(RouteStats::default()),
        Arc::new(Login {
            realm: "api/staging".to_owned(),
            credentials: HashMap::new(),
        }),
    );
    let other = named_backend("other").await;
    table.insert("other.test", Target::Upstream(Upstream::new(other, "x/y")));
    table
}

#[tokio::test]
async fn a_fixed_listener_routes_every_request_as_its_host_without_a_login() {
    let p = start_proxy(ProxyConfig::default()).await;
    // The instance says which Host it was sent.
    let api = backend(|req| async move {
        let host = req.headers()["host"].to_str().unwrap().to_owned();
        text(StatusCode::OK, format!("api host={host}"))
    })
    .await;
    p.proxy.apply(table(api).await);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fixed = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let host = FixedHost::new("api.test".to_owned());
    tokio::spawn(
        p.proxy
            .clone()
            .serve_fixed(listener, stop.clone(), host.clone()),
    );

    // The plain path: another host's name changes nothing; the client's Host is passed on.
    let a = get(fixed, "other.test", "/").await;
    assert_eq!(
        (a.status, a.text()),
        (StatusCode::OK, "api host=other.test")
    );
    // Hyper's path: HTTP/2 (its authority), and HTTP/1.0 with no Host at all.
    let mut h2 = connect_h2(fixed).await;
    let req = Request::get("http://127.0.0.1/").body(empty()).unwrap();
    let a = collect(h2.send_request(req).await.unwrap()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(a.text().starts_with("api host="), "{}", a.text());
    let mut raw = TcpStream::connect(fixed).await.unwrap();
    raw.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.ends_with("api host=api.test"), "{answer}");

    // On the ordinary listener the same host asks for a login.
    let a = get(p.addr, "api.test", "/").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    // The fixed host follows the table: a switch moves it.
    let next = named_backend("api v2").await;
    p.proxy.apply(table(next).await);
    let a = get(fixed, "127.0.0.1", "/").await;
    assert_eq!((a.status, a.text()), (StatusCode::OK, "api v2"));
    // The link resolves elsewhere: the same socket, the new host from the next connection.
    host.set("other.test".to_owned());
    let a = get(fixed, "api.test", "/").await;
    assert_eq!((a.status, a.text()), (StatusCode::OK, "other"));
    stop.cancel();
}
