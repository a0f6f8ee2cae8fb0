//! Long-running app processes: start, health-check, restart on crash, stop.
//!
//! Each instance is watched by one task that owns the child process; every state change goes
//! through that task or through the status channel's lock, so a crash, a restart and a stop can
//! never interleave badly. Shutdown state lives in [`Shared::stop`] (set once, never cleared)
//! and in the supervising task's lifetime (its end means the process group has been reaped and
//! the log written to the end).
//!
//! The app's stdout and stderr share one pipe for the instance's whole life (restarts included),
//! read by the instance's log pump ([`crate::log`]), which stamps and rotates the log. The
//! supervising task owns the pipe's write end and the pump; should the daemon stop without a
//! stop of the instance, the group guard kills the app, so no app is left writing into a pipe
//! no one reads.

use std::io::PipeWriter;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use tokio::net::unix::pipe;
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{debug, info, warn};
use turnout_netns::Network;

use crate::cgroup::{Cgroup, ResourceUsage};
use crate::error::SupervisorError;
use crate::fmt_duration;
use crate::health::{HealthCheck, probe};
use crate::log::{LogHandle, LogWriter, spawn_pump};
mod spec;

pub use spec::{InstanceSpec, InstanceState, InstanceStatus, RestartPolicy};

use crate::process::{
    GroupGuard, INSTANCE_TOKEN_VAR, KILL_GRACE, Shell, describe_exit, new_token, read_tail,
    remove_pid_file, shell_command, signal_group, wait_group_gone, write_pid_file,
};

/// A supervised app process. Dropping the last handle stops it in the background; call
/// [`Instance::stop`] to stop it and wait until it is gone.
pub struct Instance {
    port: u16,
    network: Network,
    health: HealthCheck,
    log_path: PathBuf,
    log: LogHandle,
    cgroup: Option<Arc<Cgroup>>,
    shared: Arc<Shared>,
    /// Never receives a value: it errors once the supervising task has ended, which is when the
    /// process group has been reaped.
    task_done: watch::Receiver<()>,
}

/// State shared by the handle and the supervising task.
struct Shared {
    /// The published status; its lock also serialises the Starting -> Running/Crashed decision
    /// between `wait_healthy` and the supervising task.
    status: watch::Sender<InstanceStatus>,
    /// Set once to ask for a stop; never cleared.
    stop: watch::Sender<bool>,
}

impl Instance {
    /// Spawns the process in its own process group and begins supervising it. Does not wait
    /// for it to become healthy: see [`Instance::wait_healthy`].
    pub async fn start(spec: InstanceSpec) -> Result<Arc<Instance>, SupervisorError> {
        let token = new_token();
        let cgroup = match &spec.cgroup {
            Some(plan) => Some(Arc::new(Cgroup::create(plan, &token)?)),
            None => None,
        };
        match Self::start_in_group(spec, token, cgroup.clone()).await {
            Ok(instance) => Ok(instance),
            Err(e) => {
                if let Some(cgroup) = &cgroup {
                    cgroup.remove().await;
                }
                Err(e)
            }
        }
    }

    async fn start_in_group(
        spec: InstanceSpec,
        token: String,
        cgroup: Option<Arc<Cgroup>>,
    ) -> Result<Arc<Instance>, SupervisorError> {
        let writer = LogWriter::open(&spec.log_path, Some(spec.log_rotation)).await?;
        let output_error = |source| SupervisorError::Output {
            command: spec.command.clone(),
            source,
        };
        let (reader, output) = std::io::pipe().map_err(output_error)?;
        let reader = pipe::Receiver::from_owned_fd(reader.into()).map_err(output_error)?;
        let (log, pump) = spawn_pump(writer, reader);
        let limits_not_enforced = cgroup
            .as_deref()
            .and_then(Cgroup::unenforced)
            .map(str::to_owned);
        if let Some(reason) = &limits_not_enforced {
            log.marker(&format!("resource limits not enforced: {reason}"))
                .await;
        }
        let child = spawn(&spec, &token, &output, &log, cgroup.as_deref()).await?;
        let (status, _) = watch::channel(InstanceStatus {
            state: InstanceState::Starting,
            pid: Some(child.pgid),
            restarts: 0,
            last_exit: None,
            started_at: SystemTime::now(),
            limits_not_enforced,
        });
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared { status, stop });
        let (done_tx, task_done) = watch::channel(());
        let supervisor = Supervisor {
            spec: spec.clone(),
            token,
            shared: shared.clone(),
            output,
            log: log.clone(),
            pump,
            cgroup: cgroup.clone(),
            _done: done_tx,
        };
        tokio::spawn(supervisor.run(child));
        Ok(Arc::new(Instance {
            port: spec.port,
            network: spec.network,
            health: spec.health,
            log_path: spec.log_path,
            log,
            cgroup,
            shared,
            task_done,
        }))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the app listens, inside [`Instance::network`].
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Probes until the instance answers healthily or the health timeout passes. Fails at once
    /// if the process exits (or is stopped) meanwhile. Success marks the instance Running, from
    /// which point an exit leads to a restart instead of being final.
    pub async fn wait_healthy(&self) -> Result<(), SupervisorError> {
        let check = &self.health;
        let deadline = Instant::now() + check.timeout;
        let mut status = self.shared.status.subscribe();
        let mut last_probe = format!("GET {}: no probe completed", check.path);
        loop {
            self.fail_if_gone(&mut status).await?;
            let probe_timeout = check
                .probe_timeout()
                .min(deadline.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(100));
            tokio::select! {
                outcome = probe(&self.network, self.addr(), check, probe_timeout) => match outcome {
                    Ok(()) => {
                        if self.mark_healthy() {
                            info!(port = self.port, "instance healthy");
                            self.log.marker("healthy").await;
                            return Ok(());
                        }
                        continue;
                    }
                    Err(seen) => {
                        debug!(port = self.port, probe = %seen, "instance not healthy yet");
                        last_probe = seen;
                    }
                },
                _ = status.changed() => continue,
            }
            let now = Instant::now();
            if now >= deadline {
                self.log.sync().await;
                return Err(SupervisorError::NeverHealthy {
                    timeout: fmt_duration(check.timeout),
                    last_probe,
                    log_tail: read_tail(&self.log_path).await,
                });
            }
            tokio::select! {
                _ = sleep_until((now + check.interval).min(deadline)) => {}
                _ = status.changed() => {}
            }
        }
    }

    /// Errors if the instance can no longer become healthy: it crashed or is being stopped.
    async fn fail_if_gone(
        &self,
        status: &mut watch::Receiver<InstanceStatus>,
    ) -> Result<(), SupervisorError> {
        let (state, last_exit) = {
            let current = status.borrow_and_update();
            (current.state, current.last_exit.clone())
        };
        match state {
            InstanceState::Crashed => Err(SupervisorError::ExitedBeforeHealthy {
                status: last_exit.unwrap_or_else(|| "unknown status".to_owned()),
                log_tail: read_tail(&self.log_path).await,
            }),
            InstanceState::Stopping | InstanceState::Stopped => {
                Err(SupervisorError::StoppedBeforeHealthy)
            }
            _ => Ok(()),
        }
    }

    /// Moves Starting (or Restarting) to Running under the status lock, so it cannot race with
    /// the supervising task deciding that an exit is a crash. False if that already happened.
    fn mark_healthy(&self) -> bool {
        let mut healthy = false;
        self.shared.status.send_if_modified(|s| match s.state {
            InstanceState::Starting | InstanceState::Restarting => {
                s.state = InstanceState::Running;
                healthy = true;
                true
            }
            InstanceState::Running => {
                healthy = true;
                false
            }
            _ => false,
        });
        healthy
    }

    /// One probe now, e.g. before moving traffic to an instance that has been running a while.
    pub async fn check_health(&self) -> Result<(), SupervisorError> {
        probe(
            &self.network,
            self.addr(),
            &self.health,
            self.health.probe_timeout(),
        )
        .await
        .map_err(SupervisorError::Unhealthy)
    }

    pub fn status(&self) -> InstanceStatus {
        self.shared.status.borrow().clone()
    }

    /// [`status`](Self::status) now and at every change; closed once the instance is gone.
    pub fn status_changes(&self) -> watch::Receiver<InstanceStatus> {
        self.shared.status.subscribe()
    }

    /// What its processes use now (all None without a [`CgroupSpec`]).
    pub fn usage(&self) -> ResourceUsage {
        self.cgroup
            .as_deref()
            .map(Cgroup::usage)
            .unwrap_or_default()
    }

    /// Stops the instance for good: cancels any pending restart, sends SIGTERM to the process
    /// group, SIGKILL after the stop timeout, and returns once the processes are gone.
    /// Idempotent, and safe to call from several tasks at once.
    pub async fn stop(&self) {
        self.shared.stop.send_replace(true);
        let mut done = self.task_done.clone();
        // Only ever errors: when the supervising task ends and drops its sender.
        let _ = done.changed().await;
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
    }
}

/// A spawned app process and the guard that kills its group if the supervisor is dropped.
struct Running {
    child: Child,
    pgid: u32,
    guard: GroupGuard,
    /// The group's count of kills for its memory limit when this process started.
    oom_kills_before: Option<u64>,
}

/// The task that owns an instance's process.
struct Supervisor {
    spec: InstanceSpec,
    token: String,
    shared: Arc<Shared>,
    /// The write end of the output pipe, handed to each process the instance starts.
    output: PipeWriter,
    log: LogHandle,
    /// The log pump; awaited at the end so a stopped instance's log is complete.
    pump: JoinHandle<()>,
    /// Removed at the end, once the process group is gone.
    cgroup: Option<Arc<Cgroup>>,
    /// Dropped when the task ends, which is what [`Instance::stop`] waits for.
    _done: watch::Sender<()>,
}

enum Ended {
    StopRequested,
    /// `healthy_for`: how long the process had been healthy when it exited (zero if never).
    Exited {
        how: String,
        healthy_for: Duration,
    },
}

impl Supervisor {
    async fn run(self, first: Running) {
        let state = self.supervise(first).await;
        self.finish(state).await;
    }

    /// Runs, restarts and stops the process until the instance reaches a final state.
    async fn supervise(&self, first: Running) -> InstanceState {
        let port = self.spec.port;
        let mut backoff = self.spec.restart.initial_backoff;
        let mut current = Some(first);
        // Why the last restart attempt produced no process, if it failed to spawn.
        let mut spawn_failure: Option<String> = None;
        loop {
            let ended = match current.as_mut() {
                Some(running) => self.watch(running).await,
                None => Ended::Exited {
                    how: spawn_failure
                        .take()
                        .unwrap_or_else(|| "no process".to_owned()),
                    healthy_for: Duration::ZERO,
                },
            };
            let (how, healthy_for) = match ended {
                Ended::StopRequested => {
                    if let Some(running) = current.take() {
                        self.stop_process(running).await;
                    }
                    return InstanceState::Stopped;
                }
                Ended::Exited { how, healthy_for } => (how, healthy_for),
            };
            if let Some(running) = current.take() {
                self.clean_up_group(running).await;
            }
            // What the process wrote before exiting goes into the log before anyone can see the
            // exit, so a `wait_healthy` that fails on it reads the output that explains it.
            self.log.sync().await;

            // Decided under the status lock, so a concurrent `wait_healthy` either marked the
            // instance Running before this (and it restarts) or will see it Crashed.
            let mut crashed = false;
            self.shared.status.send_modify(|s| {
                s.pid = None;
                s.last_exit = Some(how.clone());
                if s.state == InstanceState::Starting {
                    s.state = InstanceState::Crashed;
                    crashed = true;
                } else if !s.state.is_final() {
                    s.state = InstanceState::Restarting;
                }
            });
            if crashed {
                warn!(port, exit = %how, "instance exited before becoming healthy");
                self.log
                    .marker(&format!("exited with {how} before becoming healthy"))
                    .await;
                return InstanceState::Crashed;
            }

            // Healthy long enough: this was a crash, not a crash loop.
            if healthy_for >= self.spec.restart.reset_after {
                backoff = self.spec.restart.initial_backoff;
            }
            let delay = backoff;
            backoff = (backoff * 2).min(self.spec.restart.max_backoff);
            let attempt = self.shared.status.borrow().restarts + 1;
            warn!(port, exit = %how, attempt, delay = %fmt_duration(delay), "instance exited; restarting");
            self.log
                .marker(&format!(
                    "exited with {how}; restart {attempt} in {}",
                    fmt_duration(delay)
                ))
                .await;

            let mut stop = self.shared.stop.subscribe();
            tokio::select! {
                _ = sleep(delay) => {}
                _ = stop_requested(&mut stop) => {
                    self.log.marker("stopped; restart cancelled").await;
                    return InstanceState::Stopped;
                }
            }

            match spawn(
                &self.spec,
                &self.token,
                &self.output,
                &self.log,
                self.cgroup.as_deref(),
            )
            .await
            {
                Ok(running) => {
                    self.shared.status.send_modify(|s| {
                        s.pid = Some(running.pgid);
                        s.restarts += 1;
                        s.started_at = SystemTime::now();
                    });
                    current = Some(running);
                }
                Err(e) => {
                    warn!(port, error = %e, "could not restart instance");
                    spawn_failure = Some(format!("a failed start ({e})"));
                }
            }
        }
    }

    /// Publishes a final state (a crash stays a crash when a stop comes afterwards) and lets the
    /// log pump write the last of the output. Consumes the supervisor: its end is what
    /// [`Instance::stop`] waits for.
    async fn finish(self, state: InstanceState) {
        if let Some(pid_file) = &self.spec.pid_file {
            remove_pid_file(pid_file).await;
        }
        self.shared.status.send_modify(|s| {
            s.pid = None;
            if !s.state.is_final() {
                s.state = state;
            }
        });
        self.log.close();
        // Without our write end, the pump also sees end-of-file once the group is gone.
        drop(self.output);
        if let Err(e) = self.pump.await {
            warn!(port = self.spec.port, error = %e, "instance log pump failed");
        }
        if let Some(cgroup) = &self.cgroup {
            cgroup.remove().await;
        }
    }

    /// Waits until the process exits or a stop is requested. After a restart, also probes health
    /// so the instance shows Running again once it answers. Measures how long the process has
    /// been healthy, for the restart policy's `reset_after`.
    async fn watch(&self, running: &mut Running) -> Ended {
        let mut stop = self.shared.stop.subscribe();
        let mut status = self.shared.status.subscribe();
        let check = &self.spec.health;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.spec.port));
        // When this process was first seen Running (by `wait_healthy` or the re-probe below);
        // every change of state wakes this loop.
        let mut healthy_since = None;
        loop {
            let state = status.borrow_and_update().state;
            if state == InstanceState::Running {
                healthy_since.get_or_insert_with(Instant::now);
            }
            let recovering = state == InstanceState::Restarting;
            let mut reprobe = pin!(async {
                sleep(check.interval).await;
                probe(&self.spec.network, addr, check, check.probe_timeout()).await
            });
            tokio::select! {
                exit = running.child.wait() => {
                    let how = match (exit, self.cgroup.as_deref()) {
                        (Ok(exit), Some(cgroup)) if cgroup.killed_for_memory(exit, running.oom_kills_before) => {
                            cgroup.oom_description()
                        }
                        (Ok(exit), _) => describe_exit(exit),
                        (Err(e), _) => format!("unknown status ({e})"),
                    };
                    let healthy_for = healthy_since.map_or(Duration::ZERO, |since| since.elapsed());
                    return Ended::Exited { how, healthy_for };
                }
                _ = stop_requested(&mut stop) => return Ended::StopRequested,
                _ = status.changed() => {}
                outcome = &mut reprobe, if recovering => {
                    if outcome.is_ok() {
                        let recovered = self.shared.status.send_if_modified(|s| {
                            let was_restarting = s.state == InstanceState::Restarting;
                            if was_restarting {
                                s.state = InstanceState::Running;
                            }
                            was_restarting
                        });
                        if recovered {
                            info!(port = self.spec.port, "restarted instance healthy again");
                            self.log.marker("healthy again").await;
                        }
                    }
                }
            }
        }
    }

    /// After the group's leader exited on its own: kills whatever it left in its group, which
    /// could otherwise hold the port the restarted process needs.
    async fn clean_up_group(&self, mut running: Running) {
        signal_group(running.pgid, Signal::SIGKILL);
        if wait_group_gone(running.pgid, Instant::now() + KILL_GRACE).await {
            running.guard.disarm();
        }
    }

    /// SIGTERM to the group, SIGKILL once the stop timeout has passed, then waits for the leader
    /// to be reaped and the rest of the group to disappear.
    async fn stop_process(&self, mut running: Running) {
        let port = self.spec.port;
        let pgid = running.pgid;
        self.shared
            .status
            .send_modify(|s| s.state = InstanceState::Stopping);
        info!(port, pgid, "stopping instance");
        self.log.marker("stopping (SIGTERM)").await;
        signal_group(pgid, Signal::SIGTERM);

        let deadline = Instant::now() + self.spec.stop_timeout;
        let exit = tokio::select! {
            exit = running.child.wait() => Some(exit),
            _ = sleep_until(deadline) => None,
        };
        let mut gone = exit.is_some() && wait_group_gone(pgid, deadline).await;
        let exit = match exit {
            Some(exit) => exit,
            None => {
                warn!(port, pgid, timeout = %fmt_duration(self.spec.stop_timeout), "instance ignored SIGTERM; sending SIGKILL");
                self.log
                    .marker(&format!(
                        "still running {} after SIGTERM; sending SIGKILL",
                        fmt_duration(self.spec.stop_timeout)
                    ))
                    .await;
                signal_group(pgid, Signal::SIGKILL);
                running.child.wait().await
            }
        };
        if !gone {
            signal_group(pgid, Signal::SIGKILL);
            gone = wait_group_gone(pgid, Instant::now() + KILL_GRACE).await;
        }
        if gone {
            running.guard.disarm();
        } else {
            warn!(
                port,
                pgid, "processes of a stopped instance are still alive after SIGKILL"
            );
        }
        let how = match exit {
            Ok(exit) => describe_exit(exit),
            Err(e) => format!("unknown status ({e})"),
        };
        info!(port, pgid, exit = %how, "instance stopped");
        self.log.marker(&format!("stopped ({how})")).await;
        self.shared
            .status
            .send_modify(|s| s.last_exit = Some(how.clone()));
    }
}

/// Resolves once a stop has been asked for. The sender lives in `Shared`, which every caller
/// holds, so the channel cannot close while this waits.
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Spawns `sh -c command` in its own process group (and its resource group, if any), its output
/// into the instance's pipe, and records the group in the pid file.
async fn spawn(
    spec: &InstanceSpec,
    token: &str,
    output: &PipeWriter,
    log: &LogHandle,
    cgroup: Option<&Cgroup>,
) -> Result<Running, SupervisorError> {
    let output_error = |source| SupervisorError::Output {
        command: spec.command.clone(),
        source,
    };
    let stdout = output.try_clone().map_err(output_error)?;
    let stderr = output.try_clone().map_err(output_error)?;
    log.marker(&format!(
        "starting `{}` on port {}",
        spec.command, spec.port
    ))
    .await;

    let spawn_error = |source| SupervisorError::Spawn {
        command: spec.command.clone(),
        cwd: spec.cwd.clone(),
        source,
    };
    // One pipe for both, so lines keep the order in which the app wrote them.
    let (mut command, oom_kills_before) = shell_command(
        Shell {
            command: &spec.command,
            cwd: &spec.cwd,
            env: &spec.env,
            token: (INSTANCE_TOKEN_VAR, token),
            identity: spec.identity,
            cgroup,
            network: &spec.network,
            sandbox: spec.sandbox.as_ref(),
            die_with_parent: false,
        },
        stdout.into(),
        stderr.into(),
    )
    .map_err(spawn_error)?;
    let child = command.spawn().map_err(spawn_error)?;
    let pgid = child
        .id()
        .expect("a freshly spawned child has a pid until it is awaited");
    let guard = GroupGuard::new(pgid);
    info!(port = spec.port, pid = pgid, "instance process started");

    // Without its pid file nothing could find the instance again if its supervising process
    // died with the daemon, so it is not left running: the guard kills the group on return.
    if let Some(pid_file) = &spec.pid_file
        && let Err(source) = write_pid_file(pid_file, pgid, token).await
    {
        remove_pid_file(pid_file).await;
        return Err(SupervisorError::PidFile {
            path: pid_file.clone(),
            source,
        });
    }
    Ok(Running {
        child,
        pgid,
        guard,
        oom_kills_before,
    })
}
