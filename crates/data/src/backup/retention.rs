//! Which snapshots a schedule keeps. Stateless and deterministic, aligned to the UTC epoch: for
//! each period P of the schedule and each of the last two slots ⌊now/P⌋−1 and ⌊now/P⌋, the
//! *oldest* snapshot whose ⌊t/P⌋ is that slot is kept; so are the newest snapshot and every
//! pinned one; the rest may go, except those still being written or verified (`busy`).
//!
//! What this guarantees (the property tests below check each, over random histories with gaps,
//! outages and missed runs):
//!
//! - At most 2·|schedule|+1 snapshots are kept besides the pinned and busy ones.
//! - A snapshot not kept at one run is not kept at any later run (nor would it be if it had not
//!   been deleted): deleting it never loses one a later run would want, and running late or
//!   skipping runs changes nothing but when the deleting happens.
//! - Coverage: for every snapshot h ever taken whose age x is at most the longest period, a
//!   kept snapshot was taken within P(x) before h (in (h − P(x), h]), where P(x) is the
//!   smallest period ≥ x. Why: h's slot ⌊h/P⌋ is ⌊now/P⌋ or the one before (h ≥ now − P), and
//!   that slot's oldest snapshot, kept, is at or before h and after the slot began.
//!
//! The wish "for every target age a there is a kept snapshot aged between a and 2a" does not
//! hold under this rule: two slots per period keep the ages r and r + P (r = now mod P), and
//! the exponential schedule's periods leave holes between them. At 00:59:59 UTC, with a
//! snapshot every minute, the kept ages are 59 s, 119 s, 239 s, 299 s, 599 s, 1199 s, 3599 s
//! and then hours: nothing between 1200 s and 2400 s. What holds, for a history with a
//! snapshot at every multiple of the smallest period (and, from coverage, for any history
//! within its own gaps): for every target age a between the smallest and the largest period
//! there is a kept snapshot aged in [a, a + P(a)), so between a and 2a
//! whenever a is itself a period. `error_bound` turns coverage into restore-point errors.

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

/// The ids of `candidates` to keep at `now` under `schedule` (periods in seconds), ascending.
/// Of two snapshots taken the same second, the lower id counts as the older.
pub fn keep(schedule: &[u64], candidates: &[Candidate], now: i64) -> Vec<i64> {
    let order = |c: &Candidate| (c.at, c.id);
    let mut kept: Vec<i64> = candidates
        .iter()
        .filter(|c| c.pinned || c.busy)
        .map(|c| c.id)
        .collect();
    kept.extend(candidates.iter().max_by_key(|c| order(c)).map(|c| c.id));
    for &period in schedule {
        let Ok(period) = i64::try_from(period) else {
            continue;
        };
        if period <= 0 {
            continue;
        }
        let current = now.div_euclid(period);
        for slot in [current - 1, current] {
            let oldest = candidates
                .iter()
                .filter(|c| c.at.div_euclid(period) == slot)
                .min_by_key(|c| order(c));
            kept.extend(oldest.map(|c| c.id));
        }
    }
    kept.sort_unstable();
    kept.dedup();
    kept
}

/// The restore-point error bound `schedule` guarantees once its history is long enough, as
/// (age covered, worst error) pairs in seconds: a moment up to `age` ago can be restored to a
/// snapshot at most `error` older than it.
///
/// This assumes snapshots at most the smallest period P₁ apart (the scheduler's cadence). The
/// newest snapshot bounds a moment now: (0, P₁). For a larger period P, a moment m up to
/// P − P₁ ago has a snapshot h within P₁ before it, aged at most P, so (coverage) a kept one
/// within P before h: (P − P₁, P + P₁). Empty for an empty schedule.
pub fn error_bound(schedule: &[u64]) -> Vec<(u64, u64)> {
    let mut periods: Vec<u64> = schedule.iter().copied().filter(|&p| p > 0).collect();
    periods.sort_unstable();
    periods.dedup();
    let Some(&smallest) = periods.first() else {
        return Vec::new();
    };
    let mut bounds = vec![(0, smallest)];
    bounds.extend(periods[1..].iter().map(|&p| (p - smallest, p + smallest)));
    bounds
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    /// The smallest period of `schedule` at least `age` (the largest when none is).
    fn period_for(schedule: &[u64], age: i64) -> i64 {
        let mut periods: Vec<i64> = schedule.iter().map(|&p| p as i64).collect();
        periods.sort_unstable();
        periods
            .iter()
            .copied()
            .find(|&p| p >= age)
            .unwrap_or(*periods.last().unwrap())
    }

    fn snap(id: i64, at: i64) -> Candidate {
        Candidate {
            id,
            at,
            pinned: false,
            busy: false,
        }
    }

    fn ages(kept: &[i64], history: &[Candidate], now: i64) -> Vec<i64> {
        let mut ages: Vec<i64> = history
            .iter()
            .filter(|c| kept.contains(&c.id))
            .map(|c| now - c.at)
            .collect();
        ages.sort_unstable();
        ages
    }

    /// A snapshot at every minute of the two days before `now`.
    fn every_minute(now: i64) -> Vec<Candidate> {
        let first = now.div_euclid(60) - 2 * 1440;
        (first..=now.div_euclid(60))
            .map(|m| snap(m, m * 60))
            .collect()
    }

    #[test]
    fn the_oldest_of_each_of_the_last_two_slots_the_newest_pinned_and_busy_are_kept() {
        let c = |id, at, pinned, busy| Candidate {
            id,
            at,
            pinned,
            busy,
        };
        let all = [
            c(1, 0, true, false),
            c(2, 500, false, false),
            c(3, 610, false, true),
            c(4, 650, false, false),
            c(5, 1190, false, false),
            c(6, 1200, false, false),
            c(7, 1250, false, false),
        ];
        // now = 1260: slots of 600 are 1 ([600, 1200)) and 2 ([1200, 1800)).
        assert_eq!(keep(&[600], &all, 1260), vec![1, 3, 6, 7]);
        assert_eq!(keep(&[600], &all, 1260).len(), 4);
        let not_busy: Vec<_> = all
            .iter()
            .map(|&x| Candidate { busy: false, ..x })
            .collect();
        assert_eq!(keep(&[600], &not_busy, 1260), vec![1, 3, 6, 7]);
        // Later, slot 1 is gone: 3 (no longer busy) goes, 4 was never wanted.
        assert_eq!(keep(&[600], &not_busy, 1900), vec![1, 6, 7]);
        assert!(keep(&[600], &[], 0).is_empty());
        // Ties: the lower id is the older.
        assert_eq!(keep(&[60], &[snap(9, 60), snap(8, 60)], 61), vec![8, 9]);
    }

    #[test]
    fn between_a_and_2a_fails_at_00_59_59_but_a_to_a_plus_p_of_a_holds() {
        let now = 20_000 * 86_400 + 3599;
        let history = every_minute(now);
        let kept = keep(&EXPONENTIAL, &history, now);
        let ages = ages(&kept, &history, now);
        assert!(
            ages.starts_with(&[59, 119, 239, 299, 599, 1199, 3599]),
            "{ages:?}"
        );
        assert!(!ages.iter().any(|&x| (1200..=2400).contains(&x)));
        assert!(ages.iter().any(|&x| (1200..1200 + 3600).contains(&x)));
    }

    #[test]
    fn error_bounds_of_the_exponential_schedule() {
        assert_eq!(
            error_bound(&EXPONENTIAL),
            vec![
                (0, 60),
                (60, 180),
                (240, 360),
                (540, 660),
                (3540, 3660),
                (10_740, 10_860),
                (21_540, 21_660),
                (86_340, 86_460)
            ]
        );
        assert!(error_bound(&[]).is_empty());
        assert_eq!(error_bound(&[3600, 0, 60, 60]), vec![(0, 60), (3540, 3660)]);
    }

    /// One step of a simulated history: how long after the previous snapshot the next is
    /// taken (the scheduler's minute, or an outage), whether retention runs then and how late,
    /// whether the new snapshot is pinned, and whether the newest few are busy.
    #[derive(Clone, Debug)]
    struct Step {
        gap: i64,
        run: bool,
        late: i64,
        pinned: bool,
        busy: bool,
    }

    fn step(outages: bool) -> impl Strategy<Value = Step> {
        let gap = if outages {
            prop_oneof![40 => 50i64..=70, 1 => 70i64..30_000].boxed()
        } else {
            (30i64..=60).boxed()
        };
        (
            gap,
            prop::bool::weighted(0.7),
            0i64..60,
            prop::bool::weighted(0.01),
            prop::bool::weighted(0.05),
        )
            .prop_map(|(gap, run, late, pinned, busy)| Step {
                gap,
                run,
                late,
                pinned,
                busy,
            })
    }

    /// Runs `steps` from `start`: a snapshot each step, retention on some (deleting what it
    /// does not keep), checking at each run what must hold. Returns every snapshot taken, the
    /// survivors and the last run's time.
    fn simulate(
        schedule: &[u64],
        start: i64,
        steps: &[Step],
    ) -> (Vec<Candidate>, Vec<Candidate>, i64) {
        let limit = 2 * schedule.len() + 1;
        let longest = *schedule.iter().max().unwrap() as i64;
        let (mut history, mut alive) = (Vec::<Candidate>::new(), Vec::<Candidate>::new());
        let mut never_again: HashSet<i64> = HashSet::new();
        let (mut t, mut now) = (start, start);
        for (i, s) in steps.iter().enumerate() {
            // A snapshot is taken after the run before it (one under way during a run is in
            // the catalog then, busy).
            t = (t + s.gap).max(now);
            let c = Candidate {
                id: i as i64,
                at: t,
                pinned: s.pinned,
                busy: false,
            };
            history.push(c);
            alive.push(c);
            if !s.run {
                continue;
            }
            now = t + s.late;
            // The newest two may be being written or verified.
            let n = alive.len();
            for (j, c) in alive.iter_mut().enumerate() {
                c.busy = s.busy && j + 2 >= n;
            }
            let kept: HashSet<i64> = keep(schedule, &alive, now).into_iter().collect();
            let plain = alive
                .iter()
                .filter(|c| kept.contains(&c.id) && !c.pinned && !c.busy)
                .count();
            assert!(plain <= limit, "{plain} kept at {now}");
            for c in alive.iter().filter(|c| c.busy || c.pinned) {
                assert!(kept.contains(&c.id), "busy or pinned {} deleted", c.id);
            }
            // Coverage: every snapshot ever taken, up to the longest period old, has a kept
            // one within P(its age) before it.
            let kept_at: Vec<i64> = alive
                .iter()
                .filter(|c| kept.contains(&c.id))
                .map(|c| c.at)
                .collect();
            for h in history.iter().rev() {
                let age = now - h.at;
                if age > longest {
                    break;
                }
                let p = period_for(schedule, age);
                let covered = kept_at.iter().any(|&at| at <= h.at && at > h.at - p);
                assert!(
                    covered,
                    "snapshot at {} (age {age}) uncovered at {now}",
                    h.at
                );
            }
            // Deleting changed nothing a later run decides: every 16th run, retention over
            // the whole history (nothing ever deleted, nothing busy) keeps the same, and
            // never one it let go before.
            if i % 16 == 0 {
                let plain_alive: Vec<_> = alive
                    .iter()
                    .map(|&c| Candidate { busy: false, ..c })
                    .collect();
                let kept_alive = keep(schedule, &plain_alive, now);
                let kept_all = keep(schedule, &history, now);
                assert_eq!(kept_alive, kept_all, "at {now}");
                for id in &kept_all {
                    assert!(!never_again.contains(id), "{id} wanted again at {now}");
                }
                never_again.extend(
                    history
                        .iter()
                        .map(|c| c.id)
                        .filter(|id| !kept_all.contains(id)),
                );
            }
            alive.retain(|c| kept.contains(&c.id));
            for c in &mut alive {
                c.busy = false;
            }
        }
        (history, alive, now)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

        #[test]
        fn bounds_coverage_and_no_regrets_with_outages_and_missed_runs(
            start in 1_700_000_000i64..1_700_200_000,
            steps in prop::collection::vec(step(true), 1500..3200),
        ) {
            simulate(&EXPONENTIAL, start, &steps);
        }

        #[test]
        fn other_schedules_keep_the_same_promises(
            schedule in prop::collection::btree_set(1u64..=40, 1..6),
            start in 1_700_000_000i64..1_700_200_000,
            steps in prop::collection::vec(step(true), 300..900),
        ) {
            let schedule: Vec<u64> = schedule.into_iter().map(|m| m * 60).collect();
            simulate(&schedule, start, &steps);
        }

    }

    proptest! {
        // Two days of minutes each: long cases, few of them.
        #![proptest_config(ProptestConfig { cases: 3, ..ProptestConfig::default() })]

        #[test]
        fn with_a_snapshot_every_minute_the_error_stays_within_the_bound(
            start in 1_700_000_000i64..1_700_200_000,
            steps in prop::collection::vec(step(false), 2500..2600),
            probes in prop::collection::vec(0i64..86_340, 64),
        ) {
            let (history, alive, now) = simulate(&EXPONENTIAL, start, &steps);
            prop_assert!(now - history[0].at > 86_400 + 3600);
            let bounds = error_bound(&EXPONENTIAL);
            for a in probes {
                let m = now - a;
                let best = alive.iter().filter(|c| c.at <= m).map(|c| c.at).max().unwrap();
                let (_, bound) = bounds.iter().find(|(age, _)| *age as i64 >= a).unwrap();
                prop_assert!(m - best <= *bound as i64, "moment {a} s ago: error {}", m - best);
            }
        }

        #[test]
        fn with_a_snapshot_at_every_minute_some_kept_one_is_aged_a_to_a_plus_p_of_a(
            now in 1_700_000_000i64..1_800_000_000,
        ) {
            let history = every_minute(now);
            let ages = ages(&keep(&EXPONENTIAL, &history, now), &history, now);
            for a in 60..=86_400i64 {
                let p = period_for(&EXPONENTIAL, a);
                prop_assert!(ages.iter().any(|&x| x >= a && x < a + p), "age {a}: {ages:?}");
                if EXPONENTIAL.contains(&(a as u64)) {
                    prop_assert!(ages.iter().any(|&x| x >= a && x <= 2 * a), "age {a}: {ages:?}");
                }
            }
        }
    }
}
