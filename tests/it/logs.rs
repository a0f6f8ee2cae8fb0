//! `turnout logs -f` follows an instance's log across a rotation by size without losing or
//! repeating a line.
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{BIN, Daemon, Repo};

/// The fixture app, plus `/spam?N`: N numbered lines of 100 bytes on stdout, then `spam done`.
const SPAM: &str = r#"
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path.startswith("/spam?"):
            n = int(self.path.split("?")[1])
            pad = "x" * 80
            for i in range(n):
                sys.stdout.write("spam %08d %s\n" % (i, pad))
            print("spam done", flush=True)
        data = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, fmt, *args):
        pass
s = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
s.serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_a_log_crosses_its_rotation() {
    let repo = Repo::with_app(SPAM);
    let d = Daemon::start();
    d.create("shop", repo.path(), &[("dev", "main", "development")]);
    d.ok(&["deploy", "shop/dev"]);

    let mut follow = Command::new(BIN)
        .args(["--api", &d.api, "--home"])
        .arg(d.home.path())
        .args(["logs", "shop/dev", "-f", "--tail", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = follow.stdout.take().unwrap();
    // 120,000 lines of 101 bytes (plus timestamps) pass the 10 MiB at which a log rotates.
    let lines = 120_000;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for (n, line) in BufReader::new(out).lines().enumerate() {
            let Ok(line) = line else { break };
            if n == 0 {
                // The tail asked for: the follower is connected.
                let _ = tx.send(None);
            }
            if line == "spam done" {
                break;
            }
            if let Some(rest) = line.strip_prefix("spam ") {
                seen.push(rest[..8].parse::<u32>().unwrap());
            }
        }
        let _ = tx.send(Some(seen));
    });
    let wait = |what: &str| match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    };
    assert!(wait("the follower to connect").is_none());
    let (status, _) = d.get("dev.shop.localhost", &format!("/spam?{lines}")).await;
    assert_eq!(status, 200);
    let seen = wait("the follower to see `spam done`");
    follow.kill().unwrap();
    let _ = follow.wait();
    let seen = seen.expect("the lines it saw");
    let logs = d.home.path().join("apps/shop/envs/dev/logs");
    let rotated = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".log.1"));
    assert!(rotated, "the log rotated");
    assert_eq!(seen.len(), lines as usize, "every line, once");
    assert!(
        seen.iter().enumerate().all(|(i, n)| *n == i as u32),
        "in order"
    );
}
