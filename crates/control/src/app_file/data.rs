//! `[data]` of `turnout.toml`: the environment's database engine, its seed, migrations, reseed
//! schedule and masking rules, each checked where it is written.
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use turnout_data::{Engine, MaskRule, MaskRules};
use turnout_model::MAX_CRON_LEN;

use super::{AppFileError, FILE_NAME, line_at, line_of};

/// `[data]`: the environment's database and where its data comes from. Values keep their place
/// in the file so that a bad one is reported at its own line; `parse` checks them all.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub engine: Option<Engine>,
    pub seed: Option<Spanned<String>>,
    pub seed_sql: Option<Spanned<String>>,
    pub migrate: Option<String>,
    /// Reverts what this release's `migrate` did to the schema, keeping the data: what
    /// `turnout rollback --with-data` runs instead of restoring a snapshot.
    pub migrate_down: Option<String>,
    pub reseed: Option<Spanned<String>>,
    /// The IANA time zone `reseed` is read in (UTC when unset).
    pub reseed_timezone: Option<Spanned<String>>,
    /// `[data.mask.TABLE]`: COLUMN (or `"*"`) = RULE, as written.
    #[serde(default)]
    pub mask: BTreeMap<String, BTreeMap<String, Spanned<String>>>,
    /// `mask`, parsed (by `parse`).
    #[serde(skip)]
    pub rules: MaskRules,
}

/// The most masking rules one layer may have (every column of a large schema fits).
pub const MAX_MASK_RULES: usize = 10_000;
/// The longest table or column name a masking rule may name, in bytes.
pub const MAX_MASK_NAME: usize = 255;
/// The longest `seed_sql` path, in bytes.
pub const MAX_SEED_PATH: usize = 1024;

/// The data settings of one environment, resolved like the others. None of them shapes the
/// build: they are not part of [`ReleaseConfig::build_fingerprint`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    pub engine: Engine,
    pub seed: Option<Seed>,
    pub migrate: Option<String>,
    /// Run by `turnout rollback --with-data` from this release instead of restoring the
    /// snapshot taken before it migrated (the data is kept).
    #[serde(default)]
    pub migrate_down: Option<String>,
    /// A cron expression: when the environment is re-seeded.
    pub reseed: Option<String>,
    /// The IANA time zone `reseed` is read in.
    #[serde(default = "utc")]
    pub reseed_timezone: String,
    pub mask: MaskRules,
}

fn utc() -> String {
    "UTC".to_owned()
}

impl Default for DataConfig {
    fn default() -> DataConfig {
        DataConfig {
            engine: Engine::Sqlite,
            seed: None,
            migrate: None,
            migrate_down: None,
            reseed: None,
            reseed_timezone: utc(),
            mask: MaskRules::default(),
        }
    }
}

/// Where seed data comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seed {
    /// A command run like the build, in the release directory, with the environment's
    /// `DATABASE_URL`.
    Command(String),
    /// A SQL file, relative to the release directory (checked: no absolute path, no `..`).
    SqlFile(PathBuf),
}

/// A checked, merged `[data]` as the settings it stands for; empty strings are "not set" (so
/// an override can turn a seed or a reseed schedule off).
pub(super) fn data_config(section: DataSection) -> DataConfig {
    let text =
        |v: Option<Spanned<String>>| v.map(Spanned::into_inner).filter(|v| !v.trim().is_empty());
    let seed = match (text(section.seed), text(section.seed_sql)) {
        (Some(command), _) => Some(Seed::Command(command)),
        (None, Some(file)) => Some(Seed::SqlFile(PathBuf::from(file))),
        (None, None) => None,
    };
    DataConfig {
        engine: section.engine.unwrap_or(Engine::Sqlite),
        seed,
        migrate: section.migrate.filter(|m| !m.trim().is_empty()),
        migrate_down: section.migrate_down.filter(|m| !m.trim().is_empty()),
        reseed: text(section.reseed),
        reseed_timezone: text(section.reseed_timezone).unwrap_or_else(utc),
        mask: section.rules,
    }
}

/// Checks one `[data]` layer and fills in its parsed mask rules.
pub(super) fn check_data(
    text: &str,
    prefix: &str,
    data: &mut DataSection,
) -> Result<(), AppFileError> {
    let invalid = |at: &Spanned<String>, message: String| AppFileError::Invalid {
        file: FILE_NAME,
        line: line_at(text, at.span().start),
        message: format!("{prefix}.{message}"),
    };
    if let (Some(_), Some(file)) = (set(&data.seed), set(&data.seed_sql)) {
        return Err(invalid(
            file,
            "seed_sql: seed and seed_sql are both set; keep one (seed runs a command, seed_sql runs a SQL file)".into(),
        ));
    }
    if let Some(file) = set(&data.seed_sql) {
        check_seed_path(file.get_ref()).map_err(|why| invalid(file, format!("seed_sql {why}")))?;
    }
    if let Some(cron) = set(&data.reseed) {
        check_cron(cron.get_ref()).map_err(|why| invalid(cron, format!("reseed: {why}")))?;
    }
    if let Some(zone) = set(&data.reseed_timezone) {
        jiff::tz::TimeZone::get(zone.get_ref()).map_err(|_| {
            let shown: String = zone.get_ref().chars().take(64).collect();
            invalid(
                zone,
                format!("reseed_timezone: unknown time zone {shown:?}; use an IANA name such as Europe/Berlin, America/New_York or UTC"),
            )
        })?;
    }
    let count: usize = data.mask.values().map(BTreeMap::len).sum();
    if count > MAX_MASK_RULES {
        return Err(AppFileError::Invalid {
            file: FILE_NAME,
            line: line_of(text, "mask"),
            message: format!(
                "{prefix}.mask has {count} rules; at most {MAX_MASK_RULES} are accepted (use \"*\" for a table's other columns)"
            ),
        });
    }
    let mut rules = MaskRules::default();
    for (table, columns) in &data.mask {
        for (column, rule) in columns {
            let name = |n: &str| n.chars().take(64).collect::<String>();
            if table.is_empty()
                || column.is_empty()
                || table.len() > MAX_MASK_NAME
                || column.len() > MAX_MASK_NAME
            {
                return Err(invalid(
                    rule,
                    format!(
                        "mask.{}.{}: table and column names have 1 to {MAX_MASK_NAME} bytes",
                        name(table),
                        name(column)
                    ),
                ));
            }
            let parsed = MaskRule::from_str(rule.get_ref())
                .map_err(|why| invalid(rule, format!("mask.{table}.{column}: {why}")))?;
            rules
                .tables
                .entry(table.clone())
                .or_default()
                .insert(column.clone(), parsed);
        }
    }
    data.rules = rules;
    Ok(())
}

/// A value that is there and not blank.
fn set(v: &Option<Spanned<String>>) -> Option<&Spanned<String>> {
    v.as_ref().filter(|v| !v.get_ref().trim().is_empty())
}

/// A seed file's path: relative to the release directory and inside it.
fn check_seed_path(path: &str) -> Result<(), String> {
    let shown = format!("{:?}", path.chars().take(128).collect::<String>());
    if path.len() > MAX_SEED_PATH {
        return Err(format!("{shown} is longer than {MAX_SEED_PATH} bytes"));
    }
    if path.chars().any(char::is_control) {
        return Err(format!("{shown} has control characters"));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(format!(
            "{shown} is absolute: give a path relative to the repository root, like \"db/seed.sql\""
        ));
    }
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "{shown} leaves the repository (a \"..\" component): give a path inside it, like \"db/seed.sql\""
        ));
    }
    if !p.components().any(|c| matches!(c, Component::Normal(_))) {
        return Err(format!("{shown} names no file"));
    }
    Ok(())
}

/// A reseed schedule: a cron expression croner reads (as for `turnout pipeline schedule`).
fn check_cron(cron: &str) -> Result<(), String> {
    if cron.len() > MAX_CRON_LEN {
        return Err(format!(
            "the cron expression is {} characters long; at most {MAX_CRON_LEN} are accepted",
            cron.len()
        ));
    }
    croner::Cron::from_str(cron).map(|_| ()).map_err(|e| {
        format!(
            "the cron expression {cron:?} is not valid ({e}); write five fields (minute hour day-of-month month day-of-week, for example \"0 3 * * *\") or six with seconds first"
        )
    })
}
