//! The processes the binary runs as besides the CLI: the daemon (`serve`, `demo`), its data
//! plane (`__dataplane`) and an instance's supervisor (`__instance`); each owns its runtime and
//! its tracing.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use turnout_control::{ServeConfig, Shutdown, serve};
use turnout_model::ServeInfo;
use turnout_proxy::ProxyConfig;

use crate::cli::{DataPlaneArgs, ServeArgs};

/// `turnout __instance`: one instance's own supervising process, on one thread (see
/// `turnout_supervisor::serve_instance`). It outlives the daemon that started it.
pub fn supervise_instance() -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => ExitCode::from(
            u8::try_from(runtime.block_on(turnout_supervisor::serve_instance())).unwrap_or(1),
        ),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `turnout __dataplane`: the proxy in a process of its own, started by `turnout serve` with the
/// listening sockets sent over its standard input (see `turnout_dataplane`). It outlives the daemon
/// that started it; it logs to its standard error, which that daemon points at the home's
/// `dataplane.log`.
pub fn serve_dataplane(args: DataPlaneArgs) -> ExitCode {
    let run = || -> anyhow::Result<()> {
        init_tracing(None)?;
        let config = serde_json::from_str(&args.config)
            .context("--config is not the data plane's settings")?;
        let listeners = turnout_dataplane::Listeners::from_stdin()?;
        let server = turnout_dataplane::ServerArgs {
            socket: args.socket,
            config,
            succeed: args.succeed,
        };
        turnout_dataplane::run(server, listeners)?;
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("the data plane failed: {e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The daemon's tracing output: stderr for `serve`; for the demo a file in its home, so the
/// daemon's lines do not interleave with the deploy steps and instructions it prints.
pub fn init_tracing(file: Option<&Path>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TURNOUT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the daemon's log {}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        None => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init(),
    }
    Ok(())
}

/// Run the daemon until Ctrl-C (a full stop) or SIGTERM (the control plane alone leaves, when
/// `term_leaves`; else a full stop too). `ready` runs once it serves.
pub async fn run_daemon(
    home: PathBuf,
    args: &ServeArgs,
    json: bool,
    term_leaves: bool,
    ready: impl FnOnce(&ServeInfo),
) -> anyhow::Result<()> {
    // SIGINT (Ctrl-C): a full stop. SIGTERM: the control plane alone; traffic goes on.
    let shutdown = Shutdown::default();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => signals.stop(),
            _ = term.recv() => if term_leaves { signals.leave() } else { signals.stop() },
        }
    });
    let config = ServeConfig {
        home,
        api_listen: args.api_listen,
        http_listen: args.http_listen,
        https_listen: args.https_listen,
        acme: turnout_control::tls::AcmeConfig {
            directory: args.acme_directory.clone(),
            email: args.acme_email.clone(),
            ca_cert: args.acme_ca_cert.clone(),
            retry_min: std::time::Duration::from_secs(args.acme_retry_min.into()),
        },
        smtp_listen: args.smtp_listen,
        egress_listen: args.egress_listen,
        proxy_workers: args.proxy_workers.map(usize::from),
        max_builds: args.max_builds.map(usize::from),
        single_user: args.single_user,
        shared_network: args.shared_network,
        upgrade: args.upgrade,
        proxy: ProxyConfig::default(),
        max_push_bytes: u64::from(args.max_push_size) * 1024 * 1024,
        mail_relay_ca: args.mail_relay_ca.clone(),
    };
    serve(config, shutdown, |info| {
        if json {
            outln!("{}", serde_json::to_string(info).unwrap_or_default());
        } else {
            outln!("turnout serving");
            outln!("  API    {}", info.api);
            outln!("  proxy  {}", info.http);
            outln!("  home   {}", info.home);
            outln!("  isolation  {}", info.isolation);
            outln!("  network    {}", info.network);
        }
        ready(info);
    })
    .await
}
