//! One way to bring a release up and one way to take it down, for every operation that does:
//! deploy, rollback, restart, start and start-up restore.
//!
//! `launch` starts the release's instance in the environment's network, on a port free there,
//! with its environment, waits until it passes its health check (or fails, or the caller is
//! cancelled: then it stops what it started) and returns the route entry. `go_live` records the release live in the store, then
//! hands the entry to `routing` (store first, so a crash in between restarts the new release,
//! never a half state). `retire` drains a replaced instance and stops it.
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::warn;
use turnout_dataplane::{DataPlane, UpstreamSpec};
use turnout_model::{EnvRef, Tier};
use turnout_proxy::DrainOutcome;
use turnout_supervisor::{
    CgroupSpec, HealthCheck, Identity, InstanceHandle, InstanceSpec, InstanceState, InstanceStatus,
    LogRotation, Network, RestartPolicy, Sandbox,
};

use super::ControlPlane;
use super::config_snapshot::{RanWith, record_snapshot};
use super::generation::NewData;
use super::logs::failure_tail;
use super::routing::{Running, key};
use crate::app_file::ReleaseConfig;
use crate::error::ControlError;
use crate::store::{AuditEntry, EnvRow, q};

/// What `launch` starts: one release of one environment.
pub(crate) struct Launch<'a> {
    pub r: &'a EnvRef,
    pub env: &'a EnvRow,
    pub release_id: i64,
    pub commit: &'a str,
    pub dir: &'a Path,
    pub config: &'a ReleaseConfig,
    /// A new generation of the environment's data to run on (seed, clone, sync), recorded
    /// serving at go-live; None: the generation serving now (made on the first launch).
    pub data: Option<&'a NewData>,
    /// Run with this recorded configuration snapshot (a rollback, a restore at start-up);
    /// `None`: with what is set now.
    pub snapshot: Option<i64>,
}

/// What `instance_setup` gives a process of a release.
pub(crate) struct InstanceSetup {
    /// Its whole environment, but `PORT`.
    pub env: Vec<(String, String)>,
    /// The values set through Turnout in `env`, recorded at go-live.
    pub ran_with: RanWith,
    pub identity: Option<Identity>,
    pub cgroup: CgroupSpec,
    pub network: Network,
    pub sandbox: Option<Sandbox>,
}

impl ControlPlane {
    /// What every process of a release sees (builds included), and nothing else: the
    /// allow-list (`base_env`), the app file's `[env]` and where it runs. Values set through
    /// Turnout (`turnout config`) are added for instances only (`launch`), the data's variables
    /// for instances, seeds and migrations (`data_env`).
    pub(crate) fn release_env(
        &self,
        r: &EnvRef,
        tier: Tier,
        commit: &str,
        config: &ReleaseConfig,
    ) -> Vec<(String, String)> {
        let mut env = self.base_env(r);
        env.extend(config.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend([
            ("TURNOUT_APP".to_owned(), r.app.to_string()),
            ("TURNOUT_ENV".to_owned(), r.env.to_string()),
            ("TURNOUT_TIER".to_owned(), tier.to_string()),
            ("TURNOUT_RELEASE".to_owned(), commit.to_owned()),
            ("TURNOUT_URL".to_owned(), self.url(r)),
        ]);
        env
    }

    /// What a process of the release runs with as an instance, all but its port: who it runs
    /// as, its whole environment (the release's, the values set through Turnout (what is set
    /// now, or `l.snapshot`), the third parties' and the data's variables), its control group
    /// with the effective plan, its network and its sandbox. The one assembly `launch` and
    /// `run` (`turnout run`) share, so a command run there sees exactly what an instance sees.
    pub(crate) async fn instance_setup(
        &self,
        l: &Launch<'_>,
    ) -> Result<InstanceSetup, ControlError> {
        let identity = self.identity(l.env)?;
        self.prepare_env_dirs(l.env).await?;
        self.hand_over(l.env, l.dir).await?;
        let mut env = self.release_env(l.r, l.env.tier, l.commit, l.config);
        // Values set through Turnout go to the instance only: never to the build, whose
        // output may be logged. They override the app file's; Turnout's own come after.
        let (set, ran_with) = self.instance_config(l.env, l.snapshot).await?;
        env.extend(set);
        // Third parties: below production, mail goes to the catcher and outbound requests
        // through the egress proxy, whatever was set for them.
        env.extend(self.mail_env(l.env, l.config));
        env.extend(self.egress_env(l.env));
        env.extend(self.link_env(l.env).await?);
        let gn = match l.data {
            Some(new) => new.gn.clone(),
            None => self.ensure_data(l.env, l.config).await?,
        };
        let (data_vars, data_binds) = self.data_env(l.env, &gn).await?;
        env.extend(data_vars);
        let mut sandbox = self.sandbox(l.env);
        if let Some(s) = sandbox.as_mut() {
            s.writable.extend(data_binds);
        }
        Ok(InstanceSetup {
            env,
            ran_with,
            identity,
            cgroup: self.cgroup(l.env, l.config),
            network: self.network(l.env).await?,
            sandbox,
        })
    }

    /// Start the release on a free port and wait until it is healthy. If it fails, or
    /// `cancelled` resolves first, the instance is stopped and the error returned.
    pub(crate) async fn launch(
        &self,
        l: &Launch<'_>,
        cancelled: impl Future<Output = ControlError>,
    ) -> Result<Running, ControlError> {
        let r = l.r;
        let setup = self.instance_setup(l).await?;
        let mut env = setup.env;
        let port = setup
            .network
            .free_port()
            .map_err(|e| ControlError::internal(format!("find a free port: {e}")))?;
        env.push(("PORT".to_owned(), port.to_string()));
        let log_path = self.home.run_log(&r.app, &r.env, l.release_id);
        let spec = InstanceSpec {
            tag: instance_tag(r, l.release_id),
            command: l.config.run.clone(),
            cwd: l.dir.to_path_buf(),
            env,
            port,
            log_path: log_path.clone(),
            pid_file: Some(self.home.pid_file(&r.app, &r.env, l.release_id)),
            health: HealthCheck {
                path: l.config.health_path.clone(),
                host: r.internal_host(),
                timeout: l.config.health_timeout,
                interval: l.config.health_interval,
            },
            restart: RestartPolicy::default(),
            stop_timeout: l.config.stop_timeout,
            log_rotation: LogRotation::default(),
            identity: setup.identity,
            cgroup: Some(setup.cgroup),
            network: setup.network,
            sandbox: setup.sandbox,
        };
        let instance = self
            .runtime
            .start(spec)
            .await
            .map_err(|e| ControlError::Step {
                step: "launch",
                message: e.to_string(),
                log_tail: vec![],
            })?;
        let healthy = tokio::select! {
            h = instance.wait_healthy() => h.map_err(|e| e.to_string()),
            e = cancelled => {
                instance.stop().await;
                return Err(e);
            }
        };
        if let Err(message) = healthy {
            instance.stop().await;
            return Err(ControlError::Step {
                step: "launch",
                message,
                log_tail: failure_tail(&log_path).await,
            });
        }
        let mut running = running(l, instance, self.dataplane());
        running.ran_with = Some(setup.ran_with);
        Ok(running)
    }

    /// The route entry of an instance an earlier daemon started and left running (see
    /// `restore`), once it passes a health check now: its environment's network is made ready
    /// (the way out and the proxy's listener inside) as for a launch.
    pub(crate) async fn adopt(
        &self,
        l: &Launch<'_>,
        instance: Arc<dyn InstanceHandle>,
    ) -> Result<Running, ControlError> {
        self.network(l.env).await?;
        if let Some(row) = self.data_row(l.env).await? {
            self.start_cluster(l.env, &self.generation(l.env, &row)?)
                .await?;
        }
        instance
            .check_health()
            .await
            .map_err(|e| ControlError::Step {
                step: "adopt",
                message: e.to_string(),
                log_tail: vec![],
            })?;
        Ok(running(l, instance, self.dataplane()))
    }

    /// Record `release_id` live for the environment (and its new generation of data, if it
    /// runs on one), then route to `running`. Returns the
    /// instance it replaced, for `retire`. `audit` names the operation (deploy, rollback, …).
    pub(crate) async fn go_live(
        &self,
        l: &Launch<'_>,
        running: Running,
        audit: AuditEntry,
    ) -> Result<Option<Running>, ControlError> {
        let (env_id, release_id, previous) = (l.env.id, l.release_id, l.env.current_release_id);
        let entry = audit.change(None, Some(l.commit.to_owned()));
        let data = l.data.map(|new| new.gn.row(env_id, new.origin.clone()));
        // The snapshot is sealed and written under the sealing lock, so a key rotation cannot
        // come between.
        let sealing = self.sealing.read().await;
        let snapshot = match &running.ran_with {
            Some(ran_with) => match self.seal_snapshot(env_id, ran_with) {
                Ok(s) => Some(s),
                Err(e) => {
                    running.instance.stop().await;
                    return Err(e);
                }
            },
            None => None,
        };
        if let Err(e) = self
            .store
            .mutate(entry, move |c, entry| {
                if let Some(id) = previous {
                    entry.from = Some(q::get_release(c, id)?.commit);
                }
                if let Some(row) = &data {
                    crate::store::data::set(c, row)?;
                }
                q::go_live(c, env_id, release_id)?;
                match &snapshot {
                    Some(s) => record_snapshot(c, env_id, release_id, s),
                    None => Ok(()),
                }
            })
            .await
        {
            running.instance.stop().await;
            return Err(e);
        }
        drop(sealing);
        if previous != Some(release_id) {
            // The new release may declare another re-seed schedule: the scheduler looks now.
            self.schedules_changed.notify_one();
        }
        Ok(self.routing.go_live(key(l.r), running).await)
    }

    /// Wait for the data plane to drain a replaced instance's in-flight requests (up to its
    /// drain timeout; streams (WebSockets, event streams) get their own, shorter deadline, then
    /// a clean close), then stop it.
    pub(crate) async fn retire(&self, r: &EnvRef, old: Running) -> DrainOutcome {
        let outcome: DrainOutcome = self.dataplane().drained(&old.upstream.id).await.into();
        self.metrics().count_drain(&r.app, &r.env, &outcome);
        if outcome.cut > 0 {
            warn!(app = %r.app, env = %r.env, cut = outcome.cut, "drain deadline cut in-flight requests");
        }
        old.instance.stop().await;
        outcome
    }
}

/// How an instance names itself to a later daemon: `APP/ENV@RELEASE_ID`.
pub(crate) fn instance_tag(r: &EnvRef, release_id: i64) -> String {
    format!("{r}@{release_id}")
}

/// The route entry of a healthy instance. Its restarts are mirrored onto the data plane's
/// entry from here on (`mirror_restarts`), so every route to it knows when it is down.
fn running(
    l: &Launch<'_>,
    instance: Arc<dyn InstanceHandle>,
    dataplane: &Arc<DataPlane>,
) -> Running {
    let tag = instance_tag(l.r, l.release_id);
    let namespace = instance.network().name().map(str::to_owned);
    let addr = instance.addr();
    let upstream = UpstreamSpec {
        // The same for as long as the instance runs, whichever daemon routes it.
        id: format!("{tag} {} {addr}", namespace.as_deref().unwrap_or("host")),
        addr,
        namespace,
        label: format!("{}@{}", l.r, &l.commit[..12.min(l.commit.len())]),
        response_timeout_ms: millis(l.config.response_timeout),
        drain_requests_ms: millis(l.config.drain_timeout),
        drain_streams_ms: millis(l.config.stream_drain_timeout),
    };
    tokio::spawn(mirror_restarts(
        instance.status_changes(),
        dataplane.clone(),
        upstream.id.clone(),
    ));
    Running {
        release_id: l.release_id,
        upstream,
        instance,
        health_path: l.config.health_path.clone(),
        tier: l.env.tier,
        ran_with: None,
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Keep the data plane's restarting flag of the instance equal to "the supervisor is
/// restarting it after a crash" until the instance is stopped: the proxy then answers a refused
/// connection with 503 and `Retry-After` instead of 502. A flag set from here, rather than a
/// look at the runtime on each request, keeps the request path to one relaxed load, and only
/// when a connect failed.
async fn mirror_restarts(
    mut status: watch::Receiver<InstanceStatus>,
    dataplane: Arc<DataPlane>,
    upstream: String,
) {
    let mut flagged = false;
    loop {
        let state = status.borrow_and_update().state;
        let restarting = state == InstanceState::Restarting;
        if restarting != flagged {
            dataplane.set_restarting(&upstream, restarting);
            flagged = restarting;
        }
        let gone = matches!(
            state,
            InstanceState::Stopping | InstanceState::Stopped | InstanceState::Crashed
        );
        if gone || status.changed().await.is_err() {
            return;
        }
    }
}
