//! The backup schedule's part of the scheduler pass: a snapshot started for each environment
//! whose newest is older than its schedule's smallest period (one catch-up after an outage,
//! never a burst), retention applied, PostgreSQL's archived WAL moved into the repository (or
//! discarded without a schedule); and, at start-up, what a killed daemon left marked failed.
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use turnout_data::Engine;
use turnout_model::{AuditAction, EnvRef};

use super::ControlPlane;
use super::backup::{ACTOR, RETENTION, Schedule, kept_ids, stream_of};
use super::generation::{Db, Generation, data_error};
use crate::app_file::ReleaseConfig;
use crate::error::ControlError;
use crate::store::backup::{self as bq, BackupKind, BackupRow, BackupState};
use crate::store::{AuditEntry, EnvRow, now};

impl ControlPlane {
    /// Mark what a killed daemon left: snapshots `writing` become `failed` (their chunks are
    /// swept when the repository opens), and none stays `verifying`.
    pub(crate) async fn recover_backups(&self) {
        let entry = AuditEntry::new("turnout", AuditAction::BackupCreate).change(
            Some("writing".to_owned()),
            Some("failed (interrupted)".to_owned()),
        );
        let at = now();
        match self
            .store
            .mutate_each(move |c| {
                let ids = bq::fail_interrupted(c, at)?;
                Ok(ids
                    .into_iter()
                    .map(|id| {
                        let mut e = entry.clone();
                        e.from = Some(format!("backup {id} writing"));
                        e
                    })
                    .collect())
            })
            .await
        {
            Ok(0) => {}
            Ok(n) => info!(
                snapshots = n,
                "snapshots interrupted by the last stop marked failed"
            ),
            Err(e) => warn!(error = %e, "could not mark interrupted snapshots"),
        }
    }

    /// Delete what retention no longer keeps of `rows` (an environment's snapshots, newest
    /// first) under `periods`, and failed snapshots older than the newest ready one; never a
    /// pinned one, nor one being written or verified. How many it deleted.
    /// The scheduler (`wait` false) skips a repository being written and comes back later.
    pub(super) async fn apply_retention(
        &self,
        env: &EnvRow,
        rows: &[BackupRow],
        periods: &[u64],
        wait: bool,
    ) -> usize {
        if periods.is_empty() {
            return 0;
        }
        let _one = if wait {
            self.backups.writes.lock(&env.app).await
        } else {
            match self.backups.writes.try_lock(&env.app) {
                Some(g) => g,
                None => return 0,
            }
        };
        let keep = kept_ids(periods, rows, now());
        let newest_ready = rows
            .iter()
            .filter(|b| b.state == BackupState::Ready)
            .map(|b| b.taken_at)
            .max();
        let mut deleted = 0;
        for row in rows {
            let unwanted = match row.state {
                BackupState::Ready => !row.pinned && !row.verifying && !keep.contains(&row.id),
                BackupState::Failed => newest_ready.is_some_and(|t| t > row.taken_at),
                BackupState::Writing => false,
            };
            if !unwanted {
                continue;
            }
            let id = row.id;
            let entry = AuditEntry::new(RETENTION, AuditAction::BackupDelete)
                .app(&env.app)
                .env(&env.name)
                .change(Some(format!("backup {id}")), None);
            match self
                .store
                .mutate(entry, move |c, _| bq::remove(c, id, false))
                .await
            {
                Ok(row) => {
                    self.forget_snapshot(env, &row).await;
                    deleted += 1;
                }
                // Pinned, verified or deleted since it was read: it stays (or is gone).
                Err(e) => info!(backup = id, why = %e, "retention left a snapshot"),
            }
        }
        deleted
    }

    /// The scheduler's backups (see the module's comment); answer how long until the next
    /// snapshot is due (at most `max`).
    pub(crate) async fn run_due_backups(
        self: &Arc<Self>,
        max: Duration,
    ) -> Result<Duration, ControlError> {
        let candidates = self.store.call(|c| bq::candidates(c)).await?;
        let pending = self.store.call(|c| bq::pending_jobs(c)).await?;
        let mut sleep = max;
        for cand in candidates {
            if self.closing.is_cancelled() {
                break;
            }
            let r = EnvRef {
                app: cand.app.clone(),
                env: cand.env.clone(),
            };
            let Ok(env) = self.env_row(&r).await else {
                continue;
            };
            let policy = cand
                .policy
                .as_deref()
                .and_then(|p| serde_json::from_str::<Vec<u64>>(p).ok());
            let config = cand
                .config
                .as_deref()
                .and_then(|c| serde_json::from_str::<ReleaseConfig>(c).ok());
            let schedule = Schedule::resolve(cand.tier, policy, config.as_ref());
            let id = env.id;
            let rows = self.store.call(move |c| bq::list(c, id)).await?;
            if let Some(smallest) = schedule.periods.first().copied() {
                let now = now();
                let newest = self
                    .store
                    .call(move |c| bq::newest_at_or_before(c, id, now))
                    .await?
                    .map(|b| b.taken_at);
                let due_at = newest.map_or(now, |t| t.saturating_add(smallest as i64));
                let busy =
                    pending.contains(&id) || rows.iter().any(|b| b.state == BackupState::Writing);
                if due_at > now {
                    let until = Duration::from_secs((due_at - now) as u64);
                    sleep = sleep.min(until);
                } else {
                    if !busy {
                        match self
                            .start_backup_job(r.clone(), BackupKind::Scheduled, None, false, ACTOR)
                            .await
                        {
                            Ok(job) => info!(env = %r, job = job.id, "scheduled snapshot started"),
                            Err(e) => warn!(env = %r, error = %e, "scheduled snapshot not started"),
                        }
                    }
                    // The next one is due a period after this one (or the running one) is taken.
                    sleep = sleep.min(Duration::from_secs(smallest));
                }
                self.apply_retention(&env, &rows, &schedule.periods, false)
                    .await;
            }
            if let Err(e) = self
                .archive_wal(&env, &rows, !schedule.periods.is_empty())
                .await
            {
                warn!(env = %r, error = %e, "could not move the archived WAL");
            }
        }
        Ok(sleep.max(Duration::from_millis(10)))
    }

    /// PostgreSQL: move the current cluster's archived WAL into the repository and prune the
    /// stream up to the oldest kept base backup's start (`scheduled`), or discard it.
    pub(super) async fn archive_wal(
        &self,
        env: &EnvRow,
        rows: &[BackupRow],
        scheduled: bool,
    ) -> Result<(), ControlError> {
        let Some(data) = self.data_row(env).await? else {
            return Ok(());
        };
        if data.engine != Engine::Postgres {
            return Ok(());
        }
        let gn: Generation = self.generation(env, &data)?;
        let Db::Postgres(cluster) = &gn.db else {
            return Ok(());
        };
        if cluster.spec.archive.is_none() {
            return Ok(());
        }
        if !scheduled {
            cluster.discard_archived_wal().await.map_err(data_error)?;
            return Ok(());
        }
        let Some(_one) = self.backups.writes.try_lock(&env.app) else {
            return Ok(());
        };
        let repo = self.backup_repo(&env.app).await?;
        let stream = stream_of(env, gn.n);
        cluster
            .ingest_wal(&repo, &stream, &self.closing)
            .await
            .map_err(data_error)?;
        let in_stream: Vec<&BackupRow> = rows
            .iter()
            .filter(|b| b.wal_stream.as_deref() == Some(&stream) && b.state != BackupState::Failed)
            .collect();
        if in_stream.iter().any(|b| b.state == BackupState::Writing) {
            return Ok(());
        }
        let oldest = in_stream
            .iter()
            .filter(|b| b.state == BackupState::Ready)
            .min_by_key(|b| b.taken_at);
        let keep_from = match oldest {
            Some(b) => match &b.wal_start {
                Some(start) => Some(start.as_str()),
                None => return Ok(()),
            },
            None => None,
        };
        repo.prune_wal(&stream, keep_from)
            .await
            .map_err(data_error)?;
        Ok(())
    }
}
