//! Putting data back: a restore to a moment gives exactly the rows that existed then (row for
//! row), into the environment or another of the app; production asks first and says what it
//! discards; a production copy reset then undone is back exactly as the reset left it; a
//! rollback with data across a migration (by its pinned snapshot, or the app's migrate_down);
//! recovery drills that pass and fail, their scratch environment gone either way; and the
//! roles refused.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use turnout_model::{format_timestamp, parse_timestamp};

use crate::data::{Poller, body, rows, sqlite_repo};
use crate::support::{Daemon, eventually};

/// Backups only when asked: no scheduled snapshot lands between the ones a test takes.
const NO_SCHEDULE: &str = "[backup]\nschedule = \"none\"\n";

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A call to the API as the daemon's owner.
async fn api(d: &Daemon, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{}{path}", d.api))
        .bearer_auth(d.admin_token());
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A snapshot of `shop/ENV` now (a backup job, watched to its end): its id and its moment.
/// Returns once the clock has passed that moment's second, so whatever the test writes next
/// is after it.
async fn snapshot(d: &Daemon, env: &str) -> (i64, i64) {
    let (status, job) = api(
        d,
        "POST",
        &format!("/api/v1/apps/shop/envs/{env}/backups"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].to_string();
    let _ = d.cli(&["job", "watch", &id]);
    let end = d.json(&["job", "show", &id]);
    assert_eq!(end["state"], "succeeded", "{end}");
    let newest = backups(d, env).await["backups"][0].clone();
    let taken = parse_timestamp(newest["taken_at"].as_str().unwrap()).unwrap();
    eventually(
        "the clock to pass the snapshot's second",
        Duration::from_secs(5),
        || async { (unix_now() > taken).then_some(()) },
    )
    .await;
    (newest["id"].as_i64().unwrap(), taken)
}

async fn backups(d: &Daemon, env: &str) -> Value {
    let (status, list) = api(
        d,
        "GET",
        &format!("/api/v1/apps/shop/envs/{env}/backups"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    list
}

async fn write(d: &Daemon, env: &str, v: &str) {
    assert_eq!(body(d, env, &format!("/write?v={v}")).await, "ok");
}

fn names(rows: &[(i64, String)]) -> Vec<&str> {
    rows.iter().map(|(_, n)| n.as_str()).collect()
}

/// The columns of `items`, as the app sees them.
async fn columns(d: &Daemon, env: &str) -> String {
    body(
        d,
        env,
        "/q?q=SELECT%20name%20FROM%20pragma_table_info(%27items%27)",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restore_to_a_moment_gives_exactly_the_rows_of_the_newest_snapshot_before_it() {
    let repo = sqlite_repo("");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[("qa", "main", "qa"), ("other", "main", "qa")],
    );
    d.ok(&["deploy", "shop/qa"]);
    d.ok(&["deploy", "shop/other"]);
    let before_any = unix_now() - 3600;
    write(&d, "qa", "a1").await;
    write(&d, "qa", "a2").await;
    let (s1, t1) = snapshot(&d, "qa").await;
    let at_s1 = rows(&d, "qa").await;
    write(&d, "qa", "b1").await;
    let (s2, t2) = snapshot(&d, "qa").await;
    let at_s2 = rows(&d, "qa").await;
    write(&d, "qa", "c1").await;
    assert!(t2 > t1);

    // Nothing that old: refused, saying from when there is; nothing changes.
    let e = d.fails(&[
        "backup",
        "restore",
        "shop/qa",
        "--at",
        &format_timestamp(before_any),
    ]);
    assert!(
        e.contains("no snapshot at or before") && e.contains("oldest"),
        "{e}"
    );
    assert!(names(&rows(&d, "qa").await).contains(&"c1"));
    // A time the daemon does not read: the accepted forms are listed.
    let e = d.fails(&["backup", "restore", "shop/qa", "--at", "last tuesday"]);
    assert!(e.contains("RFC 3339") && e.contains("1 day ago"), "{e}");

    // The moment of the first snapshot (and any moment before the second): its rows exactly,
    // and the job says which snapshot it restored; restored aside and swapped in while a client
    // reads, with no failed request.
    let poller = Poller::start(&d, "qa", "/rows");
    let out = d.ok(&[
        "backup",
        "restore",
        "shop/qa",
        "--at",
        &format_timestamp(t2 - 1),
    ]);
    let (done, errors) = poller.finish().await;
    assert!(
        done > 0 && errors.is_empty(),
        "{} of {done} failed: {errors:?}",
        errors.len()
    );
    assert!(
        out.contains(&format!("snapshot {s1} taken at {}", format_timestamp(t1))),
        "{out}"
    );
    assert_eq!(rows(&d, "qa").await, at_s1);
    let info = d.json(&["data", "show", "shop/qa"]);
    assert_eq!(info["origin"]["kind"], "restore", "{info}");
    assert_eq!(info["generation"], 2, "{info}");
    // Forward again, to the second: the rows written between are back, the later one is not.
    let out = d.ok(&["backup", "restore", "shop/qa", "--at", "now"]);
    assert!(out.contains(&format!("snapshot {s2}")), "{out}");
    assert_eq!(rows(&d, "qa").await, at_s2);
    assert!(!names(&at_s2).contains(&"c1"));

    // Into another environment of the app: its data replaced, the source's untouched.
    write(&d, "other", "mine").await;
    let out = d.ok(&[
        "backup",
        "restore",
        "shop/qa",
        "--snapshot",
        &s1.to_string(),
        "--into",
        "shop/other",
    ]);
    assert!(out.contains(&format!("snapshot {s1}")), "{out}");
    assert_eq!(rows(&d, "other").await, at_s1);
    assert_eq!(rows(&d, "qa").await, at_s2);
    // Another app's environment, or a snapshot of another environment: refused.
    let e = d.fails(&[
        "backup",
        "restore",
        "shop/other",
        "--snapshot",
        &s1.to_string(),
    ]);
    assert!(e.contains(&format!("has no snapshot {s1}")), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_restores_need_confirmation_and_the_right_role() {
    let repo = sqlite_repo(NO_SCHEDULE);
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[("prod", "main", "production"), ("qa", "main", "qa")],
    );
    d.ok(&["deploy", "shop/prod"]);
    d.ok(&["deploy", "shop/qa"]);
    write(&d, "prod", "p1").await;
    let (s1, t1) = snapshot(&d, "prod").await;
    let at_s1 = rows(&d, "prod").await;
    write(&d, "prod", "p2").await;
    snapshot(&d, "prod").await;
    write(&d, "prod", "p3").await;
    let now = rows(&d, "prod").await;

    // Viewers, developers and maintainers may not restore production.
    for (user, role) in [
        ("vic", "viewer"),
        ("dev", "developer"),
        ("mae", "maintainer"),
    ] {
        d.ok(&["user", "add", user]);
        d.ok(&["access", "grant", user, "shop", role]);
        let token = d.json(&["token", "create", "--user", user])["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let out = d.cli_as(
            &token,
            &[
                "backup",
                "restore",
                "shop/prod",
                "--snapshot",
                &s1.to_string(),
                "--yes",
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("forbidden"),
            "{role}: {err}"
        );
    }
    // Without --yes (and no terminal to ask on): refused, saying what would be discarded.
    let e = d.fails(&[
        "backup",
        "restore",
        "shop/prod",
        "--snapshot",
        &s1.to_string(),
    ]);
    assert!(
        e.contains("is production")
            && e.contains("discards every write")
            && e.contains("1 newer snapshot")
            && e.contains("--yes"),
        "{e}"
    );
    // Another environment's data never goes into production.
    let e = d.fails(&[
        "backup",
        "restore",
        "shop/qa",
        "--at",
        "now",
        "--into",
        "shop/prod",
        "--yes",
    ]);
    assert!(e.contains("only from its own backups"), "{e}");
    assert_eq!(
        rows(&d, "prod").await,
        now,
        "a refused restore changes nothing"
    );

    let out = d.ok(&[
        "backup",
        "restore",
        "shop/prod",
        "--at",
        &format_timestamp(t1),
        "--yes",
    ]);
    assert!(out.contains(&format!("snapshot {s1}")), "{out}");
    assert_eq!(rows(&d, "prod").await, at_s1);
    let audit = d.ok(&["audit", "--app", "shop"]);
    assert!(audit.contains("backup.restore"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_copy_reset_then_undone_is_back_exactly_as_the_reset_left_it() {
    let repo = sqlite_repo(NO_SCHEDULE);
    let c1 = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("prod", "main", "production"),
            ("copy", "main", "production-copy"),
        ],
    );
    d.ok(&["deploy", "shop/prod"]);
    write(&d, "prod", "p1").await;
    let (_, t1) = snapshot(&d, "prod").await;
    let at_t1 = rows(&d, "prod").await;
    write(&d, "prod", "p2").await;

    let e = d.fails(&["data", "reset", "shop/prod"]);
    assert!(e.contains("only a production copy"), "{e}");
    let e = d.fails(&["data", "undo", "shop/copy"]);
    assert!(e.contains("has not been reset yet"), "{e}");

    // As of a moment: production's data then.
    d.ok(&["data", "reset", "shop/copy", "--at", &format_timestamp(t1)]);
    assert_eq!(rows(&d, "copy").await, at_t1);
    // As of now (a fresh snapshot of production): its data and its release.
    let out = d.ok(&["data", "reset", "shop/copy"]);
    assert!(out.contains("pin"), "{out}");
    assert_eq!(rows(&d, "copy").await, rows(&d, "prod").await);
    assert_eq!(body(&d, "copy", "/env/TURNOUT_RELEASE").await, c1);
    let as_reset = body(&d, "copy", "/dump").await;

    // Changes in the copy, and a new production release it follows.
    write(&d, "copy", "scribble").await;
    assert_ne!(body(&d, "copy", "/dump").await, as_reset);
    repo.write("NEWS", "v2");
    let c2 = repo.commit("v2");
    d.ok(&["deploy", "shop/prod"]);
    eventually(
        "the copy to follow production",
        Duration::from_secs(60),
        || async {
            (d.get("copy.shop.localhost", "/env/TURNOUT_RELEASE").await.1 == c2).then_some(())
        },
    )
    .await;

    // Undo: code and data exactly as the reset left them, row for row.
    let out = d.ok(&["data", "undo", "shop/copy"]);
    assert!(out.contains("go-live"), "{out}");
    assert_eq!(body(&d, "copy", "/dump").await, as_reset);
    assert_eq!(body(&d, "copy", "/env/TURNOUT_RELEASE").await, c1);
    let audit = d.ok(&["audit", "--app", "shop"]);
    assert!(
        audit.contains("data.reset") && audit.contains("data.undo"),
        "{audit}"
    );
}

/// Release 2's migration: a column (and a row) added once.
const MIGRATE_2: &str = r#"
import os, sqlite3
c = sqlite3.connect(os.environ["TURNOUT_SQLITE_PATH"])
c.executescript("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);")
cols = [r[1] for r in c.execute("PRAGMA table_info(items)")]
if "note" not in cols:
    c.execute("ALTER TABLE items ADD COLUMN note TEXT")
    c.execute("INSERT INTO items (name) VALUES ('from-migration-2')")
    c.commit()
c.close()
"#;

/// Its revert: the column dropped, the rows kept.
const MIGRATE_DOWN: &str = r#"
import os, sqlite3
c = sqlite3.connect(os.environ["TURNOUT_SQLITE_PATH"])
c.execute("ALTER TABLE items DROP COLUMN note")
c.commit()
c.close()
print("dropped items.note", flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_with_data_returns_schema_and_data_to_before_the_migration() {
    let repo = sqlite_repo(NO_SCHEDULE);
    let c1 = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    d.ok(&["deploy", "shop/prod"]);
    write(&d, "prod", "r1").await;
    write(&d, "prod", "r2").await;
    let before = rows(&d, "prod").await;
    let schema_before = columns(&d, "prod").await;

    repo.write("migrate.py", MIGRATE_2);
    repo.commit("release 2 adds items.note");
    let out = d.ok(&["deploy", "shop/prod"]);
    assert!(out.contains("pinned snapshot"), "{out}");
    let list = backups(&d, "prod").await;
    let pinned = &list["backups"][0];
    assert_eq!(pinned["kind"], "pre-migrate", "{list}");
    assert_eq!(pinned["pinned"], true, "{list}");
    assert!(
        pinned["label"]
            .as_str()
            .unwrap()
            .starts_with("before release 2 (commit "),
        "{list}"
    );
    write(&d, "prod", "r3").await;
    assert!(columns(&d, "prod").await.contains("note"));
    assert!(names(&rows(&d, "prod").await).contains(&"from-migration-2"));

    // Without --with-data: the code only (unchanged behaviour) is not what is asked here; in
    // production the data needs confirmation, after saying what it discards.
    let e = d.fails(&["rollback", "shop/prod", "--with-data"]);
    assert!(
        e.contains("discards every write") && e.contains("--yes"),
        "{e}"
    );
    assert!(columns(&d, "prod").await.contains("note"));

    let out = d.ok(&["rollback", "shop/prod", "--with-data", "--yes"]);
    assert!(out.contains("restored"), "{out}");
    assert_eq!(columns(&d, "prod").await, schema_before);
    assert_eq!(rows(&d, "prod").await, before);
    assert_eq!(body(&d, "prod", "/env/TURNOUT_RELEASE").await, c1);

    // A release that declares migrate_down: it runs instead, and the data stays.
    repo.write("down.py", MIGRATE_DOWN);
    repo.write(
        "turnout.toml",
        &crate::data::toml(&format!(
            "migrate_down = \"python3 down.py\"\n{NO_SCHEDULE}"
        )),
    );
    repo.commit("release 3 can revert its migration");
    d.ok(&["deploy", "shop/prod"]);
    assert!(columns(&d, "prod").await.contains("note"));
    write(&d, "prod", "kept").await;
    let kept = rows(&d, "prod").await;
    let out = d.ok(&["rollback", "shop/prod", "--with-data"]);
    assert!(out.contains("migrate_down"), "{out}");
    assert!(out.contains("data kept"), "{out}");
    assert_eq!(columns(&d, "prod").await, schema_before);
    assert_eq!(rows(&d, "prod").await, kept);
}

/// The drill's check: the restored app must hold a row named "must-exist".
const CHECK: &str = r#"
import json, os, sys, urllib.request
rows = json.load(urllib.request.urlopen(os.environ["TURNOUT_DRILL_URL"] + "/rows"))
names = [r[1] for r in rows]
if "must-exist" not in names:
    sys.exit("the restored data has no row named must-exist: %r" % names)
print("drill check passed on %d rows" % len(rows), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_pass_or_fail_by_their_check_and_always_remove_their_scratch_environment() {
    let repo = sqlite_repo("[backup]\nschedule = \"none\"\ndrill_check = \"python3 check.py\"\n");
    repo.write("check.py", CHECK);
    repo.commit("a drill check");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("stg", "main", "staging")]);
    d.ok(&["deploy", "shop/stg"]);
    let (_, t0) = snapshot(&d, "stg").await;
    write(&d, "stg", "must-exist").await;
    let (s1, t1) = snapshot(&d, "stg").await;

    let out = d.ok(&["drill", "shop/stg", "--at", &format_timestamp(t1)]);
    assert!(out.contains("passed") && out.contains("RTO"), "{out}");
    assert!(out.contains(&format!("snapshot {s1}")), "{out}");
    let e = d.fails(&["drill", "shop/stg", "--at", &format_timestamp(t0)]);
    assert!(
        e.contains("failed at check") && e.contains("no row named must-exist"),
        "{e}"
    );

    let envs = d.ok(&["env", "list", "shop"]);
    assert!(!envs.contains("drill-"), "{envs}");
    let list = backups(&d, "stg").await;
    let drills = list["drills"].as_array().unwrap();
    assert_eq!(drills.len(), 2, "{list}");
    let (failed, passed) = (&drills[0], &drills[1]);
    assert_eq!(passed["state"], "passed", "{list}");
    assert!(passed["rto_ms"].as_u64().unwrap() > 0, "{list}");
    assert_eq!(passed["rpo_secs"], 0, "{list}");
    assert_eq!(failed["state"], "failed", "{list}");
    assert!(
        failed["error"].as_str().unwrap().contains("must-exist"),
        "{list}"
    );
    // Nothing of the scratch environments is left beside the source's directory.
    let path = body(&d, "stg", "/env/TURNOUT_SQLITE_PATH").await;
    let envs_dir = std::path::Path::new(&path).ancestors().nth(4).unwrap();
    let left: Vec<String> = std::fs::read_dir(envs_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["stg"], "in {}", envs_dir.display());
    let audit = d.ok(&["audit", "--app", "shop"]);
    assert!(audit.contains("backup.drill"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_the_daemon_was_killed_in_is_recorded_failed_and_its_scratch_environment_removed() {
    // A check that never ends: the drill is still running when the daemon is killed.
    let repo = sqlite_repo(
        "[backup]\nschedule = \"none\"\ndrill_check = \"python3 -c 'import time; time.sleep(3600)'\"\n",
    );
    let mut d = Daemon::start();
    d.create("shop", repo.path(), &[("stg", "main", "staging")]);
    d.ok(&["deploy", "shop/stg"]);
    let (_, t1) = snapshot(&d, "stg").await;
    d.ok(&[
        "drill",
        "shop/stg",
        "--at",
        &format_timestamp(t1),
        "--detach",
    ]);
    eventually(
        "the drill's check runs",
        Duration::from_secs(120),
        || async {
            let list = backups(&d, "stg").await;
            let running = list["drills"][0]["state"] == "running";
            (running && d.ok(&["env", "list", "shop"]).contains("drill-1")).then_some(())
        },
    )
    .await;
    d.kill_and_restart();

    let list = backups(&d, "stg").await;
    let drills = list["drills"].as_array().unwrap();
    assert_eq!(drills.len(), 1, "{list}");
    assert_eq!(drills[0]["state"], "failed", "{list}");
    assert!(
        drills[0]["error"].as_str().unwrap().contains("interrupted"),
        "{list}"
    );
    let envs = d.ok(&["env", "list", "shop"]);
    assert!(!envs.contains("drill-"), "{envs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_from_a_corrupted_snapshot_fails_and_leaves_the_data_serving() {
    let repo = sqlite_repo("");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    d.ok(&["deploy", "shop/qa"]);
    write(&d, "qa", "a1").await;
    let (s1, _) = snapshot(&d, "qa").await;
    write(&d, "qa", "b1").await;
    let serving = body(&d, "qa", "/dump").await;
    // Every chunk of the repository damaged: the restore must refuse, not restore wrong data.
    let conn = rusqlite::Connection::open(d.home.path().join("backups/shop/repo.sqlite")).unwrap();
    conn.execute("UPDATE chunks SET data = randomblob(64)", [])
        .unwrap();
    drop(conn);

    let e = d.fails(&[
        "backup",
        "restore",
        "shop/qa",
        "--snapshot",
        &s1.to_string(),
    ]);
    assert!(
        e.contains("failed at restore") && e.contains("corrupted"),
        "{e}"
    );
    assert!(e.contains("keeps serving"), "{e}");
    // Generation 1 serves as before; nothing of the half-written generation 2 is left.
    assert_eq!(body(&d, "qa", "/dump").await, serving);
    let info = d.json(&["data", "show", "shop/qa"]);
    assert_eq!(info["generation"], 1, "{info}");
    let path = body(&d, "qa", "/env/TURNOUT_SQLITE_PATH").await;
    let data_dir = std::path::Path::new(&path)
        .parent()
        .unwrap()
        .parent()
        .unwrap();
    let generations: Vec<String> = std::fs::read_dir(data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(generations, ["g1"], "in {}", data_dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restores_to_any_moment_of_its_wal_window_row_for_row() {
    use crate::data::{PG_APP, sql};
    let repo = crate::support::Repo::new("");
    repo.write("app.py", PG_APP);
    repo.write(
        "seed.sql",
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);\n\
         INSERT INTO items (name) VALUES ('apple'), ('pear');\n",
    );
    repo.write(
        "turnout.toml",
        &format!(
            "[run]\ncommand = \"exec python3 -u app.py\"\ndrain_timeout = \"5s\"\n\
             [health]\npath = \"/healthz\"\ninterval = \"50ms\"\ntimeout = \"20s\"\n\
             [data]\nengine = \"postgres\"\nseed_sql = \"seed.sql\"\n{NO_SCHEDULE}"
        ),
    );
    repo.commit("a postgres app");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    d.ok(&["deploy", "shop/qa"]);
    let insert = |v: &'static str| {
        let d = &d;
        async move {
            let (status, out) = sql(
                d,
                "qa",
                "DATABASE_URL",
                &format!("INSERT INTO items (name) VALUES ('{v}')"),
            )
            .await;
            assert_eq!(status, 200, "{out}");
        }
    };
    let all = || async {
        let (status, out) = sql(
            &d,
            "qa",
            "DATABASE_URL",
            "SELECT id, name FROM items ORDER BY id",
        )
        .await;
        assert_eq!(status, 200, "{out}");
        out
    };
    insert("a1").await;
    let (s1, _) = snapshot(&d, "qa").await;
    insert("b1").await;
    // A moment after b1 committed and before c1 does: no snapshot was taken at it.
    let t = unix_now() + 1;
    let at_t = all().await;
    eventually(
        "the clock to pass the moment",
        Duration::from_secs(5),
        || async { (unix_now() > t).then_some(()) },
    )
    .await;
    insert("c1").await;
    let now = all().await;
    assert_ne!(now, at_t);

    let out = d.ok(&["backup", "restore", "shop/qa", "--at", &format_timestamp(t)]);
    assert!(out.contains(&format!("snapshot {s1}")), "{out}");
    assert_eq!(
        all().await,
        at_t,
        "exactly the rows committed at or before the moment"
    );
    let info = d.json(&["data", "show", "shop/qa"]);
    assert_eq!(info["generation"], 2, "{info}");
    // The restored cluster takes writes.
    insert("d1").await;
    assert!(all().await.contains("d1"));
}
