//! HTTPS: which certificate a handshake gets (by SNI), what plain HTTP is told about HTTPS
//! (redirects), what browsers are told (HSTS), and the ACME challenges the proxy answers while
//! an order waits.
//!
//! Like the route table, a [`TlsTable`] is built whole and swapped in atomically
//! ([`Proxy::apply_tls`](crate::Proxy::apply_tls)); a handshake looks its name up in the table
//! current when it starts. It is apart from the routes, so a domain switch or rollback never
//! changes the certificate a domain is served with. The only work on a handshake beyond TLS
//! itself is one `ArcSwap` load and a hash lookup; certificates are parsed when the table is
//! built, never on the connection.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// The ALPN protocol of ACME's TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Where ACME's HTTP-01 validation asks for a token (RFC 8555 §8.3).
pub(crate) const ACME_HTTP_PREFIX: &str = "/.well-known/acme-challenge/";

/// One host's HTTPS.
#[derive(Debug, Clone)]
pub struct HostTls {
    pub cert: Arc<CertifiedKey>,
    /// Plain-HTTP requests for the host get a 308 to `https://`.
    pub redirect: bool,
    /// The `Strict-Transport-Security` value sent on answers over HTTPS, if any.
    pub hsts: Option<HeaderValue>,
}

impl HostTls {
    /// `hsts_max_age` in seconds; `None` sends no HSTS.
    pub fn new(cert: Arc<CertifiedKey>, redirect: bool, hsts_max_age: Option<u64>) -> HostTls {
        let hsts = hsts_max_age.map(|age| {
            HeaderValue::from_str(&format!("max-age={age}")).expect("digits are a valid value")
        });
        HostTls {
            cert,
            redirect,
            hsts,
        }
    }
}

/// Immutable snapshot of the proxy's HTTPS settings.
#[derive(Debug, Default, Clone)]
pub struct TlsTable {
    exact: HashMap<Arc<str>, HostTls>,
    /// `*.example.com` under `example.com`: one label below it, as X.509 wildcards match.
    wildcard: HashMap<Arc<str>, HostTls>,
    /// TLS-ALPN-01 challenge certificates by host.
    alpn: HashMap<Arc<str>, Arc<CertifiedKey>>,
    /// HTTP-01 key authorizations by token.
    http01: HashMap<Box<str>, Bytes>,
    /// The HTTPS listener's port, for redirects (omitted from `Location` when 443).
    https_port: Option<u16>,
}

impl TlsTable {
    /// Serve `host` (`shop.example.com` or `*.example.com`) with `tls`.
    pub fn insert(&mut self, host: &str, tls: HostTls) {
        let name = host.to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(suffix) => self.wildcard.insert(Arc::from(suffix), tls),
            None => self.exact.insert(Arc::from(name), tls),
        };
    }

    pub fn remove(&mut self, host: &str) {
        let name = host.to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(suffix) => self.wildcard.remove(suffix),
            None => self.exact.remove(name.as_str()),
        };
    }

    /// Answer HTTP-01 validation of `token` with `key_authorization`.
    pub fn insert_http01(&mut self, token: &str, key_authorization: &str) {
        self.http01.insert(
            token.into(),
            Bytes::copy_from_slice(key_authorization.as_bytes()),
        );
    }

    pub fn remove_http01(&mut self, token: &str) {
        self.http01.remove(token);
    }

    /// Answer TLS-ALPN-01 validation of `host` with `cert`.
    pub fn insert_alpn(&mut self, host: &str, cert: Arc<CertifiedKey>) {
        self.alpn.insert(Arc::from(host.to_ascii_lowercase()), cert);
    }

    pub fn remove_alpn(&mut self, host: &str) {
        self.alpn.remove(host.to_ascii_lowercase().as_str());
    }

    pub fn set_https_port(&mut self, port: Option<u16>) {
        self.https_port = port;
    }

    /// Hosts with a certificate, for the log.
    pub(crate) fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// The settings for `host` (a lower-case name without port): its own, else its parent's
    /// wildcard.
    pub fn find(&self, host: &str) -> Option<&HostTls> {
        self.exact.get(host).or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.wildcard.get(parent)
        })
    }

    /// The settings for a Host header's value (any case, port allowed).
    pub(crate) fn for_host_header(&self, host: &str) -> Option<&HostTls> {
        if self.exact.is_empty() && self.wildcard.is_empty() {
            return None;
        }
        let name = host_name(host);
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.find(&name.to_ascii_lowercase())
        } else {
            self.find(name)
        }
    }

    /// The key authorization for an HTTP-01 request's path, if it asks for a token in force.
    pub(crate) fn http01(&self, path: &str) -> Option<&Bytes> {
        if self.http01.is_empty() {
            return None;
        }
        self.http01.get(path.strip_prefix(ACME_HTTP_PREFIX)?)
    }

    /// Whether a plain-HTTP request for `host` (a Host header) and `path` is answered by the
    /// proxy itself (a redirect or an HTTP-01 answer) rather than relayed.
    pub(crate) fn intercepts_plain(&self, host: &str, path: &str) -> bool {
        self.http01(path).is_some() || self.for_host_header(host).is_some_and(|t| t.redirect)
    }

    /// `https://` for `host` (a Host header) and `path_and_query`.
    pub(crate) fn https_location(&self, host: &str, path_and_query: &str) -> String {
        let name = host_name(host);
        match self.https_port {
            Some(443) | None => format!("https://{name}{path_and_query}"),
            Some(port) => format!("https://{name}:{port}{path_and_query}"),
        }
    }
}

/// A Host header's name, without its port (`[::1]:80` keeps its brackets).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(v6, _)| &host[..=v6.len()]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Parse a PEM chain (leaf first) and its PEM private key into what a handshake serves, checking
/// that the key is the leaf's. The error says what is wrong, for a message that names the file.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, String> {
    let (chain, key) = parse_pem(chain_pem, key_pem)?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            "the private key does not match the certificate (the first one in the file)".to_owned()
        }
        other => format!("the key cannot sign: {other}"),
    })
}

/// The certificate a TLS-ALPN-01 validation gets (RFC 8737 §3). Its acmeIdentifier extension is
/// critical and unknown to webpki, which therefore refuses to parse it, so the key is not
/// checked against it here as [`certified_key`] does: the control plane made the two together.
pub fn challenge_key(chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, String> {
    let (chain, key) = parse_pem(chain_pem, key_pem)?;
    let key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the key cannot sign: {e}"))?;
    Ok(CertifiedKey::new(chain, key))
}

/// A PEM chain (at least one certificate) and a PEM private key.
fn parse_pem(
    chain_pem: &str,
    key_pem: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate file is not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err(
            "the certificate file holds no certificate (`-----BEGIN CERTIFICATE-----`)".into(),
        );
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("the key file holds no private key: {e}"))?;
    Ok((chain, key))
}

/// Picks each handshake's certificate from the table in force.
#[derive(Debug)]
struct Resolver(Arc<ArcSwap<TlsTable>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls has lower-cased it already: no allocation here.
        let name = hello.server_name()?;
        let table = self.0.load();
        let acme = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        if acme {
            return table.alpn.get(name).cloned();
        }
        table.find(name).map(|t| t.cert.clone())
    }
}

/// The server side of every handshake: certificates from `table`, ALPN `h2` then `http/1.1`
/// (and `acme-tls/1`, which gets a challenge certificate and nothing else).
pub(crate) fn server_config(table: Arc<ArcSwap<TlsTable>>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(table)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_header_loses_its_port_but_not_ipv6_brackets() {
        assert_eq!(host_name("shop.example.com:8080"), "shop.example.com");
        assert_eq!(host_name("shop.example.com"), "shop.example.com");
        assert_eq!(host_name("[::1]:8443"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
    }

    #[test]
    fn redirects_name_the_https_port_unless_it_is_443() {
        let mut table = TlsTable::default();
        table.set_https_port(Some(8443));
        assert_eq!(
            table.https_location("shop.example.com:8080", "/a?b=1"),
            "https://shop.example.com:8443/a?b=1"
        );
        table.set_https_port(Some(443));
        assert_eq!(
            table.https_location("shop.example.com", "/"),
            "https://shop.example.com/"
        );
    }

    #[test]
    fn http01_answers_only_tokens_in_force_under_the_acme_path() {
        let mut table = TlsTable::default();
        table.insert_http01("tok", "tok.thumb");
        assert_eq!(
            table
                .http01("/.well-known/acme-challenge/tok")
                .map(|b| &b[..]),
            Some(&b"tok.thumb"[..])
        );
        assert!(table.http01("/.well-known/acme-challenge/other").is_none());
        assert!(table.http01("/tok").is_none());
        table.remove_http01("tok");
        assert!(table.http01("/.well-known/acme-challenge/tok").is_none());
    }

    #[test]
    fn a_bad_key_or_chain_is_refused_with_what_is_wrong() {
        assert!(
            certified_key("", "")
                .unwrap_err()
                .contains("no certificate")
        );
        assert!(
            certified_key("not pem", "")
                .unwrap_err()
                .contains("no certificate")
        );
    }
}
