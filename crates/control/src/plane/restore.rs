//! Start-up and shutdown. Start-up cleans up after a daemon that was killed (its processes,
//! its jobs, its half-written releases), then brings back every environment that was live,
//! through the same `launch` and `routing` as a deploy. An environment that cannot come back
//! (a full disk, a missing release directory, an app that stays unhealthy) answers 503 and is
//! tried again until it serves; the others serve meanwhile. Shutdown lets jobs reach a safe
//! point, then stops every instance.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};
use turnout_model::EnvRef;
use turnout_supervisor::InstanceHandle;

use super::deploy::built_marker;
use super::isolation::cgroup_name;
use super::launch::{Launch, instance_tag};
use super::routing::{Down, key};
use super::{ControlPlane, remove_dir};
use crate::app_file::ReleaseConfig;
use crate::error::ControlError;
use crate::git;
use crate::store::jobs as jq;
use crate::store::{EnvRow, q};

/// The delay before a failed start-up restore is tried again, doubling after each failure up
/// to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

fn shutting_down() -> ControlError {
    ControlError::Cancelled("the daemon is shutting down".to_owned())
}

impl ControlPlane {
    /// Bring back every environment that had a live release and was not stopped: start its
    /// instance from the release directory (no rebuild), wait for health, route. Environments
    /// come up concurrently; each is routed as soon as it is healthy, and each one that fails
    /// is marked down and retried (`bring_back`).
    pub async fn restore_all(self: &Arc<Self>) {
        if let Err(e) = self.restore().await {
            warn!(error = %e, "restoring environments failed");
        }
        // The links' listeners in the namespaces adopted instances run in (a launch in the
        // background makes its own).
        self.links_changed().await;
    }

    /// Clean up after a daemon that was killed: kill the instances and builds it left (only
    /// processes carrying the token their pid file names), mark its jobs interrupted and its
    /// half-built releases failed, and remove their directories. Runs before the API serves.
    pub async fn recover(&self) -> Result<(), ControlError> {
        let envs = self.store.call(|c| q::list_envs(c, None)).await?;
        let kept = self.find_adoptable(&envs).await;
        for pid_file in self.home.all_pid_files() {
            if !kept.contains(&pid_file) {
                self.runtime.reap_stale(&pid_file).await;
            }
        }
        // The control groups of what was just reaped (empty ones only).
        for env in &envs {
            self.runtime.remove_cgroup(&cgroup_name(env)).await;
        }
        let interrupted = self.jobs.recover().await?;
        if interrupted > 0 {
            warn!(
                count = interrupted,
                "marked jobs interrupted by the last shutdown"
            );
        }
        self.clean_half_built().await
    }

    /// Instances an earlier daemon left running whose supervision outlived it: each one that
    /// is the live release of a started environment is kept for `restore` to adopt (one per
    /// environment); the others (a deploy's new instance that never went live, a release
    /// replaced since) are stopped. Returns the pid files of those kept, which must not be
    /// reaped.
    async fn find_adoptable(&self, envs: &[EnvRow]) -> HashSet<PathBuf> {
        let live: HashSet<String> = envs
            .iter()
            .filter(|e| !e.stopped && !e.sleeping)
            .filter_map(|e| {
                let r = EnvRef {
                    app: e.app.clone(),
                    env: e.name.clone(),
                };
                e.current_release_id.map(|id| instance_tag(&r, id))
            })
            .collect();
        let mut kept = HashSet::new();
        let mut adopted = HashMap::new();
        for found in self.runtime.adoptable().await {
            let tag = found.spec.tag;
            if live.contains(&tag) && !adopted.contains_key(&tag) {
                info!(instance = %tag, "found the live instance still running; adopting it");
                kept.extend(found.spec.pid_file);
                adopted.insert(tag, found.handle);
            } else {
                info!(instance = %tag, "stopping an instance left running that is not live");
                found.handle.stop().await;
            }
        }
        *self.adopted_instances() = adopted;
        kept
    }

    fn adopted_instances(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<dyn InstanceHandle>>> {
        self.adopted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn restore(self: &Arc<Self>) -> Result<(), ControlError> {
        self.refresh_logins().await?;
        // Domains and internal URLs answer 503 "starting" until their environments are back,
        // then route.
        let domains = self.store.call(|c| q::list_domains(c)).await?;
        let envs = self.store.call(|c| q::list_envs(c, None)).await?;
        // A sleeping environment stays asleep: its URL wakes it.
        let asleep = self.sleepers(&envs).await;
        let (stopped, restoring): (Vec<_>, Vec<_>) = envs
            .iter()
            .filter(|e| e.current_release_id.is_some() && (e.stopped || !e.sleeping))
            .map(|e| (e.stopped, (e.app.clone(), e.name.clone())))
            .partition(|(stopped, _)| *stopped);
        let undeployed = envs
            .iter()
            .filter(|e| e.current_release_id.is_none())
            .map(|e| (e.app.clone(), e.name.clone()))
            .collect();
        self.routing
            .load(
                &domains,
                stopped.into_iter().map(|(_, k)| k).collect(),
                restoring.into_iter().map(|(_, k)| k).collect(),
                undeployed,
                asleep,
            )
            .await;
        // The clusters of environments that start no instance now (stopped, asleep): other
        // environments may be attached to them. The others' start with their instance.
        let idle: Vec<EnvRow> = envs
            .iter()
            .filter(|e| e.current_release_id.is_none() || e.stopped || e.sleeping)
            .cloned()
            .collect();
        let this = self.clone();
        self.tasks
            .spawn(async move { this.start_clusters(&idle).await });
        let mut adopted = std::mem::take(&mut *self.adopted_instances());
        let mut adopting = tokio::task::JoinSet::new();
        for env in envs {
            let Some(release_id) = env
                .current_release_id
                .filter(|_| !env.stopped && !env.sleeping)
            else {
                continue;
            };
            let r = EnvRef {
                app: env.app,
                env: env.name,
            };
            let found = adopted
                .remove(&instance_tag(&r, release_id))
                .map(|instance| (release_id, instance));
            let this = self.clone();
            match found {
                // Adopted before this returns (a health check each, all at once), so a proxy
                // that starts serving after it routes them at once; if one cannot be adopted,
                // it is brought back like the others.
                Some(found) => {
                    adopting.spawn(async move {
                        let adopted = this
                            .restore_env(&r, Some(found), RETRY_FIRST, Bring::AdoptOnly)
                            .await;
                        if adopted.is_err() {
                            let again = this.clone();
                            this.tasks
                                .spawn(async move { again.bring_back(&r, None).await });
                        }
                    });
                }
                None => {
                    self.tasks
                        .spawn(async move { this.bring_back(&r, None).await });
                }
            }
        }
        while adopting.join_next().await.is_some() {}
        // Found running but no longer the live release of a started environment (stopped or
        // redeployed since `recover`): stopped, never left running unrouted.
        for (tag, instance) in adopted {
            info!(instance = %tag, "stopping an instance left running that was not adopted");
            instance.stop().await;
        }
        Ok(())
    }

    /// Bring `r` back on its live release, trying again after a failure with a growing delay
    /// (`RETRY_FIRST` doubling to `RETRY_MAX`) until it serves, is stopped or deleted, or the
    /// daemon shuts down, so it recovers by itself once the cause is gone (space freed, the
    /// release directory back, the app healthy again). A user's deploy, start or stop takes
    /// over: each attempt holds the environment's lock like a job and first looks whether one
    /// brought it up or stopped it meanwhile. `adopted` is the instance an earlier daemon left
    /// running for its live release, for the first attempt.
    async fn bring_back(&self, r: &EnvRef, adopted: Option<(i64, Arc<dyn InstanceHandle>)>) {
        let mut adopted = adopted;
        let mut delay = RETRY_FIRST;
        loop {
            match self
                .restore_env(r, adopted.take(), delay, Bring::Launch)
                .await
            {
                Ok(()) => return,
                Err(_) if self.closing.is_cancelled() => return,
                Err(e) => {
                    warn!(app = %r.app, env = %r.env, error = %e, retry_in = ?delay, "environment did not come back; trying again later");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.closing.cancelled() => return,
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// Releases a killed daemon left `building` did not happen: mark them failed and remove
    /// the directories whose build never finished.
    async fn clean_half_built(&self) -> Result<(), ControlError> {
        let building = self.store.call(|c| jq::building_releases(c)).await?;
        if building.is_empty() {
            return Ok(());
        }
        self.store.mutate_each(q::fail_interrupted_releases).await?;
        for release in building {
            let dir = Path::new(&release.dir);
            if !tokio::fs::try_exists(built_marker(dir))
                .await
                .unwrap_or(false)
            {
                info!(dir = %dir.display(), release = release.id, "removing a release directory an interrupted deploy left");
                remove_dir(dir).await;
            }
        }
        // The mirrors still list the removed directories as worktrees.
        for app in self.store.call(|c| q::list_apps(c)).await? {
            git::prune_worktrees(&self.home.mirror(&app.name)).await;
        }
        Ok(())
    }

    /// One attempt to bring `r` back, under its environment's lock like a job. A failure marks
    /// it down (why, and that the next attempt is `retry_in` from now) before the lock is let
    /// go, so a job or stop that follows always has the last word. Nothing it started or was
    /// handed is left running unrouted.
    async fn restore_env(
        &self,
        r: &EnvRef,
        mut adopted: Option<(i64, Arc<dyn InstanceHandle>)>,
        retry_in: Duration,
        bring: Bring,
    ) -> Result<(), ControlError> {
        let _env_lock = self.env_locks.lock(&key(r)).await;
        let outcome = self.restore_locked(r, &mut adopted, bring).await;
        if let Some((_, instance)) = adopted {
            instance.stop().await;
        }
        if let Err(e) = &outcome
            && !self.closing.is_cancelled()
        {
            let down = Down {
                why: e.to_string(),
                retry_at: SystemTime::now() + retry_in,
            };
            self.routing.mark_down(key(r), down);
        }
        outcome
    }

    /// `restore_env` with the lock held. Takes `adopted` only when it routes it.
    async fn restore_locked(
        &self,
        r: &EnvRef,
        adopted: &mut Option<(i64, Arc<dyn InstanceHandle>)>,
        bring: Bring,
    ) -> Result<(), ControlError> {
        if self.closing.is_cancelled() {
            return Err(shutting_down());
        }
        // A job that got there first (a deploy sent as soon as the API was up, or an `env start`)
        // already brought it up; a stop or delete meanwhile means it is not wanted.
        if self.routing.running(&key(r)).is_some() {
            return Ok(());
        }
        let env = match self.env_row(r).await {
            Err(ControlError::NotFound(_)) => return Ok(()),
            row => row?,
        };
        let Some(release_id) = env
            .current_release_id
            .filter(|_| !env.stopped && !env.sleeping)
        else {
            return Ok(());
        };
        let release = self
            .store
            .call(move |c| q::get_release(c, release_id))
            .await?;
        let config: ReleaseConfig = serde_json::from_str(&release.config)
            .map_err(|e| ControlError::internal(format!("release {release_id} config: {e}")))?;
        let dir = Path::new(&release.dir);
        if !tokio::fs::try_exists(dir).await.unwrap_or(false) {
            return Err(ControlError::Conflict(format!(
                "release {release_id} has no directory any more ({}); deploy again with `turnout deploy {r}`",
                dir.display()
            )));
        }
        // What ran before the daemon stopped runs again, configuration included.
        let snapshot = self.recorded_snapshot(release_id).await?;
        let l = Launch {
            r,
            env: &env,
            release_id,
            commit: &release.commit,
            dir,
            config: &config,
            data: None,
            snapshot,
        };
        if let Some((_, instance)) = adopted.take_if(|(id, _)| *id == release_id) {
            match self.adopt(&l, instance.clone()).await {
                Ok(running) => {
                    self.routing.go_live(key(r), running).await;
                    info!(app = %r.app, env = %r.env, release = release_id, "environment adopted: its instance kept running");
                    return Ok(());
                }
                Err(e) => {
                    warn!(app = %r.app, env = %r.env, error = %e, "the instance left running cannot be adopted; starting it again");
                    instance.stop().await;
                    if bring == Bring::AdoptOnly {
                        return Err(e);
                    }
                }
            }
        }
        if bring == Bring::AdoptOnly {
            return Err(ControlError::Conflict(format!(
                "{r} has no instance left running of its live release to adopt"
            )));
        }
        let closing = self.closing.clone();
        let running = self
            .launch(&l, async move {
                closing.cancelled().await;
                shutting_down()
            })
            .await?;
        if self.closing.is_cancelled() {
            running.instance.stop().await;
            return Err(shutting_down());
        }
        if let Some(old) = self.routing.go_live(key(r), running).await {
            old.instance.stop().await;
        }
        info!(app = %r.app, env = %r.env, release = release_id, "environment restored");
        Ok(())
    }

    /// When the control plane leaves alone (SIGTERM, or a successor took the listening
    /// sockets): let jobs and restores in progress notice and clean up, as for a shutdown, but
    /// leave every instance running (and its namespace and way out) for the next control plane
    /// to adopt.
    pub async fn leave_running(&self) {
        self.closing.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.networks.detach().await;
    }

    /// Stop every instance (the data plane has already stopped accepting and drained): first let
    /// jobs and restores in progress notice the shutdown and clean up after themselves (jobs
    /// before their point of no return are cancelled; the others finish).
    pub async fn shutdown(&self) {
        self.closing.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let all = self.routing.take_all().await;
        let mut tasks = tokio::task::JoinSet::new();
        for r in all {
            tasks.spawn(async move { r.instance.stop().await });
        }
        while tasks.join_next().await.is_some() {}
        self.stop_clusters().await;
        self.networks.close().await;
    }
}

/// What one attempt to bring an environment back may do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bring {
    /// Route the instance it was handed, after a health check; nothing slower.
    AdoptOnly,
    /// Adopt what it was handed, else launch its live release.
    Launch,
}
