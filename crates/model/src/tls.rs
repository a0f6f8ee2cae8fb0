//! HTTPS per domain: where its certificate comes from, what plain HTTP and browsers are told,
//! and the certificates as `turnout cert list` shows them.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::DomainName;

/// The longest `Strict-Transport-Security: max-age` a domain may send: two years (the
/// HSTS preload list asks for one, browsers cap it near two).
pub const MAX_HSTS_MAX_AGE: u64 = 2 * 365 * 86_400;

/// The largest PEM file `cert add` takes (a chain of a few certificates is a few KiB).
pub const MAX_PEM_BYTES: usize = 256 * 1024;

/// Where a domain's certificate comes from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// No HTTPS: the domain is served over plain HTTP only.
    #[default]
    Off,
    /// Certificates from the daemon's ACME directory, renewed by themselves.
    Acme,
    /// Its owner's own certificate (`turnout cert add`).
    Manual,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Off => "off",
            TlsMode::Acme => "acme",
            TlsMode::Manual => "manual",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(TlsMode::Off),
            "acme" => Ok(TlsMode::Acme),
            "manual" => Ok(TlsMode::Manual),
            other => Err(format!(
                "unknown TLS mode '{other}': off, acme or manual (add an own certificate with `turnout cert add`)"
            )),
        }
    }
}

/// How an ACME server checks that Turnout answers for a domain (RFC 8555 §8.3, RFC 8737).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
pub enum ChallengeKind {
    /// A token over plain HTTP on port 80 (the proxy's HTTP listener).
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// A special certificate in a TLS handshake on port 443 (the proxy's HTTPS listener).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl ChallengeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

impl fmt::Display for ChallengeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChallengeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http-01" => Ok(ChallengeKind::Http01),
            "tls-alpn-01" => Ok(ChallengeKind::TlsAlpn01),
            other => Err(format!(
                "unknown ACME challenge '{other}': http-01 or tls-alpn-01"
            )),
        }
    }
}

/// A domain's HTTPS settings, kept with the domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TlsSettings {
    pub mode: TlsMode,
    /// Plain-HTTP requests get a 308 to `https://` once a certificate is served.
    pub redirect: bool,
    /// `Strict-Transport-Security: max-age=N` on answers over HTTPS, when set.
    pub hsts_max_age: Option<u64>,
    /// The ACME challenge its orders answer.
    pub challenge: ChallengeKind,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            mode: TlsMode::Off,
            redirect: true,
            hsts_max_age: None,
            challenge: ChallengeKind::Http01,
        }
    }
}

/// `turnout domain tls DOMAIN …`: what changes (an absent field is left as it is).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTls {
    /// `off` or `acme` (`manual` comes from `cert add`).
    #[serde(default)]
    pub mode: Option<TlsMode>,
    #[serde(default)]
    pub redirect: Option<bool>,
    /// Seconds, at most [`MAX_HSTS_MAX_AGE`]; 0 turns HSTS off.
    #[serde(default)]
    pub hsts_max_age: Option<u64>,
    #[serde(default)]
    pub challenge: Option<ChallengeKind>,
}

/// `turnout cert add DOMAIN --cert FILE --key FILE`: the files' contents (PEM) and their names,
/// for messages that say which file is wrong.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddCert {
    pub chain_pem: String,
    pub key_pem: String,
    pub cert_file: String,
    pub key_file: String,
}

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CertSource {
    Acme,
    Manual,
}

impl CertSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CertSource::Acme => "acme",
            CertSource::Manual => "manual",
        }
    }
}

impl FromStr for CertSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "acme" => Ok(CertSource::Acme),
            "manual" => Ok(CertSource::Manual),
            other => Err(format!("unknown certificate source '{other}'")),
        }
    }
}

/// A domain's certificate and, for ACME, its renewal state. A domain with `--tls acme` whose
/// first order has not succeeded yet has one with no certificate fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CertInfo {
    pub domain: DomainName,
    pub source: CertSource,
    /// The issuer's distinguished name (`CN=…, O=…`); none before the first certificate.
    pub issuer: Option<String>,
    /// The names the certificate covers (its subjectAltNames).
    pub names: Vec<String>,
    /// Hex, as `openssl x509 -serial` shows it.
    pub serial: Option<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    /// Being served: the domain's TLS is on and the certificate is valid now.
    pub served: bool,
    /// ACME: when the next order is due (a third of the lifetime before expiry, or the next
    /// retry after a failure).
    pub next_renewal: Option<String>,
    /// ACME: the last order's error (the ACME server's problem detail), until one succeeds.
    pub last_error: Option<String>,
    /// ACME: failed orders in a row.
    pub failures: u32,
}
