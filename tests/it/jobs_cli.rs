//! The job commands against a real daemon (needs the job server: register this module in
//! `main.rs` once `POST …/deploy` answers 201 with a job and `/api/v1/jobs` exists).
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{BIN, Daemon, Repo, eventually};

fn job_state(d: &Daemon, id: &str) -> String {
    d.json(&["job", "show", id])["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_is_a_job_watched_to_the_end_and_listed() {
    let d = Daemon::start();
    let repo = Repo::new("v1");
    d.create("shop", repo.path(), &[("staging", "main", "staging")]);

    let out = d.ok(&["deploy", "shop/staging"]);
    for want in [
        "job ",
        "fetch",
        "build",
        "        | building",
        "live: shop/staging",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    let (_, body) = d.get("staging.shop.localhost", "/").await;
    assert!(body.contains("v1"), "{body}");

    // --detach: the id alone on stdout; `job watch` replays the whole job and exits 0.
    repo.write("content.txt", "v2");
    repo.commit("v2");
    let id = d
        .ok(&["deploy", "shop/staging", "--detach"])
        .trim()
        .to_owned();
    assert!(id.parse::<i64>().is_ok(), "{id}");
    let watched = d.ok(&["job", "watch", &id]);
    assert!(watched.contains("live: shop/staging"), "{watched}");
    assert_eq!(job_state(&d, &id), "succeeded");

    let list = d.ok(&["jobs", "shop/staging"]);
    assert!(list.lines().next().unwrap().contains("DURATION"), "{list}");
    // Staging is also backed up on its default schedule: its snapshots are jobs too.
    assert_eq!(
        list.lines()
            .filter(|l| l.contains("succeeded") && l.contains("deploy"))
            .count(),
        2,
        "{list}"
    );
    let show = d.ok(&["job", "show", &id]);
    for step in ["fetch", "build", "launch"] {
        assert!(show.contains(step), "{show}");
    }

    // A failing build: exit 1, the step and its log tail; the release list says `failed`.
    repo.write(
        "turnout.toml",
        &crate::support::TOML.replace("echo yes > built.txt", "echo broken; exit 3"),
    );
    repo.commit("broken build");
    let err = d.fails(&["deploy", "shop/staging"]);
    assert!(
        err.contains("failed at build") && err.contains("broken"),
        "{err}"
    );
    let releases = d.ok(&["release", "list", "shop/staging"]);
    let failed = releases.lines().find(|l| l.contains(" failed ")).unwrap();
    assert!(!failed.contains("built"), "{releases}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_watching_and_the_job_goes_on_or_is_cancelled() {
    let d = Daemon::start();
    let repo = Repo::new("slow");
    let marker = repo.path().join("go");
    repo.write(
        "turnout.toml",
        &crate::support::TOML.replace(
            "echo building; echo yes > built.txt",
            &format!(
                "echo waiting; while [ ! -e {} ]; do sleep 0.05; done; echo yes > built.txt",
                marker.display()
            ),
        ),
    );
    repo.commit("slow build");
    d.create("shop", repo.path(), &[("staging", "main", "staging")]);

    let mut watch = Command::new(BIN)
        .args(["--api", &d.api, "--home"])
        .arg(d.home.path())
        .args(["deploy", "shop/staging"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(watch.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("| waiting") {
        assert!(stdout.read_line(&mut seen).unwrap() > 0, "{seen}");
    }
    let id: String = seen
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watch.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = watch.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "Ctrl-C did not stop the watch");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    watch
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains(&format!("job {id} goes on")), "{err}");
    assert_eq!(job_state(&d, &id), "running");

    std::fs::write(&marker, "").unwrap();
    eventually("the job to succeed", Duration::from_secs(60), || async {
        (job_state(&d, &id) == "succeeded").then_some(())
    })
    .await;

    // A second slow deploy, cancelled: `job watch` then exits 1.
    std::fs::remove_file(&marker).unwrap();
    repo.write("content.txt", "v2");
    repo.commit("v2");
    let id = d
        .ok(&["deploy", "shop/staging", "--detach"])
        .trim()
        .to_owned();
    let cancelled: Value = d.json(&["job", "cancel", &id]);
    assert!(cancelled["state"] == "cancelled" || cancelled["state"] == "running");
    let out = d.cli(&["job", "watch", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(job_state(&d, &id), "cancelled");
    let (_, body) = d.get("staging.shop.localhost", "/").await;
    assert!(body.contains("slow"), "still the first release: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restart_stop_start_and_timestamped_logs() {
    let d = Daemon::start();
    let repo = Repo::new("v1");
    d.create("shop", repo.path(), &[("staging", "main", "staging")]);
    d.ok(&["deploy", "shop/staging"]);
    repo.write("content.txt", "v2");
    repo.commit("v2");
    d.ok(&["deploy", "shop/staging"]);

    let out = d.ok(&["rollback", "shop/staging"]);
    assert!(out.contains("live: shop/staging"), "{out}");
    let (_, body) = d.get("staging.shop.localhost", "/").await;
    assert!(body.contains("v1"), "{body}");

    let pid = |d: &Daemon| d.json(&["env", "show", "shop/staging"])["instance"]["pid"].clone();
    let before = pid(&d);
    d.ok(&["restart", "shop/staging"]);
    assert_ne!(pid(&d), before);

    let out = d.ok(&["env", "stop", "shop/staging"]);
    assert!(out.contains("turnout env start shop/staging"), "{out}");
    let (status, _) = d.get("staging.shop.localhost", "/").await;
    assert_eq!(status, 503);
    d.ok(&["env", "start", "shop/staging"]);
    let (status, _) = d.get("staging.shop.localhost", "/").await;
    assert_eq!(status, 200);

    let plain = d.ok(&["logs", "shop/staging", "--tail", "5"]);
    let stamped = d.ok(&["logs", "shop/staging", "--tail", "5", "--timestamps"]);
    assert_ne!(plain, stamped);
    let line = stamped.lines().last().unwrap();
    assert!(line.starts_with("20"), "a timestamp first: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_deploy_is_watched_as_its_job() {
    let d = Daemon::start();
    let repo = Repo::new("v1");
    d.create("shop", repo.path(), &[("production", "main", "production")]);
    d.ok(&["user", "add", "bob"]);
    d.ok(&["access", "grant", "bob", "shop", "owner"]);
    let bob = d.json(&["token", "create", "--user", "bob"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    d.ok(&["access", "require-approval", "shop", "deploy", "production"]);
    let out = d.cli(&["deploy", "shop/production"]);
    assert_eq!(out.status.code(), Some(3));
    let approvals = d.json(&["approvals", "list"]);
    let id = approvals[0]["id"].as_i64().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["--api", &d.api, "approve", &id])
        .env("TURNOUT_TOKEN", &bob)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("runs as job") && stdout.contains("live: shop/production"),
        "{stdout}"
    );
}
