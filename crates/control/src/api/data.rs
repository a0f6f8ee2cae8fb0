//! Environments' data (`turnout data …`): show, seed, clone, sync, attach, detach, connection.
use super::*;

pub(super) async fn show(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.show_data(env_ref(&app, &env)?, &who).await?))
}

/// 201 with the job.
pub(super) async fn seed(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    let req: turnout_model::SeedData = body_or_default(&bytes)?;
    let engine = crate::plane::data_engine(req.engine.as_deref())?;
    Ok((
        StatusCode::CREATED,
        Json(p.seed_data(r, engine, &who).await?),
    ))
}

/// `from` as `APP/ENV`, of the same app as the path's.
fn source(app: &str, from: &str) -> Result<EnvRef> {
    let from: EnvRef = from
        .parse()
        .map_err(|e: turnout_model::NameError| ApiError(ControlError::Invalid(e.to_string())))?;
    if from.app.as_str() != app {
        return Err(ApiError(ControlError::Invalid(format!(
            "{from} is an environment of another app than {app}; data is copied within an app"
        ))));
    }
    Ok(from)
}

/// 201 with the job.
pub(super) async fn clone(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    copy(&p, &who, &app, &env, &bytes, false).await
}

/// 201 with the job.
pub(super) async fn sync(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    copy(&p, &who, &app, &env, &bytes, true).await
}

/// A clone (`masked`: a sync) into APP/ENV from the body's `from`.
async fn copy(
    p: &Api,
    who: &Who,
    app: &str,
    env: &str,
    bytes: &bytes::Bytes,
    masked: bool,
) -> Result<impl IntoResponse + use<>> {
    let r = env_ref(app, env)?;
    let req: turnout_model::DataSource = body(bytes)?;
    let from = source(app, &req.from)?;
    Ok((
        StatusCode::CREATED,
        Json(
            p.copy_data(r, from, masked, masked && req.from_backup, who)
                .await?,
        ),
    ))
}

pub(super) async fn attach(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    let req: turnout_model::AttachData = body(&bytes)?;
    Ok(Json(p.attach_data(r, req, &who).await?))
}

pub(super) async fn detach(
    State(p): State<Api>,
    who: Who,
    Path((app, env, other)): Path<(String, String, String)>,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    let other = env_ref(&app, &other)?.env;
    Ok(Json(p.detach_data(r, other, &who).await?))
}

pub(super) async fn connection(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.data_connection(env_ref(&app, &env)?, &who).await?))
}
