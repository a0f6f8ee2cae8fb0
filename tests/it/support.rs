//! Shared helpers: a real `turnout serve` process on a temporary home with ports bound to 0, the
//! real CLI against it, real git repositories, and a plain HTTP client for the proxy.
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_turnout");

/// Whether the tests run as root (what needs it, per-environment users and namespaces, is
/// tested only then).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A running daemon. Dropping it stops it fully (SIGINT) and waits; a data plane left behind
/// (its control plane was killed and not started again) is killed too.
pub struct Daemon {
    pub home: tempfile::TempDir,
    /// The daemon's working directory (tests check nothing was written here).
    pub cwd: tempfile::TempDir,
    child: Option<Child>,
    pub api: String,
    pub http: SocketAddr,
    /// The proxy's HTTPS listener, when started with one (`TURNOUT_HTTPS_LISTEN`).
    pub https: Option<SocketAddr>,
    extra_env: Vec<(String, String)>,
    /// Runs the daemon as this user (and group) instead of the test's own.
    uid: Option<u32>,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with_env(&[])
    }

    /// A daemon run as `uid` (the test must be root): its home and working directory are
    /// that user's, and so is its `HOME`.
    pub fn start_as(uid: u32) -> Daemon {
        let mut d = Daemon::unstarted(&[]);
        for dir in [d.home.path(), d.cwd.path()] {
            std::os::unix::fs::chown(dir, Some(uid), Some(uid)).unwrap();
        }
        let home = d.home.path().display().to_string();
        d.extra_env.push(("HOME".to_owned(), home));
        d.uid = Some(uid);
        d.spawn();
        d
    }

    pub fn start_with_env(env: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon::unstarted(env);
        d.spawn();
        d
    }

    fn unstarted(env: &[(&str, &str)]) -> Daemon {
        Daemon {
            home: tempfile::tempdir().unwrap(),
            cwd: tempfile::tempdir().unwrap(),
            child: None,
            api: String::new(),
            http: "127.0.0.1:0".parse().unwrap(),
            https: None,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            uid: None,
        }
    }

    fn spawn(&mut self) {
        let child = self.spawn_with(&[]);
        self.child = Some(child);
    }

    /// `turnout serve --upgrade` on the same home: it takes the running daemon's sockets and
    /// instances; returns once the new one serves and the old one has exited (asserting 0).
    pub fn upgrade(&mut self) {
        let mut old = self.child.take().expect("daemon running");
        let new = self.spawn_with(&["--upgrade"]);
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = old.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the old daemon did not exit after the upgrade"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "the old daemon exited with {status}");
        self.child = Some(new);
    }

    /// Start `turnout serve` (with `extra` arguments) and wait until it prints its addresses.
    fn spawn_with(&mut self, extra: &[&str]) -> Child {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "--json",
            "serve",
            "--api-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            // Without root, environments of every tier still run (as this user); as root each
            // runs as its own user and the flag changes nothing.
            "--single-user",
        ])
        .args(extra)
        .arg("--home")
        .arg(self.home.path())
        .current_dir(self.cwd.path())
        .env_remove("TURNOUT_API")
        .env("TURNOUT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(self.log_file());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        if let Some(uid) = self.uid {
            use std::os::unix::process::CommandExt;
            // std also drops the supplementary groups when root changes uid.
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd.spawn().expect("start turnout serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let info: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            // How it ended tells a start-up error (an exit code) from a kill (a signal).
            let deadline = Instant::now() + Duration::from_secs(10);
            let ended = loop {
                match child.try_wait() {
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    other => break other,
                }
            };
            panic!("serve printed {line:?}, not its addresses ({e}); it ended: {ended:?}")
        });
        self.api = info["api"].as_str().unwrap().to_owned();
        self.http = info["http"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        self.https = info["https"]
            .as_str()
            .map(|a| a.trim_start_matches("https://").parse().unwrap());
        child
    }

    /// The daemon's stderr goes to a file (appended across restarts), shown when a test fails.
    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.cwd.path().join("serve.log"))
            .unwrap()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// What the daemon has logged so far (every run on this home).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.cwd.path().join("serve.log")).unwrap_or_default()
    }

    /// A full stop (SIGINT), a clean exit (asserting status 0), start again on the same home.
    pub fn restart(&mut self) {
        assert!(self.stop().success(), "serve did not exit 0 on SIGINT");
        self.spawn();
    }

    /// SIGTERM: the control plane alone leaves (asserting status 0); the data plane and the
    /// instances go on. `start_again` starts the next one.
    pub fn terminate(&mut self) {
        let status = self.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(status.success(), "serve did not exit 0 on SIGTERM");
    }

    /// SIGKILL, as a crash or the OOM killer would. `start_again` starts the next one.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGKILL, then start again on the same home.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Start the daemon again on the same home after `stop`, so a test can change what it
    /// finds in between.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        self.spawn();
    }

    /// A full stop (SIGINT, as Ctrl-C): traffic, instances and the control plane.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGINT)
    }

    fn signal(&mut self, signal: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not stop within 60s of {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pids of the data planes serving this home (normally one).
    pub fn dataplanes(&self) -> Vec<u32> {
        let socket = self.home.path().join("dataplane.sock");
        let next = self.home.path().join("dataplane.next");
        let (socket, next) = (socket.to_str().unwrap(), next.to_str().unwrap());
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                    args.contains(&b"__dataplane".as_slice())
                        && (args.contains(&socket.as_bytes()) || args.contains(&next.as_bytes()))
                })
            })
            .collect()
    }

    /// The CLI as the owner on this machine: `--home` lets it read the daemon's admin.token.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--api")
            .arg(&self.api)
            .arg("--home")
            .arg(self.home.path())
            .env_remove("TURNOUT_TOKEN")
            .args(args)
            .current_dir(self.cwd.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The CLI with another user's token.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--api")
            .arg(&self.api)
            .env("TURNOUT_TOKEN", token)
            .env_remove("TURNOUT_HOME")
            .args(args)
            .current_dir(self.cwd.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Run the CLI, assert success, return stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "turnout {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run the CLI, assert failure, return stderr.
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "turnout {args:?} should have failed:\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// The owner token the first start wrote.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.home.path().join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// GET through the proxy with the given Host header.
    pub async fn get(&self, host: &str, path: &str) -> (u16, String) {
        get(self.http, host, path).await
    }

    /// Create an app named `app` from `repo` and one environment per (env, branch, tier).
    pub fn create(&self, app: &str, repo: &Path, envs: &[(&str, &str, &str)]) {
        self.ok(&["app", "create", app, "--repo", repo.to_str().unwrap()]);
        for (env, branch, tier) in envs {
            self.ok(&[
                "env",
                "create",
                &format!("{app}/{env}"),
                "--branch",
                branch,
                "--tier",
                tier,
            ]);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        for pid in self.dataplanes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.cwd.path().join("serve.log")).unwrap_or_default();
            eprintln!("--- turnout serve log ---\n{log}--- end of log ---");
            let dataplane =
                std::fs::read_to_string(self.home.path().join("dataplane.log")).unwrap_or_default();
            eprintln!("--- data plane log ---\n{dataplane}--- end of log ---");
        }
    }
}

/// One GET on a fresh connection.
pub async fn get(proxy: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let mut conn = Conn::open(proxy).await;
    conn.get(host, path).await.expect("GET through the proxy")
}

/// A keep-alive HTTP/1.1 connection to the proxy.
pub struct Conn {
    send: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        Conn { send }
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Result<(u16, String), String> {
        self.send
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let req = hyper::Request::get(path)
            .header("host", host)
            .body(Empty::new())
            .unwrap();
        let resp = self
            .send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    }
}

/// Poll `f` until it returns Some, or panic after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A git repository made by the test, holding a small python3 web app.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

/// The fixture app: `/` answers the text of `content.txt` plus the environment it runs in;
/// `/healthz` answers 200 unless `health-status.txt` (in the environment's storage directory,
/// else in the release) says otherwise; `/env/NAME` answers the variable's value.
const APP_PY: &str = r#"
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
HERE = os.path.dirname(os.path.abspath(__file__))
def read(name, default=""):
    try:
        with open(os.path.join(HERE, name)) as f: return f.read().strip()
    except FileNotFoundError: return default
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path.startswith("/env/"):
            status, body = 200, os.environ.get(self.path[5:], "(unset)") + "\n"
        elif self.path == "/healthz":
            override = os.path.join(os.environ["TURNOUT_STORAGE_DIR"], "health-status.txt")
            if os.path.exists(override):
                with open(override) as f: status = int(f.read().strip())
            else:
                status = int(read("health-status.txt", "200"))
            body = "health %s\n" % os.environ["TURNOUT_ENV"]
        else:
            status = 200
            body = "%s env=%s tier=%s built=%s\n" % (read("content.txt"), os.environ["TURNOUT_ENV"],
                os.environ["TURNOUT_TIER"], read("built.txt", "no"))
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, fmt, *args):
        print("request " + fmt % args, flush=True)
print("fixture listening on", os.environ["PORT"], flush=True)
s = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
s.daemon_threads = True
s.serve_forever()
"#;

pub const TOML: &str = r#"
[build]
command = "echo building; echo yes > built.txt"

[run]
command = "exec python3 app.py"
drain_timeout = "5s"
stop_timeout = "5s"

[health]
path = "/healthz"
timeout = "20s"
interval = "50ms"
"#;

impl Repo {
    /// A repository whose `main` branch serves `content`.
    pub fn new(content: &str) -> Repo {
        let repo = Repo {
            dir: tempfile::tempdir().unwrap(),
        };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo.write("app.py", APP_PY);
        repo.write("turnout.toml", TOML);
        repo.write("content.txt", content);
        repo.commit("initial");
        repo
    }

    /// A repository whose `main` branch runs `app_py` (`python3 app.py`, health-checked at `/`).
    pub fn with_app(app_py: &str) -> Repo {
        let repo = Repo::new("");
        repo.write("app.py", app_py);
        repo.write(
            "turnout.toml",
            "[run]\ncommand = \"exec python3 -u app.py\"\n[health]\npath = \"/\"\ninterval = \"50ms\"\n",
        );
        repo.commit("app");
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).unwrap();
    }

    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// Switch to `branch` (creating it from the current commit when new).
    pub fn branch(&self, branch: &str) {
        let exists = Command::new("git")
            .arg("-C")
            .arg(self.dir.path())
            .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
            .arg(format!("refs/heads/{branch}"))
            .output()
            .unwrap()
            .status
            .success();
        if exists {
            self.git(&["checkout", "--quiet", branch]);
        } else {
            self.git(&["checkout", "--quiet", "-b", branch]);
        }
    }

    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(self.dir.path())
            .args([
                "-c",
                "user.name=Test",
                "-c",
                "user.email=test@turnout.invalid",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Every file below `dir` whose name is `name`.
pub fn find_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else if e.file_name() == name {
                out.push(p);
            }
        }
    }
    out
}

/// `chown -R` to `uid` (its group too), for a directory a daemon of that user must read.
pub fn chown_tree(dir: &Path, uid: u32) {
    std::os::unix::fs::lchown(dir, Some(uid), Some(uid)).unwrap();
    if dir.is_dir() && !dir.is_symlink() {
        for entry in std::fs::read_dir(dir).unwrap() {
            chown_tree(&entry.unwrap().path(), uid);
        }
    }
}

/// Processes whose command line is exactly `argv`.
pub fn processes(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect()
}

/// A host outside this machine as far as an environment can tell: a network namespace of the
/// test's own, joined to the host by a veth pair on the documentation range 198.51.100.`net`/30
/// (the host side `.net+1`, the outside `.net+2`), running `python3 -c program` in it, which
/// must listen on `addr` (the outside address, port 8080). Needs root; removed when dropped.
/// Tests that run side by side each take a `net` and a `tag` (which names the links) of their own.
pub struct OutsideHost {
    name: String,
    link: String,
    pub addr: SocketAddr,
    server: Child,
}

impl OutsideHost {
    pub fn start(tag: &str, net: u8, program: &str) -> OutsideHost {
        let name = format!("turnout-{tag}-{}", std::process::id());
        let (link, peer) = (format!("{tag}-host"), format!("{tag}-out"));
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        // A link left behind by a killed run of this test would make `link add` fail.
        let _ = Command::new("ip").args(["link", "delete", &link]).output();
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &name]);
        let (host_ip, outside_ip) = (
            format!("198.51.100.{}", net + 1),
            format!("198.51.100.{}", net + 2),
        );
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &link]);
        ip(&["link", "set", &link, "up"]);
        let outside_cidr = format!("{outside_ip}/30");
        ip(&["-n", &name, "addr", "add", &outside_cidr, "dev", &peer]);
        ip(&["-n", &name, "link", "set", &peer, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        let server = Command::new("ip")
            .args(["netns", "exec", &name, "python3", "-c", program])
            .spawn()
            .unwrap();
        let host = OutsideHost {
            name,
            link,
            addr: format!("{outside_ip}:8080").parse().unwrap(),
            server,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(host.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the outside host's server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        host
    }
}

impl Drop for OutsideHost {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["link", "delete", &self.link])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}
