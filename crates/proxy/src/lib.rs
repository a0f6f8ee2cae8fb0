//! The data plane of Turnout: an HTTP/1.1 and HTTP/2 reverse proxy that routes each request
//! by host to the instance its environment currently runs, and moves hosts between instances
//! without dropping a request.
//!
//! # How a switch works
//!
//! 1. The control plane builds a complete [`RouteTable`] and hands it to [`Proxy::apply`],
//!    which stores it atomically and returns the previous one. Start-up uses the same call.
//!    A table is usually a clone of the one in force with the changed hosts replaced, which
//!    shares every other host with it and costs only the hosts changed.
//! 2. Every request looks its host up in whatever table is current when it starts (each
//!    request on a keep-alive connection looks up afresh), so new requests go to the new
//!    instance as soon as `apply` returns.
//! 3. Requests already running keep the instance they started on. Each holds a drain token
//!    of that [`Upstream`] until its response body has been sent; an upgraded tunnel holds one
//!    until it closes.
//! 4. The caller drains each upstream the new table no longer routes to
//!    ([`RouteTable::retired_by`], [`Upstream::drain`]): it waits for those tokens up to a
//!    deadline, then cuts what is left; WebSocket tunnels get a 1001 close frame.
//!
//! # What the request path never does
//!
//! Take a lock, touch the store, block, or hold the route table across an `.await`. The
//! proxy keeps serving its last table whatever the control plane is doing.
//!
//! # Two paths
//!
//! Plain keep-alive HTTP/1.1 requests are relayed by the plain path (`plain`, `wire`): parsed in
//! place, their head copied once, sent over an idle connection to the instance, the answer
//! relayed as it comes. From the first request on a connection that is anything else (HTTP/2,
//! an upgrade, a streamed upload, a maintenance or protected host, ...) hyper serves the rest
//! of that connection (`forward`). Both keep every promise below. HTTPS connections
//! ([`Proxy::serve_tls`]) that agreed on HTTP/1.1 take the same two paths; HTTP/2 ones go to
//! hyper. Certificates, redirects to HTTPS, HSTS and ACME challenges are in a [`TlsTable`] of
//! their own, swapped like the route table ([`Proxy::apply_tls`]), so a switch never changes
//! the certificate a host is served with.
//!
//! # Maintenance and metrics
//!
//! A host can route to [`Target::Maintenance`]: a 503 page with a message and `Retry-After`,
//! while requests for the environment's health-check path still reach its instance. Every
//! route carries an `Arc<`[`RouteStats`]`>` that the request path updates with atomic adds.
//!
//! # Protected hosts
//!
//! A host inserted with [`RouteTable::insert_protected`] answers nothing of the app until the
//! request logs in with one of the tokens its [`Login`] lists (by blake3 hash, with expiry):
//! as the password of HTTP Basic auth, or as the `turnout_token` cookie that the form at
//! `/.turnout/login` sets (`/.turnout/logout` clears it). Anyone else gets a 401 login page.
//! The proxy removes the credentials it consumed before forwarding, so a token never
//! reaches the app.
//!
//! # Failures
//!
//! The proxy answers itself, in plain text, when the request has no Host (400), names a host
//! nobody routes (404), or the instance cannot be reached (502; 503 with `Retry-After` while its
//! runtime restarts it, see [`Upstream::set_restarting`]), does not accept a connection
//! in time, or does not send a response head within its response timeout (504); see
//! [`ProxyError`]. It never answers with another environment's
//! content.

#![forbid(unsafe_code)]

mod body;
mod client;
mod config;
mod connection;
mod error;
mod forward;
#[cfg(fuzzing)]
pub mod fuzz;
mod headers;
mod login;
mod plain;
mod route_table;
mod server;
mod stats;
mod tls;
mod tunnel;
mod upstream;
mod wire;

pub use config::ProxyConfig;
pub use error::{ErrorSide, ProxyError};
pub use login::Login;
pub use route_table::{Asleep, Maintenance, Resolved, RouteTable, Target};
pub use server::{FixedHost, Proxy};
pub use stats::{LATENCY_BUCKETS, RouteStats, StatsSnapshot};
pub use tls::{ACME_TLS_ALPN, HostTls, TlsTable, certified_key, challenge_key};
pub use upstream::{DEFAULT_RESPONSE_TIMEOUT, DrainDeadlines, DrainOutcome, Upstream};
