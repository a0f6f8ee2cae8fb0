//! `turnout backup create|list|show|verify|delete|policy`: snapshots of an environment's data
//! into its app's repository, on demand and on the backup schedule the scheduler runs, and the
//! retention that deletes what the schedule no longer wants.
//!
//! - One repository per app (`<home>/backups/<app>`, the daemon's alone), opened once and
//!   cached here; a snapshot is recorded `writing` in the catalog (`backups`), written under
//!   the name `b<ID>`, then `ready` with its sizes (or `failed`).
//! - The schedule of an environment is the one set with `backup policy` (CLI), else its live
//!   release's `[backup] schedule`, else its tier's default (production and staging the
//!   exponential schedule, others none). On each pass the scheduler starts one `backup` job for
//!   an environment whose newest ready snapshot is older than the schedule's smallest period
//!   (one catch-up snapshot after an outage, never a burst; none while one is queued or
//!   running), applies `retention::keep` and deletes what it no longer keeps, and for
//!   PostgreSQL moves the archived WAL into the repository (pruned up to the oldest kept base
//!   backup's start), or discards it for an environment without a schedule.
//! - Retention never deletes a pinned snapshot, nor one being written or verified; an
//!   environment without a schedule keeps every snapshot until it is deleted by hand.
//! - `verify` restores a snapshot into a scratch area (SQLite: a file under
//!   `<home>/backups/.scratch`, checked by `PRAGMA integrity_check`; PostgreSQL: a scratch
//!   cluster beside the environment's, in its network, queried, then removed), reading and
//!   checking every chunk on the way.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};
use turnout_data::backup::Repo;
use turnout_data::backup::retention::{self, Candidate};
use turnout_data::postgres::backup::WalRange;
use turnout_data::{DataError, Engine};
use turnout_model::plan::format_bytes;
use turnout_model::{
    Action, AppName, AuditAction, BackupInfo, BackupList, CreateBackup, DrillInfo, EnvRef, JobInfo,
    JobKind, SetBackupPolicy, format_timestamp,
};

use super::ControlPlane;
use super::generation::{Db, JobProgress, data_error, step_error};
use super::jobs::{JobCtx, JobSpec};
use crate::access::Principal;
use crate::app_file::{ReleaseConfig, parse_schedule, show_period, tier_default};
use crate::error::ControlError;
use crate::store::backup::{self as bq, BackupKind, BackupRow, BackupState, NewBackup};
use crate::store::{AuditEntry, EnvRow, now, q};

/// Who the scheduler's snapshots and deletions run as, named for the audit log.
pub(super) const ACTOR: &str = "turnout (backup schedule)";
/// Who retention's deletions are recorded as.
pub(super) const RETENTION: &str = "retention";
const BACKUP_STEPS: &[&str] = &["snapshot", "retention"];
/// The longest label a snapshot may have.
pub const MAX_LABEL: usize = 200;

/// The control plane's backup state: each app's repository, opened once, and one write into
/// it at a time (a snapshot, a WAL ingest, a deletion): the scheduler's own writes skip a
/// repository that is busy and come back at its next pass.
///
/// Reads of the repository (`backup list`'s sizes and WAL window, a verification) also take
/// that lock, so they never overlap a write: the repository's connections are opened per call,
/// and a read opening one while a snapshot writes made the snapshot fail ("database is
/// locked"). `backup list` answers from what it last read while a write runs.
#[derive(Default)]
pub(crate) struct Backups {
    repos: tokio::sync::Mutex<HashMap<AppName, Repo>>,
    pub(super) writes: super::keyed::KeyedLocks<AppName>,
    /// Per app: the repository's size and its WAL streams' ranges, as last read.
    seen: std::sync::Mutex<HashMap<AppName, Seen>>,
}

/// What `backup list` last read of an app's repository.
#[derive(Default)]
struct Seen {
    bytes: u64,
    ranges: HashMap<String, WalRange>,
}

/// An environment's schedule in force and where it comes from.
pub(crate) struct Schedule {
    pub periods: Vec<u64>,
    pub from: &'static str,
}

impl Schedule {
    pub(super) fn resolve(
        tier: turnout_model::Tier,
        policy: Option<Vec<u64>>,
        config: Option<&ReleaseConfig>,
    ) -> Schedule {
        if let Some(periods) = policy {
            return Schedule {
                periods,
                from: "cli",
            };
        }
        if let Some(periods) = config.and_then(|c| c.backup.schedule.clone()) {
            return Schedule {
                periods,
                from: "turnout.toml",
            };
        }
        Schedule {
            periods: tier_default(tier),
            from: "tier default",
        }
    }
}

pub(super) fn stream_of(env: &EnvRow, generation: i64) -> String {
    format!("{}-g{generation}", env.name)
}

fn backup_info(env: &str, row: &BackupRow, kept: bool) -> BackupInfo {
    BackupInfo {
        id: row.id,
        env: env.to_owned(),
        engine: row.engine.as_str().to_owned(),
        generation: row.generation,
        kind: row.kind.as_str().to_owned(),
        label: row.label.clone(),
        pinned: row.pinned,
        state: row.state.as_str().to_owned(),
        taken_at: format_timestamp(row.taken_at),
        completed_at: row.completed_at.map(format_timestamp),
        release_id: row.release_id,
        commit: row.commit.clone(),
        logical_bytes: row.logical_bytes,
        stored_bytes: row.stored_bytes,
        verified_at: row.verified_at.map(format_timestamp),
        verify_error: row.verify_error.clone(),
        kept,
        created_by: row.created_by.clone(),
    }
}

/// Which of `rows` retention keeps at `now` under `periods` (an empty schedule keeps all).
pub(super) fn kept_ids(periods: &[u64], rows: &[BackupRow], now: i64) -> Vec<i64> {
    if periods.is_empty() {
        return rows.iter().map(|r| r.id).collect();
    }
    let candidates: Vec<Candidate> = rows
        .iter()
        .filter(|r| r.state != BackupState::Failed)
        .map(|r| Candidate {
            id: r.id,
            at: r.taken_at,
            pinned: r.pinned,
            busy: r.state == BackupState::Writing || r.verifying,
        })
        .collect();
    retention::keep(periods, &candidates, now)
}

/// How far back a moment can be restored, and to within what, in words.
fn bound_in_words(periods: &[u64]) -> String {
    if periods.is_empty() {
        return "no backup schedule: only the snapshots listed can be restored".to_owned();
    }
    let parts: Vec<String> = retention::error_bound(periods)
        .into_iter()
        .map(|(age, error)| {
            format!(
                "any moment of the last {} to within {}",
                show_period(age),
                show_period(error)
            )
        })
        .collect();
    parts.join("; ")
}

impl ControlPlane {
    /// The app's backup repository (opened once, then shared).
    pub(crate) async fn backup_repo(&self, app: &AppName) -> Result<Repo, ControlError> {
        let mut repos = self.backups.repos.lock().await;
        if let Some(repo) = repos.get(app) {
            return Ok(repo.clone());
        }
        let dir = self.home.backup_repo(app);
        if let Some(parent) = dir.parent().map(Path::to_path_buf) {
            super::isolation::blocking(move || super::isolation::make_dir(&parent, 0o700, None))
                .await?;
        }
        let repo = Repo::open(dir).await.map_err(data_error)?;
        repos.insert(app.clone(), repo.clone());
        Ok(repo)
    }

    /// Takes a snapshot of `env`'s current data generation inside the running job `ctx` (the
    /// caller reports the step; a job that changes the data holds the environment's lock, a
    /// backup job does not): recorded `writing`, written,
    /// then `ready` with its sizes (or `failed`, its partial content removed); audited as
    /// `backup.create` with `actor`. The live release is recorded with it.
    pub(crate) async fn take_snapshot(
        &self,
        ctx: &JobCtx,
        env: &EnvRow,
        kind: BackupKind,
        label: Option<String>,
        pinned: bool,
        actor: &str,
    ) -> Result<BackupRow, ControlError> {
        let r = format!("{}/{}", env.app, env.name);
        let Some(data) = self.data_row(env).await? else {
            return Err(ControlError::Conflict(format!(
                "{r} has no data yet, so there is nothing to back up; deploy it first (`turnout deploy {r}`)"
            )));
        };
        let gn = self.generation(env, &data)?;
        let repo = self.backup_repo(&env.app).await?;
        let commit = match env.current_release_id {
            Some(id) => Some(
                self.store
                    .call(move |c| q::get_release(c, id))
                    .await?
                    .commit,
            ),
            None => None,
        };
        let stream = matches!(gn.db, Db::Postgres(_)).then(|| stream_of(env, gn.n));
        let new = NewBackup {
            env_id: env.id,
            engine: gn.engine(),
            generation: gn.n,
            repo_name: String::new(),
            kind,
            label: label.clone(),
            pinned,
            taken_at: now(),
            release_id: env.current_release_id,
            commit,
            cluster: gn.cluster_spec(),
            wal_stream: stream.clone(),
            job_id: Some(ctx.id()),
            created_by: actor.to_owned(),
        };
        let what = format!(
            "{} generation {} ({}{})",
            gn.engine(),
            gn.n,
            kind.as_str(),
            if pinned { ", pinned" } else { "" }
        );
        let entry = AuditEntry::new(actor, AuditAction::BackupCreate)
            .app(&env.app)
            .env(&env.name)
            .change(None, Some(format!("writing a snapshot of {what}")));
        let id = self
            .store
            .mutate(entry, move |c, _| bq::insert(c, &new))
            .await?;
        let name = format!("b{id}");
        let progress = JobProgress::new(ctx);
        let cancel = ctx.cancel_token();
        let writing = ctx.guard(self.backups.writes.lock(&env.app)).await;
        let written = async {
            let _one = writing.map_err(|_| DataError::Cancelled)?;
            match &gn.db {
                Db::Sqlite(db) => {
                    let stats = repo
                        .snapshot_sqlite(&name, db, &gn.storage, &progress, &cancel)
                        .await?;
                    Ok::<_, DataError>((stats.logical_bytes, stats.stored_bytes, None))
                }
                Db::Postgres(cluster) => {
                    let base = cluster
                        .snapshot_into(&repo, &name, &gn.storage, &progress, &cancel)
                        .await?;
                    // The WAL up to the backup's end (archived before `snapshot_into` returns)
                    // into the repository at once, so the snapshot restores on its own.
                    let stream = stream.clone().unwrap_or_default();
                    let wal = cluster.ingest_wal(&repo, &stream, &cancel).await?;
                    Ok((
                        base.stats.logical_bytes,
                        base.stats.stored_bytes + wal.stored_bytes,
                        Some(base.start_segment),
                    ))
                }
            }
        };
        let at = now();
        match written.await {
            Ok((logical, stored, wal_start)) => {
                let entry = AuditEntry::new(actor, AuditAction::BackupCreate)
                    .app(&env.app)
                    .env(&env.name)
                    .change(
                        Some(format!("writing backup {id}")),
                        Some(format!(
                            "backup {id} of {what}: {} of data, {} new in the repository",
                            format_bytes(logical),
                            format_bytes(stored)
                        )),
                    );
                self.store
                    .mutate(entry, move |c, _| {
                        bq::mark_ready(c, id, logical, stored, wal_start.as_deref(), at)
                    })
                    .await?;
                info!(env = %r, backup = id, "snapshot taken");
                self.store
                    .call(move |c| bq::get(c, id))
                    .await?
                    .ok_or_else(|| ControlError::internal(format!("backup {id} vanished")))
            }
            Err(e) => {
                if let Ok(true) = repo.contains(&name).await
                    && let Err(e) = repo.delete(&name).await
                {
                    warn!(env = %r, backup = id, error = %e, "could not remove a failed snapshot's content");
                }
                let entry = AuditEntry::new(actor, AuditAction::BackupCreate)
                    .app(&env.app)
                    .env(&env.name)
                    .change(Some(format!("writing backup {id}")), None);
                self.store
                    .mutate_failed(entry, e.to_string(), move |c| bq::mark_failed(c, id, at))
                    .await?;
                Err(step_error("snapshot")(e))
            }
        }
    }

    /// `turnout backup create APP/ENV [--label] [--pin]`: a snapshot now (a job).
    pub async fn create_backup(
        self: &Arc<Self>,
        r: EnvRef,
        req: CreateBackup,
        who: &Principal,
    ) -> Result<JobInfo, ControlError> {
        let env = self.env_for(who, &r, Action::Config).await?;
        let label = match req.label {
            Some(l) if l.trim().is_empty() => None,
            Some(l) if l.chars().count() > MAX_LABEL || l.chars().any(char::is_control) => {
                return Err(ControlError::Invalid(format!(
                    "--label has 1 to {MAX_LABEL} characters and no control characters"
                )));
            }
            other => other,
        };
        if self.data_row(&env).await?.is_none() {
            return Err(ControlError::Conflict(format!(
                "{r} has no data yet, so there is nothing to back up; deploy it first (`turnout deploy {r}`)"
            )));
        }
        self.start_backup_job(r, BackupKind::Manual, label, req.pin, &who.name)
            .await
    }

    pub(super) async fn start_backup_job(
        self: &Arc<Self>,
        r: EnvRef,
        kind: BackupKind,
        label: Option<String>,
        pinned: bool,
        actor: &str,
    ) -> Result<JobInfo, ControlError> {
        let spec = JobSpec {
            kind: JobKind::Backup,
            target: r.clone(),
            actor: actor.to_owned(),
            request: label.clone(),
            steps: BACKUP_STEPS,
        };
        let (this, actor) = (self.clone(), actor.to_owned());
        self.jobs
            .start(spec, move |ctx| async move {
                // Not under the environment's lock: a stop, a deploy or a data job is never
                // refused or held up because a snapshot runs (a generation replaced meanwhile
                // fails this snapshot, and the schedule takes the next one).
                ctx.running();
                let env = this.env_row(&r).await?;
                let started = Instant::now();
                ctx.begin(0, format!("{r}'s data into the app's repository"));
                let row = this
                    .take_snapshot(&ctx, &env, kind, label, pinned, &actor)
                    .await?;
                ctx.done(
                    0,
                    format!(
                        "backup {}: {} of data, {} new in the repository",
                        row.id,
                        format_bytes(row.logical_bytes),
                        format_bytes(row.stored_bytes)
                    ),
                    started.elapsed(),
                );
                let started = Instant::now();
                ctx.begin(1, "the schedule's retention");
                let schedule = this.schedule_of(&env).await?;
                if schedule.periods.is_empty() {
                    ctx.skip(1, "no backup schedule: snapshots are kept until deleted");
                    return Ok(());
                }
                let rows = this.store.call(move |c| bq::list(c, env.id)).await?;
                let deleted = this
                    .apply_retention(&env, &rows, &schedule.periods, true)
                    .await;
                ctx.done(
                    1,
                    format!("{} kept, {deleted} deleted", rows.len() - deleted),
                    started.elapsed(),
                );
                Ok(())
            })
            .await
    }

    /// The schedule in force for `env` and where it comes from.
    pub(crate) async fn schedule_of(&self, env: &EnvRow) -> Result<Schedule, ControlError> {
        let id = env.id;
        let policy = self.store.call(move |c| bq::policy(c, id)).await?;
        let config = match env.current_release_id {
            Some(rid) => {
                let release = self.store.call(move |c| q::get_release(c, rid)).await?;
                serde_json::from_str::<ReleaseConfig>(&release.config).ok()
            }
            None => None,
        };
        Ok(Schedule::resolve(
            env.tier,
            policy.map(|p| p.schedule),
            config.as_ref(),
        ))
    }

    /// `turnout backup list APP/ENV`.
    pub async fn list_backups(
        &self,
        r: EnvRef,
        who: &Principal,
    ) -> Result<BackupList, ControlError> {
        let env = self.env_for(who, &r, Action::Read).await?;
        self.backup_list(&env).await
    }

    pub(super) async fn backup_list(&self, env: &EnvRow) -> Result<BackupList, ControlError> {
        let name = format!("{}/{}", env.app, env.name);
        let id = env.id;
        let rows = self.store.call(move |c| bq::list(c, id)).await?;
        let drills = self.store.call(move |c| bq::drills(c, id)).await?;
        let schedule = self.schedule_of(env).await?;
        let now = now();
        let kept = kept_ids(&schedule.periods, &rows, now);
        let repo = self.backup_repo(&env.app).await?;
        let stream = match self.data_row(env).await? {
            Some(data) if data.engine == Engine::Postgres => Some(stream_of(env, data.generation)),
            _ => None,
        };
        let (repository_bytes, range) = self.repo_state(&env.app, &repo, stream.as_deref()).await?;
        let mut error_bound = bound_in_words(&schedule.periods);
        let mut pitr_window = None;
        if let Some(stream) = stream {
            let oldest = rows
                .iter()
                .filter(|b| {
                    b.state == BackupState::Ready && b.wal_stream.as_deref() == Some(&stream)
                })
                .map(|b| b.taken_at)
                .min();
            if let (Some(from), Some(range)) = (oldest, range)
                && range.last_archived_at >= from
            {
                let window = (
                    format_timestamp(from),
                    format_timestamp(range.last_archived_at),
                );
                error_bound = format!(
                    "any moment from {} to {} (the WAL window); {error_bound}",
                    window.0, window.1
                );
                pitr_window = Some(window);
            }
        }
        Ok(BackupList {
            env: name.clone(),
            schedule: schedule.periods.iter().map(|p| show_period(*p)).collect(),
            schedule_from: schedule.from.to_owned(),
            error_bound,
            pitr_window,
            repository_bytes,
            backups: rows
                .iter()
                .map(|b| {
                    let keep = b.pinned || (b.state != BackupState::Failed && kept.contains(&b.id));
                    backup_info(&name, b, keep)
                })
                .collect(),
            drills: drills
                .into_iter()
                .map(|d| DrillInfo {
                    id: d.id,
                    job: d.job_id,
                    target_at: format_timestamp(d.target_at),
                    backup: d.backup_id,
                    started_at: format_timestamp(d.started_at),
                    finished_at: d.finished_at.map(format_timestamp),
                    state: d.state,
                    rto_ms: d.rto_ms.and_then(|v| u64::try_from(v).ok()),
                    rpo_secs: d.rpo_secs.and_then(|v| u64::try_from(v).ok()),
                    error: d.error,
                })
                .collect(),
        })
    }

    /// The repository's size on disk and WAL stream `stream`'s range: read now unless a write
    /// runs, else as last read.
    pub(super) async fn repo_state(
        &self,
        app: &AppName,
        repo: &Repo,
        stream: Option<&str>,
    ) -> Result<(u64, Option<WalRange>), ControlError> {
        let Some(_one) = self.backups.writes.try_lock(app) else {
            let seen = self.backups.seen.lock().unwrap_or_else(|p| p.into_inner());
            let Some(last) = seen.get(app) else {
                return Ok((0, None));
            };
            return Ok((last.bytes, stream.and_then(|s| last.ranges.get(s).cloned())));
        };
        let bytes = repo.usage().await.map_err(data_error)?.disk_bytes;
        let range = match stream {
            Some(s) => repo.wal_range(s).await.map_err(data_error)?,
            None => None,
        };
        let mut seen = self.backups.seen.lock().unwrap_or_else(|p| p.into_inner());
        let entry = seen.entry(app.clone()).or_default();
        entry.bytes = bytes;
        if let (Some(s), Some(r)) = (stream, &range) {
            entry.ranges.insert(s.to_owned(), r.clone());
        }
        Ok((bytes, range))
    }

    /// Snapshot `id` and its environment, if `who` may do `action` there.
    pub(super) async fn backup_for(
        &self,
        id: i64,
        who: &Principal,
        action: Action,
    ) -> Result<(BackupRow, EnvRow), ControlError> {
        let missing =
            || ControlError::NotFound(format!("no backup {id}; see `turnout backup list APP/ENV`"));
        let row = self
            .store
            .call(move |c| bq::get(c, id))
            .await?
            .ok_or_else(missing)?;
        let env_id = row.env_id;
        let (app, name) = self
            .store
            .call(move |c| bq::env_of(c, env_id))
            .await?
            .ok_or_else(missing)?;
        let env = self
            .env_for(who, &EnvRef { app, env: name }, action)
            .await?;
        Ok((row, env))
    }

    /// `turnout backup show ID`.
    pub async fn show_backup(&self, id: i64, who: &Principal) -> Result<BackupInfo, ControlError> {
        let (row, env) = self.backup_for(id, who, Action::Read).await?;
        let schedule = self.schedule_of(&env).await?;
        let env_id = env.id;
        let rows = self.store.call(move |c| bq::list(c, env_id)).await?;
        let kept = kept_ids(&schedule.periods, &rows, now());
        let keep = row.pinned || (row.state != BackupState::Failed && kept.contains(&row.id));
        Ok(backup_info(
            &format!("{}/{}", env.app, env.name),
            &row,
            keep,
        ))
    }

    /// `turnout backup delete ID [--force]`: refused for a pinned snapshot without `force`,
    /// and for one being written or verified.
    pub async fn delete_backup(
        &self,
        id: i64,
        force: bool,
        who: &Principal,
    ) -> Result<BackupInfo, ControlError> {
        let (_, env) = self.backup_for(id, who, Action::Restore).await?;
        let entry = AuditEntry::new(&who.name, AuditAction::BackupDelete)
            .app(&env.app)
            .env(&env.name)
            .change(Some(format!("backup {id}")), None);
        let _one = self.backups.writes.lock(&env.app).await;
        let row = self
            .store
            .mutate(entry, move |c, _| bq::remove(c, id, force))
            .await?;
        self.forget_snapshot(&env, &row).await;
        Ok(backup_info(
            &format!("{}/{}", env.app, env.name),
            &row,
            false,
        ))
    }

    /// An environment's snapshots, read before the environment is deleted (their rows go with
    /// it), for `remove_backups`.
    pub(crate) async fn backups_of(&self, env: &EnvRow) -> Result<Vec<BackupRow>, ControlError> {
        let id = env.id;
        self.store.call(move |c| bq::list(c, id)).await
    }

    /// After an environment's rows went: its snapshots' content and WAL streams, so a deleted
    /// environment leaves nothing in its app's repository.
    pub(crate) async fn remove_backups(&self, env: &EnvRow, rows: Vec<BackupRow>) {
        if rows.is_empty() {
            return;
        }
        let _one = self.backups.writes.lock(&env.app).await;
        for row in &rows {
            self.forget_snapshot(env, row).await;
        }
    }

    /// After an app's rows went: its whole repository.
    pub(crate) async fn remove_repository(&self, app: &AppName) {
        let _one = self.backups.writes.lock(app).await;
        self.backups.repos.lock().await.remove(app);
        super::remove_dir(&self.home.backup_repo(app)).await;
    }

    /// After a snapshot's row went: its content, and its WAL stream when nothing else needs it
    /// (the caller holds the repository's write lock).
    pub(super) async fn forget_snapshot(&self, env: &EnvRow, row: &BackupRow) {
        let Ok(repo) = self.backup_repo(&env.app).await else {
            return;
        };
        match repo.contains(&row.repo_name).await {
            Ok(true) => {
                if let Err(e) = repo.delete(&row.repo_name).await {
                    warn!(app = %env.app, backup = row.id, error = %e, "could not remove a deleted snapshot's content");
                }
            }
            Ok(false) => {}
            Err(e) => {
                warn!(app = %env.app, backup = row.id, error = %e, "could not read the backup repository")
            }
        }
        let Some(stream) = row.wal_stream.clone() else {
            return;
        };
        let current = match self.data_row(env).await {
            Ok(Some(d)) => stream_of(env, d.generation) == stream,
            _ => false,
        };
        let s2 = stream.clone();
        let in_use = self
            .store
            .call(move |c| bq::stream_in_use(c, &s2))
            .await
            .unwrap_or(true);
        if !current
            && !in_use
            && let Err(e) = repo.prune_wal(&stream, None).await
        {
            warn!(app = %env.app, stream = %stream, error = %e, "could not remove a WAL stream no snapshot needs");
        }
    }

    /// `turnout backup policy APP/ENV --schedule …`: the environment's schedule from now on.
    pub async fn set_backup_policy(
        &self,
        r: EnvRef,
        req: SetBackupPolicy,
        who: &Principal,
    ) -> Result<BackupList, ControlError> {
        let periods = parse_schedule(&req.schedule)
            .map_err(|e| ControlError::Invalid(format!("--schedule: {e}")))?;
        let env = self.env_for(who, &r, Action::Restore).await?;
        let shown = |p: &[u64]| -> String {
            if p.is_empty() {
                "none".to_owned()
            } else {
                p.iter()
                    .map(|s| show_period(*s))
                    .collect::<Vec<_>>()
                    .join(",")
            }
        };
        let after = shown(&periods);
        let entry = AuditEntry::new(&who.name, AuditAction::BackupPolicy)
            .app(&env.app)
            .env(&env.name)
            .change(None, Some(after));
        let (env_id, by, at) = (env.id, who.name.clone(), now());
        self.store
            .mutate(entry, move |c, entry| {
                let before = bq::set_policy(c, env_id, &periods, &by, at)?;
                entry.from = before.map(|b| shown(&b.schedule));
                Ok(())
            })
            .await?;
        self.schedules_changed.notify_one();
        info!(env = %r, schedule = %req.schedule, "backup schedule set");
        self.backup_list(&env).await
    }
}
