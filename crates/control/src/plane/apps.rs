//! Apps: create, list, update (branch environments, sleep settings per tier), delete.
use tracing::info;
use turnout_model::{
    Action, AppInfo, AppName, AuditAction, CreateApp, DomainName, EnvRef, SleepAfter, Tier,
    UpdateApp,
};

use super::{ControlPlane, app_info, remove_dir, source};
use crate::access::{self, Principal};
use crate::error::ControlError;
use crate::git;
use crate::store::{AppRow, AuditEntry, q};

impl ControlPlane {
    pub async fn create_app(
        &self,
        req: CreateApp,
        who: &Principal,
    ) -> Result<AppInfo, ControlError> {
        access::admin_only(who, "creating apps")?;
        git::check_repo(&req.repo)?;
        if let Some(var) = &req.token_env {
            // Upper-case names only, and never echoed when rejected: a user who pastes the token
            // itself here must not see it again in an error or a log.
            let valid = !var.is_empty()
                && !var.starts_with(|c: char| c.is_ascii_digit())
                && var
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                return Err(ControlError::Invalid(
                    "invalid --token-env: give the name of an environment variable of the daemon (upper-case letters, digits and '_', e.g. GIT_TOKEN), not the token itself".into(),
                ));
            }
        }
        let src = source(&req.repo, req.token_env.as_deref())?;
        git::remote_branches(&src).await?;
        let entry = AuditEntry::new(&who.name, AuditAction::AppCreate)
            .app(&req.name)
            .change(None, Some(src.display()));
        let row = self
            .store
            .mutate(entry, move |c, _| {
                q::insert_app(c, &req.name, &req.repo, req.token_env.as_deref())
            })
            .await?;
        info!(app = %row.name, "app created");
        // Its internal URLs' certificate, when they are served over HTTPS.
        self.apply_tls().await;
        Ok(app_info(&row))
    }

    /// The apps `who` has a role on.
    pub async fn list_apps(&self, who: &Principal) -> Result<Vec<AppInfo>, ControlError> {
        let rows = self.store.call(|c| q::list_apps(c)).await?;
        Ok(rows
            .iter()
            .filter(|a| who.role_on(a.id).is_some())
            .map(app_info)
            .collect())
    }

    /// Change an app's settings (owners): today whether pushes create branch environments.
    pub async fn update_app(
        &self,
        name: AppName,
        req: UpdateApp,
        who: &Principal,
    ) -> Result<AppInfo, ControlError> {
        let row = self.authorize_app(who, &name, Action::Access).await?;
        if let Some(on) = req.branch_envs {
            let shown = |on: bool| Some(format!("branch-envs {}", if on { "on" } else { "off" }));
            let entry = AuditEntry::new(&who.name, AuditAction::AppUpdate)
                .app(&name)
                .change(shown(row.branch_envs), shown(on));
            let id = row.id;
            self.store
                .mutate(entry, move |c, _| q::set_branch_envs(c, id, on))
                .await?;
            info!(app = %name, branch_envs = on, "app updated");
        }
        if !req.sleep_after.is_empty() {
            let shown = |m: &std::collections::BTreeMap<Tier, SleepAfter>| {
                let items: Vec<String> = m.iter().map(|(t, s)| format!("{t}={s}")).collect();
                Some(format!("sleep-after {}", items.join(",")))
            };
            let mut after = row.tier_sleep.clone();
            for (tier, s) in &req.sleep_after {
                match s {
                    Some(s) => after.insert(*tier, *s),
                    None => after.remove(tier),
                };
            }
            let entry = AuditEntry::new(&who.name, AuditAction::AppUpdate)
                .app(&name)
                .change(shown(&row.tier_sleep), shown(&after));
            let (id, changes) = (row.id, req.sleep_after);
            self.store
                .mutate(entry, move |c, _| {
                    changes
                        .into_iter()
                        .try_for_each(|(tier, s)| q::set_tier_sleep(c, id, tier, s))
                })
                .await?;
            info!(app = %name, "app sleep settings updated");
        }
        Ok(app_info(&self.app_row(&name).await?))
    }

    pub(crate) async fn app_row(&self, name: &AppName) -> Result<AppRow, ControlError> {
        let n = name.clone();
        self.store.call(move |c| q::get_app(c, &n)).await
    }

    /// Delete an app. With environments left it refuses unless `force`, which deletes them first.
    pub async fn delete_app(
        &self,
        name: AppName,
        force: bool,
        who: &Principal,
    ) -> Result<(), ControlError> {
        let app_row = self.authorize_app(who, &name, Action::Access).await?;
        let app = name.clone();
        let envs = self
            .store
            .call(move |c| q::list_envs(c, Some(&app)))
            .await?;
        if !envs.is_empty() && !force {
            let names: Vec<_> = envs.iter().map(|e| e.name.as_str()).collect();
            return Err(ControlError::Conflict(format!(
                "app '{name}' still has environments ({}); delete them first or pass --force to delete them too",
                names.join(", ")
            )));
        }
        let app = name.clone();
        let domains: Vec<DomainName> = self
            .store
            .call(move |c| q::list_domains(c))
            .await?
            .into_iter()
            .filter(|d| d.app == app)
            .map(|d| d.name)
            .collect();
        for domain in domains {
            self.remove_domain(domain, who).await?;
        }
        // The pipeline and schedules name environments, which could not be deleted otherwise.
        self.forget_pipeline(&name, app_row.id, who).await?;
        for env in envs {
            self.delete_env(
                EnvRef {
                    app: env.app,
                    env: env.name,
                },
                who,
            )
            .await?;
        }
        let app = name.clone();
        let entry = AuditEntry::new(&who.name, AuditAction::AppDelete).app(&name);
        self.store
            .mutate(entry, move |c, _| q::delete_app(c, &app))
            .await?;
        // Its egress policies went with it (an id the store may give a new app).
        self.egress.forget_app(app_row.id);
        remove_dir(&self.home.app_dir(&name)).await;
        self.remove_repository(&name).await;
        // Its environments' directories, when they live outside the home.
        if let Some(dir) = self.home.app_envs_dir(&name).parent() {
            remove_dir(dir).await;
        }
        info!(app = %name, "app deleted");
        self.apply_tls().await;
        // Its links, both ways, went with it.
        self.links_changed().await;
        Ok(())
    }
}
