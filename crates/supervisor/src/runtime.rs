//! The one door through which the control plane runs an app's processes, so that another way of
//! running them (containers, Kubernetes) can be added without touching the control plane.
//!
//! Both traits are dyn-compatible: the control plane holds an `Arc<dyn Runtime>` and the
//! instances it started as `Arc<dyn InstanceHandle>`.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use turnout_netns::Network;

use crate::cgroup::{ResourceUsage, remove_cgroup};
use crate::error::SupervisorError;
use crate::exec::{ExecEnd, ExecInput, ExecOutput, ExecSpec, run_exec};
use crate::instance::{Instance, InstanceSpec, InstanceStatus};
use crate::process::reap_stale_and_wait;
use crate::task::{TaskSpec, run_task};

/// What the traits' methods return: the same shape as `futures_util::future::BoxFuture`, spelled
/// out so this crate needs no dependency for it.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Starts instances, runs tasks, and cleans up after a daemon that was killed.
pub trait Runtime: Send + Sync {
    /// Starts an instance and supervises it (restarts, stop); does not wait for it to become
    /// healthy: see [`InstanceHandle::wait_healthy`].
    fn start(
        &self,
        spec: InstanceSpec,
    ) -> BoxFuture<'_, Result<Arc<dyn InstanceHandle>, SupervisorError>>;

    /// Runs a one-shot command (a build) to completion, passing each output line to `on_line`.
    /// See [`run_task`] for what success and failure mean.
    fn run_task<'a>(
        &'a self,
        spec: TaskSpec,
        on_line: &'a mut (dyn FnMut(&str) + Send),
    ) -> BoxFuture<'a, Result<(), SupervisorError>>;

    /// Runs a user's command with the caller's streams until it exits or `hangup` resolves.
    /// See [`run_exec`].
    fn exec<'a>(
        &'a self,
        spec: ExecSpec,
        input: mpsc::Receiver<ExecInput>,
        output: mpsc::Sender<ExecOutput>,
        hangup: BoxFuture<'a, ()>,
    ) -> BoxFuture<'a, Result<ExecEnd, SupervisorError>>;

    /// Kills what a killed daemon left running (an instance or a task) as recorded in
    /// `pid_file`, and returns once it is gone. The file is removed. See [`crate::reap_stale`].
    fn reap_stale<'a>(&'a self, pid_file: &'a Path) -> BoxFuture<'a, ()>;

    /// The instances still running that an earlier daemon started (their supervision outlived
    /// it), for the caller to adopt (it recognises its own by [`InstanceSpec::tag`]) or stop.
    fn adoptable(&self) -> BoxFuture<'_, Vec<Adoptable>>;

    /// Removes the resource groups named `name` (a [`crate::CgroupSpec::name`]) that no process
    /// is in any more: those a killed daemon left (after [`Runtime::reap_stale`]), or all of an
    /// environment's when it is deleted. See [`crate::remove_cgroup`].
    fn remove_cgroup<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()>;
}

/// An instance an earlier daemon started, still running: its spec and a handle to it.
pub struct Adoptable {
    pub spec: InstanceSpec,
    pub handle: Arc<dyn InstanceHandle>,
}

/// A running instance, whichever runtime started it. Dropping the last handle stops the instance
/// in the background.
pub trait InstanceHandle: Send + Sync {
    /// The port the instance listens on.
    fn port(&self) -> u16;

    /// Where the proxy reaches it, inside [`InstanceHandle::network`].
    fn addr(&self) -> SocketAddr;

    /// The network it listens in: the proxy makes its sockets there.
    fn network(&self) -> &Network;

    /// Probes until healthy or the health check's timeout passes; fails at once if the instance
    /// exits or is stopped meanwhile. Success makes a later exit lead to a restart.
    fn wait_healthy(&self) -> BoxFuture<'_, Result<(), SupervisorError>>;

    /// One probe now.
    fn check_health(&self) -> BoxFuture<'_, Result<(), SupervisorError>>;

    fn status(&self) -> InstanceStatus;

    /// The status now and each change after it (a crash, a restart, healthy again, a stop), for
    /// whoever must follow them without polling. Closed once the instance is gone.
    fn status_changes(&self) -> watch::Receiver<InstanceStatus>;

    /// What its processes use now, from its resource group; all None without a
    /// [`crate::CgroupSpec`]. Reads a few cgroup files (kernel memory, no disk).
    fn usage(&self) -> BoxFuture<'_, ResourceUsage>;

    /// Stops the instance for good and returns once its processes are gone. Idempotent.
    fn stop(&self) -> BoxFuture<'_, ()>;
}

/// Processes on this machine, each instance and task in a process group of its own.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalRuntime;

impl Runtime for LocalRuntime {
    fn start(
        &self,
        spec: InstanceSpec,
    ) -> BoxFuture<'_, Result<Arc<dyn InstanceHandle>, SupervisorError>> {
        Box::pin(async move {
            let instance: Arc<dyn InstanceHandle> = Instance::start(spec).await?;
            Ok(instance)
        })
    }

    fn run_task<'a>(
        &'a self,
        spec: TaskSpec,
        on_line: &'a mut (dyn FnMut(&str) + Send),
    ) -> BoxFuture<'a, Result<(), SupervisorError>> {
        Box::pin(run_task(spec, on_line))
    }

    fn exec<'a>(
        &'a self,
        spec: ExecSpec,
        input: mpsc::Receiver<ExecInput>,
        output: mpsc::Sender<ExecOutput>,
        hangup: BoxFuture<'a, ()>,
    ) -> BoxFuture<'a, Result<ExecEnd, SupervisorError>> {
        Box::pin(run_exec(spec, input, output, hangup))
    }

    fn reap_stale<'a>(&'a self, pid_file: &'a Path) -> BoxFuture<'a, ()> {
        Box::pin(reap_stale_and_wait(pid_file))
    }

    fn adoptable(&self) -> BoxFuture<'_, Vec<Adoptable>> {
        // Its instances end with the daemon: nothing is left to adopt.
        Box::pin(async { Vec::new() })
    }

    fn remove_cgroup<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move { remove_cgroup(name) })
    }
}

impl InstanceHandle for Instance {
    fn port(&self) -> u16 {
        Instance::port(self)
    }

    fn addr(&self) -> SocketAddr {
        Instance::addr(self)
    }

    fn network(&self) -> &Network {
        Instance::network(self)
    }

    fn wait_healthy(&self) -> BoxFuture<'_, Result<(), SupervisorError>> {
        Box::pin(Instance::wait_healthy(self))
    }

    fn check_health(&self) -> BoxFuture<'_, Result<(), SupervisorError>> {
        Box::pin(Instance::check_health(self))
    }

    fn status(&self) -> InstanceStatus {
        Instance::status(self)
    }

    fn status_changes(&self) -> watch::Receiver<InstanceStatus> {
        Instance::status_changes(self)
    }

    fn usage(&self) -> BoxFuture<'_, ResourceUsage> {
        Box::pin(async move { Instance::usage(self) })
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(Instance::stop(self))
    }
}
