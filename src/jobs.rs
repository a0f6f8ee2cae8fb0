//! Following a job from the CLI: print its id and return (`--detach`), or watch its event
//! stream until it ends. Ctrl-C stops the watching, never the job.
use std::process::ExitCode;

use turnout_client::Client;
use turnout_model::endpoint::JobEvents;
use turnout_model::{JobInfo, JobState};

use crate::render;

/// The exit code of a watch that Ctrl-C stopped (128 + SIGINT, what shells report).
const EXIT_STOPPED_WATCHING: u8 = 130;

/// After a command created `job`: print its id (`--detach`) or watch it.
pub async fn follow(
    client: &Client,
    job: JobInfo,
    detach: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if detach {
        render::job_detached(&job, json);
        return Ok(ExitCode::SUCCESS);
    }
    watch(client, &job, json).await
}

/// Watch a job's events until its `end`; the exit code is the job's outcome: 0 succeeded,
/// 1 failed, cancelled or interrupted, 130 when Ctrl-C stopped the watching.
pub async fn watch(client: &Client, job: &JobInfo, json: bool) -> anyhow::Result<ExitCode> {
    let id = job.id;
    let watching = async {
        let mut events = client.events(&JobEvents { id }).await?;
        let mut progress = render::JobProgress::new(job, json);
        while let Some(event) = events.next().await {
            if let Some(end) = progress.event(&event?) {
                return Ok(end.state);
            }
        }
        anyhow::bail!(
            "the event stream of job {id} ended before the job did (did the daemon stop?): see `turnout job show {id}`"
        )
    };
    tokio::select! {
        state = watching => Ok(match state? {
            JobState::Succeeded => ExitCode::SUCCESS,
            _ => ExitCode::FAILURE,
        }),
        interrupted = tokio::signal::ctrl_c() => {
            interrupted?;
            eprintln!();
            eprintln!(
                "stopped watching; job {id} goes on: `turnout job watch {id}`, cancel it with `turnout job cancel {id}`"
            );
            Ok(ExitCode::from(EXIT_STOPPED_WATCHING))
        }
    }
}
