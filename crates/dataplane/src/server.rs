//! `turnout __dataplane`: the proxy in a process of its own. It serves its last route table
//! whatever happens to the control plane that started it (stopped, restarting, killed), and
//! takes changes from whichever control plane talks to it on its socket.
//!
//! Started with its listening sockets sent over its standard input (see `Listeners`; so no
//! descriptor number is chosen and nothing else inherits them). It does not accept until told to `Serve`; a successor
//! (`--succeed PATH`) then first takes over from the data plane at PATH: it starts accepting on
//! the same socket, tells its predecessor to retire, and moves its own control socket to PATH.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use turnout_netns::{Namespace, Network};
use turnout_proxy::{
    Asleep, FixedHost, Login, Maintenance, Proxy, RouteStats, RouteTable, Target, TlsTable,
    Upstream,
};

use crate::client::Link;
use crate::listeners::Listeners;
use crate::spec::{
    DataPlaneConfig, DrainReport, EnvResponses, LinkKey, LinkSpec, RouteSpec, StatsRow, TargetSpec,
    TlsSpec, UpstreamSpec,
};
use crate::wire::{Answer, Call, Hello, LISTENERS, Reply, Request, line};

mod links;
mod tls;

/// How `turnout __dataplane` is asked to run.
pub struct ServerArgs {
    /// Its control socket.
    pub socket: PathBuf,
    pub config: DataPlaneConfig,
    /// The control socket of the data plane it replaces once told to serve.
    pub succeed: Option<PathBuf>,
}

/// Drains whose outcome nobody collected are forgotten beyond this many.
const KEPT_DRAINS: usize = 256;
/// A `wakes` request is answered after this long even when nothing changed, so a control plane
/// that replaced its data plane soon asks the new one.
const WAKES_POLL: Duration = Duration::from_secs(2);

/// An environment, as `(app, env)`.
type EnvId = (String, String);

/// Run the data plane until it is stopped or retired, on the proxy's listening sockets.
pub fn run(args: ServerArgs, listeners: Listeners) -> std::io::Result<()> {
    let workers = args
        .config
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // One worker: a current-thread runtime, where the thread that accepts also serves.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    let runtime = builder.thread_name("turnout-proxy").enable_all().build()?;
    let served = runtime.block_on(serve(args, listeners));
    // Connections still open after the graceful shutdown are dropped here.
    runtime.shutdown_timeout(Duration::from_secs(1));
    served
}

struct Plane {
    proxy: Arc<Proxy>,
    listeners: Listeners,
    http: SocketAddr,
    https: Option<SocketAddr>,
    grace: Duration,
    succeed: Option<PathBuf>,
    socket: PathBuf,
    /// Cancelled to stop accepting, on every listener.
    accepting: CancellationToken,
    /// Cancelled once everything is done: the process exits.
    exit: CancellationToken,
    /// The accept loops (main listener and namespaces).
    serving: TaskTracker,
    registry: Mutex<Registry>,
    /// Where a sleeping environment's first request says it wants waking (a send on an
    /// unbounded channel: no lock on the request path); `note_wakes` reads it.
    wake: mpsc::UnboundedSender<EnvId>,
    /// Bumped each time a wake is asked for: `wakes` requests wait on it.
    wakes: watch::Sender<u64>,
}

#[derive(Default)]
struct Registry {
    serving: bool,
    /// Stopping or retiring: no new listener.
    closing: bool,
    routes: BTreeMap<String, RouteSpec>,
    /// The table in force, changed host by host; the proxy gets a clone, which shares every
    /// unchanged host with it, so applying a change costs the hosts it changed, not the table.
    table: RouteTable,
    /// Each host's HTTPS as sent, and the table made of them (with the ACME challenges).
    tls: BTreeMap<String, TlsSpec>,
    tls_table: TlsTable,
    /// The instances the routes use, by id, with the spec they were made from and how many
    /// routes use them.
    upstreams: HashMap<String, Used>,
    networks: HashMap<String, Network>,
    /// Namespaces to serve internal URLs in, with the token stopping each one's listener
    /// (`None` until serving).
    listeners: BTreeMap<String, Option<CancellationToken>>,
    /// Links' listeners: the host each one's requests are routed as (changed in place when a
    /// link resolves elsewhere), with the token stopping it (`None` until serving).
    links: BTreeMap<LinkKey, (Arc<FixedHost>, Option<CancellationToken>)>,
    /// Each host's counters, per environment it has routed to (they survive switching away and
    /// back); a host's go with its route.
    stats: HashMap<String, HashMap<EnvId, Arc<RouteStats>>>,
    restarting: HashSet<String>,
    drains: HashMap<String, watch::Receiver<Option<DrainReport>>>,
    /// The entry of each sleeping environment, shared by all its hosts.
    asleep: HashMap<EnvId, Sleeping>,
    /// Sleeping environments a request asked to wake, until their route changes.
    wanted: BTreeSet<EnvId>,
}

struct Sleeping {
    entry: Arc<Asleep>,
    /// How many routes sleep on it: the entry (and any wake asked for it) is forgotten at 0.
    routes: usize,
}

struct Used {
    upstream: Arc<Upstream>,
    spec: UpstreamSpec,
    routes: usize,
}

fn lock(m: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn serve(args: ServerArgs, listeners: Listeners) -> std::io::Result<()> {
    listeners.http.set_nonblocking(true)?;
    if let Some(https) = &listeners.https {
        https.set_nonblocking(true)?;
    }
    let http = listeners.http_addr()?;
    let https = listeners.https_addr()?;
    let _ = std::fs::remove_file(&args.socket);
    let control = UnixListener::bind(&args.socket)?;
    std::fs::set_permissions(&args.socket, std::fs::Permissions::from_mode(0o600))?;
    let config = args.config.proxy();
    let (wake, wake_rx) = mpsc::unbounded_channel();
    let plane = Arc::new(Plane {
        wake,
        wakes: watch::Sender::new(0),
        grace: config.shutdown_grace,
        proxy: Proxy::new(config),
        listeners,
        http,
        https,
        succeed: args.succeed,
        socket: args.socket,
        accepting: CancellationToken::new(),
        exit: CancellationToken::new(),
        serving: TaskTracker::new(),
        registry: Mutex::new(Registry {
            tls_table: {
                let mut table = TlsTable::default();
                table.set_https_port(https.map(|a| a.port()));
                table
            },
            ..Registry::default()
        }),
    });
    info!(pid = std::process::id(), http = %http, socket = %plane.socket.display(), "data plane ready");
    tokio::spawn(note_wakes(plane.clone(), wake_rx));
    loop {
        tokio::select! {
            _ = plane.exit.cancelled() => break,
            accepted = control.accept() => match accepted {
                Ok((stream, _)) => { tokio::spawn(converse(plane.clone(), stream)); }
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    info!("data plane exiting");
    Ok(())
}

/// One connection on the control socket.
async fn converse(plane: Arc<Plane>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut first = Vec::new();
    if lines.read_until(b'\n', &mut first).await.unwrap_or(0) == 0 {
        return;
    }
    if first == LISTENERS {
        let Ok(stream) = lines.into_inner().reunite(write) else {
            return;
        };
        if let Err(e) = give_listener(&plane, stream) {
            warn!(error = %e, "could not pass the listening socket");
        }
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            if write.write_all(&out).await.is_err() {
                return;
            }
        }
    });
    let mut next = Some(first);
    loop {
        let raw = match next.take() {
            Some(raw) => raw,
            None => {
                let mut raw = Vec::new();
                match lines.read_until(b'\n', &mut raw).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => raw,
                }
            }
        };
        let call: Call = match serde_json::from_slice(&raw) {
            Ok(call) => call,
            Err(e) => {
                warn!(error = %e, "unreadable request on the control socket; closing it");
                break;
            }
        };
        let id = call.id;
        let reply = move |answer| line(&Reply { id, answer });
        match call.request {
            // In order, before the next request is read: a change is in force once answered.
            Request::Routes { set, remove } => {
                plane.apply(set, remove);
                let _ = tx.send(reply(Ok(Answer::Done)));
            }
            Request::Tls { set, remove } => {
                plane.apply_tls(set, remove);
                let _ = tx.send(reply(Ok(Answer::Done)));
            }
            Request::Challenge { spec, on } => {
                let answer = plane.challenge(spec, on).map(|()| Answer::Done);
                let _ = tx.send(reply(answer));
            }
            Request::Hello => {
                let _ = tx.send(reply(Ok(Answer::Hello(plane.hello()))));
            }
            Request::Restarting { upstream, on } => {
                plane.set_restarting(upstream, on);
                let _ = tx.send(reply(Ok(Answer::Done)));
            }
            Request::Stats => {
                let _ = tx.send(reply(Ok(Answer::Stats(plane.stats()))));
            }
            Request::Responses => {
                let _ = tx.send(reply(Ok(Answer::Responses(plane.responses()))));
            }
            Request::Wakes { seen } => {
                let (plane, tx) = (plane.clone(), tx.clone());
                tokio::spawn(async move {
                    let mut changes = plane.wakes.subscribe();
                    let _ = tokio::time::timeout(WAKES_POLL, changes.wait_for(|g| *g > seen)).await;
                    let r = lock(&plane.registry);
                    let answer = Answer::Wakes {
                        generation: *plane.wakes.borrow(),
                        envs: r.wanted.iter().cloned().collect(),
                    };
                    drop(r);
                    let _ = tx.send(reply(Ok(answer)));
                });
            }
            Request::Listen { namespace } => {
                let answer = plane.listen(namespace).map(|()| Answer::Done);
                let _ = tx.send(reply(answer));
            }
            Request::Unlisten { namespace } => {
                plane.unlisten(&namespace);
                let _ = tx.send(reply(Ok(Answer::Done)));
            }
            Request::Links { set, remove } => {
                plane.links(set, remove);
                let _ = tx.send(reply(Ok(Answer::Done)));
            }
            Request::Drained { upstream } => {
                let waiting = lock(&plane.registry).drains.remove(&upstream);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let report = match waiting {
                        Some(mut rx) => rx
                            .wait_for(Option::is_some)
                            .await
                            .ok()
                            .and_then(|r| *r)
                            .unwrap_or_default(),
                        None => DrainReport::default(),
                    };
                    let _ = tx.send(reply(Ok(Answer::Drained(report))));
                });
            }
            Request::Serve => {
                let plane = plane.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let answer = plane.start_serving().await.map(|()| Answer::Done);
                    let _ = tx.send(reply(answer));
                });
            }
            Request::Retire => {
                plane.proxy.hand_over();
                plane.stop_accepting();
                let _ = tx.send(reply(Ok(Answer::Done)));
                tokio::spawn(plane.clone().finish());
            }
            Request::Stop => {
                plane.stop_accepting();
                let plane = plane.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    plane.clone().finish().await;
                    let _ = tx.send(reply(Ok(Answer::Done)));
                });
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Pass duplicates of the listening sockets to whoever asked (the control plane, which keeps
/// them to start the next data plane).
fn give_listener(plane: &Plane, stream: UnixStream) -> std::io::Result<()> {
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    plane.listeners.send(&stream)
}

impl Plane {
    fn hello(&self) -> Hello {
        let r = lock(&self.registry);
        Hello {
            pid: std::process::id(),
            identity: crate::identity(),
            http: self.http,
            https: self.https,
            serving: r.serving,
            routes: r.routes.clone(),
            tls: r.tls.keys().cloned().collect(),
            restarting: r.restarting.iter().cloned().collect(),
            namespaces: r.listeners.keys().cloned().collect(),
            links: r
                .links
                .iter()
                .map(|(key, (host, _))| LinkSpec {
                    key: key.clone(),
                    host: host.get().to_string(),
                })
                .collect(),
        }
    }

    /// Change these hosts' routes and apply the table; drain the instances it no longer uses.
    /// Every step costs the hosts that changed, whatever the size of the table.
    fn apply(&self, set: Vec<(String, RouteSpec)>, remove: Vec<String>) {
        let mut r = lock(&self.registry);
        let r = &mut *r;
        let mut released = Vec::new();
        for host in remove {
            if let Some(old) = r.routes.remove(&host) {
                r.table.remove(&host);
                released.push(old);
                r.stats.remove(&host);
            }
        }
        for (host, spec) in set {
            if r.routes.get(&host) == Some(&spec) {
                continue;
            }
            let target = target(r, &host, &spec, &self.wake);
            let stats = r
                .stats
                .entry(host.clone())
                .or_default()
                .entry((spec.app.clone(), spec.env.clone()))
                .or_default()
                .clone();
            match &spec.login {
                Some(l) => r
                    .table
                    .insert_protected(&host, target, stats, Arc::new(login(l))),
                None => r.table.insert_with_stats(&host, target, stats),
            }
            released.extend(r.routes.insert(host, spec));
        }
        self.proxy.apply(r.table.clone());
        // After the new table is in force: a sleeping entry no route uses any more is
        // forgotten, with any wake asked for it, and an instance no route uses any more is
        // drained.
        if r.drains.len() > KEPT_DRAINS {
            r.drains.retain(|_, rx| rx.borrow().is_none());
        }
        for old in released {
            if matches!(old.target, TargetSpec::Asleep { .. }) {
                let env = (old.app, old.env);
                if let Some(sleeping) = r.asleep.get_mut(&env) {
                    sleeping.routes -= 1;
                    if sleeping.routes == 0 {
                        r.asleep.remove(&env);
                        r.wanted.remove(&env);
                    }
                }
            }
            for id in old.target.upstreams().map(|u| &u.id) {
                let Some(used) = r.upstreams.get_mut(id) else {
                    continue;
                };
                used.routes -= 1;
                if used.routes > 0 {
                    continue;
                }
                let Some(Used { upstream, spec, .. }) = r.upstreams.remove(id) else {
                    continue;
                };
                r.restarting.remove(id);
                let (tx, rx) = watch::channel(None);
                r.drains.insert(id.clone(), rx);
                tokio::spawn(async move {
                    let outcome = upstream.drain_with(spec.drain_deadlines()).await;
                    let _ = tx.send(Some(outcome.into()));
                });
            }
        }
    }

    fn set_restarting(&self, id: String, on: bool) {
        let mut r = lock(&self.registry);
        if let Some(used) = r.upstreams.get(&id) {
            used.upstream.set_restarting(on);
        }
        if on {
            r.restarting.insert(id);
        } else {
            r.restarting.remove(&id);
        }
    }

    fn stats(&self) -> Vec<StatsRow> {
        let r = lock(&self.registry);
        let mut rows: Vec<StatsRow> = r
            .stats
            .iter()
            .flat_map(|(host, envs)| envs.iter().map(move |(env, stats)| (host, env, stats)))
            .map(|(host, (app, env), stats)| {
                let snap = stats.snapshot();
                StatsRow {
                    host: host.clone(),
                    app: app.clone(),
                    env: env.clone(),
                    by_class: snap.by_class,
                    cumulative_buckets: snap.cumulative_buckets.to_vec(),
                    latency_sum_seconds: snap.latency_sum_seconds,
                }
            })
            .collect();
        rows.sort_by(|a, b| (&a.host, &a.app, &a.env).cmp(&(&b.host, &b.app, &b.env)));
        rows
    }

    fn responses(&self) -> Vec<EnvResponses> {
        let r = lock(&self.registry);
        let mut by_env: HashMap<&EnvId, u64> = HashMap::new();
        for (env, stats) in r.stats.values().flatten() {
            *by_env.entry(env).or_default() += stats.snapshot().by_class.iter().sum::<u64>();
        }
        by_env
            .into_iter()
            .map(|((app, env), responses)| EnvResponses {
                app: app.clone(),
                env: env.clone(),
                responses,
            })
            .collect()
    }

    fn listen(&self, namespace: String) -> Result<(), String> {
        let mut r = lock(&self.registry);
        if r.listeners.contains_key(&namespace) {
            return Ok(());
        }
        network(&mut r, &namespace).map_err(|e| format!("namespace {namespace}: {e}"))?;
        r.listeners.insert(namespace.clone(), None);
        if r.serving && !r.closing {
            self.serve_inside(&mut r, &namespace);
        }
        Ok(())
    }

    fn unlisten(&self, namespace: &str) {
        let mut r = lock(&self.registry);
        if let Some(Some(stop)) = r.listeners.remove(namespace) {
            stop.cancel();
        }
        r.networks.remove(namespace);
    }

    /// Serve internal URLs inside `namespace`: 127.0.0.1 at the proxy's port there. A port that
    /// cannot be had only costs app code its internal URLs: say so.
    fn serve_inside(&self, r: &mut Registry, namespace: &str) {
        let Some(network) = r.networks.get(namespace).cloned() else {
            return;
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.http.port()));
        let listener = match network.listen(addr) {
            Ok(listener) => listener,
            Err(e) => {
                warn!(namespace, %addr, error = %e, "cannot listen for internal URLs inside the namespace");
                return;
            }
        };
        let stop = self.accepting.child_token();
        r.listeners.insert(namespace.to_owned(), Some(stop.clone()));
        let proxy = self.proxy.clone();
        let name = namespace.to_owned();
        self.serving.spawn(async move {
            let served = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => proxy.serve(listener, stop).await,
                Err(e) => Err(e),
            };
            if let Err(e) = served {
                warn!(namespace = %name, error = %e, "the proxy's listener inside the namespace failed");
            }
        });
    }

    /// Accept on the listening socket (and in the namespaces); a successor first has its
    /// predecessor stop accepting, and takes its control socket's place.
    async fn start_serving(self: Arc<Self>) -> Result<(), String> {
        if lock(&self.registry).serving {
            return Ok(());
        }
        let listener = self
            .listeners
            .http
            .try_clone()
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| format!("cannot use the listening socket: {e}"))?;
        let tls_listener = self
            .listeners
            .https
            .as_ref()
            .map(|l| l.try_clone().and_then(tokio::net::TcpListener::from_std))
            .transpose()
            .map_err(|e| format!("cannot use the HTTPS listening socket: {e}"))?;
        let proxy = self.proxy.clone();
        let stop = self.accepting.child_token();
        self.serving.spawn(async move {
            if let Err(e) = proxy.serve(listener, stop).await {
                warn!(error = %e, "the proxy's listener failed");
            }
        });
        if let Some(listener) = tls_listener {
            let proxy = self.proxy.clone();
            let stop = self.accepting.child_token();
            self.serving.spawn(async move {
                if let Err(e) = proxy.serve_tls(listener, stop).await {
                    warn!(error = %e, "the proxy's HTTPS listener failed");
                }
            });
        }
        if let Some(predecessor) = &self.succeed {
            // Both accept on the same socket for a moment: no connection waits or is refused.
            match Link::connect(predecessor).await {
                Ok(link) => {
                    if let Err(e) = link.call(Request::Retire).await {
                        warn!(error = %e, "the data plane being replaced did not retire");
                    }
                }
                Err(e) => warn!(error = %e, "the data plane being replaced is gone already"),
            }
            std::fs::rename(&self.socket, predecessor).map_err(|e| {
                format!(
                    "cannot move {} to {}: {e}",
                    self.socket.display(),
                    predecessor.display()
                )
            })?;
            info!("took over from the previous data plane");
        }
        let mut r = lock(&self.registry);
        r.serving = true;
        let namespaces: Vec<String> = r.listeners.keys().cloned().collect();
        for namespace in namespaces {
            self.serve_inside(&mut r, &namespace);
        }
        let links: Vec<LinkKey> = r.links.keys().cloned().collect();
        for key in links {
            self.serve_link(&mut r, &key);
        }
        info!(http = %self.http, routes = r.routes.len(), "data plane serving");
        Ok(())
    }

    fn stop_accepting(&self) {
        lock(&self.registry).closing = true;
        self.accepting.cancel();
        // No route change reaches this process any more: a wake it asked for goes elsewhere.
        self.proxy.stop_waiting();
    }

    /// After accepting stopped: let the connections finish (up to the grace) while every
    /// instance's share of this process's traffic drains by its own deadlines (requests finish;
    /// WebSockets get 1001 and event streams end between events, so their clients reconnect,
    /// to a successor if there is one), routes unchanged: a request still arriving on a
    /// kept-open connection is served. Then exit.
    async fn finish(self: Arc<Self>) {
        self.serving.close();
        let upstreams: Vec<_> = lock(&self.registry)
            .upstreams
            .values()
            .map(|used| (used.upstream.clone(), used.spec.drain_deadlines()))
            .collect();
        let mut drains = tokio::task::JoinSet::new();
        for (up, deadlines) in upstreams {
            drains.spawn(async move { up.drain_with(deadlines).await });
        }
        let connections =
            tokio::time::timeout(self.grace + Duration::from_secs(1), self.serving.wait());
        let drained = async { while drains.join_next().await.is_some() {} };
        let _ = tokio::join!(connections, drained);
        self.exit.cancel();
    }
}

/// Record the wakes requests ask for, for the control plane's `wakes` requests: an environment
/// whose route no longer sleeps is not asked for.
async fn note_wakes(plane: Arc<Plane>, mut rx: mpsc::UnboundedReceiver<EnvId>) {
    while let Some(env) = rx.recv().await {
        let mut r = lock(&plane.registry);
        if r.asleep.contains_key(&env) {
            info!(app = %env.0, env = %env.1, "a request wakes a sleeping environment");
            r.wanted.insert(env);
            plane.wakes.send_modify(|g| *g += 1);
        }
    }
}

/// The proxy's target for `route`, counting one more route on each instance it uses. A
/// sleeping environment's first request sends it to `wake`.
fn target(
    r: &mut Registry,
    host: &str,
    route: &RouteSpec,
    wake: &mpsc::UnboundedSender<EnvId>,
) -> Target {
    match &route.target {
        TargetSpec::Asleep { wait_ms } => Target::Asleep(asleep(r, route, *wait_ms, wake)),
        TargetSpec::Follow { host } => Target::Follow(host.as_str().into()),
        TargetSpec::Upstream(u) => match upstream(r, u) {
            Some(up) => Target::Upstream(up),
            None => unreachable_page(host),
        },
        TargetSpec::Maintenance {
            message,
            retry_after_secs,
            health,
        } => {
            let health = health
                .as_ref()
                .and_then(|(path, u)| Some((path.clone(), upstream(r, u)?)));
            Target::Maintenance(Arc::new(Maintenance {
                message: message.clone(),
                retry_after: Duration::from_secs(*retry_after_secs),
                health,
            }))
        }
    }
}

/// The sleeping entry of `spec`'s environment (the one its other hosts use, or a new one),
/// counting one more route on it.
fn asleep(
    r: &mut Registry,
    spec: &RouteSpec,
    wait_ms: u64,
    wake: &mpsc::UnboundedSender<EnvId>,
) -> Arc<Asleep> {
    let env = (spec.app.clone(), spec.env.clone());
    let wait = Duration::from_millis(wait_ms);
    let entry = || {
        let (wake, id) = (wake.clone(), env.clone());
        Arc::new(Asleep::new(
            format!("{}/{}", spec.app, spec.env),
            wait,
            move || {
                let _ = wake.send(id.clone());
            },
        ))
    };
    let sleeping = r.asleep.entry(env.clone()).or_insert_with(|| Sleeping {
        entry: entry(),
        routes: 0,
    });
    // Another wait is another entry; the routes still on the old one are being rebuilt too.
    if sleeping.entry.wait != wait {
        sleeping.entry = entry();
    }
    sleeping.routes += 1;
    sleeping.entry.clone()
}

fn login(l: &crate::spec::LoginSpec) -> Login {
    Login {
        realm: l.realm.clone(),
        credentials: l
            .credentials
            .iter()
            .map(|(hash, expiry)| {
                let at = expiry.map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
                (hash.clone(), at)
            })
            .collect(),
    }
}

/// The instance `spec` names (the one already made for its id, or a new one), counted as used
/// by one more route. `None` when its namespace cannot be opened (it is never reached through
/// another network).
fn upstream(r: &mut Registry, spec: &UpstreamSpec) -> Option<Arc<Upstream>> {
    if let Some(used) = r.upstreams.get_mut(&spec.id) {
        used.routes += 1;
        return Some(used.upstream.clone());
    }
    let network = match &spec.namespace {
        None => Network::Host,
        Some(name) => match network(r, name) {
            Ok(network) => network,
            Err(e) => {
                warn!(upstream = %spec.label, namespace = %name, error = %e, "cannot reach the instance's namespace");
                return None;
            }
        },
    };
    let up = Upstream::in_network(
        network,
        spec.addr,
        spec.label.clone(),
        Duration::from_millis(spec.response_timeout_ms),
    );
    up.set_restarting(r.restarting.contains(&spec.id));
    r.upstreams.insert(
        spec.id.clone(),
        Used {
            upstream: up.clone(),
            spec: spec.clone(),
            routes: 1,
        },
    );
    Some(up)
}

fn network(r: &mut Registry, name: &str) -> std::io::Result<Network> {
    if let Some(network) = r.networks.get(name) {
        return Ok(network.clone());
    }
    let network = Network::Namespace(Arc::new(Namespace::open(name)?));
    r.networks.insert(name.to_owned(), network.clone());
    Ok(network)
}

/// A route whose instance cannot be reached from here.
fn unreachable_page(host: &str) -> Target {
    Target::Maintenance(Arc::new(Maintenance {
        message: format!("{host} is starting or temporarily unavailable."),
        retry_after: Duration::from_secs(5),
        health: None,
    }))
}
