//! Each environment's data (`turnout data …`): a real SQLite file or a real PostgreSQL cluster
//! per environment and generation, reached by the app through DATABASE_URL; seeds that give the
//! same data twice; clones and syncs made while the source takes writes and swapped in without
//! a failed request; strict masking; attachments whose modes the database enforces; and the
//! attacks: nothing of a lower environment is ever written into production.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::support::{Daemon, Repo, eventually, get};

/// A SQLite app: one connection kept open (as apps do), `/write?v=X` inserts into `items`,
/// `/rows` and `/q?q=SQL` read, `/dump` dumps the whole database, `/env/NAME` shows a variable.
const SQLITE_APP: &str = r#"
import os, json, sqlite3, threading, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
lock = threading.Lock()
conn = sqlite3.connect(os.environ["TURNOUT_SQLITE_PATH"], timeout=30, check_same_thread=False, isolation_level=None)
def q(sql, args=()):
    with lock:
        return conn.execute(sql, args).fetchall()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        p = urllib.parse.parse_qs(u.query)
        status = 200
        try:
            if u.path == "/healthz": body = "ok"
            elif u.path.startswith("/env/"): body = os.environ.get(u.path[5:], "(unset)")
            elif u.path == "/write":
                q("INSERT INTO items (name) VALUES (?)", (p["v"][0],)); body = "ok"
            elif u.path == "/rows": body = json.dumps(q("SELECT id, name FROM items ORDER BY id"))
            elif u.path == "/q": body = json.dumps(q(p["q"][0]))
            elif u.path == "/dump":
                with lock: body = "\n".join(conn.iterdump())
            else: status, body = 404, "no"
        except Exception as e:
            status, body = 500, repr(e)
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a): pass
s = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
s.daemon_threads = True
s.serve_forever()
"#;

/// Every deploy's migration: the tables, if missing.
const MIGRATE: &str = r#"
import os, sqlite3
c = sqlite3.connect(os.environ["TURNOUT_SQLITE_PATH"])
c.executescript("""
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, email TEXT, name TEXT);
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, email TEXT, total INTEGER);
""")
c.close()
print("migrated", flush=True)
"#;

const SEED: &str = "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n\
INSERT INTO items (name) VALUES ('apple'), ('pear'), ('plum');\n";

pub(crate) fn toml(extra: &str) -> String {
    format!(
        "[run]\ncommand = \"exec python3 -u app.py\"\ndrain_timeout = \"5s\"\nstop_timeout = \"5s\"\n\
         [health]\npath = \"/healthz\"\ninterval = \"50ms\"\ntimeout = \"20s\"\n\
         [data]\nengine = \"sqlite\"\nseed_sql = \"seed.sql\"\nmigrate = \"python3 migrate.py\"\n{extra}"
    )
}

pub(crate) fn sqlite_repo(extra: &str) -> Repo {
    let repo = Repo::new("");
    repo.write("app.py", SQLITE_APP);
    repo.write("migrate.py", MIGRATE);
    repo.write("seed.sql", SEED);
    repo.write("turnout.toml", &toml(extra));
    repo.commit("a sqlite app");
    repo
}

fn host(env: &str) -> String {
    format!("{env}.shop.localhost")
}

pub(crate) async fn body(d: &Daemon, env: &str, path: &str) -> String {
    let (status, body) = d.get(&host(env), path).await;
    assert_eq!(status, 200, "GET {path} on {env}: {body}");
    body
}

pub(crate) async fn rows(d: &Daemon, env: &str) -> Vec<(i64, String)> {
    serde_json::from_str(&body(d, env, "/rows").await).unwrap()
}

/// Run a data job detached and wait for its end; its final state.
fn job(d: &Daemon, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--detach");
    let id = d.json(&all)["id"].as_i64().unwrap().to_string();
    let _ = d.cli(&["job", "watch", &id]);
    d.json(&["job", "show", &id])
}

/// GETs `path` on `env` over and over until stopped; counts the answers that were not 200.
pub(crate) struct Poller {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Poller {
    pub(crate) fn start(d: &Daemon, env: &str, path: &'static str) -> Poller {
        let (stop, failed, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, f, n, proxy, h) = (
            stop.clone(),
            failed.clone(),
            done.clone(),
            d.http,
            host(env),
        );
        let task = tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut i = 0u64;
            while !s.load(Ordering::SeqCst) {
                i += 1;
                let path = path.replace("{i}", &i.to_string());
                let (status, body) = get(proxy, &h, &path).await;
                n.fetch_add(1, Ordering::SeqCst);
                if status != 200 {
                    f.fetch_add(1, Ordering::SeqCst);
                    errors.push(format!("{status} {body}"));
                }
            }
            errors
        });
        Poller {
            stop,
            failed,
            done,
            task,
        }
    }

    /// Stop; (requests made, the failures).
    pub(crate) async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self.task.await.unwrap();
        assert_eq!(self.failed.load(Ordering::SeqCst), errors.len());
        (self.done.load(Ordering::SeqCst), errors)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_data_reaches_the_app_and_a_reseed_gives_the_same_data_without_a_failed_request() {
    let repo = sqlite_repo("");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    let out = d.ok(&["deploy", "shop/qa"]);
    assert!(out.contains("migrate"), "{out}");
    let url = body(&d, "qa", "/env/DATABASE_URL").await;
    let path = body(&d, "qa", "/env/TURNOUT_SQLITE_PATH").await;
    let storage = body(&d, "qa", "/env/TURNOUT_STORAGE_DIR").await;
    assert_eq!(url, format!("sqlite://{path}"));
    assert!(path.ends_with("/data/g1/db.sqlite"), "{path}");
    assert!(storage.ends_with("/data/g1/storage"), "{storage}");
    // Seeded below production, migrated at the deploy.
    assert_eq!(
        rows(&d, "qa").await,
        [(1, "apple".into()), (2, "pear".into()), (3, "plum".into())]
    );
    let shown = d.ok(&["data", "show", "shop/qa"]);
    assert!(shown.contains("shop/qa: sqlite, generation 1"), "{shown}");
    let info = d.json(&["data", "show", "shop/qa"]);
    assert_eq!(info["engine"], "sqlite", "{info}");
    assert_eq!(info["generation"], 1, "{info}");
    assert_eq!(info["origin"]["kind"], "seed", "{info}");
    body(&d, "qa", "/write?v=scribble").await;
    let first = body(&d, "qa", "/dump").await;

    // A reseed while a client polls: the new copy swaps in with no failed request.
    let poller = Poller::start(&d, "qa", "/rows");
    let j = job(&d, &["data", "reseed", "shop/qa"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    let steps: Vec<&str> = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["create", "seed", "migrate", "launch", "go-live", "retire"]
    );
    let (made, failed) = poller.finish().await;
    assert!(made > 0 && failed.is_empty(), "{made} requests: {failed:?}");
    assert_eq!(
        rows(&d, "qa").await.len(),
        3,
        "the scribble went with the old data"
    );
    let second = body(&d, "qa", "/dump").await;
    assert_ne!(first, second);
    let info = d.json(&["data", "show", "shop/qa"]);
    assert_eq!(info["generation"], 2, "{info}");
    assert!(
        info["storage_dir"]
            .as_str()
            .unwrap()
            .ends_with("g2/storage"),
        "{info}"
    );
    // Same seed, same data: a second reseed dumps identically.
    let j = job(&d, &["data", "seed", "shop/qa"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(body(&d, "qa", "/dump").await, second);
    let env = d.json(&["env", "show", "shop/qa"]);
    let dir = std::path::Path::new(env["dir"].as_str().unwrap()).join("data");
    let mut generations: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    generations.sort();
    assert_eq!(generations, ["g3"], "old generations are removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_is_consistent_while_the_source_takes_writes_and_production_is_never_written() {
    let repo = sqlite_repo("");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[("prod", "main", "production"), ("qa", "main", "qa")],
    );
    d.ok(&["deploy", "shop/prod"]);
    d.ok(&["deploy", "shop/qa"]);
    // Production is never seeded.
    assert!(rows(&d, "prod").await.is_empty());
    for i in 0..20 {
        body(&d, "prod", &format!("/write?v=before{i}")).await;
    }
    let writer = Poller::start(&d, "prod", "/write?v=during{i}");
    let reader = Poller::start(&d, "qa", "/rows");
    let j = job(&d, &["data", "clone", "shop/prod", "shop/qa"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    let watched = d.ok(&["job", "watch", &j["id"].to_string()]);
    assert!(watched.contains("copied"), "progress in bytes: {watched}");
    let (writes, failed_writes) = writer.finish().await;
    let (reads, failed_reads) = reader.finish().await;
    assert!(writes > 0 && failed_writes.is_empty(), "{failed_writes:?}");
    assert!(reads > 0 && failed_reads.is_empty(), "{failed_reads:?}");
    // A consistent copy: production's rows as of one moment, no gap, nothing torn.
    let copy = rows(&d, "qa").await;
    let source = rows(&d, "prod").await;
    assert!(copy.len() >= 20 && copy.len() <= source.len(), "{copy:?}");
    assert_eq!(copy[..], source[..copy.len()]);
    let info = d.json(&["data", "show", "shop/qa"]);
    assert_eq!(info["origin"]["kind"], "clone", "{info}");
    assert_eq!(info["origin"]["from"], "shop/prod", "{info}");

    // ATTACK: nothing flows into production, by clone or sync.
    body(&d, "qa", "/write?v=from-qa").await;
    let before = body(&d, "prod", "/dump").await;
    let err = d.fails(&["data", "clone", "shop/qa", "shop/prod"]);
    assert!(
        err.contains("production") && err.contains("restore"),
        "{err}"
    );
    let err = d.fails(&["data", "sync", "shop/prod", "--from", "shop/prod"]);
    assert!(
        err.contains("itself") || err.contains("production"),
        "{err}"
    );
    let err = d.fails(&["data", "seed", "shop/prod"]);
    assert!(err.contains("production"), "{err}");
    // A sync reads only production.
    let err = d.fails(&["data", "sync", "shop/prod", "--from", "shop/qa"]);
    assert!(err.contains("production"), "{err}");
    assert_eq!(body(&d, "prod", "/dump").await, before);
    assert_eq!(d.json(&["data", "show", "shop/prod"])["generation"], 1);
}

const MASKED: &str = "[data.mask.items]\n\"*\" = \"keep\"\n[data.mask.users]\nid = \"keep\"\nemail = \"fake:email\"\nname = \"fake:name\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_is_masked_strictly_with_the_same_pseudonym_in_every_table() {
    let repo = sqlite_repo(MASKED);
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("prod", "main", "production"),
            ("staging", "main", "staging"),
        ],
    );
    d.ok(&["deploy", "shop/prod"]);
    d.ok(&["deploy", "shop/staging"]);
    for sql in [
        "INSERT INTO users (email, name) VALUES ('ada@example.com', 'Ada Lovelace')",
        "INSERT INTO orders (email, total) VALUES ('ada@example.com', 42)",
    ] {
        let path = format!("/q?q={}", sql.replace(' ', "%20").replace('\'', "%27"));
        body(&d, "prod", &path).await;
    }
    let staging_before = body(&d, "staging", "/dump").await;

    // Strict: `orders` has no rule, so the sync fails naming each unmasked column, and
    // staging keeps its data.
    let j = job(&d, &["data", "sync", "shop/staging", "--from", "shop/prod"]);
    assert_eq!(j["state"], "failed", "{j}");
    let error = j["error"].as_str().unwrap();
    for column in ["orders.email", "orders.total", "orders.id"] {
        assert!(error.contains(column), "{error}");
    }
    assert_eq!(body(&d, "staging", "/dump").await, staging_before);
    assert_eq!(d.json(&["data", "show", "shop/staging"])["generation"], 1);

    // The rule added (a new deploy of staging's turnout.toml), the sync goes through.
    repo.write(
        "turnout.toml",
        &toml(&format!(
            "{MASKED}[data.mask.orders]\nemail = \"fake:email\"\ntotal = \"keep\"\nid = \"keep\"\n"
        )),
    );
    repo.commit("mask orders too");
    d.ok(&["deploy", "shop/staging"]);
    let j = job(&d, &["data", "sync", "shop/staging", "--from", "shop/prod"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    let users: Vec<(String, String)> = serde_json::from_str(
        &body(&d, "staging", "/q?q=SELECT%20email,%20name%20FROM%20users").await,
    )
    .unwrap();
    let orders: Vec<(String, i64)> = serde_json::from_str(
        &body(
            &d,
            "staging",
            "/q?q=SELECT%20email,%20total%20FROM%20orders",
        )
        .await,
    )
    .unwrap();
    assert_eq!(users.len(), 1);
    assert_ne!(users[0].0, "ada@example.com");
    assert_ne!(users[0].1, "Ada Lovelace");
    assert_eq!(orders, [(users[0].0.clone(), 42)], "joins still match");
    let info = d.json(&["data", "show", "shop/staging"]);
    assert_eq!(info["origin"]["kind"], "sync", "{info}");
    // Production itself is untouched.
    let prod: Vec<(String,)> =
        serde_json::from_str(&body(&d, "prod", "/q?q=SELECT%20email%20FROM%20users").await)
            .unwrap();
    assert_eq!(prod, [("ada@example.com".to_owned(),)]);

    // `--from-backup`: production's newest backup, not its live data (a user added after the
    // backup does not come over), masked the same way.
    let j = job(&d, &["backup", "create", "shop/prod"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    let sql = "INSERT INTO users (email, name) VALUES ('grace@example.com', 'Grace Hopper')";
    body(
        &d,
        "prod",
        &format!("/q?q={}", sql.replace(' ', "%20").replace('\'', "%27")),
    )
    .await;
    let j = job(
        &d,
        &[
            "data",
            "sync",
            "shop/staging",
            "--from",
            "shop/prod",
            "--from-backup",
        ],
    );
    assert_eq!(j["state"], "succeeded", "{j}");
    let synced: Vec<(String, String)> = serde_json::from_str(
        &body(&d, "staging", "/q?q=SELECT%20email,%20name%20FROM%20users").await,
    )
    .unwrap();
    assert_eq!(synced, users, "the backup's one user, masked as before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_cannot_touch_data_and_lower_environments_cannot_write_production() {
    let repo = sqlite_repo("");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[("prod", "main", "production"), ("qa", "main", "qa")],
    );
    d.ok(&["deploy", "shop/prod"]);
    d.ok(&["deploy", "shop/qa"]);
    d.ok(&["user", "add", "vic"]);
    d.ok(&["access", "grant", "vic", "shop", "viewer"]);
    let token = d.json(&["token", "create", "--user", "vic"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // A viewer sees the data's description, never its password, and changes nothing.
    let out = d.cli_as(&token, &["--json", "data", "show", "shop/qa"]);
    assert!(out.status.success(), "{out:?}");
    for args in [
        &["data", "seed", "shop/qa"][..],
        &["data", "clone", "shop/prod", "shop/qa"],
        &["data", "sqlite", "shop/qa", "--json"],
        &[
            "data",
            "attach",
            "shop/qa",
            "--to",
            "shop/prod",
            "--mode",
            "read",
        ],
    ] {
        let out = d.cli_as(&token, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains("forbidden"), "{args:?}: {err}");
    }
    assert_eq!(d.json(&["data", "show", "shop/qa"])["generation"], 1);
    // The configuration role gets the connection (audited).
    let conn = d.json(&["data", "sqlite", "shop/qa"]);
    assert!(
        conn["url"].as_str().unwrap().ends_with("g1/db.sqlite"),
        "{conn}"
    );
    let err = d.fails(&["data", "psql", "shop/qa"]);
    assert!(err.contains("sqlite"), "{err}");
    let audit = d.ok(&["audit", "--app", "shop"]);
    assert!(audit.contains("data.connect"), "{audit}");

    // A lower environment never gets write access to production's database.
    for mode in ["read-write", "append"] {
        let err = d.fails(&[
            "data",
            "attach",
            "shop/qa",
            "--to",
            "shop/prod",
            "--mode",
            mode,
        ]);
        assert!(err.contains("never writes production"), "{mode}: {err}");
    }
    // SQLite files are one user's: across environments' users, PostgreSQL is the way.
    let err = d.fails(&[
        "data",
        "attach",
        "shop/qa",
        "--to",
        "shop/prod",
        "--mode",
        "read",
    ]);
    assert!(err.contains("postgres"), "{err}");
    assert!(
        d.json(&["data", "show", "shop/qa"])["attachments"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // New data goes live by relaunching: a stopped environment is not started by it.
    d.ok(&["env", "stop", "shop/qa"]);
    let err = d.fails(&["data", "reseed", "shop/qa"]);
    assert!(err.contains("turnout env start shop/qa"), "{err}");
    assert_eq!(d.json(&["env", "show", "shop/qa"])["status"], "stopped");
}

/// A PostgreSQL app: it reaches its database over TCP with `psql "$DATABASE_URL"`, and runs
/// any SQL on any URL variable it was given (`/sql?var=NAME&q=SQL`).
pub(crate) const PG_APP: &str = r#"
import os, subprocess, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        p = urllib.parse.parse_qs(u.query)
        if u.path == "/healthz": status, body = 200, "ok"
        elif u.path.startswith("/env/"): status, body = 200, os.environ.get(u.path[5:], "(unset)")
        elif u.path == "/sql":
            url = p["url"][0] if "url" in p else os.environ[p.get("var", ["DATABASE_URL"])[0]]
            r = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-tAc", p["q"][0]],
                capture_output=True, text=True)
            status = 200 if r.returncode == 0 else 500
            body = (r.stdout if r.returncode == 0 else r.stderr).strip()
        else: status, body = 404, "no"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a): pass
s = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
s.daemon_threads = True
s.serve_forever()
"#;

pub(crate) async fn sql(d: &Daemon, env: &str, var: &str, q: &str) -> (u16, String) {
    let q: String = q
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    d.get(&host(env), &format!("/sql?var={var}&q={q}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_per_environment_clone_and_attachments_enforced_by_the_database() {
    let repo = Repo::new("");
    repo.write("app.py", PG_APP);
    repo.write(
        "seed.sql",
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);\n\
         INSERT INTO items (name) VALUES ('apple'), ('pear');\n",
    );
    repo.write(
        "turnout.toml",
        "[run]\ncommand = \"exec python3 -u app.py\"\ndrain_timeout = \"5s\"\n\
         [health]\npath = \"/healthz\"\ninterval = \"50ms\"\ntimeout = \"20s\"\n\
         [data]\nengine = \"postgres\"\nseed_sql = \"seed.sql\"\n",
    );
    repo.commit("a postgres app");
    let d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[
            ("qa", "main", "qa"),
            ("staging", "main", "staging"),
            ("prod", "main", "production"),
        ],
    );
    for env in ["qa", "staging", "prod"] {
        d.ok(&["deploy", &format!("shop/{env}")]);
    }
    // Production is not seeded: its app makes its own table.
    let (status, out) = sql(
        &d,
        "prod",
        "DATABASE_URL",
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)",
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let url = body(&d, "qa", "/env/DATABASE_URL").await;
    assert!(
        url.starts_with("postgres://") && url.contains("@127.0.0.1:"),
        "{url}"
    );
    let (status, names) = sql(
        &d,
        "qa",
        "DATABASE_URL",
        "SELECT name FROM items ORDER BY id",
    )
    .await;
    assert_eq!((status, names.as_str()), (200, "apple\npear"));
    let info = d.json(&["data", "show", "shop/qa"]);
    assert_eq!(info["engine"], "postgres", "{info}");
    assert!(info["url"].as_str().unwrap().contains(":****@"), "{info}");
    assert!(
        !info["url"]
            .as_str()
            .unwrap()
            .contains(url.split(':').nth(2).unwrap().split('@').next().unwrap())
    );

    // ATTACK: staging's credentials do not open qa's database, even over qa's unix socket
    // (which every environment can reach).
    let staging_url = body(&d, "staging", "/env/DATABASE_URL").await;
    let qa_conn = d.json(&["data", "psql", "shop/qa"])["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(qa_conn.contains("host="), "{qa_conn}");
    let creds = |u: &str| {
        u.trim_start_matches("postgres://")
            .split('@')
            .next()
            .unwrap()
            .to_owned()
    };
    let foreign = qa_conn.replace(&creds(&qa_conn), &creds(&staging_url));
    let encoded: String = foreign.bytes().map(|b| format!("%{b:02X}")).collect();
    let (status, err) = d
        .get(
            &host("staging"),
            &format!("/sql?url={encoded}&q=SELECT%201"),
        )
        .await;
    assert_eq!(status, 500, "{err}");
    assert!(
        err.contains("authentication failed") || err.contains("permission denied"),
        "{err}"
    );

    // A clone of qa into staging while qa keeps serving.
    sql(
        &d,
        "qa",
        "DATABASE_URL",
        "INSERT INTO items (name) VALUES ('fig')",
    )
    .await;
    let j = job(&d, &["data", "clone", "shop/qa", "shop/staging"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    let (_, names) = sql(
        &d,
        "staging",
        "DATABASE_URL",
        "SELECT name FROM items ORDER BY id",
    )
    .await;
    assert_eq!(names, "apple\npear\nfig");
    assert_ne!(body(&d, "staging", "/env/DATABASE_URL").await, staging_url);

    // Attachments: the database itself enforces the mode.
    d.ok(&[
        "data",
        "attach",
        "shop/staging",
        "--to",
        "shop/qa",
        "--mode",
        "read",
    ]);
    d.ok(&[
        "data",
        "attach",
        "shop/staging",
        "--to",
        "shop/prod",
        "--mode",
        "read",
        "--as",
        "PROD_RO",
    ]);
    let err = d.fails(&[
        "data",
        "attach",
        "shop/staging",
        "--to",
        "shop/prod",
        "--mode",
        "append",
    ]);
    assert!(err.contains("never writes production"), "{err}");
    d.ok(&["restart", "shop/staging"]);
    let (status, rows) = sql(
        &d,
        "staging",
        "QA_DATABASE_URL",
        "SELECT count(*) FROM items",
    )
    .await;
    assert_eq!((status, rows.as_str()), (200, "3"));
    let (status, err) = sql(
        &d,
        "staging",
        "QA_DATABASE_URL",
        "UPDATE items SET name = 'x'",
    )
    .await;
    assert_eq!(status, 500);
    assert!(err.contains("permission denied"), "{err}");
    let (status, _) = sql(&d, "staging", "PROD_RO", "SELECT count(*) FROM items").await;
    assert_eq!(status, 200);
    let (status, err) = sql(&d, "staging", "PROD_RO", "DELETE FROM items").await;
    assert!(status == 500 && err.contains("permission denied"), "{err}");
    // Append: INSERT, but no DELETE.
    d.ok(&[
        "data",
        "attach",
        "shop/staging",
        "--to",
        "shop/qa",
        "--mode",
        "append",
    ]);
    d.ok(&["restart", "shop/staging"]);
    let (status, out) = sql(
        &d,
        "staging",
        "QA_DATABASE_URL",
        "INSERT INTO items (name) VALUES ('kiwi')",
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let (status, err) = sql(&d, "staging", "QA_DATABASE_URL", "DELETE FROM items").await;
    assert!(status == 500 && err.contains("permission denied"), "{err}");
    // A new generation of qa's data gets the attached role again before it goes live: after
    // a reseed of qa (and staging's restart, for qa's new URL) the mode still holds.
    let j = job(&d, &["data", "reseed", "shop/qa"]);
    assert_eq!(j["state"], "succeeded", "{j}");
    d.ok(&["restart", "shop/staging"]);
    let (status, rows) = sql(
        &d,
        "staging",
        "QA_DATABASE_URL",
        "SELECT count(*) FROM items",
    )
    .await;
    assert_eq!((status, rows.as_str()), (200, "2"));
    let (status, err) = sql(&d, "staging", "QA_DATABASE_URL", "DELETE FROM items").await;
    assert!(status == 500 && err.contains("permission denied"), "{err}");
    let shown = d.ok(&["data", "show", "shop/staging"]);
    assert!(
        shown.contains("QA_DATABASE_URL") && shown.contains("append"),
        "{shown}"
    );
    let info = d.json(&["data", "detach", "shop/staging", "--to", "shop/qa"]);
    assert_eq!(info["attachments"].as_array().unwrap().len(), 1, "{info}");
}

/// `postmaster.pid` of each running cluster of the environment.
fn running_clusters(d: &Daemon, env: &str) -> usize {
    let dir = d.home.path().join(format!("apps/shop/envs/{env}/pg"));
    std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("postmaster.pid").exists())
                .count()
        })
        .unwrap_or(0)
}

/// psql here, with the environment's own connection (`data psql --json`).
fn psql(d: &Daemon, env: &str, q: &str) -> String {
    let conn = d.json(&["data", "psql", &format!("shop/{env}")]);
    let out = std::process::Command::new("psql")
        .arg(conn["url"].as_str().unwrap())
        .args(["-v", "ON_ERROR_STOP=1", "-tAc", q])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_clusters_outlive_the_control_plane_stop_with_the_daemon_and_go_with_their_environment()
 {
    let repo = Repo::new("");
    repo.write("app.py", PG_APP);
    repo.write(
        "seed.sql",
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);\n",
    );
    repo.write(
        "turnout.toml",
        "[run]\ncommand = \"exec python3 -u app.py\"\ndrain_timeout = \"5s\"\n\
         [health]\npath = \"/healthz\"\ninterval = \"50ms\"\ntimeout = \"20s\"\n\
         [data]\nengine = \"postgres\"\nseed_sql = \"seed.sql\"\n",
    );
    repo.commit("a postgres app");
    let mut d = Daemon::start();
    d.create(
        "shop",
        repo.path(),
        &[("qa", "main", "qa"), ("staging", "main", "staging")],
    );
    d.ok(&["deploy", "shop/qa"]);
    d.ok(&["deploy", "shop/staging"]);
    let (status, out) = sql(
        &d,
        "qa",
        "DATABASE_URL",
        "INSERT INTO items (name) VALUES ('kept')",
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(running_clusters(&d, "qa"), 1);

    // The control plane alone leaves: the cluster serves on, and the next daemon uses it.
    d.terminate();
    assert_eq!(running_clusters(&d, "qa"), 1);
    d.start_again();
    let (_, names) = sql(&d, "qa", "DATABASE_URL", "SELECT name FROM items").await;
    assert_eq!(names, "kept");

    // A full stop stops the clusters; the next start starts them before the instances, and
    // those of environments that start no instance (stopped here) too, for their attachments.
    d.ok(&["env", "stop", "shop/staging"]);
    assert!(d.stop().success());
    assert_eq!(running_clusters(&d, "qa"), 0);
    assert_eq!(running_clusters(&d, "staging"), 0);
    d.start_again();
    eventually(
        "the stopped environment's cluster",
        Duration::from_secs(60),
        || {
            let d = &d;
            async move { (running_clusters(d, "staging") == 1).then_some(()) }
        },
    )
    .await;
    let names = eventually("qa back on its data", Duration::from_secs(60), || {
        let d = &d;
        async move {
            let (status, names) = sql(d, "qa", "DATABASE_URL", "SELECT name FROM items").await;
            (status == 200).then_some(names)
        }
    })
    .await;
    assert_eq!(names, "kept");

    // Deleting an environment removes its data and its roles in others' databases.
    d.ok(&[
        "data",
        "attach",
        "shop/staging",
        "--to",
        "shop/qa",
        "--mode",
        "read",
    ]);
    assert_eq!(
        psql(
            &d,
            "qa",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'att_staging'"
        ),
        "1"
    );
    d.ok(&["env", "delete", "shop/staging"]);
    assert_eq!(
        psql(
            &d,
            "qa",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'att_staging'"
        ),
        "0"
    );
    d.ok(&["env", "delete", "shop/qa"]);
    assert!(!d.home.path().join("apps/shop/envs/qa").exists());
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_command_gets_the_new_data_a_cancel_keeps_the_old_and_an_engine_change_is_refused() {
    let repo = sqlite_repo("");
    repo.write(
        "seed.py",
        "import os, sqlite3, time\n\
         c = sqlite3.connect(os.environ['TURNOUT_SQLITE_PATH'])\n\
         c.executescript(\"CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\
         INSERT INTO items (name) VALUES ('from-command');\")\n\
         c.commit()\n\
         print('seeded', os.environ['DATABASE_URL'], flush=True)\n\
         if os.path.exists('slow'): time.sleep(120)\n",
    );
    repo.write(
        "turnout.toml",
        &toml("").replace("seed_sql = \"seed.sql\"", "seed = \"python3 seed.py\""),
    );
    repo.commit("a seed command");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    d.ok(&["deploy", "shop/qa"]);
    assert_eq!(rows(&d, "qa").await, [(1, "from-command".into())]);

    // A reseed whose seed hangs, cancelled: the new copy goes, the old one serves on.
    repo.write("slow", "1");
    repo.commit("a slow seed");
    d.ok(&["deploy", "shop/qa"]);
    body(&d, "qa", "/write?v=kept").await;
    let id = d.json(&["data", "reseed", "shop/qa", "--detach"])["id"]
        .as_i64()
        .unwrap()
        .to_string();
    eventually("the seed to run", Duration::from_secs(60), || {
        let d = &d;
        let id = id.clone();
        async move {
            let job = d.json(&["job", "show", &id]);
            (job["steps"][1]["state"] == "running").then_some(())
        }
    })
    .await;
    let watched = eventually("the seed's output", Duration::from_secs(60), || {
        let d = &d;
        let id = id.clone();
        async move {
            let events = std::fs::read_to_string(d.home.path().join(format!("jobs/{id}.ndjson")))
                .unwrap_or_default();
            events.contains("seeded sqlite:///").then_some(events)
        }
    })
    .await;
    assert!(
        watched.contains("g2/db.sqlite"),
        "the new generation's URL: {watched}"
    );
    d.ok(&["job", "cancel", &id]);
    let job = d.json(&["job", "show", &id]);
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(
        rows(&d, "qa").await,
        [(1, "from-command".into()), (2, "kept".into())]
    );
    assert_eq!(d.json(&["data", "show", "shop/qa"])["generation"], 1);
    let env = d.json(&["env", "show", "shop/qa"]);
    let data = std::path::Path::new(env["dir"].as_str().unwrap()).join("data");
    assert!(!data.join("g2").exists(), "the cancelled copy is removed");

    // A release that declares another engine is refused, saying how to change it.
    repo.write(
        "turnout.toml",
        &toml("")
            .replace("seed_sql = \"seed.sql\"", "seed = \"python3 seed.py\"")
            .replace("engine = \"sqlite\"", "engine = \"postgres\""),
    );
    repo.commit("postgres now");
    let out = d.cli(&["deploy", "shop/qa"]);
    let err =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("turnout data reseed shop/qa --engine postgres"),
        "{err}"
    );
    assert_eq!(rows(&d, "qa").await.len(), 2, "the data is untouched");
}
