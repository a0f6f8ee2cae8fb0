//! The build queue: at most `limit` builds run at once (`turnout serve --max-builds`, one per
//! CPU by default), so fifty pushes at once do not start fifty compilers on two cores. A
//! deploy asks for a slot right before its build step; while it waits its job is `queued`,
//! with its place in line in its job info. Production deploys go ahead of every other waiting
//! build; otherwise first come, first served, so nothing waits behind a later arrival forever.
//!
//! Lock order: one lock (`queue`), never held across an await; nothing else is locked under it
//! except a waiting job's own info (`JobCtx::queued`).
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::jobs::JobCtx;
use crate::error::ControlError;

/// The bounds of `--max-builds` (its parser says the same).
const MAX_BUILDS: std::ops::RangeInclusive<usize> = 1..=64;

pub(crate) struct Builds {
    limit: usize,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    running: usize,
    /// In the order they get a slot: production first, each class first come, first served.
    waiting: VecDeque<Waiter>,
    next_ticket: u64,
}

struct Waiter {
    ticket: u64,
    production: bool,
    job: JobCtx,
    granted: oneshot::Sender<()>,
}

/// A running build's slot; the next waiting build gets it when this is dropped.
pub(crate) struct BuildSlot {
    builds: Arc<Builds>,
}

/// A build waiting for a slot: dropped before it got one, it leaves the line; dropped after
/// one was granted but before it was taken, it hands the slot on.
struct Waiting {
    builds: Arc<Builds>,
    ticket: u64,
    granted: oneshot::Receiver<()>,
}

impl Builds {
    /// `limit` is clamped to [`MAX_BUILDS`].
    pub fn new(limit: usize) -> Arc<Builds> {
        Arc::new(Builds {
            limit: limit.clamp(*MAX_BUILDS.start(), *MAX_BUILDS.end()),
            queue: Mutex::default(),
        })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for `job`'s build: at once when one is free and nobody waits, else once its turn
    /// comes (the job is `queued` meanwhile, its position kept up to date). Fails if the job is
    /// cancelled while it waits.
    pub async fn slot(
        self: &Arc<Self>,
        job: &JobCtx,
        production: bool,
    ) -> Result<BuildSlot, ControlError> {
        let mut waiting = {
            let mut q = self.queue();
            if q.running < self.limit && q.waiting.is_empty() {
                q.running += 1;
                return Ok(BuildSlot {
                    builds: self.clone(),
                });
            }
            let ticket = q.next_ticket;
            q.next_ticket += 1;
            let (tx, rx) = oneshot::channel();
            let at = match production {
                true => q.waiting.iter().take_while(|w| w.production).count(),
                false => q.waiting.len(),
            };
            q.waiting.insert(
                at,
                Waiter {
                    ticket,
                    production,
                    job: job.clone(),
                    granted: tx,
                },
            );
            q.show_positions();
            Waiting {
                builds: self.clone(),
                ticket,
                granted: rx,
            }
        };
        job.guard(&mut waiting.granted).await?.map_err(|_| {
            ControlError::internal("the build queue dropped a waiting build".to_owned())
        })?;
        job.resumed();
        Ok(BuildSlot {
            builds: self.clone(),
        })
    }

    fn release(&self) {
        let mut q = self.queue();
        q.running -= 1;
        q.grant(self.limit);
    }
}

impl Queue {
    /// Hand free slots to the first in line.
    fn grant(&mut self, limit: usize) {
        let mut granted = false;
        while self.running < limit {
            let Some(next) = self.waiting.pop_front() else {
                break;
            };
            // Only fails when its `Waiting` is gone, which takes it out of the line first.
            if next.granted.send(()).is_ok() {
                self.running += 1;
                granted = true;
            }
        }
        if granted {
            self.show_positions();
        }
    }

    fn show_positions(&self) {
        for (i, w) in self.waiting.iter().enumerate() {
            w.job.queued(u32::try_from(i + 1).unwrap_or(u32::MAX));
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut q = self.builds.queue();
        if let Some(at) = q.waiting.iter().position(|w| w.ticket == self.ticket) {
            q.waiting.remove(at);
            q.show_positions();
        } else if self.granted.try_recv().is_ok() {
            // Granted while it was being cancelled: the slot goes to the next in line.
            q.running -= 1;
            q.grant(self.builds.limit);
        }
    }
}

impl Drop for BuildSlot {
    fn drop(&mut self) {
        self.builds.release();
    }
}
