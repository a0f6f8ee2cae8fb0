//! `turnout promote APP/FROM APP/TO`: TO runs FROM's live release, the same commit and the same
//! build output (its directory copied into TO's, owned by TO's user; no fetch, no build), with
//! TO's own configuration (the app file resolved for TO's tier), secrets and data, through the
//! same launch → go-live → retire as every job. Which promotions are allowed follows the app's
//! declared pipeline, or the tiers (`Tier::promotes_to`) without one (`pipeline::allowed`); one
//! that is not is refused, listing the allowed ones. A production copy follows every new release
//! of its app's production environment on the same branch (`follow_production`).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use tracing::warn;
use turnout_model::{Action, AuditAction, EnvName, EnvRef, JobInfo, JobKind, Tier};

use super::ControlPlane;
use super::deploy::built_marker;
use super::jobs::{JobCtx, JobSpec};
use super::launch::Launch;
use super::remove_dir;
use crate::access::Principal;
use crate::app_file::{self, ReleaseConfig};
use crate::error::ControlError;
use crate::git;
use crate::store::{AuditEntry, EnvRow, NewRelease, ReleaseRow, q};

const PROMOTE_STEPS: &[&str] = &["copy", "launch", "go-live", "retire"];
const COPY: usize = 0;

impl ControlPlane {
    /// Refuse a promotion the app's pipeline (or the tiers) does not allow or `who` may not
    /// make; park it when the app wants a second owner's approval; otherwise start the job.
    pub async fn promote(
        self: &Arc<Self>,
        to: EnvRef,
        from: EnvName,
        who: &Principal,
    ) -> Result<JobInfo, ControlError> {
        let from = EnvRef {
            app: to.app.clone(),
            env: from,
        };
        if from.env == to.env {
            return Err(ControlError::Invalid(format!(
                "{to} cannot be promoted to itself; name the environment whose release it should run"
            )));
        }
        let source = self.env_for(who, &from, Action::Read).await?;
        let gate = self.gate_for(who, &to, Action::Promote).await?;
        self.check_promotion(&source, &gate.env).await?;
        self.live_release(&source).await?;
        let op = crate::approvals::Operation::Promote {
            app: to.app.clone(),
            from: from.env.clone(),
            to: to.env.clone(),
        };
        let summary = format!("promote {from} to {to}");
        self.require_approval(who, &gate, op, summary).await?;
        self.start_promote(from, to, who.name.clone()).await
    }

    /// Start a promotion job for `actor`, who was authorized (or approved by a second owner).
    pub(crate) async fn start_promote(
        self: &Arc<Self>,
        from: EnvRef,
        to: EnvRef,
        actor: String,
    ) -> Result<JobInfo, ControlError> {
        let spec = JobSpec {
            kind: JobKind::Promote,
            target: to.clone(),
            actor: actor.clone(),
            request: Some(format!("from {}", from.env)),
            steps: PROMOTE_STEPS,
        };
        let this = self.clone();
        self.jobs
            .start(spec, move |ctx| async move {
                let done = this.run_promote(&ctx, &from, &to, &actor).await;
                if done.is_ok() {
                    this.follow_production(&to).await;
                }
                done
            })
            .await
    }

    /// After `r` went live on another release: when it is a production environment, every
    /// production copy of the app that follows the same branch runs the same release, through a
    /// promotion job of its own (each visible in `turnout jobs`).
    ///
    /// Boxed: the jobs it starts end by calling it again (statically; a copy is never
    /// production), and a future cannot contain itself.
    pub(crate) fn follow_production<'a>(self: &'a Arc<Self>, r: &'a EnvRef) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Ok(prod) = self.env_row(r).await else {
                return;
            };
            if prod.tier != Tier::Production {
                return;
            }
            let app = r.app.clone();
            let Ok(envs) = self.store.call(move |c| q::list_envs(c, Some(&app))).await else {
                return;
            };
            let copies = envs
                .into_iter()
                .filter(|e| e.tier == Tier::ProductionCopy && e.branch == prod.branch);
            for copy in copies {
                let to = EnvRef {
                    app: r.app.clone(),
                    env: copy.name,
                };
                let actor = format!("turnout (the production copy follows {r})");
                if let Err(e) = self.start_promote(r.clone(), to.clone(), actor).await {
                    warn!(from = %r, to = %to, error = %e, "the production copy could not follow");
                }
            }
        })
    }

    /// FROM's live release, built and with its directory.
    async fn live_release(&self, from: &EnvRow) -> Result<ReleaseRow, ControlError> {
        let r = format!("{}/{}", from.app, from.name);
        let Some(id) = from.current_release_id else {
            return Err(ControlError::Conflict(format!(
                "{r} has no live release to promote; deploy it first (`turnout deploy {r}`)"
            )));
        };
        let release = self.store.call(move |c| q::get_release(c, id)).await?;
        let dir = Path::new(&release.dir);
        let built = tokio::fs::try_exists(built_marker(dir))
            .await
            .unwrap_or(false)
            && tokio::fs::try_exists(dir).await.unwrap_or(false);
        if !built {
            return Err(ControlError::Conflict(format!(
                "the build of {r}'s live release {id} is gone ({}); deploy {r} again, then promote",
                release.dir
            )));
        }
        Ok(release)
    }

    async fn run_promote(
        &self,
        ctx: &JobCtx,
        from: &EnvRef,
        to: &EnvRef,
        actor: &str,
    ) -> Result<(), ControlError> {
        let _env_lock = self.lock_env(ctx, to).await?;
        // Read again: either may have changed while the job was queued.
        let (source, target) = (self.env_row(from).await?, self.env_row(to).await?);
        self.identity(&target)?;
        self.check_promotion(&source, &target).await?;
        let release = self.live_release(&source).await?;
        let adopted = self
            .adopt_build(ctx, COPY, from, &release, &target, actor)
            .await?;
        let commit = &adopted.commit;
        let l = Launch {
            r: to,
            env: &target,
            release_id: adopted.release_id,
            commit,
            dir: &adopted.dir,
            config: &adopted.config,
            data: None,
            snapshot: None,
        };
        let launching = format!(
            "{} without a build: {}",
            &commit[..12.min(commit.len())],
            adopted.config.run
        );
        let live = self.go_live_steps(
            ctx,
            COPY + 1,
            &l,
            launching,
            AuditAction::Promote,
            actor,
            Some(COPY + 3),
        );
        if let Err(e) = live.await {
            self.fail_release(actor, to, adopted.release_id, &e).await;
            return Err(e);
        }
        Ok(())
    }

    /// Step `step`: `release` of `from` made a release of `target`, the same commit and build
    /// output (its directory copied, owned by the target's user; no fetch, no build) with the
    /// target's own configuration (the app file at that commit, resolved for its tier). A
    /// promotion, a production copy's reset and a recovery drill start releases this way.
    /// When the copy fails the new release is recorded failed.
    pub(crate) async fn adopt_build(
        &self,
        ctx: &JobCtx,
        step: usize,
        from: &EnvRef,
        release: &ReleaseRow,
        target: &EnvRow,
        actor: &str,
    ) -> Result<Adopted, ControlError> {
        let to = &EnvRef {
            app: target.app.clone(),
            env: target.name.clone(),
        };
        self.prepare_env_dirs(target).await?;
        let started = Instant::now();
        let commit = release.commit.clone();
        ctx.begin(
            step,
            format!(
                "{from}'s release {} ({}) into {to}",
                release.id,
                &commit[..12.min(commit.len())]
            ),
        );
        // TO's own configuration: the app file at that commit, resolved for TO's tier.
        let mirror = self.home.mirror(&to.app);
        let toml = git::read_file(&mirror, &commit, app_file::FILE_NAME).await?;
        let procfile = git::read_file(&mirror, &commit, app_file::PROCFILE).await?;
        let config = app_file::resolve(toml.as_deref(), procfile.as_deref(), target.tier, &to.env)
            .map_err(|e| ControlError::Step {
                step: "copy",
                message: format!("{e} (at commit {})", &commit[..12.min(commit.len())]),
                log_tail: vec![],
            })?;
        let name = Path::new(&release.dir)
            .file_name()
            .ok_or_else(|| ControlError::internal(format!("release dir {}", release.dir)))?;
        let dir = self.home.releases_dir(&to.app, &to.env).join(name);
        let reused = tokio::fs::try_exists(built_marker(&dir))
            .await
            .unwrap_or(false)
            && tokio::fs::try_exists(&dir).await.unwrap_or(false);
        let config_json = serde_json::to_string(&config)
            .map_err(|e| ControlError::internal(format!("serialise config: {e}")))?;
        let (env_id, c2, d2, job) = (
            target.id,
            commit.clone(),
            dir.display().to_string(),
            ctx.id(),
        );
        let wanted = format!("promoted from {from} (release {})", release.id);
        let entry = AuditEntry::new(actor, AuditAction::ReleaseCreate)
            .app(&to.app)
            .env(&to.env)
            .change(Some(wanted.clone()), Some(commit.clone()));
        let release_id = self
            .store
            .mutate(entry, move |c, _| {
                q::insert_release(
                    c,
                    &NewRelease {
                        env_id,
                        commit: &c2,
                        git_ref: &wanted,
                        dir: &d2,
                        config: &config_json,
                        reused_build: true,
                        job_id: job,
                    },
                )
            })
            .await?;
        ctx.set_release(release_id);
        let copied = async {
            if reused {
                ctx.done(
                    step,
                    format!("{} (already in {to})", dir.display()),
                    started.elapsed(),
                );
                return Ok(());
            }
            ctx.guard(copy_build(Path::new(&release.dir), &dir))
                .await??;
            self.hand_over(target, &dir).await?;
            tokio::fs::write(built_marker(&dir), &commit)
                .await
                .map_err(|e| ControlError::internal(format!("write {}: {e}", dir.display())))?;
            ctx.done(
                step,
                format!("into {} (no build)", dir.display()),
                started.elapsed(),
            );
            Ok(())
        };
        if let Err(e) = copied.await {
            self.fail_release(actor, to, release_id, &e).await;
            return Err(e);
        }
        Ok(Adopted {
            release_id,
            commit,
            dir,
            config,
        })
    }

    /// A release of another environment whose build can be adopted (`adopt_build`): its
    /// directory and build marker still there.
    pub(crate) async fn built_release(
        &self,
        id: i64,
        what: &str,
    ) -> Result<ReleaseRow, ControlError> {
        let release = self.store.call(move |c| q::get_release(c, id)).await?;
        let dir = Path::new(&release.dir);
        let built = tokio::fs::try_exists(built_marker(dir))
            .await
            .unwrap_or(false)
            && tokio::fs::try_exists(dir).await.unwrap_or(false);
        if !built {
            return Err(ControlError::Conflict(format!(
                "{what}: the build of release {id} (commit {}) is gone ({}), so its code cannot be run again; deploy that commit again, or leave the code as it is",
                &release.commit[..12.min(release.commit.len())],
                release.dir
            )));
        }
        Ok(release)
    }
}

/// A release made in an environment from another's build (`adopt_build`).
pub(crate) struct Adopted {
    pub release_id: i64,
    pub commit: String,
    pub dir: PathBuf,
    pub config: ReleaseConfig,
}

/// Copy a release directory's tree (modes, links and times kept; copy-on-write where the file
/// system can) to `to`, through a temporary name so a half copy is never taken for a whole one.
/// The copy is a plain tree: the source's git worktree link is not carried over.
async fn copy_build(from: &Path, to: &Path) -> Result<(), ControlError> {
    let partial = partial_path(to);
    remove_dir(&partial).await;
    remove_dir(to).await;
    let out = tokio::process::Command::new("cp")
        .args(["-a", "--reflink=auto", "--"])
        .arg(from)
        .arg(&partial)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| ControlError::internal(format!("cannot run cp: {e}")))?;
    if !out.status.success() {
        remove_dir(&partial).await;
        return Err(ControlError::Step {
            step: "copy",
            message: format!(
                "copying {} failed: {}",
                from.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            log_tail: vec![],
        });
    }
    let _ = tokio::fs::remove_file(partial.join(".git")).await;
    tokio::fs::rename(&partial, to)
        .await
        .map_err(|e| ControlError::internal(format!("rename to {}: {e}", to.display())))
}

fn partial_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dir.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_flows_down_the_tiers() {
        for from in Tier::ALL {
            let to = from.promotes_to();
            assert!(!to.contains(&from), "{from} to itself");
            assert!(!to.contains(&Tier::Development), "{from} into development");
            // Only production feeds its copy, and the copy feeds nothing.
            assert_eq!(
                to.contains(&Tier::ProductionCopy),
                from == Tier::Production,
                "{from}"
            );
        }
        assert_eq!(Tier::ProductionCopy.promotes_to(), &[]);
        assert_eq!(Tier::Qa.promotes_to(), &[Tier::Staging]);
        assert_eq!(
            Tier::Release.promotes_to(),
            &[Tier::Staging, Tier::Production]
        );
    }

    #[test]
    fn a_partial_copy_has_a_name_of_its_own() {
        assert_eq!(
            partial_path(Path::new("/h/apps/shop/envs/prod/releases/abc-1")),
            Path::new("/h/apps/shop/envs/prod/releases/abc-1.partial")
        );
    }
}
