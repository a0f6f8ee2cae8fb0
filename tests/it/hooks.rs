//! GitHub and GitLab webhooks, as those services send them (payloads under `fixtures/`, with
//! their documented field names): a signed delivery of a green build deploys that exact commit
//! (never a newer one already pushed), a push deploys the pushed commit where the environment
//! deploys on push; an unsigned, badly signed, replayed or malformed delivery, or one signed
//! with another app's secret, is refused and changes nothing.
use std::process::{Command, Stdio};

use ring::hmac;
use serde_json::Value;
use turnout_model::format_timestamp;

use crate::support::{BIN, Daemon, Repo};

const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const OTHER_SECRET: &str = "the-other-app-s-own-secret-1234";
const GITLAB_SECRET: &str = "glpat-like-webhook-token-5f1e";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A fixture with its placeholders (`HEAD_SHA`, `CONCLUSION`, …) filled in; the event's time
/// (`UPDATED_AT`, `PUSHED_AT`, `FINISHED_AT`) is now unless given.
fn fixture(name: &str, subs: &[(&str, &str)]) -> Vec<u8> {
    let path = format!("{}/tests/it/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (k, v) in subs {
        text = text.replace(k, v);
    }
    let now = now();
    let gitlab_time = format_timestamp(now).replace('T', " ").replace('Z', " UTC");
    text.replace("UPDATED_AT", &format_timestamp(now))
        .replace("PUSHED_AT", &now.to_string())
        .replace("FINISHED_AT", &gitlab_time)
        .into_bytes()
}

fn sign(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// `turnout hooks set APP PROVIDER --secret-stdin`, the secret written to its standard input
/// (never an argument); the CLI's output.
fn set_secret(d: &Daemon, app: &str, provider: &str, secret: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(["--api", &d.api, "--home"])
        .arg(d.home.path())
        .args(["--json", "hooks", "set", app, provider, "--secret-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        format!("{secret}\n").as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// POST a delivery with exactly these headers; (status, body).
async fn deliver(d: &Daemon, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", d.api))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// A GitHub delivery signed with `secret`.
async fn github(
    d: &Daemon,
    app: &str,
    event: &str,
    delivery: &str,
    secret: &str,
    body: &[u8],
) -> (u16, String) {
    let sig = sign(secret, body);
    let headers = [
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", delivery),
        ("X-Hub-Signature-256", sig.as_str()),
        ("User-Agent", "GitHub-Hookshot/044aadd"),
    ];
    deliver(d, &format!("/api/v1/hooks/github/{app}"), &headers, body).await
}

/// A GitLab delivery carrying `token`.
async fn gitlab(d: &Daemon, event: &str, uuid: &str, token: &str, body: &[u8]) -> (u16, String) {
    let headers = [
        ("X-Gitlab-Event", event),
        ("X-Gitlab-Event-UUID", uuid),
        ("X-Gitlab-Token", token),
        ("User-Agent", "GitLab/17.6.0"),
    ];
    deliver(d, "/api/v1/hooks/gitlab/shop", &headers, body).await
}

/// Everything a refused delivery must leave alone: the app's jobs and each environment's
/// release.
fn state(d: &Daemon) -> (usize, Value, Value) {
    let jobs = d.json(&["jobs", "shop", "--all"]);
    let release = |env: &str| d.json(&["env", "show", &format!("shop/{env}")])["release"].clone();
    (
        jobs.as_array().unwrap().len(),
        release("qa"),
        release("dev"),
    )
}

#[track_caller]
fn assert_refused(got: &(u16, String), status: u16, says: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert!(got.1.contains(says), "expected {says:?} in {}", got.1);
    assert!(got.1.contains("\"code\""), "a JSON error: {}", got.1);
}

/// The job the outcome started for `env`, watched to its end (which must be success).
fn watch_deploy(d: &Daemon, outcome: &str, env: &str) {
    let outcome: Value = serde_json::from_str(outcome).unwrap();
    let deploys = outcome["deploys"].as_array().unwrap();
    assert_eq!(deploys.len(), 1, "{outcome}");
    assert_eq!(deploys[0]["env"], env, "{outcome}");
    let job = deploys[0]["job"]["id"].as_i64().unwrap().to_string();
    d.ok(&["job", "watch", &job]);
}

fn live_commit(d: &Daemon, env: &str) -> Value {
    d.json(&["env", "show", &format!("shop/{env}")])["release"]["commit"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_github_deliveries_deploy_the_exact_commit_and_nothing_else_gets_in() {
    let repo = Repo::new("first");
    let d = Daemon::start_with_env(&[("OTHER_HOOK_SECRET", OTHER_SECRET)]);
    d.create(
        "shop",
        repo.path(),
        &[("qa", "main", "qa"), ("dev", "main", "development")],
    );
    d.create("other", repo.path(), &[("qa", "main", "qa")]);
    d.ok(&["env", "update", "shop/qa", "--deploy-on", "ci"]);
    d.ok(&["env", "update", "shop/dev", "--deploy-on", "push"]);
    d.ok(&["env", "update", "other/qa", "--deploy-on", "ci"]);

    // The secret goes in on standard input and never comes back out.
    let set = set_secret(&d, "shop", "github", GITHUB_SECRET);
    assert!(set.status.success(), "{set:?}");
    let set_out = String::from_utf8_lossy(&set.stdout).to_string();
    assert!(!set_out.contains(GITHUB_SECRET), "{set_out}");
    d.ok(&[
        "hooks",
        "set",
        "other",
        "github",
        "--secret-env",
        "OTHER_HOOK_SECRET",
    ]);
    let shown = d.json(&["hooks", "show", "shop"]);
    let url = format!("{}/api/v1/hooks/github/shop", d.api);
    assert_eq!(shown[0]["provider"], "github", "{shown}");
    assert_eq!(shown[0]["url"], url.as_str(), "{shown}");
    assert_eq!(shown[0]["acts_as"], "admin", "{shown}");
    let table = d.ok(&["hooks", "show", "shop"]);
    assert!(table.contains(&url) && table.contains("stored"), "{table}");
    let other = d.ok(&["hooks", "show", "other"]);
    assert!(other.contains("$OTHER_HOOK_SECRET"), "{other}");
    for out in [
        shown.to_string(),
        table,
        other,
        d.json(&["audit"]).to_string(),
    ] {
        assert!(
            !out.contains(GITHUB_SECRET) && !out.contains(OTHER_SECRET),
            "a secret shown: {out}"
        );
    }
    // Bad secrets are refused without being quoted.
    let short = set_secret(&d, "shop", "github", "hunter2");
    let err = String::from_utf8_lossy(&short.stderr);
    assert!(
        !short.status.success() && err.contains("16 to 1024 bytes"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let err = d.fails(&[
        "hooks",
        "set",
        "shop",
        "github",
        "--secret-env",
        "my secret!",
    ]);
    assert!(
        err.contains("invalid --secret-env") && !err.contains("my secret!"),
        "{err}"
    );
    let err = d.fails(&["hooks", "set", "shop", "bitbucket", "--secret-env", "X"]);
    assert!(err.contains("github or gitlab"), "{err}");

    // Green and built: `tested`. Pushed after it, not yet verified: `untested`.
    repo.write("content.txt", "tested");
    let tested = repo.commit("tested");
    repo.write("content.txt", "untested");
    let untested = repo.commit("untested");

    let run = |sha: &str, conclusion: &str| {
        fixture(
            "github_workflow_run.json",
            &[
                ("HEAD_SHA", sha),
                ("CONCLUSION", conclusion),
                ("ACTION", "completed"),
            ],
        )
    };
    let green = run(&tested, "success");
    let path = "/api/v1/hooks/github/shop";
    let before = state(&d);

    // Unsigned, badly signed, signed with another app's secret or for another app.
    let unsigned = [
        ("X-GitHub-Event", "workflow_run"),
        ("X-GitHub-Delivery", "d-unsigned"),
    ];
    assert_refused(
        &deliver(&d, path, &unsigned, &green).await,
        401,
        "no X-Hub-Signature-256",
    );
    let forged = sign("not the secret at all, sorry", &green);
    let mut headers = unsigned.to_vec();
    headers.push(("X-Hub-Signature-256", forged.as_str()));
    assert_refused(
        &deliver(&d, path, &headers, &green).await,
        401,
        "does not match",
    );
    // The right secret over another body (a changed commit) does not verify either.
    let tampered = run(&untested, "success");
    let sig = sign(GITHUB_SECRET, &green);
    let mut headers = unsigned.to_vec();
    headers.push(("X-Hub-Signature-256", sig.as_str()));
    assert_refused(
        &deliver(&d, path, &headers, &tampered).await,
        401,
        "does not match",
    );
    let sig = "sha1=0123456789abcdef0123456789abcdef01234567";
    let mut headers = unsigned.to_vec();
    headers.push(("X-Hub-Signature-256", sig));
    assert_refused(
        &deliver(&d, path, &headers, &green).await,
        401,
        "64 hexadecimal",
    );
    let attacker = github(&d, "shop", "workflow_run", "d-attack", OTHER_SECRET, &green).await;
    assert_refused(&attacker, 401, "does not match");
    // An app without a hook and an unknown app answer alike.
    let d1 = github(&d, "nope", "workflow_run", "d-1", GITHUB_SECRET, &green).await;
    assert_refused(&d1, 401, "no such app takes GitHub webhooks");

    // Signed, but malformed: no delivery id, bad JSON, missing fields, a short commit.
    let sig = sign(GITHUB_SECRET, &green);
    let no_id = [
        ("X-GitHub-Event", "workflow_run"),
        ("X-Hub-Signature-256", sig.as_str()),
    ];
    assert_refused(
        &deliver(&d, path, &no_id, &green).await,
        400,
        "X-GitHub-Delivery",
    );
    let cases: [(&[u8], &str); 4] = [
        (b"{\"action\": \"completed\", ", "malformed 'workflow_run'"),
        (
            b"{\"action\": \"completed\"}",
            "missing field `workflow_run`",
        ),
        (&run("abc123", "success"), "40 hexadecimal digits"),
        (
            &fixture("github_push.json", &[("HEAD_SHA", &tested)]),
            "malformed",
        ),
    ];
    for (i, (body, says)) in cases.iter().enumerate() {
        let id = format!("d-bad-{i}");
        let got = github(&d, "shop", "workflow_run", &id, GITHUB_SECRET, body).await;
        assert_refused(&got, 400, says);
    }
    // Signed, but older than the deliveries Turnout remembers: it could be a forgotten replay.
    let month_ago = format_timestamp(now() - 30 * 86_400);
    let stale = fixture(
        "github_workflow_run.json",
        &[
            ("HEAD_SHA", &tested),
            ("CONCLUSION", "success"),
            ("ACTION", "completed"),
            ("UPDATED_AT", &month_ago),
        ],
    );
    let got = github(&d, "shop", "workflow_run", "d-stale", GITHUB_SECRET, &stale).await;
    assert_refused(&got, 400, "stale delivery");
    // Oversized: refused before anything is read.
    let huge = vec![b' '; 6 * 1024 * 1024];
    let got = github(&d, "shop", "workflow_run", "d-huge", GITHUB_SECRET, &huge).await;
    assert_refused(&got, 413, "at most 5 MiB");

    // Verified, but nothing to deploy: a failed run, a requested suite, a ping, another event.
    let failed = run(&tested, "failure");
    let got = github(
        &d,
        "shop",
        "workflow_run",
        "d-failed",
        GITHUB_SECRET,
        &failed,
    )
    .await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert!(got.1.contains("'failure', not success"), "{}", got.1);
    let requested = fixture(
        "github_check_suite.json",
        &[
            ("HEAD_SHA", &tested),
            ("\"CONCLUSION\"", "null"),
            ("ACTION", "requested"),
        ],
    );
    let got = github(
        &d,
        "shop",
        "check_suite",
        "d-req",
        GITHUB_SECRET,
        &requested,
    )
    .await;
    assert!(got.0 == 200 && got.1.contains("ignored"), "{}", got.1);
    let ping = fixture("github_ping.json", &[]);
    let got = github(&d, "shop", "ping", "d-ping", GITHUB_SECRET, &ping).await;
    assert!(got.0 == 200 && got.1.contains("ping"), "{}", got.1);
    let got = github(&d, "shop", "issues", "d-issue", GITHUB_SECRET, b"{}").await;
    assert!(got.0 == 200 && got.1.contains("'issues'"), "{}", got.1);
    assert_eq!(
        state(&d),
        before,
        "a refused or ignored delivery changed something"
    );

    // The green run of `tested` deploys `tested` to qa, although `untested` is newer.
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let got = github(&d, "shop", "workflow_run", delivery, GITHUB_SECRET, &green).await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert!(
        got.1.contains("deploys on push, not on CI"),
        "dev is skipped: {}",
        got.1
    );
    watch_deploy(&d, &got.1, "qa");
    assert_eq!(live_commit(&d, "qa"), tested.as_str());
    let (status, body) = d.get("qa.shop.localhost", "/").await;
    assert_eq!((status, body.starts_with("tested ")), (200, true), "{body}");
    assert!(live_commit(&d, "dev").is_null(), "dev deploys on push only");

    // Replays change nothing: the same delivery, and the same signed body under a new id.
    let after = state(&d);
    let got = github(&d, "shop", "workflow_run", delivery, GITHUB_SECRET, &green).await;
    assert_refused(&got, 409, "replayed GitHub delivery");
    let got = github(
        &d,
        "shop",
        "workflow_run",
        "a-new-id",
        GITHUB_SECRET,
        &green,
    )
    .await;
    assert_refused(&got, 409, "this exact body");
    assert_eq!(state(&d), after, "a replay changed something");

    // A push deploys the pushed commit where the environment deploys on push.
    let push = fixture(
        "github_push.json",
        &[("HEAD_SHA", &untested), ("DELETED", "false")],
    );
    let got = github(&d, "shop", "push", "d-push", GITHUB_SECRET, &push).await;
    assert_eq!(got.0, 200, "{}", got.1);
    watch_deploy(&d, &got.1, "dev");
    assert_eq!(live_commit(&d, "dev"), untested.as_str());
    assert_eq!(live_commit(&d, "qa"), tested.as_str(), "qa waits for CI");

    // A green check suite of `untested` now takes qa there.
    let suite = fixture(
        "github_check_suite.json",
        &[
            ("HEAD_SHA", &untested),
            ("CONCLUSION", "success"),
            ("ACTION", "completed"),
        ],
    );
    let got = github(&d, "shop", "check_suite", "d-suite", GITHUB_SECRET, &suite).await;
    assert_eq!(got.0, 200, "{}", got.1);
    watch_deploy(&d, &got.1, "qa");
    assert_eq!(live_commit(&d, "qa"), untested.as_str());

    // The other app's hook reads its secret from the daemon's environment.
    let got = github(&d, "other", "workflow_run", "d-o", OTHER_SECRET, &green).await;
    assert_eq!(got.0, 200, "{}", got.1);
    watch_deploy(&d, &got.1, "qa");
    let other_qa = d.json(&["env", "show", "other/qa"]);
    assert_eq!(other_qa["release"]["commit"], tested.as_str(), "{other_qa}");

    // Accepted deliveries are audited, as the user who set the secret; refused ones are not.
    let audit = d.json(&["audit", "--app", "shop"]);
    let accepted: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "hook.accept")
        .collect();
    assert_eq!(accepted.len(), 3, "{audit}");
    assert!(accepted.iter().all(|e| e["actor"] == "admin"), "{audit}");
    assert!(
        accepted
            .iter()
            .any(|e| e["from"].as_str().unwrap().contains(delivery)
                && e["to"].as_str().unwrap().contains(&tested)),
        "{audit}"
    );
    let log = std::fs::read_to_string(d.cwd.path().join("serve.log")).unwrap_or_default();
    assert!(
        log.contains("webhook delivery refused"),
        "refusals are logged"
    );
    assert!(!log.contains(GITHUB_SECRET) && !log.contains(OTHER_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_deliveries_need_the_token_and_act_with_the_roles_of_who_set_it() {
    let repo = Repo::new("first");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[("qa", "main", "qa"), ("dev", "main", "development")],
    );
    d.ok(&["env", "update", "shop/qa", "--deploy-on", "ci"]);
    d.ok(&["env", "update", "shop/dev", "--deploy-on", "push"]);
    // Olivia owns the app and sets the hook; it deploys as her.
    d.ok(&["user", "add", "olivia"]);
    d.ok(&["access", "grant", "olivia", "shop", "owner"]);
    d.ok(&["user", "add", "dev"]);
    d.ok(&["access", "grant", "dev", "shop", "maintainer"]);
    let token = |user: &str| {
        d.json(&["token", "create", "--user", user])["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (olivia, maintainer) = (token("olivia"), token("dev"));
    let out = d.cli_as(
        &maintainer,
        &["hooks", "set", "shop", "gitlab", "--secret-env", "HOME"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("forbidden"), "{err}");
    let mut child = Command::new(BIN)
        .args([
            "--api",
            &d.api,
            "hooks",
            "set",
            "shop",
            "gitlab",
            "--secret-stdin",
        ])
        .env("TURNOUT_TOKEN", &olivia)
        .env_remove("TURNOUT_HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), GITLAB_SECRET.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let shown = d.json(&["hooks", "show", "shop"]);
    assert_eq!(shown[0]["acts_as"], "olivia", "{shown}");
    assert!(
        shown[0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/api/v1/hooks/gitlab/shop")
    );

    repo.write("content.txt", "tested");
    let tested = repo.commit("tested");
    repo.write("content.txt", "untested");
    let untested = repo.commit("untested");
    let pipeline = |status: &str| {
        fixture(
            "gitlab_pipeline.json",
            &[("HEAD_SHA", tested.as_str()), ("STATUS", status)],
        )
    };
    let green = pipeline("success");
    let before = state(&d);
    let path = "/api/v1/hooks/gitlab/shop";
    let no_token = [
        ("X-Gitlab-Event", "Pipeline Hook"),
        ("X-Gitlab-Event-UUID", "u-0"),
    ];
    assert_refused(
        &deliver(&d, path, &no_token, &green).await,
        401,
        "no X-Gitlab-Token",
    );
    let wrong = gitlab(
        &d,
        "Pipeline Hook",
        "u-1",
        "glpat-like-webhook-token-5f1f",
        &green,
    )
    .await;
    assert_refused(&wrong, 401, "does not match");
    assert!(!wrong.1.contains(GITLAB_SECRET), "{}", wrong.1);
    let no_uuid = [
        ("X-Gitlab-Event", "Pipeline Hook"),
        ("X-Gitlab-Token", GITLAB_SECRET),
    ];
    assert_refused(
        &deliver(&d, path, &no_uuid, &green).await,
        400,
        "X-Gitlab-Event-UUID",
    );
    let got = gitlab(&d, "Pipeline Hook", "u-2", GITLAB_SECRET, b"[1, 2").await;
    assert_refused(&got, 400, "malformed 'Pipeline Hook'");
    let got = gitlab(
        &d,
        "Pipeline Hook",
        "u-3",
        GITLAB_SECRET,
        b"{\"object_attributes\": {}}",
    )
    .await;
    assert_refused(&got, 400, "missing field");
    let failed = pipeline("failed");
    let got = gitlab(&d, "Pipeline Hook", "u-4", GITLAB_SECRET, &failed).await;
    assert!(
        got.0 == 200 && got.1.contains("'failed', not success"),
        "{}",
        got.1
    );
    // The GitHub route of the same app takes nothing: no GitHub secret is set.
    let sig = sign(GITLAB_SECRET, &green);
    let headers = [
        ("X-GitHub-Event", "workflow_run"),
        ("X-GitHub-Delivery", "g-1"),
        ("X-Hub-Signature-256", sig.as_str()),
    ];
    let got = deliver(&d, "/api/v1/hooks/github/shop", &headers, &green).await;
    assert_refused(&got, 401, "no such app takes GitHub webhooks");
    assert_eq!(
        state(&d),
        before,
        "a refused or ignored delivery changed something"
    );

    // The green pipeline of `tested` deploys `tested`, as olivia.
    let uuid = "aeb9d6a6-0bfd-4d44-ba46-1fa5c2b6e1b4";
    let got = gitlab(&d, "Pipeline Hook", uuid, GITLAB_SECRET, &green).await;
    assert_eq!(got.0, 200, "{}", got.1);
    watch_deploy(&d, &got.1, "qa");
    assert_eq!(live_commit(&d, "qa"), tested.as_str());
    let jobs = d.json(&["jobs", "shop/qa"]);
    assert_eq!(jobs[0]["actor"], "olivia", "{jobs}");
    let after = state(&d);
    let got = gitlab(&d, "Pipeline Hook", uuid, GITLAB_SECRET, &green).await;
    assert_refused(&got, 409, "replayed GitLab delivery");
    assert_eq!(state(&d), after, "a replay changed something");

    // A push deploys the pushed commit to dev.
    let push = fixture("gitlab_push.json", &[("HEAD_SHA", untested.as_str())]);
    let got = gitlab(&d, "Push Hook", "u-push", GITLAB_SECRET, &push).await;
    assert_eq!(got.0, 200, "{}", got.1);
    watch_deploy(&d, &got.1, "dev");
    assert_eq!(live_commit(&d, "dev"), untested.as_str());

    // Approval rules apply: the QA deploy the hook asks for waits for a second owner, and
    // olivia, whose hook asked, cannot approve it herself.
    d.ok(&[
        "access",
        "require-approval",
        "shop",
        "deploy",
        "qa",
        "--expires",
        "1h",
    ]);
    let newer = fixture(
        "gitlab_pipeline.json",
        &[("HEAD_SHA", untested.as_str()), ("STATUS", "success")],
    );
    let got = gitlab(&d, "Pipeline Hook", "u-approve", GITLAB_SECRET, &newer).await;
    assert_eq!(got.0, 200, "{}", got.1);
    let outcome: Value = serde_json::from_str(&got.1).unwrap();
    assert_eq!(outcome["deploys"], serde_json::json!([]), "{outcome}");
    let waits = outcome["skipped"].as_array().unwrap().iter().any(|s| {
        s["env"] == "qa"
            && s["why"]
                .as_str()
                .unwrap()
                .contains("needs a second owner's approval")
    });
    assert!(waits, "{outcome}");
    let pending = d.json(&["approvals", "list"]);
    let id = pending[0]["id"].as_i64().unwrap().to_string();
    assert_eq!(pending[0]["requested_by"], "olivia", "{pending}");
    let own = d.cli_as(&olivia, &["approve", &id]);
    let err = String::from_utf8_lossy(&own.stderr);
    assert!(
        !own.status.success() && err.contains("cannot approve"),
        "{err}"
    );
    assert_eq!(live_commit(&d, "qa"), tested.as_str());
    d.ok(&["approve", &id]);
    assert_eq!(live_commit(&d, "qa"), untested.as_str());

    // With olivia's role gone, her hook deploys nothing (the delivery itself verifies).
    d.ok(&["access", "revoke", "olivia", "shop"]);
    let after = state(&d);
    let push = fixture("gitlab_push.json", &[("HEAD_SHA", tested.as_str())]);
    let got = gitlab(&d, "Push Hook", "u-push-2", GITLAB_SECRET, &push).await;
    assert_refused(&got, 403, "olivia has no role");
    assert_eq!(state(&d), after, "a hook outlived its owner's role");
}

/// A branch pushed to GitHub goes the way a `git push` to Turnout goes: with branch
/// environments on, its first push creates `test-<branch>` and deploys the pushed commit there,
/// and the push that deletes the branch deletes that environment (and only that one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_push_of_a_new_branch_makes_its_environment_and_the_deletion_removes_it() {
    let repo = Repo::new("main-work");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    d.ok(&["app", "update", "shop", "--branch-envs", "on"]);
    let set = set_secret(&d, "shop", "github", GITHUB_SECRET);
    assert!(set.status.success(), "{set:?}");
    repo.branch("feature/Login");
    repo.write("content.txt", "login-work");
    let commit = repo.commit("the login form");
    repo.branch("main");

    let push = |sha: &str, deleted: &str| {
        fixture(
            "github_push.json",
            &[
                ("refs/heads/main", "refs/heads/feature/Login"),
                ("HEAD_SHA", sha),
                ("DELETED", deleted),
            ],
        )
    };
    let got = github(
        &d,
        "shop",
        "push",
        "b-1",
        GITHUB_SECRET,
        &push(&commit, "false"),
    )
    .await;
    assert_eq!(got.0, 200, "{}", got.1);
    let outcome: Value = serde_json::from_str(&got.1).unwrap();
    assert!(
        outcome["notes"][0]
            .as_str()
            .unwrap()
            .starts_with("created shop/test-feature-login for branch feature/Login"),
        "{outcome}"
    );
    watch_deploy(&d, &got.1, "test-feature-login");
    let (status, body) = d.get("test-feature-login.shop.localhost", "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("login-work env=test-feature-login"),
        "{body}"
    );
    let env = d.json(&["env", "show", "shop/test-feature-login"]);
    assert_eq!(env["release"]["commit"], commit.as_str(), "{env}");
    assert_eq!(env["tier"], "test", "{env}");

    // The branch is deleted on GitHub: its environment goes, qa (on main) stays.
    repo.git(&["branch", "-D", "feature/Login"]);
    let zeros = "0".repeat(40);
    let got = github(
        &d,
        "shop",
        "push",
        "b-2",
        GITHUB_SECRET,
        &push(&zeros, "true"),
    )
    .await;
    assert_eq!(got.0, 200, "{}", got.1);
    let outcome: Value = serde_json::from_str(&got.1).unwrap();
    assert_eq!(outcome["deploys"], serde_json::json!([]), "{outcome}");
    assert!(
        outcome["notes"][0]
            .as_str()
            .unwrap()
            .starts_with("deleted shop/test-feature-login"),
        "{outcome}"
    );
    let envs = d.json(&["env", "list", "shop"]);
    let names: Vec<&str> = envs
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["qa"], "{envs}");
    let (status, _) = d.get("test-feature-login.shop.localhost", "/").await;
    assert_ne!(status, 200, "the deleted environment still answers");
    // Replaying the deletion is refused like any replay, and changes nothing.
    let got = github(
        &d,
        "shop",
        "push",
        "b-2",
        GITHUB_SECRET,
        &push(&zeros, "true"),
    )
    .await;
    assert_refused(&got, 409, "replayed GitHub delivery");
}
