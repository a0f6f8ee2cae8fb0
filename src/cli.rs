//! The command line, declared with clap. Every command but `serve` and `demo` is a thin client of
//! the HTTP API.
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use turnout_model::{AppName, DomainName, EnvRef, Tier};

#[derive(Parser)]
#[command(
    name = "turnout",
    version,
    about = "Run an app's branches as environments behind one proxy",
    propagate_version = true
)]
pub struct Cli {
    /// The Turnout API to talk to [default: the running daemon's address from
    /// <home>/serve.json, else http://127.0.0.1:7070]
    #[arg(long, global = true, env = "TURNOUT_API")]
    pub api: Option<String>,
    /// The daemon's home directory (state, releases, logs)
    #[arg(long, global = true, env = "TURNOUT_HOME")]
    pub home: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon: store, API, proxy and supervisor in one process
    Serve(ServeArgs),
    /// Start the daemon with an example app deployed into production and staging
    Demo(ServeArgs),
    /// Create, list and delete apps
    #[command(subcommand)]
    App(AppCommand),
    /// Create, list, show and delete environments
    #[command(subcommand)]
    Env(EnvCommand),
    /// Build and start a new release of an environment, then move its traffic to it
    Deploy {
        /// The environment, as APP/ENV
        target: EnvRef,
        /// A branch, tag or commit to deploy instead of the environment's branch
        #[arg(long = "ref")]
        git_ref: Option<String>,
    },
    /// List releases
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Bind host names to environments; switch them with zero downtime and roll them back
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Show an environment's instance output
    Logs {
        /// The environment, as APP/ENV
        target: EnvRef,
        /// Keep following the log (across deploys) until interrupted
        #[arg(short, long)]
        follow: bool,
        /// How many lines of history to show first
        #[arg(long, default_value_t = 200)]
        tail: usize,
    },
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Address of the HTTP API
    #[arg(long, env = "TURNOUT_API_LISTEN", default_value = "127.0.0.1:7070")]
    pub api_listen: SocketAddr,
    /// Address of the proxy that serves the environments
    #[arg(long, env = "TURNOUT_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,
    /// Worker threads of the proxy's own runtime [default: one per CPU]
    #[arg(long, env = "TURNOUT_PROXY_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub proxy_workers: Option<u16>,
}

#[derive(Subcommand)]
pub enum AppCommand {
    /// Register an app: a git repository (local path or URL)
    Create {
        name: AppName,
        /// A local path or a git URL
        #[arg(long)]
        repo: String,
        /// Name of an environment variable of the daemon that holds an https token for a
        /// private repository
        #[arg(long)]
        token_env: Option<String>,
    },
    /// List apps
    List,
    /// Delete an app
    Delete {
        name: AppName,
        /// Also delete its environments (their instances, releases, logs and storage)
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum EnvCommand {
    /// Create an environment of an app from a branch
    Create {
        /// The new environment, as APP/ENV
        target: EnvRef,
        /// The git branch it follows
        #[arg(long)]
        branch: String,
        /// development, test, qa, staging, release, production or production-copy
        #[arg(long, default_value = "development")]
        tier: Tier,
    },
    /// List environments, of one app or of all
    List { app: Option<AppName> },
    /// Show one environment: its release, instance, restarts and URL
    Show { target: EnvRef },
    /// Delete an environment: stop its instance and remove its releases, logs and storage
    Delete { target: EnvRef },
}

#[derive(Subcommand)]
pub enum ReleaseCommand {
    /// List an environment's releases, newest first
    List { target: EnvRef },
}

#[derive(Subcommand)]
pub enum DomainCommand {
    /// Bind a domain (e.g. shop.example.com or *.example.com) to an environment
    Add {
        domain: DomainName,
        /// The environment, as APP/ENV
        target: EnvRef,
    },
    /// List domains and where they point
    List,
    /// Remove a domain (its requests then get 404)
    Remove { domain: DomainName },
    /// Move a domain to another environment of its app, after a fresh health check of the
    /// target; the old environment keeps running
    Switch {
        domain: DomainName,
        /// The environment to move it to, as APP/ENV
        target: EnvRef,
    },
    /// Point a domain back where it was before its last switch; repeat to walk further back
    Rollback { domain: DomainName },
    /// Show a domain's bindings over time: who, when, from, to
    History { domain: DomainName },
    /// Show visitors a 503 maintenance page (health checks still reach the app), or stop
    Maintenance {
        domain: DomainName,
        state: OnOff,
        /// The message on the page
        #[arg(long)]
        message: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}
