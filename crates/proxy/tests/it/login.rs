//! Protected hosts: nothing of the app without a login, and no token ever reaches the app.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine;
use http::{Request, StatusCode, Version};
use turnout_proxy::{Login, Maintenance, ProxyConfig, RouteStats, RouteTable, Target, Upstream};

use crate::support::*;

const TOKEN: &str = "tnt_00112233445566778899aabbccddeeff00112233";
const EXPIRED: &str = "tnt_ffeeddccbbaa99887766554433221100ffeeddcc";
const LOGIN_CHALLENGE: &str = "Basic realm=\"turnout: shop/staging\", charset=\"UTF-8\"";

/// A backend that counts the requests it gets and answers with the headers it received, one
/// `name: value` per line.
struct App {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl App {
    async fn start() -> App {
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let addr = backend(move |req| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut listing = format!("path: {}\n", req.uri());
                for (name, value) in req.headers() {
                    listing.push_str(&format!("{name}: {}\n", value.to_str().unwrap()));
                }
                text(StatusCode::OK, listing)
            }
        })
        .await;
        App { addr, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

fn shop_login() -> Arc<Login> {
    Arc::new(Login {
        realm: "shop/staging".to_owned(),
        credentials: HashMap::from([
            (
                hash(TOKEN),
                Some(SystemTime::now() + Duration::from_secs(3600)),
            ),
            (
                hash(EXPIRED),
                Some(SystemTime::now() - Duration::from_secs(1)),
            ),
        ]),
    })
}

/// A proxy where `shop.test` is protected by `shop_login()` and `open.test` is not, both
/// routed to `app`; returns the stats of `shop.test`.
async fn protected(app: &App) -> (TestProxy, Arc<RouteStats>) {
    let p = start_proxy(ProxyConfig::default()).await;
    let upstream = Upstream::new(app.addr, "shop/staging");
    let stats = Arc::new(RouteStats::default());
    let mut table = RouteTable::default();
    table.insert_protected(
        "shop.test",
        Target::Upstream(upstream.clone()),
        stats.clone(),
        shop_login(),
    );
    table.insert("open.test", Target::Upstream(upstream));
    p.proxy.apply(table);
    (p, stats)
}

async fn request(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut builder = Request::builder().uri(path).header("host", "shop.test");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(&mut connect_h1(addr).await, builder.body(empty()).unwrap()).await
}

async fn post_login(addr: SocketAddr, form: &str) -> Answer {
    let req = Request::builder()
        .method("POST")
        .uri("/.turnout/login")
        .header("host", "shop.test")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(full(form.to_owned()))
        .unwrap();
    send(&mut connect_h1(addr).await, req).await
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// The 401 login page, with nothing of the app in it.
fn assert_login_required(answer: &Answer, next: &str) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text());
    assert_eq!(answer.headers["www-authenticate"], LOGIN_CHALLENGE);
    assert_eq!(answer.headers["cache-control"], "no-store");
    assert_eq!(answer.headers["content-type"], "text/html; charset=utf-8");
    let page = answer.text();
    assert!(
        page.contains("<form method=\"post\" action=\"/.turnout/login\">"),
        "{page}"
    );
    assert!(page.contains("type=\"password\" name=\"token\""), "{page}");
    assert!(
        page.contains(&format!(
            "<input type=\"hidden\" name=\"next\" value=\"{next}\">"
        )),
        "{page}"
    );
    assert!(!page.contains("path: "), "app content in the login page");
}

#[tokio::test]
async fn anonymous_requests_get_the_login_page_and_never_reach_the_app() {
    let app = App::start().await;
    let (p, stats) = protected(&app).await;

    let answer = request(p.addr, "/cart?item=1&size=2", &[]).await;
    assert_login_required(&answer, "/cart?item=1&amp;size=2");
    // A POST with a body is refused just the same, before anything goes upstream.
    let req = Request::builder()
        .method("POST")
        .uri("/orders")
        .header("host", "shop.test")
        .body(full("order"))
        .unwrap();
    let answer = send(&mut connect_h1(p.addr).await, req).await;
    assert_login_required(&answer, "/orders");
    // So is an absolute URL that would make a browser leave the host after logging in.
    let answer = request(p.addr, "//evil.example/x", &[]).await;
    assert_login_required(&answer, "/");

    assert_eq!(app.requests(), 0, "the app saw a request");
    assert_eq!(stats.snapshot().by_class, [0, 0, 0, 3, 0]);
}

#[tokio::test]
async fn the_realm_is_escaped_on_the_page() {
    let app = App::start().await;
    let p = start_proxy(ProxyConfig::default()).await;
    let mut table = RouteTable::default();
    table.insert_protected(
        "shop.test",
        Target::Upstream(Upstream::new(app.addr, "shop/staging")),
        Arc::default(),
        Arc::new(Login {
            realm: "<script>alert(1)</script>\"".to_owned(),
            credentials: HashMap::new(),
        }),
    );
    p.proxy.apply(table);

    let answer = request(p.addr, "/", &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(!answer.text().contains("<script>"), "{}", answer.text());
    assert!(
        answer
            .text()
            .contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;")
    );
    assert_eq!(
        answer.headers["www-authenticate"],
        "Basic realm=\"turnout: <script>alert(1)</script>\\\"\", charset=\"UTF-8\""
    );
}

#[tokio::test]
async fn basic_auth_logs_in_and_the_app_never_sees_it() {
    let app = App::start().await;
    let (p, stats) = protected(&app).await;

    let answer = request(
        p.addr,
        "/account",
        &[("authorization", &basic("ignored", TOKEN))],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(received(answer.text(), "path"), ["/account"]);
    assert!(
        received(answer.text(), "authorization").is_empty(),
        "{}",
        answer.text()
    );
    assert_eq!(app.requests(), 1);
    assert_eq!(stats.snapshot().by_class, [0, 1, 0, 0, 0]);
}

#[tokio::test]
async fn cookie_logs_in_and_the_app_sees_only_its_own_cookies() {
    let app = App::start().await;
    let (p, _) = protected(&app).await;

    let cookie = format!("session=abc; turnout_token={TOKEN}; theme=dark");
    let answer = request(p.addr, "/", &[("cookie", &cookie)]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        received(answer.text(), "cookie"),
        ["session=abc; theme=dark"]
    );
    assert!(!answer.text().contains(TOKEN));

    // Only the login cookie: the app gets no Cookie field at all.
    let cookie = format!("turnout_token={TOKEN}");
    let answer = request(p.addr, "/", &[("cookie", &cookie)]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        received(answer.text(), "cookie").is_empty(),
        "{}",
        answer.text()
    );
    assert_eq!(app.requests(), 2);
}

#[tokio::test]
async fn an_expired_or_unknown_token_gets_the_same_answer_as_none() {
    let app = App::start().await;
    let (p, _) = protected(&app).await;

    let anonymous = request(p.addr, "/", &[]).await;
    assert_login_required(&anonymous, "/");
    for token in [EXPIRED, "tnt_unknown", ""] {
        for header in [
            ("authorization", basic("me", token)),
            ("cookie", format!("turnout_token={token}")),
        ] {
            let answer = request(p.addr, "/", &[(header.0, &header.1)]).await;
            assert_login_required(&answer, "/");
            assert_eq!(answer.body, anonymous.body, "{header:?}");
        }
    }
    assert_eq!(app.requests(), 0);
}

#[tokio::test]
async fn the_login_form_sets_the_cookie_and_returns_to_next() {
    let app = App::start().await;
    let (p, stats) = protected(&app).await;

    let form = request(p.addr, "/.turnout/login?next=%2Fcart%3Fitem%3D1", &[]).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(!form.headers.contains_key("www-authenticate"));
    assert!(
        form.text().contains("name=\"next\" value=\"/cart?item=1\""),
        "{}",
        form.text()
    );

    let answer = post_login(p.addr, &format!("token={TOKEN}&next=%2Fcart%3Fitem%3D1")).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
    assert_eq!(answer.headers["location"], "/cart?item=1");
    let set_cookie = answer.headers["set-cookie"].to_str().unwrap();
    assert_eq!(
        set_cookie,
        format!("turnout_token={TOKEN}; Path=/; HttpOnly; SameSite=Lax")
    );
    assert_eq!(answer.headers["cache-control"], "no-store");

    // What the browser sends back afterwards is a login.
    let cookie = set_cookie.split(';').next().unwrap();
    let answer = request(p.addr, "/cart?item=1", &[("cookie", cookie)]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(received(answer.text(), "path"), ["/cart?item=1"]);
    assert_eq!(app.requests(), 1);
    assert_eq!(stats.snapshot().by_class, [0, 2, 1, 0, 0]);
}

#[tokio::test]
async fn the_login_form_refuses_a_bad_token_and_a_foreign_next() {
    let app = App::start().await;
    let (p, _) = protected(&app).await;

    for token in ["tnt_unknown", EXPIRED, ""] {
        let answer = post_login(p.addr, &format!("token={token}&next=%2Fcart")).await;
        assert_login_required(&answer, "/cart");
        assert!(answer.text().contains("That token is not valid"));
        assert!(!answer.headers.contains_key("set-cookie"));
    }

    for next in [
        "%2F%2Fevil.example",
        "https%3A%2F%2Fevil.example",
        "%2F%5Cevil.example",
        "",
    ] {
        let answer = post_login(p.addr, &format!("token={TOKEN}&next={next}")).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{next}");
        assert_eq!(answer.headers["location"], "/", "{next}");
    }
    let answer = post_login(p.addr, &format!("token={TOKEN}")).await;
    assert_eq!(answer.headers["location"], "/");

    // Only a form is read, and only a small one.
    let req = Request::builder()
        .method("POST")
        .uri("/.turnout/login")
        .header("host", "shop.test")
        .header("content-type", "application/json")
        .body(full(format!("{{\"token\": \"{TOKEN}\"}}")))
        .unwrap();
    let answer = send(&mut connect_h1(p.addr).await, req).await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let answer = post_login(p.addr, &format!("token={TOKEN}&pad={}", "x".repeat(9000))).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.requests(), 0);
}

#[tokio::test]
async fn logout_clears_the_cookie() {
    let app = App::start().await;
    let (p, _) = protected(&app).await;

    let cookie = format!("turnout_token={TOKEN}");
    let answer = request(p.addr, "/.turnout/logout", &[("cookie", &cookie)]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.headers["location"], "/");
    assert_eq!(
        answer.headers["set-cookie"],
        "turnout_token=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
    );
    assert_eq!(app.requests(), 0);
}

#[tokio::test]
async fn an_unprotected_host_forwards_turnout_paths_to_the_app() {
    let app = App::start().await;
    let (p, _) = protected(&app).await;

    let req = Request::builder()
        .uri("/.turnout/login")
        .header("host", "open.test")
        .header("authorization", basic("app-user", "app-password"))
        .header("cookie", "a=1")
        .body(empty())
        .unwrap();
    let answer = send(&mut connect_h1(p.addr).await, req).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(received(answer.text(), "path"), ["/.turnout/login"]);
    // The app's own Authorization and cookies pass untouched.
    assert_eq!(
        received(answer.text(), "authorization"),
        [basic("app-user", "app-password")]
    );
    assert_eq!(received(answer.text(), "cookie"), ["a=1"]);
    assert_eq!(app.requests(), 1);
}

#[tokio::test]
async fn a_login_cookie_never_reaches_an_unprotected_app() {
    let app = App::start().await;
    let (p, _) = protected(&app).await;

    let req = Request::builder()
        .uri("/")
        .header("host", "open.test")
        .header("cookie", format!("a=1; turnout_token={TOKEN}"))
        .body(empty())
        .unwrap();
    let answer = send(&mut connect_h1(p.addr).await, req).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(received(answer.text(), "cookie"), ["a=1"]);
}

#[tokio::test]
async fn http2_with_the_token_in_a_second_cookie_field() {
    let app = App::start().await;
    let (p, _) = protected(&app).await;

    let mut client = connect_h2(p.addr).await;
    let anonymous = Request::builder()
        .version(Version::HTTP_2)
        .uri("http://shop.test/h2")
        .header("cookie", "a=1")
        .body(empty())
        .unwrap();
    let answer = collect(client.send_request(anonymous).await.unwrap()).await;
    assert_login_required(&answer, "/h2");

    let req = Request::builder()
        .version(Version::HTTP_2)
        .uri("http://shop.test/h2")
        .header("cookie", "a=1")
        .header("cookie", format!("turnout_token={TOKEN}"))
        .header("cookie", "b=2")
        .body(empty())
        .unwrap();
    let answer = collect(client.send_request(req).await.unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(received(answer.text(), "cookie"), ["a=1; b=2"]);
    assert_eq!(app.requests(), 1);
}

#[tokio::test]
async fn a_protected_host_in_maintenance_requires_a_login_first() {
    let app = App::start().await;
    let p = start_proxy(ProxyConfig::default()).await;
    let mut table = RouteTable::default();
    table.insert_protected(
        "shop.test",
        Target::Maintenance(Arc::new(Maintenance {
            message: "Back soon".into(),
            retry_after: Duration::from_secs(60),
            health: Some(("/healthz".into(), Upstream::new(app.addr, "shop/staging"))),
        })),
        Arc::default(),
        shop_login(),
    );
    p.proxy.apply(table);

    assert_login_required(&request(p.addr, "/", &[]).await, "/");
    assert_login_required(&request(p.addr, "/healthz", &[]).await, "/healthz");
    assert_eq!(app.requests(), 0);

    let login = basic("me", TOKEN);
    let answer = request(p.addr, "/", &[("authorization", &login)]).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.text().contains("Back soon"));
    let answer = request(p.addr, "/healthz", &[("authorization", &login)]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(received(answer.text(), "authorization").is_empty());
    assert_eq!(app.requests(), 1);
}

/// A request retried after a switch logs in again against the table it is retried on.
#[tokio::test]
async fn a_retry_checks_the_login_of_the_current_route() {
    let p = start_proxy(ProxyConfig {
        upstream_connect_timeout: Duration::from_millis(200),
        ..ProxyConfig::default()
    })
    .await;
    let hole = blackhole().await;
    let stuck = Upstream::new(hole.addr, "shop/stuck");
    let app = App::start().await;
    let fresh = Upstream::new(app.addr, "shop/fresh");
    let table = |upstream: &Arc<Upstream>, protect: bool| {
        let mut table = RouteTable::default();
        let target = Target::Upstream(upstream.clone());
        match protect {
            true => table.insert_protected("shop.test", target, Arc::default(), shop_login()),
            false => table.insert("shop.test", target),
        }
        table
    };

    // Logged in on the stuck instance, retried on the fresh one: still logged in there, and
    // the credentials are stripped from the retry too.
    p.proxy.apply(table(&stuck, true));
    let login = basic("me", TOKEN);
    let addr = p.addr;
    let waiting =
        tokio::spawn(async move { request(addr, "/", &[("authorization", &login)]).await });
    eventually("the request to pick the stuck instance", || {
        stuck.in_flight() == 1
    })
    .await;
    p.proxy.apply(table(&fresh, true));
    let answer = within("retried answer", waiting).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(received(answer.text(), "authorization").is_empty());
    assert_eq!(app.requests(), 1);

    // Anonymous on an open host that became protected while the request waited: refused.
    p.proxy.apply(table(&stuck, false));
    let waiting = tokio::spawn(async move { request(addr, "/", &[]).await });
    eventually("the request to pick the stuck instance", || {
        stuck.in_flight() == 1
    })
    .await;
    p.proxy.apply(table(&fresh, true));
    let answer = within("retried answer", waiting).await.unwrap();
    assert_login_required(&answer, "/");
    assert_eq!(app.requests(), 1);
}
