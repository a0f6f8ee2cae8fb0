//! Outbound requests (`turnout egress …`): each tier's policy and an environment's log.
use super::*;

pub(super) async fn policies(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.egress_policies(app_name(&app)?, &who).await?))
}

pub(super) async fn set_policy(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let req: turnout_model::SetEgressPolicy = body(&bytes)?;
    Ok(Json(p.set_egress_policy(app_name(&app)?, req, &who).await?))
}

#[derive(Deserialize)]
pub(super) struct LogQuery {
    #[serde(default = "default_limit")]
    limit: u32,
    #[serde(default)]
    denied: bool,
}

fn default_limit() -> u32 {
    100
}

pub(super) async fn log(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    Ok(Json(p.egress_log(r, q.limit, q.denied, &who).await?))
}
