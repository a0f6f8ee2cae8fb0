//! What the daemon and an instance's supervising process say to each other.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cgroup::ResourceUsage;
use crate::instance::{InstanceSpec, InstanceStatus};

/// What a supervising process is started with (one JSON line on its stdin).
#[derive(Debug, Serialize, Deserialize)]
pub struct Launch {
    pub spec: InstanceSpec,
    /// Where it listens for the daemon.
    pub socket: PathBuf,
}

/// One request per connection.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub(crate) enum Request {
    /// Who it is: for adoption by a daemon that did not start it.
    Describe,
    /// The status now and at every change, one reply line each, until either side closes.
    Watch,
    Usage,
    WaitHealthy,
    CheckHealth,
    /// Stop the instance for good; the supervising process exits after answering.
    Stop,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Reply {
    /// The spec it was started with (its network by name).
    Described(Box<InstanceSpec>),
    Status(InstanceStatus),
    Usage(ResourceUsage),
    Done(Result<(), String>),
    /// The request could not be read (e.g. from a newer daemon).
    Refused(String),
}
