//! The control plane's store: one SQLite database (WAL) at `<home>/turnout.db`.
//!
//! Reads and writes take different doors. Reads (`Store::call`) run on a small pool of
//! connections opened with `PRAGMA query_only`, so a dashboard poll never waits for a deploy's
//! commit (WAL lets readers and the writer run at once) and a read cannot change anything.
//! Writes go through the one writer connection, only inside `Store::mutate` and its siblings,
//! which commit each change together with its audit entry; the queries that change rows take a
//! `Tx`, which only those methods can make. Every call runs on the blocking pool, so no async
//! task ever waits on SQLite.
use std::ops::Deref;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Semaphore;
use turnout_model::{AppName, DomainName, EnvName, ReleaseStatus, Tier};

use crate::error::ControlError;

pub mod access;
pub mod audit;
pub mod jobs;

pub use audit::AuditEntry;

/// Embedded migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_domains.sql"),
    include_str!("../migrations/0003_access.sql"),
    include_str!("../migrations/0004_secrets.sql"),
    include_str!("../migrations/0005_jobs.sql"),
];

/// Read-only connections kept open for `Store::call`.
const READERS: usize = 4;

#[derive(Clone)]
pub struct Store {
    // std Mutexes on purpose: they are only ever locked inside spawn_blocking, never across an
    // await. No code path holds both.
    writer: Arc<Mutex<Connection>>,
    readers: Arc<ReadPool>,
}

/// The read-only connections. A permit is taken (asynchronously) before a connection, and
/// there are as many permits as connections, so a permit holder always finds one idle.
struct ReadPool {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<ReadConn>>,
}

/// A connection borrowed from the pool; it goes back even when the read panics.
struct Lease<'a> {
    pool: &'a ReadPool,
    conn: Option<ReadConn>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            lock(&self.pool.idle).push(conn);
        }
    }
}

/// The read handle `Store::call` lends: a connection opened with `PRAGMA query_only`, on which
/// any statement that would change the database fails.
pub struct ReadConn(Connection);

impl Deref for ReadConn {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0
    }
}

/// The write handle: the open transaction of `Store::mutate` (or a sibling), which also appends
/// the change's audit entry. Queries that change rows take `&Tx`, so they cannot run on the
/// read path; it derefs to the connection for the reads a change makes on the way.
pub struct Tx<'a>(&'a Connection);

impl Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.0
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Clone)]
pub struct AppRow {
    pub id: i64,
    pub name: AppName,
    pub repo: String,
    pub token_env: Option<String>,
    pub created_at: i64,
    pub environments: u32,
}

#[derive(Debug, Clone)]
pub struct EnvRow {
    pub id: i64,
    pub app_id: i64,
    pub app: AppName,
    pub name: EnvName,
    pub branch: String,
    pub tier: Tier,
    pub current_release_id: Option<i64>,
    /// Stopped on purpose; not started at the daemon's start-up.
    pub stopped: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct ReleaseRow {
    pub id: i64,
    pub commit: String,
    pub git_ref: String,
    pub dir: String,
    pub config: String,
    pub status: ReleaseStatus,
    pub reused_build: bool,
    pub error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub job_id: Option<i64>,
}

/// A release about to be built: what `q::insert_release` records.
pub struct NewRelease<'a> {
    pub env_id: i64,
    pub commit: &'a str,
    /// What the user asked for: a branch name or `--ref`.
    pub git_ref: &'a str,
    pub dir: &'a str,
    /// The resolved app file, JSON.
    pub config: &'a str,
    pub reused_build: bool,
    /// The deploy job that builds it.
    pub job_id: i64,
}

#[derive(Debug, Clone)]
pub struct DomainRow {
    pub id: i64,
    pub name: DomainName,
    pub app: AppName,
    pub env: EnvName,
    pub maintenance: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct DomainEventRow {
    pub id: i64,
    pub action: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub actor: String,
    pub at: i64,
    pub undone: bool,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, ControlError> {
        let mut conn = open_connection(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // Checkpoints (the fsyncs that copy the WAL into the database) would otherwise run
        // inside whichever commit crosses the threshold, such as a domain switch's; they run in
        // the background instead (`checkpoint_in_background`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        migrate(&mut conn)?;
        let readers = (0..READERS)
            .map(|_| {
                let reader = open_connection(path)?;
                reader.pragma_update(None, "query_only", true)?;
                Ok(ReadConn(reader))
            })
            .collect::<Result<Vec<_>, ControlError>>()?;
        Ok(Store {
            writer: Arc::new(Mutex::new(conn)),
            readers: Arc::new(ReadPool {
                permits: Arc::new(Semaphore::new(READERS)),
                idle: Mutex::new(readers),
            }),
        })
    }

    /// Copy the WAL into the database every `interval` from a second connection, until
    /// `stop` is cancelled. A passive checkpoint never blocks the writer, so commits (switches,
    /// deploys) keep their latency; a final one runs on the way out.
    pub fn checkpoint_in_background(
        path: &Path,
        interval: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, ControlError> {
        let conn = Arc::new(Mutex::new(open_connection(path)?));
        let checkpoint = move || {
            let conn = conn.clone();
            async move {
                let result = tokio::task::spawn_blocking(move || {
                    lock(&conn).query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                })
                .await;
                if let Ok(Err(e)) = result {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        };
        Ok(tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => checkpoint().await,
                    () = stop.cancelled() => break,
                }
            }
            checkpoint().await;
        }))
    }

    /// Read: run `f` on the blocking pool with one of the read-only connections. It never
    /// waits for a write to commit; any statement that would change the database fails.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadConn) -> Result<T, ControlError> + Send + 'static,
    ) -> Result<T, ControlError> {
        let permit = self
            .readers
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ControlError::internal(format!("store readers closed: {e}")))?;
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let lease = Lease {
                pool: &pool,
                conn: lock(&pool.idle).pop(),
            };
            let conn = lease.conn.as_ref().ok_or_else(|| {
                ControlError::internal("no idle store reader although a permit was held")
            })?;
            f(conn)
        })
        .await
        .map_err(|e| ControlError::internal(format!("store task failed: {e}")))?
    }

    /// Run `f` with the writer connection on the blocking pool. Private: every write goes
    /// through `mutate`, `mutate_failed`, `mutate_each` or `record`, each with its audit entry.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, ControlError> + Send + 'static,
    ) -> Result<T, ControlError> {
        let conn = self.writer.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&conn)))
            .await
            .map_err(|e| ControlError::internal(format!("store task failed: {e}")))?
    }

    /// The one way to change the store: run `f` in a transaction that also appends `entry`
    /// (which `f` may complete, e.g. with the `from` it found) to the audit log, so a change
    /// and its audit entry are written together or not at all. When `f` fails, the change is
    /// rolled back and the attempt is recorded with its error.
    pub async fn mutate<T: Send + 'static>(
        &self,
        entry: AuditEntry,
        f: impl FnOnce(&Tx<'_>, &mut AuditEntry) -> Result<T, ControlError> + Send + 'static,
    ) -> Result<T, ControlError> {
        self.write(move |c| {
            let mut entry = entry;
            let tx = c.transaction()?;
            match f(&Tx(&tx), &mut entry) {
                Ok(value) => {
                    audit::append(&Tx(&tx), &entry, "ok")?;
                    tx.commit()?;
                    Ok(value)
                }
                Err(e) => {
                    drop(tx);
                    audit::append(&Tx(c), &entry, &format!("failed: {e}"))?;
                    Err(e)
                }
            }
        })
        .await
    }

    /// Like `mutate`, for a change that records a failure (a deploy step failed): the change
    /// and an audit entry whose result is `failed: <message>` land together.
    pub async fn mutate_failed(
        &self,
        entry: AuditEntry,
        message: String,
        f: impl FnOnce(&Tx<'_>) -> Result<(), ControlError> + Send + 'static,
    ) -> Result<(), ControlError> {
        self.write(move |c| {
            let tx = c.transaction()?;
            f(&Tx(&tx))?;
            audit::append(&Tx(&tx), &entry, &format!("failed: {message}"))?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// For a change Turnout makes to any number of rows at once (expiring approval requests):
    /// `f` changes them and returns one audit entry per row it changed; the entries commit with
    /// the change. A change that touched nothing records nothing.
    pub async fn mutate_each(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<Vec<AuditEntry>, ControlError> + Send + 'static,
    ) -> Result<usize, ControlError> {
        self.write(move |c| {
            let tx = c.transaction()?;
            let entries = f(&Tx(&tx))?;
            for entry in &entries {
                audit::append(&Tx(&tx), entry, "ok")?;
            }
            tx.commit()?;
            Ok(entries.len())
        })
        .await
    }

    /// Record an attempt that changed nothing (refused before it started).
    pub async fn record(&self, entry: AuditEntry, result: String) -> Result<(), ControlError> {
        self.write(move |c| audit::append(&Tx(c), &entry, &result))
            .await
    }
}

fn open_connection(path: &Path) -> Result<Connection, ControlError> {
    let conn = Connection::open(path)
        .map_err(|e| ControlError::internal(format!("open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), ControlError> {
    let done: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let done = usize::try_from(done).unwrap_or(usize::MAX);
    if done > MIGRATIONS.len() {
        return Err(ControlError::internal(format!(
            "the store was written by a newer Turnout (schema version {done}, this build knows {}); upgrade turnout",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// A text column holding one of an enum's names.
pub(crate) fn parse_text<T: std::str::FromStr<Err = String>>(
    col: usize,
    s: String,
) -> rusqlite::Result<T> {
    s.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, e.into())
    })
}

fn parse_tier(s: String) -> rusqlite::Result<Tier> {
    s.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(crate) fn parse_name<T: std::str::FromStr<Err = turnout_model::NameError>>(
    s: String,
) -> rusqlite::Result<T> {
    s.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

const APP_COLS: &str = "a.id, a.name, a.repo, a.token_env, a.created_at, \
     (SELECT COUNT(*) FROM environments e WHERE e.app_id = a.id)";

fn app_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AppRow> {
    Ok(AppRow {
        id: r.get(0)?,
        name: parse_name(r.get(1)?)?,
        repo: r.get(2)?,
        token_env: r.get(3)?,
        created_at: r.get(4)?,
        environments: r.get(5)?,
    })
}

const ENV_COLS: &str =
    "e.id, a.name, e.name, e.branch, e.tier, e.current_release_id, e.created_at, a.id, e.stopped";

fn env_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EnvRow> {
    Ok(EnvRow {
        id: r.get(0)?,
        app: parse_name(r.get(1)?)?,
        name: parse_name(r.get(2)?)?,
        branch: r.get(3)?,
        tier: parse_tier(r.get(4)?)?,
        current_release_id: r.get(5)?,
        created_at: r.get(6)?,
        app_id: r.get(7)?,
        stopped: r.get(8)?,
    })
}

const DOMAIN_COLS: &str = "d.id, d.name, a.name, e.name, d.maintenance_message, d.created_at";
const DOMAIN_FROM: &str =
    "domains d JOIN environments e ON e.id = d.env_id JOIN apps a ON a.id = e.app_id";

fn domain_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DomainRow> {
    Ok(DomainRow {
        id: r.get(0)?,
        name: r.get::<_, String>(1)?.parse().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
        })?,
        app: parse_name(r.get(2)?)?,
        env: parse_name(r.get(3)?)?,
        maintenance: r.get(4)?,
        created_at: r.get(5)?,
    })
}

pub(crate) const RELEASE_COLS: &str = "id, commit_sha, git_ref, dir, config, status, reused_build, error, \
     created_at, finished_at, job_id";

pub(crate) fn release_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReleaseRow> {
    Ok(ReleaseRow {
        id: r.get(0)?,
        commit: r.get(1)?,
        git_ref: r.get(2)?,
        dir: r.get(3)?,
        config: r.get(4)?,
        status: parse_text(5, r.get(5)?)?,
        reused_build: r.get(6)?,
        error: r.get(7)?,
        created_at: r.get(8)?,
        finished_at: r.get(9)?,
        job_id: r.get(10)?,
    })
}

/// Queries, each a plain function over a connection so callers compose them in one transaction.
pub mod q {
    use super::*;

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
        c.execute(
            "INSERT INTO environments (app_id, name, branch, tier, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![app_row.id, name.as_str(), branch, tier.as_str(), now()],
        )?;
        get_env(c, app, name)
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

    pub fn get_env(c: &Connection, app: &AppName, name: &EnvName) -> Result<EnvRow, ControlError> {
        get_app(c, app)?;
        c.query_row(
            &format!(
                "SELECT {ENV_COLS} FROM environments e JOIN apps a ON a.id = e.app_id \
                 WHERE a.name = ?1 AND e.name = ?2"
            ),
            params![app.as_str(), name.as_str()],
            env_row,
        )
        .optional()?
        .ok_or_else(|| {
            ControlError::NotFound(format!(
                "app '{app}' has no environment '{name}'; see `turnout env list {app}`"
            ))
        })
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
            "UPDATE environments SET current_release_id = ?2, stopped = 0 WHERE id = ?1",
            params![env_id, release_id],
        )?;
        Ok(())
    }

    /// Stop an environment on purpose, or clear that.
    pub fn set_stopped(c: &Tx<'_>, env_id: i64, stopped: bool) -> Result<(), ControlError> {
        c.execute(
            "UPDATE environments SET stopped = ?2 WHERE id = ?1",
            params![env_id, stopped],
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
    pub fn fail_interrupted_releases(c: &Tx<'_>) -> Result<usize, ControlError> {
        Ok(c.execute(
            "UPDATE releases SET status = 'failed', error = 'interrupted: the daemon stopped during this deploy', finished_at = ?1 \
             WHERE status = 'building'",
            [now()],
        )?)
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

    // ---- domains ----

    pub fn list_domains(c: &Connection) -> Result<Vec<DomainRow>, ControlError> {
        let mut stmt = c.prepare(&format!(
            "SELECT {DOMAIN_COLS} FROM {DOMAIN_FROM} ORDER BY d.name"
        ))?;
        let rows = stmt.query_map([], domain_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    pub fn get_domain(c: &Connection, name: &DomainName) -> Result<DomainRow, ControlError> {
        c.query_row(
            &format!("SELECT {DOMAIN_COLS} FROM {DOMAIN_FROM} WHERE d.name = ?1"),
            [name.as_str()],
            domain_row,
        )
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
        c.execute(
            "INSERT INTO domain_history (domain_id, action, from_env, to_env, actor, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![domain_id, action, from, to, actor, now()],
        )?;
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
        tx.execute(
            "UPDATE domains SET env_id = ?2 WHERE id = ?1",
            params![domain.id, to.id],
        )?;
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

    pub fn domain_history(
        c: &Connection,
        domain_id: i64,
    ) -> Result<Vec<DomainEventRow>, ControlError> {
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

    // ---- secrets ----

    /// (key, value, updated_at, updated_by) of an environment's secrets, by key.
    pub fn secrets(
        c: &Connection,
        env_id: i64,
    ) -> Result<Vec<(String, String, i64, String)>, ControlError> {
        let mut stmt = c.prepare(
            "SELECT key, value, updated_at, updated_by FROM secrets WHERE env_id = ?1 ORDER BY key",
        )?;
        let rows = stmt
            .query_map([env_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Set a secret; returns whether it replaced an earlier value.
    pub fn set_secret(
        c: &Tx<'_>,
        env_id: i64,
        key: &str,
        value: &str,
        by: &str,
    ) -> Result<bool, ControlError> {
        let existed: bool = c.query_row(
            "SELECT EXISTS(SELECT 1 FROM secrets WHERE env_id = ?1 AND key = ?2)",
            params![env_id, key],
            |r| r.get(0),
        )?;
        c.execute(
            "INSERT INTO secrets (env_id, key, value, updated_at, updated_by) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (env_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            params![env_id, key, value, now(), by],
        )?;
        Ok(existed)
    }

    pub fn unset_secret(c: &Tx<'_>, env_id: i64, key: &str) -> Result<(), ControlError> {
        let n = c.execute(
            "DELETE FROM secrets WHERE env_id = ?1 AND key = ?2",
            params![env_id, key],
        )?;
        if n == 0 {
            return Err(ControlError::NotFound(format!(
                "no secret '{key}' in this environment"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnout_model::AuditAction;

    #[test]
    fn migrates_once_and_round_trips_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(&path).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        let conn = lock(&store.writer);
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");

        let tx = Tx(&conn);
        let app = AppName::new("shop").unwrap();
        let env = EnvName::new("staging").unwrap();
        q::insert_app(&tx, &app, "/repo", None).unwrap();
        assert!(matches!(
            q::insert_app(&tx, &app, "/repo", None),
            Err(ControlError::Conflict(_))
        ));
        let e = q::insert_env(&tx, &app, &env, "main", Tier::Staging).unwrap();
        let release = |commit, dir, reused_build, job_id| NewRelease {
            env_id: e.id,
            commit,
            git_ref: "main",
            dir,
            config: "{}",
            reused_build,
            job_id,
        };
        let r1 = q::insert_release(&tx, &release("abc", "/d1", false, 1)).unwrap();
        q::go_live(&tx, e.id, r1).unwrap();
        let r2 = q::insert_release(&tx, &release("def", "/d2", true, 2)).unwrap();
        q::go_live(&tx, e.id, r2).unwrap();
        let releases = q::list_releases(&tx, e.id).unwrap();
        assert_eq!(
            releases.iter().map(|r| r.status).collect::<Vec<_>>(),
            [ReleaseStatus::Live, ReleaseStatus::Superseded]
        );
        assert_eq!(
            q::get_env(&tx, &app, &env).unwrap().current_release_id,
            Some(r2)
        );
        assert_eq!(q::get_app(&tx, &app).unwrap().environments, 1);
        q::delete_app(&tx, &app).unwrap();
        assert!(q::list_releases(&tx, e.id).unwrap().is_empty());
    }

    fn audit_actions(conn: &Connection) -> Vec<(String, String, String)> {
        audit::list(conn, None, None, None, 100)
            .unwrap()
            .into_iter()
            .rev()
            .map(|r| (r.entry.actor, r.entry.action.to_string(), r.result))
            .collect()
    }

    #[tokio::test]
    async fn the_read_path_refuses_writes_and_mutate_audits_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let err = store
            .call(|c| {
                c.execute(
                    "INSERT INTO users (name, created_at) VALUES ('mallory', 0)",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("readonly"), "{err}");
        assert_eq!(store.call(|c| access::user_count(c)).await.unwrap(), 0);

        store
            .mutate(AuditEntry::new("root", AuditAction::UserAdd), |c, _| {
                access::insert_user(c, "alice")
            })
            .await
            .unwrap();
        assert_eq!(store.call(|c| access::user_count(c)).await.unwrap(), 1);
        assert_eq!(
            store.call(|c| Ok(audit_actions(c))).await.unwrap(),
            [("root".into(), "user.add".into(), "ok".into())]
        );
    }

    #[tokio::test]
    async fn reads_do_not_wait_for_a_write_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let (inside, started) = std::sync::mpsc::channel();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let writer = store.clone();
        let write = tokio::spawn(async move {
            writer
                .mutate(
                    AuditEntry::new("root", AuditAction::UserAdd),
                    move |c, _| {
                        access::insert_user(c, "alice")?;
                        inside.send(()).unwrap();
                        wait.recv().unwrap();
                        Ok(())
                    },
                )
                .await
        });
        tokio::task::spawn_blocking(move || started.recv().unwrap())
            .await
            .unwrap();
        // The writer holds its transaction open; every reader still answers, and sees the
        // state before the commit.
        for _ in 0..READERS * 2 {
            let users = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                store.call(|c| access::user_count(c)),
            )
            .await
            .expect("a read waited for the write")
            .unwrap();
            assert_eq!(users, 0);
        }
        release.send(()).unwrap();
        write.await.unwrap().unwrap();
        assert_eq!(store.call(|c| access::user_count(c)).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn expiring_approvals_records_one_entry_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let app = AppName::new("shop").unwrap();
        store
            .mutate(
                AuditEntry::new("root", AuditAction::AppCreate),
                move |c, _| {
                    let a = q::insert_app(c, &app, "/repo", None)?;
                    for (summary, expires_s) in [("old", -1), ("older", -60), ("fresh", 3600)] {
                        access::insert_approval(
                            c,
                            a.id,
                            turnout_model::Action::Deploy,
                            "{}",
                            summary,
                            "bob",
                            expires_s,
                        )?;
                    }
                    Ok(())
                },
            )
            .await
            .unwrap();
        let expired = store.mutate_each(access::expire_approvals).await.unwrap();
        assert_eq!(expired, 2);
        // Nothing left to expire: nothing recorded.
        assert_eq!(
            store.mutate_each(access::expire_approvals).await.unwrap(),
            0
        );
        let entries = store.call(|c| Ok(audit_actions(c))).await.unwrap();
        let expire = (
            "turnout".to_owned(),
            "approval.expire".to_owned(),
            "ok".to_owned(),
        );
        assert_eq!(entries[1..], [expire.clone(), expire]);
        let statuses = store
            .call(|c| access::list_approvals(c, true))
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.summary, r.status))
            .collect::<Vec<_>>();
        assert_eq!(
            statuses,
            [
                ("fresh".into(), "pending".into()),
                ("older".into(), "expired".into()),
                ("old".into(), "expired".into())
            ]
        );
    }

    #[test]
    fn refuses_a_store_from_a_newer_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(err.contains("newer Turnout"), "{err}");
    }
}
