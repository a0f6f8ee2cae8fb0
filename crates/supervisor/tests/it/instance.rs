use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::{Instant, sleep};
use turnout_supervisor::{Instance, InstanceState, SupervisorError};

use crate::support::{Fixture, accepts, alive, eventually, read_pid, zombie};

#[tokio::test]
async fn healthy_instance_serves_and_stop_kills_its_whole_group() {
    let fx = Fixture::new();
    let server_pid_file = fx.path("server.pid");
    let mut spec = fx.spec(
        "python3 server.py & wait",
        &[("SERVER_PID_FILE", server_pid_file.to_str().unwrap())],
    );
    spec.pid_file = Some(fx.path("run/web.pid"));
    let instance = Instance::start(spec).await.unwrap();
    assert_eq!(
        instance.addr().to_string(),
        format!("127.0.0.1:{}", fx.port)
    );

    instance.wait_healthy().await.unwrap();
    instance.check_health().await.unwrap();
    let status = instance.status();
    assert_eq!(status.state, InstanceState::Running);
    assert_eq!(status.restarts, 0);
    let shell_pid = status.pid.unwrap();
    let server_pid = read_pid(&server_pid_file).await;
    assert_ne!(
        shell_pid, server_pid,
        "the server must be a child of the shell"
    );

    let pid_file = std::fs::read_to_string(fx.path("run/web.pid")).unwrap();
    let mut lines = pid_file.lines();
    assert_eq!(lines.next(), Some(shell_pid.to_string().as_str()));
    let token = lines.next().unwrap();
    let environ = std::fs::read(format!("/proc/{server_pid}/environ")).unwrap();
    let marker = format!("TURNOUT_INSTANCE={token}");
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|var| var == marker.as_bytes()),
        "the app's processes carry the instance token"
    );

    // Concurrent and repeated stops all return once the group is gone.
    tokio::join!(instance.stop(), instance.stop());
    instance.stop().await;

    let status = instance.status();
    assert_eq!(status.state, InstanceState::Stopped);
    assert_eq!(status.pid, None);
    assert!(!accepts(fx.port), "port still accepts after stop");
    assert!(!alive(server_pid), "the shell's child survived stop");
    assert!(!alive(shell_pid), "the shell survived stop");
    assert!(!fx.path("run/web.pid").exists(), "pid file left behind");

    let log = fx.log();
    assert!(
        log.contains("[turnout] starting `python3 server.py & wait`"),
        "{log}"
    );
    assert!(log.contains(&format!("listening on {}", fx.port)), "{log}");
    assert!(log.contains("a line on stderr"), "{log}");
    assert!(log.contains("[turnout] stopped"), "{log}");
}

#[tokio::test]
async fn exit_before_healthy_fails_at_once_with_status_and_output() {
    let fx = Fixture::new();
    let instance = Instance::start(fx.spec("echo cannot connect to database; exit 3", &[]))
        .await
        .unwrap();
    let started = Instant::now();
    let err = instance.wait_healthy().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, SupervisorError::ExitedBeforeHealthy { .. }));
    assert_eq!(
        err.to_string(),
        "process exited with exit status 3 before becoming healthy"
    );
    assert!(
        err.log_tail()
            .unwrap()
            .contains("cannot connect to database"),
        "{err:?}"
    );
    let status = instance.status();
    assert_eq!(status.state, InstanceState::Crashed);
    assert_eq!(status.last_exit.as_deref(), Some("exit status 3"));
    assert_eq!(status.restarts, 0);
    // Stopping a crashed instance returns at once and keeps the crash visible.
    instance.stop().await;
    assert_eq!(instance.status().state, InstanceState::Crashed);
}

#[tokio::test]
async fn server_answering_500_is_not_healthy_and_the_error_says_so() {
    let fx = Fixture::new();
    let mut spec = fx.spec("exec python3 server.py", &[("STATUS", "500")]);
    spec.health.timeout = Duration::from_secs(1);
    let instance = Instance::start(spec).await.unwrap();
    let err = instance.wait_healthy().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "not healthy after 1s: GET / answered 500 Internal Server Error"
    );
    assert!(err.log_tail().unwrap().contains("listening on"), "{err:?}");
    assert_eq!(instance.status().state, InstanceState::Starting);
    let err = instance.check_health().await.unwrap_err();
    assert!(err.to_string().contains("500"), "{err}");
    instance.stop().await;
    assert!(!accepts(fx.port));
}

#[tokio::test]
async fn health_check_sends_the_configured_host() {
    let fx = Fixture::new();
    let mut spec = fx.spec("exec python3 server.py", &[]);
    spec.health.host = "other.shop.localhost".to_owned();
    spec.health.timeout = Duration::from_secs(1);
    let instance = Instance::start(spec).await.unwrap();
    let err = instance.wait_healthy().await.unwrap_err();
    assert!(err.to_string().contains("421"), "{err}");
    instance.stop().await;
}

#[tokio::test]
async fn nothing_listening_is_reported_as_connection_refused() {
    let fx = Fixture::new();
    let mut spec = fx.spec("sleep 60", &[]);
    spec.health.timeout = Duration::from_millis(300);
    let instance = Instance::start(spec).await.unwrap();
    let err = instance.wait_healthy().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "not healthy after 300ms: GET /: connection refused"
    );
    instance.stop().await;
}

#[tokio::test]
async fn instance_that_dies_after_becoming_healthy_is_restarted() {
    let fx = Fixture::new();
    let instance = Instance::start(fx.spec("python3 server.py", &[]))
        .await
        .unwrap();
    instance.wait_healthy().await.unwrap();
    let first_pid = instance.status().pid.unwrap();

    kill(Pid::from_raw(first_pid as i32), Signal::SIGKILL).unwrap();

    eventually("the instance has restarted and is healthy again", || {
        let status = instance.status();
        status.restarts == 1 && status.state == InstanceState::Running
    })
    .await;
    instance.check_health().await.unwrap();
    let status = instance.status();
    assert_eq!(status.last_exit.as_deref(), Some("signal 9"));
    assert_ne!(status.pid, Some(first_pid));
    let log = fx.log();
    assert!(
        log.contains("[turnout] exited with signal 9; restart 1 in 100ms"),
        "{log}"
    );
    assert!(log.contains("[turnout] healthy again"), "{log}");

    instance.stop().await;
    assert_eq!(instance.status().state, InstanceState::Stopped);
    assert!(!accepts(fx.port));
}

#[tokio::test]
async fn repeated_crashes_back_off_exponentially() {
    let fx = Fixture::new();
    // Healthy on the first run only; every later run exits at once.
    let command = "if [ -e ran ]; then exit 7; fi; touch ran; exec python3 server.py";
    let instance = Instance::start(fx.spec(command, &[])).await.unwrap();
    instance.wait_healthy().await.unwrap();
    let pid = instance.status().pid.unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();

    eventually("three restarts have happened", || {
        instance.status().restarts >= 3
    })
    .await;
    let status = instance.status();
    assert_eq!(status.state, InstanceState::Restarting);
    assert_eq!(status.last_exit.as_deref(), Some("exit status 7"));
    let log = fx.log();
    for expected in [
        "exited with signal 9; restart 1 in 100ms",
        "exited with exit status 7; restart 2 in 200ms",
        "exited with exit status 7; restart 3 in 400ms",
    ] {
        assert!(log.contains(expected), "missing {expected:?} in\n{log}");
    }
    instance.stop().await;
    assert_eq!(instance.status().state, InstanceState::Stopped);
}

/// Only healthy running starts the backoff over: a run that lasts long without ever passing
/// its health check does not.
#[tokio::test]
async fn the_backoff_starts_over_after_a_healthy_run() {
    let fx = Fixture::new();
    // Run 1 serves, run 2 runs a second without serving, run 3 exits at once, run 4 serves.
    let command = "n=$(cat runs 2>/dev/null || echo 0); n=$((n + 1)); echo $n > runs; \
                   case $n in 2) sleep 1; exit 7;; 3) exit 7;; esac; exec python3 server.py";
    let mut spec = fx.spec(command, &[]);
    spec.restart.reset_after = Duration::from_millis(500);
    let instance = Instance::start(spec).await.unwrap();
    instance.wait_healthy().await.unwrap();
    let pid = instance.status().pid.unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();

    eventually("the fourth run is healthy", || {
        let status = instance.status();
        status.restarts == 3 && status.state == InstanceState::Running
    })
    .await;
    // Healthy for longer than `reset_after` (with a margin), which is the point of the test.
    sleep(Duration::from_millis(700)).await;
    let pid = instance.status().pid.unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    eventually("the fourth restart is scheduled", || {
        fx.log().contains("restart 4 in")
    })
    .await;

    let log = fx.log();
    for expected in [
        "exited with signal 9; restart 1 in 100ms",
        "exited with exit status 7; restart 2 in 200ms",
        "exited with exit status 7; restart 3 in 400ms",
        "exited with signal 9; restart 4 in 100ms",
    ] {
        assert!(log.contains(expected), "missing {expected:?} in\n{log}");
    }
    instance.stop().await;
}

#[tokio::test]
async fn stop_during_backoff_cancels_the_restart() {
    let fx = Fixture::new();
    let mut spec = fx.spec("exec python3 server.py", &[]);
    spec.restart.initial_backoff = Duration::from_secs(60);
    let instance = Instance::start(spec).await.unwrap();
    instance.wait_healthy().await.unwrap();
    let pid = instance.status().pid.unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    eventually("the instance waits to restart", || {
        instance.status().state == InstanceState::Restarting
    })
    .await;

    let started = Instant::now();
    instance.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let status = instance.status();
    assert_eq!(status.state, InstanceState::Stopped);
    assert_eq!(status.restarts, 0);
    assert!(fx.log().contains("restart cancelled"));
}

#[tokio::test]
async fn stop_kills_a_process_that_ignores_sigterm() {
    let fx = Fixture::new();
    let mut spec = fx.spec("exec python3 server.py", &[("IGNORE_TERM", "1")]);
    spec.stop_timeout = Duration::from_millis(500);
    let instance = Instance::start(spec).await.unwrap();
    instance.wait_healthy().await.unwrap();

    let started = Instant::now();
    instance.stop().await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(500), "stopped after {took:?}");
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
    let status = instance.status();
    assert_eq!(status.state, InstanceState::Stopped);
    assert_eq!(status.last_exit.as_deref(), Some("signal 9"));
    assert!(!accepts(fx.port));
    assert!(fx.log().contains("sending SIGKILL"));
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_instance() {
    let fx = Fixture::new();
    let instance = Instance::start(fx.spec("exec python3 server.py", &[]))
        .await
        .unwrap();
    instance.wait_healthy().await.unwrap();
    let pid = instance.status().pid.unwrap();
    drop(instance);
    eventually("the dropped instance's process is gone", || !alive(pid)).await;
}

#[tokio::test]
async fn start_in_a_missing_directory_fails_clearly() {
    let fx = Fixture::new();
    let mut spec = fx.spec("exec python3 server.py", &[]);
    spec.cwd = fx.path("no-such-dir");
    let err = match Instance::start(spec).await {
        Ok(_) => panic!("started in a missing directory"),
        Err(e) => e,
    };
    let message = err.to_string();
    assert!(
        message.starts_with("could not start `sh -c exec python3 server.py` in "),
        "{message}"
    );
}

#[tokio::test]
async fn stop_waits_for_a_grandchild_that_outlives_the_leader() {
    let fx = Fixture::new();
    // The background shell takes a second to exit after SIGTERM; the server exits at once.
    let spec = fx.spec(
        r#"sh -c 'trap "sleep 1; exit 0" TERM; echo $$ > grandchild.pid; while :; do sleep 0.1; done' & exec python3 server.py"#,
        &[],
    );
    let instance = Instance::start(spec).await.unwrap();
    instance.wait_healthy().await.unwrap();
    let grandchild = read_pid(&fx.path("grandchild.pid")).await;
    let leader = instance.status().pid.unwrap();
    assert_ne!(leader, grandchild);

    let started = Instant::now();
    instance.stop().await;
    assert!(
        !alive(grandchild),
        "stop returned while the grandchild lived"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "stop returned after {:?}, before the grandchild's trap could finish",
        started.elapsed()
    );
    assert_eq!(instance.status().state, InstanceState::Stopped);
    assert_eq!(instance.status().last_exit.as_deref(), Some("signal 15"));
}

/// Variable that turns [`unreaped_zombie_helper`] from a no-op into the body of
/// [`stop_is_not_held_up_by_a_zombie_no_one_reaps`].
const SUBREAPER_VAR: &str = "TURNOUT_TEST_AS_SUBREAPER";

/// Makes its own process the subreaper of the instance's orphans and never reaps them, the way
/// an init that does not reap would; then stops the instance. A process of its own because a
/// subreaper is process-wide. Does nothing unless started by that test.
#[test]
fn unreaped_zombie_helper() {
    if std::env::var_os(SUBREAPER_VAR).is_none() {
        return;
    }
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let fx = Fixture::new();
        // The subshell exits at once, so `sleep` is orphaned and adopted by this process.
        let spec = fx.spec(
            "(sleep 60 & echo $! > orphan.pid); exec python3 server.py",
            &[],
        );
        let instance = Instance::start(spec).await.unwrap();
        instance.wait_healthy().await.unwrap();
        let orphan = read_pid(&fx.path("orphan.pid")).await;
        let started = Instant::now();
        instance.stop().await;
        let took = started.elapsed();
        assert!(
            zombie(orphan),
            "expected the orphan to be left a zombie in the group"
        );
        assert!(took < Duration::from_secs(2), "stop took {took:?}");
        assert_eq!(instance.status().state, InstanceState::Stopped);
    });
}

#[tokio::test]
async fn stop_is_not_held_up_by_a_zombie_no_one_reaps() {
    let helper = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "instance::unreaped_zombie_helper", "--nocapture"])
        .env(SUBREAPER_VAR, "1")
        .output()
        .await
        .unwrap();
    assert!(
        helper.status.success(),
        "{}{}",
        String::from_utf8_lossy(&helper.stdout),
        String::from_utf8_lossy(&helper.stderr)
    );
}
