//! Files in and out of snapshots: a snapshot being written (its entries, cut into chunks as
//! they are added), and files written back from one (every chunk checked), under `.partial`
//! names renamed at the end.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::repo::{self, BATCH_BYTES, BATCH_CHUNKS, Put, Reader, sql};
use super::{Chunking, SnapshotStats, VerifyReport};
use crate::DataError;
use crate::files;
use crate::offload::Reporter;

/// FastCDC's minimum, average and maximum chunk sizes for content-defined chunking.
const CDC: (usize, usize, usize) = (16 << 10, 64 << 10, 256 << 10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    Dir,
    Link,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Link => "link",
        }
    }
    fn parse(s: &str) -> Result<Kind, DataError> {
        match s {
            "file" => Ok(Kind::File),
            "dir" => Ok(Kind::Dir),
            "link" => Ok(Kind::Link),
            other => Err(DataError::Database(format!(
                "the backup repository holds an entry of unknown kind {other:?}"
            ))),
        }
    }
}

/// One file, directory or link of a snapshot.
struct Entry {
    path: String,
    kind: Kind,
    mode: u32,
    size: u64,
    target: Option<String>,
    /// Its chunks' names, 32 bytes each (files only).
    chunks: Vec<u8>,
}

/// A snapshot being written (behind the repository's write lock).
pub(super) struct WriterState {
    pub(super) conn: Connection,
    pub(super) name: String,
    entries: Vec<Entry>,
    paths: HashSet<String>,
    pub(super) meta: BTreeMap<String, String>,
    put: Put,
    chunks: u64,
    logical: u64,
}

/// A relative path with `/` between non-empty components, none of them `.` or `..`.
pub(super) fn check_rel(rel: &str) -> Result<(), DataError> {
    let ok = !rel.is_empty()
        && !rel.starts_with('/')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(DataError::Invalid(format!(
            "{rel:?} is not a relative path inside a snapshot (components separated by '/', none empty, '.' or '..')"
        )))
    }
}

fn mode_of(meta: &fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

impl WriterState {
    pub(super) fn new(conn: Connection, name: String) -> WriterState {
        WriterState {
            conn,
            name,
            entries: Vec::new(),
            paths: HashSet::new(),
            meta: BTreeMap::new(),
            put: Put::default(),
            chunks: 0,
            logical: 0,
        }
    }

    fn push(&mut self, entry: Entry) -> Result<(), DataError> {
        check_rel(&entry.path)?;
        if !self.paths.insert(entry.path.clone()) {
            return Err(DataError::Invalid(format!(
                "snapshot {}: {} was added twice",
                self.name, entry.path
            )));
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Adds the file at `path` as `rel`; `done` counts its bytes for progress.
    pub(super) fn add_file(
        &mut self,
        rel: &str,
        path: &Path,
        chunking: Chunking,
        r: &Reporter,
        done: &mut u64,
        total: Option<u64>,
    ) -> Result<(), DataError> {
        check_rel(rel)?;
        let file = File::open(path).map_err(DataError::io("opening", path))?;
        let meta = file.metadata().map_err(DataError::io("reading", path))?;
        if !meta.is_file() {
            return Err(DataError::Invalid(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let mut list = Vec::new();
        let mut size = 0;
        let mut store = |state: &mut WriterState, pieces: &[&[u8]]| {
            r.check()?;
            let ids = repo::put_batch(&mut state.conn, pieces, &mut state.put)?;
            for (id, piece) in ids.iter().zip(pieces) {
                list.extend_from_slice(id);
                size += piece.len() as u64;
                *done += piece.len() as u64;
            }
            state.chunks += ids.len() as u64;
            r.bytes(*done, total);
            Ok::<_, DataError>(())
        };
        match chunking {
            Chunking::Fixed(block) => {
                let block = usize::try_from(block.max(1)).unwrap_or(4096);
                let mut buf = vec![0; (BATCH_BYTES / block).clamp(1, BATCH_CHUNKS) * block];
                let mut file = file;
                loop {
                    let n =
                        read_full(&mut file, &mut buf).map_err(DataError::io("reading", path))?;
                    if n == 0 {
                        break;
                    }
                    let pieces: Vec<&[u8]> = buf[..n].chunks(block).collect();
                    store(self, &pieces)?;
                    if n < buf.len() {
                        break;
                    }
                }
            }
            Chunking::Content => {
                let (min, avg, max) = CDC;
                let mut batch: Vec<Vec<u8>> = Vec::new();
                let mut bytes = 0;
                for chunk in fastcdc::v2020::StreamCDC::new(file, min, avg, max) {
                    let chunk = chunk.map_err(|e| {
                        DataError::io("reading", path)(std::io::Error::other(e.to_string()))
                    })?;
                    bytes += chunk.length;
                    batch.push(chunk.data);
                    if bytes >= BATCH_BYTES || batch.len() >= BATCH_CHUNKS {
                        let pieces: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                        store(self, &pieces)?;
                        batch.clear();
                        bytes = 0;
                    }
                }
                if !batch.is_empty() {
                    let pieces: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                    store(self, &pieces)?;
                }
            }
        }
        self.logical += size;
        self.push(Entry {
            path: rel.to_owned(),
            kind: Kind::File,
            mode: mode_of(&meta),
            size,
            target: None,
            chunks: list,
        })
    }

    /// Adds the tree at `dir` as `prefix/…`.
    pub(super) fn add_tree(
        &mut self,
        prefix: &str,
        dir: &Path,
        chunking: Chunking,
        r: &Reporter,
    ) -> Result<(), DataError> {
        check_rel(prefix)?;
        let meta = fs::symlink_metadata(dir).map_err(DataError::io("reading", dir))?;
        if !meta.is_dir() {
            return Err(DataError::Invalid(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        let total = files::tree_bytes(dir)?;
        let mut done = 0;
        self.add_dir(prefix, dir, &meta, chunking, r, &mut done, Some(total))
    }

    #[allow(clippy::too_many_arguments)]
    fn add_dir(
        &mut self,
        rel: &str,
        dir: &Path,
        meta: &fs::Metadata,
        chunking: Chunking,
        r: &Reporter,
        done: &mut u64,
        total: Option<u64>,
    ) -> Result<(), DataError> {
        r.check()?;
        self.push(Entry {
            path: rel.to_owned(),
            kind: Kind::Dir,
            mode: mode_of(meta),
            size: 0,
            target: None,
            chunks: Vec::new(),
        })?;
        let mut children = Vec::new();
        for entry in fs::read_dir(dir).map_err(DataError::io("reading", dir))? {
            let entry = entry.map_err(DataError::io("reading", dir))?;
            children.push(entry.path());
        }
        children.sort();
        for path in children {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                return Err(DataError::Invalid(format!(
                    "{}: a file name that is not UTF-8 cannot be backed up; rename it",
                    path.display()
                )));
            };
            let child = format!("{rel}/{name}");
            let meta = fs::symlink_metadata(&path).map_err(DataError::io("reading", &path))?;
            if meta.is_dir() {
                self.add_dir(&child, &path, &meta, chunking, r, done, total)?;
            } else if meta.is_file() {
                self.add_file(&child, &path, chunking, r, done, total)?;
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).map_err(DataError::io("reading", &path))?;
                let Some(target) = target.to_str() else {
                    return Err(DataError::Invalid(format!(
                        "{}: a link to a path that is not UTF-8 cannot be backed up",
                        path.display()
                    )));
                };
                self.push(Entry {
                    path: child,
                    kind: Kind::Link,
                    mode: 0o777,
                    size: 0,
                    target: Some(target.to_owned()),
                    chunks: Vec::new(),
                })?;
            } else {
                r.line(format!(
                    "skipping {}: not a file, directory or link",
                    path.display()
                ));
            }
        }
        Ok(())
    }

    /// Writes the manifest and counts its chunks' references, in one transaction.
    pub(super) fn commit(mut self) -> Result<SnapshotStats, DataError> {
        let list_bytes: u64 = self.entries.iter().map(|e| e.chunks.len() as u64).sum();
        let stats = SnapshotStats {
            logical_bytes: self.logical,
            stored_bytes: self.put.stored_bytes + list_bytes,
            chunks: self.chunks,
            new_chunks: self.put.new_chunks,
        };
        let meta = serde_json::to_string(&self.meta)
            .map_err(|e| DataError::Database(format!("recording the snapshot's values: {e}")))?;
        // The snapshot must survive a power cut once the caller is told it exists.
        self.conn
            .execute_batch("PRAGMA synchronous = FULL")
            .map_err(sql)?;
        let tx = self.conn.transaction().map_err(sql)?;
        tx.execute(
            "INSERT INTO manifests (name, created_at, logical_bytes, stored_bytes, meta)
             VALUES (?1, unixepoch(), ?2, ?3, ?4)",
            params![
                self.name,
                stats.logical_bytes as i64,
                stats.stored_bytes as i64,
                meta
            ],
        )
        .map_err(sql)?;
        let id = tx.last_insert_rowid();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO entries (manifest, path, kind, mode, size, target, chunks)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql)?;
            for e in &self.entries {
                insert
                    .execute(params![
                        id,
                        e.path,
                        e.kind.as_str(),
                        e.mode,
                        e.size as i64,
                        e.target,
                        e.chunks
                    ])
                    .map_err(sql)?;
            }
        }
        repo::add_refs(&tx, self.entries.iter().map(|e| e.chunks.as_slice()), 1)?;
        tx.commit().map_err(sql)?;
        Ok(stats)
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A snapshot's id in the manifests table.
pub(super) fn manifest_id(conn: &Connection, name: &str) -> Result<i64, DataError> {
    conn.query_row("SELECT id FROM manifests WHERE name = ?1", [name], |row| {
        row.get(0)
    })
    .optional()
    .map_err(sql)?
    .ok_or_else(|| DataError::Invalid(format!("no snapshot {name} in the backup repository")))
}

/// An entry as restores see it (its chunk list read when needed).
struct Stored {
    path: String,
    kind: Kind,
    mode: u32,
    size: u64,
    target: Option<String>,
}

fn entries(conn: &Connection, manifest: i64) -> Result<Vec<Stored>, DataError> {
    let mut stmt = conn
        .prepare(
            "SELECT path, kind, mode, size, target FROM entries WHERE manifest = ?1 ORDER BY path",
        )
        .map_err(sql)?;
    let rows = stmt
        .query_map([manifest], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, u32>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, Option<String>>(4)?,
            ))
        })
        .map_err(sql)?;
    let mut out = Vec::new();
    for row in rows {
        let (path, kind, mode, size, target) = row.map_err(sql)?;
        out.push(Stored {
            path,
            kind: Kind::parse(&kind)?,
            mode,
            size: u64::try_from(size).unwrap_or(0),
            target,
        });
    }
    Ok(out)
}

fn chunk_list(conn: &Connection, manifest: i64, path: &str) -> Result<Vec<u8>, DataError> {
    conn.query_row(
        "SELECT chunks FROM entries WHERE manifest = ?1 AND path = ?2",
        params![manifest, path],
        |row| row.get(0),
    )
    .map_err(sql)
}

/// `path` with `prefix` (a directory's path in the snapshot) taken off: `Some("")` for the
/// directory itself, `None` when outside it.
fn under<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let prefix = prefix.trim_end_matches('/');
    if path == prefix {
        Some("")
    } else {
        path.strip_prefix(prefix)?.strip_prefix('/')
    }
}

/// Whether snapshot `manifest` holds anything under `prefix`.
pub(super) fn holds(conn: &Connection, manifest: i64, prefix: &str) -> Result<bool, DataError> {
    Ok(entries(conn, manifest)?
        .iter()
        .any(|e| under(&e.path, prefix).is_some()))
}

/// Writes the file `path` of snapshot `name` as the new file `to` (given its recorded mode,
/// synced), every chunk checked; adds its bytes to `done`.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_file(
    conn: &Connection,
    name: &str,
    manifest: i64,
    path: &str,
    to: &Path,
    r: &Reporter,
    done: &mut u64,
    total: Option<u64>,
) -> Result<(), DataError> {
    let (mode, size): (u32, i64) = conn
        .query_row(
            "SELECT mode, size FROM entries WHERE manifest = ?1 AND path = ?2 AND kind = 'file'",
            params![manifest, path],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(sql)?
        .ok_or_else(|| DataError::Invalid(format!("snapshot {name} holds no file {path}")))?;
    let list = chunk_list(conn, manifest, path)?;
    let ids: Vec<_> = repo::ids_of(&list).collect();
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(DataError::io("creating", to))?;
    let mut reader = Reader::new(conn, format!("snapshot {name}"))?;
    let mut written = 0u64;
    for batch in ids.chunks(BATCH_CHUNKS / 4) {
        r.check()?;
        for bytes in reader.get(batch)? {
            out.write_all(&bytes)
                .map_err(DataError::io("writing", to))?;
            written += bytes.len() as u64;
            *done += bytes.len() as u64;
        }
        r.bytes(*done, total);
    }
    if i64::try_from(written).ok() != Some(size) {
        return Err(DataError::Database(format!(
            "snapshot {name}: {path} came out {written} bytes long, not the {size} recorded"
        )));
    }
    out.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
        .map_err(DataError::io("setting the mode of", to))?;
    out.sync_all().map_err(DataError::io("syncing", to))
}

/// Writes every entry of snapshot `name` under `prefix` into the new directory `dest` (via
/// `dest.partial`, removed on failure or cancel); returns the bytes written.
pub(super) fn restore_tree(
    conn: &Connection,
    name: &str,
    prefix: &str,
    dest: &Path,
    r: &Reporter,
) -> Result<u64, DataError> {
    files::refuse_existing(dest)?;
    let manifest = manifest_id(conn, name)?;
    let wanted: Vec<(String, Stored)> = entries(conn, manifest)?
        .into_iter()
        .filter_map(|e| Some((under(&e.path, prefix)?.to_owned(), e)))
        .collect();
    if wanted.is_empty() {
        return Err(DataError::Invalid(format!(
            "snapshot {name} holds nothing under {prefix}"
        )));
    }
    let total = wanted.iter().map(|(_, e)| e.size).sum();
    let partial = files::partial_path(dest);
    files::remove_tree(&partial)?;
    let written = write_tree(conn, name, manifest, &wanted, &partial, r, total).and_then(|n| {
        fs::rename(&partial, dest).map_err(DataError::io("renaming into", dest))?;
        files::sync_parent(dest)?;
        Ok(n)
    });
    if written.is_err() {
        files::remove_tree(&partial)?;
    }
    written
}

fn write_tree(
    conn: &Connection,
    name: &str,
    manifest: i64,
    wanted: &[(String, Stored)],
    root: &Path,
    r: &Reporter,
    total: u64,
) -> Result<u64, DataError> {
    let mkdir = |path: &Path| {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .map_err(DataError::io("creating", path))
    };
    mkdir(root)?;
    let mut done = 0;
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    // Sorted by path, so a directory comes before what it holds.
    for (rel, e) in wanted {
        r.check()?;
        let to = if rel.is_empty() {
            root.to_path_buf()
        } else {
            check_rel(rel)?;
            root.join(rel)
        };
        if let Some(parent) = to.parent().filter(|p| !p.exists()) {
            fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(parent)
                .map_err(DataError::io("creating", parent))?;
        }
        match e.kind {
            Kind::Dir => {
                if !rel.is_empty() {
                    mkdir(&to)?;
                }
                dirs.push((to, e.mode));
            }
            Kind::File => {
                write_file(
                    conn,
                    name,
                    manifest,
                    &e.path,
                    &to,
                    r,
                    &mut done,
                    Some(total),
                )?;
            }
            Kind::Link => {
                let target = e.target.as_deref().unwrap_or_default();
                std::os::unix::fs::symlink(target, &to).map_err(DataError::io("creating", &to))?;
            }
        }
    }
    // Last, deepest first, so that a read-only directory could still be filled.
    for (dir, mode) in dirs.iter().rev() {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(DataError::io("setting the mode of", dir))?;
    }
    Ok(done)
}

/// Reads every chunk of snapshot `name`, checking each.
pub(super) fn verify(
    conn: &Connection,
    name: &str,
    r: &Reporter,
) -> Result<VerifyReport, DataError> {
    let manifest = manifest_id(conn, name)?;
    let files: Vec<Stored> = entries(conn, manifest)?
        .into_iter()
        .filter(|e| e.kind == Kind::File)
        .collect();
    let total = files.iter().map(|e| e.size).sum();
    let mut report = VerifyReport::default();
    let mut reader = Reader::new(conn, format!("snapshot {name}"))?;
    for e in &files {
        let list = chunk_list(conn, manifest, &e.path)?;
        let ids: Vec<_> = repo::ids_of(&list).collect();
        for batch in ids.chunks(BATCH_CHUNKS / 4) {
            r.check()?;
            for bytes in reader.get(batch)? {
                report.chunks += 1;
                report.bytes += bytes.len() as u64;
            }
            r.bytes(report.bytes, Some(total));
        }
    }
    Ok(report)
}

/// Every chunk list of snapshot `manifest` (to count references off on removal).
pub(super) fn lists(conn: &Connection, manifest: i64) -> Result<Vec<Vec<u8>>, DataError> {
    let mut stmt = conn
        .prepare("SELECT chunks FROM entries WHERE manifest = ?1")
        .map_err(sql)?;
    let rows = stmt
        .query_map([manifest], |row| row.get::<_, Vec<u8>>(0))
        .map_err(sql)?;
    rows.collect::<Result<_, _>>().map_err(sql)
}
