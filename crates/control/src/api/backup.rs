//! Backups (`turnout backup …`): list, create, policy, show, verify, delete.
use super::*;

pub(super) async fn list(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.list_backups(env_ref(&app, &env)?, &who).await?))
}

/// 201 with the job.
pub(super) async fn create(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    let req: turnout_model::CreateBackup = body_or_default(&bytes)?;
    Ok((
        StatusCode::CREATED,
        Json(p.create_backup(r, req, &who).await?),
    ))
}

pub(super) async fn policy(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    let req: turnout_model::SetBackupPolicy = body(&bytes)?;
    Ok(Json(p.set_backup_policy(r, req, &who).await?))
}

pub(super) async fn show(
    State(p): State<Api>,
    who: Who,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.show_backup(id, &who).await?))
}

/// 201 with the job.
pub(super) async fn verify(
    State(p): State<Api>,
    who: Who,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse> {
    Ok((StatusCode::CREATED, Json(p.verify_backup(id, &who).await?)))
}

#[derive(Deserialize)]
pub(super) struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

pub(super) async fn delete(
    State(p): State<Api>,
    who: Who,
    Path(id): Path<i64>,
    Query(q): Query<DeleteQuery>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.delete_backup(id, q.force, &who).await?))
}
