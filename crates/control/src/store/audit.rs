//! The audit log: append-only (SQLite triggers refuse UPDATE and DELETE) and tamper-evident
//! (each entry's hash covers its fields and the previous entry's hash, so changing, removing or
//! inserting a row breaks the chain at that row).
use rusqlite::{Connection, OptionalExtension, params};

use turnout_model::AuditAction;

use super::Tx;
use crate::error::ControlError;

/// The hash the first entry chains to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What one mutating action did: who, what, on which app/environment/domain, from → to.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub actor: String,
    pub action: AuditAction,
    pub app: Option<String>,
    pub env: Option<String>,
    pub domain: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl AuditEntry {
    pub fn new(actor: &str, action: AuditAction) -> AuditEntry {
        AuditEntry {
            actor: actor.to_owned(),
            action,
            app: None,
            env: None,
            domain: None,
            from: None,
            to: None,
        }
    }
    pub fn app(mut self, app: impl ToString) -> Self {
        self.app = Some(app.to_string());
        self
    }
    pub fn env(mut self, env: impl ToString) -> Self {
        self.env = Some(env.to_string());
        self
    }
    pub fn domain(mut self, domain: impl ToString) -> Self {
        self.domain = Some(domain.to_string());
        self
    }
    pub fn change(mut self, from: Option<String>, to: Option<String>) -> Self {
        self.from = from;
        self.to = to;
        self
    }
}

/// A stored entry.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub entry: AuditEntry,
    pub result: String,
    pub prev_hash: String,
    pub hash: String,
}

fn entry_hash(prev: &str, at: i64, e: &AuditEntry, result: &str) -> String {
    // A JSON array is an unambiguous encoding of the fields (no separator can be forged).
    let canonical = serde_json::json!([
        prev, at, e.actor, e.action, e.app, e.env, e.domain, e.from, e.to, result
    ]);
    blake3::hash(canonical.to_string().as_bytes())
        .to_hex()
        .to_string()
}

/// Append an entry, chained to the newest one. Call it inside the transaction of the change it
/// records.
pub fn append(c: &Tx<'_>, e: &AuditEntry, result: &str) -> Result<(), ControlError> {
    let prev: String = c
        .prepare_cached("SELECT hash FROM audit ORDER BY id DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or_else(|| GENESIS.to_owned());
    let at = super::now();
    let hash = entry_hash(&prev, at, e, result);
    c.prepare_cached(
        "INSERT INTO audit (at, actor, action, app, env, domain, from_value, to_value, result, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![at, e.actor, e.action.as_str(), e.app, e.env, e.domain, e.from, e.to, result, prev, hash])?;
    Ok(())
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        id: r.get(0)?,
        at: r.get(1)?,
        entry: AuditEntry {
            actor: r.get(2)?,
            action: super::parse_text(3, r.get(3)?)?,
            app: r.get(4)?,
            env: r.get(5)?,
            domain: r.get(6)?,
            from: r.get(7)?,
            to: r.get(8)?,
        },
        result: r.get(9)?,
        prev_hash: r.get(10)?,
        hash: r.get(11)?,
    })
}

const COLS: &str =
    "id, at, actor, action, app, env, domain, from_value, to_value, result, prev_hash, hash";

/// Entries, newest first, filtered by app, environment and time.
pub fn list(
    c: &Connection,
    app: Option<&str>,
    env: Option<&str>,
    since: Option<i64>,
    limit: usize,
) -> Result<Vec<AuditRow>, ControlError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {COLS} FROM audit WHERE (?1 IS NULL OR app = ?1) AND (?2 IS NULL OR env = ?2) \
         AND (?3 IS NULL OR at >= ?3) ORDER BY id DESC LIMIT ?4"
    ))?;
    let rows = stmt
        .query_map(params![app, env, since, limit as i64], row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Walk the whole chain. `Ok(n)` with the number of entries checked, or the first entry where
/// it breaks and why.
pub fn verify(c: &Connection) -> Result<Result<usize, (i64, String)>, ControlError> {
    let mut stmt = c.prepare(&format!("SELECT {COLS} FROM audit ORDER BY id"))?;
    let mut prev = GENESIS.to_owned();
    let mut n = 0;
    for r in stmt.query_map([], row)? {
        let r = r?;
        if r.prev_hash != prev {
            return Ok(Err((
                r.id,
                "it does not chain to the entry before it (an entry was removed or inserted)"
                    .into(),
            )));
        }
        if entry_hash(&r.prev_hash, r.at, &r.entry, &r.result) != r.hash {
            return Ok(Err((
                r.id,
                "its content does not match its hash (it was altered)".into(),
            )));
        }
        prev = r.hash;
        n += 1;
    }
    Ok(Ok(n))
}
