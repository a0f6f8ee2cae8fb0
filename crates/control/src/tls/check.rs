//! Checking a certificate before it is served: PEM, the key is the leaf's, the chain is complete
//! (each certificate signed by the next, the last self-signed or issued by a public root), the
//! leaf covers the domain, and it is valid now. Every refusal names the domain and the file and
//! says how to fix it. Pure: no I/O, the time is given.
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{
    CertificateDer, DnsName, PrivateKeyDer, ServerName, UnixTime,
};
use turnout_model::{DomainName, format_timestamp};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// What the store keeps of a certificate (the PEM itself stays in the home).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertMeta {
    /// The leaf's issuer, as `CN=…, O=…`.
    pub issuer: String,
    /// Its subjectAltNames (DNS names), else its subject's CN.
    pub names: Vec<String>,
    /// Hex.
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl CertMeta {
    /// When an ACME certificate is due for renewal: a third of its lifetime before expiry.
    pub fn renew_at(&self) -> i64 {
        self.not_after - (self.not_after - self.not_before).max(0) / 3
    }
}

/// The files a certificate came in, for messages.
#[derive(Debug, Clone, Copy)]
pub struct Files<'a> {
    pub cert: &'a str,
    pub key: &'a str,
}

/// Check `chain_pem` (leaf first) and `key_pem` for `domain` at `now` (unix seconds).
pub fn check(
    domain: &DomainName,
    chain_pem: &str,
    key_pem: &str,
    files: Files<'_>,
    now: i64,
) -> Result<CertMeta, String> {
    let Files {
        cert: cert_file,
        key: key_file,
    } = files;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| {
                format!(
                    "{domain}: {cert_file} is not PEM certificates ({e}); give the certificate chain as PEM (-----BEGIN CERTIFICATE----- blocks, leaf first)"
                )
            })?;
    if chain.is_empty() {
        return Err(format!(
            "{domain}: {cert_file} holds no PEM certificate; give the certificate chain as PEM (-----BEGIN CERTIFICATE----- blocks, leaf first)"
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
        format!(
            "{domain}: {key_file} holds no PEM private key ({e}); give the key as PEM (-----BEGIN PRIVATE KEY-----, EC or RSA)"
        )
    })?;
    let parsed = chain
        .iter()
        .enumerate()
        .map(|(i, der)| {
            X509Certificate::from_der(der.as_ref())
                .map(|(_, c)| c)
                .map_err(|e| {
                    format!(
                        "{domain}: certificate {} in {cert_file} cannot be read ({e}); give the certificate chain as PEM",
                        i + 1
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = &parsed[0];

    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain.clone(), key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "{domain}: the key in {key_file} does not match the certificate {} (the first one in {cert_file}); give the key that certificate was made for, or put its certificate first",
            leaf.subject()
        ),
        other => format!("{domain}: the key in {key_file} cannot be used: {other}"),
    })?;

    let (not_before, not_after) = (
        leaf.validity().not_before.timestamp(),
        leaf.validity().not_after.timestamp(),
    );
    if not_after < now {
        return Err(format!(
            "{domain}: the certificate in {cert_file} expired on {}; renew it with its issuer (or use --tls acme)",
            format_timestamp(not_after)
        ));
    }
    if not_before > now {
        return Err(format!(
            "{domain}: the certificate in {cert_file} is not valid until {}; add it then (or check this machine's clock)",
            format_timestamp(not_before)
        ));
    }

    let names = names_of(leaf);
    if !covers(domain, &chain[0], &names) {
        return Err(format!(
            "{domain}: the certificate in {cert_file} does not cover {domain}: it is for {}; a wildcard *.example.com covers exactly one label below example.com (shop.example.com, not a.shop.example.com); give a certificate with {domain} among its names",
            if names.is_empty() {
                "no DNS name".to_owned()
            } else {
                names.join(", ")
            }
        ));
    }

    // Each certificate is signed by the next in the file (names first: a clear message).
    for pair in parsed.windows(2) {
        if pair[0].issuer().as_raw() != pair[1].subject().as_raw() {
            return Err(incomplete(domain, cert_file, &pair[0]));
        }
    }
    let last = parsed.last().expect("the chain is not empty");
    let self_signed = last.issuer().as_raw() == last.subject().as_raw();
    let mut anchors: Vec<rustls::pki_types::TrustAnchor<'_>> =
        webpki_roots::TLS_SERVER_ROOTS.to_vec();
    if self_signed {
        let own =
            webpki::anchor_from_trusted_cert(chain.last().expect("not empty")).map_err(|e| {
                format!("{domain}: the last certificate in {cert_file} cannot be a root: {e}")
            })?;
        anchors.push(own);
    }
    let ee = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| {
        format!("{domain}: the first certificate in {cert_file} cannot be read: {e}")
    })?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now).unwrap_or(0),
    ));
    ee.verify_for_usage(
        provider.signature_verification_algorithms.all,
        &anchors,
        &chain[1..],
        time,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::UnknownIssuer => incomplete(domain, cert_file, last),
        webpki::Error::CertExpired { .. } => format!(
            "{domain}: a certificate of the chain in {cert_file} has expired; get a current chain (fullchain.pem) from the issuer"
        ),
        webpki::Error::InvalidSignatureForPublicKey
        | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | webpki::Error::UnsupportedSignatureAlgorithmContext(_) => format!(
            "{domain}: the chain in {cert_file} does not verify: a certificate is not signed by the next one ({e:?}); give the chain leaf first, each certificate followed by its issuer"
        ),
        other => format!(
            "{domain}: the chain in {cert_file} does not verify ({other:?}); give the chain leaf first, each certificate followed by its issuer (fullchain.pem)"
        ),
    })?;

    Ok(meta(leaf, names))
}

/// What a chain an ACME server just issued is: read, not checked (its root is the CA's own and
/// not in the file; the order itself proved the names).
pub fn describe(chain_pem: &str) -> Result<CertMeta, String> {
    let der = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or("the ACME server's chain holds no certificate")?
        .map_err(|e| format!("the ACME server's chain is not PEM: {e}"))?;
    let (_, leaf) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("the ACME server's certificate cannot be read: {e}"))?;
    let names = names_of(&leaf);
    Ok(meta(&leaf, names))
}

fn meta(leaf: &X509Certificate<'_>, names: Vec<String>) -> CertMeta {
    CertMeta {
        issuer: leaf.issuer().to_string(),
        names,
        serial: leaf.tbs_certificate.serial.to_str_radix(16),
        not_before: leaf.validity().not_before.timestamp(),
        not_after: leaf.validity().not_after.timestamp(),
    }
}

fn incomplete(domain: &DomainName, cert_file: &str, orphan: &X509Certificate<'_>) -> String {
    format!(
        "{domain}: the chain is incomplete: nothing in {cert_file} issued {} (its issuer is {}), and no public root did; append the intermediate certificates (fullchain.pem)",
        orphan.subject(),
        orphan.issuer()
    )
}

/// The DNS names a certificate is for: its subjectAltNames, else its subject's common names.
fn names_of(cert: &X509Certificate<'_>) -> Vec<String> {
    let sans: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if !sans.is_empty() {
        return sans;
    }
    cert.subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_ascii_lowercase))
        .collect()
}

/// Whether the leaf is valid for `domain`. A name is checked as TLS clients check it
/// (webpki: a wildcard covers exactly one label); a wildcard domain needs that very wildcard.
fn covers(domain: &DomainName, leaf: &CertificateDer<'_>, names: &[String]) -> bool {
    if domain.as_str().starts_with("*.") {
        return names.iter().any(|n| n == domain.as_str());
    }
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let Ok(name) = DnsName::try_from(domain.as_str().to_owned()) else {
        return false;
    };
    ee.verify_is_valid_for_subject_name(&ServerName::DnsName(name))
        .is_ok()
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
