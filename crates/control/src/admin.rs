//! Access management: users, tokens, roles, each app's policy, approval rules and URL
//! protection; the audit log; and the owner token the first `serve` creates.
use std::path::Path;

use turnout_model::{
    Action, AppName, AuditAction, AuditInfo, AuditVerification, CreateToken, GrantInfo,
    PolicyEntry, Role, SetApprovalRule, SetGrant, SetPolicy, SetProtection, Tier, TokenCreated,
    TokenInfo, UserInfo, format_timestamp,
};

use crate::access::{self, Principal, admin_only};
use crate::approvals::parse_expiry;
use crate::error::ControlError;
use crate::plane::ControlPlane;
use crate::store::access as aq;
use crate::store::{AuditEntry, Store, audit, now};

/// User names: like app names, lower-case letters, digits, `-`, `.`, `_`, `@`; 1-64 chars.
fn check_user_name(name: &str) -> Result<(), ControlError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_' | '@')
        });
    if ok {
        Ok(())
    } else {
        Err(ControlError::Invalid(format!(
            "invalid user name '{}': use 1-64 lower-case letters, digits and - . _ @",
            name.chars().take(64).collect::<String>()
        )))
    }
}

/// The latest time an audit query's `since` may name: the end of year 9999.
const LATEST_SINCE: i64 = 253_402_300_799;

/// The `since` parameter of an audit query: Unix seconds, from 0 to the end of year 9999.
pub fn parse_since(text: &str) -> Result<i64, ControlError> {
    text.parse::<i64>()
        .ok()
        .filter(|s| (0..=LATEST_SINCE).contains(s))
        .ok_or_else(|| {
            ControlError::Invalid(format!(
                "invalid since '{text}': give a Unix time in seconds from 0 to {LATEST_SINCE} (the end of year 9999), like `turnout audit --since 7d` sends"
            ))
        })
}

/// On the first start (no users yet): create user `admin` with the owner role on every app and
/// write its token to `<home>/admin.token`, readable by the daemon's user only.
pub async fn bootstrap(store: &Store, token_file: &Path) -> Result<(), ControlError> {
    if store.call(|c| aq::user_count(c)).await? > 0 {
        return Ok(());
    }
    let token = access::new_token()?;
    let (hash, prefix) = (access::hash_token(&token), access::token_prefix(&token));
    let entry =
        AuditEntry::new("turnout", AuditAction::UserBootstrap).change(None, Some("admin".into()));
    store
        .mutate(entry, move |c, _| {
            let id = aq::insert_user(c, "admin")?;
            aq::grant(c, id, None, Role::Owner)?;
            aq::insert_token(c, id, &hash, &prefix, None)?;
            Ok(())
        })
        .await?;
    write_secret(token_file, &token)?;
    tracing::info!(file = %token_file.display(), "created user admin (owner of every app); its token is in the file");
    Ok(())
}

fn write_secret(path: &Path, secret: &str) -> Result<(), ControlError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ControlError::internal(format!("write {}: {e}", path.display())))?;
    f.write_all(format!("{secret}\n").as_bytes())
        .map_err(|e| ControlError::internal(format!("write {}: {e}", path.display())))
}

impl ControlPlane {
    /// The principal a bearer token stands for, or 401.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Principal, ControlError> {
        let Some(token) = token else {
            return Err(ControlError::Unauthorized(
                "unauthorized: no API token; set TURNOUT_TOKEN (or run the CLI with --home on the daemon's machine)".into(),
            ));
        };
        self.authenticate_hash(access::hash_token(token)).await
    }

    /// The principal of the token whose hash is `hash` (a dashboard session keeps only the
    /// hash), with its roles as they are now.
    pub async fn authenticate_hash(&self, hash: String) -> Result<Principal, ControlError> {
        match self
            .store()
            .call(move |c| aq::authenticate(c, &hash))
            .await?
        {
            Ok(p) => Ok(p),
            Err(why) => Err(ControlError::Unauthorized(format!(
                "unauthorized: {why}; create a new one with `turnout token create --user NAME`"
            ))),
        }
    }

    pub async fn add_user(&self, name: String, who: &Principal) -> Result<UserInfo, ControlError> {
        admin_only(who, "adding users")?;
        check_user_name(&name)?;
        let n = name.clone();
        let entry =
            AuditEntry::new(&who.name, AuditAction::UserAdd).change(None, Some(name.clone()));
        self.store()
            .mutate(entry, move |c, _| aq::insert_user(c, &n))
            .await?;
        Ok(UserInfo {
            name,
            roles: vec![],
            created_at: format_timestamp(now()),
        })
    }

    pub async fn list_users(&self, who: &Principal) -> Result<Vec<UserInfo>, ControlError> {
        admin_only(who, "listing users")?;
        let rows = self.store().call(|c| aq::list_users(c)).await?;
        Ok(rows
            .into_iter()
            .map(|u| UserInfo {
                name: u.name,
                roles: u
                    .grants
                    .into_iter()
                    .map(|(app, role)| GrantInfo {
                        app: app.and_then(|a| a.parse().ok()),
                        role,
                    })
                    .collect(),
                created_at: format_timestamp(u.created_at),
            })
            .collect())
    }

    /// A new token for a user (an administrator, or the user for themselves). The token is in
    /// the answer and nowhere else.
    pub async fn create_token(
        &self,
        req: CreateToken,
        who: &Principal,
    ) -> Result<TokenCreated, ControlError> {
        if req.user != who.name {
            admin_only(who, "creating tokens for other users")?;
        }
        let expires_at = req
            .expires
            .as_deref()
            .map(parse_expiry)
            .transpose()?
            .map(|s| now() + s);
        let token = access::new_token()?;
        let (hash, prefix, user) = (
            access::hash_token(&token),
            access::token_prefix(&token),
            req.user.clone(),
        );
        let entry = AuditEntry::new(&who.name, AuditAction::TokenCreate).change(
            None,
            Some(format!("{} {}…", req.user, access::token_prefix(&token))),
        );
        let id = self
            .store()
            .mutate(entry, move |c, _| {
                let user_id = aq::user_id(c, &user)?;
                aq::insert_token(c, user_id, &hash, &prefix, expires_at)
            })
            .await?;
        self.refresh_logins().await?;
        Ok(TokenCreated {
            id,
            user: req.user,
            token,
            expires_at: expires_at.map(format_timestamp),
        })
    }

    pub async fn list_tokens(&self, who: &Principal) -> Result<Vec<TokenInfo>, ControlError> {
        let only = (!who.is_admin()).then(|| who.name.clone());
        let rows = self
            .store()
            .call(move |c| aq::list_tokens(c, only.as_deref()))
            .await?;
        let t = now();
        Ok(rows
            .into_iter()
            .map(|r| TokenInfo {
                id: r.id,
                user: r.user,
                prefix: r.prefix,
                created_at: format_timestamp(r.created_at),
                expires_at: r.expires_at.map(format_timestamp),
                state: if r.revoked_at.is_some() {
                    "revoked"
                } else if r.expires_at.is_some_and(|e| e <= t) {
                    "expired"
                } else {
                    "active"
                }
                .into(),
            })
            .collect())
    }

    pub async fn revoke_token(&self, id: i64, who: &Principal) -> Result<(), ControlError> {
        let mine = self
            .list_tokens(who)
            .await?
            .iter()
            .any(|t| t.id == id && t.user == who.name);
        if !mine {
            admin_only(who, "revoking other users' tokens")?;
        }
        let entry = AuditEntry::new(&who.name, AuditAction::TokenRevoke)
            .change(Some(format!("token {id}")), None);
        self.store()
            .mutate(entry, move |c, e| {
                let user = aq::revoke_token(c, id)?;
                e.from = Some(format!("token {id} of {user}"));
                Ok(())
            })
            .await?;
        self.refresh_logins().await
    }

    /// Grant (or with `role: None`, revoke) a user's role on an app. Owners of the app only;
    /// the last owner cannot give up ownership.
    pub async fn set_grant(&self, req: SetGrant, who: &Principal) -> Result<(), ControlError> {
        let app = self.authorize_app(who, &req.app, Action::Access).await?;
        self.authorize(
            who,
            app.id,
            &req.app,
            req.app.as_str(),
            Action::Access,
            None,
        )
        .await?;
        let (app_id, user, role) = (app.id, req.user.clone(), req.role);
        let entry = AuditEntry::new(
            &who.name,
            if role.is_some() {
                AuditAction::AccessGrant
            } else {
                AuditAction::AccessRevoke
            },
        )
        .app(&req.app)
        .change(
            None,
            Some(format!(
                "{} {}",
                req.user,
                role.map_or("none", Role::as_str)
            )),
        );
        self.store()
            .mutate(entry, move |c, e| {
                let user_id = aq::user_id(c, &user)?;
                let old = match role {
                    Some(role) => aq::grant(c, user_id, Some(app_id), role)?,
                    None => aq::revoke_grant(c, user_id, app_id)?,
                };
                e.from = Some(format!("{user} {}", old.map_or("none", Role::as_str)));
                if aq::owners(c, app_id)?.is_empty() {
                    return Err(ControlError::Conflict(
                        "refused: the app would have no owner left; make someone else owner first"
                            .into(),
                    ));
                }
                Ok(())
            })
            .await?;
        self.refresh_logins().await
    }

    /// The whole matrix of an app: every action on every tier with the role it needs.
    pub async fn policy(
        &self,
        app: AppName,
        who: &Principal,
    ) -> Result<Vec<PolicyEntry>, ControlError> {
        let row = self.authorize_app(who, &app, Action::Read).await?;
        let app_id = row.id;
        self.store()
            .call(move |c| {
                let mut out = Vec::new();
                for action in Action::ALL {
                    for tier in Tier::ALL {
                        let role = aq::needed_role(c, app_id, action, tier)?;
                        // `run` follows `deploy` (the app's rule for it included) by default.
                        let default = match action {
                            Action::Run => {
                                role == aq::needed_role(c, app_id, Action::Deploy, tier)?
                            }
                            _ => role == action.default_role(tier),
                        };
                        out.push(PolicyEntry {
                            action,
                            tier,
                            role,
                            default,
                        });
                    }
                }
                Ok(out)
            })
            .await
    }

    pub async fn set_policy(
        &self,
        app: AppName,
        req: SetPolicy,
        who: &Principal,
    ) -> Result<(), ControlError> {
        let row = self.authorize_app(who, &app, Action::Access).await?;
        if req.action == Action::Access && req.role != Role::Owner {
            return Err(ControlError::Invalid(
                "access management stays with owners; it cannot be given to a lower role".into(),
            ));
        }
        let app_id = row.id;
        let entry = AuditEntry::new(&who.name, AuditAction::AccessPolicy)
            .app(&app)
            .change(
                None,
                Some(format!("{} on {} needs {}", req.action, req.tier, req.role)),
            );
        self.store()
            .mutate(entry, move |c, e| {
                let before = aq::set_policy(c, app_id, req.action, req.tier, req.role)?;
                e.from = Some(format!("{} on {} needed {before}", req.action, req.tier));
                Ok(())
            })
            .await
    }

    pub async fn set_approval_rule(
        &self,
        app: AppName,
        req: SetApprovalRule,
        who: &Principal,
    ) -> Result<(), ControlError> {
        let row = self.authorize_app(who, &app, Action::Access).await?;
        if !matches!(
            req.action,
            Action::Deploy | Action::Promote | Action::Domain | Action::Restore
        ) {
            return Err(ControlError::Invalid(format!(
                "approvals can guard deploy, promote, domain (switches) and restore, not {}",
                req.action
            )));
        }
        let expires_s = req.expires.as_deref().map(parse_expiry).transpose()?;
        let app_id = row.id;
        let entry = AuditEntry::new(&who.name, AuditAction::AccessApprovals)
            .app(&app)
            .change(
                None,
                Some(match expires_s {
                    Some(s) => format!(
                        "{} on {} needs approval within {}",
                        req.action,
                        req.tier,
                        crate::approvals::human_duration(s)
                    ),
                    None => format!("{} on {} needs no approval", req.action, req.tier),
                }),
            );
        self.store()
            .mutate(entry, move |c, _| {
                aq::set_approval_rule(c, app_id, req.action, req.tier, expires_s)
            })
            .await
    }

    pub async fn set_protection(
        &self,
        app: AppName,
        req: SetProtection,
        who: &Principal,
    ) -> Result<(), ControlError> {
        let row = self.authorize_app(who, &app, Action::Access).await?;
        let app_id = row.id;
        let what = match req.tier {
            Some(t) => format!("tier {t}"),
            None => "every tier".into(),
        };
        let entry = AuditEntry::new(
            &who.name,
            if req.on {
                AuditAction::AccessProtect
            } else {
                AuditAction::AccessUnprotect
            },
        )
        .app(&app)
        .change(None, Some(what));
        self.store()
            .mutate(entry, move |c, _| {
                aq::set_protection(c, app_id, req.tier, req.on)
            })
            .await?;
        self.refresh_logins().await
    }

    /// Audit entries, newest first. Administrators see everything; others the entries of apps
    /// they have a role on.
    pub async fn audit(
        &self,
        app: Option<AppName>,
        env: Option<String>,
        since: Option<i64>,
        limit: usize,
        who: &Principal,
    ) -> Result<Vec<AuditInfo>, ControlError> {
        if let Some(app) = &app {
            self.authorize_app(who, app, Action::Read).await?;
        } else {
            admin_only(who, "reading the audit log of every app (pass --app)")?;
        }
        let a = app.as_ref().map(|a| a.to_string());
        let rows = self
            .store()
            .call(move |c| audit::list(c, a.as_deref(), env.as_deref(), since, limit))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditInfo {
                id: r.id,
                at: format_timestamp(r.at),
                actor: r.entry.actor,
                action: r.entry.action,
                app: r.entry.app,
                env: r.entry.env,
                domain: r.entry.domain,
                from: r.entry.from,
                to: r.entry.to,
                result: r.result,
                hash: r.hash,
            })
            .collect())
    }

    pub async fn verify_audit(&self, who: &Principal) -> Result<AuditVerification, ControlError> {
        admin_only(who, "verifying the audit log")?;
        Ok(match self.store().call(|c| audit::verify(c)).await? {
            Ok(entries) => AuditVerification {
                ok: true,
                entries,
                broken_at: None,
                reason: None,
            },
            Err((id, reason)) => AuditVerification {
                ok: false,
                entries: 0,
                broken_at: Some(id),
                reason: Some(reason),
            },
        })
    }
}
