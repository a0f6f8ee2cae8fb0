//! `turnout env diff APP/A APP/B`: the commits between two environments' live releases (from
//! the app's mirror) and the configuration keys set differently (the app file's `[env]` as each
//! release resolved it and the values set through Turnout, resolved by the one rule; secrets
//! compared, their values never shown). `turnout pipeline show
//! APP`: the environments by stage (the declared pipeline's, or by tier), and for every allowed
//! promotion how many commits apart its two ends are.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use turnout_model::{
    Action, AppName, ConfigDifference, ConfigKind, DIFF_COMMITS, EnvDiff, EnvInfo, EnvName, EnvRef,
    PROMOTIONS_SHOWN, PipelineStage, PipelineView, PromotionView, SECRET_SHOWN_AS, Tier,
};

use super::ControlPlane;
use super::pipeline::{allowed, stage_name};
use crate::access::Principal;
use crate::app_file::ReleaseConfig;
use crate::error::ControlError;
use crate::git;
use crate::store::{EnvRow, q};

/// Which promotions `pipeline show` lists: out of `from`, into `to` (both, either, or all).
#[derive(Debug, Clone, Default)]
pub struct PromotionFilter {
    pub from: Option<EnvName>,
    pub to: Option<EnvName>,
}

/// What one side contributes: its commit, its plain values, its secrets.
struct Side {
    commit: Option<String>,
    env: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
}

impl ControlPlane {
    pub async fn env_diff(
        &self,
        a: EnvRef,
        b: EnvName,
        who: &Principal,
    ) -> Result<EnvDiff, ControlError> {
        let b = EnvRef {
            app: a.app.clone(),
            env: b,
        };
        let (row_a, row_b) = (
            self.env_for(who, &a, Action::Read).await?,
            self.env_for(who, &b, Action::Read).await?,
        );
        let (side_a, side_b) = (self.side(&row_a).await?, self.side(&row_b).await?);
        let (mut only_in_b, mut only_in_a, mut truncated) = (Vec::new(), Vec::new(), false);
        if let (Some(ca), Some(cb)) = (&side_a.commit, &side_b.commit) {
            let mirror = self.home.mirror(&a.app);
            let _git = self.app_locks.lock(&a.app).await;
            let (in_b, more_b) = git::log_between(&mirror, ca, cb, DIFF_COMMITS).await?;
            let (in_a, more_a) = git::log_between(&mirror, cb, ca, DIFF_COMMITS).await?;
            (only_in_b, only_in_a, truncated) = (in_b, in_a, more_b || more_a);
        }
        Ok(EnvDiff {
            app: a.app,
            a: a.env,
            b: b.env,
            config: config_differences(&side_a, &side_b),
            a_commit: side_a.commit,
            b_commit: side_b.commit,
            only_in_b,
            only_in_a,
            truncated,
        })
    }

    /// The app's pipeline; `filter` keeps only the promotions out of `from` / into `to`.
    pub async fn pipeline(
        &self,
        app: AppName,
        filter: PromotionFilter,
        who: &Principal,
    ) -> Result<PipelineView, ControlError> {
        let envs = self.list_envs(Some(app.clone()), who).await?;
        for name in [&filter.from, &filter.to].into_iter().flatten() {
            if !envs.iter().any(|e| &e.name == name) {
                return Err(ControlError::NotFound(format!(
                    "environment '{app}/{name}' not found; `turnout env list {app}` lists them"
                )));
            }
        }
        let app_id = self.app_row(&app).await?.id;
        let declared = self.declared_pipeline(app_id).await?;
        let mirror = self.home.mirror(&app);
        let commit = |e: &EnvInfo| e.release.as_ref().map(|r| r.commit.clone());
        let wanted = |from: &EnvInfo, to: &EnvInfo| {
            filter.from.as_ref().is_none_or(|f| f == &from.name)
                && filter.to.as_ref().is_none_or(|t| t == &to.name)
        };
        // Declared promotions first, in their order; then the rest of what is allowed, those
        // between two environments of one branch (the usual way along) before the others,
        // each in stage order. Only the first PROMOTIONS_SHOWN are kept.
        let mut pairs: Vec<(&EnvInfo, &EnvInfo)> = Vec::new();
        let find = |name: &EnvName| envs.iter().find(|e| &e.name == name);
        if let Some(p) = &declared {
            pairs.extend(
                p.promotions
                    .iter()
                    .filter_map(|p| Some((find(&p.from)?, find(&p.to)?)))
                    .filter(|(from, to)| wanted(from, to)),
            );
        }
        let listed: HashSet<(&EnvName, &EnvName)> =
            pairs.iter().map(|(f, t)| (&f.name, &t.name)).collect();
        let mut by_stage: Vec<&EnvInfo> = envs.iter().collect();
        by_stage.sort_by_key(|e| e.tier);
        let mut same_branch = Vec::new();
        let mut others = Vec::new();
        for from in &by_stage {
            for to in &by_stage {
                if wanted(from, to)
                    && allowed(
                        declared.as_ref(),
                        (&from.name, from.tier),
                        (&to.name, to.tier),
                    )
                    && !listed.contains(&(&from.name, &to.name))
                {
                    if from.branch == to.branch {
                        same_branch.push((*from, *to));
                    } else {
                        others.push((*from, *to));
                    }
                }
            }
        }
        pairs.extend(same_branch);
        pairs.extend(others);
        let more_promotions = pairs.len().saturating_sub(PROMOTIONS_SHOWN);
        pairs.truncate(PROMOTIONS_SHOWN);
        // Many environments run the same commit (branch environments cut from one, a release
        // promoted along): git is asked once per pair of different commits, never for two
        // equal ones.
        let mut apart: HashMap<(String, String), (usize, usize)> = HashMap::new();
        let mut promotions = Vec::with_capacity(pairs.len());
        for (from, to) in pairs {
            let (ahead, behind) = match (commit(from), commit(to)) {
                (Some(f), Some(t)) if f == t => (Some(0), Some(0)),
                (Some(f), Some(t)) => {
                    let (ahead, behind) = match apart.get(&(f.clone(), t.clone())) {
                        Some(&known) => known,
                        None => {
                            let _git = self.app_locks.lock(&app).await;
                            let (ahead, _) =
                                git::log_between(&mirror, &t, &f, DIFF_COMMITS).await?;
                            let (behind, _) =
                                git::log_between(&mirror, &f, &t, DIFF_COMMITS).await?;
                            let known = (ahead.len(), behind.len());
                            apart.insert((f, t), known);
                            known
                        }
                    };
                    (Some(ahead), Some(behind))
                }
                _ => (None, None),
            };
            promotions.push(PromotionView {
                from: from.name.clone(),
                to: to.name.clone(),
                ahead,
                behind,
            });
        }
        let (stages, unstaged) = match &declared {
            Some(p) => {
                let stages = p
                    .stages
                    .iter()
                    .enumerate()
                    .map(|(i, members)| PipelineStage {
                        name: stage_name(members),
                        tier: None,
                        envs: envs
                            .iter()
                            .filter(|e| p.stage_of(&e.name, e.tier) == Some(i))
                            .cloned()
                            .collect(),
                    })
                    .collect();
                let unstaged = envs
                    .iter()
                    .filter(|e| p.stage_of(&e.name, e.tier).is_none())
                    .map(|e| e.name.clone())
                    .collect();
                (stages, unstaged)
            }
            None => {
                let stages = Tier::ALL
                    .into_iter()
                    .map(|tier| PipelineStage {
                        name: tier.to_string(),
                        tier: Some(tier),
                        envs: envs.iter().filter(|e| e.tier == tier).cloned().collect(),
                    })
                    .filter(|s| !s.envs.is_empty())
                    .collect();
                (stages, Vec::new())
            }
        };
        let schedules = self.list_schedules(app.clone(), who).await?;
        Ok(PipelineView {
            app,
            stages,
            promotions,
            more_promotions,
            declared,
            unstaged,
            schedules,
        })
    }

    /// The configuration an instance of `row` gets from the app file (its live release's)
    /// and from values set through Turnout now, resolved by the one rule.
    async fn side(&self, row: &EnvRow) -> Result<Side, ControlError> {
        let release = match row.current_release_id {
            Some(id) => Some(self.store.call(move |c| q::get_release(c, id)).await?),
            None => None,
        };
        let mut env = match &release {
            Some(r) => {
                serde_json::from_str::<ReleaseConfig>(&r.config)
                    .map_err(|e| ControlError::internal(format!("release {}: {e}", r.id)))?
                    .env
            }
            None => BTreeMap::new(),
        };
        let mut secrets = BTreeMap::new();
        let mut set = self.set_values(row).await?;
        // Least specific first, so the most specific level is written last and wins.
        set.sort_by_key(|(_, v)| v.level);
        for (key, v) in set {
            if v.secret {
                env.remove(&key);
                secrets.insert(key, v.value);
            } else {
                secrets.remove(&key);
                env.insert(key, v.value);
            }
        }
        Ok(Side {
            commit: release.map(|r| r.commit),
            env,
            secrets,
        })
    }
}

/// Every key whose value differs, `[env]` first, then secrets (compared, never shown).
fn config_differences(a: &Side, b: &Side) -> Vec<ConfigDifference> {
    let mut out = differing(&a.env, &b.env, ConfigKind::Env, |v| v.clone());
    out.extend(differing(
        &a.secrets,
        &b.secrets,
        ConfigKind::Secret,
        |_| SECRET_SHOWN_AS.to_owned(),
    ));
    out
}

fn differing(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
    kind: ConfigKind,
    shown: impl Fn(&String) -> String,
) -> Vec<ConfigDifference> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| ConfigDifference {
            key: k.clone(),
            kind,
            a: a.get(k).map(&shown),
            b: b.get(k).map(&shown),
        })
        .collect()
}
