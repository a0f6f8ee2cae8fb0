//! Queries for backups: the catalog of snapshots (`backups`), the schedules set through the CLI
//! (`backup_policies`), recovery drills (`drills`) and the production copy's last reset
//! (`data_resets`). The snapshots' content lives in the app's repository (`turnout_data::backup`).
//! Mutations run inside `Store::mutate`, so each lands with its audit entry.
use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, params};
use turnout_data::Engine;
use turnout_data::postgres::ClusterSpec;
use turnout_model::{AppName, EnvName, Tier};

use super::{Tx, parse_name, parse_text};
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

impl std::str::FromStr for BackupKind {
    type Err = String;
    fn from_str(s: &str) -> Result<BackupKind, String> {
        [
            BackupKind::Scheduled,
            BackupKind::Manual,
            BackupKind::PreMigrate,
            BackupKind::Reset,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("unknown backup kind '{s}'"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupState {
    Writing,
    Ready,
    Failed,
}

impl BackupState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupState::Writing => "writing",
            BackupState::Ready => "ready",
            BackupState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for BackupState {
    type Err = String;
    fn from_str(s: &str) -> Result<BackupState, String> {
        [
            BackupState::Writing,
            BackupState::Ready,
            BackupState::Failed,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("unknown backup state '{s}'"))
    }
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
    /// PostgreSQL: the first segment of `wal_stream` its restore needs.
    pub wal_start: Option<String>,
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
    /// Its name in the repository; empty: `b<ID>` (the usual name, known once inserted).
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

const COLS: &str = "id, env_id, engine, generation, repo_name, kind, label, pinned, state, \
     taken_at, completed_at, release_id, commit_sha, logical_bytes, stored_bytes, cluster, \
     wal_stream, wal_start, verifying, verified_at, verify_error, job_id, created_by";

fn backup_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BackupRow> {
    let cluster: Option<String> = r.get(15)?;
    let cluster = cluster
        .map(|json| {
            serde_json::from_str(&json).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    15,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })
        })
        .transpose()?;
    Ok(BackupRow {
        id: r.get(0)?,
        env_id: r.get(1)?,
        engine: parse_text(2, r.get(2)?)?,
        generation: r.get(3)?,
        repo_name: r.get(4)?,
        kind: parse_text(5, r.get(5)?)?,
        label: r.get(6)?,
        pinned: r.get(7)?,
        state: parse_text(8, r.get(8)?)?,
        taken_at: r.get(9)?,
        completed_at: r.get(10)?,
        release_id: r.get(11)?,
        commit: r.get(12)?,
        logical_bytes: u64::try_from(r.get::<_, i64>(13)?).unwrap_or(0),
        stored_bytes: u64::try_from(r.get::<_, i64>(14)?).unwrap_or(0),
        cluster,
        wal_stream: r.get(16)?,
        wal_start: r.get(17)?,
        verifying: r.get(18)?,
        verified_at: r.get(19)?,
        verify_error: r.get(20)?,
        job_id: r.get(21)?,
        created_by: r.get(22)?,
    })
}

fn not_found(id: i64) -> ControlError {
    ControlError::NotFound(format!("no backup {id}; see `turnout backup list APP/ENV`"))
}

pub fn get(c: &Connection, id: i64) -> Result<Option<BackupRow>, ControlError> {
    Ok(c.query_row(
        &format!("SELECT {COLS} FROM backups WHERE id = ?1"),
        [id],
        backup_row,
    )
    .optional()?)
}

/// Every snapshot of an environment, newest first.
pub fn list(c: &Connection, env_id: i64) -> Result<Vec<BackupRow>, ControlError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {COLS} FROM backups WHERE env_id = ?1 ORDER BY taken_at DESC, id DESC"
    ))?;
    let rows = stmt
        .query_map([env_id], backup_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The newest `ready` snapshot of an environment taken at or before `at`.
pub fn newest_at_or_before(
    c: &Connection,
    env_id: i64,
    at: i64,
) -> Result<Option<BackupRow>, ControlError> {
    Ok(c.query_row(
        &format!(
            "SELECT {COLS} FROM backups WHERE env_id = ?1 AND state = 'ready' AND taken_at <= ?2 \
                 ORDER BY taken_at DESC, id DESC LIMIT 1"
        ),
        params![env_id, at],
        backup_row,
    )
    .optional()?)
}

fn cluster_json(cluster: Option<&ClusterSpec>) -> Result<Option<String>, ControlError> {
    cluster
        .map(|c| {
            serde_json::to_string(c)
                .map_err(|e| ControlError::internal(format!("serialise cluster: {e}")))
        })
        .transpose()
}

/// Record a snapshot about to be written (`writing`); its id.
pub fn insert(c: &Tx<'_>, new: &NewBackup) -> Result<i64, ControlError> {
    c.execute(
        "INSERT INTO backups (env_id, engine, generation, repo_name, kind, label, pinned, state, \
         taken_at, release_id, commit_sha, cluster, wal_stream, job_id, created_by) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'writing', ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            new.env_id,
            new.engine.as_str(),
            new.generation,
            new.repo_name,
            new.kind.as_str(),
            new.label,
            new.pinned,
            new.taken_at,
            new.release_id,
            new.commit,
            cluster_json(new.cluster.as_ref())?,
            new.wal_stream,
            new.job_id,
            new.created_by,
        ],
    )?;
    let id = c.last_insert_rowid();
    if new.repo_name.is_empty() {
        c.execute(
            "UPDATE backups SET repo_name = 'b' || id WHERE id = ?1",
            [id],
        )?;
    }
    Ok(id)
}

/// A written snapshot: `ready`, with its sizes (and, for PostgreSQL, its first WAL segment).
pub fn mark_ready(
    c: &Tx<'_>,
    id: i64,
    logical_bytes: u64,
    stored_bytes: u64,
    wal_start: Option<&str>,
    at: i64,
) -> Result<(), ControlError> {
    c.execute(
        "UPDATE backups SET state = 'ready', logical_bytes = ?2, stored_bytes = ?3, \
         wal_start = ?4, completed_at = ?5 WHERE id = ?1",
        params![
            id,
            i64::try_from(logical_bytes).unwrap_or(i64::MAX),
            i64::try_from(stored_bytes).unwrap_or(i64::MAX),
            wal_start,
            at
        ],
    )?;
    Ok(())
}

pub fn mark_failed(c: &Tx<'_>, id: i64, at: i64) -> Result<(), ControlError> {
    c.execute(
        "UPDATE backups SET state = 'failed', verifying = 0, completed_at = ?2 WHERE id = ?1",
        params![id, at],
    )?;
    Ok(())
}

/// Snapshots a killed daemon left `writing` become `failed`, and none is `verifying` any
/// more; their ids.
pub fn fail_interrupted(c: &Tx<'_>, at: i64) -> Result<Vec<i64>, ControlError> {
    let ids = {
        let mut stmt = c.prepare("SELECT id FROM backups WHERE state = 'writing' ORDER BY id")?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<Result<Vec<i64>, _>>()?
    };
    c.execute(
        "UPDATE backups SET state = 'failed', completed_at = ?1 WHERE state = 'writing'",
        [at],
    )?;
    c.execute("UPDATE backups SET verifying = 0 WHERE verifying = 1", [])?;
    Ok(ids)
}

/// Mark snapshot `id` as being verified: refused unless it is `ready` and not already being
/// verified.
pub fn begin_verify(c: &Tx<'_>, id: i64) -> Result<BackupRow, ControlError> {
    let row = get(c, id)?.ok_or_else(|| not_found(id))?;
    if row.state != BackupState::Ready {
        return Err(ControlError::Conflict(format!(
            "backup {id} is {}, and only a ready snapshot can be verified",
            row.state.as_str()
        )));
    }
    if row.verifying {
        return Err(ControlError::Conflict(format!(
            "backup {id} is being verified already; wait for that verification (`turnout backup show {id}`)"
        )));
    }
    c.execute("UPDATE backups SET verifying = 1 WHERE id = ?1", [id])?;
    Ok(row)
}

/// A verification's end: when, and its error (None: it passed).
pub fn end_verify(c: &Tx<'_>, id: i64, at: i64, error: Option<&str>) -> Result<(), ControlError> {
    c.execute(
        "UPDATE backups SET verifying = 0, verified_at = ?2, verify_error = ?3 WHERE id = ?1",
        params![id, at, error],
    )?;
    Ok(())
}

/// Remove snapshot `id` from the catalog unless it is being written or verified (or pinned,
/// unless `force`); the row it removed.
pub fn remove(c: &Tx<'_>, id: i64, force: bool) -> Result<BackupRow, ControlError> {
    let row = get(c, id)?.ok_or_else(|| not_found(id))?;
    if row.state == BackupState::Writing {
        return Err(ControlError::Conflict(format!(
            "backup {id} is still being written; wait for its job to end (job {})",
            row.job_id.map_or_else(|| "?".to_owned(), |j| j.to_string())
        )));
    }
    if row.verifying {
        return Err(ControlError::Conflict(format!(
            "backup {id} is being verified; delete it once the verification has ended"
        )));
    }
    if row.pinned && !force {
        return Err(ControlError::Conflict(format!(
            "backup {id} is pinned{}; pinned snapshots are kept until deleted with --force (`turnout backup delete {id} --force`)",
            row.label
                .as_deref()
                .map(|l| format!(" ({l})"))
                .unwrap_or_default()
        )));
    }
    c.execute("DELETE FROM backups WHERE id = ?1", [id])?;
    Ok(row)
}

/// Whether any snapshot still names WAL stream `stream`.
pub fn stream_in_use(c: &Connection, stream: &str) -> Result<bool, ControlError> {
    Ok(c.query_row(
        "SELECT 1 FROM backups WHERE wal_stream = ?1 LIMIT 1",
        [stream],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}

/// The schedule set through the CLI (periods in seconds; empty: none), who set it and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRow {
    pub schedule: Vec<u64>,
    pub set_by: String,
    pub set_at: i64,
}

pub fn policy(c: &Connection, env_id: i64) -> Result<Option<PolicyRow>, ControlError> {
    let row = c
        .query_row(
            "SELECT schedule, set_by, set_at FROM backup_policies WHERE env_id = ?1",
            [env_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
        )
        .optional()?;
    row.map(|(schedule, set_by, set_at)| {
        let schedule = serde_json::from_str(&schedule)
            .map_err(|e| ControlError::internal(format!("backup policy of env {env_id}: {e}")))?;
        Ok(PolicyRow {
            schedule,
            set_by,
            set_at,
        })
    })
    .transpose()
}

/// Set an environment's schedule (replacing the one set before); the one it replaced.
pub fn set_policy(
    c: &Tx<'_>,
    env_id: i64,
    schedule: &[u64],
    by: &str,
    at: i64,
) -> Result<Option<PolicyRow>, ControlError> {
    let before = policy(c, env_id)?;
    let json = serde_json::to_string(schedule)
        .map_err(|e| ControlError::internal(format!("serialise schedule: {e}")))?;
    c.execute(
        "INSERT INTO backup_policies (env_id, schedule, set_by, set_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (env_id) DO UPDATE SET schedule = ?2, set_by = ?3, set_at = ?4",
        params![env_id, json, by, at],
    )?;
    Ok(before)
}

/// One row of `drills`.
#[derive(Debug, Clone)]
pub struct DrillRow {
    pub id: i64,
    pub job_id: Option<i64>,
    pub target_at: i64,
    pub backup_id: Option<i64>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// `running`, `passed` or `failed`.
    pub state: String,
    pub rto_ms: Option<i64>,
    pub rpo_secs: Option<i64>,
    pub error: Option<String>,
}

/// An environment's recovery drills, newest first.
pub fn drills(c: &Connection, env_id: i64) -> Result<Vec<DrillRow>, ControlError> {
    let mut stmt = c.prepare(
        "SELECT id, job_id, target_at, backup_id, started_at, finished_at, state, \
         rto_ms, rpo_secs, error FROM drills WHERE env_id = ?1 ORDER BY started_at DESC, id DESC",
    )?;
    let rows = stmt
        .query_map([env_id], |r| {
            Ok(DrillRow {
                id: r.get(0)?,
                job_id: r.get(1)?,
                target_at: r.get(2)?,
                backup_id: r.get(3)?,
                started_at: r.get(4)?,
                finished_at: r.get(5)?,
                state: r.get(6)?,
                rto_ms: r.get(7)?,
                rpo_secs: r.get(8)?,
                error: r.get(9)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// An environment with data, as the backup scheduler sees it.
#[derive(Debug, Clone)]
pub struct ScheduleCandidate {
    pub app: AppName,
    pub env: EnvName,
    pub tier: Tier,
    /// The live release's resolved configuration (JSON), if it has one.
    pub config: Option<String>,
    /// The schedule set through the CLI (JSON), if any.
    pub policy: Option<String>,
}

/// Every environment whose data has been provisioned.
pub fn candidates(c: &Connection) -> Result<Vec<ScheduleCandidate>, ControlError> {
    let mut stmt = c.prepare(
        "SELECT a.name, e.name, e.tier, r.config, p.schedule \
         FROM env_data d JOIN environments e ON e.id = d.env_id JOIN apps a ON a.id = e.app_id \
         LEFT JOIN releases r ON r.id = e.current_release_id \
         LEFT JOIN backup_policies p ON p.env_id = e.id ORDER BY e.id",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(ScheduleCandidate {
                app: parse_name(r.get(0)?)?,
                env: parse_name(r.get(1)?)?,
                tier: r.get::<_, String>(2)?.parse().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        2,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?,
                config: r.get(3)?,
                policy: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The environments with a backup job queued or running.
pub fn pending_jobs(c: &Connection) -> Result<HashSet<i64>, ControlError> {
    let mut stmt = c.prepare(
        "SELECT e.id FROM jobs j JOIN apps a ON a.name = j.app \
         JOIN environments e ON e.app_id = a.id AND e.name = j.env \
         WHERE j.kind = 'backup' AND j.state IN ('queued', 'running')",
    )?;
    let rows = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The app and environment of environment `env_id`, if it still exists.
pub fn env_of(c: &Connection, env_id: i64) -> Result<Option<(AppName, EnvName)>, ControlError> {
    Ok(c.query_row(
        "SELECT a.name, e.name FROM environments e JOIN apps a ON a.id = e.app_id WHERE e.id = ?1",
        [env_id],
        |r| Ok((parse_name(r.get(0)?)?, parse_name(r.get(1)?)?)),
    )
    .optional()?)
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
    Ok(c.query_row(
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

/// The drills a killed daemon left running, marked failed: for each, its id and the app of the
/// environment it drilled (whose scratch environment `drill-<id>` is to be removed).
pub fn fail_interrupted_drills(
    c: &Connection,
    at: i64,
) -> Result<Vec<(i64, String)>, ControlError> {
    let mut stmt = c.prepare(
        "SELECT d.id, a.name FROM drills d JOIN environments e ON e.id = d.env_id \
         JOIN apps a ON a.id = e.app_id WHERE d.state = 'running' ORDER BY d.id",
    )?;
    let running = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<(i64, String)>, _>>()?;
    c.execute(
        "UPDATE drills SET state = 'failed', finished_at = ?1, \
         error = 'interrupted: the daemon stopped during the drill' WHERE state = 'running'",
        [at],
    )?;
    Ok(running)
}
