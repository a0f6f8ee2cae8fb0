//! Idle environments sleep, and the next request wakes them.
//!
//! - The sleeper reads the data plane's request counters every `SLEEP_TICK`. An environment that
//!   runs and whose counters (of its URL and its domains) have not moved for its sleep-after
//!   (its own setting, else its tier's: test environments after 30 minutes, the others never) is
//!   put to sleep through the same path as a stop: recorded in the store (`env.sleep` by
//!   "turnout"), its route becomes a sleeping one (`Routing::sleep`, the one route-apply path),
//!   its instance drained and stopped.
//! - The data plane holds a request to a sleeping environment and asks for a wake (once per
//!   environment, however many requests wait); the waker long-polls it for those
//!   (`DataPlane::wakes`) and starts each one's live release as a start job of the daemon's own
//!   (`env.wake`): the same `launch` and `go_live` as `env start`, at most one at a time per
//!   environment. Once it is live, the waiting requests are routed to it.
//!
//! A sleeping environment stays asleep across restarts of the daemon (the store says so, and
//! start-up routes it asleep instead of starting it) and of the data plane (its route says so).
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tracing::{info, warn};
use turnout_dataplane::WakeCursor;
use turnout_model::{Action, AuditAction, EnvInfo, EnvRef, SleepAfter};

use super::ControlPlane;
use super::routing::{Asleep, EnvKey, key};
use crate::access::Principal;
use crate::app_file::ReleaseConfig;
use crate::error::ControlError;
use crate::store::{AuditEntry, EnvRow, q};

/// How often the sleeper looks at the request counters.
const SLEEP_TICK: Duration = Duration::from_millis(500);
/// A woken environment's requests wait for its health check's deadline plus this (the start
/// of its process), then get a 503.
const WAKE_SLACK: Duration = Duration::from_secs(10);
/// The health-check deadline of a release whose configuration cannot be read.
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

impl ControlPlane {
    /// `turnout env update APP/ENV --sleep-after`: `None` goes back to the tier's default. It
    /// applies from the next look of the sleeper on (an environment idle for longer already
    /// sleeps then).
    pub async fn set_sleep_after(
        &self,
        r: EnvRef,
        sleep_after: Option<SleepAfter>,
        who: &Principal,
    ) -> Result<EnvInfo, ControlError> {
        let env = self.env_for(who, &r, Action::Config).await?;
        let shown = |s: Option<SleepAfter>| match s {
            Some(s) => s.to_string(),
            None => format!(
                "{} (the {} default)",
                SleepAfter::tier_default(env.tier),
                env.tier
            ),
        };
        let entry = AuditEntry::new(&who.name, AuditAction::EnvSleepAfter)
            .app(&r.app)
            .env(&r.env)
            .change(Some(shown(env.sleep_after)), Some(shown(sleep_after)));
        let id = env.id;
        self.store
            .mutate(entry, move |c, _| q::set_sleep_after(c, id, sleep_after))
            .await?;
        info!(app = %r.app, env = %r.env, sleep_after = %shown(sleep_after), "sleep setting changed");
        self.env_info(self.env_row(&r).await?).await
    }

    /// Start the sleeper and the waker; both end when the daemon shuts down.
    pub fn start_sleeping(self: &Arc<Self>) {
        let this = self.clone();
        self.tasks.spawn(async move { this.sleeper().await });
        let this = self.clone();
        self.tasks.spawn(async move { this.waker().await });
    }

    async fn sleeper(self: Arc<Self>) {
        // Each running environment's request count and when it last moved.
        let mut seen: HashMap<EnvKey, (u64, Instant)> = HashMap::new();
        loop {
            tokio::select! {
                _ = self.closing.cancelled() => return,
                _ = tokio::time::sleep(SLEEP_TICK) => {}
            }
            let running: HashSet<EnvKey> = self.routing.running_envs().into_iter().collect();
            seen.retain(|k, _| running.contains(k));
            if running.is_empty() {
                continue;
            }
            let counts: HashMap<(String, String), u64> = self
                .dataplane()
                .responses()
                .await
                .into_iter()
                .map(|row| ((row.app, row.env), row.responses))
                .collect();
            let envs = match self.store.call(|c| q::list_awake_envs(c)).await {
                Ok(envs) => envs,
                Err(e) => {
                    warn!(error = %e, "the sleeper cannot read the environments");
                    continue;
                }
            };
            let now = Instant::now();
            for env in envs {
                let k = (env.app.clone(), env.name.clone());
                let Some(after) = env
                    .sleeps_after()
                    .duration()
                    .filter(|_| running.contains(&k))
                else {
                    seen.remove(&k);
                    continue;
                };
                let count = counts
                    .get(&(k.0.to_string(), k.1.to_string()))
                    .copied()
                    .unwrap_or(0);
                let (last, since) = seen.entry(k.clone()).or_insert((count, now));
                if *last != count {
                    (*last, *since) = (count, now);
                } else if now.duration_since(*since) >= after {
                    // Each on its own: one waiting for its instance to stop holds up no other.
                    seen.remove(&k);
                    let this = self.clone();
                    self.tasks.spawn(async move {
                        if let Err(e) = this.put_to_sleep(&env, after).await {
                            warn!(app = %env.app, env = %env.name, error = %e, "could not put an idle environment to sleep");
                        }
                    });
                }
            }
        }
    }

    /// Stop an idle environment's instance and route its hosts to a wake. Left alone when a
    /// job or a stop holds it (it is not idle then).
    async fn put_to_sleep(&self, env: &EnvRow, after: Duration) -> Result<(), ControlError> {
        let r = EnvRef {
            app: env.app.clone(),
            env: env.name.clone(),
        };
        let Some(_sleeping) = self.env_locks.try_lock(&key(&r)) else {
            return Ok(());
        };
        let Some(run) = self.routing.running(&key(&r)) else {
            return Ok(());
        };
        let wait = self.wake_wait(run.release_id).await;
        let entry = AuditEntry::new(&Principal::system().name, AuditAction::EnvSleep)
            .app(&r.app)
            .env(&r.env)
            .change(
                None,
                Some(format!(
                    "no request for {}",
                    turnout_model::duration::show(after)
                )),
            );
        let env_id = env.id;
        self.store
            .mutate(entry, move |c, _| q::set_sleeping(c, env_id, true))
            .await?;
        let asleep = Asleep {
            wait,
            tier: env.tier,
        };
        if let Some(old) = self.routing.sleep(key(&r), asleep).await {
            self.retire(&r, old).await;
        }
        info!(app = %r.app, env = %r.env, idle = ?after, "environment asleep");
        Ok(())
    }

    /// How long requests wait for `release_id` to wake: its health check's deadline, plus the
    /// start of its process.
    pub(super) async fn wake_wait(&self, release_id: i64) -> Duration {
        let config = self
            .store
            .call(move |c| q::get_release(c, release_id))
            .await
            .ok()
            .and_then(|row| serde_json::from_str::<ReleaseConfig>(&row.config).ok());
        config.map_or(DEFAULT_HEALTH_TIMEOUT, |c| c.health_timeout) + WAKE_SLACK
    }

    /// Start-up: how each sleeping environment is routed.
    pub(super) async fn sleepers(&self, envs: &[EnvRow]) -> Vec<(EnvKey, Asleep)> {
        let mut out = Vec::new();
        for env in envs.iter().filter(|e| e.sleeping && !e.stopped) {
            let Some(release_id) = env.current_release_id else {
                continue;
            };
            let asleep = Asleep {
                wait: self.wake_wait(release_id).await,
                tier: env.tier,
            };
            out.push(((env.app.clone(), env.name.clone()), asleep));
        }
        out
    }

    async fn waker(self: Arc<Self>) {
        let mut cursor = WakeCursor::default();
        loop {
            let wanted = tokio::select! {
                _ = self.closing.cancelled() => return,
                wanted = self.dataplane().wakes(&mut cursor) => wanted,
            };
            for (app, env) in wanted {
                let (Ok(app), Ok(env)) = (app.parse(), env.parse()) else {
                    continue;
                };
                self.wake(EnvRef { app, env }).await;
            }
        }
    }

    /// Wake `r` if it sleeps and no wake of it runs already.
    async fn wake(self: &Arc<Self>, r: EnvRef) {
        let k = key(&r);
        if !self.routing.env(&k).asleep || !self.waking().insert(k.clone()) {
            return;
        }
        let this = self.clone();
        let woken = k.clone();
        let ended = move || {
            this.waking().remove(&woken);
        };
        match self.wake_job(r.clone(), ended).await {
            Ok(job) => {
                info!(app = %r.app, env = %r.env, job = job.id, "waking a sleeping environment")
            }
            Err(e) => {
                self.waking().remove(&k);
                warn!(app = %r.app, env = %r.env, error = %e, "could not wake a sleeping environment");
            }
        }
    }

    fn waking(&self) -> std::sync::MutexGuard<'_, HashSet<EnvKey>> {
        self.waking.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
