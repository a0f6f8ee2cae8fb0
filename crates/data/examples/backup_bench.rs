//! The backup benchmark's driver (bench/run.sh), one JSON line per command:
//!
//! - `backup_bench sqlite-snapshot DB REPO_DIR`: a snapshot of the SQLite database DB into
//!   the repository at REPO_DIR (named `b<N>`, N one more than the snapshots there); prints
//!   its name, the seconds it took and the bytes it stored.
//! - `backup_bench sqlite-restore REPO_DIR NAME OUT`: snapshot NAME written out as the
//!   database OUT (its storage next to it as `OUT.storage`); prints the seconds.
//! - `backup_bench sqlite-day DB_SIZE_MIB REPO_DIR`: makes a database of about DB_SIZE_MIB MiB
//!   (random 1,000-byte rows) next to REPO_DIR, then a simulated day: every minute 0.1 % of its
//!   pages rewritten, a snapshot, and the exponential schedule's retention (times simulated:
//!   snapshot i is taken at minute i); prints the repository's bytes on disk over the
//!   database's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use turnout_data::Quiet;
use turnout_data::backup::Repo;
use turnout_data::backup::retention::{self, Candidate, EXPONENTIAL};
use turnout_data::sqlite::SqliteDb;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["sqlite-snapshot", db, repo] => snapshot(&abs(db), &abs(repo)).await,
        ["sqlite-restore", repo, name, out] => restore(&abs(repo), name, &abs(out)).await,
        ["sqlite-day", mib, repo] => match mib.parse::<u64>() {
            Ok(mib) if (1..=65_536).contains(&mib) => day(mib, &abs(repo)).await,
            _ => Err("DB_SIZE_MIB must be a number of MiB from 1 to 65536".into()),
        },
        _ => Err("usage: backup_bench sqlite-snapshot DB REPO_DIR | sqlite-restore REPO_DIR NAME OUT | sqlite-day DB_SIZE_MIB REPO_DIR".into()),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn abs(p: &str) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| PathBuf::from(p))
}

type Res = Result<(), String>;

async fn next_name(repo: &Repo) -> Result<String, String> {
    for n in 1.. {
        let name = format!("b{n}");
        if !repo.contains(&name).await.map_err(|e| e.to_string())? {
            return Ok(name);
        }
    }
    unreachable!()
}

async fn snapshot(db: &Path, dir: &Path) -> Res {
    let repo = Repo::open(dir.to_path_buf())
        .await
        .map_err(|e| e.to_string())?;
    let name = next_name(&repo).await?;
    let started = Instant::now();
    let stats = repo
        .snapshot_sqlite(
            &name,
            &SqliteDb::at(db.to_path_buf()),
            &dir.join("no-storage"),
            &Quiet,
            &CancellationToken::new(),
        )
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "{{\"name\":\"{name}\",\"seconds\":{:.3},\"logical_bytes\":{},\"stored_bytes\":{},\"chunks\":{},\"new_chunks\":{}}}",
        started.elapsed().as_secs_f64(),
        stats.logical_bytes,
        stats.stored_bytes,
        stats.chunks,
        stats.new_chunks
    );
    Ok(())
}

async fn restore(dir: &Path, name: &str, out: &Path) -> Res {
    let repo = Repo::open(dir.to_path_buf())
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut storage = out.as_os_str().to_owned();
    storage.push(".storage");
    repo.restore_sqlite(
        name,
        &SqliteDb::at(out.to_path_buf()),
        Path::new(&storage),
        &Quiet,
        &CancellationToken::new(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let bytes = std::fs::metadata(out).map_err(|e| e.to_string())?.len();
    println!(
        "{{\"seconds\":{:.3},\"bytes\":{bytes}}}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn day(mib: u64, dir: &Path) -> Res {
    let db_path = dir.with_extension("day.sqlite");
    let failed = |e: rusqlite::Error| e.to_string();
    let c = rusqlite::Connection::open(&db_path).map_err(failed)?;
    c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .map_err(failed)?;
    let rows = (mib << 20) / 1040;
    c.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, pad BLOB NOT NULL);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows})
         INSERT INTO t (pad) SELECT randomblob(1000) FROM s;
         PRAGMA wal_checkpoint(TRUNCATE);"
    ))
    .map_err(failed)?;
    let db = SqliteDb::at(db_path.clone());
    let repo = Repo::open(dir.to_path_buf())
        .await
        .map_err(|e| e.to_string())?;
    let pages = std::fs::metadata(&db_path)
        .map_err(|e| e.to_string())?
        .len()
        / 4096;
    let start = 1_800_000_000 / 86_400 * 86_400;
    let (mut alive, mut seed, mut seconds) =
        (Vec::<Candidate>::new(), 0x9e37_79b9_7f4a_7c15u64, 0.0);
    for minute in 0..1440i64 {
        for _ in 0..(pages / 1000).max(1) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let id = (seed % rows) as i64 + 1;
            c.execute("UPDATE t SET pad = randomblob(1000) WHERE id = ?1", [id])
                .map_err(failed)?;
        }
        let started = Instant::now();
        repo.snapshot_sqlite(
            &format!("b{minute}"),
            &db,
            &dir.join("no-storage"),
            &Quiet,
            &CancellationToken::new(),
        )
        .await
        .map_err(|e| e.to_string())?;
        seconds += started.elapsed().as_secs_f64();
        let now = start + minute * 60;
        alive.push(Candidate {
            id: minute,
            at: now,
            pinned: false,
            busy: false,
        });
        let kept = retention::keep(&EXPONENTIAL, &alive, now);
        for gone in alive.iter().filter(|s| !kept.contains(&s.id)) {
            repo.delete(&format!("b{}", gone.id))
                .await
                .map_err(|e| e.to_string())?;
        }
        alive.retain(|s| kept.contains(&s.id));
    }
    let usage = repo.usage().await.map_err(|e| e.to_string())?;
    let size = std::fs::metadata(&db_path)
        .map_err(|e| e.to_string())?
        .len();
    println!(
        "{{\"db_bytes\":{size},\"repo_disk_bytes\":{},\"ratio\":{:.3},\"kept\":{},\"mean_snapshot_seconds\":{:.3}}}",
        usage.disk_bytes,
        usage.disk_bytes as f64 / size as f64,
        alive.len(),
        seconds / 1440.0
    );
    Ok(())
}
