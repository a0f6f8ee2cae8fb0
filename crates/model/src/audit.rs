//! What an audit entry records was done: one name per kind of change, the same in the store,
//! the API and the CLI.
use serde::{Deserialize, Serialize};

use crate::Action;

macro_rules! audit_actions {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// Every kind of audited change (and of refused attempt, named by its [`Action`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum AuditAction {
            $(#[doc = $doc] $variant,)*
        }

        impl AuditAction {
            pub const ALL: &[AuditAction] = &[$(AuditAction::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(AuditAction::$variant => $name,)*
                }
            }
        }
    };
}

audit_actions! {
    AppCreate => "app.create", "An app was created.";
    AppDelete => "app.delete", "An app was deleted.";
    AppUpdate => "app.update", "An app's settings changed (`app update`).";
    Push => "push", "A push to the app's git URL created, moved or deleted a branch (one entry per branch).";
    EnvCreate => "env.create", "An environment was created.";
    EnvDelete => "env.delete", "An environment was deleted.";
    EnvStop => "env.stop", "An environment was stopped on purpose.";
    EnvStart => "env.start", "A stopped environment's release went live again.";
    EnvPlan => "env.plan", "An environment's resource plan changed (from the next instance on).";
    EnvTrigger => "env.trigger", "What deploys an environment by itself changed.";
    EnvSleepAfter => "env.sleep-after", "After how long idle an environment sleeps changed.";
    EnvSleep => "env.sleep", "An idle environment was put to sleep (its instance stopped).";
    EnvWake => "env.wake", "A request woke a sleeping environment (its release went live again).";
    EnvRun => "env.run", "A command was run in an environment's live release (`turnout run`; its command line, never its output), or a refused one.";
    JobStart => "job.start", "A job was queued.";
    JobEnd => "job.end", "A job ended (its result says how).";
    JobCancel => "job.cancel", "A user asked to cancel a job.";
    JobInterrupted => "job.interrupted", "A job the last daemon left running was marked interrupted.";
    ReleaseCreate => "release.create", "A deploy recorded a new release.";
    ReleaseFail => "release.fail", "A release did not go live.";
    Deploy => "deploy", "A deployed release went live (refused: a deploy was not allowed).";
    DeployBegin => "deploy.begin", "A deploy recorded a new release (written by versions before jobs).";
    DeployInterrupted => "deploy.interrupted", "A release the last daemon left building was marked failed (one entry per release).";
    Rollback => "rollback", "An earlier release went live again.";
    Restart => "restart", "A fresh instance of the live release went live.";
    DomainAdd => "domain.add", "A domain was bound to an environment.";
    DomainRemove => "domain.remove", "A domain was removed.";
    DomainSwitch => "domain.switch", "A domain moved to another environment.";
    DomainRollback => "domain.rollback", "A domain moved back along its history.";
    DomainMaintenanceOn => "domain.maintenance-on", "A domain went into maintenance.";
    DomainMaintenanceOff => "domain.maintenance-off", "A domain left maintenance.";
    DomainTls => "domain.tls", "A domain's HTTPS settings changed (mode, redirect, HSTS, ACME challenge).";
    CertAdd => "cert.add", "An own certificate was added for a domain (never its key).";
    CertRemove => "cert.remove", "A domain's certificate was removed.";
    CertRenew => "cert.renew", "Someone asked for a domain's certificate to be ordered now.";
    CertIssue => "cert.issue", "An ACME order for a domain ended (its result says whether a certificate was issued).";
    SecretSet => "secret.set", "A secret was set (written by versions before `config`).";
    SecretUnset => "secret.unset", "A secret was removed (written by versions before `config`).";
    ConfigSet => "config.set", "Configuration values were set at a level (their keys only are recorded).";
    ConfigUnset => "config.unset", "Configuration values were removed at a level.";
    SecretsSealed => "secrets.sealed", "Values an older version kept in plain text were sealed at start-up (how many is recorded).";
    SecretsRotateKey => "secrets.rotate-key", "The key sealing secret values was replaced and every sealed value re-sealed.";
    UserBootstrap => "user.bootstrap", "The first start created the administrator.";
    UserAdd => "user.add", "A user was added.";
    TokenCreate => "token.create", "An API token was created.";
    TokenRevoke => "token.revoke", "An API token was revoked.";
    AccessGrant => "access.grant", "A role was granted.";
    AccessRevoke => "access.revoke", "A role was revoked.";
    AccessPolicy => "access.policy", "A cell of an app's policy changed.";
    AccessApprovals => "access.approvals", "An approval rule changed.";
    AccessProtect => "access.protect", "Internal URLs now need a login.";
    AccessUnprotect => "access.unprotect", "Internal URLs no longer need a login.";
    ApprovalRequest => "approval.request", "An operation waits for a second owner.";
    ApprovalApprove => "approval.approve", "A second owner approved a request.";
    ApprovalReject => "approval.reject", "A second owner rejected a request.";
    ApprovalResult => "approval.result", "The approved operation ran (its result says how).";
    ApprovalExpire => "approval.expire", "A request expired unanswered.";
    PipelineSet => "pipeline.set", "An app's pipeline was declared (stages and allowed promotions).";
    PipelineReset => "pipeline.reset", "An app's promotions went back to the tier rule.";
    ScheduleAdd => "schedule.add", "A scheduled cut was added.";
    ScheduleRemove => "schedule.remove", "A scheduled cut was removed.";
    ScheduleRun => "schedule.run", "A scheduled cut's tick was handled (its result names the job, or why none ran).";
    Read => "read", "A refused read (never recorded when allowed).";
    Config => "config", "A refused configuration change.";
    Promote => "promote", "A promotion: an environment went live on another one's release (or a refused one).";
    Reseed => "reseed", "A refused re-seed.";
    Restore => "restore", "A refused restore.";
    Domain => "domain", "A refused domain change.";
    Access => "access", "A refused access change.";
    HookSet => "hook.set", "An app's GitHub or GitLab webhook secret was set (never the secret itself).";
    DataSeed => "data.seed", "An environment's data was re-created from its seed (a new generation went live).";
    DataClone => "data.clone", "An environment's data was replaced by a copy of another's.";
    DataSync => "data.sync", "An environment's data was refreshed from production's, masked.";
    DataAttach => "data.attach", "An environment was given access to another's database.";
    DataDetach => "data.detach", "An environment's access to another's database was removed.";
    DataConnect => "data.connect", "Someone opened a shell on an environment's database (`data psql`/`data sqlite`).";
    DataSchedule => "data.schedule", "An environment's scheduled re-seed changed.";
    BackupCreate => "backup.create", "A snapshot of an environment's data was taken (by hand, by the schedule or before a migration).";
    BackupDelete => "backup.delete", "A snapshot was deleted (by hand, or by retention).";
    BackupVerify => "backup.verify", "A snapshot was restored into a scratch area and checked (its result says whether it passed).";
    BackupPolicy => "backup.policy", "An environment's backup schedule was set through the CLI.";
    BackupRestore => "backup.restore", "An environment's data (and release) was put back to an earlier moment.";
    BackupDrill => "backup.drill", "A recovery drill ran (its result says whether it passed).";
    DataReset => "data.reset", "The production copy was made production as of a moment.";
    DataUndo => "data.undo", "The production copy was put back as the last reset left it.";
    EgressPolicy => "egress.policy", "A tier's outbound policy (mode, allow-list) changed for an app.";
    HookAccept => "hook.accept", "A signed GitHub or GitLab webhook delivery was accepted (its deploys follow).";
    MailRelay => "mail.relay", "A caught message was relayed to its allow-listed recipients, or the relay failed (its result says which).";
    MailClear => "mail.clear", "An environment's caught mail was removed.";
    MailRelaySet => "mail.relay-set", "A tier's mail relay was set or turned off (the URL's password is never recorded).";
    LinkCreate => "link.create", "An app was linked to another (its environments get NAME_URL from their next start).";
    LinkRemove => "link.remove", "A link between two apps was removed.";
    LinkPort => "link.port", "Turnout gave an environment the port its links' listeners use.";
}

impl From<Action> for AuditAction {
    /// A refused attempt is recorded under the name of the action that was refused.
    fn from(action: Action) -> Self {
        match action {
            Action::Read => AuditAction::Read,
            Action::Deploy => AuditAction::Deploy,
            Action::Run => AuditAction::EnvRun,
            Action::Config => AuditAction::Config,
            Action::Promote => AuditAction::Promote,
            Action::Reseed => AuditAction::Reseed,
            Action::Restore => AuditAction::Restore,
            Action::Domain => AuditAction::Domain,
            Action::Access => AuditAction::Access,
        }
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AuditAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AuditAction::ALL
            .iter()
            .copied()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown audit action '{s}'"))
    }
}

impl Serialize for AuditAction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AuditAction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for a in AuditAction::ALL {
            assert!(seen.insert(a.as_str()), "{a} twice");
            assert_eq!(a.as_str().parse::<AuditAction>().unwrap(), *a);
            let json = serde_json::to_string(a).unwrap();
            assert_eq!(serde_json::from_str::<AuditAction>(&json).unwrap(), *a);
        }
        assert!("deploy.started".parse::<AuditAction>().is_err());
    }
}
