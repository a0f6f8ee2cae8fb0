//! Every endpoint of the HTTP API, declared once: its method, its path pattern (the axum route,
//! `{name}` for a segment), the body it takes and the answer it gives. The server registers its
//! routes with these `PATH` constants and the client fills them in, so no caller assembles a URL.
//!
//! One small struct per endpoint carries what the path and query need (and the body); the body
//! types themselves live in `api.rs`, hence `crate::CreateApp` (the body) inside
//! `endpoint::CreateApp` (the request).
use std::fmt::{Display, Write as _};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::openapi::{Auth, ParamKind, Payload};

use crate::{
    AppInfo, AppName, ApprovalInfo, AuditInfo, AuditVerification, DomainEvent, DomainInfo,
    DomainName, EnvInfo, EnvName, EnvRef, JobInfo, PolicyEntry, ReleaseInfo, SwitchInfo,
    TokenCreated, TokenInfo, UserInfo,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Delete => "DELETE",
        }
    }
}

/// One endpoint: a request type names its method, path, body and answer.
pub trait Endpoint {
    const METHOD: Method;
    /// The axum route pattern, e.g. `/api/v1/apps/{app}/envs/{env}/deploy`.
    const PATH: &'static str;
    /// The success status when the answer has a body: 201 where a record or a job was made.
    /// An answer of `()` is 204 No Content.
    const STATUS: u16 = 200;
    /// The query parameters `path()` may add, for the OpenAPI document.
    const QUERY: &'static [(&'static str, ParamKind)] = &[];
    /// Whether the request may be held for approval instead (202, `ApprovalPending`).
    const APPROVAL: bool = false;
    const AUTH: Auth = Auth::Bearer;
    /// `()` for an endpoint that takes no body.
    type Body: Serialize + Payload;
    /// `()` for 204 No Content; [`TextStream`] or [`EventStream`] for a streamed answer.
    type Answer: DeserializeOwned + Payload;
    /// `PATH` with its segments filled in (percent-encoded) and the query string, if any.
    fn path(&self) -> String;
    /// The JSON body, when the endpoint takes one.
    fn body(&self) -> Option<&Self::Body> {
        None
    }
}

/// The answer of an endpoint that streams plain text (logs, metrics): read it chunk by chunk.
/// Uninhabited: it is never decoded as JSON.
#[derive(Debug, Deserialize)]
pub enum TextStream {}

/// The answer of `GET /api/v1/jobs/{id}/events`: server-sent events whose `data:` is a
/// [`crate::JobEvent`]. Uninhabited: it is never decoded as one JSON value.
#[derive(Debug, Deserialize)]
pub enum EventStream {}

/// The answer of `POST …/envs/{env}/run`: `101 Switching Protocols` to [`crate::run`]'s frames.
/// Uninhabited: it is never decoded as JSON.
#[derive(Debug, Deserialize)]
pub enum RunStream {}

/// The body of a GitHub or GitLab webhook delivery: the provider's own JSON event, trusted by
/// its signature. Uninhabited: only the provider sends one, never this client.
#[derive(Debug, Serialize)]
pub enum WebhookEvent {}

/// `{"ok": true}` from the unauthenticated liveness check.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthInfo {
    pub ok: bool,
}

/// Replace each `{…}` of `pattern`, in order, with the next of `params`, percent-encoded.
fn fill(pattern: &str, params: &[&str]) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut params = params.iter();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        let value = params.next();
        debug_assert!(value.is_some(), "{pattern}: too few path parameters");
        encode(value.copied().unwrap_or_default(), &mut out);
        rest = &rest[close..];
    }
    out.push_str(rest);
    debug_assert!(
        params.next().is_none(),
        "{pattern}: too many path parameters"
    );
    out
}

/// Percent-encode everything but RFC 3986 unreserved characters.
fn encode(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// A query string built from the parameters that are set.
#[derive(Default)]
struct Query(String);

impl Query {
    fn with(mut self, key: &str, value: impl Display) -> Query {
        self.0.push(if self.0.is_empty() { '?' } else { '&' });
        self.0.push_str(key);
        self.0.push('=');
        encode(&value.to_string(), &mut self.0);
        self
    }

    fn maybe(self, key: &str, value: Option<impl Display>) -> Query {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    fn after(self, path: String) -> String {
        path + &self.0
    }
}

/// Implements `Endpoint` for one request struct: `$path_params` are the struct's values that
/// fill the pattern, `query` lists the query parameters (name, type for the OpenAPI document,
/// `with` a value always sent or `maybe` one sent when set),
/// `body_field` names the field holding the body; `status`, `approval` and `auth` override the
/// trait's defaults.
macro_rules! endpoint {
    (
        $name:ident, $method:ident $path:literal, body $body:ty, answer $answer:ty,
        |$s:ident| [$($param:expr),*]
        $(, query [$($qname:ident: $qkind:ident $qhow:ident $qvalue:expr),*])?
        $(, body_field $field:ident)?
        $(, status $status:literal)? $(, approval $approval:literal)? $(, auth $auth:ident)?
    ) => {
        impl Endpoint for $name {
            const METHOD: Method = Method::$method;
            const PATH: &'static str = $path;
            $(const STATUS: u16 = $status;)?
            $(const QUERY: &'static [(&'static str, ParamKind)] =
                &[$((stringify!($qname), ParamKind::$qkind)),*];)?
            $(const APPROVAL: bool = $approval;)?
            $(const AUTH: Auth = Auth::$auth;)?
            type Body = $body;
            type Answer = $answer;
            #[allow(unused_variables)]
            fn path(&self) -> String {
                let $s = self;
                let path = fill(Self::PATH, &[$($param),*]);
                $(let path = Query::default()$(.$qhow(stringify!($qname), $qvalue))*.after(path);)?
                path
            }
            $(
                fn body(&self) -> Option<&Self::Body> {
                    Some(&self.$field)
                }
            )?
        }
    };
}

/// `GET /api/v1/health` (no token needed).
pub struct Health;
endpoint!(Health, Get "/api/v1/health", body (), answer HealthInfo, |s| [], auth None);

/// This API's OpenAPI 3.1 document (no token needed: it describes, it holds no data).
pub struct OpenApiDocument;
endpoint!(OpenApiDocument, Get "/api/v1/openapi.json", body (), answer utoipa::openapi::OpenApi,
    |s| [], auth None);

pub struct ListApps;
endpoint!(ListApps, Get "/api/v1/apps", body (), answer Vec<AppInfo>, |s| []);

pub struct CreateApp {
    pub body: crate::CreateApp,
}
endpoint!(CreateApp, Post "/api/v1/apps", body crate::CreateApp, answer AppInfo, |s| [],
    body_field body, status 201);

pub struct DeleteApp {
    pub app: AppName,
    /// Also delete its environments.
    pub force: bool,
}
endpoint!(DeleteApp, Delete "/api/v1/apps/{app}", body (), answer (), |s| [s.app.as_str()],
    query [force: Bool with s.force]);

/// Change an app's settings; answers the app.
pub struct UpdateApp {
    pub app: AppName,
    pub body: crate::UpdateApp,
}
endpoint!(UpdateApp, Post "/api/v1/apps/{app}/settings", body crate::UpdateApp, answer AppInfo,
    |s| [s.app.as_str()], body_field body);

/// Every environment, or one app's (`app`).
pub struct ListEnvs {
    pub app: Option<AppName>,
}
endpoint!(ListEnvs, Get "/api/v1/envs", body (), answer Vec<EnvInfo>, |s| [],
    query [app: Text maybe s.app.as_ref()]);

pub struct ListAppEnvs {
    pub app: AppName,
}
endpoint!(ListAppEnvs, Get "/api/v1/apps/{app}/envs", body (), answer Vec<EnvInfo>,
    |s| [s.app.as_str()]);

pub struct CreateEnv {
    pub app: AppName,
    pub body: crate::CreateEnv,
}
endpoint!(CreateEnv, Post "/api/v1/apps/{app}/envs", body crate::CreateEnv, answer EnvInfo,
    |s| [s.app.as_str()], body_field body, status 201);

pub struct ShowEnv {
    pub target: EnvRef,
}
endpoint!(ShowEnv, Get "/api/v1/apps/{app}/envs/{env}", body (), answer EnvInfo,
    |s| [s.target.app.as_str(), s.target.env.as_str()]);

pub struct DeleteEnv {
    pub target: EnvRef,
}
endpoint!(DeleteEnv, Delete "/api/v1/apps/{app}/envs/{env}", body (), answer (),
    |s| [s.target.app.as_str(), s.target.env.as_str()]);

/// A deploy job (201), or 202 when it waits for approval.
pub struct Deploy {
    pub target: EnvRef,
    pub body: crate::DeployRequest,
}
endpoint!(Deploy, Post "/api/v1/apps/{app}/envs/{env}/deploy", body crate::DeployRequest,
    answer JobInfo, |s| [s.target.app.as_str(), s.target.env.as_str()], body_field body, status 201,
    approval true);

/// A promotion job (201), or 202 when it waits for approval: `target` runs `body.from`'s live
/// release.
pub struct Promote {
    pub target: EnvRef,
    pub body: crate::PromoteRequest,
}
endpoint!(Promote, Post "/api/v1/apps/{app}/envs/{env}/promote", body crate::PromoteRequest,
    answer JobInfo, |s| [s.target.app.as_str(), s.target.env.as_str()], body_field body, status 201,
    approval true);

pub struct Rollback {
    pub target: EnvRef,
    pub body: crate::RollbackRequest,
}
endpoint!(Rollback, Post "/api/v1/apps/{app}/envs/{env}/rollback", body crate::RollbackRequest,
    answer JobInfo, |s| [s.target.app.as_str(), s.target.env.as_str()], body_field body,
    status 201);

pub struct Restart {
    pub target: EnvRef,
}
endpoint!(Restart, Post "/api/v1/apps/{app}/envs/{env}/restart", body (), answer JobInfo,
    |s| [s.target.app.as_str(), s.target.env.as_str()], status 201);

/// Stops the environment's instance at once (no job); answers the environment, `stopped`.
pub struct StopEnv {
    pub target: EnvRef,
}
endpoint!(StopEnv, Post "/api/v1/apps/{app}/envs/{env}/stop", body (), answer EnvInfo,
    |s| [s.target.app.as_str(), s.target.env.as_str()]);

pub struct StartEnv {
    pub target: EnvRef,
}
endpoint!(StartEnv, Post "/api/v1/apps/{app}/envs/{env}/start", body (), answer JobInfo,
    |s| [s.target.app.as_str(), s.target.env.as_str()], status 201);

/// Change the environment's resource plan; answers the environment with its effective plan.
/// The change applies to the next instance started (deploy, restart, start).
pub struct UpdatePlan {
    pub target: EnvRef,
    pub body: crate::UpdatePlan,
}
endpoint!(UpdatePlan, Post "/api/v1/apps/{app}/envs/{env}/plan", body crate::UpdatePlan,
    answer EnvInfo, |s| [s.target.app.as_str(), s.target.env.as_str()], body_field body);

/// What separates two environments of an app (the second is `other`).
pub struct EnvDiff {
    pub target: EnvRef,
    pub other: crate::EnvName,
}
endpoint!(EnvDiff, Get "/api/v1/apps/{app}/envs/{env}/diff/{other}", body (),
    answer crate::EnvDiff, |s| [s.target.app.as_str(), s.target.env.as_str(), s.other.as_str()]);

/// The app's pipeline: its environments by stage, and how far apart each promotion's two ends
/// are.
pub struct ShowPipeline {
    pub app: AppName,
    /// Only the promotions out of this environment.
    pub from: Option<EnvName>,
    /// Only the promotions into this environment.
    pub to: Option<EnvName>,
}
endpoint!(ShowPipeline, Get "/api/v1/apps/{app}/pipeline", body (), answer crate::PipelineView,
    |s| [s.app.as_str()], query [from: Text maybe s.from.as_ref(), to: Text maybe s.to.as_ref()]);

/// Declare the app's pipeline (stages, allowed promotions); answers the pipeline as shown.
pub struct SetPipeline {
    pub app: AppName,
    pub body: crate::PipelineSpec,
}
endpoint!(SetPipeline, Post "/api/v1/apps/{app}/pipeline", body crate::PipelineSpec,
    answer crate::PipelineView, |s| [s.app.as_str()], body_field body);

/// Forget the declared pipeline: promotions follow the tier rule again.
pub struct ResetPipeline {
    pub app: AppName,
}
endpoint!(ResetPipeline, Delete "/api/v1/apps/{app}/pipeline", body (), answer (),
    |s| [s.app.as_str()]);

pub struct ListSchedules {
    pub app: AppName,
}
endpoint!(ListSchedules, Get "/api/v1/apps/{app}/pipeline/schedules", body (),
    answer Vec<crate::ScheduleInfo>, |s| [s.app.as_str()]);

/// A scheduled cut (201): a promotion at every tick of a cron expression, as the caller.
pub struct AddSchedule {
    pub app: AppName,
    pub body: crate::CreateSchedule,
}
endpoint!(AddSchedule, Post "/api/v1/apps/{app}/pipeline/schedules",
    body crate::CreateSchedule, answer crate::ScheduleInfo, |s| [s.app.as_str()],
    body_field body, status 201);

pub struct RemoveSchedule {
    pub app: AppName,
    pub id: i64,
}
endpoint!(RemoveSchedule, Delete "/api/v1/apps/{app}/pipeline/schedules/{id}", body (),
    answer (), |s| [s.app.as_str(), &s.id.to_string()]);

/// Run a schedule's cut now, as the caller: its promotion job (201), or 202 when it waits for
/// approval. The schedule's own ticks are not affected.
pub struct RunSchedule {
    pub app: AppName,
    pub id: i64,
}
endpoint!(RunSchedule, Post "/api/v1/apps/{app}/pipeline/schedules/{id}/run", body (),
    answer JobInfo, |s| [s.app.as_str(), &s.id.to_string()], status 201, approval true);

/// Set what deploys the environment by itself; answers the environment.
pub struct SetTrigger {
    pub target: EnvRef,
    pub body: crate::SetTrigger,
}
endpoint!(SetTrigger, Post "/api/v1/apps/{app}/envs/{env}/trigger", body crate::SetTrigger,
    answer EnvInfo, |s| [s.target.app.as_str(), s.target.env.as_str()], body_field body);

/// Set after how long idle the environment sleeps (`null`: its tier's default); answers the
/// environment.
pub struct SetSleep {
    pub target: EnvRef,
    pub body: crate::SetSleep,
}
endpoint!(SetSleep, Post "/api/v1/apps/{app}/envs/{env}/sleep", body crate::SetSleep,
    answer EnvInfo, |s| [s.target.app.as_str(), s.target.env.as_str()], body_field body);

/// A CI build's result: a green one deploys its exact commit to the environments of its app
/// and branch that deploy on CI.
pub struct CiHook {
    pub body: crate::CiReport,
}
endpoint!(CiHook, Post "/api/v1/hooks/ci", body crate::CiReport, answer crate::CiOutcome,
    |s| [], body_field body);

/// Set an app's GitHub or GitLab webhook secret (owners); answers the hook.
pub struct SetHook {
    pub app: AppName,
    pub body: crate::SetHook,
}
endpoint!(SetHook, Post "/api/v1/apps/{app}/hooks", body crate::SetHook,
    answer crate::HookInfo, |s| [s.app.as_str()], body_field body);

/// Link the app to another (`body.other`); answers the link with each environment's
/// counterpart.
pub struct CreateLink {
    pub app: AppName,
    pub body: crate::CreateLink,
}
endpoint!(CreateLink, Post "/api/v1/apps/{app}/links", body crate::CreateLink,
    answer crate::LinkInfo, |s| [s.app.as_str()], body_field body, status 201);

/// The app's links, each with every environment's counterpart (or why it has none).
pub struct ListLinks {
    pub app: AppName,
}
endpoint!(ListLinks, Get "/api/v1/apps/{app}/links", body (), answer Vec<crate::LinkInfo>,
    |s| [s.app.as_str()]);

/// Remove the app's link named `name` (the NAME of `NAME_URL`, or the other app's name).
pub struct RemoveLink {
    pub app: AppName,
    pub name: String,
}
endpoint!(RemoveLink, Delete "/api/v1/apps/{app}/links/{name}", body (), answer crate::LinkInfo,
    |s| [s.app.as_str(), s.name.as_str()]);

/// An app's configured webhooks and the paths to give GitHub or GitLab (never a secret).
pub struct ShowHooks {
    pub app: AppName,
}
endpoint!(ShowHooks, Get "/api/v1/apps/{app}/hooks", body (), answer Vec<crate::HookInfo>,
    |s| [s.app.as_str()]);

/// A GitHub webhook delivery: no bearer token, authenticated by its `X-Hub-Signature-256`.
/// Only GitHub sends it (the client has no secret to sign with); declared for its path.
pub struct GithubHook {
    pub app: AppName,
}
endpoint!(GithubHook, Post "/api/v1/hooks/github/{app}", body WebhookEvent,
    answer crate::HookOutcome,
    |s| [s.app.as_str()], auth Signed);

/// A GitLab webhook delivery: no bearer token, authenticated by its `X-Gitlab-Token`.
pub struct GitlabHook {
    pub app: AppName,
}
endpoint!(GitlabHook, Post "/api/v1/hooks/gitlab/{app}", body WebhookEvent,
    answer crate::HookOutcome,
    |s| [s.app.as_str()], auth Signed);

pub struct ListReleases {
    pub target: EnvRef,
}
endpoint!(ListReleases, Get "/api/v1/apps/{app}/envs/{env}/releases", body (),
    answer Vec<ReleaseInfo>, |s| [s.target.app.as_str(), s.target.env.as_str()]);

pub struct Logs {
    pub target: EnvRef,
    pub follow: bool,
    pub tail: usize,
    /// Keep each line's timestamp prefix (the server strips it otherwise).
    pub timestamps: bool,
}
endpoint!(Logs, Get "/api/v1/apps/{app}/envs/{env}/logs", body (), answer TextStream,
    |s| [s.target.app.as_str(), s.target.env.as_str()],
    query [follow: Bool with s.follow, tail: Integer with s.tail,
        timestamps: Bool with s.timestamps]);

/// An environment's resolved configuration (`env`), or what is set at the app level or at one
/// tier (`tier`).
pub struct ListConfig {
    pub app: AppName,
    pub env: Option<EnvName>,
    pub tier: Option<crate::Tier>,
    /// Show secret values (needs the right to deploy there).
    pub show_secrets: bool,
}
endpoint!(ListConfig, Get "/api/v1/apps/{app}/config", body (), answer crate::ConfigListing,
    |s| [s.app.as_str()],
    query [env: Text maybe s.env.as_ref(), tier: Tier maybe s.tier,
        show_secrets: Bool with s.show_secrets]);

pub struct SetConfig {
    pub app: AppName,
    pub body: crate::SetConfig,
}
endpoint!(SetConfig, Post "/api/v1/apps/{app}/config", body crate::SetConfig,
    answer crate::ConfigChanged, |s| [s.app.as_str()], body_field body);

pub struct UnsetConfig {
    pub app: AppName,
    pub body: crate::UnsetConfig,
}
endpoint!(UnsetConfig, Post "/api/v1/apps/{app}/config/unset", body crate::UnsetConfig,
    answer crate::ConfigChanged, |s| [s.app.as_str()], body_field body);

/// Replace the key that seals secret values (administrators only).
pub struct RotateSecretKey;
endpoint!(RotateSecretKey, Post "/api/v1/secrets/rotate-key", body (),
    answer crate::KeyRotated, |s| []);

/// Each tier's outbound policy for the app (defaults marked).
pub struct ShowEgressPolicies {
    pub app: AppName,
}
endpoint!(ShowEgressPolicies, Get "/api/v1/apps/{app}/egress", body (),
    answer crate::EgressPolicies, |s| [s.app.as_str()]);

/// Change one tier's outbound policy; answers every tier's.
pub struct SetEgressPolicy {
    pub app: AppName,
    pub body: crate::SetEgressPolicy,
}
endpoint!(SetEgressPolicy, Post "/api/v1/apps/{app}/egress", body crate::SetEgressPolicy,
    answer crate::EgressPolicies, |s| [s.app.as_str()], body_field body);

/// The environment's outbound requests, newest first (`denied`: refused ones only, and the
/// ones `record` mode marked).
pub struct ListEgressLog {
    pub target: EnvRef,
    pub limit: u32,
    pub denied: bool,
}
endpoint!(ListEgressLog, Get "/api/v1/apps/{app}/envs/{env}/egress", body (),
    answer crate::EgressLog, |s| [s.target.app.as_str(), s.target.env.as_str()],
    query [limit: Integer with s.limit, denied: Bool with s.denied]);

pub struct ListDomains;
endpoint!(ListDomains, Get "/api/v1/domains", body (), answer Vec<DomainInfo>, |s| []);

pub struct AddDomain {
    pub body: crate::AddDomain,
}
endpoint!(AddDomain, Post "/api/v1/domains", body crate::AddDomain, answer DomainInfo, |s| [],
    body_field body, status 201);

pub struct RemoveDomain {
    pub domain: DomainName,
}
endpoint!(RemoveDomain, Delete "/api/v1/domains/{domain}", body (), answer (),
    |s| [s.domain.as_str()]);

pub struct SwitchDomain {
    pub domain: DomainName,
    pub body: crate::SwitchDomain,
}
endpoint!(SwitchDomain, Post "/api/v1/domains/{domain}/switch", body crate::SwitchDomain,
    answer SwitchInfo, |s| [s.domain.as_str()], body_field body, approval true);

pub struct RollbackDomain {
    pub domain: DomainName,
}
endpoint!(RollbackDomain, Post "/api/v1/domains/{domain}/rollback", body (), answer SwitchInfo,
    |s| [s.domain.as_str()]);

pub struct SetMaintenance {
    pub domain: DomainName,
    pub body: crate::SetMaintenance,
}
endpoint!(SetMaintenance, Post "/api/v1/domains/{domain}/maintenance",
    body crate::SetMaintenance, answer DomainInfo, |s| [s.domain.as_str()], body_field body);

pub struct DomainHistory {
    pub domain: DomainName,
}
endpoint!(DomainHistory, Get "/api/v1/domains/{domain}/history", body (),
    answer Vec<DomainEvent>, |s| [s.domain.as_str()]);

/// Change a domain's HTTPS settings (mode off/acme, redirect, HSTS, ACME challenge).
pub struct SetTls {
    pub domain: DomainName,
    pub body: crate::SetTls,
}
endpoint!(SetTls, Post "/api/v1/domains/{domain}/tls", body crate::SetTls, answer DomainInfo,
    |s| [s.domain.as_str()], body_field body);

/// Every certificate of the domains the caller may see, with its renewal state.
pub struct ListCerts;
endpoint!(ListCerts, Get "/api/v1/certs", body (), answer Vec<crate::CertInfo>, |s| []);

/// Serve the domain with its owner's certificate (checked: key, chain, names, dates).
pub struct AddCert {
    pub domain: DomainName,
    pub body: crate::AddCert,
}
endpoint!(AddCert, Post "/api/v1/domains/{domain}/cert", body crate::AddCert,
    answer crate::CertInfo, |s| [s.domain.as_str()], body_field body, status 201);

/// Stop serving the domain over HTTPS and forget its certificate (its TLS turns off).
pub struct RemoveCert {
    pub domain: DomainName,
}
endpoint!(RemoveCert, Delete "/api/v1/domains/{domain}/cert", body (), answer (),
    |s| [s.domain.as_str()]);

/// Order the domain's ACME certificate now rather than when due; answers at once (the order
/// runs in the background: see `ListCerts`).
pub struct RenewCert {
    pub domain: DomainName,
}
endpoint!(RenewCert, Post "/api/v1/domains/{domain}/cert/renew", body (),
    answer crate::CertInfo, |s| [s.domain.as_str()]);

pub struct ListUsers;
endpoint!(ListUsers, Get "/api/v1/users", body (), answer Vec<UserInfo>, |s| []);

pub struct AddUser {
    pub body: crate::CreateUser,
}
endpoint!(AddUser, Post "/api/v1/users", body crate::CreateUser, answer UserInfo, |s| [],
    body_field body, status 201);

pub struct ListTokens;
endpoint!(ListTokens, Get "/api/v1/tokens", body (), answer Vec<TokenInfo>, |s| []);

pub struct CreateToken {
    pub body: crate::CreateToken,
}
endpoint!(CreateToken, Post "/api/v1/tokens", body crate::CreateToken, answer TokenCreated,
    |s| [], body_field body, status 201);

pub struct RevokeToken {
    pub id: i64,
}
endpoint!(RevokeToken, Delete "/api/v1/tokens/{id}", body (), answer (),
    |s| [&s.id.to_string()]);

pub struct SetGrant {
    pub body: crate::SetGrant,
}
endpoint!(SetGrant, Post "/api/v1/grants", body crate::SetGrant, answer (), |s| [],
    body_field body);

pub struct Policy {
    pub app: AppName,
}
endpoint!(Policy, Get "/api/v1/apps/{app}/policy", body (), answer Vec<PolicyEntry>,
    |s| [s.app.as_str()]);

pub struct SetPolicy {
    pub app: AppName,
    pub body: crate::SetPolicy,
}
endpoint!(SetPolicy, Post "/api/v1/apps/{app}/policy", body crate::SetPolicy, answer (),
    |s| [s.app.as_str()], body_field body);

pub struct SetApprovalRule {
    pub app: AppName,
    pub body: crate::SetApprovalRule,
}
endpoint!(SetApprovalRule, Post "/api/v1/apps/{app}/approval-rules",
    body crate::SetApprovalRule, answer (), |s| [s.app.as_str()], body_field body);

pub struct SetProtection {
    pub app: AppName,
    pub body: crate::SetProtection,
}
endpoint!(SetProtection, Post "/api/v1/apps/{app}/protection", body crate::SetProtection,
    answer (), |s| [s.app.as_str()], body_field body);

/// Pending requests; with `all`, decided and expired ones too.
pub struct ListApprovals {
    pub all: bool,
}
endpoint!(ListApprovals, Get "/api/v1/approvals", body (), answer Vec<ApprovalInfo>, |s| [],
    query [all: Bool with s.all]);

pub struct Approve {
    pub id: i64,
}
endpoint!(Approve, Post "/api/v1/approvals/{id}/approve", body (), answer ApprovalInfo,
    |s| [&s.id.to_string()]);

pub struct Reject {
    pub id: i64,
}
endpoint!(Reject, Post "/api/v1/approvals/{id}/reject", body (), answer ApprovalInfo,
    |s| [&s.id.to_string()]);

pub struct Audit {
    pub app: Option<AppName>,
    pub env: Option<EnvName>,
    /// Unix seconds.
    pub since: Option<i64>,
}
endpoint!(Audit, Get "/api/v1/audit", body (), answer Vec<AuditInfo>, |s| [],
    query [app: Text maybe s.app.as_ref(), env: Text maybe s.env.as_ref(),
        since: Integer maybe s.since]);

pub struct VerifyAudit;
endpoint!(VerifyAudit, Get "/api/v1/audit/verify", body (), answer AuditVerification, |s| []);

/// Queued and running jobs and the 20 most recent others (every job with `all`), of one app or
/// environment when given.
pub struct ListJobs {
    pub app: Option<AppName>,
    pub env: Option<EnvName>,
    pub all: bool,
}
endpoint!(ListJobs, Get "/api/v1/jobs", body (), answer Vec<JobInfo>, |s| [],
    query [app: Text maybe s.app.as_ref(), env: Text maybe s.env.as_ref(), all: Bool with s.all]);

pub struct ShowJob {
    pub id: i64,
}
endpoint!(ShowJob, Get "/api/v1/jobs/{id}", body (), answer JobInfo, |s| [&s.id.to_string()]);

/// Every event of the job so far, then the rest as they happen, until `end`.
pub struct JobEvents {
    pub id: i64,
}
endpoint!(JobEvents, Get "/api/v1/jobs/{id}/events", body (), answer EventStream,
    |s| [&s.id.to_string()]);

pub struct CancelJob {
    pub id: i64,
}
endpoint!(CancelJob, Post "/api/v1/jobs/{id}/cancel", body (), answer JobInfo,
    |s| [&s.id.to_string()]);

/// Prometheus text (any valid token).
pub struct Metrics;
endpoint!(Metrics, Get "/metrics", body (), answer TextStream, |s| []);

/// An environment's data: engine, generation, URL (password hidden), storage, origin,
/// attachments.
pub struct ShowData {
    pub target: EnvRef,
}
endpoint!(ShowData, Get "/api/v1/apps/{app}/envs/{env}/data", body (), answer crate::DataInfo,
    |s| [s.target.app.as_str(), s.target.env.as_str()]);

/// New data from the live release's seed, then the live release relaunched on it (a job).
pub struct SeedData {
    pub target: EnvRef,
    pub body: crate::SeedData,
}
endpoint!(SeedData, Post "/api/v1/apps/{app}/envs/{env}/data/seed", body crate::SeedData,
    answer JobInfo, |s| [s.target.app.as_str(), s.target.env.as_str()], body_field body,
    status 201);

/// A copy of `body.from`'s data and storage, then the live release relaunched on it (a job).
pub struct CloneData {
    pub target: EnvRef,
    pub body: crate::DataSource,
}
endpoint!(CloneData, Post "/api/v1/apps/{app}/envs/{env}/data/clone", body crate::DataSource,
    answer JobInfo, |s| [s.target.app.as_str(), s.target.env.as_str()], body_field body,
    status 201);

/// A masked copy of production's data (`body.from`), then the live release relaunched on it
/// (a job).
pub struct SyncData {
    pub target: EnvRef,
    pub body: crate::DataSource,
}
endpoint!(SyncData, Post "/api/v1/apps/{app}/envs/{env}/data/sync", body crate::DataSource,
    answer JobInfo, |s| [s.target.app.as_str(), s.target.env.as_str()], body_field body,
    status 201);

/// Give the environment a URL of another's database (`body.to`) limited to `body.mode`;
/// answers its data.
pub struct AttachData {
    pub target: EnvRef,
    pub body: crate::AttachData,
}
endpoint!(AttachData, Post "/api/v1/apps/{app}/envs/{env}/data/attachments",
    body crate::AttachData, answer crate::DataInfo,
    |s| [s.target.app.as_str(), s.target.env.as_str()], body_field body);

/// Take the environment's access to `other`'s database away; answers its data.
pub struct DetachData {
    pub target: EnvRef,
    pub other: EnvName,
}
endpoint!(DetachData, Delete "/api/v1/apps/{app}/envs/{env}/data/attachments/{other}", body (),
    answer crate::DataInfo,
    |s| [s.target.app.as_str(), s.target.env.as_str(), s.other.as_str()]);

/// The URL `turnout data psql|sqlite` connects with (its password included; audited).
pub struct DataConnection {
    pub target: EnvRef,
}
endpoint!(DataConnection, Get "/api/v1/apps/{app}/envs/{env}/data/connection", body (),
    answer crate::DataConnection, |s| [s.target.app.as_str(), s.target.env.as_str()]);

/// Run a command in the environment's live release (`turnout run`): the connection is upgraded
/// to [`crate::run::RUN_PROTOCOL`] (audited; the role that may deploy there).
pub struct Run {
    pub target: EnvRef,
    pub body: crate::RunRequest,
}
endpoint!(Run, Post "/api/v1/apps/{app}/envs/{env}/run", body crate::RunRequest,
    answer RunStream, |s| [s.target.app.as_str(), s.target.env.as_str()], body_field body,
    status 101);

/// Run a command in the environment's live release as a job (`turnout run --detach`): its
/// output lines and exit status are the job's (audited; the role that may deploy there).
pub struct RunJob {
    pub target: EnvRef,
    pub body: crate::RunRequest,
}
endpoint!(RunJob, Post "/api/v1/apps/{app}/envs/{env}/run/jobs", body crate::RunRequest,
    answer JobInfo, |s| [s.target.app.as_str(), s.target.env.as_str()], body_field body,
    status 201);

/// An environment's snapshots (newest first), its schedule, restore-point bound and drills.
pub struct ListBackups {
    pub target: EnvRef,
}
endpoint!(ListBackups, Get "/api/v1/apps/{app}/envs/{env}/backups", body (),
    answer crate::BackupList, |s| [s.target.app.as_str(), s.target.env.as_str()]);

/// Take a snapshot of the environment's data now (a job).
pub struct CreateBackup {
    pub target: EnvRef,
    pub body: crate::CreateBackup,
}
endpoint!(CreateBackup, Post "/api/v1/apps/{app}/envs/{env}/backups", body crate::CreateBackup,
    answer JobInfo, |s| [s.target.app.as_str(), s.target.env.as_str()], body_field body,
    status 201);

/// Set the environment's backup schedule (over turnout.toml's and the tier's); answers its list.
pub struct SetBackupPolicy {
    pub target: EnvRef,
    pub body: crate::SetBackupPolicy,
}
endpoint!(SetBackupPolicy, Post "/api/v1/apps/{app}/envs/{env}/backups/policy",
    body crate::SetBackupPolicy, answer crate::BackupList,
    |s| [s.target.app.as_str(), s.target.env.as_str()], body_field body);

pub struct ShowBackup {
    pub id: i64,
}
endpoint!(ShowBackup, Get "/api/v1/backups/{id}", body (), answer crate::BackupInfo,
    |s| [&s.id.to_string()]);

/// Restore the snapshot into a scratch area and check it (a job).
pub struct VerifyBackup {
    pub id: i64,
}
endpoint!(VerifyBackup, Post "/api/v1/backups/{id}/verify", body (), answer JobInfo,
    |s| [&s.id.to_string()], status 201);

/// Delete the snapshot (`force`: a pinned one too); answers what was deleted.
pub struct DeleteBackup {
    pub id: i64,
    pub force: bool,
}
endpoint!(DeleteBackup, Delete "/api/v1/backups/{id}", body (), answer crate::BackupInfo,
    |s| [&s.id.to_string()], query [force: Bool with s.force]);
/// Put the environment's data (or `body.into`'s) back to a moment or a snapshot, then
/// relaunch (a job). A production target needs `body.yes`: without it, 409 saying how much
/// newer data would be discarded.
pub struct Restore {
    pub target: EnvRef,
    pub body: crate::RestoreRequest,
}
endpoint!(Restore, Post "/api/v1/apps/{app}/envs/{env}/restore", body crate::RestoreRequest,
    answer JobInfo, |s| [s.target.app.as_str(), s.target.env.as_str()], body_field body,
    status 201);

/// Make a production copy production as of a moment, code and data (a job).
pub struct ResetData {
    pub target: EnvRef,
    pub body: crate::ResetRequest,
}
endpoint!(ResetData, Post "/api/v1/apps/{app}/envs/{env}/data/reset", body crate::ResetRequest,
    answer JobInfo, |s| [s.target.app.as_str(), s.target.env.as_str()], body_field body,
    status 201);

/// Put a production copy back exactly as its last reset left it (a job).
pub struct UndoData {
    pub target: EnvRef,
}
endpoint!(UndoData, Post "/api/v1/apps/{app}/envs/{env}/data/undo", body (), answer JobInfo,
    |s| [s.target.app.as_str(), s.target.env.as_str()], status 201);

/// A recovery drill: restore into a scratch environment, start and check it, measure, remove
/// it (a job).
pub struct Drill {
    pub target: EnvRef,
    pub body: crate::DrillRequest,
}
endpoint!(Drill, Post "/api/v1/apps/{app}/envs/{env}/drills", body crate::DrillRequest,
    answer JobInfo, |s| [s.target.app.as_str(), s.target.env.as_str()], body_field body,
    status 201);

/// The mail an environment sent (newest first).
pub struct ListMail {
    pub target: EnvRef,
}
endpoint!(ListMail, Get "/api/v1/apps/{app}/envs/{env}/mail", body (), answer crate::MailList,
    |s| [s.target.app.as_str(), s.target.env.as_str()]);

/// Remove every message the environment's catcher kept.
pub struct ClearMail {
    pub target: EnvRef,
}
endpoint!(ClearMail, Delete "/api/v1/apps/{app}/envs/{env}/mail", body (),
    answer crate::MailCleared, |s| [s.target.app.as_str(), s.target.env.as_str()]);

/// One caught message: headers, text and HTML parts, attachments (`raw`: the message too).
pub struct ShowMail {
    pub id: i64,
    pub raw: bool,
}
endpoint!(ShowMail, Get "/api/v1/mail/{id}", body (), answer crate::MailDetail,
    |s| [&s.id.to_string()], query [raw: Bool with s.raw]);

/// Each tier's mail relay setting.
pub struct ListMailRelays {
    pub app: AppName,
}
endpoint!(ListMailRelays, Get "/api/v1/apps/{app}/mail/relays", body (), answer crate::MailRelays,
    |s| [s.app.as_str()]);

/// Set or turn off one tier's relay; answers every tier's setting.
pub struct SetMailRelay {
    pub app: AppName,
    pub body: crate::SetMailRelay,
}
endpoint!(SetMailRelay, Post "/api/v1/apps/{app}/mail/relays", body crate::SetMailRelay,
    answer crate::MailRelays, |s| [s.app.as_str()], body_field body);

/// Calls the macro `$m` with the name of every endpoint above: the one list that
/// `all_paths()` and the OpenAPI document (`openapi::document`) are built from.
#[macro_export]
macro_rules! for_each_endpoint {
    ($m:ident) => {
        $m!(
            Health,
            OpenApiDocument,
            ListApps,
            CreateApp,
            DeleteApp,
            ListEnvs,
            ListAppEnvs,
            CreateEnv,
            ShowEnv,
            DeleteEnv,
            Deploy,
            Promote,
            Rollback,
            Restart,
            StopEnv,
            StartEnv,
            UpdatePlan,
            ListReleases,
            EnvDiff,
            ShowPipeline,
            SetPipeline,
            ResetPipeline,
            ListSchedules,
            AddSchedule,
            RemoveSchedule,
            RunSchedule,
            SetTrigger,
            CiHook,
            SetHook,
            ShowHooks,
            GithubHook,
            GitlabHook,
            UpdateApp,
            Logs,
            SetSleep,
            ListConfig,
            SetConfig,
            UnsetConfig,
            RotateSecretKey,
            ShowEgressPolicies,
            SetEgressPolicy,
            ListEgressLog,
            ListDomains,
            AddDomain,
            RemoveDomain,
            SwitchDomain,
            RollbackDomain,
            SetMaintenance,
            DomainHistory,
            SetTls,
            ListCerts,
            AddCert,
            RemoveCert,
            RenewCert,
            ListUsers,
            AddUser,
            ListTokens,
            CreateToken,
            RevokeToken,
            SetGrant,
            Policy,
            SetPolicy,
            SetApprovalRule,
            SetProtection,
            ListApprovals,
            Approve,
            Reject,
            Audit,
            VerifyAudit,
            ListJobs,
            ShowJob,
            JobEvents,
            CancelJob,
            Metrics,
            ShowData,
            SeedData,
            CloneData,
            SyncData,
            AttachData,
            DetachData,
            DataConnection,
            Run,
            RunJob,
            ListBackups,
            CreateBackup,
            SetBackupPolicy,
            ShowBackup,
            VerifyBackup,
            DeleteBackup,
            Restore,
            ResetData,
            UndoData,
            Drill,
            ListMail,
            ClearMail,
            ShowMail,
            ListMailRelays,
            SetMailRelay,
            CreateLink,
            ListLinks,
            RemoveLink,
        )
    };
}

/// (method, PATH) of every endpoint above, the ones needing no token (`GET /api/v1/health`,
/// `GET /api/v1/openapi.json`) included, so a test can hold the server's route list against it.
pub fn all_paths() -> Vec<(&'static str, &'static str)> {
    macro_rules! paths {
        ($($e:ident),* $(,)?) => {
            vec![$(($e::METHOD.as_str(), $e::PATH)),*]
        };
    }
    crate::for_each_endpoint!(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> EnvRef {
        "shop/staging".parse().unwrap()
    }

    #[test]
    fn paths_are_filled_in_order_and_encoded() {
        assert_eq!(
            Deploy {
                target: target(),
                body: Default::default()
            }
            .path(),
            "/api/v1/apps/shop/envs/staging/deploy"
        );
        assert_eq!(
            ListConfig {
                app: "shop".parse().unwrap(),
                env: None,
                tier: Some(crate::Tier::Staging),
                show_secrets: false,
            }
            .path(),
            "/api/v1/apps/shop/config?tier=staging&show_secrets=false"
        );
        assert_eq!(ShowJob { id: 12 }.path(), "/api/v1/jobs/12");
        assert_eq!(
            JobEvents { id: 12 }.path(),
            "/api/v1/jobs/12/events",
            "the pattern's tail after the last parameter is kept"
        );
    }

    #[test]
    fn queries_carry_only_what_is_set() {
        assert_eq!(
            Audit {
                app: Some("shop".parse().unwrap()),
                env: None,
                since: Some(1_700_000_000)
            }
            .path(),
            "/api/v1/audit?app=shop&since=1700000000"
        );
        assert_eq!(
            Audit {
                app: None,
                env: None,
                since: None
            }
            .path(),
            "/api/v1/audit"
        );
        assert_eq!(
            Logs {
                target: target(),
                follow: true,
                tail: 5,
                timestamps: false
            }
            .path(),
            "/api/v1/apps/shop/envs/staging/logs?follow=true&tail=5&timestamps=false"
        );
        assert_eq!(
            ListJobs {
                app: Some("shop".parse().unwrap()),
                env: Some("staging".parse().unwrap()),
                all: true
            }
            .path(),
            "/api/v1/jobs?app=shop&env=staging&all=true"
        );
    }

    #[test]
    fn bodies_only_where_the_endpoint_takes_one() {
        let deploy = Deploy {
            target: target(),
            body: crate::DeployRequest {
                git_ref: Some("v1".into()),
            },
        };
        assert_eq!(deploy.body().and_then(|b| b.git_ref.as_deref()), Some("v1"));
        assert!(Restart { target: target() }.body().is_none());
    }

    #[test]
    fn data_paths_name_the_environment_and_the_other() {
        let detach = DetachData {
            target: target(),
            other: "prod".parse().unwrap(),
        };
        assert_eq!(
            detach.path(),
            "/api/v1/apps/shop/envs/staging/data/attachments/prod"
        );
        assert_eq!(
            DataConnection { target: target() }.path(),
            "/api/v1/apps/shop/envs/staging/data/connection"
        );
    }

    #[test]
    fn every_endpoint_is_listed_once() {
        let all = all_paths();
        let mut seen = std::collections::HashSet::new();
        for (method, path) in &all {
            assert!(seen.insert((method, path)), "{method} {path} listed twice");
            assert!(
                path.starts_with("/api/v1/") || *path == "/metrics",
                "{path}"
            );
        }
        assert!(all.contains(&("POST", "/api/v1/jobs/{id}/cancel")));
        assert_eq!(all.len(), 101);
    }
}
