//! `turnout backup restore`, `turnout data reset|undo`, `turnout drill` and `turnout rollback`
//! (with or without its data): requests whose job is watched like a deploy. A production
//! restore the daemon refuses without confirmation (409, saying how much newer data it would
//! discard) is asked about on a terminal and sent again with `yes`; elsewhere the refusal is
//! the answer, and `--yes` confirms.
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use turnout_client::Client;
use turnout_model::endpoint as ep;
use turnout_model::{
    DrillRequest, EnvRef, ErrorCode, JobInfo, ResetRequest, RestoreRequest, RollbackRequest,
};

use crate::cli::{DrillArgs, RestoreArgs};
use crate::jobs;

/// `turnout backup restore APP/ENV (--at TIME | --snapshot ID) [--into APP/OTHER]
/// [--with-code] [--yes]`.
pub async fn restore(client: &Client, args: RestoreArgs, json: bool) -> anyhow::Result<ExitCode> {
    if let Some(into) = &args.into {
        crate::same_app(&args.target, into, "a backup is restored within its app")?;
    }
    let body = RestoreRequest {
        at: args.at,
        snapshot: args.snapshot,
        into: args.into.map(|r| r.to_string()),
        with_code: args.with_code,
        yes: args.yes,
    };
    let target = args.target;
    let job = confirmed(args.yes, json, "Restore", |yes| {
        let body = RestoreRequest {
            yes,
            ..body.clone()
        };
        let target = target.clone();
        async move { client.call(&ep::Restore { target, body }).await }
    })
    .await?;
    jobs::follow(client, job, args.detach, json).await
}

/// `turnout rollback APP/ENV [--to N] [--with-data [--yes]]`.
pub async fn rollback(
    client: &Client,
    target: EnvRef,
    to: Option<i64>,
    with_data: bool,
    yes: bool,
    detach: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let job = confirmed(yes, json, "Roll back with the data", |yes| {
        let target = target.clone();
        let body = RollbackRequest { to, with_data, yes };
        async move { client.call(&ep::Rollback { target, body }).await }
    })
    .await?;
    jobs::follow(client, job, detach, json).await
}

/// `turnout data reset APP/COPY [--at TIME] [--from APP/ENV]`.
pub async fn reset(
    client: &Client,
    target: EnvRef,
    at: Option<String>,
    from: Option<EnvRef>,
    detach: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(from) = &from {
        crate::same_app(
            from,
            &target,
            "a production copy is reset from its app's production",
        )?;
    }
    let body = ResetRequest {
        at,
        from: from.map(|r| r.to_string()),
    };
    let job = client.call(&ep::ResetData { target, body }).await?;
    jobs::follow(client, job, detach, json).await
}

/// `turnout data undo APP/COPY`.
pub async fn undo(
    client: &Client,
    target: EnvRef,
    detach: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let job = client.call(&ep::UndoData { target }).await?;
    jobs::follow(client, job, detach, json).await
}

/// `turnout drill APP/ENV --at TIME`.
pub async fn drill(client: &Client, args: DrillArgs, json: bool) -> anyhow::Result<ExitCode> {
    let body = DrillRequest { at: args.at };
    let job = client
        .call(&ep::Drill {
            target: args.target,
            body,
        })
        .await?;
    jobs::follow(client, job, args.detach, json).await
}

/// Send `request(yes)`; when the daemon asks for confirmation (409 naming `--yes`) and this
/// runs on a terminal, show its message, ask, and send again confirmed.
async fn confirmed<F, Fut>(
    yes: bool,
    json: bool,
    question: &str,
    request: F,
) -> anyhow::Result<JobInfo>
where
    F: Fn(bool) -> Fut,
    Fut: std::future::Future<Output = Result<JobInfo, turnout_client::Error>>,
{
    let err = match request(yes).await {
        Ok(job) => return Ok(job),
        Err(e) => e,
    };
    let asks = !yes
        && !json
        && err.code() == Some(ErrorCode::Conflict)
        && err.to_string().contains("--yes")
        && std::io::stdin().is_terminal()
        && std::io::stderr().is_terminal();
    if !asks {
        return Err(err.into());
    }
    eprintln!("{err}");
    eprint!("{question} anyway? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        anyhow::bail!("not confirmed: nothing was changed");
    }
    Ok(request(true).await?)
}
