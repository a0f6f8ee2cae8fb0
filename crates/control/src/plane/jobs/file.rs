//! A job's events on disk, one JSON line each (`<home>/jobs/<id>.ndjson`): written in batches
//! while it runs, replayed and followed by watchers, completed by `recover` after a crash.
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tracing::warn;
use turnout_model::JobEvent;

/// Append events to the job's file as they come, in batches; count them in `written`. Ends
/// when every sender is gone (the job ended), closing `written`.
pub(super) async fn write_events(
    path: PathBuf,
    mut rx: mpsc::UnboundedReceiver<JobEvent>,
    written: watch::Sender<u64>,
) {
    let mut file = match tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
    {
        Ok(f) => Some(f),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot write job events");
            None
        }
    };
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        let mut bytes = Vec::new();
        for event in batch.drain(..) {
            if let Ok(mut line) = serde_json::to_vec(&event) {
                line.push(b'\n');
                bytes.extend(line);
            }
        }
        if let Some(f) = &mut file
            && let Err(e) = f.write_all(&bytes).await
        {
            warn!(path = %path.display(), error = %e, "cannot write job events");
        }
        written.send_modify(|n| *n += 1);
    }
}

pub(super) async fn append_event(path: &Path, event: &JobEvent) {
    let Ok(mut line) = serde_json::to_vec(event) else {
        return;
    };
    line.push(b'\n');
    let result = async {
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        f.write_all(&line).await
    }
    .await;
    if let Err(e) = result {
        warn!(path = %path.display(), error = %e, "cannot write job events");
    }
}

/// The complete event lines of the file from `offset`, and how many bytes they took.
pub(super) async fn read_events(path: &Path, offset: u64) -> (Vec<JobEvent>, u64) {
    let Ok(mut f) = tokio::fs::File::open(path).await else {
        return (vec![], 0);
    };
    if f.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
        return (vec![], 0);
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).await.is_err() {
        return (vec![], 0);
    }
    // A line still being written is left for the next read.
    let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let events = buf[..complete]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    (events, complete as u64)
}
