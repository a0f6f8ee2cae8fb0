//! Which snapshots a schedule keeps. Stateless and deterministic, aligned to the UTC epoch: for
//! each period P of the schedule and each of the last two slots ⌊now/P⌋−1 and ⌊now/P⌋, the
//! *oldest* snapshot whose ⌊t/P⌋ is that slot is kept; so are the newest snapshot and every
//! pinned one; the rest may go, except those still being written or verified (`busy`).

/// The default schedule of production and staging: snapshots kept 1 min, 2 min, 5 min, 10 min,
/// 60 min, 3 h, 6 h and 1 day old (seconds).
pub const EXPONENTIAL: [u64; 8] = [60, 120, 300, 600, 3600, 10_800, 21_600, 86_400];

/// A snapshot as retention sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: i64,
    /// When it was taken (unix seconds).
    pub at: i64,
    pub pinned: bool,
    /// Being written or verified: never deleted now.
    pub busy: bool,
}

/// The ids of `candidates` to keep at `now` under `schedule` (periods in seconds).
pub fn keep(schedule: &[u64], candidates: &[Candidate], now: i64) -> Vec<i64> {
    let _ = (schedule, candidates, now);
    todo!()
}

/// The restore-point error bound `schedule` guarantees once its history is long enough, as
/// (age covered, worst error) pairs in seconds: a moment up to `age` ago can be restored to a
/// snapshot at most `error` older than it.
pub fn error_bound(schedule: &[u64]) -> Vec<(u64, u64)> {
    let _ = schedule;
    todo!()
}
