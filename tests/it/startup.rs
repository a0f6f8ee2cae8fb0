//! A start-up that cannot bring everything back keeps serving what it can, answers 503 with
//! `Retry-After` for the rest, leaves no half-started instance, retries by itself and recovers
//! once the cause is gone.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use turnout_model::parse_timestamp;

use crate::support::{Daemon, Repo, TOML, eventually, processes};

/// A repository whose app runs as `python3 app.py MARKER` (the fixture ignores its arguments),
/// so the test can tell its processes from every other test's, health-checked with `timeout`.
fn marked_repo(content: &str, marker: &str, timeout: &str) -> Repo {
    let repo = Repo::new(content);
    repo.write(
        "turnout.toml",
        &TOML
            .replace(
                "exec python3 app.py",
                &format!("exec python3 app.py {marker}"),
            )
            .replace("timeout = \"20s\"", &format!("timeout = \"{timeout}\"")),
    );
    repo.commit("marked");
    repo
}

/// Status and `Retry-After` of a GET through the proxy for `host`.
fn status_and_retry_after(d: &Daemon, host: &str) -> (u16, Option<String>) {
    let mut s = std::net::TcpStream::connect(d.http).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let head = raw.split("\r\n\r\n").next().unwrap_or_default();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {raw}"));
    let retry_after = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("retry-after")
            .then(|| value.trim().to_owned())
    });
    (status, retry_after)
}

/// Both hosts answer 503 with a `Retry-After` (not 404 as an unknown host, not 502).
#[track_caller]
fn assert_unavailable(d: &Daemon, hosts: &[&str]) {
    for host in hosts {
        let (status, retry_after) = status_and_retry_after(d, host);
        assert_eq!(status, 503, "{host}");
        assert_eq!(retry_after.as_deref(), Some("5"), "{host}");
    }
}

/// `env show` once it says `down`, with a next retry.
async fn down(d: &Daemon, env: &str) -> Value {
    eventually(
        &format!("{env} to be down"),
        Duration::from_secs(60),
        || async {
            let e = d.json(&["env", "show", env]);
            (e["status"] == "down").then_some(e)
        },
    )
    .await
}

/// `env show` once it says `live` and its internal URL answers 200.
async fn live(d: &Daemon, env: &str, host: &str) -> Value {
    eventually(
        &format!("{env} to be live"),
        Duration::from_secs(90),
        || async {
            let e = d.json(&["env", "show", env]);
            let (status, _) = d.get(host, "/").await;
            (e["status"] == "live" && status == 200).then_some(e)
        },
    )
    .await
}

/// A tmpfs mounted on a directory, unmounted when dropped.
struct Mounted(PathBuf);

impl Mounted {
    /// Mount a `size` tmpfs on `dir`, or say why not.
    fn tmpfs(dir: &Path, size: &str) -> Result<Mounted, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Mounted(dir.to_owned()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_up_on_a_full_disk_answers_503_and_recovers_by_itself_when_space_returns() {
    if !crate::support::is_root() {
        eprintln!("skipped: mounting a small file system to fill needs root");
        return;
    }
    let argv = ["python3", "app.py", "full-disk-7f3a"];
    let repo = marked_repo("roomy", argv[2], "20s");
    let mut d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    d.ok(&["deploy", "shop/prod"]);
    d.ok(&["domain", "add", "shop.example.test", "shop/prod"]);
    let env = d.json(&["env", "show", "shop/prod"]);
    let run = Path::new(env["dir"].as_str().unwrap()).join("run");
    assert!(d.stop().success());

    // The directory of the instance's pid file, on a small file system filled to the brim.
    let mounted = match Mounted::tmpfs(&run, "64k") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: cannot mount a tmpfs on {}: {why}", run.display());
            return;
        }
    };
    let filler = run.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 1 << 20]);
    assert!(
        std::fs::write(run.join("probe"), "x").is_err(),
        "the file system is full"
    );

    d.start_again();
    let env = down(&d, "shop/prod").await;
    let reason = env["status_reason"].as_str().unwrap();
    assert!(
        reason.contains("No space left on device") && reason.contains("the disk is full"),
        "{env}"
    );
    assert!(env["next_retry_at"].is_string(), "{env}");
    assert!(env["instance"].is_null(), "{env}");
    let human = d.ok(&["env", "show", "shop/prod"]);
    assert!(human.contains("status       down: "), "{human}");
    assert!(human.contains("(next retry at "), "{human}");
    assert_unavailable(&d, &["prod.shop.localhost", "shop.example.test"]);
    // The instance that could not get its pid file was not left running.
    eventually(
        "no instance of the app to be left running",
        Duration::from_secs(10),
        || async { processes(&argv).is_empty().then_some(()) },
    )
    .await;

    std::fs::remove_file(&filler).unwrap();
    live(&d, "shop/prod", "prod.shop.localhost").await;
    let (status, body) = d.get("shop.example.test", "/").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "roomy env=prod tier=production built=yes\n")
    );
    assert_eq!(processes(&argv).len(), 1, "one instance serves");
    assert!(d.log().contains("trying again later"), "{}", d.log());
    // Stopped before the file system goes, so nothing of it is left open there.
    assert!(d.stop().success());
    drop(mounted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_release_directory_leaves_its_environment_503_while_the_others_serve() {
    let repo = Repo::new("kept");
    repo.branch("staging");
    let mut d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("prod", "main", "production"),
            ("staging", "staging", "staging"),
        ],
    );
    d.ok(&["deploy", "shop/prod"]);
    d.ok(&["deploy", "shop/staging"]);
    d.ok(&["domain", "add", "shop.example.test", "shop/prod"]);
    let env = d.json(&["env", "show", "shop/prod"]);
    let releases = Path::new(env["dir"].as_str().unwrap()).join("releases");
    assert!(d.stop().success());
    for entry in std::fs::read_dir(&releases).unwrap().flatten() {
        if entry.path().is_dir() {
            std::fs::remove_dir_all(entry.path()).unwrap();
        }
    }

    d.start_again();
    live(&d, "shop/staging", "staging.shop.localhost").await;
    let env = down(&d, "shop/prod").await;
    let reason = env["status_reason"].as_str().unwrap();
    assert!(
        reason.contains("has no directory any more")
            && reason.contains("deploy again with `turnout deploy shop/prod`"),
        "{env}"
    );
    assert_unavailable(&d, &["prod.shop.localhost", "shop.example.test"]);
    let list = d.ok(&["env", "list", "shop"]);
    assert!(list.contains("down: release "), "{list}");

    // The fix the reason names works, and the retries stop fighting over it.
    d.ok(&["deploy", "shop/prod"]);
    let env = live(&d, "shop/prod", "prod.shop.localhost").await;
    assert!(env["next_retry_at"].is_null(), "{env}");
    let (status, _) = d.get("shop.example.test", "/").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_stays_unhealthy_at_start_up_leaves_no_instance_and_a_stop_ends_the_retries() {
    let argv = ["python3", "app.py", "unhealthy-51c2"];
    let repo = marked_repo("sick", argv[2], "3s");
    let mut d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    d.ok(&["deploy", "shop/prod"]);
    let env = d.json(&["env", "show", "shop/prod"]);
    let override_file =
        Path::new(env["dir"].as_str().unwrap()).join("data/g1/storage/health-status.txt");
    assert!(d.stop().success());
    std::fs::write(&override_file, "500").unwrap();

    d.start_again();
    let env = down(&d, "shop/prod").await;
    let reason = env["status_reason"].as_str().unwrap();
    assert!(reason.contains("not healthy after 3s"), "{env}");
    assert_unavailable(&d, &["prod.shop.localhost"]);
    // Between two attempts, nothing of a failed one is left running.
    eventually(
        "no instance of the app to be left running",
        Duration::from_secs(30),
        || async { processes(&argv).is_empty().then_some(()) },
    )
    .await;

    // A stop takes over (once no attempt holds the environment): nothing is retried after it,
    // not even when the retry it was waiting for falls due.
    let retry_at = eventually(
        "the stop to go through",
        Duration::from_secs(30),
        || async {
            let e = d.json(&["env", "show", "shop/prod"]);
            let at = parse_timestamp(e["next_retry_at"].as_str()?)?;
            d.cli(&["env", "stop", "shop/prod"])
                .status
                .success()
                .then_some(at)
        },
    )
    .await;
    let env = d.json(&["env", "show", "shop/prod"]);
    assert_eq!(env["status"], "stopped", "{env}");
    assert!(env["next_retry_at"].is_null(), "{env}");
    let quiet_until = UNIX_EPOCH + Duration::from_secs(retry_at as u64 + 2);
    eventually(
        "the retry to fall due and do nothing",
        Duration::from_secs(70),
        || async {
            assert_eq!(
                processes(&argv),
                Vec::<u32>::new(),
                "a stopped environment was retried"
            );
            (SystemTime::now() > quiet_until).then_some(())
        },
    )
    .await;

    std::fs::remove_file(&override_file).unwrap();
    d.ok(&["env", "start", "shop/prod"]);
    live(&d, "shop/prod", "prod.shop.localhost").await;
}
