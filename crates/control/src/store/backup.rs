//! Queries for backups: the catalog of snapshots (`backups`), the schedules set through the CLI
//! (`backup_policies`), recovery drills (`drills`) and the production copy's last reset
//! (`data_resets`). The snapshots' content lives in the app's repository (`turnout_data::backup`).
//! Mutations run inside `Store::mutate`, so each lands with its audit entry.
use rusqlite::Connection;
use turnout_data::Engine;
use turnout_data::postgres::ClusterSpec;

use crate::error::ControlError;

/// Why a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKind {
    Scheduled,
    Manual,
    /// Pinned before a production deploy's migration, labelled with the release.
    PreMigrate,
    /// Pinned by `data reset` of a production copy: what `data undo` goes back to.
    Reset,
}

impl BackupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Scheduled => "scheduled",
            BackupKind::Manual => "manual",
            BackupKind::PreMigrate => "pre-migrate",
            BackupKind::Reset => "reset",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupState {
    Writing,
    Ready,
    Failed,
}

/// One row of `backups`.
#[derive(Debug, Clone)]
pub struct BackupRow {
    pub id: i64,
    pub env_id: i64,
    pub engine: Engine,
    pub generation: i64,
    /// Its manifest's name in the app's repository.
    pub repo_name: String,
    pub kind: BackupKind,
    pub label: Option<String>,
    pub pinned: bool,
    pub state: BackupState,
    /// The moment it restores to (unix seconds).
    pub taken_at: i64,
    pub completed_at: Option<i64>,
    pub release_id: Option<i64>,
    pub commit: Option<String>,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    /// PostgreSQL: the cluster it was taken of, and its WAL stream in the repository.
    pub cluster: Option<ClusterSpec>,
    pub wal_stream: Option<String>,
    /// Being verified now (never deleted meanwhile).
    pub verifying: bool,
    pub verified_at: Option<i64>,
    pub verify_error: Option<String>,
    pub job_id: Option<i64>,
    pub created_by: String,
}

/// A snapshot about to be written (state `writing`).
#[derive(Debug, Clone)]
pub struct NewBackup {
    pub env_id: i64,
    pub engine: Engine,
    pub generation: i64,
    pub repo_name: String,
    pub kind: BackupKind,
    pub label: Option<String>,
    pub pinned: bool,
    pub taken_at: i64,
    pub release_id: Option<i64>,
    pub commit: Option<String>,
    pub cluster: Option<ClusterSpec>,
    pub wal_stream: Option<String>,
    pub job_id: Option<i64>,
    pub created_by: String,
}

pub fn get(c: &Connection, id: i64) -> Result<Option<BackupRow>, ControlError> {
    let _ = (c, id);
    todo!()
}

/// Every snapshot of an environment, newest first.
pub fn list(c: &Connection, env_id: i64) -> Result<Vec<BackupRow>, ControlError> {
    let _ = (c, env_id);
    todo!()
}

/// The newest `ready` snapshot of an environment taken at or before `at`.
pub fn newest_at_or_before(
    c: &Connection,
    env_id: i64,
    at: i64,
) -> Result<Option<BackupRow>, ControlError> {
    let _ = (c, env_id, at);
    todo!()
}

/// Record the production copy's latest reset: its pinned snapshot and the release it ran,
/// replacing the previous one (whose snapshot is unpinned, for retention to delete).
pub fn set_reset(
    c: &Connection,
    env_id: i64,
    backup_id: i64,
    release_id: i64,
    at: i64,
    target_at: i64,
) -> Result<(), ControlError> {
    c.execute(
        "UPDATE backups SET pinned = 0 WHERE id IN \
         (SELECT backup_id FROM data_resets WHERE env_id = ?1 AND backup_id <> ?2)",
        rusqlite::params![env_id, backup_id],
    )?;
    c.execute(
        "INSERT INTO data_resets (env_id, backup_id, release_id, at, target_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (env_id) DO UPDATE SET backup_id = excluded.backup_id, \
         release_id = excluded.release_id, at = excluded.at, target_at = excluded.target_at",
        rusqlite::params![env_id, backup_id, release_id, at, target_at],
    )?;
    Ok(())
}

/// The production copy's latest reset: (its pinned snapshot, the release it ran).
pub fn get_reset(c: &Connection, env_id: i64) -> Result<Option<(i64, i64)>, ControlError> {
    use rusqlite::OptionalExtension;
    Ok(c
        .query_row(
            "SELECT backup_id, release_id FROM data_resets WHERE env_id = ?1",
            [env_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// A recovery drill starting (state `running`); its id.
pub fn insert_drill(
    c: &Connection,
    env_id: i64,
    job_id: i64,
    target_at: i64,
    backup_id: i64,
    started_at: i64,
) -> Result<i64, ControlError> {
    c.execute(
        "INSERT INTO drills (env_id, job_id, target_at, backup_id, started_at, state) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'running')",
        rusqlite::params![env_id, job_id, target_at, backup_id, started_at],
    )?;
    Ok(c.last_insert_rowid())
}

/// A recovery drill's result: `error` None is passed.
pub fn finish_drill(
    c: &Connection,
    id: i64,
    finished_at: i64,
    rto_ms: Option<i64>,
    rpo_secs: Option<i64>,
    error: Option<&str>,
) -> Result<(), ControlError> {
    c.execute(
        "UPDATE drills SET finished_at = ?2, state = ?3, rto_ms = ?4, rpo_secs = ?5, error = ?6 \
         WHERE id = ?1",
        rusqlite::params![
            id,
            finished_at,
            if error.is_none() { "passed" } else { "failed" },
            rto_ms,
            rpo_secs,
            error
        ],
    )?;
    Ok(())
}
