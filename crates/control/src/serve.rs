//! `turnout serve`: every part in one process. Order of start-up: lock the home, bind both
//! listeners (a taken port fails the start before anything is written: no store, no
//! administrator, no token), open the store, create the administrator on the first start,
//! write the addresses to `serve.json`, serve the API and the proxy, then bring environments
//! back. Order of shutdown: stop accepting on both listeners and let in-flight requests finish (the proxy
//! drains), stop every instance (SIGTERM, then SIGKILL after its stop timeout), remove
//! `serve.json`.
use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use turnout_model::ServeInfo;
use turnout_proxy::{Proxy, ProxyConfig};

use crate::handover;
use crate::home::Home;
use crate::plane::{ControlPlane, Networks, ProxyEndpoint};
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub home: PathBuf,
    pub api_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// Worker threads of the proxy's own runtime; one per CPU when None.
    pub proxy_workers: Option<usize>,
    /// Not root: run every environment as the daemon's user anyway (unsafe for shared use).
    pub single_user: bool,
    /// Even as root: no network namespaces, every environment on the host's network.
    pub shared_network: bool,
    /// Take over from the daemon running on this home (its listening sockets and instances)
    /// instead of binding: an upgrade that drops no request (see `handover`).
    pub upgrade: bool,
    pub proxy: ProxyConfig,
}

/// Run the daemon until `shutdown` is cancelled. `ready` is called once both listeners are bound.
pub async fn serve(
    config: ServeConfig,
    shutdown: CancellationToken,
    ready: impl FnOnce(&ServeInfo),
) -> anyhow::Result<()> {
    let home = Home::new(config.home.clone());
    // Everything the daemon writes is its own alone (store, WAL, tokens, logs, job files);
    // directories environments must pass are opened up explicitly (`plane::isolation`).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    std::fs::create_dir_all(home.root())
        .with_context(|| format!("cannot create the home directory {}", home.root().display()))?;
    crate::plane::secure_home(&home).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (separation, no_sandbox) = crate::plane::Separation::detect(config.single_user);
    let home = crate::plane::place_envs(home, &separation);
    if !home.envs_root().starts_with(home.root()) {
        warn!(
            envs = %home.envs_root().display(),
            "other users cannot pass the directories above the home, so the environments' directories are kept here instead"
        );
    }
    let taken = if config.upgrade {
        let socket = home.upgrade_socket();
        let taken = tokio::task::spawn_blocking(move || handover::take(&socket))
            .await?
            .context("cannot take over from the running daemon")?;
        info!(
            "took the listening sockets over; waiting for the running daemon to finish its requests and exit"
        );
        Some(taken)
    } else {
        None
    };
    let lock = File::create(home.lock_file())
        .with_context(|| format!("cannot write {}", home.lock_file().display()))?;
    if config.upgrade {
        // The predecessor lets its requests finish (up to its shutdown grace) and its jobs
        // stop, then exits, which releases the lock.
        let deadline = tokio::time::Instant::now() + HANDOVER_WAIT;
        while lock.try_lock().is_err() {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the running daemon of {} took the upgrade but did not exit within {}s",
                    home.root().display(),
                    HANDOVER_WAIT.as_secs()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    } else if lock.try_lock().is_err() {
        bail!(
            "another `turnout serve` is using the home {}; stop it first, pass a different --home, or take over from it with --upgrade",
            home.root().display()
        );
    }
    let (api_listener, http_listener) = match taken {
        Some((api, http)) => (adopt_listener(api)?, adopt_listener(http)?),
        None => (
            bind(
                config.api_listen,
                "API",
                "--api-listen / TURNOUT_API_LISTEN",
            )
            .await?,
            bind(
                config.http_listen,
                "proxy",
                "--http-listen / TURNOUT_HTTP_LISTEN",
            )
            .await?,
        ),
    };
    // A successor (`turnout serve --upgrade`) gets the same sockets.
    let offer = handover::Offer::new(
        home.upgrade_socket(),
        duplicate(&api_listener)?,
        duplicate(&http_listener)?,
    )
    .with_context(|| format!("cannot listen on {}", home.upgrade_socket().display()))?;
    let store = Store::open(&home.db()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let checkpoints = Store::checkpoint_in_background(
        &home.db(),
        std::time::Duration::from_secs(2),
        shutdown.clone(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::admin::bootstrap(&store, &home.admin_token())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let api_addr = api_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let proxy = Proxy::new(config.proxy.clone());
    let proxy_runtime = proxy_runtime(config.proxy_workers)?;
    let networks = Networks::detect(
        config.shared_network,
        ProxyEndpoint {
            proxy: proxy.clone(),
            runtime: proxy_runtime.handle().clone(),
            http_port: http_addr.port(),
            shutdown: shutdown.clone(),
        },
    );
    let info = ServeInfo {
        api: format!("http://{api_addr}"),
        http: format!("http://{http_addr}"),
        pid: std::process::id(),
        home: home.root().display().to_string(),
        isolation: separation.describe().to_owned(),
        network: networks
            .describe()
            .map_or_else(|shared| shared, str::to_owned),
    };
    std::fs::write(home.serve_json(), serde_json::to_vec_pretty(&info)?)
        .with_context(|| format!("cannot write {}", home.serve_json().display()))?;

    let network_shared = networks.describe().err();
    // Instances run under supervising processes of their own (this binary, `__instance`), so
    // they outlive this daemon and the next one adopts them.
    let exe = std::env::current_exe().context("cannot find the turnout binary to run instances")?;
    let runtime = turnout_supervisor::ShimRuntime::new(exe, home.sockets_dir())
        .with_context(|| format!("cannot use {}", home.sockets_dir().display()))?;
    let plane = ControlPlane::new(
        home.clone(),
        store,
        std::sync::Arc::new(runtime),
        separation.clone(),
        networks,
    );
    // Before the API takes a request: clean up after a daemon that was killed, so no new job
    // can be mistaken for one it left half-done.
    plane
        .recover()
        .await
        .map_err(|e| anyhow::anyhow!("cleaning up after the last run: {e}"))?;

    // Routes before the proxy serves: instances left running are adopted (a health check
    // each) and routed now; the others answer 503 until their launch (in the background)
    // passes its health check. During an upgrade, requests wait in the listening socket's
    // backlog meanwhile rather than meeting an empty table.
    plane.restore_all().await;
    let proxy_released = CancellationToken::new();
    let proxy_task = spawn_proxy(
        proxy_runtime,
        proxy.clone(),
        http_listener,
        shutdown.clone(),
        proxy_released.clone(),
    )?;
    let api_shutdown = shutdown.clone();
    let api_router = crate::api::router(plane.clone());
    let api_task = tokio::spawn(async move {
        axum::serve(api_listener, api_router)
            .with_graceful_shutdown(async move { api_shutdown.cancelled().await })
            .await
    });
    ready(&info);
    info!(api = %info.api, http = %info.http, home = %info.home, "turnout serving");
    if separation != crate::plane::Separation::Users {
        warn!("{}", info.isolation);
    }
    if let Some(why) = no_sandbox {
        warn!("no sandbox for environments: {why}");
    }
    if let Some(shared) = network_shared {
        warn!("{shared}");
    }

    let handed_over = tokio::select! {
        _ = shutdown.cancelled() => false,
        offered = offer.wait_for_successor() => match offered {
            Ok(()) => {
                info!("a successor took the listening sockets: finishing requests in flight, then exiting and leaving the instances running");
                proxy.hand_over();
                shutdown.cancel();
                true
            }
            Err(e) => {
                warn!(error = %e, "the upgrade socket failed; upgrades need a restart");
                shutdown.cancelled().await;
                false
            }
        },
    };
    drop(offer);
    info!("shutting down: draining connections");
    let drained = async {
        if handed_over {
            plane.drain_for_successor().await;
        }
        proxy_released.cancel();
    };
    let (proxy_result, ()) = tokio::join!(proxy_task, drained);
    match proxy_result {
        Ok(Err(e)) => warn!(error = %e, "proxy failed"),
        Err(e) => warn!(error = %e, "proxy thread failed"),
        Ok(Ok(())) => {}
    }
    // The API's graceful shutdown waits for open responses, and a `logs -f` stream never ends by
    // itself: give it a deadline.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), api_task).await;
    if handed_over {
        plane.leave_running().await;
        let _ = checkpoints.await;
        info!("handed over");
        return Ok(());
    }
    info!("stopping instances");
    plane.shutdown().await;
    let _ = checkpoints.await;
    let _ = std::fs::remove_file(home.serve_json());
    info!("stopped");
    Ok(())
}

/// How long `--upgrade` waits for the running daemon to exit once it has the sockets: its
/// shutdown grace and its jobs' cancellation, with room to spare.
const HANDOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// A listening socket taken over from the predecessor, for this runtime.
fn adopt_listener(listener: std::net::TcpListener) -> anyhow::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    Ok(TcpListener::from_std(listener)?)
}

/// Another descriptor of the same listening socket, for the successor.
fn duplicate(listener: &TcpListener) -> anyhow::Result<std::net::TcpListener> {
    use std::os::fd::AsFd;
    Ok(std::net::TcpListener::from(
        listener.as_fd().try_clone_to_owned()?,
    ))
}

/// The data plane gets a runtime of its own, so a busy control plane (builds streaming output,
/// SQLite on the blocking pool, health checks) can never starve request handling, and its
/// worker count is a setting the benchmarks pin to one. Built before the control plane, which
/// serves the proxy's listeners inside the environments' namespaces on it.
fn proxy_runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let workers =
        workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // One worker: a current-thread runtime, where the thread that accepts also serves, tasks
    // run in the order they were woken, and there is no work stealing to keep up.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    Ok(builder.thread_name("turnout-proxy").enable_all().build()?)
}

/// Serve the proxy's main listener on its runtime (on a thread of its own: a current-thread
/// runtime runs only while something blocks on it) until `shutdown`; the runtime (and the
/// tunnels and streams still running on it) lives on until `released`, so drains can close
/// them cleanly.
fn spawn_proxy(
    runtime: tokio::runtime::Runtime,
    proxy: std::sync::Arc<Proxy>,
    listener: TcpListener,
    shutdown: CancellationToken,
    released: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    // A listener is registered with the runtime that created it: hand the socket over.
    let listener = listener.into_std()?;
    Ok(tokio::task::spawn_blocking(move || {
        let result = runtime.block_on(async move {
            let listener = TcpListener::from_std(listener)?;
            let served = proxy.serve(listener, shutdown).await;
            released.cancelled().await;
            served
        });
        // Connections still open after the graceful shutdown are dropped here.
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        result
    }))
}

async fn bind(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for the {what}; pick another address with {flag}")
    })
}
