//! The control plane's side: a [`Link`] is one connection to one data plane process; a
//! [`DataPlane`] is the control plane's handle on whichever data plane serves its home (it
//! attaches to the running one or starts one, restarts it if it dies, and replaces it with one
//! of its own binary when asked).
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::listeners::Listeners;
use crate::spec::{
    ChallengeSpec, DataPlaneConfig, DrainReport, EnvResponses, LinkKey, LinkSpec, RouteSpec,
    StatsRow, TlsSpec,
};
use crate::wire::{Answer, Call, Hello, LISTENERS, Reply, Request, line};

/// How long a new data plane may take to answer on its socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// What a stopping data plane gets beyond its shutdown grace: the streams' drains and its exit.
const STOP_MARGIN: Duration = Duration::from_secs(30);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Answer, String>>>>>;

/// One connection to one data plane. Requests are sent in order; answers come when ready.
pub struct Link {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    next: AtomicU64,
    pending: Pending,
    /// Cancelled when the connection ends (the data plane exited or died).
    closed: CancellationToken,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Link {
    pub async fn connect(socket: &Path) -> std::io::Result<Link> {
        let stream = UnixStream::connect(socket).await?;
        let (read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let closed = CancellationToken::new();
        let pending: Pending = Arc::default();
        let writer_closed = closed.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = writer_closed.cancelled() => return,
                    out = rx.recv() => match out {
                        Some(out) if write.write_all(&out).await.is_ok() => {}
                        _ => return,
                    },
                }
            }
        });
        let (reader_pending, reader_closed) = (pending.clone(), closed.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(read);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match lines.read_until(b'\n', &mut raw).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let Ok(reply) = serde_json::from_slice::<Reply>(&raw) else {
                    warn!("unreadable answer from the data plane; closing the connection");
                    break;
                };
                if let Some(waiting) = locked(&reader_pending).remove(&reply.id) {
                    let _ = waiting.send(reply.answer);
                }
            }
            reader_closed.cancel();
            // Whoever still waits learns the connection is gone.
            locked(&reader_pending).clear();
        });
        Ok(Link {
            tx,
            next: AtomicU64::new(1),
            pending,
            closed,
        })
    }

    /// Send `request` now, in order after everything sent before; the answer comes later.
    fn send(&self, request: Request) -> oneshot::Receiver<Result<Answer, String>> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        locked(&self.pending).insert(id, tx);
        let _ = self.tx.send(line(&Call { id, request }));
        if self.closed.is_cancelled() {
            locked(&self.pending).clear();
        }
        rx
    }

    /// Send `request` now, in order, not waiting for its answer.
    fn post(&self, request: Request) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(line(&Call { id, request }));
    }

    pub(crate) async fn call(&self, request: Request) -> Result<Answer, String> {
        match self.send(request).await {
            Ok(answer) => answer,
            Err(_) => Err("the data plane went away".to_owned()),
        }
    }

    async fn hello(&self) -> Result<Hello, String> {
        match self.call(Request::Hello).await? {
            Answer::Hello(hello) => Ok(hello),
            other => Err(format!("the data plane answered {other:?} to hello")),
        }
    }
}

/// Where [`DataPlane::wakes`] left off: which data plane it asked, and the generation of wakes
/// it has seen there.
#[derive(Default)]
pub struct WakeCursor {
    link: std::sync::Weak<Link>,
    seen: u64,
}

/// A route change handed to the data plane; `wait` returns once it is in force there (or the
/// data plane is gone, and the one that replaces it gets every route before it serves).
#[must_use = "a change is in force only once applied"]
pub struct Applied(Option<oneshot::Receiver<Result<Answer, String>>>);

impl Applied {
    pub async fn wait(self) {
        if let Some(rx) = self.0 {
            let _ = rx.await;
        }
    }
}

/// How to start a data plane process.
struct Launcher {
    exe: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    config: DataPlaneConfig,
    /// Duplicates of the listening sockets, for every data plane this control plane starts.
    listeners: Listeners,
}

/// What routing wants the data plane to have: what it has once it has read what was sent.
struct Sync {
    link: Arc<Link>,
    routes: BTreeMap<String, RouteSpec>,
    /// While start-up brings environments back, what the data plane has: changes are kept until
    /// `release`, so a data plane that serves already keeps its table meanwhile.
    held: Option<BTreeMap<String, RouteSpec>>,
    restarting: BTreeSet<String>,
    namespaces: BTreeSet<String>,
    /// The links' listeners, by where they are: the host each one's requests are routed as.
    links: BTreeMap<LinkKey, String>,
    /// Each host's HTTPS as last sent, and the hosts an attached data plane had before this
    /// control plane sent any (removed by the first `update_tls` unless wanted).
    tls: BTreeMap<String, TlsSpec>,
    tls_found: BTreeSet<String>,
    /// The ACME challenges in force, by [`ChallengeSpec::key`].
    challenges: BTreeMap<String, ChallengeSpec>,
}

/// The control plane's handle on its data plane.
pub struct DataPlane {
    launcher: Launcher,
    sync: Mutex<Sync>,
    /// The attached data plane serves already (it was running when this control plane started):
    /// its pid and binary's identity.
    found: Option<(u32, String)>,
    /// Set once this control plane stops it on purpose: no restart after that.
    stopping: AtomicBool,
}

/// How `DataPlane::attach` found things.
pub enum Attached {
    /// A data plane was running; it serves on its listening sockets (bound to these addresses).
    Running {
        http: std::net::SocketAddr,
        https: Option<std::net::SocketAddr>,
    },
    /// None was running; one was started on the socket given.
    Started,
}

impl DataPlane {
    /// Attach to the data plane serving `socket`'s home, or start one (not yet accepting) on
    /// `bind()`'s listening sockets. Route changes are held until [`release`](Self::release).
    pub async fn attach(
        exe: PathBuf,
        socket: PathBuf,
        log: PathBuf,
        config: DataPlaneConfig,
        bind: impl AsyncFnOnce() -> std::io::Result<Listeners>,
    ) -> std::io::Result<(Arc<DataPlane>, Attached)> {
        // A successor left by a replacement cut short (its control plane died before telling it
        // to take over) never serves: stop it.
        if let Ok(orphan) = Link::connect(&successor_socket(&socket)).await {
            warn!("stopping a data plane left half-started by an interrupted replacement");
            let _ = tokio::time::timeout(START_TIMEOUT, orphan.call(Request::Stop)).await;
        }
        if let Ok(link) = Link::connect(&socket).await {
            let hello = tokio::time::timeout(START_TIMEOUT, link.hello())
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "the data plane on {} does not answer; stop it (`turnout __dataplane` of this home) and start again",
                        socket.display()
                    ))
                })
                .map_err(std::io::Error::other)?;
            let listeners = fetch_listeners(&socket).await?;
            let launcher = Launcher {
                exe,
                socket,
                log,
                config,
                listeners,
            };
            info!(pid = hello.pid, http = %hello.http, routes = hello.routes.len(), "attached to the running data plane");
            let attached = Attached::Running {
                http: hello.http,
                https: hello.https,
            };
            let plane = DataPlane {
                launcher,
                sync: Mutex::new(Sync {
                    link: Arc::new(link),
                    routes: hello.routes.clone(),
                    held: Some(hello.routes),
                    restarting: hello.restarting.into_iter().collect(),
                    namespaces: hello.namespaces.into_iter().collect(),
                    links: hello.links.into_iter().map(|l| (l.key, l.host)).collect(),
                    tls: BTreeMap::new(),
                    tls_found: hello.tls.into_iter().collect(),
                    challenges: BTreeMap::new(),
                }),
                found: hello.serving.then_some((hello.pid, hello.identity)),
                stopping: AtomicBool::new(false),
            };
            return Ok((Arc::new(plane), attached));
        }
        let launcher = Launcher {
            exe,
            socket,
            log,
            config,
            listeners: bind().await?,
        };
        let link = launcher.start(None).await?;
        let plane = DataPlane {
            launcher,
            sync: Mutex::new(Sync {
                link: Arc::new(link),
                routes: BTreeMap::new(),
                held: Some(BTreeMap::new()),
                restarting: BTreeSet::new(),
                namespaces: BTreeSet::new(),
                links: BTreeMap::new(),
                tls: BTreeMap::new(),
                tls_found: BTreeSet::new(),
                challenges: BTreeMap::new(),
            }),
            found: None,
            stopping: AtomicBool::new(false),
        };
        Ok((Arc::new(plane), Attached::Started))
    }

    /// The listening sockets (duplicates), for an upgrade's successor.
    pub fn listeners(&self) -> std::io::Result<Listeners> {
        self.launcher.listeners.try_clone()
    }

    /// Every host's HTTPS: the hosts whose certificate or settings differ from what was sent
    /// before go to the data plane, and the hosts no longer wanted lose theirs. Not held at
    /// start-up: a certificate is the same whichever release serves its host.
    pub fn update_tls(&self, wanted: BTreeMap<String, TlsSpec>) -> Applied {
        let mut s = locked(&self.sync);
        let (set, mut remove) = diff(&s.tls, &wanted);
        let found = std::mem::take(&mut s.tls_found);
        remove.extend(
            found
                .into_iter()
                .filter(|host| !wanted.contains_key(host) && !s.tls.contains_key(host)),
        );
        s.tls = wanted;
        if set.is_empty() && remove.is_empty() {
            return Applied(None);
        }
        Applied(Some(s.link.send(Request::Tls { set, remove })))
    }

    /// Answer an ACME challenge (`on`), or stop answering it.
    pub fn challenge(&self, spec: ChallengeSpec, on: bool) -> Applied {
        let mut s = locked(&self.sync);
        if on {
            s.challenges.insert(spec.key(), spec.clone());
        } else {
            s.challenges.remove(&spec.key());
        }
        Applied(Some(s.link.send(Request::Challenge { spec, on })))
    }

    /// Every route routing wants: the hosts that differ from what it wanted before go to the
    /// data plane, and the hosts it no longer wants are removed.
    pub fn update(&self, wanted: BTreeMap<String, RouteSpec>) -> Applied {
        let mut s = locked(&self.sync);
        let (set, remove) = diff(&s.routes, &wanted);
        s.routes = wanted;
        send(&s, set, remove)
    }

    /// These hosts' routes (`set`) and no route for those (`remove`); what is as it was is
    /// left out.
    pub fn change(&self, set: Vec<(String, RouteSpec)>, remove: Vec<String>) -> Applied {
        let mut s = locked(&self.sync);
        let set: Vec<_> = set
            .into_iter()
            .filter(|(host, spec)| s.routes.get(host) != Some(spec))
            .collect();
        let remove: Vec<_> = remove
            .into_iter()
            .filter(|host| s.routes.contains_key(host))
            .collect();
        for (host, spec) in &set {
            s.routes.insert(host.clone(), spec.clone());
        }
        for host in &remove {
            s.routes.remove(host);
        }
        send(&s, set, remove)
    }

    /// Start-up has brought back what it could: send what changed while held, and make sure
    /// the data plane serves: start the one this control plane started, or replace a running
    /// one that runs another binary (or any running one, when `replace`).
    pub async fn release(self: &Arc<Self>, replace: bool) -> std::io::Result<()> {
        let replacing = self
            .found
            .as_ref()
            .is_some_and(|(_, identity)| replace || *identity != crate::identity());
        let (link, applied) = {
            let mut s = locked(&self.sync);
            let had = s.held.take().unwrap_or_default();
            // A data plane of another binary may not read this one's routes (a target it does
            // not know): the one replacing it is given all of them instead.
            let applied = if replacing {
                Applied(None)
            } else {
                let (set, remove) = diff(&had, &s.routes);
                send(&s, set, remove)
            };
            (s.link.clone(), applied)
        };
        applied.wait().await;
        match &self.found {
            None => {
                link.call(Request::Serve)
                    .await
                    .map_err(std::io::Error::other)?;
            }
            Some((pid, _)) if replacing => {
                info!(pid, "replacing the running data plane with this binary's");
                self.replace().await?;
            }
            Some(_) => {}
        }
        tokio::spawn(self.clone().supervise());
        Ok(())
    }

    /// Start a data plane of this binary beside the running one, give it everything, and let
    /// it take over (it starts accepting, then the old one retires).
    /// A successor that does not take over is stopped, and the running one keeps serving (and
    /// gets every change made meanwhile).
    async fn replace(&self) -> std::io::Result<()> {
        let next = successor_socket(&self.launcher.socket);
        let link = Arc::new(
            self.launcher
                .start_at(&next, Some(&self.launcher.socket))
                .await?,
        );
        let old = {
            let mut s = locked(&self.sync);
            resync(&mut s, &link);
            std::mem::replace(&mut s.link, link.clone())
        };
        if let Err(e) = link.call(Request::Serve).await {
            {
                let mut s = locked(&self.sync);
                resync(&mut s, &old);
                s.link = old;
            }
            let _ = link.call(Request::Stop).await;
            return Err(std::io::Error::other(format!(
                "the new data plane did not take over ({e}); the running one goes on"
            )));
        }
        Ok(())
    }

    /// Restart the data plane if it dies while this control plane runs.
    async fn supervise(self: Arc<Self>) {
        loop {
            let link = locked(&self.sync).link.clone();
            link.closed.cancelled().await;
            if self.stopping.load(Ordering::Relaxed) {
                return;
            }
            if !Arc::ptr_eq(&link, &locked(&self.sync).link) {
                continue; // replaced on purpose
            }
            warn!("the data plane exited; starting it again");
            loop {
                match self.launcher.start(None).await {
                    Ok(fresh) => {
                        let fresh = Arc::new(fresh);
                        {
                            let mut s = locked(&self.sync);
                            resync(&mut s, &fresh);
                            s.link = fresh.clone();
                        }
                        if let Err(e) = fresh.call(Request::Serve).await {
                            warn!(error = %e, "the restarted data plane does not serve");
                        }
                        break;
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot start the data plane; trying again in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    fn link(&self) -> Arc<Link> {
        locked(&self.sync).link.clone()
    }

    /// Wait until `upstream`'s drain in the data plane has ended (it has left the table).
    pub async fn drained(&self, upstream: &str) -> DrainReport {
        let request = Request::Drained {
            upstream: upstream.to_owned(),
        };
        match self.link().call(request).await {
            Ok(Answer::Drained(report)) => report,
            _ => DrainReport::default(),
        }
    }

    pub fn set_restarting(&self, upstream: &str, on: bool) {
        let mut s = locked(&self.sync);
        if on {
            s.restarting.insert(upstream.to_owned());
        } else {
            s.restarting.remove(upstream);
        }
        s.link.post(Request::Restarting {
            upstream: upstream.to_owned(),
            on,
        });
    }

    /// Sleeping environments requests asked to wake, as `(app, env)`: returns when some were
    /// asked for since the last call with this `cursor` (every one still wanted, so nothing is
    /// missed when a wake failed or the data plane was replaced), or empty after a couple of
    /// seconds without any. The caller wakes each and calls again.
    pub async fn wakes(&self, cursor: &mut WakeCursor) -> Vec<(String, String)> {
        let link = self.link();
        if !std::ptr::eq(cursor.link.as_ptr(), Arc::as_ptr(&link)) {
            // Another data plane counts from zero.
            *cursor = WakeCursor {
                link: Arc::downgrade(&link),
                seen: 0,
            };
        }
        let request = Request::Wakes { seen: cursor.seen };
        match link.call(request).await {
            Ok(Answer::Wakes { generation, envs }) if generation > cursor.seen => {
                cursor.seen = generation;
                envs
            }
            Ok(_) => Vec::new(),
            Err(_) => {
                // Gone: its successor is asked next, once there is one.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Vec::new()
            }
        }
    }

    pub async fn stats(&self) -> Vec<StatsRow> {
        match self.link().call(Request::Stats).await {
            Ok(Answer::Stats(rows)) => rows,
            _ => Vec::new(),
        }
    }

    /// Each environment's responses so far, all its hosts together.
    pub async fn responses(&self) -> Vec<EnvResponses> {
        match self.link().call(Request::Responses).await {
            Ok(Answer::Responses(rows)) => rows,
            _ => Vec::new(),
        }
    }

    /// Serve internal URLs inside `namespace`.
    pub async fn listen(&self, namespace: &str) -> Result<(), String> {
        let link = {
            let mut s = locked(&self.sync);
            s.namespaces.insert(namespace.to_owned());
            s.link.clone()
        };
        let request = Request::Listen {
            namespace: namespace.to_owned(),
        };
        link.call(request).await.map(|_| ())
    }

    pub async fn unlisten(&self, namespace: &str) {
        let link = {
            let mut s = locked(&self.sync);
            s.namespaces.remove(namespace);
            s.link.clone()
        };
        let request = Request::Unlisten {
            namespace: namespace.to_owned(),
        };
        let _ = link.call(request).await;
    }

    /// Every link's listener wanted: those that differ from what was sent before go to the
    /// data plane, and those no longer wanted stop. Not held at start-up: a link names an
    /// environment, whichever release serves it.
    pub fn update_links(&self, wanted: BTreeMap<LinkKey, String>) -> Applied {
        let mut s = locked(&self.sync);
        let set: Vec<LinkSpec> = wanted
            .iter()
            .filter(|(key, host)| s.links.get(*key) != Some(*host))
            .map(|(key, host)| LinkSpec {
                key: key.clone(),
                host: host.clone(),
            })
            .collect();
        let remove: Vec<LinkKey> = s
            .links
            .keys()
            .filter(|key| !wanted.contains_key(*key))
            .cloned()
            .collect();
        s.links = wanted;
        if set.is_empty() && remove.is_empty() {
            return Applied(None);
        }
        Applied(Some(s.link.send(Request::Links { set, remove })))
    }

    /// A full stop: the data plane stops accepting, lets its requests finish and exits. One
    /// that does not within its grace (and the streams' drains) is left, and said so.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let link = self.link();
        let grace = Duration::from_millis(self.launcher.config.shutdown_grace_ms)
            .saturating_add(STOP_MARGIN);
        let stopped = async {
            let _ = link.call(Request::Stop).await;
            link.closed.cancelled().await;
        };
        if tokio::time::timeout(grace, stopped).await.is_err() {
            warn!(
                socket = %self.launcher.socket.display(),
                "the data plane did not stop in time; it is left running"
            );
        }
    }
}

/// The changes that take `had` to `wanted`.
fn diff<T: Clone + PartialEq>(
    had: &BTreeMap<String, T>,
    wanted: &BTreeMap<String, T>,
) -> (Vec<(String, T)>, Vec<String>) {
    let set = wanted
        .iter()
        .filter(|(host, spec)| had.get(*host) != Some(*spec))
        .map(|(host, spec)| (host.clone(), spec.clone()))
        .collect();
    let remove = had
        .keys()
        .filter(|host| !wanted.contains_key(*host))
        .cloned()
        .collect();
    (set, remove)
}

/// Send a change, unless held or empty.
fn send(s: &Sync, set: Vec<(String, RouteSpec)>, remove: Vec<String>) -> Applied {
    if s.held.is_some() || (set.is_empty() && remove.is_empty()) {
        return Applied(None);
    }
    Applied(Some(s.link.send(Request::Routes { set, remove })))
}

/// Give a data plane that has nothing everything this control plane has sent.
fn resync(s: &mut Sync, link: &Link) {
    link.post(Request::Routes {
        set: s.routes.clone().into_iter().collect(),
        remove: Vec::new(),
    });
    for upstream in &s.restarting {
        link.post(Request::Restarting {
            upstream: upstream.clone(),
            on: true,
        });
    }
    for namespace in &s.namespaces {
        link.post(Request::Listen {
            namespace: namespace.clone(),
        });
    }
    link.post(Request::Links {
        set: s
            .links
            .iter()
            .map(|(key, host)| LinkSpec {
                key: key.clone(),
                host: host.clone(),
            })
            .collect(),
        remove: Vec::new(),
    });
    link.post(Request::Tls {
        set: s.tls.clone().into_iter().collect(),
        remove: Vec::new(),
    });
    for spec in s.challenges.values() {
        link.post(Request::Challenge {
            spec: spec.clone(),
            on: true,
        });
    }
}

impl Launcher {
    async fn start(&self, succeed: Option<&Path>) -> std::io::Result<Link> {
        self.start_at(&self.socket, succeed).await
    }

    /// Start `turnout __dataplane` on `socket`, in a process group of its own (a Ctrl-C or a
    /// signal to this daemon's group does not reach it), with the listening socket as its
    /// standard input; connect once it answers.
    /// Its standard input is a Unix socket the listening sockets are sent over (`Listeners`).
    async fn start_at(&self, socket: &Path, succeed: Option<&Path>) -> std::io::Result<Link> {
        let config = serde_json::to_string(&self.config).map_err(std::io::Error::other)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.log.display())))?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let mut command = tokio::process::Command::new(&self.exe);
        command
            .arg("__dataplane")
            .arg("--socket")
            .arg(socket)
            .arg("--config")
            .arg(config);
        if let Some(predecessor) = succeed {
            command.arg("--succeed").arg(predecessor);
        }
        // A data plane that was killed may still be closing its descriptors and accept on the
        // old socket for a moment: unlinked first, the path can only lead to the new one.
        let _ = std::fs::remove_file(socket);
        let mut child = command
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot start {} __dataplane: {e}", self.exe.display()),
                )
            })?;
        // A few bytes and descriptors into an empty socket buffer: never blocks.
        self.listeners.send(&ours)?;
        drop(ours);
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let link = loop {
            if let Some(status) = child.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "the data plane exited at start ({status}); see {}",
                    self.log.display()
                )));
            }
            if let Ok(link) = Link::connect(socket).await {
                // The one just started, not another that took the path meanwhile.
                let hello = tokio::time::timeout(Duration::from_secs(2), link.hello()).await;
                if let Ok(Ok(hello)) = hello
                    && Some(hello.pid) == child.id()
                {
                    break link;
                }
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.start_kill();
                return Err(std::io::Error::other(format!(
                    "the data plane did not answer on {} within {}s",
                    socket.display(),
                    START_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // Reaped whenever it exits, so it never lingers as a zombie of this daemon.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(link)
    }
}

/// Where a successor listens until it takes over.
fn successor_socket(socket: &Path) -> PathBuf {
    socket.with_extension("next")
}

/// Duplicates of the running data plane's listening sockets.
async fn fetch_listeners(socket: &Path) -> std::io::Result<Listeners> {
    let socket = socket.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut conn = std::os::unix::net::UnixStream::connect(&socket)?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.write_all(LISTENERS)?;
        Listeners::receive(&conn, "the data plane")
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TargetSpec;

    fn page(message: &str) -> RouteSpec {
        RouteSpec {
            target: TargetSpec::Maintenance {
                message: message.to_owned(),
                retry_after_secs: 5,
                health: None,
            },
            app: "shop".to_owned(),
            env: "prod".to_owned(),
            login: None,
        }
    }

    #[test]
    fn a_diff_sends_what_changed_and_removes_what_is_gone() {
        let had = BTreeMap::from([
            ("same.test".to_owned(), page("a")),
            ("changed.test".to_owned(), page("old")),
            ("gone.test".to_owned(), page("a")),
        ]);
        let wanted = BTreeMap::from([
            ("same.test".to_owned(), page("a")),
            ("changed.test".to_owned(), page("new")),
            ("new.test".to_owned(), page("a")),
        ]);
        let (set, remove) = diff(&had, &wanted);
        let set: Vec<&str> = set.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(set, ["changed.test", "new.test"]);
        assert_eq!(remove, ["gone.test"]);
        assert_eq!(diff(&wanted, &wanted), (vec![], vec![]));
    }
}
