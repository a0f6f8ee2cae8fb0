//! The data plane in a process of its own: traffic goes on while the control plane is killed
//! (SIGKILL) or leaves (SIGTERM), and the next `turnout serve` re-attaches to it and adopts the
//! instances; a data plane that dies is started again by the control plane.
use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::load::{every_kind_moves, mixed_prod};
use crate::support::{Daemon, Repo, eventually};
use crate::traffic::{ProdRelease, Tally, Target, Traffic};

#[derive(Clone, Copy, Debug)]
enum Leave {
    /// SIGKILL, as a crash or the OOM killer.
    Kill,
    /// SIGTERM, as a service manager's restart.
    Term,
}

/// Keep-alive GETs, 1 MB POSTs, 2 s requests, an event stream and a WebSocket, on the
/// internal URL and on a domain, while the control plane goes away (`how`), is absent for a
/// while, and comes back: no request fails, no stream is even interrupted, no instance is
/// restarted, the data plane is the same process, and the new control plane is in charge (a
/// deploy through it reaches the data plane).
async fn mixed_traffic_survives(how: Leave) {
    let (repo, commit, mut d) = mixed_prod();
    d.ok(&["domain", "add", "shop.example.test", "shop/prod"]);
    let before = d.json(&["env", "show", "shop/prod"]);
    let dataplane = d.dataplanes();
    assert_eq!(dataplane.len(), 1, "one data plane serves the home");

    let judge = Arc::new(ProdRelease::new(commit, true));
    let tally = Arc::new(Tally::new());
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for host in ["prod.shop.localhost", "shop.example.test"] {
        let traffic = Traffic {
            target: Target {
                addr: d.http,
                host: host.to_owned(),
            },
            judge: judge.clone(),
            tally: tally.clone(),
            stop: stop.clone(),
        };
        tasks.extend(traffic.mixed(2));
    }
    every_kind_moves(&tally, "before the control plane goes").await;
    let http = d.http;
    match how {
        Leave::Kill => d.kill(),
        Leave::Term => d.terminate(),
    }
    assert!(
        std::net::TcpStream::connect(d.api.trim_start_matches("http://")).is_err(),
        "the API still answers: the control plane is not gone"
    );
    every_kind_moves(&tally, "while no control plane runs").await;
    d.start_again();
    assert_eq!(d.http, http, "the proxy's address changed");
    every_kind_moves(&tally, "after the control plane came back").await;
    assert_eq!(d.dataplanes(), dataplane, "the data plane was replaced");
    let after = d.json(&["env", "show", "shop/prod"]);
    assert_eq!(after["status"], "live", "{after}");
    assert_eq!(
        after["instance"]["pid"], before["instance"]["pid"],
        "the same instance serves: {after}"
    );
    assert_eq!(after["instance"]["restarts"], 0, "{after}");

    // The new control plane is in charge: a deploy through it reaches the data plane.
    judge.moving.store(true, Ordering::Relaxed);
    repo.write("content.txt", "v2");
    let v2 = repo.commit("v2");
    d.ok(&["deploy", "shop/prod"]);
    eventually(
        "the domain to serve v2",
        Duration::from_secs(10),
        || async {
            let (status, body) = d.get("shop.example.test", "/").await;
            (status == 200 && body.contains(&v2[..12])).then_some(())
        },
    )
    .await;
    stop.cancel();
    for task in tasks {
        task.await.unwrap();
    }
    println!("{}", tally.summary());
    assert_eq!(tally.failures(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_traffic_survives_a_killed_control_plane() {
    mixed_traffic_survives(Leave::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_traffic_survives_a_terminated_control_plane() {
    mixed_traffic_survives(Leave::Term).await;
}

/// The data plane killed under a running control plane: the control plane starts another on
/// the same listening socket and gives it every route (the internal URL, a domain, a stopped
/// environment's page); the instances are not restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_data_plane_is_started_again_with_every_route() {
    let repo = Repo::new("again");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("prod", "main", "production"),
            ("dev", "main", "development"),
        ],
    );
    d.ok(&["deploy", "shop/prod"]);
    d.ok(&["deploy", "shop/dev"]);
    d.ok(&["env", "stop", "shop/dev"]);
    d.ok(&["domain", "add", "shop.example.test", "shop/prod"]);
    let before = d.json(&["env", "show", "shop/prod"]);
    let [old] = d.dataplanes()[..] else {
        panic!("not one data plane: {:?}", d.dataplanes());
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let new = eventually("a new data plane", Duration::from_secs(20), || async {
        let now = d.dataplanes();
        (now.len() == 1 && now[0] != old).then(|| now[0])
    })
    .await;
    eventually(
        "the routes to be served again",
        Duration::from_secs(20),
        || async {
            let (internal, _) = d.get("prod.shop.localhost", "/").await;
            let (domain, body) = d.get("shop.example.test", "/").await;
            let (stopped, page) = d.get("dev.shop.localhost", "/").await;
            (internal == 200 && domain == 200 && body.starts_with("again ") && stopped == 503)
                .then_some(page)
        },
    )
    .await;
    let after = d.json(&["env", "show", "shop/prod"]);
    assert_eq!(
        after["instance"]["pid"], before["instance"]["pid"],
        "{after}"
    );
    assert!(d.log().contains("the data plane exited; starting it again"));
    assert_eq!(d.dataplanes(), vec![new]);
}

/// `turnout __dataplane` is not for people: started by hand it says what it needs.
#[test]
fn the_data_plane_started_by_hand_says_it_needs_the_daemon() {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::support::BIN)
        .args(["__dataplane", "--config"])
        .arg(r#"{"workers":1,"header_read_timeout_ms":1000,"idle_timeout_ms":1000,"max_header_bytes":65536,"upstream_connect_timeout_ms":1000,"shutdown_grace_ms":1000}"#)
        .arg("--socket")
        .arg(home.path().join("dataplane.sock"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listening sockets did not come on standard input")
            && err.contains("turnout serve"),
        "{err}"
    );
}

/// Whoever can talk to the data plane can route any domain anywhere: its control socket is the
/// daemon user's alone. Another local user (as root: nobody) cannot connect to it, nor ask it
/// for the listening socket.
#[test]
fn another_user_cannot_reach_the_data_plane() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = Daemon::start();
    let socket = d.home.path().join("dataplane.sock");
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{socket:?}");
    assert_eq!(meta.uid(), nix::unistd::getuid().as_raw());
    if !crate::support::is_root() {
        return; // no other user to be; the mode above is what keeps them out
    }
    let attempt = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import socket, sys\n\
             s = socket.socket(socket.AF_UNIX)\n\
             try:\n    s.connect(sys.argv[1])\n    s.sendall(b'listeners\\n')\n    print('connected')\n\
             except OSError as e:\n    print(type(e).__name__)\n",
        )
        .arg(&socket)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&attempt.stdout);
    assert_eq!(
        said.trim(),
        "PermissionError",
        "{said} {:?}",
        attempt.stderr
    );
}

/// A replacement cut short (the control plane died after starting a successor data plane and
/// before it took over) leaves a data plane that never serves: the next `turnout serve` stops
/// it, and the running one goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_started_successor_is_stopped_by_the_next_control_plane() {
    let repo = Repo::new("kept");
    let mut d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    d.ok(&["deploy", "shop/prod"]);
    let [serving] = d.dataplanes()[..] else {
        panic!("not one data plane: {:?}", d.dataplanes());
    };
    // What an interrupted replacement leaves: a successor on dataplane.next, never told to serve.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let listeners = turnout_dataplane::Listeners {
        http: listener,
        https: None,
    };
    listeners.send(&ours).unwrap();
    let mut orphan = std::process::Command::new(crate::support::BIN)
        .arg("__dataplane")
        .arg("--socket")
        .arg(d.home.path().join("dataplane.next"))
        .arg("--succeed")
        .arg(d.home.path().join("dataplane.sock"))
        .arg("--config")
        .arg(r#"{"workers":1,"header_read_timeout_ms":1000,"idle_timeout_ms":1000,"max_header_bytes":65536,"upstream_connect_timeout_ms":1000,"shutdown_grace_ms":1000}"#)
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("the orphan to listen", Duration::from_secs(10), || async {
        std::os::unix::net::UnixStream::connect(d.home.path().join("dataplane.next"))
            .ok()
            .map(drop)
    })
    .await;
    d.kill_and_restart();
    let status = eventually("the orphan to be stopped", Duration::from_secs(20), || {
        let exited = orphan.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(status.success(), "{status}");
    assert_eq!(
        d.dataplanes(),
        vec![serving],
        "the serving data plane changed"
    );
    let (status, body) = d.get("prod.shop.localhost", "/").await;
    assert_eq!((status, body.starts_with("kept ")), (200, true), "{body}");
    assert!(d.log().contains("interrupted replacement"));
}
