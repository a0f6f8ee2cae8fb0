//! The daemon's side: [`ShimRuntime`] and the handles of the instances it started or adopted.
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tracing::warn;
use turnout_netns::Network;

use super::wire::{Launch, Reply, Request};
use crate::cgroup::ResourceUsage;
use crate::error::SupervisorError;
use crate::exec::{ExecEnd, ExecInput, ExecOutput, ExecSpec};
use crate::instance::{InstanceSpec, InstanceState, InstanceStatus};
use crate::process::{new_token, reap_stale_and_wait};
use crate::runtime::{Adoptable, BoxFuture, InstanceHandle, LocalRuntime, Runtime};
use crate::task::TaskSpec;

/// The longest path a unix socket can have (`sun_path` holds 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// A supervising process answers `ready` once it has spawned the app; spawning takes
/// milliseconds, so this only bounds a process that hangs.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs every instance under a supervising process of its own (see the module), and everything
/// else (builds, clean-up) as [`LocalRuntime`] does.
#[derive(Debug)]
pub struct ShimRuntime {
    exe: PathBuf,
    sockets: PathBuf,
}

impl ShimRuntime {
    /// `exe` is the `turnout` binary (run as `exe __instance`); `sockets` a directory for the
    /// supervising processes' sockets, made the daemon's alone (0700). Fails when a socket's path
    /// there would be too long for a unix socket.
    pub fn new(exe: PathBuf, sockets: PathBuf) -> std::io::Result<ShimRuntime> {
        let longest = socket_path(&sockets, &new_token()).as_os_str().len() + 8;
        if longest > MAX_SOCKET_PATH {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} is too long a directory for the instances' unix sockets ({longest} bytes with a socket's name, at most {MAX_SOCKET_PATH}); use a home with a shorter path",
                    sockets.display()
                ),
            ));
        }
        std::fs::create_dir_all(&sockets)?;
        std::fs::set_permissions(&sockets, std::fs::Permissions::from_mode(0o700))?;
        Ok(ShimRuntime { exe, sockets })
    }
}

fn socket_path(dir: &Path, token: &str) -> PathBuf {
    dir.join(format!("{token}.sock"))
}

impl Runtime for ShimRuntime {
    fn start(
        &self,
        spec: InstanceSpec,
    ) -> BoxFuture<'_, Result<Arc<dyn InstanceHandle>, SupervisorError>> {
        Box::pin(async move {
            let socket = socket_path(&self.sockets, &new_token());
            let launch = Launch { spec, socket };
            let spawn_error = |source| SupervisorError::Spawn {
                command: format!("{} __instance", self.exe.display()),
                cwd: launch.spec.cwd.clone(),
                source,
            };
            let mut child = Command::new(&self.exe)
                .arg("__instance")
                .env_clear()
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                // Its own group: a signal to the daemon's group does not reach it.
                .process_group(0)
                .kill_on_drop(false)
                .spawn()
                .map_err(spawn_error)?;
            let mut line = serde_json::to_vec(&launch)
                .map_err(std::io::Error::other)
                .map_err(spawn_error)?;
            line.push(b'\n');
            let mut stdin = child.stdin.take().expect("stdin is piped");
            let stdout = child.stdout.take().expect("stdout is piped");
            let mut answer = String::new();
            let sent = stdin.write_all(&line).await;
            drop(stdin);
            let read = match sent {
                Ok(()) => tokio::time::timeout(
                    READY_TIMEOUT,
                    BufReader::new(stdout).read_line(&mut answer),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "the instance's supervisor did not start it within {}s",
                            READY_TIMEOUT.as_secs()
                        ),
                    ))
                }),
                Err(e) => Err(e),
            };
            let started = match read {
                Ok(_) if answer.trim_end() == "ready" => {
                    ShimInstance::follow(launch.socket.clone(), &launch.spec).await
                }
                Ok(_) => Err(SupervisorError::Reported(
                    answer
                        .trim_end()
                        .strip_prefix("error: ")
                        .unwrap_or("the instance's supervisor exited without starting it")
                        .to_owned(),
                )),
                Err(e) => Err(spawn_error(e)),
            };
            match started {
                Ok(handle) => {
                    // Reaped whenever it exits, so it never lingers as a zombie of this daemon.
                    tokio::spawn(async move {
                        let _ = child.wait().await;
                    });
                    Ok(Arc::new(handle) as Arc<dyn InstanceHandle>)
                }
                Err(e) => {
                    abandon(child, &launch).await;
                    Err(e)
                }
            }
        })
    }

    fn run_task<'a>(
        &'a self,
        spec: TaskSpec,
        on_line: &'a mut (dyn FnMut(&str) + Send),
    ) -> BoxFuture<'a, Result<(), SupervisorError>> {
        LocalRuntime.run_task(spec, on_line)
    }

    fn reap_stale<'a>(&'a self, pid_file: &'a Path) -> BoxFuture<'a, ()> {
        LocalRuntime.reap_stale(pid_file)
    }

    fn remove_cgroup<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()> {
        LocalRuntime.remove_cgroup(name)
    }

    /// A run is the daemon's own child, as a build is: it ends with its caller's connection.
    fn exec<'a>(
        &'a self,
        spec: ExecSpec,
        input: mpsc::Receiver<ExecInput>,
        output: mpsc::Sender<ExecOutput>,
        hangup: BoxFuture<'a, ()>,
    ) -> BoxFuture<'a, Result<ExecEnd, SupervisorError>> {
        LocalRuntime.exec(spec, input, output, hangup)
    }

    /// The instances that supervising processes in the sockets directory still run (left by an
    /// earlier daemon, or started by this one). A socket nobody answers on is removed.
    fn adoptable(&self) -> BoxFuture<'_, Vec<Adoptable>> {
        Box::pin(async move {
            let mut found = Vec::new();
            let Ok(entries) = std::fs::read_dir(&self.sockets) else {
                return found;
            };
            for entry in entries.flatten() {
                let socket = entry.path();
                if socket.extension().is_none_or(|e| e != "sock") {
                    continue;
                }
                match call(&socket, &Request::Describe).await {
                    Ok(Reply::Described(spec)) => {
                        let spec = *spec;
                        match ShimInstance::follow(socket.clone(), &spec).await {
                            Ok(handle) => found.push(Adoptable {
                                spec,
                                handle: Arc::new(handle),
                            }),
                            Err(e) => {
                                warn!(socket = %socket.display(), error = %e, "an instance's supervisor stopped answering")
                            }
                        }
                    }
                    Ok(other) => {
                        warn!(socket = %socket.display(), reply = ?other, "an instance's supervisor answered something else; leaving it alone");
                    }
                    Err(_) => {
                        let _ = std::fs::remove_file(&socket);
                    }
                }
            }
            found
        })
    }
}

/// A start that failed leaves nothing running: the supervising process is killed (one that
/// reported an error has already stopped what it started and exited; one that hung or cannot
/// be reached must start nothing more), then whatever instance it may have started is reaped
/// through the pid file, as after a killed daemon.
async fn abandon(mut child: tokio::process::Child, launch: &Launch) {
    let _ = child.kill().await;
    if let Some(pid_file) = &launch.spec.pid_file {
        reap_stale_and_wait(pid_file).await;
    }
    let _ = std::fs::remove_file(&launch.socket);
}

/// An instance run by a supervising process, reached through its socket.
struct ShimInstance {
    socket: PathBuf,
    port: u16,
    network: Network,
    /// For a supervising process that died without stopping its instance.
    pid_file: Option<PathBuf>,
    /// Its status as the supervising process reports each change (see [`ShimInstance::follow`]).
    status: watch::Receiver<InstanceStatus>,
}

impl ShimInstance {
    /// A handle to the instance whose supervising process listens on `socket`, following its
    /// status from now on over one connection kept open: each change arrives as a line. When
    /// the connection ends (the process exited) the last status stays if it was final (stopped,
    /// crashed); otherwise the instance is reported gone.
    async fn follow(socket: PathBuf, spec: &InstanceSpec) -> Result<ShimInstance, SupervisorError> {
        let unreachable = |source| SupervisorError::Unreachable {
            socket: socket.clone(),
            source,
        };
        let stream = UnixStream::connect(&socket).await.map_err(unreachable)?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_vec(&Request::Watch)
            .map_err(std::io::Error::other)
            .map_err(unreachable)?;
        line.push(b'\n');
        write.write_all(&line).await.map_err(unreachable)?;
        let mut lines = BufReader::new(read).lines();
        let first = match lines.next_line().await.map_err(unreachable)? {
            Some(line) => match serde_json::from_str(&line) {
                Ok(Reply::Status(status)) => status,
                Ok(other) => return Err(unexpected(other)),
                Err(e) => return Err(unreachable(std::io::Error::other(e))),
            },
            None => return Err(unreachable(std::io::ErrorKind::UnexpectedEof.into())),
        };
        let (tx, status) = watch::channel(first);
        tokio::spawn(async move {
            // Kept open for as long as the watch lasts.
            let _write = write;
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(Reply::Status(next)) = serde_json::from_str(&line) {
                    tx.send_replace(next);
                }
            }
            if !tx.borrow().state.is_final() {
                tx.send_replace(gone("its supervisor exited"));
            }
        });
        Ok(ShimInstance {
            socket,
            port: spec.port,
            network: spec.network.clone(),
            pid_file: spec.pid_file.clone(),
            status,
        })
    }

    async fn call(&self, request: Request) -> Result<Reply, SupervisorError> {
        call(&self.socket, &request)
            .await
            .map_err(|source| SupervisorError::Unreachable {
                socket: self.socket.clone(),
                source,
            })
    }

    async fn done(&self, request: Request) -> Result<(), SupervisorError> {
        match self.call(request).await? {
            Reply::Done(result) => result.map_err(SupervisorError::Reported),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(reply: Reply) -> SupervisorError {
    SupervisorError::Reported(format!("the instance's supervisor answered {reply:?}"))
}

impl InstanceHandle for ShimInstance {
    fn port(&self) -> u16 {
        self.port
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn network(&self) -> &Network {
        &self.network
    }

    fn wait_healthy(&self) -> BoxFuture<'_, Result<(), SupervisorError>> {
        Box::pin(self.done(Request::WaitHealthy))
    }

    fn check_health(&self) -> BoxFuture<'_, Result<(), SupervisorError>> {
        Box::pin(self.done(Request::CheckHealth))
    }

    fn status(&self) -> InstanceStatus {
        self.status.borrow().clone()
    }

    fn status_changes(&self) -> watch::Receiver<InstanceStatus> {
        self.status.clone()
    }

    fn usage(&self) -> BoxFuture<'_, ResourceUsage> {
        Box::pin(async move {
            match self.call(Request::Usage).await {
                Ok(Reply::Usage(usage)) => usage,
                _ => ResourceUsage::default(),
            }
        })
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.done(Request::Stop).await {
                // Its supervisor is gone: stop what it may have left, as after a killed daemon.
                warn!(socket = %self.socket.display(), error = %e, "stopping an instance whose supervisor does not answer");
                if let Some(pid_file) = &self.pid_file {
                    reap_stale_and_wait(pid_file).await;
                }
                let _ = std::fs::remove_file(&self.socket);
            }
        })
    }
}

/// The status of an instance whose supervising process is gone: ended, saying why.
fn gone(why: &str) -> InstanceStatus {
    InstanceStatus {
        state: InstanceState::Crashed,
        pid: None,
        restarts: 0,
        last_exit: Some(why.to_owned()),
        started_at: UNIX_EPOCH,
        limits_not_enforced: None,
    }
}

/// One request on a fresh connection, and its reply.
async fn call(socket: &Path, request: &Request) -> std::io::Result<Reply> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut answer = String::new();
    BufReader::new(read).read_line(&mut answer).await?;
    if answer.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "no answer",
        ));
    }
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}
