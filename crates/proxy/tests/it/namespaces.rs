//! Instances inside network namespaces: the proxy makes its connections to them there, on the
//! plain path and on hyper's alike, and never mixes up two instances that listen on the same
//! address in different namespaces.
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use tokio::net::TcpListener;
use turnout_netns::{Namespace, Network};
use turnout_proxy::{DEFAULT_RESPONSE_TIMEOUT, ProxyConfig, Upstream};

use crate::support::*;

/// A namespace of the test's own (`ip netns add`), removed when dropped.
struct TestNamespace {
    network: Network,
    name: String,
}

impl TestNamespace {
    /// `None` (the test is skipped, saying why) without root or `ip`.
    fn new(tag: &str) -> Option<TestNamespace> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: network namespaces need root (CI runs the suite as root)");
            return None;
        }
        let name = format!("turnout-proxytest-{}-{tag}", std::process::id());
        let ip = |args: &[&str]| std::process::Command::new("ip").args(args).output();
        match ip(&["netns", "add", &name]) {
            Ok(out) if out.status.success() => {}
            other => {
                eprintln!("skipped: `ip netns add` failed: {other:?}");
                return None;
            }
        }
        let up = ip(&["-n", &name, "link", "set", "lo", "up"]).unwrap();
        assert!(up.status.success(), "{up:?}");
        let network = Network::Namespace(Arc::new(Namespace::open(&name).unwrap()));
        Some(TestNamespace { network, name })
    }

    /// A backend answering `text` on `addr` inside the namespace.
    fn backend(&self, addr: SocketAddr, text: &'static str) {
        let listener = TcpListener::from_std(self.network.listen(addr).unwrap()).unwrap();
        backend_on(listener, move |_req| async move { text_answer(text) });
    }
}

fn text_answer(text: &'static str) -> http::Response<TestBody> {
    crate::support::text(StatusCode::OK, text)
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

#[tokio::test]
async fn two_instances_on_one_address_in_two_namespaces_each_get_their_own_requests() {
    let (Some(a), Some(b)) = (TestNamespace::new("a"), TestNamespace::new("b")) else {
        return;
    };
    // The same address in both, free on the host too: only the namespace tells them apart.
    let addr = SocketAddr::from(([127, 0, 0, 1], Network::Host.free_port().unwrap()));
    a.backend(addr, "in namespace A");
    b.backend(addr, "in namespace B");
    let p = start_proxy(ProxyConfig::default()).await;
    let ua = Upstream::in_network(a.network.clone(), addr, "app/a", DEFAULT_RESPONSE_TIMEOUT);
    let ub = Upstream::in_network(b.network.clone(), addr, "app/b", DEFAULT_RESPONSE_TIMEOUT);
    let host = Upstream::new(addr, "app/host");
    p.proxy.apply(routes(&[
        ("a.test", &ua),
        ("b.test", &ub),
        ("host.test", &host),
    ]));

    // The plain path, on one keep-alive connection: its idle connections are per instance.
    let mut client = connect_h1(p.addr).await;
    for _ in 0..3 {
        for (host, want) in [("a.test", "in namespace A"), ("b.test", "in namespace B")] {
            let answer = send(&mut client, get_request(host, "/")).await;
            assert_eq!((answer.status, answer.text()), (StatusCode::OK, want));
        }
    }
    // Hyper's path (a streamed upload), whose pooled connections are per instance too.
    for (host, want) in [("a.test", "in namespace A"), ("b.test", "in namespace B")] {
        for _ in 0..2 {
            let (tx, body) = channel_body(1);
            let request = Request::builder()
                .method(Method::POST)
                .uri("/upload")
                .header("host", host)
                .body(body)
                .unwrap();
            let mut client = connect_h1(p.addr).await;
            let sent = tokio::spawn(async move { send(&mut client, request).await });
            tx.send(Bytes::from_static(b"data")).await.unwrap();
            drop(tx);
            let answer = within("the upload's answer", sent).await.unwrap();
            assert_eq!((answer.status, answer.text()), (StatusCode::OK, want));
        }
    }
    // HTTP/2 is served by hyper's path as well.
    let mut h2 = connect_h2(p.addr).await;
    for (host, want) in [("a.test", "in namespace A"), ("b.test", "in namespace B")] {
        let request = Request::builder()
            .version(Version::HTTP_2)
            .uri(format!("http://{host}/"))
            .body(empty())
            .unwrap();
        let response = h2.send_request(request).await.unwrap();
        let answer = collect(response).await;
        assert_eq!((answer.status, answer.text()), (StatusCode::OK, want));
    }
    // The host's own loopback has nothing there: the instances are not reachable outside
    // their namespaces.
    let answer = get(p.addr, "host.test", "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text());
}
