//! The API's bodies for putting data back: `turnout backup restore`, `turnout data reset|undo`
//! and `turnout drill`.

use serde::{Deserialize, Serialize};

/// `POST …/envs/{env}/restore`: put the path's environment's data (or `into`'s) back to a
/// moment (`at`) or to one snapshot (`snapshot`); exactly one of the two.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// RFC 3339, or relative to the daemon's clock ("1 day ago", "-90m").
    #[serde(default)]
    pub at: Option<String>,
    #[serde(default)]
    pub snapshot: Option<i64>,
    /// Another environment of the same app (`APP/ENV`) to restore into.
    #[serde(default)]
    pub into: Option<String>,
    /// Relaunch the release the snapshot recorded instead of the live one.
    #[serde(default)]
    pub with_code: bool,
    /// Confirms a restore into production (which discards every newer write).
    #[serde(default)]
    pub yes: bool,
}

/// `POST …/envs/{env}/data/reset`: make a production copy production as of `at` (default:
/// now), code and data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    #[serde(default)]
    pub at: Option<String>,
    /// The production environment (`APP/ENV`) [default: the app's production environment].
    #[serde(default)]
    pub from: Option<String>,
}

/// `POST …/envs/{env}/drills`: a recovery drill of the environment's backups as of `at`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrillRequest {
    pub at: String,
}
