//! `turnout backup create|list|show|verify|delete|policy`: snapshots of an environment's data
//! into its app's repository, on demand and on the backup schedule the scheduler runs, and the
//! retention that deletes what the schedule no longer wants.
use turnout_data::backup::Repo;
use turnout_model::AppName;

use super::ControlPlane;
use super::jobs::JobCtx;
use crate::error::ControlError;
use crate::store::EnvRow;
use crate::store::backup::{BackupKind, BackupRow};

impl ControlPlane {
    /// The app's backup repository (opened once, then shared).
    pub(crate) async fn backup_repo(&self, app: &AppName) -> Result<Repo, ControlError> {
        let _ = app;
        todo!()
    }

    /// Takes a snapshot of `env`'s current data generation inside the running job `ctx` (the
    /// caller holds the environment's lock and reports the step): recorded `writing`, written,
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
        let _ = (ctx, env, kind, label, pinned, actor);
        todo!()
    }
}
