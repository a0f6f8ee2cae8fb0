//! PostgreSQL: one cluster per generation of an environment's data, started from the system's
//! binaries (initdb, pg_ctl, pg_basebackup; found on PATH or under
//! `/usr/lib/postgresql/*/bin`), run as the `postgres` user when Turnout is root (initdb
//! refuses root) and as the daemon's user otherwise. A cluster listens on 127.0.0.1 inside the
//! environment's network (so only that environment's processes reach it over TCP) and on a unix
//! socket in a directory of its own, which is how Turnout administers it and how an attached
//! environment reaches it. Every role authenticates with SCRAM; the superuser (`turnout`) is
//! Turnout's alone. Passwords go to tools through the environment, never their arguments.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;
use turnout_netns::Network;

use crate::{Access, DataError, MaskReport, MaskRules, Progress};

/// The PostgreSQL installation and the user clusters run as.
#[derive(Clone, Debug)]
pub struct PgSystem {
    /// Where initdb, pg_ctl, postgres and pg_basebackup are.
    pub bin_dir: PathBuf,
    /// Who the clusters run as: the `postgres` user when Turnout is root, else None (the
    /// daemon's own user).
    pub run_as: Option<turnout_supervisor::Identity>,
}

impl PgSystem {
    /// Finds the binaries and, as root, the `postgres` user; a clear error says what to install
    /// when either is missing.
    pub fn find() -> Result<PgSystem, DataError> {
        todo!()
    }
}

/// Where one cluster lives and who may log in: everything needed to start it again after a
/// daemon restart (the control plane stores it).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterSpec {
    /// Its data directory (made by `init`/`clone_from`; must not exist before).
    pub dir: PathBuf,
    /// The directory of its unix socket (made, 0711; the socket itself 0777, passwords guard it).
    pub socket_dir: PathBuf,
    /// Its server log.
    pub log: PathBuf,
    /// Its port, on 127.0.0.1 in the environment's network and in the socket's name.
    pub port: u16,
    /// The superuser `turnout`'s password.
    pub superuser_password: String,
    /// The environment's own role and database (the same name).
    pub database: String,
    /// The environment's role's password.
    pub app_password: String,
}

/// A cluster Turnout made.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub sys: PgSystem,
    pub spec: ClusterSpec,
}

impl Cluster {
    /// A new, empty cluster with the environment's role and database, started in `network`.
    pub async fn init(
        sys: PgSystem,
        spec: ClusterSpec,
        network: &Network,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<Cluster, DataError> {
        todo!(
            "{sys:?} {spec:?} {network:?} {:?} {}",
            progress.line(""),
            cancel.is_cancelled()
        )
    }
    /// A physical copy of `source` (online: its clients are neither disconnected nor blocked)
    /// as a new cluster at `spec`, started in `network`, whose roles and passwords are `spec`'s
    /// own (the source's role and database renamed, the source's other roles dropped) and whose
    /// subscriptions are disabled, before anyone but Turnout can log in.
    pub async fn clone_from(
        source: &Cluster,
        spec: ClusterSpec,
        network: &Network,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<Cluster, DataError> {
        todo!(
            "{source:?} {spec:?} {network:?} {:?} {}",
            progress.line(""),
            cancel.is_cancelled()
        )
    }
    /// Starts the cluster in `network` if it is not running (after a daemon restart).
    pub async fn start(&self, network: &Network) -> Result<(), DataError> {
        todo!("{network:?}")
    }
    /// Whether its server is running.
    pub async fn is_running(&self) -> bool {
        todo!()
    }
    /// Stops the server (fast shutdown: clients disconnected, nothing lost).
    pub async fn stop(&self) -> Result<(), DataError> {
        todo!()
    }
    /// Stops the server and removes its directories.
    pub async fn remove(&self) -> Result<(), DataError> {
        todo!()
    }
    /// `postgres://ROLE:PASSWORD@127.0.0.1:PORT/DB`, the environment's own `DATABASE_URL`.
    pub fn app_url(&self) -> String {
        todo!()
    }
    /// A URL over the unix socket (`postgres://USER:PASSWORD@localhost:PORT/DB?host=SOCKET_DIR`),
    /// reachable from any network: for attached environments and `turnout data psql`.
    pub fn socket_url(&self, user: &str, password: &str) -> String {
        todo!("{user} {password}")
    }
    /// Runs a script of SQL statements (a seed file) as the environment's role.
    pub async fn run_sql(&self, sql: &str) -> Result<(), DataError> {
        todo!("{sql}")
    }
    /// Every (table, column) of the database's tables outside the system schemas, as
    /// `schema.table` unless the schema is `public`.
    pub async fn columns(&self) -> Result<Vec<(String, String)>, DataError> {
        todo!()
    }
    /// Checks `rules` strictly against the columns, then masks every table (in one
    /// transaction), reporting each table.
    pub async fn mask(
        &self,
        rules: &MaskRules,
        key: &str,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<MaskReport, DataError> {
        todo!(
            "{rules:?} {key} {:?} {}",
            progress.line(""),
            cancel.is_cancelled()
        )
    }
    /// Creates (or re-creates) a login role `role` with `password` that may do `access` on the
    /// database's tables, now and those made later by the environment's role.
    pub async fn attach(
        &self,
        role: &str,
        password: &str,
        access: Access,
    ) -> Result<(), DataError> {
        todo!("{role} {password} {access:?}")
    }
    /// Drops an attached role (absent is fine).
    pub async fn detach(&self, role: &str) -> Result<(), DataError> {
        todo!("{role}")
    }
    /// The database's size in bytes.
    pub async fn size(&self) -> Result<u64, DataError> {
        todo!()
    }
}
