//! One-shot commands (builds, migrations): run to completion, stream output, bound the time.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::time::{Instant, sleep_until};
use tracing::{info, warn};
use turnout_netns::Network;

use crate::cgroup::{Cgroup, CgroupSpec};
use crate::error::SupervisorError;
use crate::fmt_duration;
use crate::log::LogWriter;
use crate::process::{
    GroupGuard, Identity, KILL_GRACE, Shell, TAIL_WINDOW, TASK_TOKEN_VAR, describe_exit,
    error_tail, new_token, remove_pid_file, shell_command, signal_group, wait_group_gone,
    write_pid_file,
};
use crate::sandbox::Sandbox;

/// How long output is still read after the command has exited, in case a process outside its
/// group (one that called setsid) still holds the output pipe open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// A one-shot command, e.g. a build.
#[derive(Clone, Debug)]
pub struct TaskSpec {
    /// The app's own command, run as `sh -c <command>`.
    pub command: String,
    pub cwd: PathBuf,
    /// The command's whole environment: nothing of the daemon's is inherited, so the caller
    /// passes PATH, HOME, LANG and the TURNOUT_* variables here. The supervisor adds only its
    /// own `TURNOUT_TASK` token.
    pub env: Vec<(String, String)>,
    /// Whom the command runs as; None runs it as the daemon's user.
    pub identity: Option<Identity>,
    /// Limits for the whole build. If the machine cannot enforce them, the build runs without
    /// them and a `[turnout] resource limits not enforced: …` line says so (in the log and to
    /// `on_line`).
    pub cgroup: Option<CgroupSpec>,
    /// The network the command's processes join.
    pub network: Network,
    /// Not root: the sandbox the command runs in (see [`crate::Sandbox`]).
    pub sandbox: Option<Sandbox>,
    /// Receives every output line (and `[turnout]` marker lines), each prefixed with a timestamp
    /// (see [`crate::LogLine`]). Never rotated: a build log is read whole.
    pub log_path: PathBuf,
    /// Where to record the process group and task token while the task runs, so that
    /// [`crate::reap_stale`] can kill a build that a killed daemon left running.
    pub pid_file: Option<PathBuf>,
    /// The whole process group is killed if the command runs longer than this.
    pub timeout: Duration,
}

/// Runs `sh -c command` in its own process group. Stdout and stderr share one pipe, so lines
/// keep the order in which the command wrote them; each line is appended to the log and passed
/// to `on_line`. Fails with the exit status and the last lines of output unless the command
/// exits with status 0; on timeout the group is killed. Whatever the command left running in
/// its group when it exits is killed too: a one-shot command owns nothing after it ends.
///
/// Should the daemon be killed meanwhile, the shell gets SIGKILL from the kernel (Linux's
/// parent-death signal) and the rest of the group is left to [`crate::reap_stale`] on the pid
/// file, which is what actually guarantees a build does not outlive the daemon.
pub async fn run_task(
    spec: TaskSpec,
    mut on_line: impl FnMut(&str) + Send,
) -> Result<(), SupervisorError> {
    let mut log = LogWriter::open(&spec.log_path, None).await?;
    let log_error = |source| SupervisorError::Log {
        path: spec.log_path.clone(),
        source,
    };
    log.write_line(&format!("[turnout] running `{}`", spec.command))
        .await
        .map_err(log_error)?;
    log.flush().await.map_err(log_error)?;

    let token = new_token();
    let cgroup = spec
        .cgroup
        .as_ref()
        .map(|plan| Cgroup::create(plan, &token))
        .transpose()?;
    let outcome = run_in_group(&spec, &token, cgroup.as_ref(), &mut log, &mut on_line).await;
    if let Some(cgroup) = &cgroup {
        cgroup.remove().await;
    }
    let marker = match &outcome {
        Ok(()) => "[turnout] finished with exit status 0".to_owned(),
        Err(e) => format!("[turnout] {e}"),
    };
    log.write_line(&marker).await.map_err(log_error)?;
    log.flush().await.map_err(log_error)?;
    outcome
}

/// [`run_task`] once the log is open and the group (if any) is made: everything that has to
/// happen before the group can be removed.
async fn run_in_group(
    spec: &TaskSpec,
    token: &str,
    cgroup: Option<&Cgroup>,
    log: &mut LogWriter,
    on_line: &mut (impl FnMut(&str) + Send),
) -> Result<(), SupervisorError> {
    let output_error = |source| SupervisorError::Output {
        command: spec.command.clone(),
        source,
    };
    let log_error = |source| SupervisorError::Log {
        path: spec.log_path.clone(),
        source,
    };
    if let Some(reason) = cgroup.and_then(Cgroup::unenforced) {
        let notice = format!("[turnout] resource limits not enforced: {reason}");
        log.write_line(&notice).await.map_err(log_error)?;
        on_line(&notice);
    }
    let spawn_error = |source| SupervisorError::Spawn {
        command: spec.command.clone(),
        cwd: spec.cwd.clone(),
        source,
    };
    let (reader, writer) = std::io::pipe().map_err(output_error)?;
    let writer_err = writer.try_clone().map_err(output_error)?;
    let (mut command, oom_kills_before) = shell_command(
        Shell {
            command: &spec.command,
            cwd: &spec.cwd,
            env: &spec.env,
            token: (TASK_TOKEN_VAR, token),
            identity: spec.identity,
            cgroup,
            network: &spec.network,
            sandbox: spec.sandbox.as_ref(),
            die_with_parent: true,
        },
        writer.into(),
        writer_err.into(),
    )
    .map_err(spawn_error)?;
    let mut child = command.spawn().map_err(spawn_error)?;
    // The Command holds our copies of the pipe's write end; the reader sees end-of-file only
    // once they are closed too.
    drop(command);
    let pgid = child
        .id()
        .expect("a freshly spawned child has a pid until it is awaited");
    let mut guard = GroupGuard::new(pgid);
    info!(pgid, command = %spec.command, "task started");
    if let Some(pid_file) = &spec.pid_file
        && let Err(e) = write_pid_file(pid_file, pgid, token).await
    {
        warn!(pid_file = %pid_file.display(), error = %e, "could not write pid file; a daemon crash would leave this task running");
    }

    let mut output =
        BufReader::new(pipe::Receiver::from_owned_fd(reader.into()).map_err(output_error)?);
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_WINDOW);
    let mut line = Vec::new();
    let mut exit = None;
    let mut deadline = Instant::now() + spec.timeout;
    let mut timed_out = false;
    loop {
        tokio::select! {
            read = output.read_until(b'\n', &mut line) => {
                let at_end = read.map_err(output_error)? == 0;
                // At the end of output, `line` may still hold a last line without a newline,
                // read by an earlier call that was interrupted by the exit.
                if !line.is_empty() && (at_end || line.ends_with(b"\n")) {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\n', '\r']);
                    log.write_line(text).await.map_err(log_error)?;
                    on_line(text);
                    if tail.len() == TAIL_WINDOW {
                        tail.pop_front();
                    }
                    tail.push_back(text.to_owned());
                    line.clear();
                }
                // Flushing whenever no more output is waiting keeps the log current without a
                // write per line for chatty builds.
                if at_end || output.buffer().is_empty() {
                    log.flush().await.map_err(log_error)?;
                }
                if at_end {
                    break;
                }
            }
            status = child.wait(), if exit.is_none() => {
                exit = Some(status);
                signal_group(pgid, Signal::SIGKILL);
                deadline = deadline.min(Instant::now() + DRAIN_AFTER_EXIT);
            }
            _ = sleep_until(deadline) => {
                if exit.is_none() {
                    timed_out = true;
                    signal_group(pgid, Signal::SIGKILL);
                } else {
                    warn!(pgid, command = %spec.command, "task output still open after it exited; no longer reading it");
                }
                break;
            }
        }
    }
    let exit = match exit {
        Some(exit) => exit,
        None => child.wait().await,
    }
    .map_err(output_error)?;
    // Stragglers were sent SIGKILL above; return only once they are gone, so that nothing the
    // task started is still running when its caller moves on.
    signal_group(pgid, Signal::SIGKILL);
    if wait_group_gone(pgid, Instant::now() + KILL_GRACE).await {
        guard.disarm();
        if let Some(pid_file) = &spec.pid_file {
            remove_pid_file(pid_file).await;
        }
    } else {
        warn!(pgid, command = %spec.command, "processes of a finished task are still alive after SIGKILL");
    }
    let tail_text = error_tail(tail.into()).unwrap_or_default();

    if timed_out {
        warn!(pgid, command = %spec.command, timeout = %fmt_duration(spec.timeout), "task timed out");
        Err(SupervisorError::TaskTimedOut {
            command: spec.command.clone(),
            timeout: fmt_duration(spec.timeout),
            log_tail: tail_text,
        })
    } else if exit.success() {
        info!(pgid, command = %spec.command, "task finished");
        Ok(())
    } else {
        let status = match cgroup {
            Some(cgroup) if cgroup.killed_for_memory(exit, oom_kills_before) => {
                cgroup.oom_description()
            }
            _ => describe_exit(exit),
        };
        warn!(pgid, command = %spec.command, exit = %status, "task failed");
        Err(SupervisorError::TaskFailed {
            command: spec.command.clone(),
            status,
            log_tail: tail_text,
        })
    }
}
