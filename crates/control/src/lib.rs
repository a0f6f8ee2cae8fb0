//! The control plane: the store, the HTTP API, deploys, and the daemon that runs every part in
//! one process. It owns all state; the proxy only ever sees route tables it is handed.
#![forbid(unsafe_code)]

pub mod api;
pub mod app_file;
mod error;
mod git;
pub mod home;
mod metrics;
mod plane;
mod serve;
mod store;

pub use error::ControlError;
pub use plane::ControlPlane;
pub use serve::{ServeConfig, serve};
