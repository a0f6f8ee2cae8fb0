//! Queries for GitHub and GitLab webhooks: each app's secrets and the deliveries it accepted.
use rusqlite::{Connection, OptionalExtension, params};
use turnout_model::HookProvider;

use super::{Tx, now, parse_text};
use crate::error::ControlError;

/// How long an accepted delivery is remembered (and so refused when replayed).
pub const DELIVERY_MEMORY_SECS: i64 = 7 * 24 * 3600;
/// At most this many remembered deliveries per app and provider; the oldest go first. Only a
/// sender holding the secret adds rows.
pub const MAX_DELIVERIES: i64 = 100_000;

/// Where a hook's secret is: stored (sealed by the vault, for `hook_seal_name`), or named by a
/// variable of the daemon's environment.
#[derive(Clone)]
pub enum SecretSource {
    Stored(Vec<u8>),
    Env(String),
}

// Not `Debug`-derived: a stored secret must never reach a log line.
impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Stored(_) => f.write_str("Stored(<hidden>)"),
            SecretSource::Env(var) => write!(f, "Env({var})"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HookRow {
    pub provider: HookProvider,
    pub secret: SecretSource,
    /// The user the hook acts as.
    pub user_id: i64,
    pub user: String,
    pub updated_at: i64,
}

const HOOK_COLS: &str = "h.provider, h.secret, h.secret_env, h.user_id, u.name, h.updated_at";

/// A hook from the row's columns `HOOK_COLS`, starting at column `at`.
fn hook_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<HookRow> {
    let secret = match r.get_ref(at + 1)? {
        rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => Some(b.to_vec()),
        _ => None,
    };
    let secret_env: Option<String> = r.get(at + 2)?;
    Ok(HookRow {
        provider: parse_text(at, r.get(at)?)?,
        secret: match (secret, secret_env) {
            (Some(s), _) => SecretSource::Stored(s),
            (None, var) => SecretSource::Env(var.unwrap_or_default()),
        },
        user_id: r.get(at + 3)?,
        user: r.get(at + 4)?,
        updated_at: r.get(at + 5)?,
    })
}

pub fn hooks(c: &Connection, app_id: i64) -> Result<Vec<HookRow>, ControlError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {HOOK_COLS} FROM hooks h JOIN users u ON u.id = h.user_id \
         WHERE h.app_id = ?1 ORDER BY h.provider"
    ))?;
    let rows = stmt
        .query_map([app_id], |r| hook_row(r, 0))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The app's hook for `provider`, looked up by the app's name (`None` for an unknown app too:
/// an anonymous caller learns nothing about which apps exist).
pub fn hook_by_app(
    c: &Connection,
    app: &str,
    provider: HookProvider,
) -> Result<Option<(i64, HookRow)>, ControlError> {
    Ok(c.query_row(
        &format!(
            "SELECT a.id, {HOOK_COLS} FROM hooks h JOIN users u ON u.id = h.user_id \
             JOIN apps a ON a.id = h.app_id WHERE a.name = ?1 AND h.provider = ?2"
        ),
        params![app, provider.as_str()],
        |r| Ok((r.get(0)?, hook_row(r, 1)?)),
    )
    .optional()?)
}

/// Set (or replace) the app's hook for `provider`; whether one was set before.
pub fn set_hook(
    c: &Tx<'_>,
    app_id: i64,
    provider: HookProvider,
    secret: &SecretSource,
    user_id: i64,
) -> Result<bool, ControlError> {
    let existed: bool = c.query_row(
        "SELECT EXISTS(SELECT 1 FROM hooks WHERE app_id = ?1 AND provider = ?2)",
        params![app_id, provider.as_str()],
        |r| r.get(0),
    )?;
    let (stored, var) = match secret {
        SecretSource::Stored(s) => (Some(s.as_slice()), None),
        SecretSource::Env(v) => (None, Some(v.as_str())),
    };
    c.execute(
        "INSERT INTO hooks (app_id, provider, secret, secret_env, user_id, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (app_id, provider) DO UPDATE SET \
         secret = excluded.secret, secret_env = excluded.secret_env, \
         user_id = excluded.user_id, updated_at = excluded.updated_at",
        params![app_id, provider.as_str(), stored, var, user_id, now()],
    )?;
    Ok(existed)
}

/// When a delivery with this id, or with this exact body, was accepted before (and is still
/// remembered).
pub fn delivery_seen(
    c: &Connection,
    app_id: i64,
    provider: HookProvider,
    delivery: &str,
    body_hash: &str,
) -> Result<Option<(String, i64)>, ControlError> {
    Ok(c.query_row(
        "SELECT delivery, received_at FROM hook_deliveries WHERE app_id = ?1 AND provider = ?2 \
         AND (delivery = ?3 OR body_hash = ?4) AND received_at > ?5 LIMIT 1",
        params![
            app_id,
            provider.as_str(),
            delivery,
            body_hash,
            now() - DELIVERY_MEMORY_SECS
        ],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?)
}

/// Remember an accepted delivery, forgetting those past `DELIVERY_MEMORY_SECS` and the oldest
/// beyond `MAX_DELIVERIES`. Refuses (409) one already remembered, so two copies racing each
/// other cannot both be accepted.
pub fn remember_delivery(
    c: &Tx<'_>,
    app_id: i64,
    provider: HookProvider,
    delivery: &str,
    body_hash: &str,
) -> Result<(), ControlError> {
    let at = now();
    c.execute(
        "DELETE FROM hook_deliveries WHERE received_at <= ?1",
        [at - DELIVERY_MEMORY_SECS],
    )?;
    if let Some((first, _)) = delivery_seen(c, app_id, provider, delivery, body_hash)? {
        return Err(replayed(provider, &first));
    }
    c.execute(
        "INSERT INTO hook_deliveries (app_id, provider, delivery, body_hash, received_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![app_id, provider.as_str(), delivery, body_hash, at],
    )?;
    c.execute(
        "DELETE FROM hook_deliveries WHERE app_id = ?1 AND provider = ?2 AND rowid NOT IN \
         (SELECT rowid FROM hook_deliveries WHERE app_id = ?1 AND provider = ?2 \
          ORDER BY received_at DESC, rowid DESC LIMIT ?3)",
        params![app_id, provider.as_str(), MAX_DELIVERIES],
    )?;
    Ok(())
}

/// The refusal of a delivery already accepted (`first` is the id it was accepted under).
pub fn replayed(provider: HookProvider, first: &str) -> ControlError {
    ControlError::Conflict(format!(
        "replayed {} delivery: delivery {first} (or one with this exact body) was already accepted; nothing was changed",
        provider.title()
    ))
}
