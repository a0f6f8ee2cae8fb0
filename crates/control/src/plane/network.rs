//! Each environment's network (see `turnout-netns`): a namespace of its own as root, made on
//! its first build or launch, kept while the environment exists (its instances come and go in
//! it), removed with it. In the namespace: the environment's processes, a listener of the proxy
//! on 127.0.0.1 at the proxy's HTTP port (internal URLs of every environment work from app code,
//! through the proxy and its logins), and `pasta` for connections out.
//!
//! Where namespaces cannot be had (not root; `ip` or `pasta` missing), every environment shares
//! the host's network, which `turnout serve` and `env show` say.
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use turnout_netns::{Network, Outbound, Provider};
use turnout_proxy::Proxy;

use super::ControlPlane;
use crate::error::ControlError;
use crate::store::EnvRow;

/// Where the proxy serves, for its listeners inside the namespaces.
pub struct ProxyEndpoint {
    pub proxy: Arc<Proxy>,
    /// The proxy's own runtime: the namespaces' listeners are served there too.
    pub runtime: tokio::runtime::Handle,
    pub http_port: u16,
    /// The proxy's shutdown: the namespaces' listeners stop with the main one.
    pub shutdown: CancellationToken,
}

/// The environments' networks on this machine.
pub struct Networks {
    provider: Result<Provider, String>,
    proxy: ProxyEndpoint,
    /// By the environment's uid, which names its namespace.
    envs: tokio::sync::Mutex<HashMap<u32, EnvNetwork>>,
}

struct EnvNetwork {
    network: Network,
    /// Its way out; `pasta` stops when this is dropped.
    outbound: Outbound,
    /// Stops the proxy's listener inside the namespace.
    listener: CancellationToken,
}

impl Networks {
    /// Decided once at start-up (`shared`: the operator's `--shared-network`); `describe` says
    /// what was decided.
    pub fn detect(shared: bool, proxy: ProxyEndpoint) -> Networks {
        Networks {
            provider: if shared {
                Err("--shared-network was given".to_owned())
            } else {
                Provider::detect()
            },
            proxy,
            envs: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy.proxy
    }

    pub(crate) fn http_port(&self) -> u16 {
        self.proxy.http_port
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

    /// At an upgrade: stop the namespaces' listeners (the successor makes its own) but leave
    /// the namespaces and their ways out to the instances that keep running in them.
    pub(crate) async fn detach(&self) {
        for (_, env) in self.envs.lock().await.drain() {
            env.listener.cancel();
            env.outbound.detach();
        }
    }

    /// At shutdown, once the instances have stopped: stop the namespaces' listeners and ways
    /// out, and remove the namespaces (nothing runs in them any more; the next start makes
    /// them again). A daemon that was killed leaves them, and the next start uses them.
    pub(crate) async fn close(&self) {
        let Ok(provider) = &self.provider else {
            return;
        };
        for (uid, env) in self.envs.lock().await.drain() {
            env.listener.cancel();
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
    /// proxy's listener in it) if this daemon has not yet done so.
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
        let outbound = provider.keep_outbound(
            &ns,
            self.home.logs_dir(&env.app, &env.name).join("network.log"),
            self.home.run_dir(&env.app, &env.name).join("pasta.pid"),
        );
        let network = Network::Namespace(Arc::new(ns));
        let listener = networks.proxy.shutdown.child_token();
        serve_inside(&networks.proxy, &network, listener.clone());
        envs.insert(
            env.uid,
            EnvNetwork {
                network: network.clone(),
                outbound,
                listener,
            },
        );
        info!(app = %env.app, env = %env.name, namespace = %name, "network namespace ready");
        Ok(network)
    }

    /// Remove `env`'s namespace, once nothing of it runs any more (environment deleted).
    pub(crate) async fn remove_network(&self, env: &EnvRow) {
        let Ok(provider) = &self.networks.provider else {
            return;
        };
        if let Some(made) = self.networks.envs.lock().await.remove(&env.uid) {
            made.listener.cancel();
        }
        let name = namespace_name(env);
        if let Err(e) = provider.remove(&name).await {
            warn!(namespace = %name, error = %e, "could not remove the network namespace");
        }
    }
}

/// Serve the proxy on 127.0.0.1 at its HTTP port inside `network`, on the proxy's runtime, until
/// `stop`. A port that cannot be had there only costs app code its internal URLs: say so.
fn serve_inside(endpoint: &ProxyEndpoint, network: &Network, stop: CancellationToken) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, endpoint.http_port));
    let listener = match network.listen(addr) {
        Ok(listener) => listener,
        Err(e) => {
            warn!(namespace = ?network.name(), %addr, error = %e, "cannot listen for internal URLs inside the namespace");
            return;
        }
    };
    let proxy = endpoint.proxy.clone();
    let name = network.name().unwrap_or_default().to_owned();
    endpoint.runtime.spawn(async move {
        let served = match TcpListener::from_std(listener) {
            Ok(listener) => proxy.serve(listener, stop).await,
            Err(e) => Err(e),
        };
        if let Err(e) = served {
            warn!(namespace = %name, error = %e, "the proxy's listener inside the namespace failed");
        }
    });
}

/// `turnout-<uid>`: the uid is unique among the environments on the machine (see the store's
/// uid block), so two homes never share a namespace.
fn namespace_name(env: &EnvRow) -> String {
    namespace_of(env.uid)
}

fn namespace_of(uid: u32) -> String {
    format!("turnout-{uid}")
}
