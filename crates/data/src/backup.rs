//! Backups: one content-addressed repository per app under `<home>/backups/<app>/`, holding
//! every snapshot of the app's environments as a manifest of chunks. A chunk is named by the
//! blake3 hash of its bytes, stored once however many snapshots hold it (deduplicated),
//! compressed with zstd, and checked against its name whenever it is read: a corrupted or
//! missing chunk makes `verify` and every restore fail, naming the snapshot and the chunk,
//! rather than restore wrong data.
//!
//! - SQLite databases are cut into their pages (page-level deduplication: a snapshot of a large
//!   database where few pages changed adds only those pages); storage files by content-defined
//!   chunking (FastCDC).
//! - PostgreSQL (`postgres::backup`): a base backup of the cluster's files (8 KiB blocks as
//!   chunks) plus its WAL archive, ingested into the repository segment by segment, so any
//!   moment inside the WAL window can be restored.
//! - `retention`: which snapshots an exponential schedule keeps (stateless, aligned to the UTC
//!   epoch).
//!
//! Writing a snapshot never makes a half-written one visible: chunks first, then the manifest
//! in one transaction; an interrupted write leaves only unreferenced chunks, swept when the
//! repository is next opened. Every restore writes under `.partial` names and renames at the
//! end; a failure or cancel leaves nothing.

pub mod retention;

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::sqlite::SqliteDb;
use crate::{DataError, Progress};

/// A chunk's name: the blake3 hash of its uncompressed bytes.
pub type ChunkId = [u8; 32];

/// One app's backup repository. Cheap to clone; writes (snapshots, deletes, WAL ingest) are
/// serialised inside it, reads (verify, restore) run alongside them.
#[derive(Clone, Debug)]
pub struct Repo {
    dir: PathBuf,
}

/// What writing a snapshot did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Bytes of the data it holds (database and storage).
    pub logical_bytes: u64,
    /// Bytes it added to the repository (its new chunks, compressed, and its manifest).
    pub stored_bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
}

/// What a verification read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub chunks: u64,
    pub bytes: u64,
}

/// The repository's size on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoUsage {
    pub chunks: u64,
    /// Bytes of every chunk, compressed.
    pub stored_bytes: u64,
    /// Bytes of the repository's files on disk.
    pub disk_bytes: u64,
}

impl Repo {
    /// Opens (creating, mode 0700) the repository in `dir`, sweeping the chunks an interrupted
    /// write left unreferenced.
    pub async fn open(dir: PathBuf) -> Result<Repo, DataError> {
        let _ = dir;
        todo!()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A snapshot named `name` of `db` (a consistent read snapshot, taken while the app writes)
    /// and of the storage directory `storage`.
    pub async fn snapshot_sqlite(
        &self,
        name: &str,
        db: &SqliteDb,
        storage: &Path,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<SnapshotStats, DataError> {
        let _ = (name, db, storage, progress, cancel);
        todo!()
    }

    /// Snapshot `name` written out as the database `to` (which must not exist) and the storage
    /// directory `storage` (which must not exist), every chunk checked on the way.
    pub async fn restore_sqlite(
        &self,
        name: &str,
        to: &SqliteDb,
        storage: &Path,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<(), DataError> {
        let _ = (name, to, storage, progress, cancel);
        todo!()
    }

    /// Reads every chunk of snapshot `name` (and, for PostgreSQL, of the WAL it needs) and
    /// checks each against its hash; the error names the first missing or corrupted one.
    pub async fn verify(
        &self,
        name: &str,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<VerifyReport, DataError> {
        let _ = (name, progress, cancel);
        todo!()
    }

    /// Whether a snapshot named `name` is complete in the repository.
    pub async fn contains(&self, name: &str) -> Result<bool, DataError> {
        let _ = name;
        todo!()
    }

    /// Removes snapshot `name` and every chunk no other snapshot holds.
    pub async fn delete(&self, name: &str) -> Result<(), DataError> {
        let _ = name;
        todo!()
    }

    pub async fn usage(&self) -> Result<RepoUsage, DataError> {
        todo!()
    }
}

/// Building blocks the PostgreSQL backups share with SQLite's.
impl Repo {
    /// Starts writing snapshot `name` (refused when one of that name exists).
    pub(crate) async fn writer(&self, name: &str) -> Result<SnapshotWriter, DataError> {
        let _ = name;
        todo!()
    }

    /// Writes every file of snapshot `name` whose path starts with `prefix` under `dest` (with
    /// the prefix removed), checking every chunk; `dest` must not exist.
    pub(crate) async fn restore_tree(
        &self,
        name: &str,
        prefix: &str,
        dest: &Path,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<u64, DataError> {
        let _ = (name, prefix, dest, progress, cancel);
        todo!()
    }
}

/// How a file is cut into chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Chunking {
    /// Blocks of this many bytes (a database's pages).
    Fixed(u32),
    /// Content-defined chunks (FastCDC), for files whose changes shift bytes.
    Content,
}

/// A snapshot being written: files added one by one, then committed with its manifest.
/// Dropped without `commit`, it leaves no snapshot (only chunks the next open sweeps).
pub(crate) struct SnapshotWriter {
    _private: (),
}

impl SnapshotWriter {
    /// Adds the file at `path` as `rel` (a relative path with `/`), cut by `chunking`.
    pub(crate) async fn add_file(
        &mut self,
        rel: &str,
        path: &Path,
        chunking: Chunking,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<(), DataError> {
        let _ = (rel, path, chunking, progress, cancel);
        todo!()
    }

    /// Adds every file and directory under `dir` as `prefix/…` (modes kept; symlinks kept as
    /// links).
    pub(crate) async fn add_tree(
        &mut self,
        prefix: &str,
        dir: &Path,
        chunking: Chunking,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<(), DataError> {
        let _ = (prefix, dir, chunking, progress, cancel);
        todo!()
    }

    /// Records a small named value in the manifest (e.g. PostgreSQL's backup label).
    pub(crate) fn set_meta(&mut self, key: &str, value: &str) {
        let _ = (key, value);
        todo!()
    }

    /// Makes the snapshot visible, in one transaction with its chunks' references.
    pub(crate) async fn commit(self) -> Result<SnapshotStats, DataError> {
        todo!()
    }
}

impl Repo {
    /// A value `set_meta` recorded in snapshot `name`.
    pub(crate) async fn meta(&self, name: &str, key: &str) -> Result<Option<String>, DataError> {
        let _ = (name, key);
        todo!()
    }
}
