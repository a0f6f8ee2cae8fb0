//! Jobs as users see them: listed, shown, followed and cancelled, each after the same
//! authorization as the rest of the plane.
use futures_util::Stream;
use turnout_model::{AuditAction, EnvRef, JobEvent, JobInfo};

use super::super::ControlPlane;
use crate::error::ControlError;
use crate::store::AuditEntry;
use crate::store::jobs as jq;

/// How many ended jobs `turnout jobs` shows without `--all`.
const RECENT_JOBS: u32 = 20;

impl ControlPlane {
    /// Jobs of the apps `who` has a role on (of one app or environment): queued and running
    /// ones and the most recent others, or all with `all`.
    pub async fn list_jobs(
        &self,
        app: Option<turnout_model::AppName>,
        env: Option<turnout_model::EnvName>,
        all: bool,
        who: &crate::access::Principal,
    ) -> Result<Vec<JobInfo>, ControlError> {
        if let Some(app) = &app {
            self.authorize_app(who, app, turnout_model::Action::Read)
                .await?;
        }
        let recent = (!all).then_some(RECENT_JOBS);
        let (a, e) = (app.clone(), env.clone());
        let rows = self
            .store
            .call(move |c| jq::list_jobs(c, a.as_ref(), e.as_ref(), recent))
            .await?;
        let visible = self.visible_apps(who).await?;
        Ok(rows
            .iter()
            .filter(|r| who.is_admin() || visible.contains(&r.app))
            .map(|r| self.jobs.current(r))
            .collect())
    }

    /// The names of the apps `who` has a role on.
    async fn visible_apps(
        &self,
        who: &crate::access::Principal,
    ) -> Result<std::collections::HashSet<turnout_model::AppName>, ControlError> {
        let apps = self.store.call(|c| crate::store::q::list_apps(c)).await?;
        Ok(apps
            .into_iter()
            .filter(|a| who.role_on(a.id).is_some())
            .map(|a| a.name)
            .collect())
    }

    /// Refuse unless `who` may see job `id` (a role on its app; an administrator for jobs of
    /// deleted apps).
    async fn authorize_job(
        &self,
        id: i64,
        who: &crate::access::Principal,
    ) -> Result<JobInfo, ControlError> {
        let job = self.jobs.get(id).await?;
        if who.is_admin() || self.visible_apps(who).await?.contains(&job.app) {
            Ok(job)
        } else {
            // The same answer as for a job that does not exist: ids reveal nothing.
            Err(ControlError::NotFound(format!(
                "no job {id}; see `turnout jobs --all`"
            )))
        }
    }

    pub async fn job(
        &self,
        id: i64,
        who: &crate::access::Principal,
    ) -> Result<JobInfo, ControlError> {
        self.authorize_job(id, who).await
    }

    /// Every event of the job from its first, then live ones until it ends.
    pub async fn job_events(
        &self,
        id: i64,
        who: &crate::access::Principal,
    ) -> Result<impl Stream<Item = JobEvent> + Send + 'static, ControlError> {
        self.authorize_job(id, who).await?;
        Ok(self.jobs.events(id))
    }

    /// Cancel a job: the role its operation needs on its environment.
    pub async fn cancel_job(
        &self,
        id: i64,
        who: &crate::access::Principal,
    ) -> Result<JobInfo, ControlError> {
        let job = self.authorize_job(id, who).await?;
        let r = EnvRef {
            app: job.app.clone(),
            env: job.env.clone(),
        };
        let env = self.env_row(&r).await?;
        // A run's job is cancelled by whoever may run there; the others by who may deploy.
        let action = match job.kind {
            turnout_model::JobKind::Run => turnout_model::Action::Run,
            _ => turnout_model::Action::Deploy,
        };
        self.authorize_env(who, &env, action).await?;
        let entry = AuditEntry::new(&who.name, AuditAction::JobCancel)
            .app(&r.app)
            .env(&r.env)
            .change(None, Some(format!("job {id} {}", job.kind)));
        self.store.record(entry, "ok".into()).await?;
        self.jobs.cancel(id, &who.name).await
    }
}
