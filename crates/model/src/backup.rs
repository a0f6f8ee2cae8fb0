//! The API's bodies for backups (`turnout backup …`, `turnout drill`, `turnout data reset|undo`).

use serde::{Deserialize, Serialize};

/// One snapshot of an environment's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupInfo {
    pub id: i64,
    /// `APP/ENV` it was taken of.
    pub env: String,
    /// `sqlite` or `postgres`.
    pub engine: String,
    /// The data generation it was taken of.
    pub generation: i64,
    /// `scheduled`, `manual`, `pre-migrate` or `reset`.
    pub kind: String,
    pub label: Option<String>,
    pub pinned: bool,
    /// `writing`, `ready` or `failed`.
    pub state: String,
    /// The moment it restores to (RFC 3339, UTC).
    pub taken_at: String,
    pub completed_at: Option<String>,
    /// The release live when it was taken, and its commit.
    pub release_id: Option<i64>,
    pub commit: Option<String>,
    /// Bytes of the data it holds.
    pub logical_bytes: u64,
    /// Bytes it added to the repository (new chunks, compressed).
    pub stored_bytes: u64,
    /// The latest verification (RFC 3339) and its error, if it failed.
    pub verified_at: Option<String>,
    pub verify_error: Option<String>,
    /// Whether retention keeps it at the next pass (pinned, or wanted by the schedule).
    pub kept: bool,
    /// Who took it (a user, or the backup schedule).
    #[serde(default)]
    pub created_by: String,
}

/// `turnout backup list APP/ENV`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupList {
    pub env: String,
    /// The backup schedule in force (periods such as `1m`, `1h`, `1d`; empty: none) and where it
    /// comes from (`cli`, `turnout.toml`, `tier default`).
    pub schedule: Vec<String>,
    pub schedule_from: String,
    /// The restore-point error bound now in force, in words ("any moment of the last 2 days to
    /// within 1 day; of the last 2 minutes to within 1 minute", or PostgreSQL's WAL window).
    pub error_bound: String,
    /// PostgreSQL: the window any moment of which can be restored (RFC 3339 from, to).
    pub pitr_window: Option<(String, String)>,
    /// Bytes the app's backup repository holds on disk.
    pub repository_bytes: u64,
    /// Newest first.
    pub backups: Vec<BackupInfo>,
    /// Recovery drills of this environment, newest first.
    pub drills: Vec<DrillInfo>,
}

/// `POST …/backups`: take a snapshot now (a job).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateBackup {
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub pin: bool,
}

/// One recovery drill's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrillInfo {
    pub id: i64,
    pub job: Option<i64>,
    /// The moment it restored to (RFC 3339).
    pub target_at: String,
    /// The snapshot it started from.
    pub backup: Option<i64>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `running`, `passed` or `failed`.
    pub state: String,
    /// How long restoring, starting and checking took (recovery time).
    pub rto_ms: Option<u64>,
    /// How old the restored data was relative to the target (recovery point).
    pub rpo_secs: Option<u64>,
    pub error: Option<String>,
}

/// `POST …/backups/policy`: the environment's backup schedule from now on: `exponential`,
/// `none`, or periods such as `1m,1h,1d` (1 to 16, each from 10s to 366d, increasing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SetBackupPolicy {
    pub schedule: String,
}
