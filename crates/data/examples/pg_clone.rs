//! Turnout's PostgreSQL clusters from the command line, for bench/run.sh (BENCH_ONLY=data-pg):
//! the benchmark times the real `Cluster::clone_from`, not a re-enactment of it.
//!
//!   pg_clone init BASE NAME PORT                  a cluster NAME (database and role NAME)
//!   pg_clone clone BASE FROM FROM_PORT TO TO_PORT a copy of FROM as TO; prints the seconds
//!   pg_clone remove BASE NAME PORT                stop it and remove its directories
//!
//! A cluster NAME lives in BASE/pg/NAME, its socket in BASE/pgsock/NAME and its log in
//! BASE/NAME.log. Passwords come from the environment (never arguments):
//! TURNOUT_BENCH_SUPER_PASSWORD and TURNOUT_BENCH_APP_PASSWORD, the same for every cluster.

use std::path::Path;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
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
        archive: None,
    }
}

/// Prints the steps on stderr with the seconds since the start (the last progress figure
/// once, at the end of the copy).
struct Stderr(Instant);

impl Progress for Stderr {
    fn line(&self, text: &str) {
        eprintln!("{:7.2} s  {text}", self.0.elapsed().as_secs_f64());
    }
    fn bytes(&self, done: u64, total: Option<u64>) {
        if total == Some(done) {
            self.line(&format!("copied {} MiB", done >> 20));
        }
    }
    fn table_masked(&self, table: &str, rows: u64) {
        eprintln!("masked {table}: {rows} rows");
    }
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
        ["clone", base, from, from_port, to, to_port] => {
            let source = Cluster {
                sys,
                spec: spec(Path::new(base), from, from_port),
            };
            let target = spec(Path::new(base), to, to_port);
            let started = Instant::now();
            Cluster::clone_from(&source, target, &Network::Host, &Stderr(started), &cancel).await?;
            println!("{:.3}", started.elapsed().as_secs_f64());
        }
        ["remove", base, name, port] => {
            let cluster = Cluster {
                sys,
                spec: spec(Path::new(base), name, port),
            };
            cluster.remove().await?;
        }
        _ => {
            return Err("usage: pg_clone init BASE NAME PORT | clone BASE FROM FROM_PORT TO TO_PORT | remove BASE NAME PORT".into());
        }
    }
    Ok(())
}
