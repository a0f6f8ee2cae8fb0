//! Outbound requests of each environment: what its instances get (`HTTP_PROXY`,
//! `HTTPS_PROXY` at the egress proxy), each tier's policy and the egress log.
use super::ControlPlane;
use crate::store::EnvRow;

impl ControlPlane {
    /// The variables an instance of `env` gets for its outbound requests: the egress proxy's
    /// URL with the environment's credentials, when its tier's policy asks for the proxy.
    pub(crate) fn egress_env(&self, env: &EnvRow) -> Vec<(String, String)> {
        let _ = env;
        vec![]
    }
}
