//! The data plane's HTTPS: the hosts' certificates and settings, and the ACME challenges, as the
//! control plane sends them, made into the proxy's `TlsTable`.
use std::sync::Arc;

use tracing::warn;
use turnout_proxy::{HostTls, certified_key};

use super::{Plane, lock};
use crate::spec::{ChallengeSpec, TlsSpec};

impl Plane {
    /// Change these hosts' HTTPS and apply the TLS table. A certificate that cannot be used
    /// (the control plane checks them first, so only a file changed behind its back) leaves
    /// its host without HTTPS, said in the log; the other hosts are not held back by it.
    pub(super) fn apply_tls(&self, set: Vec<(String, TlsSpec)>, remove: Vec<String>) {
        let mut r = lock(&self.registry);
        let r = &mut *r;
        for host in remove {
            r.tls.remove(&host);
            r.tls_table.remove(&host);
        }
        for (host, spec) in set {
            if r.tls.get(&host) == Some(&spec) {
                continue;
            }
            match certified_key(&spec.chain_pem, &spec.key_pem) {
                Ok(cert) => {
                    let tls = HostTls::new(Arc::new(cert), spec.redirect, spec.hsts_max_age);
                    r.tls_table.insert(&host, tls);
                    r.tls.insert(host, spec);
                }
                Err(e) => {
                    warn!(host, error = %e, "cannot serve this certificate; the host has no HTTPS");
                    r.tls_table.remove(&host);
                    r.tls.remove(&host);
                }
            }
        }
        self.proxy.apply_tls(r.tls_table.clone());
    }

    pub(super) fn challenge(&self, spec: ChallengeSpec, on: bool) -> Result<(), String> {
        let mut r = lock(&self.registry);
        match (spec, on) {
            (
                ChallengeSpec::Http {
                    token,
                    key_authorization,
                },
                true,
            ) => r.tls_table.insert_http01(&token, &key_authorization),
            (ChallengeSpec::Http { token, .. }, false) => r.tls_table.remove_http01(&token),
            (
                ChallengeSpec::TlsAlpn {
                    host,
                    chain_pem,
                    key_pem,
                },
                true,
            ) => {
                let cert = turnout_proxy::challenge_key(&chain_pem, &key_pem)
                    .map_err(|e| format!("the TLS-ALPN-01 certificate for {host}: {e}"))?;
                r.tls_table.insert_alpn(&host, Arc::new(cert));
            }
            (ChallengeSpec::TlsAlpn { host, .. }, false) => r.tls_table.remove_alpn(&host),
        }
        self.proxy.apply_tls(r.tls_table.clone());
        Ok(())
    }
}
