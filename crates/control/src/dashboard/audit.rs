//! The audit log, filtered by app, environment and time (`GET /api/v1/audit`'s
//! `ControlPlane::audit`: an app's entries for anyone with a role on it, every app's for
//! administrators).
use turnout_model::{AuditInfo, EnvName};

use super::apps::app_name;
use super::view::Chrome;
use super::*;

/// At most this many entries are shown (newest first); the filters narrow the rest.
const SHOWN: usize = 500;

#[derive(Deserialize, Default)]
pub(super) struct Filters {
    #[serde(default)]
    app: String,
    #[serde(default)]
    env: String,
    /// `1h`, `2d`, `2026-11-30T12:00:00Z`: as `turnout audit --since`.
    #[serde(default)]
    since: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    c: Chrome,
    f: Filters,
    entries: Vec<AuditInfo>,
    more: bool,
}

pub(super) async fn list(
    State(ui): St,
    s: Signed,
    axum::extract::Query(f): axum::extract::Query<Filters>,
) -> Page {
    let app = Some(f.app.trim())
        .filter(|a| !a.is_empty())
        .map(app_name)
        .transpose()?;
    let env = Some(f.env.trim())
        .filter(|e| !e.is_empty())
        .map(|e| EnvName::new(e).map(|e| e.to_string()))
        .transpose()
        .map_err(|e| ControlError::Invalid(e.to_string()))?;
    let since = Some(f.since.trim())
        .filter(|t| !t.is_empty())
        .map(crate::admin::parse_since)
        .transpose()?;
    // Newest first, as the plane answers them.
    // One more than shown tells whether there are older ones, without reading them all.
    let mut entries = ui.plane.audit(app, env, since, SHOWN + 1, &s.who).await?;
    let more = entries.len() > SHOWN;
    entries.truncate(SHOWN);
    page(&AuditPage {
        c: s.chrome.at("audit"),
        f,
        entries,
        more,
    })
}
