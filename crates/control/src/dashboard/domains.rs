//! Domains: each with its environment; Edit → choose an environment → Update switches it (the
//! API's switch, with its health check and guarantees); Roll back; the binding history;
//! maintenance on and off. And the certificates of every domain.
use axum::extract::Path;
use turnout_model::{Action, DomainEvent, DomainInfo, DomainName, EnvName, EnvRef};

use super::apps::app_name;
use super::view::Chrome;
use super::*;

/// One domain row, with what the user may do to it.
struct Row {
    d: DomainInfo,
    may_change: bool,
}

#[derive(Template)]
#[template(path = "domains.html")]
struct DomainsPage {
    c: Chrome,
    f: Filter,
    rows: Vec<Row>,
    more: usize,
}

/// At most this many domains are listed (by name); the filter narrows the rest.
const SHOWN: usize = 200;

#[derive(Deserialize, Default)]
pub(super) struct Filter {
    /// Part of a domain's name, app or environment.
    #[serde(default)]
    q: String,
}

pub(super) async fn list(
    State(ui): St,
    s: Signed,
    axum::extract::Query(f): axum::extract::Query<Filter>,
) -> Page {
    let found = ui.plane.find_domains(&s.who, &f.q, SHOWN).await?;
    let (domains, more) = (found.domains, found.more);
    let mut rows = Vec::with_capacity(domains.len());
    // One read of each app's environments and policy, whatever the number of its domains.
    let mut apps: Vec<AppAccess> = Vec::new();
    for d in domains {
        if !apps.iter().any(|a| a.app == d.app.as_str()) {
            let board = ui.plane.board(d.app.clone(), &s.who).await?;
            apps.push(AppAccess {
                app: d.app.to_string(),
                perms: ui.plane.permissions(&s.who, board.app_id).await?,
                tiers: board.envs.into_iter().map(|e| (e.name, e.tier)).collect(),
            });
        }
        let may_change = apps.iter().any(|a| {
            a.app == d.app.as_str()
                && a.tiers
                    .iter()
                    .any(|(env, tier)| *env == d.env && a.perms.may(Action::Domain, *tier))
        });
        rows.push(Row { d, may_change });
    }
    page(&DomainsPage {
        c: s.chrome.at("domains"),
        f,
        rows,
        more,
    })
}

/// What the user may do on one app, and its environments' tiers.
struct AppAccess {
    app: String,
    perms: crate::plane::Permissions,
    tiers: Vec<(EnvName, turnout_model::Tier)>,
}

/// The domain and the environments of its app it may be switched to.
async fn domain_and_targets(
    ui: &Ui,
    s: &Signed,
    domain: &DomainName,
) -> Result<(DomainInfo, Vec<String>, bool), UiError> {
    let d = ui.plane.domain(domain, &s.who).await?;
    let board = ui.plane.board(d.app.clone(), &s.who).await?;
    let perms = ui.plane.permissions(&s.who, board.app_id).await?;
    let current_tier = board.envs.iter().find(|e| e.name == d.env).map(|e| e.tier);
    let may = current_tier.is_some_and(|t| perms.may(Action::Domain, t));
    let targets = board
        .envs
        .iter()
        .filter(|e| perms.may(Action::Domain, e.tier))
        .map(|e| e.name.to_string())
        .collect();
    Ok((d, targets, may))
}

#[derive(Template)]
#[template(path = "domain_edit.html")]
struct EditPage {
    c: Chrome,
    d: DomainInfo,
    targets: Vec<String>,
}

#[derive(Template)]
#[template(path = "domain_edit_row.html")]
struct EditRow {
    c: Chrome,
    d: DomainInfo,
    targets: Vec<String>,
}

/// The switch form: in place of the domain's row when htmx asks (`HX-Request`), else a page.
pub(super) async fn edit(
    State(ui): St,
    s: Signed,
    headers: HeaderMap,
    Path(domain): Path<String>,
) -> Page {
    let domain = domain_name(&domain)?;
    let (d, targets, may) = domain_and_targets(&ui, &s, &domain).await?;
    if !may {
        return Err(ControlError::Forbidden(format!(
            "forbidden: switching {domain} needs the domain role on {}/{}; {} does not have it",
            d.app, d.env, s.who.name
        ))
        .into());
    }
    if headers.contains_key("hx-request") {
        page(&EditRow {
            c: s.chrome.at("domains"),
            d,
            targets,
        })
    } else {
        page(&EditPage {
            c: s.chrome.at("domains"),
            d,
            targets,
        })
    }
}

#[derive(Template)]
#[template(path = "domain.html")]
struct DomainPage {
    c: Chrome,
    d: DomainInfo,
    history: Vec<DomainEvent>,
    may_change: bool,
}

pub(super) async fn show(State(ui): St, s: Signed, Path(domain): Path<String>) -> Page {
    let domain = domain_name(&domain)?;
    let (d, _, may_change) = domain_and_targets(&ui, &s, &domain).await?;
    let history = ui.plane.domain_history(domain, &s.who).await?;
    page(&DomainPage {
        c: s.chrome.at("domains"),
        d,
        history,
        may_change,
    })
}

#[derive(Deserialize)]
pub(super) struct SwitchForm {
    env: String,
}

/// `POST /api/v1/domains/{domain}/switch`'s `ControlPlane::switch_domain`.
pub(super) async fn switch(
    State(ui): St,
    s: Signed,
    Path(domain): Path<String>,
    axum::Form(f): axum::Form<SwitchForm>,
) -> Page {
    let domain = domain_name(&domain)?;
    let app = ui.plane.domain(&domain, &s.who).await?.app;
    let target = EnvRef {
        app: app_name(app.as_str())?,
        env: EnvName::new(&f.env).map_err(|e| ControlError::Invalid(e.to_string()))?,
    };
    let done = ui.plane.switch_domain(domain, target, &s.who, false).await;
    moved(&ui, &s, done)
}

/// `POST /api/v1/domains/{domain}/rollback`'s `ControlPlane::rollback_domain`.
pub(super) async fn rollback(State(ui): St, s: Signed, Path(domain): Path<String>) -> Page {
    let done = ui
        .plane
        .rollback_domain(domain_name(&domain)?, &s.who)
        .await;
    moved(&ui, &s, done)
}

fn moved(ui: &Ui, s: &Signed, done: Result<turnout_model::SwitchInfo, ControlError>) -> Page {
    match done {
        Ok(i) => Ok(s.done(
            ui,
            match i.action.as_str() {
                "unchanged" => format!("{} already served {}/{}", i.domain, i.app, i.to),
                action => format!(
                    "{}: {action} from {} to {} (health check {:.0} ms, live in {:.1} ms)",
                    i.domain,
                    i.from,
                    i.to,
                    i.health_check_ms,
                    i.apply_us / 1000.0
                ),
            },
            "/ui/domains",
        )),
        Err(ControlError::NeedsApproval { id, message }) => Ok(s.done(
            ui,
            format!("waits for approval {id}: {message}"),
            "/ui/domains",
        )),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub(super) struct MaintenanceForm {
    on: String,
    #[serde(default)]
    message: String,
}

/// `POST /api/v1/domains/{domain}/maintenance`'s `ControlPlane::set_maintenance`.
pub(super) async fn maintenance(
    State(ui): St,
    s: Signed,
    Path(domain): Path<String>,
    axum::Form(f): axum::Form<MaintenanceForm>,
) -> Page {
    let domain = domain_name(&domain)?;
    let on = f.on == "on";
    let message = Some(f.message.trim().to_owned()).filter(|m| !m.is_empty());
    let d = ui
        .plane
        .set_maintenance(domain.clone(), on, message, &s.who)
        .await?;
    Ok(s.done(
        &ui,
        format!(
            "{}: maintenance {}",
            d.domain,
            if d.maintenance.is_some() { "on" } else { "off" }
        ),
        &format!("/ui/domains/{domain}"),
    ))
}

#[derive(Template)]
#[template(path = "certificates.html")]
struct CertsPage {
    c: Chrome,
    f: Filter,
    /// Of every domain the user may see (not only those listed).
    certs: usize,
    domains: Vec<DomainInfo>,
    more: usize,
}

/// Each domain's certificate, issuer, expiry and renewal state.
pub(super) async fn certificates(
    State(ui): St,
    s: Signed,
    axum::extract::Query(f): axum::extract::Query<Filter>,
) -> Page {
    let found = ui.plane.find_domains(&s.who, &f.q, SHOWN).await?;
    page(&CertsPage {
        c: s.chrome.at("certificates"),
        f,
        certs: found.certificates,
        domains: found.domains,
        more: found.more,
    })
}

fn domain_name(s: &str) -> Result<DomainName, UiError> {
    DomainName::new(s).map_err(|e| ControlError::Invalid(e.to_string()).into())
}
