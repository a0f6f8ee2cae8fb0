//! Durations as people write them in settings — `"500ms"`, `"30s"`, `"2m"`, `"1h"`, or a number
//! of seconds (`30`, `0.5`) — parsed exactly (no float rounding, no overflow) and bounded per
//! setting. Each setting is one [`DurationRule`]: its name, as the error shows it, and its
//! allowed range. A new setting is one more rule.
use std::time::Duration;

/// How to write a duration, shown with every refusal.
pub const DURATION_HINT: &str =
    "write it like \"500ms\", \"30s\", \"2m\", \"1h\" or a number of seconds such as 0.5";

/// One duration setting: its name (`health.interval`) and the range it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRule {
    pub key: &'static str,
    pub min: Duration,
    pub max: Duration,
}

/// A duration that is not valid for its setting: names the setting, what was given (cut at 40
/// characters) and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid {key} '{input}': {DURATION_HINT}")]
    Format { key: &'static str, input: String },
    #[error("{key} '{input}' is out of range: it must be between {} and {}", show(*min), show(*max))]
    Range {
        key: &'static str,
        input: String,
        min: Duration,
        max: Duration,
    },
}

impl DurationRule {
    pub const fn new(key: &'static str, min: Duration, max: Duration) -> DurationRule {
        DurationRule { key, min, max }
    }

    /// Parse `text` (a number with an optional unit `ms`, `s`, `m` or `h`) and check its range.
    pub fn parse(&self, text: &str) -> Result<Duration, DurationError> {
        let s = text.trim();
        let (negative, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let unit_ns: u128 = match unit {
            "ms" => 1_000_000,
            "" | "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(self.format(text)),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(self.format(text));
        }
        if negative {
            return Err(self.range(text));
        }
        // Only digits are left: what fails from here on is a number too large for any range.
        let nanos = nanos(whole, fraction, unit_ns).ok_or_else(|| self.range(text))?;
        let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| self.range(text))?;
        let duration = Duration::new(secs, (nanos % 1_000_000_000) as u32);
        if (self.min..=self.max).contains(&duration) {
            Ok(duration)
        } else {
            Err(self.range(text))
        }
    }

    fn format(&self, input: &str) -> DurationError {
        DurationError::Format {
            key: self.key,
            input: shown(input),
        }
    }

    fn range(&self, input: &str) -> DurationError {
        DurationError::Range {
            key: self.key,
            input: shown(input),
            min: self.min,
            max: self.max,
        }
    }
}

/// `whole.fraction` × `unit_ns` in nanoseconds (fractions below a nanosecond are dropped), or
/// `None` when it does not fit.
fn nanos(whole: &str, fraction: &str, unit_ns: u128) -> Option<u128> {
    let mut n: u128 = 0;
    for d in whole.bytes() {
        n = n.checked_mul(10)?.checked_add(u128::from(d - b'0'))?;
    }
    n = n.checked_mul(unit_ns)?;
    // 18 digits are finer than a nanosecond of an hour, and 10^18 × 3.6 × 10^12 fits a u128.
    let (mut num, mut den) = (0u128, 1u128);
    for d in fraction.bytes().take(18) {
        num = num * 10 + u128::from(d - b'0');
        den *= 10;
    }
    n.checked_add(num * unit_ns / den)
}

/// The input as an error shows it: cut at 40 characters, control characters escaped.
fn shown(input: &str) -> String {
    const SHOWN: usize = 40;
    let mut out: String = input
        .chars()
        .take(SHOWN)
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    if input.chars().count() > SHOWN {
        out.push('…');
    }
    out
}

/// A duration the way settings write it: `1h`, `2m`, `30s`, `250ms`, else seconds with a
/// fraction (`1.5s`).
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}s", d.as_secs_f64())
    } else if ms == 0 {
        "0s".into()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: DurationRule = DurationRule::new(
        "health.interval",
        Duration::from_millis(10),
        Duration::from_secs(3600),
    );

    #[test]
    fn units_fractions_and_bare_numbers() {
        for (text, want) in [
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("7", Duration::from_secs(7)),
            ("7s", Duration::from_secs(7)),
            ("0.5", Duration::from_millis(500)),
            (" 0.3s ", Duration::from_millis(300)),
            ("1.5m", Duration::from_secs(90)),
            (".25", Duration::from_millis(250)),
            ("2.", Duration::from_secs(2)),
            ("10.5ms", Duration::from_micros(10_500)),
            ("0.0100000000000000000001", Duration::from_millis(10)),
        ] {
            assert_eq!(RULE.parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_formats_name_the_key_and_how_to_write_it() {
        for text in [
            "soon", "1d", "", ".", "1..2", "1.2.3s", "5 s", "ms", "0x10", "1e3",
        ] {
            let err = RULE.parse(text).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("invalid health.interval '{}': {DURATION_HINT}", text.trim()),
                "{text}"
            );
        }
    }

    #[test]
    fn out_of_range_values_never_overflow_and_say_the_range() {
        for text in [
            "0s",
            "0",
            "9ms",
            "-5",
            "-0.5s",
            "1.001h",
            "3601",
            "99999999999999999h",
            "18446744073709551616",
            &"9".repeat(100),
        ] {
            let err = RULE.parse(text).unwrap_err().to_string();
            assert!(
                err.starts_with("health.interval '")
                    && err.ends_with("is out of range: it must be between 10ms and 1h"),
                "{text}: {err}"
            );
        }
        let long = RULE.parse(&"9".repeat(100)).unwrap_err().to_string();
        assert!(long.contains(&format!("'{}…'", "9".repeat(40))), "{long}");
        let control = RULE.parse("1\n2d").unwrap_err().to_string();
        assert!(control.contains("'1\\n2d'"), "{control}");
        assert_eq!(RULE.parse("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(RULE.parse("1h"), Ok(Duration::from_secs(3600)));
    }

    proptest::proptest! {
        /// The parser against arithmetic: every whole number of milliseconds, written in any
        /// unit it divides (or as a decimal fraction of a second), parses to itself, or is out
        /// of range exactly when the rule says so.
        #[test]
        fn written_durations_parse_to_themselves(ms in 0u64..10_000_000, unit in 0usize..5) {
            let want = Duration::from_millis(ms);
            let text = match unit {
                0 => format!("{ms}ms"),
                1 => format!("{}.{:03}", ms / 1000, ms % 1000),
                2 => format!("{}.{:03}s", ms / 1000, ms % 1000),
                3 => format!("{}m", ms / 60_000),
                _ => format!("{}h", ms / 3_600_000),
            };
            let want = match unit {
                3 => Duration::from_secs(ms / 60_000 * 60),
                4 => Duration::from_secs(ms / 3_600_000 * 3600),
                _ => want,
            };
            let parsed = RULE.parse(&text);
            if (RULE.min..=RULE.max).contains(&want) {
                proptest::prop_assert_eq!(parsed, Ok(want));
            } else {
                let is_range = matches!(parsed, Err(DurationError::Range { .. }));
                proptest::prop_assert!(is_range, "{}: {:?}", text, parsed);
            }
        }

        /// Nothing panics, and whatever is accepted is in range.
        #[test]
        fn any_text_is_parsed_or_refused(text in "[0-9.a-z -]{0,30}") {
            if let Ok(d) = RULE.parse(&text) {
                proptest::prop_assert!((RULE.min..=RULE.max).contains(&d));
            }
        }
    }

    #[test]
    fn shown_like_settings_write_them() {
        assert_eq!(show(Duration::from_secs(3600)), "1h");
        assert_eq!(show(Duration::from_secs(120)), "2m");
        assert_eq!(show(Duration::from_secs(30)), "30s");
        assert_eq!(show(Duration::from_millis(250)), "250ms");
        assert_eq!(show(Duration::ZERO), "0s");
        assert_eq!(show(Duration::from_micros(1500)), "0.0015s");
    }
}
