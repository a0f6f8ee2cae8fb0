//! Backups (`turnout backup …`): snapshots of a real SQLite environment into the app's
//! repository, listed with their schedule and bound, verified by a restore into a scratch area
//! (and failing, naming the chunk, once a chunk is corrupted), pinned ones kept from deletion and
//! retention, the schedule's bounds, the scheduler taking snapshots by itself and retention
//! deleting old ones, and a viewer refused.
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::data::{body, sqlite_repo};
use crate::support::{Daemon, eventually};

const WAIT: Duration = Duration::from_secs(120);

/// Run a job-starting command detached and wait for its end; its final state.
fn job(d: &Daemon, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--detach");
    let id = d.json(&all)["id"].as_i64().unwrap().to_string();
    let _ = d.cli(&["job", "watch", &id]);
    d.json(&["job", "show", &id])
}

fn output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn backups(d: &Daemon, env: &str) -> Vec<Value> {
    d.json(&["backup", "list", env])["backups"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_listed_verified_pinned_and_a_corrupted_chunk_fails_verification() {
    let repo = sqlite_repo("");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    d.ok(&["deploy", "shop/qa"]);
    body(&d, "qa", "/write?v=before").await;

    let j = job(&d, &["backup", "create", "shop/qa", "--label", "first"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    let steps: Vec<&str> = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["snapshot", "retention"]);
    let list = d.json(&["backup", "list", "shop/qa"]);
    assert_eq!(list["env"], "shop/qa", "{list}");
    assert_eq!(
        list["schedule"],
        serde_json::json!([]),
        "qa has none: {list}"
    );
    assert_eq!(list["schedule_from"], "tier default", "{list}");
    assert!(
        list["error_bound"]
            .as_str()
            .unwrap()
            .contains("no backup schedule"),
        "{list}"
    );
    assert!(list["repository_bytes"].as_u64().unwrap() > 0, "{list}");
    let first = &list["backups"][0];
    assert_eq!(first["state"], "ready", "{first}");
    assert_eq!(first["kind"], "manual", "{first}");
    assert_eq!(first["label"], "first", "{first}");
    assert_eq!(first["engine"], "sqlite", "{first}");
    assert_eq!(first["kept"], true, "{first}");
    assert_eq!(first["pinned"], false, "{first}");
    assert!(first["logical_bytes"].as_u64().unwrap() > 0, "{first}");
    let id = first["id"].as_i64().unwrap().to_string();
    let shown = d.json(&["backup", "show", &id]);
    assert_eq!(shown["id"], first["id"]);
    assert!(shown["verified_at"].is_null(), "{shown}");
    let table = d.ok(&["backup", "list", "shop/qa"]);
    assert!(
        table.contains("first") && table.contains("ready"),
        "{table}"
    );

    // A row written after it is not in it; the verification restores and checks it.
    body(&d, "qa", "/write?v=after").await;
    let j = job(&d, &["backup", "verify", &id]);
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["kind"], "verify", "{j}");
    let shown = d.json(&["backup", "show", &id]);
    assert!(shown["verified_at"].is_string(), "{shown}");
    assert!(shown["verify_error"].is_null(), "{shown}");

    // A second snapshot of barely changed data adds little to the repository.
    let j = job(
        &d,
        &["backup", "create", "shop/qa", "--pin", "--label", "keep"],
    );
    assert_eq!(j["state"], "succeeded", "{j}");
    let all = backups(&d, "shop/qa");
    assert_eq!(all.len(), 2);
    let pinned = &all[0];
    assert_eq!(pinned["pinned"], true, "{pinned}");
    assert!(
        pinned["stored_bytes"].as_u64().unwrap() < pinned["logical_bytes"].as_u64().unwrap(),
        "deduplicated against the first: {pinned}"
    );

    // Corrupt one of the first snapshot's chunks in the repository: verification fails,
    // naming it, and the row says so.
    let repo_file = d.home.path().join("backups/shop/repo.sqlite");
    let conn = rusqlite::Connection::open(&repo_file).unwrap();
    let chunk: Vec<u8> = conn
        .query_row(
            "SELECT id FROM refs WHERE n = 1 ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute(
        "UPDATE chunks SET data = randomblob(64) WHERE id = ?1",
        [&chunk],
    )
    .unwrap();
    drop(conn);
    let hex: String = chunk[..6].iter().map(|b| format!("{b:02x}")).collect();
    let checked: Vec<String> = [&id, &pinned["id"].to_string()]
        .iter()
        .map(|b| {
            let j = job(&d, &["backup", "verify", b]);
            j["state"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(
        checked.contains(&"failed".to_owned()),
        "a snapshot holding the corrupted chunk fails: {checked:?}"
    );
    let failed: Vec<Value> = backups(&d, "shop/qa")
        .into_iter()
        .filter(|b| b["verify_error"].is_string())
        .collect();
    assert!(!failed.is_empty());
    for b in &failed {
        let e = b["verify_error"].as_str().unwrap();
        assert!(e.contains(&hex) && e.contains("corrupted"), "{e}");
    }
    let out = d.cli(&["backup", "verify", &failed[0]["id"].to_string()]);
    assert!(!out.status.success(), "{}", output(&out));
    assert!(output(&out).contains(&hex), "{}", output(&out));

    // A pinned snapshot is deleted only with --force; the message says so.
    let pid = pinned["id"].to_string();
    let e = d.fails(&["backup", "delete", &pid]);
    assert!(e.contains("pinned") && e.contains("--force"), "{e}");
    assert_eq!(backups(&d, "shop/qa").len(), 2, "nothing deleted");
    let gone = d.json(&["backup", "delete", &pid, "--force"]);
    assert_eq!(gone["id"], pinned["id"]);
    d.ok(&["backup", "delete", &id]);
    assert!(backups(&d, "shop/qa").is_empty());
    let e = d.fails(&["backup", "show", &id]);
    assert!(e.contains(&format!("no backup {id}")), "{e}");
    let audit = d.ok(&["audit", "--app", "shop"]);
    for action in ["backup.create", "backup.verify", "backup.delete"] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_with_what_to_write_and_a_viewer_cannot_take_snapshots() {
    let repo = sqlite_repo("");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    d.ok(&["deploy", "shop/qa"]);
    let seventeen: Vec<String> = (1..=17).map(|i| format!("{i}m")).collect();
    let seventeen = seventeen.join(",");
    for (bad, needle) in [
        ("5s", "from 10s to 366d"),
        ("400d", "from 10s to 366d"),
        ("1h,1m", "must increase"),
        ("1m,1m", "must increase"),
        ("1w", "unit s, m, h or d"),
        ("hourly", "unit s, m, h or d"),
        (seventeen.as_str(), "at most 16"),
    ] {
        let e = d.fails(&["backup", "policy", "shop/qa", "--schedule", bad]);
        assert!(
            e.contains("--schedule") && e.contains(needle) && e.contains("exponential"),
            "{bad}: {e}"
        );
    }
    let list = d.json(&["backup", "list", "shop/qa"]);
    assert_eq!(
        list["schedule_from"], "tier default",
        "nothing changed: {list}"
    );
    let set = d.json(&["backup", "policy", "shop/qa", "--schedule", "exponential"]);
    assert_eq!(
        set["schedule"],
        serde_json::json!(["1m", "2m", "5m", "10m", "1h", "3h", "6h", "1d"]),
        "{set}"
    );
    assert_eq!(set["schedule_from"], "cli", "{set}");
    assert!(
        set["error_bound"]
            .as_str()
            .unwrap()
            .contains("any moment of the last"),
        "{set}"
    );
    let set = d.json(&["backup", "policy", "shop/qa", "--schedule", "none"]);
    assert_eq!(set["schedule"], serde_json::json!([]), "{set}");

    // A viewer reads the list but takes no snapshot and sets no schedule.
    d.ok(&["user", "add", "vic"]);
    d.ok(&["access", "grant", "vic", "shop", "viewer"]);
    let token = d.json(&["token", "create", "--user", "vic"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = d.cli_as(&token, &["backup", "create", "shop/qa"]);
    assert!(!out.status.success());
    assert!(output(&out).contains("forbidden"), "{}", output(&out));
    let out = d.cli_as(
        &token,
        &["backup", "policy", "shop/qa", "--schedule", "10s"],
    );
    assert!(output(&out).contains("forbidden"), "{}", output(&out));
    let out = d.cli_as(&token, &["backup", "list", "shop/qa"]);
    assert!(out.status.success(), "{}", output(&out));
    assert!(
        backups(&d, "shop/qa")
            .iter()
            .all(|b| b["created_by"] != "vic"),
        "the viewer took nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_schedule_takes_snapshots_by_itself_and_retention_keeps_within_its_bound() {
    let repo = sqlite_repo("");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    d.ok(&["deploy", "shop/qa"]);
    let j = job(&d, &["backup", "create", "shop/qa", "--pin"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    let pinned = backups(&d, "shop/qa")[0]["id"].clone();
    let started = Instant::now();
    d.ok(&["backup", "policy", "shop/qa", "--schedule", "10s,20s"]);

    // The scheduler takes snapshots by itself, and retention deletes the ones no period wants.
    eventually("retention to delete a scheduled snapshot", WAIT, || async {
        let audit = d.ok(&["audit", "--app", "shop"]);
        audit
            .lines()
            .any(|l| l.contains("backup.delete") && l.contains("retention"))
            .then_some(())
    })
    .await;
    let elapsed = started.elapsed().as_secs();
    let jobs: Vec<Value> = d
        .json(&["jobs", "shop", "--all"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "backup" && j["actor"] == "turnout (backup schedule)")
        .cloned()
        .collect();
    assert!(jobs.len() >= 2, "{jobs:?}");
    // Never a burst: at most one snapshot per smallest period (and the first at once).
    assert!(
        jobs.len() as u64 <= elapsed / 10 + 2,
        "{} scheduled snapshots in {elapsed}s",
        jobs.len()
    );
    let list = d.json(&["backup", "list", "shop/qa"]);
    assert_eq!(
        list["schedule"],
        serde_json::json!(["10s", "20s"]),
        "{list}"
    );
    let all = list["backups"].as_array().unwrap();
    assert!(
        all.iter().any(|b| b["id"] == pinned),
        "the pinned snapshot stays: {list}"
    );
    let scheduled: Vec<&Value> = all.iter().filter(|b| b["kind"] == "scheduled").collect();
    assert!(!scheduled.is_empty(), "{list}");
    assert!(
        scheduled
            .iter()
            .all(|b| b["created_by"] == "turnout (backup schedule)")
    );
    // Once retention ran: at most 2 per period and the newest (2·2+1) unpinned snapshots.
    let unpinned = all.iter().filter(|b| b["pinned"] == false).count();
    assert!(unpinned <= 5 + 1, "{unpinned} kept: {list}");
    eventually("the kept snapshots within the bound", WAIT, || async {
        let list = d.json(&["backup", "list", "shop/qa"]);
        let unpinned = list["backups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["pinned"] == false && b["state"] == "ready")
            .count();
        (unpinned <= 5).then_some(())
    })
    .await;

    // No schedule: no more snapshots are taken.
    d.ok(&["backup", "policy", "shop/qa", "--schedule", "none"]);
    let settled = eventually("no backup job running", WAIT, || async {
        let running = d
            .json(&["jobs", "shop"])
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["kind"] == "backup" && (j["state"] == "queued" || j["state"] == "running"));
        (!running).then(|| backups(&d, "shop/qa").len())
    })
    .await;
    // A restart (a launch and a health check) later, still none.
    d.ok(&["restart", "shop/qa"]);
    body(&d, "qa", "/write?v=later").await;
    assert_eq!(
        backups(&d, "shop/qa").len(),
        settled,
        "none taken without a schedule"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_postgres_is_backed_up_by_the_schedule_and_its_snapshot_verifies() {
    let repo = crate::support::Repo::new("");
    repo.write("app.py", crate::data::PG_APP);
    repo.write(
        "turnout.toml",
        "[run]\ncommand = \"exec python3 -u app.py\"\ndrain_timeout = \"5s\"\n\
         [health]\npath = \"/healthz\"\ninterval = \"50ms\"\ntimeout = \"20s\"\n\
         [data]\nengine = \"postgres\"\n",
    );
    repo.commit("a postgres app");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    d.ok(&["deploy", "shop/prod"]);
    let (status, out) = crate::data::sql(
        &d,
        "prod",
        "DATABASE_URL",
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL); INSERT INTO items (name) VALUES ('apple')",
    )
    .await;
    assert_eq!(status, 200, "{out}");

    // Production's default schedule is the exponential one: the scheduler takes the first
    // snapshot by itself.
    let list = d.json(&["backup", "list", "shop/prod"]);
    assert_eq!(list["schedule_from"], "tier default", "{list}");
    assert_eq!(list["schedule"][0], "1m", "{list}");
    // Polling the list while the snapshot is written (its sizes read from the repository)
    // never disturbs the write.
    let snapshot = eventually("a scheduled snapshot of production", WAIT, || async {
        backups(&d, "shop/prod")
            .into_iter()
            .find(|b| b["kind"] == "scheduled" && b["state"] != "writing")
    })
    .await;
    assert_eq!(snapshot["state"], "ready", "{snapshot}");
    assert_eq!(snapshot["engine"], "postgres", "{snapshot}");
    assert_eq!(snapshot["created_by"], "turnout (backup schedule)");
    let j = job(&d, &["backup", "verify", &snapshot["id"].to_string()]);
    assert_eq!(j["state"], "succeeded", "{j}");
    let shown = d.json(&["backup", "show", &snapshot["id"].to_string()]);
    assert!(
        shown["verified_at"].is_string() && shown["verify_error"].is_null(),
        "{shown}"
    );
    let list = d.json(&["backup", "list", "shop/prod"]);
    assert!(list["repository_bytes"].as_u64().unwrap() > 0, "{list}");
    // Production still serves its data.
    let (status, names) =
        crate::data::sql(&d, "prod", "DATABASE_URL", "SELECT name FROM items").await;
    assert_eq!((status, names.as_str()), (200, "apple"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_environment_or_its_app_leaves_nothing_of_its_snapshots_in_the_repository() {
    let repo = sqlite_repo("");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[("qa", "main", "qa"), ("dev", "main", "development")],
    );
    d.ok(&["deploy", "shop/qa"]);
    d.ok(&["deploy", "shop/dev"]);
    for env in ["shop/qa", "shop/dev"] {
        let j = job(&d, &["backup", "create", env]);
        assert_eq!(j["state"], "succeeded", "{j}");
    }
    let dir = d.home.path().join("backups/shop");
    let count = |table: &str| -> i64 {
        let conn = rusqlite::Connection::open(dir.join("repo.sqlite")).unwrap();
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count("manifests"), 2);

    d.ok(&["env", "delete", "shop/qa"]);
    // qa's snapshot is gone with it, and the chunks only it held; dev's is intact.
    assert_eq!(count("manifests"), 1);
    assert_eq!(
        count("refs WHERE n = 0"),
        0,
        "chunks of the deleted snapshot stayed"
    );
    assert_eq!(count("chunks"), count("refs"));
    let j = job(
        &d,
        &[
            "backup",
            "verify",
            &backups(&d, "shop/dev")[0]["id"].to_string(),
        ],
    );
    assert_eq!(j["state"], "succeeded", "{j}");

    d.ok(&["app", "delete", "shop", "--force"]);
    assert!(!dir.exists(), "{} is left", dir.display());
}
