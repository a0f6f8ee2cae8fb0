//! The job runner: every long operation (deploy, rollback, restart, start; later promotion,
//! data copies, backups, restores) runs as a job. A job is a row in the store (created queued,
//! updated once when it ends), a file of its events (`<home>/jobs/<id>.ndjson`: every step
//! change and output line, which watchers replay and follow), and while it runs an entry in
//! `Jobs::live` with its current steps and its cancellation token.
//!
//! Jobs run on the plane's task tracker, so they survive the client that started them and
//! shutdown waits for them. Each job's token is a child of the daemon's `closing` token: a
//! shutdown cancels every job that has not reached its point of no return (go-live), and waits
//! for the rest to finish. A job that a killed daemon left queued or running is marked
//! `interrupted` at the next start (`recover`), after its build processes were killed and its
//! half-written release directory removed.
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use turnout_model::{
    AuditAction, EnvRef, JobEvent, JobInfo, JobKind, JobState, JobStep, StepState, format_timestamp,
};

mod ctx;
mod file;
mod ops;

pub(crate) use ctx::JobCtx;
use file::{append_event, read_events, write_events};

use crate::error::{ControlError, Escaped};
use crate::home::Home;
use crate::store::jobs::{self as jq, JobEnd, JobRow};
use crate::store::{AuditEntry, Store, now};

/// What to run: its kind, target, who asked and the names of its steps.
pub(crate) struct JobSpec {
    pub kind: JobKind,
    pub target: EnvRef,
    pub actor: String,
    /// A ref for a deploy, a release for a rollback.
    pub request: Option<String>,
    pub steps: &'static [&'static str],
}

pub(crate) struct Jobs {
    home: Home,
    store: Store,
    /// Jobs that have not ended. Locked only to find, add or remove one; never across an await.
    live: Mutex<HashMap<i64, Arc<LiveJob>>>,
    /// The daemon's shutdown: each job's token is a child of it.
    closing: CancellationToken,
    tasks: TaskTracker,
}

/// A job while it runs.
struct LiveJob {
    info: Mutex<JobInfo>,
    /// Cancelled by `turnout job cancel` or by the daemon's shutdown.
    cancel: CancellationToken,
    /// Who cancelled it, for its error line.
    cancelled_by: Mutex<Option<String>>,
    /// Set when the job reaches its point of no return: from then on it finishes.
    committed: AtomicBool,
    events: mpsc::UnboundedSender<JobEvent>,
    /// Unix seconds when it started running (0: still queued).
    started_unix: std::sync::atomic::AtomicI64,
    /// Counts events written to the file; closed once the last one (`end`) is written.
    written: watch::Receiver<u64>,
    started: Instant,
}

impl LiveJob {
    fn info(&self) -> std::sync::MutexGuard<'_, JobInfo> {
        self.info.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn pending(name: &str) -> JobStep {
    JobStep {
        name: name.to_owned(),
        state: StepState::Pending,
        detail: String::new(),
        progress: None,
        started_at: None,
        finished_at: None,
        duration_ms: None,
    }
}

pub(crate) fn job_info(row: &JobRow) -> JobInfo {
    JobInfo {
        id: row.id,
        kind: row.kind,
        app: row.app.clone(),
        env: row.env.clone(),
        actor: row.actor.clone(),
        state: row.state,
        request: row.request.clone(),
        steps: row.steps.clone(),
        release: row.release_id,
        error: row.error.clone(),
        log_tail: row.log_tail.clone(),
        url: row.url.clone(),
        created_at: format_timestamp(row.created_at),
        started_at: row.started_at.map(format_timestamp),
        finished_at: row.finished_at.map(format_timestamp),
        queue_position: None,
    }
}

impl Jobs {
    pub fn new(home: Home, store: Store, closing: CancellationToken, tasks: TaskTracker) -> Jobs {
        Jobs {
            home,
            store,
            live: Mutex::default(),
            closing,
            tasks,
        }
    }

    fn live(&self, id: i64) -> Option<Arc<LiveJob>> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Record the job, then run `op` on the task tracker. Returns at once with the queued job.
    pub async fn start<F, Fut>(
        self: &Arc<Self>,
        spec: JobSpec,
        op: F,
    ) -> Result<JobInfo, ControlError>
    where
        F: FnOnce(JobCtx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), ControlError>> + Send + 'static,
    {
        if self.closing.is_cancelled() {
            return Err(ControlError::Conflict(
                "the daemon is shutting down; start the job again once it is back".into(),
            ));
        }
        let steps: Vec<JobStep> = spec.steps.iter().map(|s| pending(s)).collect();
        let (kind, r, actor, request) = (
            spec.kind,
            spec.target.clone(),
            spec.actor.clone(),
            spec.request.clone(),
        );
        let entry = AuditEntry::new(&spec.actor, AuditAction::JobStart)
            .app(&r.app)
            .env(&r.env)
            .change(
                None,
                Some(match &request {
                    Some(x) => format!("{kind} {x}"),
                    None => kind.to_string(),
                }),
            );
        let s2 = steps.clone();
        let row = self
            .store
            .mutate(entry, move |c, _| {
                jq::insert_job(c, kind, &r.app, &r.env, &actor, request.as_deref(), &s2)
            })
            .await?;
        let id = row.id;
        let path = self.home.job_events(id);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| ControlError::internal(format!("create {}: {e}", dir.display())))?;
        }
        let (events, rx) = mpsc::unbounded_channel();
        let (written_tx, written) = watch::channel(0);
        tokio::spawn(write_events(path, rx, written_tx));
        let job = Arc::new(LiveJob {
            info: Mutex::new(job_info(&row)),
            cancel: self.closing.child_token(),
            cancelled_by: Mutex::default(),
            committed: AtomicBool::new(false),
            events,
            started_unix: std::sync::atomic::AtomicI64::new(0),
            written,
            started: Instant::now(),
        });
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, job.clone());
        let info = job.info().clone();
        let ctx = JobCtx { id, job };
        let this = self.clone();
        info!(job = id, kind = %spec.kind, app = %spec.target.app, env = %spec.target.env, "job queued");
        self.tasks.spawn(async move {
            let result = op(ctx.clone()).await;
            this.finish(ctx, result).await;
        });
        Ok(info)
    }

    /// Record how the job ended, tell the watchers, and forget it.
    async fn finish(&self, ctx: JobCtx, result: Result<(), ControlError>) {
        let job = &ctx.job;
        let (state, error, log_tail) = match &result {
            Ok(()) => (JobState::Succeeded, None, vec![]),
            Err(ControlError::Cancelled(why)) => (JobState::Cancelled, Some(why.clone()), vec![]),
            Err(e) => {
                let tail = match e {
                    ControlError::Step { log_tail, .. } => log_tail.clone(),
                    _ => vec![],
                };
                // The failed step is named by its state; the error says what went wrong there.
                let why = match e {
                    ControlError::Step { message, .. } => message.clone(),
                    e => e.to_string(),
                };
                (JobState::Failed, Some(why), tail)
            }
        };
        // The step that was running when it failed or was cancelled says so.
        let open = job
            .info()
            .steps
            .iter()
            .position(|s| s.state == StepState::Running);
        if let Some(index) = open {
            let took = job.started.elapsed();
            let detail = error.clone().unwrap_or_default();
            ctx.update(index, |s| {
                s.state = if state == JobState::Cancelled {
                    StepState::Cancelled
                } else {
                    StepState::Failed
                };
                s.detail = detail;
                s.finished_at = Some(format_timestamp(now()));
                s.duration_ms
                    .get_or_insert(u64::try_from(took.as_millis()).unwrap_or(0));
            });
        }
        let final_info = {
            let mut info = job.info();
            info.state = state;
            info.error = error.clone();
            info.log_tail = log_tail;
            info.finished_at = Some(format_timestamp(now()));
            info.clone()
        };
        match &error {
            Some(e) => warn!(job = ctx.id, state = %state, error = %Escaped(e), "job ended"),
            None => info!(job = ctx.id, "job succeeded"),
        }
        let started = Some(job.started_unix.load(Ordering::SeqCst)).filter(|t| *t > 0);
        if let Err(e) = self.record_end(&final_info, started).await {
            warn!(job = ctx.id, error = %e, "could not record the end of a job");
        }
        let _ = job.events.send(JobEvent::End { job: final_info });
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ctx.id);
    }

    async fn record_end(&self, info: &JobInfo, started: Option<i64>) -> Result<(), ControlError> {
        let entry = AuditEntry::new(&info.actor, AuditAction::JobEnd)
            .app(&info.app)
            .env(&info.env)
            .change(
                None,
                Some(format!("job {} {}: {}", info.id, info.kind, info.state)),
            );
        let id = info.id;
        let i = info.clone();
        let write = move |c: &crate::store::Tx<'_>| {
            jq::end_job(
                c,
                id,
                &JobEnd {
                    state: i.state,
                    release_id: i.release,
                    steps: &i.steps,
                    error: i.error.as_deref(),
                    log_tail: &i.log_tail,
                    url: i.url.as_deref(),
                    started_at: started,
                },
            )
        };
        match (&info.state, &info.error) {
            (JobState::Failed, Some(e)) => self.store.mutate_failed(entry, e.clone(), write).await,
            _ => self.store.mutate(entry, move |c, _| write(c)).await,
        }
    }

    /// A job as it stands: live from memory, ended from the store.
    pub async fn get(&self, id: i64) -> Result<JobInfo, ControlError> {
        if let Some(job) = self.live(id) {
            return Ok(job.info().clone());
        }
        let row = self.store.call(move |c| jq::get_job(c, id)).await?;
        Ok(job_info(&row))
    }

    /// Overlay live state on stored rows.
    pub fn current(&self, row: &JobRow) -> JobInfo {
        match self.live(row.id) {
            Some(job) => job.info().clone(),
            None => job_info(row),
        }
    }

    /// Cancel a job that has not reached its point of no return; wait (a while) for it to end.
    pub async fn cancel(&self, id: i64, by: &str) -> Result<JobInfo, ControlError> {
        let Some(job) = self.live(id) else {
            let info = self.get(id).await?;
            return Err(ControlError::Conflict(format!(
                "job {id} has already ended ({}); nothing to cancel",
                info.state
            )));
        };
        if job.committed.load(Ordering::SeqCst) {
            return Err(ControlError::Conflict(format!(
                "job {id} is past its point of no return (traffic is moving to its release); it finishes by itself, or roll back afterwards with `turnout rollback`"
            )));
        }
        *job.cancelled_by.lock().unwrap_or_else(|p| p.into_inner()) = Some(by.to_owned());
        job.cancel.cancel();
        let mut written = job.written.clone();
        drop(job);
        // The writer closes its channel once the `end` event is on disk.
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            while written.changed().await.is_ok() {}
        })
        .await;
        self.get(id).await
    }

    /// Every event of job `id` from the first, then live ones until it ends.
    pub fn events(self: &Arc<Self>, id: i64) -> impl Stream<Item = JobEvent> + Send + 'static {
        struct Follow {
            jobs: Arc<Jobs>,
            id: i64,
            offset: u64,
            pending: std::collections::VecDeque<JobEvent>,
            written: Option<watch::Receiver<u64>>,
            ended: bool,
        }
        let written = self.live(id).map(|j| j.written.clone());
        let state = Follow {
            jobs: self.clone(),
            id,
            offset: 0,
            pending: Default::default(),
            written,
            ended: false,
        };
        futures_util::stream::unfold(state, |mut s| async move {
            loop {
                if let Some(event) = s.pending.pop_front() {
                    if matches!(event, JobEvent::End { .. }) {
                        s.ended = true;
                        s.pending.clear();
                    }
                    return Some((event, s));
                }
                if s.ended {
                    return None;
                }
                let (events, read) = read_events(&s.jobs.home.job_events(s.id), s.offset).await;
                s.offset += read;
                if !events.is_empty() {
                    s.pending.extend(events);
                    continue;
                }
                match &mut s.written {
                    // Wait for the writer; when it is gone, read once more, then stop.
                    Some(w) => {
                        if w.changed().await.is_err() {
                            s.written = None;
                        }
                    }
                    None => {
                        // The file ends without `end` (a daemon killed before `recover`
                        // wrote it): close with the stored state.
                        let info = s.jobs.get(s.id).await.ok()?;
                        s.pending.push_back(JobEvent::End { job: info });
                    }
                }
            }
        })
    }

    /// At start-up: every job a killed daemon left queued or running is `interrupted`; its
    /// steps are rebuilt from its event file and its file gets its `end`.
    pub async fn recover(&self) -> Result<usize, ControlError> {
        let rows = self.store.call(|c| jq::unfinished_jobs(c)).await?;
        for row in &rows {
            let path = self.home.job_events(row.id);
            let (events, _) = read_events(&path, 0).await;
            let mut steps = row.steps.clone();
            let mut started = None;
            for e in events {
                if let JobEvent::Step { index, step, .. } = e {
                    started.get_or_insert(now());
                    if let Some(slot) = steps.get_mut(index as usize) {
                        *slot = step;
                    }
                }
            }
            for s in &mut steps {
                if s.state == StepState::Running {
                    s.state = StepState::Cancelled;
                    s.detail = "interrupted".into();
                }
            }
            let error = "interrupted: the daemon stopped while this job ran; what it left half-done was cleaned up".to_owned();
            let entry = AuditEntry::new("turnout", AuditAction::JobInterrupted)
                .app(&row.app)
                .env(&row.env)
                .change(None, Some(format!("job {} {}", row.id, row.kind)));
            let (id, st, err, release) = (row.id, steps.clone(), error.clone(), row.release_id);
            self.store
                .mutate(entry, move |c, _| {
                    jq::end_job(
                        c,
                        id,
                        &JobEnd {
                            state: JobState::Interrupted,
                            release_id: release,
                            steps: &st,
                            error: Some(&err),
                            log_tail: &[],
                            url: None,
                            started_at: started,
                        },
                    )
                })
                .await?;
            let info = self.store.call(move |c| jq::get_job(c, id)).await?;
            append_event(
                &path,
                &JobEvent::End {
                    job: job_info(&info),
                },
            )
            .await;
            warn!(job = row.id, kind = %row.kind, app = %row.app, env = %row.env, "job interrupted by the last shutdown");
        }
        Ok(rows.len())
    }
}
