//! Queries for the mail catcher: the messages environments sent (`mail`) and each tier's relay
//! opt-in (`mail_relays`). Mutations take a `Tx`, so each lands with its audit entry.
use rusqlite::{Connection, OptionalExtension, params};
use turnout_model::{AppName, EnvName, RelayOutcome, Tier};

use super::{Tx, parse_name, parse_tier};
use crate::error::ControlError;

/// The catcher keeps per environment at most this many messages…
pub const KEEP_MESSAGES: u64 = 500;
/// …and this many bytes of them; the oldest go first.
pub const KEEP_BYTES: u64 = 50 * 1024 * 1024;

/// A message as the catcher stores it.
pub struct NewMail {
    pub env_id: i64,
    pub received_at: i64,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub raw: Vec<u8>,
}

/// A stored message, without its content.
#[derive(Debug, Clone)]
pub struct MailRow {
    pub id: i64,
    pub env_id: i64,
    pub received_at: i64,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub size: u64,
    pub relay: RelayOutcome,
}

/// A tier's relay, its URL still sealed.
#[derive(Debug, Clone)]
pub struct RelayRow {
    pub tier: Tier,
    pub sealed_url: Vec<u8>,
    pub url_shown: String,
    pub domains: Vec<String>,
    pub set_by: String,
    pub set_at: i64,
}

/// The vault name a tier's relay URL is sealed under.
pub fn relay_secret_name(app_id: i64, tier: Tier) -> String {
    format!("mail-relay/{app_id}/{tier}")
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn from_json<T: serde::de::DeserializeOwned>(col: usize, s: String) -> rusqlite::Result<T> {
    serde_json::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, e.into())
    })
}

const MAIL_COLS: &str = "id, env_id, received_at, mail_from, recipients, subject, size, relay";

fn mail_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MailRow> {
    Ok(MailRow {
        id: r.get(0)?,
        env_id: r.get(1)?,
        received_at: r.get(2)?,
        from: r.get(3)?,
        to: from_json(4, r.get(4)?)?,
        subject: r.get(5)?,
        size: r.get::<_, i64>(6)?.max(0) as u64,
        relay: from_json(7, r.get(7)?)?,
    })
}

/// Keep `m`; its relay outcome starts as `pending` when its environment's tier has a relay,
/// else `off`. Then the environment's oldest messages beyond the bounds go. Returns the id
/// and the initial outcome.
pub fn insert(c: &Tx<'_>, m: &NewMail) -> Result<(i64, RelayOutcome), ControlError> {
    // Statements cached on the connection: this runs for every message caught.
    let has_relay: bool = c
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM mail_relays r JOIN environments e ON e.app_id = r.app_id
              WHERE e.id = ?1 AND r.tier = e.tier)",
        )?
        .query_row([m.env_id], |r| r.get(0))?;
    let relay = if has_relay {
        RelayOutcome::Pending
    } else {
        RelayOutcome::Off
    };
    c.prepare_cached(
        "INSERT INTO mail (env_id, received_at, mail_from, recipients, subject, size, raw, relay)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        m.env_id,
        m.received_at,
        m.from,
        json(&m.to),
        m.subject,
        m.raw.len() as i64,
        m.raw,
        json(&relay)
    ])?;
    let id = c.last_insert_rowid();
    trim(c, m.env_id)?;
    Ok((id, relay))
}

/// Drop the environment's oldest messages beyond `KEEP_MESSAGES` and `KEEP_BYTES`. This runs
/// for every message caught, so the common case walks the covering index `mail_env` only: the
/// count's cut by offset, then the sum of sizes; the running sum that finds the bytes' cut only
/// when the environment is over its byte budget.
fn trim(c: &Tx<'_>, env_id: i64) -> Result<(), ControlError> {
    c.prepare_cached(
        "DELETE FROM mail WHERE env_id = ?1 AND id <=
           (SELECT id FROM mail WHERE env_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute(params![env_id, KEEP_MESSAGES as i64])?;
    let bytes: i64 = c
        .prepare_cached("SELECT COALESCE(SUM(size), 0) FROM mail WHERE env_id = ?1")?
        .query_row([env_id], |r| r.get(0))?;
    if bytes > KEEP_BYTES as i64 {
        c.prepare_cached(
            "DELETE FROM mail WHERE env_id = ?1 AND id IN (
               SELECT id FROM (
                 SELECT id, SUM(size) OVER (ORDER BY id DESC) AS bytes
                   FROM mail WHERE env_id = ?1)
                WHERE bytes > ?2)",
        )?
        .execute(params![env_id, KEEP_BYTES as i64])?;
    }
    Ok(())
}

/// The environment's messages, newest first.
pub fn list(c: &Connection, env_id: i64) -> Result<Vec<MailRow>, ControlError> {
    let mut st = c.prepare(&format!(
        "SELECT {MAIL_COLS} FROM mail WHERE env_id = ?1 ORDER BY id DESC"
    ))?;
    let rows = st
        .query_map([env_id], mail_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn get(c: &Connection, id: i64) -> Result<Option<MailRow>, ControlError> {
    Ok(c.query_row(
        &format!("SELECT {MAIL_COLS} FROM mail WHERE id = ?1"),
        [id],
        mail_row,
    )
    .optional()?)
}

pub fn raw(c: &Connection, id: i64) -> Result<Option<Vec<u8>>, ControlError> {
    Ok(
        c.query_row("SELECT raw FROM mail WHERE id = ?1", [id], |r| r.get(0))
            .optional()?,
    )
}

/// The messages whose relay had not run when the last daemon stopped, oldest first.
pub fn pending(c: &Connection) -> Result<Vec<i64>, ControlError> {
    let mut st = c.prepare(
        "SELECT id FROM mail WHERE json_extract(relay, '$.state') = 'pending' ORDER BY id",
    )?;
    let ids = st
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(ids)
}

/// Record what the relay did (a message removed meanwhile is left alone).
pub fn set_relay(c: &Tx<'_>, id: i64, outcome: &RelayOutcome) -> Result<(), ControlError> {
    c.execute(
        "UPDATE mail SET relay = ?2 WHERE id = ?1",
        params![id, json(outcome)],
    )?;
    Ok(())
}

/// Remove every message of the environment; returns how many went.
pub fn clear(c: &Tx<'_>, env_id: i64) -> Result<u64, ControlError> {
    Ok(c.execute("DELETE FROM mail WHERE env_id = ?1", [env_id])? as u64)
}

/// The app and name of environment `env_id`, and its tier.
pub fn env_of(
    c: &Connection,
    env_id: i64,
) -> Result<Option<(AppName, EnvName, Tier)>, ControlError> {
    Ok(c.query_row(
        "SELECT a.name, e.name, e.tier FROM environments e JOIN apps a ON a.id = e.app_id
          WHERE e.id = ?1",
        [env_id],
        |r| {
            Ok((
                parse_name(r.get(0)?)?,
                parse_name(r.get(1)?)?,
                parse_tier(r.get(2)?)?,
            ))
        },
    )
    .optional()?)
}

/// Who may log in to the catcher: every environment's `APP.ENV` → its id and tier.
pub fn directory(
    c: &Connection,
) -> Result<std::collections::HashMap<String, (i64, Tier)>, ControlError> {
    let mut st = c.prepare(
        "SELECT a.name || '.' || e.name, e.id, e.tier FROM environments e
           JOIN apps a ON a.id = e.app_id",
    )?;
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, parse_tier(r.get(2)?)?))))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn relay_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RelayRow> {
    Ok(RelayRow {
        tier: parse_tier(r.get(0)?)?,
        sealed_url: r.get(1)?,
        url_shown: r.get(2)?,
        domains: from_json(3, r.get(3)?)?,
        set_by: r.get(4)?,
        set_at: r.get(5)?,
    })
}

const RELAY_COLS: &str = "r.tier, r.url, r.url_shown, r.domains, r.set_by, r.set_at";

/// The app's relays, by tier.
pub fn relays(c: &Connection, app_id: i64) -> Result<Vec<RelayRow>, ControlError> {
    let mut st = c.prepare(&format!(
        "SELECT {RELAY_COLS} FROM mail_relays r WHERE r.app_id = ?1"
    ))?;
    let rows = st
        .query_map([app_id], relay_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The relay of the environment's tier, if it has one.
pub fn relay_of_env(c: &Connection, env_id: i64) -> Result<Option<(i64, RelayRow)>, ControlError> {
    Ok(c.query_row(
        &format!(
            "SELECT {RELAY_COLS}, r.app_id FROM mail_relays r
               JOIN environments e ON e.app_id = r.app_id AND e.tier = r.tier
              WHERE e.id = ?1"
        ),
        [env_id],
        |r| Ok((r.get(6)?, relay_row(r)?)),
    )
    .optional()?)
}

/// Set a tier's relay; returns the URL shown before, if any.
pub fn set_relay_of(
    c: &Tx<'_>,
    app_id: i64,
    row: &RelayRow,
) -> Result<Option<String>, ControlError> {
    let before = shown_of(c, app_id, row.tier)?;
    c.execute(
        "INSERT INTO mail_relays (app_id, tier, url, url_shown, domains, set_by, set_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (app_id, tier) DO UPDATE SET url = ?3, url_shown = ?4, domains = ?5,
           set_by = ?6, set_at = ?7",
        params![
            app_id,
            row.tier.as_str(),
            row.sealed_url,
            row.url_shown,
            json(&row.domains),
            row.set_by,
            row.set_at
        ],
    )?;
    Ok(before)
}

/// Remove a tier's relay; returns the URL shown before, if it had one.
pub fn remove_relay(c: &Tx<'_>, app_id: i64, tier: Tier) -> Result<Option<String>, ControlError> {
    let before = shown_of(c, app_id, tier)?;
    c.execute(
        "DELETE FROM mail_relays WHERE app_id = ?1 AND tier = ?2",
        params![app_id, tier.as_str()],
    )?;
    Ok(before)
}

fn shown_of(c: &Connection, app_id: i64, tier: Tier) -> Result<Option<String>, ControlError> {
    Ok(c.query_row(
        "SELECT url_shown || ' for ' || (SELECT group_concat(value, ', ') FROM json_each(domains))
           FROM mail_relays WHERE app_id = ?1 AND tier = ?2",
        params![app_id, tier.as_str()],
        |r| r.get(0),
    )
    .optional()?)
}

#[cfg(test)]
mod tests {
    use turnout_model::{AppName, EnvName};

    use super::super::{Store, Tx, lock, q};
    use super::*;

    #[test]
    fn each_environment_keeps_its_newest_messages_within_the_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let conn = lock(&store.writer);
        let tx = Tx(&conn);
        let app = AppName::new("shop").unwrap();
        q::insert_app(&tx, &app, "/repo", None).unwrap();
        let env = |name: &str| {
            q::insert_env(
                &tx,
                &app,
                &EnvName::new(name).unwrap(),
                "main",
                Tier::Staging,
                turnout_model::DeployOn::Manual,
            )
            .unwrap()
            .id
        };
        let (a, b) = (env("a"), env("b"));
        let mail = |env_id, size: usize| NewMail {
            env_id,
            received_at: 1,
            from: "f@x.test".into(),
            to: vec!["t@y.test".into()],
            subject: "s".into(),
            raw: vec![b'x'; size],
        };
        insert(&tx, &mail(b, 10)).unwrap();
        for _ in 0..KEEP_MESSAGES + 5 {
            insert(&tx, &mail(a, 10)).unwrap();
        }
        let kept = list(&tx, a).unwrap();
        assert_eq!(kept.len() as u64, KEEP_MESSAGES);
        assert!(kept.windows(2).all(|w| w[0].id > w[1].id), "newest first");
        assert_eq!(
            list(&tx, b).unwrap().len(),
            1,
            "another environment's are not touched"
        );
        // Bytes: three messages of just over a third of the budget each leave the newest two.
        let third = (KEEP_BYTES / 3) as usize + 1;
        for _ in 0..3 {
            insert(&tx, &mail(a, third)).unwrap();
        }
        let kept = list(&tx, a).unwrap();
        assert_eq!(
            kept.len(),
            2,
            "{:?}",
            kept.iter().map(|m| m.size).collect::<Vec<_>>()
        );
        assert_eq!(kept[0].relay, RelayOutcome::Off, "no relay for the tier");
        assert_eq!(clear(&tx, a).unwrap(), 2);
    }
}
