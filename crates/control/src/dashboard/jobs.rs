//! Jobs: the list (refreshed in place), one job's steps, progress and output live over its
//! event stream (the API's own), and cancelling it.
use axum::extract::Path;
use turnout_model::{Action, DeployRequest, EnvName, EnvRef, JobInfo, RestoreRequest};

use super::view::Chrome;
use super::*;

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    c: Chrome,
    jobs: Vec<JobInfo>,
    /// `APP/ENV` of each environment the user may deploy to (where a job may be started).
    targets: Vec<String>,
}

/// Queued and running jobs and the recent others, of every app the user has a role on, and a
/// form to start one.
pub(super) async fn list(State(ui): St, s: Signed) -> Page {
    let jobs = ui.plane.list_jobs(None, None, false, &s.who).await?;
    let mut targets = Vec::new();
    for app in ui.plane.list_apps(&s.who).await? {
        let board = ui.plane.board(app.name, &s.who).await?;
        let perms = ui.plane.permissions(&s.who, board.app_id).await?;
        targets.extend(
            board
                .envs
                .iter()
                .filter(|e| perms.may(Action::Deploy, e.tier))
                .map(|e| format!("{}/{}", board.app, e.name)),
        );
    }
    page(&JobsPage {
        c: s.chrome.at("jobs"),
        jobs,
        targets,
    })
}

#[derive(Deserialize)]
pub(super) struct StartForm {
    env: String,
    kind: String,
    #[serde(default)]
    arg: String,
}

/// Start a deploy (of a ref), a promotion or a clone (from an environment of the same app) or
/// a restore (of a snapshot): the same `ControlPlane` method as the API endpoint of each.
pub(super) async fn start(State(ui): St, s: Signed, axum::Form(f): axum::Form<StartForm>) -> Page {
    let r: EnvRef = f
        .env
        .parse()
        .map_err(|e: turnout_model::NameError| ControlError::Invalid(e.to_string()))?;
    let arg = f.arg.trim();
    let source = || -> Result<EnvName, UiError> {
        EnvName::new(arg).map_err(|e| {
            ControlError::Invalid(format!(
                "{} needs the environment of {} to take it from: {e}",
                f.kind, r.app
            ))
            .into()
        })
    };
    let p = &ui.plane;
    let started = match f.kind.as_str() {
        "deploy" => {
            let git_ref = Some(arg.to_owned()).filter(|a| !a.is_empty());
            p.deploy(r, DeployRequest { git_ref }, &s.who).await
        }
        "promote" => {
            let from = source()?;
            p.promote(r, from, &s.who).await
        }
        "clone" => {
            let from = EnvRef {
                app: r.app.clone(),
                env: source()?,
            };
            p.copy_data(r, from, false, false, &s.who).await
        }
        "restore" => {
            let snapshot = arg.parse::<i64>().map_err(|_| {
                ControlError::Invalid(format!(
                    "restore needs a snapshot id (a number, from the environment's backups), not '{arg}'"
                ))
            })?;
            let req = RestoreRequest {
                snapshot: Some(snapshot),
                ..RestoreRequest::default()
            };
            p.restore_backup(r, req, &s.who).await
        }
        other => {
            return Err(ControlError::Invalid(format!(
                "no job '{other}' starts here: deploy, promote, clone or restore"
            ))
            .into());
        }
    };
    super::apps::job_started(&ui, &s, started)
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
