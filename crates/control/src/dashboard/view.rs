//! What every page's frame shows, and the small formatting rules the pages share.
use turnout_model::{EnvStatus, ReleaseInfo};

/// The frame of every signed-in page: who is signed in, the session's CSRF token (every form
/// carries it), the notice left by the last action, and which section is current.
pub struct Chrome {
    pub user: String,
    pub csrf: String,
    pub notice: Option<String>,
    /// The navigation entry of the page shown.
    pub section: &'static str,
}

impl Chrome {
    /// The frame for a page of `section`.
    pub fn at(self, section: &'static str) -> Chrome {
        Chrome { section, ..self }
    }

    /// The `aria-current` attribute value of the navigation link to `this`.
    pub fn current(&self, this: &str) -> &'static str {
        if self.section == this {
            "page"
        } else {
            "false"
        }
    }
}

/// A commit as people read it: its first 12 hex digits.
pub fn short(commit: &str) -> String {
    commit.chars().take(12).collect()
}

/// How long ago `at` (a timestamp as the API writes it) was: "42s", "5m", "3h", "2d".
pub fn age(at: &str) -> String {
    let Ok(then) = at.parse::<jiff::Timestamp>() else {
        return at.to_owned();
    };
    let secs = (jiff::Timestamp::now().as_second() - then.as_second()).max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The class a status is drawn with (its text is always shown too: colour is never the only
/// sign).
pub fn status_class(status: EnvStatus) -> &'static str {
    match status {
        EnvStatus::Live => "ok",
        EnvStatus::Starting | EnvStatus::Sleeping | EnvStatus::Stopped | EnvStatus::NotDeployed => {
            "idle"
        }
        EnvStatus::Crashing | EnvStatus::Down => "bad",
    }
}

/// A live release in one line's pieces: release id, short commit, age.
pub struct ReleaseView {
    pub id: i64,
    pub commit: String,
    pub age: String,
    pub at: String,
}

impl ReleaseView {
    pub fn of(r: &ReleaseInfo) -> ReleaseView {
        let at = r
            .finished_at
            .clone()
            .unwrap_or_else(|| r.created_at.clone());
        ReleaseView {
            id: r.id,
            commit: short(&r.commit),
            age: age(&at),
            at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_commits_read_short() {
        assert_eq!(short("0123456789abcdef0123"), "0123456789ab");
        let ten_minutes_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(600);
        assert_eq!(age(&ten_minutes_ago.to_string()), "10m");
        assert_eq!(age("not a time"), "not a time");
    }
}
