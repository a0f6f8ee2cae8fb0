//! The command line, declared with clap. Every command but `serve` and `demo` is a thin client of
//! the HTTP API.
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use turnout_model::plan::PlanField;
use turnout_model::{
    Action, AppName, DataAccess, DeployOn, DomainName, EnvName, EnvRef, HookProvider, Promotion,
    Role, StageMember, Tier, UnknownTier,
};

mod certs;
mod settings;
pub use certs::{CertCommand, ChallengeArg, TlsArg};
pub use settings::{ConfigCommand, EgressCommand, MailCommand, SecretCommand, SecretsCommand};

#[derive(Parser)]
#[command(
    name = "turnout",
    version,
    about = "Run an app's branches as environments behind one proxy",
    propagate_version = true
)]
pub struct Cli {
    /// The Turnout API to talk to [default: the address of the daemon running for the home,
    /// from <home>/serve.json]. The home's owner token goes only to that daemon; give another's
    /// token in TURNOUT_TOKEN
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
    /// Supervise one instance for the daemon (started by `turnout serve`, never by hand)
    #[command(name = "__instance", hide = true)]
    Instance,
    /// Serve the proxy for the daemon (started by `turnout serve`, never by hand)
    #[command(name = "__dataplane", hide = true)]
    DataPlane(DataPlaneArgs),
    /// Create, list and delete apps
    #[command(subcommand)]
    App(AppCommand),
    /// The API's own description, for scripts and generated clients
    #[command(subcommand)]
    Api(ApiCommand),
    /// Create, list, show and delete environments
    #[command(subcommand)]
    Env(EnvCommand),
    /// Build and start a new release of an environment, then move its traffic to it (a job,
    /// watched until it ends)
    Deploy {
        /// The environment, as APP/ENV
        target: EnvRef,
        /// A branch, tag or commit to deploy instead of the environment's branch
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// Print the job's id and return at once instead of watching it
        #[arg(long)]
        detach: bool,
    },
    /// Report a CI build's result (what a CI job calls): a green build deploys its exact commit
    /// to the environments of its app and branch that deploy on CI
    #[command(subcommand)]
    Ci(CiCommand),
    /// GitHub and GitLab webhooks: a signed delivery of a green build or a push deploys its
    /// exact commit, as the user who set the hook's secret
    #[command(subcommand)]
    Hooks(HooksCommand),
    /// An app's pipeline: its environments by stage and what each promotion would bring
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Run one environment's live release in another, the same commit and build output (no
    /// fetch, no build), with the target's own configuration and secrets (a job)
    Promote {
        /// The environment whose release is promoted, as APP/ENV
        from: EnvRef,
        /// The environment that runs it, as APP/ENV (the same app)
        to: EnvRef,
        /// Print the job's id and return at once instead of watching it
        #[arg(long)]
        detach: bool,
    },
    /// Start an earlier release of an environment again (no fetch, no build) and move its
    /// traffic back to it (a job)
    Rollback {
        /// The environment, as APP/ENV
        target: EnvRef,
        /// The release to return to [default: the one live before the current one]
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        to: Option<i64>,
        /// Also put the schema and data back as they were before the current release migrated:
        /// its `[data] migrate_down` when it declares one (the data is kept), else the pinned
        /// snapshot its production deploy took (every write since is discarded)
        #[arg(long)]
        with_data: bool,
        /// Confirm a rollback with data in production (asked on a terminal otherwise)
        #[arg(long, requires = "with_data")]
        yes: bool,
        /// Print the job's id and return at once instead of watching it
        #[arg(long)]
        detach: bool,
    },
    /// Start a fresh instance of the live release and move traffic to it (a job)
    Restart {
        /// The environment, as APP/ENV
        target: EnvRef,
        /// Print the job's id and return at once instead of watching it
        #[arg(long)]
        detach: bool,
    },
    /// Jobs (deploys, rollbacks, restarts, starts, promotions, data seeds, clones and syncs): running
    /// ones and the latest others
    Jobs {
        /// Only this app's (APP) or environment's (APP/ENV) jobs
        scope: Option<JobScope>,
        /// Every job, not only the latest
        #[arg(long)]
        all: bool,
    },
    /// Show, watch or cancel one job
    #[command(subcommand)]
    Job(JobCommand),
    /// Each environment's data (its database and storage): show, seed, clone, sync, attach,
    /// and a shell on it
    #[command(subcommand)]
    Data(DataCommand),
    /// Snapshots of an environment's data: take, list, show, verify, delete, restore, and the
    /// schedule
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Mail environments below production sent (caught, never delivered unless their tier
    /// opted in to a relay): list, show, clear, and each tier's relay
    #[command(subcommand)]
    Mail(MailCommand),
    /// List releases
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Bind host names to environments; switch them with zero downtime and roll them back
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Each domain's HTTPS certificate: add your own, list, remove, renew from ACME
    #[command(subcommand)]
    Cert(CertCommand),
    /// Configuration given to instances as environment variables, set at the app, a tier or
    /// an environment (the most specific wins, over the app file's `[env]`); plain or secret
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Outbound requests per tier: the policy (allow, deny, record and an allow-list of
    /// hosts) and what each environment called
    #[command(subcommand)]
    Egress(EgressCommand),
    /// Wire apps together stage by stage: `turnout link APP OTHER [--as NAME]` gives each
    /// environment of APP NAME_URL (default OTHER_URL), the environment of OTHER at its stage
    /// (same branch for branch environments, same name, same tier, or --default), from its
    /// next deploy or restart
    Link(LinkArgs),
    /// An environment's secrets: short for `turnout config … APP/ENV --secret`
    #[command(subcommand)]
    Secret(SecretCommand),
    /// The key that seals secret values at rest
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Add and list users
    #[command(subcommand)]
    User(UserCommand),
    /// Create, list and revoke API tokens
    #[command(subcommand)]
    Token(TokenCommand),
    /// Roles, each app's policy, approval rules and login protection of internal URLs
    #[command(subcommand)]
    Access(AccessCommand),
    /// Requests waiting for a second owner's approval
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Approve a request as a second owner; it runs at once (a deploy as a job, watched)
    Approve {
        #[arg(value_parser = id_parser())]
        id: i64,
        /// Print the job's id and return at once instead of watching it
        #[arg(long)]
        detach: bool,
    },
    /// Reject a request
    Reject {
        #[arg(value_parser = id_parser())]
        id: i64,
    },
    /// The audit log: every change, who made it, when, from what to what
    Audit(AuditArgs),
    /// Rehearse a recovery: restore code and data as of TIME into a scratch environment, start
    /// and check it (health, then [backup] drill_check), report RTO and RPO, remove it (a job)
    Drill(DrillArgs),
    /// Show an environment's instance output
    Logs {
        /// The environment, as APP/ENV
        target: EnvRef,
        /// Keep following the log (across deploys) until interrupted
        #[arg(short, long)]
        follow: bool,
        /// How many lines of history to show first (at most 100000)
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(0..=100_000))]
        tail: u32,
        /// Keep the time each line was written
        #[arg(long)]
        timestamps: bool,
    },
    /// Run a command in an environment's live release with exactly what its instance gets
    /// (environment, configuration and secrets, data, user, resource limits, network), e.g.
    /// `turnout run shop/staging -- bin/migrate --status`; exits with the command's status
    Run(RunArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// The environment, as APP/ENV
    pub target: EnvRef,
    /// On a terminal of its own (shells, consoles): the local terminal passes every key,
    /// Ctrl-C included, to the command
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Give the command PORT, a port free in the environment's network
    #[arg(long)]
    pub port: bool,
    /// Run it as a job instead (no input; its output lines in `turnout job watch`, cancelled
    /// with `turnout job cancel`); print the job's id and return at once
    #[arg(long, conflicts_with = "tty")]
    pub detach: bool,
    /// The command and its arguments, after `--`, run as given (never through a shell: write
    /// `-- sh -c '…'` for one)
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Engine, generation, URL (password hidden), storage, size, where the data came from, and
    /// the other environments' databases it is attached to
    Show {
        /// The environment, as APP/ENV
        target: EnvRef,
    },
    /// Replace the data with a fresh copy made from the seed of turnout.toml's [data], then
    /// relaunch the live release on it (a job; the old data is removed once it serves)
    Seed(SeedArgs),
    /// The same as `seed`: destroy the data and re-create it from the seed (a job)
    Reseed(SeedArgs),
    /// Copy FROM's data and storage into TO while FROM keeps serving, then relaunch TO on it
    /// (a job); never into production
    Clone {
        /// The environment copied, as APP/ENV
        from: EnvRef,
        /// The environment whose data it replaces, as APP/ENV (the same app, not production)
        to: EnvRef,
        /// Print the job's id and return at once instead of watching it
        #[arg(long)]
        detach: bool,
    },
    /// Refresh an environment from production's data, masked by [data.mask] on the way
    /// (strict: a column no rule covers fails the sync), then relaunch it (a job)
    Sync {
        /// The environment whose data it replaces, as APP/ENV (not production)
        target: EnvRef,
        /// The production environment, as APP/ENV
        #[arg(long)]
        from: EnvRef,
        /// Read production's newest backup (`turnout backup list`) instead of its live data
        #[arg(long)]
        from_backup: bool,
        /// Print the job's id and return at once instead of watching it
        #[arg(long)]
        detach: bool,
    },
    /// Give an environment a second URL, of another's database, whose credentials allow only
    /// the mode given; its instances get it at their next restart or deploy
    Attach {
        /// The environment that gets the URL, as APP/ENV
        target: EnvRef,
        /// The environment whose database it is, as APP/ENV (the same app)
        #[arg(long)]
        to: EnvRef,
        /// read, append (insert, no update or delete; PostgreSQL) or read-write
        #[arg(long)]
        mode: DataAccess,
        /// The variable's name [default: OTHER_DATABASE_URL]
        #[arg(long = "as", value_name = "VAR")]
        var: Option<String>,
    },
    /// Take an environment's access to another's database away
    Detach {
        target: EnvRef,
        /// The environment whose database it is, as APP/ENV
        #[arg(long)]
        to: EnvRef,
    },
    /// Make a production copy production as of TIME (default: now, from a fresh snapshot): its
    /// data and the release production ran then, then pin it for `data undo` (a job)
    Reset {
        /// The production copy, as APP/ENV
        target: EnvRef,
        /// RFC 3339, or relative: "1 day ago", "90 minutes ago", "-90m" [default: now]
        #[arg(long)]
        at: Option<String>,
        /// The production environment, as APP/ENV [default: the app's production environment]
        #[arg(long)]
        from: Option<EnvRef>,
        /// Print the job's id and return at once instead of watching it
        #[arg(long)]
        detach: bool,
    },
    /// Put a production copy back exactly as its last reset left it, code and data (a job)
    Undo {
        /// The production copy, as APP/ENV
        target: EnvRef,
        /// Print the job's id and return at once instead of watching it
        #[arg(long)]
        detach: bool,
    },
    /// Open psql on the environment's PostgreSQL database (with --json: print the connection)
    Psql { target: EnvRef },
    /// Open sqlite3 on the environment's SQLite database (with --json: print the connection)
    Sqlite { target: EnvRef },
}

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Put an environment's data (or another's of the app, --into) back to a moment or a
    /// snapshot, then relaunch it on that data (a job; zero downtime: restored aside, then
    /// swapped in). In production it asks first, saying how much newer data it discards
    Restore(RestoreArgs),
    /// Take a snapshot of the environment's data now (a job); deduplicated against the
    /// earlier ones
    Create {
        /// The environment, as APP/ENV
        target: EnvRef,
        /// A note shown with it (at most 200 characters)
        #[arg(long)]
        label: Option<String>,
        /// Keep it whatever the schedule's retention says, until deleted with --force
        #[arg(long)]
        pin: bool,
        /// Print the job's id and return at once instead of watching it
        #[arg(long)]
        detach: bool,
    },
    /// The environment's snapshots (newest first), its schedule and where it comes from, the
    /// restore-point error bound in force, the repository's size and the recovery drills
    List {
        /// The environment, as APP/ENV
        target: EnvRef,
    },
    /// One snapshot
    Show {
        #[arg(value_parser = id_parser())]
        id: i64,
    },
    /// Restore a snapshot into a scratch area and check it, reading every chunk (a job)
    Verify {
        #[arg(value_parser = id_parser())]
        id: i64,
        /// Print the job's id and return at once instead of watching it
        #[arg(long)]
        detach: bool,
    },
    /// Delete a snapshot (a pinned one only with --force)
    Delete {
        #[arg(value_parser = id_parser())]
        id: i64,
        /// Delete it even though it is pinned
        #[arg(long)]
        force: bool,
    },
    /// Set the environment's backup schedule, over turnout.toml's [backup] and the tier's
    /// default
    Policy {
        /// The environment, as APP/ENV
        target: EnvRef,
        /// exponential (1m 2m 5m 10m 1h 3h 6h 1d), none, or periods such as 1m,1h,1d (1 to 16,
        /// each from 10s to 366d, increasing)
        #[arg(long)]
        schedule: String,
    },
}

#[derive(Args)]
pub struct SeedArgs {
    /// The environment, as APP/ENV
    pub target: EnvRef,
    /// Make the new data with this engine instead of the one the live release declares (to
    /// change an environment's engine)
    #[arg(long, value_parser = ["sqlite", "postgres"])]
    pub engine: Option<String>,
    /// Print the job's id and return at once instead of watching it
    #[arg(long)]
    pub detach: bool,
}

/// Ids are positive and fit the API's 64-bit integers.
fn id_parser() -> clap::builder::RangedI64ValueParser<i64> {
    clap::value_parser!(i64).range(1..)
}

#[derive(Subcommand)]
pub enum ApiCommand {
    /// Print the OpenAPI 3.1 document of this version's API, the one its daemon serves at
    /// GET /api/v1/openapi.json (no daemon needed)
    Spec,
}

#[derive(Subcommand)]
pub enum JobCommand {
    /// A job's steps (state, detail, duration), its outcome, and the tail of a failed step's log
    Show {
        #[arg(value_parser = id_parser())]
        id: i64,
    },
    /// Follow a job's steps and output until it ends; exits 0 if it succeeded, 1 otherwise
    Watch {
        #[arg(value_parser = id_parser())]
        id: i64,
    },
    /// Cancel a queued or running job (a deploy's half-built release is discarded)
    Cancel {
        #[arg(value_parser = id_parser())]
        id: i64,
    },
}

/// `APP` or `APP/ENV`.
#[derive(Clone)]
pub struct JobScope {
    pub app: AppName,
    pub env: Option<EnvName>,
}

impl std::str::FromStr for JobScope {
    type Err = String;
    fn from_str(s: &str) -> Result<JobScope, String> {
        match s.split_once('/') {
            Some(_) => {
                let r: EnvRef = s
                    .parse()
                    .map_err(|e: turnout_model::NameError| e.to_string())?;
                Ok(JobScope {
                    app: r.app,
                    env: Some(r.env),
                })
            }
            None => Ok(JobScope {
                app: s
                    .parse()
                    .map_err(|e: turnout_model::NameError| e.to_string())?,
                env: None,
            }),
        }
    }
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Address of the HTTP API
    #[arg(long, env = "TURNOUT_API_LISTEN", default_value = "127.0.0.1:7070")]
    pub api_listen: SocketAddr,
    /// Address of the proxy that serves the environments
    #[arg(long, env = "TURNOUT_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,
    /// Address of the proxy's HTTPS listener (e.g. 0.0.0.0:443); none by default. Domains get
    /// certificates with `turnout cert add` or `turnout domain add --tls acme`
    #[arg(long, env = "TURNOUT_HTTPS_LISTEN")]
    pub https_listen: Option<SocketAddr>,
    /// ACME directory that certificates of domains with `--tls acme` come from
    #[arg(long, env = "TURNOUT_ACME_DIRECTORY", default_value = turnout_control::tls::LETS_ENCRYPT)]
    pub acme_directory: String,
    /// Contact address of the ACME account (expiry notices from the CA)
    #[arg(long, env = "TURNOUT_ACME_EMAIL")]
    pub acme_email: Option<String>,
    /// A PEM file of CA certificates the ACME directory's HTTPS may be signed by, besides the
    /// public roots (a private ACME server, such as pebble)
    #[arg(long, env = "TURNOUT_ACME_CA_CERT")]
    pub acme_ca_cert: Option<PathBuf>,
    /// Seconds before the first retry of a failed certificate order; each further failure
    /// doubles the wait, up to a day
    #[arg(long, env = "TURNOUT_ACME_RETRY", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=86400))]
    pub acme_retry_min: u32,
    /// Address of the mail catcher (SMTP) environments below production send to; port 0: the
    /// port this home had last, else any free one
    #[arg(long, env = "TURNOUT_SMTP_LISTEN", default_value = "127.0.0.1:0")]
    pub smtp_listen: SocketAddr,
    /// Address of the egress proxy environments' outbound HTTP(S) goes through; port 0: the
    /// port this home had last, else any free one
    #[arg(long, env = "TURNOUT_EGRESS_LISTEN", default_value = "127.0.0.1:0")]
    pub egress_listen: SocketAddr,
    /// Worker threads of the proxy's own runtime [default: one per CPU]
    #[arg(long, env = "TURNOUT_PROXY_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub proxy_workers: Option<u16>,
    /// Builds that run at once; more deploys wait as `queued`, production first, then in the
    /// order they came [default: one per CPU]
    #[arg(long, env = "TURNOUT_MAX_BUILDS", value_parser = clap::value_parser!(u8).range(1..=64))]
    pub max_builds: Option<u8>,
    /// Not running as root: run every environment as this user anyway. They are then not
    /// isolated from each other or from Turnout's home: unsafe when several people deploy.
    /// As root each environment runs as its own user and this changes nothing
    #[arg(long, env = "TURNOUT_SINGLE_USER")]
    pub single_user: bool,
    /// Give environments no network namespaces of their own, even as root: they share the
    /// host's network, and code of one can connect to another's instance port directly
    /// (unsafe when several people deploy)
    #[arg(long, env = "TURNOUT_SHARED_NETWORK")]
    pub shared_network: bool,
    /// Take over from the daemon running on this home (typically after installing a new
    /// `turnout` binary): its listening sockets and its instances, without dropping a request.
    /// The running daemon finishes its requests in flight and exits
    #[arg(long)]
    pub upgrade: bool,
    /// The largest request body, in MiB, a `git push` to Turnout may send (larger ones are
    /// refused with 413 and change nothing)
    #[arg(long, env = "TURNOUT_MAX_PUSH_SIZE", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_push_size: u32,
    /// A PEM file of CA certificates that mail relays (`turnout mail relay`) may also be
    /// signed by, besides the public roots: for a company's own SMTP server
    #[arg(long, env = "TURNOUT_MAIL_RELAY_CA")]
    pub mail_relay_ca: Option<PathBuf>,
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
    /// Change an app's settings
    #[command(group(clap::ArgGroup::new("app_change").required(true).multiple(true)))]
    Update {
        name: AppName,
        /// on: the first push of a branch no environment follows creates `test-<branch>` (tier
        /// test, deploys on push) and deploys it; deleting the branch by a push deletes it
        #[arg(long, group = "app_change")]
        branch_envs: Option<OnOff>,
        /// TIER=DURATION|never|default: after how long without a request the tier's
        /// environments sleep (1s to 168h), unless an environment has its own setting (`env
        /// update --sleep-after`); default: the built-in one (test 30m, others never). Repeat
        /// for several tiers
        #[arg(long, value_name = "TIER=DURATION|never|default", group = "app_change",
            value_parser = tier_sleep_setting)]
        sleep_after: Vec<(Tier, SleepSetting)>,
    },
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
        /// What deploys it by itself: manual (only `turnout deploy`), push (every push to its
        /// branch) or ci (every green CI build of its branch, that exact commit)
        #[arg(long, default_value = "manual")]
        deploy_on: DeployOn,
    },
    /// List environments, of one app or of all
    List { app: Option<AppName> },
    /// Show one environment: its release, instance, restarts and URL
    Show { target: EnvRef },
    /// What separates two environments of an app: the commits between their live releases
    /// (each way) and the configuration keys set differently (secret values hidden)
    Diff {
        /// The first environment, as APP/ENV
        a: EnvRef,
        /// The second, as APP/ENV (the same app)
        b: EnvRef,
    },
    /// Delete an environment: stop its instance and remove its releases, logs and storage
    Delete { target: EnvRef },
    /// Stop an environment's instance on purpose: its URL and domains answer 503 until started
    Stop { target: EnvRef },
    /// Start a stopped environment's live release again (a job)
    Start {
        target: EnvRef,
        /// Print the job's id and return at once instead of watching it
        #[arg(long)]
        detach: bool,
    },
    /// Wake a sleeping environment now (a start job; a request to its URL wakes it too)
    Wake {
        target: EnvRef,
        /// Print the job's id and return at once instead of watching it
        #[arg(long)]
        detach: bool,
    },
    /// Change what deploys an environment by itself, or its resource plan (it wins field by
    /// field over turnout.toml's [plan]; applies at the next deploy or restart)
    #[command(group(clap::ArgGroup::new("change").required(true).multiple(true)))]
    Update {
        /// The environment, as APP/ENV
        target: EnvRef,
        /// manual, push or ci (see `env create`)
        #[arg(long, group = "change")]
        deploy_on: Option<DeployOn>,
        /// Sleep after this long without a request (1s to 168h, like 15m), never, or default
        /// (its tier's: test environments after 30m, the others never)
        #[arg(long, value_name = "DURATION|never|default", group = "change",
            allow_hyphen_values = true, value_parser = sleep_setting)]
        sleep_after: Option<SleepSetting>,
        /// Memory of all its processes, like 512M or 2G (4M to 16T), or none
        #[arg(long, value_name = "SIZE|none", group = "change", allow_hyphen_values = true,
            value_parser = |s: &str| plan_setting(PlanField::Memory, s))]
        memory: Option<String>,
        /// CPU in cores, like 0.5 or 2 (0.01 to 1024), or none
        #[arg(long, value_name = "CORES|none", group = "change", allow_hyphen_values = true,
            value_parser = |s: &str| plan_setting(PlanField::Cpu, s))]
        cpu: Option<String>,
        /// Processes and threads at most, like 256 (1 to 4194304), or none
        #[arg(long, value_name = "N|none", group = "change", allow_hyphen_values = true,
            value_parser = |s: &str| plan_setting(PlanField::Pids, s))]
        pids: Option<String>,
    },
}

/// `--sleep-after`: a duration, `never`, or `default` (`None`: the tier's default).
#[derive(Debug, Clone, Copy)]
pub struct SleepSetting(pub Option<turnout_model::SleepAfter>);

fn sleep_setting(text: &str) -> Result<SleepSetting, String> {
    if text.trim() == "default" {
        return Ok(SleepSetting(None));
    }
    text.parse()
        .map(|s| SleepSetting(Some(s)))
        .map_err(|e: String| format!("{e}, or default"))
}

/// `app update --sleep-after TIER=…`.
fn tier_sleep_setting(text: &str) -> Result<(Tier, SleepSetting), String> {
    let Some((tier, setting)) = text.split_once('=') else {
        return Err("give TIER=DURATION, TIER=never or TIER=default, like test=15m".into());
    };
    let tier: Tier = tier
        .trim()
        .parse()
        .map_err(|e: UnknownTier| e.to_string())?;
    Ok((tier, sleep_setting(setting)?))
}

/// A plan flag's value, checked by the same rules as the server's, passed on as written.
fn plan_setting(field: PlanField, text: &str) -> Result<String, &'static str> {
    field
        .check_setting(text)
        .map(|()| text.trim().to_owned())
        .map_err(|_| field.hint())
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
        /// HTTPS for the domain: `acme` orders a certificate from the daemon's ACME directory
        /// now (the proxy answers the challenge) and renews it by itself
        #[arg(long, value_enum, value_name = "off|acme")]
        tls: Option<TlsArg>,
    },
    /// A domain's HTTPS: its certificate from ACME or none, the redirect of plain HTTP to
    /// HTTPS, HSTS, and the ACME challenge its orders answer
    Tls {
        domain: DomainName,
        /// Certificates from the daemon's ACME directory (ordered now, renewed by themselves)
        #[arg(long, conflicts_with = "off")]
        acme: bool,
        /// No HTTPS: serve the domain over plain HTTP only
        #[arg(long)]
        off: bool,
        /// Answer plain-HTTP requests with a redirect to HTTPS (on by default once a
        /// certificate exists)
        #[arg(long, value_enum)]
        redirect: Option<OnOff>,
        /// Send Strict-Transport-Security with this max-age (at most two years), or `off`
        #[arg(long, value_name = "SECONDS|off", value_parser = certs::hsts_parser)]
        hsts: Option<u64>,
        /// How the ACME server checks the domain: http-01 (default) or tls-alpn-01 (needs
        /// `turnout serve --https-listen`)
        #[arg(long, value_enum)]
        challenge: Option<ChallengeArg>,
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

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user (with no role until one is granted)
    Add { name: String },
    /// List users and their roles
    List,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once and stored only as a hash
    Create {
        #[arg(long)]
        user: String,
        /// Lifetime such as 30d, 12h or 90m [default: never expires]
        #[arg(long)]
        expires: Option<String>,
    },
    /// List tokens (an administrator sees everyone's)
    List,
    /// Revoke a token by its id
    Revoke {
        #[arg(value_parser = id_parser())]
        id: i64,
    },
}

#[derive(Subcommand)]
pub enum AccessCommand {
    /// Give a user a role on an app (viewer, developer, maintainer, owner)
    Grant {
        user: String,
        app: AppName,
        role: Role,
    },
    /// Take a user's role on an app away
    Revoke { user: String, app: AppName },
    /// Show which role each action needs on each tier of an app
    Policy { app: AppName },
    /// Change which role an action needs on a tier of an app
    SetPolicy {
        app: AppName,
        action: Action,
        tier: Tier,
        role: Role,
    },
    /// Require a second owner's approval for an action on a tier (deploy, promote, domain,
    /// restore), or with --off stop requiring it
    RequireApproval {
        app: AppName,
        action: Action,
        tier: Tier,
        /// How long a request waits for approval
        #[arg(long, default_value = "1h", conflicts_with = "off")]
        expires: String,
        #[arg(long)]
        off: bool,
    },
    /// Require a login (token as cookie or HTTP basic auth) on an app's internal URLs
    Protect {
        app: AppName,
        state: OnOff,
        /// Only this tier [default: every tier]
        #[arg(long)]
        tier: Option<Tier>,
    },
}

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// Pending requests (with --all, decided and expired ones too)
    List {
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// Only this app's entries
    #[arg(long)]
    pub app: Option<AppName>,
    /// Only this environment's entries
    #[arg(long)]
    pub env: Option<EnvName>,
    /// Only entries this recent: 30m, 12h, 7d (at most 100 years)
    #[arg(long, value_parser = parse_age)]
    pub since: Option<Age>,
}

/// How far back `--since` reaches, in seconds (at most [`Age::MAX_SECS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Age(pub u64);

impl Age {
    /// 100 years: anything older than this is a typo.
    pub const MAX_SECS: u64 = 36_525 * 86_400;

    /// The moment this long before `now` (Unix seconds).
    pub fn before(self, now: u64) -> i64 {
        // Both are at most a few billion seconds: the difference fits an i64.
        i64::try_from(now).unwrap_or(i64::MAX) - i64::try_from(self.0).unwrap_or(0)
    }
}

/// `30s`, `30m`, `12h`, `7d`; refuses overflow and anything over 100 years.
pub fn parse_age(text: &str) -> Result<Age, String> {
    let bad = || format!("'{text}' is not a duration: write it like 30m, 12h or 7d");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = text.split_at(split);
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let too_long = || format!("'{text}' reaches back more than 100 years: give at most 36525d");
    let n: u64 = n
        .parse()
        .map_err(|_| if n.is_empty() { bad() } else { too_long() })?;
    match n.checked_mul(unit_secs) {
        Some(secs) if secs <= Age::MAX_SECS => Ok(Age(secs)),
        _ => Err(too_long()),
    }
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of the whole log; exit non-zero if any entry was altered
    Verify,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_checked_and_bounded() {
        assert_eq!(parse_age("30m"), Ok(Age(1800)));
        assert_eq!(parse_age("7d"), Ok(Age(604_800)));
        assert_eq!(parse_age("36525d"), Ok(Age(3_155_760_000)));
        for absurd in ["9999999999999999d", "99999999999999999999999s", "36526d"] {
            let e = parse_age(absurd).unwrap_err();
            assert!(e.contains("100 years"), "{absurd}: {e}");
        }
        for bad in ["", "d", "12", "5x", "-5d", "1.5h"] {
            let e = parse_age(bad).unwrap_err();
            assert!(e.contains("write it like 30m"), "{bad}: {e}");
        }
        assert_eq!(Age(60).before(1000), 940);
    }

    #[test]
    fn job_scopes_are_an_app_or_an_environment() {
        let s: JobScope = "shop/staging".parse().unwrap();
        assert_eq!(
            (s.app.as_str(), s.env.as_ref().map(|e| e.as_str())),
            ("shop", Some("staging"))
        );
        let s: JobScope = "shop".parse().unwrap();
        assert!(s.env.is_none());
        assert!("Shop".parse::<JobScope>().is_err());
        assert!("shop/".parse::<JobScope>().is_err());
    }
}

/// How `turnout serve` starts the data plane; its listening socket is the standard input.
#[derive(Args, Debug, Clone)]
pub struct DataPlaneArgs {
    /// The control socket to listen on
    #[arg(long)]
    pub socket: PathBuf,
    /// The data plane's settings, as JSON
    #[arg(long)]
    pub config: String,
    /// The control socket of the data plane to take over from when told to serve
    #[arg(long)]
    pub succeed: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum PipelineCommand {
    /// The stages left to right (the declared ones, or by tier), each environment's release,
    /// commit, age, status and URL, how many commits each allowed promotion would bring, and
    /// the scheduled cuts. At most 200 promotions are listed (the declared ones, then those
    /// within one branch, then the rest); --from and --to narrow the list
    Show {
        app: AppName,
        /// Only the promotions out of this environment
        #[arg(long)]
        from: Option<EnvName>,
        /// Only the promotions into this environment
        #[arg(long)]
        to: Option<EnvName>,
    },
    /// Declare the app's pipeline (owners): its stages in order and exactly which promotions
    /// are allowed; `promote` refuses every other one
    Set {
        app: AppName,
        /// The stages left to right, comma-separated; a stage is one or more members joined by
        /// `+`, each an environment or `tier:NAME` (every environment of that tier), e.g.
        /// `tier:test,qa,staging+hotfix,production`
        #[arg(long, value_delimiter = ',', required = true)]
        stages: Vec<Stage>,
        /// An allowed promotion as FROM:TO (environment names); repeat it for each one
        #[arg(long = "promote")]
        promotions: Vec<Promotion>,
    },
    /// Forget the declared pipeline: promotions follow the tier rule again
    Reset { app: AppName },
    /// Scheduled cuts: a promotion at every tick of a cron expression
    #[command(subcommand)]
    Schedule(ScheduleCommand),
}

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Add a scheduled cut (owners); each tick runs as you, with the rights you hold then
    Add {
        app: AppName,
        /// The promotion, as FROM:TO (environment names), e.g. qa:staging
        #[arg(long = "promote")]
        promotion: Promotion,
        /// Five fields (minute hour day-of-month month day-of-week), or six with seconds
        /// first, e.g. "0 17 * * FRI"
        #[arg(long)]
        cron: String,
        /// The IANA time zone the expression is read in, e.g. Europe/Berlin
        #[arg(long, default_value = "UTC")]
        tz: String,
    },
    /// The app's scheduled cuts, with their last and next ticks
    List { app: AppName },
    /// Remove a scheduled cut (owners)
    Remove {
        app: AppName,
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
    },
    /// Run a scheduled cut's promotion now, as you (its own ticks are unchanged)
    Run {
        app: AppName,
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
        /// Print the job's id and return at once instead of watching it
        #[arg(long)]
        detach: bool,
    },
}

/// One stage on the command line: members joined by `+`.
#[derive(Clone, Debug)]
pub struct Stage(pub Vec<StageMember>);

impl std::str::FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.split('+')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Stage)
    }
}

#[derive(Subcommand)]
pub enum CiCommand {
    /// `POST /api/v1/hooks/ci`: prints the deploys started (as jobs) and the environments left
    /// alone, with why
    Report {
        app: AppName,
        /// The branch that was built
        #[arg(long)]
        branch: String,
        /// The full commit id that was built
        #[arg(long)]
        commit: String,
        /// success, failure or other
        #[arg(long)]
        status: CiStatusArg,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LinkArgs {
    #[command(subcommand)]
    pub command: Option<LinkCommand>,
    /// The app whose environments call OTHER
    #[arg(required = true)]
    pub app: Option<AppName>,
    /// The app they call
    #[arg(required = true)]
    pub other: Option<AppName>,
    /// The variable's NAME (NAME_URL; upper-cased, '-' as '_'); OTHER's name by default
    #[arg(long = "as", value_name = "NAME")]
    pub name: Option<String>,
    /// OTHER's environment for the environments no rule resolves
    #[arg(long, value_name = "ENV")]
    pub default: Option<EnvName>,
}

#[derive(Subcommand)]
pub enum LinkCommand {
    /// Each link of APP and, for every environment, the environment of OTHER it reaches (or
    /// why none: never a guess)
    List { app: AppName },
    /// Remove a link, named by OTHER or by --as NAME; environments lose the variable at
    /// their next deploy or restart
    #[command(group(clap::ArgGroup::new("which").required(true)))]
    Remove {
        app: AppName,
        #[arg(group = "which")]
        other: Option<AppName>,
        #[arg(long = "as", value_name = "NAME", group = "which")]
        name: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum HooksCommand {
    /// Set (or replace) the app's webhook secret for GitHub or GitLab (owners); the hook then
    /// deploys as you, with your roles at the time of each delivery
    #[command(group(clap::ArgGroup::new("secret").required(true)))]
    Set {
        app: AppName,
        /// github or gitlab
        provider: HookProvider,
        /// The variable of the daemon's environment holding the secret (read at every
        /// delivery; never stored)
        #[arg(long, value_name = "VAR", group = "secret")]
        secret_env: Option<String>,
        /// Read the secret from standard input and store it (keeps it out of shell history and
        /// process arguments)
        #[arg(long, group = "secret")]
        secret_stdin: bool,
    },
    /// Which providers the app takes webhooks from, the URL to give each, and who they act as
    /// (never a secret)
    Show { app: AppName },
}

/// A CI build's status on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CiStatusArg {
    Success,
    Failure,
    Other,
}

/// `turnout backup restore`.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("point").required(true).args(["at", "snapshot"])))]
pub struct RestoreArgs {
    /// The environment whose backups are restored, as APP/ENV
    pub target: EnvRef,
    /// The moment: RFC 3339, or relative ("1 day ago", "90 minutes ago", "2h ago", "-90m");
    /// PostgreSQL goes back to it exactly, SQLite to the newest snapshot at or before it
    #[arg(long)]
    pub at: Option<String>,
    /// One snapshot (see `turnout backup list`)
    #[arg(long, value_parser = id_parser())]
    pub snapshot: Option<i64>,
    /// Restore into another environment of the app instead, as APP/ENV (production only from
    /// its own backups)
    #[arg(long)]
    pub into: Option<EnvRef>,
    /// Also run the release the snapshot recorded instead of the live one
    #[arg(long)]
    pub with_code: bool,
    /// Confirm a restore into production, which discards every newer write (asked on a
    /// terminal otherwise)
    #[arg(long)]
    pub yes: bool,
    /// Print the job's id and return at once instead of watching it
    #[arg(long)]
    pub detach: bool,
}

/// `turnout drill`.
#[derive(Args)]
pub struct DrillArgs {
    /// The environment whose backups are drilled, as APP/ENV
    pub target: EnvRef,
    /// The moment to recover: RFC 3339, or relative ("1 day ago", "-90m")
    #[arg(long)]
    pub at: String,
    /// Print the job's id and return at once instead of watching it
    #[arg(long)]
    pub detach: bool,
}
