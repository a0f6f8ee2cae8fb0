//! What deploys an environment by itself (`deploy_on`: manual, push, CI), and the CI hook: a
//! green build deploys its exact commit, never a newer unverified one, to every environment of
//! its app and branch that deploys on CI, as the hook's caller (each deploy authorized and, where
//! the app asks, parked for approval like one typed by hand).
use std::sync::Arc;

use tracing::info;
use turnout_model::{
    Action, AuditAction, CiOutcome, CiReport, CiStatus, DeployOn, DeployRequest, EnvInfo, EnvRef,
    SkippedEnv, TriggeredDeploy,
};

use super::ControlPlane;
use crate::access::Principal;
use crate::error::ControlError;
use crate::git;
use crate::store::{AuditEntry, q};

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
        if report.commit.len() != 40 || !report.commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ControlError::Invalid(format!(
                "commit {:?} is not a full commit id (40 hexadecimal digits); report the commit the build ran on",
                report.commit
            )));
        }
        git::check_ref_shape("branch", &report.branch)?;
        self.authorize_app(who, &report.app, Action::Read).await?;
        let app = report.app.clone();
        let envs = self
            .store
            .call(move |c| q::list_envs(c, Some(&app)))
            .await?;
        let mut outcome = CiOutcome::default();
        for env in envs.into_iter().filter(|e| e.branch == report.branch) {
            let skip = |why: String| SkippedEnv {
                env: env.name.clone(),
                why,
            };
            if env.deploy_on != DeployOn::Ci {
                outcome.skipped.push(skip(format!(
                    "deploys on {}, not on CI (`turnout env update {}/{} --deploy-on ci`)",
                    env.deploy_on, env.app, env.name
                )));
                continue;
            }
            if report.status != CiStatus::Success {
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
                git_ref: Some(report.commit.clone()),
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
            app = %report.app, branch = %report.branch, commit = %report.commit,
            status = ?report.status, deploys = outcome.deploys.len(), "CI report"
        );
        Ok(outcome)
    }
}
