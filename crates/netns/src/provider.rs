//! Making and removing namespaces (`ip netns`), and keeping their way out (`pasta`) running.
//!
//! Every argument given to `ip` and `pasta` is Turnout's own (a namespace name made of a uid,
//! a path under the home): no user input, and no shell.
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{NETNS_DIR, Namespace};

/// How long a `pasta` that exited waits before it is started again, at most.
const RESTART_MAX: Duration = Duration::from_secs(30);

/// The programs that make namespaces and connect them out, found on this machine.
#[derive(Clone, Debug)]
pub struct Provider {
    ip: PathBuf,
    pasta: PathBuf,
}

impl Provider {
    /// Namespaces need root, `ip` (iproute2) and `pasta` (passt). `Err` says which is missing,
    /// in words for `turnout serve`'s output.
    pub fn detect() -> Result<Provider, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not root, so environments cannot have network namespaces".to_owned());
        }
        let ip = find("ip").ok_or_else(|| {
            "`ip` (package iproute2) is not installed, so environments cannot have network namespaces".to_owned()
        })?;
        let pasta = find("pasta").ok_or_else(|| {
            "`pasta` (package passt) is not installed, so environments cannot have network namespaces with a way out".to_owned()
        })?;
        Ok(Provider { ip, pasta })
    }

    /// Open the namespace `name`, making it first if it does not exist (a namespace made by an
    /// earlier run is kept, with whatever runs in it).
    pub async fn create(&self, name: &str) -> io::Result<Namespace> {
        if !Path::new(NETNS_DIR).join(name).exists() {
            run(Command::new(&self.ip).args(["netns", "add", name])).await?;
        }
        Namespace::open(name)
    }

    /// Remove the namespace `name`. Its processes should be gone first; a `pasta` attached to
    /// it quits when it goes. Removing one that does not exist is not an error.
    pub async fn remove(&self, name: &str) -> io::Result<()> {
        if !Path::new(NETNS_DIR).join(name).exists() {
            return Ok(());
        }
        run(Command::new(&self.ip).args(["netns", "delete", name])).await
    }

    /// Keep a `pasta` attached to `ns` until the returned [`Outbound`] is dropped, starting it
    /// again (after a growing pause) whenever it exits. Its log goes to `log`. A `pasta` that an
    /// earlier run of the daemon left attached to the same namespace (recorded in `pid_file`) is
    /// stopped first: two cannot share the namespace's interface.
    pub fn keep_outbound(&self, ns: &Namespace, log: PathBuf, pid_file: PathBuf) -> Outbound {
        let (stop, mut stopped) = watch::channel(Ending::Running);
        let (pasta, path, name) = (self.pasta.clone(), ns.path(), ns.name().to_owned());
        tokio::spawn(async move {
            stop_stale(&pid_file, &path).await;
            let mut pause = Duration::from_millis(250);
            loop {
                let mut child = match pasta_command(&pasta, &path, &log).spawn() {
                    Ok(child) => child,
                    Err(e) => {
                        warn!(namespace = %name, error = %e, "cannot start pasta; the environment has no way out");
                        return;
                    }
                };
                if let Some(pid) = child.id() {
                    record_pid(&pid_file, pid);
                }
                let started = tokio::time::Instant::now();
                tokio::select! {
                    status = child.wait() => {
                        warn!(namespace = %name, status = ?status.ok(), log = %log.display(), "pasta exited; starting it again");
                        if started.elapsed() > RESTART_MAX {
                            pause = Duration::from_millis(250);
                        }
                    }
                    _ = stopped.changed() => {
                        // Left running for a successor, or stopped (also when the Outbound was
                        // dropped, which closes the channel).
                        if *stopped.borrow() != Ending::Detach {
                            let _ = child.start_kill();
                            let _ = child.wait().await;
                            let _ = std::fs::remove_file(&pid_file);
                        }
                        return;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stopped.changed() => return,
                }
                pause = (pause * 2).min(RESTART_MAX);
            }
        });
        info!(namespace = %ns.name(), "network namespace connected out");
        Outbound { stop }
    }

    /// Leave `ns` without a way out: stop a `pasta` an earlier run left attached to it
    /// (recorded in `pid_file`), and bring its loopback up (which `pasta` does otherwise), so
    /// the listeners inside it work. Its processes then reach nothing outside the namespace.
    pub async fn no_outbound(&self, ns: &Namespace, pid_file: &Path) -> io::Result<()> {
        stop_stale(pid_file, &ns.path()).await;
        let _ = std::fs::remove_file(pid_file);
        run(Command::new(&self.ip).args(["-n", ns.name(), "link", "set", "lo", "up"])).await
    }
}

/// A namespace's way out, kept running while this lives (or after [`Outbound::detach`]).
#[derive(Debug)]
pub struct Outbound {
    stop: watch::Sender<Ending>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Running,
    /// Leave `pasta` running: a successor daemon takes the namespace over (and replaces it).
    Detach,
}

impl Outbound {
    /// Stop watching over `pasta` but leave it running, for the daemon that takes over.
    pub fn detach(self) {
        let _ = self.stop.send(Ending::Detach);
    }
}

/// `pasta` in the foreground, attached to the namespace at `ns`: it configures the namespace's
/// interface like the host's, forwards no port in either direction (`-t/-u/-T/-U none`: the
/// namespace reaches no port of the host's loopback, nothing of the host reaches the
/// namespace's), and does not map the gateway address to the host (`--no-map-gw`). It stays
/// root (`--runas 0:0`): Debian 12's pasta cannot join a namespace after dropping to `nobody`.
fn pasta_command(pasta: &Path, ns: &Path, log: &Path) -> Command {
    let mut command = Command::new(pasta);
    command
        .args(["--config-net", "--netns"])
        .arg(ns)
        .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
        .args(["--no-map-gw", "--runas", "0:0", "--foreground", "--quiet"])
        .arg("--log-file")
        .arg(log)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group: a signal to the daemon's group does not reach it. Killed explicitly
        // when stopped, never by dropping: a detached one outlives this daemon.
        .process_group(0)
        .kill_on_drop(false);
    command
}

/// Write `pid` to `pid_file` beside it and rename it into place, so a daemon killed meanwhile
/// leaves the old record or the new one, never an empty file.
fn record_pid(pid_file: &Path, pid: u32) {
    let mut partial = pid_file.as_os_str().to_owned();
    partial.push(".partial");
    let written = std::fs::write(&partial, pid.to_string())
        .and_then(|()| std::fs::rename(&partial, pid_file));
    if let Err(e) = written {
        warn!(pid_file = %pid_file.display(), error = %e, "cannot record pasta's pid; a killed daemon's successor will not find it");
    }
}

/// Stop a `pasta` recorded in `pid_file` if it is still attached to `ns` (its command line
/// names it), and wait for it to go.
async fn stop_stale(pid_file: &Path, ns: &Path) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return;
    };
    let ns = ns.as_os_str().as_encoded_bytes();
    let ours = cmdline.split(|b| *b == 0).any(|arg| arg == ns);
    if !ours {
        return;
    }
    let pid = Pid::from_raw(pid);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while kill(pid, None).is_ok() {
        if tokio::time::Instant::now() > deadline {
            let _ = kill(pid, Signal::SIGKILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(command: &mut Command) -> io::Result<()> {
    let output = command.env_clear().stdin(Stdio::null()).output().await?;
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{:?} failed ({}): {}",
        command.as_std(),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

/// `program` in the usual system directories (the daemon's PATH is not trusted for this).
fn find(program: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .map(|dir| Path::new(dir).join(program))
    .find(|path| path.is_file())
}
