//! The commands for what environments are given: configuration and secrets (`config`,
//! `secret`, `secrets`), and their third parties (`mail`, `egress`).
use clap::Subcommand;
use turnout_model::{AppName, EgressMode, EnvRef, Tier};

use super::id_parser;

#[derive(Subcommand)]
pub enum MailCommand {
    /// The messages the environment sent (newest first): id, when, from, to, subject, size,
    /// what the relay did
    List {
        /// The environment, as APP/ENV
        target: EnvRef,
    },
    /// One message: its headers, text and HTML parts, and its attachments (name, type, size)
    Show {
        #[arg(value_parser = id_parser())]
        id: i64,
        /// Print the message exactly as the app sent it
        #[arg(long)]
        raw: bool,
    },
    /// Remove every message the environment sent
    Clear {
        /// The environment, as APP/ENV
        target: EnvRef,
    },
    /// Each tier's relay; with --tier, set one (mail to the allowed domains only is passed on
    /// to a real server) or turn it off. By default nothing is relayed, and production never
    /// uses the catcher
    Relay {
        app: AppName,
        /// The tier to set (development, test, qa, staging, release, production-copy)
        #[arg(long)]
        tier: Option<String>,
        /// The real server: smtp://[USER:PASSWORD@]HOST[:PORT] (port 25, STARTTLS when
        /// offered) or smtps://… (port 465, TLS)
        #[arg(long, requires = "tier")]
        url: Option<String>,
        /// A recipient domain to relay to (repeat for more); other recipients are not sent to
        #[arg(long = "allow-domain", value_name = "DOMAIN", requires = "tier")]
        allow_domains: Vec<String>,
        /// Relay nothing from this tier (the default)
        #[arg(long, requires = "tier", conflicts_with_all = ["url", "allow_domains"])]
        off: bool,
    },
}

#[derive(Subcommand)]
pub enum EgressCommand {
    /// Show each tier's outbound policy (defaults marked), or change one tier's with --mode,
    /// --allow-host, --clear-hosts or --reset
    Policy {
        app: AppName,
        /// The tier to change (or to show alone)
        #[arg(long)]
        tier: Option<Tier>,
        /// deny: only allow-listed hosts; allow: everything; record: everything, marking in
        /// the log what deny would refuse
        #[arg(long)]
        mode: Option<EgressMode>,
        /// Add a host to the allow-list: api.example.com, *.example.com, 192.0.2.7 or
        /// [2001:db8::1], each with an optional :PORT (repeat for several)
        #[arg(long = "allow-host", value_name = "HOST")]
        allow_hosts: Vec<String>,
        /// Empty the allow-list first
        #[arg(long)]
        clear_hosts: bool,
        /// Put the tier back to its default
        #[arg(long)]
        reset: bool,
    },
    /// What an environment called through the egress proxy, newest first
    Log {
        target: EnvRef,
        /// How many entries (1 to 10000)
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
        /// Only the requests refused (and those record mode marked as would-deny)
        #[arg(long)]
        denied: bool,
    },
}

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Set a secret at the environment level (`config set APP/ENV --secret KEY`); instances
    /// get it at the next deploy or `turnout restart`
    Set {
        target: EnvRef,
        key: String,
        /// The value; read from standard input when left out (keeps it out of shell history)
        value: Option<String>,
    },
    /// List the secrets set at the environment level (`config list APP/ENV` shows every level)
    List {
        target: EnvRef,
        /// Show the values too (needs the right to deploy the environment)
        #[arg(long)]
        show: bool,
    },
    /// Remove a secret set at the environment level (`config unset APP/ENV KEY`)
    Unset { target: EnvRef, key: String },
}

/// Where a value is set: the app (`APP`), a tier (`APP --tier TIER`) or an environment
/// (`APP/ENV`).
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Set values (all or none); instances get them at the next deploy or `turnout restart`.
    /// With --secret, a KEY without `=VALUE` reads its value from standard input (out of shell
    /// history and process lists). Builds never see values set here
    Set {
        /// APP (the app level, or with --tier a tier's) or APP/ENV (one environment)
        target: String,
        #[arg(long)]
        tier: Option<Tier>,
        /// Sealed at rest, masked when listed, shown only to who may deploy there
        #[arg(long)]
        secret: bool,
        /// KEY=VALUE pairs (with --secret, one KEY alone to read its value from stdin)
        #[arg(required = true)]
        values: Vec<String>,
    },
    /// Remove keys set at one level (all or none)
    Unset {
        /// APP or APP/ENV
        target: String,
        #[arg(long)]
        tier: Option<Tier>,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// One key: for APP/ENV its resolved value and level, else the value set at that level
    Get {
        /// APP or APP/ENV
        target: String,
        #[arg(long)]
        tier: Option<Tier>,
        key: String,
        /// Show a secret's value (needs the right to deploy there)
        #[arg(long)]
        show: bool,
    },
    /// APP/ENV: every key an instance gets, with the level it comes from (file, file-tier,
    /// file-env, app, tier, env, turnout; the later wins). APP [--tier T]: what is set there
    List {
        /// APP or APP/ENV
        target: String,
        #[arg(long)]
        tier: Option<Tier>,
        /// Show secret values (needs the right to deploy there)
        #[arg(long)]
        show_secrets: bool,
    },
}

#[derive(Subcommand)]
pub enum SecretsCommand {
    /// Replace the key that seals secret values and re-seal every one in one transaction
    /// (administrators only); the old key file is removed
    RotateKey,
}
