//! `[backup]` of `turnout.toml`: the environment's backup schedule and the command a recovery
//! drill runs against the restored copy, layered per tier and environment like the others. The
//! schedule's periods are read by the same rules as `turnout backup policy --schedule`.
use serde::{Deserialize, Serialize};
use toml::Spanned;
use turnout_data::backup::retention::EXPONENTIAL;
use turnout_model::Tier;

use super::{AppFileError, FILE_NAME, line_at};

/// `[backup]` as written; `parse` checks it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSection {
    /// `"exponential"`, `"none"` or a list of periods (`["1m", "1h", "1d"]`).
    pub schedule: Option<Spanned<toml::Value>>,
    pub drill_check: Option<Spanned<String>>,
    /// `schedule`, parsed (by `parse`).
    #[serde(skip)]
    pub periods: Option<Vec<u64>>,
}

/// The backup settings of one environment, resolved like the others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupConfig {
    /// The schedule's periods in seconds (empty: no scheduled backups); None: not set, the
    /// tier's default applies.
    pub schedule: Option<Vec<u64>>,
    /// A command a recovery drill runs in the restored scratch environment (like a
    /// migration), which must exit 0 for the drill to pass.
    pub drill_check: Option<String>,
}

/// The most periods a schedule may have.
pub const MAX_PERIODS: usize = 16;
/// The shortest and longest period (10 seconds, 366 days).
pub const MIN_PERIOD: u64 = 10;
pub const MAX_PERIOD: u64 = 366 * 86_400;
/// The longest `drill_check` command, in bytes.
pub const MAX_DRILL_CHECK: usize = 4096;

const HOW: &str = "write \"exponential\" (1m 2m 5m 10m 1h 3h 6h 1d), \"none\", or periods such as \"1m,1h,1d\" (each a whole number with s, m, h or d, from 10s to 366d, increasing)";

/// The schedule an environment of `tier` has when neither the CLI nor `turnout.toml` sets one:
/// production and staging the exponential schedule, the others none.
pub fn tier_default(tier: Tier) -> Vec<u64> {
    match tier {
        Tier::Production | Tier::Staging => EXPONENTIAL.to_vec(),
        _ => Vec::new(),
    }
}

/// One period: a whole number with a unit (`s`, `m`, `h`, `d`), in seconds.
pub fn parse_period(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let shown: String = t.chars().take(40).collect();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "period {shown:?} is not a whole number with a unit s, m, h or d (like \"10m\")"
            ));
        }
    };
    let value = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|s| (MIN_PERIOD..=MAX_PERIOD).contains(s))
        .ok_or_else(|| {
            format!("period {shown:?} is out of range: each period is from 10s to 366d")
        })?;
    Ok(value)
}

/// A list of periods, checked: 1 to 16 of them, strictly increasing.
pub fn parse_periods<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Vec<u64>, String> {
    let mut out: Vec<u64> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        if i >= MAX_PERIODS {
            return Err(format!(
                "a schedule has at most {MAX_PERIODS} periods; keep the ones whose ages matter"
            ));
        }
        let p = parse_period(item)?;
        if let Some(last) = out.last()
            && p <= *last
        {
            return Err(format!(
                "periods must increase: {} comes after {}",
                show_period(p),
                show_period(*last)
            ));
        }
        out.push(p);
    }
    if out.is_empty() {
        return Err(format!("the schedule names no period; {HOW}"));
    }
    Ok(out)
}

/// A schedule as the CLI writes it: `exponential`, `none` or `1m,5m,1h`.
pub fn parse_schedule(text: &str) -> Result<Vec<u64>, String> {
    match text.trim() {
        "exponential" => Ok(EXPONENTIAL.to_vec()),
        "none" => Ok(Vec::new()),
        t if t.len() > 400 => Err(format!("the schedule is too long; {HOW}")),
        t => parse_periods(t.split(',')).map_err(|e| format!("{e} ({HOW})")),
    }
}

/// A period as people write it: the largest unit that divides it (`1d`, `3h`, `10m`, `30s`).
pub fn show_period(secs: u64) -> String {
    match secs {
        s if s > 0 && s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        s if s > 0 && s.is_multiple_of(3600) => format!("{}h", s / 3600),
        s if s > 0 && s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Checks one `[backup]` layer and fills in its parsed schedule.
pub(super) fn check_backup(
    text: &str,
    prefix: &str,
    section: &mut BackupSection,
) -> Result<(), AppFileError> {
    let invalid = |offset: usize, message: String| AppFileError::Invalid {
        file: FILE_NAME,
        line: line_at(text, offset),
        message: format!("{prefix}.{message}"),
    };
    if let Some(schedule) = &section.schedule {
        let at = schedule.span().start;
        let periods = match schedule.get_ref() {
            toml::Value::String(s) if s == "exponential" => EXPONENTIAL.to_vec(),
            toml::Value::String(s) if s == "none" => Vec::new(),
            toml::Value::Array(items) => {
                let words: Option<Vec<&str>> = items.iter().map(toml::Value::as_str).collect();
                let words = words.ok_or_else(|| {
                    invalid(at, format!("schedule: every period is a string; {HOW}"))
                })?;
                parse_periods(words).map_err(|e| invalid(at, format!("schedule: {e}")))?
            }
            _ => return Err(invalid(at, format!("schedule: {HOW}"))),
        };
        section.periods = Some(periods);
    }
    if let Some(check) = &section.drill_check {
        let at = check.span().start;
        if check.get_ref().len() > MAX_DRILL_CHECK {
            return Err(invalid(
                at,
                format!("drill_check is longer than {MAX_DRILL_CHECK} bytes"),
            ));
        }
        if check.get_ref().contains('\0') {
            return Err(invalid(at, "drill_check has a NUL byte".to_owned()));
        }
    }
    Ok(())
}

/// Lays `over` (a tier's or environment's layer) over `into`, field by field.
pub(super) fn merge_backup(into: &mut BackupSection, over: &BackupSection) {
    if over.periods.is_some() {
        into.periods.clone_from(&over.periods);
        into.schedule.clone_from(&over.schedule);
    }
    if over.drill_check.is_some() {
        into.drill_check.clone_from(&over.drill_check);
    }
}

/// A merged `[backup]` as the settings it stands for; a blank `drill_check` is "not set".
pub(super) fn backup_config(section: BackupSection) -> BackupConfig {
    BackupConfig {
        schedule: section.periods,
        drill_check: section
            .drill_check
            .map(Spanned::into_inner)
            .filter(|c| !c.trim().is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_with_bounds_and_say_what_to_write() {
        assert_eq!(parse_schedule("exponential").unwrap(), EXPONENTIAL.to_vec());
        assert_eq!(parse_schedule("none").unwrap(), Vec::<u64>::new());
        assert_eq!(
            parse_schedule("10s, 1m,2h,1d").unwrap(),
            [10, 60, 7200, 86_400]
        );
        for (bad, needle) in [
            ("5s", "from 10s to 366d"),
            ("367d", "from 10s to 366d"),
            ("1m,1m", "must increase"),
            ("1h,1m", "must increase"),
            ("1w", "unit s, m, h or d"),
            ("", "unit s, m, h or d"),
            ("99999999999999999999d", "out of range"),
        ] {
            let e = parse_schedule(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
            assert!(e.contains("exponential"), "{bad}: {e}");
        }
        let many: Vec<String> = (1..=17).map(|i| format!("{}m", i)).collect();
        let e = parse_schedule(&many.join(",")).unwrap_err();
        assert!(e.contains("at most 16"), "{e}");
        let sixteen: Vec<String> = (1..=16).map(|i| format!("{}m", i)).collect();
        assert_eq!(parse_schedule(&sixteen.join(",")).unwrap().len(), 16);
        assert_eq!(show_period(86_400), "1d");
        assert_eq!(show_period(10_800), "3h");
        assert_eq!(show_period(120), "2m");
        assert_eq!(show_period(45), "45s");
    }

    #[test]
    fn backup_settings_layer_per_tier_and_environment_and_bad_ones_name_line_and_key() {
        let resolve = |text: &str, tier: Tier, env: &str| {
            super::super::resolve(Some(text), None, tier, &env.parse().unwrap())
        };
        let text = "[run]\ncommand = \"x\"\n[backup]\nschedule = \"none\"\ndrill_check = \"./check\"\n\
                    [tiers.production.backup]\nschedule = [\"1m\", \"1h\"]\n\
                    [environments.canary.backup]\ndrill_check = \"\"\n";
        let dev = resolve(text, Tier::Development, "dev").unwrap();
        assert_eq!(dev.backup.schedule, Some(vec![]));
        assert_eq!(dev.backup.drill_check.as_deref(), Some("./check"));
        let prod = resolve(text, Tier::Production, "prod").unwrap();
        assert_eq!(prod.backup.schedule, Some(vec![60, 3600]));
        assert_eq!(prod.backup.drill_check.as_deref(), Some("./check"));
        let canary = resolve(text, Tier::Production, "canary").unwrap();
        assert_eq!(canary.backup.schedule, Some(vec![60, 3600]));
        assert_eq!(canary.backup.drill_check, None, "blank turns it off");
        let plain = resolve("[run]\ncommand = \"x\"\n", Tier::Production, "prod").unwrap();
        assert_eq!(plain.backup, BackupConfig::default());
        for (bad, line, needles) in [
            (
                "[run]\ncommand = \"x\"\n[backup]\nschedule = [\"1h\", \"1m\"]\n",
                4,
                &["backup.schedule", "must increase"][..],
            ),
            (
                "[run]\ncommand = \"x\"\n[backup]\nscheduel = \"none\"\n",
                4,
                &["unknown field", "scheduel"][..],
            ),
            (
                "[run]\ncommand = \"x\"\n[tiers.staging.backup]\nschedule = 5\n",
                4,
                &["tiers.staging.backup.schedule", "exponential"][..],
            ),
            (
                "[run]\ncommand = \"x\"\n[environments.e.backup]\nschedule = [\"5s\"]\n",
                4,
                &["environments.e.backup.schedule", "from 10s to 366d"][..],
            ),
        ] {
            let e = resolve(bad, Tier::Staging, "e").unwrap_err();
            let AppFileError::Invalid {
                line: at, message, ..
            } = &e
            else {
                panic!("{e}");
            };
            assert_eq!(*at, line, "{bad}: {e}");
            for n in needles {
                assert!(message.contains(n), "{bad}: {e}");
            }
        }
    }
}
