//! Instances that outlive the daemon: each one supervised by a small process of its own (the
//! same `turnout` binary, run as `turnout __instance`), which the daemon talks to over a unix
//! socket. When the daemon is killed or restarted, its instances keep running, keep being
//! restarted after a crash and keep writing their logs; the next daemon finds them by their
//! sockets and adopts them ([`ShimRuntime::adoptable`]) instead of starting them again.
//!
//! - `server`: the supervising process. It reads a [`Launch`] (one JSON line) on stdin, starts
//!   the instance exactly as [`crate::LocalRuntime`] would (same `Instance`), listens on the
//!   launch's socket (mode 0600 under the daemon's umask, in a 0700 directory: only the daemon's
//!   user can talk to it), writes `ready` on stdout and closes it, then answers requests until
//!   it is told to stop, or a while after the instance ended for good.
//! - `client`: [`ShimRuntime`], the [`crate::Runtime`] the daemon uses: it starts supervising
//!   processes, and its instance handles turn each [`crate::InstanceHandle`] call into one
//!   request on a fresh connection.
//! - `wire`: the requests and replies, one JSON line each way per connection. A request the
//!   other side does not know is answered with an error, so an older supervising process (from
//!   before an upgrade) and a newer daemon say what they do not understand.
mod client;
mod server;
mod wire;

pub use client::ShimRuntime;
pub use server::serve_instance;
pub use wire::Launch;
