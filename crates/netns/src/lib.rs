//! The network each environment's processes live in, and how Turnout reaches into it.
//!
//! As root, every environment gets a network namespace of its own (`/run/netns/turnout-<uid>`):
//! its instances listen on their own loopback, which no other environment (and no build) can
//! reach. Turnout itself is the only way in:
//!
//! - The proxy and the health checks make their sockets *inside* the namespace
//!   ([`Network::socket`], [`Network::connect`]): the calling thread enters the namespace,
//!   creates the socket and comes back before anything else runs on it. The socket stays in
//!   the namespace it was made in; connecting and every byte after that cost nothing extra.
//! - A listener of the proxy inside each namespace ([`Network::listen`], on the port of the
//!   proxy's own HTTP listener) keeps internal URLs (`http://ENV.APP.localhost:PORT`) working
//!   from app code: they reach the proxy, which routes them (and asks protected hosts for a
//!   login) like any other request.
//! - Outbound connections to the rest of the world go through `pasta` (of the passt project),
//!   which gives the namespace the host's addresses and routes, and carries its connections
//!   out through ordinary sockets of the host ([`Provider::keep_outbound`]). It maps neither
//!   the host's loopback nor any of its ports into the namespace.
//! - Processes join the namespace between fork and exec ([`Network::enter`]).
//!
//! Without root, or without `ip` (iproute2) or `pasta` (passt), there are no namespaces:
//! [`Provider::detect`] says why, and every environment shares the host's network
//! ([`Network::Host`]).
#![forbid(unsafe_code)]

mod provider;

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use nix::sched::{CloneFlags, setns};
use tokio::net::{TcpSocket, TcpStream};

pub use provider::{Outbound, Provider};

/// Where `ip netns` keeps the namespaces it names (bind mounts that keep them alive).
pub const NETNS_DIR: &str = "/run/netns";

/// A named network namespace, held open.
#[derive(Debug)]
pub struct Namespace {
    name: String,
    file: File,
}

impl Namespace {
    /// Open `/run/netns/NAME`, made by [`Provider::create`] (or `ip netns add`).
    pub fn open(name: &str) -> io::Result<Namespace> {
        let path = Namespace::path_of(name);
        let file = File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Namespace {
            name: name.to_owned(),
            file,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        Namespace::path_of(&self.name)
    }

    fn path_of(name: &str) -> PathBuf {
        Path::new(NETNS_DIR).join(name)
    }

    /// Run `f` with the calling thread inside this namespace, and bring the thread back to the
    /// daemon's own namespace before returning. `f` must not yield to anything else that could
    /// run on this thread: it makes a socket and returns.
    fn within<T>(&self, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let home = daemon_namespace()?;
        setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let made = f();
        if let Err(e) = setns(home, CloneFlags::CLONE_NEWNET) {
            // A thread left in an environment's namespace would make every later socket of
            // its tasks there: the proxy would route into the wrong environment. Nothing can
            // repair that from here.
            eprintln!(
                "turnout: cannot return a thread from network namespace {} to the daemon's: {e}; aborting",
                self.name
            );
            std::process::abort();
        }
        made
    }
}

/// The daemon's own network namespace, to come back to. `/proc/self` is the main thread's view,
/// which never enters another namespace.
fn daemon_namespace() -> io::Result<&'static File> {
    static HOME: OnceLock<File> = OnceLock::new();
    if let Some(file) = HOME.get() {
        return Ok(file);
    }
    let file = File::open("/proc/self/ns/net")?;
    Ok(HOME.get_or_init(|| file))
}

/// Where an environment's processes live on the network.
#[derive(Clone, Debug, Default)]
pub enum Network {
    /// The host's own network, shared with the daemon and every other environment.
    #[default]
    Host,
    /// The environment's own namespace.
    Namespace(Arc<Namespace>),
}

impl Network {
    /// The namespace's name, or `None` for the host's network.
    pub fn name(&self) -> Option<&str> {
        match self {
            Network::Host => None,
            Network::Namespace(ns) => Some(ns.name()),
        }
    }

    /// A TCP socket of this network, for `addr`'s address family, not yet connected.
    pub fn socket(&self, addr: &SocketAddr) -> io::Result<TcpSocket> {
        let make = || {
            if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
        };
        match self {
            Network::Host => make(),
            Network::Namespace(ns) => ns.within(make),
        }
    }

    /// Connect to `addr` as seen from inside this network.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        match self {
            Network::Host => TcpStream::connect(addr).await,
            Network::Namespace(_) => self.socket(&addr)?.connect(addr).await,
        }
    }

    /// A listening socket bound to `addr` inside this network (non-blocking, for a runtime to
    /// adopt with `tokio::net::TcpListener::from_std`).
    pub fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let bind = || {
            let listener = TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        };
        match self {
            Network::Host => bind(),
            Network::Namespace(ns) => ns.within(bind),
        }
    }

    /// A port that is free on this network's 127.0.0.1 right now. Another process may take
    /// it before the caller's process binds it.
    pub fn free_port(&self) -> io::Result<u16> {
        let listener = self.listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        Ok(listener.local_addr()?.port())
    }

    /// What a child process does between fork and exec to join this network: a single system
    /// call on a descriptor opened before the fork (async-signal-safe, allocates nothing).
    /// Needs the privilege to enter the namespace, so it comes before any change of user.
    pub fn enter(&self) -> nix::Result<()> {
        match self {
            Network::Host => Ok(()),
            Network::Namespace(ns) => setns(&ns.file, CloneFlags::CLONE_NEWNET),
        }
    }
}
