//! PostgreSQL: one cluster per generation of an environment's data, started from the system's
//! binaries (initdb, pg_ctl, postgres; found on PATH or under
//! `/usr/lib/postgresql/*/bin`), run as the `postgres` user when Turnout is root (initdb
//! refuses root) and as the daemon's user otherwise. A cluster listens on 127.0.0.1 inside the
//! environment's network (so only that environment's processes reach it over TCP) and on a unix
//! socket in a directory of its own, which is how Turnout administers it and how an attached
//! environment reaches it. Every role authenticates with SCRAM; the superuser (`turnout`) is
//! Turnout's alone. Passwords go to tools through the environment, never their arguments.
//!
//! Side effects off in copies: a clone starts first with only Turnout's own login allowed and
//! no logical replication workers, its subscriptions are disabled and detached from their
//! slots (`ALTER SUBSCRIPTION … DISABLE`, `SET (slot_name = NONE)`: the source's publisher and
//! slots are never touched), its replication slots are dropped and the source's attached roles
//! are dropped; only then is it restarted for the app. Masking ([`Cluster::mask`]) runs in one
//! transaction, and the control plane runs it before any app process gets the copy's URL.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;
use tracing::warn;
use turnout_netns::Network;
use turnout_supervisor::{ProgramOutput, ProgramSpec, run_program};

use crate::{DataError, MaskReport, MaskRules, Progress};

mod access;
pub mod backup;
mod copy;
mod safe;
mod sql;
mod system;

use sql::{mask_functions, mask_updates, percent_encode, table_columns};
pub use sql::{quote_ident, quote_literal};
use system::COPY;
pub use system::PgSystem;

/// The superuser every cluster has, Turnout's alone.
pub const SUPERUSER: &str = "turnout";

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
    /// The directory PostgreSQL archives finished WAL segments into (`basic_archive`), from
    /// which backups ingest them; made with the cluster. `None`: a cluster made before backups,
    /// which archives nothing.
    #[serde(default)]
    pub archive: Option<PathBuf>,
}

impl ClusterSpec {
    fn partial_dir(&self) -> PathBuf {
        let mut name = self.dir.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    }

    fn check(&self) -> Result<(), DataError> {
        for (what, value) in [
            ("database name", &self.database),
            ("superuser password", &self.superuser_password),
            ("app password", &self.app_password),
        ] {
            if value.is_empty() || value.contains('\0') {
                return Err(DataError::Invalid(format!(
                    "the cluster's {what} must be non-empty and have no NUL character"
                )));
            }
        }
        if self.database == SUPERUSER || self.database.starts_with("pg_") {
            return Err(DataError::Invalid(format!(
                "'{}' cannot be an environment's database: `{SUPERUSER}` and names starting with `pg_` are reserved",
                self.database
            )));
        }
        if self.dir.exists() || self.partial_dir().exists() {
            return Err(DataError::Invalid(format!(
                "{} already exists: a new cluster needs a directory of its own",
                self.dir.display()
            )));
        }
        if let Some(archive) = &self.archive
            && archive.exists()
        {
            return Err(DataError::Invalid(format!(
                "{} already exists: a new cluster needs a WAL archive directory of its own",
                archive.display()
            )));
        }
        Ok(())
    }
}

/// Which clients `pg_hba.conf` lets in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Logins {
    /// Only `turnout` (over the socket): while a clone is being made safe.
    TurnoutOnly,
    /// Every role, with its password, over the socket and 127.0.0.1.
    Everyone,
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
        spec.check()?;
        let cluster = Cluster { sys, spec };
        match cluster.init_steps(network, progress, cancel).await {
            Ok(()) => Ok(cluster),
            Err(e) => {
                cluster.discard().await;
                Err(e)
            }
        }
    }

    async fn init_steps(
        &self,
        network: &Network,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<(), DataError> {
        let (sys, spec) = (&self.sys, &self.spec);
        sys.make_dir(&spec.dir, 0o700)?;
        self.make_socket_dir_and_log()?;
        progress.line(&format!(
            "initdb: a new PostgreSQL cluster in {}",
            spec.dir.display()
        ));
        // The password reaches initdb through a file only its user can read, removed after.
        let pwfile = spec.socket_dir.join(".initdb-password");
        sys.write_file(&pwfile, &format!("{}\n", spec.superuser_password))?;
        let args: Vec<OsString> = vec![
            "-D".into(),
            spec.dir.clone().into(),
            "--auth=scram-sha-256".into(),
            format!("--username={SUPERUSER}").into(),
            {
                let mut arg = OsString::from("--pwfile=");
                arg.push(&pwfile);
                arg
            },
            "--encoding=UTF8".into(),
            "--locale=C".into(),
        ];
        let ran = self
            .run(sys.tool("initdb", args, &[]), progress, cancel)
            .await;
        let _ = std::fs::remove_file(&pwfile);
        ran?;
        self.write_config(Logins::Everyone, true, "")?;
        check_cancel(cancel)?;
        self.start_server(network, cancel).await?;
        let client = self.admin("postgres").await?;
        let (db, pw) = (&spec.database, &spec.app_password);
        let role = quote_ident(db);
        progress.line(&format!("creating role and database {db}"));
        client
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN PASSWORD {}",
                quote_literal(pw)
            ))
            .await
            .map_err(db_error("creating the environment's role"))?;
        client
            .batch_execute(&format!("CREATE DATABASE {role} OWNER {role}"))
            .await
            .map_err(db_error("creating the environment's database"))?;
        client
            .batch_execute(&format!(
                "REVOKE CONNECT, TEMPORARY ON DATABASE {role}, template1, postgres FROM PUBLIC"
            ))
            .await
            .map_err(db_error("revoking PUBLIC's access to the databases"))?;
        Ok(())
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
        spec.check()?;
        let cluster = Cluster {
            sys: source.sys.clone(),
            spec,
        };
        match cluster.clone_steps(source, network, progress, cancel).await {
            Ok(()) => Ok(cluster),
            Err(e) => {
                cluster.discard().await;
                Err(e)
            }
        }
    }

    async fn clone_steps(
        &self,
        source: &Cluster,
        network: &Network,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<(), DataError> {
        let (sys, spec) = (&self.sys, &self.spec);
        let partial = spec.partial_dir();
        if let Some(parent) = partial.parent()
            && !parent.exists()
        {
            sys.make_dir(parent, 0o711)?;
        }
        self.make_socket_dir_and_log()?;
        self.copy_files(source, &partial, progress, cancel).await?;
        std::fs::rename(&partial, &spec.dir).map_err(DataError::io("cannot rename", &partial))?;
        check_cancel(cancel)?;
        self.make_safe(
            &source.spec.database,
            &source.spec.superuser_password,
            network,
            progress,
            cancel,
        )
        .await
    }

    /// Starts the cluster in `network` if it is not running (after a daemon restart).
    pub async fn start(&self, network: &Network) -> Result<(), DataError> {
        if self.is_running().await {
            return Ok(());
        }
        if !self.spec.socket_dir.exists() {
            self.sys.make_dir(&self.spec.socket_dir, 0o711)?;
        }
        self.start_server(network, &CancellationToken::new()).await
    }

    /// Whether its server is running.
    pub async fn is_running(&self) -> bool {
        if !self.spec.dir.exists() {
            return false;
        }
        let tool = self.sys.tool(
            "pg_ctl",
            vec!["status".into(), "-D".into(), self.spec.dir.clone().into()],
            &[],
        );
        run_program(&tool, |_| {}, std::future::pending())
            .await
            .is_ok_and(|out| out.status.success())
    }

    /// Stops the server (fast shutdown: clients disconnected, nothing lost).
    pub async fn stop(&self) -> Result<(), DataError> {
        if !self.is_running().await {
            return Ok(());
        }
        let tool = self.sys.tool(
            "pg_ctl",
            vec![
                "stop".into(),
                "-D".into(),
                self.spec.dir.clone().into(),
                "-m".into(),
                "fast".into(),
                "-w".into(),
                "-t".into(),
                "60".into(),
            ],
            &[],
        );
        run_program(&tool, |_| {}, std::future::pending())
            .await
            .and_then(ProgramOutput::checked)
            .map_err(|e| DataError::Database(format!("stopping {}: {e}", self.spec.database)))?;
        Ok(())
    }

    /// Stops the server and removes its directories (its WAL archive too) and its log.
    pub async fn remove(&self) -> Result<(), DataError> {
        self.stop().await?;
        for dir in [
            Some(&self.spec.dir),
            Some(&self.spec.partial_dir()),
            // A restore's files being written (`restore_tree` writes through its own partial).
            Some(&crate::files::partial_path(&self.spec.partial_dir())),
            Some(&self.spec.socket_dir),
            self.spec.archive.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(DataError::io("cannot remove", dir)(e)),
            }
        }
        match std::fs::remove_file(&self.spec.log) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DataError::io("cannot remove", &self.spec.log)(e)),
        }
    }

    /// `postgres://ROLE:PASSWORD@127.0.0.1:PORT/DB`, the environment's own `DATABASE_URL`.
    pub fn app_url(&self) -> String {
        let s = &self.spec;
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            percent_encode(&s.database, false),
            percent_encode(&s.app_password, false),
            s.port,
            percent_encode(&s.database, false)
        )
    }

    /// A URL over the unix socket (`postgres://USER:PASSWORD@localhost:PORT/DB?host=SOCKET_DIR`),
    /// reachable from any network: for attached environments and `turnout data psql`.
    pub fn socket_url(&self, user: &str, password: &str) -> String {
        let s = &self.spec;
        format!(
            "postgres://{}:{}@localhost:{}/{}?host={}",
            percent_encode(user, false),
            percent_encode(password, false),
            s.port,
            percent_encode(&s.database, false),
            percent_encode(&s.socket_dir.to_string_lossy(), true)
        )
    }

    /// Runs a script of SQL statements (a seed file) as the environment's role.
    pub async fn run_sql(&self, sql: &str) -> Result<(), DataError> {
        let s = &self.spec;
        let mut client = self
            .connect(&s.database, &s.app_password, &s.database)
            .await?;
        let tx = client
            .transaction()
            .await
            .map_err(db_error("starting a transaction"))?;
        tx.batch_execute(sql)
            .await
            .map_err(db_error("running SQL"))?;
        tx.commit().await.map_err(db_error("committing SQL"))
    }

    /// Every (table, column) of the database's tables outside the system schemas, as
    /// `schema.table` unless the schema is `public`.
    pub async fn columns(&self) -> Result<Vec<(String, String)>, DataError> {
        let client = self.admin(&self.spec.database).await?;
        Ok(table_columns(&client)
            .await?
            .into_iter()
            .map(|c| (c.table, c.column))
            .collect())
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
        let mut client = self.admin(&self.spec.database).await?;
        let columns = table_columns(&client).await?;
        let names: Vec<(String, String)> = columns
            .iter()
            .map(|c| (c.table.clone(), c.column.clone()))
            .collect();
        crate::mask::check_strict(rules, &names).map_err(DataError::Unmasked)?;
        let updates = mask_updates(rules, &columns)?;
        let tx = client
            .transaction()
            .await
            .map_err(db_error("starting the masking transaction"))?;
        tx.batch_execute(&mask_functions())
            .await
            .map_err(db_error("defining the masking functions"))?;
        let mut report = MaskReport::default();
        for (table, update) in updates {
            check_cancel(cancel)?;
            let rows = tx
                .execute(update.as_str(), &[&key])
                .await
                .map_err(|e| DataError::Database(format!("masking {table}: {}", db_message(&e))))?;
            progress.table_masked(&table, rows);
            report.tables.push((table, rows));
        }
        check_cancel(cancel)?;
        tx.commit()
            .await
            .map_err(db_error("committing the masked data"))?;
        Ok(report)
    }

    /// The database's size in bytes.
    pub async fn size(&self) -> Result<u64, DataError> {
        let client = self.admin("postgres").await?;
        let size: i64 = client
            .query_one(
                "SELECT pg_database_size($1::text::name)",
                &[&self.spec.database],
            )
            .await
            .map_err(db_error("reading the database's size"))?
            .get(0);
        Ok(u64::try_from(size).unwrap_or(0))
    }

    /// The directories and files a new cluster has besides its data directory: its socket
    /// directory, its (empty) log and its WAL archive directory (0700, the cluster user's).
    fn make_socket_dir_and_log(&self) -> Result<(), DataError> {
        let spec = &self.spec;
        if !spec.socket_dir.exists() {
            self.sys.make_dir(&spec.socket_dir, 0o711)?;
        }
        if let Some(archive) = &spec.archive
            && !archive.exists()
        {
            self.sys.make_dir(archive, 0o700)?;
        }
        if let Some(parent) = spec.log.parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            self.sys.make_dir(parent, 0o711)?;
        }
        self.sys.write_file(&spec.log, "")
    }

    /// Writes the settings Turnout owns (`postgresql.auto.conf`, replaced whole) and
    /// `pg_hba.conf`. `replication_workers`: false holds every subscription still. `extra`:
    /// settings of this start only (a restore's recovery target), appended.
    fn write_config(
        &self,
        logins: Logins,
        replication_workers: bool,
        extra: &str,
    ) -> Result<(), DataError> {
        let spec = &self.spec;
        let mut settings = format!(
            "# Written by Turnout; replaced whenever it starts this cluster anew.\n\
             port = {}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = {}\n\
             unix_socket_permissions = 0777\n\
             wal_level = replica\n\
             max_wal_senders = 4\n\
             shared_buffers = '128MB'\n\
             max_connections = 100\n\
             password_encryption = 'scram-sha-256'\n\
             recovery_init_sync_method = syncfs\n",
            spec.port,
            quote_literal(&spec.socket_dir.to_string_lossy())
        );
        if !replication_workers {
            settings.push_str("max_logical_replication_workers = 0\n");
        }
        if let Some(archive) = &spec.archive {
            // Every finished segment is copied into the archive directory by PostgreSQL's own
            // module (no shell), at the latest a minute after it was begun.
            settings.push_str(&format!(
                "archive_mode = on\n\
                 archive_library = 'basic_archive'\n\
                 basic_archive.archive_directory = {}\n\
                 archive_timeout = '60s'\n",
                quote_literal(&archive.to_string_lossy())
            ));
        }
        settings.push_str(extra);
        self.sys
            .write_file(&spec.dir.join("postgresql.auto.conf"), &settings)?;
        let mut hba = format!(
            "# Written by Turnout.\n\
             local all {SUPERUSER} scram-sha-256\n\
             local replication {SUPERUSER} scram-sha-256\n"
        );
        if logins == Logins::Everyone {
            hba.push_str(
                "local all all scram-sha-256\n\
                 host all all 127.0.0.1/32 scram-sha-256\n",
            );
        }
        self.sys.write_file(&spec.dir.join("pg_hba.conf"), &hba)
    }

    /// `pg_ctl start -w` inside `network`: the server detaches and keeps running.
    async fn start_server(
        &self,
        network: &Network,
        cancel: &CancellationToken,
    ) -> Result<(), DataError> {
        let spec = &self.spec;
        let mut tool = self.sys.tool(
            "pg_ctl",
            vec![
                "start".into(),
                "-w".into(),
                "-t".into(),
                "100".into(),
                "-D".into(),
                spec.dir.clone().into(),
                "-l".into(),
                spec.log.clone().into(),
            ],
            &[],
        );
        tool.network = network.clone();
        let started = run_program(&tool, |_| {}, cancel.cancelled())
            .await
            .and_then(ProgramOutput::checked);
        match started {
            Ok(_) => Ok(()),
            Err(turnout_supervisor::SupervisorError::Cancelled { .. }) => Err(DataError::Cancelled),
            Err(e) => {
                let log = std::fs::read_to_string(&spec.log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                Err(DataError::Database(format!(
                    "starting PostgreSQL in {}: {e}\n{}",
                    spec.dir.display(),
                    lines[lines.len().saturating_sub(10)..].join("\n")
                )))
            }
        }
    }

    /// Runs a tool, passing its output lines on as progress.
    async fn run(
        &self,
        tool: ProgramSpec,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<ProgramOutput, DataError> {
        let ran = run_program(&tool, |line| progress.line(line), cancel.cancelled())
            .await
            .and_then(ProgramOutput::checked);
        ran.map_err(program_error)
    }

    /// What a failed init or clone leaves: nothing (a server it started is stopped).
    async fn discard(&self) {
        if let Err(e) = self.remove().await {
            warn!(dir = %self.spec.dir.display(), error = %e, "could not remove a failed cluster");
        }
    }

    /// A connection as the superuser to `database`.
    async fn admin(&self, database: &str) -> Result<Client, DataError> {
        self.connect(SUPERUSER, &self.spec.superuser_password, database)
            .await
    }

    /// A connection over the unix socket; its driver runs on a task of its own until the client
    /// is dropped.
    async fn connect(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<Client, DataError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.spec.socket_dir)
            .port(self.spec.port)
            .user(user)
            .password(password)
            .dbname(database)
            .application_name("turnout")
            .connect_timeout(Duration::from_secs(10));
        let (client, connection) = config.connect(NoTls).await.map_err(|e| {
            DataError::Database(format!(
                "connecting to database {database} as {user} on {}: {}",
                self.spec.socket_dir.display(),
                db_message(&e)
            ))
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                warn!(error = %e, "PostgreSQL connection ended with an error");
            }
        });
        Ok(client)
    }
}

fn check_cancel(cancel: &CancellationToken) -> Result<(), DataError> {
    if cancel.is_cancelled() {
        Err(DataError::Cancelled)
    } else {
        Ok(())
    }
}

/// The server's own message where there is one (tokio-postgres' Display says only "db error").
fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => e.to_string(),
    }
}

/// The first column of every row `sql` returns, as text (names of roles, databases, …).
async fn texts(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    doing: &'static str,
) -> Result<Vec<String>, DataError> {
    Ok(client
        .query(sql, params)
        .await
        .map_err(db_error(doing))?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

fn db_error(doing: &'static str) -> impl FnOnce(tokio_postgres::Error) -> DataError {
    move |e| DataError::Database(format!("{doing}: {}", db_message(&e)))
}

/// A tool's failure as the crate's error (a cancel as [`DataError::Cancelled`]).
fn program_error(e: turnout_supervisor::SupervisorError) -> DataError {
    match e {
        turnout_supervisor::SupervisorError::Cancelled { .. } => DataError::Cancelled,
        e => DataError::Database(match e.log_tail() {
            Some(tail) if !tail.is_empty() => format!("{e}:\n{tail}"),
            _ => e.to_string(),
        }),
    }
}
