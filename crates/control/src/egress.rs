//! The egress proxy: an HTTP proxy on 127.0.0.1 (one per daemon, and one inside each
//! environment's network namespace) that environments' outbound HTTP and HTTPS (CONNECT) goes
//! through, decided per tier by host (allow, deny, record) and logged. Whose request it is:
//! the namespace it came in through, else the credentials in the environment's `HTTP_PROXY`
//! (`crate::vault::Credentials`).
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::vault::Credentials;

pub struct Egress {
    #[allow(dead_code)]
    store: Store,
    #[allow(dead_code)]
    credentials: Credentials,
}

impl Egress {
    pub fn new(store: Store, credentials: Credentials) -> Arc<Egress> {
        Arc::new(Egress { store, credentials })
    }

    /// Serve the proxy on `listener` until `stop`. `inside`: the environment (id) whose
    /// namespace the listener is in; None for the host's listener.
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
