//! Environments are isolated from each other and from Turnout: code deployed by a developer to
//! a development environment tries what an attacker would, and every attempt fails.
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use crate::support::{Daemon, OutsideHost, Repo, is_root};

/// An app whose endpoints try things: `/read?PATH` (open and read a byte), `/list?PATH`,
/// `/env` (its whole environment), `/id` (its uid and gid), `/connect?HOST:PORT` (open a TCP
/// connection), `/via?PORT/HOST/PATH` (GET http://127.0.0.1:PORT/PATH with that Host, answering
/// the status and body it got). Each answers JSON.
const PROBE: &str = r#"
import http.client, json, os, socket, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
def attempt(f):
    try:
        f()
        return "ok"
    except Exception as e:
        return "denied: %s" % type(e).__name__
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        path, _, query = self.path.partition("?")
        arg = urllib.parse.unquote(query)
        if path == "/read":
            body = attempt(lambda: open(arg, "rb").read(1))
        elif path == "/list":
            body = attempt(lambda: os.listdir(arg))
        elif path == "/env":
            body = dict(os.environ)
        elif path == "/id":
            body = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}
        elif path == "/connect":
            host, _, port = arg.rpartition(":")
            body = attempt(lambda: socket.create_connection((host, int(port)), 5).close())
        elif path == "/via":
            port, host, rest = arg.split("/", 2)
            c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
            c.request("GET", "/" + rest, headers={"Host": host})
            r = c.getresponse()
            body = {"status": r.status, "body": r.read().decode()}
        else:
            body = "up"
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, fmt, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

pub(crate) async fn probe(d: &Daemon, env: &str, path: &str) -> Value {
    let (status, body) = d.get(&format!("{env}.shop.localhost"), path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The documented modes of the home: the daemon's files alone, the path to an environment
/// passable, an environment's own directories its user's.
fn assert_home_modes(d: &Daemon, when: &str) {
    let home = d.home.path();
    for (path, want) in [
        (home.to_path_buf(), 0o711),
        (home.join("admin.token"), 0o600),
        (home.join("turnout.db"), 0o600),
        (home.join("turnout.db-wal"), 0o600),
        (home.join("serve.json"), 0o600),
        (home.join("apps"), 0o711),
        (home.join("apps/shop/repo.git"), 0o700),
        (home.join("apps/shop/envs/prod"), 0o711),
        (home.join("apps/shop/envs/prod/logs"), 0o700),
        (home.join("apps/shop/envs/prod/run"), 0o700),
        (home.join("apps/shop/envs/prod/releases"), 0o700),
        (home.join("apps/shop/envs/prod/data"), 0o700),
        (home.join("apps/shop/envs/prod/data/g1"), 0o700),
        (home.join("apps/shop/envs/prod/data/g1/storage"), 0o700),
        (home.join("jobs"), 0o700),
        (home.join("instances"), 0o700),
    ] {
        assert_eq!(
            mode(&path),
            want,
            "{} {when}: {:o}",
            path.display(),
            mode(&path)
        );
    }
    for log in std::fs::read_dir(home.join("apps/shop/envs/prod/logs")).unwrap() {
        let log = log.unwrap().path();
        assert_eq!(mode(&log), 0o600, "{} {when}", log.display());
    }
}

/// The app `shop` from `repo` with a development and a production environment (holding a
/// secret), both deployed; `env show` of each.
pub(crate) fn dev_and_prod(d: &Daemon, repo: &Repo) -> (Value, Value) {
    d.create(
        "shop",
        repo.path(),
        &[
            ("dev", "main", "development"),
            ("prod", "main", "production"),
        ],
    );
    d.ok(&[
        "secret",
        "set",
        "shop/prod",
        "DATABASE_PASSWORD",
        "hunter2-prod",
    ]);
    d.ok(&["deploy", "shop/dev"]);
    d.ok(&["deploy", "shop/prod"]);
    (
        d.json(&["env", "show", "shop/dev"]),
        d.json(&["env", "show", "shop/prod"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_in_a_development_environment_reads_nothing_of_production_or_turnout() {
    if !is_root() {
        eprintln!("skipped: per-environment users need root (run the suite as root, as CI does)");
        return;
    }
    let secret = "ghp_daemon_token_4d1e9b";
    let mut d = Daemon::start_with_env(&[("SHOP_GIT_TOKEN", secret)]);
    let repo = Repo::with_app(PROBE);
    let (dev_env, prod_env) = dev_and_prod(&d, &repo);
    assert_eq!(dev_env["isolation"]["mode"], "user", "{dev_env}");
    let (dev_uid, prod_uid) = (
        dev_env["isolation"]["uid"].as_u64().unwrap(),
        prod_env["isolation"]["uid"].as_u64().unwrap(),
    );
    assert_ne!(dev_uid, prod_uid);
    let id = probe(&d, "dev", "/id").await;
    assert_eq!(id["uid"], dev_uid, "{id}");
    assert_eq!(id["gid"], dev_uid, "{id}");
    assert_eq!(
        id["groups"],
        serde_json::json!([dev_uid]),
        "no other group: {id}"
    );

    let home = d.home.path();
    let prod_dir = home.join("apps/shop/envs/prod");
    std::fs::write(
        prod_dir.join("data/g1/storage/customers.csv"),
        "alice,4111111111111111\n",
    )
    .unwrap();
    std::fs::set_permissions(
        prod_dir.join("data/g1/storage/customers.csv"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let prod_pid = prod_env["instance"]["pid"].as_u64().unwrap();
    let prod_release = std::fs::read_dir(prod_dir.join("releases"))
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    for (what, target) in [
        ("the admin token", home.join("admin.token")),
        ("the store", home.join("turnout.db")),
        ("the store's WAL", home.join("turnout.db-wal")),
        (
            "production's process environment",
            Path::new(&format!("/proc/{prod_pid}/environ")).to_path_buf(),
        ),
        (
            "production's storage",
            prod_dir.join("data/g1/storage/customers.csv"),
        ),
        ("production's code", prod_release.join("app.py")),
        ("production's database", prod_dir.join("data/g1/db.sqlite")),
        (
            "production's log",
            std::fs::read_dir(prod_dir.join("logs"))
                .unwrap()
                .flatten()
                .next()
                .unwrap()
                .path(),
        ),
        ("the app's mirror", home.join("apps/shop/repo.git/HEAD")),
    ] {
        assert!(target.exists(), "{what}: {} exists", target.display());
        let path = target.display().to_string();
        let r = probe(&d, "dev", &format!("/read?{path}")).await;
        assert_eq!(r, "denied: PermissionError", "dev read {what} ({path})");
    }
    for (what, target) in [
        ("the home", home.to_path_buf()),
        ("the apps", home.join("apps")),
        ("production's releases", prod_dir.join("releases")),
        ("production's data", prod_dir.join("data")),
        ("the jobs", home.join("jobs")),
    ] {
        assert!(target.exists(), "{what}: {} exists", target.display());
        let path = target.display().to_string();
        let r = probe(&d, "dev", &format!("/list?{path}")).await;
        assert_eq!(r, "denied: PermissionError", "dev listed {what} ({path})");
    }
    // Its own files it may read, and prod its own secret.
    let own = home.join("apps/shop/envs/dev/data/g1/storage");
    let r = probe(&d, "dev", &format!("/list?{}", own.display())).await;
    assert_eq!(r, "ok");

    // A clean environment: nothing of the daemon's, its token least of all.
    let env = probe(&d, "dev", "/env").await;
    let env = env.as_object().unwrap();
    let text = serde_json::to_string(env).unwrap();
    assert!(
        !text.contains(secret),
        "the daemon's git token reached the app: {text}"
    );
    assert!(
        !env.contains_key("SHOP_GIT_TOKEN") && !env.contains_key("TURNOUT_LOG"),
        "{text}"
    );
    assert!(!text.contains("hunter2-prod"), "{text}");
    let names: Vec<&str> = env.keys().map(String::as_str).collect();
    for name in &names {
        assert!(
            // PWD: set by the shell that runs the command. The proxy variables: the egress
            // proxy, below production; SMTP_URL: the mail catcher, below production.
            [
                "PATH",
                "HOME",
                "LANG",
                "PORT",
                "PWD",
                "DATABASE_URL",
                "SMTP_URL"
            ]
            .contains(name)
                || name.starts_with("TURNOUT_")
                || name.to_ascii_uppercase().ends_with("_PROXY"),
            "{name} is not on the allow-list: {names:?}"
        );
    }
    let prod = probe(&d, "prod", "/env").await;
    assert_eq!(prod["DATABASE_PASSWORD"], "hunter2-prod");

    assert_home_modes(&d, "after a deploy");

    // The network: each environment in a namespace of its own.
    for (env, uid) in [(&dev_env, dev_uid), (&prod_env, prod_uid)] {
        assert_eq!(
            env["isolation"]["network"],
            format!("turnout-{uid}"),
            "{env}"
        );
    }
    let prod_port = prod_env["instance"]["port"].as_u64().unwrap();
    let r = probe(&d, "dev", &format!("/connect?127.0.0.1:{prod_port}")).await;
    assert_eq!(
        r, "denied: ConnectionRefusedError",
        "dev reached production's instance port directly"
    );
    let api_port = d.api.rsplit(':').next().unwrap().trim_end_matches('/');
    let r = probe(&d, "dev", &format!("/connect?127.0.0.1:{api_port}")).await;
    assert_eq!(
        r, "denied: ConnectionRefusedError",
        "dev reached the daemon's API on the host's loopback"
    );
    // Production's internal URL still works from dev's code, through the proxy.
    let http_port = d.http.port();
    let via = probe(
        &d,
        "dev",
        &format!("/via?{http_port}/prod.shop.localhost/id"),
    )
    .await;
    assert_eq!(via["status"], 200, "{via}");
    let seen: Value = serde_json::from_str(via["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen["uid"], prod_uid, "{via}");
    // And connections out, to a host outside this machine's loopback: production's (its
    // egress policy is allow); dev's policy is deny, so its only way out is the egress proxy.
    let outside = OutsideHost::start(
        "tt",
        0,
        "import socket\ns=socket.create_server(('198.51.100.2', 8080))\nwhile True: s.accept()[0].close()",
    );
    let r = probe(&d, "prod", &format!("/connect?{}", outside.addr)).await;
    assert_eq!(r, "ok", "prod could not connect out to {}", outside.addr);
    let r = probe(&d, "dev", &format!("/connect?{}", outside.addr)).await;
    assert_ne!(r, "ok", "dev went out directly to {}", outside.addr);

    d.restart();
    assert_home_modes(&d, "after a restart");
    let path = format!("/connect?{}", outside.addr);
    let r = crate::support::eventually(
        "prod to be back after the restart",
        std::time::Duration::from_secs(60),
        || async {
            let (status, body) = d.get("prod.shop.localhost", &path).await;
            (status == 200).then_some(body)
        },
    )
    .await;
    assert_eq!(r, "\"ok\"", "after a restart, prod could not connect out");
}

/// An environment's plan is enforced: a memory hog is killed at its limit, restarted like a
/// crash, and `env show` says it was the memory; what it uses shows beside the plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_is_killed_at_its_plan_and_env_show_says_oom() {
    if !is_root() || !Path::new("/sys/fs/cgroup/memory").exists() {
        eprintln!("skipped: memory limits need root and the cgroup memory controller");
        return;
    }
    let d = Daemon::start();
    let repo = Repo::with_app(&PROBE.replace(
        "        else:\n            body = \"up\"",
        "        elif path == \"/hog\":\n            hog = []\n            while True:\n                hog.append(bytearray(8 << 20))\n        else:\n            body = \"up\"",
    ));
    d.create("shop", repo.path(), &[("dev", "main", "development")]);
    d.ok(&[
        "env", "update", "shop/dev", "--memory", "64M", "--pids", "64",
    ]);
    d.ok(&["deploy", "shop/dev"]);
    let before = d.json(&["env", "show", "shop/dev"]);
    assert_eq!(before["plan"]["memory"], 64 << 20, "{before}");
    assert!(
        before["instance"]["limits_not_enforced"].is_null(),
        "{before}"
    );
    assert!(before["usage"]["memory"].as_u64().unwrap() > 0, "{before}");
    assert!(before["usage"]["pids"].as_u64().unwrap() >= 1, "{before}");

    let (status, _) = d.get("dev.shop.localhost", "/hog").await;
    assert_eq!(status, 502, "the hog died mid-request");
    let after = crate::support::eventually(
        "the hog to be restarted",
        std::time::Duration::from_secs(60),
        || async {
            let env = d.json(&["env", "show", "shop/dev"]);
            (env["instance"]["restarts"].as_u64() == Some(1)
                && env["instance"]["state"] == "running")
                .then_some(env)
        },
    )
    .await;
    let last_exit = after["instance"]["last_exit"].as_str().unwrap();
    assert!(
        last_exit.starts_with("OOM") && last_exit.contains("64 MiB"),
        "{last_exit}"
    );
    let human = d.ok(&["env", "show", "shop/dev"]);
    assert!(human.contains("OOM"), "{human}");
    assert!(human.contains("its own user"), "{human}");
}
