//! The HTTP API, `/api/v1`, JSON in and out. Every CLI command is a thin client of these routes.
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use turnout_model::{
    AddDomain, AppName, CreateApp, CreateEnv, DeployRequest, DomainName, EnvName, EnvRef,
    ErrorBody, SetMaintenance, SwitchDomain,
};

use crate::error::ControlError;
use crate::plane::ControlPlane;

type Api = Arc<ControlPlane>;

pub fn router(plane: Api) -> Router {
    Router::new()
        .route(
            "/api/v1/health",
            get(|| async { Json(serde_json::json!({"ok": true})) }),
        )
        .route("/api/v1/apps", get(list_apps).post(create_app))
        .route("/api/v1/apps/{app}", axum::routing::delete(delete_app))
        .route("/api/v1/envs", get(list_envs))
        .route(
            "/api/v1/apps/{app}/envs",
            get(list_app_envs).post(create_env),
        )
        .route(
            "/api/v1/apps/{app}/envs/{env}",
            get(show_env).delete(delete_env),
        )
        .route("/api/v1/apps/{app}/envs/{env}/deploy", post(deploy))
        .route("/api/v1/apps/{app}/envs/{env}/releases", get(releases))
        .route("/api/v1/apps/{app}/envs/{env}/logs", get(logs))
        .route("/api/v1/domains", get(list_domains).post(add_domain))
        .route(
            "/api/v1/domains/{domain}",
            axum::routing::delete(remove_domain),
        )
        .route("/api/v1/domains/{domain}/switch", post(switch_domain))
        .route("/api/v1/domains/{domain}/rollback", post(rollback_domain))
        .route(
            "/api/v1/domains/{domain}/maintenance",
            post(set_maintenance),
        )
        .route("/api/v1/domains/{domain}/history", get(domain_history))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError(ControlError::NotFound(
                "no such API route; see the README's API section".into(),
            ))
        })
        .with_state(plane)
}

struct ApiError(ControlError);

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Step { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self.0, "API request failed");
        } else {
            tracing::info!(status = status.as_u16(), error = %self.0, "API request refused");
        }
        (
            status,
            Json(ErrorBody {
                error: self.0.to_string(),
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

/// Who asked, for the domain history: the CLI sends its user's login name. Access control
/// (tokens, users) replaces this claim with the authenticated user.
fn actor(headers: &HeaderMap) -> String {
    headers
        .get("x-turnout-actor")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "api".to_owned())
}

async fn list_apps(State(p): State<Api>) -> Result<impl IntoResponse> {
    Ok(Json(p.list_apps().await?))
}

async fn create_app(State(p): State<Api>, bytes: Bytes) -> Result<impl IntoResponse> {
    let req: CreateApp = body(&bytes)?;
    Ok((StatusCode::CREATED, Json(p.create_app(req).await?)))
}

#[derive(Deserialize)]
struct DeleteAppQuery {
    #[serde(default)]
    force: bool,
}

async fn delete_app(
    State(p): State<Api>,
    Path(app): Path<String>,
    Query(q): Query<DeleteAppQuery>,
) -> Result<impl IntoResponse> {
    p.delete_app(app_name(&app)?, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct EnvsQuery {
    app: Option<String>,
}

async fn list_envs(State(p): State<Api>, Query(q): Query<EnvsQuery>) -> Result<impl IntoResponse> {
    let app = q.app.as_deref().map(app_name).transpose()?;
    Ok(Json(p.list_envs(app).await?))
}

async fn list_app_envs(State(p): State<Api>, Path(app): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(p.list_envs(Some(app_name(&app)?)).await?))
}

async fn create_env(
    State(p): State<Api>,
    Path(app): Path<String>,
    bytes: Bytes,
) -> Result<impl IntoResponse> {
    let app = app_name(&app)?;
    let req: CreateEnv = body(&bytes)?;
    Ok((StatusCode::CREATED, Json(p.create_env(app, req).await?)))
}

async fn show_env(
    State(p): State<Api>,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.show_env(env_ref(&app, &env)?).await?))
}

async fn delete_env(
    State(p): State<Api>,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    p.delete_env(env_ref(&app, &env)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn releases(
    State(p): State<Api>,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.releases(env_ref(&app, &env)?).await?))
}

/// Answers at once with a stream of NDJSON `DeployEvent`s; the deploy runs in its own task.
async fn deploy(
    State(p): State<Api>,
    Path((app, env)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    let req: DeployRequest = if bytes.is_empty() {
        DeployRequest::default()
    } else {
        body(&bytes)?
    };
    // Fail fast with a plain error status for requests that can never start.
    p.show_env(r.clone()).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    p.spawn_deploy(r, req, tx);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    ))
}

#[derive(Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: bool,
    #[serde(default = "default_tail")]
    tail: usize,
}

fn default_tail() -> usize {
    200
}

/// The last `tail` lines of the environment's log; with `follow`, then everything appended, and
/// the next release's log after a deploy, until the client hangs up.
async fn logs(
    State(p): State<Api>,
    Path((app, env)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    let path = p.log_file(&r).await?;
    let mut head: String = match &path {
        Some(path) => crate::plane::tail_lines(path, q.tail)
            .into_iter()
            .map(|l| l + "\n")
            .collect(),
        None => String::new(),
    };
    if path.is_none() && !q.follow {
        head = format!("(no logs yet: {r} has not been deployed)\n");
    }
    if !q.follow {
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            Body::from(head),
        ));
    }
    struct Follow {
        p: Api,
        r: EnvRef,
        path: Option<std::path::PathBuf>,
        offset: u64,
        head: Option<String>,
    }
    let offset = match &path {
        Some(path) => tokio::fs::metadata(path).await.map_or(0, |m| m.len()),
        None => 0,
    };
    let state = Follow {
        p,
        r,
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
                if f.read_to_end(&mut buf).await.is_ok() && !buf.is_empty() {
                    s.offset += buf.len() as u64;
                    return Some((Ok(Bytes::from(buf)), s));
                }
            }
            // Nothing new: a deploy may have moved the environment to another release's log.
            match s.p.log_file(&s.r).await {
                Ok(next) if next != s.path => {
                    s.path = next;
                    s.offset = 0;
                    if let Some(path) = &s.path {
                        let note = format!("[turnout] now following {}\n", path.display());
                        return Some((Ok(Bytes::from(note)), s));
                    }
                }
                Ok(_) => {}
                Err(_) => return None, // the environment was deleted
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    ))
}

async fn list_domains(State(p): State<Api>) -> Result<impl IntoResponse> {
    Ok(Json(p.list_domains().await?))
}

async fn add_domain(
    State(p): State<Api>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<impl IntoResponse> {
    let req: AddDomain = body(&bytes)?;
    let target = EnvRef {
        app: req.app,
        env: req.env,
    };
    Ok((
        StatusCode::CREATED,
        Json(p.add_domain(req.domain, target, &actor(&headers)).await?),
    ))
}

async fn remove_domain(
    State(p): State<Api>,
    Path(domain): Path<String>,
) -> Result<impl IntoResponse> {
    p.remove_domain(domain_name(&domain)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn switch_domain(
    State(p): State<Api>,
    Path(domain): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<impl IntoResponse> {
    let domain = domain_name(&domain)?;
    let req: SwitchDomain = body(&bytes)?;
    let target = EnvRef {
        app: req.app,
        env: req.env,
    };
    Ok(Json(
        p.switch_domain(domain, target, &actor(&headers)).await?,
    ))
}

async fn rollback_domain(
    State(p): State<Api>,
    Path(domain): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse> {
    Ok(Json(
        p.rollback_domain(domain_name(&domain)?, &actor(&headers))
            .await?,
    ))
}

async fn set_maintenance(
    State(p): State<Api>,
    Path(domain): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<impl IntoResponse> {
    let domain = domain_name(&domain)?;
    let req: SetMaintenance = body(&bytes)?;
    Ok(Json(
        p.set_maintenance(domain, req.on, req.message, &actor(&headers))
            .await?,
    ))
}

async fn domain_history(
    State(p): State<Api>,
    Path(domain): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.domain_history(domain_name(&domain)?).await?))
}

async fn metrics(State(p): State<Api>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        p.metrics().render(),
    )
}
