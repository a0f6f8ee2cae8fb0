//! Idle environments sleep and the next request wakes them: the request waits until the
//! instance is healthy and is served; concurrent requests start one instance; a stopped
//! environment is not woken; sleeping survives a daemon restart; production never sleeps by
//! default; bad settings are refused and change nothing.
use std::time::Duration;

use serde_json::Value;

use crate::support::{Daemon, Repo, eventually};

/// How long the tests give an environment to fall asleep, or a request to be answered.
const PATIENCE: Duration = Duration::from_secs(30);

fn pid_alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The instance's pid of a live environment.
fn instance_pid(d: &Daemon, target: &str) -> u64 {
    let env = d.json(&["env", "show", target]);
    assert_eq!(env["status"], "live", "{env}");
    env["instance"]["pid"].as_u64().unwrap()
}

/// Wait until `target` sleeps; returns what `env show` says then.
async fn asleep(d: &Daemon, target: &str) -> Value {
    eventually(&format!("{target} to fall asleep"), PATIENCE, || async {
        let env = d.json(&["env", "show", target]);
        (env["status"] == "sleeping").then_some(env)
    })
    .await
}

fn audit_count(d: &Daemon, action: &str) -> usize {
    let entries = d.json(&["audit", "--app", "shop"]);
    entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_environment_sleeps_and_concurrent_requests_wake_one_instance() {
    let repo = Repo::new("awake");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("test", "main", "test")]);
    let env = d.json(&["env", "show", "shop/test"]);
    assert_eq!(env["sleep_after"], "30m", "the test tier's default: {env}");
    d.ok(&["deploy", "shop/test"]);
    d.ok(&["domain", "add", "shop-test.example.test", "shop/test"]);
    let set = d.json(&["env", "update", "shop/test", "--sleep-after", "1s"]);
    assert_eq!(set["sleep_after"], "1s", "{set}");
    assert!(
        d.ok(&["env", "show", "shop/test"])
            .contains("sleeps after 1s")
    );
    let pid = instance_pid(&d, "shop/test");

    let env = asleep(&d, "shop/test").await;
    assert!(env["instance"].is_null(), "{env}");
    eventually("the instance to exit", PATIENCE, || async {
        (!pid_alive(pid)).then_some(())
    })
    .await;
    let list = d.ok(&["env", "list", "shop"]);
    assert!(list.contains("sleeping"), "{list}");
    assert_eq!(audit_count(&d, "env.sleep"), 1);
    let sleep = d.json(&["audit", "--app", "shop"]);
    let entry = sleep
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "env.sleep")
        .unwrap();
    assert_eq!(entry["actor"], "turnout", "{entry}");

    // Requests to its URL and to its domain, all at once: each waits and gets the app.
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..12 {
        let host = if i % 3 == 0 {
            "shop-test.example.test"
        } else {
            "test.shop.localhost"
        };
        let proxy = d.http;
        requests.spawn(async move { crate::support::get(proxy, host, "/").await });
    }
    while let Some(answer) = requests.join_next().await {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("awake env=test"), "{body}");
    }
    assert_eq!(audit_count(&d, "env.wake"), 1, "one instance was started");
    let jobs = d.json(&["jobs", "shop/test", "--all"]);
    let starts = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "start")
        .count();
    assert_eq!(starts, 1, "{jobs}");

    // Idle again: asleep again, and `env wake` wakes it by hand (kept awake from then on, so
    // the checks below do not race its next sleep).
    asleep(&d, "shop/test").await;
    d.ok(&["env", "update", "shop/test", "--sleep-after", "1h"]);
    assert_eq!(d.json(&["env", "show", "shop/test"])["status"], "sleeping");
    d.ok(&["env", "wake", "shop/test"]);
    instance_pid(&d, "shop/test");
    let (status, body) = d.get("test.shop.localhost", "/").await;
    assert_eq!((status, body.starts_with("awake ")), (200, true), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_environment_is_not_woken_by_a_request() {
    let repo = Repo::new("x");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("test", "main", "test")]);
    d.ok(&["deploy", "shop/test"]);
    d.ok(&["env", "update", "shop/test", "--sleep-after", "1s"]);
    asleep(&d, "shop/test").await;
    // Stopped by hand while asleep: stopped it is, and a request does not start it.
    let stopped = d.json(&["env", "stop", "shop/test"]);
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    let (status, body) = d.get("test.shop.localhost", "/").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("is stopped"), "{body}");
    let env = d.json(&["env", "show", "shop/test"]);
    assert_eq!(env["status"], "stopped", "{env}");
    assert_eq!(audit_count(&d, "env.wake"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_environment_stays_asleep_across_restarts_and_still_wakes() {
    let repo = Repo::new("again");
    let mut d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[("test", "main", "test"), ("prod", "main", "production")],
    );
    d.ok(&["deploy", "shop/test"]);
    d.ok(&["deploy", "shop/prod"]);
    let prod = d.json(&["env", "show", "shop/prod"]);
    assert_eq!(prod["sleep_after"], "never", "{prod}");
    d.ok(&["env", "update", "shop/test", "--sleep-after", "1s"]);
    asleep(&d, "shop/test").await;

    // A full stop and start, then a killed control plane (the data plane and its routes stay):
    // asleep each time, nothing started.
    d.restart();
    let env = d.json(&["env", "show", "shop/test"]);
    assert_eq!(env["status"], "sleeping", "start-up left it asleep: {env}");
    assert!(env["instance"].is_null(), "{env}");
    d.kill_and_restart();
    let env = d.json(&["env", "show", "shop/test"]);
    assert_eq!(env["status"], "sleeping", "adoption left it asleep: {env}");

    // A killed data plane: its successor gets the sleeping route too.
    let [old] = d.dataplanes()[..] else {
        panic!("not one data plane: {:?}", d.dataplanes());
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("a new data plane serving", PATIENCE, || async {
        let now = d.dataplanes();
        let (status, _) = d.get("prod.shop.localhost", "/").await;
        (now.len() == 1 && now[0] != old && status == 200).then_some(())
    })
    .await;
    assert_eq!(d.json(&["env", "show", "shop/test"])["status"], "sleeping");
    assert_eq!(audit_count(&d, "env.wake"), 0);

    // Kept awake once woken, so the checks below do not race its next sleep.
    d.ok(&["env", "update", "shop/test", "--sleep-after", "never"]);
    let (status, body) = d.get("test.shop.localhost", "/").await;
    assert_eq!(
        (status, body.starts_with("again env=test")),
        (200, true),
        "{body}"
    );
    instance_pid(&d, "shop/test");
    assert_eq!(audit_count(&d, "env.wake"), 1);

    // Production, idle all along (longer than the test environment's second): still live.
    let prod = d.json(&["env", "show", "shop/prod"]);
    assert_eq!(prod["status"], "live", "{prod}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sleep_settings_are_refused_and_change_nothing() {
    let repo = Repo::new("x");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("test", "main", "test")]);
    for (value, says) in [
        ("soon", "invalid sleep-after 'soon'"),
        ("0", "between 1s and 168h"),
        ("500ms", "between 1s and 168h"),
        ("8d", "invalid sleep-after '8d'"),
        ("1000h", "out of range"),
        ("-5m", "out of range"),
    ] {
        let err = d.fails(&["env", "update", "shop/test", "--sleep-after", value]);
        assert!(err.contains(says), "{value}: {err}");
        assert!(err.contains("never"), "{value}: {err}");
    }
    // The API refuses what the CLI would: a hostile client gets the same answer.
    let client = reqwest::Client::new();
    let token = d.admin_token();
    for body in [
        serde_json::json!({"sleep_after": "0s"}),
        serde_json::json!({"sleep_after": "forever"}),
        serde_json::json!({"sleep_after": 5}),
        serde_json::json!({"sleep_after": "1s", "extra": true}),
    ] {
        let answer = client
            .post(format!("{}/api/v1/apps/shop/envs/test/sleep", d.api))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{body}");
    }
    let env = d.json(&["env", "show", "shop/test"]);
    assert_eq!(env["sleep_after"], "30m", "unchanged: {env}");
    assert_eq!(audit_count(&d, "env.sleep-after"), 0);
    // `default` goes back to the tier's; `never` turns it off.
    let set = d.json(&["env", "update", "shop/test", "--sleep-after", "never"]);
    assert_eq!(set["sleep_after"], "never", "{set}");
    let set = d.json(&["env", "update", "shop/test", "--sleep-after", "default"]);
    assert_eq!(set["sleep_after"], "30m", "{set}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_visitor_cannot_wake_a_protected_environment() {
    let repo = Repo::new("private");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("test", "main", "test")]);
    d.ok(&["deploy", "shop/test"]);
    d.ok(&["access", "protect", "shop", "on", "--tier", "test"]);
    d.ok(&["user", "add", "reviewer"]);
    d.ok(&["access", "grant", "reviewer", "shop", "viewer"]);
    let token = d.json(&["token", "create", "--user", "reviewer"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    d.ok(&["env", "update", "shop/test", "--sleep-after", "1s"]);
    asleep(&d, "shop/test").await;

    // Without a login: the login page, and the environment sleeps on.
    for _ in 0..3 {
        let (status, body) = d.get("test.shop.localhost", "/").await;
        assert_eq!(status, 401, "{body}");
        assert!(!body.contains("private"), "{body}");
    }
    let client = reqwest::Client::new();
    let bad = client
        .get(format!("http://{}/", d.http))
        .header("host", "test.shop.localhost")
        .basic_auth("reviewer", Some("tnt_0000"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert_eq!(d.json(&["env", "show", "shop/test"])["status"], "sleeping");
    assert_eq!(audit_count(&d, "env.wake"), 0);

    // Logged in: woken and served.
    d.ok(&["env", "update", "shop/test", "--sleep-after", "never"]);
    let good = client
        .get(format!("http://{}/", d.http))
        .header("host", "test.shop.localhost")
        .basic_auth("reviewer", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    assert!(good.text().await.unwrap().starts_with("private env=test"));
    assert_eq!(audit_count(&d, "env.wake"), 1);
}

/// An app sets when a tier's environments sleep (`app update --sleep-after TIER=…`): its
/// environments of that tier follow it unless they have a setting of their own; `default` goes
/// back to the built-in one; bad settings are refused and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_sets_when_a_tier_sleeps_and_an_environment_s_own_setting_wins() {
    let repo = Repo::new("tiers");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[("qa", "main", "qa"), ("pinned", "main", "qa")],
    );
    d.ok(&["deploy", "shop/qa"]);
    d.ok(&["deploy", "shop/pinned"]);
    assert_eq!(d.json(&["env", "show", "shop/qa"])["sleep_after"], "never");
    d.ok(&["env", "update", "shop/pinned", "--sleep-after", "never"]);

    let app = d.json(&[
        "app",
        "update",
        "shop",
        "--sleep-after",
        "qa=1s",
        "--sleep-after",
        "test=2h",
    ]);
    assert_eq!(
        app["sleep_after"],
        serde_json::json!({"test": "2h", "qa": "1s"})
    );
    let text = d.ok(&["app", "update", "shop", "--sleep-after", "test=default"]);
    assert!(
        text.contains("qa environments sleep after 1s\n")
            && text.contains("test environments sleep after 30m (default)"),
        "{text}"
    );
    assert_eq!(d.json(&["env", "show", "shop/qa"])["sleep_after"], "1s");
    asleep(&d, "shop/qa").await;
    assert_eq!(
        d.json(&["env", "show", "shop/pinned"])["status"],
        "live",
        "its own setting (never) wins over the app's"
    );
    let (status, body) = d.get("qa.shop.localhost", "/").await;
    assert_eq!(status, 200, "{body}");

    let before = d.json(&["app", "list"]);
    for (arg, says) in [
        ("prod=1s", "unknown tier 'prod'"),
        ("qa", "TIER=DURATION"),
        ("qa=0s", "sleep-after"),
        ("qa=soon", "sleep-after"),
    ] {
        let err = d.fails(&["app", "update", "shop", "--sleep-after", arg]);
        assert!(err.contains(says), "{arg}: {err}");
    }
    let err = d.fails(&["app", "update", "shop"]);
    assert!(
        err.contains("--sleep-after") && err.contains("--branch-envs"),
        "{err}"
    );
    // Through the API too: a bad value or tier is a 400 and changes nothing.
    let client = reqwest::Client::new();
    for body in [
        serde_json::json!({"sleep_after": {"qa": "0s"}}),
        serde_json::json!({"sleep_after": {"nowhere": "1m"}}),
        serde_json::json!({"sleep_after": {"qa": 60}}),
    ] {
        let resp = client
            .post(format!("{}/api/v1/apps/shop/settings", d.api))
            .bearer_auth(d.admin_token())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{body}");
    }
    assert_eq!(d.json(&["app", "list"]), before);
}
