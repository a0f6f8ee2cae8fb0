//! Supervisor tests: real processes, real HTTP, ports bound to 0.

mod cgroup;
mod instance;
mod isolation;
mod log;
mod reap;
mod runtime;
mod support;
mod task;
