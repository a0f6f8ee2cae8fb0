//! One generation of an environment's data as the control plane handles it (`Generation`: its
//! directory, storage and database, a SQLite file or a PostgreSQL cluster), a job's progress
//! reporter for the data engines, and the small conversions between the engines' types and the
//! control plane's (errors, access modes, names, passwords, seed files).
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use turnout_data::postgres::{Cluster, ClusterSpec};
use turnout_data::sqlite::SqliteDb;
use turnout_data::{Access, DataError, Engine, Progress};
use turnout_model::{DataAccess, EnvRef};

use super::jobs::JobCtx;
use crate::error::ControlError;
use crate::store::data::{DataRow, Origin};

/// One generation of an environment's data: its database and its storage directory.
#[derive(Clone, Debug)]
pub(crate) struct Generation {
    pub n: i64,
    /// `<env_dir>/data/g<N>`.
    pub dir: PathBuf,
    pub storage: PathBuf,
    pub db: Db,
}

#[derive(Clone, Debug)]
pub(crate) enum Db {
    Sqlite(SqliteDb),
    Postgres(Cluster),
}

impl Generation {
    pub fn engine(&self) -> Engine {
        match self.db {
            Db::Sqlite(_) => Engine::Sqlite,
            Db::Postgres(_) => Engine::Postgres,
        }
    }

    /// The environment's own `DATABASE_URL`.
    pub fn url(&self) -> String {
        match &self.db {
            Db::Sqlite(db) => db.url(),
            Db::Postgres(c) => c.app_url(),
        }
    }

    pub fn cluster_spec(&self) -> Option<ClusterSpec> {
        match &self.db {
            Db::Postgres(c) => Some(c.spec.clone()),
            Db::Sqlite(_) => None,
        }
    }

    pub async fn run_sql(&self, sql: &str) -> Result<(), DataError> {
        match &self.db {
            Db::Sqlite(db) => db.run_sql(sql).await,
            Db::Postgres(c) => c.run_sql(sql).await,
        }
    }

    pub async fn size(&self) -> Result<u64, DataError> {
        match &self.db {
            Db::Sqlite(db) => db.size().await,
            Db::Postgres(c) => c.size().await,
        }
    }

    /// The store's record of this generation serving, from `origin`.
    pub fn row(&self, env_id: i64, origin: Origin) -> DataRow {
        DataRow {
            env_id,
            engine: self.engine(),
            generation: self.n,
            cluster: self.cluster_spec(),
            origin,
        }
    }
}

/// A new generation a job made, with where it came from: launched instead of the current one,
/// and recorded serving by `go_live` in the same transaction as the release.
pub(crate) struct NewData {
    pub gn: Generation,
    pub origin: Origin,
}

/// Reports a data operation's progress as job output: every line, and byte counts at most
/// every half second.
pub(crate) struct JobProgress<'a> {
    ctx: &'a JobCtx,
    last: Mutex<Option<Instant>>,
}

impl<'a> JobProgress<'a> {
    pub fn new(ctx: &'a JobCtx) -> JobProgress<'a> {
        JobProgress {
            ctx,
            last: Mutex::new(None),
        }
    }
}

const PROGRESS_EVERY: Duration = Duration::from_millis(500);

impl Progress for JobProgress<'_> {
    fn line(&self, text: &str) {
        self.ctx.output(text);
    }
    fn bytes(&self, done: u64, total: Option<u64>) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let finished = total.is_some_and(|t| done >= t);
        if !finished && last.is_some_and(|at| at.elapsed() < PROGRESS_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let done = turnout_model::plan::format_bytes(done);
        self.ctx.output(&match total {
            Some(t) => format!("copied {done} of {}", turnout_model::plan::format_bytes(t)),
            None => format!("copied {done}"),
        });
    }
    fn table_masked(&self, table: &str, rows: u64) {
        self.ctx.output(&format!("masked {table}: {rows} rows"));
    }
}

/// A data error as a job step's failure.
pub(crate) fn step_error(step: &'static str) -> impl FnOnce(DataError) -> ControlError {
    move |e| match e {
        DataError::Cancelled => ControlError::Cancelled("cancelled".into()),
        e => ControlError::Step {
            step,
            message: e.to_string(),
            log_tail: vec![],
        },
    }
}

pub(crate) fn data_error(e: DataError) -> ControlError {
    match e {
        DataError::Invalid(m) => ControlError::Invalid(m),
        DataError::Unavailable(m) => ControlError::Conflict(m),
        e => ControlError::internal(e.to_string()),
    }
}

/// Hex of `bytes` random bytes from the kernel.
pub(crate) fn random_hex(bytes: usize) -> Result<String, ControlError> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| ControlError::internal(format!("read /dev/urandom: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A PostgreSQL identifier made of a validated name (a DNS label): `prefix_name`, `-` as `_`.
pub(crate) fn pg_name(prefix: &str, name: &str) -> String {
    format!("{prefix}_{}", name.replace('-', "_"))
}

/// How the error for an environment whose data has another engine than its release asks for
/// reads: what to do about it.
pub(crate) fn engine_mismatch(r: &EnvRef, has: Engine, wants: Engine) -> ControlError {
    ControlError::Step {
        step: "migrate",
        message: format!(
            "{r}'s data is {has}, but this release declares engine = \"{wants}\" in [data], and Turnout never converts data between engines. To change engine, give {r} new {wants} data made from the seed with `turnout data reseed {r} --engine {wants}` (its live release is relaunched on it), then deploy again; or keep engine = \"{has}\""
        ),
        log_tail: vec![],
    }
}

/// The engine's access mode for the API's.
pub(crate) fn access(mode: DataAccess) -> Access {
    match mode {
        DataAccess::Read => Access::Read,
        DataAccess::Append => Access::Append,
        DataAccess::ReadWrite => Access::ReadWrite,
    }
}

/// A file of the release named by the app file (a seed), refused unless it is inside `dir`.
pub(crate) async fn release_file(dir: &Path, name: &Path) -> Result<String, ControlError> {
    let root = tokio::fs::canonicalize(dir)
        .await
        .map_err(|e| ControlError::internal(format!("{}: {e}", dir.display())))?;
    let path = tokio::fs::canonicalize(dir.join(name)).await.map_err(|e| {
        ControlError::Invalid(format!(
            "seed_sql file {} cannot be read in the release: {e}",
            name.display()
        ))
    })?;
    if !path.starts_with(&root) {
        return Err(ControlError::Invalid(format!(
            "seed_sql file {} is outside the release's directory; name a file of the repository",
            name.display()
        )));
    }
    tokio::fs::read_to_string(&path)
        .await
        .map_err(|e| ControlError::Invalid(format!("seed_sql file {}: {e}", name.display())))
}
