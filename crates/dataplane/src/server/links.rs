//! Links' listeners: 127.0.0.1 at a port inside a linking environment's namespace (or on the
//! host), every request on it routed as the host its `FixedHost` holds (see
//! `Proxy::serve_fixed`), as the control plane sends them.
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tracing::warn;
use turnout_netns::Network;
use turnout_proxy::FixedHost;

use super::{Plane, Registry, lock, network};
use crate::spec::{LinkKey, LinkSpec};

/// A link's port still held by a listener being stopped is tried again this many times, this
/// far apart (2 s in all).
const LINK_BIND_TRIES: u32 = 100;
const LINK_BIND_PAUSE: Duration = Duration::from_millis(20);

impl Plane {
    /// Change the links' listeners. A listener that cannot be had only costs that link: it is
    /// logged, and the next data plane (or the link's next change) tries again.
    pub(super) fn links(&self, set: Vec<LinkSpec>, remove: Vec<LinkKey>) {
        let mut r = lock(&self.registry);
        for key in remove {
            if let Some((_, Some(stop))) = r.links.remove(&key) {
                stop.cancel();
            }
        }
        for LinkSpec { key, host } in set {
            if let Some((fixed, _)) = r.links.get(&key) {
                // The same socket, routed elsewhere from the next connection on.
                fixed.set(host);
                continue;
            }
            r.links.insert(key.clone(), (FixedHost::new(host), None));
            if r.serving && !r.closing {
                self.serve_link(&mut r, &key);
            }
        }
    }

    /// Listen for the link `key`: 127.0.0.1 at its port, in its namespace or on the host, bound
    /// before this returns (so an instance started after the answer cannot be given the port).
    /// The port may still be held for a moment by a listener just stopped (this one's, or a
    /// predecessor's being retired): then the bind is tried again for a short while.
    pub(super) fn serve_link(&self, r: &mut Registry, key: &LinkKey) {
        let network = match &key.namespace {
            None => Network::Host,
            Some(name) => match network(r, name) {
                Ok(network) => network,
                Err(e) => {
                    warn!(namespace = %name, port = key.port, error = %e, "cannot open the namespace of a link's listener");
                    return;
                }
            },
        };
        let Some((host, stop)) = r.links.get_mut(key) else {
            return;
        };
        let token = self.accepting.child_token();
        *stop = Some(token.clone());
        let host = host.clone();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, key.port));
        let bind = move || {
            network
                .listen(addr)
                .and_then(tokio::net::TcpListener::from_std)
        };
        let first = bind();
        let proxy = self.proxy.clone();
        let key = key.clone();
        self.serving.spawn(async move {
            let mut tries = 0;
            let mut bound = first;
            let listener = loop {
                match bound {
                    Ok(listener) => break listener,
                    Err(e) if tries < LINK_BIND_TRIES && e.kind() == std::io::ErrorKind::AddrInUse => {
                        tries += 1;
                        tokio::select! {
                            _ = token.cancelled() => return,
                            _ = tokio::time::sleep(LINK_BIND_PAUSE) => {}
                        }
                        bound = bind();
                    }
                    Err(e) => {
                        warn!(namespace = ?key.namespace, %addr, host = %host.get(), error = %e, "cannot listen for a link");
                        return;
                    }
                }
            };
            if let Err(e) = proxy.serve_fixed(listener, token, host.clone()).await {
                warn!(namespace = ?key.namespace, %addr, host = %host.get(), error = %e, "a link's listener failed");
            }
        });
    }
}
