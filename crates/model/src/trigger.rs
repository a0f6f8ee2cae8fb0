//! What deploys an environment by itself, and the CI hook that reports a build.
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{AppName, EnvName, JobInfo};

/// `turnout env create … --deploy-on`, `turnout env update APP/ENV --deploy-on`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeployOn {
    /// Only `turnout deploy` (or a promotion).
    #[default]
    Manual,
    /// Every push to its branch.
    Push,
    /// Every CI build of its branch that went green: that exact commit.
    Ci,
}

impl DeployOn {
    pub const ALL: [DeployOn; 3] = [DeployOn::Manual, DeployOn::Push, DeployOn::Ci];

    pub fn as_str(self) -> &'static str {
        match self {
            DeployOn::Manual => "manual",
            DeployOn::Push => "push",
            DeployOn::Ci => "ci",
        }
    }
}

impl fmt::Display for DeployOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DeployOn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DeployOn::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("'{s}' is not a deploy trigger: use manual, push or ci"))
    }
}

/// The body of `POST /api/v1/apps/{app}/envs/{env}/trigger`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTrigger {
    pub deploy_on: DeployOn,
}

/// A CI build's result, `POST /api/v1/hooks/ci`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CiReport {
    pub app: AppName,
    pub branch: String,
    /// The full commit id (40 hexadecimal digits) that was built.
    pub commit: String,
    pub status: CiStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CiStatus {
    Success,
    Failure,
    /// Cancelled, errored, still running: nothing is deployed.
    Other,
}

/// What a CI report did: the deploys it started, and the environments it left alone, with why.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CiOutcome {
    pub deploys: Vec<TriggeredDeploy>,
    pub skipped: Vec<SkippedEnv>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TriggeredDeploy {
    pub env: EnvName,
    pub job: JobInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SkippedEnv {
    pub env: EnvName,
    pub why: String,
}
