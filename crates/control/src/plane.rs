//! The control plane's core: apps, environments, deploys, and the one function that turns the
//! set of running instances into the proxy's route table.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use turnout_model::{
    Action, AppInfo, AppName, CreateApp, CreateEnv, DeployEvent, DeployRequest, DomainEvent,
    DomainInfo, DomainName, EnvInfo, EnvName, EnvRef, EnvStatus, InstanceInfo, ReleaseInfo,
    ReleaseStatus, SwitchInfo, Tier, format_timestamp,
};
use turnout_proxy::{
    DrainDeadlines, DrainOutcome, Login, Maintenance, Proxy, RouteTable, Target, Upstream,
};
use turnout_supervisor::{
    HealthCheck, Instance, InstanceSpec, RestartPolicy, TaskSpec, free_port, run_task,
};

use crate::access::{self, Principal};
use crate::app_file::{self, ReleaseConfig};
use crate::error::ControlError;
use crate::git::{self, Source};
use crate::home::Home;
use crate::metrics::Metrics;
use crate::store::access as aq;
use crate::store::{AppRow, AuditEntry, DomainRow, EnvRow, ReleaseRow, Store, q};

type EnvKey = (AppName, EnvName);

/// An environment's serving instance, as the route table sees it.
#[derive(Clone)]
struct Running {
    release_id: i64,
    instance: Arc<Instance>,
    upstream: Arc<Upstream>,
    drain: DrainDeadlines,
    /// Requests for this path still reach the instance while a domain is in maintenance.
    health_path: String,
    /// Decides whether its internal URL needs a login.
    tier: Tier,
}

/// An app whose internal URLs need a login: on which tiers, and who may log in.
struct AppLogin {
    /// `None` in the list: every tier.
    tiers: Vec<Option<Tier>>,
    login: Arc<Login>,
}

impl AppLogin {
    fn protects(&self, tier: Tier) -> bool {
        self.tiers.iter().any(|t| t.is_none_or(|t| t == tier))
    }
}

/// A domain's binding as the route table needs it (the store has the rest).
#[derive(Clone)]
struct Binding {
    app: AppName,
    env: EnvName,
    maintenance: Option<String>,
}

/// How a domain moves: a switch, or a rollback undoing history entry `undo`.
#[derive(Clone, Copy)]
enum Move {
    Switch,
    Rollback { undo: i64 },
}

/// `Retry-After` for a maintenance page, and for a domain whose environment is not running.
const MAINTENANCE_RETRY: Duration = Duration::from_secs(300);
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(5);
const DEFAULT_MAINTENANCE_MESSAGE: &str =
    "This site is down for maintenance and will be back shortly.";

pub struct ControlPlane {
    home: Home,
    store: Store,
    proxy: Arc<Proxy>,
    http_port: u16,
    /// Which instance serves each environment. The route table is derived from this map alone,
    /// under its lock, so concurrent deploys cannot apply tables out of order. Never held across
    /// an await.
    running: Mutex<HashMap<EnvKey, Running>>,
    /// Every domain's binding. Read with `running` (in that lock order) to build the table.
    domains: Mutex<BTreeMap<DomainName, Binding>>,
    /// One domain change (add, switch, rollback, maintenance, remove) at a time, so history
    /// entries and route tables follow each other in order.
    domain_ops: tokio::sync::Mutex<()>,
    metrics: Metrics,
    /// Protected apps, refreshed from the store whenever tokens, roles or protection change.
    logins: Mutex<HashMap<AppName, AppLogin>>,
    /// Why an environment with a live release is not serving (its instance failed to come back
    /// after a daemon restart).
    down: Mutex<HashMap<EnvKey, String>>,
    /// One deploy (or delete) per environment at a time.
    env_locks: Mutex<HashMap<EnvKey, Arc<tokio::sync::Mutex<()>>>>,
    /// One git operation per app mirror at a time.
    app_locks: Mutex<HashMap<AppName, Arc<tokio::sync::Mutex<()>>>>,
    /// Cancelled when the daemon shuts down: deploys and restores stop at their next wait and
    /// stop any instance they started, so nothing is left running unrecorded.
    closing: CancellationToken,
    /// Deploys and restores in progress; shutdown waits for them before stopping instances.
    tasks: TaskTracker,
}

const DEPLOY_STEPS: u32 = 6;

impl ControlPlane {
    pub fn new(home: Home, store: Store, proxy: Arc<Proxy>, http_port: u16) -> Arc<ControlPlane> {
        Arc::new(ControlPlane {
            home,
            store,
            proxy,
            http_port,
            running: Mutex::default(),
            domains: Mutex::default(),
            domain_ops: tokio::sync::Mutex::new(()),
            metrics: Metrics::default(),
            logins: Mutex::default(),
            down: Mutex::default(),
            env_locks: Mutex::default(),
            app_locks: Mutex::default(),
            closing: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Reload which apps' internal URLs need a login and whose tokens may log in, then apply
    /// the routes (tokens, roles and protection all change who gets through).
    pub(crate) async fn refresh_logins(&self) -> Result<(), ControlError> {
        let rows = self
            .store
            .call(|c| {
                let mut out = Vec::new();
                for app in q::list_apps(c)? {
                    let tiers = aq::protections(c, app.id)?;
                    if !tiers.is_empty() {
                        out.push((app.name, tiers, aq::app_credentials(c, app.id)?));
                    }
                }
                Ok(out)
            })
            .await?;
        let logins = rows
            .into_iter()
            .map(|(app, tiers, credentials)| {
                let login = Login {
                    realm: app.to_string(),
                    credentials: credentials
                        .into_iter()
                        .map(|(hash, expires)| {
                            let expires = expires.map(|s| {
                                std::time::UNIX_EPOCH
                                    + Duration::from_secs(u64::try_from(s).unwrap_or(0))
                            });
                            (hash, expires)
                        })
                        .collect(),
                };
                (
                    app,
                    AppLogin {
                        tiers,
                        login: Arc::new(login),
                    },
                )
            })
            .collect();
        *lock(&self.logins) = logins;
        self.apply_routes();
        Ok(())
    }

    /// The one way routes change: start-up, deploy, delete, domain switch, rollback and
    /// maintenance all rebuild the whole table from the running instances and the domain
    /// bindings, and hand it to the proxy, which swaps it in atomically.
    fn apply_routes(&self) {
        let running = lock(&self.running);
        let domains = lock(&self.domains);
        let logins = lock(&self.logins);
        let mut table = RouteTable::default();
        for ((app, env), r) in running.iter() {
            let host = EnvRef {
                app: app.clone(),
                env: env.clone(),
            }
            .internal_host();
            let stats = self.metrics.route_stats(&host, app, env);
            let target = Target::Upstream(r.upstream.clone());
            match logins.get(app).filter(|l| l.protects(r.tier)) {
                Some(l) => table.insert_protected(&host, target, stats, l.login.clone()),
                None => table.insert_with_stats(&host, target, stats),
            }
        }
        for (name, b) in domains.iter() {
            let run = running.get(&(b.app.clone(), b.env.clone()));
            let target = match (&b.maintenance, run) {
                (Some(message), run) => Target::Maintenance(Arc::new(Maintenance {
                    message: message.clone(),
                    retry_after: MAINTENANCE_RETRY,
                    health: run.map(|r| (r.health_path.clone(), r.upstream.clone())),
                })),
                (None, Some(r)) => Target::Upstream(r.upstream.clone()),
                // Bound to an environment that is not running (yet): say so, with a 503 a
                // browser retries, rather than a 404 that looks like a wrong address.
                (None, None) => Target::Maintenance(Arc::new(Maintenance {
                    message: format!("{name} is starting or temporarily unavailable."),
                    retry_after: UNAVAILABLE_RETRY,
                    health: None,
                })),
            };
            let stats = self.metrics.route_stats(name.as_str(), &b.app, &b.env);
            table.insert_with_stats(name.as_str(), target, stats);
        }
        self.proxy.apply(table);
    }

    fn url(&self, r: &EnvRef) -> String {
        format!("http://{}:{}", r.internal_host(), self.http_port)
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Refuse unless `who` may do `action` on `target` of app `app_id`: the role the app's policy
    /// (or the default matrix) asks for on `tier`, or owner for app-wide actions. A refused
    /// change is recorded in the audit log.
    pub(crate) async fn authorize(
        &self,
        who: &Principal,
        app_id: i64,
        app: &AppName,
        target: &str,
        action: Action,
        tier: Option<Tier>,
    ) -> Result<(), ControlError> {
        let needed = match tier {
            Some(tier) => {
                self.store
                    .call(move |c| aq::needed_role(c, app_id, action, tier))
                    .await?
            }
            None => turnout_model::Role::Owner,
        };
        let what = access::describe(action, target, tier);
        if let Err(e) = access::check(who, app_id, app, &what, needed) {
            if action != Action::Read {
                let mut entry = AuditEntry::new(&who.name, action.as_str()).app(app);
                // `target` is `app/env` for environment actions.
                entry.env = target.split_once('/').map(|(_, env)| env.to_owned());
                entry.to = Some(target.to_owned());
                self.store.record(entry, format!("denied: {e}")).await?;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Refuse unless `who` may do an app-wide `action` (owners, for access management) or, for
    /// `Read`, has a role on the app; returns the app.
    pub(crate) async fn authorize_app(
        &self,
        who: &Principal,
        app: &AppName,
        action: Action,
    ) -> Result<AppRow, ControlError> {
        let row = self.app_row(app).await?;
        let tier = (action == Action::Read).then_some(Tier::Development);
        self.authorize(who, row.id, app, app.as_str(), action, tier)
            .await?;
        Ok(row)
    }

    pub(crate) async fn authorize_env(
        &self,
        who: &Principal,
        env: &EnvRow,
        action: Action,
    ) -> Result<(), ControlError> {
        let target = format!("{}/{}", env.app, env.name);
        self.authorize(who, env.app_id, &env.app, &target, action, Some(env.tier))
            .await
    }

    // ---- apps ----------------------------------------------------------------------------

    pub async fn create_app(
        &self,
        req: CreateApp,
        who: &Principal,
    ) -> Result<AppInfo, ControlError> {
        access::admin_only(who, "creating apps")?;
        git::check_repo(&req.repo)?;
        if let Some(var) = &req.token_env {
            // Upper-case names only, and never echoed when rejected: a user who pastes the token
            // itself here must not see it again in an error or a log.
            let valid = !var.is_empty()
                && !var.starts_with(|c: char| c.is_ascii_digit())
                && var
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                return Err(ControlError::Invalid(
                    "invalid --token-env: give the name of an environment variable of the daemon (upper-case letters, digits and '_', e.g. GIT_TOKEN), not the token itself".into(),
                ));
            }
        }
        let src = source(&req.repo, req.token_env.as_deref())?;
        git::remote_branches(&src).await?;
        let entry = AuditEntry::new(&who.name, "app.create")
            .app(&req.name)
            .change(None, Some(src.display()));
        let row = self
            .store
            .mutate(entry, move |c, _| {
                q::insert_app(c, &req.name, &req.repo, req.token_env.as_deref())
            })
            .await?;
        info!(app = %row.name, "app created");
        Ok(app_info(&row))
    }

    /// The apps `who` has a role on.
    pub async fn list_apps(&self, who: &Principal) -> Result<Vec<AppInfo>, ControlError> {
        let rows = self.store.call(|c| q::list_apps(c)).await?;
        Ok(rows
            .iter()
            .filter(|a| who.role_on(a.id).is_some())
            .map(app_info)
            .collect())
    }

    pub(crate) async fn app_row(&self, name: &AppName) -> Result<AppRow, ControlError> {
        let n = name.clone();
        self.store.call(move |c| q::get_app(c, &n)).await
    }

    /// Delete an app. With environments left it refuses unless `force`, which deletes them first.
    pub async fn delete_app(
        &self,
        name: AppName,
        force: bool,
        who: &Principal,
    ) -> Result<(), ControlError> {
        self.authorize_app(who, &name, Action::Access).await?;
        let app = name.clone();
        let envs = self
            .store
            .call(move |c| q::list_envs(c, Some(&app)))
            .await?;
        if !envs.is_empty() && !force {
            let names: Vec<_> = envs.iter().map(|e| e.name.as_str()).collect();
            return Err(ControlError::Conflict(format!(
                "app '{name}' still has environments ({}); delete them first or pass --force to delete them too",
                names.join(", ")
            )));
        }
        let app = name.clone();
        let domains: Vec<DomainName> = self
            .store
            .call(move |c| q::list_domains(c))
            .await?
            .into_iter()
            .filter(|d| d.app == app)
            .map(|d| d.name)
            .collect();
        for domain in domains {
            self.remove_domain(domain, who).await?;
        }
        for env in envs {
            self.delete_env(
                EnvRef {
                    app: env.app,
                    env: env.name,
                },
                who,
            )
            .await?;
        }
        let app = name.clone();
        let entry = AuditEntry::new(&who.name, "app.delete").app(&name);
        self.store
            .mutate(entry, move |c, _| q::delete_app(c, &app))
            .await?;
        remove_dir(&self.home.app_dir(&name)).await;
        info!(app = %name, "app deleted");
        Ok(())
    }

    // ---- environments --------------------------------------------------------------------

    pub async fn create_env(
        &self,
        app: AppName,
        req: CreateEnv,
        who: &Principal,
    ) -> Result<EnvInfo, ControlError> {
        let app_row = self.app_row(&app).await?;
        let tier = req.tier.unwrap_or(Tier::Development);
        let target = format!("{app}/{}", req.name);
        self.authorize(who, app_row.id, &app, &target, Action::Config, Some(tier))
            .await?;
        git::check_branch(&req.branch).await?;
        let src = source(&app_row.repo, app_row.token_env.as_deref())?;
        let branches = git::remote_branches(&src).await?;
        if !branches.contains(&req.branch) {
            return Err(ControlError::Invalid(format!(
                "branch '{}' does not exist in {}; existing branches: {}",
                req.branch,
                src.display(),
                if branches.is_empty() {
                    "none".to_owned()
                } else {
                    branches.join(", ")
                }
            )));
        }
        let (a, name, branch) = (app.clone(), req.name.clone(), req.branch.clone());
        let entry = AuditEntry::new(&who.name, "env.create")
            .app(&app)
            .env(&req.name)
            .change(None, Some(format!("branch {}, tier {tier}", req.branch)));
        let row = self
            .store
            .mutate(entry, move |c, _| {
                q::insert_env(c, &a, &name, &branch, tier)
            })
            .await?;
        for dir in [
            self.home.releases_dir(&app, &row.name),
            self.home.logs_dir(&app, &row.name),
            self.home.storage_dir(&app, &row.name),
        ] {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| ControlError::internal(format!("create {}: {e}", dir.display())))?;
        }
        info!(app = %app, env = %row.name, tier = %tier, "environment created");
        self.env_info(row).await
    }

    /// The environments `who` may see, of one app or of all.
    pub async fn list_envs(
        &self,
        app: Option<AppName>,
        who: &Principal,
    ) -> Result<Vec<EnvInfo>, ControlError> {
        if let Some(app) = &app {
            self.authorize_app(who, app, Action::Read).await?;
        }
        let rows = self
            .store
            .call(move |c| q::list_envs(c, app.as_ref()))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows.into_iter().filter(|e| who.role_on(e.app_id).is_some()) {
            out.push(self.env_info(row).await?);
        }
        Ok(out)
    }

    pub async fn show_env(&self, r: EnvRef, who: &Principal) -> Result<EnvInfo, ControlError> {
        let row = self.env_row(&r).await?;
        self.authorize_env(who, &row, Action::Read).await?;
        self.env_info(row).await
    }

    /// Refuse unless `who` may read the environment (for logs).
    pub async fn authorize_read(&self, r: &EnvRef, who: &Principal) -> Result<(), ControlError> {
        let row = self.env_row(r).await?;
        self.authorize_env(who, &row, Action::Read).await
    }

    pub async fn delete_env(&self, r: EnvRef, who: &Principal) -> Result<(), ControlError> {
        let env_lock = self.env_lock(&r);
        let _deleting = env_lock.lock().await;
        let row = self.env_row(&r).await?;
        self.authorize_env(who, &row, Action::Config).await?;
        let env_id = row.id;
        let bound = self
            .store
            .call(move |c| q::domains_of_env(c, env_id))
            .await?;
        if !bound.is_empty() {
            return Err(ControlError::Conflict(format!(
                "{r} serves {}; switch {} to another environment or remove {} first",
                bound.join(", "),
                if bound.len() == 1 { "it" } else { "them" },
                if bound.len() == 1 { "it" } else { "them" },
            )));
        }
        let key = (r.app.clone(), r.env.clone());
        let old = lock(&self.running).remove(&key);
        self.apply_routes();
        lock(&self.down).remove(&key);
        if let Some(old) = old {
            self.retire(&r, old).await;
        }
        self.metrics.forget_host(&r.internal_host());
        let entry = AuditEntry::new(&who.name, "env.delete")
            .app(&r.app)
            .env(&r.env);
        self.store
            .mutate(entry, move |c, _| q::delete_env(c, row.id))
            .await?;
        remove_dir(&self.home.env_dir(&r.app, &r.env)).await;
        git::prune_worktrees(&self.home.mirror(&r.app)).await;
        info!(app = %r.app, env = %r.env, "environment deleted");
        Ok(())
    }

    pub async fn releases(
        &self,
        r: EnvRef,
        who: &Principal,
    ) -> Result<Vec<ReleaseInfo>, ControlError> {
        let row = self.env_row(&r).await?;
        self.authorize_env(who, &row, Action::Read).await?;
        let rows = self
            .store
            .call(move |c| q::list_releases(c, row.id))
            .await?;
        Ok(rows.iter().map(release_info).collect())
    }

    /// The log file `turnout logs` shows: the serving release's output, else the newest
    /// release's (its run log if it started, its build log otherwise).
    pub async fn log_file(&self, r: &EnvRef) -> Result<Option<std::path::PathBuf>, ControlError> {
        let row = self.env_row(r).await?;
        let release = match row.current_release_id {
            Some(id) => Some(id),
            None => {
                let id = row.id;
                self.store
                    .call(move |c| q::list_releases(c, id))
                    .await?
                    .first()
                    .map(|r| r.id)
            }
        };
        Ok(release.and_then(|id| {
            [
                self.home.run_log(&r.app, &r.env, id),
                self.home.build_log(&r.app, &r.env, id),
            ]
            .into_iter()
            .find(|p| p.exists())
        }))
    }

    pub(crate) async fn env_row(&self, r: &EnvRef) -> Result<EnvRow, ControlError> {
        let (a, e) = (r.app.clone(), r.env.clone());
        self.store.call(move |c| q::get_env(c, &a, &e)).await
    }

    async fn env_info(&self, row: EnvRow) -> Result<EnvInfo, ControlError> {
        let release = match row.current_release_id {
            Some(id) => Some(self.store.call(move |c| q::get_release(c, id)).await?),
            None => None,
        };
        let r = EnvRef {
            app: row.app.clone(),
            env: row.name.clone(),
        };
        let key = (row.app.clone(), row.name.clone());
        let running = lock(&self.running).get(&key).cloned();
        let (status, status_reason) = match (&running, &release) {
            (Some(_), _) => (EnvStatus::Live, None),
            (None, None) => (EnvStatus::NotDeployed, None),
            (None, Some(_)) => match lock(&self.down).get(&key) {
                Some(why) => (EnvStatus::Down, Some(why.clone())),
                None => (EnvStatus::Starting, None),
            },
        };
        let instance = running.map(|run| {
            let s = run.instance.status();
            InstanceInfo {
                state: s.state.as_str().to_owned(),
                pid: s.pid,
                port: run.instance.port(),
                restarts: s.restarts,
                last_exit: s.last_exit,
                started_at: format_timestamp(
                    s.started_at
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64),
                ),
            }
        });
        Ok(EnvInfo {
            url: self.url(&r),
            dir: self.home.env_dir(&r.app, &r.env).display().to_string(),
            app: row.app,
            name: row.name,
            branch: row.branch,
            tier: row.tier,
            status,
            status_reason,
            release: release.as_ref().map(release_info),
            instance,
            created_at: format_timestamp(row.created_at),
        })
    }

    fn env_lock(&self, r: &EnvRef) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.env_locks)
            .entry((r.app.clone(), r.env.clone()))
            .or_default()
            .clone()
    }

    fn app_lock(&self, app: &AppName) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.app_locks)
            .entry(app.clone())
            .or_default()
            .clone()
    }

    // ---- deploy --------------------------------------------------------------------------

    /// Run a deploy in its own task, so a client that hangs up does not leave it half-done.
    /// `actor` was authorized by `check_deploy` (or approved by a second owner).
    pub fn spawn_deploy(
        self: &Arc<Self>,
        r: EnvRef,
        req: DeployRequest,
        events: UnboundedSender<DeployEvent>,
        actor: String,
    ) {
        let this = self.clone();
        self.tasks.spawn(async move {
            let _ = this.deploy(r, req, events, &actor).await;
        });
    }

    /// Refuse a deploy `who` may not make; when the app wants a second owner's approval for
    /// deploys on this tier, record the request and answer `NeedsApproval`.
    pub async fn check_deploy(
        &self,
        r: &EnvRef,
        req: &DeployRequest,
        who: &Principal,
    ) -> Result<(), ControlError> {
        if let Some(git_ref) = &req.git_ref {
            git::check_ref_shape("ref", git_ref)?;
        }
        let env = self.env_row(r).await?;
        self.authorize_env(who, &env, Action::Deploy).await?;
        let summary = match &req.git_ref {
            Some(x) => format!("deploy {x} to {r}"),
            None => format!("deploy branch {} to {r}", env.branch),
        };
        let op = crate::approvals::Operation::Deploy {
            app: r.app.clone(),
            env: r.env.clone(),
            git_ref: req.git_ref.clone(),
        };
        self.require_approval(
            who,
            env.app_id,
            &r.app,
            Action::Deploy,
            env.tier,
            op,
            summary,
        )
        .await
    }

    /// Wait for `fut` unless the daemon starts shutting down first.
    async fn unless_closing<T>(
        &self,
        step: &'static str,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, ControlError> {
        tokio::select! {
            v = fut => Ok(v),
            () = self.closing.cancelled() => Err(ControlError::Step {
                step,
                message: "the daemon is shutting down".into(),
                log_tail: vec![],
            }),
        }
    }

    /// Fetch, check out, build, start, health-check, route, then drain and stop the previous
    /// release. Any failure before routing leaves the environment serving exactly what it served
    /// before. Progress goes to `events`; a closed receiver does not stop the deploy.
    pub async fn deploy(
        &self,
        r: EnvRef,
        req: DeployRequest,
        events: UnboundedSender<DeployEvent>,
        actor: &str,
    ) -> Result<ReleaseInfo, ControlError> {
        let recorded = std::sync::atomic::AtomicBool::new(false);
        let result = self.deploy_inner(&r, req, &events, actor, &recorded).await;
        if let Err(e) = &result {
            if !recorded.load(std::sync::atomic::Ordering::Relaxed) {
                // Failed before a release existed (fetch, app file): still on the record.
                let entry = AuditEntry::new(actor, "deploy").app(&r.app).env(&r.env);
                let _ = self.store.record(entry, format!("failed: {e}")).await;
            }
            let (step, log_tail) = match e {
                ControlError::Step { step, log_tail, .. } => (*step, log_tail.clone()),
                _ => ("deploy", vec![]),
            };
            warn!(app = %r.app, env = %r.env, step, error = %e, "deploy failed");
            let _ = events.send(DeployEvent::Failed {
                step: step.to_owned(),
                error: e.to_string(),
                log_tail,
            });
        }
        result
    }

    async fn deploy_inner(
        &self,
        r: &EnvRef,
        req: DeployRequest,
        events: &UnboundedSender<DeployEvent>,
        actor: &str,
        recorded: &std::sync::atomic::AtomicBool,
    ) -> Result<ReleaseInfo, ControlError> {
        let step = |index: u32, name: &str, detail: String| {
            let _ = events.send(DeployEvent::Step {
                index,
                total: DEPLOY_STEPS,
                step: name.to_owned(),
                detail,
            });
        };
        if let Some(git_ref) = &req.git_ref {
            git::check_ref_shape("ref", git_ref)?;
        }
        let env_lock = self.env_lock(r);
        let _deploying = match env_lock.try_lock() {
            Ok(g) => g,
            Err(_) => {
                step(
                    0,
                    "wait",
                    format!("another deploy of {r} is running; waiting for it"),
                );
                env_lock.lock().await
            }
        };
        let env = self.env_row(r).await?;
        let app_name = r.app.clone();
        let app = self.store.call(move |c| q::get_app(c, &app_name)).await?;
        let src = source(&app.repo, app.token_env.as_deref())?;
        let (wanted, is_branch) = match &req.git_ref {
            Some(x) => (x.clone(), false),
            None => (env.branch.clone(), true),
        };

        // 1. fetch
        step(1, "fetch", format!("{wanted} from {}", src.display()));
        let mirror = self.home.mirror(&r.app);
        let commit = {
            let app_lock = self.app_lock(&r.app);
            let _g = app_lock.lock().await;
            git::fetch(&src, &mirror).await?;
            git::resolve(&src, &mirror, &wanted, is_branch).await?
        };

        // 2. check out (after resolving the app's file for this environment)
        let toml = git::read_file(&mirror, &commit, app_file::FILE_NAME).await?;
        let procfile = git::read_file(&mirror, &commit, app_file::PROCFILE).await?;
        let config = app_file::resolve(toml.as_deref(), procfile.as_deref(), env.tier, &r.env)
            .map_err(|e| ControlError::Step {
                step: "checkout",
                message: format!("{e} (at commit {})", &commit[..12]),
                log_tail: vec![],
            })?;
        let release_dir = self.home.releases_dir(&r.app, &r.env).join(format!(
            "{}-{}",
            &commit[..12],
            config.build_fingerprint()
        ));
        let built_marker = release_dir.with_extension("built");
        let dir_str = release_dir.display().to_string();
        let config_json = serde_json::to_string(&config)
            .map_err(|e| ControlError::internal(format!("serialise config: {e}")))?;
        let reused = built_marker.exists() && release_dir.is_dir();
        let (env_id, c2, w2, d2) = (env.id, commit.clone(), wanted.clone(), dir_str.clone());
        let audit = AuditEntry::new(actor, "deploy").app(&r.app).env(&r.env);
        let begin = AuditEntry {
            action: "deploy.begin".into(),
            ..audit.clone()
        }
        .change(Some(wanted.clone()), Some(commit.clone()));
        let release_id = self
            .store
            .mutate(begin, move |c, _| {
                q::insert_release(c, env_id, &c2, &w2, &d2, &config_json, reused)
            })
            .await?;
        recorded.store(true, std::sync::atomic::Ordering::Relaxed);
        let fail = |e: ControlError| {
            let entry = audit.clone().change(None, Some(commit.clone()));
            async move {
                let msg = e.to_string();
                let _ = self
                    .store
                    .mutate_failed(entry, msg.clone(), move |c| {
                        q::fail_release(c, release_id, &msg)
                    })
                    .await;
                e
            }
        };

        if reused {
            step(
                2,
                "checkout",
                format!("{} (reusing the release directory)", &commit[..12]),
            );
        } else {
            step(
                2,
                "checkout",
                format!("{} into {}", &commit[..12], release_dir.display()),
            );
            if release_dir.exists() {
                // Left by an interrupted deploy: start it again from a clean tree.
                remove_dir(&release_dir).await;
                git::prune_worktrees(&mirror).await;
            }
            let checkout = {
                let app_lock = self.app_lock(&r.app);
                let _g = app_lock.lock().await;
                git::checkout(&src, &mirror, &commit, &release_dir).await
            };
            if let Err(e) = checkout {
                return Err(fail(e).await);
            }
        }

        // 3. build
        let base_env = self.instance_env(r, env.tier, &commit, &config);
        if reused {
            step(
                3,
                "build",
                "skipped: this commit was already built with the same build settings".into(),
            );
        } else if let Some(build) = &config.build {
            step(3, "build", build.clone());
            let started = Instant::now();
            let spec = TaskSpec {
                command: build.clone(),
                cwd: release_dir.clone(),
                env: base_env.clone(),
                log_path: self.home.build_log(&r.app, &r.env, release_id),
                timeout: config.build_timeout,
            };
            let result = self
                .unless_closing(
                    "build",
                    run_task(spec, |line: &str| {
                        let _ = events.send(DeployEvent::Output {
                            line: line.to_owned(),
                        });
                    }),
                )
                .await
                .and_then(|r| {
                    r.map_err(|e| ControlError::Step {
                        step: "build",
                        message: e.to_string(),
                        log_tail: vec![],
                    })
                });
            if let Err(ControlError::Step { message, .. }) = result {
                let log_tail = tail_lines(&self.home.build_log(&r.app, &r.env, release_id), 20);
                return Err(fail(ControlError::Step {
                    step: "build",
                    message,
                    log_tail,
                })
                .await);
            }
            step(
                3,
                "build",
                format!("done in {:.1}s", started.elapsed().as_secs_f64()),
            );
        } else {
            step(3, "build", "no build command".into());
        }
        if !reused && let Err(e) = tokio::fs::write(&built_marker, &commit).await {
            return Err(fail(ControlError::internal(format!(
                "write {}: {e}",
                built_marker.display()
            )))
            .await);
        }

        // 4. start, 5. health check
        step(4, "start", config.run.clone());
        // Secrets go to the instance only: never to the build, whose output may be logged.
        let mut run_env = base_env;
        match self.secret_env(env.id).await {
            Ok(secrets) => run_env.extend(secrets),
            Err(e) => return Err(fail(e).await),
        }
        let instance = match self
            .start_instance(r, release_id, &release_dir, &config, run_env)
            .await
        {
            Ok(i) => i,
            Err(e) => return Err(fail(e).await),
        };
        step(
            5,
            "health",
            format!(
                "GET {} on port {} (up to {}s)",
                config.health_path,
                instance.port(),
                config.health_timeout.as_secs()
            ),
        );
        let healthy = self
            .unless_closing("health", instance.wait_healthy())
            .await
            .and_then(|r| {
                r.map_err(|e| ControlError::Step {
                    step: "health",
                    message: e.to_string(),
                    log_tail: vec![],
                })
            });
        if let Err(ControlError::Step { message, .. }) = healthy {
            instance.stop().await;
            let log_tail = tail_lines(&self.home.run_log(&r.app, &r.env, release_id), 20);
            return Err(fail(ControlError::Step {
                step: "health",
                message,
                log_tail,
            })
            .await);
        }

        // 6. route, then drain and stop the previous release
        if self.closing.is_cancelled() {
            instance.stop().await;
            return Err(fail(ControlError::Step {
                step: "route",
                message: "the daemon is shutting down".into(),
                log_tail: vec![],
            })
            .await);
        }
        let live = audit.clone().change(None, Some(commit.clone()));
        let previous = env.current_release_id;
        if let Err(e) = self
            .store
            .mutate(live, move |c, entry| {
                if let Some(id) = previous {
                    entry.from = Some(q::get_release(c, id)?.commit);
                }
                q::go_live(c, env_id, release_id)
            })
            .await
        {
            instance.stop().await;
            return Err(fail(e).await);
        }
        let label = format!("{r}@{}", &commit[..12]);
        let running = Running {
            release_id,
            upstream: Upstream::new(instance.addr(), label),
            instance,
            drain: DrainDeadlines {
                requests: config.drain_timeout,
                streams: config.stream_drain_timeout,
            },
            health_path: config.health_path.clone(),
            tier: env.tier,
        };
        let key = (r.app.clone(), r.env.clone());
        let previous = lock(&self.running).insert(key.clone(), running);
        self.apply_routes();
        lock(&self.down).remove(&key);
        let url = self.url(r);
        match previous {
            Some(old) => {
                step(
                    6,
                    "route",
                    format!(
                        "{url} -> release {release_id}; draining release {}",
                        old.release_id
                    ),
                );
                let started = Instant::now();
                let outcome = self.retire(r, old).await;
                step(
                    6,
                    "route",
                    format!(
                        "previous release drained and stopped in {:.2}s ({} requests cut, {} streams closed)",
                        started.elapsed().as_secs_f64(),
                        outcome.cut,
                        outcome.closed_streams
                    ),
                );
            }
            None => step(6, "route", format!("{url} -> release {release_id}")),
        }
        let row = self
            .store
            .call(move |c| q::get_release(c, release_id))
            .await?;
        let info = release_info(&row);
        info!(app = %r.app, env = %r.env, release = release_id, commit = %commit, "deploy live");
        let _ = events.send(DeployEvent::Live {
            release: info.clone(),
            url,
        });
        Ok(info)
    }

    fn instance_env(
        &self,
        r: &EnvRef,
        tier: Tier,
        commit: &str,
        config: &ReleaseConfig,
    ) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.extend([
            ("TURNOUT_APP".to_owned(), r.app.to_string()),
            ("TURNOUT_ENV".to_owned(), r.env.to_string()),
            ("TURNOUT_TIER".to_owned(), tier.to_string()),
            ("TURNOUT_RELEASE".to_owned(), commit.to_owned()),
            ("TURNOUT_URL".to_owned(), self.url(r)),
            (
                "TURNOUT_STORAGE_DIR".to_owned(),
                self.home.storage_dir(&r.app, &r.env).display().to_string(),
            ),
        ]);
        env
    }

    async fn start_instance(
        &self,
        r: &EnvRef,
        release_id: i64,
        dir: &Path,
        config: &ReleaseConfig,
        mut env: Vec<(String, String)>,
    ) -> Result<Arc<Instance>, ControlError> {
        let port =
            free_port().map_err(|e| ControlError::internal(format!("find a free port: {e}")))?;
        env.push(("PORT".to_owned(), port.to_string()));
        let spec = InstanceSpec {
            command: config.run.clone(),
            cwd: dir.to_path_buf(),
            env,
            port,
            log_path: self.home.run_log(&r.app, &r.env, release_id),
            pid_file: Some(self.home.pid_file(&r.app, &r.env, release_id)),
            health: HealthCheck {
                path: config.health_path.clone(),
                host: r.internal_host(),
                timeout: config.health_timeout,
                interval: config.health_interval,
            },
            restart: RestartPolicy::default(),
            stop_timeout: config.stop_timeout,
        };
        Instance::start(spec).await.map_err(|e| ControlError::Step {
            step: "start",
            message: e.to_string(),
            log_tail: vec![],
        })
    }

    /// Drain a replaced instance's in-flight requests (up to its drain timeout), then stop it.
    /// Streams (WebSockets, event streams) get their own, shorter deadline, then a clean close.
    async fn retire(&self, r: &EnvRef, old: Running) -> DrainOutcome {
        let outcome = old.upstream.drain_with(old.drain).await;
        self.metrics.count_drain(&r.app, &r.env, &outcome);
        if outcome.cut > 0 {
            warn!(app = %r.app, env = %r.env, cut = outcome.cut, "drain deadline cut in-flight requests");
        }
        old.instance.stop().await;
        outcome
    }

    // ---- domains -------------------------------------------------------------------------

    fn domain_info(&self, row: &DomainRow) -> DomainInfo {
        let serving = lock(&self.running).contains_key(&(row.app.clone(), row.env.clone()));
        DomainInfo {
            url: format!("http://{}:{}", row.name, self.http_port),
            domain: row.name.clone(),
            app: row.app.clone(),
            env: row.env.clone(),
            serving,
            maintenance: row.maintenance.clone(),
            created_at: format_timestamp(row.created_at),
        }
    }

    /// Make the in-memory binding match the store's row and rebuild the route table.
    fn bind(&self, row: &DomainRow) {
        lock(&self.domains).insert(
            row.name.clone(),
            Binding {
                app: row.app.clone(),
                env: row.env.clone(),
                maintenance: row.maintenance.clone(),
            },
        );
        self.apply_routes();
    }

    async fn domain_row(&self, name: &DomainName) -> Result<DomainRow, ControlError> {
        let n = name.clone();
        self.store.call(move |c| q::get_domain(c, &n)).await
    }

    /// The domains of apps `who` has a role on.
    pub async fn list_domains(&self, who: &Principal) -> Result<Vec<DomainInfo>, ControlError> {
        let rows = self.store.call(|c| q::list_domains(c)).await?;
        let apps = self.store.call(|c| q::list_apps(c)).await?;
        let visible = |app: &AppName| {
            apps.iter()
                .any(|a| a.name == *app && who.role_on(a.id).is_some())
        };
        Ok(rows
            .iter()
            .filter(|r| visible(&r.app))
            .map(|r| self.domain_info(r))
            .collect())
    }

    /// Refuse unless `who` may change domains of the environment `r`.
    async fn authorize_domain(&self, who: &Principal, r: &EnvRef) -> Result<EnvRow, ControlError> {
        let env = self.env_row(r).await?;
        self.authorize_env(who, &env, Action::Domain).await?;
        Ok(env)
    }

    pub async fn add_domain(
        &self,
        name: DomainName,
        target: EnvRef,
        who: &Principal,
    ) -> Result<DomainInfo, ControlError> {
        let _op = self.domain_ops.lock().await;
        let env = self.authorize_domain(who, &target).await?;
        let (n, actor) = (name.clone(), who.name.clone());
        let entry = AuditEntry::new(&who.name, "domain.add")
            .app(&target.app)
            .env(&target.env)
            .domain(&name)
            .change(None, Some(target.to_string()));
        let row = self
            .store
            .mutate(entry, move |c, _| q::insert_domain(c, &n, &env, &actor))
            .await?;
        self.bind(&row);
        info!(domain = %name, app = %target.app, env = %target.env, "domain added");
        Ok(self.domain_info(&row))
    }

    pub async fn remove_domain(
        &self,
        name: DomainName,
        who: &Principal,
    ) -> Result<(), ControlError> {
        let _op = self.domain_ops.lock().await;
        let domain = self.domain_row(&name).await?;
        let current = EnvRef {
            app: domain.app.clone(),
            env: domain.env.clone(),
        };
        self.authorize_domain(who, &current).await?;
        let n = name.clone();
        let entry = AuditEntry::new(&who.name, "domain.remove")
            .app(&domain.app)
            .env(&domain.env)
            .domain(&name)
            .change(Some(current.to_string()), None);
        self.store
            .mutate(entry, move |c, _| q::delete_domain(c, &n))
            .await?;
        lock(&self.domains).remove(&name);
        self.apply_routes();
        self.metrics.forget_host(name.as_str());
        info!(domain = %name, "domain removed");
        Ok(())
    }

    /// Move a domain to another environment of its app: refuse unless the target has a running
    /// instance that passes a fresh health check; then record the change and apply the new route
    /// table. When this returns, every new request goes to the target. The old environment keeps
    /// running, so switching back is as fast.
    /// `approved` is set when a second owner approved this switch (it skips the approval rule).
    pub async fn switch_domain(
        &self,
        name: DomainName,
        target: EnvRef,
        who: &Principal,
        approved: bool,
    ) -> Result<SwitchInfo, ControlError> {
        let _op = self.domain_ops.lock().await;
        let domain = self.domain_row(&name).await?;
        if domain.app != target.app {
            return Err(ControlError::Invalid(format!(
                "{name} belongs to app '{}'; it can only move between {}'s environments",
                domain.app, domain.app
            )));
        }
        // Moving a domain needs the right on both ends: where it is and where it goes.
        let current = EnvRef {
            app: domain.app.clone(),
            env: domain.env.clone(),
        };
        self.authorize_domain(who, &current).await?;
        let to = self.authorize_domain(who, &target).await?;
        if !approved {
            let op = crate::approvals::Operation::Switch {
                domain: name.clone(),
                app: target.app.clone(),
                env: target.env.clone(),
            };
            let summary = format!("switch {name} from {current} to {target}");
            self.require_approval(
                who,
                to.app_id,
                &target.app,
                Action::Domain,
                to.tier,
                op,
                summary,
            )
            .await?;
        }
        if domain.env == to.name {
            return Ok(SwitchInfo {
                domain: name,
                app: domain.app,
                from: domain.env.clone(),
                to: domain.env,
                action: "unchanged".into(),
                health_check_ms: 0.0,
                apply_us: 0.0,
            });
        }
        self.move_domain(name, domain, target, to, who, Move::Switch)
            .await
    }

    /// Point the domain back at the environment it was on before its latest switch not yet
    /// rolled back; repeated rollbacks walk further back through its history. Health-gated like
    /// a switch.
    pub async fn rollback_domain(
        &self,
        name: DomainName,
        who: &Principal,
    ) -> Result<SwitchInfo, ControlError> {
        let _op = self.domain_ops.lock().await;
        let domain = self.domain_row(&name).await?;
        let current = EnvRef {
            app: domain.app.clone(),
            env: domain.env.clone(),
        };
        self.authorize_domain(who, &current).await?;
        let id = domain.id;
        let Some((undo, previous)) = self.store.call(move |c| q::rollback_target(c, id)).await?
        else {
            return Err(ControlError::Conflict(format!(
                "nothing to roll back: {name} has pointed to {}/{} since it was added (see `turnout domain history {name}`)",
                domain.app, domain.env
            )));
        };
        let previous: EnvName = previous
            .parse()
            .map_err(|e| ControlError::internal(format!("history of {name}: {e}")))?;
        let target = EnvRef {
            app: domain.app.clone(),
            env: previous,
        };
        let to = self.env_row(&target).await.map_err(|_| {
            ControlError::Conflict(format!(
                "cannot roll {name} back to {target}: that environment no longer exists"
            ))
        })?;
        self.authorize_domain(who, &target).await?;
        self.move_domain(name, domain, target, to, who, Move::Rollback { undo })
            .await
    }

    /// The common end of a switch and a rollback: a fresh health check of the target, the new
    /// binding and its history and audit entries in one transaction, then the new route table.
    async fn move_domain(
        &self,
        name: DomainName,
        domain: DomainRow,
        target: EnvRef,
        to: EnvRow,
        who: &Principal,
        how: Move,
    ) -> Result<SwitchInfo, ControlError> {
        let health_check_ms = self.check_target(&name, &domain, &target).await?;
        let started = Instant::now();
        let action = match how {
            Move::Switch => "switch",
            Move::Rollback { .. } => "rollback",
        };
        let from = EnvRef {
            app: domain.app.clone(),
            env: domain.env.clone(),
        };
        let entry = AuditEntry::new(&who.name, &format!("domain.{action}"))
            .app(&domain.app)
            .env(&to.name)
            .domain(&name)
            .change(Some(from.to_string()), Some(target.to_string()));
        let (d, t, actor) = (domain.clone(), to.clone(), who.name.clone());
        self.store
            .mutate(entry, move |c, _| {
                let undo = match how {
                    Move::Switch => None,
                    Move::Rollback { undo } => Some(undo),
                };
                q::move_domain(c, &d, &t, &actor, undo)
            })
            .await?;
        self.bind(&DomainRow {
            env: to.name.clone(),
            ..domain.clone()
        });
        let apply_us = started.elapsed().as_secs_f64() * 1e6;
        self.metrics.count_switch(name.as_str(), action);
        info!(domain = %name, from = %domain.env, to = %to.name, action, apply_us, "domain moved");
        Ok(SwitchInfo {
            domain: name,
            app: domain.app,
            from: domain.env,
            to: to.name,
            action: action.into(),
            health_check_ms,
            apply_us,
        })
    }

    /// Traffic moves only to an instance that passes a health check now, not one that passed
    /// at its deploy. Returns how long the check took, in milliseconds.
    async fn check_target(
        &self,
        name: &DomainName,
        domain: &DomainRow,
        target: &EnvRef,
    ) -> Result<f64, ControlError> {
        let key = (target.app.clone(), target.env.clone());
        let Some(run) = lock(&self.running).get(&key).cloned() else {
            return Err(ControlError::Conflict(format!(
                "{target} has no running instance; deploy it first (`turnout deploy {target}`). {name} still points to {}/{}",
                domain.app, domain.env
            )));
        };
        let started = Instant::now();
        run.instance.check_health().await.map_err(|e| {
            ControlError::Conflict(format!(
                "refused: {target} failed a fresh health check ({e}); {name} still points to {}/{}",
                domain.app, domain.env
            ))
        })?;
        Ok(started.elapsed().as_secs_f64() * 1e3)
    }

    pub async fn set_maintenance(
        &self,
        name: DomainName,
        on: bool,
        message: Option<String>,
        who: &Principal,
    ) -> Result<DomainInfo, ControlError> {
        let _op = self.domain_ops.lock().await;
        let domain = self.domain_row(&name).await?;
        let current = EnvRef {
            app: domain.app.clone(),
            env: domain.env.clone(),
        };
        self.authorize_domain(who, &current).await?;
        let message = on.then(|| {
            message
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_MAINTENANCE_MESSAGE.to_owned())
        });
        if message.as_ref().is_some_and(|m| m.len() > 2000) {
            return Err(ControlError::Invalid(
                "the maintenance message is longer than 2000 characters".into(),
            ));
        }
        let (d, m, actor) = (domain.clone(), message.clone(), who.name.clone());
        let entry = AuditEntry::new(
            &who.name,
            if on {
                "domain.maintenance-on"
            } else {
                "domain.maintenance-off"
            },
        )
        .app(&domain.app)
        .env(&domain.env)
        .domain(&name)
        .change(None, message.clone());
        self.store
            .mutate(entry, move |c, _| {
                q::set_maintenance(c, &d, m.as_deref(), &actor)
            })
            .await?;
        let row = DomainRow {
            maintenance: message,
            ..domain
        };
        self.bind(&row);
        info!(domain = %name, on, "domain maintenance");
        Ok(self.domain_info(&row))
    }

    pub async fn domain_history(
        &self,
        name: DomainName,
        who: &Principal,
    ) -> Result<Vec<DomainEvent>, ControlError> {
        let domain = self.domain_row(&name).await?;
        let env = self
            .env_row(&EnvRef {
                app: domain.app.clone(),
                env: domain.env.clone(),
            })
            .await?;
        self.authorize_env(who, &env, Action::Read).await?;
        let id = domain.id;
        let rows = self.store.call(move |c| q::domain_history(c, id)).await?;
        Ok(rows
            .into_iter()
            .map(|r| DomainEvent {
                id: r.id,
                at: format_timestamp(r.at),
                actor: r.actor,
                rolled_back: r.undone && r.action == "switch",
                action: r.action,
                from: r.from,
                to: r.to,
            })
            .collect())
    }

    // ---- start-up and shutdown -----------------------------------------------------------

    /// Bring back every environment that had a live release: start its instance from the
    /// release directory (no rebuild), wait for health, route. Environments come up
    /// concurrently; each is routed as soon as it is healthy, through the same apply path.
    pub fn spawn_restore(self: &Arc<Self>) {
        let this = self.clone();
        self.tasks.spawn(async move {
            if let Err(e) = this.restore().await {
                warn!(error = %e, "restoring environments failed");
            }
        });
    }

    async fn restore(self: &Arc<Self>) -> Result<(), ControlError> {
        let entry = AuditEntry::new("turnout", "deploy.interrupted");
        let interrupted = self
            .store
            .mutate(entry, |c, _| q::fail_interrupted_releases(c))
            .await?;
        if interrupted > 0 {
            warn!(
                count = interrupted,
                "marked deploys interrupted by the last shutdown as failed"
            );
        }
        for pid_file in self.home.all_pid_files() {
            turnout_supervisor::reap_stale(&pid_file);
        }
        self.refresh_logins().await?;
        // Domains answer 503 "starting" until their environments are back, then route.
        let domains = self.store.call(|c| q::list_domains(c)).await?;
        for row in &domains {
            lock(&self.domains).insert(
                row.name.clone(),
                Binding {
                    app: row.app.clone(),
                    env: row.env.clone(),
                    maintenance: row.maintenance.clone(),
                },
            );
        }
        self.apply_routes();
        let envs = self.store.call(|c| q::list_envs(c, None)).await?;
        let mut tasks = tokio::task::JoinSet::new();
        for env in envs {
            let Some(release_id) = env.current_release_id else {
                continue;
            };
            let this = self.clone();
            tasks.spawn(async move {
                let r = EnvRef {
                    app: env.app.clone(),
                    env: env.name.clone(),
                };
                if let Err(e) = this.restore_env(&r, &env, release_id).await {
                    warn!(app = %r.app, env = %r.env, error = %e, "environment did not come back");
                    lock(&this.down).insert((r.app, r.env), e.to_string());
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    async fn restore_env(
        &self,
        r: &EnvRef,
        env: &EnvRow,
        release_id: i64,
    ) -> Result<(), ControlError> {
        let release: ReleaseRow = self
            .store
            .call(move |c| q::get_release(c, release_id))
            .await?;
        let config: ReleaseConfig = serde_json::from_str(&release.config)
            .map_err(|e| ControlError::internal(format!("release {release_id} config: {e}")))?;
        let dir = Path::new(&release.dir);
        if !dir.is_dir() {
            return Err(ControlError::internal(format!(
                "release directory {} is gone; redeploy with `turnout deploy {r}`",
                dir.display()
            )));
        }
        let mut env_vars = self.instance_env(r, env.tier, &release.commit, &config);
        env_vars.extend(self.secret_env(env.id).await?);
        let instance = self
            .start_instance(r, release_id, dir, &config, env_vars)
            .await?;
        let healthy = match self.unless_closing("health", instance.wait_healthy()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ControlError::Step {
                step: "health",
                message: e.to_string(),
                log_tail: vec![],
            }),
            Err(e) => Err(e),
        };
        if let Err(e) = healthy.and_then(|()| {
            if self.closing.is_cancelled() {
                Err(ControlError::internal("the daemon is shutting down"))
            } else {
                Ok(())
            }
        }) {
            instance.stop().await;
            return Err(e);
        }
        let running = Running {
            release_id,
            upstream: Upstream::new(instance.addr(), format!("{r}@{}", &release.commit[..12])),
            instance,
            drain: DrainDeadlines {
                requests: config.drain_timeout,
                streams: config.stream_drain_timeout,
            },
            health_path: config.health_path.clone(),
            tier: env.tier,
        };
        lock(&self.running).insert((r.app.clone(), r.env.clone()), running);
        self.apply_routes();
        info!(app = %r.app, env = %r.env, release = release_id, "environment restored");
        Ok(())
    }

    /// Stop every instance (the proxy has already stopped accepting and drained): first let
    /// deploys and restores in progress notice the shutdown and clean up after themselves.
    pub async fn shutdown(&self) {
        self.closing.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let all: Vec<Running> = lock(&self.running).drain().map(|(_, r)| r).collect();
        self.apply_routes();
        let mut tasks = tokio::task::JoinSet::new();
        for r in all {
            tasks.spawn(async move { r.instance.stop().await });
        }
        while tasks.join_next().await.is_some() {}
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn source(repo: &str, token_env: Option<&str>) -> Result<Source, ControlError> {
    let token = match token_env {
        None => None,
        Some(var) => Some(std::env::var(var).map_err(|_| {
            ControlError::Invalid(format!(
                "the daemon's environment has no variable '{var}' (named by --token-env); set it where `turnout serve` runs"
            ))
        })?),
    };
    Ok(Source {
        repo: repo.to_owned(),
        token,
    })
}

fn app_info(row: &AppRow) -> AppInfo {
    AppInfo {
        name: row.name.clone(),
        repo: row.repo.clone(),
        token_env: row.token_env.clone(),
        environments: row.environments,
        created_at: format_timestamp(row.created_at),
    }
}

fn release_info(row: &ReleaseRow) -> ReleaseInfo {
    ReleaseInfo {
        id: row.id,
        commit: row.commit.clone(),
        git_ref: row.git_ref.clone(),
        status: row.status.parse().unwrap_or(ReleaseStatus::Failed),
        job: None,
        reused_build: row.reused_build,
        error: row.error.clone(),
        created_at: format_timestamp(row.created_at),
        finished_at: row.finished_at.map(format_timestamp),
    }
}

/// The last `n` lines of a log file (empty when it does not exist).
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let Ok(text) = std::fs::read(path) else {
        return vec![];
    };
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

async fn remove_dir(dir: &Path) {
    if let Err(e) = tokio::fs::remove_dir_all(dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(dir = %dir.display(), error = %e, "could not remove directory");
    }
}
