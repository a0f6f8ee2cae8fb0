//! Queries for users, tokens, grants, policies, approval rules, approvals and protected URLs.
//! Mutations run inside `Store::mutate`, so each lands with its audit entry.
use rusqlite::{Connection, OptionalExtension, params};
use turnout_model::{Action, AuditAction, Role, Tier};

use super::{AuditEntry, Tx, now};
use crate::access::Principal;
use crate::error::ControlError;

fn parse<T: std::str::FromStr<Err = String>>(s: String) -> rusqlite::Result<T> {
    s.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

fn parse_tier(s: String) -> rusqlite::Result<Tier> {
    s.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub fn user_count(c: &Connection) -> Result<i64, ControlError> {
    Ok(c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?)
}

pub fn insert_user(c: &Tx<'_>, name: &str) -> Result<i64, ControlError> {
    let exists: bool = c.query_row(
        "SELECT EXISTS(SELECT 1 FROM users WHERE name = ?1)",
        [name],
        |r| r.get(0),
    )?;
    if exists {
        return Err(ControlError::Conflict(format!(
            "user '{name}' already exists"
        )));
    }
    c.execute(
        "INSERT INTO users (name, created_at) VALUES (?1, ?2)",
        params![name, now()],
    )?;
    Ok(c.last_insert_rowid())
}

pub fn user_id(c: &Connection, name: &str) -> Result<i64, ControlError> {
    c.query_row("SELECT id FROM users WHERE name = ?1", [name], |r| r.get(0))
        .optional()?
        .ok_or_else(|| {
            ControlError::NotFound(format!("no user named '{name}'; see `turnout user list`"))
        })
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub name: String,
    pub created_at: i64,
    /// (app name or None for every app, role)
    pub grants: Vec<(Option<String>, Role)>,
}

pub fn list_users(c: &Connection) -> Result<Vec<UserRow>, ControlError> {
    let mut stmt = c.prepare("SELECT id, name, created_at FROM users ORDER BY name")?;
    let users: Vec<(i64, String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut grants = c.prepare(
        "SELECT a.name, g.role FROM grants g LEFT JOIN apps a ON a.id = g.app_id WHERE g.user_id = ?1 ORDER BY a.name",
    )?;
    let mut out = Vec::new();
    for (id, name, created_at) in users {
        let g = grants
            .query_map([id], |r| {
                Ok((r.get::<_, Option<String>>(0)?, parse::<Role>(r.get(1)?)?))
            })?
            .collect::<Result<_, _>>()?;
        out.push(UserRow {
            name,
            created_at,
            grants: g,
        });
    }
    Ok(out)
}

pub fn insert_token(
    c: &Tx<'_>,
    user_id: i64,
    hash: &str,
    prefix: &str,
    expires_at: Option<i64>,
) -> Result<i64, ControlError> {
    c.execute(
        "INSERT INTO tokens (user_id, hash, prefix, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![user_id, hash, prefix, now(), expires_at],
    )?;
    Ok(c.last_insert_rowid())
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub user: String,
    pub prefix: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

pub fn list_tokens(c: &Connection, user: Option<&str>) -> Result<Vec<TokenRow>, ControlError> {
    let mut stmt = c.prepare(
        "SELECT t.id, u.name, t.prefix, t.created_at, t.expires_at, t.revoked_at FROM tokens t \
         JOIN users u ON u.id = t.user_id WHERE ?1 IS NULL OR u.name = ?1 ORDER BY t.id",
    )?;
    let rows = stmt
        .query_map([user], |r| {
            Ok(TokenRow {
                id: r.get(0)?,
                user: r.get(1)?,
                prefix: r.get(2)?,
                created_at: r.get(3)?,
                expires_at: r.get(4)?,
                revoked_at: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Revoke a token; returns its user's name.
pub fn revoke_token(c: &Tx<'_>, id: i64) -> Result<String, ControlError> {
    let user: String = c
        .query_row(
            "SELECT u.name FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| {
            ControlError::NotFound(format!("no token with id {id}; see `turnout token list`"))
        })?;
    c.execute(
        "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id, now()],
    )?;
    Ok(user)
}

/// The principal a token stands for, if the token is known, unexpired and not revoked.
pub fn authenticate(
    c: &Connection,
    hash: &str,
) -> Result<Result<Principal, &'static str>, ControlError> {
    let found: Option<(i64, String, Option<i64>, Option<i64>)> = c
        .prepare_cached(
            "SELECT u.id, u.name, t.expires_at, t.revoked_at FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = ?1",
        )?
        .query_row([hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let Some((user_id, name, expires_at, revoked_at)) = found else {
        return Ok(Err("the token is not known"));
    };
    if revoked_at.is_some() {
        return Ok(Err("the token was revoked"));
    }
    if expires_at.is_some_and(|e| e <= now()) {
        return Ok(Err("the token has expired"));
    }
    Ok(Ok(principal(c, user_id, name)?))
}

/// User `user_id` (named `name`) with the roles it holds now.
pub fn principal(c: &Connection, user_id: i64, name: String) -> Result<Principal, ControlError> {
    let mut stmt = c.prepare_cached("SELECT app_id, role FROM grants WHERE user_id = ?1")?;
    let grants = stmt
        .query_map([user_id], |r| {
            Ok((r.get::<_, Option<i64>>(0)?, parse::<Role>(r.get(1)?)?))
        })?
        .collect::<Result<_, _>>()?;
    Ok(Principal {
        user_id,
        name,
        grants,
    })
}

/// Every valid token's hash with the strongest role its user has on `app_id` (for the proxy's
/// login check of protected URLs).
pub fn app_credentials(
    c: &Connection,
    app_id: i64,
) -> Result<Vec<(String, Option<i64>)>, ControlError> {
    let mut stmt = c.prepare(
        "SELECT DISTINCT t.hash, t.expires_at FROM tokens t JOIN grants g ON g.user_id = t.user_id \
         WHERE t.revoked_at IS NULL AND (g.app_id IS NULL OR g.app_id = ?1)",
    )?;
    let rows = stmt
        .query_map([app_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Grant `role` on an app (None: every app), replacing an earlier grant; returns the old role.
pub fn grant(
    c: &Tx<'_>,
    user_id: i64,
    app_id: Option<i64>,
    role: Role,
) -> Result<Option<Role>, ControlError> {
    let old: Option<String> = c
        .query_row(
            "SELECT role FROM grants WHERE user_id = ?1 AND app_id IS ?2",
            params![user_id, app_id],
            |r| r.get(0),
        )
        .optional()?;
    c.execute(
        "DELETE FROM grants WHERE user_id = ?1 AND app_id IS ?2",
        params![user_id, app_id],
    )?;
    c.execute(
        "INSERT INTO grants (user_id, app_id, role) VALUES (?1, ?2, ?3)",
        params![user_id, app_id, role.as_str()],
    )?;
    Ok(old.and_then(|r| r.parse().ok()))
}

/// Remove a user's role on an app; returns the role removed.
pub fn revoke_grant(c: &Tx<'_>, user_id: i64, app_id: i64) -> Result<Option<Role>, ControlError> {
    let old: Option<String> = c
        .query_row(
            "SELECT role FROM grants WHERE user_id = ?1 AND app_id = ?2",
            params![user_id, app_id],
            |r| r.get(0),
        )
        .optional()?;
    c.execute(
        "DELETE FROM grants WHERE user_id = ?1 AND app_id = ?2",
        params![user_id, app_id],
    )?;
    Ok(old.and_then(|r| r.parse().ok()))
}

/// How many users hold owner on the app (directly or on every app).
pub fn owners(c: &Connection, app_id: i64) -> Result<Vec<String>, ControlError> {
    let mut stmt = c.prepare(
        "SELECT DISTINCT u.name FROM grants g JOIN users u ON u.id = g.user_id \
         WHERE g.role = 'owner' AND (g.app_id IS NULL OR g.app_id = ?1) ORDER BY u.name",
    )?;
    let rows = stmt
        .query_map([app_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The role `action` needs on `tier` of the app: its policy, else the default matrix. `run`
/// not set by the policy needs what `deploy` needs there, the app's own rule for deploy included.
pub fn needed_role(
    c: &Connection,
    app_id: i64,
    action: Action,
    tier: Tier,
) -> Result<Role, ControlError> {
    let role: Option<String> = c
        .prepare_cached(
            "SELECT role FROM policies WHERE app_id = ?1 AND action = ?2 AND tier = ?3",
        )?
        .query_row(params![app_id, action.as_str(), tier.as_str()], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(match role {
        Some(r) => r.parse().map_err(ControlError::internal)?,
        None if action == Action::Run => needed_role(c, app_id, Action::Deploy, tier)?,
        None => action.default_role(tier),
    })
}

/// Set the role an action needs on a tier; returns the role it needed before.
pub fn set_policy(
    c: &Tx<'_>,
    app_id: i64,
    action: Action,
    tier: Tier,
    role: Role,
) -> Result<Role, ControlError> {
    let before = needed_role(c, app_id, action, tier)?;
    c.execute(
        "INSERT INTO policies (app_id, action, tier, role) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (app_id, action, tier) DO UPDATE SET role = excluded.role",
        params![app_id, action.as_str(), tier.as_str(), role.as_str()],
    )?;
    Ok(before)
}

/// How long an approval request waits, if `action` on `tier` of the app needs one.
pub fn approval_rule(
    c: &Connection,
    app_id: i64,
    action: Action,
    tier: Tier,
) -> Result<Option<i64>, ControlError> {
    Ok(c.prepare_cached(
        "SELECT expires_s FROM approval_rules WHERE app_id = ?1 AND action = ?2 AND tier = ?3",
    )?
    .query_row(params![app_id, action.as_str(), tier.as_str()], |r| {
        r.get(0)
    })
    .optional()?)
}

pub fn set_approval_rule(
    c: &Tx<'_>,
    app_id: i64,
    action: Action,
    tier: Tier,
    expires_s: Option<i64>,
) -> Result<(), ControlError> {
    c.execute(
        "DELETE FROM approval_rules WHERE app_id = ?1 AND action = ?2 AND tier = ?3",
        params![app_id, action.as_str(), tier.as_str()],
    )?;
    if let Some(expires_s) = expires_s {
        c.execute(
            "INSERT INTO approval_rules (app_id, tier, action, expires_s) VALUES (?1, ?2, ?3, ?4)",
            params![app_id, tier.as_str(), action.as_str(), expires_s],
        )?;
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct ApprovalRow {
    pub id: i64,
    pub app: String,
    pub action: Action,
    pub request: String,
    pub summary: String,
    pub requested_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub status: String,
    pub decided_by: Option<String>,
    pub result: Option<String>,
}

const APPROVAL_COLS: &str = "p.id, a.name, p.action, p.request, p.summary, p.requested_by, p.created_at, p.expires_at, p.status, p.decided_by, p.result";

fn approval_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApprovalRow> {
    Ok(ApprovalRow {
        id: r.get(0)?,
        app: r.get(1)?,
        action: parse(r.get(2)?)?,
        request: r.get(3)?,
        summary: r.get(4)?,
        requested_by: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        status: r.get(8)?,
        decided_by: r.get(9)?,
        result: r.get(10)?,
    })
}

#[allow(clippy::too_many_arguments)]
pub fn insert_approval(
    c: &Tx<'_>,
    app_id: i64,
    action: Action,
    request: &str,
    summary: &str,
    requested_by: &str,
    expires_s: i64,
) -> Result<i64, ControlError> {
    c.execute(
        "INSERT INTO approvals (app_id, action, request, summary, requested_by, created_at, expires_at, status) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending')",
        params![app_id, action.as_str(), request, summary, requested_by, now(), now() + expires_s],
    )?;
    Ok(c.last_insert_rowid())
}

/// Mark pending requests past their time as expired, and return the audit entry of each
/// (`approval.expire`, by `turnout`) for `Store::mutate_each` to record with the change.
pub fn expire_approvals(c: &Tx<'_>) -> Result<Vec<AuditEntry>, ControlError> {
    let t = now();
    let mut stmt = c.prepare(&format!(
        "SELECT {APPROVAL_COLS} FROM approvals p JOIN apps a ON a.id = p.app_id \
         WHERE p.status = 'pending' AND p.expires_at <= ?1"
    ))?;
    let expired: Vec<ApprovalRow> = stmt
        .query_map([t], approval_row)?
        .collect::<Result<_, _>>()?;
    c.execute(
        "UPDATE approvals SET status = 'expired', decided_at = expires_at WHERE status = 'pending' AND expires_at <= ?1",
        [t],
    )?;
    Ok(expired
        .into_iter()
        .map(|r| {
            AuditEntry::new("turnout", AuditAction::ApprovalExpire)
                .app(&r.app)
                .change(
                    Some(format!(
                        "request {} by {}: {}",
                        r.id, r.requested_by, r.summary
                    )),
                    Some("expired".into()),
                )
        })
        .collect())
}

pub fn list_approvals(c: &Connection, all: bool) -> Result<Vec<ApprovalRow>, ControlError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {APPROVAL_COLS} FROM approvals p JOIN apps a ON a.id = p.app_id \
         WHERE ?1 OR p.status = 'pending' ORDER BY p.id DESC"
    ))?;
    let rows = stmt
        .query_map([all], approval_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub fn get_approval(c: &Connection, id: i64) -> Result<ApprovalRow, ControlError> {
    c.query_row(
        &format!(
            "SELECT {APPROVAL_COLS} FROM approvals p JOIN apps a ON a.id = p.app_id WHERE p.id = ?1"
        ),
        [id],
        approval_row,
    )
    .optional()?
    .ok_or_else(|| {
        ControlError::NotFound(format!(
            "no approval request {id}; see `turnout approvals list`"
        ))
    })
}

pub fn decide_approval(c: &Tx<'_>, id: i64, status: &str, by: &str) -> Result<(), ControlError> {
    let changed = c.execute(
        "UPDATE approvals SET status = ?2, decided_by = ?3, decided_at = ?4 WHERE id = ?1 AND status = 'pending'",
        params![id, status, by, now()],
    )?;
    if changed == 0 {
        return Err(ControlError::Conflict(format!(
            "approval request {id} is no longer pending"
        )));
    }
    Ok(())
}

pub fn set_approval_result(c: &Tx<'_>, id: i64, result: &str) -> Result<(), ControlError> {
    c.execute(
        "UPDATE approvals SET result = ?2 WHERE id = ?1",
        params![id, result],
    )?;
    Ok(())
}

/// Set or clear login protection for an app's internal URLs (tier None: every tier).
pub fn set_protection(
    c: &Tx<'_>,
    app_id: i64,
    tier: Option<Tier>,
    on: bool,
) -> Result<(), ControlError> {
    let tier = tier.map_or("*", Tier::as_str);
    if on {
        c.execute(
            "INSERT OR IGNORE INTO protections (app_id, tier) VALUES (?1, ?2)",
            params![app_id, tier],
        )?;
    } else {
        c.execute(
            "DELETE FROM protections WHERE app_id = ?1 AND tier = ?2",
            params![app_id, tier],
        )?;
    }
    Ok(())
}

/// Protected tiers of an app (`None` in the list: every tier).
pub fn protections(c: &Connection, app_id: i64) -> Result<Vec<Option<Tier>>, ControlError> {
    let mut stmt = c.prepare("SELECT tier FROM protections WHERE app_id = ?1")?;
    let rows = stmt
        .query_map([app_id], |r| {
            let t: String = r.get(0)?;
            if t == "*" {
                Ok(None)
            } else {
                parse_tier(t).map(Some)
            }
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}
