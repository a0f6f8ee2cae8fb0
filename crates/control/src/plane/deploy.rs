//! A deploy, as a job of typed steps: fetch → checkout → build → migrate → launch → go live →
//! retire.
//! Each step takes what the one before produced, so none can run out of order. Any failure
//! (or a cancel) before go-live leaves the environment serving exactly what it served before:
//! the new instance, if any, is stopped and the release marked failed. Go-live is the point of
//! no return.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tracing::info;
use turnout_model::{Action, AuditAction, DeployRequest, EnvRef, JobInfo, JobKind, Tier};
use turnout_supervisor::TaskSpec;

use super::data::ReleaseRef;
use super::jobs::{JobCtx, JobSpec};
use super::launch::Launch;
use super::logs::failure_tail;
use super::routing::{Running, key};
use super::{ControlPlane, remove_dir, source};
use crate::access::Principal;
use crate::app_file::{self, ReleaseConfig};
use crate::error::ControlError;
use crate::git::{self, Source};
use crate::store::{AuditEntry, EnvRow, NewRelease, q};

pub(crate) const DEPLOY_STEPS: &[&str] = &[
    "fetch", "checkout", "build", "migrate", "launch", "go-live", "retire",
];
const FETCH: usize = 0;
const CHECKOUT: usize = 1;
const BUILD: usize = 2;
const MIGRATE: usize = 3;
const LAUNCH: usize = 4;
const GO_LIVE: usize = 5;
const RETIRE: usize = 6;

/// The commit a ref resolved to.
struct Fetched {
    commit: String,
    wanted: String,
}

/// A release recorded in the store, its tree checked out (or reused) in its directory.
struct CheckedOut {
    commit: String,
    release_id: i64,
    dir: PathBuf,
    config: ReleaseConfig,
    reused: bool,
}

/// A release whose build is done (or was reused).
struct Built(CheckedOut);

/// Everything the steps of one deploy share.
struct Deploy<'a> {
    plane: &'a ControlPlane,
    ctx: &'a JobCtx,
    r: &'a EnvRef,
    env: EnvRow,
    src: Source,
    actor: &'a str,
}

impl ControlPlane {
    /// Refuse a deploy `who` may not make; when the app wants a second owner's approval for
    /// deploys on this tier, record the request and answer `NeedsApproval`; otherwise start
    /// the deploy job.
    pub async fn deploy(
        self: &Arc<Self>,
        r: EnvRef,
        req: DeployRequest,
        who: &Principal,
    ) -> Result<JobInfo, ControlError> {
        if let Some(git_ref) = &req.git_ref {
            git::check_ref_shape("ref", git_ref)?;
        }
        let gate = self.gate_for(who, &r, Action::Deploy).await?;
        let summary = match &req.git_ref {
            Some(x) => format!("deploy {x} to {r}"),
            None => format!("deploy branch {} to {r}", gate.env.branch),
        };
        let op = crate::approvals::Operation::Deploy {
            app: r.app.clone(),
            env: r.env.clone(),
            git_ref: req.git_ref.clone(),
        };
        self.require_approval(who, &gate, op, summary).await?;
        self.start_deploy(r, req, who.name.clone()).await
    }

    /// Start a deploy job for `actor`, who was authorized (or approved by a second owner).
    pub(crate) async fn start_deploy(
        self: &Arc<Self>,
        r: EnvRef,
        req: DeployRequest,
        actor: String,
    ) -> Result<JobInfo, ControlError> {
        let spec = JobSpec {
            kind: JobKind::Deploy,
            target: r.clone(),
            actor: actor.clone(),
            request: req.git_ref.clone(),
            steps: DEPLOY_STEPS,
        };
        let this = self.clone();
        self.jobs
            .start(spec, move |ctx| async move {
                let done = this.run_deploy(&ctx, &r, req, &actor).await;
                if done.is_ok() {
                    this.follow_production(&r).await;
                }
                done
            })
            .await
    }

    async fn run_deploy(
        &self,
        ctx: &JobCtx,
        r: &EnvRef,
        req: DeployRequest,
        actor: &str,
    ) -> Result<(), ControlError> {
        let _deploying = self.lock_env(ctx, r).await?;
        let env = self.env_row(r).await?;
        // Refused before any work when this daemon cannot isolate the environment's tier.
        self.identity(&env)?;
        self.prepare_env_dirs(&env).await?;
        let app_name = r.app.clone();
        let app = self.store.call(move |c| q::get_app(c, &app_name)).await?;
        let d = Deploy {
            plane: self,
            ctx,
            r,
            src: source(&app.repo, app.token_env.as_deref())?,
            env,
            actor,
        };
        let (wanted, is_branch) = match req.git_ref {
            Some(x) => (x, false),
            None => (d.env.branch.clone(), true),
        };
        let fetched = d.fetch(wanted, is_branch).await?;
        let out = d.checkout(fetched).await?;
        let release_id = out.release_id;
        let live = async {
            let built = d.build(out).await?;
            d.migrate(&built).await?;
            let running = d.launch(&built).await?;
            d.go_live(&built, running).await
        };
        let previous = match live.await {
            Ok(previous) => previous,
            Err(e) => {
                d.fail_release(release_id, &e).await;
                return Err(e);
            }
        };
        d.retire(previous).await;
        Ok(())
    }

    /// The environment's lock, held for the whole job; the job is `queued` until it gets it.
    pub(crate) async fn lock_env(
        &self,
        ctx: &JobCtx,
        r: &EnvRef,
    ) -> Result<super::keyed::KeyedGuard<super::routing::EnvKey>, ControlError> {
        let guard = match self.env_locks.try_lock(&key(r)) {
            Some(g) => g,
            None => ctx.guard(self.env_locks.lock(&key(r))).await?,
        };
        ctx.running();
        Ok(guard)
    }
}

impl Deploy<'_> {
    async fn fetch(&self, wanted: String, is_branch: bool) -> Result<Fetched, ControlError> {
        let started = Instant::now();
        self.ctx
            .begin(FETCH, format!("{wanted} from {}", self.src.display()));
        let mirror = self.plane.home.mirror(&self.r.app);
        // An exact commit the mirror already has (a push's, or one built before) needs no
        // fetch: the deploy neither waits for the repository nor fails while it is unreachable.
        let exact =
            !is_branch && wanted.len() == 40 && wanted.bytes().all(|b| b.is_ascii_hexdigit());
        let (commit, fetched) = self
            .ctx
            .guard(async {
                let _git = self.plane.app_locks.lock(&self.r.app).await;
                if exact && let Ok(commit) = git::resolve(&self.src, &mirror, &wanted, false).await
                {
                    return Ok((commit, false));
                }
                git::fetch(&self.src, &mirror).await?;
                git::resolve(&self.src, &mirror, &wanted, is_branch)
                    .await
                    .map(|c| (c, true))
            })
            .await??;
        let how = if fetched {
            ""
        } else {
            " (already here: not fetched)"
        };
        self.ctx.done(
            FETCH,
            format!("{wanted} is {}{how}", &commit[..12]),
            started.elapsed(),
        );
        Ok(Fetched { commit, wanted })
    }

    /// Resolve the app's file for this environment at the commit, record the release, and
    /// check the commit out into its directory (or reuse one already built).
    async fn checkout(&self, f: Fetched) -> Result<CheckedOut, ControlError> {
        let started = Instant::now();
        let (r, commit) = (self.r, f.commit);
        self.ctx.begin(
            CHECKOUT,
            format!("{} into a release directory", &commit[..12]),
        );
        let mirror = self.plane.home.mirror(&r.app);
        let toml = git::read_file(&mirror, &commit, app_file::FILE_NAME).await?;
        let procfile = git::read_file(&mirror, &commit, app_file::PROCFILE).await?;
        let config = app_file::resolve(toml.as_deref(), procfile.as_deref(), self.env.tier, &r.env)
            .map_err(|e| ControlError::Step {
                step: "checkout",
                message: format!("{e} (at commit {})", &commit[..12]),
                log_tail: vec![],
            })?;
        let dir = self.plane.home.releases_dir(&r.app, &r.env).join(format!(
            "{}-{}",
            &commit[..12],
            config.build_fingerprint()
        ));
        let reused = tokio::fs::try_exists(built_marker(&dir))
            .await
            .unwrap_or(false)
            && tokio::fs::try_exists(&dir).await.unwrap_or(false);
        let config_json = serde_json::to_string(&config)
            .map_err(|e| ControlError::internal(format!("serialise config: {e}")))?;
        let (env_id, c2, w2, d2, job) = (
            self.env.id,
            commit.clone(),
            f.wanted.clone(),
            dir.display().to_string(),
            self.ctx.id(),
        );
        let entry = AuditEntry::new(self.actor, AuditAction::ReleaseCreate)
            .app(&r.app)
            .env(&r.env)
            .change(Some(f.wanted), Some(commit.clone()));
        let release_id = self
            .plane
            .store
            .mutate(entry, move |c, _| {
                q::insert_release(
                    c,
                    &NewRelease {
                        env_id,
                        commit: &c2,
                        git_ref: &w2,
                        dir: &d2,
                        config: &config_json,
                        reused_build: reused,
                        job_id: job,
                    },
                )
            })
            .await?;
        self.ctx.set_release(release_id);
        let out = CheckedOut {
            commit,
            release_id,
            dir,
            config,
            reused,
        };
        if reused {
            self.ctx.done(
                CHECKOUT,
                format!("{} (reusing the release directory)", &out.commit[..12]),
                started.elapsed(),
            );
            return Ok(out);
        }
        let checkout = self
            .ctx
            .guard(async {
                if tokio::fs::try_exists(&out.dir).await.unwrap_or(false) {
                    // Left by an interrupted deploy: start again from a clean tree.
                    remove_dir(&out.dir).await;
                    git::prune_worktrees(&mirror).await;
                }
                let _git = self.plane.app_locks.lock(&r.app).await;
                git::checkout(&self.src, &mirror, &out.commit, &out.dir).await
            })
            .await
            .and_then(|r| r);
        let checkout = match checkout {
            Ok(()) => self.plane.hand_over(&self.env, &out.dir).await,
            Err(e) => Err(e),
        };
        if let Err(e) = checkout {
            self.fail_release(release_id, &e).await;
            return Err(e);
        }
        self.ctx.done(
            CHECKOUT,
            format!("{} into {}", &out.commit[..12], out.dir.display()),
            started.elapsed(),
        );
        Ok(out)
    }

    async fn build(&self, out: CheckedOut) -> Result<Built, ControlError> {
        let r = self.r;
        if out.reused {
            self.ctx.skip(
                BUILD,
                "this commit was already built with the same build settings",
            );
            return Ok(Built(out));
        }
        let Some(command) = out.config.build.clone() else {
            self.ctx.skip(BUILD, "no build command");
            mark_built(&out).await?;
            return Ok(Built(out));
        };
        let _slot = self
            .plane
            .builds
            .slot(self.ctx, self.env.tier == Tier::Production)
            .await?;
        let started = Instant::now();
        self.ctx.begin(BUILD, command.clone());
        let log_path = self.plane.home.build_log(&r.app, &r.env, out.release_id);
        let spec = TaskSpec {
            command,
            cwd: out.dir.clone(),
            // Builds go out like the instances: through the egress proxy below production.
            env: {
                let mut env = self
                    .plane
                    .release_env(r, self.env.tier, &out.commit, &out.config);
                env.extend(self.plane.egress_env(&self.env));
                env
            },
            log_path: log_path.clone(),
            timeout: out.config.build_timeout,
            pid_file: Some(
                self.plane
                    .home
                    .build_pid_file(&r.app, &r.env, out.release_id),
            ),
            identity: self.plane.identity(&self.env)?,
            cgroup: Some(self.plane.cgroup(&self.env, &out.config)),
            network: self.plane.network(&self.env).await?,
            sandbox: self.plane.sandbox(&self.env),
        };
        let ctx = self.ctx;
        let mut on_line = |line: &str| ctx.output(line);
        let built = ctx
            .guard(self.plane.runtime.run_task(spec, &mut on_line))
            .await?;
        if let Err(e) = built {
            return Err(ControlError::Step {
                step: "build",
                message: e.to_string(),
                log_tail: failure_tail(&log_path).await,
            });
        }
        mark_built(&out).await?;
        self.ctx.done(
            BUILD,
            format!("done in {:.1}s", started.elapsed().as_secs_f64()),
            started.elapsed(),
        );
        Ok(Built(out))
    }

    /// The environment's data (made on its first deploy) and the release's migrations.
    async fn migrate(&self, b: &Built) -> Result<(), ControlError> {
        let started = Instant::now();
        let out = &b.0;
        self.ctx
            .begin(MIGRATE, format!("{} data", out.config.data.engine));
        let rel = ReleaseRef {
            id: out.release_id,
            commit: &out.commit,
            dir: &out.dir,
            config: &out.config,
        };
        let detail = self
            .plane
            .deploy_data(self.ctx, self.r, &self.env, &rel, self.actor)
            .await?;
        self.ctx.done(MIGRATE, detail, started.elapsed());
        Ok(())
    }

    async fn launch(&self, b: &Built) -> Result<Running, ControlError> {
        let started = Instant::now();
        let out = &b.0;
        self.ctx.begin(
            LAUNCH,
            format!(
                "{} (health: GET {}, up to {}s)",
                out.config.run,
                out.config.health_path,
                out.config.health_timeout.as_secs()
            ),
        );
        let running = self
            .plane
            .launch(&self.launch_spec(b), self.ctx.until_cancelled())
            .await?;
        self.ctx.done(
            LAUNCH,
            format!(
                "healthy on port {} in {:.1}s",
                running.instance.port(),
                started.elapsed().as_secs_f64()
            ),
            started.elapsed(),
        );
        Ok(running)
    }

    fn launch_spec<'b>(&'b self, b: &'b Built) -> Launch<'b> {
        Launch {
            r: self.r,
            env: &self.env,
            release_id: b.0.release_id,
            commit: &b.0.commit,
            dir: &b.0.dir,
            config: &b.0.config,
            data: None,
            snapshot: None,
        }
    }

    async fn go_live(&self, b: &Built, running: Running) -> Result<Option<Running>, ControlError> {
        if let Err(e) = self.ctx.commit() {
            running.instance.stop().await;
            return Err(e);
        }
        let started = Instant::now();
        let url = self.plane.url(self.r);
        self.ctx
            .begin(GO_LIVE, format!("{url} -> release {}", b.0.release_id));
        let audit = AuditEntry::new(self.actor, AuditAction::Deploy)
            .app(&self.r.app)
            .env(&self.r.env);
        let previous = self
            .plane
            .go_live(&self.launch_spec(b), running, audit)
            .await?;
        self.ctx.set_url(url.clone());
        self.ctx.done(
            GO_LIVE,
            format!("{url} -> release {}", b.0.release_id),
            started.elapsed(),
        );
        info!(app = %self.r.app, env = %self.r.env, release = b.0.release_id, commit = %b.0.commit, "deploy live");
        Ok(previous)
    }

    async fn retire(&self, previous: Option<Running>) {
        retire_step(self.plane, self.ctx, self.r, RETIRE, previous).await;
    }

    async fn fail_release(&self, release_id: i64, e: &ControlError) {
        self.plane
            .fail_release(self.actor, self.r, release_id, e)
            .await;
    }
}

impl ControlPlane {
    /// A release did not go live: say why, in the store and the audit log.
    pub(crate) async fn fail_release(
        &self,
        actor: &str,
        r: &EnvRef,
        release_id: i64,
        e: &ControlError,
    ) {
        let entry = AuditEntry::new(actor, AuditAction::ReleaseFail)
            .app(&r.app)
            .env(&r.env)
            .change(None, Some(format!("release {release_id}")));
        let msg = e.to_string();
        let m2 = msg.clone();
        let _ = self
            .store
            .mutate_failed(entry, msg, move |c| q::fail_release(c, release_id, &m2))
            .await;
    }
}

/// The last step of every job that replaces an instance: drain and stop the one replaced.
pub(crate) async fn retire_step(
    plane: &ControlPlane,
    ctx: &JobCtx,
    r: &EnvRef,
    index: usize,
    previous: Option<Running>,
) {
    let Some(old) = previous else {
        ctx.skip(index, "no instance to replace");
        return;
    };
    let started = Instant::now();
    ctx.begin(index, format!("draining release {}", old.release_id));
    let outcome = plane.retire(r, old).await;
    ctx.done(
        index,
        format!(
            "drained and stopped in {:.2}s ({} requests cut, {} streams closed)",
            started.elapsed().as_secs_f64(),
            outcome.cut,
            outcome.closed_streams
        ),
        started.elapsed(),
    );
}

/// A release directory whose build finished has this file beside it.
pub(crate) fn built_marker(dir: &std::path::Path) -> PathBuf {
    dir.with_extension("built")
}

async fn mark_built(out: &CheckedOut) -> Result<(), ControlError> {
    let marker = built_marker(&out.dir);
    tokio::fs::write(&marker, &out.commit)
        .await
        .map_err(|e| ControlError::internal(format!("write {}: {e}", marker.display())))
}
