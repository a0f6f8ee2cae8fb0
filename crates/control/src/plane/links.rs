//! Apps wired together stage by stage (`turnout link`): each environment of APP gets
//! `NAME_URL`, `http://127.0.0.1:PORT`, PORT its own for that link. The data plane listens
//! there (inside the environment's namespace, or on the host's loopback where environments
//! share the host's network) and routes every request as the internal host of the environment
//! of OTHER at its stage (`turnout_model::link::resolve`), as resolved now: the same route
//! table, so deploys, switches of OTHER's domains, restarts, sleep and maintenance
//! behave as at its internal URL. A link's listener passes no login: it exists only where the
//! link's maker put it, and making one needs a role on OTHER that can already log in there.
//!
//! `apply_links` is the one function that makes the data plane's listeners what the store
//! says (at start-up, after a link or an environment changes, and before each launch, so the
//! listeners exist in the namespace before the instance's port is chosen there).
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use tracing::{info, warn};
use turnout_dataplane::LinkKey;
use turnout_model::link::{LinkEnv, MAX_LINK_NAME, Resolution, link_var, resolve};
use turnout_model::{
    Action, AppName, AuditAction, CreateLink, EnvLink, EnvRef, LinkInfo, LinkRule, LinkTarget, Tier,
};

use super::ControlPlane;
use crate::access::Principal;
use crate::error::ControlError;
use crate::store::links::{self as lq, LinkRow};
use crate::store::{AuditEntry, EnvRow, q};

/// Ports tried before a link port is given up on (each a fresh one from the kernel).
const PORT_TRIES: usize = 16;

/// Everything links are computed from, read in one go.
pub(crate) struct Wiring {
    links: Vec<LinkRow>,
    envs: Vec<EnvRow>,
    /// By link and linking environment.
    ports: HashMap<(i64, i64), u16>,
}

/// Where one environment's link leads.
struct Wire<'a> {
    link: &'a LinkRow,
    env: &'a EnvRow,
    to: Result<(&'a EnvRow, LinkRule), String>,
}

impl Wiring {
    fn wires(&self) -> Vec<Wire<'_>> {
        let mut by_app: HashMap<i64, Vec<&EnvRow>> = HashMap::new();
        for env in &self.envs {
            by_app.entry(env.app_id).or_default().push(env);
        }
        let mut out = Vec::new();
        for link in &self.links {
            let others = by_app.get(&link.other_id).cloned().unwrap_or_default();
            let candidates: Vec<LinkEnv> = others.iter().map(|e| link_env(e)).collect();
            for env in by_app.get(&link.app_id).into_iter().flatten() {
                let to = match resolve(&link_env(env), &candidates, link.default_env.as_ref()) {
                    Resolution::Found { env: name, rule } => others
                        .iter()
                        .find(|o| o.name == name)
                        .map(|o| (*o, rule))
                        .ok_or_else(|| format!("{name} is gone")),
                    Resolution::Missing(why) => Err(why),
                };
                out.push(Wire { link, env, to });
            }
        }
        out
    }
}

fn link_env(e: &EnvRow) -> LinkEnv {
    LinkEnv {
        name: e.name.clone(),
        tier: e.tier,
        branch: e.branch.clone(),
        made_for_branch: e.made_for_branch,
    }
}

fn env_ref(e: &EnvRow) -> EnvRef {
    EnvRef {
        app: e.app.clone(),
        env: e.name.clone(),
    }
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

impl ControlPlane {
    /// `turnout link APP OTHER [--as NAME] [--default ENV]`: owners of APP (it changes every
    /// environment of APP, production included) who may also deploy OTHER's development
    /// environments (it opens OTHER's environments to APP's code).
    pub async fn create_link(
        &self,
        app: AppName,
        req: CreateLink,
        who: &Principal,
    ) -> Result<LinkInfo, ControlError> {
        if req.other == app {
            return Err(ControlError::Invalid(format!(
                "an app cannot be linked to itself ({app}); its own environments know their URL as TURNOUT_URL"
            )));
        }
        let var = link_var(&req.other, req.name.as_deref()).map_err(ControlError::Invalid)?;
        let app_row = self.authorize_app(who, &app, Action::Config).await?;
        let other = self.app_row(&req.other).await?;
        self.authorize(
            who,
            other.id,
            &other.name,
            other.name.as_str(),
            Action::Deploy,
            Some(Tier::Development),
        )
        .await?;
        let entry = AuditEntry::new(&who.name, AuditAction::LinkCreate)
            .app(&app)
            .change(None, Some(format!("{} as {var}", other.name)));
        let (app_id, other_id, by) = (app_row.id, other.id, who.name.clone());
        let (stored_var, default) = (var.clone(), req.default.clone());
        self.store
            .mutate(entry, move |c, _| {
                lq::insert_link(c, app_id, other_id, &stored_var, default.as_ref(), &by)
            })
            .await?;
        info!(app = %app, other = %other.name, var = %var, by = %who.name, "apps linked");
        self.apply_links().await?;
        self.link_info(app_id, &var).await
    }

    /// `turnout link list APP`: every link of APP and, for each environment, where it leads
    /// (or why nowhere); for anyone with a role on APP.
    pub async fn list_links(
        &self,
        app: AppName,
        who: &Principal,
    ) -> Result<Vec<LinkInfo>, ControlError> {
        let row = self.authorize_app(who, &app, Action::Read).await?;
        let wiring = self.wiring().await?;
        Ok(infos(&wiring, row.id))
    }

    /// `turnout link remove APP OTHER|--as NAME`: owners of APP (no role on OTHER is needed to
    /// close what a link opened). Environments lose the variable at their next start; the
    /// listener goes now.
    pub async fn remove_link(
        &self,
        app: AppName,
        name: String,
        who: &Principal,
    ) -> Result<LinkInfo, ControlError> {
        let app_row = self.authorize_app(who, &app, Action::Config).await?;
        let app_id = app_row.id;
        // The link's NAME (`--as`), else OTHER's name when one link of APP goes there.
        let wiring = self.wiring().await?;
        let links = infos(&wiring, app_id);
        let by_var = link_var(&app, Some(&name)).ok();
        let by_other: Vec<&LinkInfo> = links.iter().filter(|l| l.other.as_str() == name).collect();
        let named = links.iter().find(|l| Some(&l.var) == by_var.as_ref());
        let mut info = match (named, by_other.as_slice()) {
            (Some(link), _) => link.clone(),
            (None, [link]) => (*link).clone(),
            (None, []) => {
                let shown: String = name.chars().take(MAX_LINK_NAME).collect();
                return Err(ControlError::NotFound(format!(
                    "{app} has no link named {shown}; see `turnout link list {app}`"
                )));
            }
            (None, several) => {
                let vars: Vec<&str> = several.iter().map(|l| l.var.as_str()).collect();
                return Err(ControlError::Invalid(format!(
                    "{app} has {} links to {name} ({}); name the one to remove with --as NAME",
                    several.len(),
                    vars.join(", ")
                )));
            }
        };
        let var = info.var.clone();
        let entry = AuditEntry::new(&who.name, AuditAction::LinkRemove)
            .app(&app)
            .change(Some(format!("{} as {var}", info.other)), None);
        let gone = var.clone();
        self.store
            .mutate(entry, move |c, _| lq::remove_link(c, app_id, &gone))
            .await?;
        info!(app = %app, var = %var, by = %who.name, "link removed");
        self.apply_links().await?;
        for target in &mut info.envs {
            target.url = None;
        }
        Ok(info)
    }

    /// Where each link of `env`'s app leads from it, for `env show`.
    pub(crate) async fn env_links(&self, env: &EnvRow) -> Result<Vec<EnvLink>, ControlError> {
        let wiring = self.wiring().await?;
        let mut out = Vec::new();
        for link in infos(&wiring, env.app_id) {
            if let Some(t) = link.envs.into_iter().find(|t| t.env == env.name) {
                out.push(EnvLink {
                    var: link.var,
                    other: link.other,
                    to: t.to,
                    rule: t.rule,
                    url: t.url,
                    missing: t.missing,
                });
            }
        }
        Ok(out)
    }

    /// One link of an app as `link list` shows it.
    async fn link_info(&self, app_id: i64, var: &str) -> Result<LinkInfo, ControlError> {
        let wiring = self.wiring().await?;
        infos(&wiring, app_id)
            .into_iter()
            .find(|l| l.var == var)
            .ok_or_else(|| {
                ControlError::NotFound(format!("no link sets {var}; see `turnout link list APP`"))
            })
    }

    async fn wiring(&self) -> Result<Wiring, ControlError> {
        self.store
            .call(|c| {
                Ok(Wiring {
                    links: lq::links(c, None)?,
                    envs: q::list_envs(c, None)?,
                    ports: lq::link_ports(c)?,
                })
            })
            .await
    }

    /// The variables `env`'s instances (and one-off commands) get from its app's links, once
    /// the listeners they name exist in `env`'s network (made here if it was not yet), so the
    /// port an instance is given there afterwards cannot be one of theirs. A link without a
    /// counterpart sets nothing, and the daemon's log says why.
    pub(crate) async fn link_env(
        &self,
        env: &EnvRow,
    ) -> Result<Vec<(String, String)>, ControlError> {
        self.network(env).await?;
        let wiring = self.apply_links().await?;
        let mut vars = Vec::new();
        for wire in wiring.wires().iter().filter(|w| w.env.id == env.id) {
            match &wire.to {
                Ok(_) => {
                    if let Some(port) = wiring.ports.get(&(wire.link.id, env.id)) {
                        vars.push((wire.link.var.clone(), url(*port)));
                    }
                }
                Err(why) => {
                    warn!(app = %env.app, env = %env.name, var = %wire.link.var, other = %wire.link.other, why = %why, "a link has no counterpart; its variable is not set")
                }
            }
        }
        Ok(vars)
    }

    /// Make the data plane's link listeners what the store says: each linking environment
    /// gets a port per link (once, kept for their life, so the URL an instance was given stays
    /// valid), and where its namespace is held by this daemon (or on the host, without
    /// namespaces) a listener at that port routed as its counterpart's internal host, which
    /// follows what the link resolves to now. Serialised, so two changes cannot send their
    /// tables out of order. Returns what it computed from.
    pub(crate) async fn apply_links(&self) -> Result<Wiring, ControlError> {
        let _one = self.links_lock.lock().await;
        let mut wiring = self.wiring().await?;
        let portless: Vec<(i64, EnvRow)> = wiring
            .wires()
            .iter()
            .filter(|w| w.to.is_ok() && !wiring.ports.contains_key(&(w.link.id, w.env.id)))
            .map(|w| (w.link.id, w.env.clone()))
            .collect();
        for (link_id, env) in portless {
            let port = self.give_port(link_id, &env, &wiring.ports).await?;
            wiring.ports.insert((link_id, env.id), port);
        }
        let held = self.networks.held().await;
        let namespaces = self.networks.namespace_mode();
        let mut wanted = BTreeMap::new();
        for wire in wiring.wires() {
            let Ok((to, _)) = wire.to else { continue };
            let Some(&port) = wiring.ports.get(&(wire.link.id, wire.env.id)) else {
                continue;
            };
            let namespace = match namespaces {
                true if held.contains(&wire.env.uid) => self.networks.namespace_name(wire.env),
                true => continue,
                false => None,
            };
            wanted.insert(LinkKey { namespace, port }, env_ref(to).internal_host());
        }
        self.dataplane().update_links(wanted).wait().await;
        Ok(wiring)
    }

    /// After environments or apps were created or deleted: what links resolve to may have
    /// changed. A failure is logged; the next launch or link change applies them again.
    pub(crate) async fn links_changed(&self) {
        if let Err(e) = self.apply_links().await {
            warn!(error = %e, "cannot apply the links' listeners");
        }
    }

    /// A port for `env`'s link `link_id`, free on the host's loopback now (so a listener there
    /// can have it) and given to no other; recorded with an audit entry by `turnout`.
    async fn give_port(
        &self,
        link_id: i64,
        env: &EnvRow,
        taken: &HashMap<(i64, i64), u16>,
    ) -> Result<u16, ControlError> {
        let used: HashSet<u16> = taken.values().copied().collect();
        for _ in 0..PORT_TRIES {
            let port = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .and_then(|l| l.local_addr())
                .map_err(|e| ControlError::internal(format!("find a port for a link: {e}")))?
                .port();
            if used.contains(&port) || port == self.http_port {
                continue;
            }
            let entry = AuditEntry::new("turnout", AuditAction::LinkPort)
                .app(&env.app)
                .env(&env.name)
                .change(None, Some(format!("link {link_id} at port {port}")));
            let env_id = env.id;
            let added = self
                .store
                .mutate(entry, move |c, _| {
                    lq::set_link_port(c, link_id, env_id, port)
                })
                .await?;
            if added {
                return Ok(port);
            }
        }
        Err(ControlError::internal(format!(
            "no port for links found in {PORT_TRIES} tries"
        )))
    }
}

/// The links of app `app_id` as `link list` shows them.
fn infos(wiring: &Wiring, app_id: i64) -> Vec<LinkInfo> {
    let wires = wiring.wires();
    wiring
        .links
        .iter()
        .filter(|l| l.app_id == app_id)
        .map(|link| LinkInfo {
            app: link.app.clone(),
            other: link.other.clone(),
            var: link.var.clone(),
            default: link.default_env.clone(),
            created_by: link.created_by.clone(),
            created_at: link.created_at,
            envs: wires
                .iter()
                .filter(|w| w.link.id == link.id)
                .map(|w| match &w.to {
                    Ok((to, rule)) => LinkTarget {
                        env: w.env.name.clone(),
                        to: Some(to.name.clone()),
                        rule: Some(*rule),
                        url: wiring.ports.get(&(link.id, w.env.id)).map(|p| url(*p)),
                        missing: None,
                    },
                    Err(why) => LinkTarget {
                        env: w.env.name.clone(),
                        to: None,
                        rule: None,
                        url: None,
                        missing: Some(why.clone()),
                    },
                })
                .collect(),
        })
        .collect()
}
