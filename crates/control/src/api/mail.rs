//! Mail caught by the catcher (`turnout mail …`): list, show, clear, and the tiers' relays.
use super::*;

pub(super) async fn list(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.list_mail(env_ref(&app, &env)?, &who).await?))
}

pub(super) async fn clear(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.clear_mail(env_ref(&app, &env)?, &who).await?))
}

#[derive(Deserialize)]
pub(super) struct ShowQuery {
    #[serde(default)]
    raw: bool,
}

pub(super) async fn show(
    State(p): State<Api>,
    who: Who,
    Path(id): Path<i64>,
    Query(q): Query<ShowQuery>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.show_mail(id, q.raw, &who).await?))
}

pub(super) async fn relays(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.mail_relays(app_name(&app)?, &who).await?))
}

pub(super) async fn set_relay(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let req: turnout_model::SetMailRelay = body(&bytes)?;
    Ok(Json(p.set_mail_relay(app_name(&app)?, req, &who).await?))
}
