//! Operations on an environment's releases that build nothing: rollback to an earlier
//! live-once release, restart of the live one, stop and start. Rollback, restart and start
//! are jobs that relaunch a release from its directory with the configuration it ran with,
//! through the same `launch` → `go_live` → `retire` as a deploy, so they are health-gated and
//! drop no request. A rollback `--with-data` also puts the schema back: the live release's
//! `migrate_down`, or the pinned snapshot taken before it migrated, restored aside and swapped
//! in with the release (`go_live_on_data`).
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tracing::info;
use turnout_data::postgres::backup::RecoveryTarget;
use turnout_model::{
    Action, AuditAction, EnvInfo, EnvRef, JobInfo, JobKind, RollbackRequest, Tier,
};

use super::ControlPlane;
use super::backup_restore::{RestorePoint, config_of};
use super::data::{ReleaseRef, pre_migrate_label};
use super::deploy::retire_step;
use super::generation::{Generation, NewData};
use super::jobs::{JobCtx, JobSpec};
use super::launch::Launch;
use super::routing::key;
use crate::access::Principal;
use crate::app_file::ReleaseConfig;
use crate::error::ControlError;
use crate::store::backup::{self as bq, BackupKind, BackupState};
use crate::store::data::Origin;
use crate::store::{AuditEntry, EnvRow, ReleaseRow, now, q};

const RELAUNCH_STEPS: &[&str] = &["launch", "go-live", "retire"];
const ROLLBACK_DATA_STEPS: &[&str] = &["data", "launch", "go-live", "retire"];
const START_STEPS: &[&str] = &["launch", "go-live"];

/// What `go_live_on_data` puts live: a release of the environment on a new generation of its
/// data made aside, replacing `old`.
pub(crate) struct OnNewData<'a> {
    pub r: &'a EnvRef,
    pub env: &'a EnvRow,
    pub rel: &'a ReleaseRef<'a>,
    pub new: Generation,
    pub old: Option<Generation>,
    /// Recorded as the data's origin (`seed`, `clone`, `restore`, …) and where from.
    pub origin: &'static str,
    pub from: Option<String>,
    /// The go-live's audit action.
    pub action: AuditAction,
    /// The index of the first step it reports: `migrate` when `migrate`, else `launch`; the
    /// others (launch, go-live, retire) follow.
    pub first: usize,
    /// Whether the release's migrate command runs on the new data first.
    pub migrate: bool,
}

/// What `rollback --with-data` does to the schema and data.
#[derive(Clone)]
enum WithData {
    /// The current release's `migrate_down`, run on the data (which is kept).
    MigrateDown(String),
    /// The pinned snapshot taken before the current release migrated, restored.
    Restore(Box<RestorePoint>),
}

/// Which release a relaunch starts.
#[derive(Clone, Copy)]
enum Pick {
    /// The newest live-once release before the live one, or the one given.
    Rollback(Option<i64>),
    /// The live release again (restart, start).
    Current,
}

impl ControlPlane {
    /// Back to the previous live-once release (or `req.to`): no fetch, no build. With
    /// `req.with_data`, the schema and data go back too: the current release's `migrate_down`
    /// when it declares one (data kept), else its pinned pre-migration snapshot restored
    /// (in production only with `req.yes`, after saying what that discards).
    pub async fn rollback(
        self: &Arc<Self>,
        r: EnvRef,
        req: RollbackRequest,
        who: &Principal,
    ) -> Result<JobInfo, ControlError> {
        let env = self.env_for(who, &r, Action::Deploy).await?;
        // Refuse now what would fail in the job: nothing to go back to.
        let release = self.pick(&env, Pick::Rollback(req.to)).await?;
        let with_data = match req.with_data {
            true => Some(self.rollback_data(who, &env, req.yes).await?),
            false => None,
        };
        let request = match &with_data {
            None => format!("release {}", release.id),
            Some(WithData::MigrateDown(_)) => {
                format!("release {}, schema by migrate_down", release.id)
            }
            Some(WithData::Restore(p)) => {
                format!("release {}, data as of {}", release.id, p.describe())
            }
        };
        self.relaunch_job(
            JobKind::Rollback,
            r,
            Some(request),
            who,
            Pick::Rollback(Some(release.id)),
            with_data,
        )
        .await
    }

    /// How `rollback --with-data` puts the schema back from the live release: its
    /// `migrate_down`, or the pinned snapshot its production deploy took before migrating.
    async fn rollback_data(
        &self,
        who: &Principal,
        env: &EnvRow,
        yes: bool,
    ) -> Result<WithData, ControlError> {
        let r = EnvRef {
            app: env.app.clone(),
            env: env.name.clone(),
        };
        self.env_for(who, &r, Action::Restore).await?;
        let Some(current) = env.current_release_id else {
            return Err(self.not_running(env));
        };
        let release = self.store.call(move |c| q::get_release(c, current)).await?;
        if let Some(down) = config_of(&release)?.data.migrate_down {
            return Ok(WithData::MigrateDown(down));
        }
        let label = pre_migrate_label(current, &release.commit);
        let env_id = env.id;
        let snapshot = self
            .store
            .call(move |c| bq::list(c, env_id))
            .await?
            .into_iter()
            .find(|b| {
                b.kind == BackupKind::PreMigrate
                    && b.state == BackupState::Ready
                    && b.label.as_deref() == Some(label.as_str())
            });
        let Some(backup) = snapshot else {
            return Err(ControlError::Conflict(format!(
                "release {current} of {r} declares no [data] migrate_down and has no pinned snapshot from before it migrated (production deploys take one when the release has a migrate command and the environment had data); roll back without --with-data to keep the data as it is"
            )));
        };
        if env.tier == Tier::Production && !yes {
            return Err(self
                .discards(env, backup.taken_at, "rolling back with data")
                .await?);
        }
        Ok(WithData::Restore(Box::new(RestorePoint {
            point: backup.taken_at,
            asked: backup.taken_at,
            backup,
            target: RecoveryTarget::EndOfBackup,
        })))
    }

    /// A fresh instance of the live release, then the old one drained and stopped.
    pub async fn restart(
        self: &Arc<Self>,
        r: EnvRef,
        who: &Principal,
    ) -> Result<JobInfo, ControlError> {
        let env = self.env_for(who, &r, Action::Deploy).await?;
        if self.routing.running(&key(&r)).is_none() {
            return Err(self.not_running(&env));
        }
        self.relaunch_job(JobKind::Restart, r, None, who, Pick::Current, None)
            .await
    }

    /// Start a stopped (or down) environment's live release again.
    pub async fn start_env(
        self: &Arc<Self>,
        r: EnvRef,
        who: &Principal,
    ) -> Result<JobInfo, ControlError> {
        let env = self.env_for(who, &r, Action::Deploy).await?;
        if self.routing.running(&key(&r)).is_some() {
            return Err(ControlError::Conflict(format!(
                "{r} is already live; restart it with `turnout restart {r}`"
            )));
        }
        if env.current_release_id.is_none() {
            return Err(ControlError::Conflict(format!(
                "{r} has no release yet; deploy it with `turnout deploy {r}`"
            )));
        }
        self.relaunch_job(JobKind::Start, r, None, who, Pick::Current, None)
            .await
    }

    /// Stop serving an environment: its URL and the domains bound to it answer 503 saying it
    /// is stopped; its instance drains and stops. It stays stopped across daemon restarts.
    pub async fn stop_env(&self, r: EnvRef, who: &Principal) -> Result<EnvInfo, ControlError> {
        let env = self.env_for(who, &r, Action::Deploy).await?;
        let Some(_stopping) = self.env_locks.try_lock(&key(&r)) else {
            return Err(ControlError::Conflict(format!(
                "a job or a start-up retry is running on {r}; wait for it (`turnout jobs {r}`, `turnout env show {r}`) or cancel the job, then stop"
            )));
        };
        if env.current_release_id.is_none() {
            return Err(ControlError::Conflict(format!(
                "{r} has never been deployed; there is nothing to stop"
            )));
        }
        let entry = AuditEntry::new(&who.name, AuditAction::EnvStop)
            .app(&r.app)
            .env(&r.env);
        let env_id = env.id;
        self.store
            .mutate(entry, move |c, _| q::set_stopped(c, env_id, true))
            .await?;
        if let Some(old) = self.routing.stop(key(&r)).await {
            self.retire(&r, old).await;
        }
        info!(app = %r.app, env = %r.env, "environment stopped");
        self.env_info(self.env_row(&r).await?).await
    }

    fn not_running(&self, env: &EnvRow) -> ControlError {
        let r = format!("{}/{}", env.app, env.name);
        ControlError::Conflict(match (env.current_release_id, env.stopped) {
            (None, _) => format!("{r} has no release yet; deploy it with `turnout deploy {r}`"),
            (Some(_), true) => format!("{r} is stopped; start it with `turnout env start {r}`"),
            (Some(_), false) if env.sleeping => {
                format!(
                    "{r} is asleep; wake it with `turnout env wake {r}` (or a request to its URL)"
                )
            }
            (Some(_), false) => {
                format!("{r} is not running; start it with `turnout env start {r}`")
            }
        })
    }

    async fn pick(&self, env: &EnvRow, pick: Pick) -> Result<ReleaseRow, ControlError> {
        let (env_id, current) = (env.id, env.current_release_id);
        let release = match pick {
            Pick::Rollback(to) => {
                self.store
                    .call(move |c| q::rollback_release(c, env_id, current, to))
                    .await?
            }
            Pick::Current => {
                let Some(id) = current else {
                    return Err(self.not_running(env));
                };
                self.store.call(move |c| q::get_release(c, id)).await?
            }
        };
        if !tokio::fs::try_exists(&release.dir).await.unwrap_or(false) {
            return Err(ControlError::Conflict(format!(
                "release {} has no directory any more ({}); deploy its commit {} again instead",
                release.id,
                release.dir,
                &release.commit[..12.min(release.commit.len())]
            )));
        }
        Ok(release)
    }

    async fn relaunch_job(
        self: &Arc<Self>,
        kind: JobKind,
        r: EnvRef,
        request: Option<String>,
        who: &Principal,
        pick: Pick,
        with_data: Option<WithData>,
    ) -> Result<JobInfo, ControlError> {
        let spec = JobSpec {
            kind,
            target: r.clone(),
            actor: who.name.clone(),
            request,
            steps: match (kind, &with_data) {
                (JobKind::Start, _) => START_STEPS,
                (_, Some(_)) => ROLLBACK_DATA_STEPS,
                (_, None) => RELAUNCH_STEPS,
            },
        };
        let action = match kind {
            JobKind::Rollback => AuditAction::Rollback,
            JobKind::Restart => AuditAction::Restart,
            _ => AuditAction::EnvStart,
        };
        let (this, actor) = (self.clone(), who.name.clone());
        self.jobs
            .start(spec, move |ctx| async move {
                let done = this
                    .relaunch(&ctx, kind, &r, &actor, pick, action, with_data)
                    .await;
                // A rollback changes the release; a restart or start runs the same one again.
                if done.is_ok() && kind == JobKind::Rollback {
                    this.follow_production(&r).await;
                }
                done
            })
            .await
    }

    /// Wake a sleeping environment: its live release again, as a start job of the daemon's own
    /// (actor "turnout", audited as `env.wake`). `ended` runs when the job ends, whatever its
    /// result.
    pub(super) async fn wake_job(
        self: &Arc<Self>,
        r: EnvRef,
        ended: impl FnOnce() + Send + 'static,
    ) -> Result<JobInfo, ControlError> {
        let who = Principal::system();
        let spec = JobSpec {
            kind: JobKind::Start,
            target: r.clone(),
            actor: who.name.clone(),
            request: Some("woken by a request to its URL".to_owned()),
            steps: START_STEPS,
        };
        let this = self.clone();
        self.jobs
            .start(spec, move |ctx| async move {
                let done = this
                    .relaunch(
                        &ctx,
                        JobKind::Start,
                        &r,
                        &who.name,
                        Pick::Current,
                        AuditAction::EnvWake,
                        None,
                    )
                    .await;
                ended();
                done
            })
            .await
    }

    /// Launch a release that went live before, from its directory and the configuration it
    /// ran with, then move the environment's traffic to it (with `with_data`, after the schema
    /// went back: step `data`).
    #[allow(clippy::too_many_arguments)]
    async fn relaunch(
        &self,
        ctx: &JobCtx,
        kind: JobKind,
        r: &EnvRef,
        actor: &str,
        pick: Pick,
        action: AuditAction,
        with_data: Option<WithData>,
    ) -> Result<(), ControlError> {
        let _env_lock = self.lock_env(ctx, r).await?;
        // Read again: the environment may have changed while the job was queued.
        let env = self.env_row(r).await?;
        if kind == JobKind::Restart && self.routing.running(&key(r)).is_none() {
            return Err(self.not_running(&env));
        }
        // Stopped, started or deployed since the request asked: not to be started by it.
        if action == AuditAction::EnvWake && !env.sleeping {
            return Err(ControlError::Conflict(format!(
                "{r} is no longer asleep (stopped, started or deployed meanwhile): nothing to wake"
            )));
        }
        let release = self.pick(&env, pick).await?;
        ctx.set_release(release.id);
        let config: ReleaseConfig = serde_json::from_str(&release.config)
            .map_err(|e| ControlError::internal(format!("release {} config: {e}", release.id)))?;
        // A rollback brings back the configuration the release ran with; the others run with
        // what is set now.
        let snapshot = match pick {
            Pick::Rollback(_) => self.recorded_snapshot(release.id).await?,
            Pick::Current => None,
        };
        let l = Launch {
            r,
            env: &env,
            release_id: release.id,
            commit: &release.commit,
            dir: Path::new(&release.dir),
            config: &config,
            data: None,
            snapshot,
        };
        let launching = format!(
            "release {} ({}) without a build: {}",
            release.id,
            &release.commit[..12.min(release.commit.len())],
            config.run
        );
        match with_data {
            None => {
                let retire = (kind != JobKind::Start).then_some(2);
                self.go_live_steps(ctx, 0, &l, launching, action, actor, retire)
                    .await?;
            }
            Some(WithData::MigrateDown(command)) => {
                self.migrate_down(ctx, r, &env, &command).await?;
                self.go_live_steps(ctx, 1, &l, launching, action, actor, Some(3))
                    .await?;
            }
            Some(WithData::Restore(point)) => {
                let old = match self.data_row(&env).await? {
                    Some(row) => Some(self.generation(&env, &row)?),
                    None => None,
                };
                let n = old.as_ref().map_or(1, |g| g.n + 1);
                let new = self.restored(ctx, 0, &env, &env, &point, n).await?;
                ctx.output(&format!(
                    "schema and data restored to {} (every write since it is discarded)",
                    point.describe()
                ));
                let rel = ReleaseRef {
                    id: release.id,
                    commit: &release.commit,
                    dir: Path::new(&release.dir),
                    config: &config,
                };
                let on = OnNewData {
                    r,
                    env: &env,
                    rel: &rel,
                    new,
                    old,
                    origin: "restore",
                    from: Some(format!("{r} {}", point.describe())),
                    action,
                    first: 1,
                    migrate: false,
                };
                self.go_live_on_data(ctx, on, actor).await?;
            }
        }
        info!(app = %r.app, env = %r.env, release = release.id, kind = %kind, "release live again");
        Ok(())
    }

    /// Step `data` of a rollback with data: the live release's `migrate_down` on the
    /// environment's data, which it keeps.
    async fn migrate_down(
        &self,
        ctx: &JobCtx,
        r: &EnvRef,
        env: &EnvRow,
        command: &str,
    ) -> Result<(), ControlError> {
        let started = Instant::now();
        let Some(current) = env.current_release_id else {
            return Err(self.not_running(env));
        };
        let release = self.store.call(move |c| q::get_release(c, current)).await?;
        let config = config_of(&release)?;
        ctx.begin(
            0,
            format!("release {current}'s migrate_down `{command}` (the data is kept)"),
        );
        let Some(row) = self.data_row(env).await? else {
            return Err(ControlError::Conflict(format!(
                "{r} has no data to migrate down"
            )));
        };
        let gn = self.generation(env, &row)?;
        let rel = ReleaseRef {
            id: release.id,
            commit: &release.commit,
            dir: Path::new(&release.dir),
            config: &config,
        };
        self.data_task(ctx, r, env, &rel, &gn, command, "migrate_down", &[])
            .await?;
        ctx.output(&format!(
            "ran release {current}'s migrate_down instead of restoring a snapshot: the schema is reverted and the data kept"
        ));
        ctx.done(
            0,
            format!(
                "ran migrate_down `{command}` of release {current}: data kept, no snapshot restored"
            ),
            started.elapsed(),
        );
        Ok(())
    }

    /// The last steps of every job that runs a release already built: launch (step `first`,
    /// described by `launching`), go live (`first + 1`, audited as `action`), and drain and stop
    /// the instance replaced (as step `retire`, or quietly when the job has no such step).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn go_live_steps(
        &self,
        ctx: &JobCtx,
        first: usize,
        l: &Launch<'_>,
        launching: String,
        action: AuditAction,
        actor: &str,
        retire: Option<usize>,
    ) -> Result<(), ControlError> {
        let r = l.r;
        let started = Instant::now();
        ctx.begin(first, launching);
        let running = self.launch(l, ctx.until_cancelled()).await?;
        ctx.done(
            first,
            format!(
                "healthy on port {} in {:.1}s",
                running.instance.port(),
                started.elapsed().as_secs_f64()
            ),
            started.elapsed(),
        );
        if let Err(e) = ctx.commit() {
            running.instance.stop().await;
            return Err(e);
        }
        let started = Instant::now();
        let url = self.url(r);
        ctx.begin(first + 1, format!("{url} -> release {}", l.release_id));
        let audit = AuditEntry::new(actor, action).app(&r.app).env(&r.env);
        let previous = self.go_live(l, running, audit).await?;
        ctx.set_url(url.clone());
        ctx.done(
            first + 1,
            format!("{url} -> release {}", l.release_id),
            started.elapsed(),
        );
        match (retire, previous) {
            (Some(index), previous) => retire_step(self, ctx, r, index, previous).await,
            (None, Some(old)) => {
                self.retire(r, old).await;
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// The end of every job that gives an environment new data (seed, clone, sync, restore,
    /// reset, undo, rollback with data): the new generation made aside goes live under
    /// `on.rel`, through the same launch and go-live as a deploy (the generation recorded
    /// serving in the go-live's transaction), then the old one is removed. Any failure or
    /// cancel before go-live removes the new generation, and the old one keeps serving.
    pub(crate) async fn go_live_on_data(
        &self,
        ctx: &JobCtx,
        on: OnNewData<'_>,
        actor: &str,
    ) -> Result<(), ControlError> {
        let OnNewData {
            r,
            env,
            rel,
            new,
            old,
            origin,
            from,
            action,
            first,
            migrate,
        } = on;
        let live = async {
            self.reattach(env, &new).await?;
            let mut step = first;
            if migrate {
                let started = Instant::now();
                ctx.begin(step, "the release's migrate command");
                let detail = self.migrate(ctx, r, env, rel, &new).await?;
                ctx.done(step, detail, started.elapsed());
                step += 1;
            }
            let data = NewData {
                gn: new.clone(),
                origin: Origin {
                    kind: origin,
                    from,
                    at: now(),
                    job: Some(ctx.id()),
                },
            };
            let snapshot = match action {
                AuditAction::Rollback => self.recorded_snapshot(rel.id).await?,
                _ => None,
            };
            let l = Launch {
                r,
                env,
                release_id: rel.id,
                commit: rel.commit,
                dir: rel.dir,
                config: rel.config,
                data: Some(&data),
                snapshot,
            };
            let launching = format!(
                "release {} on {} generation {}: {}",
                rel.id,
                new.engine(),
                new.n,
                rel.config.run
            );
            self.go_live_steps(ctx, step, &l, launching, action, actor, Some(step + 2))
                .await
        };
        if let Err(e) = live.await {
            // Before go-live (or go-live itself failed): the new copy goes, the old one serves.
            self.remove_generation(&new).await;
            return Err(e);
        }
        if let Some(old) = old {
            self.remove_generation(&old).await;
        }
        Ok(())
    }
}
