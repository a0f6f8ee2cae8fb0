//! Outbound requests of each environment: what its instances get (`HTTP_PROXY`,
//! `HTTPS_PROXY` at the egress proxy), each tier's policy and the egress log.
use turnout_model::egress::{MAX_LOG_LIMIT, parse_hosts};
use turnout_model::{
    Action, AppName, AuditAction, EgressLog, EgressLogEntry, EgressMode, EgressPolicies,
    EgressPolicy, EgressPolicyInfo, EnvRef, SetEgressPolicy, Tier, format_timestamp,
};

use super::ControlPlane;
use crate::access::Principal;
use crate::error::ControlError;
use crate::store::egress::{self as eq, PolicyRow};
use crate::store::{AuditEntry, EnvRow, now};
use crate::vault::service_user;

/// Internal URLs and the daemon's own services are reached directly, never through the proxy.
const NO_PROXY: &str = "localhost,127.0.0.1,.localhost";

impl ControlPlane {
    /// At start-up, before an environment launches: the egress proxy's environments and
    /// policies, and its log's writer.
    pub async fn load_egress(&self) -> Result<(), ControlError> {
        self.egress.load().await
    }

    /// The variables an instance (or build) of `env` gets for its outbound requests: the
    /// egress proxy's URL with the environment's credentials, unless its tier runs with
    /// production's default (`allow`, nothing set), whose outbound does not depend on Turnout.
    pub(crate) fn egress_env(&self, env: &EnvRow) -> Vec<(String, String)> {
        self.egress.know(env);
        if !self.proxied(env.app_id, env.tier) {
            return vec![];
        }
        let url = format!(
            "http://{}:{}@127.0.0.1:{}",
            service_user(&env.app, &env.name),
            self.vault_credentials().credential(env.id),
            self.ports.egress
        );
        let mut vars: Vec<(String, String)> =
            ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"]
                .into_iter()
                .map(|k| (k.to_owned(), url.clone()))
                .collect();
        vars.extend(["NO_PROXY", "no_proxy"].map(|k| (k.to_owned(), NO_PROXY.to_owned())));
        vars
    }

    fn vault_credentials(&self) -> crate::vault::Credentials {
        self.vault
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .credentials()
    }

    /// Whether `tier`'s instances go through the proxy: all but production's default.
    fn proxied(&self, app_id: i64, tier: Tier) -> bool {
        let (_, set) = self.egress.policy(app_id, tier);
        set || tier != Tier::Production
    }

    /// Whether `env` may go out directly (its namespace gets a way out): only under `allow`.
    pub(crate) fn egress_open(&self, app_id: i64, tier: Tier) -> bool {
        self.egress.policy(app_id, tier).0.mode == EgressMode::Allow
    }

    /// Every tier's policy of `app` (Read).
    pub async fn egress_policies(
        &self,
        app: AppName,
        who: &Principal,
    ) -> Result<EgressPolicies, ControlError> {
        let row = self.authorize_app(who, &app, Action::Read).await?;
        self.policies_of(row.id, &app).await
    }

    async fn policies_of(
        &self,
        app_id: i64,
        app: &AppName,
    ) -> Result<EgressPolicies, ControlError> {
        let set = self
            .store
            .call(move |c| eq::app_policies(c, app_id))
            .await?;
        let tiers = Tier::ALL
            .into_iter()
            .map(|tier| {
                let row = set.iter().find(|p| p.tier == tier);
                let policy =
                    row.map_or_else(|| EgressPolicy::tier_default(tier), |r| r.policy.clone());
                EgressPolicyInfo {
                    tier,
                    mode: policy.mode,
                    allow_hosts: policy.hosts.iter().map(ToString::to_string).collect(),
                    default: row.is_none(),
                    proxied: row.is_some() || tier != Tier::Production,
                    set_by: row.map(|r| r.set_by.clone()),
                    set_at: row.map(|r| format_timestamp(r.set_at)),
                }
            })
            .collect();
        Ok(EgressPolicies {
            app: app.to_string(),
            tiers,
            enforced: self.networks.namespace_mode(),
            takes_effect: TAKES_EFFECT.to_owned(),
        })
    }

    /// Change one tier's policy (Config on that tier); answers every tier's.
    pub async fn set_egress_policy(
        &self,
        app: AppName,
        req: SetEgressPolicy,
        who: &Principal,
    ) -> Result<EgressPolicies, ControlError> {
        let tier = req.tier.ok_or_else(|| {
            ControlError::Invalid(
                "name the tier whose policy changes: --tier TIER (development, test, qa, staging, release, production, production-copy)".to_owned(),
            )
        })?;
        if req.mode.is_none() && req.allow_hosts.is_empty() && !req.clear_hosts && !req.reset {
            return Err(ControlError::Invalid(
                "nothing to change: give --mode deny|allow|record, --allow-host HOST, --clear-hosts or --reset".to_owned(),
            ));
        }
        if req.reset && (req.mode.is_some() || !req.allow_hosts.is_empty() || req.clear_hosts) {
            return Err(ControlError::Invalid(
                "--reset puts the tier back to its default: give it alone".to_owned(),
            ));
        }
        let added = parse_hosts(&req.allow_hosts).map_err(ControlError::Invalid)?;
        let row = self.app_row(&app).await?;
        self.authorize(who, row.id, &app, app.as_str(), Action::Config, Some(tier))
            .await?;
        let (current, _) = self.egress.policy(row.id, tier);
        let next = (!req.reset).then(|| {
            let mut hosts = if req.clear_hosts {
                Vec::new()
            } else {
                current.hosts.clone()
            };
            for h in added {
                if !hosts.contains(&h) {
                    hosts.push(h);
                }
            }
            EgressPolicy {
                mode: req.mode.unwrap_or(current.mode),
                hosts,
            }
        });
        if let Some(next) = &next
            && next.hosts.len() > turnout_model::egress::MAX_ALLOW_HOSTS
        {
            return Err(ControlError::Invalid(format!(
                "{} hosts on the {tier} allow-list; at most {} (use a wildcard such as *.example.com, or --clear-hosts)",
                next.hosts.len(),
                turnout_model::egress::MAX_ALLOW_HOSTS
            )));
        }
        let entry = AuditEntry::new(&who.name, AuditAction::EgressPolicy)
            .app(&app)
            .change(
                None,
                Some(format!(
                    "{tier}: {}",
                    next.as_ref().map_or_else(|| "default".to_owned(), shown)
                )),
            );
        let (app_id, by, at, stored) = (row.id, who.name.clone(), now(), next.clone());
        self.store
            .mutate(entry, move |c, entry| {
                let before: Option<PolicyRow> = match &stored {
                    Some(p) => eq::set_policy(c, app_id, tier, p, &by, at)?,
                    None => eq::reset_policy(c, app_id, tier)?,
                };
                entry.from = Some(format!(
                    "{tier}: {}",
                    before.map_or_else(|| "default".to_owned(), |b| shown(&b.policy))
                ));
                Ok(())
            })
            .await?;
        self.egress.set_policy(row.id, tier, next);
        // The namespaces' ways out follow at once; the proxy decides with the new policy
        // from the next request.
        self.apply_outbound(&app, row.id, tier).await;
        self.policies_of(row.id, &app).await
    }

    /// The newest `limit` outbound requests of the environment `r` (Read).
    pub async fn egress_log(
        &self,
        r: EnvRef,
        limit: u32,
        denied: bool,
        who: &Principal,
    ) -> Result<EgressLog, ControlError> {
        if limit == 0 || limit > MAX_LOG_LIMIT {
            return Err(ControlError::Invalid(format!(
                "--limit {limit}: give 1 to {MAX_LOG_LIMIT}"
            )));
        }
        let env = self.env_for(who, &r, Action::Read).await?;
        let env_id = env.id;
        let rows = self
            .store
            .call(move |c| eq::list(c, env_id, limit, denied))
            .await?;
        let (policy, _) = self.egress.policy(env.app_id, env.tier);
        Ok(EgressLog {
            env: r.to_string(),
            tier: env.tier,
            mode: policy.mode,
            entries: rows
                .into_iter()
                .map(|(id, l)| EgressLogEntry {
                    id,
                    at: format_ms(l.at_ms),
                    method: l.method,
                    host: l.host,
                    port: l.port,
                    path: l.path,
                    decision: l.decision,
                    status: l.status,
                    bytes_up: l.bytes_up,
                    bytes_down: l.bytes_down,
                    duration_ms: l.duration_ms,
                    error: l.error,
                })
                .collect(),
        })
    }
}

const TAKES_EFFECT: &str = "the proxy decides with a changed policy from the next request, and an environment's direct way out (network namespaces) opens or closes at once; the proxy variables an instance gets change at its next deploy or restart";

fn shown(p: &EgressPolicy) -> String {
    if p.hosts.is_empty() {
        p.mode.to_string()
    } else {
        let hosts: Vec<String> = p.hosts.iter().map(ToString::to_string).collect();
        format!("{} {}", p.mode, hosts.join(","))
    }
}

/// RFC 3339 with milliseconds.
fn format_ms(ms: i64) -> String {
    let base = format_timestamp(ms.div_euclid(1000));
    match base.strip_suffix('Z') {
        Some(head) => format!("{head}.{:03}Z", ms.rem_euclid(1000)),
        None => base,
    }
}
