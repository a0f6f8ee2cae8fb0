//! Not root: each environment runs in a sandbox of its own. The daemon runs as an ordinary user
//! (`nobody`), and code deployed to a development environment tries what an attacker would.
use serde_json::Value;

use crate::isolation::{dev_and_prod, probe};
use crate::support::{Daemon, Repo, is_root};

/// `/read?PATH` (read a byte), `/ls?PATH` (the names in a directory), `/pids` (the processes it
/// can see), `/write?PATH`; each answers JSON: the result, or `denied: <error>`.
const PROBE: &str = r#"
import json, os, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
def attempt(f):
    try:
        return f()
    except Exception as e:
        return "denied: %s" % type(e).__name__
def write(path):
    with open(path, "w") as f:
        f.write("x")
    return "ok"
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        path, _, query = self.path.partition("?")
        arg = urllib.parse.unquote(query)
        if path == "/read":
            body = attempt(lambda: open(arg, "rb").read(1).decode("latin-1"))
        elif path == "/ls":
            body = attempt(lambda: sorted(os.listdir(arg)))
        elif path == "/write":
            body = attempt(lambda: write(arg))
        elif path == "/pids":
            body = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
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

const NOBODY: u32 = 65534;

fn denied(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.starts_with("denied"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_root_each_environment_is_sandboxed_from_turnout_and_the_others() {
    if !is_root() {
        eprintln!("skipped: the test runs the daemon as `nobody`, which needs root to start");
        return;
    }
    if turnout_supervisor::Sandbox::find_bwrap().is_err() {
        eprintln!("skipped: no usable bwrap (package bubblewrap) on this machine");
        return;
    }
    let repo = Repo::with_app(PROBE);
    crate::support::chown_tree(repo.path(), NOBODY);
    let d = Daemon::start_as(NOBODY);
    // Production is not refused: it runs sandboxed, without --single-user mattering.
    let (dev, prod) = dev_and_prod(&d, &repo);
    assert_eq!(dev["isolation"]["mode"], "sandbox", "{dev}");
    assert!(
        dev["isolation"]["network"].is_null(),
        "not root: no namespace: {dev}"
    );
    let human = d.ok(&["env", "show", "shop/dev"]);
    assert!(human.contains("a sandbox of its own"), "{human}");

    let home = d.home.path();
    let prod_dir = home.join("apps/shop/envs/prod");
    let prod_pid = prod["instance"]["pid"].as_u64().unwrap();
    for (what, target) in [
        ("the admin token", home.join("admin.token")),
        ("the store", home.join("turnout.db")),
        ("production's code", prod_dir.join("releases")),
        ("production's data", prod_dir.join("data")),
        ("production's logs", prod_dir.join("logs")),
        (
            "production's process environment",
            std::path::PathBuf::from(format!("/proc/{prod_pid}/environ")),
        ),
    ] {
        assert!(target.exists(), "{what}: {} exists", target.display());
        let path = target.display().to_string();
        let read = probe(&d, "dev", &format!("/read?{path}")).await;
        let listed = probe(&d, "dev", &format!("/ls?{path}")).await;
        assert!(
            denied(&read) && denied(&listed),
            "dev reached {what} ({path}): read {read}, listed {listed}"
        );
    }
    // Turnout's home is an empty directory from inside, apart from the way to dev's own.
    let listed = probe(&d, "dev", &format!("/ls?{}", home.display())).await;
    assert_eq!(listed, serde_json::json!(["apps"]), "{listed}");
    let envs = probe(
        &d,
        "dev",
        &format!("/ls?{}", home.join("apps/shop/envs").display()),
    )
    .await;
    assert_eq!(envs, serde_json::json!(["dev"]), "{envs}");
    // It sees its own processes only.
    let pids = probe(&d, "dev", "/pids").await;
    assert!(pids.as_array().unwrap().len() < 10, "{pids}");
    assert!(
        !pids.as_array().unwrap().contains(&Value::from(prod_pid)),
        "{pids}"
    );
    // It may write to its own storage, and nowhere of the system.
    let own = home.join("apps/shop/envs/dev/data/g1/storage/note.txt");
    let wrote = probe(&d, "dev", &format!("/write?{}", own.display())).await;
    assert_eq!(wrote, "ok");
    assert!(own.exists(), "its storage is the real one");
    for path in [
        "/usr/turnout-was-here",
        "/turnout-was-here",
        "/run/turnout-was-here",
    ] {
        let wrote = probe(&d, "dev", &format!("/write?{path}")).await;
        assert!(denied(&wrote), "{path}: {wrote}");
    }
    // Nor does it see the network namespaces of the machine (root daemons' environments').
    let ns = Netns::add(&format!("turnout-sandbox-{}", std::process::id()));
    let on_host: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(on_host.contains(&ns.0), "{on_host:?}");
    let netns = probe(&d, "dev", "/ls?/run/netns").await;
    assert!(denied(&netns), "{netns}");
}

/// A network namespace of the test's own, removed when dropped.
struct Netns(String);

impl Netns {
    fn add(name: &str) -> Netns {
        let out = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .unwrap();
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        Netns(name.to_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}
