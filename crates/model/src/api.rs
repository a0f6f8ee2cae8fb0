//! JSON bodies of the HTTP API, `/api/v1`. The CLI deserialises exactly these, so a field added
//! here is a field every client sees.
use serde::{Deserialize, Serialize};

use crate::{Action, AppName, AuditAction, DomainName, EnvName, Role, Tier};

/// Every error response: `{"error": "one clear line", "code": "not_found"}` with a 4xx/5xx
/// status. `code` is stable: scripts branch on it, people read `error`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub code: ErrorCode,
}

/// The machine-readable kind of an API error; each has one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// 409: conflicts with the current state (a name taken, nothing to roll back to).
    Conflict,
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
            Self::Conflict => "conflict",
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
            Self::Conflict => 409,
            Self::StepFailed => 422,
            Self::Internal => 500,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateApp {
    pub name: AppName,
    /// A local path or a git URL.
    pub repo: String,
    /// Name of the daemon's environment variable that holds an https token; the value itself is
    /// never sent, stored or logged.
    #[serde(default)]
    pub token_env: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppInfo {
    pub name: AppName,
    pub repo: String,
    pub token_env: Option<String>,
    pub environments: u32,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateEnv {
    pub name: EnvName,
    pub branch: String,
    #[serde(default)]
    pub tier: Option<Tier>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvInfo {
    pub app: AppName,
    pub name: EnvName,
    pub branch: String,
    pub tier: Tier,
    /// `http://<env>.<app>.localhost:<http port>`
    pub url: String,
    pub status: EnvStatus,
    /// Why the environment is `down` (its instance failed to come back).
    #[serde(default)]
    pub status_reason: Option<String>,
    pub release: Option<ReleaseInfo>,
    pub instance: Option<InstanceInfo>,
    /// The environment's directory under the home (releases, logs, storage).
    pub dir: String,
    /// Who its processes run as, and how far that separates it from the others.
    pub isolation: Isolation,
    /// Its resource limits (none set: unlimited).
    pub plan: ResourcePlan,
    /// What it uses now: its instance's memory, processes and CPU time, its storage on disk.
    #[serde(default)]
    pub usage: Option<ResourceUsage>,
    pub created_at: String,
}

/// How an environment's processes are kept apart from other environments and from Turnout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    /// `user`: its own unprivileged uid (Turnout runs as root); `single-user`: the daemon's
    /// own user, unsafe for shared use (Turnout is not root and was started with
    /// `--single-user`).
    pub mode: IsolationMode,
    /// The uid (and gid) its builds and instances run as.
    pub uid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IsolationMode {
    User,
    SingleUser,
}

impl IsolationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::SingleUser => "single-user",
        }
    }
}

impl std::fmt::Display for IsolationMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An environment's resource limits. Unset fields are unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourcePlan {
    /// Memory of all its processes together, in bytes; over it the kernel kills one and
    /// Turnout restarts the instance (`env show` says `OOM`).
    #[serde(default)]
    pub memory: Option<u64>,
    /// CPU share, in cores (`0.5`: half of one core's time), between 0.01 and 1024.
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Processes and threads at most, between 1 and 4,194,304.
    #[serde(default)]
    pub pids: Option<u64>,
}

/// What an environment uses now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceUsage {
    /// Memory of its instance's processes (the cgroup's), in bytes.
    pub memory: Option<u64>,
    /// Its instance's processes and threads.
    pub pids: Option<u64>,
    /// CPU time its instance has used, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Bytes under its storage directory.
    pub storage: Option<u64>,
}

/// `POST /api/v1/apps/{app}/envs/{env}/plan`: change the resource plan. Each field: a value
/// sets it, `"none"` clears it, absent leaves it as it is. Memory as `512M`, `2G`, `1048576`;
/// CPU as `0.5`; pids as `256`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpdatePlan {
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub cpu: Option<String>,
    #[serde(default)]
    pub pids: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvStatus {
    /// No release has gone live yet.
    NotDeployed,
    /// Its live release is being started (after a daemon restart or `env start`).
    Starting,
    /// An instance serves it.
    Live,
    /// Stopped on purpose (`turnout env stop`): its URL and domains answer 503.
    Stopped,
    /// Its live release failed to come back; `status_reason` says why.
    Down,
}

impl EnvStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotDeployed => "not deployed",
            Self::Starting => "starting",
            Self::Live => "live",
            Self::Stopped => "stopped",
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeployRequest {
    /// A branch, tag or commit; the environment's branch when absent.
    #[serde(default)]
    pub git_ref: Option<String>,
}

/// `POST …/envs/{env}/rollback`: back to the previous live-once release, or to `to`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RollbackRequest {
    #[serde(default)]
    pub to: Option<i64>,
}

/// What a job does. Every long operation is a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Fetch, check out, build, launch, go live, retire.
    Deploy,
    /// Launch an earlier live-once release again (no fetch, no build).
    Rollback,
    /// A fresh instance of the live release.
    Restart,
    /// Start a stopped environment's live release.
    Start,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Rollback => "rollback",
            Self::Restart => "restart",
            Self::Start => "start",
        }
    }
}

impl std::str::FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Self::Deploy, Self::Rollback, Self::Restart, Self::Start]
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown job kind '{s}'"))
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    /// Cancelled by a user (`turnout job cancel`) or by the daemon's shutdown.
    Cancelled,
    /// The daemon died while it ran; its half-done work was cleaned up at the next start.
    Interrupted,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
        }
    }

    /// Whether the job has ended (it will not change again).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Self::Queued,
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::Cancelled,
            Self::Interrupted,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| format!("unknown job state '{s}'"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Skipped,
    Failed,
    Cancelled,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Progress of a step that counts something (bytes, rows, tables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub done: u64,
    pub total: Option<u64>,
    pub unit: String,
}

/// One step of a job, as it stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStep {
    /// fetch, checkout, build, launch, go-live, retire (deploy); launch, go-live, retire (the
    /// others).
    pub name: String,
    pub state: StepState,
    /// The latest human line about it ("main from /srv/shop.git", "done in 1.2s").
    pub detail: String,
    #[serde(default)]
    pub progress: Option<Progress>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobInfo {
    pub id: i64,
    pub kind: JobKind,
    pub app: AppName,
    pub env: EnvName,
    /// Who started it (for an approved operation: `requester (approved by approver)`).
    pub actor: String,
    pub state: JobState,
    /// What was asked for: a ref for a deploy, a release for a rollback.
    pub request: Option<String>,
    pub steps: Vec<JobStep>,
    /// The release it created or launched.
    pub release: Option<i64>,
    /// Why it failed, was cancelled or was interrupted.
    pub error: Option<String>,
    /// The last lines of the failed step's log (a build's or an instance's output).
    #[serde(default)]
    pub log_tail: Vec<String>,
    /// The environment's URL once it went live.
    #[serde(default)]
    pub url: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// One event of a job's stream (`GET /api/v1/jobs/{id}/events`, server-sent events whose
/// `data:` is this JSON). A watcher that connects late first gets every earlier event, so
/// the stream always tells the whole job; it ends after `end`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    /// A step changed: started, made progress, finished, was skipped or failed.
    Step {
        /// The step's position in `JobInfo::steps`, from 0; `total` is their number.
        index: u32,
        total: u32,
        step: JobStep,
    },
    /// A line of output (a build's).
    Output { line: String },
    /// The job ended; `job` is its final state.
    End { job: JobInfo },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddDomain {
    pub domain: DomainName,
    pub app: AppName,
    pub env: EnvName,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

/// The body of a switch: the environment (of the domain's app) to move the domain to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwitchDomain {
    pub app: AppName,
    pub env: EnvName,
}

/// The outcome of a switch or rollback.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetMaintenance {
    pub on: bool,
    #[serde(default)]
    pub message: Option<String>,
}

/// One change of a domain's binding, as `turnout domain history` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateUser {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    /// `app` is None for a role on every app.
    pub roles: Vec<GrantInfo>,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantInfo {
    pub app: Option<AppName>,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateToken {
    pub user: String,
    /// `30d`, `12h`, `90m`; never expires when absent.
    #[serde(default)]
    pub expires: Option<String>,
}

/// The only time a token is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenCreated {
    pub id: i64,
    pub user: String,
    pub token: String,
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetGrant {
    pub user: String,
    pub app: AppName,
    /// None revokes the user's role on the app.
    pub role: Option<Role>,
}

/// One cell of an app's matrix: the role `action` needs on `tier`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyEntry {
    pub action: Action,
    pub tier: Tier,
    pub role: Role,
    /// Whether this is the default (no override for the app).
    pub default: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetPolicy {
    pub action: Action,
    pub tier: Tier,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetApprovalRule {
    pub action: Action,
    pub tier: Tier,
    /// How long a request waits for approval (`1h`, `30m`); None removes the rule.
    #[serde(default)]
    pub expires: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalPending {
    pub approval: i64,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetProtection {
    /// None protects (or unprotects) every tier of the app.
    #[serde(default)]
    pub tier: Option<Tier>,
    pub on: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditVerification {
    pub ok: bool,
    /// Entries checked before the chain ended or broke.
    pub entries: usize,
    pub broken_at: Option<i64>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetSecret {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretInfo {
    pub key: String,
    /// Only for callers allowed to deploy the environment, and only when asked for.
    pub value: Option<String>,
    pub updated_at: String,
    pub updated_by: String,
}

/// What `turnout serve` writes to `<home>/serve.json` once its listeners are bound.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeInfo {
    pub api: String,
    pub http: String,
    pub pid: u32,
    pub home: String,
    /// How environments are kept apart on this machine (one line).
    #[serde(default)]
    pub isolation: String,
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

    #[test]
    fn job_events_are_tagged() {
        let e = JobEvent::Output { line: "ok".into() };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"output","line":"ok"}"#
        );
    }
}
