//! Who an app's processes run as, and what environment they see.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use turnout_supervisor::Network;
use turnout_supervisor::{Identity, Instance, TaskSpec, reap_stale, run_task};

use crate::support::{Fixture, alive, child_env, eventually};

const APP_ID: u32 = 23456;

/// True when the test may change identities; otherwise says what it skips.
pub fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipping {test}: it needs root");
    }
    root
}

/// Opens `dir` to other users and puts a file only root can read in it.
fn prepare_dir(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "the daemon's secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The fields of a /proc/<pid>/status line, e.g. "Uid".
fn proc_status(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| {
            line.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap()
}

#[tokio::test]
async fn an_instance_runs_as_its_identity_without_other_groups() {
    if !root_or_skip("an_instance_runs_as_its_identity_without_other_groups") {
        return;
    }
    let fx = Fixture::new();
    prepare_dir(fx.dir.path());
    let mut spec = fx.spec("id -G; cat secret; exec python3 server.py", &[]);
    spec.identity = Some(Identity {
        uid: APP_ID,
        gid: APP_ID,
    });
    let pid_file = fx.path("run/web.pid");
    spec.pid_file = Some(pid_file.clone());
    let instance = Instance::start(spec).await.unwrap();
    instance.wait_healthy().await.unwrap();
    let pid = instance.status().pid.unwrap();
    let ids = format!("{APP_ID}\t{APP_ID}\t{APP_ID}\t{APP_ID}");
    assert_eq!(proc_status(pid, "Uid"), ids);
    assert_eq!(proc_status(pid, "Gid"), ids);
    assert_eq!(proc_status(pid, "Groups"), APP_ID.to_string());
    let log = fx.log();
    assert!(log.contains("secret: Permission denied"), "{log}");
    assert!(!log.contains("the daemon's secret"), "{log}");

    // The daemon, root, still finds and kills a group of another user's processes.
    reap_stale(&pid_file);
    eventually("the reaped app is gone", || !alive(pid)).await;
    instance.stop().await;
}

#[tokio::test]
async fn a_task_runs_as_its_identity() {
    if !root_or_skip("a_task_runs_as_its_identity") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    prepare_dir(dir.path());
    let spec = TaskSpec {
        command: "id -u; id -G; cat secret || echo unreadable".to_owned(),
        cwd: dir.path().to_owned(),
        env: child_env(&[]),
        identity: Some(Identity {
            uid: APP_ID,
            gid: APP_ID,
        }),
        cgroup: None,
        network: Network::Host,
        sandbox: None,
        log_path: dir.path().join("logs/build.log"),
        pid_file: None,
        timeout: Duration::from_secs(20),
    };
    let mut lines = Vec::new();
    run_task(spec, |line| lines.push(line.to_owned()))
        .await
        .unwrap();
    let id = APP_ID.to_string();
    assert_eq!(lines[..2], [id.as_str(), id.as_str()], "{lines:?}");
    assert!(lines[2].ends_with("secret: Permission denied"), "{lines:?}");
    assert_eq!(lines[3], "unreadable");
}

/// Variable that turns [`environment_helper`] from a no-op into the daemon of
/// [`children_see_only_the_environment_of_their_spec`]; only that daemon has it.
const ENV_DIR_VAR: &str = "TURNOUT_TEST_ENV_DIR";

/// Plays a daemon whose own environment has [`ENV_DIR_VAR`]: runs a task and an instance that
/// write their environments to files in that directory.
#[test]
fn environment_helper() {
    let Some(dir) = std::env::var_os(ENV_DIR_VAR) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let spec = TaskSpec {
            command: "env > task.env".to_owned(),
            cwd: dir.clone(),
            env: child_env(&[("FROM_SPEC", "task")]),
            identity: None,
            cgroup: None,
            network: Network::Host,
            sandbox: None,
            log_path: dir.join("build.log"),
            pid_file: None,
            timeout: Duration::from_secs(20),
        };
        run_task(spec, |_| {}).await.unwrap();

        let fx = Fixture::new();
        let mut spec = fx.spec(
            "env > env.tmp; mv env.tmp instance.env; exec sleep 60",
            &[("FROM_SPEC", "instance")],
        );
        spec.cwd = dir.clone();
        let instance = Instance::start(spec).await.unwrap();
        eventually("the instance wrote its environment", || {
            dir.join("instance.env").exists()
        })
        .await;
        instance.stop().await;
    });
}

fn names(env: &str) -> BTreeSet<&str> {
    env.lines()
        .filter_map(|line| Some(line.split_once('=')?.0))
        .collect()
}

#[tokio::test]
async fn children_see_only_the_environment_of_their_spec() {
    let dir = tempfile::tempdir().unwrap();
    let helper = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "isolation::environment_helper", "--nocapture"])
        .env(ENV_DIR_VAR, dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        helper.status.success(),
        "{}{}",
        String::from_utf8_lossy(&helper.stdout),
        String::from_utf8_lossy(&helper.stderr)
    );
    let task = std::fs::read_to_string(dir.path().join("task.env")).unwrap();
    let instance = std::fs::read_to_string(dir.path().join("instance.env")).unwrap();
    assert!(task.contains("FROM_SPEC=task\n"), "{task}");
    assert!(instance.contains("FROM_SPEC=instance\n"), "{instance}");
    // PWD is the shell's own.
    assert_eq!(
        names(&task),
        BTreeSet::from(["FROM_SPEC", "PATH", "PWD", "TURNOUT_TASK"])
    );
    assert_eq!(
        names(&instance),
        BTreeSet::from([
            "EXPECT_HOST",
            "FROM_SPEC",
            "PATH",
            "PORT",
            "PWD",
            "TURNOUT_INSTANCE"
        ])
    );
}
