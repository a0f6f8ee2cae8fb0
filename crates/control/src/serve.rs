//! `turnout serve`: the control plane (API, jobs, store, instances' supervision), and the data
//! plane (the proxy) it attaches to or starts as a process of its own (`turnout-dataplane`),
//! which keeps serving while the control plane is stopped, restarting or killed.
//!
//! Order of start-up: lock the home, get the listening sockets (from the predecessor with
//! `--upgrade`; the proxy's from the running data plane; else bind them: a taken port fails the
//! start before anything is written: no store, no administrator, no token), attach to the data
//! plane or start one (not yet accepting), open the store, create the administrator on the
//! first start, write the addresses to `serve.json`, bring environments back (adopting the
//! instances left running) while the data plane keeps its table, then send it the routes and
//! let it serve (a data plane of another binary is replaced), then serve the API.
//!
//! Two ways to end: a full stop (SIGINT, Ctrl-C: the data plane stops accepting and drains,
//! every instance is stopped, `serve.json` is removed), or the control plane alone leaving
//! (SIGTERM, or a successor taking over with `--upgrade`): jobs are cancelled, and the data plane
//! and the instances keep running for the next `turnout serve` on this home.
use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use turnout_dataplane::{Attached, DataPlane, DataPlaneConfig};
use turnout_model::ServeInfo;
use turnout_proxy::ProxyConfig;

use crate::handover;
use crate::home::Home;
use crate::plane::{ControlPlane, Networks};
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub home: PathBuf,
    pub api_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// The proxy's HTTPS address, when it serves HTTPS.
    pub https_listen: Option<SocketAddr>,
    /// Where certificates come from for domains with `--tls acme`.
    pub acme: crate::tls::AcmeConfig,
    /// The mail catcher's and the egress proxy's addresses; with port 0, the port the home
    /// used last (`services.json`) when it is free, else any (see `bind_service`).
    pub smtp_listen: SocketAddr,
    pub egress_listen: SocketAddr,
    /// Worker threads of the proxy's own runtime; one per CPU when None.
    pub proxy_workers: Option<usize>,
    /// Builds that may run at once (1 to 64); one per CPU when None.
    pub max_builds: Option<usize>,
    /// Not root: run every environment as the daemon's user anyway (unsafe for shared use).
    pub single_user: bool,
    /// Even as root: no network namespaces, every environment on the host's network.
    pub shared_network: bool,
    /// Take over from the daemon running on this home (its listening sockets and instances)
    /// instead of binding, and replace its data plane: an upgrade that drops no request (see
    /// `handover`).
    pub upgrade: bool,
    pub proxy: ProxyConfig,
    /// The largest request body `git push` (or fetch) may send to `/git/APP.git`.
    pub max_push_bytes: u64,
    /// A PEM file of CA certificates mail relays may also be signed by, besides the public
    /// roots (a company's own relay).
    pub mail_relay_ca: Option<PathBuf>,
}

/// How the daemon is asked to end.
#[derive(Clone, Default)]
pub struct Shutdown {
    stop: CancellationToken,
    leave: CancellationToken,
}

impl Shutdown {
    /// A full stop: traffic, instances and the control plane.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// The control plane alone: the data plane and the instances keep running.
    pub fn leave(&self) {
        self.leave.cancel();
    }
}

/// Run the daemon until `shutdown` says. `ready` is called once it serves.
pub async fn serve(
    config: ServeConfig,
    shutdown: Shutdown,
    ready: impl FnOnce(&ServeInfo),
) -> anyhow::Result<()> {
    let home = Home::new(config.home.clone());
    let relay_tls = crate::mail::relay::RelayTls::new(config.mail_relay_ca.as_deref())
        .map_err(|e| anyhow::anyhow!("--mail-relay-ca: {e}"))?;
    // One process-wide crypto provider for every rustls configuration built without one.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let certs = crate::tls::Certs::new(home.root(), config.acme.clone())
        .map_err(|e| anyhow::anyhow!("--acme-ca-cert: {e}"))?;
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
        info!("took the listening sockets over; waiting for the running daemon to exit");
        Some(taken)
    } else {
        None
    };
    let lock = File::create(home.lock_file())
        .with_context(|| format!("cannot write {}", home.lock_file().display()))?;
    if config.upgrade {
        // The predecessor lets its jobs stop, then exits, which releases the lock.
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
    let (api_listener, http_taken, smtp_taken, egress_taken) = match taken {
        Some(t) => (
            adopt_listener(t.api)?,
            Some(turnout_dataplane::Listeners {
                http: t.http,
                https: t.https,
            }),
            t.smtp,
            t.egress,
        ),
        None => (
            bind(
                config.api_listen,
                "API",
                "--api-listen / TURNOUT_API_LISTEN",
            )
            .await?,
            None,
            None,
            None,
        ),
    };
    let mut kept = ServicesFile::read(&home);
    let smtp_listener = match smtp_taken {
        Some(l) => adopt_listener(l)?,
        None => {
            bind_service(
                config.smtp_listen,
                kept.smtp,
                "mail catcher",
                "--smtp-listen / TURNOUT_SMTP_LISTEN",
            )
            .await?
        }
    };
    let egress_listener = match egress_taken {
        Some(l) => adopt_listener(l)?,
        None => {
            bind_service(
                config.egress_listen,
                kept.egress,
                "egress proxy",
                "--egress-listen / TURNOUT_EGRESS_LISTEN",
            )
            .await?
        }
    };
    let ports = crate::plane::ServicePorts {
        api: api_listener.local_addr()?.port(),
        smtp: smtp_listener.local_addr()?.port(),
        egress: egress_listener.local_addr()?.port(),
    };
    (kept.smtp, kept.egress) = (Some(ports.smtp), Some(ports.egress));
    kept.write(&home)?;
    // Instances and the data plane run as processes of this binary (`__instance`,
    // `__dataplane`), so they outlive this daemon and the next one attaches to them.
    let exe = std::env::current_exe().context("cannot find the turnout binary")?;
    let (http_listen, https_listen) = (config.http_listen, config.https_listen);
    let (dataplane, attached) = DataPlane::attach(
        exe.clone(),
        home.dataplane_socket(),
        home.dataplane_log(),
        DataPlaneConfig::new(&config.proxy, config.proxy_workers),
        async move || match http_taken {
            Some(listeners) => Ok(listeners),
            None => bind_proxy(http_listen, https_listen),
        },
    )
    .await
    .context("cannot start the data plane")?;
    let (http_addr, https_addr) = match attached {
        Attached::Running { http, https } => {
            if http_listen.port() != 0 && http != http_listen {
                warn!(addr = %http, requested = %http_listen, "the running data plane keeps listening where it does; stop turnout fully (SIGINT) to change --http-listen");
            }
            if https.is_some() != https_listen.is_some()
                || https_listen.is_some_and(|want| want.port() != 0 && Some(want) != https)
            {
                warn!(addr = ?https, requested = ?https_listen, "the running data plane keeps its HTTPS listener as it is; stop turnout fully (SIGINT) to change --https-listen");
            }
            (http, https)
        }
        Attached::Started => {
            let listeners = dataplane.listeners()?;
            (listeners.http_addr()?, listeners.https_addr()?)
        }
    };
    let started = matches!(attached, Attached::Started);
    let served = run(
        &config,
        &home,
        Listeners {
            api: api_listener,
            smtp: smtp_listener,
            egress: egress_listener,
        },
        relay_tls,
        certs,
        (http_addr, https_addr),
        &dataplane,
        separation,
        no_sandbox,
        &exe,
        shutdown,
        ready,
    )
    .await;
    if served.is_err() && started {
        // Never left behind waiting for routes that will not come.
        dataplane.stop().await;
    }
    served
}

/// The control plane's own listening sockets.
struct Listeners {
    api: TcpListener,
    smtp: TcpListener,
    egress: TcpListener,
}

/// Everything after the listening sockets and the data plane are in hand.
#[allow(clippy::too_many_arguments)]
async fn run(
    config: &ServeConfig,
    home: &Home,
    listeners: Listeners,
    relay_tls: crate::mail::relay::RelayTls,
    certs: crate::tls::Certs,
    (http_addr, https_addr): (SocketAddr, Option<SocketAddr>),
    dataplane: &std::sync::Arc<DataPlane>,
    separation: crate::plane::Separation,
    no_sandbox: Option<String>,
    exe: &std::path::Path,
    shutdown: Shutdown,
    ready: impl FnOnce(&ServeInfo),
) -> anyhow::Result<()> {
    // A successor (`turnout serve --upgrade`) gets the same sockets.
    let Listeners {
        api: api_listener,
        smtp: smtp_listener,
        egress: egress_listener,
    } = listeners;
    let ports = crate::plane::ServicePorts {
        api: api_listener.local_addr()?.port(),
        smtp: smtp_listener.local_addr()?.port(),
        egress: egress_listener.local_addr()?.port(),
    };
    let proxy_listeners = dataplane.listeners()?;
    let offer = handover::Offer::new(
        home.upgrade_socket(),
        handover::Sockets {
            api: duplicate(&api_listener)?,
            http: proxy_listeners.http,
            smtp: Some(duplicate(&smtp_listener)?),
            egress: Some(duplicate(&egress_listener)?),
            https: proxy_listeners.https,
        },
    )
    .with_context(|| format!("cannot listen on {}", home.upgrade_socket().display()))?;
    // Cancelled however the daemon ends: the API and the store's checkpoints stop.
    let ending = CancellationToken::new();
    let store = Store::open(&home.db()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let checkpoints = Store::checkpoint_in_background(
        &home.db(),
        std::time::Duration::from_secs(2),
        ending.clone(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut vault = crate::vault::Vault::open(home).map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::secrets::prepare_store(&store, &mut vault)
        .await
        .map_err(|e| anyhow::anyhow!("sealing the store's secrets: {e}"))?;
    crate::admin::bootstrap(&store, &home.admin_token())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let api_addr = api_listener.local_addr()?;
    let networks = Networks::detect(config.shared_network, dataplane.clone(), http_addr.port());
    let info = ServeInfo {
        api: format!("http://{api_addr}"),
        http: format!("http://{http_addr}"),
        https: https_addr.map(|a| format!("https://{a}")),
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
    // With HTTPS, internal URLs are served over it too, signed by the home's own CA.
    let local_ca = match https_addr {
        Some(_) => {
            let ca = crate::tls::LocalCa::open(home.root())
                .map_err(|e| anyhow::anyhow!("the local CA for internal URLs: {e}"))?;
            info!(ca = %ca.cert_file().display(), "internal URLs are served over HTTPS too; trust this CA (it signs *.localhost names only) for a browser to accept them");
            Some(ca)
        }
        None => None,
    };
    let runtime = turnout_supervisor::ShimRuntime::new(exe.to_owned(), home.sockets_dir())
        .with_context(|| format!("cannot use {}", home.sockets_dir().display()))?;
    let plane = ControlPlane::new(
        home.clone(),
        store,
        std::sync::Arc::new(runtime),
        separation.clone(),
        networks,
        vault,
        ports,
        certs
            .with_https_port(https_addr.map(|a| a.port()))
            .with_local_ca(local_ca),
        config.max_builds.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        }),
    );
    plane
        .load_egress()
        .await
        .map_err(|e| anyhow::anyhow!("loading the egress policies: {e}"))?;
    // Before the API takes a request: clean up after a daemon that was killed, so no new job
    // can be mistaken for one it left half-done.
    plane
        .recover()
        .await
        .map_err(|e| anyhow::anyhow!("cleaning up after the last run: {e}"))?;

    // Instances left running are adopted (a health check each) while a data plane that serves
    // already keeps its table; the others answer 503 until their launch (in the background)
    // passes its health check. Then the data plane gets the routes: for what was adopted they
    // are the ones it has, so nothing it serves changes.
    plane.restore_all().await;
    // The certificates, from the home: held with the routes until the data plane serves.
    plane.apply_tls().await;
    dataplane
        .release(config.upgrade)
        .await
        .context("the data plane does not serve")?;
    plane.start_sleeping();
    plane.start_renewals();
    plane.serve_services(smtp_listener, egress_listener, relay_tls, &ending);
    // The dashboard (`/ui/`) shares the API's listener; it calls the same plane methods.
    let api_router = crate::api::router(plane.clone(), config.max_push_bytes)
        .merge(crate::dashboard::router(plane.clone()));
    let api_ending = ending.clone();
    let api_task = tokio::spawn(async move {
        axum::serve(api_listener, api_router)
            .with_graceful_shutdown(async move { api_ending.cancelled().await })
            .await
    });
    // Runs every schedule whose tick passed while the daemon was down (once), then each tick.
    plane.start_scheduler().await;
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

    let full_stop = tokio::select! {
        _ = shutdown.stop.cancelled() => true,
        _ = shutdown.leave.cancelled() => false,
        offered = offer.wait_for_successor() => match offered {
            Ok(()) => {
                info!("a successor took the listening sockets: leaving the data plane and the instances to it");
                false
            }
            Err(e) => {
                warn!(error = %e, "the upgrade socket failed; upgrades need a restart");
                tokio::select! {
                    _ = shutdown.stop.cancelled() => true,
                    _ = shutdown.leave.cancelled() => false,
                }
            }
        },
    };
    drop(offer);
    ending.cancel();
    // The API's graceful shutdown waits for open responses, and a `logs -f` stream never ends by
    // itself: give it a deadline.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), api_task).await;
    if !full_stop {
        info!("the control plane leaves; the data plane and the instances keep running");
        plane.leave_running().await;
        let _ = checkpoints.await;
        info!("left running");
        return Ok(());
    }
    info!("shutting down: the data plane drains its connections");
    dataplane.stop().await;
    info!("stopping instances");
    plane.shutdown().await;
    let _ = checkpoints.await;
    let _ = std::fs::remove_file(home.serve_json());
    info!("stopped");
    Ok(())
}

/// How long `--upgrade` waits for the running daemon to exit once it has the sockets: its
/// jobs' cancellation, with room to spare.
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

/// The ports the daemon's own services used last, so a restart keeps the `SMTP_URL` and
/// `HTTP_PROXY` instances that keep running were given.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct ServicesFile {
    smtp: Option<u16>,
    egress: Option<u16>,
}

impl ServicesFile {
    fn read(home: &Home) -> ServicesFile {
        std::fs::read(home.root().join("services.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn write(&self, home: &Home) -> anyhow::Result<()> {
        let path = home.root().join("services.json");
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Bind a service's address; with port 0, the port it had last (`kept`) if it is free, so
/// running instances keep reaching it, else any.
async fn bind_service(
    addr: SocketAddr,
    kept: Option<u16>,
    what: &str,
    flag: &str,
) -> anyhow::Result<TcpListener> {
    if addr.port() == 0
        && let Some(port) = kept
    {
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(listener) => return Ok(listener),
            Err(e) => {
                warn!(port, error = %e, "the {what} cannot have the port it had; instances left running keep the old one until their next restart")
            }
        }
    }
    bind(addr, what, flag).await
}

/// The proxy's listening sockets, on a first start.
fn bind_proxy(
    http: SocketAddr,
    https: Option<SocketAddr>,
) -> std::io::Result<turnout_dataplane::Listeners> {
    let bind = |addr: SocketAddr, what: &str, flag: &str| {
        std::net::TcpListener::bind(addr).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {addr} for the proxy's {what} ({e}); pick another address with {flag}"),
            )
        })
    };
    Ok(turnout_dataplane::Listeners {
        http: bind(http, "HTTP", "--http-listen / TURNOUT_HTTP_LISTEN")?,
        https: https
            .map(|addr| bind(addr, "HTTPS", "--https-listen / TURNOUT_HTTPS_LISTEN"))
            .transpose()?,
    })
}

async fn bind(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for the {what}; pick another address with {flag}")
    })
}
