//! Jobs: the list (refreshed in place), one job's steps, progress and output live over its
//! event stream (the API's own), and cancelling it.
use axum::extract::Path;
use turnout_model::{Action, EnvRef, JobInfo};

use super::view::Chrome;
use super::*;

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    c: Chrome,
    jobs: Vec<JobInfo>,
}

/// Queued and running jobs and the recent others, of every app the user has a role on.
pub(super) async fn list(State(ui): St, s: Signed) -> Page {
    let jobs = ui.plane.list_jobs(None, None, false, &s.who).await?;
    page(&JobsPage {
        c: s.chrome.at("jobs"),
        jobs,
    })
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    c: Chrome,
    job: JobInfo,
    may_cancel: bool,
}

pub(super) async fn show(State(ui): St, s: Signed, Path(id): Path<i64>) -> Page {
    let job = ui.plane.job(id, &s.who).await?;
    let may_cancel = !job.state.is_final() && may_cancel(&ui, &s, &job).await?;
    page(&JobPage {
        c: s.chrome.at("jobs"),
        job,
        may_cancel,
    })
}

/// Cancelling needs the deploy role on the job's environment (as `cancel_job` checks).
async fn may_cancel(ui: &Ui, s: &Signed, job: &JobInfo) -> Result<bool, UiError> {
    let board = ui.plane.board(job.app.clone(), &s.who).await?;
    let perms = ui.plane.permissions(&s.who, board.app_id).await?;
    Ok(board
        .envs
        .iter()
        .find(|e| e.name == job.env)
        .is_some_and(|e| perms.may(Action::Deploy, e.tier)))
}

/// `GET /api/v1/jobs/{id}/events`, for the session's user: the same stream.
pub(super) async fn events(State(ui): St, s: Signed, Path(id): Path<i64>) -> Page {
    Ok(crate::api::job_event_stream(
        ui.plane.job_events(id, &s.who).await?,
    ))
}

/// `POST /api/v1/jobs/{id}/cancel`'s `ControlPlane::cancel_job`.
pub(super) async fn cancel(State(ui): St, s: Signed, Path(id): Path<i64>) -> Page {
    let job = ui.plane.cancel_job(id, &s.who).await?;
    let r = EnvRef {
        app: job.app.clone(),
        env: job.env.clone(),
    };
    Ok(s.done(
        &ui,
        format!(
            "job {id} ({} of {r}): cancel asked; it stops at its next step",
            job.kind.as_str()
        ),
        &format!("/ui/jobs/{id}"),
    ))
}
