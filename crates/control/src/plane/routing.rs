//! The routing state and the one way it reaches the proxy. `Routing` is the only owner of which
//! instance serves each environment, each domain's binding, the logins of protected apps, and
//! which environments are down, stopped or asleep; every change goes through one of its methods,
//! which updates that state and applies a new route table built from all of it (`apply`).
//! Start-up, deploy, rollback, restart, stop, sleep, delete, domain
//! add/switch/rollback/maintenance/remove and shutdown all change routing this way.
//!
//! The proxy runs in the data plane process (`turnout-dataplane`): `apply` builds the route of
//! every host a change touches (an environment's own host and its domains, or one domain; every
//! host at start-up and for logins) and hands them to the data plane, which gets the hosts that
//! changed. Each method returns once the data plane has the change in force.
//!
//! Lock order: there is one lock (`state`), never held across an await, and the data plane's
//! `update` (which only queues what changed) is the only thing called while it is held, so
//! changes reach the data plane in the order they were made.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use turnout_dataplane::{Applied, DataPlane, LoginSpec, RouteSpec, TargetSpec, UpstreamSpec};
use turnout_model::{AppName, DomainName, EnvName, EnvRef, Tier};
use turnout_supervisor::InstanceHandle;

use crate::metrics::Metrics;
use crate::store::DomainRow;

pub(crate) type EnvKey = (AppName, EnvName);

pub(crate) fn key(r: &EnvRef) -> EnvKey {
    (r.app.clone(), r.env.clone())
}

/// An environment's serving instance, as the route table sees it.
#[derive(Clone)]
pub(crate) struct Running {
    pub release_id: i64,
    pub instance: Arc<dyn InstanceHandle>,
    /// How the data plane reaches it (and how long a drain of it waits).
    pub upstream: UpstreamSpec,
    /// Requests for this path still reach the instance while a domain is in maintenance.
    pub health_path: String,
    /// Decides whether its internal URL needs a login.
    pub tier: Tier,
    /// The configuration it was launched with, recorded with its release at go-live (`None`:
    /// adopted from an earlier daemon, whose record stands).
    pub ran_with: Option<super::config_snapshot::RanWith>,
}

/// An app whose internal URLs need a login: on which tiers, and who may log in.
pub(crate) struct AppLogin {
    /// `None` in the list: every tier.
    pub tiers: Vec<Option<Tier>>,
    pub login: LoginSpec,
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

impl From<&DomainRow> for Binding {
    fn from(row: &DomainRow) -> Self {
        Binding {
            app: row.app.clone(),
            env: row.env.clone(),
            maintenance: row.maintenance.clone(),
        }
    }
}

/// Why an environment that start-up is bringing back does not serve yet, and when it is tried
/// again.
#[derive(Clone)]
pub(crate) struct Down {
    pub why: String,
    pub retry_at: SystemTime,
}

/// Where an environment stands, as routing knows it.
pub(crate) struct EnvRouting {
    pub running: Option<Running>,
    /// Why its live release is not serving (it failed to come back after a restart).
    pub down: Option<Down>,
    pub stopped: bool,
    pub asleep: bool,
}

/// A sleeping environment, as its route needs it.
#[derive(Clone, Copy)]
pub(crate) struct Asleep {
    /// How long a request waits for it to wake before a 503.
    pub wait: Duration,
    /// Decides whether its internal URL needs a login (to wake it too).
    pub tier: Tier,
}

/// `Retry-After` for a maintenance page, and for a domain whose environment is not running.
const MAINTENANCE_RETRY: Duration = Duration::from_secs(300);
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    running: HashMap<EnvKey, Running>,
    domains: BTreeMap<DomainName, Binding>,
    /// The domains bound to each environment (an index of `domains`, changed only with it by
    /// `bind` and `unbind`): an environment's change builds its own domains' routes without
    /// walking every domain.
    bound: HashMap<EnvKey, BTreeSet<DomainName>>,
    /// Those of them in maintenance (kept with `bound`): their page lets health checks through
    /// to the instance, so they change with it; the others follow the environment's route.
    maintained: HashMap<EnvKey, BTreeSet<DomainName>>,
    logins: HashMap<AppName, AppLogin>,
    /// Environments start-up is bringing back (down ones included, while they are retried):
    /// their URL answers 503 "starting or temporarily unavailable" until they serve.
    restoring: HashSet<EnvKey>,
    down: HashMap<EnvKey, Down>,
    stopped: HashSet<EnvKey>,
    /// Environments with nothing deployed yet: their URL (and domains) say so with a 503.
    undeployed: HashSet<EnvKey>,
    /// Environments put to sleep when idle: a request to their URL (or domains) wakes them.
    asleep: HashMap<EnvKey, Asleep>,
}

impl State {
    /// Whether the domains of `key` (those not in maintenance) follow its own host: it runs,
    /// sleeps, is stopped or has nothing deployed, where a visitor of a domain gets what its
    /// own URL answers. Not while start-up brings it back (its page names the host asked for).
    fn followed(&self, key: &EnvKey) -> bool {
        !self.restoring.contains(key)
            && (self.running.contains_key(key)
                || self.asleep.contains_key(key)
                || self.stopped.contains(key)
                || self.undeployed.contains(key))
    }

    fn bind(&mut self, name: DomainName, binding: Binding) {
        self.unbind(&name);
        let key = (binding.app.clone(), binding.env.clone());
        if binding.maintenance.is_some() {
            self.maintained
                .entry(key.clone())
                .or_default()
                .insert(name.clone());
        }
        self.bound.entry(key).or_default().insert(name.clone());
        self.domains.insert(name, binding);
    }

    fn unbind(&mut self, name: &DomainName) {
        let Some(old) = self.domains.remove(name) else {
            return;
        };
        let key = (old.app, old.env);
        for index in [&mut self.bound, &mut self.maintained] {
            if let Some(names) = index.get_mut(&key) {
                names.remove(name);
                if names.is_empty() {
                    index.remove(&key);
                }
            }
        }
    }
}

pub(crate) struct Routing {
    dataplane: Arc<DataPlane>,
    metrics: Metrics,
    state: Mutex<State>,
}

impl Routing {
    pub fn new(dataplane: Arc<DataPlane>) -> Routing {
        Routing {
            dataplane,
            metrics: Metrics::default(),
            state: Mutex::default(),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn dataplane(&self) -> &Arc<DataPlane> {
        &self.dataplane
    }

    /// Change the state with `f`, then apply the routes of the hosts it `touched`, under the
    /// same lock so changes are applied in the order they were made; return once in force.
    async fn change<T>(&self, touched: Touched, f: impl FnOnce(&mut State) -> T) -> T {
        self.change_as(|s| (f(s), touched)).await
    }

    /// `change`, for a change that finds out what it touched as it makes it.
    async fn change_as<T>(&self, f: impl FnOnce(&mut State) -> (T, Touched)) -> T {
        let (out, applied) = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let (out, touched) = f(&mut state);
            (out, self.apply(&state, touched))
        };
        applied.wait().await;
        out
    }

    /// A change of one environment's state: while its domains follow its host before and
    /// after (`State::followed`), only that host and its domains in maintenance change.
    async fn change_env<T>(&self, key: EnvKey, f: impl FnOnce(&mut State) -> T) -> T {
        self.change_as(|s| {
            let followed = s.followed(&key);
            let out = f(s);
            let touched = if followed && s.followed(&key) {
                Touched::Own(key)
            } else {
                Touched::Env(key)
            };
            (out, touched)
        })
        .await
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// `running` now serves the environment (it passed its health check); returns the instance
    /// it replaces, for the caller to drain and stop.
    pub async fn go_live(&self, key: EnvKey, running: Running) -> Option<Running> {
        self.change_env(key.clone(), |s| {
            s.restoring.remove(&key);
            s.down.remove(&key);
            s.stopped.remove(&key);
            s.undeployed.remove(&key);
            s.asleep.remove(&key);
            s.running.insert(key.clone(), running)
        })
        .await
    }

    /// The environment stops serving on purpose: its URL and domains answer 503 "stopped".
    pub async fn stop(&self, key: EnvKey) -> Option<Running> {
        self.change_env(key.clone(), |s| {
            s.restoring.remove(&key);
            s.down.remove(&key);
            s.asleep.remove(&key);
            s.stopped.insert(key.clone());
            s.running.remove(&key)
        })
        .await
    }

    /// The environment sleeps: its URL and domains wake it on the next request (which waits up
    /// to `asleep.wait`). Returns the instance it ran, for the caller to drain and stop.
    pub async fn sleep(&self, key: EnvKey, asleep: Asleep) -> Option<Running> {
        self.change_env(key.clone(), |s| {
            s.restoring.remove(&key);
            s.down.remove(&key);
            s.asleep.insert(key.clone(), asleep);
            s.running.remove(&key)
        })
        .await
    }

    /// The environment is gone: forget everything about it.
    pub async fn forget(&self, key: &EnvKey) -> Option<Running> {
        self.change_env(key.clone(), |s| {
            s.restoring.remove(key);
            s.down.remove(key);
            s.stopped.remove(key);
            s.undeployed.remove(key);
            s.asleep.remove(key);
            s.running.remove(key)
        })
        .await
    }

    /// A new environment: its URL answers 503 "nothing deployed yet" until its first release
    /// goes live.
    pub async fn created(&self, key: EnvKey) {
        self.change_env(key.clone(), |s| {
            s.undeployed.insert(key);
        })
        .await;
    }

    /// Start-up could not bring its live release back (yet): say why, and when it is tried
    /// again. Only for an environment still being brought back (not live, stopped or deleted
    /// since).
    pub fn mark_down(&self, key: EnvKey, down: Down) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.restoring.contains(&key) {
            s.down.insert(key, down);
        }
    }

    pub fn env(&self, key: &EnvKey) -> EnvRouting {
        self.read(|s| EnvRouting {
            running: s.running.get(key).cloned(),
            down: s.down.get(key).cloned(),
            stopped: s.stopped.contains(key),
            asleep: s.asleep.contains_key(key),
        })
    }

    /// The environments running now.
    pub fn running_envs(&self) -> Vec<EnvKey> {
        self.read(|s| s.running.keys().cloned().collect())
    }

    pub fn running(&self, key: &EnvKey) -> Option<Running> {
        self.read(|s| s.running.get(key).cloned())
    }

    /// Make the in-memory binding match the store's row.
    pub async fn bind(&self, row: &DomainRow) {
        self.change(Touched::Domain(row.name.clone()), |s| {
            s.bind(row.name.clone(), Binding::from(row));
        })
        .await;
    }

    /// Start-up: every binding, every stopped environment, every one being brought back, every
    /// one with nothing deployed and every sleeping one, at once.
    pub async fn load(
        &self,
        domains: &[DomainRow],
        stopped: Vec<EnvKey>,
        restoring: Vec<EnvKey>,
        undeployed: Vec<EnvKey>,
        asleep: Vec<(EnvKey, Asleep)>,
    ) {
        self.change(Touched::All, |s| {
            for row in domains {
                s.bind(row.name.clone(), Binding::from(row));
            }
            s.stopped.extend(stopped);
            let sleeping = asleep
                .into_iter()
                .filter(|(k, _)| !s.running.contains_key(k));
            s.asleep.extend(sleeping);
            let never = undeployed
                .into_iter()
                .filter(|k| !s.running.contains_key(k));
            s.undeployed.extend(never);
            // A job sent as soon as the API was up may already have brought one back.
            let not_back = restoring
                .into_iter()
                .filter(|k| !s.running.contains_key(k) && !s.stopped.contains(k));
            s.restoring.extend(not_back);
        })
        .await;
    }

    pub async fn unbind(&self, name: &DomainName) {
        self.change(Touched::Domain(name.clone()), |s| {
            s.unbind(name);
        })
        .await;
        self.metrics.forget_switches(name.as_str());
    }

    pub async fn set_logins(&self, logins: HashMap<AppName, AppLogin>) {
        self.change(Touched::All, |s| s.logins = logins).await;
    }

    /// Shutdown: every instance leaves the table at once.
    pub async fn take_all(&self) -> Vec<Running> {
        self.change(Touched::All, |s| {
            s.running.drain().map(|(_, r)| r).collect()
        })
        .await
    }

    /// Build the routes of the hosts `touched` from the state and hand them to the data
    /// plane, which gets those that changed.
    fn apply(&self, s: &State, touched: Touched) -> Applied {
        let domain = |name: &DomainName| {
            let b = s.domains.get(name)?;
            Some((name.to_string(), domain_route(s, name, b)))
        };
        let (set, remove) = match touched {
            Touched::All => {
                let envs = s
                    .running
                    .keys()
                    .chain(&s.stopped)
                    .chain(&s.restoring)
                    .chain(&s.undeployed)
                    .chain(s.asleep.keys());
                let mut table: BTreeMap<String, RouteSpec> = envs
                    .filter_map(|(app, env)| Some((env_host(app, env), env_route(s, app, env)?)))
                    .collect();
                table.extend(s.domains.keys().filter_map(domain));
                self.metrics.count_route_updates(table.len());
                return self.dataplane.update(table);
            }
            Touched::Env((app, env)) => {
                let host = env_host(&app, &env);
                let own = env_route(s, &app, &env);
                let key = (app, env);
                let domains = s.bound.get(&key).into_iter().flatten().filter_map(domain);
                match own {
                    Some(route) => (
                        std::iter::once((host, route)).chain(domains).collect(),
                        vec![],
                    ),
                    None => (domains.collect(), vec![host]),
                }
            }
            Touched::Own(key) => {
                let own =
                    env_route(s, &key.0, &key.1).map(|route| (env_host(&key.0, &key.1), route));
                let maintained = s
                    .maintained
                    .get(&key)
                    .into_iter()
                    .flatten()
                    .filter_map(domain);
                (own.into_iter().chain(maintained).collect(), Vec::new())
            }
            Touched::Domain(name) => match domain(&name) {
                Some(route) => (vec![route], Vec::new()),
                None => (Vec::new(), vec![name.to_string()]),
            },
        };
        self.metrics.count_route_updates(set.len() + remove.len());
        self.dataplane.change(set, remove)
    }
}

/// What a change of routing state touched: whose routes to build again.
enum Touched {
    /// An environment's own host and the domains bound to it.
    Env(EnvKey),
    /// An environment's own route changed while its domains follow it (`State::followed`):
    /// its own host and its domains in maintenance (the others follow its host).
    Own(EnvKey),
    Domain(DomainName),
    All,
}

fn route(target: TargetSpec, app: &AppName, env: &EnvName, login: Option<LoginSpec>) -> RouteSpec {
    RouteSpec {
        target,
        app: app.to_string(),
        env: env.to_string(),
        login,
    }
}

/// An environment's own host: its instance (behind a login where its app protects its tier),
/// or a 503 page while it is being brought back or stopped; `None` when it has no route.
fn env_route(s: &State, app: &AppName, env: &EnvName) -> Option<RouteSpec> {
    let key = (app.clone(), env.clone());
    if s.restoring.contains(&key) {
        return Some(route(unavailable_page(&env_host(app, env)), app, env, None));
    }
    if s.stopped.contains(&key) {
        return Some(route(stopped_page(app, env), app, env, None));
    }
    if let Some(a) = s.asleep.get(&key) {
        return Some(route(asleep(a), app, env, login_for(s, app, a.tier)));
    }
    let Some(r) = s.running.get(&key) else {
        return s
            .undeployed
            .contains(&key)
            .then(|| route(undeployed_page(app, env), app, env, None));
    };
    Some(route(
        TargetSpec::Upstream(r.upstream.clone()),
        app,
        env,
        login_for(s, app, r.tier),
    ))
}

/// Who may log in to an environment's internal URL, where its app protects its tier.
fn login_for(s: &State, app: &AppName, tier: Tier) -> Option<LoginSpec> {
    s.logins
        .get(app)
        .filter(|l| l.protects(tier))
        .map(|l| l.login.clone())
}

fn asleep(a: &Asleep) -> TargetSpec {
    TargetSpec::Asleep {
        wait_ms: u64::try_from(a.wait.as_millis()).unwrap_or(u64::MAX),
    }
}

/// A domain: its environment's instance, its maintenance page, or a 503 page while the
/// environment is stopped or not running.
fn domain_route(s: &State, name: &DomainName, b: &Binding) -> RouteSpec {
    let key = (b.app.clone(), b.env.clone());
    let target = match &b.maintenance {
        Some(message) => TargetSpec::Maintenance {
            message: message.clone(),
            retry_after_secs: MAINTENANCE_RETRY.as_secs(),
            health: s
                .running
                .get(&key)
                .map(|r| (r.health_path.clone(), r.upstream.clone())),
        },
        // Whatever the environment's own route is now: its instance, its wake, its stopped or
        // nothing-deployed page (see `State::followed` and `Touched::Own`). Its login stays
        // on its own host.
        None if s.followed(&key) => TargetSpec::Follow {
            host: env_host(&b.app, &b.env),
        },
        None => unavailable_page(name.as_str()),
    };
    route(target, &b.app, &b.env, None)
}

fn env_host(app: &AppName, env: &EnvName) -> String {
    EnvRef {
        app: app.clone(),
        env: env.clone(),
    }
    .internal_host()
}

/// The 503 page of an environment that is not running (yet) but should be, and of the domains
/// bound to it: say so, with a short `Retry-After` a browser honours, rather than a 404 that
/// looks like a wrong address. Why it is down stays out: visitors are not its owners.
fn unavailable_page(host: &str) -> TargetSpec {
    TargetSpec::Maintenance {
        message: format!("{host} is starting or temporarily unavailable."),
        retry_after_secs: UNAVAILABLE_RETRY.as_secs(),
        health: None,
    }
}

/// The 503 page of an environment with nothing deployed yet (and of the domains bound to it),
/// rather than a 404 that looks like a wrong address.
fn undeployed_page(app: &AppName, env: &EnvName) -> TargetSpec {
    TargetSpec::Maintenance {
        message: format!(
            "{app}/{env} has nothing deployed yet. Its owners deploy it with `turnout deploy {app}/{env}`."
        ),
        retry_after_secs: MAINTENANCE_RETRY.as_secs(),
        health: None,
    }
}

/// The 503 page of a stopped environment (and of the domains bound to it).
fn stopped_page(app: &AppName, env: &EnvName) -> TargetSpec {
    TargetSpec::Maintenance {
        message: format!(
            "{app}/{env} is stopped. Its owners start it again with `turnout env start {app}/{env}`."
        ),
        retry_after_secs: MAINTENANCE_RETRY.as_secs(),
        health: None,
    }
}
