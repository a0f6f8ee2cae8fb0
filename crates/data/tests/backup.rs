//! The backup repository for real: SQLite databases written by a real writer while they are
//! snapshotted, restored and compared row by row; chunks damaged in `repo.sqlite` itself (its
//! schema is documented in `turnout_data::backup`); a simulated day of minute snapshots under
//! the exponential schedule's retention.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use rusqlite::Connection;
use tokio_util::sync::CancellationToken;
use turnout_data::backup::Repo;
use turnout_data::backup::retention::{self, Candidate, EXPONENTIAL};
use turnout_data::sqlite::SqliteDb;
use turnout_data::{DataError, Quiet};

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

/// A tree entry: path, mode, a file's bytes, a link's target.
type Listed = (String, u32, Option<Vec<u8>>, Option<String>);

fn tree_listing(root: &Path) -> Vec<Listed> {
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

/// Commits forever (one new row per commit, numbered) until `stop`; `done` counts commits.
fn writer(
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicI64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let c = conn(&path);
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            c.execute(
                "INSERT INTO entry (commit_no, pad) VALUES (?1, randomblob(500))",
                [n],
            )
            .unwrap();
            done.store(n, Ordering::SeqCst);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_while_a_writer_commits_restores_exactly_one_commit_s_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = ledger(&dir.path().join("app.sqlite"), 6000, 900);
    let repo = Repo::open(dir.path().join("repo")).await.unwrap();
    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicI64::new(0)),
    );
    let w = writer(db.path().to_path_buf(), stop.clone(), done.clone());
    while done.load(Ordering::SeqCst) < 50 {
        tokio::task::yield_now().await;
    }
    let before = done.load(Ordering::SeqCst);
    repo.snapshot_sqlite(
        "b1",
        &db,
        &dir.path().join("none"),
        &Quiet,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    let after = done.load(Ordering::SeqCst);
    while done.load(Ordering::SeqCst) < after + 50 {
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::SeqCst);
    w.join().unwrap();
    assert!(
        after > before,
        "the writer went on committing during the snapshot"
    );

    let to = SqliteDb::at(dir.path().join("restored.sqlite"));
    repo.restore_sqlite(
        "b1",
        &to,
        &dir.path().join("storage"),
        &Quiet,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    to.integrity_check().await.unwrap();
    assert!(
        std::fs::read_dir(dir.path().join("storage"))
            .unwrap()
            .next()
            .is_none()
    );
    // The restored rows are the source's rows up to one commit k, whole: every commit the
    // writer finished before the snapshot began, none it began after the snapshot ended.
    let restored = rows(to.path());
    let source = rows(db.path());
    let k = restored.last().unwrap().1;
    assert!(
        k >= before && k <= after,
        "commit {k} outside [{before}, {after}]"
    );
    assert_eq!(restored.len() as i64, 6000 + k);
    assert_eq!(restored[..], source[..restored.len()]);
}

#[tokio::test]
async fn a_corrupted_or_missing_chunk_is_named_by_verify_and_restore_which_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = ledger(&dir.path().join("app.sqlite"), 2000, 900);
    let files = storage(dir.path());
    let repo = Repo::open(dir.path().join("repo")).await.unwrap();
    let cancel = CancellationToken::new();
    repo.snapshot_sqlite("b7", &db, &files, &Quiet, &cancel)
        .await
        .unwrap();
    let raw = conn(&repo.dir().join("repo.sqlite"));
    // Damage one chunk: its bytes (still a valid zstd frame) no longer match its name.
    let id: Vec<u8> = raw
        .query_row(
            "SELECT id FROM chunks ORDER BY id LIMIT 1 OFFSET 100",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let hex: String = id[..6].iter().map(|b| format!("{b:02x}")).collect();
    let other = zstd::bulk::compress(&vec![7u8; 4096], 1).unwrap();
    raw.execute(
        "UPDATE chunks SET data = ?1, raw_len = 4096 WHERE id = ?2",
        rusqlite::params![other, id],
    )
    .unwrap();
    let err = repo.verify("b7", &Quiet, &cancel).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("snapshot b7") && text.contains(&hex) && text.contains("corrupted"),
        "{text}"
    );
    let to = SqliteDb::at(dir.path().join("restored.sqlite"));
    let storage_to = dir.path().join("restored-storage");
    let err = repo
        .restore_sqlite("b7", &to, &storage_to, &Quiet, &cancel)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&hex), "{err}");
    for leftover in [
        "restored.sqlite",
        "restored.sqlite.partial",
        "restored-storage",
        "restored-storage.partial",
    ] {
        assert!(
            !dir.path().join(leftover).exists(),
            "{leftover} left behind"
        );
    }
    // Garbage that is not even zstd is caught the same way; a missing chunk too.
    raw.execute("UPDATE chunks SET data = x'00010203' WHERE id = ?1", [&id])
        .unwrap();
    assert!(
        repo.verify("b7", &Quiet, &cancel)
            .await
            .unwrap_err()
            .to_string()
            .contains(&hex)
    );
    raw.execute("DELETE FROM chunks WHERE id = ?1", [&id])
        .unwrap();
    let err = repo
        .verify("b7", &Quiet, &cancel)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&hex) && err.contains("missing"), "{err}");
}

#[tokio::test]
async fn a_cancelled_snapshot_or_restore_leaves_nothing_visible() {
    let dir = tempfile::tempdir().unwrap();
    let db = ledger(&dir.path().join("app.sqlite"), 2000, 900);
    let repo = Repo::open(dir.path().join("repo")).await.unwrap();
    let cancelled = CancellationToken::new();
    cancelled.cancel();
    let none = dir.path().join("none");
    let err = repo
        .snapshot_sqlite("b1", &db, &none, &Quiet, &cancelled)
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::Cancelled), "{err}");
    assert!(!repo.contains("b1").await.unwrap());
    // Its chunks, if any were stored, go with the next write; the name is free.
    repo.snapshot_sqlite("b1", &db, &none, &Quiet, &CancellationToken::new())
        .await
        .unwrap();
    let to = SqliteDb::at(dir.path().join("r.sqlite"));
    let err = repo
        .restore_sqlite("b1", &to, &dir.path().join("rs"), &Quiet, &cancelled)
        .await
        .unwrap_err();
    assert!(matches!(err, DataError::Cancelled), "{err}");
    for leftover in ["r.sqlite", "r.sqlite.partial", "rs", "rs.partial"] {
        assert!(
            !dir.path().join(leftover).exists(),
            "{leftover} left behind"
        );
    }
    assert!(
        std::fs::read_dir(repo.dir().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
    let err = repo
        .snapshot_sqlite("../x", &db, &none, &Quiet, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not a valid snapshot name"),
        "{err}"
    );
}

#[tokio::test]
async fn wal_segments_are_stored_once_checked_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::open(dir.path().join("repo")).await.unwrap();
    let seg = |i: u8| {
        let p = dir.path().join(format!("seg{i}"));
        let mut data: Vec<u8> = (0..(1u32 << 20)).map(|j| (j % 253) as u8 ^ i).collect();
        data.extend(vec![0u8; 1 << 20]);
        std::fs::write(&p, &data).unwrap();
        (p, data)
    };
    let names = [
        "000000010000000000000001",
        "000000010000000000000002",
        "000000010000000000000003",
    ];
    for (i, name) in names.iter().enumerate() {
        let (p, _) = seg(i as u8);
        assert!(repo.put_wal("prod-g1", name, &p).await.unwrap() > 0);
        assert_eq!(
            repo.put_wal("prod-g1", name, &p).await.unwrap(),
            0,
            "idempotent"
        );
    }
    let (other, _) = seg(9);
    assert!(repo.put_wal("prod-g1", names[0], &other).await.is_err());
    let list = repo.wal_segments("prod-g1").await.unwrap();
    assert_eq!(
        list.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        names
    );
    let range = repo.wal_range("prod-g1").await.unwrap().unwrap();
    assert_eq!(
        (range.first.as_str(), range.last.as_str()),
        (names[0], names[2])
    );
    assert!(repo.wal_range("other").await.unwrap().is_none());
    let out = dir.path().join("restored-seg");
    repo.restore_wal("prod-g1", names[1], &out).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), seg(1).1);
    assert_eq!(repo.prune_wal("prod-g1", Some(names[2])).await.unwrap(), 2);
    assert_eq!(repo.wal_segments("prod-g1").await.unwrap().len(), 1);
    assert_eq!(repo.prune_wal("prod-g1", None).await.unwrap(), 1);
    assert_eq!(repo.usage().await.unwrap().chunks, 0);
}

/// A day of snapshots of an 8 MiB database, retention under the exponential schedule applied
/// after each (times simulated: snapshot `b<i>` taken at step i). A step is 10 minutes with
/// 1 % of the pages changed (the same churn as 0.1 % a minute) so the test stays short;
/// `examples/backup_bench.rs sqlite-day` runs the minute-by-minute day. Rows are random hex
/// text (zstd halves it, as it does real text); with incompressible random blobs the same day
/// costs 2.2x: the day-old snapshot shares only about a quarter of its pages with today's
/// (1 - e^-1.44 of them were rewritten since), so the kept snapshots hold about twice the
/// database's pages whatever the storage does.
#[tokio::test]
async fn a_day_of_snapshots_costs_at_most_one_and_a_half_times_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = ledger(&dir.path().join("app.sqlite"), 8 * 1024, 900);
    let c = conn(db.path());
    c.execute("UPDATE entry SET pad = hex(randomblob(450))", [])
        .unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    let size = std::fs::metadata(db.path()).unwrap().len();
    let rows_now: i64 = c
        .query_row("SELECT max(id) FROM entry", [], |r| r.get(0))
        .unwrap();
    let pages = (size / 4096) as i64;
    let repo = Repo::open(dir.path().join("repo")).await.unwrap();
    let none = dir.path().join("none");
    let start = 1_800_000_000 / 86_400 * 86_400;
    let mut alive: Vec<Candidate> = Vec::new();
    let mut seed = 12345u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for step in 0..144i64 {
        // 1 % of the pages: that many random rows rewritten.
        let tx = c.unchecked_transaction().unwrap();
        for _ in 0..(pages / 100).max(1) {
            let id = (rand() % rows_now as u64) as i64 + 1;
            tx.execute(
                "UPDATE entry SET pad = hex(randomblob(450)) WHERE id = ?1",
                [id],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        let name = format!("b{step}");
        repo.snapshot_sqlite(&name, &db, &none, &Quiet, &CancellationToken::new())
            .await
            .unwrap();
        let now = start + step * 600;
        alive.push(Candidate {
            id: step,
            at: now,
            pinned: false,
            busy: false,
        });
        let kept = retention::keep(&EXPONENTIAL, &alive, now);
        for gone in alive.iter().filter(|s| !kept.contains(&s.id)) {
            repo.delete(&format!("b{}", gone.id)).await.unwrap();
        }
        alive.retain(|s| kept.contains(&s.id));
    }
    let usage = repo.usage().await.unwrap();
    let size = std::fs::metadata(db.path()).unwrap().len();
    let ratio = usage.disk_bytes as f64 / size as f64;
    println!(
        "a day of snapshots every 10 minutes: {} kept, repository {} bytes on disk ({} stored in {} chunks) for a {size}-byte database: {ratio:.2}x",
        alive.len(),
        usage.disk_bytes,
        usage.stored_bytes,
        usage.chunks
    );
    assert!(ratio <= 1.5, "{ratio:.2}x");
}
