//! The egress log's way to the store: the proxy hands each request's record to a bounded
//! channel (never waiting), and one task writes what has gathered in one transaction per
//! batch. A full channel drops records and says how many.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tracing::warn;

use crate::store::Store;
use crate::store::egress::{self as eq, LogRecord};

/// Records waiting for the writer, at most.
const QUEUE: usize = 8192;
/// Records in one transaction, at most.
const BATCH: usize = 512;

#[derive(Clone)]
pub(super) struct LogSender {
    tx: mpsc::Sender<LogRecord>,
    dropped: Arc<AtomicU64>,
}

pub(super) struct LogReceiver {
    rx: mpsc::Receiver<LogRecord>,
    dropped: Arc<AtomicU64>,
}

pub(super) fn channel() -> (LogSender, LogReceiver) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        LogSender {
            tx,
            dropped: dropped.clone(),
        },
        LogReceiver { rx, dropped },
    )
}

impl LogSender {
    pub(super) fn send(&self, record: LogRecord) {
        if self.tx.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Write batches until every sender is gone, trimming each environment's log once it gained
/// `TRIM_EVERY` records (counted from this writer's start: a restart may leave up to that many
/// more, trimmed with the next ones).
pub(super) async fn write_batches(store: Store, mut log: LogReceiver) {
    let mut since_trim: HashMap<i64, u32> = HashMap::new();
    while let Some(first) = log.rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match log.rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let n = batch.len();
        let mut trim = Vec::new();
        for r in &batch {
            let count = since_trim.entry(r.env_id).or_default();
            *count += 1;
            if *count == eq::TRIM_EVERY {
                *count = 0;
                trim.push(r.env_id);
            }
        }
        if let Err(e) = store
            .append_log(move |tx| eq::append(tx, &batch, &trim))
            .await
        {
            warn!(error = %e, records = n, "cannot write the egress log");
        }
        let dropped = log.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            warn!(
                dropped,
                "the egress log fell behind; records of outbound requests were dropped"
            );
        }
    }
}
