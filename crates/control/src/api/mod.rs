//! The HTTP API, `/api/v1`, JSON in and out. Every CLI command is a thin client of these routes.
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, State};
use axum::handler::Handler;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use turnout_model::endpoint::{self as ep, Endpoint, Method};
use turnout_model::{
    AddDomain, AppName, ApprovalPending, CreateApp, CreateEnv, CreateToken, CreateUser,
    DeployRequest, DomainName, EnvName, EnvRef, ErrorBody, JobEvent, RollbackRequest,
    SetApprovalRule, SetGrant, SetMaintenance, SetPolicy, SetProtection, SwitchDomain, UpdateApp,
    UpdatePlan,
};

use crate::access::Principal;

use crate::error::{ControlError, Escaped};
use crate::plane::{ControlPlane, LogView};

mod admin;
mod backup;
mod config;
mod data;
mod domains;
mod egress;
mod envs;
mod git;
mod hooks;
mod jobs;
mod links;
mod logs;

pub(crate) use jobs::job_event_stream;
pub(crate) use logs::log_text;
mod mail;
mod pipeline;
mod restore;
mod run;

type Api = Arc<ControlPlane>;

/// Every route, registered through the endpoint it serves (`turnout_model::endpoint`): the
/// method and path are written once, for the server and the client alike, and `endpoints()`
/// lists exactly what the router serves (the access-control test checks its table against
/// that list).
struct Routes {
    router: Router<Api>,
    list: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn add<E: Endpoint, H: Handler<T, Api>, T: 'static>(mut self, handler: H) -> Routes {
        let method = match E::METHOD {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
            Method::Delete => MethodFilter::DELETE,
        };
        self.list.push((E::METHOD.as_str(), E::PATH));
        self.router = self.router.route(E::PATH, on(method, handler));
        self
    }
}

fn routes() -> Routes {
    Routes {
        router: Router::new(),
        list: Vec::new(),
    }
    .add::<ep::ListApps, _, _>(envs::list_apps)
    .add::<ep::CreateApp, _, _>(envs::create_app)
    .add::<ep::DeleteApp, _, _>(envs::delete_app)
    .add::<ep::ListEnvs, _, _>(envs::list_envs)
    .add::<ep::ListAppEnvs, _, _>(envs::list_app_envs)
    .add::<ep::CreateEnv, _, _>(envs::create_env)
    .add::<ep::ShowEnv, _, _>(envs::show_env)
    .add::<ep::DeleteEnv, _, _>(envs::delete_env)
    .add::<ep::Deploy, _, _>(envs::deploy)
    .add::<ep::Rollback, _, _>(envs::rollback)
    .add::<ep::Restart, _, _>(envs::restart)
    .add::<ep::StopEnv, _, _>(envs::stop_env)
    .add::<ep::StartEnv, _, _>(envs::start_env)
    .add::<ep::UpdatePlan, _, _>(envs::update_plan)
    .add::<ep::ListReleases, _, _>(envs::releases)
    .add::<ep::EnvDiff, _, _>(envs::diff)
    .add::<ep::ShowPipeline, _, _>(envs::pipeline)
    .add::<ep::SetPipeline, _, _>(pipeline::set_pipeline)
    .add::<ep::ResetPipeline, _, _>(pipeline::reset_pipeline)
    .add::<ep::ListSchedules, _, _>(pipeline::list_schedules)
    .add::<ep::AddSchedule, _, _>(pipeline::add_schedule)
    .add::<ep::RemoveSchedule, _, _>(pipeline::remove_schedule)
    .add::<ep::RunSchedule, _, _>(pipeline::run_schedule)
    .add::<ep::SetTrigger, _, _>(envs::set_trigger)
    .add::<ep::CiHook, _, _>(envs::ci_hook)
    .add::<ep::UpdateApp, _, _>(envs::update_app)
    .add::<ep::Promote, _, _>(envs::promote)
    .add::<ep::Logs, _, _>(logs::logs)
    .add::<ep::ListConfig, _, _>(config::list)
    .add::<ep::SetConfig, _, _>(config::set)
    .add::<ep::UnsetConfig, _, _>(config::unset)
    .add::<ep::RotateSecretKey, _, _>(config::rotate_key)
    .add::<ep::ListJobs, _, _>(jobs::list_jobs)
    .add::<ep::ShowJob, _, _>(jobs::show_job)
    .add::<ep::JobEvents, _, _>(jobs::job_events)
    .add::<ep::CancelJob, _, _>(jobs::cancel_job)
    .add::<ep::ShowEgressPolicies, _, _>(egress::policies)
    .add::<ep::SetEgressPolicy, _, _>(egress::set_policy)
    .add::<ep::ListEgressLog, _, _>(egress::log)
    .add::<ep::ListDomains, _, _>(domains::list_domains)
    .add::<ep::AddDomain, _, _>(domains::add_domain)
    .add::<ep::RemoveDomain, _, _>(domains::remove_domain)
    .add::<ep::SwitchDomain, _, _>(domains::switch_domain)
    .add::<ep::RollbackDomain, _, _>(domains::rollback_domain)
    .add::<ep::SetMaintenance, _, _>(domains::set_maintenance)
    .add::<ep::DomainHistory, _, _>(domains::domain_history)
    .add::<ep::SetTls, _, _>(domains::set_tls)
    .add::<ep::ListCerts, _, _>(domains::list_certs)
    .add::<ep::AddCert, _, _>(domains::add_cert)
    .add::<ep::RemoveCert, _, _>(domains::remove_cert)
    .add::<ep::RenewCert, _, _>(domains::renew_cert)
    .add::<ep::ListUsers, _, _>(admin::list_users)
    .add::<ep::AddUser, _, _>(admin::add_user)
    .add::<ep::ListTokens, _, _>(admin::list_tokens)
    .add::<ep::CreateToken, _, _>(admin::create_token)
    .add::<ep::RevokeToken, _, _>(admin::revoke_token)
    .add::<ep::SetGrant, _, _>(admin::set_grant)
    .add::<ep::Policy, _, _>(admin::policy)
    .add::<ep::SetPolicy, _, _>(admin::set_policy)
    .add::<ep::SetApprovalRule, _, _>(admin::set_approval_rule)
    .add::<ep::SetProtection, _, _>(admin::set_protection)
    .add::<ep::ListApprovals, _, _>(admin::list_approvals)
    .add::<ep::Approve, _, _>(admin::approve)
    .add::<ep::Reject, _, _>(admin::reject)
    .add::<ep::Audit, _, _>(admin::audit)
    .add::<ep::VerifyAudit, _, _>(admin::verify_audit)
    .add::<ep::Metrics, _, _>(admin::metrics)
    .add::<ep::SetHook, _, _>(hooks::set_hook)
    .add::<ep::ShowHooks, _, _>(hooks::show_hooks)
    .add::<ep::CreateLink, _, _>(links::create_link)
    .add::<ep::ListLinks, _, _>(links::list_links)
    .add::<ep::RemoveLink, _, _>(links::remove_link)
    .add::<ep::SetSleep, _, _>(envs::set_sleep)
    .add::<ep::ShowData, _, _>(data::show)
    .add::<ep::SeedData, _, _>(data::seed)
    .add::<ep::CloneData, _, _>(data::clone)
    .add::<ep::SyncData, _, _>(data::sync)
    .add::<ep::AttachData, _, _>(data::attach)
    .add::<ep::DetachData, _, _>(data::detach)
    .add::<ep::DataConnection, _, _>(data::connection)
    .add::<ep::Run, _, _>(run::run)
    .add::<ep::RunJob, _, _>(run::run_job)
    .add::<ep::ListBackups, _, _>(backup::list)
    .add::<ep::CreateBackup, _, _>(backup::create)
    .add::<ep::SetBackupPolicy, _, _>(backup::policy)
    .add::<ep::ShowBackup, _, _>(backup::show)
    .add::<ep::VerifyBackup, _, _>(backup::verify)
    .add::<ep::DeleteBackup, _, _>(backup::delete)
    .add::<ep::Restore, _, _>(restore::restore)
    .add::<ep::ResetData, _, _>(restore::reset)
    .add::<ep::UndoData, _, _>(restore::undo)
    .add::<ep::Drill, _, _>(restore::drill)
    .add::<ep::ListMail, _, _>(mail::list)
    .add::<ep::ClearMail, _, _>(mail::clear)
    .add::<ep::ShowMail, _, _>(mail::show)
    .add::<ep::ListMailRelays, _, _>(mail::relays)
    .add::<ep::SetMailRelay, _, _>(mail::set_relay)
}

/// The webhook deliveries: no bearer token, each authenticated by its provider's signature (or
/// token) against the app's secret, with their own body limit.
fn signed_routes() -> Routes {
    Routes {
        router: Router::new(),
        list: Vec::new(),
    }
    .add::<ep::GithubHook, _, _>(hooks::github)
    .add::<ep::GitlabHook, _, _>(hooks::gitlab)
}

/// (method, path) of every endpoint authenticated by a bearer token.
pub fn endpoints() -> Vec<(&'static str, &'static str)> {
    routes().list
}

/// (method, path) of every endpoint authenticated by a webhook signature instead.
pub fn signed_endpoints() -> Vec<(&'static str, &'static str)> {
    signed_routes().list
}

fn method_not_allowed() -> ApiError {
    ApiError(ControlError::MethodNotAllowed(
        "this API path does not take that method; see the README's API section".into(),
    ))
}

/// The API, and git's smart HTTP under `/git/` (request bodies of at most `max_push` bytes).
pub fn router(plane: Api, max_push: u64) -> Router {
    routes()
        .router
        // Set before the layer: it reaches only the routes' own method routers.
        .method_not_allowed_fallback(|| async { method_not_allowed() })
        .layer(axum::middleware::from_fn_with_state(
            plane.clone(),
            authenticate,
        ))
        // Merged after the layer, so outside it: a delivery is checked by its signature.
        .merge(
            signed_routes()
                .router
                .method_not_allowed_fallback(|| async { method_not_allowed() })
                .layer(DefaultBodyLimit::max(crate::hooks::MAX_BODY)),
        )
        // Git's smart HTTP (`/git/APP.git/…`) authenticates with HTTP Basic itself (added
        // after the layer, so the bearer check does not reach it).
        .merge(git::router(max_push))
        // Liveness needs no token (added after the layer, so it is outside it).
        .route(
            ep::Health::PATH,
            get(|| async { Json(turnout_model::endpoint::HealthInfo { ok: true }) }),
        )
        // Nor does the API's description: it holds no data, and generators fetch it bare.
        .route(ep::OpenApiDocument::PATH, get(openapi_document))
        .fallback(|| async {
            ApiError(ControlError::NotFound(
                "no such API route; see the README's API section".into(),
            ))
        })
        .with_state(plane)
}

/// The OpenAPI document, built once from the endpoint declarations (the same bytes
/// `turnout api spec` prints).
async fn openapi_document() -> Response {
    static DOCUMENT: std::sync::LazyLock<std::result::Result<String, String>> =
        std::sync::LazyLock::new(|| {
            turnout_model::openapi::document()
                .to_pretty_json()
                .map_err(|e| format!("cannot write the OpenAPI document: {e}"))
        });
    match &*DOCUMENT {
        Ok(doc) => ([(header::CONTENT_TYPE, "application/json")], doc.clone()).into_response(),
        Err(e) => ApiError(ControlError::Internal(e.clone())).into_response(),
    }
}

/// Every route but `/api/v1/health`, `/api/v1/openapi.json` and the webhook deliveries needs `Authorization: Bearer
/// <token>`; the principal it stands for travels to the handler as a request extension.
async fn authenticate(
    State(p): State<Api>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_owned);
    match p.authenticate(token.as_deref()).await {
        Ok(who) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Err(e) => ApiError(e).into_response(),
    }
}

type Who = axum::Extension<Principal>;

struct ApiError(ControlError);

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ControlError::NeedsApproval { id, message } = &self.0 {
            let body = ApprovalPending {
                approval: *id,
                message: message.clone(),
            };
            tracing::info!(approval = id, "request waits for approval");
            return (StatusCode::ACCEPTED, Json(body)).into_response();
        }
        let code = self.0.code();
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let error = self.0.to_string();
        // A refusal usually quotes the input it refused: escaped, it cannot forge log lines.
        let logged = Escaped(&error);
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %logged, "API request failed");
        } else {
            tracing::info!(status = status.as_u16(), error = %logged, "API request refused");
        }
        (status, Json(ErrorBody { error, code })).into_response()
    }
}

type Result<T> = std::result::Result<T, ApiError>;

/// axum's own refusals (a bad query string, a path segment that is not a number, a body over
/// the limit) answer like every other error, `{"error", "code"}`, not axum's plain text.
fn refused(status: StatusCode, text: String) -> ApiError {
    ApiError(match status {
        StatusCode::PAYLOAD_TOO_LARGE => ControlError::TooLarge(format!(
            "{text}: the API takes request bodies of at most 2 MiB"
        )),
        s if s.is_client_error() => ControlError::Invalid(text),
        _ => ControlError::Internal(text),
    })
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        refused(r.status(), r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        refused(r.status(), r.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        refused(r.status(), r.body_text())
    }
}

/// `axum::extract::Query`, refusing with an `ApiError`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
struct Query<T>(T);

/// `axum::extract::Path`, refusing with an `ApiError`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
struct Path<T>(T);

/// The request body's bytes (parsed by `body`), refusing with an `ApiError` (413 over 2 MiB).
struct RawBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(
        req: axum::extract::Request,
        state: &S,
    ) -> std::result::Result<Self, ApiError> {
        Ok(RawBody(Bytes::from_request(req, state).await?))
    }
}

/// Parse a JSON body into `T`, answering 400 with serde's reason (which for names is the
/// name's own validation message) instead of axum's default rejection.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        let msg = e.to_string();
        let msg = msg
            .rfind(" at line ")
            .map_or(msg.as_str(), |i| &msg[..i])
            .to_owned();
        ApiError(ControlError::Invalid(msg))
    })
}

/// Like `body`, for a body that may be left out (every field has a default).
fn body_or_default<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T> {
    if bytes.is_empty() {
        Ok(T::default())
    } else {
        body(bytes)
    }
}

fn app_name(s: &str) -> Result<AppName> {
    AppName::new(s).map_err(|e| ApiError(ControlError::Invalid(e.to_string())))
}

fn env_ref(app: &str, env: &str) -> Result<EnvRef> {
    Ok(EnvRef {
        app: app_name(app)?,
        env: EnvName::new(env).map_err(|e| ApiError(ControlError::Invalid(e.to_string())))?,
    })
}

fn domain_name(s: &str) -> Result<DomainName> {
    DomainName::new(s).map_err(|e| ApiError(ControlError::Invalid(e.to_string())))
}

#[cfg(test)]
mod tests {
    /// The server serves exactly the endpoints the model declares (and so the client knows):
    /// one added on one side only fails here.
    #[test]
    fn the_router_serves_every_declared_endpoint_and_no_other() {
        let mut served = super::endpoints();
        served.extend(super::signed_endpoints());
        served.push(("GET", <super::ep::Health as super::Endpoint>::PATH));
        served.push(("GET", <super::ep::OpenApiDocument as super::Endpoint>::PATH));
        served.sort_unstable();
        let mut declared = turnout_model::endpoint::all_paths();
        declared.sort_unstable();
        assert_eq!(served, declared);
    }

    /// Every route the router serves is in the OpenAPI document with its method: an endpoint
    /// added to the router without a description fails here (as one missing from the access
    /// table fails `tests/it/access.rs`).
    #[test]
    fn the_document_describes_every_served_endpoint() {
        let doc = turnout_model::openapi::document();
        let mut served = super::endpoints();
        served.extend(super::signed_endpoints());
        served.push(("GET", <super::ep::Health as super::Endpoint>::PATH));
        served.push(("GET", <super::ep::OpenApiDocument as super::Endpoint>::PATH));
        for (method, path) in served {
            let item = doc.paths.paths.get(path);
            let op = item.and_then(|item| match method {
                "GET" => item.get.as_ref(),
                "POST" => item.post.as_ref(),
                "DELETE" => item.delete.as_ref(),
                _ => None,
            });
            assert!(
                op.is_some(),
                "{method} {path} is served but not in the OpenAPI document: declare it in \
                 turnout_model::endpoint's for_each_endpoint! list"
            );
        }
    }
}
