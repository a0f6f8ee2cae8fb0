//! The production copy's reset and undo. `turnout data reset APP/COPY [--at TIME]` makes the
//! copy production as of a moment: production's data then (a fresh snapshot of production when
//! no moment is given) and the release production ran then, its build adopted like a
//! promotion; then a pinned `reset` snapshot of the copy is recorded in `data_resets`.
//! `turnout data undo APP/COPY` restores that snapshot and relaunches that release: the copy
//! is back exactly as the last reset left it. Both write the copy's next generation aside and
//! swap it in like every restore (`go_live_on_data`).
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tracing::info;
use turnout_data::postgres::backup::RecoveryTarget;
use turnout_model::{
    Action, AuditAction, EnvRef, JobInfo, JobKind, ResetRequest, Tier, format_timestamp,
};

use super::ControlPlane;
use super::backup_restore::{RestorePoint, config_of};
use super::data::ReleaseRef;
use super::jobs::{JobCtx, JobSpec};
use super::release_ops::OnNewData;
use crate::access::Principal;
use crate::error::ControlError;
use crate::store::backup::{self as bq, BackupKind, BackupRow, BackupState};
use crate::store::{AuditEntry, EnvRow, ReleaseRow, now, q};

const RESET_STEPS: &[&str] = &[
    "snapshot", "restore", "code", "migrate", "launch", "go-live", "retire", "pin",
];
const UNDO_STEPS: &[&str] = &["restore", "launch", "go-live", "retire"];

impl ControlPlane {
    /// `turnout data reset APP/COPY [--at TIME] [--from APP/ENV]`.
    pub async fn reset_data(
        self: &Arc<Self>,
        r: EnvRef,
        req: ResetRequest,
        who: &Principal,
    ) -> Result<JobInfo, ControlError> {
        let target = self.env_for(who, &r, Action::Restore).await?;
        if target.tier != Tier::ProductionCopy {
            return Err(ControlError::Invalid(format!(
                "{r} is {}, and only a production copy is reset to production (create one with `turnout env create {}/NAME --tier production-copy`); to put an environment's own data back, use `turnout backup restore {r}`",
                target.tier, r.app
            )));
        }
        let from = self.production_of(&r, req.from.as_deref()).await?;
        let source = self.env_for(who, &from, Action::Read).await?;
        // A moment asked for must have a snapshot now; "now" takes one in the job.
        let point = match &req.at {
            Some(at) => Some(self.restore_point(&source, Some(at), None).await?),
            None => None,
        };
        let spec = JobSpec {
            kind: JobKind::Restore,
            target: r.clone(),
            actor: who.name.clone(),
            request: Some(format!(
                "reset from {from} as of {}",
                point
                    .as_ref()
                    .map_or("now".to_owned(), RestorePoint::describe)
            )),
            steps: RESET_STEPS,
        };
        let (this, actor) = (self.clone(), who.name.clone());
        self.jobs
            .start(spec, move |ctx| async move {
                this.run_reset(&ctx, &from, &r, point, &actor).await
            })
            .await
    }

    /// The app's production environment (or `from`, which must be one).
    async fn production_of(&self, r: &EnvRef, from: Option<&str>) -> Result<EnvRef, ControlError> {
        if let Some(from) = from {
            let from: EnvRef = from.parse().map_err(|e: turnout_model::NameError| {
                ControlError::Invalid(format!("--from: {e}"))
            })?;
            if from.app != r.app {
                return Err(ControlError::Invalid(format!(
                    "{from} is an environment of another app than {r}"
                )));
            }
            let env = self.env_row(&from).await?;
            if env.tier != Tier::Production {
                return Err(ControlError::Invalid(format!(
                    "{from} is {}; a production copy is reset from a production environment",
                    env.tier
                )));
            }
            return Ok(from);
        }
        let app = r.app.clone();
        let prods: Vec<_> = self
            .store
            .call(move |c| q::list_envs(c, Some(&app)))
            .await?
            .into_iter()
            .filter(|e| e.tier == Tier::Production)
            .collect();
        match prods.as_slice() {
            [one] => Ok(EnvRef {
                app: r.app.clone(),
                env: one.name.clone(),
            }),
            [] => Err(ControlError::Conflict(format!(
                "{} has no production environment to reset {r} from",
                r.app
            ))),
            many => Err(ControlError::Invalid(format!(
                "{} has several production environments ({}); name one with --from",
                r.app,
                many.iter()
                    .map(|e| e.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    async fn run_reset(
        &self,
        ctx: &JobCtx,
        from: &EnvRef,
        to: &EnvRef,
        point: Option<RestorePoint>,
        actor: &str,
    ) -> Result<(), ControlError> {
        let _env_lock = self.lock_env(ctx, to).await?;
        let target = self.env_row(to).await?;
        self.identity(&target)?;
        let point = match point {
            Some(p) => {
                ctx.skip(0, format!("restoring to {}", p.describe()));
                p
            }
            None => {
                let started = Instant::now();
                ctx.begin(0, format!("a snapshot of {from} now"));
                let taken = {
                    // Production's own lock while its data is read (after the copy's: no job
                    // takes them the other way round).
                    let _prod = self.lock_env(ctx, from).await?;
                    let source = self.env_row(from).await?;
                    let label = format!("for the reset of {to}");
                    self.take_snapshot(ctx, &source, BackupKind::Manual, Some(label), false, actor)
                        .await?
                };
                ctx.done(0, format!("snapshot {}", taken.id), started.elapsed());
                RestorePoint {
                    point: taken.taken_at,
                    asked: taken.taken_at,
                    backup: taken,
                    target: RecoveryTarget::EndOfBackup,
                }
            }
        };
        let source = self.env_row(from).await?;
        let Some(release_id) = point.backup.release_id else {
            return Err(ControlError::Conflict(format!(
                "snapshot {} of {from} recorded no release, so {to} cannot run production's code of that moment",
                point.backup.id
            )));
        };
        let release = self
            .built_release(release_id, &format!("the reset of {to}"))
            .await?;
        let old = match self.data_row(&target).await? {
            Some(row) => Some(self.generation(&target, &row)?),
            None => None,
        };
        let n = old.as_ref().map_or(1, |g| g.n + 1);
        let new = self.restored(ctx, 1, &source, &target, &point, n).await?;
        let adopted = match self
            .adopt_build(ctx, 2, from, &release, &target, actor)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                self.remove_generation(&new).await;
                return Err(e);
            }
        };
        let rel = ReleaseRef {
            id: adopted.release_id,
            commit: &adopted.commit,
            dir: &adopted.dir,
            config: &adopted.config,
        };
        let on = OnNewData {
            r: to,
            env: &target,
            rel: &rel,
            new,
            old,
            origin: "reset",
            from: Some(format!("{from} as of {}", point.describe())),
            action: AuditAction::DataReset,
            first: 3,
            migrate: true,
        };
        if let Err(e) = self.go_live_on_data(ctx, on, actor).await {
            self.fail_release(actor, to, adopted.release_id, &e).await;
            return Err(e);
        }
        // What `data undo` returns to: the copy as this reset left it.
        let started = Instant::now();
        ctx.begin(7, "a pinned snapshot of the copy as the reset left it");
        let target = self.env_row(to).await?;
        let label = format!("reset to {from} as of {}", format_timestamp(point.point));
        let pinned = self
            .take_snapshot(ctx, &target, BackupKind::Reset, Some(label), true, actor)
            .await?;
        let (env_id, backup_id, release_id, target_at) =
            (target.id, pinned.id, adopted.release_id, point.point);
        let entry = AuditEntry::new(actor, AuditAction::DataReset)
            .app(&to.app)
            .env(&to.env)
            .change(
                None,
                Some(format!(
                    "pinned snapshot {backup_id} (release {release_id}), what `data undo` returns to"
                )),
            );
        self.store
            .mutate(entry, move |c, _| {
                bq::set_reset(c, env_id, backup_id, release_id, now(), target_at)
            })
            .await?;
        ctx.done(7, format!("snapshot {backup_id}"), started.elapsed());
        info!(app = %to.app, env = %to.env, from = %from, point = point.point, "production copy reset");
        Ok(())
    }

    /// `turnout data undo APP/COPY`.
    pub async fn undo_data(
        self: &Arc<Self>,
        r: EnvRef,
        who: &Principal,
    ) -> Result<JobInfo, ControlError> {
        let target = self.env_for(who, &r, Action::Restore).await?;
        if target.tier != Tier::ProductionCopy {
            return Err(ControlError::Invalid(format!(
                "{r} is {}; only a production copy is reset and undone",
                target.tier
            )));
        }
        let (backup, release) = self.last_reset(&target).await?;
        let spec = JobSpec {
            kind: JobKind::Restore,
            target: r.clone(),
            actor: who.name.clone(),
            request: Some(format!(
                "undo: back to snapshot {} and release {}, as the last reset left {r}",
                backup.id, release.id
            )),
            steps: UNDO_STEPS,
        };
        let (this, actor) = (self.clone(), who.name.clone());
        self.jobs
            .start(spec, move |ctx| async move {
                this.run_undo(&ctx, &r, &actor).await
            })
            .await
    }

    /// The pinned snapshot and the release the copy's last reset left.
    async fn last_reset(&self, target: &EnvRow) -> Result<(BackupRow, ReleaseRow), ControlError> {
        let r = format!("{}/{}", target.app, target.name);
        let env_id = target.id;
        let Some((backup_id, release_id)) =
            self.store.call(move |c| bq::get_reset(c, env_id)).await?
        else {
            return Err(ControlError::Conflict(format!(
                "{r} has not been reset yet, so there is nothing to undo; reset it with `turnout data reset {r}`"
            )));
        };
        let backup = self
            .store
            .call(move |c| bq::get(c, backup_id))
            .await?
            .filter(|b| b.state == BackupState::Ready)
            .ok_or_else(|| {
                ControlError::Conflict(format!(
                    "the snapshot {r}'s last reset left ({backup_id}) is gone; reset it again"
                ))
            })?;
        let release = self
            .store
            .call(move |c| q::get_release(c, release_id))
            .await?;
        if !tokio::fs::try_exists(&release.dir).await.unwrap_or(false) {
            return Err(ControlError::Conflict(format!(
                "release {release_id}, which {r}'s last reset ran, has no directory any more ({}); reset it again",
                release.dir
            )));
        }
        Ok((backup, release))
    }

    async fn run_undo(&self, ctx: &JobCtx, r: &EnvRef, actor: &str) -> Result<(), ControlError> {
        let _env_lock = self.lock_env(ctx, r).await?;
        let target = self.env_row(r).await?;
        self.identity(&target)?;
        let (backup, release) = self.last_reset(&target).await?;
        ctx.set_release(release.id);
        let point = RestorePoint {
            point: backup.taken_at,
            asked: backup.taken_at,
            backup,
            target: RecoveryTarget::EndOfBackup,
        };
        let old = match self.data_row(&target).await? {
            Some(row) => Some(self.generation(&target, &row)?),
            None => None,
        };
        let n = old.as_ref().map_or(1, |g| g.n + 1);
        let new = self.restored(ctx, 0, &target, &target, &point, n).await?;
        let config = match config_of(&release) {
            Ok(c) => c,
            Err(e) => {
                self.remove_generation(&new).await;
                return Err(e);
            }
        };
        let rel = ReleaseRef {
            id: release.id,
            commit: &release.commit,
            dir: Path::new(&release.dir),
            config: &config,
        };
        let on = OnNewData {
            r,
            env: &target,
            rel: &rel,
            new,
            old,
            origin: "undo",
            from: Some(format!("snapshot {} (the last reset)", point.backup.id)),
            action: AuditAction::DataUndo,
            first: 1,
            migrate: false,
        };
        self.go_live_on_data(ctx, on, actor).await?;
        info!(app = %r.app, env = %r.env, backup = point.backup.id, "production copy reset undone");
        Ok(())
    }
}
