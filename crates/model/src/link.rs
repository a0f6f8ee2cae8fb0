//! Apps wired together stage by stage: `turnout link APP OTHER [--as NAME] [--default ENV]`
//! gives each environment of APP a variable `NAME_URL` naming the environment of OTHER that
//! stands at its stage. The rule that picks that environment ([`resolve`]) and the variable's
//! name ([`link_var`]) are here, pure, so the daemon, the CLI and the tests share them.
use serde::{Deserialize, Serialize};

use crate::{AppName, EnvName, Tier};

/// The longest NAME of `--as NAME` (the variable is `NAME_URL`).
pub const MAX_LINK_NAME: usize = 60;

/// Variables Turnout sets itself (besides `TURNOUT_*` and `PORT`), which a link may not take.
const RESERVED: &[&str] = &[
    "DATABASE_URL",
    "SMTP_URL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// The variable a link sets: `NAME_URL` for `--as NAME`, else `OTHER_URL`; upper-cased, `-` as
/// `_`. Refused: anything but letters, digits, `-` and `_`, a leading digit, more than
/// [`MAX_LINK_NAME`] characters, or a variable Turnout sets itself.
pub fn link_var(other: &AppName, name: Option<&str>) -> Result<String, String> {
    let given = name.unwrap_or(other.as_str());
    let shown: String = given.chars().take(MAX_LINK_NAME).collect();
    let upper = given.to_ascii_uppercase().replace('-', "_");
    let valid = !upper.is_empty()
        && upper.len() <= MAX_LINK_NAME
        && !upper.starts_with(|c: char| c.is_ascii_digit())
        && upper
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(format!(
            "'{shown}' cannot name a link: use letters, digits, '-' and '_', not starting with a digit, at most {MAX_LINK_NAME} characters (the variable is NAME_URL)"
        ));
    }
    let var = format!("{upper}_URL");
    if var.starts_with("TURNOUT_") || RESERVED.contains(&var.as_str()) {
        return Err(format!(
            "{var} is set by Turnout itself (like TURNOUT_*, PORT and DATABASE_URL); name the link otherwise with --as NAME"
        ));
    }
    Ok(var)
}

/// An environment as resolution sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEnv {
    pub name: EnvName,
    pub tier: Tier,
    /// The branch it follows.
    pub branch: String,
    /// A push made it for its branch.
    pub made_for_branch: bool,
}

/// Which rule found the counterpart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkRule {
    /// The environment of OTHER following the same branch (branch environments).
    Branch,
    /// OTHER's environment of the same name.
    Name,
    /// OTHER's one environment of the same tier.
    Tier,
    /// The link's declared default.
    Default,
}

impl LinkRule {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkRule::Branch => "same branch",
            LinkRule::Name => "same name",
            LinkRule::Tier => "same tier",
            LinkRule::Default => "default",
        }
    }
}

/// The environment of OTHER an environment of APP reaches through a link, or why none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Found {
        env: EnvName,
        rule: LinkRule,
    },
    /// No counterpart: why, and what would make one.
    Missing(String),
}

/// Whether `tier` is on production's side of the line a link never crosses: production
/// calls production only, and nothing else calls production (a production copy included:
/// it must never write to the real thing).
fn production(tier: Tier) -> bool {
    tier == Tier::Production
}

/// The environment of OTHER (`others`) at `env`'s stage, by the first rule that finds one:
/// 1. a branch environment (test or development tier) reaches OTHER's test or development
///    environment of the same branch;
/// 2. OTHER's environment of the same name;
/// 3. OTHER's one environment of the same tier not made for a branch (two or more is
///    ambiguous, never a guess) — for a branch environment, the stage it branches from;
/// 4. the link's declared `default`;
///
/// and never across production: a production environment reaches production only, and any
/// other environment never reaches production, whatever rule or default would say.
pub fn resolve(env: &LinkEnv, others: &[LinkEnv], default: Option<&EnvName>) -> Resolution {
    let side = production(env.tier);
    let same_side: Vec<&LinkEnv> = others
        .iter()
        .filter(|o| production(o.tier) == side)
        .collect();
    let branchy = |t: Tier| matches!(t, Tier::Development | Tier::Test);
    if branchy(env.tier) {
        let same_branch: Vec<&&LinkEnv> = same_side
            .iter()
            .filter(|o| branchy(o.tier) && o.branch == env.branch)
            .collect();
        let pick = match same_branch.as_slice() {
            [one] => Some(one),
            several => several.iter().find(|o| o.name == env.name),
        };
        if let Some(o) = pick {
            return found(o, LinkRule::Branch);
        }
    }
    if let Some(o) = same_side.iter().find(|o| o.name == env.name) {
        return found(o, LinkRule::Name);
    }
    // Another feature's branch environment is never a stage: only the branch rule reaches it.
    let same_tier: Vec<&&LinkEnv> = same_side
        .iter()
        .filter(|o| o.tier == env.tier && !o.made_for_branch)
        .collect();
    let ambiguous = match same_tier.as_slice() {
        [one] => return found(one, LinkRule::Tier),
        [] => None,
        several => Some(names(several.iter().map(|o| &o.name))),
    };
    if let Some(default) = default {
        return match others.iter().find(|o| o.name == *default) {
            Some(o) if production(o.tier) == side => found(o, LinkRule::Default),
            Some(o) => Resolution::Missing(format!(
                "the default {default} is {} and {} is {}: a link never crosses production",
                o.tier, env.name, env.tier
            )),
            None => Resolution::Missing(format!(
                "the default {default} does not exist; create it or set another default"
            )),
        };
    }
    Resolution::Missing(match ambiguous {
        Some(several) => format!(
            "ambiguous: {several} are all {}; declare one with --default ENV",
            env.tier
        ),
        None => format!(
            "no environment named {} or of tier {}{}; create one or declare a default with --default ENV",
            env.name,
            env.tier,
            if branchy(env.tier) {
                format!(" or following branch {}", env.branch)
            } else {
                String::new()
            }
        ),
    })
}

fn found(o: &LinkEnv, rule: LinkRule) -> Resolution {
    Resolution::Found {
        env: o.name.clone(),
        rule,
    }
}

fn names<'a>(names: impl Iterator<Item = &'a EnvName>) -> String {
    names.map(EnvName::as_str).collect::<Vec<_>>().join(", ")
}

/// The body of `POST /api/v1/apps/{app}/links`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    pub other: AppName,
    /// NAME of `NAME_URL`; OTHER's name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// OTHER's environment for environments no rule resolves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<EnvName>,
}

/// One link of an app and, for each of its environments, where it leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LinkInfo {
    pub app: AppName,
    pub other: AppName,
    /// The variable each environment gets.
    pub var: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<EnvName>,
    pub created_by: String,
    pub created_at: i64,
    pub envs: Vec<LinkTarget>,
}

/// Where one environment's link leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LinkTarget {
    pub env: EnvName,
    /// OTHER's environment, and the rule that found it; both absent when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<EnvName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<LinkRule>,
    /// The variable's value, when resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Why there is no counterpart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

/// One link of its app as an environment sees it (`env show`): the variable, and where it leads
/// or why nowhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvLink {
    pub var: String,
    pub other: AppName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<EnvName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<LinkRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str, tier: Tier, branch: &str) -> LinkEnv {
        LinkEnv {
            name: name.parse().unwrap(),
            tier,
            branch: branch.to_owned(),
            made_for_branch: false,
        }
    }

    fn branch_env(name: &str, branch: &str) -> LinkEnv {
        LinkEnv {
            made_for_branch: true,
            ..env(name, Tier::Test, branch)
        }
    }

    fn api() -> Vec<LinkEnv> {
        vec![
            env("development", Tier::Development, "main"),
            env("staging", Tier::Staging, "release"),
            env("production", Tier::Production, "stable"),
            env("qa-api", Tier::Qa, "main"),
            branch_env("test-login", "login"),
        ]
    }

    fn to(r: Resolution) -> (String, LinkRule) {
        match r {
            Resolution::Found { env, rule } => (env.to_string(), rule),
            Resolution::Missing(why) => panic!("missing: {why}"),
        }
    }

    fn missing(r: Resolution) -> String {
        match r {
            Resolution::Missing(why) => why,
            found => panic!("expected missing, found {found:?}"),
        }
    }

    #[test]
    fn same_name_wins_over_tier() {
        let e = env("staging", Tier::Staging, "main");
        assert_eq!(
            to(resolve(&e, &api(), None)),
            ("staging".into(), LinkRule::Name)
        );
    }

    #[test]
    fn same_tier_when_no_name_matches() {
        let e = env("qa", Tier::Qa, "main");
        assert_eq!(
            to(resolve(&e, &api(), None)),
            ("qa-api".into(), LinkRule::Tier)
        );
    }

    #[test]
    fn branch_environment_reaches_the_same_branch() {
        let e = branch_env("test-login-web", "login");
        assert_eq!(
            to(resolve(&e, &api(), None)),
            ("test-login".into(), LinkRule::Branch)
        );
    }

    #[test]
    fn branch_environment_without_a_counterpart_falls_back_to_its_stage() {
        let e = branch_env("test-signup", "signup");
        // Another feature's branch environment is not a stage.
        let why = missing(resolve(&e, &api(), None));
        assert!(why.contains("following branch signup"), "{why}");
        let mut others = api();
        others.push(env("test", Tier::Test, "main"));
        assert_eq!(
            to(resolve(&e, &others, None)),
            ("test".into(), LinkRule::Tier)
        );
    }

    #[test]
    fn several_of_a_tier_is_ambiguous_not_a_guess() {
        let mut others = api();
        others.push(env("qa-two", Tier::Qa, "main"));
        let e = env("qa", Tier::Qa, "main");
        let why = missing(resolve(&e, &others, None));
        assert!(
            why.contains("ambiguous") && why.contains("qa-api, qa-two"),
            "{why}"
        );
        let default: EnvName = "qa-two".parse().unwrap();
        assert_eq!(
            to(resolve(&e, &others, Some(&default))),
            ("qa-two".into(), LinkRule::Default)
        );
    }

    #[test]
    fn default_when_nothing_else() {
        let e = env("release", Tier::Release, "main");
        assert!(missing(resolve(&e, &api(), None)).contains("no environment named release"));
        let default: EnvName = "staging".parse().unwrap();
        assert_eq!(
            to(resolve(&e, &api(), Some(&default))),
            ("staging".into(), LinkRule::Default)
        );
        let gone: EnvName = "nowhere".parse().unwrap();
        assert!(missing(resolve(&e, &api(), Some(&gone))).contains("does not exist"));
    }

    #[test]
    fn never_across_production() {
        // A production environment with no production counterpart finds nothing by name, tier,
        // or a default below production.
        let only_low = vec![
            env("production", Tier::Staging, "main"),
            env("staging", Tier::Staging, "main"),
        ];
        let prod = env("production", Tier::Production, "main");
        let staging: EnvName = "staging".parse().unwrap();
        let why = missing(resolve(&prod, &only_low, Some(&staging)));
        assert!(why.contains("never crosses production"), "{why}");
        // And nothing below production reaches production: not by name, tier, branch or
        // default.
        let only_prod = vec![env("staging", Tier::Production, "main")];
        let production: EnvName = "staging".parse().unwrap();
        for e in [
            env("staging", Tier::Staging, "main"),
            env("development", Tier::Development, "main"),
            env("copy", Tier::ProductionCopy, "main"),
        ] {
            let why = missing(resolve(&e, &only_prod, Some(&production)));
            assert!(why.contains("never crosses production"), "{why}");
        }
        // A development environment on production's branch does not follow it there.
        let e = env("development", Tier::Development, "stable");
        assert_eq!(
            to(resolve(&e, &api(), None)),
            ("development".into(), LinkRule::Name)
        );
    }

    #[test]
    fn variable_names() {
        let api: AppName = "billing-api".parse().unwrap();
        assert_eq!(link_var(&api, None).unwrap(), "BILLING_API_URL");
        assert_eq!(link_var(&api, Some("backend")).unwrap(), "BACKEND_URL");
        for bad in ["9lives", "with space", "dollar$", "", &"x".repeat(61)] {
            assert!(link_var(&api, Some(bad)).is_err(), "{bad:?}");
        }
        for reserved in ["turnout", "TURNOUT_API", "database", "smtp"] {
            let e = link_var(&api, Some(reserved)).unwrap_err();
            assert!(e.contains("set by Turnout"), "{e}");
        }
    }
}
