//! Outbound requests governed per tier: real apps call real servers through the daemon's
//! egress proxy (HTTP and CONNECT), are allowed, refused or marked as their tier's policy says,
//! and every call is in `turnout egress log`. Attack tests: the daemon's own ports, other
//! environments' credentials, and (with network namespaces) an app that ignores the proxy.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Daemon, OutsideHost, Repo, eventually, is_root};

/// An app that calls out on request: `/fetch?url=U[&user=&password=]` (GET through the proxy
/// in its HTTP_PROXY, or with other credentials), `/get?url=U` (urllib, which finds the proxy
/// in the environment by itself), `/tunnel?target=H:P[&user=&password=]`
/// (CONNECT through it, then "ping" and the echo), `/direct?target=H:P` (a TCP connection
/// ignoring the proxy), `/env/NAME`. Each answers JSON.
const CALLER: &str = r#"
import base64, http.client, json, os, socket, urllib.error, urllib.parse, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
def proxy(q):
    p = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])
    user = q.get("user", [urllib.parse.unquote(p.username)])[0]
    password = q.get("password", [urllib.parse.unquote(p.password)])[0]
    return p.hostname, p.port, user, password
def fetch(q):
    host, port, user, password = proxy(q)
    url = q["url"][0]
    auth = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.request("GET", url, headers={"Proxy-Authorization": "Basic " + auth})
    r = c.getresponse()
    return {"status": r.status, "body": r.read().decode()}
def get(q):
    try:
        r = urllib.request.urlopen(q["url"][0], timeout=10)
        return {"status": r.status, "body": r.read().decode()}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode()}
def tunnel(q):
    host, port, user, password = proxy(q)
    target = q["target"][0]
    s = socket.create_connection((host, port), 10)
    auth = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n" % (target, target, auth)).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk: break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    if status != 200:
        s.settimeout(5)
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk: break
                rest += chunk
        except OSError:
            pass
        return {"status": status, "body": rest.decode(errors="replace")}
    s.sendall(b"ping\n")
    while b"\n" not in rest:
        chunk = s.recv(4096)
        if not chunk: break
        rest += chunk
    s.close()
    return {"status": status, "echo": rest.decode()}
def direct(q):
    host, _, port = q["target"][0].rpartition(":")
    try:
        socket.create_connection((host, int(port)), 5).close()
        return "ok"
    except Exception as e:
        return "refused: %s" % type(e).__name__
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        path, _, query = self.path.partition("?")
        q = urllib.parse.parse_qs(query)
        if path == "/fetch": body = fetch(q)
        elif path == "/get": body = get(q)
        elif path == "/tunnel": body = tunnel(q)
        elif path == "/direct": body = direct(q)
        elif path.startswith("/env/"): body = os.environ.get(path[5:])
        else: body = "up"
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, fmt, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET `path` of the app's environment `env` (through the daemon's proxy), as JSON.
async fn call(d: &Daemon, env: &str, path: &str) -> Value {
    let (status, body) = d.get(&format!("{env}.shop.localhost"), path).await;
    assert_eq!(status, 200, "{env}{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{env}{path}: {e}: {body}"))
}

async fn fetch(d: &Daemon, env: &str, url: &str) -> Value {
    call(d, env, &format!("/fetch?url={}", enc(url))).await
}

/// The server an app calls: an HTTP server on the test's 127.0.0.1 that answers every request
/// with "hello from origin" and keeps each request head it saw.
struct Origin {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Origin {
    async fn start() -> Origin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let body = "hello from origin";
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        Origin { addr, heads }
    }
}

/// A plain TCP server on 127.0.0.1 that echoes what it gets (the far end of CONNECT tunnels).
async fn echo_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A host outside this machine as far as anyone here can tell, on 198.51.100.4/30, with an
/// HTTP server on 198.51.100.6:8080 answering "hello from outside". Needs root.
struct Outside {
    _host: OutsideHost,
    /// One at a time: the tests that use it share its names and addresses.
    _one: std::sync::MutexGuard<'static, ()>,
}

static OUTSIDE_IN_USE: Mutex<()> = Mutex::new(());

const OUTSIDE: &str = "198.51.100.6:8080";

impl Outside {
    fn start() -> Outside {
        let one = OUTSIDE_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
        let program = concat!(
            "from http.server import BaseHTTPRequestHandler, HTTPServer\n",
            "class H(BaseHTTPRequestHandler):\n",
            "    def do_GET(self):\n",
            "        b = b'hello from outside'\n",
            "        self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)\n",
            "    def log_message(self, *a): pass\n",
            "HTTPServer(('198.51.100.6', 8080), H).serve_forever()\n",
        );
        let host = OutsideHost::start("te", 4, program);
        assert_eq!(host.addr.to_string(), OUTSIDE);
        Outside {
            _host: host,
            _one: one,
        }
    }
}

/// The log of `target` once it has at least `n` entries (the proxy writes it in batches).
async fn log_with(d: &Daemon, target: &str, n: usize) -> Vec<Value> {
    eventually(
        &format!("{n} egress log entries of {target}"),
        Duration::from_secs(20),
        || async {
            let log = d.json(&["egress", "log", target]);
            let entries = log["entries"].as_array().unwrap().clone();
            (entries.len() >= n).then_some(entries)
        },
    )
    .await
}

/// One request straight to the proxy's host listener (`Connection: close`): status and body.
fn raw(proxy: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// (user, password, proxy address) from an `HTTP_PROXY` value.
fn proxy_parts(url: &str) -> (String, String, SocketAddr) {
    let rest = url.strip_prefix("http://").unwrap();
    let (creds, addr) = rest.split_once('@').unwrap();
    let (user, password) = creds.split_once(':').unwrap();
    (
        user.to_owned(),
        password.to_owned(),
        addr.trim_end_matches('/').parse().unwrap(),
    )
}

/// The promise of the feature: an app of the test tier is refused (403 naming the host, the
/// tier and the command that allows it), staging reaches the host its policy lists, qa in
/// record mode passes and is marked, production goes out without the proxy; HTTPS tunnels
/// likewise; `egress log` shows each, and no query string or proxy credential leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tier_goes_out_only_where_its_policy_allows_and_every_call_is_logged() {
    let d = Daemon::start();
    let origin = Origin::start().await;
    let echo = echo_server().await;
    let outside = is_root().then(Outside::start);
    let repo = Repo::with_app(CALLER);
    d.create(
        "shop",
        repo.path(),
        &[
            ("test", "main", "test"),
            ("stage", "main", "staging"),
            ("qa", "main", "qa"),
            ("prod", "main", "production"),
        ],
    );
    // The defaults: production allow without the proxy, every other tier deny, nothing listed.
    let policies = d.json(&["egress", "policy", "shop"]);
    for t in policies["tiers"].as_array().unwrap() {
        let prod = t["tier"] == "production";
        assert_eq!(t["mode"], if prod { "allow" } else { "deny" }, "{t}");
        assert_eq!(t["default"], true, "{t}");
        assert_eq!(t["proxied"], !prod, "{t}");
        assert_eq!(t["allow_hosts"], serde_json::json!([]), "{t}");
    }
    let human = d.ok(&["egress", "policy", "shop"]);
    assert!(human.contains("default"), "{human}");
    let (o, ep) = (origin.addr.port(), echo.port());
    d.ok(&[
        "egress",
        "policy",
        "shop",
        "--tier",
        "staging",
        "--mode",
        "deny",
        "--allow-host",
        &format!("127.0.0.1:{o}"),
        "--allow-host",
        &format!("127.0.0.1:{ep}"),
        "--allow-host",
        OUTSIDE,
    ]);
    d.ok(&[
        "egress", "policy", "shop", "--tier", "qa", "--mode", "record",
    ]);
    for env in ["test", "stage", "qa", "prod"] {
        d.ok(&["deploy", &format!("shop/{env}")]);
    }

    // What the instances got.
    let proxy_url = call(&d, "test", "/env/HTTP_PROXY").await;
    let proxy_url = proxy_url.as_str().unwrap();
    let (user, _, proxy) = proxy_parts(proxy_url);
    assert_eq!(user, "shop.test");
    assert!(proxy.ip().is_loopback(), "{proxy_url}");
    for var in ["HTTPS_PROXY", "http_proxy", "https_proxy"] {
        assert_eq!(
            call(&d, "test", &format!("/env/{var}")).await,
            proxy_url,
            "{var}"
        );
    }
    assert_eq!(
        call(&d, "test", "/env/NO_PROXY").await,
        "localhost,127.0.0.1,.localhost"
    );
    assert_eq!(call(&d, "prod", "/env/HTTP_PROXY").await, Value::Null);

    // HTTP: test denied, staging allowed to its listed host (loopback, listed exactly).
    let url = format!("http://127.0.0.1:{o}/hello?token=s3cret");
    let denied = fetch(&d, "test", &url).await;
    assert_eq!(denied["status"], 403, "{denied}");
    let body = denied["body"].as_str().unwrap();
    assert!(body.contains(&format!("127.0.0.1:{o}")), "{body}");
    assert!(body.contains("test tier"), "{body}");
    assert!(
        body.contains("turnout egress policy shop --tier test --allow-host 127.0.0.1"),
        "{body}"
    );
    assert!(
        origin.heads.lock().unwrap().is_empty(),
        "a denied request reached the origin"
    );
    let allowed = fetch(&d, "stage", &url).await;
    assert_eq!(allowed["status"], 200, "{allowed}");
    assert_eq!(allowed["body"], "hello from origin");
    let head = origin.heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(
        head.starts_with("get /hello?token=s3cret http/1.1"),
        "{head}"
    );
    assert!(
        !head.contains("proxy-authorization"),
        "the proxy credential leaked: {head}"
    );

    // HTTPS: CONNECT tunnels, decided on the host name.
    let target = format!("127.0.0.1:{ep}");
    let tunnel = call(&d, "stage", &format!("/tunnel?target={target}")).await;
    assert_eq!(tunnel["status"], 200, "{tunnel}");
    assert_eq!(tunnel["echo"], "ping\n");
    let refused = call(&d, "test", &format!("/tunnel?target={target}")).await;
    assert_eq!(refused["status"], 403, "{refused}");
    assert!(
        refused["body"].as_str().unwrap().contains("--tier test"),
        "{refused}"
    );

    // Record mode passes what deny would refuse, and marks it; production needs no proxy.
    if outside.is_some() {
        let url = format!("http://{OUTSIDE}/catalog?key=abc");
        let recorded = call(&d, "qa", &format!("/get?url={}", enc(&url))).await;
        assert_eq!(
            recorded["status"],
            200,
            "{recorded}: {}",
            d.ok(&["egress", "log", "shop/qa"])
        );
        assert_eq!(recorded["body"], "hello from outside");
        let staged = fetch(&d, "stage", &url).await;
        assert_eq!(staged["body"], "hello from outside", "{staged}");
        let refused = fetch(&d, "test", &url).await;
        assert_eq!(refused["status"], 403, "{refused}");
        let qa = log_with(&d, "shop/qa", 1).await;
        assert_eq!(qa[0]["decision"], "would-deny", "{qa:?}");
        assert_eq!(qa[0]["status"], 200);
        assert_eq!(qa[0]["path"], "/catalog", "the query string was logged");
        assert!(qa[0]["bytes_down"].as_u64().unwrap() > 0, "{qa:?}");
        let marked = d.json(&["egress", "log", "shop/qa", "--denied"]);
        assert_eq!(marked["entries"].as_array().unwrap().len(), 1, "{marked}");
        assert_eq!(marked["mode"], "record");
    }

    // The log: every call, newest first, in both tiers.
    let n = if outside.is_some() { 3 } else { 2 };
    let test_log = log_with(&d, "shop/test", n).await;
    assert!(
        test_log
            .iter()
            .all(|e| e["decision"] == "denied" && e["status"] == 403),
        "{test_log:?}"
    );
    let first_http = test_log
        .iter()
        .find(|e| e["method"] == "GET" && e["port"] == o)
        .unwrap();
    assert_eq!(first_http["path"], "/hello");
    assert!(
        test_log
            .iter()
            .any(|e| e["method"] == "CONNECT" && e["port"] == ep),
        "{test_log:?}"
    );
    let stage_log = log_with(&d, "shop/stage", n).await;
    assert!(
        stage_log.iter().all(|e| e["decision"] == "allowed"),
        "{stage_log:?}"
    );
    let get = stage_log
        .iter()
        .find(|e| e["method"] == "GET" && e["port"] == o)
        .unwrap();
    assert_eq!(get["status"], 200);
    assert_eq!(get["host"], "127.0.0.1");
    assert!(
        get["bytes_up"].as_u64().unwrap() > 0 && get["bytes_down"].as_u64().unwrap() > 0,
        "{get}"
    );
    let connect = stage_log.iter().find(|e| e["method"] == "CONNECT").unwrap();
    assert_eq!(connect["status"], 200);
    assert_eq!(connect["bytes_down"], 5, "{connect}");
    let human = d.ok(&["egress", "log", "shop/test"]);
    assert!(
        human.contains("denied") && human.contains(&format!("127.0.0.1:{o}")),
        "{human}"
    );
    let only_denied = d.json(&["egress", "log", "shop/stage", "--denied"]);
    assert_eq!(
        only_denied["entries"],
        serde_json::json!([]),
        "{only_denied}"
    );

    // Who changed what is in the audit log.
    let audit = d.ok(&["audit", "--app", "shop"]);
    assert!(audit.contains("egress.policy"), "{audit}");
}

/// A hostile app or user tries to get around the proxy: the daemon's own ports stay shut
/// even with 127.0.0.1 allow-listed, credentials must be right (and an environment's own,
/// inside its namespace), and where namespaces exist an app that ignores HTTP_PROXY has no
/// way out under deny, while production does; a policy change opens or closes that at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_gets_around_the_egress_proxy() {
    let mut d = Daemon::start();
    let origin = Origin::start().await;
    let outside = is_root().then(Outside::start);
    let repo = Repo::with_app(CALLER);
    d.create(
        "shop",
        repo.path(),
        &[
            ("a", "main", "test"),
            ("b", "main", "staging"),
            ("prod", "main", "production"),
        ],
    );
    d.ok(&[
        "egress",
        "policy",
        "shop",
        "--tier",
        "staging",
        "--allow-host",
        "127.0.0.1",
        "--allow-host",
        "localhost",
    ]);
    for env in ["a", "b", "prod"] {
        d.ok(&["deploy", &format!("shop/{env}")]);
    }
    let a_url = call(&d, "a", "/env/HTTP_PROXY").await;
    let (a_user, a_password, proxy) = proxy_parts(a_url.as_str().unwrap());
    let b_url = call(&d, "b", "/env/HTTP_PROXY").await;
    let (b_user, b_password, _) = proxy_parts(b_url.as_str().unwrap());
    assert_ne!(a_password, b_password);

    // The daemon's own ports: the API, the proxy, the egress proxy itself (listed or not).
    let api_port: u16 = d
        .api
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    for port in [api_port, d.http.port(), proxy.port()] {
        for host in ["127.0.0.1", "localhost"] {
            let r = fetch(&d, "b", &format!("http://{host}:{port}/api/v1/apps")).await;
            assert_eq!(r["status"], 403, "{host}:{port}: {r}");
            assert!(
                r["body"].as_str().unwrap().contains("Turnout itself"),
                "{r}"
            );
        }
        let r = call(&d, "b", &format!("/tunnel?target=127.0.0.1:{port}")).await;
        assert_eq!(r["status"], 403, "CONNECT to {port}: {r}");
    }
    // Listed exactly, another loopback port is reachable; a name resolving to loopback that is
    // not listed is not (tier a lists nothing).
    let r = fetch(
        &d,
        "b",
        &format!("http://localhost:{}/x", origin.addr.port()),
    )
    .await;
    assert_eq!(r["status"], 200, "{r}");
    d.ok(&[
        "egress", "policy", "shop", "--tier", "test", "--mode", "allow",
    ]);
    let r = fetch(
        &d,
        "a",
        &format!("http://localhost:{}/x", origin.addr.port()),
    )
    .await;
    assert_eq!(r["status"], 403, "allow mode reached loopback: {r}");
    assert!(
        r["body"].as_str().unwrap().contains("private network"),
        "{r}"
    );
    d.ok(&["egress", "policy", "shop", "--tier", "test", "--reset"]);

    // The host's listener: no credentials, wrong ones, one environment's name with another's
    // password: 407 with a clear message.
    let target = format!("http://127.0.0.1:{}/x", origin.addr.port());
    let get = |auth: Option<String>| {
        let auth = auth.map_or(String::new(), |a| {
            format!("Proxy-Authorization: Basic {a}\r\n")
        });
        raw(
            proxy,
            &format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"),
        )
    };
    let (status, body) = get(None);
    assert_eq!(status, 407, "{body}");
    assert!(body.contains("credentials missing"), "{body}");
    for (user, password) in [
        (a_user.as_str(), "not-the-password"),
        (b_user.as_str(), a_password.as_str()),
        ("shop.nope", a_password.as_str()),
        ("", ""),
    ] {
        let (status, body) = get(Some(basic(user, password)));
        assert_eq!(status, 407, "{user}: {body}");
        assert!(body.contains("do not match"), "{body}");
    }
    let (status, body) = get(Some(basic(&b_user, &b_password)));
    assert_eq!(status, 200, "b's own credentials: {body}");
    // An origin-form request is not proxied anywhere.
    let (status, body) = raw(
        proxy,
        &format!(
            "GET /api/v1/apps HTTP/1.1\r\nHost: 127.0.0.1:{api_port}\r\nProxy-Authorization: Basic {}\r\nConnection: close\r\n\r\n",
            basic(&b_user, &b_password)
        ),
    );
    assert_eq!(status, 400, "{body}");
    // An oversized head is refused, not buffered without end.
    let huge = format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(200_000)
    );
    let (status, _) = raw(proxy, &huge);
    assert!(status == 431 || status == 400 || status == 0, "{status}");

    // Environment a with b's credentials, from its own code.
    let r = call(
        &d,
        "a",
        &format!(
            "/fetch?url={}&user={b_user}&password={b_password}",
            enc(&target)
        ),
    )
    .await;
    let namespaces = d.json(&["env", "show", "shop/a"])["isolation"]["network"]
        .as_str()
        .is_some_and(|n| n.starts_with("turnout-"));
    if namespaces {
        assert_eq!(r["status"], 407, "a used b's credentials: {r}");
    }
    let r = call(
        &d,
        "a",
        &format!(
            "/tunnel?target=127.0.0.1:{}&user={b_user}&password={b_password}",
            origin.addr.port()
        ),
    )
    .await;
    if namespaces {
        assert_eq!(r["status"], 407, "a tunnelled with b's credentials: {r}");
    }

    // Ignoring the proxy: with namespaces, a deny tier has no way out; production has.
    if let (true, Some(_)) = (namespaces, &outside) {
        let direct = format!("/direct?target={OUTSIDE}");
        let r = call(&d, "a", &direct).await;
        assert!(
            r.as_str().unwrap().starts_with("refused"),
            "a went out directly: {r}"
        );
        let r = call(&d, "b", &direct).await;
        assert!(
            r.as_str().unwrap().starts_with("refused"),
            "b went out directly: {r}"
        );
        assert_eq!(
            call(&d, "prod", &direct).await,
            "ok",
            "production could not go out"
        );
        // Production under deny loses its way out at once, and gets it back.
        d.ok(&[
            "egress",
            "policy",
            "shop",
            "--tier",
            "production",
            "--mode",
            "deny",
        ]);
        eventually(
            "production's way out to close",
            Duration::from_secs(20),
            || async {
                let r = call(&d, "prod", &direct).await;
                r.as_str().unwrap().starts_with("refused").then_some(())
            },
        )
        .await;
        d.ok(&[
            "egress",
            "policy",
            "shop",
            "--tier",
            "production",
            "--reset",
        ]);
        eventually(
            "production's way out to open",
            Duration::from_secs(20),
            || async { (call(&d, "prod", &direct).await == "ok").then_some(()) },
        )
        .await;
        let policies = d.ok(&["egress", "policy", "shop"]);
        assert!(policies.contains("enforced"), "{policies}");

        // A killed daemon's `pasta` does not linger beside its successor's: the one attached to
        // production's namespace is the one recorded, and the way out still works.
        let prod = d.json(&["env", "show", "shop/prod"]);
        let ns = format!(
            "/run/netns/{}",
            prod["isolation"]["network"].as_str().unwrap()
        );
        let recorded = Path::new(prod["dir"].as_str().unwrap()).join("run/pasta.pid");
        let before = pastas_in(&ns);
        assert_eq!(before.len(), 1, "{before:?}");
        d.kill_and_restart();
        eventually(
            "one pasta, the recorded one, attached to production's namespace",
            Duration::from_secs(30),
            || async {
                let now = pastas_in(&ns);
                let pid = std::fs::read_to_string(&recorded)
                    .ok()?
                    .trim()
                    .parse::<u32>()
                    .ok()?;
                (now == [pid] && now != before).then_some(())
            },
        )
        .await;
        eventually(
            "production's way out after the restart",
            Duration::from_secs(20),
            || async { (call(&d, "prod", &direct).await == "ok").then_some(()) },
        )
        .await;
    }
    assert!(
        origin.heads.lock().unwrap().len() <= 2,
        "more reached the origin than allowed"
    );
}

/// Bad input names the problem and the fix, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_egress_input_is_refused_and_changes_nothing() {
    let d = Daemon::start();
    let repo = Repo::new("x");
    d.create("shop", repo.path(), &[("dev", "main", "development")]);
    d.ok(&[
        "egress",
        "policy",
        "shop",
        "--tier",
        "staging",
        "--allow-host",
        "api.example.com",
    ]);
    let before = d.json(&["egress", "policy", "shop"]);
    for (args, says) in [
        (
            vec!["--tier", "staging", "--allow-host", "exa mple.com"],
            "bad host pattern 'exa mple.com'",
        ),
        (
            vec!["--tier", "staging", "--allow-host", "*"],
            "bad host pattern '*'",
        ),
        (
            vec!["--tier", "staging", "--allow-host", "example.com:70000"],
            "not a number from 1 to 65535",
        ),
        (
            vec!["--tier", "staging", "--allow-host", "http://example.com"],
            "bad host pattern",
        ),
        (
            vec!["--tier", "staging", "--mode", "block"],
            "deny, allow or record",
        ),
        (
            vec!["--tier", "prod", "--mode", "deny"],
            "unknown tier 'prod'",
        ),
        (vec!["--mode", "deny"], "--tier TIER"),
        (
            vec!["--tier", "staging", "--reset", "--mode", "deny"],
            "--reset",
        ),
    ] {
        let mut all = vec!["egress", "policy", "shop"];
        all.extend(args.iter().copied());
        let err = d.fails(&all);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let e = d.fails(&["egress", "policy", "nope", "--tier", "qa", "--mode", "deny"]);
    assert!(e.contains("nope"), "{e}");
    let e = d.fails(&["egress", "log", "shop/dev", "--limit", "0"]);
    assert!(e.contains("limit"), "{e}");
    let many: Vec<String> = (0..101).map(|i| format!("h{i}.example.com")).collect();
    let mut all = vec!["egress", "policy", "shop", "--tier", "qa"];
    for h in &many {
        all.extend(["--allow-host", h.as_str()]);
    }
    let e = d.fails(&all);
    assert!(e.contains("at most 100"), "{e}");
    assert_eq!(
        d.json(&["egress", "policy", "shop"]),
        before,
        "bad input changed a policy"
    );
    let audit = d.json(&["audit", "--app", "shop"]);
    let changes = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "egress.policy")
        .count();
    assert_eq!(changes, 1, "{audit}");
}

/// The `pasta` processes attached to the network namespace at `ns` (their command line names it).
fn pastas_in(ns: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let mut args = cmdline.split(|b| *b == 0);
            args.next()
                .is_some_and(|a| a.windows(5).any(|w| w == b"pasta"))
                && args.any(|a| a == ns.as_bytes())
        })
        .collect();
    pids.sort_unstable();
    pids
}
