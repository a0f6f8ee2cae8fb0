//! `turnout run APP/ENV [-t] [--port] -- CMD [ARGS…]`: the command runs in the environment
//! (see the control plane's `plane/run.rs`); here its streams are passed through byte for byte
//! and the CLI exits with its status (128 + the signal when a signal killed it).
//!
//! With `-t` and a local terminal, that terminal is put in raw mode for the run (restored on
//! every way out: the guard's drop), so every key, Ctrl-C and Ctrl-D included, reaches the
//! remote terminal, and a window change (SIGWINCH) is sent as a resize. Without a terminal
//! here, Ctrl-C (SIGINT), SIGTERM and SIGHUP are sent on to the command's process group.
//! `--detach` starts it as a job instead and prints the job.
use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use turnout_client::{Client, RunInput};
use turnout_model::RunRequest;
use turnout_model::endpoint as ep;
use turnout_model::run::{ClientFrame, MAX_FRAME, RunSignal, ServerFrame, TermSize};

use crate::cli::RunArgs;
use crate::jobs;

/// The size a remote terminal gets when there is no local one to copy.
const DEFAULT_SIZE: TermSize = TermSize { cols: 80, rows: 24 };

pub async fn run(client: &Client, args: RunArgs, json: bool) -> anyhow::Result<ExitCode> {
    let raw_wanted = args.tty && std::io::stdin().is_terminal();
    let req = RunRequest {
        argv: args.command,
        tty: args.tty.then(local_size),
        port: args.port,
    };
    req.check().map_err(anyhow::Error::msg)?;
    if args.detach {
        let job = client
            .call(&ep::RunJob {
                target: args.target,
                body: req,
            })
            .await?;
        return jobs::follow(client, job, true, json).await;
    }
    let (input, mut output) = client
        .run(&ep::Run {
            target: args.target.clone(),
            body: req,
        })
        .await?;
    // Held to the end of the function: dropping it restores the terminal, whichever way out.
    let _raw = raw_wanted.then(RawMode::enter).transpose()?;
    let sender = tokio::spawn(send_input(input, args.tty, raw_wanted));
    let mut status = None;
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    while let Some(frame) = output.next().await? {
        let written = match frame {
            ServerFrame::Stdout(data) => write(&mut stdout, &data)?,
            ServerFrame::Stderr(data) => write(&mut stderr, &data)?,
            ServerFrame::Error(message) => {
                let newline = if raw_wanted { "\r\n" } else { "\n" };
                write(&mut stderr, format!("error: {message}{newline}").as_bytes())?
            }
            ServerFrame::Exit(exit) => {
                status = Some(exit.status());
                break;
            }
        };
        // The reader went away (`turnout run … | head`): the end of the output, as for every
        // command (`output.rs`), and of the run, which the closed connection hangs up.
        if !written {
            return Ok(ExitCode::SUCCESS);
        }
    }
    sender.abort();
    let Some(status) = status else {
        bail!(
            "the connection to {} closed before {} ended (was the daemon stopped?); the command was hung up on",
            client.base(),
            args.target
        );
    };
    Ok(ExitCode::from(u8::try_from(status).unwrap_or(u8::MAX)))
}

/// False once the reader is gone. Not `output::bytes`, which exits at once: the terminal's
/// guard must run first.
fn write(out: &mut impl Write, data: &[u8]) -> anyhow::Result<bool> {
    match out.write_all(data).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write the command's output here"),
    }
}

/// The local terminal's size (standard output's, else standard input's), or 80×24.
fn local_size() -> TermSize {
    let stdout = std::io::stdout();
    let stdin = std::io::stdin();
    rustix::termios::tcgetwinsize(stdout.as_fd())
        .or_else(|_| rustix::termios::tcgetwinsize(stdin.as_fd()))
        .ok()
        .map(|w| TermSize {
            cols: w.ws_col,
            rows: w.ws_row,
        })
        .and_then(|s| s.check().ok())
        .unwrap_or(DEFAULT_SIZE)
}

/// Standard input, resizes and signals to the daemon until the connection ends. Standard
/// input is read on a thread of its own: a blocking read there never holds up the exit.
async fn send_input(mut to: RunInput, tty: bool, raw: bool) -> std::io::Result<()> {
    let (chunks, mut stdin) = mpsc::channel::<Option<Vec<u8>>>(4);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; MAX_FRAME];
        let mut input = std::io::stdin().lock();
        loop {
            let chunk = match input.read(&mut buf) {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(buf[..n].to_vec()),
            };
            let end = chunk.is_none();
            if chunks.blocking_send(chunk).is_err() || end {
                return;
            }
        }
    });
    let mut winch = signal(SignalKind::window_change())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut input_open = true;
    loop {
        let frame = tokio::select! {
            chunk = stdin.recv(), if input_open => match chunk.flatten() {
                Some(data) => ClientFrame::Stdin(data),
                None => {
                    input_open = false;
                    ClientFrame::StdinEof
                }
            },
            Some(()) = winch.recv(), if tty => ClientFrame::Resize(local_size()),
            // In raw mode Ctrl-C is a byte of input, not a signal here.
            Some(()) = interrupt.recv(), if !raw => ClientFrame::Signal(RunSignal::Int),
            Some(()) = terminate.recv() => ClientFrame::Signal(RunSignal::Term),
            Some(()) = hangup.recv() => ClientFrame::Signal(RunSignal::Hup),
        };
        to.send(&frame).await?;
    }
}

/// The local terminal in raw mode until dropped, then as it was.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(stdin.as_fd())
            .context("cannot read the terminal's settings")?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(stdin.as_fd(), rustix::termios::OptionalActions::Now, &raw)
            .context("cannot put the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin().as_fd(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}
