//! `turnout config …`, `turnout secret …` (the environment level's secrets) and `turnout secrets
//! rotate-key`: requests to the API. A secret's value given without `=VALUE` is read from
//! standard input, so it is never a process argument.
use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, bail};
use turnout_client::Client;
use turnout_model::endpoint as ep;
use turnout_model::{AppName, ConfigLevel, EnvName, EnvRef, SetConfig, Tier, UnsetConfig};

use crate::cli::{ConfigCommand, SecretCommand, SecretsCommand};
use crate::render;

/// `APP` or `APP/ENV`.
fn target(s: &str) -> anyhow::Result<(AppName, Option<EnvName>)> {
    match s.split_once('/') {
        Some(_) => {
            let r: EnvRef = s.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok((r.app, Some(r.env)))
        }
        None => Ok((AppName::new(s).map_err(|e| anyhow::anyhow!("{e}"))?, None)),
    }
}

fn read_stdin(key: &str) -> anyhow::Result<String> {
    let mut v = String::new();
    std::io::stdin()
        .read_to_string(&mut v)
        .with_context(|| format!("cannot read the value of {key} from standard input"))?;
    Ok(v.strip_suffix('\n').map(str::to_owned).unwrap_or(v))
}

/// `KEY=VALUE` pairs; with `secret`, one `KEY` alone reads its value from standard input.
fn pairs(values: Vec<String>, secret: bool) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let alone = values.iter().filter(|v| !v.contains('=')).count();
    for v in values {
        let (key, value) = match v.split_once('=') {
            Some((k, val)) => (k.to_owned(), val.to_owned()),
            None if secret && alone == 1 => {
                let value = read_stdin(&v)?;
                (v, value)
            }
            // Never echo it: it may be a value pasted without its key.
            None if secret => bail!(
                "give one KEY alone (its value read from standard input), the others as KEY=VALUE"
            ),
            None => bail!(
                "give KEY=VALUE pairs; a KEY alone (its value read from standard input) needs --secret"
            ),
        };
        if out.insert(key.clone(), value).is_some() {
            bail!("{key} is given twice");
        }
    }
    Ok(out)
}

pub async fn command(
    client: &Client,
    command: ConfigCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Set {
            target: t,
            tier,
            secret,
            values,
        } => {
            let (app, env) = target(&t)?;
            let body = SetConfig {
                env,
                tier,
                secret,
                values: pairs(values, secret)?,
            };
            let changed = client.call(&ep::SetConfig { app, body }).await?;
            render::config::changed("set", &t, tier, &changed, json);
        }
        ConfigCommand::Unset {
            target: t,
            tier,
            keys,
        } => {
            let (app, env) = target(&t)?;
            let body = UnsetConfig { env, tier, keys };
            let changed = client.call(&ep::UnsetConfig { app, body }).await?;
            render::config::changed("unset", &t, tier, &changed, json);
        }
        ConfigCommand::Get {
            target: t,
            tier,
            key,
            show,
        } => {
            let (app, env) = target(&t)?;
            let listing = client
                .call(&ep::ListConfig {
                    app,
                    env,
                    tier,
                    show_secrets: show,
                })
                .await?;
            let Some(entry) = listing.entries.iter().find(|e| e.key == key) else {
                bail!("{key} is not set for {t}{}", at_tier(tier));
            };
            render::config::get(entry, json);
        }
        ConfigCommand::List {
            target: t,
            tier,
            show_secrets,
        } => {
            let (app, env) = target(&t)?;
            let listing = client
                .call(&ep::ListConfig {
                    app,
                    env,
                    tier,
                    show_secrets,
                })
                .await?;
            render::config::list(&listing, json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn at_tier(tier: Option<Tier>) -> String {
    tier.map(|t| format!(" --tier {t}")).unwrap_or_default()
}

/// `turnout secret …`: the environment level's secrets, through the config endpoints.
pub async fn secret(
    client: &Client,
    command: SecretCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        SecretCommand::Set { target, key, value } => {
            let value = match value {
                Some(v) => v,
                None => read_stdin(&key)?,
            };
            let body = SetConfig {
                env: Some(target.env.clone()),
                tier: None,
                secret: true,
                values: BTreeMap::from([(key, value)]),
            };
            let changed = client
                .call(&ep::SetConfig {
                    app: target.app.clone(),
                    body,
                })
                .await?;
            render::config::changed("set", &target.to_string(), None, &changed, json);
        }
        SecretCommand::List { target, show } => {
            let mut listing = client
                .call(&ep::ListConfig {
                    app: target.app,
                    env: Some(target.env),
                    tier: None,
                    show_secrets: show,
                })
                .await?;
            listing
                .entries
                .retain(|e| e.secret && e.level == ConfigLevel::Env);
            render::config::list(&listing, json);
        }
        SecretCommand::Unset { target, key } => {
            let body = UnsetConfig {
                env: Some(target.env.clone()),
                tier: None,
                keys: vec![key],
            };
            let changed = client
                .call(&ep::UnsetConfig {
                    app: target.app.clone(),
                    body,
                })
                .await?;
            render::config::changed("unset", &target.to_string(), None, &changed, json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn secrets(
    client: &Client,
    command: SecretsCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        SecretsCommand::RotateKey => {
            let rotated = client.call(&ep::RotateSecretKey).await?;
            render::done(
                &format!(
                    "the secret key is now {}; {} sealed values re-sealed, the old key removed",
                    rotated.key_id, rotated.resealed
                ),
                &rotated,
                json,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
