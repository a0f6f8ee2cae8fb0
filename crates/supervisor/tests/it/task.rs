use std::time::Duration;

use tokio::time::Instant;
use turnout_supervisor::Network;
use turnout_supervisor::{LocalRuntime, LogLine, Runtime, SupervisorError, TaskSpec, run_task};

use crate::support::{alive, child_env, eventually, read_pid};

struct TaskFixture {
    dir: tempfile::TempDir,
}

impl TaskFixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn spec(&self, command: &str) -> TaskSpec {
        TaskSpec {
            command: command.to_owned(),
            cwd: self.dir.path().to_owned(),
            env: child_env(&[("GREETING", "hello from env")]),
            identity: None,
            cgroup: None,
            network: Network::Host,
            sandbox: None,
            log_path: self.dir.path().join("logs/build.log"),
            pid_file: None,
            timeout: Duration::from_secs(20),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/build.log")).unwrap()
    }

    async fn run(&self, spec: TaskSpec) -> (Result<(), SupervisorError>, Vec<String>) {
        let mut lines = Vec::new();
        let result = run_task(spec, |line| lines.push(line.to_owned())).await;
        (result, lines)
    }
}

#[tokio::test]
async fn task_streams_stdout_and_stderr_lines_in_order() {
    let fx = TaskFixture::new();
    let command = r#"echo "$GREETING"; for i in 1 2 3; do echo out$i; echo err$i >&2; done; printf 'no newline'"#;
    let (result, lines) = fx.run(fx.spec(command)).await;
    result.unwrap();
    let expected = [
        "hello from env",
        "out1",
        "err1",
        "out2",
        "err2",
        "out3",
        "err3",
        "no newline",
    ];
    assert_eq!(lines, expected);
    let log = fx.log();
    let log_lines: Vec<&str> = log.lines().map(|line| LogLine::parse(line).text).collect();
    assert!(
        log.lines()
            .all(|line| LogLine::parse(line).timestamp.is_some()),
        "{log}"
    );
    assert_eq!(
        log_lines.first().copied(),
        Some(format!("[turnout] running `{command}`").as_str())
    );
    assert_eq!(&log_lines[1..=expected.len()], expected);
    assert_eq!(
        log_lines.last().copied(),
        Some("[turnout] finished with exit status 0")
    );
}

#[tokio::test]
async fn failing_task_reports_its_status_and_the_tail_of_its_output() {
    let fx = TaskFixture::new();
    let (result, lines) = fx
        .run(fx.spec("for i in $(seq 1 30); do echo line$i; done; exit 2"))
        .await;
    assert_eq!(lines.len(), 30);
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "`for i in $(seq 1 30); do echo line$i; done; exit 2` failed with exit status 2"
    );
    let tail: Vec<&str> = err.log_tail().unwrap().lines().collect();
    assert_eq!(tail.len(), 20);
    assert_eq!(tail.first(), Some(&"line11"));
    assert_eq!(tail.last(), Some(&"line30"));
    assert!(fx.log().contains("line1\n"));
}

#[tokio::test]
async fn task_past_its_timeout_is_killed_with_its_group() {
    let fx = TaskFixture::new();
    let mut spec = fx.spec("echo started; sleep 60 & echo $! > child.pid; wait");
    spec.timeout = Duration::from_millis(500);
    let started = Instant::now();
    let (result, lines) = fx.run(spec).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = result.unwrap_err();
    assert!(
        matches!(err, SupervisorError::TaskTimedOut { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .ends_with("did not finish within 500ms and was killed"),
        "{err}"
    );
    assert_eq!(lines, ["started"]);
    assert_eq!(err.log_tail(), Some("started"));
    let child = read_pid(&fx.dir.path().join("child.pid")).await;
    assert!(!alive(child), "the command's child survived the timeout");
}

#[tokio::test]
async fn background_process_left_by_a_task_does_not_hold_it_open() {
    let fx = TaskFixture::new();
    let started = Instant::now();
    let (result, _) = fx
        .run(fx.spec("sleep 60 & echo $! > child.pid; echo done"))
        .await;
    result.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let child = read_pid(&fx.dir.path().join("child.pid")).await;
    assert!(!alive(child), "the task's background process survived it");
}

#[tokio::test]
async fn task_in_a_missing_directory_fails_clearly() {
    let fx = TaskFixture::new();
    let mut spec = fx.spec("true");
    spec.cwd = fx.dir.path().join("missing");
    let (result, _) = fx.run(spec).await;
    let err = result.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("could not start `sh -c true` in "),
        "{err}"
    );
}

#[tokio::test]
async fn a_failed_task_shows_a_repeated_line_once() {
    let fx = TaskFixture::new();
    let (result, lines) = fx
        .run(fx.spec("echo start; for i in $(seq 1 30); do echo same error; done; exit 1"))
        .await;
    assert_eq!(lines.len(), 31);
    let err = result.unwrap_err();
    assert_eq!(err.log_tail(), Some("start\nsame error … ×30"));
}

/// Variable that turns [`killed_daemon_helper`] from a no-op into the daemon of
/// [`a_build_does_not_outlive_a_killed_daemon`].
const DAEMON_DIR_VAR: &str = "TURNOUT_TEST_DAEMON_DIR";

/// Plays a daemon in a process of its own: runs a build with a pid file, until it is killed.
/// Does nothing unless started by [`a_build_does_not_outlive_a_killed_daemon`].
#[test]
fn killed_daemon_helper() {
    let Some(dir) = std::env::var_os(DAEMON_DIR_VAR) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let spec = TaskSpec {
        command: "echo $$ > leader.pid; sleep 30 & echo $! > child.pid; wait".to_owned(),
        cwd: dir.clone(),
        env: child_env(&[]),
        identity: None,
        cgroup: None,
        network: Network::Host,
        sandbox: None,
        log_path: dir.join("build.log"),
        pid_file: Some(dir.join("run/build.pid")),
        timeout: Duration::from_secs(60),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _ = runtime.block_on(run_task(spec, |_| {}));
}

#[tokio::test]
async fn a_build_does_not_outlive_a_killed_daemon() {
    let fx = TaskFixture::new();
    let dir = fx.dir.path();
    let mut daemon = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "task::killed_daemon_helper", "--nocapture"])
        .env(DAEMON_DIR_VAR, dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let leader = read_pid(&dir.join("leader.pid")).await;
    let child = read_pid(&dir.join("child.pid")).await;
    let pid_file = dir.join("run/build.pid");
    eventually("the build's pid file is written", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.lines().count() == 2)
    })
    .await;
    assert!(
        std::fs::read_to_string(&pid_file)
            .unwrap()
            .starts_with(&format!("{leader}\n")),
        "the pid file names the build's process group"
    );

    daemon.kill().unwrap();
    daemon.wait().unwrap();
    // The parent-death signal reaches only the shell; what it started needs the reaper.
    eventually("the build's shell dies with the daemon", || !alive(leader)).await;
    assert!(alive(child), "expected the shell's child to outlive it");

    LocalRuntime.reap_stale(&pid_file).await;
    assert!(!alive(child), "the build's process survived the reap");
    assert!(!pid_file.exists());
}
