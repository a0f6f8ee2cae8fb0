//! The backup repository for real: SQLite databases written by a real writer while they are
//! snapshotted, restored and compared row by row; chunks damaged in `repo.sqlite` itself (its
//! schema is documented in `turnout_data::backup`); a simulated day of minute snapshots under
//! the exponential schedule's retention.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rusqlite::Connection;
use tokio_util::sync::CancellationToken;
use turnout_data::Quiet;
use turnout_data::backup::Repo;
use turnout_data::sqlite::SqliteDb;

fn conn(path: &Path) -> Connection {
    let c = Connection::open(path).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    c
}

/// A WAL database of `rows` rows of `pad` bytes each (a counter row too).
fn ledger(path: &Path, rows: i64, pad: usize) -> SqliteDb {
    let c = conn(path);
    c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .unwrap();
    c.execute_batch(
        "CREATE TABLE entry (id INTEGER PRIMARY KEY, commit_no INTEGER NOT NULL, pad BLOB NOT NULL);
         CREATE TABLE total (n INTEGER NOT NULL); INSERT INTO total VALUES (0);",
    )
    .unwrap();
    c.execute(
        &format!(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?1)
             INSERT INTO entry (commit_no, pad) SELECT 0, randomblob({pad}) FROM s"
        ),
        [rows],
    )
    .unwrap();
    SqliteDb::at(path.to_path_buf())
}

/// Every row of `entry` (id, commit_no, pad) in order.
fn rows(path: &Path) -> Vec<(i64, i64, Vec<u8>)> {
    let c = conn(path);
    let mut stmt = c
        .prepare("SELECT id, commit_no, pad FROM entry ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn storage(dir: &Path) -> std::path::PathBuf {
    let s = dir.join("storage");
    std::fs::create_dir_all(s.join("uploads/deep")).unwrap();
    std::fs::write(s.join("uploads/a.txt"), b"hello").unwrap();
    let big: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    std::fs::write(s.join("uploads/deep/big.bin"), &big).unwrap();
    std::fs::set_permissions(
        s.join("uploads/a.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::symlink("a.txt", s.join("uploads/link")).unwrap();
    std::fs::create_dir(s.join("empty")).unwrap();
    s
}

fn tree_listing(root: &Path) -> Vec<(String, u32, Option<Vec<u8>>, Option<String>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            if m.is_dir() {
                out.push((rel, mode, None, None));
                stack.push(p);
            } else if m.is_symlink() {
                let t = std::fs::read_link(&p).unwrap().display().to_string();
                out.push((rel, 0, None, Some(t)));
            } else {
                out.push((rel, mode, Some(std::fs::read(&p).unwrap()), None));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_snapshot_restores_the_same_rows_and_files_and_dedups_unchanged_pages() {
    let dir = tempfile::tempdir().unwrap();
    let db = ledger(&dir.path().join("app.sqlite"), 4000, 900);
    let files = storage(dir.path());
    let repo = Repo::open(dir.path().join("repo")).await.unwrap();
    assert_eq!(
        std::fs::metadata(repo.dir()).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let cancel = CancellationToken::new();
    let first = repo
        .snapshot_sqlite("b1", &db, &files, &Quiet, &cancel)
        .await
        .unwrap();
    assert!(first.new_chunks > 900, "{first:?}");
    assert!(repo.contains("b1").await.unwrap());
    assert!(!repo.contains("b2").await.unwrap());
    assert_eq!(
        repo.meta("b1", "engine").await.unwrap().as_deref(),
        Some("sqlite")
    );

    let before = rows(db.path());
    conn(db.path())
        .execute("UPDATE entry SET commit_no = 1 WHERE id = 2000", [])
        .unwrap();
    let second = repo
        .snapshot_sqlite("b2", &db, &files, &Quiet, &cancel)
        .await
        .unwrap();
    println!("first snapshot {first:?}\nsecond (one row changed) {second:?}");
    // The changed row's leaf page, and page 1 (its change counter): nothing else.
    assert!(second.new_chunks <= 3, "{second:?}");
    assert_eq!(second.chunks, first.chunks);
    assert!(second.stored_bytes < first.stored_bytes / 20, "{second:?}");

    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let to = SqliteDb::at(out.join("b1.sqlite"));
    repo.restore_sqlite("b1", &to, &out.join("storage1"), &Quiet, &cancel)
        .await
        .unwrap();
    assert_eq!(rows(to.path()), before);
    to.integrity_check().await.unwrap();
    assert_eq!(tree_listing(&out.join("storage1")), tree_listing(&files));
    let to2 = SqliteDb::at(out.join("b2.sqlite"));
    repo.restore_sqlite("b2", &to2, &out.join("storage2"), &Quiet, &cancel)
        .await
        .unwrap();
    assert_eq!(rows(to2.path()), rows(db.path()));

    // Restoring onto something that exists is refused and changes nothing.
    let err = repo
        .restore_sqlite("b1", &to, &out.join("storage3"), &Quiet, &cancel)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(!out.join("storage3").exists());
    // So is a second snapshot of the same name.
    let err = repo
        .snapshot_sqlite("b1", &db, &files, &Quiet, &cancel)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already"), "{err}");

    let report = repo.verify("b2", &Quiet, &cancel).await.unwrap();
    assert_eq!(report.chunks, second.chunks);

    // Deleting b1 keeps every chunk b2 holds; deleting b2 too empties the repository.
    repo.delete("b1").await.unwrap();
    assert!(!repo.contains("b1").await.unwrap());
    repo.verify("b2", &Quiet, &cancel).await.unwrap();
    repo.delete("b2").await.unwrap();
    repo.delete("b2").await.unwrap();
    assert_eq!(repo.usage().await.unwrap().chunks, 0);
}
