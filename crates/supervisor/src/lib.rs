//! Runs an app's processes on this machine: instances (long-running web processes that are
//! health-checked, restarted and stopped) and tasks (one-shot commands such as builds).
//!
//! Every process runs in its own process group, so signals reach everything the app's command
//! started, and nothing outlives a stop. The app's command is the only string ever given to a
//! shell (`sh -c`), because it is the app's own code, as with Heroku and foreman.

// Denied rather than forbidden: a task's `pre_exec` (task.rs) is the one allowed exception.
#![deny(unsafe_code)]

mod error;
mod health;
mod instance;
mod log;
mod process;
mod runtime;
mod task;

pub use error::SupervisorError;
pub use health::HealthCheck;
pub use instance::{Instance, InstanceSpec, InstanceState, InstanceStatus, RestartPolicy};
pub use log::{LogLine, LogRotation, collapse_repeats, rotated_log_path, tail_lines};
pub use process::reap_stale;
pub use runtime::{BoxFuture, InstanceHandle, LocalRuntime, Runtime};
pub use task::{TaskSpec, run_task};

/// A currently free TCP port on 127.0.0.1.
///
/// Another process may take the port before the caller binds it; callers that need certainty
/// must retry on a bind failure.
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

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
