use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The stage an environment plays in the pipeline; it sets defaults (data policy, backups, mail,
/// who may deploy). Ordered from lowest to highest.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    Development,
    Test,
    Qa,
    Staging,
    Release,
    Production,
    ProductionCopy,
}

impl Tier {
    pub const ALL: [Tier; 7] = [
        Tier::Development,
        Tier::Test,
        Tier::Qa,
        Tier::Staging,
        Tier::Release,
        Tier::Production,
        Tier::ProductionCopy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Development => "development",
            Tier::Test => "test",
            Tier::Qa => "qa",
            Tier::Staging => "staging",
            Tier::Release => "release",
            Tier::Production => "production",
            Tier::ProductionCopy => "production-copy",
        }
    }

    /// The tiers an environment of this tier may be promoted to (`turnout promote`): up the
    /// pipeline one stage at a time (development and test may skip to QA or staging), a
    /// release (hotfix) environment straight to staging or production, production into its
    /// copy. Nothing flows down.
    pub fn promotes_to(self) -> &'static [Tier] {
        match self {
            Tier::Development => &[Tier::Test, Tier::Qa, Tier::Staging],
            Tier::Test => &[Tier::Qa, Tier::Staging],
            Tier::Qa => &[Tier::Staging],
            Tier::Staging => &[Tier::Production],
            Tier::Release => &[Tier::Staging, Tier::Production],
            Tier::Production => &[Tier::ProductionCopy],
            Tier::ProductionCopy => &[],
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "unknown tier '{0}': use one of development, test, qa, staging, release, production, production-copy"
)]
pub struct UnknownTier(pub String);

impl FromStr for Tier {
    type Err = UnknownTier;
    fn from_str(s: &str) -> Result<Self, UnknownTier> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTier(s.chars().take(80).collect()))
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_and_serde_agree_for_every_tier() {
        for t in Tier::ALL {
            assert_eq!(t.as_str().parse::<Tier>().unwrap(), t);
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        let err = "prod".parse::<Tier>().unwrap_err().to_string();
        assert!(err.contains("production-copy"), "{err}");
    }
}
