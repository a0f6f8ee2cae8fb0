//! What the dashboard reads in one go: an app's environments as cards (status and live
//! release; one store statement for all their releases, routing state from memory), one domain
//! (without listing them all), and which actions a principal may take, asked of the same policy
//! `authorize` enforces.
use std::collections::HashMap;

use turnout_model::{
    Action, AppName, DomainInfo, DomainName, EnvName, EnvRef, EnvStatus, PipelineSpec, ReleaseInfo,
    Tier,
};

use super::envs::env_status;
use super::pipeline::allowed;
use super::routing::key;
use super::{ControlPlane, release_info};
use crate::access::Principal;
use crate::error::ControlError;
use crate::store::access as aq;
use crate::store::pipeline as pq;
use crate::store::tls::CertRow;
use crate::store::{ReleaseRow, q};

/// One environment as the pipeline picture shows it.
#[derive(Debug, Clone)]
pub struct EnvCard {
    pub name: EnvName,
    pub tier: Tier,
    pub branch: String,
    pub url: String,
    pub status: EnvStatus,
    pub status_reason: Option<String>,
    pub release: Option<ReleaseInfo>,
}

/// An app's environments and its declared pipeline (none: the tier rule).
#[derive(Debug, Clone)]
pub struct Board {
    pub app: AppName,
    pub app_id: i64,
    pub envs: Vec<EnvCard>,
    pub pipeline: Option<PipelineSpec>,
}

impl ControlPlane {
    /// The app's environments as cards, for anyone with a role on it: one read of the store
    /// for the environments, their live releases and the pipeline, whatever their number.
    pub async fn board(&self, app: AppName, who: &Principal) -> Result<Board, ControlError> {
        let row = self.authorize_app(who, &app, Action::Read).await?;
        let app_id = row.id;
        let a = app.clone();
        let (rows, releases, pipeline) = self
            .store
            .call(move |c| {
                Ok((
                    q::list_envs(c, Some(&a))?,
                    q::live_releases(c, Some(&a))?,
                    pq::pipeline(c, app_id)?,
                ))
            })
            .await?;
        let releases: HashMap<i64, ReleaseRow> = releases.into_iter().map(|r| (r.id, r)).collect();
        let envs = rows
            .into_iter()
            .map(|row| {
                let r = EnvRef {
                    app: row.app.clone(),
                    env: row.name.clone(),
                };
                let release = row.current_release_id.and_then(|id| releases.get(&id));
                let routing = self.routing.env(&key(&r));
                let now = routing.running.as_ref().map(|run| run.instance.status());
                let (status, status_reason) =
                    env_status(&routing, now.as_ref(), row.stopped, release.is_some());
                EnvCard {
                    url: self.url(&r),
                    name: row.name,
                    tier: row.tier,
                    branch: row.branch,
                    status,
                    status_reason,
                    release: release.map(release_info),
                }
            })
            .collect();
        Ok(Board {
            app,
            app_id,
            envs,
            pipeline,
        })
    }

    /// One domain as `list_domains` shows it, for anyone with a role on its app; to anyone else
    /// it does not exist, as in the list. One read of the store, whatever the number of domains.
    pub async fn domain(
        &self,
        name: &DomainName,
        who: &Principal,
    ) -> Result<DomainInfo, ControlError> {
        let hidden = || {
            ControlError::NotFound(format!(
                "no domain {name}; see the domains page for the ones you may see"
            ))
        };
        let n = name.clone();
        let found = self
            .store
            .call(move |c| {
                let row = q::get_domain(c, &n)?;
                let app_id = q::get_app(c, &row.app)?.id;
                Ok((row, app_id))
            })
            .await;
        let (row, app_id) = match found {
            Err(ControlError::NotFound(_)) => return Err(hidden()),
            found => found?,
        };
        if who.role_on(app_id).is_none() {
            return Err(hidden());
        }
        self.domain_info_with_cert(row).await
    }

    /// The domains `who` may see whose name, app or environment contains `part`, by name, as
    /// `list_domains` shows them: the first `shown`, how many more match, and how many of all
    /// the domains `who` may see have a certificate. Only those shown are made into
    /// `DomainInfo`s, so a page of them costs little more with 10,000 domains than with 10.
    pub async fn find_domains(
        &self,
        who: &Principal,
        part: &str,
        shown: usize,
    ) -> Result<FoundDomains, ControlError> {
        let apps = who.visible_apps();
        let part = part.trim().to_ascii_lowercase();
        let found = self
            .store
            .call(move |c| q::find_domains(c, apps.as_deref(), &part, shown))
            .await?;
        let certs: HashMap<i64, &CertRow> = found.certs.iter().map(|c| (c.domain_id, c)).collect();
        let domains = found
            .rows
            .iter()
            .map(|r| self.domain_info(r, certs.get(&r.id).copied()))
            .collect();
        let (more, certificates) = (found.more, found.certificates);
        Ok(FoundDomains {
            domains,
            more,
            certificates,
        })
    }

    /// What `who` may do on app `app_id`, for every action and tier: the role the app's policy
    /// (or the default matrix) asks for, as `authorize` checks it, read at once and never
    /// audited. It only decides which controls a page shows; every action is authorized again
    /// by the plane when it runs.
    pub async fn permissions(
        &self,
        who: &Principal,
        app_id: i64,
    ) -> Result<Permissions, ControlError> {
        let Some(role) = who.role_on(app_id) else {
            return Ok(Permissions(Vec::new()));
        };
        self.store
            .call(move |c| {
                let mut allowed = Vec::new();
                for action in Action::ALL {
                    for tier in Tier::ALL {
                        if aq::needed_role(c, app_id, action, tier)? <= role {
                            allowed.push((action, tier));
                        }
                    }
                }
                Ok(Permissions(allowed))
            })
            .await
    }
}

/// Some of the domains a user may see (`ControlPlane::find_domains`).
#[derive(Debug, Clone)]
pub struct FoundDomains {
    pub domains: Vec<DomainInfo>,
    /// How many more matched.
    pub more: usize,
    /// How many of all the domains the user may see have a certificate (or one being ordered).
    pub certificates: usize,
}

/// The (action, tier) pairs a principal may do on one app.
#[derive(Debug, Clone, Default)]
pub struct Permissions(Vec<(Action, Tier)>);

impl Permissions {
    pub fn may(&self, action: Action, tier: Tier) -> bool {
        self.0.contains(&(action, tier))
    }
}

impl Board {
    /// The environments whose live release may be promoted into `to`: the declared pipeline's
    /// promotions, or the tier rule (the check `promote` makes).
    pub fn promotable_into(&self, to: &EnvCard) -> Vec<EnvName> {
        self.envs
            .iter()
            .filter(|from| from.name != to.name && from.release.is_some())
            .filter(|from| {
                allowed(
                    self.pipeline.as_ref(),
                    (&from.name, from.tier),
                    (&to.name, to.tier),
                )
            })
            .map(|from| from.name.clone())
            .collect()
    }
}
