//! Deploys: branches into environments, zero-downtime redeploys, failures that change nothing.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{Conn, Daemon, Repo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_branches_serve_their_own_content_in_two_environments() {
    let repo = Repo::new("main says hi");
    repo.branch("staging");
    repo.write("content.txt", "staging says hi");
    repo.commit("staging content");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("production", "main", "production"),
            ("staging", "staging", "staging"),
        ],
    );

    let out = d.ok(&["deploy", "shop/production"]);
    for step in [
        "[1/7] fetch",
        "[2/7] checkout",
        "[3/7] build",
        "| building",
        "[4/7] migrate",
        "[5/7] launch",
        "[6/7] go-live",
        "[7/7] retire",
        "live: shop/production",
    ] {
        assert!(out.contains(step), "deploy output lacks {step:?}:\n{out}");
    }
    d.ok(&["deploy", "shop/staging"]);

    let (status, body) = d.get("production.shop.localhost", "/").await;
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            "main says hi env=production tier=production built=yes\n"
        )
    );
    let (status, body) = d.get("staging.shop.localhost", "/").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "staging says hi env=staging tier=staging built=yes\n")
    );
    // The Host header may carry the port and any case.
    let (_, body) = d
        .get(&format!("STAGING.shop.localhost:{}", d.http.port()), "/")
        .await;
    assert!(body.starts_with("staging says hi"), "{body}");

    let envs = d.json(&["env", "list", "shop"]);
    let envs = envs.as_array().unwrap();
    assert_eq!(envs.len(), 2);
    for e in envs {
        assert_eq!(e["status"], "live", "{e}");
        assert_eq!(e["instance"]["state"], "running", "{e}");
        assert_eq!(
            e["url"],
            format!(
                "http://{}.shop.localhost:{}",
                e["name"].as_str().unwrap(),
                d.http.port()
            )
        );
    }
    let human = d.ok(&["env", "list"]);
    assert!(
        human.contains("production") && human.contains("live"),
        "{human}"
    );

    let logs = d.ok(&["logs", "shop/staging"]);
    assert!(logs.contains("fixture listening on"), "{logs}");
    assert!(logs.contains("request \"GET / HTTP/1.1\" 200"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploys_under_keep_alive_load_fail_no_request() {
    let repo = Repo::new("v0");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("staging", "main", "staging")]);
    d.ok(&["deploy", "shop/staging"]);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, http) = (stop.clone(), ok.clone(), d.http);
        clients.push(tokio::spawn(async move {
            // One connection per client for its whole life: every request is keep-alive.
            let mut conn = Conn::open(http).await;
            let mut failures = Vec::new();
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match conn.get("staging.shop.localhost", "/").await {
                    Ok((200, body)) if body.starts_with('v') && body.ends_with("built=yes\n") => {
                        let version = body.split(' ').next().unwrap().to_owned();
                        if seen.last() != Some(&version) {
                            seen.push(version);
                        }
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures.push(format!("{other:?}")),
                }
            }
            (failures, seen)
        }));
    }
    for v in 1..=3 {
        repo.write("content.txt", &format!("v{v}"));
        repo.commit(&format!("v{v}"));
        let before = ok.load(Ordering::Relaxed);
        d.ok(&["deploy", "shop/staging"]);
        // Once deploy returns, every new request goes to the new release.
        let (_, body) = d.get("staging.shop.localhost", "/").await;
        assert!(
            body.starts_with(&format!("v{v} ")),
            "after deploy {v}: {body}"
        );
        crate::support::eventually(
            "requests during the deploy",
            Duration::from_secs(10),
            || {
                let n = ok.load(Ordering::Relaxed);
                async move { (n > before + 20).then_some(()) }
            },
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total_failures = Vec::new();
    for c in clients {
        let (failures, seen) = c.await.unwrap();
        total_failures.extend(failures);
        // Each keep-alive client moved forward through the versions, never back.
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted, "a client saw versions out of order");
        assert_eq!(seen.last().map(String::as_str), Some("v3"), "{seen:?}");
    }
    let total = ok.load(Ordering::Relaxed);
    println!(
        "keep-alive requests during 3 redeploys: {total} ok, {} failed",
        total_failures.len()
    );
    assert!(
        total_failures.is_empty(),
        "failed requests: {total_failures:?}"
    );
    let releases = d.json(&["release", "list", "shop/staging"]);
    let statuses: Vec<_> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["live", "superseded", "superseded", "superseded"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_or_health_check_leaves_the_old_release_serving() {
    let repo = Repo::new("good");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("staging", "main", "staging")]);
    d.ok(&["deploy", "shop/staging"]);
    let good = d.json(&["env", "show", "shop/staging"]);

    // A build that fails.
    repo.write(
        "turnout.toml",
        &crate::support::TOML.replace("echo yes > built.txt", "echo compiling widgets; exit 3"),
    );
    repo.write("content.txt", "broken build");
    repo.commit("break the build");
    let err = d.fails(&["deploy", "shop/staging"]);
    assert!(err.contains("failed at build"), "{err}");
    assert!(
        err.contains("compiling widgets"),
        "the build log's tail is shown: {err}"
    );
    assert!(err.contains('3'), "the exit status is shown: {err}");
    let (status, body) = d.get("staging.shop.localhost", "/").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "good env=staging tier=staging built=yes\n")
    );

    // A release that never becomes healthy.
    repo.write(
        "turnout.toml",
        // Long enough for python to start on a loaded machine, so the last probe sees the 503.
        &crate::support::TOML.replace("timeout = \"20s\"", "timeout = \"5s\""),
    );
    repo.write("health-status.txt", "503");
    repo.write("content.txt", "never healthy");
    repo.commit("unhealthy");
    let err = d.fails(&["deploy", "shop/staging"]);
    assert!(err.contains("failed at launch"), "{err}");
    assert!(
        err.contains("503"),
        "the last probe's answer is named: {err}"
    );
    assert!(
        err.contains("GET /healthz"),
        "the instance log tail is shown: {err}"
    );
    let (status, body) = d.get("staging.shop.localhost", "/").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "good env=staging tier=staging built=yes\n")
    );

    // A release that exits at once.
    repo.remove("health-status.txt");
    repo.write(
        "turnout.toml",
        &crate::support::TOML.replace("exec python3 app.py", "echo cannot start; exit 7"),
    );
    repo.commit("crashing");
    let err = d.fails(&["deploy", "shop/staging"]);
    assert!(
        err.contains("failed at launch") && err.contains('7'),
        "{err}"
    );
    assert!(err.contains("cannot start"), "{err}");

    let now = d.json(&["env", "show", "shop/staging"]);
    assert_eq!(now["release"]["id"], good["release"]["id"]);
    assert_eq!(
        now["instance"]["pid"], good["instance"]["pid"],
        "the old instance was never touched"
    );
    let releases = d.json(&["release", "list", "shop/staging"]);
    let statuses: Vec<_> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["failed", "failed", "failed", "live"]);
    assert!(
        releases[2]["error"].as_str().unwrap().contains("build"),
        "{releases}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploying_the_same_commit_reuses_the_build_and_refs_pick_commits() {
    let repo = Repo::new("first");
    let first = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    repo.git(&["tag", "v1"]);
    repo.write("content.txt", "second");
    repo.commit("second");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("dev", "main", "development")]);
    d.ok(&["deploy", "shop/dev"]);
    let out = d.ok(&["deploy", "shop/dev"]);
    assert!(out.contains("reusing the release directory"), "{out}");
    assert!(out.contains("skipped"), "{out}");
    let releases = d.json(&["release", "list", "shop/dev"]);
    assert_eq!(releases[0]["reused_build"], true);
    assert_eq!(releases[1]["reused_build"], false);

    // --ref takes a tag or a commit instead of the branch.
    d.ok(&["deploy", "shop/dev", "--ref", "v1"]);
    let (_, body) = d.get("dev.shop.localhost", "/").await;
    assert!(body.starts_with("first "), "{body}");
    let env = d.json(&["env", "show", "shop/dev"]);
    assert_eq!(env["release"]["commit"], first);
    assert_eq!(env["release"]["git_ref"], "v1");
    d.ok(&["deploy", "shop/dev", "--ref", &first[..10]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_procfile_web_line_is_enough() {
    let repo = Repo::new("from procfile");
    repo.remove("turnout.toml");
    repo.write("Procfile", "web: exec python3 app.py\n");
    repo.commit("procfile only");
    let d = Daemon::start();
    d.create("plain", repo.path(), &[("dev", "main", "development")]);
    d.ok(&["deploy", "plain/dev"]);
    let (status, body) = d.get("dev.plain.localhost", "/").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "from procfile env=dev tier=development built=no\n")
    );
}
