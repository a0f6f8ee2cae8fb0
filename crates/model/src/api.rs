//! JSON bodies of the HTTP API, `/api/v1`. The CLI deserialises exactly these, so a field added
//! here is a field every client sees.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    Action, AppName, AuditAction, DomainName, EnvName, ResourcePlan, ResourceUsage, Role,
    SleepAfter, Tier,
};

/// Every error response: `{"error": "one clear line", "code": "not_found"}` with a 4xx/5xx
/// status. `code` is stable: scripts branch on it, people read `error`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub code: ErrorCode,
}

/// The machine-readable kind of an API error; each has one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request itself is wrong (a name, ref, duration or body).
    Invalid,
    /// 401: no valid token.
    Unauthorized,
    /// 403: a valid token whose user lacks the role.
    Forbidden,
    /// 404
    NotFound,
    /// 405: the path exists, but not with this method.
    MethodNotAllowed,
    /// 409: conflicts with the current state (a name taken, nothing to roll back to).
    Conflict,
    /// 413: the request body is over the API's limit (2 MiB).
    TooLarge,
    /// 422: a step of an operation failed (fetch, build, health …).
    StepFailed,
    /// 500
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::TooLarge => "too_large",
            Self::StepFailed => "step_failed",
            Self::Internal => "internal",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            Self::Invalid => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::TooLarge => 413,
            Self::StepFailed => 422,
            Self::Internal => 500,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    pub name: AppName,
    /// A local path or a git URL.
    pub repo: String,
    /// Name of the daemon's environment variable that holds an https token; the value itself is
    /// never sent, stored or logged.
    #[serde(default)]
    pub token_env: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppInfo {
    pub name: AppName,
    pub repo: String,
    pub token_env: Option<String>,
    pub environments: u32,
    pub created_at: String,
    /// The first push of a branch no environment follows creates `test-<branch>` for it.
    #[serde(default)]
    pub branch_envs: bool,
    /// The app's own sleep setting per tier (`app update --sleep-after TIER=…`), over the
    /// built-in defaults (test 30m, others never); an environment's own setting wins over both.
    #[serde(default)]
    pub sleep_after: BTreeMap<Tier, SleepAfter>,
}

/// `turnout app update`: the app settings to change (the ones left out stay as they are).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateApp {
    #[serde(default)]
    pub branch_envs: Option<bool>,
    /// Per tier: after how long without a request its environments sleep (`"15m"`, `"never"`),
    /// or `null` for the built-in default again. Tiers left out stay as they are.
    #[serde(default)]
    #[schema(value_type = BTreeMap<Tier, Option<String>>)]
    pub sleep_after: BTreeMap<Tier, Option<SleepAfter>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnv {
    pub name: EnvName,
    pub branch: String,
    #[serde(default)]
    pub tier: Option<Tier>,
    /// What deploys it by itself (manual when absent).
    #[serde(default)]
    pub deploy_on: crate::DeployOn,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvInfo {
    pub app: AppName,
    pub name: EnvName,
    pub branch: String,
    pub tier: Tier,
    /// What deploys it by itself.
    #[serde(default)]
    pub deploy_on: crate::DeployOn,
    /// After how long without a request it sleeps (its own setting, else its tier's default).
    #[serde(default)]
    pub sleep_after: crate::SleepAfter,
    /// A push made it for its branch (branch environments): deleting the branch deletes it.
    #[serde(default)]
    pub made_for_branch: bool,
    /// `http://<env>.<app>.localhost:<http port>`
    pub url: String,
    pub status: EnvStatus,
    /// Why the environment is `down` (its instance failed to come back) or `crashing` (how its
    /// instance last exited, and its restarts).
    #[serde(default)]
    pub status_reason: Option<String>,
    /// When a `down` environment is tried again: Turnout keeps retrying its live release (with
    /// a growing delay, at most a minute apart) until it serves, is stopped or is deployed.
    #[serde(default)]
    pub next_retry_at: Option<String>,
    pub release: Option<ReleaseInfo>,
    pub instance: Option<InstanceInfo>,
    /// The environment's directory under the home (releases, logs, storage).
    pub dir: String,
    /// Who its processes run as, and how far that separates it from the others.
    pub isolation: Isolation,
    /// Its resource limits (none set: unlimited).
    pub plan: ResourcePlan,
    /// What it uses now: its instance's memory, processes and CPU time, its storage on disk.
    /// One environment's answer only (`env show`); lists (`env list`, `pipeline show`) leave it
    /// out, as it walks the environment's storage.
    #[serde(default)]
    pub usage: Option<ResourceUsage>,
    /// The configuration it runs with against what is set (`env show` only).
    #[serde(default)]
    pub config: Option<crate::ConfigState>,
    /// Where each link of its app leads from it (`env show` only).
    #[serde(default)]
    pub links: Option<Vec<crate::EnvLink>>,
    pub created_at: String,
}

/// How an environment's processes are kept apart from other environments and from Turnout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Isolation {
    /// `user`: its own unprivileged uid (Turnout runs as root); `sandbox`: Turnout is not root,
    /// and each environment runs in a sandbox of its own (bubblewrap: an unprivileged user
    /// namespace that sees none of Turnout's or other environments' files and processes);
    /// `single-user`: the daemon's own user, unsafe for shared use (Turnout is not root, cannot
    /// sandbox, and was started with `--single-user`).
    pub mode: IsolationMode,
    /// The uid (and gid) its builds and instances run as.
    pub uid: u32,
    /// Its network namespace (`turnout-<uid>`): its instances' ports are reachable only from
    /// inside it and through the proxy. `None`: it shares the host's network with every other
    /// environment (`turnout serve` says why).
    #[serde(default)]
    pub network: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IsolationMode {
    User,
    /// Turnout is not root: a sandbox of its own (an unprivileged user namespace), with the
    /// daemon's uid.
    Sandbox,
    SingleUser,
}

impl IsolationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Sandbox => "sandbox",
            Self::SingleUser => "single-user",
        }
    }
}

impl std::fmt::Display for IsolationMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceInfo {
    /// starting, running, restarting, crashed, stopping, stopped
    pub state: String,
    pub pid: Option<u32>,
    pub port: u16,
    pub restarts: u32,
    /// How the last process ended: `exit status 1`, `signal 9`, or `OOM: killed at its memory
    /// limit (64 MiB)`.
    pub last_exit: Option<String>,
    /// Why its resource plan is not enforced (no usable cgroup controllers, not root).
    #[serde(default)]
    pub limits_not_enforced: Option<String>,
    pub started_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReleaseInfo {
    pub id: i64,
    pub commit: String,
    /// What the user asked for: a branch name or `--ref`.
    pub git_ref: String,
    pub status: ReleaseStatus,
    /// The job that created it (a deploy).
    #[serde(default)]
    pub job: Option<i64>,
    /// The deploy reused an earlier build of the same commit and commands.
    pub reused_build: bool,
    pub error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

/// Where an environment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnvStatus {
    /// No release has gone live yet.
    NotDeployed,
    /// Its live release is being started (after a daemon restart or `env start`).
    Starting,
    /// An instance serves it.
    Live,
    /// Its instance exited after having been healthy and has not passed a health check since:
    /// it is waiting out its restart backoff or starting again. Requests get 503 with
    /// `Retry-After` meanwhile; `status_reason` says how it last exited and how often it was
    /// restarted.
    Crashing,
    /// Stopped on purpose (`turnout env stop`): its URL and domains answer 503.
    Stopped,
    /// Idle for its `sleep_after`, its instance stopped: the next request to its URL or
    /// domains wakes it (and waits until it is healthy), as does `turnout env wake`.
    Sleeping,
    /// Its live release failed to come back; `status_reason` says why.
    Down,
}

impl EnvStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotDeployed => "not deployed",
            Self::Starting => "starting",
            Self::Live => "live",
            Self::Crashing => "crashing",
            Self::Stopped => "stopped",
            Self::Sleeping => "sleeping",
            Self::Down => "down",
        }
    }
}

impl std::fmt::Display for EnvStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A release's life: `building` until it goes live or fails; `live` while it serves its
/// environment; `superseded` once another release replaced it (it was live once, so a
/// rollback may return to it); `failed` if any step failed or the deploy was cancelled or
/// interrupted (its `error` says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseStatus {
    Building,
    Live,
    Superseded,
    Failed,
}

impl ReleaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Live => "live",
            Self::Superseded => "superseded",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ReleaseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ReleaseStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Self::Building, Self::Live, Self::Superseded, Self::Failed]
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown release status '{s}'"))
    }
}

/// `turnout promote APP/FROM APP/TO`: the body of the request to TO.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// The environment whose live release TO runs.
    pub from: EnvName,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// A branch, tag or commit; the environment's branch when absent.
    #[serde(default)]
    pub git_ref: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDomain {
    pub domain: DomainName,
    pub app: AppName,
    pub env: EnvName,
    /// `acme`: order a certificate at once (`manual` comes from `cert add`); off when absent.
    #[serde(default)]
    pub tls: Option<crate::TlsMode>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DomainInfo {
    pub domain: DomainName,
    pub app: AppName,
    pub env: EnvName,
    /// Whether the environment has a running instance the domain's requests reach.
    pub serving: bool,
    /// The maintenance message when the domain is in maintenance.
    pub maintenance: Option<String>,
    /// `http://<domain>:<http port>` (a wildcard's URL shows the wildcard).
    pub url: String,
    pub created_at: String,
    /// Its HTTPS settings.
    pub tls: crate::TlsSettings,
    /// Its certificate and renewal state, if it has either.
    pub cert: Option<crate::CertInfo>,
}

/// The body of a switch: the environment (of the domain's app) to move the domain to.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchDomain {
    pub app: AppName,
    pub env: EnvName,
}

/// The outcome of a switch or rollback.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SwitchInfo {
    pub domain: DomainName,
    pub app: AppName,
    pub from: EnvName,
    pub to: EnvName,
    /// `switch` or `rollback`; `unchanged` when the domain already pointed there.
    pub action: String,
    /// The fresh health check of the target before anything changed.
    pub health_check_ms: f64,
    /// From the start of the store write to the new route table being live in the proxy.
    pub apply_us: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMaintenance {
    pub on: bool,
    #[serde(default)]
    pub message: Option<String>,
}

/// One change of a domain's binding, as `turnout domain history` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DomainEvent {
    pub id: i64,
    pub at: String,
    pub actor: String,
    /// add, switch, rollback, maintenance-on, maintenance-off
    pub action: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Set on a switch that a later rollback undid.
    pub rolled_back: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserInfo {
    pub name: String,
    /// `app` is None for a role on every app.
    pub roles: Vec<GrantInfo>,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GrantInfo {
    pub app: Option<AppName>,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub user: String,
    /// `30d`, `12h`, `90m`; never expires when absent.
    #[serde(default)]
    pub expires: Option<String>,
}

/// The only time a token is shown.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenCreated {
    pub id: i64,
    pub user: String,
    pub token: String,
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub user: String,
    /// The first characters of the token.
    pub prefix: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// active, expired or revoked
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetGrant {
    pub user: String,
    pub app: AppName,
    /// None revokes the user's role on the app.
    pub role: Option<Role>,
}

/// One cell of an app's matrix: the role `action` needs on `tier`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyEntry {
    pub action: Action,
    pub tier: Tier,
    pub role: Role,
    /// Whether this is the default (no override for the app).
    pub default: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPolicy {
    pub action: Action,
    pub tier: Tier,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetApprovalRule {
    pub action: Action,
    pub tier: Tier,
    /// How long a request waits for approval (`1h`, `30m`); None removes the rule.
    #[serde(default)]
    pub expires: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApprovalInfo {
    pub id: i64,
    pub app: String,
    pub action: Action,
    pub summary: String,
    pub requested_by: String,
    pub created_at: String,
    pub expires_at: String,
    /// pending, approved, rejected, expired
    pub status: String,
    pub decided_by: Option<String>,
    pub result: Option<String>,
    /// The job an approved deploy runs as.
    #[serde(default)]
    pub job: Option<i64>,
}

/// The answer (202) to a request that now waits for a second owner.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApprovalPending {
    pub approval: i64,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetProtection {
    /// None protects (or unprotects) every tier of the app.
    #[serde(default)]
    pub tier: Option<Tier>,
    pub on: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditInfo {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: AuditAction,
    pub app: Option<String>,
    pub env: Option<String>,
    pub domain: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub result: String,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditVerification {
    pub ok: bool,
    /// Entries checked before the chain ended or broke.
    pub entries: usize,
    pub broken_at: Option<i64>,
    pub reason: Option<String>,
}

/// What `turnout serve` writes to `<home>/serve.json` once its listeners are bound.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServeInfo {
    pub api: String,
    pub http: String,
    /// The proxy's HTTPS address (`https://…`), when it serves HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<String>,
    pub pid: u32,
    pub home: String,
    /// How environments are kept apart on this machine (one line).
    #[serde(default)]
    pub isolation: String,
    /// Whether environments have network namespaces, or why not (one line).
    #[serde(default)]
    pub network: String,
}

/// Seconds since the Unix epoch as an RFC 3339 UTC timestamp (`2026-11-24T15:50:41Z`).
pub fn format_timestamp(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Unix seconds of an RFC 3339 UTC timestamp as [`format_timestamp`] writes it
/// (`2026-11-24T15:50:41Z`, fractional seconds ignored); None for anything else.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let tail = &text[19..];
    let tail = tail
        .strip_prefix('.')
        .map_or(tail, |t| t.trim_start_matches(|c: char| c.is_ascii_digit()));
    if tail != "Z" || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    // The inverse of the days-to-civil algorithm in `format_timestamp`.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_timestamps() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_timestamp(1_795_535_441), "2026-11-24T15:50:41Z");
    }

    #[test]
    fn parses_what_it_formats() {
        for t in [0, 951_782_400, 1_795_535_441, 4_102_444_799] {
            assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t));
        }
        assert_eq!(
            parse_timestamp("2026-11-24T15:50:41.250Z"),
            Some(1_795_535_441)
        );
        for bad in [
            "",
            "2026-11-24 15:50:41Z",
            "2026-13-01T00:00:00Z",
            "2026-11-24T15:50:41",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
