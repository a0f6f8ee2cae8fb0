//! The control plane's operations on HTTPS: TLS settings, own certificates, renewals, and the
//! one function that hands the data plane every certificate (`apply_tls`), used at start-up and
//! after every change. A domain switch, rollback or maintenance never calls it: the certificate
//! belongs to the domain, not to its binding.
use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{info, warn};
use turnout_dataplane::TlsSpec;
use turnout_model::{
    Action, AddCert, AuditAction, CertInfo, CertSource, DomainName, MAX_HSTS_MAX_AGE,
    MAX_PEM_BYTES, SetTls, TlsMode, TlsSettings, format_timestamp,
};

use super::check::{self, Files};
use crate::access::Principal;
use crate::error::ControlError;
use crate::plane::ControlPlane;
use crate::store::tls::{self as tq, CertRow};
use crate::store::{DomainRow, now, q};

/// How long the renewal task sleeps at most before it looks again (a clock that jumped, a
/// certificate whose files were put back by hand).
const RECHECK: std::time::Duration = std::time::Duration::from_secs(3600);

/// A domain's certificate as the API shows it.
pub(crate) fn cert_info(row: &CertRow, tls: &TlsSettings, now: i64) -> CertInfo {
    let meta = row.meta.as_ref();
    let acme = tls.mode == TlsMode::Acme;
    CertInfo {
        domain: row.domain.clone(),
        source: row.source,
        issuer: meta.map(|m| m.issuer.clone()),
        names: meta.map(|m| m.names.clone()).unwrap_or_default(),
        serial: meta.map(|m| m.serial.clone()),
        not_before: meta.map(|m| format_timestamp(m.not_before)),
        not_after: meta.map(|m| format_timestamp(m.not_after)),
        served: tls.mode != TlsMode::Off && meta.is_some_and(|m| m.not_after > now),
        next_renewal: acme
            .then(|| due_at(row, tls))
            .flatten()
            .map(format_timestamp),
        last_error: row.last_error.clone(),
        failures: row.failures,
    }
}

/// When an ACME domain's next order is due: asked for or retried (`next_attempt`), else a
/// third of its certificate's lifetime before expiry; `None` for a domain that needs one now
/// (no certificate of its own from ACME yet).
fn due_at(row: &CertRow, tls: &TlsSettings) -> Option<i64> {
    if tls.mode != TlsMode::Acme {
        return None;
    }
    if let Some(at) = row.next_attempt {
        return Some(at);
    }
    match (&row.meta, row.source) {
        (Some(meta), CertSource::Acme) => Some(meta.renew_at()),
        _ => None,
    }
}

/// The domains whose ACME order is due at `now` (names and ids), and when the next one after
/// them falls due. `usable` says whether a domain's certificate files in the home can be
/// served: a domain whose files were lost or cut short (a crash between the two writes) is
/// ordered again at once, unless a failure's retry is pending.
fn plan(
    domains: &[DomainRow],
    certs: &[CertRow],
    now: i64,
    usable: impl Fn(&DomainName) -> bool,
) -> (Vec<DomainRow>, Option<i64>) {
    let mut due = Vec::new();
    let mut next: Option<i64> = None;
    for d in domains.iter().filter(|d| d.tls.mode == TlsMode::Acme) {
        let at = match certs.iter().find(|c| c.domain_id == d.id) {
            None => None,
            Some(row) if row.next_attempt.is_none() && !usable(&d.name) => None,
            Some(row) => due_at(row, &d.tls),
        };
        match at {
            Some(at) if at > now => next = Some(next.map_or(at, |n| n.min(at))),
            _ => due.push(d.clone()),
        }
    }
    (due, next)
}

impl ControlPlane {
    /// The one path to the data plane's certificates: every domain whose TLS is on and whose
    /// certificate files are in the home, each under its own name (a domain served by a
    /// wildcard certificate gets it as its own), sent whole.
    pub async fn apply_tls(&self) {
        let _changes = self.certs().changes.lock().await;
        self.send_tls().await;
    }

    /// `apply_tls` with the `changes` lock already held.
    async fn send_tls(&self) {
        let rows = match self.store().call(|c| q::list_domains(c)).await {
            Ok(rows) => rows,
            Err(e) => {
                warn!(error = %e, "cannot read the domains' TLS settings; the data plane keeps its certificates");
                return;
            }
        };
        let mut wanted = BTreeMap::new();
        for d in rows.iter().filter(|d| d.tls.mode != TlsMode::Off) {
            let Some((chain_pem, key_pem)) = self.certs().read(&d.name) else {
                continue;
            };
            // A pair that does not match (a write cut short) would be refused by the data
            // plane; it is skipped here with the reason.
            if let Err(e) = turnout_proxy::certified_key(&chain_pem, &key_pem) {
                warn!(domain = %d.name, error = %e, "not serving the domain's certificate files");
                continue;
            }
            wanted.insert(
                d.name.as_str().to_owned(),
                TlsSpec {
                    chain_pem,
                    key_pem,
                    redirect: d.tls.redirect,
                    hsts_max_age: d.tls.hsts_max_age,
                },
            );
        }
        if let Some(ca) = &self.certs().local_ca {
            self.add_internal(ca, &mut wanted).await;
        }
        let served = wanted.len();
        self.dataplane().update_tls(wanted).wait().await;
        tracing::debug!(served, "certificates handed to the data plane");
    }

    /// Each app's internal URLs (`*.APP.localhost`), with the local CA's certificate: never
    /// redirected (plain HTTP keeps working for them), no HSTS (a browser would remember it for
    /// every `localhost` port).
    async fn add_internal(&self, ca: &super::LocalCa, wanted: &mut BTreeMap<String, TlsSpec>) {
        let apps = match self.store().call(|c| q::list_apps(c)).await {
            Ok(apps) => apps,
            Err(e) => {
                warn!(error = %e, "cannot read the apps; their internal URLs keep their certificates");
                return;
            }
        };
        for app in apps {
            match ca.app_cert(app.name.as_str(), now()) {
                Ok((chain_pem, key_pem)) => {
                    wanted.insert(
                        format!("*.{}.localhost", app.name),
                        TlsSpec {
                            chain_pem,
                            key_pem,
                            redirect: false,
                            hsts_max_age: None,
                        },
                    );
                }
                Err(e) => {
                    warn!(app = %app.name, error = %e, "cannot make the internal URLs' certificate")
                }
            }
        }
    }

    /// The domain `name` and its certificate row, if `who` may change its domains.
    async fn domain_for(
        &self,
        name: &DomainName,
        who: &Principal,
    ) -> Result<(DomainRow, Option<CertRow>), ControlError> {
        let n = name.clone();
        let domain = self.store().call(move |c| q::get_domain(c, &n)).await?;
        self.env_for(who, &domain.target(), Action::Domain).await?;
        let id = domain.id;
        let cert = self.store().call(move |c| tq::get_cert(c, id)).await?;
        Ok((domain, cert))
    }

    /// Refuse settings that cannot work, naming the flag.
    pub(crate) fn check_tls(
        &self,
        domain: &DomainName,
        tls: &TlsSettings,
    ) -> Result<(), ControlError> {
        if tls.mode == TlsMode::Acme && domain.as_str().starts_with("*.") {
            return Err(ControlError::Invalid(format!(
                "--acme: a wildcard certificate for {domain} needs ACME's dns-01 challenge, which Turnout does not answer; add your own with `turnout cert add '{domain}' --cert FILE --key FILE`"
            )));
        }
        if tls.hsts_max_age.is_some_and(|s| s > MAX_HSTS_MAX_AGE) {
            return Err(ControlError::Invalid(format!(
                "--hsts: at most {MAX_HSTS_MAX_AGE} seconds (two years); `--hsts off` sends none"
            )));
        }
        if tls.mode == TlsMode::Acme
            && tls.challenge == turnout_model::ChallengeKind::TlsAlpn01
            && self.certs().https_port.is_none()
        {
            return Err(ControlError::Invalid(format!(
                "--challenge tls-alpn-01: {domain}'s orders would be validated on the proxy's HTTPS listener, and it has none; start `turnout serve` with --https-listen, or use --challenge http-01"
            )));
        }
        Ok(())
    }

    /// `turnout domain tls DOMAIN …`.
    pub async fn set_tls(
        &self,
        name: DomainName,
        change: SetTls,
        who: &Principal,
    ) -> Result<turnout_model::DomainInfo, ControlError> {
        let (domain, cert) = self.domain_for(&name, who).await?;
        let before = domain.tls.clone();
        let mut tls = before.clone();
        if let Some(mode) = change.mode {
            if mode == TlsMode::Manual
                && cert.as_ref().is_none_or(|c| c.source != CertSource::Manual)
            {
                return Err(ControlError::Invalid(format!(
                    "{name} has no certificate of its own: add one with `turnout cert add {name} --cert FILE --key FILE`"
                )));
            }
            tls.mode = mode;
        }
        if let Some(redirect) = change.redirect {
            tls.redirect = redirect;
        }
        if let Some(age) = change.hsts_max_age {
            tls.hsts_max_age = (age > 0).then_some(age);
        }
        if let Some(challenge) = change.challenge {
            tls.challenge = challenge;
        }
        self.check_tls(&name, &tls)?;
        let _changes = self.certs().changes.lock().await;
        let entry = domain
            .audit(&who.name, AuditAction::DomainTls)
            .change(Some(describe(&before)), Some(describe(&tls)));
        let (id, t) = (domain.id, tls.clone());
        self.store()
            .mutate(entry, move |c, _| tq::set_settings(c, id, &t))
            .await?;
        self.send_tls().await;
        if tls.mode == TlsMode::Acme {
            self.certs().kick();
        }
        info!(domain = %name, mode = %tls.mode, redirect = tls.redirect, hsts = ?tls.hsts_max_age, "domain TLS settings changed");
        self.domain_info_with_cert(DomainRow { tls, ..domain })
            .await
    }

    /// `turnout cert list`: the certificates of the domains `who` may see, and the ACME domains
    /// still waiting for their first.
    pub async fn list_certs(&self, who: &Principal) -> Result<Vec<CertInfo>, ControlError> {
        let domains = self.list_domains(who).await?;
        Ok(domains.into_iter().filter_map(|d| d.cert).collect())
    }

    /// `turnout cert add DOMAIN --cert FILE --key FILE`: check it, keep it in the home, serve it.
    pub async fn add_cert(
        &self,
        name: DomainName,
        cert: AddCert,
        who: &Principal,
    ) -> Result<CertInfo, ControlError> {
        let (domain, _) = self.domain_for(&name, who).await?;
        for (pem, file) in [
            (&cert.chain_pem, &cert.cert_file),
            (&cert.key_pem, &cert.key_file),
        ] {
            if pem.len() > MAX_PEM_BYTES {
                return Err(ControlError::Invalid(format!(
                    "{name}: {file} is larger than {} KiB; give the PEM certificate chain and key only",
                    MAX_PEM_BYTES / 1024
                )));
            }
        }
        let n = name.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let files = Files {
                cert: &cert.cert_file,
                key: &cert.key_file,
            };
            check::check(&n, &cert.chain_pem, &cert.key_pem, files, now()).map(|meta| (meta, cert))
        })
        .await
        .map_err(|e| ControlError::internal(format!("certificate check: {e}")))?;
        let (meta, cert) = checked.map_err(ControlError::Invalid)?;
        let _changes = self.certs().changes.lock().await;
        let entry = domain.audit(&who.name, AuditAction::CertAdd).change(
            Some(domain.tls.mode.to_string()),
            Some(format!(
                "manual: {} (issuer {}, serial {}, expires {})",
                meta.names.join(", "),
                meta.issuer,
                meta.serial,
                format_timestamp(meta.not_after)
            )),
        );
        self.certs()
            .write(&name, &cert.chain_pem, &cert.key_pem)
            .map_err(|e| {
                ControlError::internal(format!("cannot write {name}'s certificate: {e}"))
            })?;
        let tls = TlsSettings {
            mode: TlsMode::Manual,
            ..domain.tls.clone()
        };
        let (id, m, t) = (domain.id, meta.clone(), tls.clone());
        let stored = self
            .store()
            .mutate(entry, move |c, _| {
                tq::set_settings(c, id, &t)?;
                tq::put_cert(c, id, CertSource::Manual, &m, now())
            })
            .await;
        if let Err(e) = stored {
            // The files may be the new ones now while the store says otherwise: put the
            // data plane back in step with the store.
            self.send_tls().await;
            return Err(e);
        }
        self.send_tls().await;
        info!(domain = %name, issuer = %meta.issuer, not_after = meta.not_after, "own certificate added");
        let row = self.store().call(move |c| tq::get_cert(c, id)).await?;
        let row =
            row.ok_or_else(|| ControlError::internal("the certificate just stored is gone"))?;
        Ok(cert_info(&row, &tls, now()))
    }

    /// `turnout cert remove DOMAIN`: forget its certificate and serve it over plain HTTP only.
    pub async fn remove_cert(&self, name: DomainName, who: &Principal) -> Result<(), ControlError> {
        let (domain, cert) = self.domain_for(&name, who).await?;
        if cert.is_none() && domain.tls.mode == TlsMode::Off {
            return Err(ControlError::NotFound(format!(
                "{name} has no certificate; see `turnout cert list`"
            )));
        }
        let _changes = self.certs().changes.lock().await;
        let entry = domain.audit(&who.name, AuditAction::CertRemove).change(
            Some(cert.map_or_else(
                || domain.tls.mode.to_string(),
                |c| c.source.as_str().to_owned(),
            )),
            Some("off".into()),
        );
        let tls = TlsSettings {
            mode: TlsMode::Off,
            ..domain.tls.clone()
        };
        let id = domain.id;
        self.store()
            .mutate(entry, move |c, _| {
                tq::set_settings(c, id, &tls)?;
                tq::delete_cert(c, id)
            })
            .await?;
        self.certs().remove(&name);
        self.send_tls().await;
        info!(domain = %name, "certificate removed");
        Ok(())
    }

    /// `turnout cert renew DOMAIN`: order its ACME certificate now (in the background).
    pub async fn renew_cert(
        &self,
        name: DomainName,
        who: &Principal,
    ) -> Result<CertInfo, ControlError> {
        let (domain, _) = self.domain_for(&name, who).await?;
        if domain.tls.mode != TlsMode::Acme {
            return Err(ControlError::Conflict(format!(
                "{name}'s certificate does not come from ACME (its TLS is {}); turn it on with `turnout domain tls {name} --acme`",
                domain.tls.mode
            )));
        }
        let entry = domain.audit(&who.name, AuditAction::CertRenew);
        let id = domain.id;
        self.store()
            .mutate(entry, move |c, _| tq::request_order(c, id, now()))
            .await?;
        self.certs().kick();
        let row = self.store().call(move |c| tq::get_cert(c, id)).await?;
        let row =
            row.ok_or_else(|| ControlError::internal("the renewal just asked for is gone"))?;
        Ok(cert_info(&row, &domain.tls, now()))
    }

    /// A removed domain's certificate files go, and the data plane stops serving it.
    pub(crate) async fn forget_cert(&self, name: &DomainName) {
        let _changes = self.certs().changes.lock().await;
        self.certs().remove(name);
        self.send_tls().await;
    }

    /// Start the renewal task: one, until the daemon stops; orders run one at a time.
    pub fn start_renewals(self: &Arc<Self>) {
        let plane = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = plane.renewals() => {}
                () = plane.closing().cancelled() => {}
            }
        });
    }

    async fn renewals(&self) {
        loop {
            if self.certs().local_ca.is_some() {
                // Internal URLs' certificates are made again once a third of their life is
                // left; this pass (hourly at least) hands over any that were.
                self.apply_tls().await;
            }
            let now = now();
            let found = self
                .store()
                .call(|c| Ok((q::list_domains(c)?, tq::list_certs(c)?)))
                .await;
            let (due, next) = match found {
                Ok((domains, certs)) => plan(&domains, &certs, now, |name| {
                    self.certs().read(name).is_some_and(|(chain, key)| {
                        turnout_proxy::certified_key(&chain, &key).is_ok()
                    })
                }),
                Err(e) => {
                    warn!(error = %e, "cannot read which certificates are due");
                    (Vec::new(), Some(now + 60))
                }
            };
            for domain in &due {
                self.order(domain).await;
            }
            if !due.is_empty() {
                // Each order recorded when the next is due; should recording fail, a pause
                // keeps the loop from hammering the CA.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            let wait = next.map_or(RECHECK, |at| {
                std::time::Duration::from_secs(u64::try_from(at - now).unwrap_or(0)).min(RECHECK)
            });
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.certs().kick.notified() => {}
            }
        }
    }

    /// One ACME order for `domain`, and what comes of it: the files, the store, the data plane;
    /// or the error, one more failure and the next attempt.
    async fn order(&self, domain: &DomainRow) {
        let name = &domain.name;
        info!(domain = %name, challenge = %domain.tls.challenge, "ordering a certificate");
        let https = self.certs().https_port.is_some();
        let issued = self
            .certs()
            .acme
            .order(name, domain.tls.challenge, https, self.dataplane())
            .await
            .and_then(|issued| check::describe(&issued.chain_pem).map(|meta| (issued, meta)));
        let entry = domain.audit("turnout", AuditAction::CertIssue);
        let id = domain.id;
        match issued {
            Ok((issued, meta)) => {
                let _changes = self.certs().changes.lock().await;
                // Still wanted? It may have been removed, turned off or given its own
                // certificate while the order ran.
                let still = self
                    .store()
                    .call(move |c| q::list_domains(c))
                    .await
                    .map(|rows| {
                        rows.iter()
                            .any(|d| d.id == id && d.tls.mode == TlsMode::Acme)
                    });
                if !matches!(still, Ok(true)) {
                    info!(domain = %name, "certificate issued but no longer wanted; dropped");
                    return;
                }
                if let Err(e) = self.certs().write(name, &issued.chain_pem, &issued.key_pem) {
                    warn!(domain = %name, error = %e, "cannot write the issued certificate");
                    return;
                }
                let entry = entry.change(
                    None,
                    Some(format!(
                        "acme: issuer {}, serial {}, expires {}",
                        meta.issuer,
                        meta.serial,
                        format_timestamp(meta.not_after)
                    )),
                );
                let m = meta.clone();
                let stored = self
                    .store()
                    .mutate(entry, move |c, _| {
                        tq::put_cert(c, id, CertSource::Acme, &m, now())
                    })
                    .await;
                if let Err(e) = stored {
                    warn!(domain = %name, error = %e, "cannot record the issued certificate");
                }
                self.send_tls().await;
                info!(domain = %name, issuer = %meta.issuer, not_after = %format_timestamp(meta.not_after), "certificate issued");
            }
            Err(error) => {
                let retry_min = self.certs().retry_min;
                let e = error.clone();
                let recorded = self
                    .store()
                    .mutate_failed(entry, error.clone(), move |c| {
                        let at = now();
                        tq::record_failure(
                            c,
                            id,
                            &e,
                            |failures| at + super::backoff(retry_min, failures).as_secs() as i64,
                            at,
                        )
                        .map(|_| ())
                    })
                    .await;
                match recorded {
                    Ok(()) => warn!(domain = %name, error = %error, "certificate order failed"),
                    Err(e) => {
                        warn!(domain = %name, error = %e, "cannot record a failed certificate order")
                    }
                }
            }
        }
    }
}

/// TLS settings in an audit entry.
fn describe(tls: &TlsSettings) -> String {
    let hsts = tls
        .hsts_max_age
        .map_or_else(|| "off".to_owned(), |s| s.to_string());
    format!(
        "{} (redirect {}, hsts {hsts}, challenge {})",
        tls.mode,
        if tls.redirect { "on" } else { "off" },
        tls.challenge
    )
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
