//! A pipeline declared per app (`turnout pipeline set` / `reset`): `promote` allows exactly its
//! promotions, bad pipelines are refused and change nothing; scheduled cuts (`turnout pipeline
//! schedule`) run as promotions on their cron ticks, and a tick missed while the daemon was down
//! runs once.
use std::time::Duration;

use serde_json::Value;

use crate::support::{Daemon, Repo, eventually};

fn shop(d: &Daemon, repo: &Repo) {
    d.create(
        "shop",
        repo.path(),
        &[
            ("dev", "main", "development"),
            ("qa", "main", "qa"),
            ("staging", "main", "staging"),
            ("hotfix", "main", "release"),
            ("production", "main", "production"),
        ],
    );
}

const SET: &[&str] = &[
    "pipeline",
    "set",
    "shop",
    "--stages",
    "qa,staging+hotfix,production",
    "--promote",
    "qa:staging",
    "--promote",
    "qa:hotfix",
    "--promote",
    "staging:production",
    "--promote",
    "hotfix:staging",
    "--promote",
    "hotfix:production",
];

fn promote_jobs(d: &Daemon) -> Vec<Value> {
    d.json(&["jobs", "shop", "--all"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "promote")
        .cloned()
        .collect()
}

/// Run a command that starts a job (with `--detach`), watch it to its end, and show it.
fn run_job(d: &Daemon, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--detach");
    let id = d.json(&all)["id"].to_string();
    d.ok(&["job", "watch", &id]);
    d.json(&["job", "show", &id])
}

fn user(d: &Daemon, name: &str, role: &str) -> String {
    d.ok(&["user", "add", name]);
    d.ok(&["access", "grant", name, "shop", role]);
    d.json(&["token", "create", "--user", name])["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_pipeline_allows_exactly_its_promotions() {
    let repo = Repo::new("pipe");
    let d = Daemon::start();
    shop(&d, &repo);
    d.ok(&["deploy", "shop/qa"]);

    let p = d.json(SET);
    let stages: Vec<(&str, Vec<&str>)> = p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let envs = s["envs"].as_array().unwrap();
            let mut names: Vec<&str> = envs.iter().map(|e| e["name"].as_str().unwrap()).collect();
            names.sort_unstable();
            (s["name"].as_str().unwrap(), names)
        })
        .collect();
    assert_eq!(
        stages,
        [
            ("qa", vec!["qa"]),
            ("staging+hotfix", vec!["hotfix", "staging"]),
            ("production", vec!["production"])
        ],
        "{p}"
    );
    assert_eq!(p["unstaged"], serde_json::json!(["dev"]), "{p}");
    let shown: Vec<(&str, &str)> = p["promotions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["from"].as_str().unwrap(), v["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        shown,
        [
            ("qa", "staging"),
            ("qa", "hotfix"),
            ("staging", "production"),
            ("hotfix", "staging"),
            ("hotfix", "production")
        ],
        "{p}"
    );
    let text = d.ok(&["pipeline", "show", "shop"]);
    assert!(
        text.contains("qa (qa) → staging+hotfix (")
            && text.contains("promotions: as declared")
            && text.contains("in no stage: dev"),
        "{text}"
    );

    // A promotion it allows that the tier rule would not: a job with no build step.
    let job = run_job(&d, &["promote", "shop/qa", "shop/hotfix"]);
    assert_eq!(job["state"], "succeeded", "{job}");
    let steps: Vec<&str> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["copy", "launch", "go-live", "retire"], "{job}");
    let (status, body) = d.get("hotfix.shop.localhost", "/").await;
    assert_eq!(status, 200, "{body}");

    // One the tier rule would allow but the pipeline does not, refused with the allowed ones.
    d.ok(&["deploy", "shop/dev"]);
    let err = d.fails(&["promote", "shop/dev", "shop/qa"]);
    assert!(
        err.contains("shop/dev (development) may not be promoted to shop/qa (qa)")
            && err.contains(
                "the app's pipeline allows qa → staging, qa → hotfix, staging → production, hotfix → staging, hotfix → production"
            ),
        "{err}"
    );
    let err = d.fails(&["promote", "shop/qa", "shop/production"]);
    assert!(err.contains("the app's pipeline allows"), "{err}");
    assert_eq!(
        promote_jobs(&d).len(),
        1,
        "a refused promotion started a job"
    );

    // Bad pipelines: refused, naming the problem, and the declared one stays.
    let bad = |args: &[&str], says: &str| {
        let mut all = vec!["pipeline", "set", "shop"];
        all.extend_from_slice(args);
        let err = d.fails(&all);
        assert!(err.contains(says), "{args:?}: {err}");
    };
    bad(
        &[
            "--stages",
            "qa,staging",
            "--promote",
            "qa:staging",
            "--promote",
            "staging:qa",
        ],
        "the promotions make a cycle: qa → staging → qa",
    );
    bad(
        &["--stages", "qa,nope", "--promote", "qa:nope"],
        "the app has no environment 'nope'",
    );
    bad(
        &["--stages", "qa", "--promote", "qa:staging"],
        "which is in no stage; add staging or tier:staging",
    );
    bad(
        &["--stages", "qa,staging", "--promote", "staging:qa"],
        "nothing flows down",
    );
    bad(
        &["--stages", "dev,production", "--promote", "dev:production"],
        "production only takes releases from staging, release or production",
    );
    bad(&["--stages", "qa,qa"], "qa is listed twice");
    bad(&["--stages", "tier:prod"], "unknown tier 'prod'");
    // Through the API: unknown fields, and sizes past the bounds.
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/apps/shop/pipeline", d.api);
    let many: Vec<Value> = (0..17).map(|_| serde_json::json!(["qa"])).collect();
    let crowded: Vec<&str> = vec!["qa"; 17];
    for (body, says) in [
        (
            serde_json::json!({"stages": [["qa"]], "promotions": [], "owner": "me"}),
            "unknown field",
        ),
        (
            serde_json::json!({"stages": many, "promotions": []}),
            "1 to 16 stages",
        ),
        (
            serde_json::json!({"stages": [crowded], "promotions": []}),
            "a stage has 1 to 16",
        ),
        (
            serde_json::json!({"stages": [["qa"], ["Bad Name"]], "promotions": []}),
            "invalid environment name",
        ),
    ] {
        let r = http
            .post(&url)
            .bearer_auth(d.admin_token())
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }
    let p2 = d.json(&["pipeline", "show", "shop"]);
    assert_eq!(
        p2["declared"], p["declared"],
        "a refused pipeline changed it"
    );

    // Viewers and maintainers may not change it; owners of the app may.
    let viewer = user(&d, "vera", "viewer");
    let maintainer = user(&d, "max", "maintainer");
    for token in [&viewer, &maintainer] {
        let out = d.cli_as(token, &["pipeline", "reset", "shop"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("forbidden") && err.contains("owner"),
            "{err}"
        );
    }
    let out = d.cli_as(&viewer, &["--json", "pipeline", "show", "shop"]);
    assert!(out.status.success(), "viewers see it");

    // An environment the pipeline names cannot be deleted until the pipeline changes.
    let err = d.fails(&["env", "delete", "shop/hotfix"]);
    assert!(
        err.contains("shop/hotfix is named by the app's pipeline")
            && err.contains("turnout pipeline reset shop"),
        "{err}"
    );

    let audit = d.json(&["audit", "--app", "shop"]);
    let set = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "pipeline.set" && e["result"] == "ok")
        .unwrap_or_else(|| panic!("no pipeline.set in {audit}"));
    assert_eq!(set["actor"], "admin");

    // Reset: the tier rule again.
    d.ok(&["pipeline", "reset", "shop"]);
    let p3 = d.json(&["pipeline", "show", "shop"]);
    assert!(p3["declared"].is_null(), "{p3}");
    assert_eq!(p3["stages"][0]["tier"], "development", "{p3}");
    let err = d.fails(&["promote", "shop/qa", "shop/hotfix"]);
    assert!(
        err.contains("a qa environment promotes to staging"),
        "{err}"
    );
    let job = run_job(&d, &["promote", "shop/dev", "shop/qa"]);
    assert_eq!(job["state"], "succeeded", "{job}");
    d.ok(&["env", "delete", "shop/hotfix"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_cut_runs_as_a_promotion_by_the_schedule_s_maker() {
    let repo = Repo::new("pipe");
    let d = Daemon::start();
    shop(&d, &repo);
    d.ok(&["deploy", "shop/qa"]);

    // Bad schedules store nothing.
    let bad = |args: &[&str], says: &str| {
        let mut all = vec!["pipeline", "schedule", "add", "shop"];
        all.extend_from_slice(args);
        let err = d.fails(&all);
        assert!(err.contains(says), "{args:?}: {err}");
    };
    bad(
        &["--promote", "qa:staging", "--cron", "every friday"],
        "is not valid",
    );
    bad(
        &[
            "--promote",
            "qa:staging",
            "--cron",
            "0 17 * * FRI",
            "--tz",
            "Mars/Olympus",
        ],
        "unknown time zone",
    );
    bad(
        &["--promote", "qa:production", "--cron", "0 17 * * FRI"],
        "may not be promoted",
    );
    bad(
        &["--promote", "qa:nowhere", "--cron", "0 17 * * FRI"],
        "nowhere",
    );
    bad(
        &["--promote", "qa-staging", "--cron", "0 17 * * FRI"],
        "FROM:TO",
    );
    let viewer = user(&d, "vera", "viewer");
    let out = d.cli_as(
        &viewer,
        &[
            "pipeline",
            "schedule",
            "add",
            "shop",
            "--promote",
            "qa:staging",
            "--cron",
            "0 17 * * FRI",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"));
    assert_eq!(
        d.json(&["pipeline", "schedule", "list", "shop"]),
        serde_json::json!([])
    );

    // The time zone is stated even when left to its default.
    let weekly = d.ok(&[
        "pipeline",
        "schedule",
        "add",
        "shop",
        "--promote",
        "qa:staging",
        "--cron",
        "0 17 * * FRI",
    ]);
    assert!(weekly.contains("in time zone UTC"), "{weekly}");
    let weekly_id = weekly
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    // By command: the same cut now, as the caller.
    let job = run_job(&d, &["pipeline", "schedule", "run", "shop", &weekly_id]);
    assert_eq!(
        (job["state"].as_str(), job["actor"].as_str()),
        (Some("succeeded"), Some("admin"))
    );
    let err = d.fails(&["env", "delete", "shop/staging"]);
    assert!(
        err.contains(&format!("schedule {weekly_id} (qa → staging")),
        "{err}"
    );
    d.ok(&["pipeline", "schedule", "remove", "shop", &weekly_id]);

    // Every second: the scheduler's next tick runs it, as the schedule's maker.
    repo.write("content.txt", "newer");
    repo.commit("newer");
    d.ok(&["deploy", "shop/qa"]);
    let qa = d.json(&["env", "show", "shop/qa"]);
    let s = d.json(&[
        "pipeline",
        "schedule",
        "add",
        "shop",
        "--promote",
        "qa:staging",
        "--cron",
        "*/1 * * * * *",
        "--tz",
        "Europe/Berlin",
    ]);
    assert_eq!(s["tz"], "Europe/Berlin");
    let id = s["id"].as_i64().unwrap();
    let job = eventually(
        "a scheduled cut to succeed",
        Duration::from_secs(60),
        || async {
            promote_jobs(&d).into_iter().find(|j| {
                j["actor"] == format!("admin (schedule {id})") && j["state"] == "succeeded"
            })
        },
    )
    .await;
    d.ok(&["pipeline", "schedule", "remove", "shop", &id.to_string()]);
    assert_eq!(job["steps"][0]["name"], "copy", "{job}");
    // Ticks every second, cuts that take longer: a tick never queues a cut behind the last one.
    let mut cuts: Vec<Value> = promote_jobs(&d)
        .into_iter()
        .filter(|j| j["actor"] == format!("admin (schedule {id})"))
        .collect();
    cuts.sort_by_key(|j| j["id"].as_i64());
    for pair in cuts.windows(2) {
        let ended = pair[0]["finished_at"].as_str().unwrap_or("9999");
        let queued = pair[1]["created_at"].as_str().unwrap();
        assert!(queued >= ended, "a cut was queued behind another: {cuts:?}");
    }
    let staging = d.json(&["env", "show", "shop/staging"]);
    assert_eq!(staging["release"]["commit"], qa["release"]["commit"]);
    let (_, body) = d.get("staging.shop.localhost", "/").await;
    assert!(body.contains("newer"), "{body}");
    let audit = d.json(&["audit", "--app", "shop"]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "schedule.run"
                && e["actor"] == format!("admin (schedule {id})")
                && e["result"] == "ok"),
        "{audit}"
    );

    // A schedule carries no rights of its own: once its maker loses theirs, its ticks are
    // refused (and recorded), not run.
    let olga = user(&d, "olga", "owner");
    let out = d.cli_as(
        &olga,
        &[
            "--json",
            "pipeline",
            "schedule",
            "add",
            "shop",
            "--promote",
            "qa:staging",
            "--cron",
            "*/1 * * * * *",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_i64()
        .unwrap();
    d.ok(&["access", "revoke", "olga", "shop"]);
    let refused = eventually(
        "a tick refused for lack of rights",
        Duration::from_secs(30),
        || async {
            let list = d.json(&["pipeline", "schedule", "list", "shop"]);
            let s = list
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["id"] == id)?
                .clone();
            s["last_result"]
                .as_str()
                .is_some_and(|r| r.starts_with("not run: forbidden"))
                .then_some(s)
        },
    )
    .await;
    assert!(refused["last_job"].is_null(), "{refused}");
    d.ok(&["pipeline", "schedule", "remove", "shop", &id.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_missed_while_the_daemon_was_down_run_once() {
    let repo = Repo::new("pipe");
    let mut d = Daemon::start();
    shop(&d, &repo);
    d.ok(&["deploy", "shop/qa"]);
    // Yearly, at the start of January 1st: no tick comes while the test runs.
    let s = d.json(&[
        "pipeline",
        "schedule",
        "add",
        "shop",
        "--promote",
        "qa:staging",
        "--cron",
        "0 0 0 1 1 *",
    ]);
    let id = s["id"].as_i64().unwrap();
    assert!(promote_jobs(&d).is_empty());

    // Down for three years, as far as the schedule can tell: three ticks missed.
    d.stop();
    let db = rusqlite::Connection::open(d.home.path().join("turnout.db")).unwrap();
    db.execute(
        "UPDATE pipeline_schedules SET last_tick = last_tick - 3 * 366 * 86400 WHERE id = ?1",
        [id],
    )
    .unwrap();
    drop(db);
    d.start_again();

    // The catch-up runs during start-up: one cut, whatever the number of missed ticks.
    let jobs = promote_jobs(&d);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["actor"], format!("admin (schedule {id})"));
    let job = jobs[0]["id"].to_string();
    d.ok(&["job", "watch", &job]);
    let list = d.json(&["pipeline", "schedule", "list", "shop"]);
    let year = &list[0]["last_tick"].as_str().unwrap()[..4];
    assert!(
        list[0]["last_tick"]
            .as_str()
            .unwrap()
            .ends_with("-01-01T00:00:00Z")
            && list[0]["last_result"] == format!("started job {job}"),
        "{list}"
    );
    assert_eq!(list[0]["last_job"].to_string(), job);

    // Started again: nothing is due any more.
    d.restart();
    assert_eq!(promote_jobs(&d).len(), 1);
    let again = d.json(&["pipeline", "schedule", "list", "shop"]);
    assert_eq!(&again[0]["last_tick"].as_str().unwrap()[..4], year);
}

/// A scheduled cut into a guarded tier waits for a second owner like one typed by hand, and
/// later ticks wait for that request instead of filing one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_scheduled_cut_waits_for_one_approval() {
    let repo = Repo::new("pipe");
    let d = Daemon::start();
    shop(&d, &repo);
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
    let s = d.json(&[
        "pipeline",
        "schedule",
        "add",
        "shop",
        "--promote",
        "staging:production",
        "--cron",
        "*/1 * * * * *",
    ]);
    let id = s["id"].as_i64().unwrap();
    let parked = eventually(
        "the cut to wait for approval",
        Duration::from_secs(30),
        || async {
            let list = d.json(&["pipeline", "schedule", "list", "shop"]);
            let result = list[0]["last_result"].as_str()?.to_owned();
            result
                .starts_with("waiting for a second owner's approval")
                .then_some(result)
        },
    )
    .await;
    // Later ticks wait for that request.
    eventually(
        "a later tick to wait for it",
        Duration::from_secs(30),
        || async {
            let list = d.json(&["pipeline", "schedule", "list", "shop"]);
            let result = list[0]["last_result"].as_str()?.to_owned();
            result
                .contains("still waits for approval")
                .then_some(result)
        },
    )
    .await;
    d.ok(&["pipeline", "schedule", "remove", "shop", &id.to_string()]);
    let approvals = d.json(&["approvals", "list"]);
    let pending = approvals.as_array().unwrap();
    assert_eq!(pending.len(), 1, "{approvals}");
    assert!(
        parked.contains(&format!("(request {})", pending[0]["id"])),
        "{parked} {approvals}"
    );
    assert_eq!(pending[0]["requested_by"], format!("admin (schedule {id})"));
    assert!(promote_jobs(&d).is_empty(), "promoted before the approval");
}
