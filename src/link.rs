//! `turnout link …`: apps wired together stage by stage.
use std::process::ExitCode;

use turnout_client::Client;
use turnout_model::CreateLink;
use turnout_model::endpoint as ep;

use crate::cli::{LinkArgs, LinkCommand};
use crate::render;

/// `turnout link APP OTHER`, `link list APP`, `link remove APP OTHER|--as NAME`.
pub async fn command(client: &Client, args: LinkArgs, json: bool) -> anyhow::Result<ExitCode> {
    match (args.command, args.app, args.other) {
        (Some(LinkCommand::List { app }), _, _) => {
            let links = client.call(&ep::ListLinks { app }).await?;
            render::link::links(&links, json);
        }
        (Some(LinkCommand::Remove { app, other, name }), _, _) => {
            let name = name
                .or_else(|| other.map(|o| o.to_string()))
                .unwrap_or_default();
            let link = client.call(&ep::RemoveLink { app, name }).await?;
            render::link::removed(&link, json);
        }
        (None, Some(app), Some(other)) => {
            let body = CreateLink {
                other,
                name: args.name,
                default: args.default,
            };
            let link = client.call(&ep::CreateLink { app, body }).await?;
            render::link::created(&link, json);
        }
        (None, _, _) => anyhow::bail!("give APP and OTHER: turnout link APP OTHER [--as NAME]"),
    }
    Ok(ExitCode::SUCCESS)
}
