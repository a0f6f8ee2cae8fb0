//! `turnout serve --upgrade`: a new daemon takes the running one's listening sockets and
//! instances. Under load, no request fails and no instance is restarted.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::load::{every_kind_moves, mixed_prod};
use crate::support::{Conn, Daemon, Repo, eventually};
use crate::traffic::{ProdRelease, Tally, Target, Traffic};

/// Keep-alive GETs, 1 MB POSTs, 2 s requests, an event stream and a WebSocket, through an
/// upgrade: no request fails, every body is whole, the stream and the WebSocket of the old
/// daemon end cleanly (end of stream between events; close 1001) and reconnect to the new one,
/// and the instance is never restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_traffic_survives_an_upgrade() {
    let (_repo, commit, mut d) = mixed_prod();
    let before = d.json(&["env", "show", "shop/prod"]);

    let judge = Arc::new(ProdRelease::new(commit, false));
    let tally = Arc::new(Tally::new());
    let stop = CancellationToken::new();
    let traffic = Traffic {
        target: Target {
            addr: d.http,
            host: "prod.shop.localhost".to_owned(),
        },
        judge: judge.clone(),
        tally: tally.clone(),
        stop: stop.clone(),
    };
    let tasks = traffic.mixed(4);
    every_kind_moves(&tally, "before the upgrade").await;
    judge.moving.store(true, Ordering::Relaxed);
    d.upgrade();
    every_kind_moves(&tally, "after the upgrade").await;
    stop.cancel();
    for task in tasks {
        task.await.unwrap();
    }
    println!("{}", tally.summary());
    assert_eq!(tally.failures(), Vec::<String>::new());
    assert!(
        tally.sse_reconnects.load(Ordering::Relaxed) >= 1,
        "{}",
        tally.summary()
    );
    assert!(
        tally.ws_drain_closes.load(Ordering::Relaxed) >= 1,
        "{}",
        tally.summary()
    );
    let after = d.json(&["env", "show", "shop/prod"]);
    assert_eq!(
        after["instance"]["pid"], before["instance"]["pid"],
        "{after}"
    );
    assert_eq!(after["instance"]["restarts"], 0, "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_under_load_fails_no_request_and_restarts_no_instance() {
    let repo = Repo::new("steady");
    let mut d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    d.ok(&["deploy", "shop/prod"]);
    d.ok(&["domain", "add", "shop.example.test", "shop/prod"]);
    let before = d.json(&["env", "show", "shop/prod"]);
    let old_pid = d.pid();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for i in 0..4 {
        let (stop, ok, http) = (stop.clone(), ok.clone(), d.http);
        let host = if i % 2 == 0 {
            "prod.shop.localhost"
        } else {
            "shop.example.test"
        };
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut conn = Conn::open(http).await;
            while !stop.load(Ordering::Relaxed) {
                let answer = match conn.get(host, "/").await {
                    // The old daemon closes idle keep-alive connections as it hands over; a
                    // client sends its request again on a new one, as HTTP clients do.
                    Err(_) => {
                        conn = Conn::open(http).await;
                        conn.get(host, "/").await
                    }
                    answer => answer,
                };
                match answer {
                    Ok((200, body)) if body.starts_with("steady ") => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures.push(format!("{other:?}")),
                }
            }
            failures
        }));
    }
    let wait_for_more = |n: usize| {
        let ok = ok.clone();
        async move {
            eventually("requests to be served", Duration::from_secs(20), || {
                let now = ok.load(Ordering::Relaxed);
                async move { (now > n).then_some(()) }
            })
            .await
        }
    };
    wait_for_more(50).await;
    d.upgrade();
    assert_ne!(d.pid(), old_pid);
    let after_upgrade = ok.load(Ordering::Relaxed);
    wait_for_more(after_upgrade + 50).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );

    let after = d.json(&["env", "show", "shop/prod"]);
    assert_eq!(after["status"], "live", "{after}");
    assert_eq!(
        after["instance"]["pid"], before["instance"]["pid"],
        "the same instance serves: {after}"
    );
    assert_eq!(after["instance"]["restarts"], 0, "{after}");
    // The new daemon is the one in charge: it deploys.
    repo.write("content.txt", "steady v2");
    repo.commit("v2");
    d.ok(&["deploy", "shop/prod"]);
    let (_, body) = d.get("shop.example.test", "/").await;
    assert!(body.starts_with("steady v2 "), "{body}");
}

#[test]
fn an_upgrade_without_a_running_daemon_says_so() {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::support::BIN)
        .args(["serve", "--upgrade", "--single-user", "--home"])
        .arg(home.path())
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no running daemon answers") && err.contains("without --upgrade"),
        "{err}"
    );
}
