//! HTTPS: certificates by SNI (wildcards one label deep), ALPN, HSTS, redirects, and the ACME
//! challenges, over real TLS handshakes with certificates made for each test.

use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_util::sync::CancellationToken;
use turnout_proxy::{
    ACME_TLS_ALPN, HostTls, Maintenance, Proxy, ProxyConfig, RouteTable, Target, TlsTable,
    Upstream, certified_key,
};

use crate::support::*;

/// A throwaway CA and what it signs.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

/// A certificate and key, as PEM, and the leaf's DER (to recognise it on the wire).
struct Leaf {
    chain_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        Leaf {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

fn host_tls(leaf: &Leaf, redirect: bool, hsts: Option<u64>) -> HostTls {
    let cert = certified_key(&leaf.chain_pem, &leaf.key_pem).unwrap();
    HostTls::new(Arc::new(cert), redirect, hsts)
}

/// A proxy serving plain HTTP and HTTPS on free ports.
struct Both {
    proxy: Arc<Proxy>,
    http: SocketAddr,
    https: SocketAddr,
    _stop: tokio_util::sync::DropGuard,
}

async fn start_both() -> Both {
    let proxy = Proxy::new(ProxyConfig::default());
    let (plain, secure) = (
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let (http, https) = (plain.local_addr().unwrap(), secure.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(proxy.clone().serve(plain, stop.clone()));
    tokio::spawn(proxy.clone().serve_tls(secure, stop.clone()));
    Both {
        proxy,
        http,
        https,
        _stop: stop.drop_guard(),
    }
}

impl Both {
    fn apply_tls(&self, build: impl FnOnce(&mut TlsTable)) {
        let mut table = TlsTable::default();
        table.set_https_port(Some(self.https.port()));
        build(&mut table);
        self.proxy.apply_tls(table);
    }
}

async fn handshake(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    within("the TLS handshake", connector.connect(name, tcp)).await
}

fn served_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// One request over a TLS connection made for `name`, with HTTP/2 when ALPN chose it.
async fn get_tls(connector: &TlsConnector, addr: SocketAddr, name: &str, path: &str) -> Answer {
    let stream = handshake(connector, addr, name).await.unwrap();
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let req = get_request(name, path);
    if h2 {
        let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let (mut parts, body) = req.into_parts();
        parts.uri = format!("https://{name}{path}").parse().unwrap();
        parts.headers.remove(http::header::HOST);
        let response = send
            .send_request(http::Request::from_parts(parts, body))
            .await
            .unwrap();
        collect(response).await
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        collect(send.send_request(req).await.unwrap()).await
    }
}

/// Answers with the request's `X-Forwarded-Proto` and version.
async fn echo_backend() -> Arc<Upstream> {
    let addr = backend(|req: http::Request<hyper::body::Incoming>| async move {
        let proto = req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        text(StatusCode::OK, format!("proto={proto}"))
    })
    .await;
    Upstream::new(addr, "shop/production")
}

#[tokio::test]
async fn each_name_gets_its_own_certificate_and_a_wildcard_covers_one_label() {
    let p = start_both().await;
    let ca = Ca::new();
    let (shop, wild) = (ca.leaf(&["shop.test"]), ca.leaf(&["*.apps.test"]));
    p.apply_tls(|t| {
        t.insert("shop.test", host_tls(&shop, false, None));
        t.insert("*.apps.test", host_tls(&wild, false, None));
    });
    let client = ca.client(&[b"http/1.1"]);

    let stream = handshake(&client, p.https, "shop.test").await.unwrap();
    assert_eq!(served_leaf(&stream), shop.der);
    let stream = handshake(&client, p.https, "Blog.Apps.Test").await.unwrap();
    assert_eq!(served_leaf(&stream), wild.der);
    // Two labels below the wildcard's domain, the domain itself, and a name nobody has a
    // certificate for: no certificate, so no handshake.
    for name in ["a.b.apps.test", "apps.test", "other.test"] {
        assert!(
            handshake(&client, p.https, name).await.is_err(),
            "{name} must not get a certificate"
        );
    }
}

#[tokio::test]
async fn alpn_offers_h2_then_http11_and_the_instance_learns_it_was_https() {
    let p = start_both().await;
    let ca = Ca::new();
    let shop = ca.leaf(&["shop.test"]);
    p.apply_tls(|t| t.insert("shop.test", host_tls(&shop, false, None)));
    p.proxy
        .apply(routes(&[("shop.test", &echo_backend().await)]));

    let both = ca.client(&[b"h2", b"http/1.1"]);
    let stream = handshake(&both, p.https, "shop.test").await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let answer = get_tls(&both, p.https, "shop.test", "/").await;
    assert_eq!(
        (answer.status, answer.text()),
        (StatusCode::OK, "proto=https")
    );

    let h1 = ca.client(&[b"http/1.1"]);
    let stream = handshake(&h1, p.https, "shop.test").await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let answer = get_tls(&h1, p.https, "shop.test", "/").await;
    assert_eq!(
        (answer.status, answer.text()),
        (StatusCode::OK, "proto=https")
    );

    // A client offering no ALPN at all speaks HTTP/1.1.
    let none = ca.client(&[]);
    let answer = get_tls(&none, p.https, "shop.test", "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    // Plain HTTP still says http.
    assert_eq!(get(p.http, "shop.test", "/").await.text(), "proto=http");
}

#[tokio::test]
async fn plain_http_is_redirected_to_https_and_https_answers_carry_hsts() {
    let p = start_both().await;
    let ca = Ca::new();
    let (shop, blog) = (ca.leaf(&["shop.test"]), ca.leaf(&["blog.test"]));
    p.apply_tls(|t| {
        t.insert("shop.test", host_tls(&shop, true, Some(31_536_000)));
        t.insert("blog.test", host_tls(&blog, false, None));
    });
    let app = echo_backend().await;
    p.proxy
        .apply(routes(&[("shop.test", &app), ("blog.test", &app)]));

    // On a kept-alive connection (the plain path) and on a fresh one each time.
    let mut conn = connect_h1(p.http).await;
    for _ in 0..2 {
        let answer = send(&mut conn, get_request("shop.test:80", "/cart?id=7")).await;
        assert_eq!(answer.status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            answer.headers["location"],
            format!("https://shop.test:{}/cart?id=7", p.https.port())
        );
    }
    // A host without redirect keeps being served over plain HTTP, and gets no HSTS.
    let plain = get(p.http, "blog.test", "/").await;
    assert_eq!((plain.status, plain.text()), (StatusCode::OK, "proto=http"));
    assert!(plain.headers.get("strict-transport-security").is_none());

    let client = ca.client(&[b"h2", b"http/1.1"]);
    let secure = get_tls(&client, p.https, "shop.test", "/").await;
    assert_eq!(secure.status, StatusCode::OK);
    assert_eq!(
        secure.headers["strict-transport-security"],
        "max-age=31536000"
    );
    let blog = get_tls(&client, p.https, "blog.test", "/").await;
    assert!(blog.headers.get("strict-transport-security").is_none());
    // HTTP/1.1 over TLS (the plain path) carries it too.
    let h1 = ca.client(&[b"http/1.1"]);
    let secure = get_tls(&h1, p.https, "shop.test", "/").await;
    assert_eq!(
        (secure.status, secure.text()),
        (StatusCode::OK, "proto=https")
    );
    assert_eq!(
        secure.headers["strict-transport-security"],
        "max-age=31536000"
    );
    let blog = get_tls(&h1, p.https, "blog.test", "/").await;
    assert!(blog.headers.get("strict-transport-security").is_none());
}

#[tokio::test]
async fn http01_tokens_are_answered_before_routing_even_in_maintenance_or_unrouted() {
    let p = start_both().await;
    let ca = Ca::new();
    let shop = ca.leaf(&["shop.test"]);
    let app = echo_backend().await;
    let mut table = RouteTable::default();
    table.insert(
        "shop.test",
        Target::Maintenance(Arc::new(Maintenance {
            message: "Back soon".into(),
            retry_after: std::time::Duration::from_secs(60),
            health: Some(("/healthz".into(), app)),
        })),
    );
    p.proxy.apply(table);
    p.apply_tls(|t| {
        t.insert("shop.test", host_tls(&shop, true, None));
        t.insert_http01("tok-123", "tok-123.thumbprint");
    });

    for host in ["shop.test", "not-routed.test"] {
        let answer = get(p.http, host, "/.well-known/acme-challenge/tok-123").await;
        assert_eq!(answer.status, StatusCode::OK, "{host}");
        assert_eq!(answer.text(), "tok-123.thumbprint");
    }
    // Another token is not answered: the redirecting host redirects it, the other 404s.
    let other = get(p.http, "shop.test", "/.well-known/acme-challenge/nope").await;
    assert_eq!(other.status, StatusCode::PERMANENT_REDIRECT);
    let other = get(
        p.http,
        "not-routed.test",
        "/.well-known/acme-challenge/nope",
    )
    .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    // Everything else for the host in maintenance is redirected to HTTPS, where the
    // maintenance page answers.
    let client = ca.client(&[b"http/1.1"]);
    let page = get_tls(&client, p.https, "shop.test", "/").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.text().contains("Back soon"));
}

#[tokio::test]
async fn tls_alpn_01_gets_the_challenge_certificate_and_nothing_else() {
    let p = start_both().await;
    let ca = Ca::new();
    let (shop, challenge) = (ca.leaf(&["shop.test"]), ca.leaf(&["shop.test"]));
    p.proxy
        .apply(routes(&[("shop.test", &echo_backend().await)]));
    p.apply_tls(|t| t.insert("shop.test", host_tls(&shop, false, None)));
    let acme = ca.client(&[ACME_TLS_ALPN]);
    // No challenge in force: a validation handshake gets nothing (not the site's certificate).
    assert!(handshake(&acme, p.https, "shop.test").await.is_err());

    let cert = certified_key(&challenge.chain_pem, &challenge.key_pem).unwrap();
    p.apply_tls(|t| {
        t.insert("shop.test", host_tls(&shop, false, None));
        t.insert_alpn("shop.test", Arc::new(cert));
    });
    let mut stream = handshake(&acme, p.https, "shop.test").await.unwrap();
    assert_eq!(served_leaf(&stream), challenge.der);
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(ACME_TLS_ALPN));
    // The proxy closes a validation connection once its handshake is done.
    let mut rest = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest);
    let _ = within("the validation connection to close", read).await;
    assert!(rest.is_empty());
    // Browsers meanwhile get the site's certificate.
    let browser = ca.client(&[b"h2", b"http/1.1"]);
    let stream = handshake(&browser, p.https, "shop.test").await.unwrap();
    assert_eq!(served_leaf(&stream), shop.der);
}

#[tokio::test]
async fn a_switch_changes_the_instance_but_never_the_certificate() {
    let p = start_both().await;
    let ca = Ca::new();
    let shop = ca.leaf(&["shop.test"]);
    p.apply_tls(|t| t.insert("shop.test", host_tls(&shop, true, None)));
    let (blue, green) = (
        Upstream::new(named_backend("blue").await, "shop/blue"),
        Upstream::new(named_backend("green").await, "shop/green"),
    );
    let client = ca.client(&[b"h2", b"http/1.1"]);
    for (upstream, name) in [(&blue, "blue"), (&green, "green"), (&blue, "blue")] {
        p.proxy.apply(routes(&[("shop.test", upstream)]));
        let stream = handshake(&client, p.https, "shop.test").await.unwrap();
        assert_eq!(served_leaf(&stream), shop.der);
        assert_eq!(
            get_tls(&client, p.https, "shop.test", "/").await.text(),
            name
        );
    }
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let ca = Ca::new();
    let (a, b) = (ca.leaf(&["a.test"]), ca.leaf(&["b.test"]));
    let err = certified_key(&a.chain_pem, &b.key_pem).unwrap_err();
    assert!(err.contains("does not match"), "{err}");
    assert!(certified_key(&a.chain_pem, &a.key_pem).is_ok());
}

#[tokio::test]
async fn a_kept_https_connection_takes_plain_requests_then_hands_over_to_hyper() {
    let p = start_both().await;
    let ca = Ca::new();
    let shop = ca.leaf(&["shop.test"]);
    p.apply_tls(|t| t.insert("shop.test", host_tls(&shop, false, None)));
    // Echoes the method, the protocol it was told and the body.
    let addr = backend(|req: http::Request<hyper::body::Incoming>| async move {
        let method = req.method().clone();
        let proto = req.headers()["x-forwarded-proto"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = http_body_util::BodyExt::collect(req.into_body())
            .await
            .unwrap()
            .to_bytes();
        text(
            StatusCode::OK,
            format!("{method} {proto} {}", String::from_utf8_lossy(&body)),
        )
    })
    .await;
    p.proxy.apply(routes(&[(
        "shop.test",
        &Upstream::new(addr, "shop/production"),
    )]));
    let client = ca.client(&[b"http/1.1"]);
    let stream = handshake(&client, p.https, "shop.test").await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let post = |body: TestBody| {
        http::Request::post("/")
            .header("host", "shop.test")
            .body(body)
            .unwrap()
    };
    for i in 0..3 {
        let answer = collect(
            send.send_request(get_request("shop.test", "/"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(answer.text(), "GET https ", "request {i}");
    }
    let answer = collect(
        send.send_request(post(full("with a length")))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.text(), "POST https with a length");
    // A streamed (chunked) upload is not plain: hyper's path takes the connection over, with
    // the bytes already read, and answers it and what follows.
    let (tx, body) = channel_body(4);
    let streamed = tokio::spawn(send.send_request(post(body)));
    tx.send(bytes::Bytes::from_static(b"streamed "))
        .await
        .unwrap();
    tx.send(bytes::Bytes::from_static(b"in parts"))
        .await
        .unwrap();
    drop(tx);
    let answer = collect(
        within("the streamed upload", streamed)
            .await
            .unwrap()
            .unwrap(),
    )
    .await;
    assert_eq!(answer.text(), "POST https streamed in parts");
    let answer = collect(
        send.send_request(get_request("shop.test", "/"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.text(), "GET https ");
}
