use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use turnout_supervisor::reap_stale;

use crate::support::{alive, eventually, read_pid};

/// A shell with a child of its own, in its own process group, marked with `token` the way
/// instances are.
fn spawn_group(dir: &std::path::Path, token: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg("sleep 60 & echo $! > child.pid; wait")
        .current_dir(dir)
        .env("TURNOUT_INSTANCE", token)
        .process_group(0)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn reap_stale_kills_the_group_named_by_a_matching_pid_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = spawn_group(dir.path(), "1234-5-0");
    let child = read_pid(&dir.path().join("child.pid")).await;
    let pid_file = dir.path().join("web.pid");
    std::fs::write(&pid_file, format!("{}\n1234-5-0\n", leader.id())).unwrap();

    reap_stale(&pid_file);

    eventually("the stale group's leader is gone", || {
        leader.try_wait().unwrap().is_some()
    })
    .await;
    eventually("the stale group's child is gone", || !alive(child)).await;
    assert!(!pid_file.exists());
}

#[tokio::test]
async fn reap_stale_leaves_a_process_without_the_token_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = spawn_group(dir.path(), "someone-else");
    let child = read_pid(&dir.path().join("child.pid")).await;
    let pid_file = dir.path().join("web.pid");
    std::fs::write(&pid_file, format!("{}\n1234-5-0\n", leader.id())).unwrap();

    reap_stale(&pid_file);

    assert!(!pid_file.exists());
    assert!(
        leader.try_wait().unwrap().is_none(),
        "an unrelated process was killed"
    );
    assert!(alive(child), "an unrelated process was killed");
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(leader.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    leader.wait().unwrap();
}

#[test]
fn reap_stale_ignores_missing_and_garbled_files() {
    let dir = tempfile::tempdir().unwrap();
    reap_stale(&dir.path().join("missing.pid"));
    for garbage in [
        "",
        "not a pid\n",
        "42\n",
        "1\ntoken\n",
        "0\ntoken\n",
        "-5\ntoken\n",
    ] {
        let pid_file = dir.path().join("web.pid");
        std::fs::write(&pid_file, garbage).unwrap();
        reap_stale(&pid_file);
        assert!(!pid_file.exists(), "{garbage:?} left the file behind");
    }
}
