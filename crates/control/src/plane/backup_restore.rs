//! Putting data back from backups: `turnout backup restore` (an environment's data, and when
//! asked its code, as of a moment or a snapshot, into itself or another environment of the
//! app), and the pieces the production copy's reset and undo (`reset.rs`), rollbacks with data
//! and drills share: which snapshot a moment reads (`restore_point`) and the restored
//! generation (`restored`).
//!
//! Every restore is a job that writes the target's data generation N+1 aside from the app's
//! backup repository (every chunk checked: a corrupted or missing one fails the job) and
//! swaps it in through `go_live_on_data`, like a clone: a failure or cancel leaves N serving
//! and nothing half-restored. A restore into production needs the caller's confirmation
//! (`yes`) after the API said how much newer data it discards.
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tracing::info;
use turnout_data::Engine;
use turnout_data::postgres::Cluster;
use turnout_data::postgres::backup::RecoveryTarget;
use turnout_data::sqlite::SqliteDb;
use turnout_model::{
    Action, AuditAction, EnvRef, JobInfo, JobKind, RestoreRequest, Tier, format_timestamp,
};

use super::ControlPlane;
use super::data::ReleaseRef;
use super::generation::{Db, Generation, JobProgress, step_error};
use super::jobs::{JobCtx, JobSpec};
use super::release_ops::OnNewData;
use super::when::{parse_time, span};
use crate::access::Principal;
use crate::app_file::ReleaseConfig;
use crate::error::ControlError;
use crate::store::backup::{self as bq, BackupRow, BackupState};
use crate::store::{EnvRow, ReleaseRow, now};

const RESTORE_STEPS: &[&str] = &["restore", "code", "migrate", "launch", "go-live", "retire"];

/// What a restore reads: a snapshot of `source`, and how far past it the data goes.
#[derive(Clone, Debug)]
pub(crate) struct RestorePoint {
    pub backup: BackupRow,
    /// The moment the restored data is as of (unix seconds): the snapshot's for SQLite or
    /// `--snapshot`, the moment asked for PostgreSQL's WAL replay.
    pub point: i64,
    /// The moment asked for (the snapshot's own time for `--snapshot`): `asked - point` is how
    /// much older the data is than asked (a drill's RPO).
    pub asked: i64,
    pub target: RecoveryTarget,
}

impl RestorePoint {
    /// The snapshot and the moment, for the job's output and its errors.
    pub fn describe(&self) -> String {
        let b = &self.backup;
        match self.target {
            RecoveryTarget::Time(_) => format!(
                "{} (PostgreSQL: snapshot {} of {} replayed up to it)",
                format_timestamp(self.point),
                b.id,
                format_timestamp(b.taken_at)
            ),
            RecoveryTarget::EndOfBackup => format!(
                "snapshot {} taken at {}",
                b.id,
                format_timestamp(b.taken_at)
            ),
        }
    }
}

/// Which code runs on the restored data.
#[derive(Clone, Debug)]
enum Code {
    /// The target's live release (the data's schema brought up by its migrate command).
    Live,
    /// The release the snapshot recorded.
    Recorded(ReleaseRow),
}

impl ControlPlane {
    /// `turnout backup restore APP/ENV (--at TIME | --snapshot ID) [--into APP/OTHER]
    /// [--with-code] [--yes]`.
    pub async fn restore_backup(
        self: &Arc<Self>,
        r: EnvRef,
        req: RestoreRequest,
        who: &Principal,
    ) -> Result<JobInfo, ControlError> {
        let to = match &req.into {
            Some(into) => {
                let to: EnvRef = into.parse().map_err(|e: turnout_model::NameError| {
                    ControlError::Invalid(format!("--into: {e}"))
                })?;
                if to.app != r.app {
                    return Err(ControlError::Invalid(format!(
                        "{to} is an environment of another app than {r}; a backup is restored within its app"
                    )));
                }
                to
            }
            None => r.clone(),
        };
        let (source, target) = if to == r {
            let env = self.env_for(who, &r, Action::Restore).await?;
            (env.clone(), env)
        } else {
            let target = self.env_for(who, &to, Action::Restore).await?;
            (self.env_for(who, &r, Action::Read).await?, target)
        };
        check_direction(&source, &target)?;
        let point = self
            .restore_point(&source, req.at.as_deref(), req.snapshot)
            .await?;
        self.check_engine(&point.backup, &target).await?;
        let code = self
            .restore_code(&point.backup, &target, req.with_code)
            .await?;
        if target.tier == Tier::Production && !req.yes {
            return Err(self.discards(&target, point.point, "restoring").await?);
        }
        let mut request = match to == r {
            true => format!("as of {}", point.describe()),
            false => format!("from {r} as of {}", point.describe()),
        };
        if req.with_code {
            request.push_str(", with its release");
        }
        let spec = JobSpec {
            kind: JobKind::Restore,
            target: to.clone(),
            actor: who.name.clone(),
            request: Some(request),
            steps: RESTORE_STEPS,
        };
        let (this, actor) = (self.clone(), who.name.clone());
        self.jobs
            .start(spec, move |ctx| async move {
                let done = this.run_restore(&ctx, &r, &to, point, code, &actor).await;
                if done.is_ok() {
                    this.follow_production(&to).await;
                }
                done
            })
            .await
    }

    async fn run_restore(
        &self,
        ctx: &JobCtx,
        from: &EnvRef,
        to: &EnvRef,
        point: RestorePoint,
        code: Code,
        actor: &str,
    ) -> Result<(), ControlError> {
        let _env_lock = self.lock_env(ctx, to).await?;
        // Read again: either may have changed while the job was queued.
        let (source, target) = (self.env_row(from).await?, self.env_row(to).await?);
        self.identity(&target)?;
        check_direction(&source, &target)?;
        self.check_engine(&point.backup, &target).await?;
        let old = match self.data_row(&target).await? {
            Some(row) => Some(self.generation(&target, &row)?),
            None => None,
        };
        let n = old.as_ref().map_or(1, |g| g.n + 1);
        let new = self.restored(ctx, 0, &source, &target, &point, n).await?;
        let adopted = async {
            let started = Instant::now();
            match &code {
                Code::Live => {
                    let release = self.live_row(&target).await?;
                    ctx.skip(
                        1,
                        format!("the live release {} runs on the data", release.id),
                    );
                    let config = config_of(&release)?;
                    Ok((release.id, release.commit, release.dir.into(), config))
                }
                Code::Recorded(release) if owns(self, &target, release) => {
                    ctx.done(
                        1,
                        format!("release {} as the snapshot recorded it", release.id),
                        started.elapsed(),
                    );
                    Ok((
                        release.id,
                        release.commit.clone(),
                        release.dir.clone().into(),
                        config_of(release)?,
                    ))
                }
                Code::Recorded(release) => {
                    let a = self
                        .adopt_build(ctx, 1, from, release, &target, actor)
                        .await?;
                    Ok((a.release_id, a.commit, a.dir, a.config))
                }
            }
        };
        let (release_id, commit, dir, config): (i64, String, std::path::PathBuf, ReleaseConfig) =
            match adopted.await {
                Ok(v) => v,
                Err(e) => {
                    self.remove_generation(&new).await;
                    return Err(e);
                }
            };
        ctx.set_release(release_id);
        let rel = ReleaseRef {
            id: release_id,
            commit: &commit,
            dir: &dir,
            config: &config,
        };
        let on = OnNewData {
            r: to,
            env: &target,
            rel: &rel,
            new,
            old,
            origin: "restore",
            from: Some(format!("{from} as of {}", point.describe())),
            action: AuditAction::BackupRestore,
            first: 2,
            migrate: true,
        };
        self.go_live_on_data(ctx, on, actor).await?;
        info!(app = %to.app, env = %to.env, backup = point.backup.id, point = point.point, "restored");
        Ok(())
    }

    /// The snapshot of `source` a restore reads: `snapshot`, or the newest taken at or before
    /// `at`. SQLite goes back to that snapshot; PostgreSQL replays its WAL up to `at`.
    pub(crate) async fn restore_point(
        &self,
        source: &EnvRow,
        at: Option<&str>,
        snapshot: Option<i64>,
    ) -> Result<RestorePoint, ControlError> {
        let r = format!("{}/{}", source.app, source.name);
        match (at, snapshot) {
            (Some(_), Some(_)) => Err(ControlError::Invalid(
                "give either --at TIME or --snapshot ID, not both".into(),
            )),
            (None, None) => Err(ControlError::Invalid(format!(
                "say what to restore: --at TIME (a moment, e.g. \"1 hour ago\") or --snapshot ID (see `turnout backup list {r}`)"
            ))),
            (None, Some(id)) => {
                let backup = self.store.call(move |c| bq::get(c, id)).await?;
                let backup = match backup {
                    Some(b) if b.env_id == source.id => b,
                    _ => {
                        return Err(ControlError::NotFound(format!(
                            "{r} has no snapshot {id}; see `turnout backup list {r}`"
                        )));
                    }
                };
                if backup.state != BackupState::Ready {
                    return Err(ControlError::Conflict(format!(
                        "snapshot {id} of {r} is not complete (it is being written, or failed); pick another in `turnout backup list {r}`"
                    )));
                }
                Ok(RestorePoint {
                    point: backup.taken_at,
                    asked: backup.taken_at,
                    backup,
                    target: RecoveryTarget::EndOfBackup,
                })
            }
            (Some(text), None) => {
                let at = parse_time(text, jiff::Timestamp::now())?;
                let (env_id, secs) = (source.id, at.as_second());
                let found = self
                    .store
                    .call(move |c| bq::newest_at_or_before(c, env_id, secs))
                    .await?;
                let Some(backup) = found else {
                    let oldest = self
                        .store
                        .call(move |c| bq::list(c, env_id))
                        .await?
                        .into_iter()
                        .filter(|b| b.state == BackupState::Ready)
                        .map(|b| b.taken_at)
                        .min();
                    return Err(ControlError::Conflict(match oldest {
                        Some(t) => format!(
                            "{r} has no snapshot at or before {}; its oldest is of {}: restore to that moment or later",
                            format_timestamp(secs),
                            format_timestamp(t)
                        ),
                        None => format!(
                            "{r} has no snapshot yet; take one with `turnout backup create {r}`"
                        ),
                    }));
                };
                Ok(match backup.engine {
                    Engine::Sqlite => RestorePoint {
                        point: backup.taken_at,
                        asked: secs,
                        backup,
                        target: RecoveryTarget::EndOfBackup,
                    },
                    Engine::Postgres => {
                        // Replay starts where a base backup ended, never before: the newest
                        // one complete by the moment (an older one serves a moment inside a
                        // newer one's copy).
                        let complete = self
                            .store
                            .call(move |c| bq::list(c, env_id))
                            .await?
                            .into_iter()
                            .find(|b| {
                                b.state == BackupState::Ready
                                    && b.completed_at.unwrap_or(b.taken_at) <= secs
                            });
                        let Some(backup) = complete else {
                            return Err(ControlError::Conflict(format!(
                                "{r} has no snapshot complete by {}: snapshot {} was still being taken then; restore to {} or later",
                                format_timestamp(secs),
                                backup.id,
                                format_timestamp(backup.completed_at.unwrap_or(backup.taken_at))
                            )));
                        };
                        RestorePoint {
                            point: secs,
                            asked: secs,
                            backup,
                            target: RecoveryTarget::Time(at.as_microsecond()),
                        }
                    }
                })
            }
        }
    }

    /// Refuse a snapshot of another engine than the target's data.
    async fn check_engine(&self, backup: &BackupRow, target: &EnvRow) -> Result<(), ControlError> {
        if let Some(row) = self.data_row(target).await?
            && row.engine != backup.engine
        {
            return Err(ControlError::Conflict(format!(
                "snapshot {} is {} data and {}/{}'s is {}: Turnout never converts data between engines",
                backup.id, backup.engine, target.app, target.name, row.engine
            )));
        }
        Ok(())
    }

    /// The code a restore runs: the recorded release (`with_code`, its build still there) or
    /// the target's live release (which it must have).
    async fn restore_code(
        &self,
        backup: &BackupRow,
        target: &EnvRow,
        with_code: bool,
    ) -> Result<Code, ControlError> {
        if !with_code {
            self.live_row(target).await?;
            return Ok(Code::Live);
        }
        let Some(id) = backup.release_id else {
            return Err(ControlError::Conflict(format!(
                "snapshot {} recorded no release (none was live when it was taken); restore without --with-code",
                backup.id
            )));
        };
        let what = format!("--with-code (snapshot {})", backup.id);
        Ok(Code::Recorded(self.built_release(id, &what).await?))
    }

    /// Why a production restore waits for `--yes`: how much newer data it discards.
    pub(crate) async fn discards(
        &self,
        target: &EnvRow,
        point: i64,
        doing: &str,
    ) -> Result<ControlError, ControlError> {
        let env_id = target.id;
        let newer = self
            .store
            .call(move |c| bq::list(c, env_id))
            .await?
            .into_iter()
            .filter(|b| b.state == BackupState::Ready && b.taken_at > point)
            .count();
        let r = format!("{}/{}", target.app, target.name);
        Ok(ControlError::Conflict(format!(
            "{r} is production: {doing} it to {} discards every write made to it since, {} of newer data ({newer} newer snapshot{} of it stay kept, to go forward again). Confirm with --yes",
            format_timestamp(point),
            span(now() - point),
            if newer == 1 { "" } else { "s" },
        )))
    }

    /// Step `step`: the data of `point` written as generation `n` of `target` (storage
    /// included), every chunk checked; for PostgreSQL the source's WAL made to reach now first
    /// when the snapshot is of its serving cluster. Nothing is left when it fails.
    pub(crate) async fn restored(
        &self,
        ctx: &JobCtx,
        step: usize,
        source: &EnvRow,
        target: &EnvRow,
        point: &RestorePoint,
        n: i64,
    ) -> Result<Generation, ControlError> {
        let started = Instant::now();
        let backup = &point.backup;
        ctx.begin(step, format!("{} into generation {n}", point.describe()));
        let repo = self.backup_repo(&source.app).await?;
        let (progress, cancel) = (JobProgress::new(ctx), ctx.cancel_token());
        if let (RecoveryTarget::Time(_), Some(stream)) = (point.target, &backup.wal_stream)
            && let Some(row) = self.data_row(source).await?
            && row.generation == backup.generation
            && let Db::Postgres(live) = self.generation(source, &row)?.db
        {
            // The WAL must reach the moment asked: the live cluster's current segment
            // finished and archived, then ingested.
            live.flush_wal(&cancel)
                .await
                .map_err(step_error("restore"))?;
            live.ingest_wal(&repo, stream, &cancel)
                .await
                .map_err(step_error("restore"))?;
        }
        let (app, name) = (&target.app, &target.name);
        self.prepare_env_dirs(target).await?;
        self.remove_leftover(target, n).await;
        let dir = self.home.generation_dir(app, name, n);
        let owner = self.owner(target);
        let d2 = dir.clone();
        super::isolation::blocking(move || super::isolation::make_dir(&d2, 0o700, owner)).await?;
        let storage = self.home.storage_dir(app, name, n);
        let restored = async {
            let db = match backup.engine {
                Engine::Sqlite => {
                    let to = SqliteDb::at(self.home.sqlite_path(app, name, n));
                    repo.restore_sqlite(&backup.repo_name, &to, &storage, &progress, &cancel)
                        .await
                        .map_err(step_error("restore"))?;
                    Db::Sqlite(to)
                }
                Engine::Postgres => {
                    let (Some(was), Some(stream)) = (&backup.cluster, &backup.wal_stream) else {
                        return Err(ControlError::internal(format!(
                            "snapshot {} is PostgreSQL but recorded no cluster or WAL stream",
                            backup.id
                        )));
                    };
                    let (sys, spec, network) = self.cluster_spec(target, n).await?;
                    let cluster = Cluster::restore_from(
                        &repo,
                        &backup.repo_name,
                        stream,
                        point.target,
                        was,
                        sys,
                        spec,
                        &network,
                        &storage,
                        &progress,
                        &cancel,
                    )
                    .await
                    .map_err(step_error("restore"))?;
                    Db::Postgres(cluster)
                }
            };
            let gn = Generation {
                n,
                dir: dir.clone(),
                storage: storage.clone(),
                db,
            };
            self.hand_over_data(target, &gn).await?;
            Ok::<_, ControlError>(gn)
        };
        match restored.await {
            Ok(gn) => {
                ctx.done(
                    step,
                    format!(
                        "{} restored into generation {n} (data as of {})",
                        point.describe(),
                        format_timestamp(point.point)
                    ),
                    started.elapsed(),
                );
                Ok(gn)
            }
            Err(e) => {
                self.remove_leftover(target, n).await;
                Err(e)
            }
        }
    }
}

/// Data never flows into production from elsewhere: production is restored only from its own
/// backups.
fn check_direction(source: &EnvRow, target: &EnvRow) -> Result<(), ControlError> {
    if target.tier == Tier::Production && source.id != target.id {
        return Err(ControlError::Conflict(format!(
            "refused: {}/{} is production, and is restored only from its own backups, never from {}/{}'s",
            target.app, target.name, source.app, source.name
        )));
    }
    Ok(())
}

/// Whether `release` is one of `target`'s own (its directory under the environment's).
fn owns(plane: &ControlPlane, target: &EnvRow, release: &ReleaseRow) -> bool {
    Path::new(&release.dir).starts_with(plane.home.releases_dir(&target.app, &target.name))
}

pub(crate) fn config_of(release: &ReleaseRow) -> Result<ReleaseConfig, ControlError> {
    serde_json::from_str(&release.config)
        .map_err(|e| ControlError::internal(format!("release {} config: {e}", release.id)))
}
