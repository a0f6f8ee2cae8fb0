//! Sockets made inside a namespace stay there; the thread that made them comes back.
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;

use turnout_netns::{Namespace, Network};

/// Another process may take the port between the two calls (the machine runs other tests), so
/// a few tries are allowed; a port that is never free would fail them all.
#[test]
fn a_free_port_of_the_host_can_be_bound() {
    let bound = (0..10).any(|_| {
        let port = Network::Host.free_port().unwrap();
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    });
    assert!(
        bound,
        "ten free ports were all taken before they could be bound"
    );
}

/// A namespace of the test's own, removed when dropped; `None` (skipped, saying why) without
/// root or `ip`.
struct TestNamespace(String);

impl TestNamespace {
    fn new() -> Option<TestNamespace> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: network namespaces need root (CI runs the suite as root)");
            return None;
        }
        let name = format!("turnout-nstest-{}", std::process::id());
        match std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            other => {
                eprintln!("skipped: `ip netns add` failed: {other:?}");
                return None;
            }
        }
        let out = std::process::Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        Some(TestNamespace(name))
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

fn thread_namespace() -> std::path::PathBuf {
    std::fs::read_link("/proc/thread-self/ns/net").unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn a_listener_made_inside_is_reachable_only_from_inside() {
    let Some(ns) = TestNamespace::new() else {
        return;
    };
    let before = thread_namespace();
    let inside = Network::Namespace(Arc::new(Namespace::open(&ns.0).unwrap()));
    assert_eq!(inside.name(), Some(ns.0.as_str()));
    // Free on the host as well, so a refusal there means the namespace, not a taken port.
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, Network::Host.free_port().unwrap()));
    let listener = tokio::net::TcpListener::from_std(inside.listen(addr).unwrap()).unwrap();
    assert_eq!(thread_namespace(), before, "the thread came back");

    let refused = TcpStream::connect(addr).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let (connected, accepted) = tokio::join!(inside.connect(addr), listener.accept());
    connected.unwrap();
    accepted.unwrap();
    assert_eq!(thread_namespace(), before, "the thread came back");

    // The host's network still works on this thread.
    let host = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    TcpStream::connect(host.local_addr().unwrap()).unwrap();
}
