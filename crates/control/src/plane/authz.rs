//! Authorization, in one place: every operation asks here before it changes or shows anything.

use rusqlite::Connection;
use turnout_dataplane::LoginSpec;
use turnout_model::{Action, AppName, EnvRef, Role, Tier};

use super::ControlPlane;
use super::routing::AppLogin;
use crate::access::{self, Principal};
use crate::error::ControlError;
use crate::store::access as aq;
use crate::store::{AppRow, AuditEntry, EnvRow, q};

impl ControlPlane {
    /// Reload which apps' internal URLs need a login and whose tokens may log in, then apply
    /// the routes (tokens, roles and protection all change who gets through).
    pub(crate) async fn refresh_logins(&self) -> Result<(), ControlError> {
        let rows = self
            .store
            .call(|c| {
                let mut out = Vec::new();
                for app in q::list_apps(c)? {
                    let tiers = aq::protections(c, app.id)?;
                    if !tiers.is_empty() {
                        out.push((app.name, tiers, aq::app_credentials(c, app.id)?));
                    }
                }
                Ok(out)
            })
            .await?;
        let logins = rows
            .into_iter()
            .map(|(app, tiers, credentials)| {
                let login = LoginSpec {
                    realm: app.to_string(),
                    credentials: credentials
                        .into_iter()
                        .map(|(hash, expires)| {
                            // Seconds in the store, milliseconds for the data plane.
                            let expires =
                                expires.map(|s| u64::try_from(s).unwrap_or(0).saturating_mul(1000));
                            (hash, expires)
                        })
                        .collect(),
                };
                (app, AppLogin { tiers, login })
            })
            .collect();
        self.routing.set_logins(logins).await;
        Ok(())
    }

    /// Refuse unless `who` may do `action` on `target` of app `app_id`: the role the app's policy
    /// (or the default matrix) asks for on `tier`, or owner for app-wide actions. A refused
    /// change is recorded in the audit log.
    pub(crate) async fn authorize(
        &self,
        who: &Principal,
        app_id: i64,
        app: &AppName,
        target: &str,
        action: Action,
        tier: Option<Tier>,
    ) -> Result<(), ControlError> {
        let needed = match tier {
            Some(tier) => {
                self.store
                    .call(move |c| aq::needed_role(c, app_id, action, tier))
                    .await?
            }
            None => Role::Owner,
        };
        let need = Need {
            action,
            tier,
            role: needed,
        };
        self.admit(who, app_id, app, target, need).await
    }

    /// Refuse unless `who` holds what `need` asks for `target` (read already); a refused change
    /// is recorded in the audit log.
    async fn admit(
        &self,
        who: &Principal,
        app_id: i64,
        app: &AppName,
        target: &str,
        need: Need,
    ) -> Result<(), ControlError> {
        let Need { action, tier, role } = need;
        let what = access::describe(action, target, tier);
        if let Err(e) = access::check(who, app_id, app, &what, role) {
            if action != Action::Read {
                let mut entry = AuditEntry::new(&who.name, action.into()).app(app);
                // `target` is `app/env` for environment actions.
                entry.env = target.split_once('/').map(|(_, env)| env.to_owned());
                entry.to = Some(target.to_owned());
                self.store.record(entry, format!("denied: {e}")).await?;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Refuse unless `who` may do an app-wide `action` (owners, for access management) or, for
    /// `Read`, has a role on the app; returns the app.
    pub(crate) async fn authorize_app(
        &self,
        who: &Principal,
        app: &AppName,
        action: Action,
    ) -> Result<AppRow, ControlError> {
        let row = self.app_row(app).await?;
        let tier = (action == Action::Read).then_some(Tier::Development);
        self.authorize(who, row.id, app, app.as_str(), action, tier)
            .await?;
        Ok(row)
    }

    pub(crate) async fn authorize_env(
        &self,
        who: &Principal,
        env: &EnvRow,
        action: Action,
    ) -> Result<(), ControlError> {
        let target = format!("{}/{}", env.app, env.name);
        self.authorize(who, env.app_id, &env.app, &target, action, Some(env.tier))
            .await
    }

    /// Refuse unless `who` may do what `gate` was read for.
    pub(crate) async fn pass(&self, who: &Principal, gate: &Gate) -> Result<(), ControlError> {
        let env = &gate.env;
        let target = format!("{}/{}", env.app, env.name);
        let need = Need {
            action: gate.action,
            tier: Some(env.tier),
            role: gate.needed,
        };
        self.admit(who, env.app_id, &env.app, &target, need).await
    }

    /// The environment `r` with what its app's policy says about `action` on it, if `who` may
    /// do it: one store read, then the check.
    pub(crate) async fn gate_for(
        &self,
        who: &Principal,
        r: &EnvRef,
        action: Action,
    ) -> Result<Gate, ControlError> {
        let r = r.clone();
        let gate = self.store.call(move |c| Gate::read(c, &r, action)).await?;
        self.pass(who, &gate).await?;
        Ok(gate)
    }

    /// The environment `r`, if `who` may do `action` on it.
    pub(crate) async fn env_for(
        &self,
        who: &Principal,
        r: &EnvRef,
        action: Action,
    ) -> Result<EnvRow, ControlError> {
        Ok(self.gate_for(who, r, action).await?.env)
    }
}

/// What one action asks of whoever does it: `role`, on `tier` (`None`: app-wide).
struct Need {
    action: Action,
    tier: Option<Tier>,
    role: Role,
}

/// What an app's policy says about one action on one environment, read together with the
/// environment in one store call: the role the action needs on its tier and, when a second
/// owner must approve it, how long the request waits (seconds). `ControlPlane::pass` decides
/// on it; `require_approval` asks on it.
pub(crate) struct Gate {
    pub env: EnvRow,
    pub action: Action,
    needed: Role,
    pub approval: Option<i64>,
}

impl Gate {
    /// Read `r` and its app's rule for `action` on its tier (inside a store call, so that an
    /// operation on several environments reads them all at once).
    pub(crate) fn read(c: &Connection, r: &EnvRef, action: Action) -> Result<Gate, ControlError> {
        let env = q::get_env(c, &r.app, &r.env)?;
        let needed = aq::needed_role(c, env.app_id, action, env.tier)?;
        let approval = aq::approval_rule(c, env.app_id, action, env.tier)?;
        Ok(Gate {
            env,
            action,
            needed,
            approval,
        })
    }
}
