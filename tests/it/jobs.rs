//! Jobs: every deploy, rollback, restart and start is a job that survives its client, can be
//! watched and cancelled, is marked interrupted when the daemon dies under it, and never
//! leaves a build running or a release half-written.
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Daemon, Repo, TOML, eventually, processes};

/// Wait (a few seconds at most) until no process runs `argv`: a killed build is gone.
async fn gone(argv: &[&str]) {
    eventually(
        &format!("{argv:?} to be gone"),
        Duration::from_secs(5),
        || async { processes(argv).is_empty().then_some(()) },
    )
    .await
}

/// Commit a build that runs `sleep SECS` (a value unique to the test, to find its process).
fn slow_build(repo: &Repo, secs: &str) -> String {
    repo.write("content.txt", "v2");
    repo.write(
        "turnout.toml",
        &TOML.replace(
            "command = \"echo building; echo yes > built.txt\"",
            &format!("command = \"echo building; sleep {secs}; echo yes > built.txt\""),
        ),
    );
    repo.commit("v2 with a slow build")
}

fn job(d: &Daemon, id: &str) -> Value {
    d.json(&["job", "show", id])
}

/// Wait until job `id`'s step `name` is running.
async fn step_running(d: &Daemon, id: &str, name: &str) {
    eventually(
        &format!("job {id} at {name}"),
        Duration::from_secs(30),
        || async {
            let j = job(d, id);
            j["steps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["name"] == name && s["state"] == "running")
                .then_some(())
        },
    )
    .await
}

async fn job_ends(d: &Daemon, id: &str) -> Value {
    eventually(
        &format!("job {id} to end"),
        Duration::from_secs(60),
        || async {
            let j = job(d, id);
            (!matches!(j["state"].as_str(), Some("queued" | "running"))).then_some(j)
        },
    )
    .await
}

fn detach(d: &Daemon, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("--detach");
    d.json(&all)["id"].to_string()
}

fn release_dirs(d: &Daemon, env: &str) -> Vec<String> {
    let dir = d
        .home
        .path()
        .join("apps/shop/envs")
        .join(env)
        .join("releases");
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_during_a_build_leaves_no_build_running_and_the_old_release_serving() {
    let repo = Repo::new("v1");
    let mut d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    d.ok(&["deploy", "shop/prod"]);
    let v2 = slow_build(&repo, "37.25");

    let id = detach(&d, &["deploy", "shop/prod"]);
    step_running(&d, &id, "build").await;
    eventually("the build's sleep", Duration::from_secs(10), || async {
        (!processes(&["sleep", "37.25"]).is_empty()).then_some(())
    })
    .await;
    assert!(
        release_dirs(&d, "prod")
            .iter()
            .any(|n| n.starts_with(&v2[..12])),
        "the checkout of v2 exists during its build"
    );

    d.kill_and_restart();

    eventually("the build to be gone", Duration::from_secs(10), || async {
        processes(&["sleep", "37.25"]).is_empty().then_some(())
    })
    .await;
    let j = job_ends(&d, &id).await;
    assert_eq!(j["state"], "interrupted", "{j}");
    assert!(j["error"].as_str().unwrap().contains("interrupted"), "{j}");
    let build = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "build")
        .unwrap();
    assert_eq!(
        build["state"], "cancelled",
        "the step it died in says so: {j}"
    );
    assert!(
        !release_dirs(&d, "prod")
            .iter()
            .any(|n| n.starts_with(&v2[..12])),
        "the half-built release directory is removed: {:?}",
        release_dirs(&d, "prod")
    );
    let releases = d.json(&["release", "list", "shop/prod"]);
    assert_eq!(releases[0]["status"], "failed", "{releases}");
    assert_eq!(releases[1]["status"], "live", "{releases}");
    // One audit entry for the one interrupted deploy, naming it; a clean restart adds none.
    let interrupted = |d: &Daemon| -> Vec<Value> {
        d.json(&["audit"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "deploy.interrupted")
            .cloned()
            .collect()
    };
    let entries = interrupted(&d);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        (&entries[0]["app"], &entries[0]["env"]),
        (&Value::from("shop"), &Value::from("prod")),
        "{entries:?}"
    );
    let from = entries[0]["from"].as_str().unwrap();
    assert!(
        from.contains(&format!("release {}", releases[0]["id"])) && from.contains(&v2[..12]),
        "{entries:?}"
    );
    d.restart();
    assert_eq!(
        interrupted(&d).len(),
        1,
        "a clean restart interrupted nothing"
    );

    eventually("v1 to serve again", Duration::from_secs(30), || async {
        let (status, body) = d.get("prod.shop.localhost", "/").await;
        (status == 200 && body.starts_with("v1 ")).then_some(())
    })
    .await;

    // The next deploy works.
    repo.write("turnout.toml", TOML);
    repo.write("content.txt", "v3");
    repo.commit("v3");
    d.ok(&["deploy", "shop/prod"]);
    let (_, body) = d.get("prod.shop.localhost", "/").await;
    assert!(body.starts_with("v3 "), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_build_leaves_the_old_release_serving() {
    let repo = Repo::new("v1");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    d.ok(&["deploy", "shop/prod"]);
    slow_build(&repo, "38.5");

    let id = detach(&d, &["deploy", "shop/prod"]);
    step_running(&d, &id, "build").await;
    let j = d.json(&["job", "cancel", &id]);
    assert_eq!(j["state"], "cancelled", "{j}");
    assert_eq!(j["error"], "cancelled by admin", "{j}");
    gone(&["sleep", "38.5"]).await;
    let (status, body) = d.get("prod.shop.localhost", "/").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("v1 "), "{body}");
    let releases = d.json(&["release", "list", "shop/prod"]);
    assert_eq!(releases[0]["status"], "failed", "{releases}");
    assert_eq!(releases[0]["error"], "cancelled by admin", "{releases}");
    assert_eq!(releases[1]["status"], "live", "{releases}");

    // An ended job cannot be cancelled again; `job watch` replays it and exits non-zero.
    let err = d.fails(&["job", "cancel", &id]);
    assert!(err.contains("already ended"), "{err}");
    let watch = d.cli(&["job", "watch", &id]);
    assert_eq!(watch.status.code(), Some(1));
    let out = String::from_utf8_lossy(&watch.stdout);
    assert!(out.contains("fetch") && out.contains("build"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restart_stop_and_start_build_nothing_and_drop_nothing() {
    let repo = Repo::new("v1");
    let mut d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    let err = d.fails(&["rollback", "shop/prod"]);
    assert!(err.contains("nothing to roll back"), "{err}");
    d.ok(&["deploy", "shop/prod"]);
    repo.write("content.txt", "v2");
    repo.commit("v2");
    d.ok(&["deploy", "shop/prod"]);
    d.ok(&["domain", "add", "www.shop.test", "shop/prod"]);
    let (_, body) = d.get("prod.shop.localhost", "/").await;
    assert!(body.starts_with("v2 "), "{body}");
    let build_logs = |d: &Daemon| {
        std::fs::read_dir(d.home.path().join("apps/shop/envs/prod/logs"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("build"))
            .count()
    };
    let builds_before = build_logs(&d);

    let out = d.ok(&["rollback", "shop/prod"]);
    assert!(out.contains("launch"), "{out}");
    let (_, body) = d.get("prod.shop.localhost", "/").await;
    assert!(body.starts_with("v1 "), "{body}");
    let jobs = d.json(&["jobs", "shop/prod"]);
    // Production's scheduled snapshots are jobs too.
    let rollback = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] != "backup")
        .unwrap();
    assert_eq!(rollback["kind"], "rollback", "{jobs}");
    assert_eq!(rollback["state"], "succeeded", "{jobs}");
    let steps: Vec<&str> = rollback["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["launch", "go-live", "retire"], "no fetch, no build");
    assert_eq!(
        build_logs(&d),
        builds_before,
        "a rollback writes no build log"
    );
    let releases = d.json(&["release", "list", "shop/prod"]);
    assert_eq!(releases[0]["status"], "superseded", "{releases}");
    assert_eq!(releases[1]["status"], "live", "{releases}");
    let audit = d.json(&["audit", "--app", "shop"]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "rollback" && e["result"] == "ok"),
        "{audit}"
    );
    // Nothing older than v1: a second rollback is refused; `--to` goes forward again.
    let err = d.fails(&["rollback", "shop/prod"]);
    assert!(err.contains("nothing to roll back"), "{err}");
    let v2 = releases[0]["id"].to_string();
    d.ok(&["rollback", "shop/prod", "--to", &v2]);
    let (_, body) = d.get("www.shop.test", "/").await;
    assert!(body.starts_with("v2 "), "{body}");

    // Restart: a new process of the same release.
    let before = d.json(&["env", "show", "shop/prod"]);
    d.ok(&["restart", "shop/prod"]);
    let after = d.json(&["env", "show", "shop/prod"]);
    assert_eq!(after["release"]["id"], before["release"]["id"]);
    assert_ne!(after["instance"]["pid"], before["instance"]["pid"]);

    // Stop: the internal URL and the domain answer a clear 503, across a daemon restart.
    let stopped = d.json(&["env", "stop", "shop/prod"]);
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    for host in ["prod.shop.localhost", "www.shop.test"] {
        let (status, body) = d.get(host, "/").await;
        assert_eq!(status, 503, "{host}: {body}");
        assert!(body.contains("shop/prod is stopped"), "{body}");
    }
    let err = d.fails(&["restart", "shop/prod"]);
    assert!(err.contains("env start"), "{err}");
    d.restart();
    let env = d.json(&["env", "show", "shop/prod"]);
    assert_eq!(env["status"], "stopped", "{env}");
    let (status, _) = d.get("www.shop.test", "/").await;
    assert_eq!(status, 503);

    d.ok(&["env", "start", "shop/prod"]);
    let (status, body) = d.get("www.shop.test", "/").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("v2 "), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_is_a_failed_job_and_a_developer_sees_no_other_apps_jobs() {
    let repo = Repo::new("v1");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("dev", "main", "development")]);
    d.create("blog", repo.path(), &[("prod", "main", "production")]);
    d.ok(&["deploy", "blog/prod"]);
    let out = d.cli(&["deploy", "shop/dev", "--ref", "no-such-ref"]);
    assert_eq!(out.status.code(), Some(1));
    let jobs = d.json(&["jobs", "shop/dev"]);
    assert_eq!(jobs[0]["state"], "failed", "{jobs}");
    assert_eq!(jobs[0]["steps"][0]["state"], "failed", "{jobs}");
    let error = jobs[0]["error"].as_str().unwrap();
    assert!(error.contains("no-such-ref"), "{error}");
    assert!(
        !error.contains("failed: fetch failed"),
        "the error says once what failed: {error}"
    );

    d.ok(&["user", "add", "dev"]);
    d.ok(&["access", "grant", "dev", "shop", "developer"]);
    let dev = d.json(&["token", "create", "--user", "dev"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = d.cli_as(&dev, &["--json", "jobs", "--all"]);
    assert!(seen.status.success());
    let seen: Value = serde_json::from_slice(&seen.stdout).unwrap();
    let apps: Vec<&str> = seen
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["app"].as_str().unwrap())
        .collect();
    assert!(
        !apps.is_empty() && apps.iter().all(|a| *a == "shop"),
        "{apps:?}"
    );
    let blog_job = d.json(&["jobs", "blog/prod"])[0]["id"].to_string();
    let out = d.cli_as(&dev, &["job", "show", &blog_job]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job"));
    let out = d.cli_as(&dev, &["job", "cancel", &blog_job]);
    assert!(!out.status.success());
    let audit = d.cli_as(&dev, &["--json", "audit"]);
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(!audit.contains("blog"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_a_job_before_go_live_and_leaves_no_build() {
    let repo = Repo::new("v1");
    let mut d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    d.ok(&["deploy", "shop/prod"]);
    slow_build(&repo, "39.75");
    let id = detach(&d, &["deploy", "shop/prod"]);
    step_running(&d, &id, "build").await;
    eventually("the build's sleep", Duration::from_secs(10), || async {
        (!processes(&["sleep", "39.75"]).is_empty()).then_some(())
    })
    .await;
    d.restart();
    gone(&["sleep", "39.75"]).await;
    let j = job(&d, &id);
    assert_eq!(j["state"], "cancelled", "{j}");
    assert!(
        j["error"].as_str().unwrap().contains("shutting down"),
        "{j}"
    );
    eventually("v1 to serve again", Duration::from_secs(30), || async {
        let (status, body) = d.get("prod.shop.localhost", "/").await;
        (status == 200 && body.starts_with("v1 ")).then_some(())
    })
    .await;
}

/// The job file is the whole story: `watch` after the end replays every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_deploy_survives_its_client_and_watch_replays_it() {
    let repo = Repo::new("v1");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    let id = detach(&d, &["deploy", "shop/prod"]);
    let j = job_ends(&d, &id).await;
    assert_eq!(j["state"], "succeeded", "{j}");
    let out = d.ok(&["job", "watch", &id]);
    for step in [
        "fetch", "checkout", "build", "migrate", "launch", "go-live", "retire", "building",
    ] {
        assert!(out.contains(step), "watch lacks {step}:\n{out}");
    }
    assert!(Path::new(&d.home.path().join("jobs").join(format!("{id}.ndjson"))).exists());
}

/// An approved deploy is a job like any other: `approve` returns with its id while it builds,
/// and a shutdown cancels it and leaves no build behind (it used to run inside the approving
/// request, where a dropped request cancelled it and shutdown did not wait for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_deploy_runs_as_a_job_that_shutdown_waits_for() {
    let repo = Repo::new("v1");
    let mut d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    d.ok(&["deploy", "shop/prod"]);
    d.ok(&["user", "add", "bob"]);
    d.ok(&["access", "grant", "bob", "shop", "owner"]);
    let bob = d.json(&["token", "create", "--user", "bob"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    d.ok(&["access", "require-approval", "shop", "deploy", "production"]);
    slow_build(&repo, "36.5");
    let asked = d.cli_as(&bob, &["deploy", "shop/prod"]);
    assert_eq!(asked.status.code(), Some(3));

    let approved = d.json(&["approve", "1", "--detach"]);
    let id = approved["job"].to_string();
    assert_ne!(id, "null", "{approved}");
    step_running(&d, &id, "build").await;
    eventually("the build's sleep", Duration::from_secs(10), || async {
        (processes(&["sleep", "36.5"]).len() == 1).then_some(())
    })
    .await;

    d.restart();
    gone(&["sleep", "36.5"]).await;
    let j = job(&d, &id);
    assert_eq!(j["state"], "cancelled", "{j}");
    assert_eq!(j["actor"], "bob (approved by admin)", "{j}");
}

/// `--max-builds 1`: four deploys at once run one build at a time; the others wait `queued`
/// with their place in line, the production deploy that came last goes first, and the rest
/// follow in the order they came. Each build blocks in `sleep 41.7` until the test kills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_beyond_the_bound_queue_in_order_with_production_first() {
    const BUILD: [&str; 2] = ["sleep", "41.7"];
    let repo = Repo::new("v1");
    repo.write(
        "turnout.toml",
        &TOML.replace(
            "command = \"echo building; echo yes > built.txt\"",
            "command = \"echo building; sleep 41.7 || true; echo yes > built.txt\"",
        ),
    );
    repo.commit("a build that waits for the test");
    let d = Daemon::start_with_env(&[("TURNOUT_MAX_BUILDS", "1")]);
    d.create(
        "shop",
        repo.path(),
        &[
            ("a", "main", "development"),
            ("b", "main", "development"),
            ("c", "main", "test"),
            ("prod", "main", "production"),
        ],
    );
    let builds = || processes(&BUILD).len();
    let state = |id: &str| {
        let j = job(&d, id);
        (
            j["state"].as_str().unwrap_or_default().to_owned(),
            j["queue_position"].as_u64(),
        )
    };
    let in_line = |id: &str, at: u64| {
        let id = id.to_owned();
        let d = &d;
        async move {
            eventually(
                &format!("job {id} queued at {at}"),
                Duration::from_secs(60),
                || async {
                    let j = job(d, &id);
                    (j["state"] == "queued" && j["queue_position"] == at).then_some(())
                },
            )
            .await
        }
    };

    let a = detach(&d, &["deploy", "shop/a"]);
    step_running(&d, &a, "build").await;
    let b = detach(&d, &["deploy", "shop/b"]);
    in_line(&b, 1).await;
    let c = detach(&d, &["deploy", "shop/c"]);
    in_line(&c, 2).await;
    let prod = detach(&d, &["deploy", "shop/prod"]);
    in_line(&prod, 1).await;
    in_line(&b, 2).await;
    in_line(&c, 3).await;
    assert_eq!(builds(), 1);
    let listed = d.ok(&["jobs", "shop/b"]);
    assert!(listed.contains("queued (2 in line)"), "{listed}");
    let shown = d.ok(&["job", "show", &b]);
    assert!(shown.contains("queued (2 in line)"), "{shown}");

    // Each build that ends hands its slot to the first in line, and only to it.
    for (running, next, rest) in [
        (&a, &prod, vec![(&b, 1), (&c, 2)]),
        (&prod, &b, vec![(&c, 1)]),
        (&b, &c, vec![]),
    ] {
        assert_eq!(builds(), 1, "one build at a time");
        for pid in processes(&BUILD) {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
        }
        assert_eq!(job_ends(&d, running).await["state"], "succeeded");
        step_running(&d, next, "build").await;
        assert_eq!(state(next), ("running".to_owned(), None));
        for (id, at) in rest {
            in_line(id, at).await;
        }
        eventually("the next build", Duration::from_secs(30), || async {
            (builds() == 1).then_some(())
        })
        .await;
    }
    for pid in processes(&BUILD) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }
    assert_eq!(job_ends(&d, &c).await["state"], "succeeded");
    assert_eq!(builds(), 0);
}
