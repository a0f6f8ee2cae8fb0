//! Putting data back (`turnout backup restore`, `turnout data reset|undo`, `turnout drill`):
//! each starts a job and answers 201 with it.
use super::*;

/// 201 with the job; 409 for a production target without `yes`, saying what it discards.
pub(super) async fn restore(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    let req: turnout_model::RestoreRequest = body(&bytes)?;
    Ok((
        StatusCode::CREATED,
        Json(p.restore_backup(r, req, &who).await?),
    ))
}

/// 201 with the job.
pub(super) async fn reset(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    let req: turnout_model::ResetRequest = body_or_default(&bytes)?;
    Ok((StatusCode::CREATED, Json(p.reset_data(r, req, &who).await?)))
}

/// 201 with the job.
pub(super) async fn undo(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    Ok((StatusCode::CREATED, Json(p.undo_data(r, &who).await?)))
}

/// 201 with the job.
pub(super) async fn drill(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    let req: turnout_model::DrillRequest = body(&bytes)?;
    Ok((StatusCode::CREATED, Json(p.drill(r, req, &who).await?)))
}
