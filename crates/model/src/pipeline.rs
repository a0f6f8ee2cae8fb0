//! An app's declared pipeline (`turnout pipeline set`): its stages in order and the promotions
//! it allows, checked here without I/O; and scheduled cuts (`turnout pipeline schedule`).
//!
//! Without a declared pipeline, promotions follow the tier rule ([`Tier::promotes_to`]). With
//! one, exactly its promotions are allowed, and every one of them must still go up (or across)
//! the tiers ([`check_direction`]): nothing ever flows down.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{AppName, EnvName, Tier};

/// The most stages, members of one stage, and promotions a pipeline may declare.
pub const MAX_STAGES: usize = 16;
pub const MAX_STAGE_MEMBERS: usize = 16;
pub const MAX_PROMOTIONS: usize = 64;

/// What a stage holds: one environment, or every environment of a tier (`tier:test`, for branch
/// environments that come and go).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StageMember {
    Env(EnvName),
    Tier(Tier),
}

impl FromStr for StageMember {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("tier:") {
            Some(tier) => tier
                .parse()
                .map(StageMember::Tier)
                .map_err(|e: crate::UnknownTier| format!("stage member '{s}': {e}")),
            None => s.parse().map(StageMember::Env).map_err(|e| {
                format!("stage member: {e}; write tier:NAME for every environment of a tier")
            }),
        }
    }
}

impl fmt::Display for StageMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StageMember::Env(e) => write!(f, "{e}"),
            StageMember::Tier(t) => write!(f, "tier:{t}"),
        }
    }
}

impl Serialize for StageMember {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StageMember {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One allowed promotion, `FROM:TO` on the command line (environment names of the app).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    pub from: EnvName,
    pub to: EnvName,
}

impl FromStr for Promotion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (from, to) = s.split_once(':').ok_or_else(|| {
            format!(
                "promotion '{}': write it as FROM:TO with environment names, for example qa:staging",
                s.chars().take(80).collect::<String>()
            )
        })?;
        Ok(Promotion {
            from: from.parse().map_err(|e| format!("promotion '{s}': {e}"))?,
            to: to.parse().map_err(|e| format!("promotion '{s}': {e}"))?,
        })
    }
}

impl fmt::Display for Promotion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {}", self.from, self.to)
    }
}

/// The body of `POST /api/v1/apps/{app}/pipeline`, and what is stored: the stages left to
/// right, each one or more members, and the promotions allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub stages: Vec<Vec<StageMember>>,
    pub promotions: Vec<Promotion>,
}

impl PipelineSpec {
    /// Whether the pipeline allows promoting `from` to `to`.
    pub fn allows(&self, from: &EnvName, to: &EnvName) -> bool {
        self.promotions
            .iter()
            .any(|p| &p.from == from && &p.to == to)
    }

    /// The stage (index) an environment of `tier` named `env` is drawn in: the one naming it,
    /// else the first listing its tier.
    pub fn stage_of(&self, env: &EnvName, tier: Tier) -> Option<usize> {
        let named = self
            .stages
            .iter()
            .position(|s| s.contains(&StageMember::Env(env.clone())));
        named.or_else(|| {
            self.stages
                .iter()
                .position(|s| s.contains(&StageMember::Tier(tier)))
        })
    }

    /// Every environment the pipeline names (in a stage or a promotion).
    pub fn named_envs(&self) -> BTreeSet<&EnvName> {
        let in_stages = self.stages.iter().flatten().filter_map(|m| match m {
            StageMember::Env(e) => Some(e),
            StageMember::Tier(_) => None,
        });
        let in_promotions = self.promotions.iter().flat_map(|p| [&p.from, &p.to]);
        in_stages.chain(in_promotions).collect()
    }

    /// Refuse a pipeline that is too big, names an environment `envs` (the app's, with their
    /// tiers) does not hold, repeats a member or a promotion, leaves a promotion's end out of
    /// every stage, has a cycle, or lets anything flow down the tiers. The message names the
    /// first problem found and how to fix it.
    pub fn check(&self, envs: &BTreeMap<EnvName, Tier>) -> Result<(), String> {
        if self.stages.is_empty() || self.stages.len() > MAX_STAGES {
            return Err(format!(
                "a pipeline has 1 to {MAX_STAGES} stages; this one has {}",
                self.stages.len()
            ));
        }
        if self.promotions.len() > MAX_PROMOTIONS {
            return Err(format!(
                "a pipeline allows at most {MAX_PROMOTIONS} promotions; this one lists {}",
                self.promotions.len()
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, stage) in self.stages.iter().enumerate() {
            if stage.is_empty() || stage.len() > MAX_STAGE_MEMBERS {
                return Err(format!(
                    "stage {} has {} members; a stage has 1 to {MAX_STAGE_MEMBERS}",
                    i + 1,
                    stage.len()
                ));
            }
            for member in stage {
                if !seen.insert(member) {
                    return Err(format!(
                        "{member} is listed twice in the stages; list each environment and tier once"
                    ));
                }
                if let StageMember::Env(e) = member {
                    known(envs, e)?;
                }
            }
        }
        let mut promotions = BTreeSet::new();
        for p in &self.promotions {
            if !promotions.insert(p) {
                return Err(format!("the promotion {p} is listed twice"));
            }
            if p.from == p.to {
                return Err(format!(
                    "the promotion {p} goes from an environment to itself"
                ));
            }
            for env in [&p.from, &p.to] {
                let tier = known(envs, env)?;
                if self.stage_of(env, tier).is_none() {
                    return Err(format!(
                        "the promotion {p} names {env} (tier {tier}), which is in no stage; add {env} or tier:{tier} to --stages"
                    ));
                }
            }
        }
        let edges: Vec<(&EnvName, &EnvName)> =
            self.promotions.iter().map(|p| (&p.from, &p.to)).collect();
        if let Some(cycle) = find_cycle(&edges) {
            let path: Vec<String> = cycle.iter().map(|e| e.to_string()).collect();
            return Err(format!(
                "the promotions make a cycle: {}; a release must only move forward, so drop one of them",
                path.join(" → ")
            ));
        }
        for p in &self.promotions {
            check_direction(envs[&p.from], envs[&p.to])
                .map_err(|why| format!("the promotion {p} is not allowed: {why}"))?;
        }
        Ok(())
    }
}

fn known(envs: &BTreeMap<EnvName, Tier>, env: &EnvName) -> Result<Tier, String> {
    envs.get(env).copied().ok_or_else(|| {
        let tier_hint = if env.as_str().parse::<Tier>().is_ok() {
            format!(" (for every environment of tier {env}, write tier:{env})")
        } else {
            String::new()
        };
        let names: Vec<&str> = envs.keys().map(EnvName::as_str).collect();
        format!(
            "the app has no environment '{env}'{tier_hint}; its environments: {}",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )
    })
}

/// How far along the pipeline a tier sits. A release (hotfix) environment sits beside staging:
/// it feeds staging and production, and staging may hand it a release to fix.
fn level(tier: Tier) -> u8 {
    match tier {
        Tier::Development => 0,
        Tier::Test => 1,
        Tier::Qa => 2,
        Tier::Staging | Tier::Release => 3,
        Tier::Production => 4,
        Tier::ProductionCopy => 5,
    }
}

/// Whether a declared pipeline may promote an environment of tier `from` to one of tier `to`:
/// never to a lower tier; into production only from staging, release or production (what
/// reaches production passed a stage made to try it); into a production copy only from
/// production. Every promotion the tier rule allows passes.
pub fn check_direction(from: Tier, to: Tier) -> Result<(), String> {
    if level(to) < level(from) {
        return Err(format!(
            "{from} is further along than {to}, and nothing flows down the pipeline"
        ));
    }
    match to {
        Tier::Production if level(from) < level(Tier::Staging) => Err(format!(
            "production only takes releases from staging, release or production, not from {from}"
        )),
        Tier::ProductionCopy if from != Tier::Production => Err(format!(
            "a production copy only follows production, not {from}"
        )),
        _ => Ok(()),
    }
}

/// A cycle in the directed graph `edges`, as the nodes along it with the first repeated at the
/// end (`qa → staging → qa`); None when there is none.
pub fn find_cycle<N: Ord + Clone>(edges: &[(N, N)]) -> Option<Vec<N>> {
    let mut next: BTreeMap<&N, Vec<&N>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a).or_default().push(b);
    }
    // 0 unvisited, 1 on the current path, 2 done.
    let mut state: BTreeMap<&N, u8> = BTreeMap::new();
    for start in next.keys().copied() {
        if state.get(start).copied().unwrap_or(0) != 0 {
            continue;
        }
        // An explicit stack: (node, index of the next edge to follow).
        let mut path: Vec<(&N, usize)> = vec![(start, 0)];
        state.insert(start, 1);
        while let Some((node, i)) = path.last_mut() {
            let node = *node;
            let out = next.get(node).map_or(&[][..], Vec::as_slice);
            if let Some(&to) = out.get(*i) {
                *i += 1;
                match state.get(to).copied().unwrap_or(0) {
                    0 => {
                        state.insert(to, 1);
                        path.push((to, 0));
                    }
                    1 => {
                        let from = path.iter().position(|(n, _)| *n == to).unwrap_or(0);
                        let mut cycle: Vec<N> =
                            path[from..].iter().map(|(n, _)| (*n).clone()).collect();
                        cycle.push(to.clone());
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                state.insert(node, 2);
                path.pop();
            }
        }
    }
    None
}

/// The body of `POST /api/v1/apps/{app}/pipeline/schedules`: promote `from` to `to` at every
/// tick of `cron` in time zone `tz`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    pub from: EnvName,
    pub to: EnvName,
    /// Five fields (minute hour day month weekday), or six with seconds first; names such as
    /// `FRI` and `JAN` are understood.
    pub cron: String,
    /// An IANA time zone (`Europe/Berlin`); UTC when absent.
    #[serde(default)]
    pub tz: Option<String>,
}

/// The longest cron expression and time zone name accepted.
pub const MAX_CRON_LEN: usize = 120;
pub const MAX_TZ_LEN: usize = 64;
/// The most schedules one app may have.
pub const MAX_SCHEDULES: usize = 32;

/// A scheduled cut, as `turnout pipeline schedule list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleInfo {
    pub id: i64,
    pub app: AppName,
    pub from: EnvName,
    pub to: EnvName,
    pub cron: String,
    pub tz: String,
    /// Who made it: each cut runs as this user, with the rights they hold when it runs.
    pub created_by: String,
    pub created_at: String,
    /// The last tick handled (a run, or a refusal), or when the schedule was made.
    pub last_tick: String,
    /// The next tick, in the schedule's time zone (RFC 3339 with its offset).
    pub next_tick: Option<String>,
    /// What the last tick did: the job it started, or why it could not.
    pub last_result: Option<String>,
    pub last_job: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envs(list: &[(&str, Tier)]) -> BTreeMap<EnvName, Tier> {
        list.iter().map(|(n, t)| (n.parse().unwrap(), *t)).collect()
    }

    fn spec(stages: &[&str], promotions: &[&str]) -> PipelineSpec {
        PipelineSpec {
            stages: stages
                .iter()
                .map(|s| s.split('+').map(|m| m.parse().unwrap()).collect())
                .collect(),
            promotions: promotions.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    fn shop() -> BTreeMap<EnvName, Tier> {
        envs(&[
            ("dev", Tier::Development),
            ("qa", Tier::Qa),
            ("qa2", Tier::Qa),
            ("staging", Tier::Staging),
            ("release", Tier::Release),
            ("production", Tier::Production),
            ("copy", Tier::ProductionCopy),
        ])
    }

    #[test]
    fn the_issue_s_pipeline_is_accepted() {
        let s = spec(
            &["qa", "staging+release", "production"],
            &[
                "qa:staging",
                "staging:production",
                "release:staging",
                "release:production",
            ],
        );
        assert_eq!(s.check(&shop()), Ok(()));
        assert!(s.allows(&"qa".parse().unwrap(), &"staging".parse().unwrap()));
        assert!(!s.allows(&"qa".parse().unwrap(), &"production".parse().unwrap()));
    }

    #[test]
    fn bad_pipelines_are_refused_with_what_is_wrong() {
        let err = |stages: &[&str], promotions: &[&str]| {
            spec(stages, promotions).check(&shop()).unwrap_err()
        };
        let e = err(&["qa", "staging"], &["qa:staging", "staging:qa"]);
        assert!(e.contains("cycle: qa → staging → qa"), "{e}");
        let e = err(&["qa+qa2"], &["qa:qa2", "qa2:qa"]);
        assert!(e.contains("cycle: qa → qa2 → qa"), "{e}");
        let e = err(&["qa", "nope"], &[]);
        assert!(
            e.contains("no environment 'nope'") && e.contains("qa2"),
            "{e}"
        );
        let e = err(&["qa", "test"], &[]);
        assert!(e.contains("write tier:test"), "{e}");
        let e = err(&["qa", "staging", "qa"], &[]);
        assert!(e.contains("qa is listed twice"), "{e}");
        let e = err(&["qa", "staging"], &["qa:staging", "qa:staging"]);
        assert!(e.contains("qa → staging is listed twice"), "{e}");
        let e = err(&["qa"], &["qa:staging"]);
        assert!(
            e.contains("staging (tier staging), which is in no stage"),
            "{e}"
        );
        let e = err(&["staging", "qa"], &["staging:qa"]);
        assert!(e.contains("nothing flows down"), "{e}");
        let e = err(&["dev", "production"], &["dev:production"]);
        assert!(
            e.contains("production only takes releases from staging"),
            "{e}"
        );
        let e = err(&["staging", "copy"], &["staging:copy"]);
        assert!(e.contains("only follows production"), "{e}");
        let e = err(&["qa"], &["qa:qa"]);
        assert!(e.contains("to itself"), "{e}");
        let e = spec(&[], &[]).check(&shop()).unwrap_err();
        assert!(e.contains("1 to 16 stages"), "{e}");
        let many: Vec<String> = (0..=MAX_STAGES).map(|i| format!("e{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(spec(&many, &[]).check(&shop()).is_err());
    }

    #[test]
    fn tier_members_cover_their_environments_and_a_named_one_wins() {
        let s = spec(&["tier:qa", "qa2", "staging"], &["qa:staging"]);
        assert_eq!(s.check(&shop()), Ok(()));
        assert_eq!(s.stage_of(&"qa".parse().unwrap(), Tier::Qa), Some(0));
        assert_eq!(s.stage_of(&"qa2".parse().unwrap(), Tier::Qa), Some(1));
        assert_eq!(s.stage_of(&"dev".parse().unwrap(), Tier::Development), None);
    }

    #[test]
    fn members_and_promotions_parse_and_print_the_same() {
        for m in ["qa", "tier:production-copy"] {
            assert_eq!(m.parse::<StageMember>().unwrap().to_string(), m);
        }
        assert!(
            "tier:prod"
                .parse::<StageMember>()
                .unwrap_err()
                .contains("unknown tier")
        );
        assert!("Q A".parse::<StageMember>().is_err());
        assert!(
            "qa-staging"
                .parse::<Promotion>()
                .unwrap_err()
                .contains("FROM:TO")
        );
        let json = serde_json::to_string(&spec(&["tier:qa+staging"], &["qa:staging"])).unwrap();
        assert_eq!(
            json,
            r#"{"stages":[["tier:qa","staging"]],"promotions":[{"from":"qa","to":"staging"}]}"#
        );
        let back: PipelineSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec(&["tier:qa+staging"], &["qa:staging"]));
    }

    #[test]
    fn every_promotion_of_the_tier_rule_passes_the_direction_check() {
        for from in Tier::ALL {
            for to in from.promotes_to() {
                assert_eq!(check_direction(from, *to), Ok(()), "{from} → {to}");
            }
            for to in Tier::ALL {
                if check_direction(from, to).is_ok() {
                    assert!(level(to) >= level(from), "{from} → {to} goes down");
                }
            }
        }
    }

    mod props {
        use super::super::find_cycle;
        use proptest::prelude::*;

        proptest! {
            /// Edges that only go from a lower to a higher number never make a cycle; adding
            /// one edge back makes one, and the cycle found is a real path of the graph.
            #[test]
            fn cycles_are_found_exactly_when_there_is_one(
                edges in proptest::collection::vec((0u8..12, 0u8..12), 0..40),
            ) {
                let forward: Vec<(u8, u8)> = edges
                    .iter()
                    .filter(|(a, b)| a < b)
                    .copied()
                    .collect();
                prop_assert_eq!(find_cycle(&forward), None);
                if let Some(&(a, b)) = forward.first() {
                    let mut with_back = forward.clone();
                    with_back.push((b, a));
                    let cycle = find_cycle(&with_back).expect("a back edge makes a cycle");
                    prop_assert!(cycle.len() >= 3);
                    prop_assert_eq!(cycle.first(), cycle.last());
                    for pair in cycle.windows(2) {
                        prop_assert!(with_back.contains(&(pair[0], pair[1])));
                    }
                }
            }
        }
    }
}
