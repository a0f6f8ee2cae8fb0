//! SQLite: one database file per generation of an environment's data, in WAL mode so that an
//! online copy (a read transaction) never blocks the app's writers.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::{Access, DataError, MaskReport, MaskRules, Progress};

/// One SQLite database file (and its `-wal` and `-shm` companions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteDb {
    path: PathBuf,
}

impl SqliteDb {
    /// The database at `path` (absolute).
    pub fn at(path: PathBuf) -> SqliteDb {
        SqliteDb { path }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// `sqlite:///ABSOLUTE/PATH`, the app's `DATABASE_URL`.
    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
    /// The URL another environment attached with `access` gets; append is refused (SQLite
    /// cannot enforce it).
    pub fn attach_url(&self, access: Access) -> Result<String, DataError> {
        todo!("{access:?}")
    }
    /// Creates an empty database in WAL mode (the file must not exist).
    pub async fn create(&self) -> Result<(), DataError> {
        todo!()
    }
    /// A consistent copy of this database as it is at one moment, written to `dst` (which must
    /// not exist) while the app goes on reading and writing this one; bytes are reported as
    /// they are copied. Nothing is left at `dst` on failure or cancel. Returns the bytes copied.
    pub async fn copy_to(
        &self,
        dst: &SqliteDb,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<u64, DataError> {
        todo!("{dst:?} {:?} {}", progress.line(""), cancel.is_cancelled())
    }
    /// Runs a script of SQL statements (a seed file) in one transaction.
    pub async fn run_sql(&self, sql: &str) -> Result<(), DataError> {
        todo!("{sql}")
    }
    /// Every (table, column) of the database's own tables.
    pub async fn columns(&self) -> Result<Vec<(String, String)>, DataError> {
        todo!()
    }
    /// Checks `rules` strictly against the columns, then masks every table in one transaction
    /// (reporting each table as it is done).
    pub async fn mask(
        &self,
        rules: &MaskRules,
        key: &str,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<MaskReport, DataError> {
        todo!(
            "{rules:?} {key} {:?} {}",
            progress.line(""),
            cancel.is_cancelled()
        )
    }
    /// The bytes of the database file and its WAL.
    pub async fn size(&self) -> Result<u64, DataError> {
        todo!()
    }
    /// Removes the database file and its companions (absent ones are fine).
    pub async fn remove(&self) -> Result<(), DataError> {
        todo!()
    }
}
