//! A clone's copy of a live cluster's files, through PostgreSQL's low-level backup API.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;
use turnout_supervisor::run_program;

use super::{COPY, Cluster, SUPERUSER, check_cancel, db_error, program_error};
use crate::{DataError, Progress};

impl Cluster {
    /// The source's data directory copied into `partial` while it serves, as PostgreSQL's
    /// low-level backup API allows: a temporary physical slot holds the WAL from before the
    /// backup starts; between `pg_backup_start` and `pg_backup_stop` (one session) `cp -a` copies
    /// the files (in-kernel `copy_file_range`, reflinks where the filesystem has them; torn
    /// pages are repaired by replaying the WAL, full-page writes being forced meanwhile); then
    /// the WAL segments from the backup's start to its end and the backup label are added, so
    /// the first start recovers to a consistent copy. The source's lock file and slots are not
    /// carried over. A cancel or failure removes `partial` and ends the backup.
    pub(super) async fn copy_files(
        &self,
        source: &Cluster,
        partial: &Path,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<(), DataError> {
        let copied = self
            .copy_files_inner(source, partial, progress, cancel)
            .await;
        if copied.is_err() && partial.exists() {
            let _ = std::fs::remove_dir_all(partial);
        }
        copied
    }

    async fn copy_files_inner(
        &self,
        source: &Cluster,
        partial: &Path,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<(), DataError> {
        let src = &source.spec;
        progress.line(&format!(
            "copying the cluster of {} (it keeps serving)",
            src.database
        ));
        let session = source
            .connect(SUPERUSER, &src.superuser_password, "postgres")
            .await?;
        session
            .batch_execute(
                "SELECT pg_create_physical_replication_slot('turnout_clone_' || pg_backend_pid(), true, true)",
            )
            .await
            .map_err(db_error("holding the source's WAL for the copy"))?;
        let start: String = session
            .query_one(
                "SELECT pg_walfile_name(pg_backup_start('turnout clone', true))",
                &[],
            )
            .await
            .map_err(db_error("starting a backup of the source"))?
            .get(0);
        let copied = self
            .copy_live(vec![src.dir.clone().into(), partial.into()], cancel)
            .await;
        let stopped = session
            .query_one(
                "SELECT pg_walfile_name(lsn), labelfile FROM pg_backup_stop(false)",
                &[],
            )
            .await
            .map_err(db_error("ending the backup of the source"));
        copied?;
        let row = stopped?;
        let (end, label): (String, String) = (row.get(0), row.get(1));
        check_cancel(cancel)?;
        // What must not come over: the source's lock file and options, its slots, its WAL
        // (replaced below by exactly the backup's), and the statistics of a running server.
        for file in ["postmaster.pid", "postmaster.opts", "backup_label.old"] {
            let path = partial.join(file);
            if path.exists() {
                std::fs::remove_file(&path).map_err(DataError::io("cannot remove", &path))?;
            }
        }
        for dir in ["pg_replslot", "pg_wal", "pg_stat_tmp"] {
            let dir = partial.join(dir);
            for entry in std::fs::read_dir(&dir).map_err(DataError::io("cannot read", &dir))? {
                let path = entry.map_err(DataError::io("cannot read", &dir))?.path();
                if path.is_dir() && path.file_name().is_some_and(|n| n == "archive_status") {
                    continue;
                }
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(DataError::io("cannot remove", &path))?;
            }
        }
        // The WAL from the backup's start to its end (`pg_backup_stop` switched segments, so
        // the last is complete).
        let wal = src.dir.join("pg_wal");
        let mut segments: Vec<OsString> = std::fs::read_dir(&wal)
            .map_err(DataError::io("cannot read", &wal))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| {
                let n = n.to_string_lossy();
                n.len() == 24
                    && n.bytes().all(|b| b.is_ascii_hexdigit())
                    && *n >= *start.as_str()
                    && *n <= *end.as_str()
            })
            .map(|n| wal.join(n).into_os_string())
            .collect();
        segments.sort();
        if segments.is_empty() {
            return Err(DataError::Database(format!(
                "the source's WAL from {start} to {end} is gone; try the clone again"
            )));
        }
        segments.push(partial.join("pg_wal").into_os_string());
        self.copy_live(segments, cancel).await?;
        self.sys.write_file(&partial.join("backup_label"), &label)?;
        let bytes = dir_bytes(partial);
        progress.bytes(bytes, Some(bytes));
        Ok(())
    }

    /// `cp -a` of a live data directory: a file the server removes while it is copied (a
    /// dropped table, a temporary file) is no error, since the WAL replay of the copy's first
    /// start removes it too; any other failure is.
    async fn copy_live(
        &self,
        args: Vec<OsString>,
        cancel: &CancellationToken,
    ) -> Result<(), DataError> {
        let mut cp = self.sys.tool("cp", [vec!["-a".into()], args].concat(), &[]);
        cp.program = PathBuf::from("/bin/cp");
        cp.timeout = COPY;
        let out = run_program(&cp, |_| {}, cancel.cancelled())
            .await
            .map_err(program_error)?;
        let vanished_only = !out.stderr.trim().is_empty()
            && out
                .stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .all(|l| l.ends_with("No such file or directory"));
        if out.status.success() || (out.status.code() == Some(1) && vanished_only) {
            return Ok(());
        }
        out.checked().map(|_| ()).map_err(program_error)
    }
}

/// The bytes of the files under `dir` (not following links), for the progress report.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.path(), e.file_type().ok()?)))
        .map(|(path, kind)| {
            if kind.is_dir() {
                dir_bytes(&path)
            } else if kind.is_file() {
                std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
            } else {
                0
            }
        })
        .sum()
}
