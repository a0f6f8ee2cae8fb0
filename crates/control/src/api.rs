//! The HTTP API, `/api/v1`, JSON in and out. Every CLI command is a thin client of these routes.
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
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
    SetApprovalRule, SetGrant, SetMaintenance, SetPolicy, SetProtection, SetSecret, SwitchDomain,
};

use crate::access::Principal;

use crate::error::ControlError;
use crate::plane::{ControlPlane, LogView};

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
    .add::<ep::ListApps, _, _>(list_apps)
    .add::<ep::CreateApp, _, _>(create_app)
    .add::<ep::DeleteApp, _, _>(delete_app)
    .add::<ep::ListEnvs, _, _>(list_envs)
    .add::<ep::ListAppEnvs, _, _>(list_app_envs)
    .add::<ep::CreateEnv, _, _>(create_env)
    .add::<ep::ShowEnv, _, _>(show_env)
    .add::<ep::DeleteEnv, _, _>(delete_env)
    .add::<ep::Deploy, _, _>(deploy)
    .add::<ep::Rollback, _, _>(rollback)
    .add::<ep::Restart, _, _>(restart)
    .add::<ep::StopEnv, _, _>(stop_env)
    .add::<ep::StartEnv, _, _>(start_env)
    .add::<ep::ListReleases, _, _>(releases)
    .add::<ep::Logs, _, _>(logs)
    .add::<ep::ListSecrets, _, _>(list_secrets)
    .add::<ep::SetSecret, _, _>(set_secret)
    .add::<ep::UnsetSecret, _, _>(unset_secret)
    .add::<ep::ListJobs, _, _>(list_jobs)
    .add::<ep::ShowJob, _, _>(show_job)
    .add::<ep::JobEvents, _, _>(job_events)
    .add::<ep::CancelJob, _, _>(cancel_job)
    .add::<ep::ListDomains, _, _>(list_domains)
    .add::<ep::AddDomain, _, _>(add_domain)
    .add::<ep::RemoveDomain, _, _>(remove_domain)
    .add::<ep::SwitchDomain, _, _>(switch_domain)
    .add::<ep::RollbackDomain, _, _>(rollback_domain)
    .add::<ep::SetMaintenance, _, _>(set_maintenance)
    .add::<ep::DomainHistory, _, _>(domain_history)
    .add::<ep::ListUsers, _, _>(list_users)
    .add::<ep::AddUser, _, _>(add_user)
    .add::<ep::ListTokens, _, _>(list_tokens)
    .add::<ep::CreateToken, _, _>(create_token)
    .add::<ep::RevokeToken, _, _>(revoke_token)
    .add::<ep::SetGrant, _, _>(set_grant)
    .add::<ep::Policy, _, _>(policy)
    .add::<ep::SetPolicy, _, _>(set_policy)
    .add::<ep::SetApprovalRule, _, _>(set_approval_rule)
    .add::<ep::SetProtection, _, _>(set_protection)
    .add::<ep::ListApprovals, _, _>(list_approvals)
    .add::<ep::Approve, _, _>(approve)
    .add::<ep::Reject, _, _>(reject)
    .add::<ep::Audit, _, _>(audit)
    .add::<ep::VerifyAudit, _, _>(verify_audit)
    .add::<ep::Metrics, _, _>(metrics)
}

/// (method, path) of every authenticated endpoint.
pub fn endpoints() -> Vec<(&'static str, &'static str)> {
    routes().list
}

pub fn router(plane: Api) -> Router {
    routes()
        .router
        .layer(axum::middleware::from_fn_with_state(
            plane.clone(),
            authenticate,
        ))
        // Liveness needs no token (added after the layer, so it is outside it).
        .route(
            ep::Health::PATH,
            get(|| async { Json(turnout_model::endpoint::HealthInfo { ok: true }) }),
        )
        .fallback(|| async {
            ApiError(ControlError::NotFound(
                "no such API route; see the README's API section".into(),
            ))
        })
        .with_state(plane)
}

/// Every route but `/api/v1/health` needs `Authorization: Bearer <token>`; the principal it
/// stands for travels to the handler as a request extension.
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
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self.0, "API request failed");
        } else {
            tracing::info!(status = status.as_u16(), error = %self.0, "API request refused");
        }
        (
            status,
            Json(ErrorBody {
                error: self.0.to_string(),
                code,
            }),
        )
            .into_response()
    }
}

type Result<T> = std::result::Result<T, ApiError>;

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

async fn list_apps(State(p): State<Api>, who: Who) -> Result<impl IntoResponse> {
    Ok(Json(p.list_apps(&who).await?))
}

async fn create_app(State(p): State<Api>, who: Who, bytes: Bytes) -> Result<impl IntoResponse> {
    let req: CreateApp = body(&bytes)?;
    Ok((StatusCode::CREATED, Json(p.create_app(req, &who).await?)))
}

#[derive(Deserialize)]
struct DeleteAppQuery {
    #[serde(default)]
    force: bool,
}

async fn delete_app(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    Query(q): Query<DeleteAppQuery>,
) -> Result<impl IntoResponse> {
    p.delete_app(app_name(&app)?, q.force, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct EnvsQuery {
    app: Option<String>,
}

async fn list_envs(
    State(p): State<Api>,
    who: Who,
    Query(q): Query<EnvsQuery>,
) -> Result<impl IntoResponse> {
    let app = q.app.as_deref().map(app_name).transpose()?;
    Ok(Json(p.list_envs(app, &who).await?))
}

async fn list_app_envs(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.list_envs(Some(app_name(&app)?), &who).await?))
}

async fn create_env(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    bytes: Bytes,
) -> Result<impl IntoResponse> {
    let app = app_name(&app)?;
    let req: CreateEnv = body(&bytes)?;
    Ok((
        StatusCode::CREATED,
        Json(p.create_env(app, req, &who).await?),
    ))
}

async fn show_env(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.show_env(env_ref(&app, &env)?, &who).await?))
}

async fn delete_env(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    p.delete_env(env_ref(&app, &env)?, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn releases(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.releases(env_ref(&app, &env)?, &who).await?))
}

/// Authorizes (and, where the app asks for it, parks the deploy for approval: 202), then
/// answers 201 with the deploy's job; `GET /api/v1/jobs/{id}/events` follows it.
async fn deploy(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    let req: DeployRequest = if bytes.is_empty() {
        DeployRequest::default()
    } else {
        body(&bytes)?
    };
    Ok((StatusCode::CREATED, Json(p.deploy(r, req, &who).await?)))
}

async fn rollback(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    let req: RollbackRequest = if bytes.is_empty() {
        RollbackRequest::default()
    } else {
        body(&bytes)?
    };
    Ok((
        StatusCode::CREATED,
        Json(p.rollback(r, req.to, &who).await?),
    ))
}

async fn restart(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    Ok((StatusCode::CREATED, Json(p.restart(r, &who).await?)))
}

async fn stop_env(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.stop_env(env_ref(&app, &env)?, &who).await?))
}

async fn start_env(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    Ok((StatusCode::CREATED, Json(p.start_env(r, &who).await?)))
}

#[derive(Deserialize)]
struct JobsQuery {
    app: Option<String>,
    env: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn list_jobs(
    State(p): State<Api>,
    who: Who,
    Query(q): Query<JobsQuery>,
) -> Result<impl IntoResponse> {
    let app = q.app.as_deref().map(app_name).transpose()?;
    let env = match (&app, q.env.as_deref()) {
        (_, None) => None,
        (Some(_), Some(env)) => {
            Some(EnvName::new(env).map_err(|e| ApiError(ControlError::Invalid(e.to_string())))?)
        }
        (None, Some(_)) => {
            return Err(ApiError(ControlError::Invalid(
                "env= needs app= too (jobs of APP/ENV)".into(),
            )));
        }
    };
    Ok(Json(p.list_jobs(app, env, q.all, &who).await?))
}

async fn show_job(
    State(p): State<Api>,
    who: Who,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.job(id, &who).await?))
}

async fn cancel_job(
    State(p): State<Api>,
    who: Who,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.cancel_job(id, &who).await?))
}

/// Server-sent events: every event of the job from the first, then live ones; the stream ends
/// after `end`. Each `data:` is one `JobEvent` as JSON on one line.
async fn job_events(
    State(p): State<Api>,
    who: Who,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse> {
    use futures_util::StreamExt;
    let events = p.job_events(id, &who).await?;
    let stream = events.enumerate().map(|(n, event)| {
        let name = match &event {
            JobEvent::Step { .. } => "step",
            JobEvent::Output { .. } => "output",
            JobEvent::End { .. } => "end",
        };
        let data = serde_json::to_string(&event).unwrap_or_default();
        Ok::<_, std::convert::Infallible>(Bytes::from(format!(
            "id: {n}\nevent: {name}\ndata: {data}\n\n"
        )))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    ))
}

#[derive(Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: bool,
    #[serde(default = "default_tail")]
    tail: usize,
    #[serde(default)]
    timestamps: bool,
}

fn default_tail() -> usize {
    200
}

/// The last `tail` lines of the environment's log; with `follow`, then everything appended, and
/// the next release's log after a deploy, until the client hangs up.
async fn logs(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> Result<impl IntoResponse> {
    let view = p
        .logs(env_ref(&app, &env)?, q.tail, q.timestamps, &who)
        .await?;
    let mut head: String = view.head().iter().map(|l| format!("{l}\n")).collect();
    if view.path().is_none() && !q.follow {
        head = format!("(no logs yet: {} has not been deployed)\n", view.env());
    }
    if !q.follow {
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            Body::from(head),
        ));
    }
    struct Follow {
        p: Api,
        view: LogView,
        path: Option<std::path::PathBuf>,
        offset: u64,
        head: Option<String>,
    }
    let path = view.path().map(std::path::Path::to_path_buf);
    let offset = match &path {
        Some(path) => tokio::fs::metadata(path).await.map_or(0, |m| m.len()),
        None => 0,
    };
    let state = Follow {
        p,
        view,
        path,
        offset,
        head: Some(head),
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        if let Some(head) = s.head.take()
            && !head.is_empty()
        {
            return Some((Ok::<_, std::convert::Infallible>(Bytes::from(head)), s));
        }
        loop {
            if let Some(path) = &s.path
                && let Ok(mut f) = tokio::fs::File::open(path).await
                && f.seek(std::io::SeekFrom::Start(s.offset)).await.is_ok()
            {
                let mut buf = Vec::new();
                if f.read_to_end(&mut buf).await.is_ok() {
                    // Whole lines only: the rest is read with the next chunk.
                    let whole = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                    if whole > 0 {
                        s.offset += whole as u64;
                        let text = s.view.show(&String::from_utf8_lossy(&buf[..whole]));
                        return Some((Ok(Bytes::from(text)), s));
                    }
                }
            }
            // Nothing new: a deploy may have moved the environment to another release's log.
            match s.p.follow_log(&s.view).await {
                Some(next) if next != s.path => {
                    s.path = next;
                    s.offset = 0;
                    if let Some(path) = &s.path {
                        let note = format!("[turnout] now following {}\n", path.display());
                        return Some((Ok(Bytes::from(note)), s));
                    }
                }
                Some(_) => {}
                None => return None, // the environment was deleted
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    ))
}

async fn list_domains(State(p): State<Api>, who: Who) -> Result<impl IntoResponse> {
    Ok(Json(p.list_domains(&who).await?))
}

async fn add_domain(State(p): State<Api>, who: Who, bytes: Bytes) -> Result<impl IntoResponse> {
    let req: AddDomain = body(&bytes)?;
    let target = EnvRef {
        app: req.app,
        env: req.env,
    };
    Ok((
        StatusCode::CREATED,
        Json(p.add_domain(req.domain, target, &who).await?),
    ))
}

async fn remove_domain(
    State(p): State<Api>,
    who: Who,
    Path(domain): Path<String>,
) -> Result<impl IntoResponse> {
    p.remove_domain(domain_name(&domain)?, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn switch_domain(
    State(p): State<Api>,
    who: Who,
    Path(domain): Path<String>,
    bytes: Bytes,
) -> Result<impl IntoResponse> {
    let domain = domain_name(&domain)?;
    let req: SwitchDomain = body(&bytes)?;
    let target = EnvRef {
        app: req.app,
        env: req.env,
    };
    Ok(Json(p.switch_domain(domain, target, &who, false).await?))
}

async fn rollback_domain(
    State(p): State<Api>,
    who: Who,
    Path(domain): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.rollback_domain(domain_name(&domain)?, &who).await?))
}

async fn set_maintenance(
    State(p): State<Api>,
    who: Who,
    Path(domain): Path<String>,
    bytes: Bytes,
) -> Result<impl IntoResponse> {
    let domain = domain_name(&domain)?;
    let req: SetMaintenance = body(&bytes)?;
    Ok(Json(
        p.set_maintenance(domain, req.on, req.message, &who).await?,
    ))
}

async fn domain_history(
    State(p): State<Api>,
    who: Who,
    Path(domain): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.domain_history(domain_name(&domain)?, &who).await?))
}

async fn list_users(State(p): State<Api>, who: Who) -> Result<impl IntoResponse> {
    Ok(Json(p.list_users(&who).await?))
}

async fn add_user(State(p): State<Api>, who: Who, bytes: Bytes) -> Result<impl IntoResponse> {
    let req: CreateUser = body(&bytes)?;
    Ok((StatusCode::CREATED, Json(p.add_user(req.name, &who).await?)))
}

async fn list_tokens(State(p): State<Api>, who: Who) -> Result<impl IntoResponse> {
    Ok(Json(p.list_tokens(&who).await?))
}

async fn create_token(State(p): State<Api>, who: Who, bytes: Bytes) -> Result<impl IntoResponse> {
    let req: CreateToken = body(&bytes)?;
    Ok((StatusCode::CREATED, Json(p.create_token(req, &who).await?)))
}

async fn revoke_token(
    State(p): State<Api>,
    who: Who,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse> {
    p.revoke_token(id, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_grant(State(p): State<Api>, who: Who, bytes: Bytes) -> Result<impl IntoResponse> {
    let req: SetGrant = body(&bytes)?;
    p.set_grant(req, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn policy(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.policy(app_name(&app)?, &who).await?))
}

async fn set_policy(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    bytes: Bytes,
) -> Result<impl IntoResponse> {
    let req: SetPolicy = body(&bytes)?;
    p.set_policy(app_name(&app)?, req, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_approval_rule(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    bytes: Bytes,
) -> Result<impl IntoResponse> {
    let req: SetApprovalRule = body(&bytes)?;
    p.set_approval_rule(app_name(&app)?, req, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_protection(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    bytes: Bytes,
) -> Result<impl IntoResponse> {
    let req: SetProtection = body(&bytes)?;
    p.set_protection(app_name(&app)?, req, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ApprovalsQuery {
    #[serde(default)]
    all: bool,
}

async fn list_approvals(
    State(p): State<Api>,
    who: Who,
    Query(q): Query<ApprovalsQuery>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.list_approvals(&who, q.all).await?))
}

async fn approve(State(p): State<Api>, who: Who, Path(id): Path<i64>) -> Result<impl IntoResponse> {
    Ok(Json(p.approve(id, &who).await?))
}

async fn reject(State(p): State<Api>, who: Who, Path(id): Path<i64>) -> Result<impl IntoResponse> {
    Ok(Json(p.reject(id, &who).await?))
}

#[derive(Deserialize)]
struct AuditQuery {
    app: Option<String>,
    env: Option<String>,
    /// Unix seconds; checked by `admin::parse_since`.
    since: Option<String>,
}

async fn audit(
    State(p): State<Api>,
    who: Who,
    Query(q): Query<AuditQuery>,
) -> Result<impl IntoResponse> {
    let app = q.app.as_deref().map(app_name).transpose()?;
    let since = q
        .since
        .as_deref()
        .map(crate::admin::parse_since)
        .transpose()?;
    Ok(Json(p.audit(app, q.env, since, &who).await?))
}

async fn verify_audit(State(p): State<Api>, who: Who) -> Result<impl IntoResponse> {
    Ok(Json(p.verify_audit(&who).await?))
}

/// Prometheus text: the series of the apps the token's user has a role on.
async fn metrics(State(p): State<Api>, who: Who) -> Result<impl IntoResponse> {
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        p.metrics_text(&who).await?,
    ))
}

#[derive(Deserialize)]
struct SecretsQuery {
    #[serde(default)]
    values: bool,
}

async fn list_secrets(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    Query(q): Query<SecretsQuery>,
) -> Result<impl IntoResponse> {
    Ok(Json(
        p.list_secrets(env_ref(&app, &env)?, q.values, &who).await?,
    ))
}

async fn set_secret(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<impl IntoResponse> {
    let req: SetSecret = body(&bytes)?;
    p.set_secret(env_ref(&app, &env)?, req.key, req.value, &who)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unset_secret(
    State(p): State<Api>,
    who: Who,
    Path((app, env, key)): Path<(String, String, String)>,
) -> Result<impl IntoResponse> {
    p.unset_secret(env_ref(&app, &env)?, key, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    /// The server serves exactly the endpoints the model declares (and so the client knows):
    /// one added on one side only fails here.
    #[test]
    fn the_router_serves_every_declared_endpoint_and_no_other() {
        let mut served = super::endpoints();
        served.push(("GET", <super::ep::Health as super::Endpoint>::PATH));
        served.sort_unstable();
        let mut declared = turnout_model::endpoint::all_paths();
        declared.sort_unstable();
        assert_eq!(served, declared);
    }
}
