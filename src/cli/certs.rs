//! The commands for HTTPS: `cert …` (each domain's certificate) and the TLS flags of
//! `domain add` and `domain tls`.
use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use turnout_model::{ChallengeKind, DomainName, MAX_HSTS_MAX_AGE, TlsMode};

#[derive(Subcommand)]
pub enum CertCommand {
    /// Serve a domain with your own certificate: the chain (leaf first, then its
    /// intermediates: fullchain.pem) and its private key, both PEM. Refused when the key does
    /// not match, the chain is incomplete, it does not cover the domain or is not valid now
    Add {
        /// The domain (a wildcard domain takes a wildcard certificate: '*.example.com')
        domain: DomainName,
        /// The certificate chain, PEM
        #[arg(long = "cert", value_name = "FILE")]
        cert: PathBuf,
        /// Its private key, PEM
        #[arg(long = "key", value_name = "FILE")]
        key: PathBuf,
    },
    /// Each domain's certificate: source (acme, manual), issuer, expiry, and for ACME the next
    /// renewal, the last error and failures in a row
    List,
    /// Forget a domain's certificate; it is then served over plain HTTP only (its TLS is off)
    Remove { domain: DomainName },
    /// Order a domain's ACME certificate now rather than when due (in the background: see
    /// `turnout cert list`)
    Renew { domain: DomainName },
}

/// `domain add --tls`.
#[derive(Clone, Copy, ValueEnum)]
pub enum TlsArg {
    /// Plain HTTP only (an own certificate can be added later with `turnout cert add`)
    Off,
    /// A certificate from the daemon's ACME directory, ordered now and renewed by itself
    Acme,
}

impl From<TlsArg> for TlsMode {
    fn from(t: TlsArg) -> TlsMode {
        match t {
            TlsArg::Off => TlsMode::Off,
            TlsArg::Acme => TlsMode::Acme,
        }
    }
}

/// `domain tls --challenge`.
#[derive(Clone, Copy, ValueEnum)]
pub enum ChallengeArg {
    /// A token over plain HTTP (the proxy's HTTP listener, port 80 to the CA)
    #[value(name = "http-01")]
    Http01,
    /// A special certificate on the proxy's HTTPS listener (port 443 to the CA)
    #[value(name = "tls-alpn-01")]
    TlsAlpn01,
}

impl From<ChallengeArg> for ChallengeKind {
    fn from(c: ChallengeArg) -> ChallengeKind {
        match c {
            ChallengeArg::Http01 => ChallengeKind::Http01,
            ChallengeArg::TlsAlpn01 => ChallengeKind::TlsAlpn01,
        }
    }
}

/// `--hsts SECONDS|off`: 0 for off.
pub fn hsts_parser(s: &str) -> Result<u64, String> {
    if s == "off" {
        return Ok(0);
    }
    let secs: u64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds or 'off'"))?;
    if secs > MAX_HSTS_MAX_AGE {
        return Err(format!(
            "at most {MAX_HSTS_MAX_AGE} seconds (two years), e.g. 31536000 for a year"
        ));
    }
    Ok(secs)
}
