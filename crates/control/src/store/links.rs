//! Queries for links between apps (`links`) and the ports each linking environment reaches a
//! link's counterpart at (`link_ports`); both cascade with their apps and environments.
use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};
use turnout_model::{AppName, EnvName};

use super::{Tx, now, parse_name};
use crate::error::ControlError;

#[derive(Debug, Clone)]
pub struct LinkRow {
    pub id: i64,
    pub app_id: i64,
    pub app: AppName,
    pub other_id: i64,
    pub other: AppName,
    /// The variable it sets (`NAME_URL`).
    pub var: String,
    pub default_env: Option<EnvName>,
    pub created_by: String,
    pub created_at: i64,
}

const LINK_COLS: &str = "l.id, l.app_id, a.name, l.other_id, o.name, l.var, l.default_env, \
                         l.created_by, l.created_at";
const LINK_FROM: &str =
    "FROM links l JOIN apps a ON a.id = l.app_id JOIN apps o ON o.id = l.other_id";

fn link_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LinkRow> {
    Ok(LinkRow {
        id: r.get(0)?,
        app_id: r.get(1)?,
        app: parse_name(r.get(2)?)?,
        other_id: r.get(3)?,
        other: parse_name(r.get(4)?)?,
        var: r.get(5)?,
        default_env: r.get::<_, Option<String>>(6)?.map(parse_name).transpose()?,
        created_by: r.get(7)?,
        created_at: r.get(8)?,
    })
}

/// Every link (`app_id` `None`), or one app's, by app and variable.
pub fn links(c: &Connection, app_id: Option<i64>) -> Result<Vec<LinkRow>, ControlError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {LINK_COLS} {LINK_FROM} WHERE ?1 IS NULL OR l.app_id = ?1 ORDER BY a.name, l.var"
    ))?;
    let rows = stmt
        .query_map([app_id], link_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Record a link; a second link of the app with the same variable is refused.
pub fn insert_link(
    c: &Tx<'_>,
    app_id: i64,
    other_id: i64,
    var: &str,
    default_env: Option<&EnvName>,
    by: &str,
) -> Result<(), ControlError> {
    let taken: Option<String> = c
        .query_row(
            "SELECT o.name FROM links l JOIN apps o ON o.id = l.other_id \
             WHERE l.app_id = ?1 AND l.var = ?2",
            params![app_id, var],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(other) = taken {
        return Err(ControlError::Conflict(format!(
            "{var} is already the link to {other}; remove it first (`turnout link remove`) or name this one otherwise with --as NAME"
        )));
    }
    c.execute(
        "INSERT INTO links (app_id, other_id, var, default_env, created_by, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            app_id,
            other_id,
            var,
            default_env.map(EnvName::as_str),
            by,
            now()
        ],
    )?;
    Ok(())
}

/// Remove the app's link with this variable; the row removed, if any.
pub fn remove_link(c: &Tx<'_>, app_id: i64, var: &str) -> Result<Option<LinkRow>, ControlError> {
    let row = c
        .query_row(
            &format!("SELECT {LINK_COLS} {LINK_FROM} WHERE l.app_id = ?1 AND l.var = ?2"),
            params![app_id, var],
            link_row,
        )
        .optional()?;
    if let Some(row) = &row {
        c.execute("DELETE FROM links WHERE id = ?1", [row.id])?;
    }
    Ok(row)
}

/// The ports links are reached at, by link and linking environment.
pub fn link_ports(c: &Connection) -> Result<HashMap<(i64, i64), u16>, ControlError> {
    let mut stmt = c.prepare("SELECT link_id, env_id, port FROM link_ports")?;
    let rows = stmt
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Give link `link_id` of environment `env_id` `port`, unless it has one already or the port
/// is taken (then `false`).
pub fn set_link_port(
    c: &Tx<'_>,
    link_id: i64,
    env_id: i64,
    port: u16,
) -> Result<bool, ControlError> {
    let added = c.execute(
        "INSERT OR IGNORE INTO link_ports (link_id, env_id, port) VALUES (?1, ?2, ?3)",
        params![link_id, env_id, port],
    )?;
    Ok(added > 0)
}
