//! An app's declared pipeline and its scheduled cuts.
use super::*;

/// 200 with the pipeline as `pipeline show` draws it.
pub(super) async fn set_pipeline(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let spec: turnout_model::PipelineSpec = body(&bytes)?;
    Ok(Json(p.set_pipeline(app_name(&app)?, spec, &who).await?))
}

pub(super) async fn reset_pipeline(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
) -> Result<impl IntoResponse> {
    p.reset_pipeline(app_name(&app)?, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn list_schedules(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.list_schedules(app_name(&app)?, &who).await?))
}

pub(super) async fn add_schedule(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let req: turnout_model::CreateSchedule = body(&bytes)?;
    Ok((
        StatusCode::CREATED,
        Json(p.add_schedule(app_name(&app)?, req, &who).await?),
    ))
}

pub(super) async fn remove_schedule(
    State(p): State<Api>,
    who: Who,
    Path((app, id)): Path<(String, i64)>,
) -> Result<impl IntoResponse> {
    p.remove_schedule(app_name(&app)?, id, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// 201 with the promotion job, or 202 when it waits for approval.
pub(super) async fn run_schedule(
    State(p): State<Api>,
    who: Who,
    Path((app, id)): Path<(String, i64)>,
) -> Result<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(p.run_schedule(app_name(&app)?, id, &who).await?),
    ))
}
