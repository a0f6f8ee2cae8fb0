//! Approvals: where an app asks for it (per tier and action), a production deploy or domain
//! switch by one owner waits until a second owner approves it. The request is stored with the
//! operation to run; approving runs it, in the requester's name, and records who approved.
use serde::{Deserialize, Serialize};
use turnout_model::{
    AppName, ApprovalInfo, AuditAction, DeployRequest, DomainName, EnvName, EnvRef, Role,
    format_timestamp,
};

use crate::access::{self, Principal};
use crate::error::ControlError;
use crate::plane::{ControlPlane, Gate};
use crate::store::access as aq;
use crate::store::{AuditEntry, q};

/// An operation waiting for approval, stored as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    Deploy {
        app: AppName,
        env: EnvName,
        git_ref: Option<String>,
    },
    Switch {
        domain: DomainName,
        app: AppName,
        env: EnvName,
    },
    Promote {
        app: AppName,
        from: EnvName,
        to: EnvName,
    },
}

fn approval_info(r: &aq::ApprovalRow) -> ApprovalInfo {
    ApprovalInfo {
        id: r.id,
        app: r.app.clone(),
        action: r.action,
        summary: r.summary.clone(),
        requested_by: r.requested_by.clone(),
        created_at: format_timestamp(r.created_at),
        expires_at: format_timestamp(r.expires_at),
        status: r.status.clone(),
        decided_by: r.decided_by.clone(),
        result: r.result.clone(),
        job: None,
    }
}

impl ControlPlane {
    /// When the app asks for a second owner's approval of what `gate` was read for, record `op`
    /// as a pending request and answer `NeedsApproval`; otherwise let the caller go on.
    pub(crate) async fn require_approval(
        &self,
        who: &Principal,
        gate: &Gate,
        op: Operation,
        summary: String,
    ) -> Result<(), ControlError> {
        let Some(expires_s) = gate.approval else {
            return Ok(());
        };
        let (app_id, action, app, tier) =
            (gate.env.app_id, gate.action, &gate.env.app, gate.env.tier);
        let request = serde_json::to_string(&op)
            .map_err(|e| ControlError::internal(format!("serialise approval request: {e}")))?;
        let (requester, s2) = (who.name.clone(), summary.clone());
        let entry = AuditEntry::new(&who.name, AuditAction::ApprovalRequest)
            .app(app)
            .change(None, Some(summary.clone()));
        let id = self
            .store()
            .mutate(entry, move |c, _| {
                aq::insert_approval(c, app_id, action, &request, &s2, &requester, expires_s)
            })
            .await?;
        Err(ControlError::NeedsApproval {
            id,
            message: format!(
                "{summary} needs a second owner's approval on app '{app}' (tier {tier}): request {id}, waiting {}; another owner approves it with `turnout approve {id}`",
                human_duration(expires_s)
            ),
        })
    }

    /// Pending requests (all of them with `all`) on apps `who` has a role on.
    pub async fn list_approvals(
        &self,
        who: &Principal,
        all: bool,
    ) -> Result<Vec<ApprovalInfo>, ControlError> {
        self.expire_approvals().await?;
        let rows = self
            .store()
            .call(move |c| aq::list_approvals(c, all))
            .await?;
        let apps = self.store().call(|c| q::list_apps(c)).await?;
        Ok(rows
            .iter()
            .filter(|r| {
                apps.iter()
                    .any(|a| a.name.as_str() == r.app && who.role_on(a.id).is_some())
            })
            .map(approval_info)
            .collect())
    }

    /// Approve request `id` as a second owner of its app, then run it. Returns the request
    /// with the operation's result.
    pub async fn approve(
        self: &std::sync::Arc<Self>,
        id: i64,
        who: &Principal,
    ) -> Result<ApprovalInfo, ControlError> {
        let row = self.decide(id, who, "approved").await?;
        let op: Operation = serde_json::from_str(&row.request)
            .map_err(|e| ControlError::internal(format!("approval {id}: {e}")))?;
        // The requester was authorized when they asked; the operation runs in their name with
        // the approver on the record.
        let actor = Principal {
            name: format!("{} (approved by {})", row.requested_by, who.name),
            ..Principal::system()
        };
        let mut started_job = None;
        let result = match op {
            Operation::Deploy { app, env, git_ref } => {
                let r = EnvRef { app, env };
                // A job on the plane's task tracker: it outlives this request, and shutdown
                // waits for it.
                self.start_deploy(r.clone(), DeployRequest { git_ref }, actor.name.clone())
                    .await
                    .map(|job| {
                        started_job = Some(job.id);
                        format!("deploy of {r} started as job {}", job.id)
                    })
            }
            Operation::Promote { app, from, to } => {
                let (from, to) = (
                    EnvRef {
                        app: app.clone(),
                        env: from,
                    },
                    EnvRef { app, env: to },
                );
                self.start_promote(from.clone(), to.clone(), actor.name.clone())
                    .await
                    .map(|job| {
                        started_job = Some(job.id);
                        format!("promotion of {from} to {to} started as job {}", job.id)
                    })
            }
            Operation::Switch { domain, app, env } => self
                .switch_domain(domain, EnvRef { app, env }, &actor, true)
                .await
                .map(|s| format!("{} now points to {}/{}", s.domain, s.app, s.to)),
        };
        // The result lands on the request and in the audit log; the entry fails with the
        // operation.
        let entry = AuditEntry::new(&actor.name, AuditAction::ApprovalResult).app(&row.app);
        let request = Some(format!("request {id}"));
        match &result {
            Ok(done) => {
                let text = done.clone();
                self.store()
                    .mutate(entry.change(request, Some(done.clone())), move |c, _| {
                        aq::set_approval_result(c, id, &text)
                    })
                    .await?;
            }
            Err(e) => {
                let text = format!("failed: {e}");
                self.store()
                    .mutate_failed(entry.change(request, None), e.to_string(), move |c| {
                        aq::set_approval_result(c, id, &text)
                    })
                    .await?;
            }
        }
        let row = self.store().call(move |c| aq::get_approval(c, id)).await?;
        result?;
        Ok(ApprovalInfo {
            job: started_job,
            ..approval_info(&row)
        })
    }

    /// Mark pending requests past their time expired, each with its audit entry.
    async fn expire_approvals(&self) -> Result<(), ControlError> {
        self.store()
            .mutate_each(aq::expire_approvals)
            .await
            .map(drop)
    }

    pub async fn reject(&self, id: i64, who: &Principal) -> Result<ApprovalInfo, ControlError> {
        let row = self.decide(id, who, "rejected").await?;
        Ok(approval_info(&row))
    }

    /// Checks common to approving and rejecting: the request is pending and not expired, `who`
    /// is an owner of its app, and not the one who asked.
    async fn decide(
        &self,
        id: i64,
        who: &Principal,
        status: &'static str,
    ) -> Result<aq::ApprovalRow, ControlError> {
        self.expire_approvals().await?;
        let row = self.store().call(move |c| aq::get_approval(c, id)).await?;
        let app: AppName = row
            .app
            .parse()
            .map_err(|e| ControlError::internal(format!("approval {id}: {e}")))?;
        let app_row = self.app_row(&app).await?;
        access::check(
            who,
            app_row.id,
            &app,
            &format!("deciding approval request {id}"),
            Role::Owner,
        )?;
        if row.status != "pending" {
            return Err(ControlError::Conflict(format!(
                "approval request {id} is {}, not pending",
                row.status
            )));
        }
        if row.requested_by == who.name {
            return Err(ControlError::Forbidden(format!(
                "forbidden: {} asked for request {id} and cannot {} it; another owner of '{app}' must",
                who.name,
                if status == "approved" {
                    "approve"
                } else {
                    "reject"
                }
            )));
        }
        let by = who.name.clone();
        let action = if status == "approved" {
            AuditAction::ApprovalApprove
        } else {
            AuditAction::ApprovalReject
        };
        let entry = AuditEntry::new(&who.name, action)
            .app(&app)
            .change(Some(row.requested_by.clone()), Some(row.summary.clone()));
        self.store()
            .mutate(entry, move |c, _| aq::decide_approval(c, id, status, &by))
            .await?;
        self.store().call(move |c| aq::get_approval(c, id)).await
    }
}

/// `3600` -> `1h`, `90` -> `90s`.
pub fn human_duration(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The longest `--expires` accepted: ten years. Anything longer is a typo, and would overflow
/// the timestamps it is added to.
const MAX_EXPIRY_S: i64 = 10 * 365 * 86_400;

/// `30d`, `12h`, `90m`, `45s`: the `--expires` of a token or an approval rule, in seconds.
pub fn parse_expiry(text: &str) -> Result<i64, ControlError> {
    let invalid = |why: &str| ControlError::Invalid(format!("invalid --expires '{text}': {why}"));
    let format = || invalid("write it like 30d, 12h, 90m or 45s");
    let too_long = || invalid("at most 10 years (3650d)");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(format)?;
    let (n, unit) = text.split_at(split);
    let unit_s: i64 = match unit {
        "d" => 86_400,
        "h" => 3600,
        "m" => 60,
        "s" => 1,
        _ => return Err(format()),
    };
    if n.is_empty() {
        return Err(format());
    }
    // Only digits are left, so the parse fails only when the number is too big for an i64.
    let n: i64 = n.parse().map_err(|_| too_long())?;
    let secs = n
        .checked_mul(unit_s)
        .filter(|s| *s <= MAX_EXPIRY_S)
        .ok_or_else(too_long)?;
    if secs == 0 {
        return Err(invalid("a duration must be longer than 0"));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_durations_are_checked() {
        assert_eq!(parse_expiry("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_expiry("90m").unwrap(), 5400);
        assert_eq!(parse_expiry("3650d").unwrap(), MAX_EXPIRY_S);
        for (text, why) in [
            ("3651d", "at most 10 years"),
            // 106751991167301 days * 86400 overflows an i64.
            ("106751991167301d", "at most 10 years"),
            ("9999999999999999999999d", "at most 10 years"),
            ("0s", "longer than 0"),
            ("d", "write it like"),
            ("12", "write it like"),
            ("12w", "write it like"),
            ("-5m", "write it like"),
        ] {
            let err = parse_expiry(text).unwrap_err().to_string();
            assert!(
                err.contains(&format!("invalid --expires '{text}'")) && err.contains(why),
                "{text}: {err}"
            );
        }
    }
}
