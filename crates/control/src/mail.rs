//! The mail catcher: a real SMTP listener on 127.0.0.1 (one per daemon, and one inside each
//! environment's network namespace) that keeps every message environments below production
//! send, and never passes one on unless the tier opted in to a relay for the recipient's
//! domain. Whose message it is: the namespace it came in through, else the credentials in the
//! environment's `SMTP_URL` (`crate::vault::Credentials`).
//!
//! - `session`: one SMTP conversation (mailin's state machine driven over tokio), with the
//!   bounds: message size, recipients, line length, idle time.
//! - `relay`: the minimal SMTP client that passes an allowed message on (run by the control
//!   plane, which holds the vault that opens a relay's URL: `plane::mail`).
//! - `parse`: what `turnout mail show` shows of a message (mail-parser).
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::store::Store;
use crate::vault::Credentials;

pub mod parse;
pub mod relay;
mod session;

/// The largest message accepted (advertised as SIZE); a bigger one is refused with 552 and
/// nothing of it is kept.
pub const MAX_MESSAGE: usize = 10 * 1024 * 1024;
/// Recipients per message.
pub const MAX_RECIPIENTS: usize = 100;
/// The longest command line, and the longest line of a message (RFC 5321 §4.5.3.1 allows 512
/// and 1000; clients that do not wrap HTML get more room).
pub const MAX_COMMAND_LINE: usize = 4096;
pub const MAX_DATA_LINE: usize = 64 * 1024;
/// A connection that sends nothing this long is closed (RFC 5321 §4.5.3.2: at least 5 minutes).
pub const IDLE: Duration = Duration::from_secs(300);
/// Failed logins one connection may make before it is closed.
pub const MAX_LOGIN_FAILURES: usize = 5;
/// Connections served at once per listener; more are answered 421.
pub const MAX_CONNECTIONS: usize = 64;
/// Caught messages waiting for the relay; beyond, they stay pending until the next start.
const RELAY_QUEUE: usize = 1024;

pub struct Catcher {
    store: Store,
    credentials: Credentials,
    /// Ids of kept messages whose tier has a relay; the control plane takes the receiver
    /// (`take_relay_queue`) and relays them one at a time.
    relay_queue: mpsc::Sender<i64>,
    relay_rx: std::sync::Mutex<Option<mpsc::Receiver<i64>>>,
}

impl Catcher {
    pub fn new(store: Store, credentials: Credentials) -> Arc<Catcher> {
        let (relay_queue, rx) = mpsc::channel(RELAY_QUEUE);
        Arc::new(Catcher {
            store,
            credentials,
            relay_queue,
            relay_rx: std::sync::Mutex::new(Some(rx)),
        })
    }

    /// Environment `env_id`'s password for the catcher (the one in its `SMTP_URL`).
    pub(crate) fn credential(&self, env_id: i64) -> String {
        self.credentials.credential(env_id)
    }

    /// The queue of messages to relay (once: the one relaying task takes it).
    pub(crate) fn take_relay_queue(&self) -> Option<mpsc::Receiver<i64>> {
        self.relay_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Queue a kept message for the relay; a full queue leaves it pending (relayed at the
    /// next start).
    pub(crate) fn queue_relay(&self, id: i64) {
        if let Err(e) = self.relay_queue.try_send(id) {
            warn!(mail = id, error = %e, "relay queue full; the message stays pending until the next start");
        }
    }

    /// Serve SMTP on `listener` until `stop`. `inside`: the environment (id) whose namespace
    /// the listener is in; None for the host's listener.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        inside: Option<i64>,
        stop: CancellationToken,
    ) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (stream, peer) = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "mail catcher: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let catcher = self.clone();
            let slot = slots.clone().try_acquire_owned().ok();
            let stop = stop.clone();
            tokio::spawn(async move {
                let Some(_slot) = slot else {
                    session::refuse_busy(stream).await;
                    return;
                };
                tokio::select! {
                    () = stop.cancelled() => {}
                    result = session::converse(&catcher, stream, peer, inside) => {
                        if let Err(e) = result {
                            debug!(%peer, error = %e, "mail catcher: connection ended");
                        }
                    }
                }
            });
        }
    }
}
