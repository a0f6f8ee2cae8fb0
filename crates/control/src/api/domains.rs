//! Domains: bind, switch, roll back, maintenance, history, and their HTTPS (settings and
//! certificates).
use super::*;

pub(super) async fn list_domains(State(p): State<Api>, who: Who) -> Result<impl IntoResponse> {
    Ok(Json(p.list_domains(&who).await?))
}

pub(super) async fn add_domain(
    State(p): State<Api>,
    who: Who,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let req: AddDomain = body(&bytes)?;
    let target = EnvRef {
        app: req.app,
        env: req.env,
    };
    Ok((
        StatusCode::CREATED,
        Json(p.add_domain(req.domain, target, req.tls, &who).await?),
    ))
}

pub(super) async fn remove_domain(
    State(p): State<Api>,
    who: Who,
    Path(domain): Path<String>,
) -> Result<impl IntoResponse> {
    p.remove_domain(domain_name(&domain)?, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn switch_domain(
    State(p): State<Api>,
    who: Who,
    Path(domain): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let domain = domain_name(&domain)?;
    let req: SwitchDomain = body(&bytes)?;
    let target = EnvRef {
        app: req.app,
        env: req.env,
    };
    Ok(Json(p.switch_domain(domain, target, &who, false).await?))
}

pub(super) async fn rollback_domain(
    State(p): State<Api>,
    who: Who,
    Path(domain): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.rollback_domain(domain_name(&domain)?, &who).await?))
}

pub(super) async fn set_maintenance(
    State(p): State<Api>,
    who: Who,
    Path(domain): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let domain = domain_name(&domain)?;
    let req: SetMaintenance = body(&bytes)?;
    Ok(Json(
        p.set_maintenance(domain, req.on, req.message, &who).await?,
    ))
}

pub(super) async fn domain_history(
    State(p): State<Api>,
    who: Who,
    Path(domain): Path<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.domain_history(domain_name(&domain)?, &who).await?))
}

pub(super) async fn set_tls(
    State(p): State<Api>,
    who: Who,
    Path(domain): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let domain = domain_name(&domain)?;
    let req: turnout_model::SetTls = body(&bytes)?;
    Ok(Json(p.set_tls(domain, req, &who).await?))
}

pub(super) async fn list_certs(State(p): State<Api>, who: Who) -> Result<impl IntoResponse> {
    Ok(Json(p.list_certs(&who).await?))
}

pub(super) async fn add_cert(
    State(p): State<Api>,
    who: Who,
    Path(domain): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let domain = domain_name(&domain)?;
    let req: turnout_model::AddCert = body(&bytes)?;
    Ok((
        StatusCode::CREATED,
        Json(p.add_cert(domain, req, &who).await?),
    ))
}

pub(super) async fn remove_cert(
    State(p): State<Api>,
    who: Who,
    Path(domain): Path<String>,
) -> Result<impl IntoResponse> {
    p.remove_cert(domain_name(&domain)?, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn renew_cert(
    State(p): State<Api>,
    who: Who,
    Path(domain): Path<String>,
) -> Result<impl IntoResponse> {
    // 200, not 202: the client reads 202 as a request parked for approval.
    Ok(Json(p.renew_cert(domain_name(&domain)?, &who).await?))
}
