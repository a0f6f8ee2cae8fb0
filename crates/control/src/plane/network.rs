//! Each environment's network (see `turnout-netns`): a namespace of its own as root, made on
//! its first build or launch, kept while the environment exists (its instances come and go in
//! it), removed with it. In the namespace: the environment's processes, a listener of the data
//! plane on 127.0.0.1 at the proxy's HTTP port (internal URLs of every environment work from
//! app code, through the proxy and its logins), the mail catcher's and the egress proxy's
//! listeners, and `pasta` for connections out, only when its tier's egress policy is `allow`:
//! under `deny` or `record` the egress proxy inside is its only way out (`apply_outbound`
//! opens or closes it at once when the policy changes).
//!
//! Where namespaces cannot be had (not root; `ip` or `pasta` missing), every environment shares
//! the host's network, which `turnout serve` and `env show` say.
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{info, warn};
use turnout_dataplane::DataPlane;
use turnout_netns::{Network, Outbound, Provider};

use super::ControlPlane;
use crate::error::ControlError;
use crate::store::EnvRow;

/// The environments' networks on this machine.
pub struct Networks {
    provider: Result<Provider, String>,
    dataplane: Arc<DataPlane>,
    http_port: u16,
    /// By the environment's uid, which names its namespace.
    envs: tokio::sync::Mutex<HashMap<u32, EnvNetwork>>,
}

struct EnvNetwork {
    network: Network,
    /// Its way out, when its egress policy is `allow`; `pasta` stops when this is dropped.
    outbound: Option<Outbound>,
    /// Stops the daemon's services' listeners inside the namespace when dropped.
    _inside: DropGuard,
}

impl Networks {
    /// Decided once at start-up (`shared`: the operator's `--shared-network`); `describe` says
    /// what was decided.
    pub fn detect(shared: bool, dataplane: Arc<DataPlane>, http_port: u16) -> Networks {
        Networks {
            provider: if shared {
                Err("--shared-network was given".to_owned())
            } else {
                Provider::detect()
            },
            dataplane,
            http_port,
            envs: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn dataplane(&self) -> &Arc<DataPlane> {
        &self.dataplane
    }

    pub(crate) fn http_port(&self) -> u16 {
        self.http_port
    }

    /// Whether environments have namespaces of their own (so an egress policy is enforced).
    pub(crate) fn namespace_mode(&self) -> bool {
        self.provider.is_ok()
    }

    /// One line for `turnout serve`'s output; `Err` when environments share the host's network.
    pub fn describe(&self) -> Result<&'static str, String> {
        match &self.provider {
            Ok(_) => Ok(
                "each environment has a network namespace of its own; the proxy is the only way in",
            ),
            Err(why) => Err(format!(
                "{why}: environments share the host's network, and code of one can connect to another's instance port directly"
            )),
        }
    }

    /// The name of `env`'s namespace, or `None` where environments share the host's network.
    pub(crate) fn namespace_name(&self, env: &EnvRow) -> Option<String> {
        self.provider.is_ok().then(|| namespace_name(env))
    }

    /// The environments (by uid) whose namespace this daemon holds: a link's listener can be
    /// put there.
    pub(crate) async fn held(&self) -> std::collections::HashSet<u32> {
        self.envs.lock().await.keys().copied().collect()
    }

    /// When this control plane leaves the rest running: leave the namespaces, their ways out
    /// and the data plane's listeners in them to the instances that keep running there.
    pub(crate) async fn detach(&self) {
        for (_, env) in self.envs.lock().await.drain() {
            if let Some(outbound) = env.outbound {
                outbound.detach();
            }
        }
    }

    /// At shutdown, once the instances and the data plane have stopped: stop the namespaces'
    /// ways out, and remove the namespaces (nothing runs in them any more; the next start makes
    /// them again). A daemon that was killed leaves them, and the next start uses them.
    pub(crate) async fn close(&self) {
        let Ok(provider) = &self.provider else {
            return;
        };
        for (uid, env) in self.envs.lock().await.drain() {
            drop(env);
            let name = namespace_of(uid);
            if let Err(e) = provider.remove(&name).await {
                warn!(namespace = %name, error = %e, "could not remove the network namespace");
            }
        }
    }
}

impl ControlPlane {
    /// The network `env`'s processes run in: its namespace, made (with its way out and the
    /// data plane's listener in it) if this daemon has not yet done so.
    pub(crate) async fn network(&self, env: &EnvRow) -> Result<Network, ControlError> {
        let networks = &self.networks;
        let Ok(provider) = &networks.provider else {
            return Ok(Network::Host);
        };
        let mut envs = networks.envs.lock().await;
        if let Some(made) = envs.get(&env.uid) {
            return Ok(made.network.clone());
        }
        let name = namespace_name(env);
        let ns = provider.create(&name).await.map_err(|e| {
            ControlError::internal(format!(
                "cannot make the network namespace {name} of {}/{}: {e}",
                env.app, env.name
            ))
        })?;
        let outbound = self
            .outbound(provider, env.app_id, env.tier, env, &ns)
            .await?;
        let network = Network::Namespace(Arc::new(ns));
        // A port that cannot be had there only costs app code its internal URLs: say so.
        if let Err(e) = networks.dataplane.listen(&name).await {
            warn!(namespace = %name, error = %e, "cannot listen for internal URLs inside the namespace");
        }
        let inside = self.serve_inside(env, &network);
        envs.insert(
            env.uid,
            EnvNetwork {
                network: network.clone(),
                outbound,
                _inside: inside.drop_guard(),
            },
        );
        info!(app = %env.app, env = %env.name, namespace = %name, "network namespace ready");
        Ok(network)
    }

    /// The mail catcher and the egress proxy inside `env`'s namespace, at 127.0.0.1 on the
    /// ports they have on the host, so `SMTP_URL` and `HTTP_PROXY` are the same in both: what
    /// comes in there is `env`'s. A port that cannot be had there costs the environment that
    /// service: say so. Cancel the token to stop them.
    fn serve_inside(&self, env: &EnvRow, network: &Network) -> CancellationToken {
        let stop = CancellationToken::new();
        let listen = |port: u16, what: &str| {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let listener = network.listen(addr).and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            });
            if let Err(e) = &listener {
                warn!(app = %env.app, env = %env.name, %addr, error = %e, "cannot listen inside the namespace for the {what}");
            }
            listener.ok()
        };
        if let Some(l) = listen(self.ports.smtp, "mail catcher") {
            tokio::spawn(self.mail.clone().serve(l, Some(env.id), stop.clone()));
        }
        self.egress.know(env);
        if let Some(l) = listen(self.ports.egress, "egress proxy") {
            tokio::spawn(self.egress.clone().serve(l, Some(env.id), stop.clone()));
        }
        stop
    }

    /// Remove `env`'s namespace, once nothing of it runs any more (environment deleted).
    pub(crate) async fn remove_network(&self, env: &EnvRow) {
        self.egress.forget(env.id);
        let Ok(provider) = &self.networks.provider else {
            return;
        };
        self.networks.envs.lock().await.remove(&env.uid);
        let name = namespace_name(env);
        self.networks.dataplane.unlisten(&name).await;
        if let Err(e) = provider.remove(&name).await {
            warn!(namespace = %name, error = %e, "could not remove the network namespace");
        }
    }
}

impl ControlPlane {
    /// `env`'s way out as its egress policy says: `pasta` under `allow`, else none (and any
    /// `pasta` an earlier run left attached stopped).
    async fn outbound(
        &self,
        provider: &Provider,
        app_id: i64,
        tier: turnout_model::Tier,
        env: &EnvRow,
        ns: &turnout_netns::Namespace,
    ) -> Result<Option<Outbound>, ControlError> {
        let pid_file = self.home.pasta_pid_file(&env.app, &env.name);
        if self.egress_open(app_id, tier) {
            return Ok(Some(provider.keep_outbound(
                ns,
                self.home.logs_dir(&env.app, &env.name).join("network.log"),
                pid_file,
            )));
        }
        provider.no_outbound(ns, &pid_file).await.map_err(|e| {
            ControlError::internal(format!(
                "cannot close the way out of {}/{}'s network namespace: {e}",
                env.app, env.name
            ))
        })?;
        info!(app = %env.app, env = %env.name, "no direct way out: outbound requests go through the egress proxy only");
        Ok(None)
    }

    /// After `app_id`'s policy for `tier` changed: open or close the way out of each of its
    /// environments' namespaces that this daemon holds.
    pub(crate) async fn apply_outbound(
        &self,
        app: &turnout_model::AppName,
        app_id: i64,
        tier: turnout_model::Tier,
    ) {
        let Ok(provider) = &self.networks.provider else {
            return;
        };
        let open = self.egress_open(app_id, tier);
        let app = app.clone();
        let envs = match self
            .store
            .call(move |c| crate::store::q::list_envs(c, Some(&app)))
            .await
        {
            Ok(envs) => envs,
            Err(e) => {
                warn!(error = %e, "cannot list the environments whose way out changes");
                return;
            }
        };
        let mut made = self.networks.envs.lock().await;
        for env in envs.iter().filter(|e| e.tier == tier) {
            let Some(net) = made.get_mut(&env.uid) else {
                continue;
            };
            let Network::Namespace(ns) = &net.network else {
                continue;
            };
            if open == net.outbound.is_some() {
                continue;
            }
            match self.outbound(provider, app_id, tier, env, ns).await {
                Ok(outbound) => net.outbound = outbound,
                Err(e) => {
                    warn!(app = %env.app, env = %env.name, error = %e, "cannot change the namespace's way out")
                }
            }
        }
    }
}

/// `turnout-<uid>`: the uid is unique among the environments on the machine (see the store's
/// uid block), so two homes never share a namespace.
fn namespace_name(env: &EnvRow) -> String {
    namespace_of(env.uid)
}

fn namespace_of(uid: u32) -> String {
    format!("turnout-{uid}")
}
