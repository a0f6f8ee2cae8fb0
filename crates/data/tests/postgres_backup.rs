//! PostgreSQL base backups, WAL archiving and point-in-time restores, for real: clusters made
//! by initdb in a temporary directory (Debian's `postgresql` package, which `.ci/run` installs),
//! a backup repository beside them, restores replayed by PostgreSQL itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;
use turnout_data::backup::Repo;
use turnout_data::postgres::backup::RecoveryTarget;
use turnout_data::postgres::{Cluster, ClusterSpec, PgSystem, SUPERUSER};
use turnout_data::{Access, DataError, Quiet};
use turnout_netns::Network;

mod common;
use common::{secret, tempdir};

/// A cluster that archives its WAL (`pg/NAME.wal`), as every cluster Turnout makes now does.
fn spec(dir: &Path, gen_name: &str, database: &str) -> ClusterSpec {
    ClusterSpec {
        dir: dir.join("pg").join(gen_name),
        socket_dir: dir.join("pgsock").join(gen_name),
        log: dir.join("logs").join(format!("{gen_name}.log")),
        port: Network::Host.free_port().unwrap(),
        superuser_password: secret("super"),
        database: database.to_owned(),
        app_password: secret("app"),
        archive: Some(dir.join("pg").join(format!("{gen_name}.wal"))),
    }
}

fn system() -> PgSystem {
    PgSystem::find().expect("PostgreSQL is installed (.ci/run installs it)")
}

async fn init(dir: &Path, gen_name: &str, database: &str) -> Cluster {
    Cluster::init(
        system(),
        spec(dir, gen_name, database),
        &Network::Host,
        &Quiet,
        &CancellationToken::new(),
    )
    .await
    .unwrap()
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Every row of the test's table, in order: what a restore is compared with.
type Rows = Vec<(i32, i32, String)>;

async fn rows(client: &tokio_postgres::Client) -> Rows {
    client
        .query("SELECT id, batch, note FROM orders ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The server's clock, in unix microseconds.
async fn server_now(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Waits until the server's clock is in a later second than `micros`: the WAL archive's reach
/// is known to the second, so a moment is inside it once a segment archived after that second
/// holds it.
async fn past_the_second_of(client: &tokio_postgres::Client, micros: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server_now(client).await / 1_000_000 <= micros / 1_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the server's clock stands still"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Batch `b` of writes, in several transactions: new rows, and changes to and deletions of
/// earlier ones (so a restore is compared row by row, not only counted).
async fn batch(client: &mut tokio_postgres::Client, b: i32) {
    for t in 0..4 {
        let tx = client.transaction().await.unwrap();
        tx.execute(
            "INSERT INTO orders (id, batch, note) SELECT $1 * 1000 + $2 * 100 + g, $1, 'new' FROM generate_series(1, 25) g",
            &[&b, &t],
        )
        .await
        .unwrap();
        tx.execute(
            "UPDATE orders SET note = note || ' +' || $1 WHERE id % 7 = $1 % 7 AND batch < $1",
            &[&b],
        )
        .await
        .unwrap();
        tx.execute(
            "DELETE FROM orders WHERE id % 11 = $1 AND batch < $1 - 1",
            &[&b],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
}

/// What a failed restore must not leave.
fn assert_nothing_left(target: &ClusterSpec, storage: &Path) {
    let partial = PathBuf::from(format!("{}.partial", target.dir.display()));
    let partial_files = PathBuf::from(format!("{}.partial.partial", target.dir.display()));
    for path in [
        &target.dir,
        &partial,
        &partial_files,
        &target.socket_dir,
        target.archive.as_ref().unwrap(),
        &target.log,
        &storage.to_path_buf(),
    ] {
        assert!(!path.exists(), "{} is left", path.display());
    }
}

struct Restore<'a> {
    repo: &'a Repo,
    source: &'a Cluster,
    snapshot: &'a str,
    stream: &'a str,
}

impl Restore<'_> {
    async fn to(
        &self,
        dir: &Path,
        gen_name: &str,
        target: RecoveryTarget,
    ) -> (Result<Cluster, DataError>, ClusterSpec, PathBuf) {
        let spec = spec(dir, gen_name, "shop_restored");
        let storage = dir.join(format!("storage-{gen_name}"));
        let restored = Cluster::restore_from(
            self.repo,
            self.snapshot,
            self.stream,
            target,
            &self.source.spec,
            system(),
            spec.clone(),
            &Network::Host,
            &storage,
            &Quiet,
            &CancellationToken::new(),
        )
        .await;
        (restored, spec, storage)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_holds_exactly_the_rows_committed_by_its_moment() {
    let dir = tempdir();
    let repo = Repo::open(dir.path().join("backups").join("shop"))
        .await
        .unwrap();
    let source = init(dir.path(), "g1", "shop").await;
    source
        .run_sql("CREATE TABLE orders (id int PRIMARY KEY, batch int NOT NULL, note text NOT NULL)")
        .await
        .unwrap();
    source
        .attach("reporting", "reporting-pw", Access::Read)
        .await
        .unwrap();
    let storage = dir.path().join("storage-g1");
    std::fs::create_dir_all(storage.join("uploads")).unwrap();
    std::fs::write(storage.join("uploads/a.txt"), "attached file").unwrap();

    // Batches of writes, the server's clock read after each (every transaction of batch b
    // committed at or before moments[b], none of batch b + 1), a base backup after batch 2.
    let mut client = connect(&source.app_url()).await.unwrap();
    let mut moments = vec![0];
    let mut states: Vec<Rows> = vec![Vec::new()];
    let mut at_backup = None;
    for b in 1..=6 {
        batch(&mut client, b).await;
        moments.push(server_now(&client).await);
        states.push(rows(&client).await);
        if b == 2 {
            let backup = source
                .snapshot_into(&repo, "b1", &storage, &Quiet, &CancellationToken::new())
                .await
                .unwrap();
            assert!(backup.stats.logical_bytes > 1_000_000, "{backup:?}");
            assert_eq!(backup.start_segment.len(), 24);
            at_backup = Some(rows(&client).await);
        }
    }
    assert_ne!(states[4], states[3]);
    assert_ne!(states[4], states[5]);
    past_the_second_of(&client, moments[6]).await;
    // The WAL up to now, into the repository; the archive directory is emptied.
    source.flush_wal(&CancellationToken::new()).await.unwrap();
    let ingest = source
        .ingest_wal(&repo, "main-g1", &CancellationToken::new())
        .await
        .unwrap();
    assert!(ingest.segments >= 2, "{ingest:?}");
    let archive = source.spec.archive.clone().unwrap();
    assert_eq!(std::fs::read_dir(&archive).unwrap().count(), 0);
    let range = repo.wal_range("main-g1").await.unwrap().unwrap();
    assert!(range.first <= range.last);

    let restore = Restore {
        repo: &repo,
        source: &source,
        snapshot: "b1",
        stream: "main-g1",
    };
    // To the moment after batch 4: batches 1 to 4 exactly, row by row.
    let (restored, target, restored_storage) = restore
        .to(dir.path(), "g2", RecoveryTarget::Time(moments[4]))
        .await;
    let restored = restored.unwrap();
    let c = connect(&restored.app_url()).await.unwrap();
    assert_eq!(rows(&c).await, states[4]);
    // The storage came back too.
    assert_eq!(
        std::fs::read_to_string(restored_storage.join("uploads/a.txt")).unwrap(),
        "attached file"
    );

    // The restored cluster is the new spec's: its role, database and passwords; the source's
    // passwords and its attached role do not open it.
    let row = c
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("shop_restored".into(), "shop_restored".into())
    );
    assert!(
        connect(&restored.socket_url("shop_restored", &source.spec.app_password))
            .await
            .is_err()
    );
    assert!(
        connect(&restored.socket_url("shop", &source.spec.app_password))
            .await
            .is_err()
    );
    assert!(
        connect(&restored.socket_url(SUPERUSER, &source.spec.superuser_password))
            .await
            .is_err()
    );
    assert!(
        connect(&restored.socket_url("reporting", "reporting-pw"))
            .await
            .is_err()
    );
    let su = connect(&restored.socket_url(SUPERUSER, &target.superuser_password))
        .await
        .unwrap();
    // No recovery setting is left for the next start; nothing staged is left.
    let auto_conf = std::fs::read_to_string(target.dir.join("postgresql.auto.conf")).unwrap();
    assert!(!auto_conf.contains("recovery_target"), "{auto_conf}");
    assert!(!auto_conf.contains("restore_command"), "{auto_conf}");
    assert!(!target.dir.join("recovery.signal").exists());
    assert!(!target.dir.join("turnout_restore_wal").exists());
    // It takes writes and archives its own WAL (a new timeline), which backs it up in turn.
    c.batch_execute("INSERT INTO orders (id, batch, note) VALUES (999999, 99, 'after')")
        .await
        .unwrap();
    let after = rows(&c).await;
    restored
        .snapshot_into(
            &repo,
            "b2",
            &restored_storage,
            &Quiet,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    restored.flush_wal(&CancellationToken::new()).await.unwrap();
    restored
        .ingest_wal(&repo, "main-g2", &CancellationToken::new())
        .await
        .unwrap();
    drop((c, su));
    let again = Restore {
        repo: &repo,
        source: &restored,
        snapshot: "b2",
        stream: "main-g2",
    };
    let (twice, _, twice_storage) = again
        .to(dir.path(), "g3", RecoveryTarget::EndOfBackup)
        .await;
    let twice = twice.unwrap();
    let c = connect(&twice.app_url()).await.unwrap();
    assert_eq!(rows(&c).await, after);
    drop(c);
    twice.remove().await.unwrap();
    std::fs::remove_dir_all(twice_storage).unwrap();
    restored.remove().await.unwrap();
    std::fs::remove_dir_all(&restored_storage).unwrap();

    // To the end of the base backup: the rows as they were then.
    let (restored, _, restored_storage) = restore
        .to(dir.path(), "g4", RecoveryTarget::EndOfBackup)
        .await;
    let restored = restored.unwrap();
    let c = connect(&restored.app_url()).await.unwrap();
    assert_eq!(Some(rows(&c).await), at_backup);
    drop(c);
    restored.remove().await.unwrap();
    std::fs::remove_dir_all(&restored_storage).unwrap();

    // A moment before the end of the base backup is refused (replay cannot go back), and
    // nothing is made.
    let (refused, target, target_storage) = restore
        .to(dir.path(), "g5", RecoveryTarget::Time(moments[1]))
        .await;
    let e = refused.unwrap_err();
    assert!(
        matches!(&e, DataError::Invalid(m) if m.contains("before the end of snapshot b1's base backup") && m.contains("restore from an earlier snapshot")),
        "{e}"
    );
    assert_nothing_left(&target, &target_storage);

    // A moment past the archived WAL is refused, and nothing is made.
    let (refused, target, target_storage) = restore
        .to(
            dir.path(),
            "g5",
            RecoveryTarget::Time(moments[6] + 3_600_000_000),
        )
        .await;
    let e = refused.unwrap_err();
    assert!(
        matches!(&e, DataError::Invalid(m) if m.contains("the WAL archive of main-g1 reaches only up to") && m.contains("restore to an earlier moment")),
        "{e}"
    );
    assert_nothing_left(&target, &target_storage);

    drop(client);
    source.remove().await.unwrap();
    assert!(
        !archive.exists(),
        "the archive directory goes with its cluster"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_or_missing_wal_segment_is_refused_by_name() {
    let dir = tempdir();
    let repo_dir = dir.path().join("backups").join("shop");
    let repo = Repo::open(repo_dir.clone()).await.unwrap();
    let source = init(dir.path(), "g1", "shop").await;
    source
        .run_sql("CREATE TABLE orders (id int PRIMARY KEY, batch int NOT NULL, note text NOT NULL)")
        .await
        .unwrap();
    let storage = dir.path().join("storage-g1");
    std::fs::create_dir_all(&storage).unwrap();
    let mut client = connect(&source.app_url()).await.unwrap();
    let su = connect(&source.socket_url(SUPERUSER, &source.spec.superuser_password))
        .await
        .unwrap();
    // Segments: the backup's, then batch 2's (switched), then batch 3's (flushed).
    batch(&mut client, 1).await;
    let backup = source
        .snapshot_into(&repo, "b1", &storage, &Quiet, &CancellationToken::new())
        .await
        .unwrap();
    batch(&mut client, 2).await;
    su.batch_execute("SELECT pg_switch_wal()").await.unwrap();
    let moment = server_now(&client).await;
    batch(&mut client, 3).await;
    past_the_second_of(&client, moment).await;
    source.flush_wal(&CancellationToken::new()).await.unwrap();
    source
        .ingest_wal(&repo, "main-g1", &CancellationToken::new())
        .await
        .unwrap();
    let restore = Restore {
        repo: &repo,
        source: &source,
        snapshot: "b1",
        stream: "main-g1",
    };

    // The repository's own tables (the schema in crates/data/src/backup.rs's doc).
    let db = rusqlite::Connection::open(repo_dir.join("repo.sqlite")).unwrap();
    let segments: Vec<String> = db
        .prepare(
            "SELECT segment FROM wal WHERE stream = 'main-g1' AND segment >= ?1 ORDER BY segment",
        )
        .unwrap()
        .query_map([&backup.start_segment], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(segments.len() >= 3, "{segments:?}");
    let last = segments[segments.len() - 1].clone();
    let middle = segments[segments.len() - 2].clone();

    // A corrupted chunk of a segment the restore replays: refused, naming the segment.
    let chunks: Vec<u8> = db
        .query_row(
            "SELECT chunks FROM wal WHERE stream = 'main-g1' AND segment = ?1",
            [&last],
            |r| r.get(0),
        )
        .unwrap();
    let chunk = chunks[..32].to_vec();
    let good: Vec<u8> = db
        .query_row("SELECT data FROM chunks WHERE id = ?1", [&chunk], |r| {
            r.get(0)
        })
        .unwrap();
    let raw_len: i64 = db
        .query_row("SELECT raw_len FROM chunks WHERE id = ?1", [&chunk], |r| {
            r.get(0)
        })
        .unwrap();
    let evil = zstd::encode_all(&vec![7u8; usize::try_from(raw_len).unwrap()][..], 1).unwrap();
    db.execute(
        "UPDATE chunks SET data = ?1 WHERE id = ?2",
        rusqlite::params![evil, chunk],
    )
    .unwrap();
    let (refused, target, target_storage) = restore
        .to(dir.path(), "g2", RecoveryTarget::Time(moment))
        .await;
    let e = refused.unwrap_err().to_string();
    assert!(e.contains(&last) && e.contains("main-g1"), "{e}");
    assert_nothing_left(&target, &target_storage);
    db.execute(
        "UPDATE chunks SET data = ?1 WHERE id = ?2",
        rusqlite::params![good, chunk],
    )
    .unwrap();

    // A segment the base backup itself needs is missing: refused before anything is written.
    let saved: (i64, i64, Vec<u8>) = db
        .query_row(
            "SELECT archived_at, size, chunks FROM wal WHERE stream = 'main-g1' AND segment = ?1",
            [&backup.start_segment],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    db.execute(
        "DELETE FROM wal WHERE stream = 'main-g1' AND segment = ?1",
        [&backup.start_segment],
    )
    .unwrap();
    let (refused, target, target_storage) = restore
        .to(dir.path(), "g3", RecoveryTarget::EndOfBackup)
        .await;
    let e = refused.unwrap_err().to_string();
    assert!(
        e.contains(&backup.start_segment) && e.contains("missing"),
        "{e}"
    );
    assert_nothing_left(&target, &target_storage);
    db.execute(
        "INSERT INTO wal (stream, segment, archived_at, size, chunks) VALUES ('main-g1', ?1, ?2, ?3, ?4)",
        rusqlite::params![backup.start_segment, saved.0, saved.1, saved.2],
    )
    .unwrap();

    // A segment after the backup is missing, before the moment: the replay stops short, and
    // the error names the segment and how far the WAL reaches.
    db.execute(
        "DELETE FROM wal WHERE stream = 'main-g1' AND segment = ?1",
        [&middle],
    )
    .unwrap();
    let (refused, target, target_storage) = restore
        .to(dir.path(), "g4", RecoveryTarget::Time(moment))
        .await;
    let e = refused.unwrap_err().to_string();
    assert!(
        e.contains(&middle)
            && e.contains("reaches only up to")
            && e.contains("restore to an earlier moment"),
        "{e}"
    );
    assert_nothing_left(&target, &target_storage);

    drop((client, su));
    source.remove().await.unwrap();
}

/// Cancels its token at the first progress figure.
struct CancelOnBytes(CancellationToken);

impl turnout_data::Progress for CancelOnBytes {
    fn line(&self, _: &str) {}
    fn bytes(&self, _: u64, _: Option<u64>) {
        self.0.cancel();
    }
    fn table_masked(&self, _: &str, _: u64) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_writes_restores_consistent_and_a_cancelled_restore_leaves_nothing() {
    let dir = tempdir();
    let repo = Repo::open(dir.path().join("backups").join("shop"))
        .await
        .unwrap();
    let source = init(dir.path(), "g1", "shop").await;
    source
        .run_sql(
            "CREATE TABLE orders (id bigserial PRIMARY KEY, note text);
             CREATE TABLE ledger (id bigserial PRIMARY KEY, order_id bigint);
             INSERT INTO orders (note) SELECT 'n' || g FROM generate_series(1, 20000) g;
             INSERT INTO ledger (order_id) SELECT id FROM orders;",
        )
        .await
        .unwrap();
    let storage = dir.path().join("storage-g1");
    std::fs::create_dir_all(&storage).unwrap();

    // A client writes two tables in one transaction, all through the base backup.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (url, stop, written) = (source.app_url(), stop.clone(), written.clone());
        tokio::spawn(async move {
            let mut client = connect(&url).await.map_err(|e| e.to_string())?;
            while !stop.load(Ordering::Relaxed) {
                let tx = client.transaction().await.map_err(|e| e.to_string())?;
                tx.batch_execute(
                    "WITH o AS (INSERT INTO orders (note) VALUES ('live') RETURNING id)
                     INSERT INTO ledger (order_id) SELECT id FROM o",
                )
                .await
                .map_err(|e| e.to_string())?;
                tx.commit().await.map_err(|e| e.to_string())?;
                written.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, String>(())
        })
    };
    while written.load(Ordering::Relaxed) < 20 {
        tokio::task::yield_now().await;
    }
    let before = written.load(Ordering::Relaxed);
    source
        .snapshot_into(&repo, "b1", &storage, &Quiet, &CancellationToken::new())
        .await
        .unwrap();
    let during = written.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    writer
        .await
        .unwrap()
        .expect("the writer saw no error during the backup");
    assert!(during > 0, "the source took writes during the backup");
    let client = connect(&source.app_url()).await.unwrap();
    let count = |c: tokio_postgres::Client| async move {
        let row = c
            .query_one(
                "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM ledger)",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, i64>(1))
    };
    let moment = server_now(&client).await;
    let at_moment = count(client).await;
    let client = connect(&source.app_url()).await.unwrap();
    client
        .batch_execute("INSERT INTO orders (note) VALUES ('later')")
        .await
        .unwrap();
    past_the_second_of(&client, moment).await;
    source.flush_wal(&CancellationToken::new()).await.unwrap();
    source
        .ingest_wal(&repo, "main-g1", &CancellationToken::new())
        .await
        .unwrap();
    let restore = Restore {
        repo: &repo,
        source: &source,
        snapshot: "b1",
        stream: "main-g1",
    };

    // The end of the backup: every transaction whole, none half (torn pages repaired by the
    // WAL).
    let (restored, _, restored_storage) = restore
        .to(dir.path(), "g2", RecoveryTarget::EndOfBackup)
        .await;
    let restored = restored.unwrap();
    let (orders, ledger) = count(connect(&restored.app_url()).await.unwrap()).await;
    assert_eq!(orders, ledger);
    assert!(orders >= 20000 + i64::try_from(before).unwrap());
    restored.remove().await.unwrap();
    std::fs::remove_dir_all(restored_storage).unwrap();

    // The moment after the writer stopped: everything it wrote, not the later row.
    let (restored, _, restored_storage) = restore
        .to(dir.path(), "g3", RecoveryTarget::Time(moment))
        .await;
    let restored = restored.unwrap();
    assert_eq!(
        count(connect(&restored.app_url()).await.unwrap()).await,
        at_moment
    );
    restored.remove().await.unwrap();
    std::fs::remove_dir_all(restored_storage).unwrap();

    // A cancelled restore leaves nothing.
    let cancel = CancellationToken::new();
    let target = spec(dir.path(), "g4", "shop_restored");
    let target_storage = dir.path().join("storage-g4");
    let e = Cluster::restore_from(
        &repo,
        "b1",
        "main-g1",
        RecoveryTarget::Time(moment),
        &source.spec,
        system(),
        target.clone(),
        &Network::Host,
        &target_storage,
        &CancelOnBytes(cancel.clone()),
        &cancel,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, DataError::Cancelled), "{e}");
    assert_nothing_left(&target, &target_storage);

    // An environment without backups: its archived WAL is discarded, not kept.
    client
        .batch_execute("INSERT INTO orders (note) VALUES ('unkept')")
        .await
        .unwrap();
    source.flush_wal(&CancellationToken::new()).await.unwrap();
    assert!(source.discard_archived_wal().await.unwrap() >= 1);
    let archive = source.spec.archive.clone().unwrap();
    assert_eq!(std::fs::read_dir(&archive).unwrap().count(), 0);

    drop(client);
    source.remove().await.unwrap();
}
