//! The moment a restore, reset or drill goes back to, as a user writes it: an RFC 3339 time
//! ("2026-11-30T18:00:00Z") or a time relative to now ("1 day ago", "90 minutes ago",
//! "2h ago", "-90m", "now"). Read on the daemon's clock, bounded (at most `MAX_AGE` back), and
//! never in the future beyond `SKEW` (a client's clock a little ahead is read as now).
use jiff::Timestamp;

use crate::error::ControlError;

/// How far back a moment may be.
pub(crate) const MAX_AGE_SECS: i64 = 10 * 366 * 86_400;
/// How far ahead of the daemon's clock a moment may be and still be read as now.
pub(crate) const SKEW_SECS: i64 = 60;
/// The longest text accepted.
const MAX_LEN: usize = 64;

const FORMS: &str = "an RFC 3339 time such as 2026-11-30T18:00:00Z (or with an offset, +01:00), \"now\", or a time ago: \"1 day ago\", \"90 minutes ago\", \"2h ago\", \"-90m\" (units: s, m, h, d, w and their words)";

/// `text` read as a moment at or before `now`.
pub(crate) fn parse_time(text: &str, now: Timestamp) -> Result<Timestamp, ControlError> {
    let shown: String = text.chars().take(MAX_LEN).collect();
    let invalid =
        |why: &str| ControlError::Invalid(format!("the time {shown:?} {why}; write {FORMS}"));
    if text.len() > MAX_LEN {
        return Err(invalid(&format!("is longer than {MAX_LEN} characters")));
    }
    let t = text.trim();
    let at = if t.eq_ignore_ascii_case("now") {
        now
    } else if let Some(secs) = relative(t) {
        let secs = secs.map_err(|why| invalid(&why))?;
        now.checked_sub(jiff::SignedDuration::from_secs(secs))
            .map_err(|_| invalid("is out of range"))?
    } else {
        t.parse::<Timestamp>()
            .map_err(|_| invalid("is not a time Turnout reads"))?
    };
    let ahead = at.as_second() - now.as_second();
    if ahead > SKEW_SECS {
        return Err(invalid(&format!(
            "is {ahead} s in the future (the daemon's clock reads {}); data can only be put back to a moment that has passed",
            now.strftime("%Y-%m-%dT%H:%M:%SZ")
        )));
    }
    if now.as_second() - at.as_second() > MAX_AGE_SECS {
        return Err(invalid("is more than 10 years ago"));
    }
    Ok(if ahead > 0 { now } else { at })
}

/// Seconds back for a relative form ("-90m", "90 minutes ago", "2h ago"); None when `t` is
/// not one (it may be an absolute time), Some(Err) when it is one with a bad number or unit.
fn relative(t: &str) -> Option<Result<i64, String>> {
    let body = if let Some(rest) = t.strip_prefix('-') {
        rest.trim()
    } else {
        let lower = t.to_ascii_lowercase();
        let rest = lower.strip_suffix("ago")?;
        return Some(amount(rest.trim()));
    };
    Some(amount(body))
}

/// "90m", "90 m", "90 minutes", "1 day" as seconds.
fn amount(text: &str) -> Result<i64, String> {
    let lower = text.to_ascii_lowercase();
    let digits = lower.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err("has no number before its unit".into());
    }
    if digits > 9 {
        return Err("has a number too large".into());
    }
    let n: i64 = lower[..digits]
        .parse()
        .map_err(|_| "has a number Turnout cannot read".to_owned())?;
    let unit = lower[digits..].trim();
    let per = match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        "" => return Err("has no unit".into()),
        _ => return Err("has a unit Turnout does not know".into()),
    };
    let secs = n.saturating_mul(per);
    if secs > MAX_AGE_SECS {
        return Err("is more than 10 years ago".into());
    }
    Ok(secs)
}

/// A span of seconds in words: "3 h 12 min", "45 s", "2 d 4 h".
pub(crate) fn span(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, m) => format!("{m} min {s} s"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-30T12:00:00Z".parse().unwrap()
    }

    fn back(text: &str) -> i64 {
        now().as_second() - parse_time(text, now()).unwrap().as_second()
    }

    #[test]
    fn relative_forms_count_back_from_now() {
        assert_eq!(back("1 day ago"), 86_400);
        assert_eq!(back("90 minutes ago"), 5_400);
        assert_eq!(back("2h ago"), 7_200);
        assert_eq!(back("-90m"), 5_400);
        assert_eq!(back("- 30 s"), 30);
        assert_eq!(back("3 Weeks Ago"), 21 * 86_400);
        assert_eq!(back("now"), 0);
        assert_eq!(back("  -1d  "), 86_400);
    }

    #[test]
    fn rfc3339_times_are_read_with_their_offset() {
        assert_eq!(back("2026-11-30T11:00:00Z"), 3_600);
        assert_eq!(back("2026-11-30T12:00:00+01:00"), 3_600);
        assert_eq!(back("2026-11-30T10:59:59.5Z"), 3_601);
    }

    #[test]
    fn a_little_ahead_is_now_and_further_is_refused() {
        assert_eq!(back("2026-11-30T12:00:30Z"), 0);
        let e = parse_time("2026-11-30T12:05:00Z", now()).unwrap_err();
        assert!(e.to_string().contains("in the future"), "{e}");
    }

    #[test]
    fn bad_times_are_refused_naming_the_accepted_forms() {
        for bad in [
            "yesterday",
            "1 fortnight ago",
            "ago",
            "-m",
            "-90",
            "99999999999 days ago",
            "2026-13-01T00:00:00Z",
            "2026-11-30 12:00",
            "",
            "20 years ago",
        ] {
            let e = parse_time(bad, now()).unwrap_err().to_string();
            assert!(
                e.contains("RFC 3339") && e.contains("1 day ago"),
                "{bad}: {e}"
            );
        }
        let long = "1".repeat(100);
        assert!(parse_time(&long, now()).is_err());
    }

    #[test]
    fn spans_read_in_the_largest_units() {
        assert_eq!(span(45), "45 s");
        assert_eq!(span(125), "2 min 5 s");
        assert_eq!(span(3 * 3600 + 12 * 60), "3 h 12 min");
        assert_eq!(span(2 * 86_400 + 4 * 3600 + 5), "2 d 4 h");
    }
}
