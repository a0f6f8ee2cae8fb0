//! Resource plans as people write them — memory `512M`, CPU `0.5` (cores), processes `256` —
//! parsed and bounded here, once, for the CLI, the API and `turnout.toml`, and shown the same
//! way everywhere (`memory 512 MiB, cpu 0.5, pids none`).
use serde::{Deserialize, Serialize};

/// An environment's resource limits. Unset fields are unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourcePlan {
    /// Memory of all its processes together, in bytes; over it the kernel kills one and
    /// Turnout restarts the instance (`env show` says `OOM`).
    #[serde(default)]
    pub memory: Option<u64>,
    /// CPU share, in cores (`0.5`: half of one core's time), between 0.01 and 1024.
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Processes and threads at most, between 1 and 4,194,304.
    #[serde(default)]
    pub pids: Option<u64>,
}

/// What an environment uses now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceUsage {
    /// Memory of its instance's processes (the cgroup's), in bytes.
    pub memory: Option<u64>,
    /// Its instance's processes and threads.
    pub pids: Option<u64>,
    /// CPU time its instance has used, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Bytes under its storage directory.
    pub storage: Option<u64>,
}

/// `POST /api/v1/apps/{app}/envs/{env}/plan`: change the resource plan. Each field: a value
/// sets it, `"none"` clears it, absent leaves it as it is. Memory as `512M`, `2G`, `1048576`;
/// CPU as `0.5`; pids as `256`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePlan {
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub cpu: Option<String>,
    #[serde(default)]
    pub pids: Option<String>,
}

/// 4 MiB: below this not even a shell starts.
pub const MEMORY_MIN: u64 = 4 << 20;
/// 16 TiB.
pub const MEMORY_MAX: u64 = 16 << 40;
pub const CPU_MIN: f64 = 0.01;
pub const CPU_MAX: f64 = 1024.0;
pub const PIDS_MIN: u64 = 1;
/// Linux's own ceiling (`kernel.pid_max` at most 2^22).
pub const PIDS_MAX: u64 = 4_194_304;

/// The word that clears a setting (`--memory none`, `{"memory": "none"}`).
pub const NONE: &str = "none";

/// One resource of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanField {
    Memory,
    Cpu,
    Pids,
}

impl PlanField {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Cpu => "cpu",
            Self::Pids => "pids",
        }
    }

    /// How to write a valid value, with its bounds.
    pub fn hint(self) -> &'static str {
        match self {
            Self::Memory => "write it like 512M or 2G (4M to 16T)",
            Self::Cpu => "write it like 0.5 or 2, in cores (0.01 to 1024)",
            Self::Pids => "write it like 256 (1 to 4194304)",
        }
    }

    /// Check `text` as a setting of this field: a value, or `none`. The CLI checks its flags
    /// with this before sending them; the server parses them again with [`ResourcePlan::apply`].
    pub fn check_setting(self, text: &str) -> Result<(), PlanError> {
        if text.trim() == NONE {
            return Ok(());
        }
        match self {
            Self::Memory => parse_memory(text).map(drop),
            Self::Cpu => parse_cpu(text).map(drop),
            Self::Pids => parse_pids(text).map(drop),
        }
    }

    /// The error for `input` given as this field (shown cut at 40 characters).
    pub fn invalid(self, input: &str) -> PlanError {
        const SHOWN: usize = 40;
        let mut shown: String = input.chars().take(SHOWN).collect();
        if input.chars().count() > SHOWN {
            shown.push('…');
        }
        PlanError {
            field: self,
            input: shown,
        }
    }
}

/// A value that is not a valid setting: names the field, what was given (cut at 40
/// characters) and how to write it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {} '{input}': {}", field.as_str(), field.hint())]
pub struct PlanError {
    pub field: PlanField,
    pub input: String,
}

/// Memory: a byte count, or a whole number with `K`, `M`, `G` or `T` (binary units; an `i`
/// and/or `B` may follow: `64Mi`, `64MB`, `64MiB` are all 64 × 2^20), 4 MiB to 16 TiB.
pub fn parse_memory(text: &str) -> Result<u64, PlanError> {
    let err = || PlanField::Memory.invalid(text);
    let s = text.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let number: u64 = number.parse().map_err(|_| err())?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(err()),
    };
    let bytes = number.checked_mul(1 << shift).ok_or_else(err)?;
    check_memory(bytes).map_err(|_| err())
}

pub fn check_memory(bytes: u64) -> Result<u64, PlanError> {
    if (MEMORY_MIN..=MEMORY_MAX).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(PlanField::Memory.invalid(&bytes.to_string()))
    }
}

/// CPU in cores: a plain decimal (`0.5`, `2`, `1.25`), 0.01 to 1024.
pub fn parse_cpu(text: &str) -> Result<f64, PlanError> {
    let err = || PlanField::Cpu.invalid(text);
    let s = text.trim();
    // Only digits and one point: f64's own parser would also take `inf`, `NaN` and `1e3`.
    let plain = s.chars().any(|c| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_digit() || c == '.')
        && s.matches('.').count() <= 1;
    if !plain {
        return Err(err());
    }
    let cores: f64 = s.parse().map_err(|_| err())?;
    check_cpu(cores).map_err(|_| err())
}

pub fn check_cpu(cores: f64) -> Result<f64, PlanError> {
    if cores.is_finite() && (CPU_MIN..=CPU_MAX).contains(&cores) {
        Ok(cores)
    } else {
        Err(PlanField::Cpu.invalid(&cores.to_string()))
    }
}

/// Processes and threads at most: a whole number, 1 to 4194304.
pub fn parse_pids(text: &str) -> Result<u64, PlanError> {
    let s = text.trim();
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) {
        return Err(PlanField::Pids.invalid(text));
    }
    let n: u64 = s.parse().map_err(|_| PlanField::Pids.invalid(text))?;
    check_pids(n).map_err(|_| PlanField::Pids.invalid(text))
}

pub fn check_pids(n: u64) -> Result<u64, PlanError> {
    if (PIDS_MIN..=PIDS_MAX).contains(&n) {
        Ok(n)
    } else {
        Err(PlanField::Pids.invalid(&n.to_string()))
    }
}

/// `None` for `none`, else the parsed value.
fn setting<T>(
    text: &str,
    parse: impl FnOnce(&str) -> Result<T, PlanError>,
) -> Result<Option<T>, PlanError> {
    if text.trim() == NONE {
        Ok(None)
    } else {
        parse(text).map(Some)
    }
}

impl ResourcePlan {
    /// This plan with `update` applied: a value sets its field, `none` clears it, an absent
    /// field stays as it is.
    pub fn apply(&self, update: &UpdatePlan) -> Result<ResourcePlan, PlanError> {
        let mut plan = *self;
        if let Some(text) = &update.memory {
            plan.memory = setting(text, parse_memory)?;
        }
        if let Some(text) = &update.cpu {
            plan.cpu = setting(text, parse_cpu)?;
        }
        if let Some(text) = &update.pids {
            plan.pids = setting(text, parse_pids)?;
        }
        Ok(plan)
    }

    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.cpu.is_none() && self.pids.is_none()
    }

    /// `none` when nothing is set, else every field: `memory 512 MiB, cpu 0.5, pids none`.
    pub fn describe(&self) -> String {
        if self.is_empty() {
            return NONE.to_owned();
        }
        let or_none = |v: Option<String>| v.unwrap_or_else(|| NONE.to_owned());
        format!(
            "memory {}, cpu {}, pids {}",
            or_none(self.memory.map(format_bytes)),
            or_none(self.cpu.map(|c| c.to_string())),
            or_none(self.pids.map(|p| p.to_string())),
        )
    }
}

impl UpdatePlan {
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.cpu.is_none() && self.pids.is_none()
    }
}

/// Bytes for people, in binary units: `900 B`, `512 MiB`, `1.2 MiB` (one decimal unless whole).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut unit = 0;
    let mut scale: u64 = 1024;
    while unit + 1 < UNITS.len() && bytes / scale >= 1024 {
        unit += 1;
        scale *= 1024;
    }
    if bytes.is_multiple_of(scale) {
        format!("{} {}", bytes / scale, UNITS[unit])
    } else {
        // Precision lost in the cast only matters beyond 2^53 bytes (8 PiB).
        format!("{:.1} {}", bytes as f64 / scale as f64, UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_takes_bytes_and_binary_units() {
        assert_eq!(parse_memory("512M"), Ok(512 << 20));
        assert_eq!(parse_memory("2G"), Ok(2 << 30));
        assert_eq!(parse_memory("64Mi"), Ok(64 << 20));
        assert_eq!(parse_memory("64MiB"), Ok(64 << 20));
        assert_eq!(parse_memory("64mb"), Ok(64 << 20));
        assert_eq!(parse_memory("4096k"), Ok(4 << 20));
        assert_eq!(parse_memory("16T"), Ok(16 << 40));
        assert_eq!(parse_memory("4194304"), Ok(4 << 20));
    }

    #[test]
    fn memory_out_of_bounds_or_malformed_is_a_clear_error() {
        for bad in [
            "512X",
            "",
            "M",
            "-1M",
            "1.5G",
            "3M",
            "17T",
            "4194303",
            "99999999999999999999T",
            "18446744073709551615T",
            "none",
        ] {
            let err = parse_memory(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid memory '{bad}'"))
                    && err.ends_with("write it like 512M or 2G (4M to 16T)"),
                "{bad}: {err}"
            );
        }
        let long = "9".repeat(100);
        let err = parse_memory(&long).unwrap_err().to_string();
        assert!(err.contains(&format!("'{}…'", "9".repeat(40))), "{err}");
    }

    #[test]
    fn cpu_is_a_plain_decimal_in_range() {
        assert_eq!(parse_cpu("0.5"), Ok(0.5));
        assert_eq!(parse_cpu("2"), Ok(2.0));
        assert_eq!(parse_cpu("0.01"), Ok(0.01));
        assert_eq!(parse_cpu("1024"), Ok(1024.0));
        for bad in [
            "0", "0.001", "1025", "-1", "inf", "NaN", "1e3", "1.2.3", ".", "", "1e400",
        ] {
            let err = parse_cpu(bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid cpu '{bad}'")), "{err}");
        }
        assert!(check_cpu(f64::NAN).is_err());
    }

    #[test]
    fn pids_are_whole_and_in_range() {
        assert_eq!(parse_pids("256"), Ok(256));
        assert_eq!(parse_pids("4194304"), Ok(4_194_304));
        for bad in [
            "0",
            "-1",
            "+5",
            "4194305",
            "1.5",
            "99999999999999999999999",
            "",
        ] {
            let err = parse_pids(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid pids '{bad}'")) && err.contains("(1 to 4194304)"),
                "{err}"
            );
        }
    }

    #[test]
    fn an_update_sets_clears_and_leaves_fields() {
        let plan = ResourcePlan {
            memory: Some(512 << 20),
            cpu: Some(0.5),
            pids: None,
        };
        let update = UpdatePlan {
            memory: Some("none".into()),
            cpu: None,
            pids: Some("64".into()),
        };
        assert_eq!(
            plan.apply(&update),
            Ok(ResourcePlan {
                memory: None,
                cpu: Some(0.5),
                pids: Some(64),
            })
        );
        let bad = UpdatePlan {
            cpu: Some("0".into()),
            ..UpdatePlan::default()
        };
        assert_eq!(plan.apply(&bad).unwrap_err().field, PlanField::Cpu);
        assert!(PlanField::Memory.check_setting("none").is_ok());
        assert!(PlanField::Pids.check_setting("-1").is_err());
    }

    #[test]
    fn plans_and_sizes_read_the_same_everywhere() {
        assert_eq!(ResourcePlan::default().describe(), "none");
        let plan = ResourcePlan {
            memory: Some(512 << 20),
            cpu: Some(0.5),
            pids: None,
        };
        assert_eq!(plan.describe(), "memory 512 MiB, cpu 0.5, pids none");
        assert_eq!(format_bytes(900), "900 B");
        assert_eq!(format_bytes(1024), "1 KiB");
        assert_eq!(format_bytes(1_258_291), "1.2 MiB");
        assert_eq!(format_bytes(16 << 40), "16 TiB");
        assert_eq!(format_bytes(u64::MAX), "16384.0 PiB");
    }
}
