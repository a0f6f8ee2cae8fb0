//! Jobs: listed, shown, cancelled, and followed as server-sent events.
use super::*;

#[derive(Deserialize)]
pub(super) struct JobsQuery {
    app: Option<String>,
    env: Option<String>,
    #[serde(default)]
    all: bool,
}

pub(super) async fn list_jobs(
    State(p): State<Api>,
    who: Who,
    Query(q): Query<JobsQuery>,
) -> Result<impl IntoResponse> {
    let app = q.app.as_deref().map(app_name).transpose()?;
    let env = match (&app, q.env.as_deref()) {
        (_, None) => None,
        (Some(_), Some(env)) => {
            Some(EnvName::new(env).map_err(|e| ApiError(ControlError::Invalid(e.to_string())))?)
        }
        (None, Some(_)) => {
            return Err(ApiError(ControlError::Invalid(
                "env= needs app= too (jobs of APP/ENV)".into(),
            )));
        }
    };
    Ok(Json(p.list_jobs(app, env, q.all, &who).await?))
}

pub(super) async fn show_job(
    State(p): State<Api>,
    who: Who,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.job(id, &who).await?))
}

pub(super) async fn cancel_job(
    State(p): State<Api>,
    who: Who,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse> {
    Ok(Json(p.cancel_job(id, &who).await?))
}

/// Server-sent events: every event of the job from the first, then live ones; the stream ends
/// after `end`. Each `data:` is one `JobEvent` as JSON on one line.
pub(super) async fn job_events(
    State(p): State<Api>,
    who: Who,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse> {
    Ok(job_event_stream(p.job_events(id, &who).await?))
}

/// A job's events as server-sent events (the API's stream, and the dashboard's job page).
pub(crate) fn job_event_stream(
    events: impl futures_util::Stream<Item = JobEvent> + Send + 'static,
) -> Response {
    use futures_util::StreamExt;
    let stream = events.enumerate().map(|(n, event)| {
        let name = match &event {
            JobEvent::Step { .. } => "step",
            JobEvent::Output { .. } => "output",
            JobEvent::End { .. } => "end",
        };
        let data = serde_json::to_string(&event).unwrap_or_default();
        Ok::<_, std::convert::Infallible>(Bytes::from(format!(
            "id: {n}\nevent: {name}\ndata: {data}\n\n"
        )))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
