//! `turnout cert …` and `turnout domain tls …`: requests to the API. `cert add` reads the files
//! here and sends their PEM, named, so a refusal can say which file is wrong.
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use turnout_client::Client;
use turnout_model::endpoint as ep;
use turnout_model::{AddCert, MAX_PEM_BYTES, SetTls, TlsMode};

use crate::cli::{CertCommand, DomainCommand, OnOff};
use crate::render;

/// `turnout cert …`.
pub async fn command(
    client: &Client,
    command: CertCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        CertCommand::Add { domain, cert, key } => {
            let body = AddCert {
                chain_pem: read_pem(&cert)?,
                key_pem: read_pem(&key)?,
                cert_file: cert.display().to_string(),
                key_file: key.display().to_string(),
            };
            render::certs::added(&client.call(&ep::AddCert { domain, body }).await?, json);
        }
        CertCommand::List => render::certs::list(&client.call(&ep::ListCerts).await?, json),
        CertCommand::Remove { domain } => {
            client
                .call(&ep::RemoveCert {
                    domain: domain.clone(),
                })
                .await?;
            render::deleted("certificate of", domain.as_str(), json);
        }
        CertCommand::Renew { domain } => {
            render::certs::renewing(&client.call(&ep::RenewCert { domain }).await?, json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `turnout domain tls DOMAIN …`.
pub async fn domain_tls(
    client: &Client,
    command: DomainCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let DomainCommand::Tls {
        domain,
        acme,
        off,
        redirect,
        hsts,
        challenge,
    } = command
    else {
        unreachable!("called for `domain tls` only");
    };
    let body = SetTls {
        mode: match (acme, off) {
            (true, _) => Some(TlsMode::Acme),
            (_, true) => Some(TlsMode::Off),
            _ => None,
        },
        redirect: redirect.map(|r| matches!(r, OnOff::On)),
        hsts_max_age: hsts,
        challenge: challenge.map(Into::into),
    };
    render::certs::domain_tls(&client.call(&ep::SetTls { domain, body }).await?, json);
    Ok(ExitCode::SUCCESS)
}

fn read_pem(path: &Path) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > MAX_PEM_BYTES as u64 {
        anyhow::bail!(
            "{} is larger than {} KiB: give the PEM certificate chain or key only",
            path.display(),
            MAX_PEM_BYTES / 1024
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!(
            "{} is not PEM (text with -----BEGIN … ----- blocks); convert a DER or PKCS#12 file with openssl first",
            path.display()
        )
    })
}
