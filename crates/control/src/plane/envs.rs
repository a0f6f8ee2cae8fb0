//! Environments: create, list, show, delete, and their releases.
use std::collections::HashMap;

use tracing::info;
use turnout_model::{
    Action, AppName, AuditAction, CreateEnv, EnvInfo, EnvRef, EnvStatus, InstanceInfo, ReleaseInfo,
    ResourceUsage, Tier, format_timestamp,
};
use turnout_supervisor::{InstanceState, InstanceStatus};

use super::plans::plan_of;
use super::routing::{EnvRouting, key};
use super::{ControlPlane, release_info, remove_dir, source};
use crate::access::Principal;
use crate::error::ControlError;
use crate::git;
use crate::store::data as dq;
use crate::store::{AuditEntry, EnvRow, ReleaseRow, q};

impl ControlPlane {
    pub async fn create_env(
        &self,
        app: AppName,
        req: CreateEnv,
        who: &Principal,
    ) -> Result<EnvInfo, ControlError> {
        let row = self.insert_env(app, req, who, false).await?;
        self.env_info(row).await
    }

    /// Create an environment; `made_for_branch` records that a push made it for its branch.
    pub(crate) async fn insert_env(
        &self,
        app: AppName,
        req: CreateEnv,
        who: &Principal,
        made_for_branch: bool,
    ) -> Result<EnvRow, ControlError> {
        let app_row = self.app_row(&app).await?;
        let tier = req.tier.unwrap_or(Tier::Development);
        let target = format!("{app}/{}", req.name);
        self.authorize(who, app_row.id, &app, &target, Action::Config, Some(tier))
            .await?;
        git::check_branch(&req.branch).await?;
        let src = source(&app_row.repo, app_row.token_env.as_deref())?;
        let mut branches = git::remote_branches(&src).await?;
        // A branch pushed to Turnout counts, even when the repository does not have it.
        for pushed in git::pushed_branches(&self.home.mirror(&app))
            .await?
            .into_keys()
        {
            if !branches.contains(&pushed) {
                branches.push(pushed);
            }
        }
        if !branches.contains(&req.branch) {
            return Err(ControlError::Invalid(format!(
                "branch '{}' does not exist in {} nor was it pushed to Turnout; existing branches: {}",
                req.branch,
                src.display(),
                if branches.is_empty() {
                    "none".to_owned()
                } else {
                    branches.join(", ")
                }
            )));
        }
        let (a, name, branch, deploy_on) = (
            app.clone(),
            req.name.clone(),
            req.branch.clone(),
            req.deploy_on,
        );
        let entry = AuditEntry::new(&who.name, AuditAction::EnvCreate)
            .app(&app)
            .env(&req.name)
            .change(
                None,
                Some(format!(
                    "branch {}, tier {tier}, deploys on {deploy_on}",
                    req.branch
                )),
            );
        let row = self
            .store
            .mutate(entry, move |c, _| {
                let row = q::insert_env(c, &a, &name, &branch, tier, deploy_on)?;
                if made_for_branch {
                    q::mark_made_for_branch(c, row.id)?;
                }
                Ok(row)
            })
            .await?;
        self.prepare_env_dirs(&row).await?;
        self.routing
            .created((row.app.clone(), row.name.clone()))
            .await;
        info!(app = %app, env = %row.name, tier = %tier, "environment created");
        // A new environment of a linked app may be another's counterpart now.
        self.links_changed().await;
        Ok(row)
    }

    /// The environments `who` may see, of one app or of all.
    pub async fn list_envs(
        &self,
        app: Option<AppName>,
        who: &Principal,
    ) -> Result<Vec<EnvInfo>, ControlError> {
        if let Some(app) = &app {
            self.authorize_app(who, app, Action::Read).await?;
        }
        // One read of the store for the environments and their live releases, whatever their
        // number; what each uses is `env show`'s (it walks the storage).
        let (rows, releases) = self
            .store
            .call(move |c| {
                Ok((
                    q::list_envs(c, app.as_ref())?,
                    q::live_releases(c, app.as_ref())?,
                ))
            })
            .await?;
        let mut releases: HashMap<i64, ReleaseRow> =
            releases.into_iter().map(|r| (r.id, r)).collect();
        Ok(rows
            .into_iter()
            .filter(|e| who.role_on(e.app_id).is_some())
            .map(|row| {
                let release = row.current_release_id.and_then(|id| releases.remove(&id));
                let routing = self.routing.env(&(row.app.clone(), row.name.clone()));
                self.env_info_of(row, release, routing, None)
            })
            .collect())
    }

    pub async fn show_env(&self, r: EnvRef, who: &Principal) -> Result<EnvInfo, ControlError> {
        let row = self.env_for(who, &r, Action::Read).await?;
        let config = self.config_state(&row).await?;
        let links = self.env_links(&row).await?;
        let mut info = self.env_info(row).await?;
        info.config = Some(config);
        info.links = Some(links);
        Ok(info)
    }

    pub async fn delete_env(&self, r: EnvRef, who: &Principal) -> Result<(), ControlError> {
        let _deleting = self.env_locks.lock(&key(&r)).await;
        let row = self.env_for(who, &r, Action::Config).await?;
        let env_id = row.id;
        let bound = self
            .store
            .call(move |c| q::domains_of_env(c, env_id))
            .await?;
        if !bound.is_empty() {
            return Err(ControlError::Conflict(format!(
                "{r} serves {}; switch {} to another environment or remove {} first",
                bound.join(", "),
                if bound.len() == 1 { "it" } else { "them" },
                if bound.len() == 1 { "it" } else { "them" },
            )));
        }
        self.check_unreferenced(&row).await?;
        // Read before its rows go: its data, and its roles in other environments' databases.
        let (data, roles) = self.data_to_remove(&row).await?;
        let backups = self.backups_of(&row).await?;
        if let Some(old) = self.routing.forget(&key(&r)).await {
            self.retire(&r, old).await;
        }
        let entry = AuditEntry::new(&who.name, AuditAction::EnvDelete)
            .app(&r.app)
            .env(&r.env);
        self.store
            .mutate(entry, move |c, _| q::delete_env(c, env_id))
            .await?;
        self.remove_data(data, roles).await;
        self.remove_backups(&row, backups).await;
        self.remove_network(&row).await;
        self.links_changed().await;
        remove_dir(&self.home.env_dir(&r.app, &r.env)).await;
        git::prune_worktrees(&self.home.mirror(&r.app)).await;
        info!(app = %r.app, env = %r.env, "environment deleted");
        Ok(())
    }

    pub async fn releases(
        &self,
        r: EnvRef,
        who: &Principal,
    ) -> Result<Vec<ReleaseInfo>, ControlError> {
        let row = self.env_for(who, &r, Action::Read).await?;
        let rows = self
            .store
            .call(move |c| q::list_releases(c, row.id))
            .await?;
        Ok(rows.iter().map(release_info).collect())
    }

    pub(crate) async fn env_row(&self, r: &EnvRef) -> Result<EnvRow, ControlError> {
        let (a, e) = (r.app.clone(), r.env.clone());
        self.store.call(move |c| q::get_env(c, &a, &e)).await
    }

    pub(crate) async fn env_info(&self, row: EnvRow) -> Result<EnvInfo, ControlError> {
        let (env_id, release_id) = (row.id, row.current_release_id);
        let (release, data) = self
            .store
            .call(move |c| {
                let release = release_id.map(|id| q::get_release(c, id)).transpose()?;
                Ok((release, dq::get(c, env_id)?))
            })
            .await?;
        let routing = self.routing.env(&(row.app.clone(), row.name.clone()));
        let usage = self
            .usage(
                &row,
                data.map(|d| d.generation),
                routing.running.as_ref().map(|run| &run.instance),
            )
            .await;
        Ok(self.env_info_of(row, release, routing, Some(usage)))
    }

    /// `row` as `env show` (with `usage`) and `env list` show it, with its live release read
    /// beforehand and its state in routing.
    fn env_info_of(
        &self,
        row: EnvRow,
        release: Option<ReleaseRow>,
        routing: EnvRouting,
        usage: Option<ResourceUsage>,
    ) -> EnvInfo {
        let r = EnvRef {
            app: row.app.clone(),
            env: row.name.clone(),
        };
        let plan = plan_of(&row, release.as_ref());
        let sleep_after = row.sleeps_after();
        let now = routing.running.as_ref().map(|run| run.instance.status());
        let (status, status_reason) =
            env_status(&routing, now.as_ref(), row.stopped, release.is_some());
        let next_retry_at = routing
            .down
            .filter(|_| status == EnvStatus::Down)
            .map(|d| format_timestamp(unix_seconds_up(d.retry_at)));
        let instance = routing.running.zip(now).map(|(run, s)| InstanceInfo {
            state: s.state.as_str().to_owned(),
            pid: s.pid,
            port: run.instance.port(),
            restarts: s.restarts,
            last_exit: s.last_exit,
            limits_not_enforced: s.limits_not_enforced,
            started_at: format_timestamp(
                s.started_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            ),
        });
        let isolation = self.isolation(&row);
        EnvInfo {
            url: self.url(&r),
            dir: self.home.env_dir(&r.app, &r.env).display().to_string(),
            app: row.app,
            name: row.name,
            branch: row.branch,
            tier: row.tier,
            deploy_on: row.deploy_on,
            sleep_after,
            made_for_branch: row.made_for_branch,
            status,
            status_reason,
            next_retry_at,
            release: release.as_ref().map(release_info),
            instance,
            isolation,
            plan,
            usage,
            config: None,
            links: None,
            created_at: format_timestamp(row.created_at),
        }
    }
}

/// Seconds since the Unix epoch, rounded up: a retry shown at a whole second has not happened
/// before it.
fn unix_seconds_up(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| {
        i64::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0)).unwrap_or(i64::MAX)
    })
}

/// Where an environment stands: from its instance's status (`now`, when one runs), what
/// routing knows of it, whether it was stopped and whether a release ever went live.
pub(crate) fn env_status(
    routing: &EnvRouting,
    now: Option<&InstanceStatus>,
    stopped: bool,
    released: bool,
) -> (EnvStatus, Option<String>) {
    match (now, released) {
        (Some(s), _) if s.state == InstanceState::Restarting => (
            EnvStatus::Crashing,
            Some(format!(
                "{}, restarted {} times",
                s.last_exit.as_deref().unwrap_or("exited"),
                s.restarts
            )),
        ),
        (Some(_), _) => (EnvStatus::Live, None),
        (None, false) => (EnvStatus::NotDeployed, None),
        (None, true) if routing.stopped || stopped => (EnvStatus::Stopped, None),
        (None, true) if routing.asleep => (EnvStatus::Sleeping, None),
        (None, true) => match &routing.down {
            Some(down) => (EnvStatus::Down, Some(down.why.clone())),
            None => (EnvStatus::Starting, None),
        },
    }
}
