//! HTTPS for domains: certificates from ACME or given by their owner, kept in the home, checked,
//! renewed, and handed to the data plane apart from the routes (so a switch never touches them).
use std::path::PathBuf;
use std::time::Duration;

/// Let's Encrypt's production directory: the default ACME directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Where certificates come from for domains with `--tls acme`.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The ACME directory URL.
    pub directory: String,
    /// The account's contact address, if any.
    pub email: Option<String>,
    /// A PEM file of CA certificates the directory's HTTPS may be signed by, besides the public
    /// roots (a private ACME server such as pebble).
    pub ca_cert: Option<PathBuf>,
    /// How long after a failed order the first retry comes; each further failure doubles it.
    pub retry_min: Duration,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            directory: LETS_ENCRYPT.to_owned(),
            email: None,
            ca_cert: None,
            retry_min: Duration::from_secs(60),
        }
    }
}
