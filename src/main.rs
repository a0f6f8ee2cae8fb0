//! `turnout`: the daemon (`serve`, `demo`) and the thin API client every other command is.
#![forbid(unsafe_code)]

mod cli;
mod client;
mod demo;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use turnout_control::home::default_home;
use turnout_control::{ServeConfig, serve};
use turnout_model::{
    AddDomain, AppInfo, ApprovalInfo, AuditInfo, AuditVerification, CreateApp, CreateEnv,
    CreateToken, CreateUser, DeployRequest, DomainEvent, DomainInfo, EnvInfo, PolicyEntry,
    ReleaseInfo, SecretInfo, ServeInfo, SetApprovalRule, SetGrant, SetMaintenance, SetPolicy,
    SetProtection, SetSecret, SwitchDomain, SwitchInfo, TokenCreated, TokenInfo, UserInfo,
};
use turnout_proxy::ProxyConfig;

use crate::cli::{
    AccessCommand, AppCommand, ApprovalsCommand, AuditCommand, Cli, Command, DomainCommand,
    EnvCommand, OnOff, ReleaseCommand, SecretCommand, ServeArgs, TokenCommand, UserCommand,
};
use crate::client::Client;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => match e.downcast_ref::<client::PendingApproval>() {
            // Not done, not failed: waiting for a second owner (exit code 3).
            Some(pending) => {
                eprintln!("pending: {pending}");
                ExitCode::from(3)
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let home = cli.home.clone().unwrap_or_else(default_home);
    match cli.command {
        Command::Serve(args) => {
            init_tracing();
            run_daemon(home, &args, cli.json, |_| {}).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            init_tracing();
            let home = cli.home.clone().unwrap_or_else(demo::default_home);
            demo::run(home, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let api = api_address(cli.api.as_deref(), &home);
            let client = Client::new(&api, api_token(&home))?;
            run_client(&client, command, cli.json).await
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TURNOUT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// Run the daemon until Ctrl-C or SIGTERM. `ready` runs once the listeners are bound.
pub async fn run_daemon(
    home: PathBuf,
    args: &ServeArgs,
    json: bool,
    ready: impl FnOnce(&ServeInfo),
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        signals.cancel();
    });
    let config = ServeConfig {
        home,
        api_listen: args.api_listen,
        http_listen: args.http_listen,
        proxy_workers: args.proxy_workers.map(usize::from),
        proxy: ProxyConfig::default(),
    };
    serve(config, shutdown, |info| {
        if json {
            println!("{}", serde_json::to_string(info).unwrap_or_default());
        } else {
            println!("turnout serving");
            println!("  API    {}", info.api);
            println!("  proxy  {}", info.http);
            println!("  home   {}", info.home);
        }
        ready(info);
    })
    .await
}

/// `--api`/`TURNOUT_API`, else the running daemon's address from `<home>/serve.json`, else the
/// default.
fn api_address(flag: Option<&str>, home: &std::path::Path) -> String {
    if let Some(api) = flag {
        return api.to_owned();
    }
    std::fs::read(home.join("serve.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<ServeInfo>(&b).ok())
        .map_or_else(|| "http://127.0.0.1:7070".to_owned(), |i| i.api)
}

/// `TURNOUT_TOKEN`, else the owner token the daemon wrote to its home (on the same machine).
pub fn api_token(home: &std::path::Path) -> Option<String> {
    std::env::var("TURNOUT_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| std::fs::read_to_string(home.join("admin.token")).ok())
        .map(|t| t.trim().to_owned())
}

/// A relative local path means nothing to the daemon: make it absolute here.
fn absolute_repo(repo: &str) -> anyhow::Result<String> {
    if repo.contains("://") || !std::path::Path::new(repo).exists() {
        return Ok(repo.to_owned());
    }
    let path = std::fs::canonicalize(repo)
        .with_context(|| format!("cannot read the repository path '{repo}'"))?;
    path.to_str()
        .map(str::to_owned)
        .context("the repository path is not valid UTF-8")
}

async fn run_client(client: &Client, command: Command, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(_) | Command::Demo(_) => unreachable!("handled by run"),
        Command::App(AppCommand::Create {
            name,
            repo,
            token_env,
        }) => {
            let body = CreateApp {
                name,
                repo: absolute_repo(&repo)?,
                token_env,
            };
            let app: AppInfo = client.post("/apps", &body).await?;
            render::app_created(&app, json);
        }
        Command::App(AppCommand::List) => {
            let apps: Vec<AppInfo> = client.get("/apps").await?;
            render::apps(&apps, json);
        }
        Command::App(AppCommand::Delete { name, force }) => {
            client
                .delete(&format!("/apps/{name}?force={force}"))
                .await?;
            render::deleted("app", name.as_str(), json);
        }
        Command::Env(EnvCommand::Create {
            target,
            branch,
            tier,
        }) => {
            let body = CreateEnv {
                name: target.env.clone(),
                branch,
                tier: Some(tier),
            };
            let env: EnvInfo = client
                .post(&format!("/apps/{}/envs", target.app), &body)
                .await?;
            render::env_created(&env, json);
        }
        Command::Env(EnvCommand::List { app }) => {
            let path = match &app {
                Some(app) => format!("/apps/{app}/envs"),
                None => "/envs".to_owned(),
            };
            let envs: Vec<EnvInfo> = client.get(&path).await?;
            render::envs(&envs, json);
        }
        Command::Env(EnvCommand::Show { target }) => {
            let env: EnvInfo = client
                .get(&format!("/apps/{}/envs/{}", target.app, target.env))
                .await?;
            render::env(&env, json);
        }
        Command::Env(EnvCommand::Delete { target }) => {
            client
                .delete(&format!("/apps/{}/envs/{}", target.app, target.env))
                .await?;
            render::deleted("environment", &target.to_string(), json);
        }
        Command::Deploy { target, git_ref } => {
            let ok = deploy(client, &target, git_ref, json).await?;
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Release(ReleaseCommand::List { target }) => {
            let releases: Vec<ReleaseInfo> = client
                .get(&format!(
                    "/apps/{}/envs/{}/releases",
                    target.app, target.env
                ))
                .await?;
            render::releases(&releases, json);
        }
        Command::Domain(DomainCommand::Add { domain, target }) => {
            let body = AddDomain {
                domain,
                app: target.app,
                env: target.env,
            };
            let info: DomainInfo = client.post("/domains", &body).await?;
            render::domain_added(&info, json);
        }
        Command::Domain(DomainCommand::List) => {
            let domains: Vec<DomainInfo> = client.get("/domains").await?;
            render::domains(&domains, json);
        }
        Command::Domain(DomainCommand::Remove { domain }) => {
            client.delete(&format!("/domains/{domain}")).await?;
            render::deleted("domain", domain.as_str(), json);
        }
        Command::Domain(DomainCommand::Switch { domain, target }) => {
            let body = SwitchDomain {
                app: target.app,
                env: target.env,
            };
            let info: SwitchInfo = client
                .post(&format!("/domains/{domain}/switch"), &body)
                .await?;
            render::switched(&info, json);
        }
        Command::Domain(DomainCommand::Rollback { domain }) => {
            let info: SwitchInfo = client
                .post(&format!("/domains/{domain}/rollback"), &())
                .await?;
            render::switched(&info, json);
        }
        Command::Domain(DomainCommand::History { domain }) => {
            let events: Vec<DomainEvent> =
                client.get(&format!("/domains/{domain}/history")).await?;
            render::domain_history(&events, json);
        }
        Command::Domain(DomainCommand::Maintenance {
            domain,
            state,
            message,
        }) => {
            let body = SetMaintenance {
                on: matches!(state, OnOff::On),
                message,
            };
            let info: DomainInfo = client
                .post(&format!("/domains/{domain}/maintenance"), &body)
                .await?;
            render::maintenance(&info, json);
        }
        Command::Secret(SecretCommand::Set { target, key, value }) => {
            let value = match value {
                Some(v) => v,
                None => {
                    let mut v = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut v)
                        .context("cannot read the secret's value from standard input")?;
                    v.strip_suffix('\n').map(str::to_owned).unwrap_or(v)
                }
            };
            let path = format!("/apps/{}/envs/{}/secrets", target.app, target.env);
            client
                .post_empty(
                    &path,
                    &SetSecret {
                        key: key.clone(),
                        value,
                    },
                )
                .await?;
            let body = serde_json::json!({ "set": key, "environment": target.to_string() });
            render::done(
                &format!("set secret {key} of {target}; instances get it at the next deploy"),
                &body,
                json,
            );
        }
        Command::Secret(SecretCommand::List { target, show }) => {
            let path = format!(
                "/apps/{}/envs/{}/secrets?values={show}",
                target.app, target.env
            );
            let secrets: Vec<SecretInfo> = client.get(&path).await?;
            render::secrets(&secrets, json);
        }
        Command::Secret(SecretCommand::Unset { target, key }) => {
            client
                .delete(&format!(
                    "/apps/{}/envs/{}/secrets/{key}",
                    target.app, target.env
                ))
                .await?;
            render::deleted("secret", &key, json);
        }
        Command::User(UserCommand::Add { name }) => {
            let user: UserInfo = client.post("/users", &CreateUser { name }).await?;
            render::done(
                &format!(
                    "added user {} (no role yet: grant one with `turnout access grant {} APP ROLE`)",
                    user.name, user.name
                ),
                &user,
                json,
            );
        }
        Command::User(UserCommand::List) => {
            let users: Vec<UserInfo> = client.get("/users").await?;
            render::users(&users, json);
        }
        Command::Token(TokenCommand::Create { user, expires }) => {
            let token: TokenCreated = client
                .post("/tokens", &CreateToken { user, expires })
                .await?;
            render::token_created(&token, json);
        }
        Command::Token(TokenCommand::List) => {
            let tokens: Vec<TokenInfo> = client.get("/tokens").await?;
            render::tokens(&tokens, json);
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            client.delete(&format!("/tokens/{id}")).await?;
            render::deleted("token", &id.to_string(), json);
        }
        Command::Access(AccessCommand::Grant { user, app, role }) => {
            let body = SetGrant {
                user: user.clone(),
                app: app.clone(),
                role: Some(role),
            };
            client.post_empty("/grants", &body).await?;
            render::done(&format!("{user} is now {role} of {app}"), &body, json);
        }
        Command::Access(AccessCommand::Revoke { user, app }) => {
            let body = SetGrant {
                user: user.clone(),
                app: app.clone(),
                role: None,
            };
            client.post_empty("/grants", &body).await?;
            render::done(
                &format!("{user} has no role on {app} any more"),
                &body,
                json,
            );
        }
        Command::Access(AccessCommand::Policy { app }) => {
            let policy: Vec<PolicyEntry> = client.get(&format!("/apps/{app}/policy")).await?;
            render::policy(&policy, json);
        }
        Command::Access(AccessCommand::SetPolicy {
            app,
            action,
            tier,
            role,
        }) => {
            let body = SetPolicy { action, tier, role };
            client
                .post_empty(&format!("/apps/{app}/policy"), &body)
                .await?;
            render::done(
                &format!("{action} on {tier} tier of {app} now needs {role}"),
                &body,
                json,
            );
        }
        Command::Access(AccessCommand::RequireApproval {
            app,
            action,
            tier,
            expires,
            off,
        }) => {
            let body = SetApprovalRule {
                action,
                tier,
                expires: (!off).then_some(expires),
            };
            client
                .post_empty(&format!("/apps/{app}/approval-rules"), &body)
                .await?;
            let text = if off {
                format!("{action} on {tier} tier of {app} needs no approval")
            } else {
                format!("{action} on {tier} tier of {app} now needs a second owner's approval")
            };
            render::done(&text, &body, json);
        }
        Command::Access(AccessCommand::Protect { app, state, tier }) => {
            let body = SetProtection {
                tier,
                on: matches!(state, OnOff::On),
            };
            client
                .post_empty(&format!("/apps/{app}/protection"), &body)
                .await?;
            let scope = tier.map_or("every tier".to_owned(), |t| format!("tier {t}"));
            let text = if body.on {
                format!("internal URLs of {app} ({scope}) now need a login")
            } else {
                format!("internal URLs of {app} ({scope}) are open again")
            };
            render::done(&text, &body, json);
        }
        Command::Approvals(ApprovalsCommand::List { all }) => {
            let list: Vec<ApprovalInfo> = client.get(&format!("/approvals?all={all}")).await?;
            render::approvals(&list, json);
        }
        Command::Approve { id } => {
            let a: ApprovalInfo = client
                .post(&format!("/approvals/{id}/approve"), &())
                .await?;
            render::done(
                &format!(
                    "approved request {id}: {}",
                    a.result.as_deref().unwrap_or("done")
                ),
                &a,
                json,
            );
        }
        Command::Reject { id } => {
            let a: ApprovalInfo = client.post(&format!("/approvals/{id}/reject"), &()).await?;
            render::done(&format!("rejected request {id}: {}", a.summary), &a, json);
        }
        Command::Audit(args) => match args.command {
            Some(AuditCommand::Verify) => {
                let v: AuditVerification = client.get("/audit/verify").await?;
                render::audit_verification(&v, json);
                if !v.ok {
                    return Ok(ExitCode::FAILURE);
                }
            }
            None => {
                let mut query = Vec::new();
                if let Some(app) = &args.app {
                    query.push(format!("app={app}"));
                }
                if let Some(env) = &args.env {
                    query.push(format!("env={env}"));
                }
                if let Some(since) = &args.since {
                    let ago = parse_ago(since)?;
                    query.push(format!("since={ago}"));
                }
                let entries: Vec<AuditInfo> =
                    client.get(&format!("/audit?{}", query.join("&"))).await?;
                render::audit(&entries, json);
            }
        },
        Command::Logs {
            target,
            follow,
            tail,
        } => {
            use std::io::Write;
            let path = format!(
                "/apps/{}/envs/{}/logs?follow={follow}&tail={tail}",
                target.app, target.env
            );
            let mut stdout = std::io::stdout();
            client
                .stream_text(&path, |chunk| {
                    let _ = stdout.write_all(chunk);
                    let _ = stdout.flush();
                })
                .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `30m`, `12h`, `7d` ago, as Unix seconds.
fn parse_ago(text: &str) -> anyhow::Result<i64> {
    let bad = || anyhow::anyhow!("invalid --since '{text}': write it like 30m, 12h or 7d");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Ok(now - secs)
}

/// Deploy and print progress as it streams in. Returns whether the release went live.
pub async fn deploy(
    client: &Client,
    target: &turnout_model::EnvRef,
    git_ref: Option<String>,
    json: bool,
) -> anyhow::Result<bool> {
    let mut progress = render::DeployProgress::new(target, json);
    client
        .deploy(
            &format!("/apps/{}/envs/{}/deploy", target.app, target.env),
            &DeployRequest { git_ref },
            |event| progress.event(&event),
        )
        .await?;
    progress.finish()
}
