//! Apps, environments, their releases, and the jobs that change what they run.
use super::*;

pub(super) async fn list_apps(State(p): State<Api>, who: Who) -> Result<impl IntoResponse> {
    Ok(Json(p.list_apps(&who).await?))
}

pub(super) async fn create_app(
    State(p): State<Api>,
    who: Who,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let req: CreateApp = body(&bytes)?;
    Ok((StatusCode::CREATED, Json(p.create_app(req, &who).await?)))
}

pub(super) async fn update_app(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let req: UpdateApp = body(&bytes)?;
    Ok(Json(p.update_app(app_name(&app)?, req, &who).await?))
}

#[derive(Deserialize)]
pub(super) struct DeleteAppQuery {
    #[serde(default)]
    force: bool,
}

pub(super) async fn delete_app(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    Query(q): Query<DeleteAppQuery>,
) -> Result<impl IntoResponse> {
    p.delete_app(app_name(&app)?, q.force, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(super) struct EnvsQuery {
    app: Option<String>,
}

pub(super) async fn list_envs(
    State(p): State<Api>,
    who: Who,
    Query(q): Query<EnvsQuery>,
) -> Result<impl IntoResponse> {
    let app = q.app.as_deref().map(app_name).transpose()?;
    Ok(Json(p.list_envs(app, &who).await?))
}

pub(super) async fn list_app_envs(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.list_envs(Some(app_name(&app)?), &who).await?))
}

pub(super) async fn create_env(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let app = app_name(&app)?;
    let req: CreateEnv = body(&bytes)?;
    Ok((
        StatusCode::CREATED,
        Json(p.create_env(app, req, &who).await?),
    ))
}

pub(super) async fn show_env(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.show_env(env_ref(&app, &env)?, &who).await?))
}

pub(super) async fn delete_env(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    p.delete_env(env_ref(&app, &env)?, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn set_trigger(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let req: turnout_model::SetTrigger = body(&bytes)?;
    Ok(Json(
        p.set_trigger(env_ref(&app, &env)?, req.deploy_on, &who)
            .await?,
    ))
}

pub(super) async fn set_sleep(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let req: turnout_model::SetSleep = body(&bytes)?;
    Ok(Json(
        p.set_sleep_after(env_ref(&app, &env)?, req.sleep_after, &who)
            .await?,
    ))
}

/// 200 with what the report started (deploys, as jobs) and left alone.
pub(super) async fn ci_hook(
    State(p): State<Api>,
    who: Who,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let report: turnout_model::CiReport = body(&bytes)?;
    Ok(Json(p.ci_report(report, &who).await?))
}

#[derive(Deserialize)]
pub(super) struct PipelineQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

pub(super) async fn pipeline(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    Query(q): Query<PipelineQuery>,
) -> Result<impl IntoResponse> {
    let env = |name: Option<String>| match name {
        Some(name) => env_ref(&app, &name).map(|r| Some(r.env)),
        None => Ok(None),
    };
    let filter = crate::plane::PromotionFilter {
        from: env(q.from)?,
        to: env(q.to)?,
    };
    Ok(Json(p.pipeline(app_name(&app)?, filter, &who).await?))
}

pub(super) async fn diff(
    State(p): State<Api>,
    who: Who,
    Path((app, env, other)): Path<(String, String, String)>,
) -> Result<impl IntoResponse> {
    let other = env_ref(&app, &other)?.env;
    Ok(Json(p.env_diff(env_ref(&app, &env)?, other, &who).await?))
}

pub(super) async fn releases(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.releases(env_ref(&app, &env)?, &who).await?))
}

/// Authorizes (and, where the app asks for it, parks the deploy for approval: 202), then
/// answers 201 with the deploy's job; `GET /api/v1/jobs/{id}/events` follows it.
pub(super) async fn deploy(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    let req: DeployRequest = body_or_default(&bytes)?;
    Ok((StatusCode::CREATED, Json(p.deploy(r, req, &who).await?)))
}

/// 201 with the promotion's job (202 when it waits for approval).
pub(super) async fn promote(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    let req: turnout_model::PromoteRequest = body(&bytes)?;
    Ok((
        StatusCode::CREATED,
        Json(p.promote(r, req.from, &who).await?),
    ))
}

pub(super) async fn rollback(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    let req: RollbackRequest = body_or_default(&bytes)?;
    Ok((StatusCode::CREATED, Json(p.rollback(r, req, &who).await?)))
}

pub(super) async fn restart(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    Ok((StatusCode::CREATED, Json(p.restart(r, &who).await?)))
}

pub(super) async fn stop_env(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.stop_env(env_ref(&app, &env)?, &who).await?))
}

pub(super) async fn start_env(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    Ok((StatusCode::CREATED, Json(p.start_env(r, &who).await?)))
}

/// Change the resource plan; answers the environment (its plan applies from the next instance).
pub(super) async fn update_plan(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    let req: UpdatePlan = body(&bytes)?;
    Ok(Json(p.update_plan(r, req, &who).await?))
}
