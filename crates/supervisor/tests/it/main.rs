//! Supervisor tests: real processes, real HTTP, ports bound to 0.

mod instance;
mod log;
mod reap;
mod runtime;
mod support;
mod task;
