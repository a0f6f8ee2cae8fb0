use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::{Instant, sleep};
use turnout_supervisor::Network;
use turnout_supervisor::{HealthCheck, InstanceSpec, LogRotation, RestartPolicy};

/// A tiny HTTP server: listens on $PORT, answers $STATUS (200 by default), or 421 when the Host
/// header is not $EXPECT_HOST; writes its own pid to $SERVER_PID_FILE; ignores SIGTERM when
/// $IGNORE_TERM is set.
const SERVER: &str = r#"
import http.server, os, signal, sys
port = int(os.environ["PORT"])
status = int(os.environ.get("STATUS", "200"))
expect_host = os.environ.get("EXPECT_HOST")
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 421 if expect_host and self.headers.get("Host") != expect_host else status
        body = b"hello\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", port), Handler)
pid_file = os.environ.get("SERVER_PID_FILE")
if pid_file:
    with open(pid_file + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(pid_file + ".tmp", pid_file)
print("listening on", port, flush=True)
print("a line on stderr", file=sys.stderr, flush=True)
server.serve_forever()
"#;

pub const HOST: &str = "staging.shop.localhost";

/// What a caller puts in a child's environment for it to find its programs: children inherit
/// nothing from the daemon.
pub const PATH: (&str, &str) = ("PATH", "/usr/local/bin:/usr/bin:/bin");

/// A spec's environment: [`PATH`] and `vars`.
pub fn child_env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    [PATH]
        .iter()
        .chain(vars)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub struct Fixture {
    pub dir: TempDir,
    pub port: u16,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.py"), SERVER).unwrap();
        Self {
            dir,
            port: Network::Host.free_port().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn log_path(&self) -> PathBuf {
        self.path("logs/web.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A spec with short timings, so tests fail fast and restarts happen quickly.
    pub fn spec(&self, command: &str, env: &[(&str, &str)]) -> InstanceSpec {
        let port = self.port.to_string();
        let mut vars = vec![("PORT", port.as_str()), ("EXPECT_HOST", HOST)];
        vars.extend(env);
        InstanceSpec {
            tag: "test".to_owned(),
            command: command.to_owned(),
            cwd: self.dir.path().to_owned(),
            env: child_env(&vars),
            identity: None,
            cgroup: None,
            network: Network::Host,
            sandbox: None,
            port: self.port,
            log_path: self.log_path(),
            log_rotation: LogRotation::default(),
            pid_file: None,
            health: HealthCheck {
                path: "/".to_owned(),
                host: HOST.to_owned(),
                timeout: Duration::from_secs(20),
                interval: Duration::from_millis(50),
            },
            restart: RestartPolicy {
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                reset_after: Duration::from_secs(60),
            },
            stop_timeout: Duration::from_secs(5),
        }
    }
}

/// Polls `condition` until it holds, panicking with `what` after a generous deadline.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a pid that a process writes to `path`, waiting for it to appear.
pub async fn read_pid(path: &Path) -> u32 {
    let mut pid = None;
    eventually(&format!("{} is written", path.display()), || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        pid.is_some()
    })
    .await;
    pid.unwrap()
}

/// Whether a process exists and is not a zombie (orphans may never be reaped here).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace()
                .next()
                .map(|state| state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

pub fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Whether a process has exited but not been reaped.
pub fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().next().map(|s| s == "Z"))
            .unwrap_or(false)
    })
}
