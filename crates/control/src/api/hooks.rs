//! GitHub and GitLab webhooks: setting an app's secret (bearer token, owners) and the
//! deliveries themselves, which carry no token and are authenticated by their signature.
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use turnout_model::HookProvider;

use super::{Api, ApiError, Path, RawBody, Result, Who, app_name, body};
use crate::error::ControlError;
use crate::hooks::MAX_BODY;

pub(super) async fn set_hook(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    Ok(Json(
        p.set_hook(app_name(&app)?, body(&bytes)?, &who).await?,
    ))
}

pub(super) async fn show_hooks(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.show_hooks(app_name(&app)?, &who).await?))
}

pub(super) async fn github(
    State(p): State<Api>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse> {
    deliver(p, HookProvider::Github, app, headers, body).await
}

pub(super) async fn gitlab(
    State(p): State<Api>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse> {
    deliver(p, HookProvider::Gitlab, app, headers, body).await
}

async fn deliver(
    p: Api,
    provider: HookProvider,
    app: String,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse> {
    let body = body.map_err(|r| {
        let e = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ControlError::TooLarge(format!(
                "a {} webhook delivery may be at most {} MiB",
                provider.title(),
                MAX_BODY / (1024 * 1024)
            ))
        } else {
            ControlError::Invalid(r.body_text())
        };
        ApiError(e)
    })?;
    Ok(Json(p.receive_hook(provider, &app, &headers, &body).await?))
}
