use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::time::Duration;

use turnout_supervisor::Network;
use turnout_supervisor::{InstanceState, LocalRuntime, Runtime, TaskSpec};

use crate::support::{Fixture, accepts, alive, child_env, read_pid};

/// What the control plane holds: a runtime behind the trait.
fn runtime() -> Arc<dyn Runtime> {
    Arc::new(LocalRuntime)
}

#[tokio::test]
async fn local_runtime_starts_checks_and_stops_an_instance() {
    let fx = Fixture::new();
    let runtime = runtime();
    let instance = runtime
        .start(fx.spec("exec python3 server.py", &[]))
        .await
        .unwrap();
    assert_eq!(instance.port(), fx.port);
    assert_eq!(instance.addr().port(), fx.port);
    instance.wait_healthy().await.unwrap();
    instance.check_health().await.unwrap();
    assert_eq!(instance.status().state, InstanceState::Running);
    instance.stop().await;
    assert_eq!(instance.status().state, InstanceState::Stopped);
    assert!(!accepts(fx.port));
}

#[tokio::test]
async fn local_runtime_runs_a_task_with_a_line_callback() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TaskSpec {
        command: "echo one; echo two >&2".to_owned(),
        cwd: dir.path().to_owned(),
        env: child_env(&[]),
        identity: None,
        cgroup: None,
        network: Network::Host,
        sandbox: None,
        log_path: dir.path().join("build.log"),
        pid_file: Some(dir.path().join("run/build.pid")),
        timeout: Duration::from_secs(20),
    };
    let mut lines = Vec::new();
    runtime()
        .run_task(spec, &mut |line| lines.push(line.to_owned()))
        .await
        .unwrap();
    assert_eq!(lines, ["one", "two"]);
    assert!(
        !dir.path().join("run/build.pid").exists(),
        "a finished task left its pid file"
    );
}

#[tokio::test]
async fn local_runtime_reap_returns_once_the_group_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = std::process::Command::new("sh")
        .arg("-c")
        .arg("sleep 60 & echo $! > child.pid; wait")
        .current_dir(dir.path())
        .env("TURNOUT_TASK", "abc-1-0")
        .process_group(0)
        .spawn()
        .unwrap();
    let child = read_pid(&dir.path().join("child.pid")).await;
    let pid_file = dir.path().join("build.pid");
    std::fs::write(&pid_file, format!("{}\nabc-1-0\n", leader.id())).unwrap();

    runtime().reap_stale(&pid_file).await;

    assert!(!alive(child), "reap returned before the group was gone");
    assert!(!pid_file.exists());
    leader.wait().unwrap();
}
