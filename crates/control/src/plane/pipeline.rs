//! An app's declared pipeline (`turnout pipeline set` / `reset`): the stages `pipeline show`
//! draws and the promotions `promote` allows. Without one, promotions follow the tier rule
//! (`Tier::promotes_to`). Either way nothing flows down the tiers, and a production copy may
//! always take its production's release (it follows every one: `follow_production`).
//!
//! A pipeline is checked inside the transaction that stores it, against the environments as
//! they are then, so it never names one that is gone; deleting an environment the pipeline or a
//! schedule names is refused (`check_unreferenced`) until they are changed.
use std::collections::BTreeMap;

use tracing::info;
use turnout_model::{
    Action, AppName, AuditAction, EnvName, PipelineSpec, PipelineView, Tier, check_direction,
};

use super::ControlPlane;
use crate::access::Principal;
use crate::error::ControlError;
use crate::store::pipeline as pq;
use crate::store::{AuditEntry, EnvRow, Tx, q};

/// Whether an environment (`from`, its tier) may be promoted to another: the declared
/// pipeline's promotions, or the tier rule when there is none.
pub(crate) fn allowed(
    declared: Option<&PipelineSpec>,
    from: (&EnvName, Tier),
    to: (&EnvName, Tier),
) -> bool {
    let follows_production = from.1 == Tier::Production && to.1 == Tier::ProductionCopy;
    match declared {
        None => from.1.promotes_to().contains(&to.1),
        Some(p) => {
            follows_production || (p.allows(from.0, to.0) && check_direction(from.1, to.1).is_ok())
        }
    }
}

/// A pipeline in one line: `qa → staging, staging → production`.
fn summary(spec: &PipelineSpec) -> String {
    let stages: Vec<String> = spec.stages.iter().map(|s| stage_name(s)).collect();
    let promotions: Vec<String> = spec.promotions.iter().map(ToString::to_string).collect();
    format!(
        "stages {}; promotions {}",
        stages.join(", "),
        if promotions.is_empty() {
            "none".to_owned()
        } else {
            promotions.join(", ")
        }
    )
}

pub(crate) fn stage_name(members: &[turnout_model::StageMember]) -> String {
    let names: Vec<String> = members.iter().map(ToString::to_string).collect();
    names.join("+")
}

/// Refuse a change that would leave a schedule of the app promoting along a path the app's
/// promotions (`declared`, or the tier rule) no longer allow.
fn check_schedules(
    c: &rusqlite::Connection,
    app: &AppName,
    app_id: i64,
    declared: Option<&PipelineSpec>,
) -> Result<(), ControlError> {
    let envs: BTreeMap<EnvName, Tier> = q::list_envs(c, Some(app))?
        .into_iter()
        .map(|e| (e.name, e.tier))
        .collect();
    for s in pq::schedules(c, Some(app_id))? {
        let ends = (envs.get(&s.from), envs.get(&s.to));
        let ok =
            matches!(ends, (Some(f), Some(t)) if allowed(declared, (&s.from, *f), (&s.to, *t)));
        if !ok {
            return Err(ControlError::Conflict(format!(
                "schedule {} promotes {} → {}, which {} would not allow; remove it first (`turnout pipeline schedule remove {app} {}`) or keep that promotion",
                s.id,
                s.from,
                s.to,
                if declared.is_some() {
                    "this pipeline"
                } else {
                    "the tier rule"
                },
                s.id
            )));
        }
    }
    Ok(())
}

impl ControlPlane {
    /// The app's declared pipeline, if any.
    pub(crate) async fn declared_pipeline(
        &self,
        app_id: i64,
    ) -> Result<Option<PipelineSpec>, ControlError> {
        self.store.call(move |c| pq::pipeline(c, app_id)).await
    }

    /// Declare the app's pipeline (owners of the app). Checked against the app's environments
    /// and schedules in the transaction that stores it; refused, changing nothing, with what is
    /// wrong.
    pub async fn set_pipeline(
        &self,
        app: AppName,
        spec: PipelineSpec,
        who: &Principal,
    ) -> Result<PipelineView, ControlError> {
        let row = self.authorize_app(who, &app, Action::Config).await?;
        let entry = AuditEntry::new(&who.name, AuditAction::PipelineSet)
            .app(&app)
            .change(None, Some(summary(&spec)));
        let (a, by, app_id) = (app.clone(), who.name.clone(), row.id);
        self.store
            .mutate(entry, move |c: &Tx<'_>, entry| {
                let envs: BTreeMap<EnvName, Tier> = q::list_envs(c, Some(&a))?
                    .into_iter()
                    .map(|e| (e.name, e.tier))
                    .collect();
                spec.check(&envs).map_err(|e| {
                    ControlError::Invalid(format!("pipeline of app '{a}' refused: {e}"))
                })?;
                check_schedules(c, &a, app_id, Some(&spec))?;
                entry.from = pq::pipeline(c, app_id)?.as_ref().map(summary);
                pq::set_pipeline(c, app_id, &spec, &by)
            })
            .await?;
        info!(app = %app, "pipeline declared");
        self.pipeline(app, super::PromotionFilter::default(), who)
            .await
    }

    /// Forget the app's declared pipeline: promotions follow the tier rule again. Refused
    /// while a schedule promotes along a path the tier rule does not allow.
    pub async fn reset_pipeline(&self, app: AppName, who: &Principal) -> Result<(), ControlError> {
        let row = self.authorize_app(who, &app, Action::Config).await?;
        let entry = AuditEntry::new(&who.name, AuditAction::PipelineReset)
            .app(&app)
            .change(None, Some("the tier rule".to_owned()));
        let (a, app_id) = (app.clone(), row.id);
        self.store
            .mutate(entry, move |c, entry| {
                check_schedules(c, &a, app_id, None)?;
                entry.from = pq::pipeline(c, app_id)?.as_ref().map(summary);
                pq::delete_pipeline(c, app_id)?;
                Ok(())
            })
            .await?;
        info!(app = %app, "pipeline reset to the tier rule");
        Ok(())
    }

    /// Before an app is deleted: its pipeline and schedules go (recorded), so its environments
    /// can be.
    pub(crate) async fn forget_pipeline(
        &self,
        app: &AppName,
        app_id: i64,
        who: &Principal,
    ) -> Result<(), ControlError> {
        let (declared, schedules) = self
            .store
            .call(move |c| Ok((pq::pipeline(c, app_id)?, pq::schedules(c, Some(app_id))?)))
            .await?;
        if declared.is_none() && schedules.is_empty() {
            return Ok(());
        }
        let entry = AuditEntry::new(&who.name, AuditAction::PipelineReset)
            .app(app)
            .change(
                declared.as_ref().map(summary),
                Some(format!(
                    "deleted with the app ({} schedules)",
                    schedules.len()
                )),
            );
        self.store
            .mutate(entry, move |c, _| {
                pq::delete_pipeline(c, app_id)?;
                for s in schedules {
                    pq::delete_schedule(c, s.id)?;
                }
                Ok(())
            })
            .await?;
        self.schedules_changed.notify_one();
        Ok(())
    }

    /// Refuse to delete `env` while the app's pipeline or one of its schedules names it.
    pub(crate) async fn check_unreferenced(&self, env: &EnvRow) -> Result<(), ControlError> {
        let app_id = env.app_id;
        let (declared, schedules) = self
            .store
            .call(move |c| Ok((pq::pipeline(c, app_id)?, pq::schedules(c, Some(app_id))?)))
            .await?;
        let mut uses = Vec::new();
        if declared
            .as_ref()
            .is_some_and(|p| p.named_envs().contains(&env.name))
        {
            uses.push(format!(
                "the app's pipeline (change it with `turnout pipeline set {}` or `turnout pipeline reset {}`)",
                env.app, env.app
            ));
        }
        for s in schedules
            .iter()
            .filter(|s| s.from == env.name || s.to == env.name)
        {
            uses.push(format!(
                "schedule {} ({} → {}; `turnout pipeline schedule remove {} {}`)",
                s.id, s.from, s.to, env.app, s.id
            ));
        }
        if uses.is_empty() {
            return Ok(());
        }
        Err(ControlError::Conflict(format!(
            "{}/{} is named by {}; change those first, then delete it",
            env.app,
            env.name,
            uses.join(" and by ")
        )))
    }

    /// Refuse promoting `from` to `to` unless the app's promotions allow it; the refusal lists
    /// the allowed ones.
    pub(crate) async fn check_promotion(
        &self,
        from: &EnvRow,
        to: &EnvRow,
    ) -> Result<(), ControlError> {
        let declared = self.declared_pipeline(from.app_id).await?;
        if allowed(
            declared.as_ref(),
            (&from.name, from.tier),
            (&to.name, to.tier),
        ) {
            return Ok(());
        }
        let app = from.app.clone();
        let envs = self
            .store
            .call(move |c| q::list_envs(c, Some(&app)))
            .await?;
        let head = format!(
            "{}/{} ({}) may not be promoted to {}/{} ({})",
            from.app, from.name, from.tier, to.app, to.name, to.tier
        );
        if let Some(p) = declared {
            let list: Vec<String> = p.promotions.iter().map(ToString::to_string).collect();
            return Err(ControlError::Conflict(format!(
                "{head}: the app's pipeline allows {} (`turnout pipeline show {}`; owners change it with `turnout pipeline set`)",
                if list.is_empty() {
                    "no promotion".to_owned()
                } else {
                    list.join(", ")
                },
                from.app
            )));
        }
        let allowed: Vec<String> = envs
            .iter()
            .filter(|e| from.tier.promotes_to().contains(&e.tier))
            .map(|e| format!("{}/{} ({})", e.app, e.name, e.tier))
            .collect();
        let tiers: Vec<&str> = from.tier.promotes_to().iter().map(|t| t.as_str()).collect();
        Err(ControlError::Conflict(format!(
            "{head}: a {} environment promotes to {}; here that is {}",
            from.tier,
            if tiers.is_empty() {
                "no tier".to_owned()
            } else {
                tiers.join(" or ")
            },
            if allowed.is_empty() {
                "no environment".to_owned()
            } else {
                allowed.join(", ")
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> EnvName {
        s.parse().unwrap()
    }

    #[test]
    fn a_declared_pipeline_allows_exactly_its_promotions_and_the_copy_follows_production() {
        let spec = PipelineSpec {
            stages: vec![vec!["qa".parse().unwrap()], vec!["prod".parse().unwrap()]],
            promotions: vec!["qa:staging".parse().unwrap()],
        };
        let (qa, staging, prod, copy) = (name("qa"), name("staging"), name("prod"), name("copy"));
        let d = Some(&spec);
        assert!(allowed(d, (&qa, Tier::Qa), (&staging, Tier::Staging)));
        assert!(!allowed(
            d,
            (&staging, Tier::Staging),
            (&prod, Tier::Production)
        ));
        assert!(allowed(
            d,
            (&prod, Tier::Production),
            (&copy, Tier::ProductionCopy)
        ));
        // Without it, the tier rule.
        assert!(allowed(
            None,
            (&staging, Tier::Staging),
            (&prod, Tier::Production)
        ));
        assert!(!allowed(None, (&qa, Tier::Qa), (&prod, Tier::Production)));
        // A stored pipeline whose tiers no longer fit is still held to the direction rule.
        assert!(!allowed(
            d,
            (&qa, Tier::Production),
            (&staging, Tier::Staging)
        ));
    }
}
