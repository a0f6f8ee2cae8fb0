//! The egress proxy: an HTTP/1.1 forward proxy on 127.0.0.1 (one per daemon, and one inside
//! each environment's network namespace on the same port) that environments' outbound HTTP
//! (absolute-form requests) and HTTPS (`CONNECT`, decided on the host name, never
//! intercepted) goes through, decided per app and tier (allow, deny, record) and logged.
//!
//! - Whose request it is: the namespace it came in through, else the credentials in the
//!   environment's `HTTP_PROXY` (user `APP.ENV`, password `Credentials::credential`); a
//!   missing or wrong credential on the host's listener, or a wrong one anywhere, gets 407.
//! - `policy`: what a tier's policy says about a host, and which addresses nobody reaches
//!   (the daemon's own ports always; loopback, private and link-local addresses unless the host
//!   is listed by its exact name). The proxy connects to the address it checked: no second
//!   lookup a rebinding DNS server could answer differently.
//! - `proxy`: one client connection (hyper's HTTP/1.1 server, bounded heads, idle timeouts).
//! - `log`: every request, in every mode, goes to the store in batches through a channel;
//!   nothing on a request's path waits for the store.
//!
//! The environments and policies the proxy decides with are a snapshot in memory
//! (`Table`), loaded at start-up, changed when a policy is set or an environment launches;
//! never read from the store per request.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use turnout_model::{EgressPolicy, Tier};

use crate::error::ControlError;
use crate::store::egress::{self as eq, LogRecord};
use crate::store::{EnvRow, Store};
use crate::vault::{Credentials, service_user};

mod log;
mod policy;
mod proxy;

/// Client connections served at once by one listener; more wait to be accepted.
const MAX_CONNECTIONS: usize = 1024;

pub struct Egress {
    store: Store,
    credentials: Credentials,
    /// The daemon's own ports (API, proxy, SMTP, egress): refused on every local address.
    own_ports: Vec<u16>,
    /// Read per request without a lock (never held across an await), replaced whole on a
    /// change.
    table: ArcSwap<Table>,
    /// Held by a change while it copies, edits and stores the table, so two changes never
    /// lose one another's edit; requests never take it.
    changing: Mutex<()>,
    log: log::LogSender,
    /// The log's receiving end until `load` starts the writer.
    log_rx: Mutex<Option<log::LogReceiver>>,
}

/// What the proxy knows of environments and policies.
#[derive(Default, Clone)]
struct Table {
    envs: HashMap<i64, Arc<EnvEntry>>,
    /// `APP.ENV` (the proxy user name) to the environment's id.
    users: HashMap<String, i64>,
    /// Policies set through the CLI; a tier without one has its default.
    policies: HashMap<(i64, Tier), Arc<EgressPolicy>>,
}

/// An environment as the proxy sees it.
pub(crate) use crate::store::egress::ProxyEnv as EnvEntry;

impl EnvEntry {
    fn user(&self) -> String {
        service_user(&self.app, &self.env)
    }
}

impl Egress {
    /// `own_ports`: the daemon's own ports, which no environment reaches through the proxy.
    pub fn new(store: Store, credentials: Credentials, own_ports: Vec<u16>) -> Arc<Egress> {
        let (log, log_rx) = log::channel();
        Arc::new(Egress {
            store,
            credentials,
            own_ports,
            table: ArcSwap::default(),
            changing: Mutex::new(()),
            log,
            log_rx: Mutex::new(Some(log_rx)),
        })
    }

    /// At start-up, before any listener serves: load the environments and policies, and start
    /// the log's writer.
    pub async fn load(&self) -> Result<(), ControlError> {
        let (envs, policies) = self
            .store
            .call(|c| Ok((eq::all_envs(c)?, eq::all_policies(c)?)))
            .await?;
        let mut table = Table::default();
        for env in envs {
            table.insert(env);
        }
        for p in policies {
            table
                .policies
                .insert((p.app_id, p.tier), Arc::new(p.policy));
        }
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        self.table.store(Arc::new(table));
        let rx = self.log_rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rx) = rx {
            tokio::spawn(log::write_batches(self.store.clone(), rx));
        }
        Ok(())
    }

    fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    fn change(&self, f: impl FnOnce(&mut Table)) {
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let mut table = Table::clone(&self.table.load());
        f(&mut table);
        self.table.store(Arc::new(table));
    }

    /// Make sure the proxy knows `env` (a new environment's first build or launch).
    pub(crate) fn know(&self, env: &EnvRow) {
        let known = self
            .table()
            .envs
            .get(&env.id)
            .is_some_and(|e| e.tier == env.tier && e.app == env.app && e.env == env.name);
        if !known {
            self.change(|t| {
                t.insert(EnvEntry {
                    id: env.id,
                    app_id: env.app_id,
                    app: env.app.clone(),
                    env: env.name.clone(),
                    tier: env.tier,
                });
            });
        }
    }

    /// Forget a deleted environment: its credentials stop working at once.
    pub(crate) fn forget(&self, env_id: i64) {
        self.change(|t| {
            if let Some(e) = t.envs.remove(&env_id) {
                t.users.remove(&e.user());
            }
        });
    }

    /// Forget a deleted app's policies.
    pub(crate) fn forget_app(&self, app_id: i64) {
        self.change(|t| t.policies.retain(|(app, _), _| *app != app_id));
    }

    /// The policy of `app_id`'s `tier` and whether it was set (else it is the default).
    pub(crate) fn policy(&self, app_id: i64, tier: Tier) -> (Arc<EgressPolicy>, bool) {
        match self.table().policies.get(&(app_id, tier)) {
            Some(p) => (p.clone(), true),
            None => (Arc::new(EgressPolicy::tier_default(tier)), false),
        }
    }

    /// A policy the store now holds (`None`: back to the default).
    pub(crate) fn set_policy(&self, app_id: i64, tier: Tier, policy: Option<EgressPolicy>) {
        self.change(|t| match policy {
            Some(p) => {
                t.policies.insert((app_id, tier), Arc::new(p));
            }
            None => {
                t.policies.remove(&(app_id, tier));
            }
        });
    }

    /// Serve the proxy on `listener` until `stop`. `inside`: the environment (id) whose
    /// namespace the listener is in; None for the host's listener.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        inside: Option<i64>,
        stop: CancellationToken,
    ) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                () = stop.cancelled() => return,
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = stop.cancelled() => return,
            };
            match accepted {
                Ok((stream, _)) => {
                    let (egress, stop) = (self.clone(), stop.clone());
                    tokio::spawn(async move {
                        tokio::select! {
                            () = proxy::connection(egress, stream, inside) => {}
                            () = stop.cancelled() => {}
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    warn!(error = %e, "egress proxy: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn record(&self, record: LogRecord) {
        self.log.send(record);
    }
}

impl Table {
    fn insert(&mut self, entry: EnvEntry) {
        if let Some(old) = self.envs.get(&entry.id) {
            self.users.remove(&old.user());
        }
        self.users.insert(entry.user(), entry.id);
        self.envs.insert(entry.id, Arc::new(entry));
    }
}
