/// What went wrong in the control plane, and so which HTTP status the API answers with.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request itself is wrong (400): an invalid name, ref, path or file.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
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
    #[error("internal error: {0}")]
    Internal(String),
}

impl ControlError {
    pub fn internal(msg: impl Into<String>) -> Self {
        ControlError::Internal(msg.into())
    }
}

impl From<rusqlite::Error> for ControlError {
    fn from(e: rusqlite::Error) -> Self {
        ControlError::Internal(format!("store: {e}"))
    }
}
