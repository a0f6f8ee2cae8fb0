//! Scheduled re-seeding (`[data] reseed = "CRON"`): the daemon's scheduler re-creates an
//! environment's data from its seed at each tick of its live release's schedule, skips ticks
//! while the environment is stopped, and forgets the schedule when a release no longer declares
//! it.
use std::time::Duration;

use serde_json::Value;

use crate::data::{rows, sqlite_repo, toml};
use crate::support::{Daemon, eventually};

const WAIT: Duration = Duration::from_secs(60);

fn reseeds(d: &Daemon) -> Vec<Value> {
    d.json(&["jobs", "shop", "--all"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "seed")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reseed_schedule_puts_the_seed_back_skips_a_stopped_environment_and_ends_with_its_release()
 {
    // Every two seconds (six fields, seconds first), in a named zone.
    let repo = sqlite_repo("reseed = \"*/2 * * * * *\"\nreseed_timezone = \"Europe/Berlin\"\n");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    d.ok(&["deploy", "shop/qa"]);
    assert_eq!(rows(&d, "qa").await.len(), 3, "seeded at the first deploy");
    let info = d.json(&["data", "show", "shop/qa"]);
    assert_eq!(info["reseed"]["cron"], "*/2 * * * * *", "{info}");
    assert_eq!(info["reseed"]["timezone"], "Europe/Berlin", "{info}");
    assert!(info["reseed"]["next"].is_string(), "{info}");

    // A row the app writes is gone once a scheduled re-seed ran, as the scheduler's job.
    crate::data::body(&d, "qa", "/write?v=scribble").await;
    assert_eq!(rows(&d, "qa").await.len(), 4);
    let job = eventually("a scheduled re-seed to finish", WAIT, || async {
        reseeds(&d).into_iter().find(|j| j["state"] == "succeeded")
    })
    .await;
    assert_eq!(job["actor"], "turnout (reseed schedule)", "{job}");
    assert_eq!(
        rows(&d, "qa").await,
        [(1, "apple".into()), (2, "pear".into()), (3, "plum".into())]
    );
    let info = d.json(&["data", "show", "shop/qa"]);
    assert_eq!(info["origin"]["kind"], "seed", "{info}");
    assert!(
        info["reseed"]["last_result"]
            .as_str()
            .is_some_and(|r| r.starts_with("started job")),
        "{info}"
    );

    // Stopped, it is not re-seeded: the ticks are recorded as skipped.
    d.ok(&["env", "stop", "shop/qa"]);
    eventually(
        "a tick skipped for the stopped environment",
        WAIT,
        || async {
            let info = d.json(&["data", "show", "shop/qa"]);
            let result = info["reseed"]["last_result"].as_str()?.to_owned();
            result.contains("stopped").then_some(())
        },
    )
    .await;
    let audit = d.ok(&["audit", "--app", "shop"]);
    assert!(audit.contains("data.schedule"), "{audit}");
    let seeds_while_stopped = reseeds(&d).len();
    d.ok(&["env", "start", "shop/qa"]);

    // A release without the schedule ends it: no re-seed after that deploy's.
    repo.write("turnout.toml", &toml(""));
    repo.commit("no more reseeding");
    d.ok(&["deploy", "shop/qa"]);
    let info = eventually("the schedule to be forgotten", WAIT, || async {
        let info = d.json(&["data", "show", "shop/qa"]);
        info["reseed"].is_null().then_some(info)
    })
    .await;
    assert_eq!(info["engine"], "sqlite");
    let settled = reseeds(&d).len();
    assert!(settled >= seeds_while_stopped);
    crate::data::body(&d, "qa", "/write?v=kept").await;
    // A restart (a launch and a health check: past a two-second tick on this machine or not,
    // the scheduler no longer knows a schedule) keeps the row.
    d.ok(&["restart", "shop/qa"]);
    assert_eq!(
        reseeds(&d).len(),
        settled,
        "no re-seed after the schedule ended"
    );
    assert_eq!(rows(&d, "qa").await.len(), 4, "the new row stays");
}
