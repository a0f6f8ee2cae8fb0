//! What an instance is started from and what it reports: its spec, restart policy, state and
//! status.
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::cgroup::CgroupSpec;
use crate::health::HealthCheck;
use crate::log::LogRotation;
use crate::process::Identity;
use crate::sandbox::Sandbox;
use turnout_netns::Network;

/// When to restart an instance that exits after it has become healthy.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct RestartPolicy {
    /// Delay before the first restart; doubled for each further one.
    pub initial_backoff: Duration,
    /// The delay never grows past this.
    pub max_backoff: Duration,
    /// A process that was healthy at least this long before it exited is restarted after
    /// `initial_backoff` again: a crash now and then is not a crash loop. Counted from its
    /// health check passing, not from its start, so a slow start is not mistaken for uptime.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            reset_after: Duration::from_secs(30),
        }
    }
}

/// Everything needed to run one instance of a release. It travels to the instance's own
/// supervising process as JSON (see `shim`), its network by name.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct InstanceSpec {
    /// The caller's own name for the instance, given back when a later daemon finds it still
    /// running ([`crate::Runtime::adoptable`]); the control plane writes `APP/ENV@RELEASE_ID`.
    pub tag: String,
    /// The app's own command, run as `sh -c <command>` so `$PORT` and friends expand.
    pub command: String,
    pub cwd: PathBuf,
    /// The app's whole environment: nothing of the daemon's is inherited, so the caller passes
    /// PATH, HOME, LANG, PORT and the TURNOUT_* variables here. The supervisor adds only its own
    /// `TURNOUT_INSTANCE` token.
    pub env: Vec<(String, String)>,
    /// Whom the app runs as; None runs it as the daemon's user. The health check, the log and
    /// the pid file stay the daemon's.
    pub identity: Option<Identity>,
    /// The instance's resource plan: its processes (restarts included) share one group with
    /// these limits, removed when the instance is stopped for good or crashes. See
    /// [`InstanceStatus::limits_not_enforced`] for a machine without cgroups.
    pub cgroup: Option<CgroupSpec>,
    /// The network the app's processes join; the health check connects from inside it.
    #[serde(with = "network_by_name")]
    pub network: Network,
    /// Not root: the sandbox its processes run in (see [`crate::Sandbox`]).
    pub sandbox: Option<Sandbox>,
    /// The port the app listens on (in `network`); the caller also puts it in `env` as PORT.
    pub port: u16,
    /// Receives the app's stdout and stderr and the supervisor's `[turnout]` marker lines, each
    /// prefixed with a timestamp (see [`crate::LogLine`]).
    pub log_path: PathBuf,
    /// When `log_path` is moved aside to `<name>.1` and how many such files are kept.
    pub log_rotation: LogRotation,
    /// Where to record the process group and instance token for [`crate::reap_stale`].
    pub pid_file: Option<PathBuf>,
    pub health: HealthCheck,
    pub restart: RestartPolicy,
    /// Time between SIGTERM and SIGKILL when stopping.
    pub stop_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InstanceState {
    /// Started, not yet healthy.
    Starting,
    /// Passed its health check.
    Running,
    /// Exited after having been healthy; waiting to restart or restarted but not yet healthy.
    Restarting,
    /// Exited before it ever became healthy; final.
    Crashed,
    Stopping,
    Stopped,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Crashed => "crashed",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
        }
    }

    pub(crate) fn is_final(self) -> bool {
        matches!(self, Self::Crashed | Self::Stopped)
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct InstanceStatus {
    pub state: InstanceState,
    /// Pid of the current process (also its process-group id); None while none runs.
    pub pid: Option<u32>,
    pub restarts: u32,
    /// How the last process ended, e.g. "exit status 1", "signal 9", or
    /// "OOM: killed at its memory limit (64 MiB)" when the kernel killed it for its plan's limit.
    pub last_exit: Option<String>,
    /// When the current (or last) process was started.
    pub started_at: SystemTime,
    /// Why the limits of the instance's [`CgroupSpec`] are not (all) in force, e.g. on a
    /// machine without cgroups or when the daemon is not root; the app runs anyway. None when
    /// they are, or when it has no plan.
    pub limits_not_enforced: Option<String>,
}

/// A [`Network`] as the name of its namespace (`null` for the host's), opened again on the way in.
mod network_by_name {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use turnout_netns::{Namespace, Network};

    pub(super) fn serialize<S: Serializer>(network: &Network, s: S) -> Result<S::Ok, S::Error> {
        network.name().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Network, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(Network::Host),
            Some(name) => Namespace::open(&name)
                .map(|ns| Network::Namespace(std::sync::Arc::new(ns)))
                .map_err(serde::de::Error::custom),
        }
    }
}
