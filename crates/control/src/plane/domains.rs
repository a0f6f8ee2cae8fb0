//! Domains: bind host names to environments, switch them with zero downtime, roll them back,
//! put them in maintenance. Every change is health-gated where traffic moves, written to the
//! store with its history and audit entry, then applied through `routing`.
use std::time::Instant;

use tracing::info;
use turnout_model::{
    Action, AuditAction, CertInfo, CertSource, DomainEvent, DomainInfo, DomainName, EnvName,
    EnvRef, SwitchInfo, TlsMode, TlsSettings, format_timestamp,
};

use super::routing::key;
use super::{ControlPlane, Gate};
use crate::access::Principal;
use crate::error::ControlError;
use crate::store::tls::{self as tls_q, CertRow};
use crate::store::{AuditEntry, DomainRow, EnvRow, now, q};
use crate::tls::cert_info;

/// How a domain moves: a switch, or a rollback undoing history entry `undo`.
#[derive(Clone, Copy)]
enum Move {
    Switch,
    Rollback { undo: i64 },
}

const DEFAULT_MAINTENANCE_MESSAGE: &str =
    "This site is down for maintenance and will be back shortly.";

impl ControlPlane {
    /// How the API shows a domain; `cert` is its certificate row, if it has one.
    pub(crate) fn domain_info(&self, row: &DomainRow, cert: Option<&CertRow>) -> DomainInfo {
        let serving = self
            .routing
            .running(&(row.app.clone(), row.env.clone()))
            .is_some();
        let cert = match cert {
            Some(c) => Some(cert_info(c, &row.tls, now())),
            // Waiting for its first order.
            None if row.tls.mode == TlsMode::Acme => Some(CertInfo {
                domain: row.name.clone(),
                source: CertSource::Acme,
                issuer: None,
                names: Vec::new(),
                serial: None,
                not_before: None,
                not_after: None,
                served: false,
                next_renewal: None,
                last_error: None,
                failures: 0,
            }),
            None => None,
        };
        DomainInfo {
            tls: row.tls.clone(),
            cert,
            url: format!("http://{}:{}", row.name, self.http_port),
            domain: row.name.clone(),
            app: row.app.clone(),
            env: row.env.clone(),
            serving,
            maintenance: row.maintenance.clone(),
            created_at: format_timestamp(row.created_at),
        }
    }

    /// `domain_info`, with the domain's certificate row read from the store.
    pub(crate) async fn domain_info_with_cert(
        &self,
        row: DomainRow,
    ) -> Result<DomainInfo, ControlError> {
        let id = row.id;
        let cert = self.store.call(move |c| tls_q::get_cert(c, id)).await?;
        Ok(self.domain_info(&row, cert.as_ref()))
    }

    /// Domain `name` and what its app's policy says about `action` on the environment it is
    /// bound to, read in one store call; refused unless `who` may do it there.
    async fn domain_gate(
        &self,
        who: &Principal,
        name: &DomainName,
        action: Action,
    ) -> Result<(DomainRow, Gate), ControlError> {
        let n = name.clone();
        let (domain, gate) = self
            .store
            .call(move |c| {
                let domain = q::get_domain(c, &n)?;
                let gate = Gate::read(c, &domain.target(), action)?;
                Ok((domain, gate))
            })
            .await?;
        self.pass(who, &gate).await?;
        Ok((domain, gate))
    }

    /// The domains of apps `who` has a role on, by name.
    pub async fn list_domains(&self, who: &Principal) -> Result<Vec<DomainInfo>, ControlError> {
        Ok(self.find_domains(who, "", usize::MAX).await?.domains)
    }

    /// Bind `name` to `target`; with `tls` acme, its first certificate is ordered at once.
    pub async fn add_domain(
        &self,
        name: DomainName,
        target: EnvRef,
        tls: Option<TlsMode>,
        who: &Principal,
    ) -> Result<DomainInfo, ControlError> {
        let settings = TlsSettings {
            mode: tls.unwrap_or_default(),
            ..TlsSettings::default()
        };
        if settings.mode == TlsMode::Manual {
            return Err(ControlError::Invalid(format!(
                "--tls: off or acme; an own certificate comes with `turnout cert add {name} --cert FILE --key FILE` once the domain is added"
            )));
        }
        let _op = self.domain_ops.lock().await;
        let env = self.env_for(who, &target, Action::Domain).await?;
        self.check_tls(&name, &settings)?;
        let (n, actor) = (name.clone(), who.name.clone());
        let entry = AuditEntry::new(&who.name, AuditAction::DomainAdd)
            .app(&target.app)
            .env(&target.env)
            .domain(&name)
            .change(
                None,
                Some(match settings.mode {
                    TlsMode::Off => target.to_string(),
                    mode => format!("{target} (tls {mode})"),
                }),
            );
        let s = settings.clone();
        let row = self
            .store
            .mutate(entry, move |c, _| {
                let row = q::insert_domain(c, &n, &env, &actor)?;
                tls_q::set_settings(c, row.id, &s)?;
                Ok(DomainRow { tls: s, ..row })
            })
            .await?;
        self.routing.bind(&row).await;
        if row.tls.mode == TlsMode::Acme {
            self.certs.kick();
        }
        info!(domain = %name, app = %target.app, env = %target.env, tls = %row.tls.mode, "domain added");
        Ok(self.domain_info(&row, None))
    }

    pub async fn remove_domain(
        &self,
        name: DomainName,
        who: &Principal,
    ) -> Result<(), ControlError> {
        let _op = self.domain_ops.lock().await;
        let (domain, _) = self.domain_gate(who, &name, Action::Domain).await?;
        let current = domain.target();
        let n = name.clone();
        let entry = domain
            .audit(&who.name, AuditAction::DomainRemove)
            .change(Some(current.to_string()), None);
        self.store
            .mutate(entry, move |c, _| q::delete_domain(c, &n))
            .await?;
        self.routing.unbind(&name).await;
        // Its certificate row went with it (cascade); its files and its place in the data
        // plane's TLS table go now.
        self.forget_cert(&name).await;
        info!(domain = %name, "domain removed");
        Ok(())
    }

    /// Move a domain to another environment of its app: refuse unless the target has a running
    /// instance that passes a fresh health check; then record the change and apply the new route
    /// table. When this returns, every new request goes to the target. The old environment keeps
    /// running, so switching back is as fast.
    /// `approved` is set when a second owner approved this switch (it skips the approval rule).
    pub async fn switch_domain(
        &self,
        name: DomainName,
        target: EnvRef,
        who: &Principal,
        approved: bool,
    ) -> Result<SwitchInfo, ControlError> {
        let _op = self.domain_ops.lock().await;
        // One read for the domain and both ends, before any decision.
        let (n, t) = (name.clone(), target.clone());
        let (domain, on, to) = self
            .store
            .call(move |c| {
                let domain = q::get_domain(c, &n)?;
                if domain.app != t.app {
                    return Err(ControlError::Invalid(format!(
                        "{n} belongs to app '{}'; it can only move between {}'s environments",
                        domain.app, domain.app
                    )));
                }
                let on = Gate::read(c, &domain.target(), Action::Domain)?;
                // Whether the target exists is told only to whom may move the domain.
                let to = Gate::read(c, &t, Action::Domain);
                Ok((domain, on, to))
            })
            .await?;
        // Moving a domain needs the right on both ends: where it is and where it goes.
        self.pass(who, &on).await?;
        let to = to?;
        self.pass(who, &to).await?;
        if !approved {
            let op = crate::approvals::Operation::Switch {
                domain: name.clone(),
                app: target.app.clone(),
                env: target.env.clone(),
            };
            let summary = format!("switch {name} from {} to {target}", domain.target());
            self.require_approval(who, &to, op, summary).await?;
        }
        let to = to.env;
        if domain.env == to.name {
            return Ok(SwitchInfo {
                domain: name,
                app: domain.app,
                from: domain.env.clone(),
                to: domain.env,
                action: "unchanged".into(),
                health_check_ms: 0.0,
                apply_us: 0.0,
            });
        }
        self.move_domain(name, domain, target, to, who, Move::Switch)
            .await
    }

    /// Point the domain back at the environment it was on before its latest switch not yet
    /// rolled back; repeated rollbacks walk further back through its history. Health-gated like
    /// a switch.
    pub async fn rollback_domain(
        &self,
        name: DomainName,
        who: &Principal,
    ) -> Result<SwitchInfo, ControlError> {
        let _op = self.domain_ops.lock().await;
        let (domain, _) = self.domain_gate(who, &name, Action::Domain).await?;
        let (id, app, n) = (domain.id, domain.app.clone(), name.clone());
        // Where it goes back to, and that environment's gate, in one read.
        let back = self
            .store
            .call(move |c| {
                let Some((undo, previous)) = q::rollback_target(c, id)? else {
                    return Ok(None);
                };
                let previous: EnvName = previous
                    .parse()
                    .map_err(|e| ControlError::internal(format!("history of {n}: {e}")))?;
                let target = EnvRef { app, env: previous };
                let gate = Gate::read(c, &target, Action::Domain).map_err(|_| {
                    ControlError::Conflict(format!(
                        "cannot roll {n} back to {target}: that environment no longer exists"
                    ))
                })?;
                Ok(Some((undo, target, gate)))
            })
            .await?;
        let Some((undo, target, to)) = back else {
            return Err(ControlError::Conflict(format!(
                "nothing to roll back: {name} has pointed to {}/{} since it was added (see `turnout domain history {name}`)",
                domain.app, domain.env
            )));
        };
        self.pass(who, &to).await?;
        self.move_domain(name, domain, target, to.env, who, Move::Rollback { undo })
            .await
    }

    /// The common end of a switch and a rollback: a fresh health check of the target, the new
    /// binding and its history and audit entries in one transaction, then the new route table.
    async fn move_domain(
        &self,
        name: DomainName,
        domain: DomainRow,
        target: EnvRef,
        to: EnvRow,
        who: &Principal,
        how: Move,
    ) -> Result<SwitchInfo, ControlError> {
        let health_check_ms = self.check_target(&name, &domain, &target).await?;
        let started = Instant::now();
        let action = match how {
            Move::Switch => "switch",
            Move::Rollback { .. } => "rollback",
        };
        let from = domain.target();
        let audit = match how {
            Move::Switch => AuditAction::DomainSwitch,
            Move::Rollback { .. } => AuditAction::DomainRollback,
        };
        let entry = AuditEntry::new(&who.name, audit)
            .app(&domain.app)
            .env(&to.name)
            .domain(&name)
            .change(Some(from.to_string()), Some(target.to_string()));
        let (d, t, actor) = (domain.clone(), to.clone(), who.name.clone());
        self.store
            .mutate(entry, move |c, _| {
                let undo = match how {
                    Move::Switch => None,
                    Move::Rollback { undo } => Some(undo),
                };
                q::move_domain(c, &d, &t, &actor, undo)
            })
            .await?;
        self.routing
            .bind(&DomainRow {
                env: to.name.clone(),
                ..domain.clone()
            })
            .await;
        let apply_us = started.elapsed().as_secs_f64() * 1e6;
        self.metrics().count_switch(name.as_str(), action);
        info!(domain = %name, from = %domain.env, to = %to.name, action, apply_us, "domain moved");
        Ok(SwitchInfo {
            domain: name,
            app: domain.app,
            from: domain.env,
            to: to.name,
            action: action.into(),
            health_check_ms,
            apply_us,
        })
    }

    /// Traffic moves only to an instance that passes a health check now, not one that passed
    /// at its deploy. Returns how long the check took, in milliseconds.
    async fn check_target(
        &self,
        name: &DomainName,
        domain: &DomainRow,
        target: &EnvRef,
    ) -> Result<f64, ControlError> {
        let Some(run) = self.routing.running(&key(target)) else {
            return Err(ControlError::Conflict(format!(
                "{target} has no running instance; deploy it first (`turnout deploy {target}`). {name} still points to {}/{}",
                domain.app, domain.env
            )));
        };
        let started = Instant::now();
        run.instance.check_health().await.map_err(|e| {
            ControlError::Conflict(format!(
                "refused: {target} failed a fresh health check ({e}); {name} still points to {}/{}",
                domain.app, domain.env
            ))
        })?;
        Ok(started.elapsed().as_secs_f64() * 1e3)
    }

    pub async fn set_maintenance(
        &self,
        name: DomainName,
        on: bool,
        message: Option<String>,
        who: &Principal,
    ) -> Result<DomainInfo, ControlError> {
        let _op = self.domain_ops.lock().await;
        let (domain, _) = self.domain_gate(who, &name, Action::Domain).await?;
        let message = on.then(|| {
            message
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_MAINTENANCE_MESSAGE.to_owned())
        });
        if message.as_ref().is_some_and(|m| m.len() > 2000) {
            return Err(ControlError::Invalid(
                "the maintenance message is longer than 2000 characters".into(),
            ));
        }
        let (d, m, actor) = (domain.clone(), message.clone(), who.name.clone());
        let action = if on {
            AuditAction::DomainMaintenanceOn
        } else {
            AuditAction::DomainMaintenanceOff
        };
        let entry = domain
            .audit(&who.name, action)
            .change(None, message.clone());
        self.store
            .mutate(entry, move |c, _| {
                q::set_maintenance(c, &d, m.as_deref(), &actor)
            })
            .await?;
        let row = DomainRow {
            maintenance: message,
            ..domain
        };
        self.routing.bind(&row).await;
        info!(domain = %name, on, "domain maintenance");
        self.domain_info_with_cert(row).await
    }

    pub async fn domain_history(
        &self,
        name: DomainName,
        who: &Principal,
    ) -> Result<Vec<DomainEvent>, ControlError> {
        let (domain, _) = self.domain_gate(who, &name, Action::Read).await?;
        let id = domain.id;
        let rows = self.store.call(move |c| q::domain_history(c, id)).await?;
        Ok(rows
            .into_iter()
            .map(|r| DomainEvent {
                id: r.id,
                at: format_timestamp(r.at),
                actor: r.actor,
                rolled_back: r.undone && r.action == "switch",
                action: r.action,
                from: r.from,
                to: r.to,
            })
            .collect())
    }
}
