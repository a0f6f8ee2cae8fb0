//! Each environment's data service (`turnout_data`): which generation serves it, made on its
//! first launch for its release's `[data]` engine; the variables its processes get
//! (`DATABASE_URL`, `TURNOUT_SQLITE_PATH`, `TURNOUT_STORAGE_DIR`, one per attachment); its
//! PostgreSQL cluster started before its instance (start-up, wake) and stopped at a full stop;
//! everything removed with the environment.
//!
//! A generation is `<env_dir>/data/g<N>/` (the SQLite file and the storage directory, the
//! environment user's) and, for PostgreSQL, a cluster of its own (`<env_dir>/pg/g<N>`, socket
//! in `<env_dir>/pgsock/g<N>`, the clusters' user's) listening on 127.0.0.1 inside the
//! environment's network.
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use turnout_data::postgres::{Cluster, ClusterSpec, PgSystem};
use turnout_data::sqlite::SqliteDb;
use turnout_data::{Engine, Progress, Quiet};
use turnout_model::EnvRef;

use super::generation::{Db, Generation, access, data_error, pg_name, random_hex, step_error};
use super::{ControlPlane, remove_dir};
use crate::app_file::ReleaseConfig;
use crate::error::ControlError;
use crate::store::EnvRow;
use crate::store::data::{self as dq, AttachmentRow, DataRow, Origin};
use crate::store::{AuditEntry, now};

impl ControlPlane {
    /// The environment's data service as recorded, if it has one.
    pub(crate) async fn data_row(&self, env: &EnvRow) -> Result<Option<DataRow>, ControlError> {
        let id = env.id;
        self.store.call(move |c| dq::get(c, id)).await
    }

    /// The generation `row` names, as files and (for PostgreSQL) a cluster handle.
    pub(crate) fn generation(
        &self,
        env: &EnvRow,
        row: &DataRow,
    ) -> Result<Generation, ControlError> {
        self.generation_at(env, row.engine, row.generation, row.cluster.clone())
    }

    fn generation_at(
        &self,
        env: &EnvRow,
        engine: Engine,
        n: i64,
        cluster: Option<ClusterSpec>,
    ) -> Result<Generation, ControlError> {
        let (app, name) = (&env.app, &env.name);
        let db = match (engine, cluster) {
            (Engine::Sqlite, _) => Db::Sqlite(SqliteDb::at(self.home.sqlite_path(app, name, n))),
            (Engine::Postgres, Some(spec)) => Db::Postgres(Cluster {
                sys: PgSystem::find().map_err(data_error)?,
                spec,
            }),
            (Engine::Postgres, None) => {
                return Err(ControlError::internal(format!(
                    "{app}/{name}: generation {n} is PostgreSQL but has no cluster recorded"
                )));
            }
        };
        Ok(Generation {
            n,
            dir: self.home.generation_dir(app, name, n),
            storage: self.home.storage_dir(app, name, n),
            db,
        })
    }

    /// A new, empty generation `n` of `engine` for `env` (anything a failed attempt left under
    /// that number removed first), its files the environment user's; for PostgreSQL a cluster
    /// started in the environment's network on a free port, with fresh passwords. Nothing is
    /// left when it fails.
    pub(crate) async fn make_generation(
        &self,
        env: &EnvRow,
        engine: Engine,
        n: i64,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<Generation, ControlError> {
        self.prepare_env_dirs(env).await?;
        self.remove_leftover(env, n).await;
        let (app, name) = (&env.app, &env.name);
        let dir = self.home.generation_dir(app, name, n);
        let storage = self.home.storage_dir(app, name, n);
        let owner = self.owner(env);
        let (d2, s2) = (dir.clone(), storage.clone());
        // An environment deployed before its data had generations kept its storage in
        // `<env_dir>/storage`: its first generation takes that directory over.
        let legacy = (n == 1).then(|| self.home.env_dir(app, name).join("storage"));
        super::isolation::blocking(move || {
            super::isolation::make_dir(&d2, 0o700, owner)?;
            match legacy.filter(|old| old.is_dir()) {
                Some(old) => std::fs::rename(&old, &s2)
                    .map_err(|e| ControlError::internal(format!("{}: {e}", old.display()))),
                None => super::isolation::make_dir(&s2, 0o700, owner),
            }
        })
        .await?;
        let made = async {
            let db = match engine {
                Engine::Sqlite => {
                    let db = SqliteDb::at(self.home.sqlite_path(app, name, n));
                    db.create().await.map_err(data_error)?;
                    Db::Sqlite(db)
                }
                Engine::Postgres => {
                    let (sys, spec, network) = self.cluster_spec(env, n).await?;
                    let cluster = Cluster::init(sys, spec, &network, progress, cancel)
                        .await
                        .map_err(step_error("data"))?;
                    Db::Postgres(cluster)
                }
            };
            let gn = Generation {
                n,
                dir: dir.clone(),
                storage: storage.clone(),
                db,
            };
            self.hand_over_data(env, &gn).await?;
            Ok(gn)
        };
        match made.await {
            Ok(gn) => Ok(gn),
            Err(e) => {
                self.remove_leftover(env, n).await;
                Err(e)
            }
        }
    }

    /// Where generation `n`'s cluster lives, on a port free in the environment's network, with
    /// fresh passwords; the directories above it made for the clusters' user.
    pub(crate) async fn cluster_spec(
        &self,
        env: &EnvRow,
        n: i64,
    ) -> Result<(PgSystem, ClusterSpec, turnout_netns::Network), ControlError> {
        let sys = PgSystem::find().map_err(data_error)?;
        let (app, name) = (&env.app, &env.name);
        let (root, sockets) = (
            self.home.pg_root(app, name),
            self.home.pg_socket_root(app, name),
        );
        let run_as = sys.run_as;
        super::isolation::blocking(move || {
            for (dir, mode) in [(&root, 0o700), (&sockets, 0o711)] {
                super::isolation::make_dir(dir, mode, None)?;
                if let Some(id) = &run_as {
                    std::os::unix::fs::chown(dir, Some(id.uid), Some(id.gid))
                        .map_err(|e| ControlError::internal(format!("{}: {e}", dir.display())))?;
                }
            }
            Ok(())
        })
        .await?;
        let network = self.network(env).await?;
        let port = network
            .free_port()
            .map_err(|e| ControlError::internal(format!("find a free port: {e}")))?;
        let spec = ClusterSpec {
            dir: self.home.pg_dir(app, name, n),
            socket_dir: self.home.pg_socket_dir(app, name, n),
            log: self.home.pg_log(app, name, n),
            port,
            superuser_password: random_hex(24)?,
            database: pg_name("env", name.as_str()),
            app_password: random_hex(24)?,
            archive: Some(self.home.pg_archive_dir(app, name, n)),
        };
        Ok((sys, spec, network))
    }

    /// Give a generation's files to the environment's user (after the daemon wrote them).
    pub(crate) async fn hand_over_data(
        &self,
        env: &EnvRow,
        gn: &Generation,
    ) -> Result<(), ControlError> {
        let Some(uid) = self.owner(env) else {
            return Ok(());
        };
        let dir = gn.dir.clone();
        super::isolation::blocking(move || super::isolation::chown_tree(&dir, uid)).await
    }

    /// Remove whatever is under generation number `n` (a cluster left running included).
    pub(crate) async fn remove_leftover(&self, env: &EnvRow, n: i64) {
        let (app, name) = (&env.app, &env.name);
        let pg = self.home.pg_dir(app, name, n);
        if tokio::fs::try_exists(&pg).await.unwrap_or(false)
            && let Ok(sys) = PgSystem::find()
        {
            let cluster = Cluster {
                sys,
                spec: ClusterSpec {
                    dir: pg,
                    socket_dir: self.home.pg_socket_dir(app, name, n),
                    log: self.home.pg_log(app, name, n),
                    port: 0,
                    superuser_password: String::new(),
                    database: String::new(),
                    app_password: String::new(),
                    archive: Some(self.home.pg_archive_dir(app, name, n)),
                },
            };
            if let Err(e) = cluster.remove().await {
                warn!(app = %app, env = %name, generation = n, error = %e, "could not remove a cluster left behind");
            }
        }
        remove_dir(&self.home.generation_dir(app, name, n)).await;
    }

    /// Stop and remove a generation (its cluster, its files).
    pub(crate) async fn remove_generation(&self, gn: &Generation) {
        match &gn.db {
            Db::Postgres(c) => {
                if let Err(e) = c.remove().await {
                    warn!(dir = %c.spec.dir.display(), error = %e, "could not remove a cluster");
                }
            }
            Db::Sqlite(db) => {
                if let Err(e) = db.remove().await {
                    warn!(path = %db.path().display(), error = %e, "could not remove a database");
                }
            }
        }
        remove_dir(&gn.dir).await;
    }

    /// The generation serving `env`, for a launch of a release with `config`: made (empty,
    /// generation 1, of the release's engine) on its first launch; its cluster started when it
    /// is not running (after a daemon restart or a full stop). A deploy checks the engine first
    /// (`deploy_data`); a relaunch runs on the data the environment has.
    pub(crate) async fn ensure_data(
        &self,
        env: &EnvRow,
        config: &ReleaseConfig,
    ) -> Result<Generation, ControlError> {
        let gn = match self.data_row(env).await? {
            Some(row) => self.generation(env, &row)?,
            None => {
                let gn = self
                    .make_generation(
                        env,
                        config.data.engine,
                        1,
                        &Quiet,
                        &CancellationToken::new(),
                    )
                    .await?;
                self.record_generation(env, &gn, "empty", None, "turnout")
                    .await?;
                gn
            }
        };
        self.start_cluster(env, &gn).await?;
        Ok(gn)
    }

    /// Record `gn` serving `env` (a first generation, which replaces nothing).
    pub(crate) async fn record_generation(
        &self,
        env: &EnvRow,
        gn: &Generation,
        kind: &'static str,
        job: Option<i64>,
        actor: &str,
    ) -> Result<(), ControlError> {
        let row = gn.row(
            env.id,
            Origin {
                kind,
                from: None,
                at: now(),
                job,
            },
        );
        let entry = AuditEntry::new(actor, turnout_model::AuditAction::DataSeed)
            .app(&env.app)
            .env(&env.name)
            .change(
                None,
                Some(format!("{} generation {} ({kind})", gn.engine(), gn.n)),
            );
        self.store
            .mutate(entry, move |c, _| dq::set(c, &row))
            .await?;
        info!(app = %env.app, env = %env.name, engine = %gn.engine(), generation = gn.n, "data provisioned");
        Ok(())
    }

    /// Start `gn`'s cluster in the environment's network unless it runs.
    pub(crate) async fn start_cluster(
        &self,
        env: &EnvRow,
        gn: &Generation,
    ) -> Result<(), ControlError> {
        let Db::Postgres(cluster) = &gn.db else {
            return Ok(());
        };
        if cluster.is_running().await {
            return Ok(());
        }
        let network = self.network(env).await?;
        cluster
            .start(&network)
            .await
            .map_err(|e| ControlError::Step {
                step: "data",
                message: format!("cannot start {}/{}'s PostgreSQL: {e}", env.app, env.name),
                log_tail: vec![],
            })
    }

    /// The variables `env`'s processes get for `gn` and its attachments, and the directories
    /// a sandbox must let them reach (an attached SQLite database's).
    pub(crate) async fn data_env(
        &self,
        env: &EnvRow,
        gn: &Generation,
    ) -> Result<(Vec<(String, String)>, Vec<PathBuf>), ControlError> {
        let mut vars = vec![("DATABASE_URL".to_owned(), gn.url())];
        if let Db::Sqlite(db) = &gn.db {
            vars.push((
                "TURNOUT_SQLITE_PATH".to_owned(),
                db.path().display().to_string(),
            ));
        }
        vars.push((
            "TURNOUT_STORAGE_DIR".to_owned(),
            gn.storage.display().to_string(),
        ));
        let id = env.id;
        let attachments = self.store.call(move |c| dq::attachments_of(c, id)).await?;
        let mut binds = Vec::new();
        for a in attachments {
            let other = self
                .env_row(&EnvRef {
                    app: env.app.clone(),
                    env: a.to.clone(),
                })
                .await?;
            let Some(row) = self.data_row(&other).await? else {
                continue;
            };
            let other_gen = self.generation(&other, &row)?;
            if let Db::Sqlite(_) = other_gen.db {
                binds.push(other_gen.dir.clone());
            }
            vars.push((a.var.clone(), self.attachment_url(&other, &other_gen, &a)?));
        }
        Ok((vars, binds))
    }

    /// The URL an attachment gives: PostgreSQL, the attached role's, over the unix socket when
    /// the database's environment has a network of its own (TCP does not cross namespaces),
    /// else over TCP; SQLite, the file's URL for the mode.
    pub(crate) fn attachment_url(
        &self,
        other: &EnvRow,
        gn: &Generation,
        a: &AttachmentRow,
    ) -> Result<String, ControlError> {
        match &gn.db {
            Db::Postgres(c) => Ok(if self.networks.namespace_name(other).is_some() {
                c.socket_url(&a.role, &a.password)
            } else {
                format!(
                    "postgres://{}:{}@127.0.0.1:{}/{}",
                    a.role, a.password, c.spec.port, c.spec.database
                )
            }),
            Db::Sqlite(db) => db.attach_url(access(a.mode)).map_err(data_error),
        }
    }

    /// Re-create in `gn` (a new generation of `env`'s data) the roles of the environments
    /// attached to it, before it goes live.
    pub(crate) async fn reattach(&self, env: &EnvRow, gn: &Generation) -> Result<(), ControlError> {
        let Db::Postgres(cluster) = &gn.db else {
            return Ok(());
        };
        let id = env.id;
        let attached = self.store.call(move |c| dq::attachments_to(c, id)).await?;
        for a in attached {
            cluster
                .attach(&a.role, &a.password, access(a.mode))
                .await
                .map_err(step_error("data"))?;
        }
        Ok(())
    }

    /// Start the clusters of `envs` that are not running (start-up, for environments whose
    /// instance does not start now); one that fails is logged, and tried again with its
    /// environment's next launch.
    pub(crate) async fn start_clusters(&self, envs: &[EnvRow]) {
        for env in envs {
            let Ok(Some(row)) = self.data_row(env).await else {
                continue;
            };
            if row.cluster.is_none() {
                continue;
            }
            let started = match self.generation(env, &row) {
                Ok(gn) => self.start_cluster(env, &gn).await,
                Err(e) => Err(e),
            };
            if let Err(e) = started {
                warn!(app = %env.app, env = %env.name, error = %e, "could not start the environment's PostgreSQL");
            }
        }
    }

    /// At a full stop, after the instances: stop every cluster.
    pub(crate) async fn stop_clusters(&self) {
        let Ok(rows) = self.store.call(|c| dq::all(c)).await else {
            return;
        };
        for row in rows {
            let Some(spec) = row.cluster else { continue };
            let Ok(sys) = PgSystem::find() else { return };
            let cluster = Cluster { sys, spec };
            if let Err(e) = cluster.stop().await {
                warn!(dir = %cluster.spec.dir.display(), error = %e, "could not stop a cluster");
            }
        }
    }

    /// What `delete_env` removes of the data, read before the environment's rows go: its
    /// generation and the roles it holds in other environments' databases.
    pub(crate) async fn data_to_remove(
        &self,
        env: &EnvRow,
    ) -> Result<(Option<Generation>, Vec<(EnvRow, Generation, String)>), ControlError> {
        let gn = match self.data_row(env).await? {
            Some(row) => self.generation(env, &row).ok(),
            None => None,
        };
        let id = env.id;
        let held = self.store.call(move |c| dq::attachments_of(c, id)).await?;
        let mut roles = Vec::new();
        for a in held {
            let r = EnvRef {
                app: env.app.clone(),
                env: a.to.clone(),
            };
            let Ok(other) = self.env_row(&r).await else {
                continue;
            };
            if let Some(row) = self.data_row(&other).await?
                && let Ok(g) = self.generation(&other, &row)
            {
                roles.push((other, g, a.role));
            }
        }
        Ok((gn, roles))
    }

    /// Remove a deleted environment's data: its roles in other databases, its cluster, files.
    pub(crate) async fn remove_data(
        &self,
        gn: Option<Generation>,
        roles: Vec<(EnvRow, Generation, String)>,
    ) {
        for (other, g, role) in roles {
            if let Db::Postgres(c) = &g.db
                && let Err(e) = c.detach(&role).await
            {
                warn!(app = %other.app, env = %other.name, role = %role, error = %e, "could not drop an attached role");
            }
        }
        if let Some(gn) = gn {
            self.remove_generation(&gn).await;
        }
    }

    /// The app's masking key, made (and audited) on first use.
    pub(crate) async fn mask_key(&self, env: &EnvRow) -> Result<String, ControlError> {
        let app_id = env.app_id;
        if let Some(key) = self
            .store
            .call(move |c| dq::get_mask_key(c, app_id))
            .await?
        {
            return Ok(key);
        }
        let fresh = random_hex(32)?;
        let entry = AuditEntry::new("turnout", turnout_model::AuditAction::DataSync)
            .app(&env.app)
            .change(None, Some("a new masking key for the app".to_owned()));
        self.store
            .mutate(entry, move |c, _| dq::mask_key(c, app_id, &fresh))
            .await
    }
}
