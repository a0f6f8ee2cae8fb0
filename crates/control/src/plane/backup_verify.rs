//! `turnout backup verify ID`: a snapshot restored into a scratch area and checked (SQLite: a
//! file under `<home>/backups/.scratch` checked by `PRAGMA integrity_check`; PostgreSQL: a
//! scratch cluster beside the environment's, in its network, queried, then removed), every
//! chunk read and checked on the way. The snapshot is marked as being verified until the job
//! ends, so retention and `backup delete` leave it alone meanwhile.
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::warn;
use turnout_data::Engine;
use turnout_data::backup::Repo;
use turnout_data::postgres::backup::RecoveryTarget;
use turnout_data::postgres::{Cluster, ClusterSpec, PgSystem};
use turnout_data::sqlite::SqliteDb;
use turnout_model::plan::format_bytes;
use turnout_model::{Action, AuditAction, EnvRef, JobInfo, JobKind};

use super::ControlPlane;
use super::generation::{JobProgress, pg_name, random_hex, step_error};
use super::jobs::{JobCtx, JobSpec};
use crate::access::Principal;
use crate::error::ControlError;
use crate::store::backup::{self as bq, BackupRow};
use crate::store::{AuditEntry, EnvRow, now};

const VERIFY_STEPS: &[&str] = &["chunks", "restore", "check"];

impl ControlPlane {
    /// `turnout backup verify ID`: restore it into a scratch area and check it (a job). The
    /// snapshot is marked as being verified from now until the job ends: never deleted meanwhile.
    pub async fn verify_backup(
        self: &Arc<Self>,
        id: i64,
        who: &Principal,
    ) -> Result<JobInfo, ControlError> {
        let (_, env) = self.backup_for(id, who, Action::Config).await?;
        let entry = AuditEntry::new(&who.name, AuditAction::BackupVerify)
            .app(&env.app)
            .env(&env.name)
            .change(None, Some(format!("verifying backup {id}")));
        let row = self
            .store
            .mutate(entry, move |c, _| bq::begin_verify(c, id))
            .await?;
        let r = EnvRef {
            app: env.app.clone(),
            env: env.name.clone(),
        };
        let spec = JobSpec {
            kind: JobKind::Verify,
            target: r,
            actor: who.name.clone(),
            request: Some(format!("backup {id}")),
            steps: VERIFY_STEPS,
        };
        let (this, actor) = (self.clone(), who.name.clone());
        let started = self
            .jobs
            .start(spec, move |ctx| async move {
                ctx.running();
                let result = this.run_verify(&ctx, &env, &row).await;
                let error = result.as_ref().err().map(|e| match e {
                    ControlError::Step { message, .. } => message.clone(),
                    e => e.to_string(),
                });
                let entry = AuditEntry::new(&actor, AuditAction::BackupVerify)
                    .app(&env.app)
                    .env(&env.name)
                    .change(Some(format!("verifying backup {id}")), None);
                let (at, e2) = (now(), error.clone());
                let record =
                    move |c: &crate::store::Tx<'_>| bq::end_verify(c, id, at, e2.as_deref());
                match error {
                    None => this.store.mutate(entry, move |c, _| record(c)).await?,
                    Some(e) => this.store.mutate_failed(entry, e, record).await?,
                }
                result
            })
            .await;
        if started.is_err() {
            let entry = AuditEntry::new(&who.name, AuditAction::BackupVerify)
                .change(Some(format!("verifying backup {id}")), None);
            let _ = self
                .store
                .mutate(entry, move |c, _| {
                    bq::end_verify(c, id, now(), Some("not started"))
                })
                .await;
        }
        started
    }

    pub(super) async fn run_verify(
        &self,
        ctx: &JobCtx,
        env: &EnvRow,
        row: &BackupRow,
    ) -> Result<(), ControlError> {
        let repo = self.backup_repo(&env.app).await?;
        let progress = JobProgress::new(ctx);
        let cancel = ctx.cancel_token();
        let _one = ctx.guard(self.backups.writes.lock(&env.app)).await?;
        let started = Instant::now();
        ctx.begin(0, format!("every chunk of backup {}", row.id));
        let report = repo
            .verify(&row.repo_name, &progress, &cancel)
            .await
            .map_err(step_error("chunks"))?;
        ctx.done(
            0,
            format!(
                "{} chunks, {} read and checked",
                report.chunks,
                format_bytes(report.bytes)
            ),
            started.elapsed(),
        );
        let scratch = self
            .home
            .backup_repo(&env.app)
            .with_file_name(".scratch")
            .join(format!("{}-b{}-j{}", env.app, row.id, ctx.id()));
        super::remove_dir(&scratch).await;
        let s2 = scratch.clone();
        super::isolation::blocking(move || super::isolation::make_dir(&s2, 0o700, None)).await?;
        let checked = self
            .verify_restore(ctx, env, row, &repo, &scratch, &progress, &cancel)
            .await;
        super::remove_dir(&scratch).await;
        checked
    }

    /// Steps `restore` and `check` of a verification, in `scratch` (removed by the caller).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn verify_restore(
        &self,
        ctx: &JobCtx,
        env: &EnvRow,
        row: &BackupRow,
        repo: &Repo,
        scratch: &Path,
        progress: &JobProgress<'_>,
        cancel: &CancellationToken,
    ) -> Result<(), ControlError> {
        let started = Instant::now();
        let storage = scratch.join("storage");
        match row.engine {
            Engine::Sqlite => {
                ctx.begin(1, "the database and storage into a scratch file");
                let db = SqliteDb::at(scratch.join("db.sqlite"));
                repo.restore_sqlite(&row.repo_name, &db, &storage, progress, cancel)
                    .await
                    .map_err(step_error("restore"))?;
                ctx.done(1, format!("{}", scratch.display()), started.elapsed());
                let started = Instant::now();
                ctx.begin(2, "PRAGMA integrity_check on the restored file");
                db.integrity_check().await.map_err(step_error("check"))?;
                ctx.done(2, "integrity_check ok", started.elapsed());
            }
            Engine::Postgres => {
                ctx.begin(1, "a scratch cluster in the environment's network");
                let (Some(source), Some(stream)) = (&row.cluster, &row.wal_stream) else {
                    return Err(ControlError::Step {
                        step: "restore",
                        message: format!("backup {} has no cluster or WAL stream recorded", row.id),
                        log_tail: vec![],
                    });
                };
                let (sys, spec, network) = self.scratch_cluster(env, row.id).await?;
                let restored = Cluster::restore_from(
                    repo,
                    &row.repo_name,
                    stream,
                    RecoveryTarget::EndOfBackup,
                    source,
                    sys,
                    spec.clone(),
                    &network,
                    &storage,
                    progress,
                    cancel,
                )
                .await;
                let cluster = match restored {
                    Ok(c) => c,
                    Err(e) => {
                        remove_scratch_cluster(spec).await;
                        return Err(step_error("restore")(e));
                    }
                };
                ctx.done(1, format!("port {}", cluster.spec.port), started.elapsed());
                let started = Instant::now();
                ctx.begin(2, "a query on the restored database");
                let size = cluster.size().await.map_err(step_error("check"));
                if let Err(e) = cluster.remove().await {
                    warn!(dir = %cluster.spec.dir.display(), error = %e, "could not remove a scratch cluster");
                }
                ctx.done(
                    2,
                    format!("the database answers: {}", format_bytes(size?)),
                    started.elapsed(),
                );
            }
        }
        Ok(())
    }

    /// A scratch cluster's place beside `env`'s clusters (the clusters' user's directories),
    /// on a free port of its network, with fresh passwords, archiving nothing.
    pub(super) async fn scratch_cluster(
        &self,
        env: &EnvRow,
        backup: i64,
    ) -> Result<(PgSystem, ClusterSpec, turnout_netns::Network), ControlError> {
        // The environment's own spec makes the directories above it for the clusters' user.
        let (sys, base, network) = self.cluster_spec(env, 0).await?;
        let root = self.home.pg_root(&env.app, &env.name);
        let sockets = self.home.pg_socket_root(&env.app, &env.name);
        let spec = ClusterSpec {
            dir: root.join(format!("verify-b{backup}")),
            socket_dir: sockets.join(format!("v{backup}")),
            log: root.join(format!("verify-b{backup}.log")),
            port: base.port,
            superuser_password: random_hex(24)?,
            database: pg_name("env", env.name.as_str()),
            app_password: random_hex(24)?,
            archive: None,
        };
        remove_scratch_cluster(spec.clone()).await;
        Ok((sys, spec, network))
    }
}

/// Stop and remove whatever a scratch cluster at `spec` left.
async fn remove_scratch_cluster(spec: ClusterSpec) {
    if !tokio::fs::try_exists(&spec.dir).await.unwrap_or(false) {
        let _ = tokio::fs::remove_file(&spec.log).await;
        return;
    }
    let Ok(sys) = PgSystem::find() else { return };
    let cluster = Cluster { sys, spec };
    if let Err(e) = cluster.remove().await {
        warn!(dir = %cluster.spec.dir.display(), error = %e, "could not remove a scratch cluster");
    }
    let _ = tokio::fs::remove_file(&cluster.spec.log).await;
}
