use turnout_model::ErrorCode;

/// What went wrong in the control plane, and so which HTTP status the API answers with.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request itself is wrong (400): an invalid name, ref, path or file.
    #[error("{0}")]
    Invalid(String),
    /// No valid token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token whose user lacks the role (403); the message names the role needed.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The API path exists, but not with this method (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request body is over the API's limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// The request conflicts with current state (409): a name taken, a deploy already running.
    #[error("{0}")]
    Conflict(String),
    /// A deploy step failed (422): the error names the step; the tail of its log travels with it.
    #[error("{step} failed: {message}")]
    Step {
        step: &'static str,
        message: String,
        log_tail: Vec<String>,
    },
    /// A job was cancelled (by a user or the daemon's shutdown) before its point of no return.
    #[error("{0}")]
    Cancelled(String),
    /// The action needs a second owner's approval (202): it was recorded as request `id`.
    #[error("{message}")]
    NeedsApproval { id: i64, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ControlError {
    pub fn internal(msg: impl Into<String>) -> Self {
        ControlError::Internal(msg.into())
    }

    /// The stable code the API answers with (and so its HTTP status). A request parked for
    /// approval is not an error to the client (202), but has a code for completeness.
    pub fn code(&self) -> ErrorCode {
        match self {
            ControlError::Invalid(_) => ErrorCode::Invalid,
            ControlError::Unauthorized(_) => ErrorCode::Unauthorized,
            ControlError::Forbidden(_) => ErrorCode::Forbidden,
            ControlError::NotFound(_) => ErrorCode::NotFound,
            ControlError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ControlError::TooLarge(_) => ErrorCode::TooLarge,
            ControlError::Conflict(_)
            | ControlError::Cancelled(_)
            | ControlError::NeedsApproval { .. } => ErrorCode::Conflict,
            ControlError::Step { .. } => ErrorCode::StepFailed,
            ControlError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<rusqlite::Error> for ControlError {
    fn from(e: rusqlite::Error) -> Self {
        ControlError::Internal(format!("store: {e}"))
    }
}

/// Text as the daemon's log shows it: control characters escaped (`\n`, `\u{1b}`), so that user
/// input inside an error (a name that failed validation, a line of a build's output) can neither
/// forge log lines nor reach a terminal as escape sequences.
pub(crate) struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escaped_text_stays_on_one_line() {
        let shown = super::Escaped("x\nINFO forged\r\u{1b}[31m\tü").to_string();
        assert_eq!(shown, "x\\nINFO forged\\r\\u{1b}[31m\\tü");
    }
}
