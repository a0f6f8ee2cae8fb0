//! Apps, and one app's pipeline as a picture: its stages left to right, each environment with
//! its release, commit, age, health, internal URL and tier, and deploy and promote actions.
use std::collections::HashMap;

use axum::extract::Path;
use turnout_model::{Action, AppInfo, AppName, DeployRequest, EnvName, EnvRef, StageMember, Tier};

use super::view::{Chrome, ReleaseView, status_class};
use super::*;
use crate::plane::{Board, EnvCard, Permissions};

#[derive(Template)]
#[template(path = "apps.html")]
struct AppsPage {
    c: Chrome,
    apps: Vec<AppInfo>,
}

pub(super) async fn list(State(ui): St, s: Signed) -> Page {
    let apps = ui.plane.list_apps(&s.who).await?;
    page(&AppsPage {
        c: s.chrome.at("apps"),
        apps,
    })
}

/// One environment on the picture.
struct Card {
    name: String,
    tier: &'static str,
    branch: String,
    status: &'static str,
    status_class: &'static str,
    reason: Option<String>,
    release: Option<ReleaseView>,
    url: String,
    may_deploy: bool,
    /// The environments it may take a release from, when the user may promote into it and
    /// they are few: a select.
    promote_from: Vec<String>,
    /// When they are many: the page's list (`AppPage::promotable`) a text field suggests.
    promote_list: Option<usize>,
}

/// Up to this many sources of a promotion are a select on their card; more (hundreds of
/// branch environments by the tier rule) are a text field with suggestions, each distinct list
/// written once per page rather than once per card.
const SELECT_AT_MOST: usize = 20;

/// The distinct long lists of sources on one page.
#[derive(Default)]
struct Promotable {
    index: HashMap<Vec<String>, usize>,
    lists: Vec<Vec<String>>,
}

impl Promotable {
    fn place(&mut self, list: Vec<String>) -> usize {
        if let Some(&i) = self.index.get(&list) {
            return i;
        }
        self.lists.push(list.clone());
        self.index.insert(list, self.lists.len() - 1);
        self.lists.len() - 1
    }
}

struct Stage {
    name: String,
    cards: Vec<Card>,
}

#[derive(Template)]
#[template(path = "app.html")]
struct AppPage {
    c: Chrome,
    app: String,
    declared: bool,
    stages: Vec<Stage>,
    promotable: Vec<Vec<String>>,
}

pub(super) async fn show(State(ui): St, s: Signed, Path(app): Path<String>) -> Page {
    let app = app_name(&app)?;
    let board = ui.plane.board(app.clone(), &s.who).await?;
    let perms = ui.plane.permissions(&s.who, board.app_id).await?;
    let mut promotable = Promotable::default();
    let stages = stages(&board, &perms, &mut promotable);
    page(&AppPage {
        c: s.chrome.at("apps"),
        app: app.to_string(),
        declared: board.pipeline.is_some(),
        stages,
        promotable: promotable.lists,
    })
}

/// The declared pipeline's stages (and what no stage names, last), or one stage per tier.
fn stages(board: &Board, perms: &Permissions, promotable: &mut Promotable) -> Vec<Stage> {
    let mut card = |e: &EnvCard| {
        let mut from: Vec<String> = if perms.may(Action::Promote, e.tier) {
            board
                .promotable_into(e)
                .iter()
                .map(ToString::to_string)
                .collect()
        } else {
            Vec::new()
        };
        let promote_list =
            (from.len() > SELECT_AT_MOST).then(|| promotable.place(std::mem::take(&mut from)));
        Card {
            name: e.name.to_string(),
            tier: e.tier.as_str(),
            branch: e.branch.clone(),
            status: e.status.as_str(),
            status_class: status_class(e.status),
            reason: e.status_reason.clone(),
            release: e.release.as_ref().map(ReleaseView::of),
            url: e.url.clone(),
            may_deploy: perms.may(Action::Deploy, e.tier),
            promote_from: from,
            promote_list,
        }
    };
    match &board.pipeline {
        Some(p) => {
            let mut stages: Vec<Stage> = p
                .stages
                .iter()
                .enumerate()
                .map(|(i, members)| Stage {
                    name: members
                        .iter()
                        .map(StageMember::to_string)
                        .collect::<Vec<_>>()
                        .join(" + "),
                    cards: board
                        .envs
                        .iter()
                        .filter(|e| p.stage_of(&e.name, e.tier) == Some(i))
                        .map(&mut card)
                        .collect(),
                })
                .collect();
            let rest: Vec<Card> = board
                .envs
                .iter()
                .filter(|e| p.stage_of(&e.name, e.tier).is_none())
                .map(&mut card)
                .collect();
            if !rest.is_empty() {
                stages.push(Stage {
                    name: "outside the pipeline".into(),
                    cards: rest,
                });
            }
            stages
        }
        None => Tier::ALL
            .into_iter()
            .map(|tier| Stage {
                name: tier.as_str().to_owned(),
                cards: board
                    .envs
                    .iter()
                    .filter(|e| e.tier == tier)
                    .map(&mut card)
                    .collect(),
            })
            .filter(|s| !s.cards.is_empty())
            .collect(),
    }
}

#[derive(Deserialize)]
pub(super) struct DeployForm {
    #[serde(default)]
    git_ref: String,
}

/// `POST /api/v1/apps/{app}/envs/{env}/deploy`'s `ControlPlane::deploy`; then its job's page.
pub(super) async fn deploy(
    State(ui): St,
    s: Signed,
    Path((app, env)): Path<(String, String)>,
    axum::Form(f): axum::Form<DeployForm>,
) -> Page {
    let r = env_ref(&app, &env)?;
    let git_ref = Some(f.git_ref.trim().to_owned()).filter(|r| !r.is_empty());
    let started = ui.plane.deploy(r, DeployRequest { git_ref }, &s.who).await;
    job_started(&ui, &s, started)
}

#[derive(Deserialize)]
pub(super) struct PromoteForm {
    from: String,
}

/// `POST …/promote`'s `ControlPlane::promote`; then its job's page.
pub(super) async fn promote(
    State(ui): St,
    s: Signed,
    Path((app, env)): Path<(String, String)>,
    axum::Form(f): axum::Form<PromoteForm>,
) -> Page {
    let r = env_ref(&app, &env)?;
    let from = EnvName::new(&f.from).map_err(|e| ControlError::Invalid(e.to_string()))?;
    let started = ui.plane.promote(r, from, &s.who).await;
    job_started(&ui, &s, started)
}

/// After an action that starts a job: its page, or, when it waits for approval, a notice on
/// the jobs page saying so.
pub(super) fn job_started(
    ui: &Ui,
    s: &Signed,
    started: Result<turnout_model::JobInfo, ControlError>,
) -> Page {
    match started {
        Ok(job) => Ok(s.done(
            ui,
            format!(
                "started job {} ({} of {}/{})",
                job.id,
                job.kind.as_str(),
                job.app,
                job.env
            ),
            &format!("/ui/jobs/{}", job.id),
        )),
        Err(ControlError::NeedsApproval { id, message }) => Ok(s.done(
            ui,
            format!("waits for approval {id}: {message}"),
            "/ui/jobs",
        )),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn app_name(s: &str) -> Result<AppName, UiError> {
    AppName::new(s).map_err(|e| ControlError::Invalid(e.to_string()).into())
}

pub(super) fn env_ref(app: &str, env: &str) -> Result<EnvRef, UiError> {
    Ok(EnvRef {
        app: app_name(app)?,
        env: EnvName::new(env).map_err(|e| ControlError::Invalid(e.to_string()))?,
    })
}
