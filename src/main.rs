//! `turnout`: the daemon (`serve`, `demo`) and the thin API client every other command is.
#![forbid(unsafe_code)]

/// `println!` for the CLI's output: see `output`.
macro_rules! outln {
    () => {
        $crate::output::text(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::text(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod backup;
mod certs;
mod cli;
mod config;
mod daemon;
mod data;
mod demo;
mod egress;
mod jobs;
mod link;
mod mail;
mod output;
mod render;
mod restore;
mod run;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use turnout_client::Client;
use turnout_control::home::default_home;
use turnout_model::EnvRef;
use turnout_model::endpoint as ep;
use turnout_model::{
    AddDomain, CiReport, CiStatus, CreateApp, CreateEnv, CreateToken, CreateUser, DeployRequest,
    ErrorCode, PromoteRequest, ServeInfo, SetApprovalRule, SetGrant, SetHook, SetMaintenance,
    SetPolicy, SetProtection, SetSleep, SetTrigger, SwitchDomain, UpdateApp, UpdatePlan,
};
use turnout_model::{CreateSchedule, PipelineSpec};

use crate::cli::ScheduleCommand;
use crate::cli::{
    AccessCommand, ApiCommand, AppCommand, ApprovalsCommand, AuditCommand, CiCommand, CiStatusArg,
    Cli, Command, DomainCommand, EnvCommand, HooksCommand, JobCommand, OnOff, PipelineCommand,
    ReleaseCommand, TokenCommand, UserCommand,
};

/// Exit codes a script sees: 0 done, 1 failed, 2 usage error (clap), 3 waiting for approval,
/// 130 stopped watching a job that goes on.
const EXIT_PENDING: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Instance => return daemon::supervise_instance(),
        Command::DataPlane(args) => return daemon::serve_dataplane(args),
        _ => {}
    }
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
        Err(e) => match e.downcast_ref::<turnout_client::Error>() {
            // Not done, not failed: waiting for a second owner.
            Some(turnout_client::Error::PendingApproval(pending)) => {
                eprintln!("pending: {}", pending.message);
                ExitCode::from(EXIT_PENDING)
            }
            _ => {
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
            daemon::init_tracing(None)?;
            daemon::run_daemon(home, &args, cli.json, true, |_| {}).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            let home = cli.home.clone().unwrap_or_else(demo::default_home);
            std::fs::create_dir_all(&home)
                .with_context(|| format!("cannot create the demo home {}", home.display()))?;
            daemon::init_tracing(Some(&demo::log_path(&home)))?;
            demo::run(home, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Api(ApiCommand::Spec) => {
            let doc = turnout_model::openapi::document()
                .to_pretty_json()
                .context("cannot write the OpenAPI document as JSON")?;
            println!("{doc}");
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let (client, sent_home_token) = connect(cli.api.as_deref(), &home)?;
            let result = run_client(&client, command, cli.json).await;
            match result {
                Err(e) if !sent_home_token && unauthorized(&e) => Err(e.context(format!(
                    "no token went to {}: the owner token of {} goes only to the daemon its serve.json names; set TURNOUT_TOKEN for this one",
                    client.base(),
                    home.display()
                ))),
                other => other,
            }
        }
    }
}

/// Refused before any request: commands on two environments of one app (`why` says so).
fn same_app(a: &EnvRef, b: &EnvRef, why: &str) -> anyhow::Result<()> {
    if a.app != b.app {
        anyhow::bail!("{a} and {b} are environments of different apps; {why}");
    }
    Ok(())
}

fn unauthorized(e: &anyhow::Error) -> bool {
    e.downcast_ref::<turnout_client::Error>()
        .and_then(turnout_client::Error::code)
        == Some(ErrorCode::Unauthorized)
}

/// The daemon running for `home`: its serve.json, if the process it names is alive.
fn running_daemon(home: &Path) -> Result<ServeInfo, String> {
    let path = home.join("serve.json");
    let bytes = std::fs::read(&path)
        .map_err(|_| format!("no daemon runs for the home {}", home.display()))?;
    let info: ServeInfo = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a daemon's serve.json ({e})", path.display()))?;
    let alive = i32::try_from(info.pid).is_ok_and(|pid| {
        // Signal 0 checks existence; EPERM means it exists but belongs to another user.
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
            Ok(()) => true,
            Err(e) => e == nix::errno::Errno::EPERM,
        }
    });
    if alive {
        Ok(info)
    } else {
        Err(format!(
            "no daemon runs for the home {}: the one that last served it (pid {}) is gone",
            home.display(),
            info.pid
        ))
    }
}

/// The client for this invocation, and whether it carries the home's owner token.
///
/// The address is `--api`/`TURNOUT_API`, else that of the daemon running for the home; with
/// neither there is nothing to talk to (no guessed default). The token is `TURNOUT_TOKEN`, else
/// the home's `admin.token`, which goes only to the address the home's live serve.json names:
/// never to a daemon that is not that home's.
fn connect(api_flag: Option<&str>, home: &Path) -> anyhow::Result<(Client, bool)> {
    let daemon = running_daemon(home);
    let api = match (api_flag, &daemon) {
        (Some(api), _) => api.to_owned(),
        (None, Ok(info)) => info.api.clone(),
        (None, Err(why)) => anyhow::bail!(
            "{why}. Start one with `turnout serve --home {}`, or name another daemon with --api URL (and its token in TURNOUT_TOKEN)",
            home.display()
        ),
    };
    let explicit = std::env::var("TURNOUT_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    if let Some(token) = explicit {
        return Ok((Client::new(&api, Some(&token))?, false));
    }
    let home_token = daemon
        .ok()
        .filter(|info| same_address(&info.api, &api))
        .and_then(|_| std::fs::read_to_string(home.join("admin.token")).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let sent = home_token.is_some();
    Ok((Client::new(&api, home_token.as_deref())?, sent))
}

fn same_address(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
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
        Command::Serve(_)
        | Command::Demo(_)
        | Command::Api(_)
        | Command::Instance
        | Command::DataPlane(_) => {
            unreachable!("handled by run and main")
        }
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
            let app = client.call(&ep::CreateApp { body }).await?;
            render::app_created(&app, json);
        }
        Command::App(AppCommand::Update {
            name,
            branch_envs,
            sleep_after,
        }) => {
            let body = UpdateApp {
                branch_envs: branch_envs.map(|b| matches!(b, OnOff::On)),
                sleep_after: sleep_after.into_iter().map(|(t, s)| (t, s.0)).collect(),
            };
            let app = client.call(&ep::UpdateApp { app: name, body }).await?;
            render::app_updated(&app, json);
        }
        Command::App(AppCommand::List) => {
            render::apps(&client.call(&ep::ListApps).await?, json);
        }
        Command::App(AppCommand::Delete { name, force }) => {
            client
                .call(&ep::DeleteApp {
                    app: name.clone(),
                    force,
                })
                .await?;
            render::deleted("app", name.as_str(), json);
        }
        Command::Env(EnvCommand::Create {
            target,
            branch,
            tier,
            deploy_on,
        }) => {
            let body = CreateEnv {
                name: target.env.clone(),
                branch,
                tier: Some(tier),
                deploy_on,
            };
            let env = client
                .call(&ep::CreateEnv {
                    app: target.app,
                    body,
                })
                .await?;
            render::env_created(&env, json);
        }
        Command::Env(EnvCommand::List { app }) => {
            let envs = match app {
                Some(app) => client.call(&ep::ListAppEnvs { app }).await?,
                None => client.call(&ep::ListEnvs { app: None }).await?,
            };
            render::envs(&envs, json);
        }
        Command::Env(EnvCommand::Show { target }) => {
            render::env(&client.call(&ep::ShowEnv { target }).await?, json);
        }
        Command::Env(EnvCommand::Diff { a, b }) => {
            same_app(&a, &b, "`env diff` compares two environments of one app")?;
            let diff = client
                .call(&ep::EnvDiff {
                    target: a,
                    other: b.env,
                })
                .await?;
            render::diff::env_diff(&diff, json);
        }
        Command::Env(EnvCommand::Delete { target }) => {
            client
                .call(&ep::DeleteEnv {
                    target: target.clone(),
                })
                .await?;
            render::deleted("environment", &target.to_string(), json);
        }
        Command::Env(EnvCommand::Stop { target }) => {
            render::env_stopped(&client.call(&ep::StopEnv { target }).await?, json);
        }
        Command::Env(EnvCommand::Update {
            target,
            deploy_on,
            sleep_after,
            memory,
            cpu,
            pids,
        }) => {
            if let Some(deploy_on) = deploy_on {
                let env = client
                    .call(&ep::SetTrigger {
                        target: target.clone(),
                        body: SetTrigger { deploy_on },
                    })
                    .await?;
                render::trigger_set(&env, json);
            }
            if let Some(setting) = sleep_after {
                let env = client
                    .call(&ep::SetSleep {
                        target: target.clone(),
                        body: SetSleep {
                            sleep_after: setting.0,
                        },
                    })
                    .await?;
                render::sleep_set(&env, json);
            }
            let body = UpdatePlan { memory, cpu, pids };
            if !body.is_empty() {
                render::plan_updated(&client.call(&ep::UpdatePlan { target, body }).await?, json);
            }
        }
        Command::Ci(CiCommand::Report {
            app,
            branch,
            commit,
            status,
        }) => {
            let status = match status {
                CiStatusArg::Success => CiStatus::Success,
                CiStatusArg::Failure => CiStatus::Failure,
                CiStatusArg::Other => CiStatus::Other,
            };
            let body = CiReport {
                app,
                branch,
                commit,
                status,
            };
            render::ci_outcome(&client.call(&ep::CiHook { body }).await?, json);
        }
        Command::Env(EnvCommand::Start { target, detach })
        | Command::Env(EnvCommand::Wake { target, detach }) => {
            let job = client.call(&ep::StartEnv { target }).await?;
            return jobs::follow(client, job, detach, json).await;
        }
        Command::Deploy {
            target,
            git_ref,
            detach,
        } => {
            let job = client
                .call(&ep::Deploy {
                    target,
                    body: DeployRequest { git_ref },
                })
                .await?;
            return jobs::follow(client, job, detach, json).await;
        }
        Command::Hooks(HooksCommand::Set {
            app,
            provider,
            secret_env,
            secret_stdin,
        }) => {
            let secret = if secret_stdin {
                let mut v = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut v)
                    .context("cannot read the hook secret from standard input")?;
                Some(v.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                None
            };
            let body = SetHook {
                provider,
                secret_env,
                secret,
            };
            let hook = client.call(&ep::SetHook { app, body }).await?;
            render::hooks(client.base(), &[hook], json);
        }
        Command::Hooks(HooksCommand::Show { app }) => {
            let hooks = client.call(&ep::ShowHooks { app }).await?;
            render::hooks(client.base(), &hooks, json);
        }
        Command::Pipeline(PipelineCommand::Show { app, from, to }) => {
            render::diff::pipeline(
                &client.call(&ep::ShowPipeline { app, from, to }).await?,
                json,
            );
        }
        Command::Pipeline(PipelineCommand::Set {
            app,
            stages,
            promotions,
        }) => {
            let body = PipelineSpec {
                stages: stages.into_iter().map(|s| s.0).collect(),
                promotions,
            };
            render::diff::pipeline(&client.call(&ep::SetPipeline { app, body }).await?, json);
        }
        Command::Pipeline(PipelineCommand::Reset { app }) => {
            client.call(&ep::ResetPipeline { app: app.clone() }).await?;
            let body = serde_json::json!({ "reset": app.to_string() });
            render::done(
                &format!("{app}'s promotions follow the tier rule again"),
                &body,
                json,
            );
        }
        Command::Pipeline(PipelineCommand::Schedule(command)) => {
            return pipeline_schedule(client, command, json).await;
        }
        Command::Promote { from, to, detach } => {
            same_app(&from, &to, "a release is promoted within its app")?;
            let job = client
                .call(&ep::Promote {
                    target: to,
                    body: PromoteRequest { from: from.env },
                })
                .await?;
            return jobs::follow(client, job, detach, json).await;
        }
        Command::Data(command) => return data::command(client, command, json).await,
        Command::Backup(command) => return backup::command(client, command, json).await,
        Command::Mail(command) => return mail::command(client, command, json).await,
        Command::Egress(command) => return egress::command(client, command, json).await,
        Command::Link(args) => return link::command(client, args, json).await,
        Command::Rollback {
            target,
            to,
            with_data,
            yes,
            detach,
        } => return restore::rollback(client, target, to, with_data, yes, detach, json).await,
        Command::Drill(args) => return restore::drill(client, args, json).await,
        Command::Run(args) => return run::run(client, args, json).await,
        Command::Restart { target, detach } => {
            let job = client.call(&ep::Restart { target }).await?;
            return jobs::follow(client, job, detach, json).await;
        }
        Command::Jobs { scope, all } => {
            let (app, env) = scope.map_or((None, None), |s| (Some(s.app), s.env));
            render::jobs(&client.call(&ep::ListJobs { app, env, all }).await?, json);
        }
        Command::Job(JobCommand::Show { id }) => {
            render::job(&client.call(&ep::ShowJob { id }).await?, json);
        }
        Command::Job(JobCommand::Watch { id }) => {
            let job = client.call(&ep::ShowJob { id }).await?;
            return jobs::watch(client, &job, json).await;
        }
        Command::Job(JobCommand::Cancel { id }) => {
            render::job_cancelled(&client.call(&ep::CancelJob { id }).await?, json);
        }
        Command::Release(ReleaseCommand::List { target }) => {
            render::releases(&client.call(&ep::ListReleases { target }).await?, json);
        }
        Command::Domain(DomainCommand::Add {
            domain,
            target,
            tls,
        }) => {
            let body = AddDomain {
                domain,
                app: target.app,
                env: target.env,
                tls: tls.map(Into::into),
            };
            render::domain_added(&client.call(&ep::AddDomain { body }).await?, json);
        }
        Command::Domain(command @ DomainCommand::Tls { .. }) => {
            return certs::domain_tls(client, command, json).await;
        }
        Command::Cert(command) => return certs::command(client, command, json).await,
        Command::Domain(DomainCommand::List) => {
            render::domains(&client.call(&ep::ListDomains).await?, json);
        }
        Command::Domain(DomainCommand::Remove { domain }) => {
            client
                .call(&ep::RemoveDomain {
                    domain: domain.clone(),
                })
                .await?;
            render::deleted("domain", domain.as_str(), json);
        }
        Command::Domain(DomainCommand::Switch { domain, target }) => {
            let body = SwitchDomain {
                app: target.app,
                env: target.env,
            };
            render::switched(
                &client.call(&ep::SwitchDomain { domain, body }).await?,
                json,
            );
        }
        Command::Domain(DomainCommand::Rollback { domain }) => {
            render::switched(&client.call(&ep::RollbackDomain { domain }).await?, json);
        }
        Command::Domain(DomainCommand::History { domain }) => {
            render::domain_history(&client.call(&ep::DomainHistory { domain }).await?, json);
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
            render::maintenance(
                &client.call(&ep::SetMaintenance { domain, body }).await?,
                json,
            );
        }
        Command::Secret(command) => return config::secret(client, command, json).await,
        Command::Config(command) => return config::command(client, command, json).await,
        Command::Secrets(command) => return config::secrets(client, command, json).await,
        Command::User(UserCommand::Add { name }) => {
            let user = client
                .call(&ep::AddUser {
                    body: CreateUser { name },
                })
                .await?;
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
            render::users(&client.call(&ep::ListUsers).await?, json);
        }
        Command::Token(TokenCommand::Create { user, expires }) => {
            let body = CreateToken { user, expires };
            render::token_created(&client.call(&ep::CreateToken { body }).await?, json);
        }
        Command::Token(TokenCommand::List) => {
            render::tokens(&client.call(&ep::ListTokens).await?, json);
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            client.call(&ep::RevokeToken { id }).await?;
            render::deleted("token", &id.to_string(), json);
        }
        Command::Access(AccessCommand::Grant { user, app, role }) => {
            let body = SetGrant {
                user: user.clone(),
                app: app.clone(),
                role: Some(role),
            };
            client.call(&ep::SetGrant { body: body.clone() }).await?;
            render::done(&format!("{user} is now {role} of {app}"), &body, json);
        }
        Command::Access(AccessCommand::Revoke { user, app }) => {
            let body = SetGrant {
                user: user.clone(),
                app: app.clone(),
                role: None,
            };
            client.call(&ep::SetGrant { body: body.clone() }).await?;
            render::done(
                &format!("{user} has no role on {app} any more"),
                &body,
                json,
            );
        }
        Command::Access(AccessCommand::Policy { app }) => {
            render::policy(&client.call(&ep::Policy { app }).await?, json);
        }
        Command::Access(AccessCommand::SetPolicy {
            app,
            action,
            tier,
            role,
        }) => {
            let body = SetPolicy { action, tier, role };
            client
                .call(&ep::SetPolicy {
                    app: app.clone(),
                    body: body.clone(),
                })
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
                .call(&ep::SetApprovalRule {
                    app: app.clone(),
                    body: body.clone(),
                })
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
                .call(&ep::SetProtection {
                    app: app.clone(),
                    body: body.clone(),
                })
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
            render::approvals(&client.call(&ep::ListApprovals { all }).await?, json);
        }
        Command::Approve { id, detach } => {
            let a = client.call(&ep::Approve { id }).await?;
            let job = match a.job {
                Some(job) if !detach => Some(client.call(&ep::ShowJob { id: job }).await?),
                _ => None,
            };
            if let Some(job) = job {
                if !json {
                    render::approved(&a, false);
                }
                return jobs::watch(client, &job, json).await;
            }
            render::approved(&a, json);
        }
        Command::Reject { id } => {
            let a = client.call(&ep::Reject { id }).await?;
            render::done(&format!("rejected request {id}: {}", a.summary), &a, json);
        }
        Command::Audit(args) => match args.command {
            Some(AuditCommand::Verify) => {
                let v = client.call(&ep::VerifyAudit).await?;
                render::audit_verification(&v, json);
                if !v.ok {
                    return Ok(ExitCode::FAILURE);
                }
            }
            None => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let query = ep::Audit {
                    app: args.app,
                    env: args.env,
                    since: args.since.map(|age| age.before(now)),
                };
                render::audit(&client.call(&query).await?, json);
            }
        },
        Command::Logs {
            target,
            follow,
            tail,
            timestamps,
        } => {
            let logs = ep::Logs {
                target,
                follow,
                tail: usize::try_from(tail).unwrap_or(usize::MAX),
                timestamps,
            };
            client.text(&logs, output::bytes).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `turnout pipeline schedule …`.
async fn pipeline_schedule(
    client: &Client,
    command: ScheduleCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        ScheduleCommand::Add {
            app,
            promotion,
            cron,
            tz,
        } => {
            let body = CreateSchedule {
                from: promotion.from,
                to: promotion.to,
                cron,
                tz: Some(tz),
            };
            render::pipeline::schedule_added(
                &client.call(&ep::AddSchedule { app, body }).await?,
                json,
            );
        }
        ScheduleCommand::List { app } => {
            render::pipeline::schedules(&client.call(&ep::ListSchedules { app }).await?, json);
        }
        ScheduleCommand::Remove { app, id } => {
            client
                .call(&ep::RemoveSchedule {
                    app: app.clone(),
                    id,
                })
                .await?;
            let body = serde_json::json!({ "removed": id, "app": app.to_string() });
            render::done(&format!("removed schedule {id} of {app}"), &body, json);
        }
        ScheduleCommand::Run { app, id, detach } => {
            let job = client.call(&ep::RunSchedule { app, id }).await?;
            return jobs::follow(client, job, detach, json).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
