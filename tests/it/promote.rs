//! `turnout promote APP/FROM APP/TO`: TO runs FROM's live release, the same commit and build
//! output, copied (no fetch, no build), with TO's own configuration; a promotion the tiers do not
//! allow is refused, listing the allowed ones, and changes nothing.
use serde_json::Value;

use crate::support::{Daemon, Repo, TOML};

/// Each build writes a value of its own into the release, which the app shows (`built=…`), so
/// a rebuild cannot pass for the same build output.
fn repo() -> Repo {
    let repo = Repo::new("promo");
    repo.write(
        "turnout.toml",
        &TOML.replace("echo yes > built.txt", "date +%s%N > built.txt"),
    );
    repo.commit("a build of its own");
    repo
}

fn built(body: &str) -> &str {
    body.split("built=").nth(1).unwrap_or("").trim()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_runs_the_same_build_with_the_target_s_own_configuration() {
    let repo = repo();
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[("qa", "main", "qa"), ("staging", "main", "staging")],
    );
    d.ok(&["deploy", "shop/qa"]);
    let (_, qa_body) = d.get("qa.shop.localhost", "/").await;
    let qa_build = built(&qa_body).to_owned();
    assert!(qa_build.len() > 10, "{qa_body}");
    let qa = d.json(&["env", "show", "shop/qa"]);
    // A newer commit on the branch is not what a promotion takes.
    repo.write("content.txt", "newer");
    repo.commit("newer, not deployed anywhere");

    let job = d.json(&["promote", "shop/qa", "shop/staging", "--detach"]);
    let id = job["id"].as_i64().unwrap().to_string();
    d.ok(&["job", "watch", &id]);
    let job = d.json(&["job", "show", &id]);
    assert_eq!(job["kind"], "promote", "{job}");
    assert_eq!(job["state"], "succeeded", "{job}");
    let steps: Vec<&str> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["copy", "launch", "go-live", "retire"], "{job}");

    let (status, body) = d.get("staging.shop.localhost", "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("promo env=staging tier=staging "),
        "{body}"
    );
    assert_eq!(built(&body), qa_build, "the same build output: {body}");
    let staging = d.json(&["env", "show", "shop/staging"]);
    assert_eq!(staging["release"]["commit"], qa["release"]["commit"]);
    let releases = d.json(&["release", "list", "shop/staging"]);
    assert_eq!(
        releases[0]["git_ref"],
        format!("promoted from shop/qa (release {})", qa["release"]["id"]),
        "{releases}"
    );
    // Its own tree, owned as any of its releases: deploying qa again does not touch it.
    d.ok(&["deploy", "shop/qa"]);
    let (_, again) = d.get("staging.shop.localhost", "/").await;
    assert_eq!(built(&again), qa_build, "{again}");

    // A deploy of staging itself builds anew: the promoted build was not a rebuild.
    d.ok(&["deploy", "shop/staging"]);
    let (_, rebuilt) = d.get("staging.shop.localhost", "/").await;
    assert_ne!(built(&rebuilt), qa_build, "{rebuilt}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_the_tiers_do_not_allow_is_refused_and_changes_nothing() {
    let repo = repo();
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("qa", "main", "qa"),
            ("staging", "main", "staging"),
            ("prod", "main", "production"),
            ("hotfix", "main", "release"),
        ],
    );
    d.ok(&["deploy", "shop/qa"]);
    d.ok(&["deploy", "shop/prod"]);
    let prod_before = d.json(&["release", "list", "shop/prod"]);

    let err = d.fails(&["promote", "shop/qa", "shop/prod"]);
    assert!(
        err.contains("may not be promoted")
            && err.contains("a qa environment promotes to staging")
            && err.contains("shop/staging (staging)"),
        "{err}"
    );
    let err = d.fails(&["promote", "shop/prod", "shop/qa"]);
    assert!(err.contains("promotes to production-copy"), "{err}");
    let err = d.fails(&["promote", "shop/qa", "shop/qa"]);
    assert!(err.contains("to itself"), "{err}");
    let err = d.fails(&["promote", "shop/hotfix", "shop/prod"]);
    assert!(
        err.contains("no live release to promote") && err.contains("turnout deploy shop/hotfix"),
        "{err}"
    );
    let err = d.fails(&["promote", "shop/qa", "blog/staging"]);
    assert!(err.contains("different apps"), "{err}");
    let err = d.fails(&["promote", "shop/nope", "shop/staging"]);
    assert!(err.contains("nope"), "{err}");
    assert_eq!(d.json(&["release", "list", "shop/prod"]), prod_before);
    let jobs: Value = d.json(&["jobs", "shop"]);
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .all(|j| j["kind"] != "promote"),
        "a refused promotion started a job: {jobs}"
    );

    // The hotfix path: a release environment goes straight to production.
    d.ok(&["deploy", "shop/hotfix"]);
    d.ok(&["promote", "shop/hotfix", "shop/prod"]);
    let (status, body) = d.get("prod.shop.localhost", "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("promo env=prod tier=production "),
        "{body}"
    );
}

/// A promotion into a tier whose promotions need a second owner waits for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_promotion_waits_for_a_second_owner() {
    let repo = repo();
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("staging", "main", "staging"),
            ("prod", "main", "production"),
        ],
    );
    d.ok(&["deploy", "shop/staging"]);
    d.ok(&[
        "access",
        "require-approval",
        "shop",
        "promote",
        "production",
        "--expires",
        "1h",
    ]);
    let out = d.cli(&["promote", "shop/staging", "shop/prod"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("needs a second owner's approval"), "{said}");
    let (status, _) = d.get("prod.shop.localhost", "/").await;
    assert_ne!(status, 200, "promoted before the approval");
    let approvals = d.json(&["approvals", "list"]);
    let id = approvals[0]["id"].as_i64().unwrap().to_string();
    assert!(
        approvals[0]["summary"]
            .as_str()
            .unwrap()
            .contains("promote shop/staging to shop/prod"),
        "{approvals}"
    );
    // The admin asked; a second owner approves.
    d.ok(&["user", "add", "olive"]);
    d.ok(&["access", "grant", "olive", "shop", "owner"]);
    let token = d.json(&["token", "create", "--user", "olive"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = d.cli_as(&token, &["approve", &id]);
    assert!(out.status.success(), "{out:?}");
    crate::support::eventually(
        "the approved promotion to go live",
        std::time::Duration::from_secs(30),
        || async {
            let (status, body) = d.get("prod.shop.localhost", "/").await;
            (status == 200).then_some(body)
        },
    )
    .await;
}

/// `pipeline show`: the stages in pipeline order, and how many commits each promotion the
/// tiers allow would bring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_shows_stages_in_order_and_what_each_promotion_brings() {
    let repo = repo();
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("prod", "main", "production"),
            ("staging", "main", "staging"),
            ("qa", "main", "qa"),
            ("dev", "main", "development"),
        ],
    );
    d.ok(&["deploy", "shop/qa"]);
    d.ok(&["promote", "shop/qa", "shop/staging"]);
    for n in ["two", "three"] {
        repo.write("content.txt", n);
        repo.commit(n);
    }
    d.ok(&["deploy", "shop/qa"]);

    let p = d.json(&["pipeline", "show", "shop"]);
    let stages: Vec<&str> = p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tier"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        ["development", "qa", "staging", "production"],
        "{p}"
    );
    let promotion = |from: &str, to: &str| {
        p["promotions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["from"] == from && v["to"] == to)
            .cloned()
            .unwrap_or_else(|| panic!("no {from} -> {to} in {p}"))
    };
    let qa_staging = promotion("qa", "staging");
    assert_eq!(
        (qa_staging["ahead"].as_u64(), qa_staging["behind"].as_u64()),
        (Some(2), Some(0))
    );
    assert!(
        promotion("staging", "prod")["ahead"].is_null(),
        "prod has no release yet"
    );
    assert!(promotion("dev", "qa")["ahead"].is_null());
    assert!(
        p["promotions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["to"] != "dev"),
        "nothing promotes into development: {p}"
    );
    let text = d.ok(&["pipeline", "show", "shop"]);
    assert!(
        text.contains("development (dev) → qa (qa) → staging (staging) → production (prod)"),
        "{text}"
    );
    assert!(
        text.contains("qa → staging: 2 commits to promote"),
        "{text}"
    );
    assert!(
        text.contains("staging → prod: not both deployed yet"),
        "{text}"
    );
}

/// A production copy on production's branch runs every new production release (deploy,
/// promotion, rollback) by itself, the same build; one on another branch does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_copy_follows_every_production_release() {
    let repo = repo();
    repo.branch("other");
    repo.branch("main");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("prod", "main", "production"),
            ("mirror", "main", "production-copy"),
            ("elsewhere", "other", "production-copy"),
        ],
    );
    let follows = |what: &'static str| {
        let d = &d;
        async move {
            let (_, prod) = d.get("prod.shop.localhost", "/").await;
            let want = built(&prod).to_owned();
            crate::support::eventually(what, std::time::Duration::from_secs(30), || {
                let want = want.clone();
                async move {
                    let (status, body) = d.get("mirror.shop.localhost", "/").await;
                    (status == 200 && built(&body) == want).then_some(body)
                }
            })
            .await
        }
    };
    d.ok(&["deploy", "shop/prod"]);
    let body = follows("the copy to run production's first release").await;
    assert!(body.contains("env=mirror tier=production-copy"), "{body}");
    let releases = d.json(&["release", "list", "shop/mirror"]);
    assert!(
        releases[0]["git_ref"]
            .as_str()
            .unwrap()
            .starts_with("promoted from shop/prod"),
        "{releases}"
    );
    repo.write("content.txt", "second");
    repo.commit("second");
    d.ok(&["deploy", "shop/prod"]);
    let body = follows("the copy to run the second release").await;
    assert!(body.starts_with("second env=mirror"), "{body}");
    d.ok(&["rollback", "shop/prod"]);
    let body = follows("the copy to follow the rollback").await;
    assert!(body.starts_with("promo env=mirror"), "{body}");
    let (status, _) = d.get("elsewhere.shop.localhost", "/").await;
    assert_ne!(status, 200, "a copy on another branch followed production");
    let jobs = d.json(&["jobs", "shop/mirror"]);
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .all(|j| j["kind"] == "promote"),
        "{jobs}"
    );
}

/// The hotfix flow: while QA and staging hold the next version, a fix on the release branch is
/// deployed to the release environment and promoted straight to production (whose copy
/// follows); QA and staging keep running what they ran, and the next cut still brings the
/// newer work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hotfix_goes_from_the_release_branch_to_production_while_qa_and_staging_hold_other_work()
{
    let repo = repo();
    repo.write("content.txt", "v1");
    let v1 = repo.commit("version 1");
    repo.branch("release/1");
    repo.branch("main");
    repo.write("content.txt", "v2-in-progress");
    let v2 = repo.commit("version 2, not released");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("qa", "main", "qa"),
            ("staging", "main", "staging"),
            ("prod", "main", "production"),
            ("mirror", "main", "production-copy"),
            ("release", "release/1", "release"),
        ],
    );
    // Version 1 is live (from the release branch); version 2 is in QA and staging.
    d.ok(&["deploy", "shop/release"]);
    d.ok(&["promote", "shop/release", "shop/prod"]);
    d.ok(&["deploy", "shop/qa"]);
    d.ok(&["promote", "shop/qa", "shop/staging"]);
    let commit = |env: &str| {
        d.json(&["env", "show", &format!("shop/{env}")])["release"]["commit"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(commit("prod"), v1);
    assert_eq!(commit("staging"), v2);
    let (_, staging_before) = d.get("staging.shop.localhost", "/").await;

    // The fix lands on the release branch only.
    repo.branch("release/1");
    repo.write("content.txt", "v1-hotfix");
    let fix = repo.commit("hotfix");
    repo.branch("main");
    d.ok(&["deploy", "shop/release"]);
    let (_, fixed) = d.get("release.shop.localhost", "/").await;
    d.ok(&["promote", "shop/release", "shop/prod"]);
    assert_eq!(commit("prod"), fix);
    let (status, body) = d.get("prod.shop.localhost", "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("v1-hotfix env=prod"), "{body}");
    assert_eq!(built(&body), built(&fixed), "the release's own build");
    crate::support::eventually(
        "the production copy to run the hotfix",
        std::time::Duration::from_secs(30),
        || async {
            let (status, body) = d.get("mirror.shop.localhost", "/").await;
            (status == 200 && body.starts_with("v1-hotfix env=mirror")).then_some(())
        },
    )
    .await;

    // QA and staging were not touched by any of it.
    assert_eq!(commit("qa"), v2);
    assert_eq!(commit("staging"), v2);
    let (_, staging_after) = d.get("staging.shop.localhost", "/").await;
    assert_eq!(staging_after, staging_before);
    // The pipeline shows production and staging apart: staging brings version 2.
    let pipeline = d.json(&["pipeline", "show", "shop"]);
    let to_prod = pipeline["promotions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["from"] == "staging" && p["to"] == "prod")
        .unwrap_or_else(|| panic!("{pipeline}"));
    assert!(to_prod["ahead"].as_u64().unwrap() >= 1, "{pipeline}");
    // And the next cut still brings the newer work.
    d.ok(&["promote", "shop/staging", "shop/prod"]);
    assert_eq!(commit("prod"), v2);
}
