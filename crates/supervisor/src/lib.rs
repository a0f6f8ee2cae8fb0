//! Runs an app's processes on this machine: instances (long-running web processes that are
//! health-checked, restarted and stopped) and tasks (one-shot commands such as builds).
//!
//! Every process runs in its own process group, so signals reach everything the app's command
//! started, and nothing outlives a stop. The app's command is the only string ever given to a
//! shell (`sh -c`), because it is the app's own code, as with Heroku and foreman.
//!
//! - The control plane reaches all of this through [`Runtime`] and [`InstanceHandle`]
//!   (`runtime`); [`LocalRuntime`] runs local processes, and another runtime (containers,
//!   Kubernetes) would implement the same two traits.
//! - Instances that outlive the daemon (`shim`): [`ShimRuntime`] runs each instance under a
//!   supervising process of its own (`turnout __instance`, running the same [`Instance`]), talks
//!   to it over a unix socket, and finds those an earlier daemon left ([`Runtime::adoptable`]).
//! - Logs (`log`): an instance's stdout and stderr share one pipe that the supervisor reads, so
//!   every line is written as `<RFC 3339 UTC timestamp with milliseconds> <line>` (marker lines
//!   `[turnout] …` too) and the file is rotated by size ([`LogRotation`]: `<name>.1` newest …
//!   `<name>.<keep>` oldest). Task (build) logs are stamped the same way but never rotated.
//!   [`LogLine::parse`] splits a line back into timestamp and text; [`tail_lines`] reads a log's
//!   last lines backwards from its end (and from `<name>.1` after a rotation);
//!   [`collapse_repeats`] folds runs of one line into `line … ×N`, which is how failure messages
//!   show the app's output.
//! - Stopping (`process`): a dying group is checked with `killpg(pgid, 0)` at growing intervals;
//!   only a group that is slow to go is looked up in /proc, where zombies that no one reaps
//!   are told apart from live members.
//! - A daemon that is killed leaves no task running for long, nor an instance it cannot adopt:
//!   instances and tasks both record their process group and a token in a pid file for
//!   [`reap_stale`] on the next start, and a task's shell also dies with the daemon (Linux's
//!   parent-death signal).
//! - A clean environment: a child gets exactly its spec's `env` (plus the supervisor's
//!   `TURNOUT_INSTANCE`/`TURNOUT_TASK` token) and nothing of the daemon's, so the caller passes
//!   PATH, HOME, LANG and the TURNOUT_* variables.
//! - Sandbox (`sandbox`): where the daemon is not root, a spec's [`Sandbox`] runs the shell
//!   under bubblewrap (its own user and process namespaces, Turnout's files hidden, only the
//!   environment's own directories writable).
//! - Identity (`process`): with an [`Identity`] a child runs as that uid and gid with no
//!   supplementary groups. The health check, the log and the pid file stay the daemon's, and
//!   [`reap_stale`] (root) still kills such a group.
//! - Resource plans (`cgroup`): a [`CgroupSpec`] puts every process of an instance or task in a
//!   group of its own, `turnout/<name>/<token>` under the daemon's own cgroup (v2 when it has
//!   controllers, else the v1 memory, cpu, cpuacct and pids hierarchies), with memory, cpu and
//!   pids limits. The child joins between fork and exec, so nothing it starts escapes.
//!   [`InstanceHandle::usage`] reads memory, pids and cpu time from it; a process the kernel
//!   kills at the memory limit ends as `OOM: killed at its memory limit (64 MiB)` in
//!   `last_exit` (and is restarted like any crash once it was healthy). The group goes when the
//!   instance is stopped or crashes for good; [`remove_cgroup`] clears what a killed daemon
//!   left. Where cgroups are missing or not writable (not root), the app runs without the
//!   limits: [`InstanceStatus::limits_not_enforced`] says why, a task's log and `on_line` get a
//!   `[turnout] resource limits not enforced: …` line, and the daemon warns once.
//! - Network: a spec's [`Network`] (the environment's namespace, see `turnout-netns`) is
//!   joined by the child, and the health check connects from inside it.
//! - Programs (`program`): [`run_program`] runs one of Turnout's own tools (PostgreSQL's
//!   initdb, pg_ctl, pg_basebackup) from an argument vector, never a shell, with exactly the
//!   given environment, as an [`Identity`], inside a [`Network`], keeping the last 64 KiB of its
//!   stdout and stderr and passing stderr's lines to a callback (progress). A timeout or a
//!   cancel kills its process group; an exit by itself kills nothing, so a server it started
//!   detached (`pg_ctl start`) keeps running. It has no cgroup and no pid file.
//! - Between fork and exec (`process`, the crate's one `unsafe` `pre_exec`), in this order: join
//!   the cgroup by writing "0" to its `cgroup.procs` files, opened before the fork; enter the
//!   network namespace through a descriptor opened before the fork; for a run on a terminal,
//!   a new session with that terminal as its controlling one; setgroups,
//!   setgid, setuid; for a task or a run, the parent-death signal (a change of credentials would clear
//!   it). Only system calls on what was prepared before the fork: nothing allocates.

//! - Runs (`exec`): [`run_exec`] runs a user's command (`turnout run`) from an argument vector
//!   with everything an instance gets (environment, identity, cgroup, network, sandbox) and the
//!   caller's streams: pipes, or a fresh pseudo-terminal whose session the command leads. A
//!   hang-up (the caller gone) sends SIGHUP to its group, then SIGKILL; nothing it started
//!   outlives it.

// Denied rather than forbidden: `process::prepare_child`'s `pre_exec` is the one allowed exception.
#![deny(unsafe_code)]

mod cgroup;
mod error;
mod exec;
mod health;
mod instance;
mod log;
mod process;
mod program;
mod runtime;
mod sandbox;
mod shim;
mod task;

pub use cgroup::{CgroupSpec, ResourceUsage, remove_cgroup};
pub use error::SupervisorError;
pub use exec::{
    DRAIN_AFTER_EXIT, ExecEnd, ExecInput, ExecOutput, ExecSpec, HANGUP_GRACE, run_exec,
};
pub use health::HealthCheck;
pub use instance::{Instance, InstanceSpec, InstanceState, InstanceStatus, RestartPolicy};
pub use log::{LogLine, LogRotation, collapse_repeats, rotated_log_path, tail_lines};
pub use process::{Identity, reap_stale};
pub use program::{OUTPUT_LIMIT, ProgramOutput, ProgramSpec, run_program};
pub use runtime::{Adoptable, BoxFuture, InstanceHandle, LocalRuntime, Runtime};
pub use sandbox::Sandbox;
pub use shim::{Launch, ShimRuntime, serve_instance};
pub use task::{TaskSpec, run_task};
pub use turnout_netns::Network;

/// Short human form of a duration for messages: "30s", "1.5s", "250ms".
pub(crate) fn fmt_duration(d: std::time::Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < std::time::Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
