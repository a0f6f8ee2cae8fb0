//! The proxy's listening sockets, and how they reach a data plane process: its standard input
//! is one end of a Unix socket pair, over which the control plane that starts it sends them
//! (SCM_RIGHTS) before anything else. Nothing is chosen by descriptor number and nothing else
//! inherits them.
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::wire::{LISTENERS, LISTENERS_TLS, recv_fds_any, send_fds};

/// The proxy's listening sockets: plain HTTP, and HTTPS when the daemon serves it.
#[derive(Debug)]
pub struct Listeners {
    pub http: TcpListener,
    pub https: Option<TcpListener>,
}

impl Listeners {
    /// Duplicates of the same sockets.
    pub fn try_clone(&self) -> std::io::Result<Listeners> {
        Ok(Listeners {
            http: self.http.try_clone()?,
            https: self
                .https
                .as_ref()
                .map(TcpListener::try_clone)
                .transpose()?,
        })
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.http.local_addr()
    }

    pub fn https_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.https.as_ref().map(TcpListener::local_addr).transpose()
    }

    /// Send them over `conn` (blocking), with the header that says which they are: how a data
    /// plane's standard input gets them.
    pub fn send(&self, conn: &impl AsFd) -> std::io::Result<()> {
        match &self.https {
            None => send_fds(conn, LISTENERS, &[self.http.as_fd()]),
            Some(https) => send_fds(conn, LISTENERS_TLS, &[self.http.as_fd(), https.as_fd()]),
        }
    }

    /// Receive what [`send`](Self::send) sent (blocking); `what` names the sender in errors.
    pub(crate) fn receive(conn: &impl AsFd, what: &str) -> std::io::Result<Listeners> {
        let (header, fds) = recv_fds_any(conn, LISTENERS_TLS.len(), 2, what)?;
        let mut fds = fds.into_iter().map(TcpListener::from);
        match (header.as_slice(), fds.next(), fds.next()) {
            (LISTENERS, Some(http), None) => Ok(Listeners { http, https: None }),
            (LISTENERS_TLS, Some(http), Some(https)) => Ok(Listeners {
                http,
                https: Some(https),
            }),
            _ => Err(std::io::Error::other(format!(
                "{what} answered something else than its listening sockets"
            ))),
        }
    }

    /// A data plane process's own: sent on its standard input by whoever started it.
    pub fn from_stdin() -> std::io::Result<Listeners> {
        let receive = || {
            let stdin: OwnedFd = std::io::stdin().as_fd().try_clone_to_owned()?;
            let conn = UnixStream::from(stdin);
            conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
            Listeners::receive(&conn, "standard input")
        };
        receive().map_err(|e: std::io::Error| {
            std::io::Error::new(
                e.kind(),
                format!("the listening sockets did not come on standard input ({e}): `turnout __dataplane` is started by `turnout serve`"),
            )
        })
    }
}
