//! Reading an environment's logs: authorized here, like every other read, and read from the
//! end of the file off the async runtime.
use std::path::{Path, PathBuf};

use turnout_model::{Action, EnvRef};
use turnout_supervisor::{LogLine, collapse_repeats, tail_lines};

use super::ControlPlane;
use crate::access::Principal;
use crate::error::ControlError;
use crate::store::q;

/// The most lines `turnout logs --tail` may ask for.
pub const MAX_TAIL: usize = 10_000;

/// Lines of a failed step's log that travel with its error.
const FAILURE_TAIL: usize = 20;

/// An environment's log as one reader may see it. Only `ControlPlane::logs` makes one, after
/// authorizing the reader, so following it later needs no new check.
pub struct LogView {
    r: EnvRef,
    path: Option<PathBuf>,
    head: Vec<String>,
    timestamps: bool,
}

impl LogView {
    pub fn env(&self) -> &EnvRef {
        &self.r
    }

    /// The file shown (None before the first deploy).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The last lines asked for.
    pub fn head(&self) -> &[String] {
        &self.head
    }

    /// A chunk of the file as the reader asked to see it: whole lines with or without the time
    /// each was written.
    pub fn show(&self, text: &str) -> String {
        if self.timestamps {
            return text.to_owned();
        }
        text.split_inclusive('\n')
            .map(|l| {
                let (line, nl) = match l.strip_suffix('\n') {
                    Some(line) => (line, "\n"),
                    None => (l, ""),
                };
                format!("{}{nl}", LogLine::parse(line).text)
            })
            .collect()
    }
}

impl ControlPlane {
    /// The last `tail` lines of the environment's log, if `who` may read it; each line with
    /// the time it was written when `timestamps`.
    pub async fn logs(
        &self,
        r: EnvRef,
        tail: usize,
        timestamps: bool,
        who: &Principal,
    ) -> Result<LogView, ControlError> {
        if tail > MAX_TAIL {
            return Err(ControlError::Invalid(format!(
                "--tail {tail} is more than {MAX_TAIL} lines; ask for fewer, or read the file under the environment's directory"
            )));
        }
        self.env_for(who, &r, Action::Read).await?;
        let path = self.log_file(&r).await?;
        let head = match &path {
            Some(p) => tail_lines(p, tail).await,
            None => vec![],
        };
        let head = if timestamps {
            head
        } else {
            head.iter()
                .map(|l| LogLine::parse(l).text.to_owned())
                .collect()
        };
        Ok(LogView {
            r,
            path,
            head,
            timestamps,
        })
    }

    /// The file a view should follow now: a deploy moves the environment to another
    /// release's log. None once the environment is gone.
    pub async fn follow_log(&self, view: &LogView) -> Option<Option<PathBuf>> {
        self.log_file(&view.r).await.ok()
    }

    /// The log file `turnout logs` shows: the serving release's output, else the newest
    /// release's (its run log if it started, its build log otherwise).
    async fn log_file(&self, r: &EnvRef) -> Result<Option<PathBuf>, ControlError> {
        let row = self.env_row(r).await?;
        let release = match row.current_release_id {
            Some(id) => Some(id),
            None => {
                let id = row.id;
                self.store
                    .call(move |c| q::list_releases(c, id))
                    .await?
                    .first()
                    .map(|r| r.id)
            }
        };
        let Some(id) = release else { return Ok(None) };
        let candidates = [
            self.home.run_log(&r.app, &r.env, id),
            self.home.build_log(&r.app, &r.env, id),
        ];
        for p in candidates {
            if tokio::fs::try_exists(&p).await.unwrap_or(false) {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }
}

/// The tail of a failed step's log, as its error shows it: repeats collapsed, timestamps off.
pub async fn failure_tail(path: &Path) -> Vec<String> {
    let lines = collapse_repeats(tail_lines(path, 10 * FAILURE_TAIL).await);
    let lines = &lines[lines.len().saturating_sub(FAILURE_TAIL)..];
    lines
        .iter()
        .map(|l| LogLine::parse(l).text.to_owned())
        .collect()
}
