//! The control plane: every operation the API offers, split by responsibility.
//!
//! - `routing`: the only owner of routing state and of applying route tables.
//! - `authz`: who may do what (the role an app's policy asks for on a tier).
//! - `board`: the dashboard's reads of an app in one go, and which actions a user may take.
//! - `apps`, `envs`, `domains`: the records users create and the operations on them.
//! - `jobs`: the job runner every long operation goes through.
//! - `launch`: start a release's instance on a free port, health-gate it, build its route
//!   entry; used by deploy, rollback, restart, start and start-up restore.
//! - `deploy`: a deploy as typed steps (fetch, checkout, build, launch, go live, retire).
//! - `release_ops`: rollback, restart, stop and start of an environment.
//! - `restore`: start-up (recover interrupted jobs, bring environments back) and shutdown.
//! - `logs`: reading an environment's logs, authorized here.
//! - `run`: `turnout run`, a command with exactly what the environment's instance gets
//!   (`launch::instance_setup`), its streams over the upgraded API connection.
//! - `plans`: an environment's resource plan (set, effective) and its usage.
//! - `triggers`, `hooks`: what deploys an environment by itself (a push, a green CI build), the CI
//!   report and the GitHub and GitLab webhooks, all through one `trigger_deploys`.
//! - `push`: what a `git push` to the app's git URL does (branch environments, deploys).
//! - `isolation`, `network`: who an environment's processes run as, their files, their network.
//! - `pipeline`, `schedule`: an app's declared pipeline (which promotions are allowed) and its
//!   scheduled cuts, run by the scheduler task.
//! - `sleep`: idle environments sleep (the sleeper) and requests wake them (the waker).
//! - `generation`, `data_service`, `data`, `data_access`: each environment's data (generations of a SQLite
//!   file or a PostgreSQL cluster, and storage), the seed, clone and sync jobs that swap a new
//!   generation in, and showing, attaching and connecting to it.
//! - `backup`: snapshots of each environment's data into its app's repository (by hand and on
//!   the scheduler's backup schedule), retention, verification and the WAL archive.
use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;
use turnout_model::{AppInfo, AppName, EnvRef, ReleaseInfo, format_timestamp};
use turnout_supervisor::{InstanceHandle, Runtime};

use crate::egress::Egress;
use crate::error::ControlError;
use crate::git::Source;
use crate::home::Home;
use crate::mail::Catcher;
use crate::metrics::Metrics;
use crate::store::{AppRow, ReleaseRow, Store};
use crate::vault::Vault;

mod apps;
mod authz;
mod backup;
mod backup_restore;
mod backup_schedule;
mod backup_verify;
mod board;
mod builds;
mod config;
mod config_snapshot;
mod data;
mod data_access;
mod data_service;
mod deploy;
mod diff;
mod domains;
mod drill;
mod egress;
mod envs;
mod generation;
mod hooks;
mod isolation;
mod jobs;
mod keyed;
mod launch;
mod links;
mod logs;
mod mail;
mod network;
mod pipeline;
mod plans;
mod promote;
mod push;
mod release_ops;
mod reseed;
mod reset;
mod restore;
mod routing;
mod run;
mod schedule;
mod sleep;
mod triggers;
mod when;

pub(crate) use authz::Gate;
pub use board::{Board, EnvCard, Permissions};
pub use data_access::engine as data_engine;
pub use diff::PromotionFilter;
pub use isolation::{Separation, place_envs, secure_home};
pub use logs::LogView;
pub use network::Networks;
pub use push::PushGuard;

use jobs::Jobs;
use keyed::KeyedLocks;
use routing::{EnvKey, Routing};

pub struct ControlPlane {
    home: Home,
    store: Store,
    http_port: u16,
    /// Runs instances and builds (local processes today).
    runtime: Arc<dyn Runtime>,
    /// How environments are kept apart here: see `isolation`.
    separation: Separation,
    /// Each environment's network namespace: see `network`.
    networks: Networks,
    /// Which instance serves each environment, each domain's binding, logins: see `routing`.
    routing: Routing,
    jobs: Arc<Jobs>,
    /// At most `--max-builds` builds at once; the rest wait in line (see `builds`).
    builds: Arc<builds::Builds>,
    /// One job (deploy, rollback, restart, start) or stop/delete per environment at a time.
    env_locks: KeyedLocks<EnvKey>,
    /// One git operation per app mirror at a time.
    app_locks: KeyedLocks<AppName>,
    /// One push per app at a time (held from reading its pushed branches before receive-pack
    /// to the deploys it starts), so each push sees what the one before it left.
    push_locks: KeyedLocks<AppName>,
    /// One domain change (add, switch, rollback, maintenance, remove) at a time, so history
    /// entries and route tables follow each other in order.
    domain_ops: tokio::sync::Mutex<()>,
    /// Held by `links::apply_links` while it computes and sends the links' listeners, so they
    /// reach the data plane in the order of the changes.
    links_lock: tokio::sync::Mutex<()>,
    /// Cancelled when the daemon shuts down: jobs and restores stop at their next wait and
    /// stop any instance they started, so nothing is left running unrecorded.
    closing: CancellationToken,
    /// Jobs and restores in progress; shutdown waits for them before stopping instances.
    tasks: TaskTracker,
    /// Wakes the scheduler when a schedule is added or removed (see `schedule`).
    schedules_changed: tokio::sync::Notify,
    /// Instances an earlier daemon left running, by tag (`launch::instance_tag`), found by
    /// `recover` and routed (or stopped) by `restore`.
    adopted: std::sync::Mutex<std::collections::HashMap<String, Arc<dyn InstanceHandle>>>,
    /// Sleeping environments whose wake job runs: one wake per environment at a time.
    waking: std::sync::Mutex<std::collections::HashSet<EnvKey>>,
    /// Each app's backup repository, opened once (see `backup`).
    backups: backup::Backups,
    /// The keys that seal secret values at rest (see `crate::vault`); written only by a key
    /// rotation.
    vault: std::sync::RwLock<Vault>,
    /// Held (shared) by every change that seals a value, from sealing to commit, and
    /// (exclusive) by a key rotation, so no value is sealed under a key being replaced.
    pub(crate) sealing: tokio::sync::RwLock<()>,
    /// The daemon's own services for environments' third parties: mail caught, outbound
    /// requests governed (see `mail`, `egress`), with the ports they listen on (on the host's
    /// 127.0.0.1 and inside each environment's namespace alike).
    mail: Arc<Catcher>,
    egress: Arc<Egress>,
    ports: ServicePorts,
    /// Each domain's certificate, its files and its renewals (see `crate::tls`).
    certs: crate::tls::Certs,
}

/// Where the daemon's own services listen, on 127.0.0.1.
#[derive(Clone, Copy, Debug)]
pub struct ServicePorts {
    /// The API's port: no environment reaches it through the egress proxy.
    pub api: u16,
    pub smtp: u16,
    pub egress: u16,
}

impl ControlPlane {
    /// Each part the daemon made at start-up, in the order it made them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        home: Home,
        store: Store,
        runtime: Arc<dyn Runtime>,
        separation: Separation,
        networks: Networks,
        vault: Vault,
        ports: ServicePorts,
        certs: crate::tls::Certs,
        max_builds: usize,
    ) -> Arc<ControlPlane> {
        let (dataplane, http_port) = (networks.dataplane().clone(), networks.http_port());
        let closing = CancellationToken::new();
        let tasks = TaskTracker::new();
        Arc::new(ControlPlane {
            jobs: Arc::new(Jobs::new(
                home.clone(),
                store.clone(),
                closing.clone(),
                tasks.clone(),
            )),
            builds: builds::Builds::new(max_builds),
            home,
            store: store.clone(),
            http_port,
            runtime,
            separation,
            networks,
            routing: Routing::new(dataplane),
            env_locks: KeyedLocks::default(),
            app_locks: KeyedLocks::default(),
            push_locks: KeyedLocks::default(),
            domain_ops: tokio::sync::Mutex::new(()),
            links_lock: tokio::sync::Mutex::new(()),
            closing,
            tasks,
            schedules_changed: tokio::sync::Notify::new(),
            adopted: std::sync::Mutex::default(),
            waking: std::sync::Mutex::default(),
            backups: backup::Backups::default(),
            mail: Catcher::new(store.clone(), vault.credentials()),
            egress: Egress::new(
                store.clone(),
                vault.credentials(),
                vec![ports.api, http_port, ports.smtp, ports.egress],
            ),
            vault: std::sync::RwLock::new(vault),
            sealing: tokio::sync::RwLock::new(()),
            ports,
            certs,
        })
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    /// Serve the daemon's own services on the host's listeners (127.0.0.1) until `stop`;
    /// relays are checked with `relay_tls`.
    pub fn serve_services(
        self: &Arc<Self>,
        smtp: tokio::net::TcpListener,
        egress: tokio::net::TcpListener,
        relay_tls: crate::mail::relay::RelayTls,
        stop: &CancellationToken,
    ) {
        tokio::spawn(self.mail.clone().serve(smtp, None, stop.clone()));
        self.relay_caught(relay_tls, stop.clone());
        tokio::spawn(self.egress.clone().serve(egress, None, stop.clone()));
    }

    pub fn metrics(&self) -> &Metrics {
        self.routing.metrics()
    }

    pub(crate) fn dataplane(&self) -> &Arc<turnout_dataplane::DataPlane> {
        self.routing.dataplane()
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn certs(&self) -> &crate::tls::Certs {
        &self.certs
    }

    /// Cancelled when the daemon shuts down or leaves.
    pub(crate) fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    fn url(&self, r: &EnvRef) -> String {
        format!("http://{}:{}", r.internal_host(), self.http_port)
    }
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
    // A token over plain http would travel readable by anyone on the way.
    let plain_http = repo
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
    if token.is_some()
        && plain_http
        && std::env::var_os("TURNOUT_ALLOW_HTTP_TOKEN").is_none_or(|v| v != "1")
    {
        return Err(ControlError::Invalid(format!(
            "refusing to send the token of --token-env over plain http:// to {repo}; use an https:// URL, or set TURNOUT_ALLOW_HTTP_TOKEN=1 where `turnout serve` runs to allow it"
        )));
    }
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
        branch_envs: row.branch_envs,
        sleep_after: row.tier_sleep.clone(),
    }
}

fn release_info(row: &ReleaseRow) -> ReleaseInfo {
    ReleaseInfo {
        id: row.id,
        commit: row.commit.clone(),
        git_ref: row.git_ref.clone(),
        status: row.status,
        job: row.job_id,
        reused_build: row.reused_build,
        error: row.error.clone(),
        created_at: format_timestamp(row.created_at),
        finished_at: row.finished_at.map(format_timestamp),
    }
}

async fn remove_dir(dir: &Path) {
    if let Err(e) = tokio::fs::remove_dir_all(dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(dir = %dir.display(), error = %e, "could not remove directory");
    }
}
