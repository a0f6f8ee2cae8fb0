//! Mail of each environment: what its instances get (`SMTP_URL` at the catcher below
//! production), what the catcher kept (list, show, clear) and each tier's relay opt-in, which
//! this module also runs: the catcher queues a kept message whose tier has a relay, and the one
//! relaying task here passes it on to its allow-listed recipients only (it holds the vault that
//! opens the relay's URL).
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use turnout_model::{
    Action, AppName, AuditAction, EnvRef, MAX_RELAY_DOMAINS, MailCleared, MailDetail, MailInfo,
    MailList, MailRelay, MailRelayInfo, MailRelays, RelayOutcome, SetMailRelay, Tier,
    format_timestamp,
};

use super::ControlPlane;
use crate::access::Principal;
use crate::app_file::ReleaseConfig;
use crate::error::ControlError;
use crate::mail::relay::{self, RelayTls, RelayUrl};
use crate::store::mail::{self as mq, KEEP_BYTES, KEEP_MESSAGES, MailRow, RelayRow};
use crate::store::{AuditEntry, EnvRow, now};
use crate::vault::service_user;

fn mail_info(env: &str, row: &MailRow) -> MailInfo {
    MailInfo {
        id: row.id,
        env: env.to_owned(),
        received_at: format_timestamp(row.received_at),
        from: row.from.clone(),
        to: row.to.clone(),
        subject: row.subject.clone(),
        size: row.size,
        relay: row.relay.clone(),
    }
}

/// A recipient domain as `--allow-domain` takes it: a DNS name, lower-cased.
fn allowed_domain(text: &str) -> Result<String, ControlError> {
    let d = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let shown: String = text.chars().take(80).collect();
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !ok {
        return Err(ControlError::Invalid(format!(
            "--allow-domain {shown:?} is not a domain name: write the part after '@' of the addresses to relay, like example.com (each subdomain is its own entry)"
        )));
    }
    Ok(d)
}

/// The domain of an envelope address, lower-cased.
fn domain_of(address: &str) -> Option<String> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
}

fn relay_info(row: &RelayRow) -> MailRelay {
    MailRelay {
        url: row.url_shown.clone(),
        allow_domains: row.domains.clone(),
        set_by: row.set_by.clone(),
        set_at: format_timestamp(row.set_at),
    }
}

fn unknown_mail(id: i64) -> ControlError {
    ControlError::NotFound(format!(
        "no caught message {id}; see `turnout mail list APP/ENV`"
    ))
}

impl ControlPlane {
    /// The variables an instance of `env` gets for its mail: below production, the catcher's
    /// URL with the environment's credentials (overriding any value set for it); production,
    /// none (the value the user configured reaches it as any other).
    pub(crate) fn mail_env(&self, env: &EnvRow, config: &ReleaseConfig) -> Vec<(String, String)> {
        if env.tier == Tier::Production {
            return vec![];
        }
        let url = format!(
            "smtp://{}:{}@127.0.0.1:{}",
            service_user(&env.app, &env.name),
            self.mail.credential(env.id),
            self.ports.smtp
        );
        vec![(config.mail.url_var.clone(), url)]
    }

    /// `turnout mail list APP/ENV`.
    pub async fn list_mail(&self, r: EnvRef, who: &Principal) -> Result<MailList, ControlError> {
        let env = self.env_for(who, &r, Action::Read).await?;
        let id = env.id;
        let rows = self.store.call(move |c| mq::list(c, id)).await?;
        let name = r.to_string();
        Ok(MailList {
            messages: rows.iter().map(|row| mail_info(&name, row)).collect(),
            env: name,
            keeps_messages: KEEP_MESSAGES,
            keeps_bytes: KEEP_BYTES,
        })
    }

    /// `turnout mail show ID [--raw]`.
    pub async fn show_mail(
        &self,
        id: i64,
        raw: bool,
        who: &Principal,
    ) -> Result<MailDetail, ControlError> {
        let row = self
            .store
            .call(move |c| mq::get(c, id))
            .await?
            .ok_or_else(|| unknown_mail(id))?;
        let env_id = row.env_id;
        let (app, env, _) = self
            .store
            .call(move |c| mq::env_of(c, env_id))
            .await?
            .ok_or_else(|| unknown_mail(id))?;
        let r = EnvRef { app, env };
        self.env_for(who, &r, Action::Read).await?;
        let content = self
            .store
            .call(move |c| mq::raw(c, id))
            .await?
            .ok_or_else(|| unknown_mail(id))?;
        let (parts, content) =
            tokio::task::spawn_blocking(move || (crate::mail::parse::parts(&content), content))
                .await
                .map_err(|e| ControlError::internal(format!("reading a message failed: {e}")))?;
        Ok(MailDetail {
            info: mail_info(&r.to_string(), &row),
            headers: parts.headers,
            text: parts.text,
            html: parts.html,
            attachments: parts.attachments,
            raw: raw.then(|| String::from_utf8_lossy(&content).into_owned()),
        })
    }

    /// `turnout mail clear APP/ENV`: every message the catcher kept for it goes.
    pub async fn clear_mail(
        &self,
        r: EnvRef,
        who: &Principal,
    ) -> Result<MailCleared, ControlError> {
        let env = self.env_for(who, &r, Action::Config).await?;
        let entry = AuditEntry::new(&who.name, AuditAction::MailClear)
            .app(&env.app)
            .env(&env.name);
        let id = env.id;
        let removed = self
            .store
            .mutate(entry, move |c, entry| {
                let n = mq::clear(c, id)?;
                entry.from = Some(format!("{n} messages"));
                Ok(n)
            })
            .await?;
        info!(env = %r, removed, "caught mail cleared");
        Ok(MailCleared {
            env: r.to_string(),
            removed,
        })
    }

    /// `turnout mail relay APP`: each tier's relay (production has none: it does not use the
    /// catcher).
    pub async fn mail_relays(
        &self,
        app: AppName,
        who: &Principal,
    ) -> Result<MailRelays, ControlError> {
        let row = self.authorize_app(who, &app, Action::Read).await?;
        self.relays_of(row.id, &app).await
    }

    async fn relays_of(&self, app_id: i64, app: &AppName) -> Result<MailRelays, ControlError> {
        let rows = self.store.call(move |c| mq::relays(c, app_id)).await?;
        Ok(MailRelays {
            app: app.to_string(),
            tiers: Tier::ALL
                .into_iter()
                .filter(|t| *t != Tier::Production)
                .map(|tier| MailRelayInfo {
                    tier,
                    relay: rows.iter().find(|r| r.tier == tier).map(relay_info),
                })
                .collect(),
        })
    }

    /// `turnout mail relay APP --tier T (--url URL --allow-domain D… | --off)`. Everything is
    /// checked before anything changes; the URL is kept sealed and never shown or audited with
    /// its password.
    pub async fn set_mail_relay(
        &self,
        app: AppName,
        req: SetMailRelay,
        who: &Principal,
    ) -> Result<MailRelays, ControlError> {
        let tier: Tier = req.tier.parse().map_err(|e: turnout_model::UnknownTier| {
            ControlError::Invalid(format!("--tier: {e}"))
        })?;
        if tier == Tier::Production {
            return Err(ControlError::Invalid(
                "production does not use the mail catcher, so it has no relay: its SMTP_URL is the one set with `turnout config`".into(),
            ));
        }
        let relay = if req.off {
            if req.url.is_some() || !req.allow_domains.is_empty() {
                return Err(ControlError::Invalid(
                    "--off takes neither --url nor --allow-domain".into(),
                ));
            }
            None
        } else {
            let url = req.url.as_deref().ok_or_else(|| {
                ControlError::Invalid(
                    "--url is needed (smtp[s]://[USER:PASSWORD@]HOST[:PORT]), or --off to relay nothing".into(),
                )
            })?;
            let parsed =
                RelayUrl::parse(url).map_err(|e| ControlError::Invalid(format!("--url: {e}")))?;
            if req.allow_domains.is_empty() {
                return Err(ControlError::Invalid(
                    "--allow-domain is needed: only mail to the listed domains is relayed".into(),
                ));
            }
            if req.allow_domains.len() > MAX_RELAY_DOMAINS {
                return Err(ControlError::Invalid(format!(
                    "at most {MAX_RELAY_DOMAINS} --allow-domain per tier"
                )));
            }
            let mut domains = req
                .allow_domains
                .iter()
                .map(|d| allowed_domain(d))
                .collect::<Result<Vec<_>, _>>()?;
            domains.sort();
            domains.dedup();
            Some((url.to_owned(), parsed, domains))
        };
        let row = self.app_row(&app).await?;
        self.authorize(who, row.id, &app, app.as_str(), Action::Config, Some(tier))
            .await?;
        let app_id = row.id;
        let after = relay
            .as_ref()
            .map(|(_, parsed, domains)| format!("{} for {}", parsed.shown(), domains.join(", ")));
        let entry = AuditEntry::new(&who.name, AuditAction::MailRelaySet)
            .app(&app)
            .env(tier)
            .change(None, after);
        match relay {
            None => {
                self.store
                    .mutate(entry, move |c, entry| {
                        entry.from = mq::remove_relay(c, app_id, tier)?;
                        Ok(())
                    })
                    .await?;
                info!(%app, %tier, "mail relay turned off");
            }
            Some((url, parsed, domains)) => {
                let name = mq::relay_secret_name(app_id, tier);
                // Sealed and written under the sealing lock: no key rotation in between.
                let _sealing = self.sealing.read().await;
                let sealed = self.vault().seal(&name, url.as_bytes())?;
                let set = RelayRow {
                    tier,
                    sealed_url: sealed,
                    url_shown: parsed.shown(),
                    domains,
                    set_by: who.name.clone(),
                    set_at: now(),
                };
                self.store
                    .mutate(entry, move |c, entry| {
                        entry.from = mq::set_relay_of(c, app_id, &set)?;
                        Ok(())
                    })
                    .await?;
                info!(%app, %tier, relay = %parsed.shown(), "mail relay set");
            }
        }
        self.relays_of(app_id, &app).await
    }

    /// Start the one task that relays caught messages: those the last daemon left pending
    /// first, then each the catcher queues, until `stop`.
    pub(crate) fn relay_caught(self: &Arc<Self>, tls: RelayTls, stop: CancellationToken) {
        let Some(mut queue) = self.mail.take_relay_queue() else {
            return;
        };
        let plane = self.clone();
        tokio::spawn(async move {
            match plane.store.call(|c| mq::pending(c)).await {
                Ok(ids) => {
                    for id in ids {
                        plane.relay_one(&tls, id).await;
                    }
                }
                Err(e) => warn!(error = %e, "cannot read the messages waiting for the relay"),
            }
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    id = queue.recv() => match id {
                        Some(id) => plane.relay_one(&tls, id).await,
                        None => break,
                    },
                }
            }
        });
    }

    /// Relay message `id` to its recipients in the tier's allowed domains (only those), and
    /// record what happened on the message.
    async fn relay_one(&self, tls: &RelayTls, id: i64) {
        let Ok(Some(row)) = self.store.call(move |c| mq::get(c, id)).await else {
            return;
        };
        let env_id = row.env_id;
        let Ok(Some((app, env, _))) = self.store.call(move |c| mq::env_of(c, env_id)).await else {
            return;
        };
        let outcome = self.relay_outcome(tls, &row).await;
        let entry = AuditEntry::new("turnout", AuditAction::MailRelay)
            .app(&app)
            .env(&env)
            .change(None, Some(format!("mail {id}: {}", outcome.summary())));
        let set = outcome.clone();
        let recorded = match &outcome {
            RelayOutcome::Failed { error, .. } => {
                self.store
                    .mutate_failed(entry, error.clone(), move |c| mq::set_relay(c, id, &set))
                    .await
            }
            _ => {
                self.store
                    .mutate(entry, move |c, _| mq::set_relay(c, id, &set))
                    .await
            }
        };
        if let Err(e) = recorded {
            warn!(mail = id, error = %e, "cannot record a relay's outcome");
        }
        info!(%app, %env, mail = id, outcome = %outcome.summary(), "mail relay");
    }

    async fn relay_outcome(&self, tls: &RelayTls, row: &MailRow) -> RelayOutcome {
        let env_id = row.env_id;
        let relay = match self.store.call(move |c| mq::relay_of_env(c, env_id)).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return RelayOutcome::Skipped {
                    reason: "the tier's relay was turned off".into(),
                };
            }
            Err(e) => {
                return RelayOutcome::Failed {
                    to: vec![],
                    error: format!("cannot read the tier's relay: {e}"),
                };
            }
        };
        let (app_id, relay) = relay;
        let allowed: Vec<String> = row
            .to
            .iter()
            .filter(|a| domain_of(a).is_some_and(|d| relay.domains.contains(&d)))
            .cloned()
            .collect();
        if allowed.is_empty() {
            return RelayOutcome::Skipped {
                reason: format!(
                    "no recipient in the allowed domains ({})",
                    relay.domains.join(", ")
                ),
            };
        }
        let name = mq::relay_secret_name(app_id, relay.tier);
        let opened = match self.vault.read() {
            Ok(v) => v.open_text(&name, &relay.sealed_url),
            Err(_) => Err(ControlError::internal("the vault's lock is poisoned")),
        };
        let url = match opened
            .map_err(|e| e.to_string())
            .and_then(|u| RelayUrl::parse(&u))
        {
            Ok(u) => u,
            Err(e) => {
                return RelayOutcome::Failed {
                    to: allowed,
                    error: format!("cannot open the relay's URL: {e}"),
                };
            }
        };
        let id = row.id;
        let raw = match self.store.call(move |c| mq::raw(c, id)).await {
            Ok(Some(raw)) => raw,
            _ => {
                return RelayOutcome::Skipped {
                    reason: "the message was removed before its turn".into(),
                };
            }
        };
        match relay::send(tls, &url, &row.from, &allowed, &raw).await {
            Ok(d) => RelayOutcome::Relayed {
                to: d.accepted,
                reply: d.reply,
            },
            Err(error) => RelayOutcome::Failed { to: allowed, error },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_checked_and_lower_cased() {
        assert_eq!(allowed_domain("Example.COM.").unwrap(), "example.com");
        for bad in [
            "",
            "user@example.com",
            "localhost",
            "*.example.com",
            "a..b",
            "-a.b",
            "a b.c",
        ] {
            assert!(allowed_domain(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            domain_of("Someone@Allowed.Test").as_deref(),
            Some("allowed.test")
        );
        assert_eq!(domain_of("no-domain"), None);
    }
}
