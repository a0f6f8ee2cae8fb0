//! Queries for configuration set through Turnout (`config_values`), the snapshots releases ran
//! with (`config_snapshots`), and every sealed value the store holds (for key rotation and the
//! start-up upgrade of values kept in plain text by older versions).
use rusqlite::{Connection, OptionalExtension, params};
use turnout_model::Tier;

use super::{Tx, now};
use crate::error::ControlError;

/// The level a value is set at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SetLevel {
    App,
    Tier(Tier),
    Env(i64),
}

impl SetLevel {
    fn columns(&self) -> (&'static str, String, Option<i64>) {
        match self {
            SetLevel::App => ("app", String::new(), None),
            SetLevel::Tier(t) => ("tier", t.to_string(), None),
            SetLevel::Env(id) => ("env", String::new(), Some(*id)),
        }
    }

    /// The associated data a secret set at this level is sealed with: a sealed value moved to
    /// another app, level or key does not open.
    pub fn seal_name(&self, app_id: i64, key: &str) -> String {
        match self {
            SetLevel::App => format!("config/{app_id}/app/{key}"),
            SetLevel::Tier(t) => format!("config/{app_id}/tier:{t}/{key}"),
            SetLevel::Env(id) => format!("config/{app_id}/env:{id}/{key}"),
        }
    }
}

/// One value set through Turnout. `value` is text for a plain value, sealed bytes for a secret.
// Not `Debug`-derived: a value must never reach a log line.
#[derive(Clone)]
pub struct ValueRow {
    pub level: SetLevel,
    pub key: String,
    pub secret: bool,
    pub value: Vec<u8>,
    pub updated_at: i64,
    pub updated_by: String,
}

fn value_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ValueRow> {
    let level: String = r.get(0)?;
    let tier: String = r.get(1)?;
    let env_id: Option<i64> = r.get(2)?;
    let level = match (level.as_str(), env_id) {
        ("env", Some(id)) => SetLevel::Env(id),
        ("tier", _) => SetLevel::Tier(super::parse_tier(tier)?),
        _ => SetLevel::App,
    };
    let value = match r.get_ref(5)? {
        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => t.to_vec(),
        _ => Vec::new(),
    };
    Ok(ValueRow {
        level,
        key: r.get(3)?,
        secret: r.get(4)?,
        value,
        updated_at: r.get(6)?,
        updated_by: r.get(7)?,
    })
}

const VALUE_COLS: &str = "level, tier, env_id, key, secret, value, updated_at, updated_by";

/// The values that apply to an environment of `tier` (`env_id`): the app's, its tier's and
/// its own, by key.
pub fn values_for_env(
    c: &Connection,
    app_id: i64,
    tier: Tier,
    env_id: i64,
) -> Result<Vec<ValueRow>, ControlError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {VALUE_COLS} FROM config_values WHERE app_id = ?1 AND \
         (level = 'app' OR (level = 'tier' AND tier = ?2) OR (level = 'env' AND env_id = ?3)) \
         ORDER BY key"
    ))?;
    let rows = stmt
        .query_map(params![app_id, tier.to_string(), env_id], value_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The values set at exactly one level, by key.
pub fn values_at(
    c: &Connection,
    app_id: i64,
    level: &SetLevel,
) -> Result<Vec<ValueRow>, ControlError> {
    let (name, tier, env_id) = level.columns();
    let mut stmt = c.prepare(&format!(
        "SELECT {VALUE_COLS} FROM config_values WHERE app_id = ?1 AND level = ?2 AND tier = ?3 \
         AND IFNULL(env_id, 0) = IFNULL(?4, 0) ORDER BY key"
    ))?;
    let rows = stmt
        .query_map(params![app_id, name, tier, env_id], value_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Set (or replace) one value; whether it replaced one.
pub fn set_value(
    c: &Tx<'_>,
    app_id: i64,
    level: &SetLevel,
    key: &str,
    secret: bool,
    value: &[u8],
    by: &str,
) -> Result<bool, ControlError> {
    let (name, tier, env_id) = level.columns();
    let removed = c.execute(
        "DELETE FROM config_values WHERE app_id = ?1 AND level = ?2 AND tier = ?3 \
         AND IFNULL(env_id, 0) = IFNULL(?4, 0) AND key = ?5",
        params![app_id, name, tier, env_id, key],
    )?;
    // A plain value is stored as text, a sealed one as a blob.
    let value = match secret {
        true => rusqlite::types::Value::Blob(value.to_vec()),
        false => rusqlite::types::Value::Text(String::from_utf8_lossy(value).into_owned()),
    };
    c.execute(
        "INSERT INTO config_values (app_id, level, tier, env_id, key, secret, value, updated_at, updated_by) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![app_id, name, tier, env_id, key, secret, value, now(), by],
    )?;
    Ok(removed > 0)
}

/// Remove one value; whether there was one.
pub fn unset_value(
    c: &Tx<'_>,
    app_id: i64,
    level: &SetLevel,
    key: &str,
) -> Result<bool, ControlError> {
    let (name, tier, env_id) = level.columns();
    Ok(c.execute(
        "DELETE FROM config_values WHERE app_id = ?1 AND level = ?2 AND tier = ?3 \
         AND IFNULL(env_id, 0) = IFNULL(?4, 0) AND key = ?5",
        params![app_id, name, tier, env_id, key],
    )? > 0)
}

/// Count the keys set at one level.
pub fn count_at(c: &Connection, app_id: i64, level: &SetLevel) -> Result<usize, ControlError> {
    let (name, tier, env_id) = level.columns();
    let n: i64 = c.query_row(
        "SELECT COUNT(*) FROM config_values WHERE app_id = ?1 AND level = ?2 AND tier = ?3 \
         AND IFNULL(env_id, 0) = IFNULL(?4, 0)",
        params![app_id, name, tier, env_id],
        |r| r.get(0),
    )?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// The app's configuration version (bumped by every set and unset).
pub fn version(c: &Connection, app_id: i64) -> Result<i64, ControlError> {
    Ok(c.query_row(
        "SELECT config_version FROM apps WHERE id = ?1",
        [app_id],
        |r| r.get(0),
    )?)
}

/// Bump the app's configuration version; the new one.
pub fn bump_version(c: &Tx<'_>, app_id: i64) -> Result<i64, ControlError> {
    Ok(c.query_row(
        "UPDATE apps SET config_version = config_version + 1 WHERE id = ?1 RETURNING config_version",
        [app_id],
        |r| r.get(0),
    )?)
}

/// A snapshot an environment ran with (its content sealed as a whole).
pub struct SnapshotRow {
    pub env_id: i64,
    pub version: i64,
    pub digest: String,
    pub content: Vec<u8>,
}

impl SnapshotRow {
    /// The associated data a snapshot's content is sealed with.
    pub fn seal_name(env_id: i64, digest: &str) -> String {
        format!("config-snapshot/{env_id}/{digest}")
    }
}

/// The environment's snapshot with this digest, if it has one.
pub fn snapshot_by_digest(
    c: &Connection,
    env_id: i64,
    digest: &str,
) -> Result<Option<i64>, ControlError> {
    Ok(c.query_row(
        "SELECT id FROM config_snapshots WHERE env_id = ?1 AND digest = ?2",
        params![env_id, digest],
        |r| r.get(0),
    )
    .optional()?)
}

/// Record a snapshot (or find the same content recorded before); its id.
pub fn insert_snapshot(
    c: &Tx<'_>,
    env_id: i64,
    version: i64,
    digest: &str,
    content: &[u8],
) -> Result<i64, ControlError> {
    if let Some(id) = snapshot_by_digest(c, env_id, digest)? {
        return Ok(id);
    }
    c.execute(
        "INSERT INTO config_snapshots (env_id, version, digest, content, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![env_id, version, digest, content, now()],
    )?;
    Ok(c.last_insert_rowid())
}

pub fn get_snapshot(c: &Connection, id: i64) -> Result<SnapshotRow, ControlError> {
    Ok(c.query_row(
        "SELECT env_id, version, digest, content FROM config_snapshots WHERE id = ?1",
        [id],
        |r| {
            Ok(SnapshotRow {
                env_id: r.get(0)?,
                version: r.get(1)?,
                digest: r.get(2)?,
                content: r.get(3)?,
            })
        },
    )?)
}

/// The snapshot the release last went live with.
pub fn release_snapshot(c: &Connection, release_id: i64) -> Result<Option<i64>, ControlError> {
    Ok(c.query_row(
        "SELECT config_snapshot_id FROM releases WHERE id = ?1",
        [release_id],
        |r| r.get(0),
    )?)
}

pub fn set_release_snapshot(
    c: &Tx<'_>,
    release_id: i64,
    snapshot_id: i64,
) -> Result<(), ControlError> {
    c.execute(
        "UPDATE releases SET config_snapshot_id = ?2 WHERE id = ?1",
        params![release_id, snapshot_id],
    )?;
    Ok(())
}

/// One sealed value anywhere in the store: which table and row, the name it is sealed for, and
/// the sealed bytes.
pub struct Sealed {
    pub table: SealedIn,
    pub rowid: i64,
    pub name: String,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedIn {
    ConfigValue,
    Snapshot,
    Hook,
    MailRelay,
}

/// Every sealed value the store holds.
pub fn sealed_values(c: &Connection) -> Result<Vec<Sealed>, ControlError> {
    let mut out = Vec::new();
    let mut stmt = c.prepare(
        "SELECT id, app_id, level, tier, env_id, key, value FROM config_values WHERE secret = 1",
    )?;
    let rows = stmt.query_map([], |r| {
        let level = match (r.get::<_, String>(2)?.as_str(), r.get::<_, Option<i64>>(4)?) {
            ("env", Some(id)) => SetLevel::Env(id),
            ("tier", _) => SetLevel::Tier(super::parse_tier(r.get(3)?)?),
            _ => SetLevel::App,
        };
        Ok(Sealed {
            table: SealedIn::ConfigValue,
            rowid: r.get(0)?,
            name: level.seal_name(r.get(1)?, &r.get::<_, String>(5)?),
            value: r.get(6)?,
        })
    })?;
    for row in rows {
        out.push(row?);
    }
    let mut stmt = c.prepare("SELECT id, env_id, digest, content FROM config_snapshots")?;
    let rows = stmt.query_map([], |r| {
        Ok(Sealed {
            table: SealedIn::Snapshot,
            rowid: r.get(0)?,
            name: SnapshotRow::seal_name(r.get(1)?, &r.get::<_, String>(2)?),
            value: r.get(3)?,
        })
    })?;
    for row in rows {
        out.push(row?);
    }
    let mut stmt = c.prepare("SELECT rowid, app_id, tier, url FROM mail_relays")?;
    let rows = stmt.query_map([], |r| {
        Ok(Sealed {
            table: SealedIn::MailRelay,
            rowid: r.get(0)?,
            name: super::mail::relay_secret_name(r.get(1)?, super::parse_tier(r.get(2)?)?),
            value: r.get(3)?,
        })
    })?;
    for row in rows {
        out.push(row?);
    }
    let mut stmt = c.prepare(
        "SELECT rowid, app_id, provider, secret FROM hooks WHERE typeof(secret) = 'blob'",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Sealed {
            table: SealedIn::Hook,
            rowid: r.get(0)?,
            name: hook_seal_name(r.get(1)?, &r.get::<_, String>(2)?),
            value: r.get(3)?,
        })
    })?;
    for row in rows {
        out.push(row?);
    }
    Ok(out)
}

/// The associated data a webhook's stored secret is sealed with.
pub fn hook_seal_name(app_id: i64, provider: &str) -> String {
    format!("hook/{app_id}/{provider}")
}

/// Replace one sealed value, only if it is still the one read: a value changed since (which
/// cannot happen while rotation holds the sealing lock) fails the whole transaction.
pub fn replace_sealed(c: &Tx<'_>, old: &Sealed, new: &[u8]) -> Result<(), ControlError> {
    let sql = match old.table {
        SealedIn::ConfigValue => "UPDATE config_values SET value = ?3 WHERE id = ?1 AND value = ?2",
        SealedIn::Snapshot => {
            "UPDATE config_snapshots SET content = ?3 WHERE id = ?1 AND content = ?2"
        }
        SealedIn::Hook => "UPDATE hooks SET secret = ?3 WHERE rowid = ?1 AND secret = ?2",
        SealedIn::MailRelay => "UPDATE mail_relays SET url = ?3 WHERE rowid = ?1 AND url = ?2",
    };
    if c.execute(sql, params![old.rowid, old.value, new])? != 1 {
        return Err(ControlError::internal(format!(
            "the sealed value {} changed while it was re-sealed; nothing was rotated",
            old.name
        )));
    }
    Ok(())
}

/// A row of the `secrets` table older versions kept: `value` is its plain text when read, its
/// sealed form when written back.
pub struct OldSecret<V> {
    pub env_id: i64,
    pub app_id: i64,
    pub key: String,
    pub value: V,
    pub updated_at: i64,
    pub updated_by: String,
}

/// Values older versions kept in plain text: the per-environment secrets (`secrets`, if the
/// table is still there), and the stored webhook secrets as (rowid, app_id, provider, secret).
pub struct PlainValues {
    pub secrets: Vec<OldSecret<String>>,
    pub hooks: Vec<(i64, i64, String, String)>,
}

pub fn plain_values(c: &Connection) -> Result<PlainValues, ControlError> {
    let mut secrets = Vec::new();
    if has_plain_secrets_table(c)? {
        let mut stmt = c.prepare(
            "SELECT s.env_id, e.app_id, s.key, s.value, s.updated_at, s.updated_by \
             FROM secrets s JOIN environments e ON e.id = s.env_id ORDER BY s.env_id, s.key",
        )?;
        for row in stmt.query_map([], |r| {
            Ok(OldSecret {
                env_id: r.get(0)?,
                app_id: r.get(1)?,
                key: r.get(2)?,
                value: r.get(3)?,
                updated_at: r.get(4)?,
                updated_by: r.get(5)?,
            })
        })? {
            secrets.push(row?);
        }
    }
    let mut stmt = c.prepare(
        "SELECT rowid, app_id, provider, secret FROM hooks WHERE typeof(secret) = 'text'",
    )?;
    let hooks = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    Ok(PlainValues { secrets, hooks })
}

/// Whether the old `secrets` table is still there (the upgrade drops it).
pub fn has_plain_secrets_table(c: &Connection) -> Result<bool, ControlError> {
    Ok(c.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'secrets')",
        [],
        |r| r.get(0),
    )?)
}

/// Store the sealed form of the plain values read by `plain_values` and drop the old table.
pub fn seal_plain(
    c: &Tx<'_>,
    secrets: &[OldSecret<Vec<u8>>],
    hooks: &[(i64, Vec<u8>)],
) -> Result<(), ControlError> {
    for s in secrets {
        c.execute(
            "INSERT INTO config_values (app_id, level, tier, env_id, key, secret, value, updated_at, updated_by) \
             VALUES (?1, 'env', '', ?2, ?3, 1, ?4, ?5, ?6) \
             ON CONFLICT DO NOTHING",
            params![s.app_id, s.env_id, s.key, s.value, s.updated_at, s.updated_by],
        )?;
    }
    for (rowid, sealed) in hooks {
        c.execute(
            "UPDATE hooks SET secret = ?2 WHERE rowid = ?1",
            params![rowid, sealed],
        )?;
    }
    c.execute_batch("DROP TABLE IF EXISTS secrets")?;
    Ok(())
}
