//! The repository's storage: `repo.sqlite` (its schema is in the module root's doc), chunks
//! put (hashed and compressed in parallel batches, deduplicated) and got (decompressed and
//! re-hashed, in parallel batches), and references counted.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::ChunkId;
use crate::DataError;

/// The repository's database file in its directory.
pub(super) const FILE: &str = "repo.sqlite";

/// zstd's level: on database pages 1 compresses as well as 3, two to three times as fast
/// (the module root's doc has the figures).
const LEVEL: i32 = 1;

/// A batch of chunks hashed or compressed together (across the machine's cores), read or
/// written in one transaction: at most this many bytes...
pub(super) const BATCH_BYTES: usize = 32 << 20;
/// ... or this many chunks.
pub(super) const BATCH_CHUNKS: usize = 8192;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS chunks (
    id BLOB PRIMARY KEY NOT NULL,
    raw_len INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS refs (
    id BLOB PRIMARY KEY NOT NULL,
    n INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS manifests (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    logical_bytes INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL,
    meta TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    manifest INTEGER NOT NULL REFERENCES manifests (id),
    path TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('file', 'dir', 'link')),
    mode INTEGER NOT NULL,
    size INTEGER NOT NULL,
    target TEXT,
    chunks BLOB NOT NULL,
    PRIMARY KEY (manifest, path)
);
CREATE TABLE IF NOT EXISTS wal (
    stream TEXT NOT NULL,
    segment TEXT NOT NULL,
    archived_at INTEGER NOT NULL,
    size INTEGER NOT NULL,
    chunks BLOB NOT NULL,
    PRIMARY KEY (stream, segment)
);
";

/// Opens `repo.sqlite` in `dir`, creating its tables.
pub(super) fn connect(dir: &Path) -> Result<Connection, DataError> {
    let path = dir.join(FILE);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&path, flags).map_err(db_error(&path))?;
    conn.busy_timeout(Duration::from_secs(60))
        .map_err(db_error(&path))?;
    // page_size and auto_vacuum only take effect before the first table is made. 16 KiB
    // pages: a compressed chunk (a 4 KiB SQLite page is ~2 KiB compressed) is stored whole in
    // a page; with 4 KiB pages only one fits in each, wasting nearly half the file, and larger
    // pages make every index page a batch dirties (the names are random) costlier to write.
    // A 64 MiB cache keeps a batch's dirty pages until its commit writes each once.
    // Incremental auto-vacuum gives deleted chunks' pages back to the filesystem
    // (`incremental_vacuum` after deletes).
    conn.execute_batch(
        "PRAGMA page_size = 16384; PRAGMA cache_size = -65536; PRAGMA auto_vacuum = INCREMENTAL; PRAGMA synchronous = NORMAL;
         PRAGMA journal_size_limit = 16777216;",
    )
    .map_err(db_error(&path))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(db_error(&path))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(DataError::Database(format!(
            "the backup repository {} stayed in journal mode {mode}, not WAL",
            path.display()
        )));
    }
    conn.execute_batch(SCHEMA).map_err(db_error(&path))?;
    Ok(conn)
}

pub(super) fn db_error(path: &Path) -> impl Fn(rusqlite::Error) -> DataError {
    let path = path.to_path_buf();
    move |e| DataError::Database(format!("the backup repository {}: {e}", path.display()))
}

/// A rusqlite error as a repository error (the path is the repository's file).
pub(super) fn sql(e: rusqlite::Error) -> DataError {
    DataError::Database(format!("the backup repository: {e}"))
}

/// The first 12 hex digits of a chunk's name (what errors show).
pub(super) fn short(id: &ChunkId) -> String {
    id[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// `f` over `items` on up to 4 threads (the caller's included), in order.
pub(super) fn par_map<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if threads < 2 || items.len() < 16 {
        return items.iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let mut parts = items.chunks(per);
        let first = parts.next().unwrap_or_default();
        let others: Vec<_> = parts
            .map(|part| s.spawn(|| part.iter().map(&f).collect::<Vec<U>>()))
            .collect();
        let mut out: Vec<U> = first.iter().map(&f).collect();
        for handle in others {
            match handle.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

/// The chunk list of a file: its chunks' names, 32 bytes each, in order.
pub(super) fn ids_of(list: &[u8]) -> impl Iterator<Item = ChunkId> + '_ {
    list.chunks_exact(32).map(|c| {
        let mut id = [0; 32];
        id.copy_from_slice(c);
        id
    })
}

thread_local! {
    /// Each thread's zstd contexts, made once: a chunk is a few KiB, and making a context per
    /// chunk cost more than compressing it.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// `bytes` as one zstd frame (level `LEVEL`), with this thread's context.
fn compress(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(zstd::bulk::Compressor::new(LEVEL)?);
        }
        cell.as_mut().map_or_else(
            || Err(std::io::Error::other("no zstd context")),
            |c| c.compress(bytes),
        )
    })
}

/// A zstd frame of at most `capacity` bytes decompressed, with this thread's context.
fn decompress(frame: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(zstd::bulk::Decompressor::new()?);
        }
        cell.as_mut().map_or_else(
            || Err(std::io::Error::other("no zstd context")),
            |d| d.decompress(frame, capacity),
        )
    })
}

/// What putting a batch did.
#[derive(Default)]
pub(super) struct Put {
    pub new_chunks: u64,
    /// Compressed bytes of the new chunks.
    pub stored_bytes: u64,
}

/// Stores `pieces` as chunks (those not stored yet, with no reference: the caller's commit
/// counts them), in one transaction; returns their names in order.
pub(super) fn put_batch(
    conn: &mut Connection,
    pieces: &[&[u8]],
    put: &mut Put,
) -> Result<Vec<ChunkId>, DataError> {
    let ids: Vec<ChunkId> = par_map(pieces, |p| *blake3::hash(p).as_bytes());
    let tx = conn.transaction().map_err(sql)?;
    let mut new = Vec::new();
    {
        let mut exists = tx
            .prepare("SELECT 1 FROM refs WHERE id = ?1")
            .map_err(sql)?;
        let mut seen = HashSet::new();
        for (i, id) in ids.iter().enumerate() {
            if seen.insert(*id) && !exists.exists([&id[..]]).map_err(sql)? {
                new.push(i);
            }
        }
    }
    let compressed = par_map(&new, |&i| compress(pieces[i]));
    {
        let mut insert = tx
            .prepare("INSERT INTO chunks (id, raw_len, data) VALUES (?1, ?2, ?3)")
            .map_err(sql)?;
        let mut unreferenced = tx
            .prepare("INSERT INTO refs (id, n) VALUES (?1, 0)")
            .map_err(sql)?;
        for (&i, data) in new.iter().zip(compressed) {
            let data = data.map_err(|e| DataError::Database(format!("compressing: {e}")))?;
            insert
                .execute(params![&ids[i][..], pieces[i].len() as i64, data])
                .map_err(sql)?;
            unreferenced.execute([&ids[i][..]]).map_err(sql)?;
            put.new_chunks += 1;
            put.stored_bytes += data.len() as u64;
        }
    }
    tx.commit().map_err(sql)?;
    Ok(ids)
}

/// Adds `delta` to the reference count of every distinct chunk in `lists` (inside the caller's
/// transaction). The counts live in `refs`, apart from the chunks' bytes: a commit's hundreds
/// of thousands of increments then rewrite a table of 40-byte rows, not every page of the
/// chunks' data.
pub(super) fn add_refs<'a>(
    conn: &Connection,
    lists: impl IntoIterator<Item = &'a [u8]>,
    delta: i64,
) -> Result<(), DataError> {
    let mut distinct = HashSet::new();
    for list in lists {
        distinct.extend(ids_of(list));
    }
    let mut update = conn
        .prepare("UPDATE refs SET n = n + ?2 WHERE id = ?1")
        .map_err(sql)?;
    for id in distinct {
        update.execute(params![&id[..], delta]).map_err(sql)?;
    }
    Ok(())
}

/// Removes every chunk nothing holds: those a removal left unreferenced and those an
/// interrupted write stored (only while no write runs: the caller holds the write lock).
pub(super) fn sweep(conn: &Connection) -> Result<u64, DataError> {
    let removed = conn
        .execute(
            "DELETE FROM chunks WHERE id IN (SELECT id FROM refs WHERE n = 0)",
            [],
        )
        .map_err(sql)?;
    conn.execute("DELETE FROM refs WHERE n = 0", [])
        .map_err(sql)?;
    Ok(removed as u64)
}

/// Gives free pages back to the filesystem (after a removal, outside any transaction).
pub(super) fn vacuum(conn: &Connection) -> Result<(), DataError> {
    conn.execute_batch("PRAGMA incremental_vacuum").map_err(sql)
}

/// Reads chunks checked against their names, for one thing (a snapshot or a WAL segment)
/// that `what` names in errors.
pub(super) struct Reader<'c> {
    stmt: rusqlite::Statement<'c>,
    what: String,
}

impl<'c> Reader<'c> {
    pub(super) fn new(conn: &'c Connection, what: String) -> Result<Reader<'c>, DataError> {
        let stmt = conn
            .prepare("SELECT raw_len, data FROM chunks WHERE id = ?1")
            .map_err(sql)?;
        Ok(Reader { stmt, what })
    }

    /// The bytes of `ids`, in order: fetched, then decompressed and re-hashed in parallel.
    /// A missing chunk, or one whose bytes no longer match its name, is an error naming it.
    pub(super) fn get(&mut self, ids: &[ChunkId]) -> Result<Vec<Vec<u8>>, DataError> {
        let mut stored = Vec::with_capacity(ids.len());
        for id in ids {
            let row: Option<(i64, Vec<u8>)> = self
                .stmt
                .query_row([&id[..]], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
                .map_err(sql)?;
            match row {
                Some((raw_len, data)) => stored.push((id, raw_len, data)),
                None => {
                    return Err(DataError::Database(format!(
                        "{}: chunk {} is missing from the backup repository; it cannot be restored",
                        self.what,
                        short(id)
                    )));
                }
            }
        }
        let what = &self.what;
        par_map(&stored, |(id, raw_len, data)| {
            let corrupted = || {
                DataError::Database(format!(
                    "{what}: chunk {} is corrupted (its bytes no longer match its hash); it cannot be restored",
                    short(id)
                ))
            };
            let raw_len = usize::try_from(*raw_len).map_err(|_| corrupted())?;
            let bytes = decompress(data, raw_len).map_err(|_| corrupted())?;
            if bytes.len() != raw_len || blake3::hash(&bytes).as_bytes() != *id {
                return Err(corrupted());
            }
            Ok(bytes)
        })
        .into_iter()
        .collect()
    }
}
