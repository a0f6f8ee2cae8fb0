//! Links between apps (`turnout link …`): make, list, remove.
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::{Api, Path, RawBody, Result, Who, app_name, body};

pub(super) async fn create_link(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(p.create_link(app_name(&app)?, body(&bytes)?, &who).await?),
    ))
}

pub(super) async fn list_links(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.list_links(app_name(&app)?, &who).await?))
}

pub(super) async fn remove_link(
    State(p): State<Api>,
    who: Who,
    Path((app, name)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.remove_link(app_name(&app)?, name, &who).await?))
}
