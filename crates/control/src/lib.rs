//! The control plane: the store, the HTTP API, deploys, and the daemon that runs every part in
//! one process. It owns all state; the proxy only ever sees route tables it is handed.
#![forbid(unsafe_code)]

mod access;
mod admin;
pub mod api;
pub mod app_file;
mod approvals;
mod dashboard;
mod egress;
mod error;
mod git;
mod handover;
pub mod home;
mod hooks;
mod mail;
mod metrics;
mod plane;
mod secrets;
mod serve;
mod store;
pub mod tls;
mod vault;

pub use access::Principal;
pub use error::ControlError;
pub use plane::ControlPlane;
pub use serve::{ServeConfig, Shutdown, serve};
