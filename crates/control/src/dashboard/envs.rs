//! One environment: its releases (roll back to one), configuration with where each value comes
//! from (secrets masked), logs (live tail), caught mail, outbound requests, data actions
//! (re-seed, clone, sync), backups with restore and the retention picture, and stop, start,
//! restart. Each section is read through the API's own plane call; one that cannot be read
//! (an environment without data, say) says why instead of failing the page.
use axum::extract::Path;
use turnout_model::{
    Action, BackupList, ConfigListing, CreateBackup, DataInfo, EgressLog, EnvInfo, EnvRef,
    MailList, ReleaseInfo, RestoreRequest, RollbackRequest,
};

use super::apps::{env_ref, job_started};
use super::view::{Chrome, ReleaseView, status_class};
use super::*;

/// What the user may do here (the policy the plane enforces, per action on this tier).
struct Can {
    deploy: bool,
    reseed: bool,
    config: bool,
    restore: bool,
}

#[derive(Template)]
#[template(path = "env.html")]
struct EnvPage {
    c: Chrome,
    e: EnvInfo,
    status_class: &'static str,
    live: Option<ReleaseView>,
    releases: Vec<ReleaseInfo>,
    config: Result<ConfigListing, String>,
    logs: String,
    mail: Result<MailList, String>,
    egress: Result<EgressLog, String>,
    data: Result<DataInfo, String>,
    backups: Result<BackupList, String>,
    /// The app's other environments (sources of a clone or sync).
    others: Vec<String>,
    can: Can,
}

/// The error of a section that could not be read, as the page shows it.
fn section<T>(r: Result<T, ControlError>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

pub(super) async fn show(
    State(ui): St,
    s: Signed,
    Path((app, env)): Path<(String, String)>,
) -> Page {
    let r = env_ref(&app, &env)?;
    let (p, who) = (&ui.plane, &s.who);
    // The sections are independent reads: asked for together, the page takes as long as the
    // slowest (the backup catalog), not their sum.
    let (e, board, releases, logs, config, mail, egress, data, backups) = tokio::join!(
        p.show_env(r.clone(), who),
        p.board(r.app.clone(), who),
        p.releases(r.clone(), who),
        p.logs(r.clone(), 100, false, who),
        p.list_config(r.app.clone(), Some(r.env.clone()), None, false, who),
        p.list_mail(r.clone(), who),
        p.egress_log(r.clone(), 50, false, who),
        p.show_data(r.clone(), who),
        p.list_backups(r.clone(), who),
    );
    let (e, board, releases) = (e?, board?, releases?);
    let logs = logs?.head().join("\n");
    let (config, mail, egress) = (section(config), section(mail), section(egress));
    let (data, backups) = (section(data), section(backups));
    let perms = p.permissions(who, board.app_id).await?;
    let can = Can {
        deploy: perms.may(Action::Deploy, e.tier),
        reseed: perms.may(Action::Reseed, e.tier),
        config: perms.may(Action::Config, e.tier),
        restore: perms.may(Action::Restore, e.tier),
    };
    let others = board
        .envs
        .iter()
        .filter(|o| o.name != r.env)
        .map(|o| o.name.to_string())
        .collect();
    page(&EnvPage {
        c: s.chrome.at("apps"),
        status_class: status_class(e.status),
        live: e.release.as_ref().map(ReleaseView::of),
        e,
        releases,
        config,
        logs,
        mail,
        egress,
        data,
        backups,
        others,
        can,
    })
}

/// The log's last lines, then what is written to it (`GET /api/v1/apps/{app}/envs/{env}/logs
/// ?follow=true`, the same stream), for the page's live tail.
pub(super) async fn log_stream(
    State(ui): St,
    s: Signed,
    Path((app, env)): Path<(String, String)>,
) -> Page {
    let view = ui
        .plane
        .logs(env_ref(&app, &env)?, 0, false, &s.who)
        .await?;
    Ok(crate::api::log_text(ui.plane.clone(), view, true).await)
}

#[derive(Deserialize)]
pub(super) struct RollbackForm {
    #[serde(default)]
    to: Option<i64>,
}

/// `POST …/rollback`'s `ControlPlane::rollback` (to the release picked, or the previous one).
pub(super) async fn rollback(
    State(ui): St,
    s: Signed,
    Path((app, env)): Path<(String, String)>,
    axum::Form(f): axum::Form<RollbackForm>,
) -> Page {
    let req = RollbackRequest {
        to: f.to,
        ..RollbackRequest::default()
    };
    let started = ui.plane.rollback(env_ref(&app, &env)?, req, &s.who).await;
    job_started(&ui, &s, started)
}

/// `POST …/restart`'s `ControlPlane::restart`.
pub(super) async fn restart(
    State(ui): St,
    s: Signed,
    Path((app, env)): Path<(String, String)>,
) -> Page {
    let started = ui.plane.restart(env_ref(&app, &env)?, &s.who).await;
    job_started(&ui, &s, started)
}

/// `POST …/start`'s `ControlPlane::start_env`.
pub(super) async fn start(
    State(ui): St,
    s: Signed,
    Path((app, env)): Path<(String, String)>,
) -> Page {
    let started = ui.plane.start_env(env_ref(&app, &env)?, &s.who).await;
    job_started(&ui, &s, started)
}

/// `POST …/stop`'s `ControlPlane::stop_env`.
pub(super) async fn stop(
    State(ui): St,
    s: Signed,
    Path((app, env)): Path<(String, String)>,
) -> Page {
    let r = env_ref(&app, &env)?;
    ui.plane.stop_env(r.clone(), &s.who).await?;
    Ok(s.done(
        &ui,
        format!("{r} stopped: its URL and domains answer 503 until it is started"),
        &env_page(&r),
    ))
}

/// `POST …/data/seed`'s `ControlPlane::seed_data` (the engine the environment has).
pub(super) async fn seed(
    State(ui): St,
    s: Signed,
    Path((app, env)): Path<(String, String)>,
) -> Page {
    let started = ui.plane.seed_data(env_ref(&app, &env)?, None, &s.who).await;
    job_started(&ui, &s, started)
}

#[derive(Deserialize)]
pub(super) struct SourceForm {
    from: String,
}

/// `POST …/data/clone`'s `ControlPlane::copy_data`, unmasked.
pub(super) async fn clone(
    State(ui): St,
    s: Signed,
    Path((app, env)): Path<(String, String)>,
    axum::Form(f): axum::Form<SourceForm>,
) -> Page {
    copy(&ui, &s, &app, &env, &f.from, false).await
}

/// `POST …/data/sync`'s `ControlPlane::copy_data`, masked.
pub(super) async fn sync(
    State(ui): St,
    s: Signed,
    Path((app, env)): Path<(String, String)>,
    axum::Form(f): axum::Form<SourceForm>,
) -> Page {
    copy(&ui, &s, &app, &env, &f.from, true).await
}

async fn copy(ui: &Ui, s: &Signed, app: &str, env: &str, from: &str, masked: bool) -> Page {
    let to = env_ref(app, env)?;
    let from = env_ref(app, from)?;
    let started = ui.plane.copy_data(to, from, masked, false, &s.who).await;
    job_started(ui, s, started)
}

#[derive(Deserialize)]
pub(super) struct BackupForm {
    #[serde(default)]
    label: String,
}

/// `POST …/backups`'s `ControlPlane::create_backup`.
pub(super) async fn back_up(
    State(ui): St,
    s: Signed,
    Path((app, env)): Path<(String, String)>,
    axum::Form(f): axum::Form<BackupForm>,
) -> Page {
    let req = CreateBackup {
        label: Some(f.label.trim().to_owned()).filter(|l| !l.is_empty()),
        pin: false,
    };
    let started = ui
        .plane
        .create_backup(env_ref(&app, &env)?, req, &s.who)
        .await;
    job_started(&ui, &s, started)
}

#[derive(Deserialize)]
pub(super) struct RestoreForm {
    snapshot: i64,
    /// "yes" confirms a restore into production (the form asks for it there).
    #[serde(default)]
    confirm: String,
}

/// `POST …/restore`'s `ControlPlane::restore_backup`, to one snapshot.
pub(super) async fn restore(
    State(ui): St,
    s: Signed,
    Path((app, env)): Path<(String, String)>,
    axum::Form(f): axum::Form<RestoreForm>,
) -> Page {
    let req = RestoreRequest {
        snapshot: Some(f.snapshot),
        yes: f.confirm == "yes",
        ..RestoreRequest::default()
    };
    let started = ui
        .plane
        .restore_backup(env_ref(&app, &env)?, req, &s.who)
        .await;
    job_started(&ui, &s, started)
}

fn env_page(r: &EnvRef) -> String {
    format!("/ui/apps/{}/envs/{}", r.app, r.env)
}
