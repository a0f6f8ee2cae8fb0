use std::path::PathBuf;

/// What went wrong while running an app's process. Each message is one line; where the app's
/// own output explains the failure, [`SupervisorError::log_tail`] returns the last lines of its log.
#[derive(thiserror::Error, Debug)]
pub enum SupervisorError {
    #[error("could not start `sh -c {command}` in {cwd}: {source}")]
    Spawn {
        command: String,
        cwd: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A run's command (see [`crate::run_exec`]) could not be started.
    #[error("could not run `{command}` in {cwd}: {source}")]
    ExecSpawn {
        command: String,
        cwd: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A program (see [`crate::run_program`]) could not be started.
    #[error("could not start `{command}` in {cwd}: {source}")]
    ProgramSpawn {
        command: String,
        cwd: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A program was killed because its caller gave up on it.
    #[error("`{command}` was cancelled and killed")]
    Cancelled { command: String },

    #[error("could not open log file {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The pid file that lets a later daemon find and stop the instance could not be written;
    /// the instance was stopped rather than left running without one.
    #[error("could not write pid file {path}: {source}{}", disk_full_hint(.source))]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `status` is e.g. "exit status 3" or "signal 9".
    #[error("process exited with {status} before becoming healthy")]
    ExitedBeforeHealthy {
        status: String,
        log_tail: Option<String>,
    },

    /// `last_probe` is the outcome of the last probe, e.g. "GET / answered 500".
    #[error("not healthy after {timeout}: {last_probe}")]
    NeverHealthy {
        timeout: String,
        last_probe: String,
        log_tail: Option<String>,
    },

    #[error("health check failed: {0}")]
    Unhealthy(String),

    /// An error of an instance's own supervising process (see `shim`), as it reported it.
    #[error("{0}")]
    Reported(String),

    /// The instance's supervising process could not be reached.
    #[error("cannot reach the instance's supervisor at {socket}: {source}")]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("instance was stopped before becoming healthy")]
    StoppedBeforeHealthy,

    #[error("`{command}` failed with {status}")]
    TaskFailed {
        command: String,
        status: String,
        log_tail: String,
    },

    #[error("`{command}` did not finish within {timeout} and was killed")]
    TaskTimedOut {
        command: String,
        timeout: String,
        log_tail: String,
    },

    /// A [`crate::CgroupSpec`] no group could be made for, whatever the machine.
    #[error("invalid resource plan `{name}`: {reason}")]
    InvalidCgroup { name: String, reason: &'static str },

    /// A limit could not be written into a group that was made; cgroups that are missing
    /// altogether are not an error (see [`crate::InstanceStatus::limits_not_enforced`]).
    #[error("could not set up cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("could not read the output of `{command}`: {source}")]
    Output {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

impl SupervisorError {
    /// The last lines of the failing process's log, for errors the app's output may explain.
    pub fn log_tail(&self) -> Option<&str> {
        match self {
            Self::ExitedBeforeHealthy { log_tail, .. } | Self::NeverHealthy { log_tail, .. } => {
                log_tail.as_deref()
            }
            Self::TaskFailed { log_tail, .. } | Self::TaskTimedOut { log_tail, .. } => {
                Some(log_tail)
            }
            _ => None,
        }
    }
}

/// How to fix a write that failed because the disk is full.
fn disk_full_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::StorageFull {
        "; the disk is full: free space on it"
    } else {
        ""
    }
}
