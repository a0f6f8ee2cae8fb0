//! Commands a user runs in an environment (`turnout run`): an argument vector (never a shell)
//! with exactly the given environment, identity, control group, network and sandbox, like an
//! instance, whose standard streams belong to the caller. Either three pipes (output and error
//! kept apart, byte for byte) or a fresh pseudo-terminal, of which the command is the session
//! leader and the controlling terminal is the command's own (so a Ctrl-C typed into it, byte
//! 0x03, reaches the foreground process group through the line discipline).
//!
//! Nothing outlives the command: once it exits its output is read to the end (for at most
//! [`DRAIN_AFTER_EXIT`]) and what it left in its group is killed. A hang-up (the caller gone,
//! the daemon stopping, a cancel) sends SIGHUP to the group, then SIGKILL after
//! [`HANGUP_GRACE`]. The command's process also gets SIGKILL should the daemon die (the
//! parent-death signal), and the rest of its group is reaped at the next start through its
//! pid file, as a build's is.
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};
use tracing::{info, warn};
use turnout_netns::Network;

use crate::cgroup::{Cgroup, CgroupSpec};
use crate::error::SupervisorError;
use crate::process::{
    ChildSetup, GroupGuard, Identity, KILL_GRACE, TASK_TOKEN_VAR, new_token, prepare_child,
    remove_pid_file, signal_group, wait_group_gone, write_pid_file,
};
use crate::sandbox::Sandbox;

/// How long output is still read after the command exited, for processes outside its group
/// that hold its output open.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// How long a command has to end after SIGHUP before its group gets SIGKILL.
pub const HANGUP_GRACE: Duration = Duration::from_secs(5);

/// The most read from an output at once (one frame on the way to the caller).
const CHUNK: usize = 32 * 1024;

/// A command to run with the caller's streams.
#[derive(Clone, Debug)]
pub struct ExecSpec {
    /// The program and its arguments, found through the environment's PATH.
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// The whole environment: nothing of the daemon's is inherited. The supervisor adds only
    /// its `TURNOUT_TASK` token.
    pub env: Vec<(String, String)>,
    pub identity: Option<Identity>,
    /// A group of its own inside this one, with its limits.
    pub cgroup: Option<CgroupSpec>,
    pub network: Network,
    pub sandbox: Option<Sandbox>,
    /// On a fresh pseudo-terminal of this size (columns, rows); None: pipes.
    pub tty: Option<(u16, u16)>,
    /// Where to record its process group and token while it runs (`run-<token>.pid`), so that
    /// [`crate::reap_stale`] kills what a killed daemon's run left (the parent-death signal
    /// reaches the command's own process only).
    pub pid_dir: Option<PathBuf>,
}

/// What the caller sends the command.
#[derive(Debug)]
pub enum ExecInput {
    Stdin(Bytes),
    /// End of input: standard input is closed (on a terminal, end-of-file, Ctrl-D, is typed).
    StdinEof,
    /// A terminal's new size (columns, rows); the kernel tells the foreground group (SIGWINCH).
    Resize(u16, u16),
    /// A signal for the command's process group.
    Signal(Signal),
}

/// What the command writes. On a terminal, everything is `Stdout`.
#[derive(Debug)]
pub enum ExecOutput {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// How a run ended: its status, and whether it was hung up on.
#[derive(Debug, Clone, Copy)]
pub struct ExecEnd {
    pub status: ExitStatus,
    pub hung_up: bool,
}

/// Runs the command until it exits or `hangup` resolves, passing `input` to it and its output
/// to `output` (an output nobody reads any more is dropped). Fails only when it cannot start
/// (`SupervisorError::ExecSpawn`: a missing program, a cwd gone).
pub async fn run_exec(
    spec: ExecSpec,
    input: mpsc::Receiver<ExecInput>,
    output: mpsc::Sender<ExecOutput>,
    hangup: impl Future<Output = ()> + Send,
) -> Result<ExecEnd, SupervisorError> {
    let token = new_token();
    let cgroup = spec
        .cgroup
        .as_ref()
        .map(|plan| Cgroup::create(plan, &token))
        .transpose()?;
    if let Some(reason) = cgroup.as_ref().and_then(Cgroup::unenforced) {
        warn!(reason, "a run's resource limits are not enforced");
    }
    let outcome = exec_in_group(&spec, &token, cgroup.as_ref(), input, output, hangup).await;
    if let Some(cgroup) = &cgroup {
        cgroup.remove().await;
    }
    outcome
}

/// A pseudo-terminal's two ends: the controller (ours) and the terminal (the command's).
struct Pty {
    controller: OwnedFd,
    terminal: OwnedFd,
}

fn open_pty(size: (u16, u16), owner: Option<Identity>) -> std::io::Result<Pty> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let controller = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&controller)?;
    unlockpt(&controller)?;
    let name = ptsname(&controller, Vec::new())?;
    let terminal = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    // The terminal is the environment's user's, as a login's is: programs that open
    // /dev/tty again (ssh, sudo, less) need to.
    if let Some(id) = owner {
        rustix::fs::fchown(
            &terminal,
            Some(rustix::fs::Uid::from_raw(id.uid)),
            Some(rustix::fs::Gid::from_raw(id.gid)),
        )?;
    }
    set_size(&controller, size)?;
    rustix::io::ioctl_fionbio(&controller, true)?;
    Ok(Pty {
        controller,
        terminal,
    })
}

fn set_size(fd: impl AsFd, (cols, rows): (u16, u16)) -> std::io::Result<()> {
    let size = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    Ok(rustix::termios::tcsetwinsize(fd, size)?)
}

/// Where the command's input goes.
enum Stdin {
    Pipe(Option<tokio::process::ChildStdin>),
    Pty(Arc<AsyncFd<OwnedFd>>),
}

impl Stdin {
    async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Stdin::Pipe(Some(pipe)) => pipe.write_all(data).await,
            // Closed by an end of input: more input has nowhere to go.
            Stdin::Pipe(None) => Ok(()),
            Stdin::Pty(fd) => {
                let mut rest = data;
                while !rest.is_empty() {
                    let mut ready = fd.writable().await?;
                    match ready.try_io(|fd| Ok(rustix::io::write(fd.get_ref(), rest)?)) {
                        Ok(n) => rest = &rest[n?..],
                        Err(_would_block) => continue,
                    }
                }
                Ok(())
            }
        }
    }

    async fn end(&mut self) -> std::io::Result<()> {
        match self {
            Stdin::Pipe(pipe) => {
                pipe.take();
                Ok(())
            }
            // A terminal has no end of its own: typing the end-of-file character (VEOF, ^D)
            // is what ends a reader's input in canonical mode.
            Stdin::Pty(_) => self.write(&[0x04]).await,
        }
    }
}

/// Feeds the caller's input to the command until the caller has no more; a failed write (the
/// command closed its input) drops what follows.
async fn feed(mut stdin: Stdin, mut input: mpsc::Receiver<ExecInput>, pgid: u32) {
    let mut broken = false;
    while let Some(message) = input.recv().await {
        let written = match message {
            ExecInput::Stdin(_) | ExecInput::StdinEof if broken => Ok(()),
            ExecInput::Stdin(data) => stdin.write(&data).await,
            ExecInput::StdinEof => stdin.end().await,
            ExecInput::Resize(cols, rows) => match &stdin {
                Stdin::Pty(fd) => set_size(fd.get_ref(), (cols, rows)),
                Stdin::Pipe(_) => Ok(()),
            },
            ExecInput::Signal(signal) => {
                signal_group(pgid, signal);
                Ok(())
            }
        };
        if written.is_err() {
            broken = true;
        }
    }
}

/// Passes one output to the caller until its end.
async fn pump(mut from: impl AsyncRead + Unpin, to: mpsc::Sender<ExecOutput>, stderr: bool) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let data = Bytes::copy_from_slice(&buf[..n]);
                let out = if stderr {
                    ExecOutput::Stderr(data)
                } else {
                    ExecOutput::Stdout(data)
                };
                if to.send(out).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Passes a terminal's output to the caller until every process closed the terminal (the
/// controller then reads EIO).
async fn pump_pty(fd: Arc<AsyncFd<OwnedFd>>, to: mpsc::Sender<ExecOutput>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let Ok(mut ready) = fd.readable().await else {
            return;
        };
        match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut buf[..])?)) {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => {
                let data = Bytes::copy_from_slice(&buf[..n]);
                if to.send(ExecOutput::Stdout(data)).await.is_err() {
                    return;
                }
            }
            Err(_would_block) => continue,
        }
    }
}

async fn exec_in_group(
    spec: &ExecSpec,
    token: &str,
    cgroup: Option<&Cgroup>,
    input: mpsc::Receiver<ExecInput>,
    output: mpsc::Sender<ExecOutput>,
    hangup: impl Future<Output = ()>,
) -> Result<ExecEnd, SupervisorError> {
    let command_text = spec.argv.join(" ");
    let spawn_error = |source| SupervisorError::ExecSpawn {
        command: command_text.clone(),
        cwd: spec.cwd.clone(),
        source,
    };
    let pty = spec
        .tty
        .map(|size| open_pty(size, spec.identity))
        .transpose()
        .map_err(spawn_error)?;
    let cgroup_procs = match cgroup {
        Some(cgroup) => cgroup.open_procs().map_err(spawn_error)?,
        None => Vec::new(),
    };
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| spawn_error(std::io::Error::other("an empty command")))?;
    let mut command = match &spec.sandbox {
        // A run's sandbox is bwrap's, as an instance's, without `--new-session`: that option
        // guards a terminal the sandbox shares with its caller (TIOCSTI), and would take the
        // controlling terminal away from a PTY run; a run's terminal is a fresh one of its own.
        Some(sandbox) => {
            let mut command = Command::new(&sandbox.bwrap);
            command.args(sandbox.args(&spec.cwd, true)).arg(program);
            command
        }
        None => Command::new(program),
    };
    command
        .args(args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(TASK_TOKEN_VAR, token)
        .kill_on_drop(false);
    let controlling_tty = match &pty {
        Some(pty) => {
            let stdio = || pty.terminal.try_clone().map(Stdio::from);
            command
                .stdin(stdio().map_err(spawn_error)?)
                .stdout(stdio().map_err(spawn_error)?)
                .stderr(stdio().map_err(spawn_error)?);
            Some(pty.terminal.try_clone().map_err(spawn_error)?)
        }
        None => {
            command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            None
        }
    };
    prepare_child(
        &mut command,
        ChildSetup {
            cgroup_procs,
            network: spec.network.clone(),
            identity: spec.identity,
            die_with_parent: true,
            controlling_tty,
        },
    );
    let mut child = command.spawn().map_err(spawn_error)?;
    // Our copies of the terminal's end go, so the controller reads its end once the command's
    // processes have all closed it.
    drop(command);
    let pgid = child
        .id()
        .expect("a freshly spawned child has a pid until it is awaited");
    let mut guard = GroupGuard::new(pgid);
    info!(pgid, command = %command_text, tty = pty.is_some(), "run started");
    let pid_file = spec
        .pid_dir
        .as_ref()
        .map(|dir| dir.join(format!("run-{token}.pid")));
    if let Some(pid_file) = &pid_file
        && let Err(e) = write_pid_file(pid_file, pgid, token).await
    {
        warn!(pid_file = %pid_file.display(), error = %e, "could not write pid file; a daemon crash would leave this run's processes running");
    }

    let mut pumps = tokio::task::JoinSet::new();
    let stdin = match pty {
        Some(pty) => {
            drop(pty.terminal);
            // `new` is deprecated for types that may not own their descriptor (a raw one
            // could be closed and reused under the registration); an `OwnedFd` owns it.
            #[allow(deprecated)]
            let fd = AsyncFd::new(pty.controller).map_err(spawn_error)?;
            let fd = Arc::new(fd);
            pumps.spawn(pump_pty(fd.clone(), output));
            Stdin::Pty(fd)
        }
        None => {
            if let Some(out) = child.stdout.take() {
                pumps.spawn(pump(out, output.clone(), false));
            }
            if let Some(err) = child.stderr.take() {
                pumps.spawn(pump(err, output, true));
            }
            Stdin::Pipe(child.stdin.take())
        }
    };
    let feeder = tokio::spawn(feed(stdin, input, pgid));

    let exited = tokio::select! {
        status = child.wait() => Some(status),
        () = hangup => None,
    };
    let (status, hung_up) = match exited {
        Some(status) => {
            // Output written just before the exit is still in the pipes: read it to the end.
            let drained = Instant::now() + DRAIN_AFTER_EXIT;
            while let Ok(Some(_)) = timeout_at(drained, pumps.join_next()).await {}
            (status, false)
        }
        None => {
            info!(pgid, command = %command_text, "run hung up");
            signal_group(pgid, Signal::SIGHUP);
            let grace = Instant::now() + HANGUP_GRACE;
            let status = match timeout_at(grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    signal_group(pgid, Signal::SIGKILL);
                    child.wait().await
                }
            };
            // The rest of the group has the same grace before the SIGKILL below.
            wait_group_gone(pgid, grace).await;
            (status, true)
        }
    };
    feeder.abort();
    pumps.abort_all();
    signal_group(pgid, Signal::SIGKILL);
    if wait_group_gone(pgid, Instant::now() + KILL_GRACE).await {
        guard.disarm();
        if let Some(pid_file) = &pid_file {
            remove_pid_file(pid_file).await;
        }
    } else {
        warn!(pgid, command = %command_text, "processes of a run are still alive after SIGKILL");
    }
    let status = status.map_err(|source| SupervisorError::Output {
        command: command_text.clone(),
        source,
    })?;
    info!(pgid, command = %command_text, ?status, hung_up, "run ended");
    Ok(ExecEnd { status, hung_up })
}
