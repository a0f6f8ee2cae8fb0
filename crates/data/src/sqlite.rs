//! SQLite: one database file per generation of an environment's data, in WAL mode so that an
//! online copy (a read transaction) never blocks the app's writers.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::functions::FunctionFlags;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokio_util::sync::CancellationToken;

use crate::offload::{self, Reporter};
use crate::{Access, DataError, MaskReport, MaskRule, MaskRules, Progress, files, mask};

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
        match access {
            // SQLite's own read-only open (`mode=ro` in its URI form): writes fail with
            // "attempt to write a readonly database".
            Access::Read => Ok(format!("{}?mode=ro", self.url())),
            Access::ReadWrite => Ok(self.url()),
            Access::Append => Err(DataError::Invalid(
                "SQLite cannot enforce append-only access (anyone who may insert may also update and delete); attach with --mode read or read-write, or use engine = \"postgres\" in turnout.toml's [data] for append".into(),
            )),
        }
    }
    /// Creates an empty database in WAL mode (the file must not exist).
    pub async fn create(&self) -> Result<(), DataError> {
        let path = self.path.clone();
        offload::blocking(move || {
            files::refuse_existing(&path)?;
            let conn = open(&path, OpenFlags::SQLITE_OPEN_CREATE)?;
            set_wal(&conn, &path)
        })
        .await
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
        self.copy_to_using(CopyMethod::Auto, dst, progress, cancel)
            .await
    }
    /// [`copy_to`](Self::copy_to) by a given method (benchmarks and tests compare them).
    pub async fn copy_to_using(
        &self,
        method: CopyMethod,
        dst: &SqliteDb,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<u64, DataError> {
        let (src, dst) = (self.path.clone(), dst.path.clone());
        offload::run(progress, cancel, move |r| {
            copy_blocking(&src, &dst, method, true, r)
        })
        .await
    }
    /// Checks the whole database (`PRAGMA integrity_check`): an error listing what SQLite
    /// found unless it says `ok`.
    pub async fn integrity_check(&self) -> Result<(), DataError> {
        let path = self.path.clone();
        offload::blocking(move || {
            let conn = open(&path, OpenFlags::empty())?;
            let found: Vec<String> = conn
                .prepare("PRAGMA integrity_check")
                .and_then(|mut s| s.query_map([], |row| row.get(0))?.collect())
                .map_err(db_error("checking", &path))?;
            if found.len() == 1 && found[0] == "ok" {
                Ok(())
            } else {
                Err(DataError::Database(format!(
                    "the SQLite database {} is damaged: {}",
                    path.display(),
                    found.join("; ")
                )))
            }
        })
        .await
    }
    /// Runs a script of SQL statements (a seed file) in one transaction.
    pub async fn run_sql(&self, sql: &str) -> Result<(), DataError> {
        let (path, sql) = (self.path.clone(), sql.to_owned());
        offload::blocking(move || {
            let mut conn = open(&path, OpenFlags::empty())?;
            let failed = |e| DataError::Database(format!("SQL on {}: {e}", path.display()));
            let tx = conn.transaction().map_err(failed)?;
            tx.execute_batch(&sql).map_err(failed)?;
            tx.commit().map_err(failed)
        })
        .await
    }
    /// Every (table, column) of the database's own tables.
    pub async fn columns(&self) -> Result<Vec<(String, String)>, DataError> {
        let path = self.path.clone();
        offload::blocking(move || {
            let conn = open(&path, OpenFlags::empty())?;
            columns(&conn).map_err(db_error("reading the tables of", &path))
        })
        .await
    }
    /// Checks `rules` strictly against the columns, then masks every table in one transaction
    /// (reporting each table as it is done). Triggers are set aside while it runs (dropped and
    /// re-created in the same transaction), so masking runs none of the app's logic.
    pub async fn mask(
        &self,
        rules: &MaskRules,
        key: &str,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<MaskReport, DataError> {
        let (path, rules, key) = (self.path.clone(), rules.clone(), key.to_owned());
        offload::run(progress, cancel, move |r| {
            mask_blocking(&path, &rules, key, r)
        })
        .await
    }
    /// The bytes of the database file and its WAL.
    pub async fn size(&self) -> Result<u64, DataError> {
        let path = self.path.clone();
        offload::blocking(move || {
            let main = std::fs::metadata(&path).map_err(DataError::io("reading", &path))?;
            let wal = files::suffixed(&path, "-wal");
            let wal = match std::fs::metadata(&wal) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == ErrorKind::NotFound => 0,
                Err(e) => return Err(DataError::io("reading", wal)(e)),
            };
            Ok(main.len() + wal)
        })
        .await
    }
    /// Removes the database file and its companions (absent ones are fine).
    pub async fn remove(&self) -> Result<(), DataError> {
        let path = self.path.clone();
        offload::blocking(move || remove_files(&path)).await
    }
}

/// How [`SqliteDb::copy_to_using`] copies. Both hold one read transaction on the source for
/// the whole copy, so the copy is the database as of one commit and writers go on (in WAL mode
/// they never wait for a reader).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMethod {
    /// [`Files`](CopyMethod::Files), falling back to [`Backup`](CopyMethod::Backup) if it fails.
    Auto,
    /// The main file and the WAL copied in the kernel (reflinked on XFS and btrfs) while the
    /// read transaction pins the snapshot, each as far as it reached when the snapshot was
    /// taken, then the copy's WAL checkpointed into its main file.
    ///
    /// Why it is consistent: while a reader holds a snapshot ending at WAL frame N, a
    /// checkpoint only writes pages into the main file from frames ≤ N (which the copied WAL
    /// has, and which override those pages on recovery), never a page the snapshot reads from
    /// the main file, and the WAL is not restarted, so frames ≤ N stay where they are, inside
    /// the length the WAL had when the snapshot began. Frames after N the copy may catch are
    /// later commits; recovery keeps the complete ones whose checksums chain, so the copy is
    /// the database as of one commit at or after the snapshot.
    Files,
    /// SQLite's online backup API, page by page through the source's read transaction.
    Backup,
}

/// Pages per backup step (4 MiB of 4 KiB pages): progress and cancel checks between steps.
const BACKUP_PAGES: std::ffi::c_int = 1024;

fn open(path: &Path, extra: OpenFlags) -> Result<Connection, DataError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | extra;
    let conn = Connection::open_with_flags(path, flags).map_err(db_error("opening", path))?;
    // The app may be writing; a lock held for a moment is waited for, not an error.
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(db_error("opening", path))?;
    Ok(conn)
}

fn db_error(what: &'static str, path: &Path) -> impl Fn(rusqlite::Error) -> DataError {
    let path = path.to_path_buf();
    move |e| {
        DataError::Database(format!(
            "{what} the SQLite database {}: {e}",
            path.display()
        ))
    }
}

fn set_wal(conn: &Connection, path: &Path) -> Result<(), DataError> {
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(db_error("setting WAL mode on", path))?;
    if mode.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(DataError::Database(format!(
            "{} stayed in journal mode {mode}, not WAL",
            path.display()
        )))
    }
}

const COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

pub(crate) fn remove_files(path: &Path) -> Result<(), DataError> {
    let all = std::iter::once(path.to_path_buf())
        .chain(COMPANIONS.iter().map(|s| files::suffixed(path, s)));
    for file in all {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(DataError::io("removing", file)(e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The copy behind [`SqliteDb::copy_to_using`]; `sync` puts it on disk before the rename (a
/// backup's scratch copy, read once and removed, skips that).
pub(crate) fn copy_blocking(
    src: &Path,
    dst: &Path,
    method: CopyMethod,
    sync: bool,
    r: &Reporter,
) -> Result<u64, DataError> {
    files::refuse_existing(dst)?;
    let partial = files::partial_path(dst);
    remove_files(&partial)?;
    let source = open(src, OpenFlags::empty())?;
    // One read transaction for the whole copy: the snapshot every page comes from.
    let page_size = source
        .execute_batch("BEGIN")
        .and_then(|()| source.query_row("PRAGMA page_size", [], |row| row.get::<_, u32>(0)))
        .and_then(|size| source.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(size)))
        .map_err(db_error("reading", src))?;
    let page_size = u64::from(page_size);
    let copied = match method {
        CopyMethod::Files => copy_files(&source, src, &partial, r),
        CopyMethod::Backup => copy_backup(&source, src, &partial, page_size, r),
        CopyMethod::Auto => match copy_files(&source, src, &partial, r) {
            Err(DataError::Cancelled) => Err(DataError::Cancelled),
            Err(e) => {
                r.line(format!(
                    "copying the files failed ({e}); copying page by page"
                ));
                remove_files(&partial)?;
                copy_backup(&source, src, &partial, page_size, r)
            }
            ok => ok,
        },
    };
    drop(source);
    let finished = copied.and_then(|bytes| {
        finish(&partial, sync)?;
        std::fs::rename(&partial, dst).map_err(DataError::io("renaming into", dst))?;
        files::sync_parent(dst)?;
        Ok(bytes)
    });
    if finished.is_err() {
        remove_files(&partial)?;
    }
    finished
}

fn copy_files(
    source: &Connection,
    src: &Path,
    partial: &Path,
    r: &Reporter,
) -> Result<u64, DataError> {
    let wal = files::suffixed(src, "-wal");
    let in_wal_mode = source
        .query_row("PRAGMA journal_mode", [], |row| row.get::<_, String>(0))
        .map_err(db_error("reading", src))?
        .eq_ignore_ascii_case("wal");
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len());
    let main = size(src).map_err(DataError::io("reading", src))?;
    // In WAL mode the WAL exists while a connection (ours) is open.
    let wal_len = if in_wal_mode {
        Some(size(&wal).map_err(DataError::io("reading", &wal))?)
    } else {
        None
    };
    let total = Some(main + wal_len.unwrap_or(0));
    let mut done = 0;
    // Only as far as the files reached when the snapshot was taken: everything it needs is
    // there, and the app's later writes would make a copy that chases them never end.
    files::copy_file(src, partial, 0o600, Some(main), r, &mut done, total)?;
    if let Some(len) = wal_len {
        let to = files::suffixed(partial, "-wal");
        files::copy_file(&wal, &to, 0o600, Some(len), r, &mut done, total)?;
    }
    // Recovery reads the copied WAL; the checkpoint folds it into the main file.
    let copy = open(partial, OpenFlags::empty())?;
    copy.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    })
    .map_err(db_error("checkpointing the copy", partial))
    .and_then(|busy| match busy {
        0 => Ok(()),
        _ => Err(DataError::Database(format!(
            "checkpointing the copy {}: it is busy",
            partial.display()
        ))),
    })?;
    Ok(done)
}

fn copy_backup(
    source: &Connection,
    src: &Path,
    partial: &Path,
    page_size: u64,
    r: &Reporter,
) -> Result<u64, DataError> {
    let mut dest = open(partial, OpenFlags::SQLITE_OPEN_CREATE)?;
    // A new file no one else opens until it is renamed: nothing to journal or sync page by
    // page (`finish` syncs it once).
    dest.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF")
        .map_err(db_error("preparing", partial))?;
    let backup = Backup::new(source, &mut dest).map_err(db_error("copying", src))?;
    loop {
        r.check()?;
        let step = backup
            .step(BACKUP_PAGES)
            .map_err(db_error("copying", src))?;
        let p = backup.progress();
        let pages = |n: std::ffi::c_int| u64::try_from(n).unwrap_or(0) * page_size;
        r.bytes(pages(p.pagecount - p.remaining), Some(pages(p.pagecount)));
        match step {
            StepResult::Done => return Ok(pages(p.pagecount)),
            // Only a writer in this very connection could lock it; there is none, but wait
            // rather than fail if SQLite says so.
            StepResult::Busy | StepResult::Locked => std::thread::sleep(Duration::from_millis(10)),
            _ => {}
        }
    }
}

/// Puts the finished copy in WAL mode (and on disk when `sync`).
fn finish(partial: &Path, sync: bool) -> Result<(), DataError> {
    let copy = open(partial, OpenFlags::empty())?;
    set_wal(&copy, partial)?;
    drop(copy);
    // Closing the last connection checkpointed and removed the WAL; nothing may be left in it.
    let wal = files::suffixed(partial, "-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return Err(DataError::Database(format!(
            "the copy's WAL {} was not folded into it",
            wal.display()
        )));
    }
    for companion in ["-wal", "-shm"] {
        let path = files::suffixed(partial, companion);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(DataError::io("removing", path)(e));
            }
            _ => {}
        }
    }
    if !sync {
        return Ok(());
    }
    std::fs::File::open(partial)
        .and_then(|f| f.sync_all())
        .map_err(DataError::io("syncing", partial))
}

fn columns(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    let mut info = conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
    for table in tables {
        for column in info.query_map([&table], |row| row.get::<_, String>(0))? {
            out.push((table.clone(), column?));
        }
    }
    Ok(out)
}

/// `"name"`, with any `"` doubled: an identifier SQLite reads back as exactly `name`.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn mask_blocking(
    path: &Path,
    rules: &MaskRules,
    key: String,
    r: &Reporter,
) -> Result<MaskReport, DataError> {
    let mut conn = open(path, OpenFlags::empty())?;
    let failed = db_error("masking", path);
    conn.create_scalar_function(
        "turnout_mask",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        move |ctx| {
            let rule: MaskRule = ctx
                .get::<String>(0)?
                .parse()
                .map_err(|e: String| rusqlite::Error::UserFunctionError(e.into()))?;
            Ok(match ctx.get_raw(1) {
                ValueRef::Null => None,
                ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
                    mask::pseudonym_of_bytes(rule, &key, bytes)
                }
                ValueRef::Integer(i) => {
                    mask::pseudonym_of_bytes(rule, &key, i.to_string().as_bytes())
                }
                ValueRef::Real(f) => mask::pseudonym_of_bytes(rule, &key, f.to_string().as_bytes()),
            })
        },
    )
    .map_err(&failed)?;
    let tx = conn.transaction().map_err(&failed)?;
    let columns = columns(&tx).map_err(&failed)?;
    mask::check_strict(rules, &columns).map_err(DataError::Unmasked)?;
    let triggers: Vec<(String, String)> = tx
        .prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' AND sql IS NOT NULL")
        .and_then(|mut s| {
            s.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(&failed)?;
    for (name, _) in &triggers {
        tx.execute_batch(&format!("DROP TRIGGER {}", quote(name)))
            .map_err(&failed)?;
    }
    let mut report = MaskReport::default();
    // Each table with a column to change, and those columns (`keep` ones are left alone).
    let mut by_table: std::collections::BTreeMap<&str, Vec<(&str, MaskRule)>> = Default::default();
    for (table, column) in &columns {
        match rules.rule(table, column) {
            None | Some(MaskRule::Keep) => {}
            Some(rule) => by_table.entry(table).or_default().push((column, rule)),
        }
    }
    for (table, cols) in by_table {
        r.check()?;
        let set: Vec<String> = cols
            .iter()
            .map(|(column, rule)| match rule {
                MaskRule::Null => format!("{} = NULL", quote(column)),
                // `as_str` is one of the rule spellings, never user text.
                rule => format!(
                    "{c} = turnout_mask('{}', CAST({c} AS TEXT))",
                    rule.as_str(),
                    c = quote(column)
                ),
            })
            .collect();
        let sql = format!("UPDATE {} SET {}", quote(table), set.join(", "));
        let rows = tx.execute(&sql, []).map_err(|e| {
            let hint = match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => {
                    " (fake values can repeat and null breaks NOT NULL: use \"hash\" for a UNIQUE column, or another rule)"
                }
                Some(rusqlite::ErrorCode::TypeMismatch) => {
                    " (the rules write text; an INTEGER PRIMARY KEY or a STRICT table's non-text column takes \"keep\" or \"null\")"
                }
                _ => "",
            };
            DataError::Invalid(format!("masking table {table} failed: {e}{hint}"))
        })? as u64;
        r.table_masked(table, rows);
        report.tables.push((table.to_owned(), rows));
    }
    for (_, sql) in &triggers {
        tx.execute_batch(sql).map_err(&failed)?;
    }
    r.check()?;
    tx.commit().map_err(&failed)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;
    use crate::{FakeKind, Quiet};

    #[derive(Default)]
    struct Seen {
        bytes: Mutex<Vec<u64>>,
        tables: Mutex<Vec<(String, u64)>>,
    }

    impl Progress for Seen {
        fn line(&self, _: &str) {}
        fn bytes(&self, done: u64, _: Option<u64>) {
            self.bytes.lock().unwrap().push(done);
        }
        fn table_masked(&self, table: &str, rows: u64) {
            self.tables.lock().unwrap().push((table.to_owned(), rows));
        }
    }

    fn db(dir: &Path, name: &str) -> SqliteDb {
        SqliteDb::at(dir.join(name))
    }

    fn conn(db: &SqliteDb) -> Connection {
        let c = Connection::open(db.path()).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c
    }

    fn count(c: &Connection, sql: &str) -> i64 {
        c.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    /// Two tables and a total that one transaction changes together: any copy that is not of
    /// one commit breaks `count(a) = count(b) = total.n`.
    async fn ledger(dir: &Path, rows: usize) -> SqliteDb {
        let src = db(dir, "src.sqlite");
        src.create().await.unwrap();
        src.run_sql(
            "CREATE TABLE a (id INTEGER PRIMARY KEY, pad BLOB NOT NULL);
             CREATE TABLE b (id INTEGER PRIMARY KEY, pad BLOB NOT NULL);
             CREATE TABLE total (n INTEGER NOT NULL);
             INSERT INTO total VALUES (0);",
        )
        .await
        .unwrap();
        src.run_sql(&format!(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows})
             INSERT INTO a (pad) SELECT randomblob(4000) FROM s;
             INSERT INTO b (pad) SELECT randomblob(4000) FROM a;
             UPDATE total SET n = (SELECT count(*) FROM a);"
        ))
        .await
        .unwrap();
        src
    }

    /// Commits to `src` until stopped, each commit one row in each table and the total.
    fn writer(
        src: &SqliteDb,
        stop: Arc<AtomicBool>,
        commits: Arc<AtomicU64>,
    ) -> std::thread::JoinHandle<()> {
        let c = conn(src);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                c.execute_batch(
                    "BEGIN IMMEDIATE;
                     INSERT INTO a (pad) VALUES (randomblob(4000));
                     INSERT INTO b (pad) VALUES (randomblob(4000));
                     UPDATE total SET n = n + 1;
                     COMMIT;",
                )
                .unwrap();
                commits.fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    fn assert_consistent(copy: &SqliteDb) -> i64 {
        let c = conn(copy);
        let (a, b) = (
            count(&c, "SELECT count(*) FROM a"),
            count(&c, "SELECT count(*) FROM b"),
        );
        assert_eq!(a, b);
        assert_eq!(a, count(&c, "SELECT n FROM total"));
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        a
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn copies_under_concurrent_writes_are_one_commit_and_never_block_the_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let src = ledger(tmp.path(), 6000).await;
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let w = writer(&src, stop.clone(), commits.clone());
        for (round, method) in [CopyMethod::Backup, CopyMethod::Files, CopyMethod::Auto]
            .into_iter()
            .cycle()
            .take(6)
            .enumerate()
        {
            let dst = db(tmp.path(), &format!("copy{round}.sqlite"));
            let before = commits.load(Ordering::Relaxed);
            let seen = Seen::default();
            let bytes = src
                .copy_to_using(method, &dst, &seen, &CancellationToken::new())
                .await
                .unwrap();
            let during = commits.load(Ordering::Relaxed) - before;
            let rows = assert_consistent(&dst);
            assert!(rows >= 6000, "{method:?}: {rows}");
            assert!(bytes >= 6000 * 2 * 4000, "{method:?}: {bytes}");
            let progress = seen.bytes.lock().unwrap().clone();
            assert!(
                progress.windows(2).all(|w| w[0] <= w[1]),
                "{method:?} restarted: {progress:?}"
            );
            if method == CopyMethod::Backup {
                // Many steps, and the writer's commits between them did not restart the copy.
                assert!(progress.len() > 5, "{progress:?}");
            }
            assert!(
                during > 0 || method != CopyMethod::Backup,
                "{method:?}: the writer waited"
            );
            assert!(!files::partial_path(dst.path()).exists());
            assert!(!files::suffixed(dst.path(), "-wal").exists());
        }
        stop.store(true, Ordering::Relaxed);
        w.join().unwrap();
        assert!(assert_consistent(&src) > 6000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_copy_leaves_nothing_and_existing_targets_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let src = ledger(tmp.path(), 3000).await;
        let dst = db(tmp.path(), "dst.sqlite");
        // Cancelled at the start, or after the first chunk (the copy under way).
        for checks in [1, 2] {
            for method in [CopyMethod::Backup, CopyMethod::Files, CopyMethod::Auto] {
                let r = offload::cancelling_at(checks);
                let err = copy_blocking(src.path(), dst.path(), method, true, &r).unwrap_err();
                assert!(matches!(err, DataError::Cancelled), "{method:?}: {err}");
                for leftover in [dst.path().to_path_buf(), files::partial_path(dst.path())] {
                    for suffix in ["", "-wal", "-shm"] {
                        assert!(!files::suffixed(&leftover, suffix).exists(), "{method:?}");
                    }
                }
            }
        }
        let cancel = CancellationToken::new();
        cancel.cancel();
        let err = src.copy_to(&dst, &Quiet, &cancel).await.unwrap_err();
        assert!(matches!(err, DataError::Cancelled), "{err}");
        assert!(!dst.path().exists());
        std::fs::write(dst.path(), "mine").unwrap();
        let err = src
            .copy_to(&dst, &Quiet, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(std::fs::read(dst.path()).unwrap(), b"mine");
        let err = db(tmp.path(), "missing.sqlite")
            .copy_to(
                &db(tmp.path(), "x.sqlite"),
                &Quiet,
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("missing.sqlite"), "{err}");
        assert!(!tmp.path().join("missing.sqlite").exists());
    }

    #[tokio::test]
    async fn a_database_in_rollback_journal_mode_is_copied_too_and_the_copy_is_wal() {
        let tmp = tempfile::tempdir().unwrap();
        let src = db(tmp.path(), "old.sqlite");
        let c = conn(&src);
        c.execute_batch(
            "PRAGMA journal_mode = DELETE; CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('kept');",
        )
        .unwrap();
        for (i, method) in [CopyMethod::Files, CopyMethod::Backup, CopyMethod::Auto]
            .into_iter()
            .enumerate()
        {
            let dst = db(tmp.path(), &format!("copy{i}.sqlite"));
            src.copy_to_using(method, &dst, &Quiet, &CancellationToken::new())
                .await
                .unwrap();
            let copy = conn(&dst);
            let x: String = copy.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
            let mode: String = copy
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!((x.as_str(), mode.as_str()), ("kept", "wal"), "{method:?}");
        }
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete", "the source is left as it was");
    }

    #[tokio::test]
    async fn create_run_sql_size_and_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let d = db(tmp.path(), "app.sqlite");
        d.create().await.unwrap();
        let err = d.create().await.unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        let mode: String = conn(&d)
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        d.run_sql("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
            .await
            .unwrap();
        // One transaction: a script failing halfway changes nothing.
        let err = d
            .run_sql("INSERT INTO t VALUES (2); INSERT INTO nope VALUES (3);")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert_eq!(count(&conn(&d), "SELECT count(*) FROM t"), 1);
        assert!(d.size().await.unwrap() > 0);
        assert_eq!(
            d.columns().await.unwrap(),
            vec![("t".to_string(), "x".to_string())]
        );
        d.remove().await.unwrap();
        d.remove().await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            assert!(!files::suffixed(d.path(), suffix).exists());
        }
        assert!(matches!(d.size().await, Err(DataError::Io { .. })));
    }

    #[tokio::test]
    async fn attach_urls_enforce_read_and_refuse_append() {
        let tmp = tempfile::tempdir().unwrap();
        let d = db(tmp.path(), "app.sqlite");
        d.create().await.unwrap();
        d.run_sql("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
            .await
            .unwrap();
        assert_eq!(d.url(), format!("sqlite://{}", d.path().display()));
        assert_eq!(d.attach_url(Access::ReadWrite).unwrap(), d.url());
        let read = d.attach_url(Access::Read).unwrap();
        assert_eq!(read, format!("sqlite://{}?mode=ro", d.path().display()));
        // What an app's SQLite does with it: open the URI form; writes are refused by SQLite.
        let uri = read.replacen("sqlite://", "file:", 1);
        let ro = Connection::open_with_flags(
            &uri,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap();
        assert_eq!(count(&ro, "SELECT x FROM t"), 1);
        let err = ro.execute("UPDATE t SET x = 2", []).unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
        let err = d.attach_url(Access::Append).unwrap_err().to_string();
        assert!(
            err.contains("append") && err.contains("engine = \"postgres\""),
            "{err}"
        );
    }

    fn rules(list: &[(&str, &str, &str)]) -> MaskRules {
        let mut r = MaskRules::default();
        for (t, c, rule) in list {
            r.tables
                .entry(t.to_string())
                .or_default()
                .insert(c.to_string(), rule.parse().unwrap());
        }
        r
    }

    const KEY: &str = "a-masking-key";

    async fn customers(dir: &Path) -> SqliteDb {
        let d = db(dir, "prod.sqlite");
        d.create().await.unwrap();
        d.run_sql(
            r#"CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT, phone TEXT, bio TEXT, secret TEXT);
               CREATE TABLE orders (id INTEGER PRIMARY KEY, user_email TEXT, total INTEGER);
               CREATE TABLE log (what TEXT);
               CREATE TABLE "we""ird; DROP TABLE users; --" ("a""b" TEXT, "x y" INTEGER);
               CREATE TRIGGER users_changed AFTER UPDATE ON users BEGIN INSERT INTO log VALUES (old.email); END;
               INSERT INTO users VALUES (1, 'ann@corp.example', 'Ann Lee', '+44 20 7946 0018', 'likes tea and cake', 's1');
               INSERT INTO users VALUES (2, 'bob@corp.example', 'Bob Ray', NULL, NULL, 's2');
               INSERT INTO orders VALUES (10, 'ann@corp.example', 5), (11, 'bob@corp.example', 7), (12, 'ann@corp.example', 9);
               INSERT INTO "we""ird; DROP TABLE users; --" VALUES ('quoted', 42);"#,
        )
        .await
        .unwrap();
        d
    }

    #[tokio::test]
    async fn masking_is_strict_then_deterministic_across_tables() {
        let tmp = tempfile::tempdir().unwrap();
        let d = customers(tmp.path()).await;
        let weird = "we\"ird; DROP TABLE users; --";
        let mut r = rules(&[
            ("users", "id", "keep"),
            ("users", "email", "fake:email"),
            ("users", "name", "fake:name"),
            ("users", "phone", "fake:phone"),
            ("users", "bio", "fake:text"),
            ("orders", "*", "keep"),
            ("orders", "user_email", "fake:email"),
            ("log", "*", "keep"),
        ]);
        // Strict: the columns no rule covers fail the masking, which changes nothing.
        let err = d
            .mask(&r, KEY, &Quiet, &CancellationToken::new())
            .await
            .unwrap_err();
        let DataError::Unmasked(list) = &err else {
            panic!("{err}")
        };
        let names: Vec<_> = list
            .iter()
            .map(|u| format!("{}.{}", u.table, u.column))
            .collect();
        assert_eq!(
            names,
            [
                "users.secret",
                format!("{weird}.a\"b").as_str(),
                format!("{weird}.x y").as_str()
            ]
        );
        assert!(err.to_string().contains("users.secret"), "{err}");
        let c = conn(&d);
        assert_eq!(
            count(
                &c,
                "SELECT count(*) FROM users WHERE email = 'ann@corp.example'"
            ),
            1
        );

        r.tables
            .get_mut("users")
            .unwrap()
            .insert("secret".into(), MaskRule::Null);
        r.tables
            .entry(weird.into())
            .or_default()
            .insert("a\"b".into(), MaskRule::Hash);
        r.tables
            .get_mut(weird)
            .unwrap()
            .insert("*".into(), MaskRule::Keep);
        let seen = Seen::default();
        let report = d
            .mask(&r, KEY, &seen, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(
            report.tables,
            [
                ("orders".to_string(), 3),
                ("users".to_string(), 2),
                (weird.to_string(), 1)
            ]
        );
        assert_eq!(*seen.tables.lock().unwrap(), report.tables);

        let email = |v: &str| mask::pseudonym(MaskRule::Fake(FakeKind::Email), KEY, v).unwrap();
        let row = |sql: &str| -> Vec<Option<String>> {
            c.query_row(sql, [], |row| {
                (0..row.as_ref().column_count())
                    .map(|i| row.get(i))
                    .collect()
            })
            .unwrap()
        };
        let ann = row("SELECT email, name, phone, bio, secret FROM users WHERE id = 1");
        assert_eq!(ann[0].as_deref(), Some(email("ann@corp.example").as_str()));
        assert_eq!(
            ann[1],
            mask::pseudonym(MaskRule::Fake(FakeKind::Name), KEY, "Ann Lee")
        );
        assert_eq!(
            ann[2],
            mask::pseudonym(MaskRule::Fake(FakeKind::Phone), KEY, "+44 20 7946 0018")
        );
        assert_eq!(ann[3].as_deref().map(|t| t.split(' ').count()), Some(4));
        assert_eq!(ann[4], None);
        // NULL stays NULL.
        assert_eq!(
            row("SELECT phone, bio FROM users WHERE id = 2"),
            [None, None]
        );
        // Joins still match: the same email became the same pseudonym in both tables.
        assert_eq!(
            count(
                &c,
                "SELECT count(*) FROM orders JOIN users ON users.email = orders.user_email"
            ),
            3
        );
        assert_eq!(count(&c, "SELECT sum(total) FROM orders"), 21);
        assert_eq!(
            count(
                &c,
                "SELECT count(*) FROM orders WHERE user_email LIKE '%corp.example%'"
            ),
            0
        );
        // The quoted table: hashed, its other column kept, and nothing else dropped.
        let odd = row(r#"SELECT "a""b", CAST("x y" AS TEXT) FROM "we""ird; DROP TABLE users; --""#);
        assert_eq!(odd[0], mask::pseudonym(MaskRule::Hash, KEY, "quoted"));
        assert_eq!(odd[1].as_deref(), Some("42"));
        // The app's trigger did not run, and is still there.
        assert_eq!(count(&c, "SELECT count(*) FROM log"), 0);
        assert_eq!(
            count(
                &c,
                "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'"
            ),
            1
        );

        // Another database masked with the same key gives the same pseudonyms.
        let other = db(tmp.path(), "other.sqlite");
        other.create().await.unwrap();
        other
            .run_sql(
                "CREATE TABLE people (mail TEXT); INSERT INTO people VALUES ('ann@corp.example');",
            )
            .await
            .unwrap();
        other
            .mask(
                &rules(&[("people", "mail", "fake:email")]),
                KEY,
                &Quiet,
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        let mail: String = conn(&other)
            .query_row("SELECT mail FROM people", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mail, email("ann@corp.example"));
    }

    #[tokio::test]
    async fn a_cancelled_or_failing_mask_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let d = customers(tmp.path()).await;
        let weird = "we\"ird; DROP TABLE users; --";
        let all = rules(&[
            ("users", "*", "hash"),
            ("users", "id", "keep"),
            ("orders", "*", "hash"),
            ("orders", "id", "keep"),
            ("log", "*", "keep"),
            (weird, "*", "hash"),
        ]);
        let cancel = CancellationToken::new();
        cancel.cancel();
        let err = d.mask(&all, KEY, &Quiet, &cancel).await.unwrap_err();
        assert!(matches!(err, DataError::Cancelled), "{err}");
        let c = conn(&d);
        assert_eq!(
            count(
                &c,
                "SELECT count(*) FROM users WHERE email = 'ann@corp.example'"
            ),
            1
        );
        // A rule the table cannot take (NULL in a NOT NULL column) fails the whole mask.
        d.run_sql("CREATE TABLE z (v TEXT NOT NULL); INSERT INTO z VALUES ('x');")
            .await
            .unwrap();
        let mut bad = all.clone();
        bad.tables
            .insert("z".into(), [("v".to_string(), MaskRule::Null)].into());
        let err = d
            .mask(&bad, KEY, &Quiet, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("masking table z failed"), "{err}");
        let mut ids = all.clone();
        ids.tables.get_mut("users").unwrap().remove("id");
        ids.tables
            .insert("z".into(), [("v".to_string(), MaskRule::Keep)].into());
        let err = d
            .mask(&ids, KEY, &Quiet, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("INTEGER PRIMARY KEY"), "{err}");
        assert_eq!(
            count(
                &c,
                "SELECT count(*) FROM users WHERE email = 'ann@corp.example'"
            ),
            1
        );
        assert_eq!(
            count(
                &c,
                "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'"
            ),
            1
        );
    }
}
