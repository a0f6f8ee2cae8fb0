//! Queries of the jobs table, plain functions over a connection like `store::q`.
use rusqlite::{Connection, OptionalExtension, params};
use turnout_model::{AppName, EnvName, JobKind, JobState, JobStep};

use super::{RELEASE_COLS, ReleaseRow, Tx, now, parse_name, parse_text, release_row};
use crate::error::ControlError;

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: i64,
    pub kind: JobKind,
    pub app: AppName,
    pub env: EnvName,
    pub actor: String,
    pub state: JobState,
    pub request: Option<String>,
    pub release_id: Option<i64>,
    pub steps: Vec<JobStep>,
    pub error: Option<String>,
    pub log_tail: Vec<String>,
    pub url: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// How a job ended, as stored.
pub struct JobEnd<'a> {
    pub state: JobState,
    pub release_id: Option<i64>,
    pub steps: &'a [JobStep],
    pub error: Option<&'a str>,
    pub log_tail: &'a [String],
    pub url: Option<&'a str>,
    pub started_at: Option<i64>,
}

const JOB_COLS: &str = "id, kind, app, env, actor, state, request, release_id, steps, error, \
     log_tail, url, created_at, started_at, finished_at";

fn json_col<T: serde::de::DeserializeOwned>(col: usize, text: String) -> rusqlite::Result<T> {
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        kind: parse_text(1, r.get(1)?)?,
        app: parse_name(r.get(2)?)?,
        env: parse_name(r.get(3)?)?,
        actor: r.get(4)?,
        state: parse_text(5, r.get(5)?)?,
        request: r.get(6)?,
        release_id: r.get(7)?,
        steps: json_col(8, r.get(8)?)?,
        error: r.get(9)?,
        log_tail: json_col(10, r.get(10)?)?,
        url: r.get(11)?,
        created_at: r.get(12)?,
        started_at: r.get(13)?,
        finished_at: r.get(14)?,
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, ControlError> {
    serde_json::to_string(v).map_err(|e| ControlError::internal(format!("serialise job: {e}")))
}

pub fn insert_job(
    c: &Tx<'_>,
    kind: JobKind,
    app: &AppName,
    env: &EnvName,
    actor: &str,
    request: Option<&str>,
    steps: &[JobStep],
) -> Result<JobRow, ControlError> {
    c.execute(
        "INSERT INTO jobs (kind, app, env, actor, state, request, steps, created_at) \
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7)",
        params![
            kind.as_str(),
            app.as_str(),
            env.as_str(),
            actor,
            request,
            to_json(&steps)?,
            now()
        ],
    )?;
    get_job(c, c.last_insert_rowid())
}

pub fn get_job(c: &Connection, id: i64) -> Result<JobRow, ControlError> {
    c.query_row(
        &format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"),
        [id],
        job_row,
    )
    .optional()?
    .ok_or_else(|| ControlError::NotFound(format!("no job {id}; see `turnout jobs --all`")))
}

/// Jobs of one app (and environment), newest first: every queued or running one and the
/// `recent` newest others, or all of them.
pub fn list_jobs(
    c: &Connection,
    app: Option<&AppName>,
    env: Option<&EnvName>,
    recent: Option<u32>,
) -> Result<Vec<JobRow>, ControlError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {JOB_COLS} FROM jobs WHERE (?1 IS NULL OR app = ?1) AND (?2 IS NULL OR env = ?2) \
         AND (?3 IS NULL OR state IN ('queued', 'running') OR id IN ( \
             SELECT id FROM jobs WHERE (?1 IS NULL OR app = ?1) AND (?2 IS NULL OR env = ?2) \
             ORDER BY id DESC LIMIT ?3)) \
         ORDER BY id DESC"
    ))?;
    let rows = stmt
        .query_map(
            params![app.map(AppName::as_str), env.map(EnvName::as_str), recent],
            job_row,
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub fn end_job(c: &Tx<'_>, id: i64, end: &JobEnd<'_>) -> Result<(), ControlError> {
    c.execute(
        "UPDATE jobs SET state = ?2, release_id = ?3, steps = ?4, error = ?5, log_tail = ?6, \
         url = ?7, started_at = COALESCE(started_at, ?8), finished_at = ?9 WHERE id = ?1",
        params![
            id,
            end.state.as_str(),
            end.release_id,
            to_json(&end.steps)?,
            end.error,
            to_json(&end.log_tail)?,
            end.url,
            end.started_at,
            now()
        ],
    )?;
    Ok(())
}

/// Jobs a killed daemon left queued or running.
pub fn unfinished_jobs(c: &Connection) -> Result<Vec<JobRow>, ControlError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {JOB_COLS} FROM jobs WHERE state IN ('queued', 'running') ORDER BY id"
    ))?;
    let rows = stmt.query_map([], job_row)?.collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Releases a killed daemon left half-built, with the directory each was being written to.
pub fn building_releases(c: &Connection) -> Result<Vec<ReleaseRow>, ControlError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {RELEASE_COLS} FROM releases WHERE status = 'building' ORDER BY id"
    ))?;
    let rows = stmt.query_map([], release_row)?.collect::<Result<_, _>>()?;
    Ok(rows)
}
