//! When an idle environment sleeps: `turnout env update APP/ENV --sleep-after 15m|never|default`.
//! A sleeping environment's instance is stopped; the next request to its URL (or a domain bound
//! to it) wakes it and waits until it is healthy.
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Tier;
use crate::duration::{DURATION_HINT, DurationRule, show};

/// The range of `--sleep-after`: from a second (tests, demos) to a week.
pub const SLEEP_AFTER: DurationRule = DurationRule::new(
    "sleep-after",
    Duration::from_secs(1),
    Duration::from_secs(7 * 24 * 3600),
);

/// How long a test environment stays idle before it sleeps, unless set otherwise.
pub const TEST_SLEEP_AFTER: Duration = Duration::from_secs(30 * 60);

/// After how long without a request an environment sleeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SleepAfter {
    #[default]
    Never,
    After(Duration),
}

impl SleepAfter {
    /// What a tier's environments do unless set: test environments sleep after 30 minutes,
    /// the others never.
    pub fn tier_default(tier: Tier) -> SleepAfter {
        match tier {
            Tier::Test => SleepAfter::After(TEST_SLEEP_AFTER),
            _ => SleepAfter::Never,
        }
    }

    pub fn duration(self) -> Option<Duration> {
        match self {
            SleepAfter::Never => None,
            SleepAfter::After(d) => Some(d),
        }
    }
}

impl fmt::Display for SleepAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SleepAfter::Never => f.write_str("never"),
            SleepAfter::After(d) => f.write_str(&show(*d)),
        }
    }
}

impl std::str::FromStr for SleepAfter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "never" {
            return Ok(SleepAfter::Never);
        }
        SLEEP_AFTER.parse(s).map(SleepAfter::After).map_err(|e| {
            let e = e.to_string();
            if e.ends_with(DURATION_HINT) {
                format!("{e}, or never")
            } else {
                format!("{e} (or never)")
            }
        })
    }
}

impl Serialize for SleepAfter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SleepAfter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The body of `POST /api/v1/apps/{app}/envs/{env}/sleep`: `null` goes back to the tier's
/// default.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSleep {
    pub sleep_after: Option<SleepAfter>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_and_never_within_bounds() {
        assert_eq!("never".parse(), Ok(SleepAfter::Never));
        assert_eq!(
            "15m".parse(),
            Ok(SleepAfter::After(Duration::from_secs(900)))
        );
        assert_eq!("1s".parse(), Ok(SleepAfter::After(Duration::from_secs(1))));
        let e = "soon".parse::<SleepAfter>().unwrap_err();
        assert_eq!(
            e,
            format!("invalid sleep-after 'soon': {DURATION_HINT}, or never")
        );
        let e = "0".parse::<SleepAfter>().unwrap_err();
        assert!(e.contains("between 1s and 168h (or never)"), "{e}");
        let e = "8000h".parse::<SleepAfter>().unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        assert_eq!(
            SleepAfter::After(Duration::from_secs(900)).to_string(),
            "15m"
        );
    }

    #[test]
    fn test_tier_sleeps_by_default_and_production_never() {
        assert_eq!(
            SleepAfter::tier_default(Tier::Test),
            SleepAfter::After(TEST_SLEEP_AFTER)
        );
        assert_eq!(
            SleepAfter::tier_default(Tier::Production),
            SleepAfter::Never
        );
        let json = serde_json::to_string(&SetSleep {
            sleep_after: Some(SleepAfter::After(Duration::from_millis(1500))),
        })
        .unwrap();
        assert_eq!(json, r#"{"sleep_after":"1500ms"}"#);
        assert!(serde_json::from_str::<SetSleep>(r#"{"sleep_after":"0s"}"#).is_err());
    }
}
