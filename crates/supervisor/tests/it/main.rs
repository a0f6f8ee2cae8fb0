//! Supervisor tests: real processes, real HTTP, ports bound to 0.

mod instance;
mod reap;
mod support;
mod task;
