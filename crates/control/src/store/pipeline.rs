//! Queries for declared pipelines and scheduled cuts. Mutations run inside `Store::mutate`, so
//! each lands with its audit entry.
use rusqlite::{Connection, OptionalExtension, params};
use turnout_model::{AppName, EnvName, PipelineSpec, Role};

use super::{Tx, now, parse_name, parse_text};
use crate::access::Principal;
use crate::error::ControlError;

/// The app's declared pipeline, if it has one.
pub fn pipeline(c: &Connection, app_id: i64) -> Result<Option<PipelineSpec>, ControlError> {
    let spec: Option<String> = c
        .query_row(
            "SELECT spec FROM pipelines WHERE app_id = ?1",
            [app_id],
            |r| r.get(0),
        )
        .optional()?;
    spec.map(|s| {
        serde_json::from_str(&s)
            .map_err(|e| ControlError::internal(format!("stored pipeline of app {app_id}: {e}")))
    })
    .transpose()
}

pub fn set_pipeline(
    c: &Tx<'_>,
    app_id: i64,
    spec: &PipelineSpec,
    by: &str,
) -> Result<(), ControlError> {
    let json = serde_json::to_string(spec)
        .map_err(|e| ControlError::internal(format!("serialise pipeline: {e}")))?;
    c.execute(
        "INSERT INTO pipelines (app_id, spec, updated_by, updated_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (app_id) DO UPDATE SET spec = ?2, updated_by = ?3, updated_at = ?4",
        params![app_id, json, by, now()],
    )?;
    Ok(())
}

/// Forget the app's pipeline; whether it had one.
pub fn delete_pipeline(c: &Tx<'_>, app_id: i64) -> Result<bool, ControlError> {
    Ok(c.execute("DELETE FROM pipelines WHERE app_id = ?1", [app_id])? > 0)
}

#[derive(Debug, Clone)]
pub struct ScheduleRow {
    pub id: i64,
    pub app: AppName,
    pub from: EnvName,
    pub to: EnvName,
    pub cron: String,
    pub tz: String,
    pub user_id: i64,
    pub created_by: String,
    pub created_at: i64,
    pub last_tick: i64,
    pub last_result: Option<String>,
    pub last_job: Option<i64>,
    /// The approval request the last cut waits for, if it was parked.
    pub last_approval: Option<i64>,
}

const COLS: &str = "s.id, a.name, s.from_env, s.to_env, s.cron, s.tz, s.user_id, \
     s.created_by, s.created_at, s.last_tick, s.last_result, s.last_job_id, s.last_approval_id";

fn schedule_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ScheduleRow> {
    Ok(ScheduleRow {
        id: r.get(0)?,
        app: parse_name(r.get(1)?)?,
        from: parse_name(r.get(2)?)?,
        to: parse_name(r.get(3)?)?,
        cron: r.get(4)?,
        tz: r.get(5)?,
        user_id: r.get(6)?,
        created_by: r.get(7)?,
        created_at: r.get(8)?,
        last_tick: r.get(9)?,
        last_result: r.get(10)?,
        last_job: r.get(11)?,
        last_approval: r.get(12)?,
    })
}

/// Every schedule (of one app when given), oldest first.
pub fn schedules(c: &Connection, app_id: Option<i64>) -> Result<Vec<ScheduleRow>, ControlError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {COLS} FROM pipeline_schedules s JOIN apps a ON a.id = s.app_id \
         WHERE ?1 IS NULL OR s.app_id = ?1 ORDER BY s.id"
    ))?;
    let rows = stmt
        .query_map([app_id], schedule_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub fn schedule(c: &Connection, app_id: i64, id: i64) -> Result<ScheduleRow, ControlError> {
    c.query_row(
        &format!(
            "SELECT {COLS} FROM pipeline_schedules s JOIN apps a ON a.id = s.app_id \
             WHERE s.app_id = ?1 AND s.id = ?2"
        ),
        [app_id, id],
        schedule_row,
    )
    .optional()?
    .ok_or_else(|| {
        ControlError::NotFound(format!(
            "no schedule {id} on this app; `turnout pipeline schedule list APP` shows them"
        ))
    })
}

pub struct NewSchedule<'a> {
    pub app_id: i64,
    pub from: &'a EnvName,
    pub to: &'a EnvName,
    pub cron: &'a str,
    pub tz: &'a str,
    pub user_id: i64,
    pub created_by: &'a str,
}

/// Record a schedule whose ticks count from now; refused past `max` schedules on the app.
pub fn insert_schedule(c: &Tx<'_>, s: &NewSchedule<'_>, max: usize) -> Result<i64, ControlError> {
    let count: i64 = c.query_row(
        "SELECT COUNT(*) FROM pipeline_schedules WHERE app_id = ?1",
        [s.app_id],
        |r| r.get(0),
    )?;
    if usize::try_from(count).unwrap_or(usize::MAX) >= max {
        return Err(ControlError::Conflict(format!(
            "the app already has {count} schedules, the most allowed; remove one first (`turnout pipeline schedule remove`)"
        )));
    }
    let at = now();
    c.execute(
        "INSERT INTO pipeline_schedules (app_id, from_env, to_env, cron, tz, user_id, created_by, \
         created_at, last_tick) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        params![
            s.app_id,
            s.from.as_str(),
            s.to.as_str(),
            s.cron,
            s.tz,
            s.user_id,
            s.created_by,
            at
        ],
    )?;
    Ok(c.last_insert_rowid())
}

pub fn delete_schedule(c: &Tx<'_>, id: i64) -> Result<(), ControlError> {
    c.execute("DELETE FROM pipeline_schedules WHERE id = ?1", [id])?;
    Ok(())
}

/// Record that tick `tick` of schedule `id` was handled, and how.
pub fn record_tick(
    c: &Tx<'_>,
    id: i64,
    tick: i64,
    result: &str,
    job: Option<i64>,
    approval: Option<i64>,
) -> Result<(), ControlError> {
    c.execute(
        "UPDATE pipeline_schedules SET last_tick = ?2, last_result = ?3, last_job_id = ?4, \
         last_approval_id = ?5 WHERE id = ?1",
        params![id, tick, result, job, approval],
    )?;
    Ok(())
}

/// The user `user_id` with the roles they hold now.
pub fn principal(c: &Connection, user_id: i64) -> Result<Option<Principal>, ControlError> {
    let Some(name) = c
        .query_row("SELECT name FROM users WHERE id = ?1", [user_id], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
    else {
        return Ok(None);
    };
    let mut stmt = c.prepare("SELECT app_id, role FROM grants WHERE user_id = ?1")?;
    let grants = stmt
        .query_map([user_id], |r| {
            Ok((
                r.get::<_, Option<i64>>(0)?,
                parse_text::<Role>(1, r.get(1)?)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(Principal {
        user_id,
        name,
        grants,
    }))
}
