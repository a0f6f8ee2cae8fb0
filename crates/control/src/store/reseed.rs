//! Queries of scheduled re-seeds (`data_reseeds`). Mutations run inside `Store::mutate`.
use rusqlite::{Connection, OptionalExtension, params};
use turnout_model::{AppName, EnvName};

use super::{Tx, parse_name};
use crate::error::ControlError;

/// An environment with a live release, and its stored re-seed state.
#[derive(Debug, Clone)]
pub struct ReseedCandidate {
    pub env_id: i64,
    pub app: AppName,
    pub env: EnvName,
    /// The live release's resolved configuration (JSON).
    pub config: String,
    pub stopped: bool,
    pub sleeping: bool,
    /// (cron, tz, last tick, last job) as last recorded.
    pub state: Option<(String, String, i64, Option<i64>)>,
}

/// Every environment with a live release, with its re-seed state.
pub fn candidates(c: &Connection) -> Result<Vec<ReseedCandidate>, ControlError> {
    let mut stmt = c.prepare(
        "SELECT e.id, a.name, e.name, r.config, e.stopped, e.sleeping, \
                s.cron, s.tz, s.last_tick, s.last_job \
         FROM environments e JOIN apps a ON a.id = e.app_id \
         JOIN releases r ON r.id = e.current_release_id \
         LEFT JOIN data_reseeds s ON s.env_id = e.id ORDER BY e.id",
    )?;
    let rows = stmt.query_map([], |r| {
        let cron: Option<String> = r.get(6)?;
        Ok(ReseedCandidate {
            env_id: r.get(0)?,
            app: parse_name(r.get(1)?)?,
            env: parse_name(r.get(2)?)?,
            config: r.get(3)?,
            stopped: r.get(4)?,
            sleeping: r.get(5)?,
            state: match cron {
                Some(cron) => Some((cron, r.get(7)?, r.get(8)?, r.get(9)?)),
                None => None,
            },
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Start (or restart, after the schedule changed) counting ticks from `now`.
pub fn begin(c: &Tx<'_>, env_id: i64, cron: &str, tz: &str, now: i64) -> Result<(), ControlError> {
    c.execute(
        "INSERT INTO data_reseeds (env_id, cron, tz, last_tick) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (env_id) DO UPDATE SET cron = ?2, tz = ?3, last_tick = ?4, \
         last_result = NULL, last_job = NULL",
        params![env_id, cron, tz, now],
    )?;
    Ok(())
}

/// Record a handled tick: what happened and the job it started, if any.
pub fn record_tick(
    c: &Tx<'_>,
    env_id: i64,
    tick: i64,
    result: &str,
    job: Option<i64>,
) -> Result<(), ControlError> {
    c.execute(
        "UPDATE data_reseeds SET last_tick = ?2, last_result = ?3, last_job = ?4 WHERE env_id = ?1",
        params![env_id, tick, result, job],
    )?;
    Ok(())
}

/// Forget the schedule of an environment whose live release no longer declares one.
pub fn forget(c: &Tx<'_>, env_id: i64) -> Result<(), ControlError> {
    c.execute("DELETE FROM data_reseeds WHERE env_id = ?1", [env_id])?;
    Ok(())
}

/// The last result and tick of an environment's schedule (for `data show`).
pub fn last(c: &Connection, env_id: i64) -> Result<Option<(i64, Option<String>)>, ControlError> {
    Ok(c.query_row(
        "SELECT last_tick, last_result FROM data_reseeds WHERE env_id = ?1",
        [env_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?)
}
