//! A daemon that dies leaves its instances running under their own supervising processes; the
//! next daemon on the same home adopts them instead of starting them again.
use std::time::Duration;

use serde_json::Value;

use crate::support::{Daemon, Repo, eventually};

/// The parent of `pid` (its supervising process), from /proc.
fn parent_of(pid: u64) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // pid (comm) state ppid …: the command may hold spaces, so read after its closing paren.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(1).unwrap().parse().unwrap()
}

fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

async fn live_after_restart(d: &Daemon, what: &str) -> Value {
    eventually(what, Duration::from_secs(30), || async {
        let env = d.json(&["env", "show", "shop/prod"]);
        let (status, _) = d.get("prod.shop.localhost", "/").await;
        (env["status"] == "live" && status == 200).then_some(env)
    })
    .await
}

/// A daemon serving shop/prod, deployed from a repository serving `content`; the repository,
/// `env show` of shop/prod, and its instance's pid.
fn deployed(content: &str) -> (Daemon, Repo, Value, u64) {
    let repo = Repo::new(content);
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    d.ok(&["deploy", "shop/prod"]);
    let before = d.json(&["env", "show", "shop/prod"]);
    let pid = before["instance"]["pid"].as_u64().unwrap();
    (d, repo, before, pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_s_instance_keeps_running_and_is_adopted_not_restarted() {
    let (mut d, _repo, before, pid) = deployed("adopted");
    let supervisor = parent_of(pid);
    assert_ne!(
        supervisor,
        d.pid(),
        "the instance is not the daemon's own child"
    );

    d.kill_and_restart();
    assert!(alive(pid), "the instance outlived the daemon");
    let after = live_after_restart(&d, "the environment to be adopted").await;
    assert_eq!(
        after["instance"]["pid"], pid,
        "the same process serves: {after}"
    );
    assert_eq!(after["instance"]["restarts"], 0, "{after}");
    assert_eq!(after["release"]["id"], before["release"]["id"]);
    let (status, body) = d.get("prod.shop.localhost", "/").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "adopted env=prod tier=production built=yes\n")
    );
    let log = d.log();
    assert!(log.contains("environment adopted"), "{log}");

    // A clean stop still stops it, and the next start launches it afresh.
    d.restart();
    assert!(!alive(pid), "a clean stop stops the instances");
    let again = live_after_restart(&d, "the environment to come back").await;
    assert_ne!(again["instance"]["pid"], pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_supervisor_died_too_is_reaped_and_started_again() {
    let (mut d, _repo, _, pid) = deployed("relaunched");
    let supervisor = parent_of(pid);

    // Both gone at once, as when the machine's OOM killer takes them: the app is orphaned.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.kill_and_restart();
    let after = live_after_restart(&d, "the environment to come back").await;
    assert_ne!(after["instance"]["pid"], pid, "{after}");
    eventually(
        "the orphaned app to be reaped",
        Duration::from_secs(10),
        || async { (!alive(pid)).then_some(()) },
    )
    .await;
}
