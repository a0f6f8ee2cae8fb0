//! `turnout backup …`: requests to the API; snapshots and verifications are jobs, watched like
//! deploys.
use std::process::ExitCode;

use turnout_client::Client;
use turnout_model::endpoint as ep;
use turnout_model::{CreateBackup, SetBackupPolicy};

use crate::cli::BackupCommand;
use crate::{jobs, render};

/// `turnout backup …`.
pub async fn command(
    client: &Client,
    command: BackupCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        BackupCommand::Restore(args) => return crate::restore::restore(client, args, json).await,
        BackupCommand::Create {
            target,
            label,
            pin,
            detach,
        } => {
            let body = CreateBackup { label, pin };
            let job = client.call(&ep::CreateBackup { target, body }).await?;
            return jobs::follow(client, job, detach, json).await;
        }
        BackupCommand::List { target } => {
            render::backup::list(&client.call(&ep::ListBackups { target }).await?, json);
        }
        BackupCommand::Show { id } => {
            render::backup::show(&client.call(&ep::ShowBackup { id }).await?, json);
        }
        BackupCommand::Verify { id, detach } => {
            let job = client.call(&ep::VerifyBackup { id }).await?;
            return jobs::follow(client, job, detach, json).await;
        }
        BackupCommand::Delete { id, force } => {
            let info = client.call(&ep::DeleteBackup { id, force }).await?;
            render::backup::deleted(&info, json);
        }
        BackupCommand::Policy { target, schedule } => {
            let body = SetBackupPolicy { schedule };
            let list = client.call(&ep::SetBackupPolicy { target, body }).await?;
            render::backup::policy(&list, json);
        }
    }
    Ok(ExitCode::SUCCESS)
}
