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
