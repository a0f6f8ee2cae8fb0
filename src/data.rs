//! `turnout data …`: requests to the API, jobs watched like deploys, and `data psql|sqlite`,
//! which run the engine's own shell here.
use std::process::ExitCode;

use turnout_client::Client;
use turnout_model::EnvRef;
use turnout_model::endpoint as ep;

use crate::cli::DataCommand;
use crate::{jobs, render, same_app};
/// `turnout data …`.
pub async fn command(
    client: &Client,
    command: DataCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use turnout_model::{AttachData, DataSource, SeedData};
    match command {
        DataCommand::Show { target } => {
            render::data::info(&client.call(&ep::ShowData { target }).await?, json);
        }
        DataCommand::Seed(args) | DataCommand::Reseed(args) => {
            let job = client
                .call(&ep::SeedData {
                    target: args.target,
                    body: SeedData {
                        engine: args.engine,
                    },
                })
                .await?;
            return jobs::follow(client, job, args.detach, json).await;
        }
        DataCommand::Clone { from, to, detach } => {
            same_app(&from, &to, "data is cloned within an app")?;
            let body = DataSource {
                from: from.to_string(),
                from_backup: false,
            };
            let job = client.call(&ep::CloneData { target: to, body }).await?;
            return jobs::follow(client, job, detach, json).await;
        }
        DataCommand::Sync {
            target,
            from,
            from_backup,
            detach,
        } => {
            same_app(&from, &target, "data is synced within an app")?;
            let body = DataSource {
                from: from.to_string(),
                from_backup,
            };
            let job = client.call(&ep::SyncData { target, body }).await?;
            return jobs::follow(client, job, detach, json).await;
        }
        DataCommand::Attach {
            target,
            to,
            mode,
            var,
        } => {
            same_app(&target, &to, "databases are attached within an app")?;
            let body = AttachData {
                to: to.to_string(),
                mode,
                var,
            };
            let info = client.call(&ep::AttachData { target, body }).await?;
            render::data::attached(&info, &to, json);
        }
        DataCommand::Detach { target, to } => {
            same_app(&target, &to, "databases are attached within an app")?;
            let info = client
                .call(&ep::DetachData {
                    target,
                    other: to.env.clone(),
                })
                .await?;
            render::data::detached(&info, &to, json);
        }
        DataCommand::Reset {
            target,
            at,
            from,
            detach,
        } => return crate::restore::reset(client, target, at, from, detach, json).await,
        DataCommand::Undo { target, detach } => {
            return crate::restore::undo(client, target, detach, json).await;
        }
        DataCommand::Psql { target } => return shell(client, target, "postgres", json).await,
        DataCommand::Sqlite { target } => return shell(client, target, "sqlite", json).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// `turnout data psql|sqlite`: the environment's connection from the API, then `psql URL` or
/// `sqlite3 PATH` here, as a program (no shell), its exit code passed on.
async fn shell(
    client: &Client,
    target: EnvRef,
    engine: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let conn = client
        .call(&ep::DataConnection {
            target: target.clone(),
        })
        .await?;
    let (program, package, other) = match engine {
        "postgres" => ("psql", "postgresql-client", "sqlite"),
        _ => ("sqlite3", "sqlite3", "psql"),
    };
    if conn.engine != engine {
        anyhow::bail!(
            "{target}'s data is {}, not {engine}: use `turnout data {other} {target}`",
            conn.engine
        );
    }
    if json {
        render::data::connection(&conn);
        return Ok(ExitCode::SUCCESS);
    }
    let status = std::process::Command::new(program)
        .arg(&conn.url)
        .status()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "{program} is not installed on this machine; install the {package} package (e.g. `apt-get install {package}`)"
            ),
            _ => anyhow::anyhow!("cannot run {program}: {e}"),
        })?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
