//! GitHub and GitLab webhooks: an app's secret per provider (set by an owner), and a delivery's
//! way from the wire to `trigger_deploys`.
//!
//! A delivery changes nothing unless its signature (GitHub) or token (GitLab) verifies with the
//! app's secret, its delivery id and its body were not accepted before, and its event is not
//! older than the deliveries remembered. A verified
//! delivery that asks for deploys is remembered, audited (`hook.accept`) and then acts as the
//! user who set the secret, with that user's roles at the time of the delivery: the role
//! matrix and approval rules apply to its deploys as to ones typed by hand, and the user
//! cannot approve what their own hook asked for.
use std::sync::Arc;

use axum::http::HeaderMap;
use tracing::{info, warn};
use turnout_model::endpoint::{Endpoint, GithubHook, GitlabHook};
use turnout_model::{
    Action, AppName, AuditAction, DeployOn, HookInfo, HookOutcome, HookProvider, SetHook,
    format_timestamp,
};

use super::ControlPlane;
use super::triggers::Trigger;
use crate::access::Principal;
use crate::error::{ControlError, Escaped};
use crate::hooks::{self, Intent};
use crate::store::config::hook_seal_name;
use crate::store::hooks::{self as hq, HookRow, SecretSource};
use crate::store::{AuditEntry, access as aq};

impl ControlPlane {
    /// Set (or replace) the app's secret for `provider`; owners only. The hook will act as
    /// `who`.
    pub async fn set_hook(
        &self,
        app: AppName,
        req: SetHook,
        who: &Principal,
    ) -> Result<HookInfo, ControlError> {
        let row = self.authorize_app(who, &app, Action::Config).await?;
        let p = req.provider;
        let secret = match (req.secret_env, req.secret) {
            (Some(var), None) => {
                check_env_name(&var)?;
                let value = std::env::var(&var).map_err(|_| {
                    ControlError::Invalid(format!(
                        "the daemon's environment has no variable '{var}' (named by --secret-env); set it where `turnout serve` runs, or give the secret with --secret-stdin"
                    ))
                })?;
                hooks::check_secret(&value, &format!("in ${var}"))?;
                SecretSource::Env(var)
            }
            (None, Some(secret)) => {
                hooks::check_secret(&secret, "given")?;
                SecretSource::Stored(secret.into_bytes())
            }
            _ => {
                return Err(ControlError::Invalid(
                    "give the hook's secret one way: --secret-env VAR (a variable of the daemon's environment) or --secret-stdin".into(),
                ));
            }
        };
        let shown = match &secret {
            SecretSource::Stored(_) => format!("{p} secret stored"),
            SecretSource::Env(var) => format!("{p} secret from ${var}"),
        };
        let entry = AuditEntry::new(&who.name, AuditAction::HookSet)
            .app(&app)
            .change(None, Some(shown));
        let (app_id, user_id) = (row.id, who.user_id);
        // Sealed at rest, under the sealing lock until it is written.
        let sealing = self.sealing.read().await;
        let secret = match secret {
            SecretSource::Stored(plain) => SecretSource::Stored(
                self.vault()
                    .seal(&hook_seal_name(app_id, p.as_str()), &plain)?,
            ),
            env => env,
        };
        self.store
            .mutate(entry, move |c, e| {
                if hq::set_hook(c, app_id, p, &secret, user_id)? {
                    e.from = Some(format!("{p} secret replaced"));
                }
                Ok(())
            })
            .await?;
        drop(sealing);
        info!(app = %app, provider = %p, by = %who.name, "webhook secret set");
        let hooks = self.show_hooks(app, who).await?;
        hooks
            .into_iter()
            .find(|h| h.provider == p)
            .ok_or_else(|| ControlError::internal("the hook just set is not in the store"))
    }

    /// The app's hooks, for anyone with a role on it: the paths to give the providers and who
    /// the hooks act as, never a secret.
    pub async fn show_hooks(
        &self,
        app: AppName,
        who: &Principal,
    ) -> Result<Vec<HookInfo>, ControlError> {
        let row = self.authorize_app(who, &app, Action::Read).await?;
        let rows = self.store.call(move |c| hq::hooks(c, row.id)).await?;
        Ok(rows.into_iter().map(|h| hook_info(&app, h)).collect())
    }

    /// A delivery for `app` from `provider`, with its headers and raw body. Every refusal is
    /// logged here (with the provider and app) and leaves everything as it was.
    pub async fn receive_hook(
        self: &Arc<Self>,
        provider: HookProvider,
        app: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<HookOutcome, ControlError> {
        let result = self.accept_hook(provider, app, headers, body).await;
        if let Err(e) = &result {
            info!(
                provider = %provider, app = %Escaped(app), error = %Escaped(&e.to_string()),
                "webhook delivery refused"
            );
        }
        result
    }

    async fn accept_hook(
        self: &Arc<Self>,
        provider: HookProvider,
        app: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<HookOutcome, ControlError> {
        // An unknown app and an app without this provider's hook answer alike: an anonymous
        // caller learns nothing about which apps exist.
        let unknown = || {
            ControlError::Unauthorized(format!(
                "unauthorized: no such app takes {} webhooks here; an owner sets one with `turnout hooks set APP {provider} …`",
                provider.title()
            ))
        };
        let app = AppName::new(app).map_err(|_| unknown())?;
        let name = app.to_string();
        let (app_id, hook) = self
            .store
            .call(move |c| hq::hook_by_app(c, &name, provider))
            .await?
            .ok_or_else(unknown)?;
        let secret = match &hook.secret {
            SecretSource::Stored(s) => self
                .vault()
                .open_text(&hook_seal_name(app_id, provider.as_str()), s)?,
            SecretSource::Env(var) => std::env::var(var).map_err(|_| {
                // The details go to the daemon's log, not to a caller not yet authenticated.
                warn!(
                    provider = %provider, app = %app, var = %var,
                    "a webhook's secret variable is missing from the daemon's environment; set it where `turnout serve` runs"
                );
                ControlError::internal(format!(
                    "the {} hook secret is not available on the daemon (its log says why)",
                    provider.title()
                ))
            })?,
        };
        match provider {
            HookProvider::Github => hooks::verify_github(secret.as_bytes(), body, headers)?,
            HookProvider::Gitlab => hooks::verify_gitlab(secret.as_bytes(), headers)?,
        }
        let delivery = hooks::delivery_id(provider, headers)?;
        let event = hooks::event_name(provider, headers)?;
        let intent = match provider {
            HookProvider::Github => hooks::github_intent(&event, body)?,
            HookProvider::Gitlab => hooks::gitlab_intent(&event, body)?,
        };
        let mut outcome = HookOutcome {
            provider,
            event: event.clone(),
            delivery: delivery.clone(),
            ignored: None,
            deploys: Vec::new(),
            skipped: Vec::new(),
            notes: Vec::new(),
        };
        let (branch, commit, on, at) = match intent {
            // Nothing to change, so nothing to remember: a replay of it changes nothing either.
            Intent::Ignore(why) => {
                info!(provider = %provider, app = %app, event = %Escaped(&event), delivery = %delivery, why = %Escaped(&why), "webhook delivery ignored");
                outcome.ignored = Some(why);
                return Ok(outcome);
            }
            Intent::Deploy {
                branch,
                commit,
                on,
                at,
            } => (branch, Some(commit), on, at),
            Intent::BranchDeleted { branch, at } => (branch, None, DeployOn::Push, at),
        };
        // Older than the deliveries remembered: it could be a forgotten replay.
        hooks::check_fresh(at, crate::store::now())?;
        let body_hash = blake3::hash(body).to_hex().to_string();
        let (id, hash) = (delivery.clone(), body_hash.clone());
        // Refused before any write (a flood of replays adds no audit entries); checked again
        // in the transaction below, where two copies racing each other meet.
        if let Some((first, _)) = self
            .store
            .call(move |c| hq::delivery_seen(c, app_id, provider, &id, &hash))
            .await?
        {
            return Err(hq::replayed(provider, &first));
        }
        let who = self.hook_principal(&hook).await?;
        let entry = AuditEntry::new(&who.name, AuditAction::HookAccept)
            .app(&app)
            .change(
                Some(format!("{provider} {event} delivery {delivery}")),
                Some(match &commit {
                    Some(commit) => format!("{branch} at {commit}"),
                    None => format!("{branch} deleted"),
                }),
            );
        let id = delivery.clone();
        self.store
            .mutate(entry, move |c, _| {
                hq::remember_delivery(c, app_id, provider, &id, &body_hash)
            })
            .await?;
        info!(provider = %provider, app = %app, event = %Escaped(&event), delivery = %delivery, %branch, commit = ?commit, "webhook delivery accepted");
        // A branch's push goes the way a `git push` to Turnout goes (branch environments made
        // and deleted with their branch); a green build deploys to the CI environments.
        match (commit, on) {
            (Some(commit), DeployOn::Ci) => {
                let trigger = Trigger {
                    app,
                    branch,
                    commit,
                    on,
                    succeeded: true,
                };
                let done = self.trigger_deploys(trigger, &who).await?;
                outcome.deploys = done.deploys;
                outcome.skipped = done.skipped;
            }
            (Some(commit), _) => {
                let row = self.app_row(&app).await?;
                let done = self.branch_pushed(&row, &branch, &commit, &who).await?;
                outcome.deploys = done.deploys.deploys;
                outcome.skipped = done.deploys.skipped;
                outcome.notes = done.notes;
            }
            (None, _) => {
                let row = self.app_row(&app).await?;
                outcome.notes = self.branch_deleted(&row, &branch, &who).await?;
            }
        }
        Ok(outcome)
    }

    /// The user a hook acts as, with the roles they hold now.
    async fn hook_principal(&self, hook: &HookRow) -> Result<Principal, ControlError> {
        let (id, name) = (hook.user_id, hook.user.clone());
        self.store.call(move |c| aq::principal(c, id, name)).await
    }
}

fn hook_info(app: &AppName, h: HookRow) -> HookInfo {
    let path = match h.provider {
        HookProvider::Github => GithubHook { app: app.clone() }.path(),
        HookProvider::Gitlab => GitlabHook { app: app.clone() }.path(),
    };
    HookInfo {
        provider: h.provider,
        path,
        secret_env: match h.secret {
            SecretSource::Env(var) => Some(var),
            SecretSource::Stored(_) => None,
        },
        acts_as: h.user,
        updated_at: format_timestamp(h.updated_at),
    }
}

/// A variable name of the daemon's environment; never echoed when refused (a user who pastes
/// the secret itself here must not see it again in an error or a log).
fn check_env_name(var: &str) -> Result<(), ControlError> {
    let valid = !var.is_empty()
        && var.len() <= 128
        && !var.starts_with(|c: char| c.is_ascii_digit())
        && var
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ControlError::Invalid(
            "invalid --secret-env: give the name of an environment variable of the daemon (upper-case letters, digits and '_', e.g. GITHUB_HOOK_SECRET), not the secret itself".into(),
        ))
    }
}
