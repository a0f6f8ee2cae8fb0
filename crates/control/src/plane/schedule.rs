//! Scheduled cuts (`turnout pipeline schedule`): a promotion at every tick of a cron expression
//! in an explicit time zone, run by the daemon's scheduler as the user who made the schedule,
//! through the same `promote` as one typed by hand (their rights as they are then, the
//! pipeline's rules, approvals, audit).
//!
//! The scheduler is one task on the plane's tracker; its first pass runs during start-up. Each
//! pass handles every schedule whose latest tick lies after the last one it handled
//! (`Cadence::due`): one run however many ticks were missed while the daemon was down, then the
//! tick is recorded. It then sleeps until the earliest next tick (at most `MAX_SLEEP`, so a wall
//! clock that jumps is noticed), or until a schedule is added or removed, or until the daemon
//! closes.
//!
//! A tick whose schedule's previous cut is still queued or running (or waits for approval) is
//! recorded as skipped, so a frequent schedule never piles cuts up. A tick is recorded once its
//! promotion is queued (or refused). A daemon killed in between runs that tick again at its next
//! start, when the job it queued was marked interrupted anyway.
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use croner::Cron;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use tracing::{info, warn};
use turnout_model::{
    Action, AppName, AuditAction, CreateSchedule, EnvRef, JobInfo, JobState, MAX_CRON_LEN,
    MAX_SCHEDULES, MAX_TZ_LEN, ScheduleInfo, format_timestamp,
};

use super::ControlPlane;
use crate::access::Principal;
use crate::error::ControlError;
use crate::store::access as aq;
use crate::store::pipeline::{self as pq, NewSchedule, ScheduleRow};
use crate::store::{AuditEntry, Tx};

/// The longest the scheduler sleeps between passes.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// When a schedule fires: a cron expression read in a time zone.
pub(crate) struct Cadence {
    cron: Cron,
    tz: TimeZone,
}

impl Cadence {
    /// Parse a cron expression (five fields, or six with seconds first) and an IANA time
    /// zone; the error says what is wrong and what is accepted.
    pub(crate) fn parse(cron: &str, tz: &str) -> Result<Cadence, String> {
        if cron.len() > MAX_CRON_LEN {
            return Err(format!(
                "the cron expression is {} characters long; at most {MAX_CRON_LEN} are accepted",
                cron.len()
            ));
        }
        if tz.is_empty() || tz.len() > MAX_TZ_LEN {
            return Err(format!(
                "a time zone name has 1 to {MAX_TZ_LEN} characters, such as Europe/Berlin or UTC"
            ));
        }
        let parsed = Cron::from_str(cron).map_err(|e| {
            format!(
                "the cron expression {cron:?} is not valid ({e}); write five fields (minute hour day-of-month month day-of-week, for example \"0 17 * * FRI\") or six with seconds first"
            )
        })?;
        let zone = TimeZone::get(tz).map_err(|_| {
            format!(
                "unknown time zone {:?}: use an IANA name such as Europe/Berlin, America/New_York or UTC",
                tz.chars().take(MAX_TZ_LEN).collect::<String>()
            )
        })?;
        let cadence = Cadence {
            cron: parsed,
            tz: zone,
        };
        if cadence.next_after(Timestamp::now()).is_none() {
            return Err(format!(
                "the cron expression {cron:?} never fires (no such date ahead); check its day and month"
            ));
        }
        Ok(cadence)
    }

    /// The latest tick in (`last`, `now`]: what a scheduler waking at `now` runs, once, however
    /// many ticks it missed since it last handled one. None when no tick passed.
    pub(crate) fn due(&self, last: Timestamp, now: Timestamp) -> Option<Timestamp> {
        let now = Timestamp::from_second(now.as_second()).ok()?;
        let tick = self
            .cron
            .find_previous_occurrence(&now.to_zoned(self.tz.clone()), true)
            .ok()?
            .timestamp();
        (tick > last).then_some(tick)
    }

    /// The first tick after `now`, in the schedule's time zone.
    pub(crate) fn next_after(&self, now: Timestamp) -> Option<Zoned> {
        self.cron
            .find_next_occurrence(&now.to_zoned(self.tz.clone()), false)
            .ok()
    }
}

fn timestamp(unix: i64) -> Timestamp {
    Timestamp::from_second(unix).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn schedule_info(row: &ScheduleRow) -> ScheduleInfo {
    let next = Cadence::parse(&row.cron, &row.tz)
        .ok()
        .and_then(|c| c.next_after(Timestamp::now()))
        .map(|z| z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string());
    ScheduleInfo {
        id: row.id,
        app: row.app.clone(),
        from: row.from.clone(),
        to: row.to.clone(),
        cron: row.cron.clone(),
        tz: row.tz.clone(),
        created_by: row.created_by.clone(),
        created_at: format_timestamp(row.created_at),
        last_tick: format_timestamp(row.last_tick),
        next_tick: next,
        last_result: row.last_result.clone(),
        last_job: row.last_job,
    }
}

impl ControlPlane {
    pub async fn list_schedules(
        &self,
        app: AppName,
        who: &Principal,
    ) -> Result<Vec<ScheduleInfo>, ControlError> {
        let row = self.authorize_app(who, &app, Action::Read).await?;
        let rows = self
            .store
            .call(move |c| pq::schedules(c, Some(row.id)))
            .await?;
        Ok(rows.iter().map(schedule_info).collect())
    }

    /// Record a scheduled cut (owners of the app): refused, storing nothing, when the cron
    /// expression or time zone is bad or the promotion is not allowed now.
    pub async fn add_schedule(
        &self,
        app: AppName,
        req: CreateSchedule,
        who: &Principal,
    ) -> Result<ScheduleInfo, ControlError> {
        let app_row = self.authorize_app(who, &app, Action::Config).await?;
        let tz = req.tz.unwrap_or_else(|| "UTC".to_owned());
        Cadence::parse(&req.cron, &tz).map_err(ControlError::Invalid)?;
        let from = self
            .env_row(&EnvRef {
                app: app.clone(),
                env: req.from.clone(),
            })
            .await?;
        let to = self
            .env_row(&EnvRef {
                app: app.clone(),
                env: req.to.clone(),
            })
            .await?;
        if from.id == to.id {
            return Err(ControlError::Invalid(format!(
                "{app}/{} cannot be promoted to itself",
                to.name
            )));
        }
        self.check_promotion(&from, &to).await?;
        let entry = AuditEntry::new(&who.name, AuditAction::ScheduleAdd)
            .app(&app)
            .env(&req.to)
            .change(
                None,
                Some(format!(
                    "{} → {} at \"{}\" ({tz})",
                    req.from, req.to, req.cron
                )),
            );
        let (user_id, by, app_id) = (who.user_id, who.name.clone(), app_row.id);
        let id = self
            .store
            .mutate(entry, move |c, _| {
                pq::insert_schedule(
                    c,
                    &NewSchedule {
                        app_id,
                        from: &req.from,
                        to: &req.to,
                        cron: &req.cron,
                        tz: &tz,
                        user_id,
                        created_by: &by,
                    },
                    MAX_SCHEDULES,
                )
            })
            .await?;
        self.schedules_changed.notify_one();
        let row = self
            .store
            .call(move |c| pq::schedule(c, app_id, id))
            .await?;
        info!(app = %app, schedule = id, cron = %row.cron, tz = %row.tz, "schedule added");
        Ok(schedule_info(&row))
    }

    pub async fn remove_schedule(
        &self,
        app: AppName,
        id: i64,
        who: &Principal,
    ) -> Result<(), ControlError> {
        let app_row = self.authorize_app(who, &app, Action::Config).await?;
        let app_id = app_row.id;
        let row = self
            .store
            .call(move |c| pq::schedule(c, app_id, id))
            .await?;
        let entry = AuditEntry::new(&who.name, AuditAction::ScheduleRemove)
            .app(&app)
            .env(&row.to)
            .change(
                Some(format!(
                    "{} → {} at \"{}\" ({})",
                    row.from, row.to, row.cron, row.tz
                )),
                None,
            );
        self.store
            .mutate(entry, move |c, _| pq::delete_schedule(c, id))
            .await?;
        self.schedules_changed.notify_one();
        Ok(())
    }

    /// Run schedule `id`'s cut now, as `who` (a promotion like any other); its ticks are left
    /// as they are.
    pub async fn run_schedule(
        self: &Arc<Self>,
        app: AppName,
        id: i64,
        who: &Principal,
    ) -> Result<JobInfo, ControlError> {
        let app_row = self.authorize_app(who, &app, Action::Read).await?;
        let app_id = app_row.id;
        let row = self
            .store
            .call(move |c| pq::schedule(c, app_id, id))
            .await?;
        self.promote(EnvRef { app, env: row.to }, row.from, who)
            .await
    }

    /// Start the scheduler (see the module's comment): its first pass, which catches up on
    /// the ticks missed while the daemon was down, runs before this returns (so before the
    /// API serves); the task ends when the daemon closes.
    pub async fn start_scheduler(self: &Arc<Self>) {
        self.recover_backups().await;
        self.recover_drills().await;
        let first = self.scheduler_pass().await;
        let this = self.clone();
        self.tasks.spawn(async move {
            let mut sleep = first;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(sleep) => {}
                    () = this.schedules_changed.notified() => {}
                    () = this.closing.cancelled() => return,
                }
                sleep = this.scheduler_pass().await;
            }
        });
    }

    /// Run what is due (scheduled cuts, scheduled re-seeds, then scheduled backups); answer how
    /// long to sleep.
    async fn scheduler_pass(self: &Arc<Self>) -> Duration {
        let cuts = self.run_due_cuts().await.unwrap_or_else(|e| {
            warn!(error = %e, "the scheduler could not run its schedules");
            MAX_SLEEP
        });
        let reseeds = self.run_due_reseeds(MAX_SLEEP).await.unwrap_or_else(|e| {
            warn!(error = %e, "the scheduler could not run its re-seeds");
            MAX_SLEEP
        });
        let backups = self.run_due_backups(MAX_SLEEP).await.unwrap_or_else(|e| {
            warn!(error = %e, "the scheduler could not run its backups");
            MAX_SLEEP
        });
        cuts.min(reseeds).min(backups)
    }

    /// One pass: run every schedule that is due; answer how long to sleep until the next tick.
    async fn run_due_cuts(self: &Arc<Self>) -> Result<Duration, ControlError> {
        let rows = self.store.call(|c| pq::schedules(c, None)).await?;
        let now = Timestamp::now();
        let mut sleep = MAX_SLEEP;
        for row in rows {
            if self.closing.is_cancelled() {
                break;
            }
            let cadence = match Cadence::parse(&row.cron, &row.tz) {
                Ok(c) => c,
                Err(e) => {
                    warn!(schedule = row.id, app = %row.app, error = %e, "a stored schedule cannot be read; skipping it");
                    continue;
                }
            };
            if let Some(tick) = cadence.due(timestamp(row.last_tick), now) {
                self.run_cut(&row, tick).await?;
            }
            if let Some(next) = cadence.next_after(now) {
                let until = next.timestamp().duration_since(Timestamp::now());
                let until = Duration::try_from(until).unwrap_or(Duration::ZERO);
                sleep = sleep.min(until.max(Duration::from_millis(10)));
            }
        }
        Ok(sleep)
    }

    /// Run one due tick of a schedule as the user who made it, and record how it went.
    async fn run_cut(
        self: &Arc<Self>,
        row: &ScheduleRow,
        tick: Timestamp,
    ) -> Result<(), ControlError> {
        let user_id = row.user_id;
        let user = self.store.call(move |c| pq::principal(c, user_id)).await?;
        let to = EnvRef {
            app: row.app.clone(),
            env: row.to.clone(),
        };
        let actor = format!("{} (schedule {})", row.created_by, row.id);
        let cut = match (user, self.earlier_cut_pending(row).await) {
            // A frequent schedule never piles cuts up behind a slow one (or a pending approval).
            (_, Some(why)) => Cut::Skipped(why),
            (None, None) => Cut::Refused(format!(
                "the user who made schedule {} no longer exists",
                row.id
            )),
            (Some(user), None) => {
                let who = Principal {
                    name: actor.clone(),
                    ..user
                };
                match self.promote(to, row.from.clone(), &who).await {
                    Ok(job) => Cut::Started(job.id),
                    Err(ControlError::NeedsApproval { id, .. }) => Cut::Waiting(id),
                    Err(e) => Cut::Refused(e.to_string()),
                }
            }
        };
        let (id, tick_s) = (row.id, tick.as_second());
        let entry = AuditEntry::new(&actor, AuditAction::ScheduleRun)
            .app(&row.app)
            .env(&row.to)
            .change(
                Some(format!("{} (tick {})", row.from, format_timestamp(tick_s))),
                Some(row.to.to_string()),
            );
        let (job, approval) = match &cut {
            Cut::Started(job) => (Some(*job), None),
            Cut::Waiting(approval) => (None, Some(*approval)),
            // What is still pending stays on record, so the next tick waits for it too.
            Cut::Skipped(_) => (row.last_job, row.last_approval),
            Cut::Refused(_) => (None, None),
        };
        let result = match &cut {
            Cut::Started(job) => format!("started job {job}"),
            Cut::Waiting(approval) => {
                format!("waiting for a second owner's approval (request {approval})")
            }
            Cut::Skipped(why) => format!("skipped: {why}"),
            Cut::Refused(why) => format!("not run: {why}"),
        };
        let record = move |c: &Tx<'_>| pq::record_tick(c, id, tick_s, &result, job, approval);
        match cut {
            Cut::Started(_) | Cut::Waiting(_) => {
                info!(app = %row.app, schedule = id, job, approval, "scheduled cut started or parked for approval");
                self.store.mutate(entry, move |c, _| record(c)).await
            }
            Cut::Skipped(why) | Cut::Refused(why) => {
                warn!(app = %row.app, schedule = id, why = %why, "scheduled cut did not run");
                self.store.mutate_failed(entry, why, record).await
            }
        }
    }

    /// Why the schedule's previous cut still holds this tick back: its job is queued or
    /// running, or its approval request is still pending.
    async fn earlier_cut_pending(&self, row: &ScheduleRow) -> Option<String> {
        if let Some(job) = row.last_job
            && let Ok(info) = self.jobs.get(job).await
            && matches!(info.state, JobState::Queued | JobState::Running)
        {
            return Some(format!(
                "the cut of an earlier tick (job {job}) is still {}",
                info.state
            ));
        }
        let approval = row.last_approval?;
        let pending = self
            .store
            .call(move |c| aq::get_approval(c, approval))
            .await
            .ok()
            .filter(|a| a.status == "pending" && a.expires_at > crate::store::now())?;
        Some(format!(
            "the cut of an earlier tick still waits for approval (request {})",
            pending.id
        ))
    }
}

/// What one tick did.
enum Cut {
    Started(i64),
    /// Parked for a second owner's approval: the request.
    Waiting(i64),
    Skipped(String),
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn missed_ticks_over_a_three_day_outage_run_once_the_latest() {
        let daily = Cadence::parse("0 17 * * *", "Europe/Berlin").unwrap();
        // Last handled Monday 17:00 Berlin (16:00 UTC); down until Thursday 18:30 UTC.
        let last = at("2026-11-23T16:00:00Z");
        let now = at("2026-11-26T18:30:00Z");
        assert_eq!(daily.due(last, now), Some(at("2026-11-26T16:00:00Z")));
        // Recorded, the next pass finds nothing more to do until the next tick.
        let handled = at("2026-11-26T16:00:00Z");
        assert_eq!(daily.due(handled, now), None);
        assert_eq!(daily.due(handled, at("2026-11-27T15:59:59Z")), None);
        assert_eq!(
            daily.due(handled, at("2026-11-27T16:00:00Z")),
            Some(at("2026-11-27T16:00:00Z"))
        );
    }

    #[test]
    fn a_new_schedule_does_not_fire_for_ticks_before_it_was_made() {
        let friday = Cadence::parse("0 17 * * FRI", "Europe/Berlin").unwrap();
        // Made on Saturday: last Friday's tick is not due.
        let made = at("2026-11-28T10:00:00Z");
        assert_eq!(friday.due(made, at("2026-11-28T10:00:05Z")), None);
        assert_eq!(
            friday.next_after(made).unwrap().timestamp(),
            at("2026-12-04T16:00:00Z")
        );
    }

    #[test]
    fn berlin_wall_clock_ticks_follow_daylight_saving_time() {
        let daily = Cadence::parse("0 17 * * *", "Europe/Berlin").unwrap();
        // Summer time ends on 2026-10-25: 17:00 is 15:00 UTC before, 16:00 UTC after.
        let before = daily.next_after(at("2026-10-24T12:00:00Z")).unwrap();
        let after = daily.next_after(at("2026-10-25T12:00:00Z")).unwrap();
        assert_eq!(before.timestamp(), at("2026-10-24T15:00:00Z"));
        assert_eq!(after.timestamp(), at("2026-10-25T16:00:00Z"));
        // 02:30 does not exist on 2026-03-29 (clocks jump from 02:00 to 03:00): that day's tick
        // still comes, once, and the day after is at 02:30 summer time.
        let early = Cadence::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let spring = early.next_after(at("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(spring.date().to_string(), "2026-03-29");
        let next = early.next_after(spring.timestamp()).unwrap();
        assert_eq!(next.timestamp(), at("2026-03-30T00:30:00Z"));
        // Across the spring gap, an outage over it still runs once.
        assert_eq!(
            early.due(at("2026-03-28T01:30:00Z"), at("2026-03-30T12:00:00Z")),
            Some(at("2026-03-30T00:30:00Z"))
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_what_to_write() {
        let err = Cadence::parse("0 17 * *", "UTC").err().unwrap();
        assert!(err.contains("five fields"), "{err}");
        let err = Cadence::parse("61 * * * *", "UTC").err().unwrap();
        assert!(err.contains("not valid"), "{err}");
        let err = Cadence::parse("0 17 * * FRI", "Mars/Olympus")
            .err()
            .unwrap();
        assert!(
            err.contains("unknown time zone") && err.contains("Europe/Berlin"),
            "{err}"
        );
        let err = Cadence::parse("0 0 31 2 *", "UTC").err().unwrap();
        assert!(err.contains("never fires"), "{err}");
        let long = "* ".repeat(100);
        assert!(
            Cadence::parse(&long, "UTC")
                .err()
                .unwrap()
                .contains("at most")
        );
        assert!(
            Cadence::parse("*/1 * * * * *", "UTC").is_ok(),
            "seconds first"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            /// Whatever the outage, `due` names at most one tick: one that lies after the last
            /// handled and no later than now, with no tick between it and now.
            #[test]
            fn due_is_the_single_latest_missed_tick(
                start in 1_700_000_000i64..1_800_000_000,
                gap in 0i64..(10 * 86_400),
                pattern in proptest::sample::select(vec![
                    "0 17 * * FRI", "30 2 * * *", "*/15 * * * *", "0 0 1 * *", "0 9-17 * * MON-FRI",
                ]),
                zone in proptest::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York"]),
            ) {
                let cadence = Cadence::parse(pattern, zone).unwrap();
                let (last, now) = (timestamp(start), timestamp(start + gap));
                let first_after_last = cadence.next_after(last).unwrap().timestamp();
                match cadence.due(last, now) {
                    None => prop_assert!(first_after_last > now),
                    Some(tick) => {
                        prop_assert!(tick > last && tick <= now);
                        let next = cadence.next_after(tick).unwrap().timestamp();
                        prop_assert!(next > now, "{tick} is not the latest: {next} <= {now}");
                    }
                }
            }
        }
    }
}
