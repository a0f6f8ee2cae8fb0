//! What separates environments of an app: `turnout env diff APP/A APP/B`, and the pipeline's
//! stages with what each promotion would bring (`turnout pipeline show APP`).
use serde::{Deserialize, Serialize};

use crate::{AppName, EnvInfo, EnvName, PipelineSpec, ScheduleInfo, Tier};

/// The commits between two environments' live releases, and the configuration that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvDiff {
    pub app: AppName,
    pub a: EnvName,
    pub b: EnvName,
    /// The commit each one runs (`None`: nothing deployed yet).
    pub a_commit: Option<String>,
    pub b_commit: Option<String>,
    /// Commits B runs that A does not, newest first; then those A runs that B does not.
    pub only_in_b: Vec<CommitInfo>,
    pub only_in_a: Vec<CommitInfo>,
    /// More commits differ than the lists hold (each is capped at [`DIFF_COMMITS`]).
    pub truncated: bool,
    /// Keys whose value differs, by key.
    pub config: Vec<ConfigDifference>,
}

/// The most commits listed each way.
pub const DIFF_COMMITS: usize = 100;

/// The most promotions `pipeline show` lists (`more_promotions` counts the rest). By the tier
/// rule every development environment may go to every test one: with hundreds of branch
/// environments that is tens of thousands of pairs, which no one reads and each needs git.
pub const PROMOTIONS_SHOWN: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CommitInfo {
    pub commit: String,
    pub author: String,
    /// Seconds since the Unix epoch (the author date).
    pub date: i64,
    pub subject: String,
}

/// One key set differently in the two environments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigDifference {
    pub key: String,
    pub kind: ConfigKind,
    /// The values (`None`: not set there). A secret's value is never shown: `"(secret)"`.
    pub a: Option<String>,
    pub b: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConfigKind {
    /// A plain value: from the app file's `[env]` layers or set with `turnout config set`.
    Env,
    /// A secret (`turnout config set --secret`): compared, never shown.
    Secret,
}

/// What a secret's value is shown as.
pub const SECRET_SHOWN_AS: &str = "(secret)";

/// An app's environments by stage, and every promotion allowed between them: the declared
/// pipeline's stages and promotions when the app has one (`turnout pipeline set`), else one
/// stage per tier in pipeline order (stages without an environment left out) and the tier rule.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineView {
    pub app: AppName,
    pub stages: Vec<PipelineStage>,
    /// The allowed promotions (into or out of the asked environments only, when asked): the
    /// declared ones in their order, then those whose two ends deploy the same branch, then
    /// the rest in stage order; at most [`PROMOTIONS_SHOWN`].
    pub promotions: Vec<PromotionView>,
    /// Allowed promotions not listed (beyond [`PROMOTIONS_SHOWN`]): ask for those from or to
    /// one environment.
    #[serde(default)]
    pub more_promotions: usize,
    /// The declared pipeline; `None`: promotions follow the tier rule.
    #[serde(default)]
    pub declared: Option<PipelineSpec>,
    /// Environments a declared pipeline places in no stage (they promote nowhere).
    #[serde(default)]
    pub unstaged: Vec<EnvName>,
    /// The app's scheduled cuts.
    #[serde(default)]
    pub schedules: Vec<ScheduleInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineStage {
    /// The tier under the tier rule; the stage's members joined by `+` in a declared pipeline
    /// (`qa`, `tier:test`, `staging+release`).
    pub name: String,
    /// The stage's tier under the tier rule (`None` in a declared pipeline).
    pub tier: Option<Tier>,
    pub envs: Vec<EnvInfo>,
}

/// `from` may be promoted to `to`: how far apart their live releases are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PromotionView {
    pub from: EnvName,
    pub to: EnvName,
    /// Commits `from` runs that `to` does not (what promoting would bring), and the other way;
    /// `None` while either has no live release. Counted up to [`DIFF_COMMITS`].
    pub ahead: Option<usize>,
    pub behind: Option<usize>,
}
