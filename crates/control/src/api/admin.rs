//! Users, tokens, roles, policies, approvals, the audit log and metrics.
use super::*;

pub(super) async fn list_users(State(p): State<Api>, who: Who) -> Result<impl IntoResponse> {
    Ok(Json(p.list_users(&who).await?))
}

pub(super) async fn add_user(
    State(p): State<Api>,
    who: Who,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let req: CreateUser = body(&bytes)?;
    Ok((StatusCode::CREATED, Json(p.add_user(req.name, &who).await?)))
}

pub(super) async fn list_tokens(State(p): State<Api>, who: Who) -> Result<impl IntoResponse> {
    Ok(Json(p.list_tokens(&who).await?))
}

pub(super) async fn create_token(
    State(p): State<Api>,
    who: Who,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let req: CreateToken = body(&bytes)?;
    Ok((StatusCode::CREATED, Json(p.create_token(req, &who).await?)))
}

pub(super) async fn revoke_token(
    State(p): State<Api>,
    who: Who,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse> {
    p.revoke_token(id, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn set_grant(
    State(p): State<Api>,
    who: Who,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let req: SetGrant = body(&bytes)?;
    p.set_grant(req, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn policy(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.policy(app_name(&app)?, &who).await?))
}

pub(super) async fn set_policy(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let req: SetPolicy = body(&bytes)?;
    p.set_policy(app_name(&app)?, req, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn set_approval_rule(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let req: SetApprovalRule = body(&bytes)?;
    p.set_approval_rule(app_name(&app)?, req, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn set_protection(
    State(p): State<Api>,
    who: Who,
    Path(app): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let req: SetProtection = body(&bytes)?;
    p.set_protection(app_name(&app)?, req, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(super) struct ApprovalsQuery {
    #[serde(default)]
    all: bool,
}

pub(super) async fn list_approvals(
    State(p): State<Api>,
    who: Who,
    Query(q): Query<ApprovalsQuery>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.list_approvals(&who, q.all).await?))
}

pub(super) async fn approve(
    State(p): State<Api>,
    who: Who,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.approve(id, &who).await?))
}

pub(super) async fn reject(
    State(p): State<Api>,
    who: Who,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.reject(id, &who).await?))
}

/// The newest entries `GET /api/v1/audit` answers at most.
const AUDIT_LISTED: usize = 10_000;

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    app: Option<String>,
    env: Option<String>,
    /// Unix seconds; checked by `admin::parse_since`.
    since: Option<String>,
}

pub(super) async fn audit(
    State(p): State<Api>,
    who: Who,
    Query(q): Query<AuditQuery>,
) -> Result<impl IntoResponse> {
    let app = q.app.as_deref().map(app_name).transpose()?;
    let since = q
        .since
        .as_deref()
        .map(crate::admin::parse_since)
        .transpose()?;
    Ok(Json(p.audit(app, q.env, since, AUDIT_LISTED, &who).await?))
}

pub(super) async fn verify_audit(State(p): State<Api>, who: Who) -> Result<impl IntoResponse> {
    Ok(Json(p.verify_audit(&who).await?))
}

/// Prometheus text: the series of the apps the token's user has a role on.
pub(super) async fn metrics(State(p): State<Api>, who: Who) -> Result<impl IntoResponse> {
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        p.metrics_text(&who).await?,
    ))
}
