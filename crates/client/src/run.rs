//! The two halves of a `turnout run` connection (see `turnout_model::run`).
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turnout_model::run::{ClientFrame, FRAME_HEADER, ServerFrame, frame_header};

use crate::Error;

/// What a run's client sends: its input, the end of it, window sizes, signals.
pub struct RunInput {
    pub(crate) to: tokio::io::WriteHalf<reqwest::Upgraded>,
}

impl RunInput {
    pub async fn send(&mut self, frame: &ClientFrame) -> std::io::Result<()> {
        self.to.write_all(&frame.encode()).await?;
        self.to.flush().await
    }
}

/// What a run's client receives: the command's output, then how it ended.
pub struct RunOutput {
    pub(crate) url: String,
    pub(crate) from: tokio::io::ReadHalf<reqwest::Upgraded>,
}

impl RunOutput {
    /// The next frame; None when the daemon closed the connection (after the exit frame, or
    /// without one: the caller decides what a missing exit means).
    pub async fn next(&mut self) -> Result<Option<ServerFrame>, Error> {
        let broken = |detail: String| Error::RunBroken {
            url: self.url.clone(),
            detail,
        };
        let mut header = [0u8; FRAME_HEADER];
        match self.from.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(broken(e.to_string())),
        }
        let (tag, len) = frame_header(header).map_err(|e| broken(e.to_string()))?;
        let mut payload = vec![0u8; len];
        self.from
            .read_exact(&mut payload)
            .await
            .map_err(|e| broken(e.to_string()))?;
        ServerFrame::decode(tag, payload)
            .map(Some)
            .map_err(|e| broken(e.to_string()))
    }
}
