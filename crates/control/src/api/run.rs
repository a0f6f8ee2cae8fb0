//! `turnout run`: the request is checked and authorized like any other, then answered `101
//! Switching Protocols`, after which the connection carries the run's frames
//! (`turnout_model::run`) until the command ends. Detached, it is a job (`run_job`).
use axum::extract::Request;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use turnout_model::run::RUN_PROTOCOL;

use super::*;

pub(super) async fn run(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    req: Request,
) -> Result<Response> {
    let r = env_ref(&app, &env)?;
    let (mut parts, raw) = req.into_parts();
    let upgrade = parts.extensions.remove::<OnUpgrade>();
    let wants_run = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(RUN_PROTOCOL));
    let RawBody(bytes) = RawBody::from_request(Request::from_parts(parts, raw), &()).await?;
    let prepared = p.prepare_run(r, body(&bytes)?, &who).await?;
    let Some(upgrade) = upgrade.filter(|_| wants_run) else {
        return Err(ApiError(ControlError::Invalid(format!(
            "this endpoint runs a command over an upgraded HTTP/1.1 connection: send `Connection: Upgrade` and `Upgrade: {RUN_PROTOCOL}` (use `turnout run`)"
        ))));
    };
    p.start_run(
        prepared,
        async move { upgrade.await.ok().map(TokioIo::new) },
    )
    .await?;
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, RUN_PROTOCOL)
        .body(Body::empty())
        .expect("a 101 answer with two fixed headers is valid"))
}

/// `turnout run --detach`: 201 with the run's job.
pub(super) async fn run_job(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse> {
    let r = env_ref(&app, &env)?;
    Ok((
        StatusCode::CREATED,
        Json(p.run_job(r, body(&bytes)?, &who).await?),
    ))
}
