//! Turnout's PostgreSQL base backups and restores from the command line, for timing them
//! against pg_basebackup and pg_dump | pg_restore: the real `Cluster::snapshot_into` and
//! `Cluster::restore_from`, not a re-enactment of them.
//!
//!   pg_backup_bench init BASE NAME PORT             a cluster NAME archiving its WAL
//!   pg_backup_bench snapshot BASE NAME PORT REPO SNAPSHOT
//!                                                   a base backup of NAME into the repository
//!                                                   REPO, then its WAL flushed and ingested
//!                                                   (stream NAME); prints the backup's seconds
//!   pg_backup_bench restore BASE FROM FROM_PORT REPO SNAPSHOT TO TO_PORT
//!                                                   SNAPSHOT of FROM restored as TO (to the
//!                                                   end of the backup); prints the seconds
//!   pg_backup_bench remove BASE NAME PORT           stop it and remove its directories
//!
//! A cluster NAME lives in BASE/pg/NAME, archives its WAL into BASE/pg/NAME.wal, has its socket
//! in BASE/pgsock/NAME, its log in BASE/NAME.log and its storage in BASE/storage/NAME (backed
//! up when it exists). Passwords come from the environment (never arguments):
//! TURNOUT_BENCH_SUPER_PASSWORD and TURNOUT_BENCH_APP_PASSWORD, the same for every cluster.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use turnout_data::backup::Repo;
use turnout_data::postgres::backup::RecoveryTarget;
use turnout_data::postgres::{Cluster, ClusterSpec, PgSystem};
use turnout_data::{Progress, Quiet};
use turnout_netns::Network;

fn spec(base: &Path, name: &str, port: &str) -> ClusterSpec {
    let password = |var: &str| std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set"));
    ClusterSpec {
        dir: base.join("pg").join(name),
        socket_dir: base.join("pgsock").join(name),
        log: base.join(format!("{name}.log")),
        port: port.parse().expect("PORT is a port number"),
        superuser_password: password("TURNOUT_BENCH_SUPER_PASSWORD"),
        database: name.to_owned(),
        app_password: password("TURNOUT_BENCH_APP_PASSWORD"),
        archive: Some(base.join("pg").join(format!("{name}.wal"))),
    }
}

fn storage(base: &Path, name: &str) -> PathBuf {
    base.join("storage").join(name)
}

/// Prints the steps on stderr with the seconds since the start (the progress figures at most
/// once per 10 % of the total).
struct Stderr(Instant, std::sync::atomic::AtomicU64);

impl Progress for Stderr {
    fn line(&self, text: &str) {
        eprintln!("{:7.2} s  {text}", self.0.elapsed().as_secs_f64());
    }
    fn bytes(&self, done: u64, total: Option<u64>) {
        let Some(total) = total.filter(|t| *t > 0) else {
            return;
        };
        let tenth = done * 10 / total;
        if self.1.swap(tenth, std::sync::atomic::Ordering::Relaxed) != tenth {
            self.line(&format!("{} of {} MiB", done >> 20, total >> 20));
        }
    }
    fn table_masked(&self, _: &str, _: u64) {}
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sys = PgSystem::find()?;
    let cancel = CancellationToken::new();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["init", base, name, port] => {
            let spec = spec(Path::new(base), name, port);
            Cluster::init(sys, spec, &Network::Host, &Quiet, &cancel).await?;
        }
        ["snapshot", base, name, port, repo, snapshot] => {
            let base = Path::new(base);
            let cluster = Cluster {
                sys,
                spec: spec(base, name, port),
            };
            let repo = Repo::open(PathBuf::from(repo)).await?;
            let started = Instant::now();
            let progress = Stderr(started, 0.into());
            let backup = cluster
                .snapshot_into(&repo, snapshot, &storage(base, name), &progress, &cancel)
                .await?;
            let seconds = started.elapsed().as_secs_f64();
            cluster.flush_wal(&cancel).await?;
            let wal = cluster.ingest_wal(&repo, name, &cancel).await?;
            eprintln!(
                "base backup: {} MiB read, {} MiB stored ({} of {} chunks new); WAL: {} segments, {} MiB stored",
                backup.stats.logical_bytes >> 20,
                backup.stats.stored_bytes >> 20,
                backup.stats.new_chunks,
                backup.stats.chunks,
                wal.segments,
                wal.stored_bytes >> 20
            );
            println!("{seconds:.3}");
        }
        [
            "restore",
            base,
            from,
            from_port,
            repo,
            snapshot,
            to,
            to_port,
        ] => {
            let base = Path::new(base);
            let repo = Repo::open(PathBuf::from(repo)).await?;
            let started = Instant::now();
            Cluster::restore_from(
                &repo,
                snapshot,
                from,
                RecoveryTarget::EndOfBackup,
                &spec(base, from, from_port),
                sys,
                spec(base, to, to_port),
                &Network::Host,
                &storage(base, to),
                &Stderr(started, 0.into()),
                &cancel,
            )
            .await?;
            println!("{:.3}", started.elapsed().as_secs_f64());
        }
        ["remove", base, name, port] => {
            let base = Path::new(base);
            let cluster = Cluster {
                sys,
                spec: spec(base, name, port),
            };
            cluster.remove().await?;
            match std::fs::remove_dir_all(storage(base, name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        _ => {
            return Err("usage: pg_backup_bench init BASE NAME PORT | snapshot BASE NAME PORT REPO SNAPSHOT | restore BASE FROM FROM_PORT REPO SNAPSHOT TO TO_PORT | remove BASE NAME PORT".into());
        }
    }
    Ok(())
}
