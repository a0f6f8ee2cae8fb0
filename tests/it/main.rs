//! One integration-test binary (it links once): real `turnout` processes, real git
//! repositories, real HTTP through the proxy, ports bound to 0.
mod access;
mod adoption;
mod cli;
mod daemon;
mod dataplane;
mod deploy;
mod diff;
mod domains;
mod input;
mod isolation;
mod jobs;
mod jobs_cli;
mod limits;
mod load;
mod logs;
mod metrics_access;
mod plans;
mod promote;
mod sandbox;
mod serve_start;
mod sleep;
mod startup;
mod support;
mod traffic;
mod triggers;
mod upgrade;
