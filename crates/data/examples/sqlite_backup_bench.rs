//! Turnout's SQLite snapshots from the command line, for timing them against `cp` and measuring
//! what a day of them costs: the real `Repo::snapshot_sqlite`, `restore_sqlite` and
//! `retention::keep`, not a re-enactment of them. Each command prints one JSON line.
//!
//!   sqlite_backup_bench snapshot DB REPO NAME   a snapshot NAME of DB into the repository REPO
//!   sqlite_backup_bench restore REPO NAME OUT   snapshot NAME written out as the database OUT
//!   sqlite_backup_bench day DB REPO MINUTES PERMILLE
//!       a day (MINUTES minutes) of the exponential schedule: every minute PERMILLE ‰ of DB's
//!       pages are changed (rows of table `notes` rewritten in place, spread over the file);
//!       the snapshots the schedule still keeps at the end are taken at their minute, then the
//!       repository's size on disk is compared with the database's. Snapshots retention deletes
//!       before the end are skipped: a deleted snapshot is never wanted again (the retention
//!       property tests), so the repository at the end holds exactly the same snapshots as if
//!       every minute had been taken and the unwanted ones deleted along the way.

use std::path::PathBuf;
use std::time::Instant;

use rusqlite::{Connection, params};
use tokio_util::sync::CancellationToken;
use turnout_data::Quiet;
use turnout_data::backup::Repo;
use turnout_data::backup::retention::{Candidate, EXPONENTIAL, keep};
use turnout_data::sqlite::SqliteDb;

type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

#[tokio::main]
async fn main() -> Fallible<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cancel = CancellationToken::new();
    let absolute = |p: &str| std::path::absolute(PathBuf::from(p));
    match args.as_slice() {
        ["snapshot", db, repo, name] => {
            let (db, repo) = (
                SqliteDb::at(absolute(db)?),
                Repo::open(absolute(repo)?).await?,
            );
            let empty = tempfile::tempdir()?;
            let started = Instant::now();
            let stats = repo
                .snapshot_sqlite(name, &db, empty.path(), &Quiet, &cancel)
                .await?;
            println!(
                "{{\"seconds\": {:.3}, \"logical_bytes\": {}, \"stored_bytes\": {}, \"chunks\": {}, \"new_chunks\": {}}}",
                started.elapsed().as_secs_f64(),
                stats.logical_bytes,
                stats.stored_bytes,
                stats.chunks,
                stats.new_chunks
            );
        }
        ["restore", repo, name, out] => {
            let repo = Repo::open(absolute(repo)?).await?;
            let out = absolute(out)?;
            let storage = out.with_extension("storage");
            let started = Instant::now();
            repo.restore_sqlite(name, &SqliteDb::at(out), &storage, &Quiet, &cancel)
                .await?;
            println!("{{\"seconds\": {:.3}}}", started.elapsed().as_secs_f64());
        }
        ["day", db, repo, minutes, permille] => {
            let (minutes, permille): (i64, u64) = (minutes.parse()?, permille.parse()?);
            if !(1..=100_000).contains(&minutes) || !(1..=1000).contains(&permille) {
                return Err("MINUTES is 1 to 100000 and PERMILLE 1 to 1000".into());
            }
            day(&absolute(db)?, &absolute(repo)?, minutes, permille, &cancel).await?;
        }
        _ => {
            return Err("usage: sqlite_backup_bench snapshot DB REPO NAME | restore REPO NAME OUT | day DB REPO MINUTES PERMILLE".into());
        }
    }
    Ok(())
}

/// The minutes (0 to `minutes`) whose snapshots the exponential schedule keeps at the end of
/// the day, the history being one snapshot a minute, deleted as soon as a run no longer keeps it.
fn kept_minutes(minutes: i64) -> Vec<i64> {
    let mut alive: Vec<Candidate> = Vec::new();
    for m in 0..=minutes {
        alive.push(Candidate {
            id: m,
            at: m * 60,
            pinned: false,
            busy: false,
        });
        let kept = keep(&EXPONENTIAL, &alive, m * 60);
        alive.retain(|c| kept.contains(&c.id));
    }
    alive.iter().map(|c| c.id).collect()
}

async fn day(
    db: &std::path::Path,
    repo: &std::path::Path,
    minutes: i64,
    permille: u64,
    cancel: &CancellationToken,
) -> Fallible<()> {
    let conn = Connection::open(db)?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let pages = u64::try_from(pages)?;
    let rows: i64 = conn.query_row("SELECT max(id) FROM notes", [], |r| r.get(0))?;
    let rows = u64::try_from(rows)?;
    // Rows per page, roughly: the rows rewritten each minute touch this many distinct pages.
    let per_minute = (pages * permille).div_ceil(1000);
    let wanted = kept_minutes(minutes);
    let repo = Repo::open(repo.to_path_buf()).await?;
    let source = SqliteDb::at(db.to_path_buf());
    let empty = tempfile::tempdir()?;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut snapshot_seconds = 0.0;
    for m in 0..=minutes {
        if m > 0 {
            // `per_minute` rows picked at random (each on a page of its own, but for the rare
            // two on one page), their text rewritten with the same length (so each row stays
            // where it is and only its page changes).
            let tx = conn.unchecked_transaction()?;
            {
                let mut update = tx.prepare(
                    "UPDATE notes SET body = upper(substr(body, 1, 1)) || substr(body, 2, length(body) - 9) || printf('%08d', ?2) WHERE id = ?1",
                )?;
                for _ in 0..per_minute {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    update.execute(params![i64::try_from(state % rows + 1)?, m])?;
                }
            }
            tx.commit()?;
        }
        if wanted.contains(&m) {
            let started = Instant::now();
            repo.snapshot_sqlite(&format!("m{m}"), &source, empty.path(), &Quiet, cancel)
                .await?;
            snapshot_seconds += started.elapsed().as_secs_f64();
        }
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    let db_bytes = std::fs::metadata(db)?.len();
    let usage = repo.usage().await?;
    println!(
        "{{\"db_bytes\": {db_bytes}, \"pages\": {pages}, \"pages_changed_per_minute\": {per_minute}, \"minutes\": {minutes}, \"snapshots_kept\": {}, \"repo_disk_bytes\": {}, \"repo_stored_bytes\": {}, \"ratio\": {:.3}, \"snapshot_seconds\": {snapshot_seconds:.1}}}",
        wanted.len(),
        usage.disk_bytes,
        usage.stored_bytes,
        usage.disk_bytes as f64 / db_bytes as f64
    );
    Ok(())
}
