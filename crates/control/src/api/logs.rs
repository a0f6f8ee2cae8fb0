//! An environment's log: its tail, then (with `follow`) everything appended.
use std::os::unix::fs::MetadataExt;

use turnout_supervisor::rotated_log_path;

use super::*;

#[derive(Deserialize)]
pub(super) struct LogsQuery {
    #[serde(default)]
    follow: bool,
    #[serde(default = "default_tail")]
    tail: usize,
    #[serde(default)]
    timestamps: bool,
}

fn default_tail() -> usize {
    200
}

/// The last `tail` lines of the environment's log; with `follow`, then everything appended, and
/// the next release's log after a deploy, until the client hangs up.
pub(super) async fn logs(
    State(p): State<Api>,
    who: Who,
    Path((app, env)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> Result<impl IntoResponse> {
    let view = p
        .logs(env_ref(&app, &env)?, q.tail, q.timestamps, &who)
        .await?;
    Ok(log_text(p, view, q.follow).await)
}

/// The log's last lines as text and, with `follow`, what is written to it from then on (across
/// rotations and the next release's log): the API's answer and the dashboard's live tail.
pub(crate) async fn log_text(p: Api, view: LogView, follow: bool) -> Response {
    let mut head: String = view.head().iter().map(|l| format!("{l}\n")).collect();
    if view.path().is_none() && !follow {
        head = format!("(no logs yet: {} has not been deployed)\n", view.env());
    }
    if !follow {
        return (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            Body::from(head),
        )
            .into_response();
    }
    struct Follow {
        p: Api,
        view: LogView,
        path: Option<std::path::PathBuf>,
        offset: u64,
        /// The inode of the file read, to notice a rotation.
        ino: Option<u64>,
        head: Option<String>,
    }
    let path = view.path().map(std::path::Path::to_path_buf);
    let (offset, ino) = match &path {
        Some(path) => tokio::fs::metadata(path)
            .await
            .map_or((0, None), |m| (m.len(), Some(m.ino()))),
        None => (0, None),
    };
    let state = Follow {
        p,
        view,
        path,
        offset,
        ino,
        head: Some(head),
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        if let Some(head) = s.head.take()
            && !head.is_empty()
        {
            return Some((Ok::<_, std::convert::Infallible>(Bytes::from(head)), s));
        }
        loop {
            if let Some(path) = &s.path
                && let Ok(mut f) = tokio::fs::File::open(path).await
            {
                // Another file under the same name: the log was rotated. The rest of the old
                // one (now `<name>.1`) comes first, then the new one from its start.
                let ino = f.metadata().await.map(|m| m.ino()).ok();
                if ino != s.ino {
                    let old = s.ino.replace(ino.unwrap_or_default());
                    let offset = std::mem::take(&mut s.offset);
                    if old.is_some() {
                        let rest = read_rest(&rotated_log_path(path, 1), old, offset).await;
                        if !rest.is_empty() {
                            return Some((Ok(Bytes::from(s.view.show(&rest))), s));
                        }
                    }
                }
                if f.seek(std::io::SeekFrom::Start(s.offset)).await.is_err() {
                    return None;
                }
                let mut buf = Vec::new();
                if f.read_to_end(&mut buf).await.is_ok() {
                    // Whole lines only: the rest is read with the next chunk.
                    let whole = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                    if whole > 0 {
                        s.offset += whole as u64;
                        let text = s.view.show(&String::from_utf8_lossy(&buf[..whole]));
                        return Some((Ok(Bytes::from(text)), s));
                    }
                }
            }
            // Nothing new: a deploy may have moved the environment to another release's log.
            match s.p.follow_log(&s.view).await {
                Some(next) if next != s.path => {
                    s.path = next;
                    s.offset = 0;
                    s.ino = None;
                    if let Some(path) = &s.path {
                        let note = format!("[turnout] now following {}\n", path.display());
                        return Some((Ok(Bytes::from(note)), s));
                    }
                }
                Some(_) => {}
                None => return None, // the environment was deleted
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// What a rotated log holds past `offset`, if it is still the file with inode `ino`.
async fn read_rest(path: &std::path::Path, ino: Option<u64>, offset: u64) -> String {
    let Ok(mut f) = tokio::fs::File::open(path).await else {
        return String::new();
    };
    let same = f.metadata().await.is_ok_and(|m| Some(m.ino()) == ino);
    let mut buf = Vec::new();
    if !same
        || f.seek(std::io::SeekFrom::Start(offset)).await.is_err()
        || f.read_to_end(&mut buf).await.is_err()
    {
        return String::new();
    }
    String::from_utf8_lossy(&buf).into_owned()
}
