//! What deploys an environment by itself (`deploy_on`: manual, push, CI), and the CI hook: a
//! green build deploys its exact commit, never a newer unverified one, to every environment of
//! its app and branch that deploys on CI, as the hook's caller (each deploy authorized and, where
//! the app asks, parked for approval like one typed by hand). The GitHub and GitLab hooks
//! (`plane::hooks`) start their deploys through the same `trigger_deploys`.
use std::sync::Arc;

use tracing::info;
use turnout_model::{
    Action, AppName, AuditAction, CiOutcome, CiReport, CiStatus, DeployOn, DeployRequest, EnvInfo,
    EnvRef, SkippedEnv, TriggeredDeploy,
};

use super::ControlPlane;
use crate::access::Principal;
use crate::error::ControlError;
use crate::store::{AuditEntry, q};
use crate::{git, hooks};

impl ControlPlane {
    pub async fn set_trigger(
        &self,
        r: EnvRef,
        deploy_on: DeployOn,
        who: &Principal,
    ) -> Result<EnvInfo, ControlError> {
        let env = self.env_for(who, &r, Action::Config).await?;
        let entry = AuditEntry::new(&who.name, AuditAction::EnvTrigger)
            .app(&r.app)
            .env(&r.env)
            .change(Some(env.deploy_on.to_string()), Some(deploy_on.to_string()));
        let id = env.id;
        self.store
            .mutate(entry, move |c, _| q::set_deploy_on(c, id, deploy_on))
            .await?;
        info!(app = %r.app, env = %r.env, %deploy_on, "deploy trigger changed");
        self.env_info(self.env_row(&r).await?).await
    }

    /// A CI build's result. Refused (and nothing started) when the report is malformed or the
    /// caller cannot read the app; otherwise each environment of the app that follows the
    /// branch and deploys on CI gets a deploy of the commit, or is listed as skipped with why.
    pub async fn ci_report(
        self: &Arc<Self>,
        report: CiReport,
        who: &Principal,
    ) -> Result<CiOutcome, ControlError> {
        hooks::check_commit(&report.commit).map_err(|e| {
            ControlError::Invalid(format!("{e}; report the commit the build ran on"))
        })?;
        git::check_ref_shape("branch", &report.branch)?;
        let trigger = Trigger {
            app: report.app,
            branch: report.branch,
            commit: report.commit,
            on: DeployOn::Ci,
            succeeded: report.status == CiStatus::Success,
        };
        info!(status = ?report.status, "CI report");
        self.trigger_deploys(trigger, who).await
    }

    /// The one mechanism behind the CI report and the GitHub and GitLab hooks: each
    /// environment of the app that follows the branch and deploys `on` push or CI gets a deploy
    /// of the exact commit, as `who` (authorized and, where the app asks, parked for approval
    /// like one typed by hand), or is listed as skipped with why. `who` must be able to read
    /// the app.
    pub(crate) async fn trigger_deploys(
        self: &Arc<Self>,
        t: Trigger,
        who: &Principal,
    ) -> Result<CiOutcome, ControlError> {
        self.authorize_app(who, &t.app, Action::Read).await?;
        let app = t.app.clone();
        let envs = self
            .store
            .call(move |c| q::list_envs(c, Some(&app)))
            .await?;
        let mut outcome = CiOutcome::default();
        for env in envs.into_iter().filter(|e| e.branch == t.branch) {
            let skip = |why: String| SkippedEnv {
                env: env.name.clone(),
                why,
            };
            if env.deploy_on != t.on {
                outcome.skipped.push(skip(format!(
                    "deploys on {}, not on {} (`turnout env update {}/{} --deploy-on {}`)",
                    env.deploy_on,
                    if t.on == DeployOn::Ci { "CI" } else { "push" },
                    env.app,
                    env.name,
                    t.on
                )));
                continue;
            }
            if !t.succeeded {
                outcome
                    .skipped
                    .push(skip("the build did not succeed: nothing to deploy".into()));
                continue;
            }
            let r = EnvRef {
                app: env.app.clone(),
                env: env.name.clone(),
            };
            let request = DeployRequest {
                git_ref: Some(t.commit.clone()),
            };
            match self.deploy(r, request, who).await {
                Ok(job) => outcome.deploys.push(TriggeredDeploy {
                    env: env.name.clone(),
                    job,
                }),
                Err(e) => outcome.skipped.push(skip(e.to_string())),
            }
        }
        info!(
            app = %t.app, branch = %t.branch, commit = %t.commit, on = %t.on,
            succeeded = t.succeeded, deploys = outcome.deploys.len(), by = %who.name,
            "deploys triggered"
        );
        Ok(outcome)
    }
}

/// What starts deploys by itself: a push of `commit` to `branch`, or a CI build of it.
pub(crate) struct Trigger {
    pub app: AppName,
    pub branch: String,
    /// A full commit id (checked by the caller).
    pub commit: String,
    /// Which environments it is for: those deploying on push, or on CI.
    pub on: DeployOn,
    /// A build that did not succeed deploys nothing; its environments are listed as skipped.
    pub succeeded: bool,
}
