//! Configuration set through Turnout: values at the app, tier and environment levels (plain
//! or secret, secrets sealed by the vault), resolved for an environment with the app file's
//! `[env]` layers by one rule (see `turnout_model::ConfigLevel`), and who may set and see them.
//!
//! Values set here reach instances only (`launch`), never builds: a build gets the app file's
//! `[env]` alone, so its log cannot show a value set here. The snapshot each launch ran with is
//! `config_snapshot`'s.
use std::collections::BTreeMap;

use turnout_model::{
    Action, AppName, AuditAction, ConfigChanged, ConfigEntry, ConfigLevel, ConfigListing, EnvName,
    EnvRef, MAX_CONFIG_KEYS, MAX_CONFIG_VALUE, SECRET_SHOWN_AS, SetConfig, Tier, UnsetConfig,
    format_timestamp,
};

use super::ControlPlane;
use crate::access::Principal;
use crate::app_file::{ReleaseConfig, check_env_key};
use crate::error::ControlError;
use crate::store::config::{self as cq, SetLevel, ValueRow};
use crate::store::{AppRow, AuditEntry, EnvRow, q};
use crate::vault::Vault;

/// Variables Turnout gives every instance besides `PORT` and `TURNOUT_*` (refused by
/// `check_env_key`): no level may set them.
const DATA_KEYS: &[&str] = &["DATABASE_URL"];

/// One value set through Turnout, opened (plain). Not `Debug`: it may be a secret.
#[derive(Clone)]
pub(crate) struct SetValue {
    pub level: ConfigLevel,
    pub secret: bool,
    pub value: String,
    pub updated_at: i64,
    pub updated_by: String,
}

/// The level a request names, authorized, and what it takes to see its secrets.
struct Target {
    app: AppRow,
    level: SetLevel,
    env: Option<EnvRow>,
}

impl ControlPlane {
    pub(crate) fn vault(&self) -> std::sync::RwLockReadGuard<'_, Vault> {
        self.vault.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn vault_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vault> {
        self.vault.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Set values at one level, all or none.
    pub async fn set_config(
        &self,
        app: AppName,
        req: SetConfig,
        who: &Principal,
    ) -> Result<ConfigChanged, ControlError> {
        let t = self
            .config_target(&app, req.env.as_ref(), req.tier, Action::Config, who)
            .await?;
        if req.values.is_empty() {
            return Err(ControlError::Invalid(
                "give at least one KEY=VALUE to set".into(),
            ));
        }
        if req.values.len() > MAX_CONFIG_KEYS {
            return Err(too_many());
        }
        for (key, value) in &req.values {
            check_config_key(key)?;
            if value.len() > MAX_CONFIG_VALUE || value.contains('\0') {
                return Err(ControlError::Invalid(format!(
                    "the value of '{key}' must be text without NUL bytes, at most 64 KiB (it has {} bytes); nothing was set",
                    value.len()
                )));
            }
        }
        // Sealed under the sealing lock, so a key rotation cannot slip in between.
        let _sealing = self.sealing.read().await;
        let app_id = t.app.id;
        let rows: Vec<(String, Vec<u8>)> = req
            .values
            .iter()
            .map(|(k, v)| {
                let stored = match req.secret {
                    true => self
                        .vault()
                        .seal(&t.level.seal_name(app_id, k), v.as_bytes())?,
                    false => v.as_bytes().to_vec(),
                };
                Ok((k.clone(), stored))
            })
            .collect::<Result<_, ControlError>>()?;
        let keys: Vec<String> = req.values.keys().cloned().collect();
        let entry = self
            .config_entry(&t, AuditAction::ConfigSet, who)
            .change(None, Some(describe(&t, &keys, req.secret)));
        let (level, by, secret) = (t.level.clone(), who.name.clone(), req.secret);
        let version = self
            .store
            .mutate(entry, move |c, _| {
                for (key, value) in &rows {
                    cq::set_value(c, app_id, &level, key, secret, value, &by)?;
                }
                if cq::count_at(c, app_id, &level)? > MAX_CONFIG_KEYS {
                    return Err(too_many());
                }
                cq::bump_version(c, app_id)
            })
            .await?;
        Ok(ConfigChanged { version, keys })
    }

    /// Remove keys at one level, all or none (a key not set there is an error).
    pub async fn unset_config(
        &self,
        app: AppName,
        req: UnsetConfig,
        who: &Principal,
    ) -> Result<ConfigChanged, ControlError> {
        let t = self
            .config_target(&app, req.env.as_ref(), req.tier, Action::Config, who)
            .await?;
        if req.keys.is_empty() || req.keys.len() > MAX_CONFIG_KEYS {
            return Err(ControlError::Invalid(format!(
                "give 1 to {MAX_CONFIG_KEYS} keys to unset"
            )));
        }
        let entry = self
            .config_entry(&t, AuditAction::ConfigUnset, who)
            .change(Some(describe(&t, &req.keys, false)), None);
        let (app_id, level, keys) = (t.app.id, t.level.clone(), req.keys.clone());
        let at = level_name(&t);
        let version = self
            .store
            .mutate(entry, move |c, _| {
                for key in &keys {
                    if !cq::unset_value(c, app_id, &level, key)? {
                        return Err(ControlError::NotFound(format!(
                            "'{}' is not set at {at}; nothing was unset (`turnout config list` shows what is)",
                            key.chars().take(128).collect::<String>()
                        )));
                    }
                }
                cq::bump_version(c, app_id)
            })
            .await?;
        Ok(ConfigChanged {
            version,
            keys: req.keys,
        })
    }

    /// `config list`: an environment's resolved configuration, or what is set at one level.
    /// Secret values are shown only when asked for and allowed (the right to deploy there).
    pub async fn list_config(
        &self,
        app: AppName,
        env: Option<EnvName>,
        tier: Option<Tier>,
        show_secrets: bool,
        who: &Principal,
    ) -> Result<ConfigListing, ControlError> {
        let action = if show_secrets {
            Action::Deploy
        } else {
            Action::Read
        };
        let t = self
            .config_target(&app, env.as_ref(), tier, action, who)
            .await?;
        let app_id = t.app.id;
        let version = self.store.call(move |c| cq::version(c, app_id)).await?;
        let entries = match &t.env {
            Some(env) => self.resolved(env, show_secrets).await?,
            None => {
                let level = t.level.clone();
                let rows = self
                    .store
                    .call(move |c| cq::values_at(c, app_id, &level))
                    .await?;
                self.open_rows(app_id, rows)?
                    .into_iter()
                    .map(|(key, v)| entry(key, v, Vec::new(), show_secrets))
                    .collect()
            }
        };
        Ok(ConfigListing {
            app,
            env,
            tier,
            version,
            entries,
        })
    }

    /// Every key an instance of `env` gets (its live release's app file, the values set
    /// through Turnout now, Turnout's own), with the level it comes from.
    async fn resolved(
        &self,
        env: &EnvRow,
        show_secrets: bool,
    ) -> Result<Vec<ConfigEntry>, ControlError> {
        let r = EnvRef {
            app: env.app.clone(),
            env: env.name.clone(),
        };
        let mut layers: BTreeMap<String, Vec<(String, SetValue)>> = BTreeMap::new();
        let mut add =
            |key: String, v: SetValue| layers.entry(key.clone()).or_default().push((key, v));
        let release = match env.current_release_id {
            Some(id) => Some(self.store.call(move |c| q::get_release(c, id)).await?),
            None => None,
        };
        let file_value = |level, value: &String| SetValue {
            level,
            secret: false,
            value: value.clone(),
            updated_at: 0,
            updated_by: String::new(),
        };
        if let Some(release) = &release {
            let config: ReleaseConfig = serde_json::from_str(&release.config)
                .map_err(|e| ControlError::internal(format!("release {}: {e}", release.id)))?;
            let file_level = |table: &str| match table {
                t if t.starts_with("tiers.") => ConfigLevel::FileTier,
                t if t.starts_with("environments.") => ConfigLevel::FileEnv,
                _ => ConfigLevel::File,
            };
            for (key, value) in &config.env {
                // Every table that set it: the release keeps the winning value only, which is
                // all an overridden level shows anyway.
                match config.env_sources.get(key) {
                    Some(tables) => {
                        for table in tables {
                            add(key.clone(), file_value(file_level(table), value));
                        }
                    }
                    None => add(key.clone(), file_value(ConfigLevel::File, value)),
                }
            }
            // The allow-list's defaults (PATH, HOME, LANG) are not configuration: any level
            // may replace them.
            let defaults: Vec<String> = self.base_env(&r).into_iter().map(|(k, _)| k).collect();
            for (key, value) in self.release_env(&r, env.tier, &release.commit, &config) {
                if config.env.contains_key(&key) || defaults.contains(&key) {
                    continue;
                }
                add(key, turnout_value(&value));
            }
            for (key, value) in self.mail_env(env, &config) {
                add(key, turnout_value(&value));
            }
        }
        for (key, value) in self.set_values(env).await? {
            add(key, value);
        }
        for (key, value) in self.egress_env(env) {
            add(key, turnout_value(&value));
        }
        if let Some(row) = self.data_row(env).await? {
            let gn = self.generation(env, &row)?;
            for (key, value) in self.data_env(env, &gn).await?.0 {
                add(key, turnout_value(&value));
            }
        }
        add("PORT".into(), turnout_value("(chosen at each launch)"));
        Ok(layers
            .into_values()
            .filter_map(|mut values| {
                values.sort_by_key(|(_, v)| v.level);
                let (key, winner) = values.pop()?;
                let overrides = values.iter().map(|(_, v)| v.level).collect();
                Some(entry(key, winner, overrides, show_secrets))
            })
            .collect())
    }

    /// The values set through Turnout that apply to `env` now, every level, opened.
    pub(crate) async fn set_values(
        &self,
        env: &EnvRow,
    ) -> Result<Vec<(String, SetValue)>, ControlError> {
        let (app_id, tier, env_id) = (env.app_id, env.tier, env.id);
        let rows = self
            .store
            .call(move |c| cq::values_for_env(c, app_id, tier, env_id))
            .await?;
        self.open_rows(app_id, rows)
    }

    fn open_rows(
        &self,
        app_id: i64,
        rows: Vec<ValueRow>,
    ) -> Result<Vec<(String, SetValue)>, ControlError> {
        let vault = self.vault();
        rows.into_iter()
            .map(|row| {
                let value = match row.secret {
                    true => vault.open_text(&row.level.seal_name(app_id, &row.key), &row.value)?,
                    false => String::from_utf8_lossy(&row.value).into_owned(),
                };
                let level = match row.level {
                    SetLevel::App => ConfigLevel::App,
                    SetLevel::Tier(_) => ConfigLevel::Tier,
                    SetLevel::Env(_) => ConfigLevel::Env,
                };
                Ok((
                    row.key,
                    SetValue {
                        level,
                        secret: row.secret,
                        value,
                        updated_at: row.updated_at,
                        updated_by: row.updated_by,
                    },
                ))
            })
            .collect()
    }

    /// The level a request names, if `who` may do `action` there: the environment's (needs
    /// `action` on it), a tier's (on that tier), the app's (on every tier: for a change, the
    /// production role; to see secrets, the right to deploy production).
    async fn config_target(
        &self,
        app: &AppName,
        env: Option<&EnvName>,
        tier: Option<Tier>,
        action: Action,
        who: &Principal,
    ) -> Result<Target, ControlError> {
        match (env, tier) {
            (Some(_), Some(_)) => Err(ControlError::Invalid(
                "name either an environment (APP/ENV) or a tier (--tier), not both".into(),
            )),
            (Some(env), None) => {
                let r = EnvRef {
                    app: app.clone(),
                    env: env.clone(),
                };
                let row = self.env_for(who, &r, action).await?;
                Ok(Target {
                    app: self.app_row(app).await?,
                    level: SetLevel::Env(row.id),
                    env: Some(row),
                })
            }
            (None, Some(tier)) => {
                let row = self.app_row(app).await?;
                let what = format!("{app} --tier {tier}");
                self.authorize(who, row.id, app, &what, action, Some(tier))
                    .await?;
                Ok(Target {
                    app: row,
                    level: SetLevel::Tier(tier),
                    env: None,
                })
            }
            (None, None) => {
                let row = self.app_row(app).await?;
                let tiers: &[Tier] = match action {
                    Action::Config => &Tier::ALL,
                    Action::Deploy => &[Tier::Production],
                    _ => &[Tier::Development],
                };
                for tier in tiers {
                    self.authorize(who, row.id, app, app.as_str(), action, Some(*tier))
                        .await?;
                }
                Ok(Target {
                    app: row,
                    level: SetLevel::App,
                    env: None,
                })
            }
        }
    }

    fn config_entry(&self, t: &Target, action: AuditAction, who: &Principal) -> AuditEntry {
        let entry = AuditEntry::new(&who.name, action).app(&t.app.name);
        match &t.env {
            Some(env) => entry.env(&env.name),
            None => entry,
        }
    }
}

/// A key `config set` accepts: `check_env_key`'s rule, and none of the data's variables.
fn check_config_key(key: &str) -> Result<(), ControlError> {
    check_env_key(key).map_err(|e| ControlError::Invalid(format!("{e}; nothing was set")))?;
    if DATA_KEYS.contains(&key) {
        return Err(ControlError::Invalid(format!(
            "env key '{key}' is reserved: Turnout sets it to the environment's own database; nothing was set"
        )));
    }
    Ok(())
}

fn too_many() -> ControlError {
    ControlError::Invalid(format!(
        "at most {MAX_CONFIG_KEYS} keys may be set at one level; nothing was set"
    ))
}

fn level_name(t: &Target) -> String {
    match (&t.level, &t.env) {
        (SetLevel::Env(_), Some(env)) => format!("{}/{}", env.app, env.name),
        (SetLevel::Tier(tier), _) => format!("{} --tier {tier}", t.app.name),
        _ => format!("{} (the app level)", t.app.name),
    }
}

/// What the audit log records of a change: the level and the keys, never a value.
fn describe(t: &Target, keys: &[String], secret: bool) -> String {
    let level = match &t.level {
        SetLevel::App => "app".to_owned(),
        SetLevel::Tier(tier) => format!("tier {tier}"),
        SetLevel::Env(_) => "env".to_owned(),
    };
    let kind = if secret { " (secret)" } else { "" };
    format!("{level}: {}{kind}", keys.join(", "))
}

fn turnout_value(value: &str) -> SetValue {
    SetValue {
        level: ConfigLevel::Turnout,
        secret: false,
        value: crate::git::redact_url(value),
        updated_at: 0,
        updated_by: String::new(),
    }
}

fn entry(key: String, v: SetValue, overrides: Vec<ConfigLevel>, show: bool) -> ConfigEntry {
    let set_here = matches!(
        v.level,
        ConfigLevel::App | ConfigLevel::Tier | ConfigLevel::Env
    );
    ConfigEntry {
        key,
        level: v.level,
        secret: v.secret,
        value: if v.secret && !show {
            SECRET_SHOWN_AS.to_owned()
        } else {
            v.value
        },
        overrides,
        updated_at: set_here.then(|| format_timestamp(v.updated_at)),
        updated_by: set_here.then_some(v.updated_by),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_follow_the_env_rule_and_leave_turnouts_own_alone() {
        assert!(check_config_key("API_KEY").is_ok());
        assert!(check_config_key("SMTP_URL").is_ok());
        for (key, says) in [
            ("PORT", "reserved"),
            ("TURNOUT_X", "reserved"),
            ("DATABASE_URL", "reserved"),
            ("1A", "not allowed"),
            ("A-B", "not allowed"),
            ("", "not allowed"),
        ] {
            let err = check_config_key(key).unwrap_err().to_string();
            assert!(
                err.contains(says) && err.contains("nothing was set"),
                "{key}: {err}"
            );
        }
        let long = "K".repeat(129);
        assert!(check_config_key(&long).is_err());
    }
}
