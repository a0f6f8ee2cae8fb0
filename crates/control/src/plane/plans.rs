//! Resource plans: an environment's own plan (`turnout env update`), the effective plan it
//! shows, and what it uses. Enforcement is the runtime's; a change here applies to the next
//! instance started (deploy, restart, start).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{debug, info};
use turnout_model::{
    Action, AuditAction, EnvInfo, EnvRef, ResourcePlan, ResourceUsage, UpdatePlan,
};

use turnout_supervisor::InstanceHandle;

use super::ControlPlane;
use crate::access::Principal;
use crate::app_file::{ReleaseConfig, effective_plan};
use crate::error::ControlError;
use crate::store::{AuditEntry, EnvRow, ReleaseRow, q};

/// Entries a storage walk looks at before it gives up (and shows no figure rather than a
/// wrong one).
const MAX_STORAGE_ENTRIES: u64 = 1_000_000;

impl ControlPlane {
    /// Change the environment's own plan: each field of `req` set, cleared (`none`) or left.
    /// Needs the right to configure the environment's tier (like secrets).
    pub async fn update_plan(
        &self,
        r: EnvRef,
        req: UpdatePlan,
        who: &Principal,
    ) -> Result<EnvInfo, ControlError> {
        let env = self.env_for(who, &r, Action::Config).await?;
        if req.is_empty() {
            return Err(ControlError::Invalid(
                "give at least one of memory, cpu or pids (a value, or \"none\" to clear it)"
                    .into(),
            ));
        }
        // Checked before the write too, so a bad value never reaches the store.
        env.plan
            .apply(&req)
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        let entry = AuditEntry::new(&who.name, AuditAction::EnvPlan)
            .app(&r.app)
            .env(&r.env);
        let (app, name) = (r.app.clone(), r.env.clone());
        let plan = self
            .store
            .mutate(entry, move |c, e| {
                // Read and written in one transaction, so two updates of different fields
                // both land.
                let old = q::get_env(c, &app, &name)?.plan;
                let new = old
                    .apply(&req)
                    .map_err(|e| ControlError::Invalid(e.to_string()))?;
                q::set_plan(c, env.id, &new)?;
                e.from = Some(old.describe());
                e.to = Some(new.describe());
                Ok(new)
            })
            .await?;
        info!(app = %r.app, env = %r.env, plan = %plan.describe(), "resource plan changed");
        let row = self.env_row(&r).await?;
        self.env_info(row).await
    }

    /// What `env show` says `r` uses now: the bytes of data it keeps (`generation`: its data's,
    /// `None` before its first launch made any) and, when it runs, its instance's memory,
    /// processes and CPU time (from the runtime). Lists leave it out: it walks the storage.
    pub(crate) async fn usage(
        &self,
        env: &EnvRow,
        generation: Option<i64>,
        running: Option<&Arc<dyn InstanceHandle>>,
    ) -> ResourceUsage {
        let storage = match generation {
            Some(n) => {
                let dir = self.home.storage_dir(&env.app, &env.name, n);
                tokio::task::spawn_blocking(move || storage_bytes(&dir))
                    .await
                    .ok()
                    .flatten()
            }
            None => Some(0),
        };
        let mut usage = ResourceUsage {
            storage,
            ..ResourceUsage::default()
        };
        if let Some(instance) = running {
            let now = instance.usage().await;
            usage.memory = now.memory_bytes;
            usage.pids = now.pids;
            usage.cpu_seconds = now.cpu_seconds;
        }
        usage
    }
}

/// The effective plan `env show` and `env list` show: the environment's own over its live
/// release's app file (see [`effective_plan`]).
pub(crate) fn plan_of(env: &EnvRow, release: Option<&ReleaseRow>) -> ResourcePlan {
    let file_plan = release
        .and_then(|r| serde_json::from_str::<ReleaseConfig>(&r.config).ok())
        .map(|c| c.plan)
        .unwrap_or_default();
    effective_plan(&env.plan, &file_plan)
}

/// Bytes of the regular files under `dir`, without following symbolic links (a link counts as
/// itself, never as what it points to, so no loop and nothing outside). `None` when `dir`
/// cannot be read or holds more than `MAX_STORAGE_ENTRIES` entries.
fn storage_bytes(dir: &Path) -> Option<u64> {
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    let mut total: u64 = 0;
    let mut seen: u64 = 0;
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                debug!(dir = %dir.display(), error = %e, "storage not readable");
                return None;
            }
        };
        for entry in entries {
            seen += 1;
            if seen > MAX_STORAGE_ENTRIES {
                debug!(dir = %dir.display(), "storage too large to count");
                return None;
            }
            let Ok(entry) = entry else { continue };
            // DirEntry::metadata does not follow symbolic links.
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_counts_files_below_and_never_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a"), vec![0u8; 1000]).unwrap();
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("sub/deeper/b"), vec![0u8; 24]).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![0u8; 100_000]).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
        // A loop: followed, it would never end.
        std::os::unix::fs::symlink(root, root.join("sub/loop")).unwrap();
        assert_eq!(storage_bytes(root), Some(1024));
        assert_eq!(storage_bytes(&root.join("missing")), None);
    }
}
