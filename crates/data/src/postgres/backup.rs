//! PostgreSQL backups: base backups of a cluster's files into the app's backup repository
//! (online, through the low-level backup API like a clone), its WAL archive (PostgreSQL's
//! `basic_archive` module writes each finished segment into the cluster's archive directory;
//! Turnout ingests them into the repository, checksummed and compressed, and removes them), and
//! restores to any moment inside the WAL window: a new cluster from the newest base backup
//! before that moment, its WAL replayed up to it, then made safe like a clone (roles,
//! passwords, subscriptions, slots) before anyone but Turnout can log in.

use std::path::Path;
use std::time::Duration;

mod restore;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::{Cluster, check_cancel, db_error};
use crate::backup::{Chunking, Repo, SnapshotStats, SnapshotWriter};
use crate::{DataError, Progress, offload};

/// Where a restore stops replaying WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// The end of the base backup (the snapshot as it was).
    EndOfBackup,
    /// This moment (unix microseconds): every transaction committed at or before it.
    Time(i64),
}

/// A base backup written into the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseBackup {
    pub stats: SnapshotStats,
    /// The first WAL segment its restore needs.
    pub start_segment: String,
}

/// What one WAL ingest did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalIngest {
    pub segments: u64,
    pub stored_bytes: u64,
}

/// The WAL a stream holds in the repository: its segments' range and when the newest was
/// archived (unix seconds), the end of the window restores can reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRange {
    pub first: String,
    pub last: String,
    pub last_archived_at: i64,
}

/// Where a snapshot keeps the data directory's files and the storage directory's.
const DATA_PREFIX: &str = "pgdata";
const STORAGE_PREFIX: &str = "storage";

/// What a base backup records beside its files: `pg_backup_stop`'s backup label, the first and
/// last WAL segment its restore needs, and the cluster's WAL segment size (bytes).
const META_LABEL: &str = "pg_backup_label";
const META_WAL_START: &str = "pg_wal_start";
const META_WAL_STOP: &str = "pg_wal_stop";
const META_SEGMENT_SIZE: &str = "pg_wal_segment_size";
/// When `pg_backup_stop` returned (the server's clock, unix microseconds): the earliest moment
/// the snapshot can be restored to.
const META_END: &str = "pg_backup_end";
/// The data directory's directories (relative, one a line): a restore makes them all, empty
/// ones included.
const META_DIRS: &str = "pg_dirs";
/// Present when the snapshot holds a storage directory.
const META_STORAGE: &str = "storage";

/// Directories of the data directory whose contents a base backup leaves out, as
/// pg_basebackup does: the WAL (a restore takes it from the stream), replication slots, and
/// state a server rebuilds when it starts. A restore makes them empty.
const EMPTY_DIRS: [&str; 8] = [
    "pg_wal",
    "pg_replslot",
    "pg_stat_tmp",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Files of the data directory a base backup leaves out: the running server's lock file and
/// options, other backups' labels, files being rewritten.
const SKIPPED_FILES: [&str; 8] = [
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "current_logfiles",
    "postgresql.auto.conf.tmp",
];

/// How long the archiver may take to archive a finished segment.
const ARCHIVE_WAIT: Duration = Duration::from_secs(60);

impl Cluster {
    /// A base backup of this running cluster as snapshot `name` (with `storage`, the
    /// environment's storage directory, as `storage/…`), while it serves.
    ///
    /// Between `pg_backup_start` and `pg_backup_stop` (one session) the data directory's files
    /// are read into the repository in 8 KiB blocks (PostgreSQL's pages: a block unchanged
    /// since another snapshot is stored once); pages torn by concurrent writes are repaired
    /// by replaying the WAL at restore, full-page writes being forced meanwhile. The backup's
    /// label goes into the manifest; the WAL segment that ends the backup is waited for in the
    /// archive, so the snapshot is restorable once the archive is ingested.
    pub async fn snapshot_into(
        &self,
        repo: &Repo,
        name: &str,
        storage: &Path,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<BaseBackup, DataError> {
        let spec = &self.spec;
        self.archive_dir()?;
        progress.line(&format!(
            "backing up the cluster of {} (it keeps serving)",
            spec.database
        ));
        let mut writer = repo.writer(name).await?;
        let session = self.admin("postgres").await?;
        let segment_size: String = session
            .query_one(
                "SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'",
                &[],
            )
            .await
            .map_err(db_error("reading the WAL segment size"))?
            .get(0);
        let start: String = session
            .query_one(
                "SELECT pg_walfile_name(pg_backup_start($1, true))",
                &[&format!("turnout {name}")],
            )
            .await
            .map_err(db_error("starting a base backup"))?
            .get(0);
        let added = self.add_data_files(&mut writer, progress, cancel).await;
        let stopped = session
            .query_one(
                "SELECT pg_walfile_name(lsn), labelfile, \
                 (extract(epoch FROM clock_timestamp()) * 1000000)::bigint FROM pg_backup_stop(false)",
                &[],
            )
            .await
            .map_err(db_error("ending the base backup"));
        added?;
        let row = stopped?;
        let (stop, label, end): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        writer.set_meta("engine", "postgres");
        writer.set_meta(META_LABEL, &label);
        writer.set_meta(META_WAL_START, &start);
        writer.set_meta(META_WAL_STOP, &stop);
        writer.set_meta(META_SEGMENT_SIZE, &segment_size);
        writer.set_meta(META_END, &end.to_string());
        if storage.exists() {
            writer
                .add_tree(STORAGE_PREFIX, storage, Chunking::Content, progress, cancel)
                .await?;
            writer.set_meta(META_STORAGE, STORAGE_PREFIX);
        }
        check_cancel(cancel)?;
        // `pg_backup_stop` finished the backup's last segment; once it is archived, the base
        // backup and the WAL it needs are all there is to a restore.
        progress.line(&format!("waiting until WAL segment {stop} is archived"));
        self.wait_archived(&session, &stop, cancel).await?;
        progress.line(&format!("recording snapshot {name}"));
        let stats = writer.commit().await?;
        progress.line(&format!(
            "base backup {name}: {} MiB, {} MiB new in the repository",
            stats.logical_bytes >> 20,
            stats.stored_bytes >> 20
        ));
        Ok(BaseBackup {
            stats,
            start_segment: start,
        })
    }

    /// Every file of the data directory a restore needs, as `pgdata/…`, in 8 KiB blocks, and
    /// the list of its directories. A file the server removes meanwhile (a dropped table, a
    /// temporary file) is no error: the replay of the backup's WAL removes it too.
    async fn add_data_files(
        &self,
        writer: &mut SnapshotWriter,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<(), DataError> {
        let dir = self.spec.dir.clone();
        let DataTree { dirs, files } = offload::blocking(move || data_tree(&dir)).await?;
        writer.set_meta(META_DIRS, &dirs.join("\n"));
        let total = files.iter().map(|(_, size)| size).sum();
        let mut done = 0;
        for (rel, size) in files {
            check_cancel(cancel)?;
            let path = self.spec.dir.join(&rel);
            let rel = format!("{DATA_PREFIX}/{rel}");
            let cumulative = Cumulative {
                inner: progress,
                before: done,
                total,
            };
            match writer
                .add_file(&rel, &path, Chunking::Fixed(8192), &cumulative, cancel)
                .await
            {
                Err(DataError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                added => added?,
            }
            done += size;
        }
        progress.bytes(done, Some(total));
        Ok(())
    }

    /// Asks the server to finish its current WAL segment (`pg_switch_wal`) and waits until the
    /// archiver has written it into the archive directory, so the WAL reaches now. A
    /// transaction is committed first: its commit record, stamped now, is what lets a restore
    /// to any earlier moment stop exactly there, however quiet the app has been since.
    pub async fn flush_wal(&self, cancel: &CancellationToken) -> Result<(), DataError> {
        self.archive_dir()?;
        let client = self.admin("postgres").await?;
        client
            .batch_execute("SELECT txid_current()")
            .await
            .map_err(db_error("committing the WAL flush's transaction"))?;
        let segment: String = client
            .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
            .await
            .map_err(db_error("switching to a new WAL segment"))?
            .get(0);
        self.wait_archived(&client, &segment, cancel).await
    }

    /// Waits until the archiver has archived `segment` (or a later one).
    async fn wait_archived(
        &self,
        client: &Client,
        segment: &str,
        cancel: &CancellationToken,
    ) -> Result<(), DataError> {
        let archive = self.archive_dir()?;
        let deadline = tokio::time::Instant::now() + ARCHIVE_WAIT;
        loop {
            if archive.join(segment).exists() {
                return Ok(());
            }
            let row = client
                .query_one(
                    "SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, '') FROM pg_stat_archiver",
                    &[],
                )
                .await
                .map_err(db_error("reading the archiver's progress"))?;
            let (archived, failed): (String, String) = (row.get(0), row.get(1));
            if is_segment(&archived) && *archived >= *segment {
                return Ok(());
            }
            check_cancel(cancel)?;
            if tokio::time::Instant::now() > deadline {
                return Err(DataError::Database(format!(
                    "PostgreSQL did not archive WAL segment {segment} of {} into {} within {} s{}; see its log {}",
                    self.spec.database,
                    archive.display(),
                    ARCHIVE_WAIT.as_secs(),
                    if failed.is_empty() {
                        String::new()
                    } else {
                        format!(" (archiving {failed} failed)")
                    },
                    self.spec.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Moves every finished segment from the cluster's archive directory into `repo` as WAL
    /// stream `stream` (checksummed, compressed), removing each once stored. Timeline history
    /// files go with the segments; a promotion's `.partial` segment and backup history files,
    /// which no restore reads, are removed; a file the archiver is still writing is left.
    pub async fn ingest_wal(
        &self,
        repo: &Repo,
        stream: &str,
        cancel: &CancellationToken,
    ) -> Result<WalIngest, DataError> {
        let archive = self.archive_dir()?;
        let mut ingest = WalIngest::default();
        for (file_name, kept) in archived_files(archive)? {
            check_cancel(cancel)?;
            let path = archive.join(&file_name);
            if kept {
                ingest.stored_bytes += repo.put_wal(stream, &file_name, &path).await?;
                ingest.segments += 1;
            }
            std::fs::remove_file(&path).map_err(DataError::io("cannot remove", &path))?;
        }
        Ok(ingest)
    }

    /// Removes every finished segment from the archive directory (an environment without
    /// backups: its WAL is not kept).
    pub async fn discard_archived_wal(&self) -> Result<u64, DataError> {
        let archive = self.archive_dir()?;
        let mut removed = 0;
        for (file_name, _) in archived_files(archive)? {
            let path = archive.join(&file_name);
            std::fs::remove_file(&path).map_err(DataError::io("cannot remove", &path))?;
            removed += 1;
        }
        Ok(removed)
    }

    fn archive_dir(&self) -> Result<&Path, DataError> {
        self.spec.archive.as_deref().ok_or_else(|| {
            DataError::Invalid(format!(
                "the cluster of {} archives no WAL (it was made before Turnout had backups): clone the environment's data into a new generation to back it up",
                self.spec.database
            ))
        })
    }
}

/// The data directory's directories and the files a restore needs (relative paths, `/`
/// between components, with their sizes), sorted: all but what [`EMPTY_DIRS`] hold, the
/// [`SKIPPED_FILES`] at its top, relation cache files (`pg_internal.init`, rebuilt at start)
/// and temporary files (in `pgsql_tmp` directories). What vanishes during the walk is left
/// out; a link (a tablespace) is refused, since a restore could not put back what it points
/// to.
fn data_tree(root: &Path) -> Result<DataTree, DataError> {
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    let mut pending = vec![String::new()];
    while let Some(rel) = pending.pop() {
        let dir = root.join(&rel);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !rel.is_empty() => continue,
            Err(e) => return Err(DataError::io("cannot read", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(DataError::io("cannot read", &dir))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            let top = rel.is_empty();
            if (top && SKIPPED_FILES.contains(&file_name)) || file_name == "pg_internal.init" {
                continue;
            }
            let child = if top {
                file_name.to_owned()
            } else {
                format!("{rel}/{file_name}")
            };
            let meta = match std::fs::symlink_metadata(entry.path()) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(DataError::io("cannot read", entry.path())(e)),
            };
            if meta.is_dir() {
                dirs.push(child.clone());
                let emptied = (top && EMPTY_DIRS.contains(&file_name)) || file_name == "pgsql_tmp";
                if !emptied {
                    pending.push(child);
                }
            } else if meta.is_file() {
                files.push((child, meta.len()));
            } else if meta.file_type().is_symlink() {
                return Err(DataError::Invalid(format!(
                    "the data directory {} holds a link, {child} (a tablespace?), which backups do not follow: keep every table in the default tablespace",
                    root.display()
                )));
            }
        }
    }
    dirs.sort();
    files.sort();
    Ok(DataTree { dirs, files })
}

/// What [`data_tree`] found.
#[derive(Debug)]
struct DataTree {
    dirs: Vec<String>,
    /// Each file's path and size.
    files: Vec<(String, u64)>,
}

/// Progress of one file among many, reported as progress of them all.
struct Cumulative<'a> {
    inner: &'a dyn Progress,
    before: u64,
    total: u64,
}

impl Progress for Cumulative<'_> {
    fn line(&self, text: &str) {
        self.inner.line(text);
    }
    fn bytes(&self, done: u64, _: Option<u64>) {
        self.inner.bytes(self.before + done, Some(self.total));
    }
    fn table_masked(&self, table: &str, rows: u64) {
        self.inner.table_masked(table, rows);
    }
}

/// A WAL segment's name: 24 hexadecimal digits (timeline, log, segment).
fn is_segment(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The finished files of an archive directory, sorted, each with whether a restore may need it
/// (segments and timeline history files) or not (a promotion's `.partial` segment, backup
/// history files). The archiver's temporary files are not finished.
fn archived_files(archive: &Path) -> Result<Vec<(String, bool)>, DataError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(archive).map_err(DataError::io("cannot read", archive))? {
        let entry = entry.map_err(DataError::io("cannot read", archive))?;
        let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        let kept = if is_segment(&file_name) {
            true
        } else if let Some(timeline) = file_name.strip_suffix(".history") {
            if !hex(timeline, 8) {
                continue;
            }
            true
        } else if let Some(segment) = file_name.strip_suffix(".partial") {
            if !is_segment(segment) {
                continue;
            }
            false
        } else if let Some(backup) = file_name.strip_suffix(".backup") {
            match backup.split_once('.') {
                Some((segment, offset)) if is_segment(segment) && hex(offset, 8) => false,
                _ => continue,
            }
        } else {
            continue;
        };
        files.push((file_name, kept));
    }
    files.sort();
    Ok(files)
}

impl Repo {
    /// The WAL stream `stream` holds, if any.
    pub async fn wal_range(&self, stream: &str) -> Result<Option<WalRange>, DataError> {
        self.wal_range_of(stream).await
    }

    /// Removes stream `stream`'s segments older than `keep_from` (the oldest kept base
    /// backup's start segment); `None` removes the whole stream.
    pub async fn prune_wal(&self, stream: &str, keep_from: Option<&str>) -> Result<u64, DataError> {
        self.prune_wal_of(stream, keep_from).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_backup_leaves_out_what_a_restore_rebuilds() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in [
            "base/1",
            "base/pgsql_tmp/pgsql_tmp1.0.fileset",
            "global",
            "pg_wal/archive_status",
            "pg_stat_tmp",
            "pg_logical/snapshots",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "PG_VERSION",
            "postmaster.pid",
            "backup_label.old",
            "base/1/1259",
            "base/1/pg_internal.init",
            "base/pgsql_tmp/pgsql_tmp1.0",
            "global/pg_control",
            "pg_wal/000000010000000000000001",
            "pg_stat_tmp/global.stat",
        ] {
            std::fs::write(root.join(f), "x").unwrap();
        }
        let tree = data_tree(root).unwrap();
        assert_eq!(
            tree.dirs,
            [
                "base",
                "base/1",
                "base/pgsql_tmp",
                "global",
                "pg_logical",
                "pg_logical/snapshots",
                "pg_stat_tmp",
                "pg_wal"
            ]
        );
        let files: Vec<&str> = tree.files.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(files, ["PG_VERSION", "base/1/1259", "global/pg_control"]);
        // A tablespace's link is refused.
        std::os::unix::fs::symlink("/elsewhere", root.join("pg_tblspc")).unwrap();
        let e = data_tree(root).unwrap_err();
        assert!(
            matches!(&e, DataError::Invalid(m) if m.contains("pg_tblspc") && m.contains("tablespace")),
            "{e}"
        );
    }

    #[test]
    fn only_finished_archive_files_are_taken() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "000000010000000000000002",
            "00000002.history",
            "000000010000000000000003.partial",
            "000000010000000000000002.00000028.backup",
            "archtemp.000000010000000000000004.123.456",
            "0000000100000000000000zz",
            "notes.history",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        assert_eq!(
            archived_files(dir.path()).unwrap(),
            vec![
                ("000000010000000000000002".to_owned(), true),
                ("000000010000000000000002.00000028.backup".to_owned(), false),
                ("000000010000000000000003.partial".to_owned(), false),
                ("00000002.history".to_owned(), true),
            ]
        );
    }
}
