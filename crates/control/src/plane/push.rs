//! Push-to-deploy: what a `git push` to `/git/APP.git` does once git has stored it. The HTTP
//! side (`api::git`) authenticates the pusher and runs `git receive-pack`; this side decides who
//! may push, serializes pushes per app, and afterwards deploys each moved branch's exact commit
//! to the environments that follow it and deploy on push (as the pusher, through
//! `ControlPlane::deploy`), creates `test-<branch>` for a new branch when the app has branch
//! environments, and deletes that environment when a push deletes its branch.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::info;
use turnout_model::{
    Action, AppName, AuditAction, CiOutcome, CreateEnv, DeployOn, EnvName, EnvRef, MAX_NAME_LEN,
    Tier,
};

use super::ControlPlane;
use super::keyed::KeyedGuard;
use super::source;
use super::triggers::Trigger;
use crate::access::Principal;
use crate::error::ControlError;
use crate::git::{self, Service};
use crate::store::{AppRow, AuditEntry, q};

/// The tier of the environments pushes create, and so the tier whose deploy role pushing needs.
const BRANCH_ENV_TIER: Tier = Tier::Test;
const BRANCH_ENV_PREFIX: &str = "test-";

/// A push in progress: the app's push lock and its pushed branches before receive-pack ran.
pub struct PushGuard {
    _lock: KeyedGuard<AppName>,
    app: AppRow,
    mirror: PathBuf,
    before: BTreeMap<String, String>,
    who: Principal,
}

impl PushGuard {
    /// The repository receive-pack writes to.
    pub fn mirror(&self) -> &Path {
        &self.mirror
    }
}

impl ControlPlane {
    /// The mirror `who` may use `service` on: reading (fetch, ls-remote) needs a role on the
    /// app; pushing needs the role that deploying to the test tier needs (developer by default).
    /// The mirror is created (empty) on first use.
    pub async fn git_mirror(
        &self,
        who: &Principal,
        app: &AppName,
        service: Service,
    ) -> Result<PathBuf, ControlError> {
        let row = match service {
            Service::UploadPack => self.authorize_app(who, app, Action::Read).await?,
            Service::ReceivePack => self.authorize_push(who, app).await?,
        };
        let mirror = self.home.mirror(app);
        let src = source(&row.repo, row.token_env.as_deref())?;
        let _git = self.app_locks.lock(app).await;
        git::init_mirror(&src, &mirror).await?;
        Ok(mirror)
    }

    async fn authorize_push(&self, who: &Principal, app: &AppName) -> Result<AppRow, ControlError> {
        let row = self.app_row(app).await?;
        self.authorize(
            who,
            row.id,
            app,
            &format!("{app} by push"),
            Action::Deploy,
            Some(BRANCH_ENV_TIER),
        )
        .await?;
        Ok(row)
    }

    /// Authorize a push and take the app's push lock; what receive-pack is about to change is
    /// remembered so `end_push` can tell which branches moved.
    pub async fn begin_push(
        &self,
        who: &Principal,
        app: &AppName,
    ) -> Result<PushGuard, ControlError> {
        let mirror = self.git_mirror(who, app, Service::ReceivePack).await?;
        let lock = self.push_locks.lock(app).await;
        // Read after the lock: a push that waited sees what the one before it did.
        let app_row = self.app_row(app).await?;
        let before = git::pushed_branches(&mirror).await?;
        Ok(PushGuard {
            _lock: lock,
            app: app_row,
            mirror,
            before,
            who: who.clone(),
        })
    }

    /// The refs of a push that may not move, with why. Only branches are taken; and since a
    /// pushed branch is what the environments following it deploy (`git::resolve`), moving or
    /// deleting one needs the right to deploy each of them (a refusal is audited).
    pub async fn check_push(
        &self,
        push: &PushGuard,
        refs: &[String],
    ) -> Result<Vec<(String, String)>, ControlError> {
        let name = push.app.name.clone();
        let envs = self
            .store
            .call(move |c| q::list_envs(c, Some(&name)))
            .await?;
        let mut refused = Vec::new();
        for r in refs {
            let Some(branch) = r.strip_prefix("refs/heads/") else {
                refused.push((
                    r.clone(),
                    "Turnout takes branches only (refs/heads/…)".to_owned(),
                ));
                continue;
            };
            for env in envs.iter().filter(|e| e.branch == branch) {
                if let Err(e) = self.authorize_env(&push.who, env, Action::Deploy).await {
                    refused.push((r.clone(), e.to_string()));
                    break;
                }
            }
        }
        Ok(refused)
    }

    /// After receive-pack: audit each branch the push created, moved or deleted, and act on it.
    /// Returns what the pusher is told, one line each.
    pub async fn end_push(self: &Arc<Self>, push: PushGuard) -> Result<Vec<String>, ControlError> {
        let after = git::pushed_branches(&push.mirror).await?;
        // A clone from Turnout checks out a pushed branch; the push itself is done either way.
        if let Err(e) = git::point_pushed_head(&push.mirror, &after).await {
            tracing::warn!(app = %push.app.name, error = %e, "cannot point the pushed HEAD");
        }
        let mut changed: Vec<(&String, Option<&String>, Option<&String>)> = after
            .iter()
            .filter(|(b, sha)| push.before.get(*b) != Some(sha))
            .map(|(b, sha)| (b, push.before.get(b), Some(sha)))
            .collect();
        changed.extend(
            push.before
                .iter()
                .filter(|(b, _)| !after.contains_key(*b))
                .map(|(b, sha)| (b, Some(sha), None)),
        );
        let mut lines = Vec::new();
        for (branch, old, new) in changed {
            let at = |sha: Option<&String>| sha.map(|s| format!("{branch} at {s}"));
            let entry = AuditEntry::new(&push.who.name, AuditAction::Push)
                .app(&push.app.name)
                .change(at(old), at(new));
            self.store.record(entry, "ok".into()).await?;
            info!(app = %push.app.name, branch = %branch, commit = ?new, actor = %push.who.name, "push");
            match new {
                Some(commit) => {
                    let done = self
                        .branch_pushed(&push.app, branch, commit, &push.who)
                        .await?;
                    lines.extend(done.notes);
                    let short = &commit[..12.min(commit.len())];
                    for d in done.deploys.deploys {
                        let r = EnvRef {
                            app: push.app.name.clone(),
                            env: d.env,
                        };
                        lines.push(format!(
                            "{r} deploys {short}: job {} (`turnout job watch {}`), {}",
                            d.job.id,
                            d.job.id,
                            self.url(&r)
                        ));
                    }
                    for s in done.deploys.skipped {
                        lines.push(format!("{}/{} skipped: {}", push.app.name, s.env, s.why));
                    }
                }
                None => {
                    lines.extend(self.branch_deleted(&push.app, branch, &push.who).await?);
                }
            }
        }
        Ok(lines)
    }

    /// A branch moved to `commit` (a push to Turnout, or one a webhook reports): deploy the
    /// commit to every environment following `branch` that deploys on push; with none following
    /// it and branch environments on, create one first.
    pub(crate) async fn branch_pushed(
        self: &Arc<Self>,
        app: &AppRow,
        branch: &str,
        commit: &str,
        who: &Principal,
    ) -> Result<BranchOutcome, ControlError> {
        let mut done = BranchOutcome::default();
        let lines = &mut done.notes;
        let name = app.name.clone();
        let mut envs: Vec<_> = self
            .store
            .call(move |c| q::list_envs(c, Some(&name)))
            .await?
            .into_iter()
            .filter(|e| e.branch == branch)
            .collect();
        let short = &commit[..12.min(commit.len())];
        if envs.is_empty() {
            if !app.branch_envs {
                lines.push(format!(
                    "branch {branch} ({short}): no environment of {app} follows it, nothing deploys; \
                     create one with `turnout env create {app}/ENV --branch {branch} --deploy-on push`, \
                     or let pushes make them: `turnout app update {app} --branch-envs on`",
                    app = app.name
                ));
                return Ok(done);
            }
            match self.create_branch_env(app, branch, who).await {
                Ok(row) => {
                    let r = EnvRef {
                        app: row.app.clone(),
                        env: row.name.clone(),
                    };
                    lines.push(format!(
                        "created {r} for branch {branch} (tier {BRANCH_ENV_TIER}, deploys on push), \
                         deleted when the branch is: {}",
                        self.url(&r)
                    ));
                    envs.push(row);
                }
                Err(e) => {
                    lines.push(format!(
                        "branch {branch}: no environment was created for it: {e}"
                    ));
                    return Ok(done);
                }
            }
        }
        // The same mechanism as a CI report or a webhook's push: the environments of the branch
        // that deploy on push get the exact commit, the others are listed with why.
        let trigger = Trigger {
            app: app.name.clone(),
            branch: branch.to_owned(),
            commit: commit.to_owned(),
            on: DeployOn::Push,
            succeeded: true,
        };
        done.deploys = self.trigger_deploys(trigger, who).await?;
        Ok(done)
    }

    /// Create `test-<branch>` (tier test, deploys on push) for `branch`, as the pusher.
    async fn create_branch_env(
        &self,
        app: &AppRow,
        branch: &str,
        who: &Principal,
    ) -> Result<crate::store::EnvRow, ControlError> {
        let name = app.name.clone();
        let taken: Vec<EnvName> = self
            .store
            .call(move |c| q::list_envs(c, Some(&name)))
            .await?
            .into_iter()
            .map(|e| e.name)
            .collect();
        let env = branch_env_name(branch, |n| taken.contains(n)).ok_or_else(|| {
            ControlError::Conflict(format!(
                "the names Turnout gives branch {branch}'s environment are taken; create one with \
                 `turnout env create {}/ENV --branch {branch} --deploy-on push`",
                app.name
            ))
        })?;
        let req = CreateEnv {
            name: env,
            branch: branch.to_owned(),
            tier: Some(BRANCH_ENV_TIER),
            deploy_on: DeployOn::Push,
        };
        self.insert_env(app.name.clone(), req, who, true).await
    }

    /// Delete the environments pushes made for `branch` (through the normal delete, which
    /// refuses while a domain is bound); the others following it are left alone.
    pub(crate) async fn branch_deleted(
        &self,
        app: &AppRow,
        branch: &str,
        who: &Principal,
    ) -> Result<Vec<String>, ControlError> {
        let mut lines = Vec::new();
        let (id, b) = (app.id, branch.to_owned());
        let made = self
            .store
            .call(move |c| q::made_for_branch(c, id, &b))
            .await?;
        for env in made {
            let r = EnvRef {
                app: app.name.clone(),
                env,
            };
            match self.delete_env(r.clone(), who).await {
                Ok(()) => lines.push(format!(
                    "deleted {r}: it was made for branch {branch}, which the push deleted"
                )),
                Err(e) => lines.push(format!("{r} was not deleted: {e}")),
            }
        }
        let name = app.name.clone();
        for env in self
            .store
            .call(move |c| q::list_envs(c, Some(&name)))
            .await?
            .into_iter()
            .filter(|e| e.branch == branch)
        {
            lines.push(format!(
                "{}/{} follows branch {branch}: its next deploy takes the branch from the app's repository again",
                env.app, env.name
            ));
        }
        Ok(lines)
    }
}

/// What a branch's push did: the deploys it started and the environments it left alone (with
/// why), and what else happened to the branch's environments (one created for it, or why not).
#[derive(Default)]
pub(crate) struct BranchOutcome {
    pub deploys: CiOutcome,
    pub notes: Vec<String>,
}

/// The name of the environment a push creates for `branch`: `test-` and the branch as a DNS
/// label (lowercase, every run of other characters one '-', trimmed, at most 40 in all). When
/// that is `taken`, the same with a short hash of the branch, so two branches that look alike
/// (`feature/x`, `feature-x`) get distinct names, the same ones every time. None when both are
/// taken.
pub fn branch_env_name(branch: &str, taken: impl Fn(&EnvName) -> bool) -> Option<EnvName> {
    let mut slug = String::new();
    for c in branch.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let fit = |room: usize| {
        slug[..room.min(slug.len())]
            .trim_end_matches('-')
            .to_owned()
    };
    let hash = &blake3::hash(branch.as_bytes()).to_hex()[..6];
    let room = MAX_NAME_LEN - BRANCH_ENV_PREFIX.len();
    let plain = fit(room);
    let hashed = match fit(room - hash.len() - 1) {
        s if s.is_empty() => format!("{BRANCH_ENV_PREFIX}{hash}"),
        s => format!("{BRANCH_ENV_PREFIX}{s}-{hash}"),
    };
    let plain = (!plain.is_empty()).then(|| format!("{BRANCH_ENV_PREFIX}{plain}"));
    plain
        .into_iter()
        .chain([hashed])
        .filter_map(|n| EnvName::new(&n).ok())
        .find(|n| !taken(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(branch: &str, taken: &[&str]) -> Option<String> {
        branch_env_name(branch, |n| taken.contains(&n.as_str())).map(|n| n.to_string())
    }

    #[test]
    fn branch_names_become_dns_labels() {
        assert_eq!(name("feature-x", &[]).unwrap(), "test-feature-x");
        assert_eq!(
            name("Feature/Login_Page", &[]).unwrap(),
            "test-feature-login-page"
        );
        assert_eq!(name("--x..y--", &[]).unwrap(), "test-x-y");
        let long = name(&"a".repeat(100), &[]).unwrap();
        assert_eq!(long.len(), MAX_NAME_LEN);
        let cut = name(&format!("{}-b", "a".repeat(34)), &[]).unwrap();
        assert!(!cut.ends_with('-'), "{cut}");
        // Nothing of the branch survives: the hash names it.
        let odd = name("ü/é/ø", &[]).unwrap();
        assert!(odd.starts_with("test-") && odd.len() == 11, "{odd}");
        for n in [long, cut, odd] {
            EnvName::new(&n).unwrap();
        }
    }

    #[test]
    fn slug_collisions_resolve_the_same_way_every_time() {
        let first = name("feature/x", &[]).unwrap();
        assert_eq!(first, "test-feature-x");
        // `feature-x` looks the same; with `test-feature-x` taken it gets its hash.
        let second = name("feature-x", &["test-feature-x"]).unwrap();
        assert_ne!(second, first);
        assert!(second.starts_with("test-feature-x-"), "{second}");
        assert_eq!(name("feature-x", &["test-feature-x"]).unwrap(), second);
        // A third look-alike gets its own hash, not the second's.
        let third = name("Feature-X", &["test-feature-x", &second]).unwrap();
        assert_ne!(third, second);
        assert_eq!(
            name("feature-x", &["test-feature-x", &second]),
            None,
            "both names taken"
        );
        // Long branches that differ only past the cut still differ.
        let a = name(&format!("{}-one", "x".repeat(40)), &[]).unwrap();
        let b = name(&format!("{}-two", "x".repeat(40)), &[a.as_str()]).unwrap();
        assert_ne!(a, b);
        assert!(b.len() <= MAX_NAME_LEN);
    }
}
