//! What deploys an environment by itself, and the CI hook: a green build deploys that exact
//! commit (never a newer one already pushed) to the environments of its branch that deploy on
//! CI; anything else is refused or skipped, and changes nothing.
use serde_json::{Value, json};

use crate::support::{Daemon, Repo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_green_build_deploys_its_exact_commit_where_the_environment_deploys_on_ci() {
    let repo = Repo::new("green");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[("qa", "main", "qa"), ("dev", "main", "development")],
    );
    let env = d.json(&["env", "show", "shop/qa"]);
    assert_eq!(env["deploy_on"], "manual", "{env}");
    let set = d.json(&["env", "update", "shop/qa", "--deploy-on", "ci"]);
    assert_eq!(set["deploy_on"], "ci", "{set}");
    assert!(
        d.ok(&["env", "show", "shop/qa"])
            .contains("deploys on   ci")
    );

    // Built and green: `tested`. Pushed after it, not yet verified: `untested`.
    repo.write("content.txt", "tested");
    let tested = repo.commit("tested");
    repo.write("content.txt", "untested");
    repo.commit("untested");

    let report = |status: &str, commit: &str| {
        d.json(&[
            "ci", "report", "shop", "--branch", "main", "--commit", commit, "--status", status,
        ])
    };
    let failed = report("failure", &tested);
    assert_eq!(failed["deploys"], json!([]), "{failed}");
    let (status, _) = d.get("qa.shop.localhost", "/").await;
    assert_ne!(status, 200, "a failed build deployed");

    let outcome = report("success", &tested);
    let deploys = outcome["deploys"].as_array().unwrap();
    assert_eq!(deploys.len(), 1, "{outcome}");
    assert_eq!(deploys[0]["env"], "qa");
    let skipped: Vec<&Value> = outcome["skipped"].as_array().unwrap().iter().collect();
    assert!(
        skipped
            .iter()
            .any(|s| s["env"] == "dev" && s["why"].as_str().unwrap().contains("deploys on manual")),
        "{outcome}"
    );
    let job = deploys[0]["job"]["id"].as_i64().unwrap().to_string();
    d.ok(&["job", "watch", &job]);
    let qa = d.json(&["env", "show", "shop/qa"]);
    assert_eq!(
        qa["release"]["commit"],
        tested.as_str(),
        "the exact green commit: {qa}"
    );
    let (status, body) = d.get("qa.shop.localhost", "/").await;
    assert_eq!((status, body.starts_with("tested ")), (200, true), "{body}");
    let (status, _) = d.get("dev.shop.localhost", "/").await;
    assert_ne!(status, 200, "a manual environment deployed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ci_reports_are_refused_and_change_nothing() {
    let repo = Repo::new("x");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    d.ok(&["env", "update", "shop/qa", "--deploy-on", "ci"]);
    let client = reqwest::Client::new();
    let token = d.admin_token();
    let post = |body: Value| {
        let req = client
            .post(format!("{}/api/v1/hooks/ci", d.api))
            .bearer_auth(&token)
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let commit = "0123456789abcdef0123456789abcdef01234567";
    for (body, status, says) in [
        (
            json!({"app": "shop", "branch": "main", "commit": "abc123", "status": "success"}),
            400,
            "40 hexadecimal digits",
        ),
        (
            json!({"app": "shop", "branch": "main", "commit": commit, "status": "greenish"}),
            400,
            "greenish",
        ),
        (
            json!({"app": "shop", "branch": "-x", "commit": commit, "status": "success"}),
            400,
            "branch",
        ),
        (
            json!({"app": "nope", "branch": "main", "commit": commit, "status": "success"}),
            404,
            "nope",
        ),
        (
            json!({"app": "shop", "branch": "main", "commit": commit, "status": "success", "extra": 1}),
            400,
            "extra",
        ),
    ] {
        let (got, text) = post(body.clone()).await;
        assert_eq!(got, status, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
        assert!(text.contains("\"code\""), "a JSON error: {text}");
    }
    // Well formed but no such commit in the repository: the deploy job fails, nothing changes.
    let (got, text) =
        post(json!({"app": "shop", "branch": "main", "commit": commit, "status": "success"})).await;
    assert_eq!(got, 200, "{text}");
    let outcome: Value = serde_json::from_str(&text).unwrap();
    let job = outcome["deploys"][0]["job"]["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let watch = d.cli(&["job", "watch", &job]);
    assert!(!watch.status.success(), "{watch:?}");
    let qa = d.json(&["env", "show", "shop/qa"]);
    assert!(qa["release"].is_null(), "{qa}");
    let err = d.fails(&["env", "update", "shop/qa", "--deploy-on", "sometimes"]);
    assert!(err.contains("manual, push or ci"), "{err}");
}
