//! `turnout run APP/ENV -- CMD [ARGS…]`: a command in the environment's live release, with
//! exactly what its instance gets (`launch::instance_setup`: environment, user, control group,
//! network, sandbox), its streams passed through the upgraded API connection as frames
//! (`turnout_model::run`).
//!
//! Who may: the role that may deploy there (`Action::Run`, unless the app's policy sets it).
//! Each run is audited (`env.run`) with its command line when it starts, never its output. It
//! ends with its connection (SIGHUP to its process group, SIGKILL after a bound) and with the
//! daemon (`closing`); shutdown waits for it on the plane's task tracker. `--detach` runs it as
//! a job instead (`run_job`): its output lines are the job's, a cancel hangs it up.
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use turnout_model::run::{ClientFrame, FRAME_HEADER, RunExit, ServerFrame, frame_header};
use turnout_model::{Action, AuditAction, EnvRef, JobInfo, JobKind, RunRequest};
use turnout_supervisor::{ExecEnd, ExecInput, ExecOutput, ExecSpec, SupervisorError};

use super::ControlPlane;
use super::jobs::{JobCtx, JobSpec};
use super::launch::Launch;
use crate::access::Principal;
use crate::app_file::ReleaseConfig;
use crate::error::ControlError;
use crate::store::{AuditEntry, q};

/// A run that was checked, authorized and set up, not started yet (`start_run`).
pub struct PreparedRun {
    r: EnvRef,
    actor: String,
    command_line: String,
    spec: ExecSpec,
}

impl ControlPlane {
    /// Check the request, authorize it (the role that may deploy there), and set up what the
    /// command runs with: the live release's directory and its instance's surroundings, plus
    /// `PORT` when asked.
    pub async fn prepare_run(
        &self,
        r: EnvRef,
        req: RunRequest,
        who: &Principal,
    ) -> Result<PreparedRun, ControlError> {
        req.check().map_err(ControlError::Invalid)?;
        let env = self.env_for(who, &r, Action::Run).await?;
        let Some(release_id) = env.current_release_id else {
            return Err(ControlError::Conflict(format!(
                "{r} has no live release to run a command in; deploy it first: `turnout deploy {r}`"
            )));
        };
        let release = self
            .store
            .call(move |c| q::get_release(c, release_id))
            .await?;
        if !tokio::fs::try_exists(&release.dir).await.unwrap_or(false) {
            return Err(ControlError::Conflict(format!(
                "{r}'s live release {release_id} has no directory any more ({}); deploy it again: `turnout deploy {r}`",
                release.dir
            )));
        }
        let config: ReleaseConfig = serde_json::from_str(&release.config)
            .map_err(|e| ControlError::internal(format!("release {release_id} config: {e}")))?;
        let l = Launch {
            r: &r,
            env: &env,
            release_id,
            commit: &release.commit,
            dir: Path::new(&release.dir),
            config: &config,
            data: None,
            snapshot: None,
        };
        let setup = self.instance_setup(&l).await?;
        let mut vars = setup.env;
        if req.port {
            let port = setup
                .network
                .free_port()
                .map_err(|e| ControlError::internal(format!("find a free port: {e}")))?;
            vars.push(("PORT".to_owned(), port.to_string()));
        }
        let command_line = req.command_line();
        Ok(PreparedRun {
            r: r.clone(),
            actor: who.name.clone(),
            command_line,
            spec: ExecSpec {
                argv: req.argv,
                cwd: release.dir.into(),
                env: vars,
                identity: setup.identity,
                cgroup: Some(setup.cgroup),
                network: setup.network,
                sandbox: setup.sandbox,
                tty: req.tty.map(|s| (s.cols, s.rows)),
                pid_dir: Some(self.home.run_dir(&r.app, &r.env)),
            },
        })
    }

    /// The audit entry of a run about to start: who, where, its command line.
    async fn audit_run(&self, run: &PreparedRun) -> Result<(), ControlError> {
        let entry = AuditEntry::new(&run.actor, AuditAction::EnvRun)
            .app(&run.r.app)
            .env(&run.r.env)
            .change(None, Some(run.command_line.clone()));
        self.store.mutate(entry, |_, _| Ok(())).await
    }

    /// `turnout run --detach`: the run as a job (kind `run`, one step), its output lines the
    /// job's output, no input, cancelled by `job cancel` (its process group hung up on), failed
    /// by an exit status other than 0.
    pub async fn run_job(
        self: &Arc<Self>,
        r: EnvRef,
        req: RunRequest,
        who: &Principal,
    ) -> Result<JobInfo, ControlError> {
        if req.tty.is_some() {
            return Err(ControlError::Invalid(
                "a detached run has no terminal to give its command; leave out -t (--tty)".into(),
            ));
        }
        let run = self.prepare_run(r.clone(), req, who).await?;
        self.audit_run(&run).await?;
        let spec = JobSpec {
            kind: JobKind::Run,
            target: r,
            actor: who.name.clone(),
            request: Some(run.command_line.clone()),
            steps: RUN_STEPS,
        };
        let this = self.clone();
        self.jobs
            .start(
                spec,
                move |ctx| async move { this.run_in_job(&ctx, run).await },
            )
            .await
    }

    async fn run_in_job(&self, ctx: &JobCtx, run: PreparedRun) -> Result<(), ControlError> {
        ctx.running();
        ctx.begin(0, run.command_line.clone());
        let started = std::time::Instant::now();
        // No input: the command's standard input is closed at once.
        let (_, inputs) = mpsc::channel(1);
        let (outputs, mut output) = mpsc::channel(16);
        let cancel = ctx.cancel_token();
        let hangup = Box::pin(async move { cancel.cancelled().await });
        let exec = self.runtime.exec(run.spec, inputs, outputs, hangup);
        let lines = async {
            let (mut stdout, mut stderr) = (Lines::default(), Lines::default());
            let mut tail = std::collections::VecDeque::with_capacity(TAIL_LINES);
            let mut emit = |line: String| {
                ctx.output(&line);
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            };
            while let Some(out) = output.recv().await {
                match out {
                    ExecOutput::Stdout(data) => stdout.push(&data, &mut emit),
                    ExecOutput::Stderr(data) => stderr.push(&data, &mut emit),
                }
            }
            stdout.finish(&mut emit);
            stderr.finish(&mut emit);
            Vec::from(tail)
        };
        let (ended, tail) = tokio::join!(exec, lines);
        let end = ended.map_err(|e| ControlError::Step {
            step: "run",
            message: e.to_string(),
            log_tail: vec![],
        })?;
        if end.hung_up {
            return Err(ctx.until_cancelled().await);
        }
        match run_exit(end.status) {
            RunExit::Code(0) => {
                ctx.done(0, "exit status 0", started.elapsed());
                Ok(())
            }
            exit => Err(ControlError::Step {
                step: "run",
                message: format!("`{}` ended with {exit}", run.command_line),
                log_tail: tail,
            }),
        }
    }

    /// Record the run in the audit log, then run it over `io` (the upgraded connection) in the
    /// background, on the plane's task tracker.
    pub async fn start_run<T>(
        self: &Arc<Self>,
        run: PreparedRun,
        io: impl Future<Output = Option<T>> + Send + 'static,
    ) -> Result<(), ControlError>
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        self.audit_run(&run).await?;
        let this = self.clone();
        self.tasks.spawn(async move {
            match io.await {
                Some(io) => this.attach_run(run, io).await,
                None => warn!(app = %run.r.app, env = %run.r.env, "a run's connection was not upgraded; nothing ran"),
            }
        });
        Ok(())
    }

    async fn attach_run<T>(&self, run: PreparedRun, io: T)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let PreparedRun {
            r,
            command_line,
            spec,
            ..
        } = run;
        let (mut from_client, mut to_client) = tokio::io::split(io);
        let (input, inputs) = mpsc::channel(16);
        let (outputs, mut output) = mpsc::channel(16);
        // The client hung up (or broke the protocol): the command is hung up on. Frames are
        // read in order, so a client that queued more input than the command takes (the
        // channel and the pipe are full) is seen gone once the command reads, writes or ends.
        let gone = CancellationToken::new();
        let reader = tokio::spawn({
            let gone = gone.clone();
            async move {
                loop {
                    let frame = match read_frame(&mut from_client).await {
                        Ok(frame) => frame,
                        Err(why) => {
                            info!(%why, "a run's client went away");
                            gone.cancel();
                            return;
                        }
                    };
                    if input.send(exec_input(frame)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let hangup = {
            let (gone, closing) = (gone.clone(), self.closing.clone());
            Box::pin(async move {
                tokio::select! {
                    () = gone.cancelled() => {}
                    () = closing.cancelled() => {}
                }
            })
        };
        let exec = self.runtime.exec(spec, inputs, outputs, hangup);
        let forward = async {
            let mut open = true;
            while let Some(out) = output.recv().await {
                let frame = match out {
                    ExecOutput::Stdout(data) => ServerFrame::Stdout(data.into()),
                    ExecOutput::Stderr(data) => ServerFrame::Stderr(data.into()),
                };
                // A client that cannot take output any more is gone; the rest is drained so
                // the command is not held up before its hang-up.
                if open && to_client.write_all(&frame.encode()).await.is_err() {
                    open = false;
                    gone.cancel();
                }
            }
        };
        let (ended, ()) = tokio::join!(exec, forward);
        reader.abort();
        let last: Vec<ServerFrame> = match ended {
            Ok(ExecEnd { status, hung_up }) => {
                let exit = run_exit(status);
                info!(app = %r.app, env = %r.env, command = %command_line, %exit, hung_up, "run ended");
                vec![ServerFrame::Exit(exit)]
            }
            Err(e) => {
                info!(app = %r.app, env = %r.env, command = %command_line, error = %e, "run did not start");
                let code = match &e {
                    SupervisorError::ExecSpawn { source, .. }
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        127
                    }
                    _ => 126,
                };
                vec![
                    ServerFrame::Error(e.to_string()),
                    ServerFrame::Exit(RunExit::Code(code)),
                ]
            }
        };
        for frame in last {
            if to_client.write_all(&frame.encode()).await.is_err() {
                return;
            }
        }
        let _ = to_client.shutdown().await;
    }
}

/// The one step of a run's job.
const RUN_STEPS: &[&str] = &["run"];

/// How many of a failed run's last lines its job's error carries.
const TAIL_LINES: usize = 20;

/// The longest line a run's job shows; a longer one is cut into pieces of this size.
const MAX_LINE: usize = 4096;

/// One output stream cut into lines for a job.
#[derive(Default)]
struct Lines(Vec<u8>);

impl Lines {
    fn push(&mut self, data: &[u8], emit: &mut impl FnMut(String)) {
        self.0.extend_from_slice(data);
        while let Some(end) = self
            .0
            .iter()
            .take(MAX_LINE + 1)
            .position(|&b| b == b'\n')
            .or((self.0.len() > MAX_LINE).then_some(MAX_LINE))
        {
            let line: Vec<u8> = self.0.drain(..end).collect();
            if self.0.first() == Some(&b'\n') {
                self.0.remove(0);
            }
            emit(
                String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_owned(),
            );
        }
    }

    fn finish(&mut self, emit: &mut impl FnMut(String)) {
        if !self.0.is_empty() {
            emit(String::from_utf8_lossy(&self.0).into_owned());
            self.0.clear();
        }
    }
}

/// How a process ended, as the client reports it.
fn run_exit(status: std::process::ExitStatus) -> RunExit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => RunExit::Code(u8::try_from(code & 0xff).unwrap_or(u8::MAX)),
        (None, Some(signal)) => RunExit::Signal(u8::try_from(signal).unwrap_or(u8::MAX)),
        (None, None) => RunExit::Code(u8::MAX),
    }
}

fn exec_input(frame: ClientFrame) -> ExecInput {
    match frame {
        ClientFrame::Stdin(data) => ExecInput::Stdin(data.into()),
        ClientFrame::StdinEof => ExecInput::StdinEof,
        ClientFrame::Resize(size) => ExecInput::Resize(size.cols, size.rows),
        ClientFrame::Signal(signal) => ExecInput::Signal(
            nix::sys::signal::Signal::try_from(i32::from(signal.number()))
                .unwrap_or(nix::sys::signal::Signal::SIGTERM),
        ),
    }
}

/// The next frame from the client; an error for its end of the connection too.
async fn read_frame(from: &mut (impl AsyncRead + Unpin)) -> Result<ClientFrame, String> {
    let io = |e: std::io::Error| format!("the connection: {e}");
    let mut header = [0u8; FRAME_HEADER];
    from.read_exact(&mut header).await.map_err(io)?;
    let (tag, len) = frame_header(header).map_err(|e| e.to_string())?;
    let mut payload = vec![0u8; len];
    from.read_exact(&mut payload).await.map_err(io)?;
    ClientFrame::decode(tag, payload).map_err(|e| e.to_string())
}
