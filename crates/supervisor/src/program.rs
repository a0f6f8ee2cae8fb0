//! One program run to completion: an argument vector (never a shell) with exactly the given
//! environment, as an identity, inside a network, with its output captured. For Turnout's own
//! tools (PostgreSQL's initdb, pg_ctl, pg_basebackup), not an app's commands.
//!
//! Unlike a task, whatever the program leaves running when it exits is left alone: `pg_ctl
//! start` exits with the server it started detached (in a session of its own), and that server
//! is the point. The program gets a process group of its own so that a timeout or a cancel
//! kills everything it started before it exited (pg_basebackup's WAL streamer).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, warn};
use turnout_netns::Network;

use crate::error::SupervisorError;
use crate::fmt_duration;
use crate::process::{ChildSetup, Identity, KILL_GRACE, describe_exit, prepare_child};
use crate::process::{signal_group, wait_group_gone};

/// How much of each of stdout and stderr is kept: the last 64 KiB.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// How long output is still read after the program has exited, in case something it started
/// (and left running) still holds a pipe open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// A program to run once.
#[derive(Clone, Debug)]
pub struct ProgramSpec {
    /// The executable (a path: PATH is not searched).
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// Its whole environment: nothing of the daemon's is inherited.
    pub env: Vec<(String, String)>,
    /// Whom it runs as; None runs it as the daemon's user.
    pub identity: Option<Identity>,
    /// The network it joins.
    pub network: Network,
    /// Killed (its whole process group) if it runs longer than this.
    pub timeout: Duration,
}

impl ProgramSpec {
    /// `program arg arg …`, for messages.
    pub fn display(&self) -> String {
        let mut shown = self.program.display().to_string();
        for arg in &self.args {
            shown.push(' ');
            shown.push_str(&arg.to_string_lossy());
        }
        shown
    }
}

/// How a program ended and the last [`OUTPUT_LIMIT`] bytes of each of its outputs.
#[derive(Clone, Debug)]
pub struct ProgramOutput {
    /// `program arg arg …`, as [`ProgramSpec::display`] shows it.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ProgramOutput {
    /// Itself if the program exited with status 0, else [`SupervisorError::TaskFailed`] with
    /// the status and the end of its output (stderr, else stdout).
    pub fn checked(self) -> Result<ProgramOutput, SupervisorError> {
        if self.status.success() {
            return Ok(self);
        }
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        Err(SupervisorError::TaskFailed {
            command: self.command,
            status: describe_exit(self.status),
            log_tail: tail,
        })
    }
}

/// Runs `spec` to completion (any exit status is `Ok`; see [`ProgramOutput::checked`]), with
/// no input, capturing its output; every stderr line (split at `\n` or `\r`, which progress
/// meters use) also goes to `on_stderr_line`. When `cancel` completes first the program's
/// process group is killed and the result is [`SupervisorError::Cancelled`]; after
/// `spec.timeout`, [`SupervisorError::TaskTimedOut`]. Nothing is killed when it exits by
/// itself.
pub async fn run_program(
    spec: &ProgramSpec,
    mut on_stderr_line: impl FnMut(&str) + Send,
    cancel: impl Future<Output = ()>,
) -> Result<ProgramOutput, SupervisorError> {
    let command_text = spec.display();
    let output_error = |source| SupervisorError::Output {
        command: command_text.clone(),
        source,
    };
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    prepare_child(
        &mut command,
        ChildSetup {
            cgroup_procs: Vec::new(),
            network: spec.network.clone(),
            identity: spec.identity,
            die_with_parent: false,
            controlling_tty: None,
        },
    );
    let mut child = command
        .spawn()
        .map_err(|source| SupervisorError::ProgramSpawn {
            command: command_text.clone(),
            cwd: spec.cwd.clone(),
            source,
        })?;
    drop(command);
    let pgid = child
        .id()
        .expect("a freshly spawned child has a pid until it is awaited");
    debug!(pgid, command = %command_text, "program started");
    let mut stdout = Capture::new(child.stdout.take());
    let mut stderr = Capture::new(child.stderr.take());
    let deadline = Instant::now() + spec.timeout;
    let mut drain_until: Option<Instant> = None;
    let mut exit: Option<ExitStatus> = None;
    let mut ending: Option<SupervisorError> = None;
    tokio::pin!(cancel);
    loop {
        if exit.is_some() && stdout.done() && stderr.done() {
            break;
        }
        tokio::select! {
            read = stdout.read() , if !stdout.done() => {
                read.map_err(output_error)?;
            }
            read = stderr.read(), if !stderr.done() => {
                for line in read.map_err(output_error)? {
                    on_stderr_line(&line);
                }
            }
            status = child.wait(), if exit.is_none() => {
                exit = Some(status.map_err(output_error)?);
                drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
            }
            _ = sleep_until(drain_until.unwrap_or(deadline)), if drain_until.is_some() => {
                warn!(pgid, command = %command_text, "output still open after the program exited; no longer reading it");
                break;
            }
            _ = sleep_until(deadline), if exit.is_none() => {
                ending = Some(SupervisorError::TaskTimedOut {
                    command: command_text.clone(),
                    timeout: fmt_duration(spec.timeout),
                    log_tail: stderr.text(),
                });
                break;
            }
            _ = &mut cancel, if exit.is_none() => {
                ending = Some(SupervisorError::Cancelled { command: command_text.clone() });
                break;
            }
        }
    }
    if let Some(ending) = ending {
        signal_group(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
        if !wait_group_gone(pgid, Instant::now() + KILL_GRACE).await {
            warn!(pgid, command = %command_text, "a killed program's processes are still alive after SIGKILL");
        }
        return Err(ending);
    }
    if let Some(rest) = stderr.rest() {
        on_stderr_line(&rest);
    }
    Ok(ProgramOutput {
        command: command_text,
        status: exit.expect("the loop ends without an ending only after the exit"),
        stdout: stdout.text(),
        stderr: stderr.text(),
    })
}

/// One output pipe: the last [`OUTPUT_LIMIT`] bytes, and the line being read.
struct Capture<R> {
    pipe: Option<R>,
    kept: VecDeque<u8>,
    line: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Capture<R> {
    fn new(pipe: Option<R>) -> Self {
        Capture {
            pipe,
            kept: VecDeque::new(),
            line: Vec::new(),
        }
    }

    fn done(&self) -> bool {
        self.pipe.is_none()
    }

    /// Reads what is there; returns the lines it completed.
    async fn read(&mut self) -> std::io::Result<Vec<String>> {
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(Vec::new());
        };
        let mut buf = [0u8; 8192];
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            self.pipe = None;
            return Ok(Vec::new());
        }
        let read = &buf[..n];
        self.kept.extend(read);
        let excess = self.kept.len().saturating_sub(OUTPUT_LIMIT);
        self.kept.drain(..excess);
        let mut lines = Vec::new();
        for &b in read {
            if b == b'\n' || b == b'\r' {
                if !self.line.is_empty() {
                    lines.push(String::from_utf8_lossy(&self.line).into_owned());
                    self.line.clear();
                }
            } else if self.line.len() < OUTPUT_LIMIT {
                self.line.push(b);
            }
        }
        Ok(lines)
    }

    /// A last line without a newline.
    fn rest(&mut self) -> Option<String> {
        (!self.line.is_empty())
            .then(|| String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned())
    }

    fn text(&self) -> String {
        let (a, b) = self.kept.as_slices();
        let mut bytes = a.to_vec();
        bytes.extend_from_slice(b);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(program: &str, args: &[&str]) -> ProgramSpec {
        ProgramSpec {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            cwd: "/".into(),
            env: vec![("ONLY".into(), "this".into())],
            identity: None,
            network: Network::Host,
            timeout: Duration::from_secs(20),
        }
    }

    fn never() -> impl Future<Output = ()> {
        std::future::pending()
    }

    #[tokio::test]
    async fn env_is_exactly_the_given_one_and_stderr_lines_are_reported() {
        let out = run_program(&spec("/usr/bin/env", &[]), |_| {}, never())
            .await
            .unwrap()
            .checked()
            .unwrap();
        assert_eq!(out.stdout, "ONLY=this\n");
        let mut lines = Vec::new();
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec("/bin/sh", &["-c", "pwd; printf 'a\\rb\\nc' >&2; exit 3"]);
        s.cwd = dir.path().to_owned();
        let out = run_program(&s, |l| lines.push(l.to_owned()), never())
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(
            out.stdout.trim(),
            dir.path().canonicalize().unwrap().to_str().unwrap()
        );
        assert_eq!(lines, ["a", "b", "c"]);
        let err = out.checked().unwrap_err();
        assert!(
            matches!(&err, SupervisorError::TaskFailed { status, log_tail, .. } if status == "exit status 3" && log_tail.contains('c')),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn output_is_bounded() {
        let s = spec(
            "/bin/sh",
            &["-c", "head -c 200000 /dev/zero | tr '\\0' x; echo END"],
        );
        let out = run_program(&s, |_| {}, never()).await.unwrap();
        assert_eq!(out.stdout.len(), OUTPUT_LIMIT);
        assert!(out.stdout.ends_with("xEND\n"));
    }

    #[tokio::test]
    async fn timeout_and_cancel_kill_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child-pid");
        let script = format!("sleep 60 & echo $! > {}; wait", marker.display());
        let mut s = spec("/bin/sh", &["-c", &script]);
        s.timeout = Duration::from_millis(500);
        let err = run_program(&s, |_| {}, never()).await.unwrap_err();
        assert!(
            matches!(err, SupervisorError::TaskTimedOut { .. }),
            "{err:?}"
        );
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Gone, or a zombie no one reaps (a container's init may not).
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = state.rsplit(')').next().unwrap_or("").trim_start();
        assert!(
            state.is_empty() || state.starts_with('Z'),
            "the grandchild was killed: {state}"
        );

        s.timeout = Duration::from_secs(60);
        let err = run_program(&s, |_| {}, tokio::time::sleep(Duration::from_millis(300)))
            .await
            .unwrap_err();
        assert!(matches!(err, SupervisorError::Cancelled { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn what_it_leaves_running_in_another_session_survives() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("pid");
        let script = format!(
            "setsid sleep 30 </dev/null >/dev/null 2>&1 & echo $! > {}",
            marker.display()
        );
        let out = run_program(&spec("/bin/sh", &["-c", &script]), |_| {}, never())
            .await
            .unwrap();
        assert!(out.status.success());
        let pid = nix::unistd::Pid::from_raw(
            std::fs::read_to_string(&marker)
                .unwrap()
                .trim()
                .parse()
                .unwrap(),
        );
        assert!(nix::sys::signal::kill(pid, None).is_ok(), "left running");
        nix::sys::signal::kill(pid, Signal::SIGKILL).unwrap();
    }

    #[tokio::test]
    async fn runs_as_the_identity_when_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: not root, so no other identity can be taken");
            let out = run_program(&spec("/usr/bin/id", &["-u"]), |_| {}, never())
                .await
                .unwrap();
            assert_eq!(out.stdout.trim(), nix::unistd::geteuid().to_string());
            return;
        }
        let mut s = spec("/usr/bin/id", &[]);
        s.identity = Some(Identity {
            uid: 65534,
            gid: 65534,
        });
        let out = run_program(&s, |_| {}, never())
            .await
            .unwrap()
            .checked()
            .unwrap();
        assert!(out.stdout.starts_with("uid=65534"), "{}", out.stdout);
        assert!(out.stdout.contains("gid=65534"), "{}", out.stdout);
        assert!(!out.stdout.contains("groups=0"), "{}", out.stdout);
    }
}
