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

use turnout_dataplane::{recv_fds_any, send_fds};

/// What the successor asks for; anything else on the socket is ignored.
const REQUEST: &[u8] = b"upgrade\n";
/// What comes with the sockets: their order.
const GRANT: &[u8] = b"api,http,smtp,egress\n";
/// The same, with the proxy's HTTPS socket last.
const GRANT_HTTPS: &[u8] = b"api,http,smtp,egress,https\n";
/// What a daemon from before the mail catcher and the egress proxy sends.
const GRANT_API_HTTP: &[u8] = b"api,http\n";

/// The running daemon's listening sockets, ready to be handed over.
pub struct Offer {
    socket: PathBuf,
    listener: tokio::net::UnixListener,
    sockets: Sockets,
}

/// The daemon's listening sockets: the API, the proxy, the mail catcher, the egress proxy
/// (those two absent when taken from a daemon that had none) and the proxy's HTTPS socket
/// (when it serves HTTPS).
pub struct Sockets {
    pub api: TcpListener,
    pub http: TcpListener,
    pub smtp: Option<TcpListener>,
    pub egress: Option<TcpListener>,
    pub https: Option<TcpListener>,
}

impl Offer {
    /// Listen on `socket` for a successor; `sockets` are duplicates of the daemon's listeners
    /// (the same sockets), the mail catcher's and the egress proxy's present.
    pub fn new(socket: PathBuf, sockets: Sockets) -> std::io::Result<Offer> {
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket)?;
        Ok(Offer {
            socket,
            listener,
            sockets,
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
            let s = &self.sockets;
            let mut fds = vec![s.api.as_fd(), s.http.as_fd()];
            fds.extend(
                s.smtp
                    .iter()
                    .chain(&s.egress)
                    .chain(&s.https)
                    .map(AsFd::as_fd),
            );
            let header = if s.https.is_some() {
                GRANT_HTTPS
            } else {
                GRANT
            };
            send_fds(&conn, header, &fds)?;
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

/// Ask the daemon listening on `socket` for its listening sockets. Blocking.
pub fn take(socket: &Path) -> std::io::Result<Sockets> {
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
    let what = "the running daemon";
    let (header, fds) = recv_fds_any(&conn, GRANT_HTTPS.len(), 5, what)?;
    let mut fds = fds.into_iter().map(TcpListener::from);
    let mut next = || fds.next();
    let taken = match (header.as_slice(), next(), next(), next(), next(), next()) {
        (GRANT_HTTPS, Some(api), Some(http), Some(smtp), Some(egress), Some(https)) => Sockets {
            api,
            http,
            smtp: Some(smtp),
            egress: Some(egress),
            https: Some(https),
        },
        (GRANT, Some(api), Some(http), Some(smtp), Some(egress), None) => Sockets {
            api,
            http,
            smtp: Some(smtp),
            egress: Some(egress),
            https: None,
        },
        (GRANT_API_HTTP, Some(api), Some(http), None, None, None) => Sockets {
            api,
            http,
            smtp: None,
            egress: None,
            https: None,
        },
        _ => {
            return Err(std::io::Error::other(format!(
                "{what} answered something else than its listening sockets"
            )));
        }
    };
    Ok(taken)
}
