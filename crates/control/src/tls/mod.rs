//! HTTPS for domains: certificates from ACME or given by their owner, kept in the home, checked,
//! renewed, and handed to the data plane apart from the routes (so a switch never touches them).
//!
//! - `check`: what a certificate must be before it is served (PEM, key, chain, names, dates).
//! - `acme`: the ACME account and one order (challenges published through the data plane).
//! - `manager`: the control plane's operations on certificates and TLS settings, the one
//!   function that hands the data plane every certificate (`apply_tls`), and the renewal task.
//!
//! [`Certs`] owns the certificate files in the home and what the data plane serves of them: its
//! `changes` lock is held by every change to either (files, the store's TLS rows, the table sent
//! to the data plane), never across an ACME order. Lock order: the control plane's `domain_ops`
//! before `changes`. Nothing here runs on the proxy's request path.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_rustls::rustls;
use turnout_model::DomainName;

mod acme;
pub mod check;
mod local_ca;
mod manager;

pub use local_ca::LocalCa;

/// A TLS client trusting the public roots, plus every certificate in the PEM file `extra_ca`
/// if given (a company's own CA, a private ACME server's); an error names the file and what is
/// wrong with it. The ACME client and the mail relay both use it.
pub(crate) fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(file) = extra_ca {
        let shown = file.display();
        let pem = std::fs::read(file).map_err(|e| format!("cannot read {shown}: {e}"))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("{shown} is not PEM certificates: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("{shown}: a certificate cannot be a root: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!(
                "{shown} holds no certificate (\"-----BEGIN CERTIFICATE-----\" blocks)"
            ));
        }
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

pub(crate) use manager::cert_info;

/// Let's Encrypt's production directory: the default ACME directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The longest wait between two failed orders of one domain.
const MAX_BACKOFF: Duration = Duration::from_secs(86_400);

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

/// The control plane's certificates: their files, the ACME client, the renewal task's wake-up.
pub struct Certs {
    /// `<home>/certs`: one directory per domain with `fullchain.pem` and `key.pem` (0600).
    dir: PathBuf,
    /// The HTTPS listener's port, if the proxy has one (TLS-ALPN-01 is answered there).
    https_port: Option<u16>,
    retry_min: Duration,
    acme: acme::Acme,
    /// Wakes the renewal task: a domain turned to ACME, `cert renew`, start-up.
    kick: tokio::sync::Notify,
    /// Signs internal URLs' certificates, when the proxy serves HTTPS.
    local_ca: Option<LocalCa>,
    /// Held by every change to the files, the TLS rows or the table sent to the data plane, so
    /// the table sent last is built from the state written last.
    changes: tokio::sync::Mutex<()>,
}

impl Certs {
    /// Read and check `--acme-ca-cert` now: a bad file stops the daemon, naming it.
    pub fn new(home: &Path, acme: AcmeConfig) -> Result<Certs, String> {
        Ok(Certs {
            dir: home.join("certs"),
            https_port: None,
            retry_min: acme.retry_min,
            acme: acme::Acme::new(home, acme)?,
            kick: tokio::sync::Notify::new(),
            local_ca: None,
            changes: tokio::sync::Mutex::new(()),
        })
    }

    /// Serve internal URLs over HTTPS too, with certificates `local_ca` signs.
    pub fn with_local_ca(self, local_ca: Option<LocalCa>) -> Certs {
        Certs { local_ca, ..self }
    }

    /// The port the proxy's HTTPS listener has, once it is known.
    pub fn with_https_port(self, https_port: Option<u16>) -> Certs {
        Certs { https_port, ..self }
    }

    /// Run the renewal task's next pass now.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// A domain's directory: its name, with a wildcard's `*` written `_` (no DNS label holds
    /// an underscore, so it names no other domain).
    fn domain_dir(&self, domain: &DomainName) -> PathBuf {
        self.dir.join(domain.as_str().replace('*', "_"))
    }

    fn chain_file(&self, domain: &DomainName) -> PathBuf {
        self.domain_dir(domain).join("fullchain.pem")
    }

    fn key_file(&self, domain: &DomainName) -> PathBuf {
        self.domain_dir(domain).join("key.pem")
    }

    /// A domain's certificate chain and key, if both files are there.
    fn read(&self, domain: &DomainName) -> Option<(String, String)> {
        let chain = std::fs::read_to_string(self.chain_file(domain)).ok()?;
        let key = std::fs::read_to_string(self.key_file(domain)).ok()?;
        Some((chain, key))
    }

    /// Write a domain's chain and key (0600), each through a temporary file renamed over the
    /// old one, so no file is ever seen half written. Readers hold `changes` as writers do;
    /// should the daemon die between the two renames, the next start finds a pair that does
    /// not match and skips it (see `apply_tls`).
    fn write(&self, domain: &DomainName, chain_pem: &str, key_pem: &str) -> std::io::Result<()> {
        let dir = self.domain_dir(domain);
        std::fs::create_dir_all(&dir)?;
        set_mode(&self.dir, 0o700)?;
        set_mode(&dir, 0o700)?;
        write_atomic(&self.key_file(domain), key_pem.as_bytes())?;
        write_atomic(&self.chain_file(domain), chain_pem.as_bytes())
    }

    fn remove(&self, domain: &DomainName) {
        let dir = self.domain_dir(domain);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a certificate's directory");
        }
    }
}

/// The wait before the next order after `failures` failed ones in a row: `retry_min`, doubled
/// for each failure after the first, at most a day.
fn backoff(retry_min: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    retry_min.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Write `bytes` to `path` (mode 0600) through a temporary file beside it and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_minimum_up_to_a_day() {
        let waits: Vec<u64> = [1, 2, 3, 4, 12, 40]
            .into_iter()
            .map(|f| backoff(Duration::from_secs(60), f).as_secs())
            .collect();
        assert_eq!(waits, [60, 120, 240, 480, 86_400, 86_400]);
    }

    #[test]
    fn files_are_written_whole_and_readable_only_by_the_daemon() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let certs = Certs::new(dir.path(), AcmeConfig::default()).unwrap();
        let domain: DomainName = "*.example.com".parse().unwrap();
        certs.write(&domain, "chain", "key").unwrap();
        assert_eq!(certs.read(&domain), Some(("chain".into(), "key".into())));
        let key = dir.path().join("certs/_.example.com/key.pem");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(key.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        certs.remove(&domain);
        assert_eq!(certs.read(&domain), None);
    }
}
