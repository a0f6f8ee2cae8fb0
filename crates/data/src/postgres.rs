//! PostgreSQL: one cluster per generation of an environment's data, started from the system's
//! binaries (initdb, pg_ctl, pg_basebackup; found on PATH or under
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
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;
use tracing::warn;
use turnout_netns::Network;
use turnout_supervisor::{Identity, ProgramOutput, ProgramSpec, run_program};

use crate::mask::{FIRST_NAMES, LAST_NAMES, WORDS};
use crate::{Access, DataError, FakeKind, MaskReport, MaskRule, MaskRules, Progress};

/// The superuser every cluster has, Turnout's alone.
pub const SUPERUSER: &str = "turnout";

/// How to get PostgreSQL where it is missing.
const INSTALL_HINT: &str = "install Debian's `postgresql` package (apt-get install postgresql)";

/// Time limits for the tools: initdb and a server's start or stop take seconds; a base backup
/// of a large database takes as long as it takes (a cancel stops it).
const QUICK: Duration = Duration::from_secs(120);
const COPY: Duration = Duration::from_secs(24 * 3600);

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
        let bin_dir = find_bin_dir().ok_or_else(|| {
            DataError::Unavailable(format!(
                "PostgreSQL's initdb, pg_ctl and pg_basebackup were found neither on PATH nor under /usr/lib/postgresql/*/bin: {INSTALL_HINT}"
            ))
        })?;
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or_else(|| {
                    DataError::Unavailable(format!(
                        "Turnout runs as root and PostgreSQL refuses to, but there is no `postgres` user to run it as: {INSTALL_HINT}"
                    ))
                })?;
            Some(Identity {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            })
        } else {
            None
        };
        Ok(PgSystem { bin_dir, run_as })
    }

    fn has_tools(dir: &Path) -> bool {
        ["initdb", "pg_ctl", "pg_basebackup", "postgres"]
            .iter()
            .all(|tool| dir.join(tool).is_file())
    }

    /// A tool of this installation as the clusters' user, from a clean environment.
    fn tool(&self, name: &str, args: Vec<OsString>, extra_env: &[(&str, &str)]) -> ProgramSpec {
        let mut env = vec![
            (
                "PATH".to_owned(),
                format!("{}:/usr/bin:/bin", self.bin_dir.display()),
            ),
            ("LC_ALL".to_owned(), "C".to_owned()),
        ];
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        ProgramSpec {
            program: self.bin_dir.join(name),
            args,
            cwd: PathBuf::from("/"),
            env,
            identity: self.run_as,
            network: Network::Host,
            timeout: QUICK,
        }
    }

    /// Gives `path` to the clusters' user (when that is not the daemon's).
    fn give(&self, path: &Path) -> Result<(), DataError> {
        if let Some(id) = self.run_as {
            std::os::unix::fs::chown(path, Some(id.uid), Some(id.gid))
                .map_err(DataError::io("cannot give to the postgres user", path))?;
        }
        Ok(())
    }

    /// Makes `dir` (which must not exist) with `mode`, and its missing parents (0711), all
    /// given to the clusters' user.
    fn make_dir(&self, dir: &Path, mode: u32) -> Result<(), DataError> {
        if let Some(parent) = dir.parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            self.make_dir(parent, 0o711)?;
        }
        std::fs::create_dir(dir).map_err(DataError::io("cannot create directory", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(DataError::io("cannot set the mode of", dir))?;
        self.give(dir)
    }

    /// Writes a file the server reads (0600, the clusters' user's).
    fn write_file(&self, path: &Path, contents: &str) -> Result<(), DataError> {
        std::fs::write(path, contents).map_err(DataError::io("cannot write", path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(DataError::io("cannot set the mode of", path))?;
        self.give(path)
    }
}

/// initdb's directory: from PATH (following a symlink such as /usr/local/bin/initdb), else the
/// newest /usr/lib/postgresql/VERSION/bin.
fn find_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|dir| std::fs::canonicalize(dir.join("initdb")).ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_owned))
        .find(|dir| PgSystem::has_tools(dir));
    on_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let version = e.file_name().to_str()?.parse().ok()?;
                Some((version, e.path().join("bin")))
            })
            .filter(|(_, dir)| PgSystem::has_tools(dir))
            .collect();
        versions.sort();
        versions.pop().map(|(_, dir)| dir)
    })
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
        self.write_config(Logins::Everyone, true)?;
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
        progress.line(&format!(
            "pg_basebackup: copying the cluster of {} (it keeps serving)",
            source.spec.database
        ));
        let args: Vec<OsString> = vec![
            "-D".into(),
            partial.clone().into(),
            "-h".into(),
            source.spec.socket_dir.clone().into(),
            "-p".into(),
            source.spec.port.to_string().into(),
            "-U".into(),
            SUPERUSER.into(),
            "-w".into(),
            "-X".into(),
            "stream".into(),
            "-c".into(),
            "fast".into(),
            "-P".into(),
        ];
        let mut tool = sys.tool(
            "pg_basebackup",
            args,
            &[("PGPASSWORD", &source.spec.superuser_password)],
        );
        tool.timeout = COPY;
        self.run(tool, progress, cancel).await?;
        std::fs::rename(&partial, &spec.dir).map_err(DataError::io("cannot rename", &partial))?;
        check_cancel(cancel)?;

        // First start: only Turnout may log in and no subscription may run.
        progress.line("making the copy safe: roles, passwords, subscriptions, slots");
        self.write_config(Logins::TurnoutOnly, false)?;
        self.start_server(network, cancel).await?;
        let old_db = &source.spec.database;
        let old_super = &source.spec.superuser_password;
        let admin = self
            .connect(SUPERUSER, old_super, "postgres")
            .await
            .map_err(|e| DataError::Database(format!("connecting to the copy: {e}")))?;
        let others: Vec<String> = admin
            .query(
                "SELECT rolname FROM pg_roles WHERE rolcanlogin AND oid >= 16384 AND rolname <> $1 AND rolname <> $2 ORDER BY rolname",
                &[&SUPERUSER, old_db],
            )
            .await
            .map_err(db_error("listing the copy's roles"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let databases: Vec<String> = admin
            .query(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname",
                &[],
            )
            .await
            .map_err(db_error("listing the copy's databases"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for database in &databases {
            let client = self.connect(SUPERUSER, old_super, database).await?;
            let subscriptions: Vec<String> = client
                .query(
                    "SELECT subname FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    &[],
                )
                .await
                .map_err(db_error("listing subscriptions"))?
                .iter()
                .map(|row| row.get(0))
                .collect();
            for sub in &subscriptions {
                let sub = quote_ident(sub);
                client
                    .batch_execute(&format!(
                        "ALTER SUBSCRIPTION {sub} DISABLE; ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)"
                    ))
                    .await
                    .map_err(db_error("disabling a subscription of the copy"))?;
            }
            for role in &others {
                client
                    .batch_execute(&format!(
                        "REASSIGN OWNED BY {r} TO {app}; DROP OWNED BY {r}",
                        r = quote_ident(role),
                        app = quote_ident(old_db)
                    ))
                    .await
                    .map_err(db_error("dropping the source's attached roles' privileges"))?;
            }
        }
        let (new_db, new_role) = (&spec.database, quote_ident(&spec.database));
        let mut fix = String::new();
        for role in &others {
            fix.push_str(&format!("DROP ROLE {};\n", quote_ident(role)));
        }
        if new_db != old_db {
            fix.push_str(&format!(
                "ALTER DATABASE {old} RENAME TO {new_role};\nALTER ROLE {old} RENAME TO {new_role};\n",
                old = quote_ident(old_db)
            ));
        }
        fix.push_str(&format!(
            "ALTER ROLE {new_role} PASSWORD {};\nALTER ROLE {SUPERUSER} PASSWORD {};\n",
            quote_literal(&spec.app_password),
            quote_literal(&spec.superuser_password)
        ));
        fix.push_str(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active;\n",
        );
        admin
            .batch_execute(&fix)
            .await
            .map_err(db_error("renaming the copy's role and database"))?;
        drop(admin);
        check_cancel(cancel)?;

        // Then as the environment's own: every login, subscriptions still disabled.
        self.stop().await?;
        self.write_config(Logins::Everyone, true)?;
        self.start_server(network, cancel).await?;
        progress.line(&format!("the copy {new_db} is ready"));
        Ok(())
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

    /// Stops the server and removes its directories and its log.
    pub async fn remove(&self) -> Result<(), DataError> {
        self.stop().await?;
        for dir in [
            &self.spec.dir,
            &self.spec.partial_dir(),
            &self.spec.socket_dir,
        ] {
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

    /// Creates (or re-creates) a login role `role` with `password` that may do `access` on the
    /// database's tables, now and those made later by the environment's role.
    pub async fn attach(
        &self,
        role: &str,
        password: &str,
        access: Access,
    ) -> Result<(), DataError> {
        self.check_attached_name(role)?;
        if password.is_empty() || password.contains('\0') {
            return Err(DataError::Invalid(
                "an attached role's password must be non-empty and have no NUL character".into(),
            ));
        }
        self.detach(role).await?;
        let db = self.admin(&self.spec.database).await?;
        let r = quote_ident(role);
        let app = quote_ident(&self.spec.database);
        let (tables, sequences) = match access {
            Access::Read => ("SELECT", None),
            Access::Append => ("SELECT, INSERT", Some("USAGE, SELECT")),
            Access::ReadWrite => (
                "SELECT, INSERT, UPDATE, DELETE",
                Some("USAGE, SELECT, UPDATE"),
            ),
        };
        let mut sql = format!(
            "CREATE ROLE {r} LOGIN PASSWORD {};\nGRANT CONNECT ON DATABASE {app} TO {r};\n\
             ALTER DEFAULT PRIVILEGES FOR ROLE {app} GRANT USAGE ON SCHEMAS TO {r};\n\
             ALTER DEFAULT PRIVILEGES FOR ROLE {app} GRANT {tables} ON TABLES TO {r};\n",
            quote_literal(password)
        );
        if let Some(sequences) = sequences {
            sql.push_str(&format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {app} GRANT {sequences} ON SEQUENCES TO {r};\n"
            ));
        }
        let schemas: Vec<String> = db
            .query(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_%'",
                &[],
            )
            .await
            .map_err(db_error("listing schemas"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for schema in &schemas {
            let s = quote_ident(schema);
            sql.push_str(&format!(
                "GRANT USAGE ON SCHEMA {s} TO {r};\nGRANT {tables} ON ALL TABLES IN SCHEMA {s} TO {r};\n"
            ));
            if let Some(sequences) = sequences {
                sql.push_str(&format!(
                    "GRANT {sequences} ON ALL SEQUENCES IN SCHEMA {s} TO {r};\n"
                ));
            }
        }
        db.batch_execute(&format!("BEGIN;\n{sql}COMMIT;"))
            .await
            .map_err(|e| DataError::Database(format!("creating role {role}: {}", db_message(&e))))
    }

    /// Drops an attached role (absent is fine).
    pub async fn detach(&self, role: &str) -> Result<(), DataError> {
        self.check_attached_name(role)?;
        let db = self.admin(&self.spec.database).await?;
        let exists = db
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await
            .map_err(db_error("looking up a role"))?
            .is_some();
        if !exists {
            return Ok(());
        }
        let r = quote_ident(role);
        db.batch_execute(&format!("BEGIN; DROP OWNED BY {r}; DROP ROLE {r}; COMMIT;"))
            .await
            .map_err(|e| DataError::Database(format!("dropping role {role}: {}", db_message(&e))))
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

    fn check_attached_name(&self, role: &str) -> Result<(), DataError> {
        if role.is_empty()
            || role.contains('\0')
            || role.len() > 63
            || role == SUPERUSER
            || role == self.spec.database
            || role.starts_with("pg_")
        {
            return Err(DataError::Invalid(format!(
                "'{role}' cannot be an attached role: it must be 1 to 63 bytes, not `{SUPERUSER}`, not the environment's own role `{}` and not start with `pg_`",
                self.spec.database
            )));
        }
        Ok(())
    }

    fn make_socket_dir_and_log(&self) -> Result<(), DataError> {
        let spec = &self.spec;
        if !spec.socket_dir.exists() {
            self.sys.make_dir(&spec.socket_dir, 0o711)?;
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
    /// `pg_hba.conf`. `replication_workers`: false holds every subscription still.
    fn write_config(&self, logins: Logins, replication_workers: bool) -> Result<(), DataError> {
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
             password_encryption = 'scram-sha-256'\n",
            spec.port,
            quote_literal(&spec.socket_dir.to_string_lossy())
        );
        if !replication_workers {
            settings.push_str("max_logical_replication_workers = 0\n");
        }
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

    /// Runs a tool, passing its progress on (pg_basebackup's `-P` lines become bytes).
    async fn run(
        &self,
        tool: ProgramSpec,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<ProgramOutput, DataError> {
        let ran = run_program(
            &tool,
            |line| match parse_basebackup_progress(line) {
                Some((done, total)) => progress.bytes(done, Some(total)),
                None => progress.line(line),
            },
            cancel.cancelled(),
        )
        .await
        .and_then(ProgramOutput::checked);
        match ran {
            Ok(out) => Ok(out),
            Err(turnout_supervisor::SupervisorError::Cancelled { .. }) => Err(DataError::Cancelled),
            Err(e) => Err(DataError::Database(match e.log_tail() {
                Some(tail) if !tail.is_empty() => format!("{e}:\n{tail}"),
                _ => e.to_string(),
            })),
        }
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

fn db_error(doing: &'static str) -> impl FnOnce(tokio_postgres::Error) -> DataError {
    move |e| DataError::Database(format!("{doing}: {}", db_message(&e)))
}

/// `(done, total)` bytes from a pg_basebackup `-P` line: `  1234/56789 kB (2%), 0/1 tablespace`.
fn parse_basebackup_progress(line: &str) -> Option<(u64, u64)> {
    let (done, rest) = line.trim_start().split_once('/')?;
    let (total, rest) = rest.split_once(' ')?;
    if !rest.starts_with("kB") {
        return None;
    }
    Some((
        done.parse::<u64>().ok()? * 1024,
        total.parse::<u64>().ok()? * 1024,
    ))
}

/// One column of a base table.
struct TableColumn {
    /// `schema.table`, or `table` in `public`.
    table: String,
    schema: String,
    table_name: String,
    column: String,
    /// text, varchar, bpchar, citext: what hash and fake rules apply to.
    text_like: bool,
}

async fn table_columns(client: &Client) -> Result<Vec<TableColumn>, DataError> {
    let rows = client
        .query(
            "SELECT c.table_schema::text, c.table_name::text, c.column_name::text, c.udt_name::text \
             FROM information_schema.columns c JOIN information_schema.tables t \
               ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
             WHERE t.table_type = 'BASE TABLE' \
               AND c.table_schema NOT IN ('pg_catalog', 'information_schema') \
             ORDER BY c.table_schema, c.table_name, c.ordinal_position",
            &[],
        )
        .await
        .map_err(db_error("listing the database's columns"))?;
    Ok(rows
        .iter()
        .map(|row| {
            let (schema, table_name): (String, String) = (row.get(0), row.get(1));
            let udt: String = row.get(3);
            TableColumn {
                table: if schema == "public" {
                    table_name.clone()
                } else {
                    format!("{schema}.{table_name}")
                },
                schema,
                table_name,
                column: row.get(2),
                text_like: matches!(udt.as_str(), "text" | "varchar" | "bpchar" | "citext"),
            }
        })
        .collect())
}

/// One `UPDATE` per table that has a column to change (`$1` is the masking key), in order.
fn mask_updates(
    rules: &MaskRules,
    columns: &[TableColumn],
) -> Result<Vec<(String, String)>, DataError> {
    let mut updates: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, String, Vec<String>)> = None;
    let mut flush = |current: &mut Option<(String, String, Vec<String>)>| {
        if let Some((table, target, sets)) = current.take()
            && !sets.is_empty()
        {
            updates.push((table, format!("UPDATE {target} SET {}", sets.join(", "))));
        }
    };
    for c in columns {
        if current
            .as_ref()
            .is_none_or(|(table, _, _)| *table != c.table)
        {
            flush(&mut current);
            current = Some((
                c.table.clone(),
                format!("{}.{}", quote_ident(&c.schema), quote_ident(&c.table_name)),
                Vec::new(),
            ));
        }
        let rule = rules.rule(&c.table, &c.column).unwrap_or(MaskRule::Keep);
        let col = quote_ident(&c.column);
        let value = match rule {
            MaskRule::Keep => continue,
            MaskRule::Null => "NULL".to_owned(),
            MaskRule::Hash | MaskRule::Fake(_) if !c.text_like => {
                return Err(DataError::Invalid(format!(
                    "masking rule for {}.{} replaces it with text, but the column is not text: use \"null\" or \"keep\", or change the column's type",
                    c.table, c.column
                )));
            }
            MaskRule::Hash => format!("pg_temp.turnout_mask_hash($1, {col})"),
            MaskRule::Fake(kind) => {
                format!("pg_temp.turnout_mask_{}($1, {col})", fake_name(kind))
            }
        };
        if let Some((_, _, sets)) = current.as_mut() {
            sets.push(format!("{col} = {value}"));
        }
    }
    flush(&mut current);
    Ok(updates)
}

fn fake_name(kind: FakeKind) -> &'static str {
    match kind {
        FakeKind::Email => "email",
        FakeKind::Name => "name",
        FakeKind::Phone => "phone",
        FakeKind::Text => "text",
    }
}

/// The session's masking functions (in `pg_temp`, gone with the connection): the formula of
/// `mask::pseudonym` in SQL. `d = sha256(convert_to(key || chr(31) || value, 'UTF8'))`;
/// `get_byte(d, i)` is `d[i]`. NULL stays NULL (STRICT).
fn mask_functions() -> String {
    let array = |words: &[&str]| {
        let items: Vec<String> = words.iter().map(|w| quote_literal(w)).collect();
        format!("(ARRAY[{}]::text[])", items.join(", "))
    };
    let (first, last, words) = (array(&FIRST_NAMES), array(&LAST_NAMES), array(&WORDS));
    let d = "sha256(convert_to(k || chr(31) || v, 'UTF8'))";
    let define = |name: &str, body: String| {
        format!(
            "CREATE FUNCTION pg_temp.turnout_mask_{name}(k text, v text) RETURNS text \
             LANGUAGE sql IMMUTABLE STRICT AS {};\n",
            quote_literal(&body)
        )
    };
    let mut sql = String::new();
    sql.push_str(&define(
        "hash",
        format!("SELECT encode(substring({d} from 1 for 16), 'hex')"),
    ));
    sql.push_str(&define(
        "email",
        format!(
            "SELECT lower({first}[get_byte(d, 0) % 64 + 1]) || '.' || lower({last}[get_byte(d, 1) % 64 + 1]) \
             || '.' || encode(substring(d from 5 for 2), 'hex') || '@example.invalid' FROM (SELECT {d} AS d) s"
        ),
    ));
    sql.push_str(&define(
        "name",
        format!(
            "SELECT {first}[get_byte(d, 0) % 64 + 1] || ' ' || {last}[get_byte(d, 1) % 64 + 1] FROM (SELECT {d} AS d) s"
        ),
    ));
    sql.push_str(&define(
        "phone",
        format!(
            "SELECT '+1-555-01' || lpad((get_byte(d, 2) % 100)::text, 2, '0') || '-' \
             || lpad((((get_byte(d, 3) << 8) | get_byte(d, 4)) % 10000)::text, 4, '0') FROM (SELECT {d} AS d) s"
        ),
    ));
    // As many words as the value has (runs of characters other than space, tab, LF, CR, FF),
    // from 1 to 16.
    sql.push_str(&define(
        "text",
        format!(
            "SELECT string_agg({words}[get_byte(d, i) % 64 + 1], ' ' ORDER BY i) \
             FROM (SELECT {d} AS d, least(greatest((SELECT count(*) FROM regexp_matches(v, \
             '[^ ' || chr(9) || chr(10) || chr(13) || chr(12) || ']+', 'g')), 1), 16)::int AS n) s, \
             generate_series(0, n - 1) AS i"
        ),
    ));
    sql
}

/// `name` as a PostgreSQL identifier: in double quotes, inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a PostgreSQL string literal (standard_conforming_strings, the default since 9.1:
/// backslashes are plain characters): in single quotes, inner quotes doubled.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Percent-encodes all but unreserved characters (and `/` in a path, when `slash` is true).
fn percent_encode(text: &str, slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(
            quote_ident("x\"; DROP TABLE t; --"),
            "\"x\"\"; DROP TABLE t; --\""
        );
        assert_eq!(quote_literal("pw"), "'pw'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\'b"), "'a\\''b'");
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("a b:c@d/e", false), "a%20b%3Ac%40d%2Fe");
        assert_eq!(percent_encode("/run/x y", true), "/run/x%20y");
        assert_eq!(percent_encode("Zz09-._~", false), "Zz09-._~");
    }

    #[test]
    fn basebackup_progress_lines() {
        assert_eq!(
            parse_basebackup_progress("   1234/56789 kB (2%), 0/1 tablespace"),
            Some((1234 * 1024, 56789 * 1024))
        );
        assert_eq!(
            parse_basebackup_progress("56789/56789 kB (100%), 1/1 tablespace (/x/base)"),
            Some((56789 * 1024, 56789 * 1024))
        );
        assert_eq!(
            parse_basebackup_progress("pg_basebackup: error: x/y z"),
            None
        );
        assert_eq!(parse_basebackup_progress("waiting for checkpoint"), None);
    }

    fn column(table: &str, name: &str, text_like: bool) -> TableColumn {
        let (schema, table_name) = table.split_once('.').unwrap_or(("public", table));
        TableColumn {
            table: table.into(),
            schema: schema.into(),
            table_name: table_name.into(),
            column: name.into(),
            text_like,
        }
    }

    #[test]
    fn updates_quote_names_and_refuse_fakes_of_non_text() {
        let mut rules = MaskRules::default();
        let users = rules.tables.entry("users".into()).or_default();
        users.insert("e\"mail".into(), MaskRule::Fake(FakeKind::Email));
        users.insert("*".into(), MaskRule::Keep);
        let audit = rules.tables.entry("log.audit".into()).or_default();
        audit.insert("who".into(), MaskRule::Null);
        audit.insert("id".into(), MaskRule::Keep);
        let cols = vec![
            column("log.audit", "id", false),
            column("log.audit", "who", false),
            column("users", "e\"mail", true),
            column("users", "id", false),
        ];
        let updates = mask_updates(&rules, &cols).unwrap();
        assert_eq!(
            updates,
            [
                ("log.audit".to_owned(), "UPDATE \"log\".\"audit\" SET \"who\" = NULL".to_owned()),
                (
                    "users".to_owned(),
                    "UPDATE \"public\".\"users\" SET \"e\"\"mail\" = pg_temp.turnout_mask_email($1, \"e\"\"mail\")".to_owned()
                ),
            ]
        );
        rules
            .tables
            .get_mut("users")
            .unwrap()
            .insert("id".into(), MaskRule::Hash);
        let err = mask_updates(&rules, &cols).unwrap_err();
        assert!(
            matches!(&err, DataError::Invalid(m) if m.contains("users.id") && m.contains("not text")),
            "{err}"
        );
    }
}
