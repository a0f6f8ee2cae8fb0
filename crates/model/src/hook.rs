//! GitHub and GitLab webhooks: which providers an app takes hooks from, and what one did.
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{SkippedEnv, TriggeredDeploy};

/// Where a webhook comes from; each app has at most one secret per provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HookProvider {
    /// `X-Hub-Signature-256`: HMAC-SHA256 of the raw body with the secret.
    Github,
    /// `X-Gitlab-Token`: the secret itself.
    Gitlab,
}

impl HookProvider {
    pub const ALL: [HookProvider; 2] = [HookProvider::Github, HookProvider::Gitlab];

    pub fn as_str(self) -> &'static str {
        match self {
            HookProvider::Github => "github",
            HookProvider::Gitlab => "gitlab",
        }
    }

    /// How the provider spells itself in its own documentation.
    pub fn title(self) -> &'static str {
        match self {
            HookProvider::Github => "GitHub",
            HookProvider::Gitlab => "GitLab",
        }
    }
}

impl fmt::Display for HookProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for HookProvider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        HookProvider::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("'{s}' is not a webhook provider: use github or gitlab"))
    }
}

/// The body of `POST /api/v1/apps/{app}/hooks`: exactly one of `secret_env` (the name of a
/// variable of the daemon's environment, read at every delivery) and `secret` (stored).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetHook {
    pub provider: HookProvider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// One configured webhook of an app (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HookInfo {
    pub provider: HookProvider,
    /// The path to give the provider, under the API's address.
    pub path: String,
    /// The daemon's environment variable holding the secret, when it is not stored.
    pub secret_env: Option<String>,
    /// The user the hook deploys as (who set its secret), with that user's current roles.
    pub acts_as: String,
    pub updated_at: String,
}

/// What an accepted delivery did: the deploys it started and the environments it left alone,
/// or, for an event that deploys nothing, why it was ignored.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HookOutcome {
    pub provider: HookProvider,
    /// The provider's event name (`workflow_run`, `Pipeline Hook`, …).
    pub event: String,
    pub delivery: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
    #[serde(default)]
    pub deploys: Vec<TriggeredDeploy>,
    #[serde(default)]
    pub skipped: Vec<SkippedEnv>,
    /// What else the delivery did to the branch's environments: one created for a new branch
    /// (branch environments on), or deleted with its branch, or why not.
    #[serde(default)]
    pub notes: Vec<String>,
}
