//! Queries, each a plain function over a connection so callers compose them in one
//! transaction: reads over any connection, writes only over a `Tx` of `Store::mutate`.
use rusqlite::{Connection, OptionalExtension, params};
use turnout_model::{AppName, AuditAction, DomainName, EnvName, ReleaseStatus, ResourcePlan, Tier};

use super::*;
use crate::error::ControlError;

pub fn insert_app(
    c: &Tx<'_>,
    name: &AppName,
    repo: &str,
    token_env: Option<&str>,
) -> Result<AppRow, ControlError> {
    let exists: bool = c.query_row(
        "SELECT EXISTS(SELECT 1 FROM apps WHERE name = ?1)",
        [name.as_str()],
        |r| r.get(0),
    )?;
    if exists {
        return Err(ControlError::Conflict(format!(
            "app '{name}' already exists; pick another name or delete it with `turnout app delete {name}`"
        )));
    }
    c.execute(
        "INSERT INTO apps (name, repo, token_env, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![name.as_str(), repo, token_env, now()],
    )?;
    get_app(c, name)
}

pub fn list_apps(c: &Connection) -> Result<Vec<AppRow>, ControlError> {
    let mut stmt = c.prepare(&format!("SELECT {APP_COLS} FROM apps a ORDER BY a.name"))?;
    let rows = stmt.query_map([], app_row)?.collect::<Result<_, _>>()?;
    Ok(rows)
}

pub fn get_app(c: &Connection, name: &AppName) -> Result<AppRow, ControlError> {
    c.query_row(
        &format!("SELECT {APP_COLS} FROM apps a WHERE a.name = ?1"),
        [name.as_str()],
        app_row,
    )
    .optional()?
    .ok_or_else(|| {
        ControlError::NotFound(format!(
            "no app named '{name}'; see `turnout app list` or create it with `turnout app create {name} --repo PATH_OR_URL`"
        ))
    })
}

pub fn delete_app(c: &Tx<'_>, name: &AppName) -> Result<(), ControlError> {
    let app = get_app(c, name)?;
    c.execute("DELETE FROM apps WHERE id = ?1", [app.id])?;
    Ok(())
}

pub fn insert_env(
    c: &Tx<'_>,
    app: &AppName,
    name: &EnvName,
    branch: &str,
    tier: Tier,
    deploy_on: turnout_model::DeployOn,
) -> Result<EnvRow, ControlError> {
    let app_row = get_app(c, app)?;
    let exists: bool = c.query_row(
        "SELECT EXISTS(SELECT 1 FROM environments WHERE app_id = ?1 AND name = ?2)",
        params![app_row.id, name.as_str()],
        |r| r.get(0),
    )?;
    if exists {
        return Err(ControlError::Conflict(format!(
            "environment '{app}/{name}' already exists; deploy it with `turnout deploy {app}/{name}`"
        )));
    }
    let uid = free_uid(c)?;
    c.execute(
        "INSERT INTO environments (app_id, name, branch, tier, created_at, uid, deploy_on) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![app_row.id, name.as_str(), branch, tier.as_str(), now(), uid, deploy_on.as_str()],
    )?;
    get_env(c, app, name)
}

/// How many uids a home's block holds: one per environment that exists at once.
pub const UID_COUNT: u32 = 1_000;

/// The lowest uid of the home's block no environment has: a deleted environment's uid is reused
/// by the next one created (its files went with it).
fn free_uid(c: &Connection) -> Result<u32, ControlError> {
    let base: u32 = c.query_row("SELECT base FROM uid_block", [], |r| r.get(0))?;
    let mut stmt = c.prepare("SELECT uid FROM environments WHERE uid >= ?1 ORDER BY uid")?;
    let taken = stmt.query_map([base], |r| r.get::<_, u32>(0))?;
    let mut next = base;
    for uid in taken {
        let uid = uid?;
        if uid > next {
            break;
        }
        next = uid + 1;
    }
    if next >= base + UID_COUNT {
        return Err(ControlError::Conflict(format!(
            "no free user id left for a new environment ({UID_COUNT} exist); delete unused environments"
        )));
    }
    Ok(next)
}

pub fn list_envs(c: &Connection, app: Option<&AppName>) -> Result<Vec<EnvRow>, ControlError> {
    if let Some(app) = app {
        get_app(c, app)?;
    }
    let mut stmt = c.prepare(&format!(
        "SELECT {ENV_COLS} FROM environments e JOIN apps a ON a.id = e.app_id \
         WHERE ?1 IS NULL OR a.name = ?1 ORDER BY a.name, e.name"
    ))?;
    let rows = stmt
        .query_map([app.map(AppName::as_str)], env_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The environments neither stopped nor asleep: the sleeper's candidates, read every tick, so
/// not the hundreds that sleep.
pub fn list_awake_envs(c: &Connection) -> Result<Vec<EnvRow>, ControlError> {
    let rows = c
        .prepare_cached(&format!(
            "SELECT {ENV_COLS} FROM environments e JOIN apps a ON a.id = e.app_id \
             WHERE e.stopped = 0 AND e.sleeping = 0"
        ))?
        .query_map([], env_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub fn get_env(c: &Connection, app: &AppName, name: &EnvName) -> Result<EnvRow, ControlError> {
    let found = c
        .prepare_cached(&format!(
            "SELECT {ENV_COLS} FROM environments e JOIN apps a ON a.id = e.app_id \
             WHERE a.name = ?1 AND e.name = ?2"
        ))?
        .query_row(params![app.as_str(), name.as_str()], env_row)
        .optional()?;
    if let Some(env) = found {
        return Ok(env);
    }
    // Which of the two is missing: the app (its own error), or the environment.
    get_app(c, app)?;
    Err(ControlError::NotFound(format!(
        "app '{app}' has no environment '{name}'; see `turnout env list {app}`"
    )))
}

pub fn delete_env(c: &Tx<'_>, env_id: i64) -> Result<(), ControlError> {
    c.execute("DELETE FROM environments WHERE id = ?1", [env_id])?;
    Ok(())
}

pub fn insert_release(c: &Tx<'_>, r: &NewRelease<'_>) -> Result<i64, ControlError> {
    c.execute(
        "INSERT INTO releases (env_id, commit_sha, git_ref, dir, config, status, reused_build, created_at, job_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'building', ?6, ?7, ?8)",
        params![r.env_id, r.commit, r.git_ref, r.dir, r.config, r.reused_build, now(), r.job_id],
    )?;
    Ok(c.last_insert_rowid())
}

pub fn fail_release(c: &Tx<'_>, id: i64, error: &str) -> Result<(), ControlError> {
    c.execute(
        "UPDATE releases SET status = 'failed', error = ?2, finished_at = ?3 WHERE id = ?1",
        params![id, error, now()],
    )?;
    Ok(())
}

/// Make `release_id` the environment's live release and mark the one it replaces superseded.
pub fn go_live(c: &Tx<'_>, env_id: i64, release_id: i64) -> Result<(), ControlError> {
    let tx = c;
    tx.execute(
        "UPDATE releases SET status = 'superseded' WHERE env_id = ?1 AND status = 'live'",
        [env_id],
    )?;
    tx.execute(
        "UPDATE releases SET status = 'live', finished_at = ?2 WHERE id = ?1",
        params![release_id, now()],
    )?;
    tx.execute(
        "UPDATE environments SET current_release_id = ?2, stopped = 0, sleeping = 0 WHERE id = ?1",
        params![env_id, release_id],
    )?;
    Ok(())
}

/// Stop an environment on purpose (a sleeping one stops sleeping: it is stopped now), or clear
/// that.
pub fn set_stopped(c: &Tx<'_>, env_id: i64, stopped: bool) -> Result<(), ControlError> {
    c.execute(
        "UPDATE environments SET stopped = ?2, sleeping = sleeping AND NOT ?2 WHERE id = ?1",
        params![env_id, stopped],
    )?;
    Ok(())
}

/// Set after how long idle the environment sleeps; `None`: back to the tier's default.
pub fn set_sleep_after(
    c: &Tx<'_>,
    env_id: i64,
    sleep_after: Option<turnout_model::SleepAfter>,
) -> Result<(), ControlError> {
    c.execute(
        "UPDATE environments SET sleep_after_ms = ?2 WHERE id = ?1",
        params![env_id, sleep_after.map(stored_sleep)],
    )?;
    Ok(())
}

/// Set (or, with `None`, clear) the app's own sleep setting for a tier's environments.
pub fn set_tier_sleep(
    c: &Tx<'_>,
    app_id: i64,
    tier: Tier,
    sleep_after: Option<turnout_model::SleepAfter>,
) -> Result<(), ControlError> {
    match sleep_after {
        Some(s) => c.execute(
            "INSERT INTO app_tier_sleep (app_id, tier, sleep_after_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (app_id, tier) DO UPDATE SET sleep_after_ms = excluded.sleep_after_ms",
            params![app_id, tier.as_str(), stored_sleep(s)],
        )?,
        None => c.execute(
            "DELETE FROM app_tier_sleep WHERE app_id = ?1 AND tier = ?2",
            params![app_id, tier.as_str()],
        )?,
    };
    Ok(())
}

/// A sleep setting as stored: milliseconds, 0 for never.
fn stored_sleep(s: turnout_model::SleepAfter) -> i64 {
    s.duration()
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Put the environment to sleep (when idle), or mark it awake.
pub fn set_sleeping(c: &Tx<'_>, env_id: i64, sleeping: bool) -> Result<(), ControlError> {
    c.execute(
        "UPDATE environments SET sleeping = ?2 WHERE id = ?1",
        params![env_id, sleeping],
    )?;
    Ok(())
}

pub fn set_deploy_on(
    c: &Tx<'_>,
    env_id: i64,
    deploy_on: turnout_model::DeployOn,
) -> Result<(), ControlError> {
    c.execute(
        "UPDATE environments SET deploy_on = ?2 WHERE id = ?1",
        params![env_id, deploy_on.as_str()],
    )?;
    Ok(())
}

/// Set the environment's own resource plan (NULL for an unset field).
pub fn set_plan(c: &Tx<'_>, env_id: i64, plan: &ResourcePlan) -> Result<(), ControlError> {
    // Bounded far below i64::MAX (16 TiB, 4194304), so the conversion fails only on a bug.
    let signed = |v: Option<u64>| {
        v.map(i64::try_from)
            .transpose()
            .map_err(|e| ControlError::internal(format!("plan value out of range: {e}")))
    };
    c.execute(
        "UPDATE environments SET plan_memory = ?2, plan_cpu = ?3, plan_pids = ?4 WHERE id = ?1",
        params![env_id, signed(plan.memory)?, plan.cpu, signed(plan.pids)?],
    )?;
    Ok(())
}

/// The release a rollback returns to: `to` if given, else the newest release older than
/// the live one that was live once. Either way it must be one of the environment's
/// releases that went live (superseded now).
pub fn rollback_release(
    c: &Connection,
    env_id: i64,
    current: Option<i64>,
    to: Option<i64>,
) -> Result<ReleaseRow, ControlError> {
    let found: Option<ReleaseRow> = match to {
        Some(id) => c
            .query_row(
                &format!("SELECT {RELEASE_COLS} FROM releases WHERE id = ?1 AND env_id = ?2"),
                params![id, env_id],
                release_row,
            )
            .optional()?,
        None => c
            .query_row(
                &format!(
                    "SELECT {RELEASE_COLS} FROM releases WHERE env_id = ?1 AND status = 'superseded' \
                     AND id < ?2 ORDER BY id DESC LIMIT 1"
                ),
                params![env_id, current.unwrap_or(i64::MAX)],
                release_row,
            )
            .optional()?,
    };
    match (found, to) {
        (Some(r), _) if r.status == ReleaseStatus::Superseded => Ok(r),
        (Some(r), Some(id)) if r.status == ReleaseStatus::Live => Err(ControlError::Conflict(
            format!("release {id} is already live; nothing to roll back"),
        )),
        (Some(r), _) => Err(ControlError::Conflict(format!(
            "release {} never went live ({}); roll back only to a release that served (see `turnout release list`)",
            r.id, r.status
        ))),
        (None, Some(id)) => Err(ControlError::NotFound(format!(
            "this environment has no release {id}; see `turnout release list`"
        ))),
        (None, None) => Err(ControlError::Conflict(
            "nothing to roll back to: no earlier release of this environment went live (see `turnout release list`)".into(),
        )),
    }
}

/// A deploy that a killed daemon left half-done did not happen: mark it failed.
/// Mark every release still `building` failed (its deploy died with the daemon): one audit
/// entry per release, naming its app, environment, release and commit.
pub fn fail_interrupted_releases(c: &Tx<'_>) -> Result<Vec<AuditEntry>, ControlError> {
    let mut stmt = c.prepare(
        "SELECT r.id, r.commit_sha, a.name, e.name FROM releases r \
         JOIN environments e ON e.id = r.env_id JOIN apps a ON a.id = e.app_id \
         WHERE r.status = 'building' ORDER BY r.id",
    )?;
    let building = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut entries = Vec::with_capacity(building.len());
    for (id, commit, app, env) in building {
        c.execute(
            "UPDATE releases SET status = 'failed', error = 'interrupted: the daemon stopped during this deploy', finished_at = ?1 \
             WHERE id = ?2",
            params![now(), id],
        )?;
        let short = commit.get(..12).unwrap_or(&commit);
        entries.push(
            AuditEntry::new("turnout", AuditAction::DeployInterrupted)
                .app(app)
                .env(env)
                .change(
                    Some(format!("release {id} ({short}) building")),
                    Some("failed".into()),
                ),
        );
    }
    Ok(entries)
}

pub fn get_release(c: &Connection, id: i64) -> Result<ReleaseRow, ControlError> {
    Ok(c.query_row(
        &format!("SELECT {RELEASE_COLS} FROM releases WHERE id = ?1"),
        [id],
        release_row,
    )?)
}

pub fn list_releases(c: &Connection, env_id: i64) -> Result<Vec<ReleaseRow>, ControlError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {RELEASE_COLS} FROM releases WHERE env_id = ?1 ORDER BY id DESC"
    ))?;
    let rows = stmt
        .query_map([env_id], release_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The live release of each environment (of one app, given), in one statement (`env list`,
/// the dashboard's pipeline).
pub fn live_releases(
    c: &Connection,
    app: Option<&AppName>,
) -> Result<Vec<ReleaseRow>, ControlError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {RELEASE_COLS} FROM releases WHERE id IN \
         (SELECT e.current_release_id FROM environments e JOIN apps a ON a.id = e.app_id \
          WHERE ?1 IS NULL OR a.name = ?1)"
    ))?;
    let rows = stmt
        .query_map([app.map(AppName::as_str)], release_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

// ---- domains ----

pub fn list_domains(c: &Connection) -> Result<Vec<DomainRow>, ControlError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {DOMAIN_COLS} FROM {DOMAIN_FROM} ORDER BY d.name"
    ))?;
    let rows = stmt.query_map([], domain_row)?.collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Some of the domains of the apps `apps` (every app: `None`) whose name, app or environment
/// contains `part` (lower case), by name, as a page lists them: the first `shown` with their
/// certificate rows, how many more match, and how many of those apps' domains have a
/// certificate or one being ordered. The filter and the counts run in SQLite, so a page of
/// 200 out of 10,000 domains reads 200 rows.
pub fn find_domains(
    c: &Connection,
    apps: Option<&[i64]>,
    part: &str,
    shown: usize,
) -> Result<FoundDomainRows, ControlError> {
    let apps = apps
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| ControlError::internal(e.to_string()))?;
    let visible = "(?1 IS NULL OR a.id IN (SELECT value FROM json_each(?1)))";
    let matching = "(instr(d.name, ?2) > 0 OR instr(a.name, ?2) > 0 OR instr(e.name, ?2) > 0)";
    let limit = i64::try_from(shown).unwrap_or(i64::MAX);
    let rows: Vec<DomainRow> = c
        .prepare_cached(&format!(
            "SELECT {DOMAIN_COLS} FROM {DOMAIN_FROM} WHERE {visible} AND {matching} \
             ORDER BY d.name LIMIT ?3"
        ))?
        .query_map(params![apps, part, limit], domain_row)?
        .collect::<Result<_, _>>()?;
    let matched: i64 = c
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM {DOMAIN_FROM} WHERE {visible} AND {matching}"
        ))?
        .query_row(params![apps, part], |r| r.get(0))?;
    let certificates: i64 = c
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM {DOMAIN_FROM} WHERE {visible} AND (d.tls_mode = 'acme' \
             OR EXISTS (SELECT 1 FROM certificates c WHERE c.domain_id = d.id))"
        ))?
        .query_row(params![apps], |r| r.get(0))?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let certs = super::tls::certs_of(c, &ids)?;
    let more = usize::try_from(matched)
        .unwrap_or(0)
        .saturating_sub(rows.len());
    Ok(FoundDomainRows {
        rows,
        certs,
        more,
        certificates: usize::try_from(certificates).unwrap_or(0),
    })
}

/// What `find_domains` found.
pub struct FoundDomainRows {
    pub rows: Vec<DomainRow>,
    /// The certificate rows of those of `rows` that have one.
    pub certs: Vec<super::tls::CertRow>,
    pub more: usize,
    pub certificates: usize,
}

pub fn get_domain(c: &Connection, name: &DomainName) -> Result<DomainRow, ControlError> {
    c.prepare_cached(&format!(
        "SELECT {DOMAIN_COLS} FROM {DOMAIN_FROM} WHERE d.name = ?1"
    ))?
    .query_row([name.as_str()], domain_row)
    .optional()?
    .ok_or_else(|| {
        ControlError::NotFound(format!(
            "no domain '{name}'; see `turnout domain list` or add it with `turnout domain add {name} APP/ENV`"
        ))
    })
}

/// Domains bound to an environment (which therefore cannot be deleted).
pub fn domains_of_env(c: &Connection, env_id: i64) -> Result<Vec<String>, ControlError> {
    let mut stmt = c.prepare("SELECT name FROM domains WHERE env_id = ?1 ORDER BY name")?;
    let rows = stmt
        .query_map([env_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn history(
    c: &Tx<'_>,
    domain_id: i64,
    action: &str,
    from: Option<&str>,
    to: Option<&str>,
    actor: &str,
) -> Result<(), ControlError> {
    c.prepare_cached(
        "INSERT INTO domain_history (domain_id, action, from_env, to_env, actor, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![domain_id, action, from, to, actor, now()])?;
    Ok(())
}

pub fn insert_domain(
    tx: &Tx<'_>,
    name: &DomainName,
    env: &EnvRow,
    actor: &str,
) -> Result<DomainRow, ControlError> {
    if let Ok(existing) = get_domain(tx, name) {
        return Err(ControlError::Conflict(format!(
            "domain '{name}' is already bound to {}/{}; move it with `turnout domain switch {name} {}/ENV`",
            existing.app, existing.env, existing.app
        )));
    }
    tx.execute(
        "INSERT INTO domains (name, env_id, created_at) VALUES (?1, ?2, ?3)",
        params![name.as_str(), env.id, now()],
    )?;
    let id = tx.last_insert_rowid();
    history(tx, id, "add", None, Some(env.name.as_str()), actor)?;
    get_domain(tx, name)
}

pub fn delete_domain(c: &Tx<'_>, name: &DomainName) -> Result<(), ControlError> {
    let d = get_domain(c, name)?;
    c.execute("DELETE FROM domains WHERE id = ?1", [d.id])?;
    Ok(())
}

/// Point the domain at `to` and record it in its history: a switch, or with `undo` a
/// rollback that marks that earlier entry undone.
pub fn move_domain(
    tx: &Tx<'_>,
    domain: &DomainRow,
    to: &EnvRow,
    actor: &str,
    undo: Option<i64>,
) -> Result<(), ControlError> {
    if let Some(undo) = undo {
        tx.execute("UPDATE domain_history SET undone = 1 WHERE id = ?1", [undo])?;
    }
    tx.prepare_cached("UPDATE domains SET env_id = ?2 WHERE id = ?1")?
        .execute(params![domain.id, to.id])?;
    history(
        tx,
        domain.id,
        if undo.is_some() { "rollback" } else { "switch" },
        Some(domain.env.as_str()),
        Some(to.name.as_str()),
        actor,
    )
}

/// The environment a rollback returns to: the `from` of the newest add or switch not yet
/// undone, with that entry's id. None when the domain has never moved (or every move has
/// been rolled back).
pub fn rollback_target(
    c: &Connection,
    domain_id: i64,
) -> Result<Option<(i64, String)>, ControlError> {
    let row: Option<(i64, Option<String>)> = c
        .query_row(
            "SELECT id, from_env FROM domain_history WHERE domain_id = ?1 AND action IN ('add', 'switch') AND undone = 0 ORDER BY id DESC LIMIT 1",
            [domain_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.and_then(|(id, from)| from.map(|f| (id, f))))
}

pub fn set_maintenance(
    tx: &Tx<'_>,
    domain: &DomainRow,
    message: Option<&str>,
    actor: &str,
) -> Result<(), ControlError> {
    tx.execute(
        "UPDATE domains SET maintenance_message = ?2 WHERE id = ?1",
        params![domain.id, message],
    )?;
    let action = if message.is_some() {
        "maintenance-on"
    } else {
        "maintenance-off"
    };
    history(
        tx,
        domain.id,
        action,
        Some(domain.env.as_str()),
        Some(domain.env.as_str()),
        actor,
    )
}

pub fn domain_history(c: &Connection, domain_id: i64) -> Result<Vec<DomainEventRow>, ControlError> {
    let mut stmt = c.prepare(
        "SELECT id, action, from_env, to_env, actor, at, undone FROM domain_history WHERE domain_id = ?1 ORDER BY id DESC",
    )?;
    let rows = stmt
        .query_map([domain_id], |r| {
            Ok(DomainEventRow {
                id: r.get(0)?,
                action: r.get(1)?,
                from: r.get(2)?,
                to: r.get(3)?,
                actor: r.get(4)?,
                at: r.get(5)?,
                undone: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Turn branch environments on or off for an app (`app update --branch-envs`).
pub fn set_branch_envs(c: &Tx<'_>, app_id: i64, on: bool) -> Result<(), ControlError> {
    c.execute(
        "UPDATE apps SET branch_envs = ?2 WHERE id = ?1",
        params![app_id, on],
    )?;
    Ok(())
}

/// Record that a push made this environment for its branch (so deleting the branch deletes it).
pub fn mark_made_for_branch(c: &Tx<'_>, env_id: i64) -> Result<(), ControlError> {
    c.execute(
        "UPDATE environments SET made_for_branch = 1 WHERE id = ?1",
        [env_id],
    )?;
    Ok(())
}

/// The names of the app's environments a push made for `branch`.
pub fn made_for_branch(
    c: &Connection,
    app_id: i64,
    branch: &str,
) -> Result<Vec<EnvName>, ControlError> {
    let mut stmt = c.prepare(
        "SELECT name FROM environments WHERE app_id = ?1 AND branch = ?2 AND made_for_branch = 1 \
         ORDER BY name",
    )?;
    let rows = stmt
        .query_map(params![app_id, branch], |r| parse_name(r.get(0)?))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}
