//! ACME (RFC 8555) with instant-acme: one account per home and directory, and one order at a
//! time for one domain, its challenges answered by the data plane (HTTP-01 on the HTTP
//! listener, TLS-ALPN-01 on the HTTPS one) and withdrawn whatever the outcome.
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType, Identifier,
    NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use turnout_dataplane::{ChallengeSpec, DataPlane};
use turnout_model::{ChallengeKind, DomainName};

use super::AcmeConfig;

type Http = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// The longest an order may take, from the account to the certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);

/// How an order's state is polled while the CA validates and then issues: from 250 ms, half as
/// long again each time, for at most 90 s.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(90));

/// A certificate just issued: its chain (leaf first) and its fresh key, PEM.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

pub struct Acme {
    config: AcmeConfig,
    http: Http,
    /// `<home>/acme/account-<hash of the directory URL>.json` (0600): the account's key and URL.
    credentials: PathBuf,
    /// Made (or loaded) by the first order, then reused.
    account: tokio::sync::Mutex<Option<Account>>,
}

impl Acme {
    pub fn new(home: &Path, config: AcmeConfig) -> Result<Acme, String> {
        let http = client(config.ca_cert.as_deref())?;
        let hash = blake3::hash(config.directory.as_bytes()).to_hex();
        let credentials = home
            .join("acme")
            .join(format!("account-{}.json", &hash[..16]));
        Ok(Acme {
            config,
            http,
            credentials,
            account: tokio::sync::Mutex::new(None),
        })
    }

    /// The home's account on the directory: loaded from its saved credentials, else created and
    /// saved.
    async fn account(&self) -> Result<Account, String> {
        let mut slot = self.account.lock().await;
        if let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let builder = || Account::builder_with_http(Box::new(self.http.clone()));
        let account = match std::fs::read(&self.credentials) {
            Ok(saved) => {
                let credentials: AccountCredentials = serde_json::from_slice(&saved)
                    .map_err(|e| format!("{}: {e}", self.credentials.display()))?;
                builder()
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| self.unreachable(e))?
            }
            Err(_) => {
                let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder()
                    .create(
                        &NewAccount {
                            contact: &contacts,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.config.directory.clone(),
                        None,
                    )
                    .await
                    .map_err(|e| self.unreachable(e))?;
                let json = serde_json::to_vec(&credentials).map_err(|e| e.to_string())?;
                let dir = self.credentials.parent().expect("a file in a directory");
                std::fs::create_dir_all(dir)
                    .and_then(|()| super::write_atomic(&self.credentials, &json))
                    .map_err(|e| {
                        format!("cannot save the ACME account in {}: {e}", dir.display())
                    })?;
                tracing::info!(directory = %self.config.directory, account = account.id(), "ACME account created");
                account
            }
        };
        *slot = Some(account.clone());
        Ok(account)
    }

    fn unreachable(&self, e: instant_acme::Error) -> String {
        format!("ACME directory {}: {}", self.config.directory, problem(e))
    }

    /// Forget the account (the server no longer knows it): the next order makes another.
    async fn forget_account(&self) {
        *self.account.lock().await = None;
        let _ = std::fs::remove_file(&self.credentials);
    }

    /// Order a certificate for `domain`, answering `kind` challenges through `dataplane`.
    /// `https` says whether the proxy has an HTTPS listener (TLS-ALPN-01 needs one).
    pub async fn order(
        &self,
        domain: &DomainName,
        kind: ChallengeKind,
        https: bool,
        dataplane: &DataPlane,
    ) -> Result<Issued, String> {
        if kind == ChallengeKind::TlsAlpn01 && !https {
            return Err(format!(
                "{domain} answers ACME's tls-alpn-01, which needs the proxy's HTTPS listener: start `turnout serve` with --https-listen, or use `turnout domain tls {domain} --challenge http-01`"
            ));
        }
        let late = || {
            format!(
                "the ACME server did not finish {domain}'s order within {} s; it is tried again later",
                ORDER_TIMEOUT.as_secs()
            )
        };
        // Bounded as a whole, so a CA that stops answering never holds the renewals up.
        let account = tokio::time::timeout(ORDER_TIMEOUT, self.account())
            .await
            .map_err(|_| late())??;
        let mut published = Vec::new();
        let ordered = self.run_order(&account, domain, kind, dataplane, &mut published);
        let result = tokio::time::timeout(ORDER_TIMEOUT, ordered)
            .await
            .unwrap_or_else(|_| Err(late()));
        // Withdrawn whatever happened: a stale token answers nothing useful.
        for spec in published {
            dataplane.challenge(spec, false).wait().await;
        }
        if let Err(e) = &result
            && e.contains("accountDoesNotExist")
        {
            self.forget_account().await;
        }
        result
    }

    async fn run_order(
        &self,
        account: &Account,
        domain: &DomainName,
        kind: ChallengeKind,
        dataplane: &DataPlane,
        published: &mut Vec<ChallengeSpec>,
    ) -> Result<Issued, String> {
        let identifiers = [Identifier::Dns(domain.as_str().to_owned())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(problem)?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(problem)?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                // Validated lately for this account: nothing to answer.
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(format!(
                        "the ACME server's authorization for {domain} is {other:?}"
                    ));
                }
            }
            let wanted = match kind {
                ChallengeKind::Http01 => ChallengeType::Http01,
                ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            let mut challenge = authz.challenge(wanted).ok_or_else(|| {
                format!("the ACME server offers no {kind} challenge for {domain}")
            })?;
            let key_authorization = challenge.key_authorization();
            let spec = match kind {
                ChallengeKind::Http01 => ChallengeSpec::Http {
                    token: challenge.token.clone(),
                    key_authorization: key_authorization.as_str().to_owned(),
                },
                ChallengeKind::TlsAlpn01 => {
                    alpn_challenge(domain, key_authorization.digest().as_ref())?
                }
            };
            // In force in the proxy before the CA is told to look.
            dataplane.challenge(spec.clone(), true).wait().await;
            published.push(spec);
            challenge.set_ready().await.map_err(problem)?;
        }
        let status = order.poll_ready(&POLL).await.map_err(problem)?;
        if status != OrderStatus::Ready {
            return Err(why_invalid(&mut order, domain).await);
        }
        // A fresh ECDSA P-256 key (rcgen's default) and a CSR for the order's names.
        let key_pem = order.finalize().await.map_err(problem)?;
        let chain_pem = order.poll_certificate(&POLL).await.map_err(problem)?;
        Ok(Issued { chain_pem, key_pem })
    }
}

/// Why an order went invalid: its failed challenges' problem details.
async fn why_invalid(order: &mut instant_acme::Order, domain: &DomainName) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if let Ok(state) = authz.refresh().await {
            reasons.extend(
                state
                    .challenges
                    .iter()
                    .filter_map(|c| c.error.as_ref())
                    .map(describe),
            );
        }
    }
    if reasons.is_empty() {
        format!("the ACME server found the order for {domain} invalid")
    } else {
        reasons.join("; ")
    }
}

/// The self-signed certificate a TLS-ALPN-01 handshake gets (RFC 8737 §3): the domain as its
/// only name and the critical acmeIdentifier extension holding the SHA-256 of the key
/// authorization.
fn alpn_challenge(domain: &DomainName, digest: &[u8]) -> Result<ChallengeSpec, String> {
    let fail = |e: rcgen::Error| format!("cannot make the tls-alpn-01 certificate: {e}");
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut params =
        rcgen::CertificateParams::new(vec![domain.as_str().to_owned()]).map_err(fail)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(fail)?;
    Ok(ChallengeSpec::TlsAlpn {
        host: domain.as_str().to_owned(),
        chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// An ACME error as a user reads it: the server's problem detail and type (RFC 7807).
fn problem(e: instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => describe(&p),
        instant_acme::Error::Timeout(_) => {
            "the ACME server did not finish the order within 90 s".to_owned()
        }
        other => other.to_string(),
    }
}

fn describe(p: &instant_acme::Problem) -> String {
    let detail = p.detail.as_deref().unwrap_or("no detail given");
    let mut out = match &p.r#type {
        Some(kind) => format!("{detail} ({kind})"),
        None => detail.to_owned(),
    };
    for sub in &p.subproblems {
        out.push_str(&format!("; {sub}"));
    }
    out
}

/// The HTTPS client for the directory: the public roots, plus `--acme-ca-cert`'s CAs.
fn client(extra_ca: Option<&Path>) -> Result<Http, String> {
    let config = super::client_config(extra_ca)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(HyperClient::builder(TokioExecutor::new()).build(connector))
}
