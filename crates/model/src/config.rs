//! Configuration: values set through Turnout at the app, tier and environment levels (plain or
//! secret), resolved for an environment with the app file's `[env]` layers by one rule.
//!
//! The rule, least to most specific (a later level wins): the app file's `[env]`, its
//! `[tiers.<tier>.env]`, its `[environments.<env>.env]`, then values set through Turnout at the
//! app level, the tier level, the environment level. Turnout's own variables (`PORT`,
//! `TURNOUT_*`, the data's, and below production the mail catcher's and egress proxy's) come
//! last and always win.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{EnvName, Tier};

/// The largest value, in bytes.
pub const MAX_CONFIG_VALUE: usize = 64 * 1024;
/// The most keys set at one level (app, one tier, one environment).
pub const MAX_CONFIG_KEYS: usize = 500;

/// Where a resolved value comes from, least to most specific.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigLevel {
    /// The app file's `[env]`.
    File,
    /// The app file's `[tiers.<tier>.env]`.
    FileTier,
    /// The app file's `[environments.<env>.env]`.
    FileEnv,
    /// `turnout config set APP KEY=VALUE`.
    App,
    /// `turnout config set APP --tier TIER KEY=VALUE`.
    Tier,
    /// `turnout config set APP/ENV KEY=VALUE`.
    Env,
    /// Set by Turnout itself for every instance; always wins.
    Turnout,
}

impl ConfigLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::FileTier => "file-tier",
            Self::FileEnv => "file-env",
            Self::App => "app",
            Self::Tier => "tier",
            Self::Env => "env",
            Self::Turnout => "turnout",
        }
    }
}

impl std::fmt::Display for ConfigLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One key: its value (a secret's masked unless asked for and allowed) and the level it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigEntry {
    pub key: String,
    pub level: ConfigLevel,
    pub secret: bool,
    /// A secret's value is [`crate::SECRET_SHOWN_AS`] unless shown.
    pub value: String,
    /// The levels set for this key that this one overrides, least specific first.
    #[serde(default)]
    pub overrides: Vec<ConfigLevel>,
    /// For values set through Turnout: when and by whom.
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub updated_by: Option<String>,
}

/// `turnout config list`: an environment's resolved configuration (`env` given), or what is set
/// at one level (the app's, or a tier's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigListing {
    pub app: crate::AppName,
    pub env: Option<EnvName>,
    pub tier: Option<Tier>,
    /// The app's configuration version (bumped by every set and unset).
    pub version: i64,
    pub entries: Vec<ConfigEntry>,
}

/// `POST /api/v1/apps/{app}/config`: set values at one level, all or none.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    /// The environment level (then `tier` must be unset).
    #[serde(default)]
    pub env: Option<EnvName>,
    /// The tier level.
    #[serde(default)]
    pub tier: Option<Tier>,
    /// Sealed at rest, masked when listed, shown only to who may deploy.
    #[serde(default)]
    pub secret: bool,
    pub values: BTreeMap<String, String>,
}

/// `POST /api/v1/apps/{app}/config/unset`: remove keys at one level, all or none.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsetConfig {
    #[serde(default)]
    pub env: Option<EnvName>,
    #[serde(default)]
    pub tier: Option<Tier>,
    pub keys: Vec<String>,
}

/// The app's configuration version after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigChanged {
    pub version: i64,
    pub keys: Vec<String>,
}

/// `env show`: the configuration an environment runs with, against what is set now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigState {
    /// The app's configuration version when the snapshot the live release runs with was taken
    /// (`None`: it went live before snapshots were recorded).
    pub running_version: Option<i64>,
    /// The app's configuration version now.
    pub set_version: i64,
    /// What is set now differs from what the instance runs with: `turnout restart` applies it.
    pub stale: bool,
}

/// `turnout secrets rotate-key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyRotated {
    /// The new key's id (hex).
    pub key_id: String,
    /// How many sealed values were re-sealed under it.
    pub resealed: usize,
}
