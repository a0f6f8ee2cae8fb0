//! `turnout data seed|reseed|clone|sync`: jobs that give an environment new data. Each writes
//! generation N+1 beside N (`data_service`), then relaunches the environment's live release on
//! it through `go_live_steps` (zero downtime; the new generation is recorded serving in the same
//! transaction as the go-live), then removes N. A failure or cancel before go-live removes N+1
//! and changes nothing. Data never flows into production through these commands: a clone or
//! sync into a production environment is refused (restoring a backup is how production's data
//! is written), and a sync reads only from production (its live data, or with `--from-backup`
//! its newest backup), masked before any app process of the target can connect.
//!
//! The deploy's `migrate` step is here too: the first deploy of an environment provisions its
//! data (seeded below production), and every deploy runs the release's `migrate` command, in
//! production after a pinned snapshot that `rollback --with-data` can return to.
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tracing::info;
use turnout_data::Engine;
use turnout_model::{Action, AuditAction, EnvRef, JobInfo, JobKind, Tier};
use turnout_supervisor::TaskSpec;

use super::ControlPlane;
use super::generation::{Db, Generation, JobProgress, engine_mismatch, release_file, step_error};
use super::jobs::{JobCtx, JobSpec};
use super::logs::failure_tail;
use super::release_ops::OnNewData;
use crate::access::Principal;
use crate::app_file::{ReleaseConfig, Seed};
use crate::error::ControlError;
use crate::store::backup::{self as bq, BackupKind};
use crate::store::{EnvRow, ReleaseRow, now, q};

const SEED_STEPS: &[&str] = &["create", "seed", "migrate", "launch", "go-live", "retire"];
const CLONE_STEPS: &[&str] = &["copy", "migrate", "launch", "go-live", "retire"];
const SYNC_STEPS: &[&str] = &["copy", "mask", "migrate", "launch", "go-live", "retire"];

/// The release whose seed and migrations run, and which runs on the data.
pub(crate) struct ReleaseRef<'a> {
    pub id: i64,
    pub commit: &'a str,
    pub dir: &'a Path,
    pub config: &'a ReleaseConfig,
}

/// Where a job's new data comes from.
#[derive(Clone)]
enum Source {
    /// The live release's seed, on an empty database of `engine` (None: the live release's).
    Seed(Option<Engine>),
    /// A copy of another environment's data (`masked`: a sync; `from_backup`: of its newest
    /// backup rather than its live data).
    Copy {
        from: EnvRef,
        masked: bool,
        from_backup: bool,
    },
}

impl ControlPlane {
    /// `turnout data seed|reseed APP/ENV [--engine]`: new data from the live release's seed.
    pub async fn seed_data(
        self: &Arc<Self>,
        r: EnvRef,
        engine: Option<Engine>,
        who: &Principal,
    ) -> Result<JobInfo, ControlError> {
        let env = self.env_for(who, &r, Action::Reseed).await?;
        if env.tier == Tier::Production {
            return Err(ControlError::Conflict(format!(
                "refused: {r} is production, and seeding would replace its data; production's data is only ever written by its app (or by restoring a backup)"
            )));
        }
        self.live_row(&env).await?;
        self.data_job(JobKind::Seed, r, None, Source::Seed(engine), who)
            .await
    }

    /// `turnout data clone APP/FROM APP/TO` (`masked`: `data sync APP/TO --from APP/FROM`).
    pub async fn copy_data(
        self: &Arc<Self>,
        to: EnvRef,
        from: EnvRef,
        masked: bool,
        from_backup: bool,
        who: &Principal,
    ) -> Result<JobInfo, ControlError> {
        let what = if masked { "synced" } else { "cloned" };
        if from.app != to.app {
            return Err(ControlError::Invalid(format!(
                "{from} and {to} are environments of different apps; data is {what} within an app"
            )));
        }
        if from.env == to.env {
            return Err(ControlError::Invalid(format!(
                "{to} cannot be {what} from itself; name another environment of {}",
                to.app
            )));
        }
        let source = self.env_for(who, &from, Action::Read).await?;
        let target = self.env_for(who, &to, Action::Config).await?;
        self.check_copy(&source, &target, masked).await?;
        self.live_row(&target).await?;
        let kind = if masked {
            JobKind::Sync
        } else {
            JobKind::Clone
        };
        let request = Some(format!("from {}", from.env));
        let source = Source::Copy {
            from,
            masked,
            from_backup,
        };
        self.data_job(kind, to, request, source, who).await
    }

    /// Refuse a copy that would write production, come from an environment a sync may not read,
    /// or cross engines.
    async fn check_copy(
        &self,
        source: &EnvRow,
        target: &EnvRow,
        masked: bool,
    ) -> Result<(), ControlError> {
        let (from, to) = (
            format!("{}/{}", source.app, source.name),
            format!("{}/{}", target.app, target.name),
        );
        if target.tier == Tier::Production {
            return Err(ControlError::Conflict(format!(
                "refused: {to} is production; `turnout data clone` and `data sync` never write production's data. Production's data is written only by its app, or by restoring one of its own backups (the restore path of backups)"
            )));
        }
        if masked && source.tier != Tier::Production {
            return Err(ControlError::Invalid(format!(
                "a sync reads production's data, and {from} is {}; sync from a production environment, or copy {from} as it is with `turnout data clone {from} {to}`",
                source.tier
            )));
        }
        let Some(from_row) = self.data_row(source).await? else {
            return Err(ControlError::Conflict(format!(
                "{from} has no data yet; deploy it first (`turnout deploy {from}`)"
            )));
        };
        if let Some(to_row) = self.data_row(target).await?
            && to_row.engine != from_row.engine
        {
            return Err(ControlError::Conflict(format!(
                "{from}'s data is {} and {to}'s is {}: data is copied only between environments of the same engine (set the same [data] engine for both)",
                from_row.engine, to_row.engine
            )));
        }
        Ok(())
    }

    /// The environment's live release, which the job relaunches on the new data. A stopped
    /// environment is refused: the job would start it.
    pub(crate) async fn live_row(&self, env: &EnvRow) -> Result<ReleaseRow, ControlError> {
        let r = format!("{}/{}", env.app, env.name);
        if env.stopped {
            return Err(ControlError::Conflict(format!(
                "{r} is stopped, and new data goes live by relaunching it; start it first (`turnout env start {r}`)"
            )));
        }
        let Some(id) = env.current_release_id else {
            return Err(ControlError::Conflict(format!(
                "{r} has no live release to run on new data; deploy it first (`turnout deploy {r}`)"
            )));
        };
        let release = self.store.call(move |c| q::get_release(c, id)).await?;
        if !tokio::fs::try_exists(&release.dir).await.unwrap_or(false) {
            return Err(ControlError::Conflict(format!(
                "{r}'s live release {id} has no directory any more ({}); deploy {r} again first",
                release.dir
            )));
        }
        Ok(release)
    }

    async fn data_job(
        self: &Arc<Self>,
        kind: JobKind,
        r: EnvRef,
        request: Option<String>,
        source: Source,
        who: &Principal,
    ) -> Result<JobInfo, ControlError> {
        let spec = JobSpec {
            kind,
            target: r.clone(),
            actor: who.name.clone(),
            request,
            steps: match source {
                Source::Seed(_) => SEED_STEPS,
                Source::Copy { masked: false, .. } => CLONE_STEPS,
                Source::Copy { masked: true, .. } => SYNC_STEPS,
            },
        };
        let (this, actor) = (self.clone(), who.name.clone());
        self.jobs
            .start(spec, move |ctx| async move {
                this.run_data_job(&ctx, &r, source, &actor).await
            })
            .await
    }

    async fn run_data_job(
        &self,
        ctx: &JobCtx,
        r: &EnvRef,
        source: Source,
        actor: &str,
    ) -> Result<(), ControlError> {
        let _env_lock = self.lock_env(ctx, r).await?;
        // Read again: the environment may have changed while the job was queued.
        let env = self.env_row(r).await?;
        self.identity(&env)?;
        let release = self.live_row(&env).await?;
        ctx.set_release(release.id);
        let config: ReleaseConfig = serde_json::from_str(&release.config)
            .map_err(|e| ControlError::internal(format!("release {} config: {e}", release.id)))?;
        let rel = ReleaseRef {
            id: release.id,
            commit: &release.commit,
            dir: Path::new(&release.dir),
            config: &config,
        };
        let old = match self.data_row(&env).await? {
            Some(row) => Some(self.generation(&env, &row)?),
            None => None,
        };
        let n = old.as_ref().map_or(1, |g| g.n + 1);
        let (new, origin, action) = match &source {
            Source::Seed(engine) => {
                let engine = engine.unwrap_or(config.data.engine);
                let gn = self.seeded(ctx, r, &env, &rel, engine, n).await?;
                (gn, "seed", AuditAction::DataSeed)
            }
            Source::Copy {
                from,
                masked,
                from_backup,
            } => {
                let source = self.env_row(from).await?;
                self.check_copy(&source, &env, *masked).await?;
                let gn = self
                    .copied(ctx, &source, &env, n, (*masked, *from_backup), &config)
                    .await?;
                let action = if *masked {
                    AuditAction::DataSync
                } else {
                    AuditAction::DataClone
                };
                (gn, if *masked { "sync" } else { "clone" }, action)
            }
        };
        let migrate = match &source {
            Source::Seed(_) => 2,
            Source::Copy { masked: false, .. } => 1,
            Source::Copy { masked: true, .. } => 2,
        };
        let from = match &source {
            Source::Copy { from, .. } => Some(from.to_string()),
            Source::Seed(_) => None,
        };
        let n = new.n;
        let on = OnNewData {
            r,
            env: &env,
            rel: &rel,
            new,
            old,
            origin,
            from,
            action,
            first: migrate,
            migrate: true,
        };
        self.go_live_on_data(ctx, on, actor).await?;
        info!(app = %r.app, env = %r.env, generation = n, kind = origin, "new data live");
        Ok(())
    }

    /// The deploy's `migrate` step: the environment's data made on its first deploy (seeded
    /// from the release below production), refused when the release declares another engine
    /// than the data has, then the release's `migrate` command; in production, an environment
    /// that has data first gets a pinned snapshot labelled with the release
    /// (`pre_migrate_label`) when the release migrates.
    pub(crate) async fn deploy_data(
        &self,
        ctx: &JobCtx,
        r: &EnvRef,
        env: &EnvRow,
        rel: &ReleaseRef<'_>,
        actor: &str,
    ) -> Result<String, ControlError> {
        let engine = rel.config.data.engine;
        let mut notes = Vec::new();
        let gn = match self.data_row(env).await? {
            Some(row) if row.engine != engine => {
                return Err(engine_mismatch(r, row.engine, engine));
            }
            Some(row) => {
                let gn = self.generation(env, &row)?;
                self.start_cluster(env, &gn).await?;
                if env.tier == Tier::Production && rel.config.data.migrate.is_some() {
                    let label = pre_migrate_label(rel.id, rel.commit);
                    let taken = self
                        .take_snapshot(ctx, env, BackupKind::PreMigrate, Some(label), true, actor)
                        .await?;
                    notes.push(format!(
                        "pinned snapshot {} taken before migrating (`turnout rollback {r} --with-data` returns to it)",
                        taken.id
                    ));
                }
                gn
            }
            None => {
                let progress = JobProgress::new(ctx);
                let gn = self
                    .make_generation(env, engine, 1, &progress, &ctx.cancel_token())
                    .await?;
                notes.push(format!("made its {engine} data (generation 1)"));
                let seeded = !matches!(env.tier, Tier::Production | Tier::ProductionCopy)
                    && rel.config.data.seed.is_some();
                if seeded {
                    match self.seed(ctx, r, env, rel, &gn).await {
                        Ok(detail) => notes.push(detail),
                        Err(e) => {
                            self.remove_generation(&gn).await;
                            return Err(e);
                        }
                    }
                }
                let kind = if seeded { "seed" } else { "empty" };
                self.record_generation(env, &gn, kind, Some(ctx.id()), actor)
                    .await?;
                gn
            }
        };
        notes.push(self.migrate(ctx, r, env, rel, &gn).await?);
        Ok(notes.join("; "))
    }

    /// Steps `create` and `seed`: an empty generation `n` of `engine`, seeded by `rel`.
    async fn seeded(
        &self,
        ctx: &JobCtx,
        r: &EnvRef,
        env: &EnvRow,
        rel: &ReleaseRef<'_>,
        engine: Engine,
        n: i64,
    ) -> Result<Generation, ControlError> {
        let started = Instant::now();
        ctx.begin(0, format!("an empty {engine} database, generation {n}"));
        let progress = JobProgress::new(ctx);
        let gn = self
            .make_generation(env, engine, n, &progress, &ctx.cancel_token())
            .await?;
        ctx.done(0, format!("{}", gn.dir.display()), started.elapsed());
        let started = Instant::now();
        ctx.begin(1, "running the seed");
        match self.seed(ctx, r, env, rel, &gn).await {
            Ok(detail) => {
                ctx.done(1, detail, started.elapsed());
                Ok(gn)
            }
            Err(e) => {
                self.remove_generation(&gn).await;
                Err(e)
            }
        }
    }

    /// Step `copy` (and `mask` for a sync): generation `n` of `target`, a copy of `source`'s
    /// data and storage while `source` keeps serving; for a sync, masked by `config`'s rules
    /// (strict) before any process of `target` can connect.
    async fn copied(
        &self,
        ctx: &JobCtx,
        source: &EnvRow,
        target: &EnvRow,
        n: i64,
        (masked, from_backup): (bool, bool),
        config: &ReleaseConfig,
    ) -> Result<Generation, ControlError> {
        let started = Instant::now();
        let from = format!("{}/{}", source.app, source.name);
        let Some(row) = self.data_row(source).await? else {
            return Err(ControlError::Conflict(format!("{from} has no data yet")));
        };
        let progress = JobProgress::new(ctx);
        let cancel = ctx.cancel_token();
        // `--from-backup`: production's newest backup (production itself is not read at all).
        let newest = match from_backup {
            true => {
                let id = source.id;
                let newest = self
                    .store
                    .call(move |c| bq::newest_at_or_before(c, id, now()))
                    .await?;
                Some(newest.ok_or_else(|| ControlError::Conflict(format!(
                    "{from} has no backup to sync from yet; take one (`turnout backup create {from}`) or sync from its live data (without --from-backup)"
                )))?)
            }
            false => None,
        };
        let gn = if let Some(backup) = newest {
            let point = self.restore_point(source, None, Some(backup.id)).await?;
            self.restored(ctx, 0, source, target, &point, n).await?
        } else {
            let src = self.generation(source, &row)?;
            ctx.begin(
                0,
                format!(
                    "{from}'s {} generation {} into generation {n}",
                    row.engine, row.generation
                ),
            );
            let gn = self
                .copy_generation(&src, target, n, &progress, &cancel)
                .await?;
            ctx.done(0, format!("into {}", gn.dir.display()), started.elapsed());
            gn
        };
        if masked {
            let started = Instant::now();
            ctx.begin(1, "masking with [data.mask] (strict)");
            let masking = async {
                let key = self.mask_key(target).await?;
                let rules = &config.data.mask;
                let report = match &gn.db {
                    Db::Sqlite(db) => db.mask(rules, &key, &progress, &cancel).await,
                    Db::Postgres(c) => c.mask(rules, &key, &progress, &cancel).await,
                };
                report.map_err(step_error("mask"))
            };
            match masking.await {
                Ok(report) => ctx.done(
                    1,
                    format!("{} tables masked", report.tables.len()),
                    started.elapsed(),
                ),
                Err(e) => {
                    self.remove_generation(&gn).await;
                    return Err(e);
                }
            }
        }
        Ok(gn)
    }

    /// A copy of `src` as generation `n` of `target` (database and storage); nothing is left
    /// when it fails.
    async fn copy_generation(
        &self,
        src: &Generation,
        target: &EnvRow,
        n: i64,
        progress: &JobProgress<'_>,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Generation, ControlError> {
        let (app, name) = (&target.app, &target.name);
        self.prepare_env_dirs(target).await?;
        let dir = self.home.generation_dir(app, name, n);
        super::remove_dir(&dir).await;
        let owner = self.owner(target);
        let d2 = dir.clone();
        super::isolation::blocking(move || super::isolation::make_dir(&d2, 0o700, owner)).await?;
        let storage = self.home.storage_dir(app, name, n);
        let copied = async {
            let db = match &src.db {
                Db::Sqlite(from) => {
                    let to =
                        turnout_data::sqlite::SqliteDb::at(self.home.sqlite_path(app, name, n));
                    from.copy_to(&to, progress, cancel)
                        .await
                        .map_err(step_error("copy"))?;
                    Db::Sqlite(to)
                }
                Db::Postgres(from) => {
                    let (_, spec, network) = self.cluster_spec(target, n).await?;
                    let to = turnout_data::postgres::Cluster::clone_from(
                        from, spec, &network, progress, cancel,
                    )
                    .await
                    .map_err(step_error("copy"))?;
                    Db::Postgres(to)
                }
            };
            let gn = Generation {
                n,
                dir: dir.clone(),
                storage: storage.clone(),
                db,
            };
            turnout_data::files::copy_tree(&src.storage, &storage, progress, cancel)
                .await
                .map_err(step_error("copy"))?;
            self.hand_over_data(target, &gn).await?;
            Ok::<_, ControlError>(gn)
        };
        match copied.await {
            Ok(gn) => Ok(gn),
            Err(e) => {
                self.remove_leftover(target, n).await;
                Err(e)
            }
        }
    }

    /// The seed of `rel` run into `gn`: its SQL file, or its command with `gn`'s variables.
    async fn seed(
        &self,
        ctx: &JobCtx,
        r: &EnvRef,
        env: &EnvRow,
        rel: &ReleaseRef<'_>,
        gn: &Generation,
    ) -> Result<String, ControlError> {
        let detail = match &rel.config.data.seed {
            None => "no seed in [data]: the database stays empty".to_owned(),
            Some(Seed::SqlFile(file)) => {
                let sql = release_file(rel.dir, file).await?;
                gn.run_sql(&sql).await.map_err(step_error("seed"))?;
                format!("ran {}", file.display())
            }
            Some(Seed::Command(command)) => {
                self.data_task(ctx, r, env, rel, gn, command, "seed", &[])
                    .await?;
                format!("ran `{command}`")
            }
        };
        self.hand_over_data(env, gn).await?;
        Ok(detail)
    }

    /// The release's `migrate` command on `gn` (nothing when it has none).
    pub(crate) async fn migrate(
        &self,
        ctx: &JobCtx,
        r: &EnvRef,
        env: &EnvRow,
        rel: &ReleaseRef<'_>,
        gn: &Generation,
    ) -> Result<String, ControlError> {
        let Some(command) = &rel.config.data.migrate else {
            return Ok("no migrate command in [data]".to_owned());
        };
        self.data_task(ctx, r, env, rel, gn, command, "migrate", &[])
            .await?;
        Ok(format!("ran `{command}`"))
    }

    /// Run an app command of the release against `gn` like its build: in the release
    /// directory, as the environment's user, in its network and sandbox, with the release's
    /// variables and the data's (`DATABASE_URL` of `gn`); output to the job.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn data_task(
        &self,
        ctx: &JobCtx,
        r: &EnvRef,
        env: &EnvRow,
        rel: &ReleaseRef<'_>,
        gn: &Generation,
        command: &str,
        step: &'static str,
        extra: &[(String, String)],
    ) -> Result<(), ControlError> {
        self.start_cluster(env, gn).await?;
        let mut vars = self.release_env(r, env.tier, rel.commit, rel.config);
        let (data_vars, binds) = self.data_env(env, gn).await?;
        vars.extend(data_vars);
        vars.extend(extra.iter().cloned());
        let mut sandbox = self.sandbox(env);
        if let Some(s) = sandbox.as_mut() {
            s.writable.extend(binds);
        }
        let log_path = self.home.task_log(&r.app, &r.env, rel.id, step);
        let spec = TaskSpec {
            command: command.to_owned(),
            cwd: rel.dir.to_path_buf(),
            env: vars,
            log_path: log_path.clone(),
            timeout: rel.config.build_timeout,
            pid_file: Some(self.home.task_pid_file(&r.app, &r.env, rel.id, step)),
            identity: self.identity(env)?,
            cgroup: Some(self.cgroup(env, rel.config)),
            network: self.network(env).await?,
            sandbox,
        };
        let mut on_line = |line: &str| ctx.output(line);
        let ran = ctx.guard(self.runtime.run_task(spec, &mut on_line)).await?;
        if let Err(e) = ran {
            return Err(ControlError::Step {
                step,
                message: e.to_string(),
                log_tail: failure_tail(&log_path).await,
            });
        }
        Ok(())
    }
}

/// The label of the pinned snapshot a production deploy takes before release `id` migrates,
/// by which `rollback --with-data` finds it.
pub(crate) fn pre_migrate_label(id: i64, commit: &str) -> String {
    format!(
        "before release {id} (commit {})",
        &commit[..7.min(commit.len())]
    )
}
