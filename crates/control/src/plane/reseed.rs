//! Scheduled re-seeding: `[data] reseed = "CRON"` (read in `reseed_timezone`, UTC by default)
//! in an environment's `turnout.toml` layers re-creates its data from its seed at every tick,
//! e.g. QA and staging every night, through the same `seed_data` job as `turnout data reseed`.
//!
//! The scheduler (`schedule.rs`'s task) calls `run_due_reseeds` on each pass. The schedule is
//! the one the environment's *live* release declares, so it changes with a deploy: the first
//! pass that sees a schedule (or a changed one) records it and counts ticks from then, so a new
//! schedule never fires for ticks before it was deployed; a release that declares none
//! forgets it. A due tick runs once however many were missed (`Cadence::due`), as `turnout`;
//! a tick is skipped (recorded, audited) while the previous re-seed is still queued or running,
//! or while the environment is stopped or asleep (it is re-seeded at the next tick after that).
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tracing::{info, warn};
use turnout_model::{AuditAction, EnvRef, JobState, ReseedInfo, format_timestamp};

use super::ControlPlane;
use super::schedule::Cadence;
use crate::access::Principal;
use crate::app_file::ReleaseConfig;
use crate::error::ControlError;
use crate::store::AuditEntry;
use crate::store::reseed::{self as rq, ReseedCandidate};

/// Who a scheduled re-seed runs as (the daemon itself, named for the audit log).
const ACTOR: &str = "turnout (reseed schedule)";

impl ControlPlane {
    /// What `data show` says of a live release's schedule (`declared`: its cron and zone).
    pub(crate) async fn reseed_state(
        &self,
        env_id: i64,
        declared: Option<(String, String)>,
    ) -> Result<Option<ReseedInfo>, ControlError> {
        let Some((cron, timezone)) = declared else {
            return Ok(None);
        };
        let next = Cadence::parse(&cron, &timezone)
            .ok()
            .and_then(|c| c.next_after(Timestamp::now()))
            .map(|z| z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string());
        let last = self.store.call(move |c| rq::last(c, env_id)).await?;
        let (last_tick, last_result) = match last {
            Some((tick, result @ Some(_))) => (Some(format_timestamp(tick)), result),
            _ => (None, None),
        };
        Ok(Some(ReseedInfo {
            cron,
            timezone,
            next,
            last_tick,
            last_result,
        }))
    }

    /// Run every re-seed that is due; answer how long until the next tick (at most `max`).
    pub(crate) async fn run_due_reseeds(
        self: &Arc<Self>,
        max: Duration,
    ) -> Result<Duration, ControlError> {
        let candidates = self.store.call(|c| rq::candidates(c)).await?;
        let now = Timestamp::now();
        let mut sleep = max;
        for row in candidates {
            if self.closing.is_cancelled() {
                break;
            }
            let declared = serde_json::from_str::<ReleaseConfig>(&row.config)
                .ok()
                .and_then(|c| c.data.reseed.map(|cron| (cron, c.data.reseed_timezone)));
            let Some((cron, tz)) = declared else {
                if row.state.is_some() {
                    self.note_schedule(&row, None).await?;
                }
                continue;
            };
            let cadence = match Cadence::parse(&cron, &tz) {
                Ok(c) => c,
                Err(e) => {
                    warn!(app = %row.app, env = %row.env, error = %e, "a live release's reseed schedule cannot be read; skipping it");
                    continue;
                }
            };
            match &row.state {
                Some((c, z, last, job)) if *c == cron && *z == tz => {
                    if let Some(tick) =
                        cadence.due(Timestamp::from_second(*last).unwrap_or(now), now)
                    {
                        self.run_reseed(&row, tick, *job).await?;
                    }
                }
                _ => self.note_schedule(&row, Some((&cron, &tz))).await?,
            }
            if let Some(next) = cadence.next_after(now) {
                let until = next.timestamp().duration_since(Timestamp::now());
                let until = Duration::try_from(until).unwrap_or(Duration::ZERO);
                sleep = sleep.min(until.max(Duration::from_millis(10)));
            }
        }
        Ok(sleep)
    }

    /// Record a schedule the live release declares from now on (Some), or forget it (None).
    async fn note_schedule(
        &self,
        row: &ReseedCandidate,
        schedule: Option<(&str, &str)>,
    ) -> Result<(), ControlError> {
        let env_id = row.env_id;
        let described = schedule.map(|(cron, tz)| format!("{cron} ({tz})"));
        let entry = AuditEntry::new(ACTOR, AuditAction::DataSchedule)
            .app(&row.app)
            .env(&row.env)
            .change(None, described.clone());
        let schedule = schedule.map(|(c, z)| (c.to_owned(), z.to_owned()));
        let now = Timestamp::now().as_second();
        self.store
            .mutate(entry, move |c, _| match &schedule {
                Some((cron, tz)) => rq::begin(c, env_id, cron, tz, now),
                None => rq::forget(c, env_id),
            })
            .await
    }

    /// Re-seed for one due tick, unless the last one is still going or the environment is
    /// stopped or asleep; record and audit what happened.
    async fn run_reseed(
        self: &Arc<Self>,
        row: &ReseedCandidate,
        tick: Timestamp,
        last_job: Option<i64>,
    ) -> Result<(), ControlError> {
        let r = EnvRef {
            app: row.app.clone(),
            env: row.env.clone(),
        };
        let pending = match last_job {
            Some(job) => self
                .jobs
                .get(job)
                .await
                .ok()
                .filter(|j| matches!(j.state, JobState::Queued | JobState::Running))
                .map(|j| {
                    format!(
                        "the re-seed of an earlier tick (job {}) is still {}",
                        j.id, j.state
                    )
                }),
            None => None,
        };
        let outcome = if let Some(why) = pending {
            Err(format!("skipped: {why}"))
        } else if row.stopped {
            Err("skipped: the environment is stopped".to_owned())
        } else if row.sleeping {
            Err("skipped: the environment is asleep".to_owned())
        } else {
            let who = Principal {
                name: ACTOR.to_owned(),
                ..Principal::system()
            };
            self.seed_data(r.clone(), None, &who)
                .await
                .map(|job| job.id)
                .map_err(|e| format!("not run: {e}"))
        };
        let (env_id, tick_s) = (row.env_id, tick.as_second());
        let entry = AuditEntry::new(ACTOR, AuditAction::DataSchedule)
            .app(&row.app)
            .env(&row.env)
            .change(Some(format!("tick {}", format_timestamp(tick_s))), None);
        match outcome {
            Ok(job) => {
                info!(env = %r, job, "scheduled re-seed started");
                let result = format!("started job {job}");
                self.store
                    .mutate(entry, move |c, _| {
                        rq::record_tick(c, env_id, tick_s, &result, Some(job))
                    })
                    .await
            }
            Err(why) => {
                warn!(env = %r, why = %why, "scheduled re-seed did not run");
                let result = why.clone();
                self.store
                    .mutate_failed(entry, why, move |c| {
                        rq::record_tick(c, env_id, tick_s, &result, last_job)
                    })
                    .await
            }
        }
    }
}
