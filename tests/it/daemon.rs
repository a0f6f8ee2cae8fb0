//! The daemon: proxy edge cases, supervision, restart on the same home, clean shutdown, demo.
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{BIN, Daemon, Repo, eventually, get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hosts_get_404_and_a_restarted_daemon_serves_the_same_environments() {
    let repo = Repo::new("persistent");
    let mut d = Daemon::start();
    d.create("shop", repo.path(), &[("production", "main", "production")]);
    d.ok(&["deploy", "shop/production"]);

    let (status, body) = d.get("other.shop.localhost", "/").await;
    assert_eq!(status, 404);
    assert!(
        body.contains("other.shop.localhost") && !body.contains("persistent"),
        "{body}"
    );
    // HTTP/1.0 without a Host header.
    let mut s = std::net::TcpStream::connect(d.http).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(
        raw.starts_with("HTTP/1.0 400") || raw.starts_with("HTTP/1.1 400"),
        "{raw}"
    );
    assert!(!raw.contains("persistent"), "{raw}");

    let before = d.json(&["env", "show", "shop/production"]);
    d.restart();
    // The new daemon brings the environment back without a deploy.
    let http = d.http;
    let body = eventually(
        "the environment to come back",
        Duration::from_secs(30),
        || async move {
            let (status, body) = get(http, "production.shop.localhost", "/").await;
            (status == 200).then_some(body)
        },
    )
    .await;
    assert_eq!(
        body,
        "persistent env=production tier=production built=yes\n"
    );
    let after = d.json(&["env", "show", "shop/production"]);
    assert_eq!(after["status"], "live");
    assert_eq!(after["release"]["id"], before["release"]["id"]);
    assert_ne!(after["instance"]["pid"], before["instance"]["pid"]);
    assert_eq!(
        d.json(&["release", "list", "shop/production"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_instance_is_restarted_and_the_restart_is_visible() {
    let repo = Repo::new("resilient");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("qa", "main", "qa")]);
    d.ok(&["deploy", "shop/qa"]);
    let env = d.json(&["env", "show", "shop/qa"]);
    assert_eq!(env["instance"]["restarts"], 0);
    let pid = env["instance"]["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let env = eventually(
        "the instance to be restarted",
        Duration::from_secs(30),
        || {
            let env = d.json(&["env", "show", "shop/qa"]);
            async move {
                (env["instance"]["restarts"] == 1 && env["instance"]["state"] == "running")
                    .then_some(env)
            }
        },
    )
    .await;
    assert_ne!(env["instance"]["pid"].as_i64().unwrap() as i32, pid);
    assert!(
        env["instance"]["last_exit"].as_str().unwrap().contains('9'),
        "{env}"
    );
    let http = d.http;
    eventually(
        "the restarted instance to answer",
        Duration::from_secs(30),
        || async move {
            let (status, body) = get(http, "qa.shop.localhost", "/").await;
            (status == 200 && body.starts_with("resilient")).then_some(())
        },
    )
    .await;
    let human = d.ok(&["env", "show", "shop/qa"]);
    assert!(human.contains("restarts     1"), "{human}");
}

/// An app that answers one request (the health check that lets it go live) and exits: the
/// supervisor keeps restarting it, each run lasting a moment.
const ONE_ANSWER_PY: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        data = b"once\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, fmt, *args):
        pass
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).handle_request()
"#;

/// GET `/` on a fresh connection, returning the raw answer (head and body).
fn raw_get(proxy: std::net::SocketAddr, host: &str) -> String {
    let mut s = std::net::TcpStream::connect(proxy).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_environment_shows_crashing_and_its_url_answers_503_with_retry_after() {
    let repo = Repo::with_app(ONE_ANSWER_PY);
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("web", "main", "development")]);
    d.ok(&["deploy", "shop/web"]);

    let env = eventually("env list to say crashing", Duration::from_secs(30), || {
        let list = d.json(&["env", "list", "shop"]);
        async move {
            let env = list.as_array().unwrap()[0].clone();
            (env["status"] == "crashing").then_some(env)
        }
    })
    .await;
    let reason = env["status_reason"].as_str().unwrap();
    assert!(reason.starts_with("exit status 0, restarted "), "{env}");

    let http = d.http;
    let raw = eventually(
        "the proxy to answer 503 while the instance is down",
        Duration::from_secs(30),
        || async move {
            let raw = raw_get(http, "web.shop.localhost");
            raw.starts_with("HTTP/1.1 503").then_some(raw)
        },
    )
    .await;
    let head = raw.to_ascii_lowercase();
    assert!(head.contains("\r\nretry-after: 5\r\n"), "{raw}");
    assert!(raw.ends_with("is restarting; try again shortly\n"), "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_the_daemon_its_data_plane_and_its_instances_cleanly() {
    let repo = Repo::new("bye");
    let mut d = Daemon::start();
    d.create("shop", repo.path(), &[("dev", "main", "development")]);
    d.ok(&["deploy", "shop/dev"]);
    let env = d.json(&["env", "show", "shop/dev"]);
    let port = env["instance"]["port"].as_u64().unwrap() as u16;
    assert_eq!(d.dataplanes().len(), 1, "one data plane serves the home");
    let status = d.stop();
    assert!(status.success(), "{status:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the instance still listens"
    );
    assert_eq!(
        d.dataplanes(),
        Vec::<u32>::new(),
        "the data plane still runs"
    );
    assert!(
        std::net::TcpStream::connect(d.http).is_err(),
        "the proxy still listens"
    );
    assert!(!d.home.path().join("serve.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_streams_new_output() {
    let repo = Repo::new("chatty");
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("dev", "main", "development")]);
    d.ok(&["deploy", "shop/dev"]);
    let mut follow = Command::new(BIN)
        .args(["--api", &d.api, "logs", "shop/dev", "-f", "--tail", "1"])
        .arg("--home")
        .arg(d.home.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = follow.stdout.take().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("/marker-path") {
                break;
            }
        }
        let _ = done_tx.send(String::from_utf8_lossy(&seen).into_owned());
    });
    // Keep requesting until the follower has seen a request's log line, or give up.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let _ = get(d.http, "dev.shop.localhost", "/marker-path").await;
        if let Ok(seen) = done_rx.recv_timeout(Duration::from_millis(200)) {
            break seen;
        }
        if std::time::Instant::now() > deadline {
            let _ = follow.kill();
            panic!(
                "logs -f showed no new request within 20s: {:?}",
                done_rx.recv().ok()
            );
        }
    };
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(seen.contains("GET /marker-path"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_deploys_two_environments_and_runs_twice() {
    let home = tempfile::tempdir().unwrap();
    for run in 0..2 {
        let mut demo = Command::new(BIN)
            .args([
                "demo",
                "--api-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .arg("--home")
            .arg(home.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = demo.stdout.take().unwrap();
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        // The last line of the instructions: everything before it has arrived too.
        while !text.contains("turnout audit --app hello\n") {
            let n = stdout.read(&mut buf).unwrap();
            assert!(n > 0, "run {run}: the demo ended early:\n{text}");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(home.path().join("serve.json")).unwrap())
                .unwrap();
        let http = info["http"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        let (status, body) = get(http, "production.hello.localhost", "/").await;
        assert_eq!(status, 200);
        assert!(
            body.contains("Hello from the main branch") && body.contains("production"),
            "{body}"
        );
        // Each environment its own database: production's starts empty, staging's is seeded.
        assert!(
            body.contains("0 notes in this environment's database"),
            "{body}"
        );
        let (_, body) = get(http, "staging.hello.localhost", "/").await;
        assert!(
            body.contains("Hello from the staging branch") && body.contains("staging"),
            "{body}"
        );
        assert!(
            body.contains("3 notes in this environment's database")
                && body.contains("Ada Lovelace"),
            "run {run}: {body}"
        );
        assert!(text.contains("http://staging.hello.localhost:"), "{text}");
        // Its third parties: a note mails the team, which staging's catcher keeps; a call
        // outside is refused by staging's default egress policy.
        let posted = post_form(http, "staging.hello.localhost", "/notes", "text=mailed").await;
        assert!(posted.starts_with("HTTP/1.1 303"), "{posted}");
        let mail = eventually(
            "the note's mail to be caught",
            Duration::from_secs(30),
            || {
                let out = Command::new(BIN)
                    .args(["--json", "mail", "list", "hello/staging"])
                    .env("TURNOUT_HOME", home.path())
                    .env_remove("TURNOUT_API")
                    .env_remove("TURNOUT_TOKEN")
                    .output()
                    .unwrap();
                let list: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                let caught = list["messages"]
                    .as_array()
                    .is_some_and(|m| m.len() > run && m[0]["subject"] == "New note on staging");
                async move { caught.then_some(list) }
            },
        )
        .await;
        assert_eq!(mail["messages"][0]["to"][0], "team@example.com", "{mail}");
        let (_, outbound) = get(http, "staging.hello.localhost", "/outbound").await;
        assert!(
            outbound.contains("refused by the proxy") && outbound.contains("403"),
            "run {run}: {outbound}"
        );
        // The printed instructions work as printed: TURNOUT_HOME alone finds the daemon and
        // its owner token.
        assert!(
            text.contains(&format!("export TURNOUT_HOME={}", home.path().display())),
            "{text}"
        );
        // The daemon's own log lines stay off the terminal, in the file the demo names.
        let log = home.path().join("turnout.log");
        assert!(
            text.contains(&format!("daemon log: {}", log.display())),
            "{text}"
        );
        assert!(!text.contains(" INFO "), "{text}");
        assert!(std::fs::read_to_string(&log).unwrap().contains(" INFO "));
        // The binary the commands need is on the PATH line, as an absolute path.
        let bin_dir = std::path::Path::new(BIN)
            .parent()
            .unwrap()
            .canonicalize()
            .unwrap();
        assert!(
            text.contains(&format!("export PATH={}:\"$PATH\"", bin_dir.display())),
            "{text}"
        );
        // Every suggested domain and data command works, on the first run and the second.
        let suggested = |l: &&str| {
            ["domain", "data", "mail", "egress", "config", "restart"]
                .iter()
                .any(|c| l.starts_with(&format!("  turnout {c} ")))
        };
        for line in text.lines().filter(suggested) {
            let line = line.split('#').next().unwrap();
            let args: Vec<&str> = line.split_whitespace().skip(1).collect();
            let out = Command::new(BIN)
                .args(&args)
                .env("TURNOUT_HOME", home.path())
                .env_remove("TURNOUT_API")
                .env_remove("TURNOUT_TOKEN")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "run {run}: `{line}` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The configuration it set reached staging with the restart, and only staging.
        let (_, page) = get(http, "staging.hello.localhost", "/").await;
        assert!(page.contains("set-by-turnout-config"), "run {run}: {page}");
        let (_, page) = get(http, "production.hello.localhost", "/").await;
        assert!(!page.contains("set-by-turnout-config"), "run {run}: {page}");
        let list = Command::new(BIN)
            .args(["--json", "env", "list"])
            .env("TURNOUT_HOME", home.path())
            .env_remove("TURNOUT_API")
            .env_remove("TURNOUT_TOKEN")
            .output()
            .unwrap();
        assert!(
            list.status.success(),
            "{}",
            String::from_utf8_lossy(&list.stderr)
        );
        let envs: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
        assert_eq!(envs.as_array().unwrap().len(), 2, "{envs}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(demo.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(
            demo.wait().unwrap().success(),
            "run {run}: the demo did not exit 0"
        );
    }
}

/// POST a form through the proxy on a connection of its own; the whole answer.
async fn post_form(proxy: std::net::SocketAddr, host: &str, path: &str, form: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    answer
}
