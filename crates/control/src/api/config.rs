//! Configuration set through Turnout (`turnout config …`, `turnout secret …`) and the key that
//! seals secret values (`turnout secrets rotate-key`).
use super::*;

#[derive(Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    show_secrets: bool,
}

pub(super) async fn list(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<impl IntoResponse> {
    let env = match q.env {
        Some(env) => Some(env_ref(&app, &env)?.env),
        None => None,
    };
    let tier = match q.tier {
        Some(t) => Some(
            t.parse::<turnout_model::Tier>()
                .map_err(|e| ApiError(ControlError::Invalid(e.to_string())))?,
        ),
        None => None,
    };
    Ok(Json(
        p.list_config(app_name(&app)?, env, tier, q.show_secrets, &who)
            .await?,
    ))
}

pub(super) async fn set(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let req: turnout_model::SetConfig = body(&bytes)?;
    Ok(Json(p.set_config(app_name(&app)?, req, &who).await?))
}

pub(super) async fn unset(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let req: turnout_model::UnsetConfig = body(&bytes)?;
    Ok(Json(p.unset_config(app_name(&app)?, req, &who).await?))
}

pub(super) async fn rotate_key(State(p): State<Api>, who: Who) -> Result<impl IntoResponse> {
    Ok(Json(p.rotate_secret_key(&who).await?))
}
