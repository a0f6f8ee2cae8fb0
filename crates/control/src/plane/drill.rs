//! `turnout drill APP/ENV --at TIME`: a recovery drill, as a job. The environment's code (the
//! release its snapshot recorded) and data as of TIME are restored into a scratch environment
//! of the app, `drill-<N>` (N the drill's id), which is started and health-checked, then
//! checked by the release's `[backup] drill_check` command; the drill measures how long that
//! took (RTO, from the job's start until checked) and how much older the data is than asked
//! (RPO), records the result in `drills`, and removes the scratch environment whatever
//! happened.
//!
//! The scratch environment is of tier `qa` whatever the source's: a tier with no backup
//! schedule (the scheduler never snapshots it), that no production copy follows, isolated like
//! every environment below production, and never production itself (a drill must not look
//! like a second production to anything that acts on tiers). It never goes live: its instance
//! is launched and checked but not routed, so no domain and no URL reaches it; the check
//! reaches the instance at `TURNOUT_DRILL_URL` inside the environment's network.
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};
use turnout_model::{
    Action, AuditAction, DeployOn, DrillRequest, EnvName, EnvRef, JobInfo, JobKind, Tier,
    format_timestamp,
};

use super::ControlPlane;
use super::backup_restore::RestorePoint;
use super::data::ReleaseRef;
use super::generation::NewData;
use super::jobs::{JobCtx, JobSpec};
use super::launch::Launch;
use super::remove_dir;
use crate::access::Principal;
use crate::error::ControlError;
use crate::git;
use crate::store::backup as bq;
use crate::store::data::Origin;
use crate::store::{AuditEntry, EnvRow, now, q};

const DRILL_STEPS: &[&str] = &["create", "restore", "code", "launch", "check", "remove"];
const REMOVE: usize = 5;

impl ControlPlane {
    /// Start a recovery drill of `r`'s backups as of `req.at`.
    pub async fn drill(
        self: &Arc<Self>,
        r: EnvRef,
        req: DrillRequest,
        who: &Principal,
    ) -> Result<JobInfo, ControlError> {
        let env = self.env_for(who, &r, Action::Restore).await?;
        let point = self.restore_point(&env, Some(&req.at), None).await?;
        let Some(release) = point.backup.release_id else {
            return Err(ControlError::Conflict(format!(
                "snapshot {} of {r} recorded no release, so a drill has no code to start on it",
                point.backup.id
            )));
        };
        self.built_release(release, "the drill").await?;
        let spec = JobSpec {
            kind: JobKind::Drill,
            target: r.clone(),
            actor: who.name.clone(),
            request: Some(format!("as of {}", point.describe())),
            steps: DRILL_STEPS,
        };
        let (this, actor) = (self.clone(), who.name.clone());
        self.jobs
            .start(spec, move |ctx| async move {
                this.run_drill(&ctx, &r, point, &actor).await
            })
            .await
    }

    async fn run_drill(
        &self,
        ctx: &JobCtx,
        r: &EnvRef,
        point: RestorePoint,
        actor: &str,
    ) -> Result<(), ControlError> {
        // The source is only read: the drill holds no lock on it, so its deploys go on.
        ctx.running();
        let started = Instant::now();
        let source = self.env_row(r).await?;
        let (env_id, job, asked, backup_id) = (source.id, ctx.id(), point.asked, point.backup.id);
        let entry = AuditEntry::new(actor, AuditAction::BackupDrill)
            .app(&r.app)
            .env(&r.env)
            .change(
                None,
                Some(format!("started, as of {}", format_timestamp(asked))),
            );
        let id = self
            .store
            .mutate(entry, move |c, _| {
                bq::insert_drill(c, env_id, job, asked, backup_id, now())
            })
            .await?;
        let name: EnvName = format!("drill-{id}")
            .parse()
            .map_err(|e| ControlError::internal(format!("drill environment name: {e}")))?;
        let scratch = EnvRef {
            app: r.app.clone(),
            env: name,
        };
        let outcome = self
            .drill_in(ctx, &source, &scratch, &point, started, actor)
            .await;
        let removing = Instant::now();
        ctx.begin(REMOVE, format!("removing {scratch}"));
        self.remove_scratch(&scratch, actor).await;
        ctx.done(REMOVE, format!("{scratch} removed"), removing.elapsed());
        let rpo = point.asked - point.point;
        let (rto, error) = match &outcome {
            Ok(rto) => (Some(*rto), None),
            Err(e) => (None, Some(failure(e))),
        };
        let verdict = match &error {
            None => format!("passed: RTO {} ms, RPO {rpo} s", rto.unwrap_or_default()),
            Some(e) => format!("failed: {e}"),
        };
        ctx.output(&format!("drill {id} {verdict}"));
        let entry = AuditEntry::new(actor, AuditAction::BackupDrill)
            .app(&r.app)
            .env(&r.env)
            .change(None, Some(format!("drill {id} {verdict}")));
        self.store
            .mutate(entry, move |c, _| {
                bq::finish_drill(c, id, now(), rto, Some(rpo), error.as_deref())
            })
            .await?;
        info!(app = %r.app, env = %r.env, drill = id, passed = outcome.is_ok(), "recovery drill");
        outcome.map(|_| ())
    }

    /// Steps `create` to `check` in the scratch environment `scratch`; the RTO in ms.
    async fn drill_in(
        &self,
        ctx: &JobCtx,
        source: &EnvRow,
        scratch: &EnvRef,
        point: &RestorePoint,
        started: Instant,
        actor: &str,
    ) -> Result<i64, ControlError> {
        let step = Instant::now();
        ctx.begin(0, format!("{scratch}, tier qa, reachable by no domain"));
        let (app, name, branch) = (
            scratch.app.clone(),
            scratch.env.clone(),
            source.branch.clone(),
        );
        let entry = AuditEntry::new(actor, AuditAction::EnvCreate)
            .app(&scratch.app)
            .env(&scratch.env)
            .change(None, Some("scratch environment of a recovery drill".into()));
        let env = self
            .store
            .mutate(entry, move |c, _| {
                q::insert_env(c, &app, &name, &branch, Tier::Qa, DeployOn::Manual)
            })
            .await?;
        self.identity(&env)?;
        self.prepare_env_dirs(&env).await?;
        ctx.done(0, scratch.to_string(), step.elapsed());
        let gn = self.restored(ctx, 1, source, &env, point, 1).await?;
        let from = EnvRef {
            app: source.app.clone(),
            env: source.name.clone(),
        };
        let release_id = point.backup.release_id.ok_or_else(|| {
            ControlError::Conflict(format!("snapshot {} recorded no release", point.backup.id))
        })?;
        let release = self.built_release(release_id, "the drill").await?;
        let adopted = self
            .adopt_build(ctx, 2, &from, &release, &env, actor)
            .await?;
        let step = Instant::now();
        ctx.begin(
            3,
            format!(
                "release {} on the restored data (health: GET {})",
                adopted.release_id, adopted.config.health_path
            ),
        );
        let data = NewData {
            gn: gn.clone(),
            origin: Origin {
                kind: "restore",
                from: Some(from.to_string()),
                at: now(),
                job: Some(ctx.id()),
            },
        };
        let l = Launch {
            r: scratch,
            env: &env,
            release_id: adopted.release_id,
            commit: &adopted.commit,
            dir: &adopted.dir,
            config: &adopted.config,
            data: Some(&data),
            snapshot: None,
        };
        let running = self.launch(&l, ctx.until_cancelled()).await?;
        let port = running.instance.port();
        ctx.done(3, format!("healthy on port {port}"), step.elapsed());
        let checked = async {
            let step = Instant::now();
            let Some(command) = &adopted.config.backup.drill_check else {
                ctx.skip(
                    4,
                    "no [backup] drill_check in turnout.toml: the health check is the check",
                );
                return Ok(());
            };
            ctx.begin(4, format!("`{command}`"));
            let rel = ReleaseRef {
                id: adopted.release_id,
                commit: &adopted.commit,
                dir: &adopted.dir,
                config: &adopted.config,
            };
            let url = vec![(
                "TURNOUT_DRILL_URL".to_owned(),
                format!("http://127.0.0.1:{port}"),
            )];
            self.data_task(ctx, scratch, &env, &rel, &gn, command, "drill_check", &url)
                .await?;
            ctx.done(4, format!("`{command}` passed"), step.elapsed());
            Ok::<_, ControlError>(())
        };
        let checked = checked.await;
        running.instance.stop().await;
        checked?;
        Ok(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX))
    }

    /// What a killed daemon left of its drills: each one running is recorded failed
    /// (interrupted) and its scratch environment removed. Runs at start-up, before the
    /// scheduler's first pass.
    pub(crate) async fn recover_drills(&self) {
        let at = now();
        let entry = AuditEntry::new("turnout", AuditAction::BackupDrill)
            .change(None, Some("failed (interrupted)".to_owned()));
        let left = Arc::new(std::sync::Mutex::new(Vec::new()));
        let found = left.clone();
        let marked = self
            .store
            .mutate_each(move |c| {
                let drills = bq::fail_interrupted_drills(c, at)?;
                let entries = drills
                    .iter()
                    .map(|(id, app)| {
                        let mut e = entry.clone();
                        e.from = Some(format!("drill {id} of {app} running"));
                        e
                    })
                    .collect();
                *found.lock().unwrap_or_else(|p| p.into_inner()) = drills;
                Ok(entries)
            })
            .await;
        if let Err(e) = marked {
            warn!(error = %e, "could not mark interrupted drills");
            return;
        }
        let left = std::mem::take(&mut *left.lock().unwrap_or_else(|p| p.into_inner()));
        for (id, app) in left {
            let scratch = format!("{app}/drill-{id}").parse::<EnvRef>();
            match scratch {
                Ok(scratch) => {
                    warn!(drill = id, env = %scratch, "removing the scratch environment of a drill the daemon was stopped in");
                    self.remove_scratch(&scratch, "turnout").await;
                }
                Err(e) => warn!(drill = id, error = %e, "a drill's scratch environment name"),
            }
        }
    }

    /// Remove a drill's scratch environment: its data, its rows, its network, its files.
    async fn remove_scratch(&self, scratch: &EnvRef, actor: &str) {
        if let Ok(env) = self.env_row(scratch).await {
            self.remove_leftover(&env, 1).await;
            let env_id = env.id;
            let entry = AuditEntry::new(actor, AuditAction::EnvDelete)
                .app(&scratch.app)
                .env(&scratch.env)
                .change(None, Some("the drill ended".into()));
            if let Err(e) = self
                .store
                .mutate(entry, move |c, _| q::delete_env(c, env_id))
                .await
            {
                warn!(env = %scratch, error = %e, "could not remove a drill's environment");
            }
            self.remove_network(&env).await;
        }
        remove_dir(&self.home.env_dir(&scratch.app, &scratch.env)).await;
        git::prune_worktrees(&self.home.mirror(&scratch.app)).await;
    }
}

/// A failed drill as its record keeps it: the error, with the last lines of a failed check's
/// output (what the check said).
fn failure(e: &ControlError) -> String {
    match e {
        ControlError::Step { log_tail, .. } if !log_tail.is_empty() => {
            let from = log_tail.len().saturating_sub(5);
            format!("{e}: {}", log_tail[from..].join(" | "))
        }
        e => e.to_string(),
    }
}
