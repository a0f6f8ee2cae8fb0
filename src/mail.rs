//! `turnout mail …`: requests to the API.
use std::process::ExitCode;

use turnout_client::Client;
use turnout_model::SetMailRelay;
use turnout_model::endpoint as ep;

use crate::cli::MailCommand;
use crate::render;

/// `turnout mail …`.
pub async fn command(
    client: &Client,
    command: MailCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        MailCommand::List { target } => {
            render::mail::list(&client.call(&ep::ListMail { target }).await?, json);
        }
        MailCommand::Show { id, raw } => {
            render::mail::show(&client.call(&ep::ShowMail { id, raw }).await?, raw, json);
        }
        MailCommand::Clear { target } => {
            render::mail::cleared(&client.call(&ep::ClearMail { target }).await?, json);
        }
        MailCommand::Relay {
            app, tier: None, ..
        } => {
            render::mail::relays(&client.call(&ep::ListMailRelays { app }).await?, json);
        }
        MailCommand::Relay {
            app,
            tier: Some(tier),
            url,
            allow_domains,
            off,
        } => {
            let body = SetMailRelay {
                tier,
                url,
                allow_domains,
                off,
            };
            render::mail::relays(&client.call(&ep::SetMailRelay { app, body }).await?, json);
        }
    }
    Ok(ExitCode::SUCCESS)
}
