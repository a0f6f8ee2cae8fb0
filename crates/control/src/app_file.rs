//! The app's own file, `turnout.toml` at the repository root (or a `Procfile` `web:` line), read
//! from the commit being deployed and resolved for one environment: base settings, then the
//! `[tiers.<tier>]` layer, then the `[environments.<env>]` layer, field by field.
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use turnout_model::duration::DurationRule;
use turnout_model::plan::{
    PlanField, check_cpu, check_memory, check_pids, parse_cpu, parse_memory, parse_pids,
};
use turnout_model::{EnvName, ResourcePlan, Tier};
use turnout_proxy::DEFAULT_RESPONSE_TIMEOUT;

mod data;
pub use data::{DataConfig, DataSection, MAX_MASK_NAME, MAX_MASK_RULES, MAX_SEED_PATH, Seed};
use data::{check_data, data_config};
mod backup;
pub use backup::{BackupConfig, BackupSection, parse_schedule, show_period, tier_default};
use backup::{backup_config, check_backup, merge_backup};
mod mail;
pub use mail::{DEFAULT_URL_VAR, MailConfig, MailSection};
use mail::{check_mail, mail_config, merge_mail};

pub const FILE_NAME: &str = "turnout.toml";
pub const PROCFILE: &str = "Procfile";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AppFileError {
    #[error("{file}, line {line}: {message}")]
    Invalid {
        file: &'static str,
        line: usize,
        message: String,
    },
    #[error(
        "the repository has neither a turnout.toml with a [run] command nor a Procfile with a `web:` line; add one at the repository root"
    )]
    NoRunCommand,
}

/// One layer of settings; every field optional so layers can override each other.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    #[serde(default)]
    pub build: Option<BuildSection>,
    #[serde(default)]
    pub run: Option<RunSection>,
    #[serde(default)]
    pub health: Option<HealthSection>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub plan: Option<PlanSection>,
    #[serde(default)]
    pub data: Option<DataSection>,
    #[serde(default)]
    pub backup: Option<BackupSection>,
    #[serde(default)]
    pub mail: Option<MailSection>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSection {
    pub command: Option<String>,
    #[serde(default, deserialize_with = "build_timeout")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    pub command: Option<String>,
    #[serde(default, deserialize_with = "stop_timeout")]
    pub stop_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "drain_timeout")]
    pub drain_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "stream_drain_timeout")]
    pub stream_drain_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "response_timeout")]
    pub response_timeout: Option<Duration>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    pub path: Option<String>,
    #[serde(default, deserialize_with = "health_timeout")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "health_interval")]
    pub interval: Option<Duration>,
}

/// `[plan]`: resource limits, each checked by the same rules as `turnout env update`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSection {
    #[serde(default, deserialize_with = "opt_memory")]
    pub memory: Option<u64>,
    #[serde(default, deserialize_with = "opt_cpu")]
    pub cpu: Option<f64>,
    #[serde(default, deserialize_with = "opt_pids")]
    pub pids: Option<u64>,
}

/// The file itself: a base layer's fields at the top level (spelled out rather than
/// `#[serde(flatten)]`, which would lose toml's spans and so the line numbers in errors), plus
/// the override layers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppFile {
    #[serde(default)]
    build: Option<BuildSection>,
    #[serde(default)]
    run: Option<RunSection>,
    #[serde(default)]
    health: Option<HealthSection>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    plan: Option<PlanSection>,
    #[serde(default)]
    data: Option<DataSection>,
    #[serde(default)]
    backup: Option<BackupSection>,
    #[serde(default)]
    mail: Option<MailSection>,
    #[serde(default)]
    tiers: BTreeMap<Tier, Layer>,
    #[serde(default)]
    environments: BTreeMap<EnvName, Layer>,
}

/// Everything needed to build and run one release in one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseConfig {
    pub build: Option<String>,
    pub build_timeout: Duration,
    pub run: String,
    pub stop_timeout: Duration,
    pub drain_timeout: Duration,
    /// WebSockets and event streams of a replaced release get this long, then a clean close.
    #[serde(default = "default_stream_drain_timeout")]
    pub stream_drain_timeout: Duration,
    /// How long the app may take to send a response head before the proxy answers 504.
    #[serde(default = "default_response_timeout")]
    pub response_timeout: Duration,
    pub health_path: String,
    pub health_timeout: Duration,
    pub health_interval: Duration,
    pub env: BTreeMap<String, String>,
    /// For each `[env]` key a tier or environment table sets: every table of the app file that
    /// set it, least specific first (`env`, `tiers.<tier>.env`, `environments.<env>.env`); the
    /// last one's value is the key's. A key missing here came from `[env]` alone (so did every
    /// key of releases recorded before).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_sources: BTreeMap<String, Vec<String>>,
    /// The app file's resource plan for this tier and environment (releases recorded before
    /// plans existed have none).
    #[serde(default)]
    pub plan: ResourcePlan,
    /// The app file's `[data]` for this tier and environment (releases recorded before data
    /// settings existed have the defaults).
    #[serde(default)]
    pub data: DataConfig,
    /// The app file's `[backup]` for this tier and environment (releases recorded before
    /// backups existed have none set: the tier's default schedule).
    #[serde(default)]
    pub backup: BackupConfig,
    /// The app file's `[mail]` for this tier and environment (releases recorded before mail
    /// settings existed have the default: `SMTP_URL`).
    #[serde(default)]
    pub mail: MailConfig,
}

impl ReleaseConfig {
    /// A stable fingerprint of what shapes the build output: a release directory is reused only
    /// when its commit and this fingerprint both match.
    pub fn build_fingerprint(&self) -> String {
        let mut h = Fnv::default();
        h.write(self.build.as_deref().unwrap_or("").as_bytes());
        for (k, v) in &self.env {
            h.write(&[0]);
            h.write(k.as_bytes());
            h.write(&[0]);
            h.write(v.as_bytes());
        }
        format!("{:08x}", h.0 as u32)
    }
}

#[derive(Clone, Copy)]
struct Fnv(u64);
impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}
impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The plan an instance runs with: the environment's own plan (`turnout env update`, the API)
/// wins field by field over the app file's plan resolved for its tier and environment
/// (`release`), which wins over no limit.
pub(crate) fn effective_plan(env: &ResourcePlan, release: &ResourcePlan) -> ResourcePlan {
    ResourcePlan {
        memory: env.memory.or(release.memory),
        cpu: env.cpu.or(release.cpu),
        pids: env.pids.or(release.pids),
    }
}

fn default_stream_drain_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_response_timeout() -> Duration {
    DEFAULT_RESPONSE_TIMEOUT
}

/// Resolve the app's settings for one environment from the text of its `turnout.toml` and/or
/// `Procfile` (either may be absent).
pub fn resolve(
    turnout_toml: Option<&str>,
    procfile: Option<&str>,
    tier: Tier,
    env: &EnvName,
) -> Result<ReleaseConfig, AppFileError> {
    let file = match turnout_toml {
        Some(text) => parse(text)?,
        None => AppFile::default(),
    };
    let mut merged = Layer {
        build: file.build,
        run: file.run,
        health: file.health,
        env: file.env,
        plan: file.plan,
        data: file.data,
        backup: file.backup,
        mail: file.mail,
    };
    let mut env_sources: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (layer, source) in [
        (file.tiers.get(&tier), format!("tiers.{tier}.env")),
        (
            file.environments.get(env),
            format!("environments.{env}.env"),
        ),
    ] {
        let Some(layer) = layer else { continue };
        for key in layer.env.keys() {
            env_sources
                .entry(key.clone())
                .or_insert_with(|| match merged.env.contains_key(key) {
                    true => vec!["env".to_owned()],
                    false => vec![],
                })
                .push(source.clone());
        }
        merge(&mut merged, layer);
    }
    let build = merged.build.unwrap_or_default();
    let run = merged.run.unwrap_or_default();
    let health = merged.health.unwrap_or_default();
    let plan = merged.plan.unwrap_or_default();
    let data = data_config(merged.data.unwrap_or_default());
    let backup = backup_config(merged.backup.unwrap_or_default());
    let mail = mail_config(merged.mail.unwrap_or_default());
    let command = match run.command {
        Some(c) if !c.trim().is_empty() => c,
        _ => procfile
            .and_then(procfile_web)
            .ok_or(AppFileError::NoRunCommand)?,
    };
    let health_path = health.path.unwrap_or_else(|| "/".into());
    let invalid_path = |why: &str| AppFileError::Invalid {
        file: FILE_NAME,
        line: line_of(turnout_toml.unwrap_or(""), "path"),
        message: format!("health path {health_path:?} {why}"),
    };
    if !health_path.starts_with('/') {
        return Err(invalid_path("must start with '/'"));
    }
    // It goes into the request line as is (RFC 9112 §3.2): a CR or LF there would end the line
    // early, and every probe would fail only after the health timeout.
    if health_path.chars().any(|c| c.is_control() || c == ' ') {
        return Err(invalid_path(
            "must not contain spaces or control characters: percent-encode them (%20, %0D, %0A)",
        ));
    }
    let response_timeout = run
        .response_timeout
        .unwrap_or_else(default_response_timeout);
    Ok(ReleaseConfig {
        build: build.command.filter(|c| !c.trim().is_empty()),
        build_timeout: build.timeout.unwrap_or(Duration::from_secs(600)),
        run: command,
        stop_timeout: run.stop_timeout.unwrap_or(Duration::from_secs(10)),
        drain_timeout: run.drain_timeout.unwrap_or(Duration::from_secs(30)),
        stream_drain_timeout: run
            .stream_drain_timeout
            .unwrap_or_else(default_stream_drain_timeout),
        response_timeout,
        health_path,
        health_timeout: health.timeout.unwrap_or(Duration::from_secs(30)),
        health_interval: health.interval.unwrap_or(Duration::from_millis(250)),
        env: merged.env,
        env_sources,
        plan: ResourcePlan {
            memory: plan.memory,
            cpu: plan.cpu,
            pids: plan.pids,
        },
        data,
        backup,
        mail,
    })
}

fn parse(text: &str) -> Result<AppFile, AppFileError> {
    let mut file: AppFile = toml::from_str(text).map_err(|e| AppFileError::Invalid {
        file: FILE_NAME,
        line: e
            .span()
            .map(|s| {
                text.as_bytes()[..s.start.min(text.len())]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count()
                    + 1
            })
            .unwrap_or(1),
        message: e.message().trim().to_owned(),
    })?;
    for key in file
        .env
        .keys()
        .chain(file.tiers.values().flat_map(|l| l.env.keys()))
        .chain(file.environments.values().flat_map(|l| l.env.keys()))
    {
        if let Err(message) = check_env_key(key) {
            return Err(AppFileError::Invalid {
                file: FILE_NAME,
                line: line_of(text, key),
                message,
            });
        }
    }
    let sections = std::iter::once(("data".to_owned(), file.data.as_mut()))
        .chain(
            file.tiers
                .iter_mut()
                .map(|(t, l)| (format!("tiers.{t}.data"), l.data.as_mut())),
        )
        .chain(
            file.environments
                .iter_mut()
                .map(|(e, l)| (format!("environments.{e}.data"), l.data.as_mut())),
        );
    for (prefix, section) in sections {
        if let Some(section) = section {
            check_data(text, &prefix, section)?;
        }
    }
    let backups = std::iter::once(("backup".to_owned(), file.backup.as_mut()))
        .chain(
            file.tiers
                .iter_mut()
                .map(|(t, l)| (format!("tiers.{t}.backup"), l.backup.as_mut())),
        )
        .chain(
            file.environments
                .iter_mut()
                .map(|(e, l)| (format!("environments.{e}.backup"), l.backup.as_mut())),
        );
    for (prefix, section) in backups {
        if let Some(section) = section {
            check_backup(text, &prefix, section)?;
        }
    }
    let mails = std::iter::once(("mail".to_owned(), file.mail.as_ref()))
        .chain(
            file.tiers
                .iter()
                .map(|(t, l)| (format!("tiers.{t}.mail"), l.mail.as_ref())),
        )
        .chain(
            file.environments
                .iter()
                .map(|(e, l)| (format!("environments.{e}.mail"), l.mail.as_ref())),
        );
    for (prefix, section) in mails {
        if let Some(section) = section {
            check_mail(text, &prefix, section)?;
        }
    }
    Ok(file)
}

/// The line (1-based) of byte `offset` of `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// An environment variable the app may set (in `[env]` or through `turnout config`): letters,
/// digits and `_`, not starting with a digit; `PORT` and `TURNOUT_*` are Turnout's (`config set`
/// also refuses the data's variables, see `plane::config`).
pub fn check_env_key(key: &str) -> Result<(), String> {
    let valid = !key.is_empty()
        && key.len() <= 128
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let shown: String = key.chars().take(128).collect();
    if !valid {
        return Err(format!(
            "env key '{shown}' is not allowed: use letters, digits and '_', not starting with a digit, at most 128 characters"
        ));
    }
    if key.starts_with("TURNOUT_") || key == "PORT" {
        return Err(format!(
            "env key '{shown}' is reserved: PORT and TURNOUT_* are set by Turnout for every instance; choose another name"
        ));
    }
    Ok(())
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map_or(1, |i| i + 1)
}

fn merge(into: &mut Layer, over: &Layer) {
    if let Some(b) = &over.build {
        let into = into.build.get_or_insert_with(Default::default);
        into.command = b.command.clone().or(into.command.take());
        into.timeout = b.timeout.or(into.timeout);
    }
    if let Some(r) = &over.run {
        let into = into.run.get_or_insert_with(Default::default);
        into.command = r.command.clone().or(into.command.take());
        into.stop_timeout = r.stop_timeout.or(into.stop_timeout);
        into.drain_timeout = r.drain_timeout.or(into.drain_timeout);
        into.stream_drain_timeout = r.stream_drain_timeout.or(into.stream_drain_timeout);
        into.response_timeout = r.response_timeout.or(into.response_timeout);
    }
    if let Some(h) = &over.health {
        let into = into.health.get_or_insert_with(Default::default);
        into.path = h.path.clone().or(into.path.take());
        into.timeout = h.timeout.or(into.timeout);
        into.interval = h.interval.or(into.interval);
    }
    if let Some(p) = &over.plan {
        let into = into.plan.get_or_insert_with(Default::default);
        into.memory = p.memory.or(into.memory);
        into.cpu = p.cpu.or(into.cpu);
        into.pids = p.pids.or(into.pids);
    }
    if let Some(d) = &over.data {
        let into = into.data.get_or_insert_with(Default::default);
        into.engine = d.engine.or(into.engine);
        // seed and seed_sql are one setting: a layer that names either replaces both.
        if d.seed.is_some() || d.seed_sql.is_some() {
            into.seed = d.seed.clone();
            into.seed_sql = d.seed_sql.clone();
        }
        into.migrate = d.migrate.clone().or(into.migrate.take());
        into.migrate_down = d.migrate_down.clone().or(into.migrate_down.take());
        into.reseed = d.reseed.clone().or(into.reseed.take());
        into.reseed_timezone = d.reseed_timezone.clone().or(into.reseed_timezone.take());
        for (table, columns) in &d.rules.tables {
            let rules = into.rules.tables.entry(table.clone()).or_default();
            rules.extend(columns.iter().map(|(c, r)| (c.clone(), *r)));
        }
    }
    if let Some(b) = &over.backup {
        merge_backup(into.backup.get_or_insert_with(Default::default), b);
    }
    if let Some(m) = &over.mail {
        merge_mail(into.mail.get_or_insert_with(Default::default), m);
    }
    into.env
        .extend(over.env.iter().map(|(k, v)| (k.clone(), v.clone())));
}

/// The command of a Procfile's `web:` process, if it has one.
fn procfile_web(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (name, cmd) = line.split_once(':')?;
        (name.trim() == "web" && !cmd.trim().is_empty()).then(|| cmd.trim().to_owned())
    })
}

/// Every duration key of the file and the range it accepts (the README's reference lists them).
/// Each has a `deserialize_with` function of its own name below; a new key is one rule and one
/// such function.
pub mod durations {
    use std::time::Duration;

    use turnout_model::duration::DurationRule;

    const SECOND: Duration = Duration::from_secs(1);
    const HOUR: Duration = Duration::from_secs(3600);

    pub const BUILD_TIMEOUT: DurationRule =
        DurationRule::new("build.timeout", SECOND, Duration::from_secs(24 * 3600));
    /// Some time for SIGTERM to be handled before the SIGKILL.
    pub const STOP_TIMEOUT: DurationRule =
        DurationRule::new("run.stop_timeout", Duration::from_millis(100), HOUR);
    /// 0 cuts a replaced release's requests at once.
    pub const DRAIN_TIMEOUT: DurationRule =
        DurationRule::new("run.drain_timeout", Duration::ZERO, HOUR);
    pub const STREAM_DRAIN_TIMEOUT: DurationRule =
        DurationRule::new("run.stream_drain_timeout", Duration::ZERO, HOUR);
    /// Under a second would fail ordinary requests on a busy machine; over a day is waiting
    /// forever by another name.
    pub const RESPONSE_TIMEOUT: DurationRule = DurationRule::new(
        "run.response_timeout",
        SECOND,
        Duration::from_secs(24 * 3600),
    );
    pub const HEALTH_TIMEOUT: DurationRule = DurationRule::new("health.timeout", SECOND, HOUR);
    /// 0 would probe in a busy loop; 10ms lets quick apps (and tests) go live quickly.
    pub const HEALTH_INTERVAL: DurationRule =
        DurationRule::new("health.interval", Duration::from_millis(10), HOUR);
}

fn build_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    bounded(d, &durations::BUILD_TIMEOUT)
}

fn stop_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    bounded(d, &durations::STOP_TIMEOUT)
}

fn drain_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    bounded(d, &durations::DRAIN_TIMEOUT)
}

fn stream_drain_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    bounded(d, &durations::STREAM_DRAIN_TIMEOUT)
}

fn response_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    bounded(d, &durations::RESPONSE_TIMEOUT)
}

fn health_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    bounded(d, &durations::HEALTH_TIMEOUT)
}

fn health_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    bounded(d, &durations::HEALTH_INTERVAL)
}

/// A duration as a string (`"500ms"`, `"0.5"`) or a number of seconds (`30`, `0.5`), checked
/// against its key's rule.
fn bounded<'de, D: Deserializer<'de>>(
    d: D,
    rule: &DurationRule,
) -> Result<Option<Duration>, D::Error> {
    let text = match Number::deserialize(d)? {
        Number::Int(n) => n.to_string(),
        // `Display` of an f64 never uses an exponent: 1e-3 is "0.001", which parses exactly.
        Number::Float(f) => f.to_string(),
        Number::Text(t) => t,
    };
    rule.parse(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Memory as `"512M"` or a byte count.
fn opt_memory<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let checked = match Number::deserialize(d)? {
        Number::Int(n) => u64::try_from(n)
            .map_err(|_| PlanField::Memory.invalid(&n.to_string()))
            .and_then(check_memory),
        Number::Float(f) => parse_memory(&f.to_string()),
        Number::Text(t) => parse_memory(&t),
    };
    checked.map(Some).map_err(serde::de::Error::custom)
}

/// CPU as `0.5`, `2` or `"0.5"`.
fn opt_cpu<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let checked = match Number::deserialize(d)? {
        // Exact for every value in range: 1024 is far below 2^53.
        Number::Int(n) => check_cpu(n as f64),
        Number::Float(f) => check_cpu(f),
        Number::Text(t) => parse_cpu(&t),
    };
    checked.map(Some).map_err(serde::de::Error::custom)
}

/// Processes as `256` or `"256"`.
fn opt_pids<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let checked = match Number::deserialize(d)? {
        Number::Int(n) => u64::try_from(n)
            .map_err(|_| PlanField::Pids.invalid(&n.to_string()))
            .and_then(check_pids),
        Number::Float(f) => parse_pids(&f.to_string()),
        Number::Text(t) => parse_pids(&t),
    };
    checked.map(Some).map_err(serde::de::Error::custom)
}

/// A plan value or a duration as TOML has it.
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Float(f64),
    Text(String),
}

#[cfg(test)]
mod tests {
    use turnout_data::{Engine, MaskRule};

    use super::*;

    fn env(name: &str) -> EnvName {
        EnvName::new(name).unwrap()
    }

    #[test]
    fn layers_resolve_base_then_tier_then_environment() {
        let text = r#"
[build]
command = "make"

[run]
command = "./server"

[health]
path = "/healthz"
timeout = "5s"
interval = "100ms"

[env]
MODE = "base"
COLOR = "blue"

[tiers.production.env]
MODE = "prod"

[tiers.production.run]
command = "./server --prod"

[environments.canary.env]
COLOR = "green"
"#;
        let prod = resolve(Some(text), None, Tier::Production, &env("canary")).unwrap();
        assert_eq!(prod.run, "./server --prod");
        assert_eq!(prod.build.as_deref(), Some("make"));
        assert_eq!(prod.env["MODE"], "prod");
        assert_eq!(prod.env["COLOR"], "green");
        assert_eq!(prod.env_sources["MODE"], ["env", "tiers.production.env"]);
        assert_eq!(
            prod.env_sources["COLOR"],
            ["env", "environments.canary.env"]
        );
        assert_eq!(prod.health_path, "/healthz");
        assert_eq!(prod.health_timeout, Duration::from_secs(5));
        assert_eq!(prod.health_interval, Duration::from_millis(100));

        let dev = resolve(Some(text), None, Tier::Development, &env("dev")).unwrap();
        assert_eq!(dev.run, "./server");
        assert_eq!(dev.env["MODE"], "base");
        assert_ne!(dev.build_fingerprint(), prod.build_fingerprint());
    }

    #[test]
    fn unknown_keys_name_the_file_line_and_key() {
        let text = "[run]\ncommand = \"x\"\n\n[biuld]\ncommand = \"make\"\n";
        let err = resolve(Some(text), None, Tier::Development, &env("dev"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("turnout.toml, line 4:"), "{err}");
        assert!(err.contains("biuld"), "{err}");

        let text = "[run]\ncomand = \"x\"\n";
        let err = resolve(Some(text), None, Tier::Development, &env("dev"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("comand"), "{err}");

        let text = "[tiers.prod.run]\ncommand = \"x\"\n";
        let err = resolve(Some(text), None, Tier::Development, &env("dev"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("prod"), "{err}");
    }

    #[test]
    fn bad_durations_and_env_keys_are_errors() {
        let err = resolve(
            Some("[run]\ncommand = \"x\"\n[health]\ntimeout = \"soon\"\n"),
            None,
            Tier::Development,
            &env("dev"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 4") && err.contains("soon"), "{err}");
        let err = resolve(
            Some("[run]\ncommand = \"x\"\n[env]\nPORT = \"1\"\n"),
            None,
            Tier::Development,
            &env("dev"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 4") && err.contains("PORT"), "{err}");
    }

    #[test]
    fn response_timeout_defaults_layers_and_is_bounded() {
        let base = resolve(
            Some("[run]\ncommand = \"x\"\n"),
            None,
            Tier::Staging,
            &env("s"),
        )
        .unwrap();
        assert_eq!(base.response_timeout, Duration::from_secs(60));
        let text = "[run]\ncommand = \"x\"\nresponse_timeout = \"2m\"\n\n[tiers.production.run]\nresponse_timeout = 5\n";
        let staging = resolve(Some(text), None, Tier::Staging, &env("s")).unwrap();
        assert_eq!(staging.response_timeout, Duration::from_secs(120));
        let prod = resolve(Some(text), None, Tier::Production, &env("p")).unwrap();
        assert_eq!(prod.response_timeout, Duration::from_secs(5));
        for value in ["\"500ms\"", "\"25h\"", "0"] {
            let text = format!("[run]\ncommand = \"x\"\n\nresponse_timeout = {value}\n");
            let err = resolve(Some(&text), None, Tier::Staging, &env("s"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("turnout.toml, line 4:")
                    && err.contains("run.response_timeout '")
                    && err.contains("between 1s and 24h"),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn health_paths_with_control_characters_are_refused() {
        for (path, why) in [
            (r#""/health\r\nX-Injected: 1""#, "control characters"),
            (r#""/a\tb""#, "control characters"),
            (r#""/a\u0000""#, "control characters"),
            (r#""/a b""#, "spaces"),
            (r#""healthz""#, "must start with '/'"),
        ] {
            let text = format!("[run]\ncommand = \"x\"\n[health]\npath = {path}\n");
            let err = resolve(Some(&text), None, Tier::Development, &env("dev"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("turnout.toml, line 4: health path \"") && err.contains(why),
                "{path}: {err}"
            );
            assert!(!err.contains('\n') && !err.contains('\r'), "{err}");
        }
        let text = "[run]\ncommand = \"x\"\n[health]\npath = \"/up%20now?x=1\"\n";
        let config = resolve(Some(text), None, Tier::Development, &env("dev")).unwrap();
        assert_eq!(config.health_path, "/up%20now?x=1");
    }

    #[test]
    fn procfile_web_line_is_enough() {
        let c = resolve(
            None,
            Some("worker: ./jobs\nweb: python3 app.py --port $PORT\n"),
            Tier::Staging,
            &env("staging"),
        )
        .unwrap();
        assert_eq!(c.run, "python3 app.py --port $PORT");
        assert_eq!(c.health_path, "/");
        assert_eq!(c.build, None);
        assert_eq!(
            resolve(None, Some("worker: x\n"), Tier::Staging, &env("s")).unwrap_err(),
            AppFileError::NoRunCommand
        );
    }

    #[test]
    fn plans_layer_field_by_field_and_the_environment_s_own_wins() {
        let text = r#"
[run]
command = "x"

[plan]
memory = "512M"
cpu = 0.5
pids = 256

[tiers.production.plan]
memory = "2G"
cpu = 2

[environments.canary.plan]
pids = "64"
"#;
        let dev = resolve(Some(text), None, Tier::Development, &env("dev")).unwrap();
        assert_eq!(
            dev.plan,
            ResourcePlan {
                memory: Some(512 << 20),
                cpu: Some(0.5),
                pids: Some(256),
            }
        );
        let canary = resolve(Some(text), None, Tier::Production, &env("canary")).unwrap();
        let file = ResourcePlan {
            memory: Some(2 << 30),
            cpu: Some(2.0),
            pids: Some(64),
        };
        assert_eq!(canary.plan, file);
        assert_eq!(dev.build_fingerprint(), canary.build_fingerprint());

        let own = ResourcePlan {
            memory: None,
            cpu: Some(0.25),
            pids: None,
        };
        assert_eq!(
            effective_plan(&own, &file),
            ResourcePlan {
                cpu: Some(0.25),
                ..file
            }
        );
        assert_eq!(effective_plan(&own, &ResourcePlan::default()), own);
        assert_eq!(
            effective_plan(&ResourcePlan::default(), &ResourcePlan::default()),
            ResourcePlan::default()
        );

        let none = resolve(
            Some("[run]\ncommand = \"x\"\n"),
            None,
            Tier::Production,
            &env("p"),
        );
        assert_eq!(none.unwrap().plan, ResourcePlan::default());
    }

    #[test]
    fn bad_plans_name_the_file_line_and_value() {
        for (text, line, needle) in [
            (
                "[plan]\nmemory = \"512X\"\n",
                2,
                "invalid memory '512X': write it like 512M or 2G (4M to 16T)",
            ),
            ("[plan]\nmemory = 1024\n", 2, "invalid memory '1024'"),
            ("[plan]\ncpu = 0\n", 2, "invalid cpu '0'"),
            ("[plan]\n\ncpu = 2000.5\n", 3, "invalid cpu '2000.5'"),
            ("[tiers.staging.plan]\npids = -1\n", 2, "invalid pids '-1'"),
            (
                "[plan]\npids = 99999999999999999999\n",
                2,
                "99999999999999999999",
            ),
            ("[plan]\nmemroy = \"1G\"\n", 2, "memroy"),
        ] {
            let text = format!("[run]\ncommand = \"x\"\n{text}");
            let err = resolve(Some(&text), None, Tier::Staging, &env("s"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("turnout.toml, line {}:", line + 2))
                    && err.contains(needle),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn durations_are_bounded_per_key_and_name_it() {
        let check = |section: &str, key: &str, value: &str| {
            let text =
                format!("[environments.dev.run]\ncommand = \"x\"\n[{section}]\n{key} = {value}\n");
            resolve(Some(&text), None, Tier::Development, &env("dev"))
        };
        // Overflowing, zero and absurd values: an error naming the key, line and range.
        for (section, key, value, range) in [
            (
                "health",
                "timeout",
                "\"99999999999999999h\"",
                "between 1s and 1h",
            ),
            ("health", "interval", "\"0s\"", "between 10ms and 1h"),
            (
                "health",
                "interval",
                "99999999999999999",
                "between 10ms and 1h",
            ),
            (
                "run",
                "stop_timeout",
                "\"99999999999999999h\"",
                "between 100ms and 1h",
            ),
            ("run", "drain_timeout", "-1", "between 0s and 1h"),
            ("run", "stream_drain_timeout", "1e300", "between 0s and 1h"),
            ("build", "timeout", "\"25h\"", "between 1s and 24h"),
            ("build", "timeout", "nan", "write it like \"500ms\""),
            ("build", "timeout", "\"1d\"", "write it like \"500ms\""),
        ] {
            let err = check(section, key, value).unwrap_err().to_string();
            assert!(
                err.starts_with("turnout.toml, line 4:")
                    && err.contains(&format!("{section}.{key} '"))
                    && err.contains(range),
                "{key} = {value}: {err}"
            );
        }
        // Numbers are seconds, fractions too, as strings or TOML numbers.
        for (value, want) in [
            ("0.5", Duration::from_millis(500)),
            ("\"0.5\"", Duration::from_millis(500)),
            ("2", Duration::from_secs(2)),
            ("\"1.5s\"", Duration::from_millis(1500)),
            ("\"10ms\"", Duration::from_millis(10)),
        ] {
            let config = check("health", "interval", value).unwrap();
            assert_eq!(config.health_interval, want, "{value}");
        }
        let config = check("run", "drain_timeout", "0").unwrap();
        assert_eq!(config.drain_timeout, Duration::ZERO);
    }
    #[test]
    fn data_settings_layer_like_the_others_and_leave_the_build_alone() {
        let text = r#"
[run]
command = "x"

[data]
seed_sql = "db/seed.sql"
migrate = "./migrate up"
reseed = "0 3 * * *"

[data.mask.users]
"*" = "keep"
email = "fake:email"

[data.mask."order lines"]
note = "fake:text"

[tiers.production.data]
engine = "postgres"
seed = "./load-fixtures"
reseed = ""

[tiers.production.data.mask.users]
email = "hash"
phone = "null"

[environments.canary.data]
seed_sql = "./db/canary.sql"
"#;
        let plain = resolve(
            Some("[run]\ncommand = \"x\"\n"),
            None,
            Tier::Development,
            &env("dev"),
        )
        .unwrap();
        assert_eq!(plain.data, DataConfig::default());
        assert_eq!(plain.data.engine, Engine::Sqlite);

        let dev = resolve(Some(text), None, Tier::Development, &env("dev")).unwrap();
        assert_eq!(dev.data.engine, Engine::Sqlite);
        assert_eq!(dev.data.seed, Some(Seed::SqlFile("db/seed.sql".into())));
        assert_eq!(dev.data.migrate.as_deref(), Some("./migrate up"));
        assert_eq!(dev.data.reseed.as_deref(), Some("0 3 * * *"));
        assert_eq!(
            dev.data.mask.rule("users", "email"),
            Some(MaskRule::Fake(turnout_data::FakeKind::Email))
        );
        assert_eq!(dev.data.mask.rule("users", "id"), Some(MaskRule::Keep));
        assert_eq!(
            dev.data.mask.rule("order lines", "note"),
            Some(MaskRule::Fake(turnout_data::FakeKind::Text))
        );
        assert_eq!(dev.data.mask.rule("order lines", "id"), None);

        let prod = resolve(Some(text), None, Tier::Production, &env("p")).unwrap();
        assert_eq!(prod.data.engine, Engine::Postgres);
        assert_eq!(
            prod.data.seed,
            Some(Seed::Command("./load-fixtures".into()))
        );
        assert_eq!(prod.data.migrate.as_deref(), Some("./migrate up"));
        assert_eq!(
            prod.data.reseed, None,
            "an empty override turns the schedule off"
        );
        assert_eq!(prod.data.mask.rule("users", "email"), Some(MaskRule::Hash));
        assert_eq!(prod.data.mask.rule("users", "phone"), Some(MaskRule::Null));
        assert_eq!(prod.data.mask.rule("users", "id"), Some(MaskRule::Keep));

        let canary = resolve(Some(text), None, Tier::Production, &env("canary")).unwrap();
        assert_eq!(
            canary.data.seed,
            Some(Seed::SqlFile("./db/canary.sql".into()))
        );
        assert_eq!(canary.data.engine, Engine::Postgres);

        // Data settings never change what a build produces.
        assert_eq!(plain.build_fingerprint(), dev.build_fingerprint());
        assert_eq!(dev.build_fingerprint(), prod.build_fingerprint());

        // Releases recorded before [data] existed read back with the defaults.
        let mut old = serde_json::to_value(&dev).unwrap();
        old.as_object_mut().unwrap().remove("data");
        let old: ReleaseConfig = serde_json::from_value(old).unwrap();
        assert_eq!(old.data, DataConfig::default());
        let round: ReleaseConfig =
            serde_json::from_str(&serde_json::to_string(&prod).unwrap()).unwrap();
        assert_eq!(round, prod);
    }

    #[test]
    fn bad_data_settings_name_the_line_key_and_fix() {
        for (data, line, needles) in [
            (
                "[data]\nengine = \"mysql\"\n",
                2,
                &["mysql", "sqlite", "postgres"][..],
            ),
            (
                "[data]\nseed = \"./fixtures\"\nseed_sql = \"db/seed.sql\"\n",
                3,
                &["data.seed_sql", "both set"][..],
            ),
            (
                "[data]\nseed_sql = \"/etc/shadow\"\n",
                2,
                &["data.seed_sql", "\"/etc/shadow\" is absolute"][..],
            ),
            (
                "[data]\nseed_sql = \"db/../../secret.sql\"\n",
                2,
                &["data.seed_sql", "leaves the repository"][..],
            ),
            ("[data]\nseed_sql = \".\"\n", 2, &["names no file"][..]),
            (
                "[data]\nreseed = \"every night\"\n",
                2,
                &["data.reseed", "\"every night\" is not valid", "five fields"][..],
            ),
            (
                "[tiers.qa.data]\nreseed = \"0 3 * * * * * *\"\n",
                2,
                &["tiers.qa.data.reseed"][..],
            ),
            (
                "[data.mask.users]\nid = \"keep\"\nemail = \"fake:address\"\n",
                3,
                &[
                    "data.mask.users.email",
                    "\"fake:address\"",
                    "\"fake:email\"",
                    "\"keep\"",
                ][..],
            ),
            (
                "[environments.canary.data.mask.users]\n\nemail = \"scramble\"\n",
                3,
                &["environments.canary.data.mask.users.email", "\"scramble\""][..],
            ),
            ("[data.mask.users]\nemail = 3\n", 2, &["string"][..]),
            ("[data]\nsed = \"x\"\n", 2, &["sed"][..]),
        ] {
            let text = format!("[run]\ncommand = \"x\"\n{data}");
            let err = resolve(Some(&text), None, Tier::Qa, &env("canary"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("turnout.toml, line {}:", line + 2)),
                "{data}: {err}"
            );
            for needle in needles {
                assert!(err.contains(needle), "{data}: {needle} not in {err}");
            }
        }
        let long = format!(
            "[data.mask.users]\n{} = \"keep\"\n",
            "c".repeat(MAX_MASK_NAME + 1)
        );
        let err = resolve(
            Some(&format!("[run]\ncommand = \"x\"\n{long}")),
            None,
            Tier::Qa,
            &env("q"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("1 to 255 bytes"), "{err}");
        // A tier may switch from a command to a file: one layer naming either replaces both.
        let text = "[run]\ncommand = \"x\"\n[data]\nseed = \"./f\"\n[tiers.qa.data]\nseed_sql = \"s.sql\"\n";
        let qa = resolve(Some(text), None, Tier::Qa, &env("q")).unwrap();
        assert_eq!(qa.data.seed, Some(Seed::SqlFile("s.sql".into())));
    }
}
