//! Jobs: every long operation (deploy, rollback, restart, start), its steps and its events,
//! as the API shows them.
use serde::{Deserialize, Serialize};

use crate::{AppName, EnvName};

/// `POST …/envs/{env}/rollback`: back to the previous live-once release, or to `to`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    #[serde(default)]
    pub to: Option<i64>,
    /// Also put the schema and data back as they were before the release rolled back from
    /// migrated (its `migrate_down`, or its pinned pre-migration snapshot).
    #[serde(default)]
    pub with_data: bool,
    /// Confirms a rollback with data in production (a restore discards newer writes).
    #[serde(default)]
    pub yes: bool,
}

/// What a job does. Every long operation is a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Fetch, check out, build, launch, go live, retire.
    Deploy,
    /// Launch an earlier live-once release again (no fetch, no build).
    Rollback,
    /// A fresh instance of the live release.
    Restart,
    /// Start a stopped environment's live release.
    Start,
    /// Run another environment's live release, its build output copied (no fetch, no build).
    Promote,
    /// Re-create an environment's data from its seed (SQL file or command), then relaunch.
    Seed,
    /// Copy another environment's data and storage into this one, then relaunch.
    Clone,
    /// Refresh a lower environment from production's data, masked on the way, then relaunch.
    Sync,
    /// Take a snapshot of an environment's data into its app's backup repository.
    Backup,
    /// Restore a snapshot into a scratch area and check it.
    Verify,
    /// Put an environment's data (and, when asked, its release) back to an earlier moment.
    Restore,
    /// Restore into a scratch environment, start it, check it, measure RTO and RPO, remove it.
    Drill,
    /// A command run in an environment with `turnout run --detach`: its output lines, then its
    /// exit status (not 0: the job failed).
    Run,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Rollback => "rollback",
            Self::Restart => "restart",
            Self::Start => "start",
            Self::Promote => "promote",
            Self::Seed => "seed",
            Self::Clone => "clone",
            Self::Sync => "sync",
            Self::Backup => "backup",
            Self::Verify => "verify",
            Self::Restore => "restore",
            Self::Drill => "drill",
            Self::Run => "run",
        }
    }
}

impl std::str::FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Self::Deploy,
            Self::Rollback,
            Self::Restart,
            Self::Start,
            Self::Promote,
            Self::Seed,
            Self::Clone,
            Self::Sync,
            Self::Backup,
            Self::Verify,
            Self::Restore,
            Self::Drill,
            Self::Run,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| format!("unknown job kind '{s}'"))
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    /// Cancelled by a user (`turnout job cancel`) or by the daemon's shutdown.
    Cancelled,
    /// The daemon died while it ran; its half-done work was cleaned up at the next start.
    Interrupted,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
        }
    }

    /// Whether the job has ended (it will not change again).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Self::Queued,
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::Cancelled,
            Self::Interrupted,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| format!("unknown job state '{s}'"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Skipped,
    Failed,
    Cancelled,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Progress of a step that counts something (bytes, rows, tables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    pub done: u64,
    pub total: Option<u64>,
    pub unit: String,
}

/// One step of a job, as it stands.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobStep {
    /// fetch, checkout, build, launch, go-live, retire (deploy); launch, go-live, retire (the
    /// others).
    pub name: String,
    pub state: StepState,
    /// The latest human line about it ("main from /srv/shop.git", "done in 1.2s").
    pub detail: String,
    #[serde(default)]
    pub progress: Option<Progress>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobInfo {
    pub id: i64,
    pub kind: JobKind,
    pub app: AppName,
    pub env: EnvName,
    /// Who started it (for an approved operation: `requester (approved by approver)`).
    pub actor: String,
    pub state: JobState,
    /// What was asked for: a ref for a deploy, a release for a rollback.
    pub request: Option<String>,
    pub steps: Vec<JobStep>,
    /// The release it created or launched.
    pub release: Option<i64>,
    /// Why it failed, was cancelled or was interrupted.
    pub error: Option<String>,
    /// The last lines of the failed step's log (a build's or an instance's output).
    #[serde(default)]
    pub log_tail: Vec<String>,
    /// The environment's URL once it went live.
    #[serde(default)]
    pub url: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// While it is `queued` for a build slot (`turnout serve --max-builds`): its place in line,
    /// from 1 (production deploys go first, then first come, first served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,
}

/// One event of a job's stream (`GET /api/v1/jobs/{id}/events`, server-sent events whose
/// `data:` is this JSON). A watcher that connects late first gets every earlier event, so
/// the stream always tells the whole job; it ends after `end`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    /// A step changed: started, made progress, finished, was skipped or failed.
    Step {
        /// The step's position in `JobInfo::steps`, from 0; `total` is their number.
        index: u32,
        total: u32,
        step: JobStep,
    },
    /// A line of output (a build's).
    Output { line: String },
    /// The job ended; `job` is its final state.
    End { job: JobInfo },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_events_are_tagged() {
        let e = JobEvent::Output { line: "ok".into() };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"output","line":"ok"}"#
        );
    }
}
