//! Resource plans: limits the kernel enforces, what they report, and groups that go with their
//! instance. Each test needs root and cgroups with the memory, cpu and pids controllers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use turnout_supervisor::Network;
use turnout_supervisor::{CgroupSpec, Instance, InstanceState, TaskSpec, run_task};

use crate::support::{Fixture, child_env, eventually};

const MIB: u64 = 1 << 20;

/// v1 memory hierarchy, or the v2 mount when it has the controllers.
fn memory_mount() -> Option<PathBuf> {
    let v1 = Path::new("/sys/fs/cgroup/memory");
    if v1.join("memory.limit_in_bytes").exists()
        && Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists()
    {
        return Some(v1.to_owned());
    }
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    let has = |c| v2.split_whitespace().any(|x| x == c);
    (has("memory") && has("pids")).then(|| PathBuf::from("/sys/fs/cgroup"))
}

/// True when the test can run; otherwise says what it skips.
fn cgroups_or_skip(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping {test}: it needs root");
        return false;
    }
    if memory_mount().is_none() {
        eprintln!("skipping {test}: no cgroup memory and pids controllers");
        return false;
    }
    true
}

/// A name no other test (or earlier run) uses.
fn plan(memory: Option<u64>, pids: Option<u64>) -> CgroupSpec {
    CgroupSpec {
        name: format!(
            "test-{}-{}",
            std::process::id(),
            Network::Host.free_port().unwrap()
        ),
        memory,
        cpu: Some(1.0),
        pids,
    }
}

/// The directory of the memory group a process is in.
fn memory_group(pid: u32) -> PathBuf {
    let mount = memory_mount().unwrap();
    let v2 = !mount.ends_with("memory");
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = groups
        .lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let _id = fields.next()?;
            let controllers = fields.next()?;
            let path = fields.next()?;
            let ours = if v2 {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == "memory")
            };
            ours.then(|| path.trim_start_matches('/').to_owned())
        })
        .unwrap();
    mount.join(path)
}

/// An HTTP server that, after answering its first request, eats memory until it is killed;
/// started again (a `hogged` file exists), it just serves.
const HOG: &str = r#"
import http.server, os, threading
hog = not os.path.exists("hogged")
def eat():
    food = []
    while True:
        food.append(b"x" * (1 << 20))
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global hog
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        if hog:
            hog = False
            open("hogged", "w").close()
            threading.Thread(target=eat).start()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[tokio::test]
async fn an_instance_killed_at_its_memory_limit_says_oom_and_is_restarted() {
    if !cgroups_or_skip("an_instance_killed_at_its_memory_limit_says_oom_and_is_restarted") {
        return;
    }
    let fx = Fixture::new();
    std::fs::write(fx.path("hog.py"), HOG).unwrap();
    let mut spec = fx.spec("exec python3 hog.py", &[]);
    spec.cgroup = Some(plan(Some(64 * MIB), None));
    let instance = Instance::start(spec).await.unwrap();
    assert_eq!(instance.status().limits_not_enforced, None);
    instance.wait_healthy().await.unwrap();
    eventually("the hog is killed and restarted", || {
        instance.status().restarts >= 1
    })
    .await;
    let status = instance.status();
    assert_eq!(
        status.last_exit.as_deref(),
        Some("OOM: killed at its memory limit (64 MiB)")
    );
    eventually("the restarted instance is healthy again", || {
        instance.status().state == InstanceState::Running
    })
    .await;
    let log = fx.log();
    assert!(
        log.contains("exited with OOM: killed at its memory limit (64 MiB); restart 1"),
        "{log}"
    );
    instance.stop().await;
}

#[tokio::test]
async fn a_task_killed_at_its_memory_limit_says_oom() {
    if !cgroups_or_skip("a_task_killed_at_its_memory_limit_says_oom") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = TaskSpec {
        command: r#"python3 -c 'food = []
while True: food.append(b"x" * (1 << 20))'"#
            .to_owned(),
        cwd: dir.path().to_owned(),
        env: child_env(&[]),
        identity: None,
        cgroup: Some(plan(Some(64 * MIB), None)),
        network: Network::Host,
        sandbox: None,
        log_path: dir.path().join("build.log"),
        pid_file: None,
        timeout: Duration::from_secs(60),
    };
    let err = run_task(spec, |_| {}).await.unwrap_err();
    assert!(
        err.to_string()
            .ends_with("failed with OOM: killed at its memory limit (64 MiB)"),
        "{err}"
    );
}

/// Forks 40 children that sleep, reporting each fork that fails, then says how many it made.
const FORKER: &str = r#"
import os, time
made = 0
for _ in range(40):
    try:
        pid = os.fork()
    except OSError as e:
        print("fork failed:", e.strerror, flush=True)
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    made += 1
print("forked", made, flush=True)
time.sleep(60)
"#;

#[tokio::test]
async fn a_pids_limit_stops_forks_and_usage_counts_them() {
    if !cgroups_or_skip("a_pids_limit_stops_forks_and_usage_counts_them") {
        return;
    }
    let fx = Fixture::new();
    std::fs::write(fx.path("forker.py"), FORKER).unwrap();
    let mut spec = fx.spec("exec python3 forker.py", &[]);
    spec.cgroup = Some(plan(None, Some(16)));
    let instance = Instance::start(spec).await.unwrap();
    let mut most = 0;
    eventually("the forker has tried all its forks", || {
        most = most.max(instance.usage().pids.unwrap_or(0));
        fx.log().contains("forked")
    })
    .await;
    assert!(most <= 16, "the group reached {most} processes");
    let log = fx.log();
    assert!(log.contains("forked 15"), "{log}");
    assert_eq!(log.matches("fork failed").count(), 25, "{log}");
    assert_eq!(instance.usage().pids, Some(16));
    instance.stop().await;
}

#[tokio::test]
async fn usage_comes_from_the_group_which_goes_with_the_instance() {
    if !cgroups_or_skip("usage_comes_from_the_group_which_goes_with_the_instance") {
        return;
    }
    let fx = Fixture::new();
    let mut spec = fx.spec("python3 server.py & wait", &[]);
    let plan = plan(Some(256 * MIB), Some(64));
    spec.cgroup = Some(plan.clone());
    let instance = Instance::start(spec).await.unwrap();
    instance.wait_healthy().await.unwrap();
    let usage = instance.usage();
    assert!(usage.memory_bytes.unwrap() > 0, "{usage:?}");
    assert!(usage.pids.unwrap() >= 2, "{usage:?}");
    assert!(usage.cpu_seconds.is_some(), "{usage:?}");

    let group = memory_group(instance.status().pid.unwrap());
    assert!(
        group
            .parent()
            .unwrap()
            .ends_with(format!("turnout/{}", plan.name)),
        "{}",
        group.display()
    );
    assert!(group.is_dir());
    instance.stop().await;
    assert!(!group.exists(), "{} left behind", group.display());
    assert!(
        !group.parent().unwrap().exists(),
        "the environment's group left behind"
    );
    assert_eq!(instance.usage().memory_bytes, None);
}

/// Variable that turns [`unprivileged_daemon_helper`] from a no-op into the daemon of
/// [`limits_that_cannot_be_enforced_are_reported`].
const UNPRIVILEGED_VAR: &str = "TURNOUT_TEST_UNPRIVILEGED";

/// Plays a daemon that is not root: its instance runs, and says its limits are not enforced.
#[test]
fn unprivileged_daemon_helper() {
    if std::env::var_os(UNPRIVILEGED_VAR).is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let fx = Fixture::new();
        let mut spec = fx.spec("exec python3 server.py", &[]);
        spec.cgroup = Some(plan(Some(64 * MIB), Some(16)));
        let instance = Instance::start(spec).await.unwrap();
        instance.wait_healthy().await.unwrap();
        let reason = instance.status().limits_not_enforced.unwrap();
        assert!(
            reason.starts_with("no usable cgroup controller for memory, cpu, pids ("),
            "{reason}"
        );
        assert!(
            fx.log()
                .contains("[turnout] resource limits not enforced: ")
        );
        instance.stop().await;
    });
}

#[tokio::test]
async fn limits_that_cannot_be_enforced_are_reported() {
    if !cgroups_or_skip("limits_that_cannot_be_enforced_are_reported") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cgroup::unprivileged_daemon_helper",
            "--nocapture",
        ])
        .env(UNPRIVILEGED_VAR, "1")
        .env("TMPDIR", "/tmp")
        .uid(23457)
        .gid(23457)
        .output()
        .unwrap();
    assert!(
        helper.status.success(),
        "{}{}",
        String::from_utf8_lossy(&helper.stdout),
        String::from_utf8_lossy(&helper.stderr)
    );
}
