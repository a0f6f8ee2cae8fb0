//! Process-group plumbing shared by instances, tasks and programs: what a child does between fork and
//! exec, signalling and waiting for a group, pid files and the reaper of what a killed daemon
//! left, and the log tails errors carry.

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Gid, Pid, Uid};
use tokio::process::Command;
use tokio::time::{Instant, sleep};
use tracing::{debug, info, warn};

use turnout_netns::Network;

use crate::log::{LogLine, collapse_repeats, tail_lines};

/// Name of the variable that marks every process of an instance, so [`reap_stale`] can tell
/// our leftovers from an unrelated process that reused the pid.
pub(crate) const INSTANCE_TOKEN_VAR: &str = "TURNOUT_INSTANCE";

/// The same mark for the processes of a task (a build), whose pid files are reaped the same way.
pub(crate) const TASK_TOKEN_VAR: &str = "TURNOUT_TASK";

/// How many lines of a log an error carries.
pub(crate) const TAIL_LINES: usize = 20;

/// How many of the last lines are looked at for repeats before the tail is cut to
/// [`TAIL_LINES`], so a message repeated 50 times still shows as one line with its count.
pub(crate) const TAIL_WINDOW: usize = 200;

/// The last [`TAIL_LINES`] of `lines` after collapsing repeats, without timestamps (the error
/// carrying them says when), or None if there is nothing but blank lines.
pub(crate) fn error_tail(lines: Vec<String>) -> Option<String> {
    let lines = collapse_repeats(lines);
    let tail: Vec<&str> = lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|line| LogLine::parse(line).text)
        .collect();
    let tail = tail.join("\n");
    (!tail.trim().is_empty()).then_some(tail)
}

/// A token unique to this daemon run and instance: time, pid and a counter need no new
/// dependency and cannot collide within one machine.
pub(crate) fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{nanos:x}-{:x}-{n:x}", std::process::id())
}

/// Whether a token was made by a process still running (it carries the maker's pid): this
/// daemon, or an instance's supervising process (`shim`), each of which makes groups of its
/// own beside the others' in an environment's group.
pub(crate) fn token_of_a_live_process(token: &str) -> bool {
    let Some(pid) = token
        .split('-')
        .nth(1)
        .and_then(|pid| i32::from_str_radix(pid, 16).ok())
        .filter(|pid| *pid > 0)
    else {
        return false;
    };
    match nix::sys::signal::kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// The user and group an app's processes run as, instead of the daemon's. They get no
/// supplementary groups: only `gid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// An app's command as the crate starts it, instance or task alike.
pub(crate) struct Shell<'a> {
    pub(crate) command: &'a str,
    pub(crate) cwd: &'a Path,
    /// The whole environment, with the token variable that marks the process as ours.
    pub(crate) env: &'a [(String, String)],
    pub(crate) token: (&'static str, &'a str),
    pub(crate) identity: Option<Identity>,
    pub(crate) cgroup: Option<&'a crate::cgroup::Cgroup>,
    pub(crate) network: &'a Network,
    /// Not root: the sandbox the shell runs in.
    pub(crate) sandbox: Option<&'a crate::sandbox::Sandbox>,
    pub(crate) die_with_parent: bool,
}

/// `/bin/sh -c COMMAND` (inside its sandbox, when it has one) in its directory, from exactly its environment and token, with no
/// input, in a process group of its own (so signals reach all it starts; the group guard kills
/// the group, never only the shell), joined to its control group and running as its identity
/// before it runs anything. Also returns the group's OOM-kill count before the start, which
/// tells an OOM kill from other deaths later.
pub(crate) fn shell_command(
    shell: Shell<'_>,
    stdout: std::process::Stdio,
    stderr: std::process::Stdio,
) -> std::io::Result<(Command, Option<u64>)> {
    let cgroup_procs = match shell.cgroup {
        Some(cgroup) => cgroup.open_procs()?,
        None => Vec::new(),
    };
    let oom_kills_before = shell.cgroup.and_then(crate::cgroup::Cgroup::oom_kills);
    let mut command = match shell.sandbox {
        Some(sandbox) => {
            let mut command = Command::new(&sandbox.bwrap);
            command
                .args(sandbox.args(shell.cwd, shell.die_with_parent))
                .arg("/bin/sh");
            command
        }
        None => Command::new("/bin/sh"),
    };
    command
        .arg("-c")
        .arg(shell.command)
        .current_dir(shell.cwd)
        .env_clear()
        .envs(shell.env.iter().map(|(k, v)| (k, v)))
        .env(shell.token.0, shell.token.1)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(false);
    prepare_child(
        &mut command,
        ChildSetup {
            cgroup_procs,
            network: shell.network.clone(),
            identity: shell.identity,
            die_with_parent: shell.die_with_parent,
            controlling_tty: None,
        },
    );
    Ok((command, oom_kills_before))
}

/// What a child does between fork and exec, in this order: join its cgroup (while still root,
/// and before it can fork), join its network, take on its identity, and for a task, arrange to
/// die with the daemon.
pub(crate) struct ChildSetup {
    /// Each of its group's `cgroup.procs` files, opened by the caller (see [`crate::cgroup`]).
    pub(crate) cgroup_procs: Vec<OwnedFd>,
    /// Its namespace, held open by the parent (entering it needs root: before the identity).
    pub(crate) network: Network,
    pub(crate) identity: Option<Identity>,
    /// Has the kernel send SIGKILL to the child (a task's shell) if the thread that spawned it
    /// ends, which on a runtime's worker thread means the daemon has died. Only the shell gets
    /// it: whatever it started is killed by the reaper through the pid file.
    pub(crate) die_with_parent: bool,
    /// Make the child a session leader whose controlling terminal is this (a pseudo-terminal's
    /// end of a `run -t`, also its standard input; close-on-exec), so the terminal's Ctrl-C
    /// signals it. The command must not also be given a process group: the session's is its own.
    pub(crate) controlling_tty: Option<OwnedFd>,
}

/// Installs the crate's one `pre_exec`. std's `CommandExt::uid`/`gid` are not used: std
/// changes the credentials before it runs `pre_exec`, so the child would join its cgroup as the
/// app's user rather than as root; and a change of credentials clears the parent-death signal,
/// which must therefore be set after it. Done here, the order is ours.
pub(crate) fn prepare_child(command: &mut Command, setup: ChildSetup) {
    let ChildSetup {
        cgroup_procs,
        network,
        identity,
        die_with_parent,
        controlling_tty,
    } = setup;
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed. Everything it uses was prepared before the fork (the open cgroup files,
    // the namespace's descriptor, the terminal, the ids, the parent's pid); write, setns,
    // setsid, the TIOCSCTTY ioctl, setgroups, setgid, setuid, prctl and getppid are plain system
    // calls; the group list is an array on the stack; and errors are built from an errno
    // without allocating.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            // The kernel reads "0" as the writing process.
            for procs in &cgroup_procs {
                nix::unistd::write(procs, b"0")?;
            }
            network.enter()?;
            if let Some(tty) = &controlling_tty {
                nix::unistd::setsid()?;
                rustix::process::ioctl_tiocsctty(tty)?;
            }
            if let Some(identity) = identity {
                let gid = Gid::from_raw(identity.gid);
                nix::unistd::setgroups(&[gid])?;
                nix::unistd::setgid(gid)?;
                nix::unistd::setuid(Uid::from_raw(identity.uid))?;
            }
            if die_with_parent {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // A daemon that died before prctl took effect sends no signal; refuse to run
                // orphaned.
                if nix::unistd::getppid() != parent {
                    return Err(Errno::ESRCH.into());
                }
            }
            Ok(())
        });
    }
}

/// "exit status 3" or "signal 9".
pub(crate) fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exit status {code}")
    } else if let Some(signal) = status.signal() {
        format!("signal {signal}")
    } else {
        status.to_string()
    }
}

/// Sends `signal` to every process of the group. A group that is already gone is not an error.
pub(crate) fn signal_group(pgid: u32, signal: Signal) {
    let Some(pid) = group_pid(pgid) else { return };
    match killpg(pid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => warn!(pgid, ?signal, error = %e, "could not signal process group"),
    }
}

/// Whether any live (non-zombie) process remains in the group, by scanning /proc: the only way
/// to tell zombies apart, and a read per process on the machine, so only [`wait_group_gone`]'s
/// fallback and the reaper use it. Blocking.
fn group_has_live_member(pgid: u32) -> bool {
    match std::fs::read_dir("/proc") {
        Ok(entries) => entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .any(|member| {
                matches!(proc_stat(member), Some((state, group)) if group == pgid && state != 'Z' && state != 'X')
            }),
        Err(_) => true,
    }
}

/// First pause between checks of a dying group; doubled after each check up to
/// [`GROUP_POLL_MAX`], so a group that goes at once is seen within a millisecond or two and one
/// that lingers costs a handful of system calls per second.
const GROUP_POLL_MIN: Duration = Duration::from_millis(1);
const GROUP_POLL_MAX: Duration = Duration::from_millis(200);

/// How long to wait for processes that were sent SIGKILL to vanish. Only a process stuck in
/// uninterruptible sleep takes longer, and waiting for it any longer would not help.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(2);

/// Waits until no live process remains in the group, or the deadline passes. True if gone.
///
/// The cheap test is `killpg(pgid, 0)` failing with ESRCH. It counts zombies as members,
/// though, and a member reparented to an init that never reaps would hold the wait until the
/// deadline; so once the group has been slow to go (the pause has grown to its maximum), and
/// once more at the deadline, /proc is scanned on the blocking pool for members that are alive.
/// The caller reaps the group's leader itself first (it owns the child), so the leader is never
/// such a zombie.
pub(crate) async fn wait_group_gone(pgid: u32, deadline: Instant) -> bool {
    let Some(pid) = group_pid(pgid) else {
        return true;
    };
    let mut pause = GROUP_POLL_MIN;
    loop {
        if killpg(pid, None) == Err(Errno::ESRCH) {
            return true;
        }
        let now = Instant::now();
        if (pause == GROUP_POLL_MAX || now >= deadline)
            && !tokio::task::spawn_blocking(move || group_has_live_member(pgid))
                .await
                .unwrap_or(true)
        {
            return true;
        }
        if now >= deadline {
            return false;
        }
        sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(GROUP_POLL_MAX);
    }
}

/// State letter and process group of a process, from /proc/<pid>/stat.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; the fields after the last ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Refuses ids that would make killpg target our own group (0) or every process (1 and below).
fn group_pid(pgid: u32) -> Option<Pid> {
    let raw = i32::try_from(pgid).ok()?;
    (raw > 1).then(|| Pid::from_raw(raw))
}

/// Kills a process group when dropped unless disarmed, so an instance whose supervising task is
/// dropped (runtime shutdown, panic) does not leave the app running with no one watching it.
pub(crate) struct GroupGuard {
    pgid: Option<u32>,
}

impl GroupGuard {
    pub(crate) fn new(pgid: u32) -> Self {
        Self { pgid: Some(pgid) }
    }

    pub(crate) fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            debug!(pgid, "killing process group of an abandoned process");
            signal_group(pgid, Signal::SIGKILL);
        }
    }
}

/// The tail of a log file for an error message (see [`error_tail`]), or None if it is missing
/// or empty.
pub(crate) async fn read_tail(path: &Path) -> Option<String> {
    error_tail(tail_lines(path, TAIL_WINDOW).await)
}

/// Contents of a pid file: the process-group id, then the token, one per line.
fn pid_file_contents(pgid: u32, token: &str) -> String {
    format!("{pgid}\n{token}\n")
}

fn parse_pid_file(contents: &str) -> Option<(u32, &str)> {
    let mut lines = contents.lines();
    let pgid = lines.next()?.trim().parse().ok()?;
    let token = lines.next()?.trim();
    let valid = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (valid && group_pid(pgid).is_some()).then_some((pgid, token))
}

/// Records a process group and its token, for [`reap_stale`] after a daemon crash. Written
/// beside it and renamed into place, so a daemon killed while writing leaves the whole file or
/// none, never a truncated one that names no group (whose processes would then outlive it).
pub(crate) async fn write_pid_file(path: &Path, pgid: u32, token: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    tokio::fs::write(&partial, pid_file_contents(pgid, token)).await?;
    tokio::fs::rename(&partial, path).await
}

/// Kills a process group left behind by a daemon that died without stopping it: an instance, or
/// a task (a build) that was running when the daemon was killed.
///
/// The group is killed only if one of its live processes carries `TURNOUT_INSTANCE=<token>` or
/// `TURNOUT_TASK=<token>` from the pid file in its environment, so a pid reused by an unrelated
/// process is never touched. Scanning the whole group rather than only its leader also catches
/// an app whose shell has exited while its server lives on. The file is removed in every case; a
/// missing or garbled file is not an error. SIGKILL is delivered at once, but this does not wait
/// for the processes to finish exiting ([`crate::Runtime::reap_stale`] does). Blocking: it reads
/// /proc.
pub fn reap_stale(pid_file: &Path) {
    reap(pid_file);
}

/// [`reap_stale`] on the blocking pool, then waits until the killed group is gone, so whatever
/// the caller starts next cannot meet the old processes (their port, their build directory).
pub(crate) async fn reap_stale_and_wait(pid_file: &Path) {
    let path = pid_file.to_owned();
    let killed = tokio::task::spawn_blocking(move || reap(&path))
        .await
        .ok()
        .flatten();
    if let Some(pgid) = killed
        && !wait_group_gone(pgid, Instant::now() + KILL_GRACE).await
    {
        warn!(pgid, pid_file = %pid_file.display(), "processes left by a previous run are still alive after SIGKILL");
    }
}

/// Returns the group it sent SIGKILL to, if any.
fn reap(pid_file: &Path) -> Option<u32> {
    let contents = match std::fs::read_to_string(pid_file) {
        Ok(contents) => contents,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(pid_file = %pid_file.display(), error = %e, "unreadable pid file; removing it");
            remove_pid_file_blocking(pid_file);
            return None;
        }
    };
    let killed = match parse_pid_file(&contents) {
        Some((pgid, token)) if group_carries_token(pgid, token) => {
            info!(pgid, pid_file = %pid_file.display(), "killing process group left by a previous run");
            signal_group(pgid, Signal::SIGKILL);
            Some(pgid)
        }
        Some((pgid, _)) => {
            debug!(pgid, pid_file = %pid_file.display(), "stale pid file names no process of ours");
            None
        }
        None => {
            warn!(pid_file = %pid_file.display(), "garbled pid file; removing it");
            None
        }
    };
    remove_pid_file_blocking(pid_file);
    killed
}

/// Removes the pid file of a group that is gone, so a later reap does not look for it.
pub(crate) async fn remove_pid_file(pid_file: &Path) {
    report_removal(pid_file, tokio::fs::remove_file(pid_file).await);
}

fn remove_pid_file_blocking(pid_file: &Path) {
    report_removal(pid_file, std::fs::remove_file(pid_file));
}

fn report_removal(pid_file: &Path, removed: std::io::Result<()>) {
    match removed {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(pid_file = %pid_file.display(), error = %e, "could not remove pid file"),
    }
}

fn group_carries_token(pgid: u32, token: &str) -> bool {
    let wanted = [INSTANCE_TOKEN_VAR, TASK_TOKEN_VAR].map(|var| format!("{var}={token}"));
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| matches!(proc_stat(pid), Some((state, group)) if group == pgid && state != 'Z' && state != 'X'))
        .any(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|environ| {
                    environ
                        .split(|&b| b == 0)
                        .any(|var| wanted.iter().any(|w| var == w.as_bytes()))
                })
        })
}
