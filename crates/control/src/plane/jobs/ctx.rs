//! The handle a job's operation reports through: its steps, output, release and URL, its
//! point of no return, and its cancellation.
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use turnout_model::{JobEvent, JobState, JobStep, StepState, format_timestamp};

use super::LiveJob;
use crate::error::ControlError;
use crate::store::now;

/// The handle an operation gets to report on its job and to notice cancellation.
#[derive(Clone)]
pub(crate) struct JobCtx {
    pub(super) id: i64,
    pub(super) job: Arc<LiveJob>,
}

impl JobCtx {
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The job got what it waited for (its environment's lock) and starts working.
    pub fn running(&self) {
        let at = now();
        self.job.started_unix.store(at, Ordering::SeqCst);
        let mut info = self.job.info();
        info.state = JobState::Running;
        info.started_at = Some(format_timestamp(at));
    }

    /// The job waits in line (for a build slot), at `position` from 1.
    pub fn queued(&self, position: u32) {
        let mut info = self.job.info();
        info.state = JobState::Queued;
        info.queue_position = Some(position);
    }

    /// The job's turn came after [`queued`](Self::queued): it works again.
    pub fn resumed(&self) {
        let mut info = self.job.info();
        info.state = JobState::Running;
        info.queue_position = None;
    }

    /// Change step `index` (0-based) and tell the watchers.
    pub(super) fn update(&self, index: usize, f: impl FnOnce(&mut JobStep)) {
        let (step, total) = {
            let mut info = self.job.info();
            let total = info.steps.len();
            let Some(step) = info.steps.get_mut(index) else {
                return;
            };
            f(step);
            (step.clone(), total)
        };
        let _ = self.job.events.send(JobEvent::Step {
            index: index as u32,
            total: total as u32,
            step,
        });
    }

    pub fn begin(&self, index: usize, detail: impl Into<String>) {
        let detail = detail.into();
        self.update(index, |s| {
            s.state = StepState::Running;
            s.detail = detail;
            s.started_at = Some(format_timestamp(now()));
        });
    }

    pub fn done(&self, index: usize, detail: impl Into<String>, took: Duration) {
        let detail = detail.into();
        self.update(index, |s| {
            s.state = StepState::Done;
            s.detail = detail;
            s.finished_at = Some(format_timestamp(now()));
            s.duration_ms = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
        });
    }

    pub fn skip(&self, index: usize, detail: impl Into<String>) {
        let detail = detail.into();
        self.update(index, |s| {
            s.state = StepState::Skipped;
            s.detail = detail;
        });
    }

    pub fn output(&self, line: &str) {
        let _ = self.job.events.send(JobEvent::Output {
            line: line.to_owned(),
        });
    }

    pub fn set_release(&self, release: i64) {
        self.job.info().release = Some(release);
    }

    pub fn set_url(&self, url: String) {
        self.job.info().url = Some(url);
    }

    /// From here on the job finishes even if cancelled: traffic is moving to its result.
    /// Fails if it was cancelled before it got here.
    pub fn commit(&self) -> Result<(), ControlError> {
        self.job.committed.store(true, Ordering::SeqCst);
        if self.job.cancel.is_cancelled() {
            self.job.committed.store(false, Ordering::SeqCst);
            return Err(self.cancelled());
        }
        Ok(())
    }

    /// Resolves, with the error to return, once the job is cancelled.
    pub async fn until_cancelled(&self) -> ControlError {
        self.job.cancel.cancelled().await;
        self.cancelled()
    }

    pub(super) fn cancelled(&self) -> ControlError {
        let by = self
            .job
            .cancelled_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        ControlError::Cancelled(match by {
            Some(who) => format!("cancelled by {who}"),
            None => "cancelled: the daemon is shutting down".into(),
        })
    }

    /// The job's cancellation, for operations that take a token (data copies).
    pub fn cancel_token(&self) -> tokio_util::sync::CancellationToken {
        self.job.cancel.clone()
    }

    /// Wait for `fut` unless the job is cancelled first.
    pub async fn guard<T>(&self, fut: impl Future<Output = T>) -> Result<T, ControlError> {
        tokio::select! {
            v = fut => Ok(v),
            () = self.job.cancel.cancelled() => Err(self.cancelled()),
        }
    }
}
