//! Blocking work (SQLite calls, file copies) on tokio's blocking pool, reporting progress
//! through the caller's [`Progress`] from the caller's own task, in order.
//!
//! The work gets a [`Reporter`]: its events go over a channel to the awaiting task, and its
//! cancellation token is a child of the caller's, cancelled also when the awaiting future is
//! dropped, so dropped work stops at its next check and cleans up as for a cancel.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{DataError, Progress};

enum Event {
    Line(String),
    Bytes(u64, Option<u64>),
    Table(String, u64),
}

/// What blocking work reports through, and the cancellation it checks.
pub(crate) struct Reporter {
    events: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
    /// Tests: checks left before the reporter cancels itself, so a cancel lands at a chosen
    /// point of the work rather than whenever another thread gets to it.
    #[cfg(test)]
    checks_left: std::sync::atomic::AtomicU32,
}

impl Reporter {
    pub(crate) fn line(&self, text: impl Into<String>) {
        // The receiver outlives the work unless the caller went away; then no one listens.
        let _ = self.events.send(Event::Line(text.into()));
    }
    pub(crate) fn bytes(&self, done: u64, total: Option<u64>) {
        let _ = self.events.send(Event::Bytes(done, total));
    }
    pub(crate) fn table_masked(&self, table: &str, rows: u64) {
        let _ = self.events.send(Event::Table(table.to_owned(), rows));
    }
    /// `Err(Cancelled)` once the operation is cancelled.
    pub(crate) fn check(&self) -> Result<(), DataError> {
        #[cfg(test)]
        {
            use std::sync::atomic::Ordering;
            if self.checks_left.fetch_sub(1, Ordering::Relaxed) <= 1 {
                self.cancel.cancel();
            }
        }
        if self.cancel.is_cancelled() {
            Err(DataError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Runs `work` on the blocking pool, delivering what it reports to `progress` as it goes.
pub(crate) async fn run<T, F>(
    progress: &dyn Progress,
    cancel: &CancellationToken,
    work: F,
) -> Result<T, DataError>
where
    T: Send + 'static,
    F: FnOnce(&Reporter) -> Result<T, DataError> + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel();
    let token = cancel.child_token();
    let _stop_when_dropped = token.clone().drop_guard();
    let reporter = Reporter {
        events: tx,
        cancel: token,
        #[cfg(test)]
        checks_left: u32::MAX.into(),
    };
    let mut task = tokio::task::spawn_blocking(move || work(&reporter));
    let deliver = |event| match event {
        Event::Line(text) => progress.line(&text),
        Event::Bytes(done, total) => progress.bytes(done, total),
        Event::Table(table, rows) => progress.table_masked(&table, rows),
    };
    loop {
        tokio::select! {
            Some(event) = rx.recv() => deliver(event),
            joined = &mut task => {
                while let Ok(event) = rx.try_recv() {
                    deliver(event);
                }
                return match joined {
                    Ok(result) => result,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => Err(DataError::Database(format!("a data operation stopped: {e}"))),
                };
            }
        }
    }
}

/// Runs `work` on the blocking pool (nothing to report, nothing to cancel).
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, DataError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, DataError> + Send + 'static,
{
    run(&crate::Quiet, &CancellationToken::new(), move |_| work()).await
}

/// Tests: a reporter that reports nowhere and cancels itself at its `checks`-th check.
#[cfg(test)]
pub(crate) fn cancelling_at(checks: u32) -> Reporter {
    Reporter {
        events: mpsc::unbounded_channel().0,
        cancel: CancellationToken::new(),
        checks_left: checks.into(),
    }
}
