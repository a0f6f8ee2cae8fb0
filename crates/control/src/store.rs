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

use rusqlite::Connection;
use tokio::sync::Semaphore;
use turnout_model::{
    AppName, AuditAction, DomainName, EnvName, EnvRef, ReleaseStatus, ResourcePlan, Tier,
};

use crate::error::ControlError;

pub mod access;
pub mod audit;
pub mod backup;
pub mod config;
pub mod data;
pub mod egress;
pub mod hooks;
pub mod jobs;
pub mod links;
pub mod mail;
pub mod pipeline;
pub mod reseed;
pub mod tls;

pub use audit::AuditEntry;

/// Embedded migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_domains.sql"),
    include_str!("../migrations/0003_access.sql"),
    include_str!("../migrations/0004_secrets.sql"),
    include_str!("../migrations/0005_jobs.sql"),
    include_str!("../migrations/0006_users.sql"),
    include_str!("../migrations/0007_plans.sql"),
    include_str!("../migrations/0008_triggers.sql"),
    include_str!("../migrations/0009_push.sql"),
    include_str!("../migrations/0010_hooks.sql"),
    include_str!("../migrations/0011_pipeline.sql"),
    include_str!("../migrations/0012_sleep.sql"),
    include_str!("../migrations/0013_data.sql"),
    include_str!("../migrations/0014_reseed.sql"),
    include_str!("../migrations/0015_backups.sql"),
    include_str!("../migrations/0016_config.sql"),
    include_str!("../migrations/0017_mail.sql"),
    include_str!("../migrations/0018_egress.sql"),
    include_str!("../migrations/0019_tls.sql"),
    include_str!("../migrations/0020_links.sql"),
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
    /// The first push of a branch no environment follows creates a test environment for it.
    pub branch_envs: bool,
    /// Its own sleep setting per tier, over the built-in defaults.
    pub tier_sleep: std::collections::BTreeMap<Tier, turnout_model::SleepAfter>,
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
    /// The uid (and gid) its processes run as when Turnout runs as root.
    pub uid: u32,
    /// Its own resource plan (`env update`); unset fields fall back to the app file's.
    pub plan: ResourcePlan,
    /// What deploys it by itself.
    pub deploy_on: turnout_model::DeployOn,
    /// Its own sleep setting (`None`: its tier's default, see [`EnvRow::sleeps_after`]).
    pub sleep_after: Option<turnout_model::SleepAfter>,
    /// Its app's setting for its tier (`app update --sleep-after TIER=…`), if any.
    pub tier_sleep_after: Option<turnout_model::SleepAfter>,
    /// A push made it for its branch; deleting the branch deletes it.
    pub made_for_branch: bool,
    /// Put to sleep when idle: not started at start-up, woken by a request.
    pub sleeping: bool,
    pub created_at: i64,
}

impl EnvRow {
    /// After how long idle it sleeps: its own setting, else its app's for its tier, else the
    /// tier's built-in default.
    pub fn sleeps_after(&self) -> turnout_model::SleepAfter {
        self.sleep_after
            .or(self.tier_sleep_after)
            .unwrap_or_else(|| turnout_model::SleepAfter::tier_default(self.tier))
    }
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
    /// Its HTTPS settings (independent of its binding: a switch never changes them).
    pub tls: turnout_model::TlsSettings,
}

impl DomainRow {
    /// The environment the domain is bound to.
    pub fn target(&self) -> EnvRef {
        EnvRef {
            app: self.app.clone(),
            env: self.env.clone(),
        }
    }

    /// An audit entry of `actor`'s `action` on this domain (its name, app and environment).
    pub fn audit(&self, actor: &str, action: AuditAction) -> AuditEntry {
        AuditEntry::new(actor, action)
            .app(&self.app)
            .env(&self.env)
            .domain(&self.name)
    }
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
    /// through `mutate`, `mutate_failed`, `mutate_each` or `record`, each with its audit entry
    /// (or `append_log`, for the logs of what environments did: egress log, caught mail).
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

    /// Copy the whole WAL into the database and empty it (after values were sealed or
    /// re-sealed, so the WAL's old pages do not keep what they replaced).
    pub async fn truncate_wal(&self) -> Result<(), ControlError> {
        self.write(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// Append records that change nothing a user set (the egress log, written in batches; the
    /// mail an environment sent): in one transaction, without an audit entry (they are a log of
    /// their own, bounded per environment).
    pub async fn append_log<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, ControlError> + Send + 'static,
    ) -> Result<T, ControlError> {
        self.write(move |c| {
            let tx = c.transaction()?;
            let value = f(&Tx(&tx))?;
            tx.commit()?;
            Ok(value)
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
    // Freed pages are zeroed, so a value deleted or replaced (a secret kept in plain text by
    // an older version, before it was sealed) does not stay readable in the file.
    conn.pragma_update(None, "secure_delete", true)?;
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

pub(crate) fn parse_tier(s: String) -> rusqlite::Result<Tier> {
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
     (SELECT COUNT(*) FROM environments e WHERE e.app_id = a.id), a.branch_envs, \
     (SELECT group_concat(s.tier || '=' || s.sleep_after_ms, ',') FROM app_tier_sleep s \
      WHERE s.app_id = a.id)";

fn app_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AppRow> {
    Ok(AppRow {
        id: r.get(0)?,
        name: parse_name(r.get(1)?)?,
        repo: r.get(2)?,
        token_env: r.get(3)?,
        created_at: r.get(4)?,
        environments: r.get(5)?,
        branch_envs: r.get(6)?,
        tier_sleep: match r.get::<_, Option<String>>(7)? {
            None => Default::default(),
            Some(list) => list
                .split(',')
                .map(|item| {
                    let (tier, ms) = item.split_once('=').unwrap_or((item, ""));
                    let ms = ms.parse::<i64>().map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            7,
                            rusqlite::types::Type::Text,
                            Box::new(e),
                        )
                    })?;
                    Ok((parse_tier(tier.to_owned())?, sleep_after(7, ms)?))
                })
                .collect::<rusqlite::Result<_>>()?,
        },
    })
}

const ENV_COLS: &str = "e.id, a.name, e.name, e.branch, e.tier, e.current_release_id, e.created_at, a.id, \
     e.stopped, e.plan_memory, e.plan_cpu, e.plan_pids, e.uid, e.deploy_on, e.sleep_after_ms, e.sleeping, \
     (SELECT s.sleep_after_ms FROM app_tier_sleep s WHERE s.app_id = a.id AND s.tier = e.tier), \
     e.made_for_branch";

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
        plan: ResourcePlan {
            memory: unsigned(9, r.get(9)?)?,
            cpu: r.get(10)?,
            pids: unsigned(11, r.get(11)?)?,
        },
        uid: r.get(12)?,
        deploy_on: r.get::<_, String>(13)?.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(13, rusqlite::types::Type::Text, e.into())
        })?,
        sleep_after: r
            .get::<_, Option<i64>>(14)?
            .map(|ms| sleep_after(14, ms))
            .transpose()?,
        sleeping: r.get(15)?,
        tier_sleep_after: r
            .get::<_, Option<i64>>(16)?
            .map(|ms| sleep_after(16, ms))
            .transpose()?,
        made_for_branch: r.get(17)?,
    })
}

/// A stored sleep setting: milliseconds, 0 for never.
fn sleep_after(col: usize, ms: i64) -> rusqlite::Result<turnout_model::SleepAfter> {
    Ok(match unsigned(col, Some(ms))? {
        Some(0) | None => turnout_model::SleepAfter::Never,
        Some(ms) => turnout_model::SleepAfter::After(std::time::Duration::from_millis(ms)),
    })
}

/// A stored count (SQLite integers are signed); a negative one is a corrupt row.
fn unsigned(col: usize, v: Option<i64>) -> rusqlite::Result<Option<u64>> {
    v.map(|v| {
        u64::try_from(v).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                col,
                rusqlite::types::Type::Integer,
                Box::new(e),
            )
        })
    })
    .transpose()
}

const DOMAIN_COLS: &str = "d.id, d.name, a.name, e.name, d.maintenance_message, d.created_at, \
     d.tls_mode, d.tls_redirect, d.tls_hsts_max_age, d.tls_challenge";
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
        tls: turnout_model::TlsSettings {
            mode: parse_text(6, r.get(6)?)?,
            redirect: r.get(7)?,
            hsts_max_age: unsigned(8, r.get(8)?)?,
            challenge: parse_text(9, r.get(9)?)?,
        },
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

pub mod q;

#[cfg(test)]
mod tests;
