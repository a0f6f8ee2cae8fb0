//! An upgrade that drops no request: `turnout serve --upgrade` (typically the new binary) asks
//! the running daemon of the same home for its listening sockets over `<home>/upgrade.sock`
//! (the daemon's user alone: 0600 in its home). The running daemon passes them (SCM_RIGHTS),
//! stops serving the API, cancels its jobs and exits, leaving the data plane and the
//! instances running. The successor waits for the home's lock, accepts API requests on the
//! same socket (a connection that arrives in between waits in its backlog, it is not refused),
//! adopts the instances, and replaces the data plane with one of its own binary (see
//! `turnout-dataplane`). From a daemon whose proxy ran in its own process, the proxy's socket
//! taken here starts the new data plane.
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use turnout_dataplane::{recv_fds, send_fds};

/// What the successor asks for; anything else on the socket is ignored.
const REQUEST: &[u8] = b"upgrade\n";
/// What comes with the sockets: their order.
const GRANT: &[u8] = b"api,http\n";

/// The running daemon's listening sockets, ready to be handed over.
pub struct Offer {
    socket: PathBuf,
    listener: tokio::net::UnixListener,
    api: TcpListener,
    http: TcpListener,
}

impl Offer {
    /// Listen on `socket` for a successor; `api` and `http` are duplicates of the daemon's
    /// listeners (the same sockets).
    pub fn new(socket: PathBuf, api: TcpListener, http: TcpListener) -> std::io::Result<Offer> {
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket)?;
        Ok(Offer {
            socket,
            listener,
            api,
            http,
        })
    }

    /// Wait until a successor asks, and hand it the sockets. Returns once they are sent: the
    /// caller then stops accepting and exits, leaving its instances running.
    pub async fn wait_for_successor(&self) -> std::io::Result<()> {
        loop {
            let (conn, _) = self.listener.accept().await?;
            // A few bytes each way on a local socket: done in blocking mode, bounded by a timeout.
            let mut conn = conn.into_std()?;
            conn.set_nonblocking(false)?;
            conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
            let mut request = [0u8; REQUEST.len()];
            if conn.read_exact(&mut request).is_err() || request != REQUEST {
                continue;
            }
            send_fds(&conn, GRANT, &[self.api.as_fd(), self.http.as_fd()])?;
            conn.flush()?;
            return Ok(());
        }
    }
}

impl Drop for Offer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Ask the daemon listening on `socket` for its listening sockets (API, proxy). Blocking.
pub fn take(socket: &Path) -> std::io::Result<(TcpListener, TcpListener)> {
    let mut conn = UnixStream::connect(socket).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "no running daemon answers on {} ({e}); start it without --upgrade",
                socket.display()
            ),
        )
    })?;
    conn.write_all(REQUEST)?;
    let [api, http] = recv_fds::<2>(&conn, GRANT, "the running daemon")?;
    Ok((TcpListener::from(api), TcpListener::from(http)))
}
