//! `turnout egress …`: each tier's outbound policy and an environment's egress log.
use std::process::ExitCode;

use turnout_client::Client;
use turnout_model::SetEgressPolicy;
use turnout_model::endpoint as ep;

use crate::cli::EgressCommand;
use crate::render;

/// `turnout egress …`.
pub async fn command(
    client: &Client,
    command: EgressCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        EgressCommand::Policy {
            app,
            tier,
            mode,
            allow_hosts,
            clear_hosts,
            reset,
        } => {
            let changes = mode.is_some() || !allow_hosts.is_empty() || clear_hosts || reset;
            let policies = if changes {
                let body = SetEgressPolicy {
                    tier,
                    mode,
                    allow_hosts,
                    clear_hosts,
                    reset,
                };
                client.call(&ep::SetEgressPolicy { app, body }).await?
            } else {
                client.call(&ep::ShowEgressPolicies { app }).await?
            };
            render::egress::policies(&policies, tier, json);
        }
        EgressCommand::Log {
            target,
            limit,
            denied,
        } => {
            let log = client
                .call(&ep::ListEgressLog {
                    target,
                    limit,
                    denied,
                })
                .await?;
            render::egress::log(&log, json);
        }
    }
    Ok(ExitCode::SUCCESS)
}
