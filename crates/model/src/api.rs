//! JSON bodies of the HTTP API, `/api/v1`. The CLI deserialises exactly these, so a field added
//! here is a field every client sees.
use serde::{Deserialize, Serialize};

use crate::{Action, AppName, DomainName, EnvName, Role, Tier};

/// Every error response: `{"error": "one clear line"}` with a 4xx/5xx status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
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
    /// `live` when an instance serves the environment, otherwise `not deployed` or `stopped`.
    pub status: String,
    pub release: Option<ReleaseInfo>,
    pub instance: Option<InstanceInfo>,
    /// The environment's directory under the home (releases, logs, storage).
    pub dir: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// starting, running, restarting, crashed, stopping, stopped
    pub state: String,
    pub pid: Option<u32>,
    pub port: u16,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub started_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseInfo {
    pub id: i64,
    pub commit: String,
    /// What the user asked for: a branch name or `--ref`.
    pub git_ref: String,
    /// building, live, failed, superseded
    pub status: String,
    /// The deploy reused an earlier build of the same commit and commands.
    pub reused_build: bool,
    pub error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeployRequest {
    /// A branch, tag or commit; the environment's branch when absent.
    #[serde(default)]
    pub git_ref: Option<String>,
}

/// One line of the NDJSON stream a deploy answers with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeployEvent {
    Step {
        index: u32,
        total: u32,
        step: String,
        detail: String,
    },
    Output {
        line: String,
    },
    Live {
        release: ReleaseInfo,
        url: String,
    },
    Failed {
        step: String,
        error: String,
        log_tail: Vec<String>,
    },
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
    pub action: String,
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
    fn deploy_events_are_tagged() {
        let e = DeployEvent::Output { line: "ok".into() };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"output","line":"ok"}"#
        );
    }
}
