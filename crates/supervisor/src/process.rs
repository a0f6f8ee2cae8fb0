//! Process-group plumbing shared by instances and tasks.

use std::io::SeekFrom;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Name of the variable that marks every process of an instance, so [`reap_stale`] can tell
/// our leftovers from an unrelated process that reused the pid.
pub(crate) const INSTANCE_TOKEN_VAR: &str = "TURNOUT_INSTANCE";

/// How many lines of a log an error carries.
pub(crate) const TAIL_LINES: usize = 20;

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

/// Whether any live (non-zombie) process remains in the group. Zombies count as gone: once our
/// own leader is reaped, the rest are reparented to an init that may never reap them.
pub(crate) fn group_alive(pgid: u32) -> bool {
    let Some(pid) = group_pid(pgid) else {
        return false;
    };
    match killpg(pid, None) {
        Err(Errno::ESRCH) => false,
        _ => match std::fs::read_dir("/proc") {
            Ok(entries) => entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .any(|member| {
                    matches!(proc_stat(member), Some((state, group)) if group == pgid && state != 'Z' && state != 'X')
                }),
            Err(_) => true,
        },
    }
}

/// How quickly a dying process group is polled for; short enough that a stop or a restart does
/// not linger, long enough that scanning /proc costs nothing noticeable.
const GROUP_POLL: Duration = Duration::from_millis(25);

/// How long to wait for processes that were sent SIGKILL to vanish. Only a process stuck in
/// uninterruptible sleep takes longer, and waiting for it any longer would not help.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(2);

/// Polls until no live process remains in the group, or the deadline passes. True if gone.
pub(crate) async fn wait_group_gone(pgid: u32, deadline: Instant) -> bool {
    loop {
        if !group_alive(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(GROUP_POLL).await;
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

/// The last [`TAIL_LINES`] lines of a log file, or None if it is missing or empty.
pub(crate) async fn read_tail(path: &Path) -> Option<String> {
    const MAX_BYTES: u64 = 16 * 1024;
    let mut file = tokio::fs::File::open(path).await.ok()?;
    let len = file.metadata().await.ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))
        .await
        .ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await.ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    (!tail.trim().is_empty()).then_some(tail)
}

/// Contents of a pid file: the process-group id, then the instance token, one per line.
pub(crate) fn pid_file_contents(pgid: u32, token: &str) -> String {
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

/// Kills a process group left behind by a daemon that died without stopping it.
///
/// The group is killed only if one of its live processes carries `TURNOUT_INSTANCE=<token>`
/// from the pid file in its environment, so a pid reused by an unrelated process is never
/// touched. Scanning the whole group rather than only its leader also catches an app whose
/// shell has exited while its server lives on. The file is removed in every case; a missing or
/// garbled file is not an error. SIGKILL is delivered at once, but this does not wait for the
/// processes to finish exiting.
pub fn reap_stale(pid_file: &Path) {
    let contents = match std::fs::read_to_string(pid_file) {
        Ok(contents) => contents,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            warn!(pid_file = %pid_file.display(), error = %e, "unreadable pid file; removing it");
            remove_pid_file(pid_file);
            return;
        }
    };
    match parse_pid_file(&contents) {
        Some((pgid, token)) if group_carries_token(pgid, token) => {
            info!(pgid, pid_file = %pid_file.display(), "killing process group left by a previous run");
            signal_group(pgid, Signal::SIGKILL);
        }
        Some((pgid, _)) => {
            debug!(pgid, pid_file = %pid_file.display(), "stale pid file names no process of ours");
        }
        None => {
            warn!(pid_file = %pid_file.display(), "garbled pid file; removing it");
        }
    }
    remove_pid_file(pid_file);
}

pub(crate) fn remove_pid_file(pid_file: &Path) {
    match std::fs::remove_file(pid_file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(pid_file = %pid_file.display(), error = %e, "could not remove pid file"),
    }
}

fn group_carries_token(pgid: u32, token: &str) -> bool {
    let wanted = format!("{INSTANCE_TOKEN_VAR}={token}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| matches!(proc_stat(pid), Some((state, group)) if group == pgid && state != 'Z' && state != 'X'))
        .any(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|environ| environ.split(|&b| b == 0).any(|var| var == wanted.as_bytes()))
        })
}
