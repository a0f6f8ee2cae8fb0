//! An upgrade that drops no request: `turnout serve --upgrade` (typically the new binary) asks
//! the running daemon of the same home for its listening sockets over `<home>/upgrade.sock`
//! (the daemon's user alone: 0600 in its home). The running daemon passes them (SCM_RIGHTS),
//! stops accepting, lets its requests in flight finish, cancels its jobs and exits, leaving its
//! instances running. The successor waits for the home's lock, adopts the instances, and
//! accepts on the same sockets: a connection that arrives in between waits in the sockets'
//! backlog, it is not refused.
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};

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
            let fds = [self.api.as_fd(), self.http.as_fd()];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&fds));
            sendmsg(
                &conn,
                &[IoSlice::new(GRANT)],
                &mut control,
                SendFlags::empty(),
            )?;
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
    let mut grant = [0u8; GRANT.len()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = recvmsg(
        &conn,
        &mut [IoSliceMut::new(&mut grant)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let fds: Vec<OwnedFd> = control
        .drain()
        .filter_map(|message| match message {
            RecvAncillaryMessage::ScmRights(fds) => Some(fds),
            _ => None,
        })
        .flatten()
        .collect();
    let [api, http]: [OwnedFd; 2] = fds.try_into().map_err(|fds: Vec<OwnedFd>| {
        std::io::Error::other(format!(
            "the running daemon sent {} sockets instead of its 2 listeners",
            fds.len()
        ))
    })?;
    if grant[..received.bytes] != *GRANT {
        return Err(std::io::Error::other(
            "the running daemon answered something else than its listeners",
        ));
    }
    Ok((TcpListener::from(api), TcpListener::from(http)))
}
