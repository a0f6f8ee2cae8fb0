//! Reading an environment's logs: authorized here, like every other read, and read from the
//! end of the file off the async runtime.
use std::path::{Path, PathBuf};

use turnout_model::{Action, EnvRef};

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
}

impl ControlPlane {
    /// The last `tail` lines of the environment's log, if `who` may read it.
    pub async fn logs(
        &self,
        r: EnvRef,
        tail: usize,
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
        Ok(LogView { r, path, head })
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

/// The last `n` lines of a log file (empty when it does not exist), read from its end on the
/// blocking pool.
pub async fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || read_tail(&path, n))
        .await
        .unwrap_or_default()
}

fn read_tail(path: &Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    const BLOCK: u64 = 64 * 1024;
    let Ok(mut f) = std::fs::File::open(path) else {
        return vec![];
    };
    let Ok(len) = f.seek(SeekFrom::End(0)) else {
        return vec![];
    };
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    // Read backwards a block at a time until the buffer holds n full lines (or the file).
    while start > 0 && buf.iter().filter(|b| **b == b'\n').count() <= n {
        let step = BLOCK.min(start);
        start -= step;
        let mut block = vec![0; usize::try_from(step).unwrap_or(0)];
        if f.seek(SeekFrom::Start(start)).is_err() || f.read_exact(&mut block).is_err() {
            return vec![];
        }
        block.extend_from_slice(&buf);
        buf = block;
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    // The first line may be cut when reading started mid-file.
    let skip_first = start > 0;
    let lines = &lines[usize::from(skip_first).min(lines.len())..];
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

/// The tail of a failed step's log, as its error shows it.
pub async fn failure_tail(path: &Path) -> Vec<String> {
    tail_lines(path, FAILURE_TAIL).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tails_come_from_the_end_of_big_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text: String = (0..200_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(
            tail_lines(&path, 3).await,
            ["line 199997", "line 199998", "line 199999"]
        );
        assert_eq!(tail_lines(&path, 0).await, Vec::<String>::new());
        std::fs::write(&path, "a\nb").unwrap();
        assert_eq!(tail_lines(&path, 5).await, ["a", "b"]);
        assert!(tail_lines(&dir.path().join("missing"), 5).await.is_empty());
    }
}
