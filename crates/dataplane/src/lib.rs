//! The data plane as a process of its own: `turnout __dataplane` serves the proxy
//! (`turnout-proxy`) on the home's listening socket and keeps serving its last route table
//! while the control plane (`turnout serve`) is stopped, restarting or killed.
//!
//! # Process layout
//!
//! - `turnout serve` (the control plane) binds the listening socket on a first start and
//!   starts the data plane with it; a later `turnout serve` on the same home attaches to the
//!   data plane it finds on `<home>/dataplane.sock` and gets a duplicate of the listening
//!   socket from it. Either way both processes hold the socket: when the data plane dies the
//!   control plane starts another on it (connections wait in the backlog meanwhile), and when
//!   the control plane dies the data plane goes on serving.
//! - The control plane sends route changes, per host ([`DataPlane::update`] diffs whole
//!   tables), restart flags, namespaces to serve internal URLs in, and asks for drains and
//!   counters; see `wire` for the conversation. A change is in force once answered.
//! - Replacing the data plane (another binary, or `turnout serve --upgrade`): a new one starts
//!   on `dataplane.next`, gets every route, then on `Serve` accepts on the same socket, tells
//!   the old one to retire (stop accepting, close idle keep-alive connections after their next
//!   response, finish requests, close streams cleanly, exit) and moves its control socket to
//!   `dataplane.sock`. No connection is refused or waits on a closed accept queue.
//!
//! The control socket is in the home, mode 0600: only the daemon's user talks to its data
//! plane.

mod client;
mod listeners;
mod server;
mod spec;
mod wire;

pub use client::{Applied, Attached, DataPlane, Link, WakeCursor};
pub use listeners::Listeners;
pub use server::{ServerArgs, run};
pub use spec::{
    ChallengeSpec, DataPlaneConfig, DrainReport, EnvResponses, LinkKey, LinkSpec, LoginSpec,
    RouteSpec, StatsRow, TargetSpec, TlsSpec, UpstreamSpec,
};
pub use wire::{Hello, recv_fds_any, send_fds};

/// Which binary this process runs: its version and the identity (device, inode, change time)
/// of its executable file. Another binary installed over the same path has another identity.
pub fn identity() -> String {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::metadata("/proc/self/exe")
        .map(|m| format!("{}:{}:{}", m.dev(), m.ino(), m.ctime()))
        .unwrap_or_default();
    format!("{} {file}", env!("CARGO_PKG_VERSION"))
}
